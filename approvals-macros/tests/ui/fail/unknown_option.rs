use approvals_core::{GuardError, requires_approval};

#[requires_approval(kinds = "db.drop")]
async fn typo(table: String) -> Result<(), GuardError> {
    let _ = table;
    Ok(())
}

#[requires_approval(timeout = 5)]
async fn unsupported(table: String) -> Result<(), GuardError> {
    let _ = table;
    Ok(())
}

#[requires_approval(skip(password))]
async fn skip_unknown(table: String) -> Result<(), GuardError> {
    let _ = table;
    Ok(())
}

#[requires_approval(resource = "db://{schema}/{table}")]
async fn unknown_placeholder(table: String) -> Result<(), GuardError> {
    let _ = table;
    Ok(())
}

#[requires_approval(resource = "vault://{token}", skip(token))]
async fn leaks_skipped(token: String) -> Result<(), GuardError> {
    let _ = token;
    Ok(())
}

fn main() {}
