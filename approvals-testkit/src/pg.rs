//! The PostgreSQL server for tests and benches: its URL, fresh schemas, and the CI rule that
//! it must exist. Behind the `postgres` feature.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the PostgreSQL server for tests.
pub const PG_ENV: &str = "APPROVALS_TEST_POSTGRES_URL";

/// The PostgreSQL URL for tests, or `None` after printing a loud SKIPPED line. Panics when
/// `CI=true` and the URL is missing: CI must run the PostgreSQL suite for real.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{test}: CI=true but {PG_ENV} is not set; CI must run the PostgreSQL tests");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: set {PG_ENV} (for example postgres://postgres@127.0.0.1:5432/test) to run it against PostgreSQL ***"
            );
            None
        }
    }
}

/// A schema name no other test or run uses.
pub fn unique_schema(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or_default();
    format!("t_{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// Drops a test schema and everything in it.
pub async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// The server's count of WAL flushes (`pg_stat_wal.wal_sync`), read once every session whose
/// `application_name` is `app` has ended: a session reports its counts when it ends. Waits up
/// to ten seconds for them.
pub async fn wal_flushes_once_ended(conn: &mut sqlx::postgres::PgConnection, app: &str) -> i64 {
    for _ in 0..200 {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(app)
                .fetch_one(&mut *conn)
                .await
                .expect("reading pg_stat_activity");
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
        .fetch_one(&mut *conn)
        .await
        .expect("reading pg_stat_wal")
}
