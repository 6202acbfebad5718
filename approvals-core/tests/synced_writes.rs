//! A transition whose barrier fails after its commit (the disk refuses the sync): nobody may
//! act on it. A reviewer hears the store is unavailable (the decision's barrier); an approved
//! action does not run and its request ends as not run, through either route the gate takes
//! to make the grant's consumption durable: the store's synced compare-and-set
//! (`RecordedWrites::compare_and_set_synced`, one call) or a compare-and-set followed by the
//! gate's own barrier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use approvals_core::{
    ActionRequest, AuditError, AuditEvent, AuditSink, Component, Gate, GuardError, Initiator,
    Inserted, ListFilter, MemorySink, MemoryStore, Principal, RecordedWrites, RequestId,
    RequestRecord, RequestState, Requirement, Review, ReviewError, StaticPolicy, Store, StoreError,
    Submission, SyncDomain, SyncedSet,
};
use async_trait::async_trait;
use tokio::sync::broadcast;

/// A store and its log in one "database" (one sync domain) whose syncs fail while `failing`.
struct Disk {
    store: MemoryStore,
    log: MemorySink,
    domain: SyncDomain,
    failing: AtomicBool,
    /// Whether the store offers the synced compare-and-set.
    synced: bool,
    /// Synced compare-and-sets asked for.
    synced_calls: AtomicUsize,
}

impl Disk {
    fn new(synced: bool) -> Arc<Disk> {
        Arc::new(Disk {
            store: MemoryStore::new(),
            log: MemorySink::new(),
            domain: SyncDomain::new(),
            failing: AtomicBool::new(false),
            synced,
            synced_calls: AtomicUsize::new(0),
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

impl DiskWrites {
    async fn set(
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

#[async_trait]
impl RecordedWrites for DiskWrites {
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.set(expected_version, record, events).await
    }

    async fn compare_and_set_synced(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: &[AuditEvent],
    ) -> Option<Result<SyncedSet, StoreError>> {
        if !self.0.synced {
            return None;
        }
        self.0.synced_calls.fetch_add(1, Ordering::SeqCst);
        Some(match self.set(expected_version, record, events).await {
            Ok(true) => Ok(match self.0.sync() {
                Ok(()) => SyncedSet::Durable,
                Err(e) => SyncedSet::Unsynced(e),
            }),
            Ok(false) => Ok(SyncedSet::Lost),
            Err(e) => Err(e),
        })
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
async fn a_transition_whose_sync_fails_is_acted_on_by_nobody() {
    for synced in [true, false] {
        let disk = Disk::new(synced);
        let gate = gate(&disk);

        // A decision committed whose sync failed: the reviewer hears the store is down.
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
            "synced {synced}: {decided:?}"
        );

        // The disk recovers and the agent is granted the action (the approval did commit);
        // then the consumption's sync fails: the action does not run.
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
            "synced {synced}: {executed:?}"
        );
        assert!(!ran.load(Ordering::SeqCst), "synced {synced}: it ran");
        let record = disk.store.get(id).await.expect("get").expect("stored");
        assert_eq!(record.state, RequestState::Failed, "synced {synced}");
        let outcome = record.execution.as_ref().and_then(|e| e.error.clone());
        assert!(
            outcome.as_deref().is_some_and(|e| e.starts_with("not run")),
            "synced {synced}: {outcome:?}"
        );
        let used = disk.synced_calls.load(Ordering::SeqCst);
        if synced {
            assert_eq!(used, 1, "the consumption went synced");
        } else {
            assert_eq!(used, 0);
        }
    }
}
