//! The SQLite backend: one file, WAL journal, group commit, syncs at the gate's barriers.
//!
//! Durability ([`crate::Durability`]): by default SQLite commits with `synchronous=NORMAL`,
//! so a write that returned is in the WAL and survives the process, and the writer syncs the
//! WAL at each barrier ([`approvals_core::Store::sync`]) the gate raises before anything
//! leaves the process; one sync covers every commit before it, and commits nobody raised a
//! barrier for are synced within `flush_after`. With [`crate::Durability::EveryCommit`]
//! SQLite syncs the WAL on every commit (`synchronous=FULL`) and barriers cost nothing.
//!
//! Writes: SQLite has one writer at a time, and a durable commit costs one `fsync`. So every
//! write of this store (insert, compare-and-set, audit append) goes to one writer task, which
//! takes all writes waiting at that moment, runs them in order in one `BEGIN IMMEDIATE`
//! transaction and commits once (group commit); each caller gets its own result only after
//! the commit. Each write is still its own atomic step (statements run one after another,
//! each seeing the ones before), so compare-and-set semantics are exactly those of single
//! transactions. If anything but a per-write constraint error happens, the whole batch is
//! rolled back and every caller in it gets the error: no caller is ever told "failed" for a
//! write that committed. Writers in other processes serialize on the file's write lock; a
//! writer waits up to the busy timeout, and a lock still held after that is a retryable
//! [`StoreError::Unavailable`]. Reads use the connection pool and never wait for writers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use approvals_core::{Inserted, ListFilter, RequestId, RequestRecord, RequestState, StoreError};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqlSafeStr};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::audit::{self, AuditRow, LogReply, LogRequest, NewRow, TableLog};
use crate::error::{SqlError, store_error};
use crate::legacy::RawRow;
use crate::lifecycle::{self, Columns};
use crate::{SqlStoreOptions, migration_table};

const MIGRATION_1: &str = include_str!("../migrations/sqlite/0001_requests_and_audit.sql");
const MIGRATION_2: &str = include_str!("../migrations/sqlite/0002_signed_audit_log.sql");
const MIGRATION_3: &str = include_str!("../migrations/sqlite/0003_audit_pending_column.sql");
const MIGRATION_4: &str = include_str!("../migrations/sqlite/0004_audit_witness.sql");
const MIGRATION_5: &str = include_str!("../migrations/sqlite/0005_initiator_key.sql");
const MIGRATION_6: &str = include_str!("../migrations/sqlite/0006_due_at.sql");
const MIGRATION_7: &str = include_str!("../migrations/sqlite/0007_denied_action_key.sql");

/// Most writes committed together.
const MAX_BATCH: usize = 512;

pub(crate) struct SqliteBackend {
    pool: SqlitePool,
    writes: mpsc::Sender<Write>,
    changes: broadcast::Sender<RequestId>,
    syncs: Arc<SyncCounters>,
    /// The database file a barrier syncs: the store's and its audit log's.
    pub(crate) domain: approvals_core::SyncDomain,
}

/// What the writer's syncs did, for [`crate::SqlStore::sync_stats`].
#[derive(Debug, Default)]
pub(crate) struct SyncCounters {
    /// Batches committed.
    commits: AtomicU64,
    /// `fdatasync` calls on the WAL made by barriers and the flush timer.
    syncs: AtomicU64,
    /// Whether a committed batch is not yet synced.
    unsynced: AtomicBool,
}

impl SyncCounters {
    pub(crate) fn stats(&self) -> crate::SyncStats {
        crate::SyncStats {
            commits: self.commits.load(Ordering::SeqCst),
            syncs: self.syncs.load(Ordering::SeqCst),
            unsynced: self.unsynced.load(Ordering::SeqCst),
        }
    }
}

/// Where the writer syncs, and when on its own.
struct Durability {
    /// The WAL file, when commits are not synced by SQLite itself (`synchronous=NORMAL`);
    /// `None` with `synchronous=FULL` or in memory, where there is nothing to sync.
    wal: Option<PathBuf>,
    /// Longest time a committed write waits for a sync when no barrier asks for one.
    flush_after: Duration,
}

fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// A write for the writer task, with where to send its result.
enum Write {
    Insert(RowValues, oneshot::Sender<Result<Inserted, StoreError>>),
    /// A compare-and-set, with the audit events to append in the same transaction when it
    /// succeeds (none for a plain one).
    Cas(
        RowValues,
        i64,
        String,
        Vec<LogRequest>,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    Log(LogRequest, LogReply),
    /// A durability barrier: answered once every write committed before it is on disk.
    /// With `soon`, it waits for the next sync (a barrier's or the flush timer's) instead of
    /// causing one.
    Sync {
        reply: oneshot::Sender<Result<(), StoreError>>,
        soon: bool,
    },
}

/// The values of one `approval_requests` row.
struct RowValues {
    id: String,
    request_id: RequestId,
    state: RequestState,
    state_name: &'static str,
    kind: String,
    environment: Option<String>,
    initiator_id: Option<String>,
    initiator_key: Option<String>,
    idempotency_key: Option<String>,
    audit_pending: bool,
    created_at: i64,
    expires_at: i64,
    due_at: Option<i64>,
    denied_action_key: Option<String>,
    json: String,
}

impl RowValues {
    fn of(record: &RequestRecord, version: u64) -> Result<RowValues, StoreError> {
        let c = Columns::of(record);
        Ok(RowValues {
            id: record.id.to_string(),
            request_id: record.id,
            state: record.state,
            state_name: c.state,
            kind: c.kind.to_owned(),
            environment: c.environment.map(str::to_owned),
            initiator_id: c.initiator_id,
            initiator_key: c.initiator_key,
            idempotency_key: c.idempotency_key.map(str::to_owned),
            audit_pending: c.audit_pending,
            created_at: micros(record.created_at),
            expires_at: micros(record.expires_at),
            due_at: c.due_at.map(micros),
            denied_action_key: c.denied_action_key,
            json: lifecycle::encode(record, version)?,
        })
    }
}

/// What one write produced inside the transaction, before the commit.
enum Done {
    Insert(
        Result<Inserted, StoreError>,
        oneshot::Sender<Result<Inserted, StoreError>>,
    ),
    Cas(
        Result<bool, StoreError>,
        RequestId,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    Log(audit::LogResult, LogReply),
}

impl SqliteBackend {
    pub(crate) async fn connect(options: &SqlStoreOptions) -> Result<Self, SqlError> {
        let connect = SqliteConnectOptions::from_str(&options.url)
            .map_err(|e| SqlError::InvalidOption(format!("{}: {e}", options.url)))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let in_memory = options.url.contains(":memory:") || options.url.contains("mode=memory");
        // With barriers, SQLite commits without syncing (`synchronous=NORMAL`: a commit is
        // written to the WAL, so it survives the process, and the WAL stays consistent) and
        // the writer syncs the WAL at each barrier, making every commit before it durable.
        let at_barriers = options.durability == crate::Durability::AtBarriers && !in_memory;
        let durability = Durability {
            wal: at_barriers.then(|| {
                let mut wal = connect.get_filename().as_os_str().to_owned();
                wal.push("-wal");
                PathBuf::from(wal)
            }),
            flush_after: options.flush_after,
        };
        let connect = connect.synchronous(if at_barriers {
            SqliteSynchronous::Normal
        } else {
            SqliteSynchronous::Full
        });
        let mut pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if in_memory {
            // Each connection to `:memory:` is its own database: keep exactly one, forever.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            .connect_with(connect)
            .await
            .map_err(|e| SqlError::from_sqlx(&format!("opening {}", options.url), e))?;
        let (changes, _) = broadcast::channel(1024);
        let (writes, rx) = mpsc::channel(4 * MAX_BATCH);
        let syncs = Arc::new(SyncCounters::default());
        tokio::spawn(writer(
            pool.clone(),
            rx,
            changes.clone(),
            durability,
            syncs.clone(),
        ));
        Ok(SqliteBackend {
            pool,
            writes,
            changes,
            syncs,
            domain: approvals_core::SyncDomain::new(),
        })
    }

    pub(crate) async fn migrate(&self) -> Result<(), SqlError> {
        let mut migrator = Migrator::with_migrations(vec![
            Migration::new(
                1,
                "requests and audit".into(),
                MigrationType::Simple,
                MIGRATION_1.into_sql_str(),
                false,
            ),
            Migration::new(
                2,
                "signed audit log".into(),
                MigrationType::Simple,
                MIGRATION_2.into_sql_str(),
                false,
            ),
            Migration::new(
                3,
                "audit_pending column".into(),
                MigrationType::Simple,
                MIGRATION_3.into_sql_str(),
                false,
            ),
            Migration::new(
                4,
                "audit witness table".into(),
                MigrationType::Simple,
                MIGRATION_4.into_sql_str(),
                false,
            ),
            Migration::new(
                5,
                "initiator_key column".into(),
                MigrationType::Simple,
                MIGRATION_5.into_sql_str(),
                false,
            ),
            Migration::new(
                6,
                "due_at column".into(),
                MigrationType::Simple,
                MIGRATION_6.into_sql_str(),
                false,
            ),
            Migration::new(
                7,
                "denied_action_key column".into(),
                MigrationType::Simple,
                MIGRATION_7.into_sql_str(),
                false,
            ),
        ]);
        migrator.dangerous_set_table_name(migration_table());
        // Two processes starting at once may both try to apply a migration; the loser fails
        // inside its transaction and finds it applied on the second pass.
        match migrator.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(_) => migrator
                .run(&self.pool)
                .await
                .map_err(|e| SqlError::Migrate(e.to_string())),
        }?;
        self.fill_initiator_keys().await?;
        // Open and unaudited rows stored before migration 6; a row changed meanwhile got its
        // own from the write that changed it.
        self.fill_from_records(
            "filling due times (migration 6)",
            lifecycle::MISSING_DUE_AT,
            "UPDATE approval_requests SET due_at = ?1 WHERE id = ?2 AND due_at IS NULL",
            |record| micros(lifecycle::backfilled_due_at(record)),
        )
        .await?;
        // Denied rows stored before migration 7.
        self.fill_from_records(
            "filling denied action keys (migration 7)",
            lifecycle::MISSING_DENIED_ACTION_KEY,
            "UPDATE approval_requests SET denied_action_key = ?1
              WHERE id = ?2 AND denied_action_key IS NULL",
            lifecycle::backfilled_denied_action_key,
        )
        .await
    }

