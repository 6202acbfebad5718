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
