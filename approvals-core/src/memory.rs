//! The in-process store: fast, and gone when the process exits.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::lifecycle;
use crate::store::{Inserted, ListFilter, RequestId, RequestRecord, Store, StoreError};

/// An in-process store: fast, and gone when the process exits. Use `approvals-store-sql`
/// for requests that must survive a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: Records,
    by_key: HashMap<crate::ArcStr, RequestId>,
}

/// The records, each found by its own id. A table slot is one pointer: boxed, a slot is not a
/// whole record, and keyed by the record's own id, it does not hold the id a second time (a
/// map from id to box is 24 bytes a slot). The table keeps up to half its slots empty, so
/// this is 11 to 18 bytes per stored request rather than 33 to 52 (BENCHMARKS.md, "Load").
#[derive(Debug, Default)]
struct Records {
    table: hashbrown::HashTable<Box<RequestRecord>>,
    // The standard library's keyed hash, as a `HashMap` would use.
    hasher: RandomState,
}

impl Records {
    fn hash(&self, id: RequestId) -> u64 {
        self.hasher.hash_one(id)
    }

    fn get(&self, id: RequestId) -> Option<&RequestRecord> {
        self.table.find(self.hash(id), |r| r.id == id).map(|r| &**r)
    }

    fn get_mut(&mut self, id: RequestId) -> Option<&mut RequestRecord> {
        let hash = self.hash(id);
        self.table.find_mut(hash, |r| r.id == id).map(|r| &mut **r)
    }

    /// Adds `record`, whose id is not stored yet.
    fn insert_new(&mut self, record: Box<RequestRecord>) {
        let hash = self.hash(record.id);
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, record, |r| hasher.hash_one(r.id));
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn iter(&self) -> impl Iterator<Item = &RequestRecord> {
        self.table.iter().map(|r| &**r)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave a half-written record (every update is a
        // single insert), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of stored records.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        let mut inner = self.lock();
        if let Some(key) = &record.request.idempotency_key {
            if let Some(existing) = inner.by_key.get(key).and_then(|id| inner.records.get(*id)) {
                return Ok(Inserted::Existing(Box::new(existing.clone())));
            }
            inner.by_key.insert(key.clone(), record.id);
        }
        if inner.records.get(record.id).is_some() {
            return Err(StoreError::Backend(format!(
                "request id {} already exists",
                record.id
            )));
        }
        let mut stored = Box::new(record.clone());
        stored.version = 1;
        inner.records.insert_new(stored);
        Ok(Inserted::Created)
    }

    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.lock().records.get(id).cloned())
    }

    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .by_key
            .get(key)
            .and_then(|id| inner.records.get(*id))
            .cloned())
    }

    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.records.get_mut(record.id) {
            Some(stored) if stored.version == expected_version => {
                // The same rule every store applies: only lifecycle steps, and terminal
                // states never change.
                lifecycle::may_replace(stored, record)
                    .map_err(|illegal| StoreError::Backend(illegal.to_string()))?;
                stored.clone_from(record);
                stored.version = expected_version + 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        let inner = self.lock();
        // Ordered by key, and only the page is copied: a sweep pages through the due
        // records 500 at a time, and copying every match for each page made expiring a
        // quarter of 1,000,000 pending requests take longer than the bench would wait.
        if filter.due_by.is_some() {
            // At the stores' precision, as due cursors compare.
            Ok(page(&inner.records, filter, crate::store::DueCursor::of))
        } else {
            // Newest first, at the stores' precision, as page cursors compare.
            Ok(page(&inner.records, filter, |r| {
                std::cmp::Reverse(crate::store::PageCursor::of(r))
            }))
        }
    }
}

/// The records that match `filter`, ordered by `key`, at most `filter.limit` of them; only
/// those are copied.
fn page<K: Ord>(
    records: &Records,
    filter: &ListFilter,
    key: impl Fn(&RequestRecord) -> K,
) -> Vec<RequestRecord> {
    let mut matching: Vec<(K, &RequestRecord)> = records
        .iter()
        .filter(|r| filter.matches(r))
        .map(|r| (key(r), r))
        .collect();
    let by_key = |a: &(K, &RequestRecord), b: &(K, &RequestRecord)| a.0.cmp(&b.0);
    if let Some(limit) = filter.limit
        && limit < matching.len()
    {
        // The `limit` first by key end up before position `limit`, in no order.
        matching.select_nth_unstable_by(limit, by_key);
        matching.truncate(limit);
    }
    matching.sort_unstable_by(by_key);
    matching.into_iter().map(|(_, r)| r.clone()).collect()
}