    /// Fills a column computed from the stored record for the rows `select` finds (`id`,
    /// `version`, `record`, a batch at a time, none once they are filled), one transaction
    /// per batch: `update` sets `?1` to `value` of the record for row `?2`.
    async fn fill_from_records<V>(
        &self,
        what: &str,
        select: &'static str,
        update: &'static str,
        value: impl Fn(&RequestRecord) -> V,
    ) -> Result<(), SqlError>
    where
        V: for<'q> sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + 'static,
    {
        loop {
            let rows = sqlx::query(select)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| SqlError::from_sqlx(what, e))?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| SqlError::from_sqlx(what, e))?;
            for row in &rows {
                let id: String = row
                    .try_get("id")
                    .map_err(|e| SqlError::from_sqlx(what, e))?;
                let record =
                    decode_row(&id, row).map_err(|e| SqlError::Migrate(format!("{what}: {e}")))?;
                sqlx::query(update)
                    .bind(value(&record))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| SqlError::from_sqlx(what, e))?;
            }
            tx.commit()
                .await
                .map_err(|e| SqlError::from_sqlx(what, e))?;
        }
    }

    /// Fills `initiator_key` for rows stored before migration 5, from `initiator_id`, a batch
    /// per transaction. Finds them through a partial index, so it costs nothing once done.
    async fn fill_initiator_keys(&self) -> Result<(), SqlError> {
        let what = "filling initiator keys (migration 5)";
        loop {
            let rows = sqlx::query(
                "SELECT id, initiator_id FROM approval_requests
                  WHERE initiator_key IS NULL AND initiator_id IS NOT NULL
                  LIMIT 500",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(|e| SqlError::from_sqlx(what, e))?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| SqlError::from_sqlx(what, e))?;
            for row in &rows {
                let id: String = row
                    .try_get("id")
                    .map_err(|e| SqlError::from_sqlx(what, e))?;
                let initiator: String = row
                    .try_get("initiator_id")
                    .map_err(|e| SqlError::from_sqlx(what, e))?;
                sqlx::query(
                    "UPDATE approval_requests SET initiator_key = ?1
                      WHERE id = ?2 AND initiator_key IS NULL",
                )
                .bind(lifecycle::initiator_key(&initiator))
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(|e| SqlError::from_sqlx(what, e))?;
            }
            tx.commit()
                .await
                .map_err(|e| SqlError::from_sqlx(what, e))?;
        }
    }

    pub(crate) async fn close(&self) {
        // Whatever was committed is synced before the store goes.
        let _ = self.sync().await;
        self.pool.close().await;
    }

    /// The durability barrier ([`approvals_core::Store::sync`]).
    pub(crate) async fn sync(&self) -> Result<(), StoreError> {
        self.submit(|reply| Write::Sync { reply, soon: false })
            .await
            .unwrap_or_else(|| Err(writer_gone()))
    }

    /// A barrier answered at the writer's next sync ([`approvals_core::Store::sync_soon`]).
    pub(crate) async fn sync_soon(&self) -> Result<(), StoreError> {
        self.submit(|reply| Write::Sync { reply, soon: true })
            .await
            .unwrap_or_else(|| Err(writer_gone()))
    }

    pub(crate) fn sync_stats(&self) -> crate::SyncStats {
        self.syncs.stats()
    }

    pub(crate) fn changes(&self) -> broadcast::Receiver<RequestId> {
        self.changes.subscribe()
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Write) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.writes.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub(crate) async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        let row = RowValues::of(record, 1)?;
        self.submit(|tx| Write::Insert(row, tx))
            .await
            .unwrap_or_else(|| Err(writer_gone()))
    }

    pub(crate) async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let id = id.to_string();
        let row = sqlx::query("SELECT version, record FROM approval_requests WHERE id = ?1")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error(&format!("reading request {id}"), e))?;
        row.map(|r| decode_row(&id, &r)).transpose()
    }

    pub(crate) async fn get_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version, record FROM approval_requests WHERE idempotency_key = ?1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| store_error("reading a request by idempotency key", e))?;
        row.map(|r| {
            let id: String = r.try_get("id").unwrap_or_default();
            decode_row(&id, &r)
        })
        .transpose()
    }

    pub(crate) async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        self.compare_and_set_recorded(expected_version, record, Vec::new())
            .await
    }

    /// A compare-and-set that appends `events` to the audit log in the same transaction
    /// (the writer's batch) when it succeeds.
    pub(crate) async fn compare_and_set_recorded(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: Vec<LogRequest>,
    ) -> Result<bool, StoreError> {
        let expected = lifecycle::db_version(expected_version)?;
        let row = RowValues::of(record, expected_version.saturating_add(1))?;
        let allowed = format!("|{}|", lifecycle::allowed_from(record.state).join("|"));
        self.submit(|tx| Write::Cas(row, expected, allowed, events, tx))
            .await
            .unwrap_or_else(|| Err(writer_gone()))
    }

    pub(crate) async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        let initiator = filter.initiator.as_deref().map(lifecycle::initiator_key);
        let rows = lifecycle::list_query::<sqlx::Sqlite, i64, String>(
            "",
            filter,
            initiator,
            filter.due_by.map(micros),
            cursor(filter),
        )
        .build()
        .fetch_all(&self.pool)
        .await
        .map_err(|e| store_error("listing requests", e))?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").unwrap_or_default();
                decode_row(&id, r)
            })
            .collect()
    }

    pub(crate) async fn explain_list(&self, filter: &ListFilter) -> Result<String, SqlError> {
        let initiator = filter.initiator.as_deref().map(lifecycle::initiator_key);
        let plan: Vec<(i64, i64, i64, String)> =
            lifecycle::list_query::<sqlx::Sqlite, i64, String>(
                "EXPLAIN QUERY PLAN ",
                filter,
                initiator,
                filter.due_by.map(micros),
                cursor(filter),
            )
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| SqlError::from_sqlx("explaining a listing", e))?;
        Ok(plan
            .into_iter()
            .map(|(.., detail)| detail)
            .collect::<Vec<_>>()
            .join("\n"))
    }

    pub(crate) async fn audit_log(
        &self,
        request: LogRequest,
    ) -> Result<Option<AuditRow>, SqlError> {
        self.submit(|tx| Write::Log(request, tx))
            .await
            .unwrap_or_else(|| {
                Err(SqlError::Unavailable(
                    "the SQLite writer stopped (the store was closed)".into(),
                ))
            })
    }

    pub(crate) fn log_db(&self) -> approvals_audit::log::db::LogDb {
        approvals_audit::log::db::LogDb::Sqlite(self.pool.clone())
    }

    pub(crate) async fn audit_lines_for(
        &self,
        request_id: &str,
    ) -> Result<Vec<(i64, String)>, SqlError> {
        sqlx::query_as(
            "SELECT line_no, line FROM approval_audit_log WHERE request_id = ?1 ORDER BY line_no",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| SqlError::from_sqlx("reading the audit log table", e))
    }

    pub(crate) async fn legacy_audit_rows(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<RawRow>, SqlError> {
        let what = "reading the audit table";
        let rows = sqlx::query(
            "SELECT seq, at, request_id, event, prev_hash, hash, event_json FROM approval_audit
              WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| SqlError::from_sqlx(what, e))?;
        rows.iter()
            .map(|r| {
                let at: String = r.try_get("at")?;
                Ok(RawRow {
                    seq: r.try_get("seq")?,
                    at: chrono::DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.to_utc())
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    request_id: r.try_get("request_id")?,
                    event: r.try_get("event")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                    event_json: r.try_get("event_json")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| SqlError::from_sqlx(what, e))
    }
}

/// The cursor of `filter`'s listing order, as SQLite stores times and ids.
fn cursor(filter: &ListFilter) -> Option<(i64, String)> {
    match filter.due_by {
        Some(_) => filter
            .due_after
            .map(|c| (micros(c.due_at), c.id.to_string())),
        None => filter
            .after
            .map(|c| (micros(c.created_at), c.id.to_string())),
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped (the store was closed)".into())
}

/// The writer task: batches waiting writes into one transaction each. Ends when the store
/// is dropped.
///
/// Syncing, with [`crate::Durability::AtBarriers`]: batches commit without a sync; a
/// [`Write::Sync`] is answered after one `fdatasync` of the WAL that covers every batch
/// committed before it, and all barriers waiting at that moment share it (group commit).
/// Commits no barrier asked for are synced `flush_after` later, and when the store closes.
/// A [`Write::Sync`] with `soon` is answered by whichever sync comes next.
async fn writer(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Write>,
    changes: broadcast::Sender<RequestId>,
    durability: Durability,
    counters: Arc<SyncCounters>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The audit log's state as of the last commit; checked against the table in every batch.
    let mut log = None;
    let mut unsynced = false;
    // When the oldest commit not yet synced must be synced by the timer: set by the first
    // unsynced commit, not moved by later ones, so a stream of commits without a barrier
    // cannot put it off.
    let mut flush_at: Option<tokio::time::Instant> = None;
    // Barriers that wait for the next sync rather than cause one.
    let mut waiting: Vec<oneshot::Sender<Result<(), StoreError>>> = Vec::new();
    loop {
        let received = match (&durability.wal, flush_at) {
            (Some(wal), Some(at)) if unsynced => {
                tokio::select! {
                    n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                    () = tokio::time::sleep_until(at) => {
                        let synced = sync_wal(wal, &counters).await;
                        unsynced = synced.is_err();
                        counters.unsynced.store(unsynced, Ordering::SeqCst);
                        answer(waiting.drain(..), &synced);
                        // A failed sync is tried again after another delay.
                        flush_at = unsynced.then(|| tokio::time::Instant::now() + durability.flush_after);
                        continue;
                    }
                }
            }
            _ => rx.recv_many(&mut batch, MAX_BATCH).await,
        };
        if received == 0 {
            break;
        }
        let mut barriers = Vec::new();
        let writes: Vec<Write> = batch
            .drain(..)
            .filter_map(|write| match write {
                Write::Sync { reply, soon: false } => {
                    barriers.push(reply);
                    None
                }
                Write::Sync { reply, soon: true } => {
                    waiting.push(reply);
                    None
                }
                write => Some(write),
            })
            .collect();
        if !writes.is_empty() {
            // Flagged before any caller hears of the commit.
            if durability.wal.is_some() {
                counters.unsynced.store(true, Ordering::SeqCst);
            }
            if commit_batch(&pool, writes, &changes, &mut log).await {
                counters.commits.fetch_add(1, Ordering::SeqCst);
                unsynced |= durability.wal.is_some();
                if unsynced && flush_at.is_none() {
                    flush_at = Some(tokio::time::Instant::now() + durability.flush_after);
                }
            }
            counters.unsynced.store(unsynced, Ordering::SeqCst);
        }
        if !barriers.is_empty() {
            let synced = match &durability.wal {
                Some(wal) if unsynced => sync_wal(wal, &counters).await,
                _ => Ok(()),
            };
            unsynced &= synced.is_err();
            if !unsynced {
                flush_at = None;
            }
            // Cleared before any barrier returns.
            counters.unsynced.store(unsynced, Ordering::SeqCst);
            answer(barriers.into_iter().chain(waiting.drain(..)), &synced);
        }
        // Nothing left to sync: whoever waits for the next sync has what it waits for.
        if !unsynced {
            answer(waiting.drain(..), &Ok(()));
        }
    }
    let synced = match (&durability.wal, unsynced) {
        (Some(wal), true) => sync_wal(wal, &counters).await,
        _ => Ok(()),
    };
    counters
        .unsynced
        .store(unsynced && synced.is_err(), Ordering::SeqCst);
    answer(waiting.drain(..), &synced);
}

/// Answers barriers with the outcome of the sync that covers them.
fn answer(
    barriers: impl Iterator<Item = oneshot::Sender<Result<(), StoreError>>>,
    synced: &Result<(), StoreError>,
) {
    for reply in barriers {
        let _ = reply.send(synced.clone());
    }
}

/// One `fdatasync` of the WAL file: on Linux it writes the file's dirty pages whichever
/// descriptor wrote them, so every commit SQLite appended to it so far becomes durable. A
/// WAL that does not exist holds nothing unsynced: SQLite syncs the database at each
/// checkpoint before it removes or resets the WAL.
async fn sync_wal(wal: &Path, counters: &SyncCounters) -> Result<(), StoreError> {
    let path = wal.to_owned();
    let synced = tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    counters.syncs.fetch_add(1, Ordering::SeqCst);
    synced.map_err(|e| {
        StoreError::Unavailable(format!("syncing the SQLite WAL {}: {e}", wal.display()))
    })
}

/// Runs `batch` in one transaction and tells each caller its result. Returns whether it
/// committed.
async fn commit_batch(
    pool: &SqlitePool,
    batch: Vec<Write>,
    changes: &broadcast::Sender<RequestId>,
    log: &mut Option<TableLog>,
) -> bool {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            fail_all(batch, &SqlError::from_sqlx("writing", e));
            return false;
        }
    };
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(
                batch,
                &SqlError::from_sqlx("starting a write (is another process holding the lock?)", e),
            );
            return false;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    // Audit log requests run after the request writes, in arrival order: one check of the
    // log's head and one multi-row insert per batch. The events of a compare-and-set that
    // records them (no reply of their own) join them where it arrived.
    let mut logs: Vec<(LogRequest, Option<LogReply>)> = Vec::new();
    let mut writes = batch.into_iter();
    let mut failure = None;
    for write in writes.by_ref() {
        if let Write::Log(request, reply) = write {
            logs.push((request, Some(reply)));
            continue;
        }
        match apply(&mut tx, write).await {
            Ok((d, events)) => {
                done.push(d);
                logs.extend(events.into_iter().map(|event| (event, None)));
            }
            Err((e, write)) => {
                failure = Some((e, Some(write)));
                break;
            }
        }
    }
    let mut new_log = None;
    if failure.is_none() && !logs.is_empty() {
        let requests: Vec<&LogRequest> = logs.iter().map(|(r, _)| r).collect();
        match audit::append(&mut SqliteLogTx(&mut tx), log.as_ref(), &requests).await {
            Ok((state, results)) => {
                new_log = Some(state);
                let mut replies = Vec::with_capacity(logs.len());
                for ((_, reply), result) in logs.drain(..).zip(results) {
                    match (reply, result) {
                        (Some(reply), result) => replies.push(Done::Log(result, reply)),
                        (None, Ok(_)) => {}
                        // An event of a recorded compare-and-set that cannot be written: the
                        // change must not commit without it.
                        (None, Err(e)) => {
                            failure = Some((e, None));
                        }
                    }
                }
                done.extend(replies);
            }
            Err(e) => failure = Some((e, None)),
        }
    }
    if let Some((e, write)) = failure {
        // Anything but a per-write constraint error may have ended the transaction: undo it
        // all and tell every caller, so nobody is told "failed" for a write that committed.
        let _ = tx.rollback().await;
        let rest: Vec<Write> = write
            .into_iter()
            .chain(writes)
            .chain(
                logs.into_iter()
                    .filter_map(|(r, reply)| Some(Write::Log(r, reply?))),
            )
            .collect();
        fail_done(done, &e);
        fail_all(rest, &e);
        return false;
    }
    if let Err(e) = tx.commit().await {
        fail_done(done, &SqlError::from_sqlx("committing", e));
        return false;
    }
    if new_log.is_some() {
        *log = new_log;
    }
    for d in done {
        match d {
            Done::Insert(r, reply) => {
                let _ = reply.send(r);
            }
            Done::Cas(r, id, reply) => {
                if matches!(r, Ok(true)) {
                    let _ = changes.send(id);
                }
                let _ = reply.send(r);
            }
            Done::Log(r, reply) => {
                let _ = reply.send(r);
            }
        }
    }
    true
}

fn fail_all(batch: Vec<Write>, e: &SqlError) {
    for write in batch {
        match write {
            Write::Insert(_, reply) => {
                let _ = reply.send(Err(copy_store_error(e)));
            }
            Write::Cas(_, _, _, _, reply) => {
                let _ = reply.send(Err(copy_store_error(e)));
            }
            Write::Log(_, reply) => {
                let _ = reply.send(Err(copy_sql_error(e)));
            }
            // Barriers are taken out of the batch before it is committed.
            Write::Sync { reply, .. } => {
                let _ = reply.send(Err(copy_store_error(e)));
            }
        }
    }
}

fn fail_done(done: Vec<Done>, e: &SqlError) {
    for d in done {
        match d {
            Done::Insert(_, reply) => {
                let _ = reply.send(Err(copy_store_error(e)));
            }
            Done::Cas(_, _, reply) => {
                let _ = reply.send(Err(copy_store_error(e)));
            }
            Done::Log(_, reply) => {
                let _ = reply.send(Err(copy_sql_error(e)));
            }
        }
    }
}

fn copy_sql_error(e: &SqlError) -> SqlError {
    match e {
        SqlError::Unavailable(m) => SqlError::Unavailable(m.clone()),
        SqlError::Corrupt(m) => SqlError::Corrupt(m.clone()),
        other => SqlError::Database(other.to_string()),
    }
}

fn copy_store_error(e: &SqlError) -> StoreError {
    copy_sql_error(e).into()
}

type Failed = (SqlError, Write);

/// Runs one write inside the batch transaction: its result, and the audit events to append
/// with it (those of a compare-and-set that succeeded). A unique violation is that write's own
/// result; any other error fails the batch.
async fn apply(
    conn: &mut SqliteConnection,
    write: Write,
) -> Result<(Done, Vec<LogRequest>), Failed> {
    match write {
        Write::Insert(row, reply) => match insert(conn, &row).await {
            Ok(r) => Ok((Done::Insert(r, reply), Vec::new())),
            Err(e) => Err((e, Write::Insert(row, reply))),
        },
        Write::Cas(row, expected, allowed, events, reply) => {
            match cas(conn, &row, expected, &allowed).await {
                Ok(r) => {
                    let events = if matches!(r, Ok(true)) {
                        events
                    } else {
                        Vec::new()
                    };
                    Ok((Done::Cas(r, row.request_id, reply), events))
                }
                Err(e) => Err((e, Write::Cas(row, expected, allowed, events, reply))),
            }
        }
        // Audit log requests and barriers are taken out of the batch before this is called.
        write @ (Write::Log(..) | Write::Sync { .. }) => Err((
            SqlError::Database("an audit log request or barrier reached the request writer".into()),
            write,
        )),
    }
}

async fn insert(
    conn: &mut SqliteConnection,
    row: &RowValues,
) -> Result<Result<Inserted, StoreError>, SqlError> {
    let id = &row.id;
    let result = sqlx::query(
        "INSERT INTO approval_requests
             (id, version, state, kind, environment, initiator_id, idempotency_key,
              created_at, expires_at, record, audit_pending, initiator_key, due_at,
              denied_action_key)
         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(id)
    .bind(row.state_name)
    .bind(&row.kind)
    .bind(row.environment.as_deref())
    .bind(row.initiator_id.as_deref())
    .bind(row.idempotency_key.as_deref())
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(&row.json)
    .bind(row.audit_pending)
    .bind(row.initiator_key.as_deref())
    .bind(row.due_at)
    .bind(row.denied_action_key.as_deref())
    .execute(&mut *conn)
    .await;
    match result {
        Ok(done) if done.rows_affected() == 1 => Ok(Ok(Inserted::Created)),
        Ok(_) => {
            let existing = sqlx::query(
                "SELECT id, version, record FROM approval_requests WHERE idempotency_key = ?1",
            )
            .bind(row.idempotency_key.as_deref())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| SqlError::from_sqlx(&format!("storing request {id}"), e))?;
            Ok(match existing {
                Some(r) => {
                    let existing_id: String = r.try_get("id").unwrap_or_default();
                    decode_row(&existing_id, &r).map(|rec| Inserted::Existing(Box::new(rec)))
                }
                None => Err(StoreError::Backend(format!(
                    "request {id} was not stored and no request holds its idempotency key"
                ))),
            })
        }
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(Err(StoreError::Backend(
            format!("request id {id} already exists"),
        ))),
        Err(e) => Err(SqlError::from_sqlx(&format!("storing request {id}"), e)),
    }
}

async fn cas(
    conn: &mut SqliteConnection,
    row: &RowValues,
    expected: i64,
    allowed: &str,
) -> Result<Result<bool, StoreError>, SqlError> {
    let id = &row.id;
    let what = format!("updating request {id}");
    let updated = sqlx::query(
        "UPDATE approval_requests
            SET version = version + 1, state = ?3, kind = ?4, environment = ?5,
                initiator_id = ?6, idempotency_key = ?7, created_at = ?8, expires_at = ?9,
                record = ?10, audit_pending = ?12, initiator_key = ?13, due_at = ?14,
                denied_action_key = ?15
          WHERE id = ?1 AND version = ?2 AND instr(?11, '|' || state || '|') > 0",
    )
    .bind(id)
    .bind(expected)
    .bind(row.state_name)
    .bind(&row.kind)
    .bind(row.environment.as_deref())
    .bind(row.initiator_id.as_deref())
    .bind(row.idempotency_key.as_deref())
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(&row.json)
    .bind(allowed)
    .bind(row.audit_pending)
    .bind(row.initiator_key.as_deref())
    .bind(row.due_at)
    .bind(row.denied_action_key.as_deref())
    .execute(&mut *conn)
    .await;
    match updated {
        Ok(done) if done.rows_affected() == 1 => return Ok(Ok(true)),
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            return Ok(Err(StoreError::Backend(format!(
                "{what}: its idempotency key belongs to another request"
            ))));
        }
        Err(e) => return Err(SqlError::from_sqlx(&what, e)),
    }
    // Nothing changed: a newer version, no such record, or not a lifecycle step.
    let stored = sqlx::query("SELECT version, state FROM approval_requests WHERE id = ?1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| SqlError::from_sqlx(&what, e))?;
    Ok(match stored {
        Some(r) if r.try_get::<i64, _>("version").ok() == Some(expected) => {
            let state: String = r.try_get("state").unwrap_or_default();
            Err(lifecycle::illegal_transition(&row.id, &state, row.state))
        }
        _ => Ok(false),
    })
}

/// The batch transaction, which holds SQLite's write lock, as the audit log writer sees it.
struct SqliteLogTx<'a>(&'a mut SqliteConnection);

