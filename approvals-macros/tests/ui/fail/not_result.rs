use approvals_core::{GuardError, requires_approval};

#[requires_approval]
async fn count(table: String) -> usize {
    table.len()
}

#[requires_approval]
async fn plain_string_error(table: String) -> Result<usize, String> {
    Ok(table.len())
}

#[requires_approval]
async fn nothing(table: String) {
    let _ = table;
}

fn main() {
    let _ = GuardError::NoDefaultGate;
}
