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
//! write of this store (insert, compare-and-set, audit append) goes to one writer thread
//! ([`writer`]), which takes all writes waiting at that moment, runs them in order in one
//! `BEGIN IMMEDIATE` transaction and commits once (group commit); each caller gets its own
//! result only after the commit. Each write is still its own atomic step (statements run one
//! after another, each seeing the ones before), so compare-and-set semantics are exactly those
//! of single transactions. If anything but a per-write constraint error happens, the whole
//! batch is rolled back and every caller in it gets the error: no caller is ever told
//! "failed" for a write that committed. Writers in other processes serialize on the file's
//! write lock; a writer waits up to the busy timeout, and a lock still held after that is a
//! retryable [`StoreError::Unavailable`]. Reads never wait for writers: a read of one request
//! runs on the calling thread on a connection of its own (`reader.rs`), listings and audit
//! reads on sqlx's pool.
//!
//! `sqlite::memory:` is a private scratch database: a file in a new directory under the
//! system's temporary directory, never synced, removed when the store is dropped. (A truly
//! in-memory SQLite database is private to one connection, and the store reads on a pool
//! while its writer thread writes on a connection of its own.)

mod reader;
mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use approvals_core::{Inserted, ListFilter, RequestId, RequestRecord, StoreError};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};
use tokio::sync::{broadcast, oneshot};

use self::reader::Readers;
use self::writer::{RowValues, Write, WriterConfig};
use crate::audit::{AuditRow, LogRequest};
use crate::error::{SqlError, store_error};
use crate::legacy::RawRow;
use crate::lifecycle;
use crate::{SqlStoreOptions, migration_table};

const MIGRATION_1: &str = include_str!("../migrations/sqlite/0001_requests_and_audit.sql");
const MIGRATION_2: &str = include_str!("../migrations/sqlite/0002_signed_audit_log.sql");
const MIGRATION_3: &str = include_str!("../migrations/sqlite/0003_audit_pending_column.sql");
const MIGRATION_4: &str = include_str!("../migrations/sqlite/0004_audit_witness.sql");
const MIGRATION_5: &str = include_str!("../migrations/sqlite/0005_initiator_key.sql");
const MIGRATION_6: &str = include_str!("../migrations/sqlite/0006_due_at.sql");
const MIGRATION_7: &str = include_str!("../migrations/sqlite/0007_denied_action_key.sql");

pub(crate) struct SqliteBackend {
    /// Listings and audit reads.
    pool: SqlitePool,
    /// Reads of one request (`reader.rs`).
    readers: Readers,
    writes: flume::Sender<Write>,
    changes: broadcast::Sender<RequestId>,
    syncs: Arc<SyncCounters>,
    /// The database file a barrier syncs: the store's and its audit log's.
    pub(crate) domain: approvals_core::SyncDomain,
    /// The directory of a `sqlite::memory:` store's scratch file, removed with the store.
    _scratch: Option<tempfile::TempDir>,
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

pub(super) fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

impl SqliteBackend {
    pub(crate) async fn connect(options: &SqlStoreOptions) -> Result<Self, SqlError> {
        let parsed = SqliteConnectOptions::from_str(&options.url)
            .map_err(|e| SqlError::InvalidOption(format!("{}: {e}", options.url)))?;
        let in_memory = options.url.contains(":memory:") || options.url.contains("mode=memory");
        let scratch = if in_memory {
            Some(
                tempfile::Builder::new()
                    .prefix("approvals-memory-")
                    .tempdir()
                    .map_err(|e| {
                        SqlError::Unavailable(format!(
                            "creating a scratch file for {}: {e}",
                            options.url
                        ))
                    })?,
            )
        } else {
            None
        };
        let connect = match &scratch {
            Some(dir) => SqliteConnectOptions::new().filename(dir.path().join("approvals.db")),
            None => parsed,
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true);
        // With barriers, SQLite commits without syncing (`synchronous=NORMAL`: a commit is
        // written to the WAL, so it survives the process, and the WAL stays consistent) and
        // the writer syncs the WAL at each barrier, making every commit before it durable.
        // A scratch database is never synced.
        let at_barriers = options.durability == crate::Durability::AtBarriers && !in_memory;
        let path = connect.get_filename().to_owned();
        let (synchronous, synchronous_name) = if in_memory {
            (SqliteSynchronous::Off, "OFF")
        } else if at_barriers {
            (SqliteSynchronous::Normal, "NORMAL")
        } else {
            (SqliteSynchronous::Full, "FULL")
        };
        let connect = connect.synchronous(synchronous);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| SqlError::from_sqlx(&format!("opening {}", options.url), e))?;
        let (changes, _) = broadcast::channel(1024);
        let syncs = Arc::new(SyncCounters::default());
        let read_only = read_only(&options.url);
        let readers = Readers::new(path.clone(), read_only, options.busy_timeout);
        let writes = writer::start(
            WriterConfig {
                wal: at_barriers.then(|| {
                    let mut wal = path.as_os_str().to_owned();
                    wal.push("-wal");
                    PathBuf::from(wal)
                }),
                path,
                read_only,
                busy_timeout: options.busy_timeout,
                synchronous: synchronous_name,
                flush_after: options.flush_after,
            },
            changes.clone(),
            syncs.clone(),
        )?;
        Ok(SqliteBackend {
            pool,
            readers,
            writes,
            changes,
            syncs,
            domain: approvals_core::SyncDomain::new(),
            _scratch: scratch,
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
        // The writer syncs whatever was committed and stops, so later writes fail.
        let _ = self.submit(Write::Close).await;
        self.readers.close();
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
        self.writes.send_async(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub(crate) async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        let row = RowValues::of(record, 1)?;
        self.submit(|tx| Write::Insert(row, tx))
            .await
            .unwrap_or_else(|| Err(writer_gone()))
    }

    pub(crate) async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.readers.get(id)
    }

    pub(crate) async fn get_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.readers.get_by_idempotency_key(key)
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
        let rows =
            lifecycle::list_query::<sqlx::Sqlite, _, _>("", filter, micros, |id| id.to_string())
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
        let plan: Vec<(i64, i64, i64, String)> = lifecycle::list_query::<sqlx::Sqlite, _, _>(
            "EXPLAIN QUERY PLAN ",
            filter,
            micros,
            |id| id.to_string(),
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

/// Whether the URL opens the file read-only (`?mode=ro`, as sqlx reads it): the writer
/// thread's connection then is read-only too, so every write is refused as SQLite refuses it.
fn read_only(url: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "mode=ro"))
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped (the store was closed)".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `sqlite::memory:` is a scratch file: there while the store is, gone with it.
    #[tokio::test]
    async fn a_memory_store_scratch_file_goes_with_the_store() {
        let backend = SqliteBackend::connect(&SqlStoreOptions::new("sqlite::memory:"))
            .await
            .expect("connect");
        backend.migrate().await.expect("migrate");
        let dir = backend
            ._scratch
            .as_ref()
            .expect("a scratch directory")
            .path()
            .to_owned();
        assert!(dir.join("approvals.db").is_file());
        drop(backend);
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}
