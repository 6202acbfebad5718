//! The store conformance suite against the in-memory store.

use std::sync::Arc;

use approvals_core::{MemoryStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_store_suite() {
    approvals_testkit::store_suite::run_all(|| async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    })
    .await;
}
