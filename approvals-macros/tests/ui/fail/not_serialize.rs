use approvals_core::{GuardError, requires_approval};

struct Connection;

#[requires_approval(kind = "db.drop")]
async fn drop_table(conn: &mut Connection, table: String) -> Result<(), GuardError> {
    let _ = (conn, table);
    Ok(())
}

#[requires_approval(kind = "kv.put")]
async fn put<V: Send + Sync>(value: V) -> Result<(), GuardError> {
    let _ = value;
    Ok(())
}

fn main() {}