impl audit::LogTx for SqliteLogTx<'_> {
    async fn head(&mut self) -> Result<(i64, Option<i64>), SqlError> {
        sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(line_no), 0) FROM approval_audit_log),
                    (SELECT size FROM approval_audit_witness WHERE id = 1)",
        )
        .fetch_one(&mut *self.0)
        .await
        .map_err(|e| SqlError::from_sqlx("reading the audit log head and its witness", e))
    }

    async fn lines_after(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, SqlError> {
        sqlx::query_as(
            "SELECT line_no, line FROM approval_audit_log WHERE line_no > ?1
              ORDER BY line_no LIMIT ?2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.0)
        .await
        .map_err(|e| SqlError::from_sqlx("reading the audit log table", e))
    }

    async fn legacy_head(&mut self) -> Result<Option<(i64, String)>, SqlError> {
        sqlx::query_as("SELECT seq, hash FROM approval_audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.0)
            .await
            .map_err(|e| SqlError::from_sqlx("reading the old audit table's head", e))
    }

    async fn set_witness(&mut self, size: i64, note: &str) -> Result<(), SqlError> {
        let updated = chrono::Utc::now();
        sqlx::query(
            "INSERT INTO approval_audit_witness (id, size, note, updated_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE
                SET size = excluded.size, note = excluded.note, updated_at = excluded.updated_at",
        )
        .bind(size)
        .bind(note)
        .bind(updated.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .execute(&mut *self.0)
        .await
        .map(|_| ())
        .map_err(|e| SqlError::from_sqlx("writing the audit log's witness", e))
    }

    async fn insert(&mut self, rows: &[NewRow]) -> Result<(), SqlError> {
        // 6 values per row, well under SQLite's limit of 32766 bound parameters per chunk.
        for chunk in rows.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line) ",
            );
            insert.push_values(chunk, |mut b, row| {
                b.push_bind(row.line_no)
                    .push_bind(row.seq)
                    .push_bind(row.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                    .push_bind(row.request_id.clone())
                    .push_bind(row.event.clone())
                    .push_bind(row.line.clone());
            });
            insert
                .build()
                .execute(&mut *self.0)
                .await
                .map_err(|e| SqlError::from_sqlx("appending to the audit log table", e))?;
        }
        Ok(())
    }
}

fn decode_row(id: &str, row: &sqlx::sqlite::SqliteRow) -> Result<RequestRecord, StoreError> {
    let version: i64 = row
        .try_get("version")
        .map_err(|e| store_error(&format!("reading request {id}"), e))?;
    let json: String = row
        .try_get("record")
        .map_err(|e| store_error(&format!("reading request {id}"), e))?;
    lifecycle::decode(id, version, &json)
}
