use approvals_core::{GuardError, requires_approval};

#[requires_approval(kind = "db.drop")]
fn drop_table(table: String) -> Result<(), GuardError> {
    let _ = table;
    Ok(())
}

fn main() {}
