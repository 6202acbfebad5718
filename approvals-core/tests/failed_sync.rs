//! A transition whose barrier fails after its commit (the disk refuses the sync): nobody may
//! act on it. With a store that commits each transition with its events (recorded writes)
//! in one sync domain with its log, as the SQL store does: a reviewer whose decision's
//! barrier fails hears the store is unavailable; an approved action whose consumption's
//! barrier fails does not run, and its request ends as not run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use approvals_core::{
    ActionRequest, AuditError, AuditEvent, AuditSink, Component, Gate, GuardError, Initiator,
    Inserted, ListFilter, MemorySink, MemoryStore, Principal, RecordedWrites, RequestId,
    RequestRecord, RequestState, Requirement, Review, ReviewError, StaticPolicy, Store, StoreError,
    Submission, SyncDomain,
};
use async_trait::async_trait;
use tokio::sync::broadcast;

/// A store and its log in one "database" (one sync domain) whose syncs fail while `failing`.
struct Disk {
    store: MemoryStore,
    log: MemorySink,
    domain: SyncDomain,
    failing: AtomicBool,
}

impl Disk {
    fn new() -> Arc<Disk> {
        Arc::new(Disk {
            store: MemoryStore::new(),
            log: MemorySink::new(),
            domain: SyncDomain::new(),
            failing: AtomicBool::new(false),
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "fdatasync: input/output error".into(),
            ))
        } else {
            Ok(())
        }
    }
}

struct DiskStore(Arc<Disk>);

#[async_trait]
impl Store for DiskStore {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        self.0.store.insert(record).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.0.store.get(id).await
    }
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.0.store.get_by_idempotency_key(key).await
    }
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        self.0.store.compare_and_set(expected_version, record).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.0.store.list(filter).await
    }
    fn changes(&self) -> Option<broadcast::Receiver<RequestId>> {
        self.0.store.changes()
    }
    async fn sync(&self) -> Result<(), StoreError> {
        self.0.sync()
    }
    fn sync_domain(&self) -> Option<SyncDomain> {
        Some(self.0.domain)
    }
    fn recorded_writes(&self, _audit: &dyn AuditSink) -> Option<Arc<dyn RecordedWrites>> {
        Some(Arc::new(DiskWrites(self.0.clone())))
    }
}

struct DiskLog(Arc<Disk>);

#[async_trait]
impl AuditSink for DiskLog {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.0.log.record(event).await
    }
    async fn sync(&self) -> Result<(), AuditError> {
        self.0.sync().map_err(|e| AuditError::new(e.to_string()))
    }
    fn sync_domain(&self) -> Option<SyncDomain> {
        Some(self.0.domain)
    }
}

/// The change and its events together (a memory store serialises nothing, which is enough
/// here: one caller at a time).
struct DiskWrites(Arc<Disk>);

#[async_trait]
impl RecordedWrites for DiskWrites {
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        if !self
            .0
            .store
            .compare_and_set(expected_version, record)
            .await?
        {
            return Ok(false);
        }
        self.0
            .log
            .record_all(events)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(true)
    }
}

fn gate(disk: &Arc<Disk>) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(DiskStore(disk.clone()))
        .audit(DiskLog(disk.clone()))
        .initiator(Initiator::agent("export-bot"))
        .build()
        .expect("gate")
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/invoices")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

async fn pending(gate: &Gate) -> RequestId {
    match gate.submit(&export()).await.expect("submitted") {
        Submission::Pending(id) => id,
        Submission::Allowed(_) => panic!("needs approval"),
    }
}

#[tokio::test]
async fn a_transition_whose_barrier_fails_is_acted_on_by_nobody() {
    let disk = Disk::new();
    let gate = gate(&disk);

    // A decision committed whose barrier failed: the reviewer hears the store is down.
    let id = pending(&gate).await;
    disk.failing.store(true, Ordering::SeqCst);
    let decided = gate.decide(id, Review::approve(sam())).await;
    assert!(
        matches!(
            decided,
            Err(ReviewError::Unavailable {
                component: Component::Store,
                ..
            })
        ),
        "{decided:?}"
    );

    // The disk recovers and the agent is granted the action (the approval did commit); then
    // the barrier after the grant's consumption fails: the action does not run.
    disk.failing.store(false, Ordering::SeqCst);
    let grant = gate.wait(id).await.expect("granted");
    disk.failing.store(true, Ordering::SeqCst);
    let ran = AtomicBool::new(false);
    let executed = gate
        .execute(grant, &export(), || async {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await;
    assert!(
        matches!(
            executed,
            Err(GuardError::Unavailable {
                component: Component::Store,
                ..
            })
        ),
        "{executed:?}"
    );
    assert!(!ran.load(Ordering::SeqCst), "it ran");
    let record = disk.store.get(id).await.expect("get").expect("stored");
    assert_eq!(record.state, RequestState::Failed);
    let outcome = record.execution.as_ref().and_then(|e| e.error.clone());
    assert!(
        outcome.as_deref().is_some_and(|e| e.starts_with("not run")),
        "{outcome:?}"
    );
}
