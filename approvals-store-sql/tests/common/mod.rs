//! Shared test helpers: fresh SQLite files and fresh PostgreSQL schemas.
#![allow(dead_code)]

use std::time::Duration;

use approvals_store_sql::{SqlStore, SqlStoreOptions};

pub use approvals_testkit::pg::{drop_schema, postgres_url, unique_schema};

/// A store in a fresh schema on the test server.
pub async fn pg_store(url: &str, schema: &str) -> SqlStore {
    SqlStore::connect_with(
        SqlStoreOptions::new(url)
            .schema(schema)
            .acquire_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL server at {url}: {e}"))
}

/// A store on a new SQLite file in `dir`.
pub async fn sqlite_store(dir: &std::path::Path, name: &str) -> SqlStore {
    let url = format!("sqlite://{}", dir.join(name).display());
    SqlStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

/// The store's migrations 1 to `last` for `backend` ("sqlite" or "postgres"), under the
/// store's migration table: the schema as an older version of the store left it, for tests
/// of what newer migrations do to it.
pub fn migrations_up_to(backend: &str, last: usize) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let files: [(&str, &str); 3] = match backend {
        "sqlite" => [
            (
                "requests and audit",
                include_str!("../../migrations/sqlite/0001_requests_and_audit.sql"),
            ),
            (
                "signed audit log",
                include_str!("../../migrations/sqlite/0002_signed_audit_log.sql"),
            ),
            (
                "audit_pending column",
                include_str!("../../migrations/sqlite/0003_audit_pending_column.sql"),
            ),
        ],
        _ => [
            (
                "requests and audit",
                include_str!("../../migrations/postgres/0001_requests_and_audit.sql"),
            ),
            (
                "signed audit log",
                include_str!("../../migrations/postgres/0002_signed_audit_log.sql"),
            ),
            (
                "audit_pending column",
                include_str!("../../migrations/postgres/0003_audit_pending_column.sql"),
            ),
        ],
    };
    let migrations = (1..)
        .zip(files)
        .take(last)
        .map(|(version, (name, sql))| {
            Migration::new(
                version,
                name.into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name("approvals_schema_migrations");
    migrator
}
