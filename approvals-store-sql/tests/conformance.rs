//! The shared store conformance suite (approvals-testkit) against SQLite and PostgreSQL.

mod common;

use std::sync::{Arc, Mutex};

use approvals_core::Store;
use approvals_store_sql::SqlStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_passes_the_store_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = std::sync::atomic::AtomicUsize::new(0);
    approvals_testkit::store_suite::run_all(|| {
        let name = format!(
            "suite-{}.db",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = dir.path().to_owned();
        async move { Arc::new(common::sqlite_store(&dir, &name).await) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_passes_the_store_suite() {
    approvals_testkit::store_suite::run_all(|| async {
        Arc::new(
            SqlStore::connect("sqlite::memory:")
                .await
                .expect("in-memory SQLite"),
        ) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_store_suite() {
    let Some(url) = common::postgres_url("postgres_passes_the_store_suite") else {
        return;
    };
    let schemas = Mutex::new(Vec::new());
    approvals_testkit::store_suite::run_all(|| {
        let schema = common::unique_schema("suite");
        schemas.lock().expect("lock").push(schema.clone());
        let url = url.clone();
        async move { Arc::new(common::pg_store(&url, &schema).await) as Arc<dyn Store> }
    })
    .await;
    for schema in schemas.into_inner().expect("lock") {
        common::drop_schema(&url, &schema).await;
    }
}
