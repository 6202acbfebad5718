//! The suite must fail for stores that break the contract: each broken store below violates
//! one rule, and the behaviour that checks that rule must panic on it.

use std::sync::Arc;

use approvals_core::{
    Inserted, ListFilter, MemoryStore, RequestId, RequestRecord, Store, StoreError,
};
use approvals_testkit::store_suite;
use async_trait::async_trait;

#[derive(Clone, Copy)]
enum Flaw {
    /// Compare-and-set ignores the expected version.
    CasIgnoresVersion,
    /// Insert ignores the idempotency key.
    DuplicateKeys,
    /// List returns oldest first.
    OldestFirst,
}

struct Broken(MemoryStore, Flaw);

#[async_trait]
impl Store for Broken {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        if let Flaw::DuplicateKeys = self.1 {
            let mut r = record.clone();
            r.request.idempotency_key = None;
            return self.0.insert(&r).await;
        }
        self.0.insert(record).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.0.get(id).await
    }
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.0.get_by_idempotency_key(key).await
    }
    async fn compare_and_set(
        &self,
        expected: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        if let Flaw::CasIgnoresVersion = self.1 {
            let current = self.0.get(record.id).await?.map_or(expected, |r| r.version);
            return self.0.compare_and_set(current, record).await;
        }
        self.0.compare_and_set(expected, record).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = self.0.list(filter).await?;
        if let Flaw::OldestFirst = self.1 {
            out.reverse();
        }
        Ok(out)
    }
}

fn broken(flaw: Flaw) -> Arc<dyn Store> {
    Arc::new(Broken(MemoryStore::new(), flaw))
}

async fn panics(f: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
    tokio::spawn(f).await.is_err_and(|e| e.is_panic())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_flaw_is_caught() {
    assert!(
        panics(store_suite::stale_cas_changes_nothing(broken(
            Flaw::CasIgnoresVersion
        )))
        .await
    );
    assert!(
        panics(store_suite::racing_cas_writers_have_one_winner(broken(
            Flaw::CasIgnoresVersion
        )))
        .await
    );
    assert!(
        panics(store_suite::idempotency_key_is_unique(broken(
            Flaw::DuplicateKeys
        )))
        .await
    );
    assert!(
        panics(store_suite::list_filters_and_orders(broken(
            Flaw::OldestFirst
        )))
        .await
    );
    // And the same behaviours pass on a correct store.
    assert!(
        !panics(store_suite::stale_cas_changes_nothing(Arc::new(
            MemoryStore::new()
        )))
        .await
    );
}
