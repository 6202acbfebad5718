//! The SQLite writer: one thread with its own connection, which runs every write of the store
//! (inserts, compare-and-sets, audit appends) and the WAL syncs.
//!
//! Callers hand it a [`Write`] and wait for the answer; it takes every write waiting at that
//! moment, runs them in order in one `BEGIN IMMEDIATE` transaction and commits once (group
//! commit). The whole batch (its statements, the audit log's checks and rows, the commit and,
//! for a barrier, the sync) runs on this thread through `rusqlite`, one call into SQLite
//! after another: a caller's write costs one hand-off to the thread and one back. Through an
//! async driver each statement would be its own round trip to the driver's worker thread,
//! and on a small machine those thread switches, not SQLite, were most of a transition's cost
//! (BENCHMARKS.md, "SQLite writer").
//!
//! Reads do not come here: they run on connections of their own (`reader.rs`) or the store's
//! pool, which see every committed write (WAL), and never wait for this thread.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use approvals_core::{Inserted, RequestId, RequestRecord, RequestState, StoreError};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use super::SyncCounters;
use super::reader::by_idempotency_key;
use crate::audit::{self, LogReply, LogRequest, NewRow, TableLog};
use crate::error::SqlError;
use crate::lifecycle::{self, Columns};

/// Most writes committed together.
pub(super) const MAX_BATCH: usize = 512;

/// A write for the writer, with where to send its result.
pub(super) enum Write {
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
    /// The store closes: what was committed is synced, the connection closed and the answer
    /// sent; later writes fail.
    Close(oneshot::Sender<()>),
}

/// The values of one `approval_requests` row.
pub(super) struct RowValues {
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
    pub(super) fn of(record: &RequestRecord, version: u64) -> Result<RowValues, StoreError> {
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
            created_at: super::micros(record.created_at),
            expires_at: super::micros(record.expires_at),
            due_at: c.due_at.map(super::micros),
            denied_action_key: c.denied_action_key,
            json: lifecycle::encode(record, version)?,
        })
    }

    /// The row's columns as `?1` to `?13` of both statements that write it: `id`, `state`,
    /// `kind`, `environment`, `initiator_id`, `idempotency_key`, `created_at`, `expires_at`,
    /// `record`, `audit_pending`, `initiator_key`, `due_at`, `denied_action_key`.
    fn columns(&self) -> [&dyn rusqlite::ToSql; 13] {
        [
            &self.id,
            &self.state_name,
            &self.kind,
            &self.environment,
            &self.initiator_id,
            &self.idempotency_key,
            &self.created_at,
            &self.expires_at,
            &self.json,
            &self.audit_pending,
            &self.initiator_key,
            &self.due_at,
            &self.denied_action_key,
        ]
    }
}

/// How the writer's connection commits, and where and when it syncs on its own.
pub(super) struct WriterConfig {
    /// The database file.
    pub path: PathBuf,
    /// Whether the store was opened read-only: the writer's connection is too.
    pub read_only: bool,
    /// How long a write waits for another process's write lock.
    pub busy_timeout: Duration,
    /// `PRAGMA synchronous` for the writer's commits.
    pub synchronous: &'static str,
    /// The WAL file, when commits are not synced by SQLite itself (`synchronous=NORMAL`);
    /// `None` when SQLite syncs each commit or nothing is to be synced.
    pub wal: Option<PathBuf>,
    /// Longest time a committed write waits for a sync when no barrier asks for one.
    pub flush_after: Duration,
}

/// Opens the writer's connection and starts its thread. Writes are sent on the returned
/// channel; the thread ends when the store closes or every sender is gone.
pub(super) fn start(
    config: WriterConfig,
    changes: broadcast::Sender<RequestId>,
    counters: Arc<SyncCounters>,
) -> Result<flume::Sender<Write>, SqlError> {
    let conn = open(&config)?;
    let (writes, rx) = flume::bounded(4 * MAX_BATCH);
    std::thread::Builder::new()
        .name("approvals-sqlite-writer".into())
        .spawn(move || Writer::new(conn, config, changes, counters).run(rx))
        .map_err(|e| SqlError::Unavailable(format!("starting the SQLite writer thread: {e}")))?;
    Ok(writes)
}

fn open(config: &WriterConfig) -> Result<Connection, SqlError> {
    let what = format!("opening {} for writing", config.path.display());
    let conn = open_connection(&config.path, config.read_only, config.busy_timeout, &what)?;
    // The journal mode is the file's (set by the pool's connections); these two are each
    // connection's own.
    conn.pragma_update(None, "synchronous", config.synchronous)
        .map_err(|e| sql_error(&what, e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| sql_error(&what, e))?;
    Ok(conn)
}

/// A `rusqlite` connection of the store's own (the writer's or a reader's) to the database
/// file: read-only when the store was opened so, and waiting up to `busy_timeout` for a lock
/// another connection holds. `what` names the opening in errors. It never creates the file:
/// the store's pool has created and migrated it before either opens, and a file gone since
/// is an error, not a new empty database.
pub(super) fn open_connection(
    path: &Path,
    read_only: bool,
    busy_timeout: Duration,
    what: &str,
) -> Result<Connection, SqlError> {
    let access = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| sql_error(what, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| sql_error(what, e))?;
    Ok(conn)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    config: WriterConfig,
    changes: broadcast::Sender<RequestId>,
    counters: Arc<SyncCounters>,
    /// The audit log's state as of the last commit; checked against the table in every batch.
    log: Option<TableLog>,
    /// Whether a committed batch is not yet synced.
    unsynced: bool,
    /// When the oldest commit not yet synced must be synced by the timer: set by the first
    /// unsynced commit, not moved by later ones, so a stream of commits without a barrier
    /// cannot put it off.
    flush_at: Option<Instant>,
    /// Barriers that wait for the next sync rather than cause one.
    waiting: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

impl Writer {
    fn new(
        conn: Connection,
        config: WriterConfig,
        changes: broadcast::Sender<RequestId>,
        counters: Arc<SyncCounters>,
    ) -> Self {
        Writer {
            conn,
            config,
            changes,
            counters,
            log: None,
            unsynced: false,
            flush_at: None,
            waiting: Vec::new(),
        }
    }

    /// Batches waiting writes into one transaction each, until the store closes.
    ///
    /// Syncing, with [`crate::Durability::AtBarriers`]: batches commit without a sync; a
    /// [`Write::Sync`] is answered after one `fdatasync` of the WAL that covers every batch
    /// committed before it, and all barriers waiting at that moment share it. Commits no
    /// barrier asked for are synced `flush_after` later, and when the store closes. A
    /// [`Write::Sync`] with `soon` is answered by whichever sync comes next.
    fn run(mut self, rx: flume::Receiver<Write>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut closing = None;
        while closing.is_none() {
            let first = match self.flush_at {
                Some(at) if self.unsynced && self.config.wal.is_some() => {
                    match rx.recv_deadline(at) {
                        Ok(write) => write,
                        Err(flume::RecvTimeoutError::Timeout) => {
                            self.flush();
                            continue;
                        }
                        Err(flume::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(write) => write,
                    Err(flume::RecvError::Disconnected) => break,
                },
            };
            batch.push(first);
            batch.extend(rx.try_iter().take(MAX_BATCH - 1));
            let mut barriers = Vec::new();
            let writes: Vec<Write> = batch
                .drain(..)
                .filter_map(|write| match write {
                    Write::Sync { reply, soon: false } => {
                        barriers.push(reply);
                        None
                    }
                    Write::Sync { reply, soon: true } => {
                        self.waiting.push(reply);
                        None
                    }
                    Write::Close(reply) => {
                        closing = Some(reply);
                        None
                    }
                    write => Some(write),
                })
                .collect();
            if !writes.is_empty() {
                self.commit(writes);
            }
            if !barriers.is_empty() {
                let synced = self.sync();
                answer(barriers.into_iter(), &synced);
            }
            // Nothing left to sync: whoever waits for the next sync has what it waits for.
            if !self.unsynced {
                answer(self.waiting.drain(..), &Ok(()));
            }
        }
        // Closing, or every sender is gone: what was committed is made durable first (a
        // failure is answered to the barriers waiting for it; nobody else is left to tell).
        let _ = self.sync();
        drop(self.conn);
        let Some(reply) = closing else { return };
        let _ = reply.send(());
        // Closed, while the store is still there: every later write is refused until the
        // last sender goes. (Stopping the thread here instead would strand a write sent just
        // before the channel closed, unanswered in the channel's queue.)
        let closed =
            SqlError::Unavailable("the SQLite writer stopped (the store was closed)".into());
        for write in rx.iter() {
            fail_all(vec![write], &closed);
        }
    }

    /// Commits `writes` as one batch, flagging the commit unsynced.
    fn commit(&mut self, writes: Vec<Write>) {
        let wal = self.config.wal.is_some();
        // Flagged before any caller hears of the commit.
        if wal {
            self.counters.unsynced.store(true, Ordering::SeqCst);
        }
        if commit_batch(&mut self.conn, writes, &self.changes, &mut self.log) {
            self.counters.commits.fetch_add(1, Ordering::SeqCst);
            self.unsynced |= wal;
            if self.unsynced && self.flush_at.is_none() {
                self.flush_at = Some(Instant::now() + self.config.flush_after);
            }
        }
        self.counters
            .unsynced
            .store(self.unsynced, Ordering::SeqCst);
    }

    /// Syncs the WAL if a commit is not yet synced; answers the barriers that wait for the
    /// next sync with the result, and returns it.
    fn sync(&mut self) -> Result<(), StoreError> {
        let synced = match &self.config.wal {
            Some(wal) if self.unsynced => sync_wal(wal, &self.counters),
            _ => Ok(()),
        };
        self.unsynced &= synced.is_err();
        if !self.unsynced {
            self.flush_at = None;
        }
        // Cleared before any barrier returns.
        self.counters
            .unsynced
            .store(self.unsynced, Ordering::SeqCst);
        answer(self.waiting.drain(..), &synced);
        synced
    }

    /// The flush timer: syncs what no barrier asked to sync. A failed sync is tried again
    /// after another delay.
    fn flush(&mut self) {
        if self.sync().is_err() {
            self.flush_at = Some(Instant::now() + self.config.flush_after);
        }
    }
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
fn sync_wal(wal: &Path, counters: &SyncCounters) -> Result<(), StoreError> {
    let synced = match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    counters.syncs.fetch_add(1, Ordering::SeqCst);
    synced.map_err(|e| {
        StoreError::Unavailable(format!("syncing the SQLite WAL {}: {e}", wal.display()))
    })
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

/// Runs `batch` in one transaction and tells each caller its result. Returns whether it
/// committed.
fn commit_batch(
    conn: &mut Connection,
    batch: Vec<Write>,
    changes: &broadcast::Sender<RequestId>,
    log: &mut Option<TableLog>,
) -> bool {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(
                batch,
                &sql_error("starting a write (is another process holding the lock?)", e),
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
        match apply(&tx, write) {
            Ok((d, events)) => {
                done.push(d);
                logs.extend(events.into_iter().map(|event| (event, None)));
            }
            Err(failed) => {
                let (e, write) = *failed;
                failure = Some((e, Some(write)));
                break;
            }
        }
    }
    let mut new_log = None;
    if failure.is_none() && !logs.is_empty() {
        let requests: Vec<&LogRequest> = logs.iter().map(|(r, _)| r).collect();
        match run_now(audit::append(&mut LogTx(&tx), log.as_ref(), &requests)) {
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
        let _ = tx.rollback();
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
    if let Err(e) = tx.commit() {
        fail_done(done, &sql_error("committing", e));
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

/// Runs a future that never waits (the audit log's append over [`LogTx`], whose every step
/// is a synchronous call into SQLite) to its end on this thread.
fn run_now<T>(future: impl Future<Output = Result<T, SqlError>>) -> Result<T, SqlError> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => Err(SqlError::Database(
            "the audit log append waited on the SQLite writer thread, where nothing waits".into(),
        )),
    }
}

fn fail_all(batch: Vec<Write>, e: &SqlError) {
    for write in batch {
        match write {
            Write::Insert(_, reply) => {
                let _ = reply.send(Err(e.copy().into()));
            }
            Write::Cas(_, _, _, _, reply) => {
                let _ = reply.send(Err(e.copy().into()));
            }
            Write::Log(_, reply) => {
                let _ = reply.send(Err(e.copy()));
            }
            // Barriers and the close are taken out of the batch before it is committed.
            Write::Sync { reply, .. } => {
                let _ = reply.send(Err(e.copy().into()));
            }
            Write::Close(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

fn fail_done(done: Vec<Done>, e: &SqlError) {
    for d in done {
        match d {
            Done::Insert(_, reply) => {
                let _ = reply.send(Err(e.copy().into()));
            }
            Done::Cas(_, _, reply) => {
                let _ = reply.send(Err(e.copy().into()));
            }
            Done::Log(_, reply) => {
                let _ = reply.send(Err(e.copy()));
            }
        }
    }
}

/// Classifies a SQLite error; `what` says what was being done. Busy and locked (another
/// process holds the write lock past the busy timeout) may pass: retryable.
pub(super) fn sql_error(what: &str, e: rusqlite::Error) -> SqlError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            SqlError::Unavailable(format!("{what}: {e}"))
        }
        _ => SqlError::Database(format!("{what}: {e}")),
    }
}

/// Whether `e` is a unique or primary key constraint violation.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// A write that failed the batch, with the error (boxed: a write is large).
type Failed = Box<(SqlError, Write)>;

/// Runs one write inside the batch transaction: its result, and the audit events to append
/// with it (those of a compare-and-set that succeeded). A unique violation is that write's own
/// result; any other error fails the batch.
fn apply(conn: &Connection, write: Write) -> Result<(Done, Vec<LogRequest>), Failed> {
    match write {
        Write::Insert(row, reply) => match insert(conn, &row) {
            Ok(r) => Ok((Done::Insert(r, reply), Vec::new())),
            Err(e) => Err(Box::new((e, Write::Insert(row, reply)))),
        },
        Write::Cas(row, expected, allowed, events, reply) => {
            match cas(conn, &row, expected, &allowed) {
                Ok(r) => {
                    let events = if matches!(r, Ok(true)) {
                        events
                    } else {
                        Vec::new()
                    };
                    Ok((Done::Cas(r, row.request_id, reply), events))
                }
                Err(e) => Err(Box::new((
                    e,
                    Write::Cas(row, expected, allowed, events, reply),
                ))),
            }
        }
        // Audit log requests, barriers and the close are taken out of the batch before this
        // is called.
        write @ (Write::Log(..) | Write::Sync { .. } | Write::Close(_)) => Err(Box::new((
            SqlError::Database("an audit log request or barrier reached the request writer".into()),
            write,
        ))),
    }
}

fn insert(conn: &Connection, row: &RowValues) -> Result<Result<Inserted, StoreError>, SqlError> {
    let id = &row.id;
    let what = format!("storing request {id}");
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO approval_requests
                 (id, version, state, kind, environment, initiator_id, idempotency_key,
                  created_at, expires_at, record, audit_pending, initiator_key, due_at,
                  denied_action_key)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .map_err(|e| sql_error(&what, e))?;
    let result = stmt.execute(row.columns().as_slice());
    match result {
        Ok(1) => Ok(Ok(Inserted::Created)),
        Ok(_) => {
            // Nothing inserted: the idempotency key is taken (a request without one always
            // inserts or fails).
            let existing = match row.idempotency_key.as_deref() {
                Some(key) => by_idempotency_key(conn, key).map_err(|e| sql_error(&what, e))?,
                None => None,
            };
            Ok(match existing {
                Some(record) => record.map(|rec| Inserted::Existing(Box::new(rec))),
                None => Err(StoreError::Backend(format!(
                    "request {id} was not stored and no request holds its idempotency key"
                ))),
            })
        }
        Err(e) if is_unique_violation(&e) => Ok(Err(StoreError::Backend(format!(
            "request id {id} already exists"
        )))),
        Err(e) => Err(sql_error(&what, e)),
    }
}

fn cas(
    conn: &Connection,
    row: &RowValues,
    expected: i64,
    allowed: &str,
) -> Result<Result<bool, StoreError>, SqlError> {
    let id = &row.id;
    let what = format!("updating request {id}");
    let updated = conn
        .prepare_cached(
            "UPDATE approval_requests
                SET version = version + 1, state = ?2, kind = ?3, environment = ?4,
                    initiator_id = ?5, idempotency_key = ?6, created_at = ?7, expires_at = ?8,
                    record = ?9, audit_pending = ?10, initiator_key = ?11, due_at = ?12,
                    denied_action_key = ?13
              WHERE id = ?1 AND version = ?14 AND instr(?15, '|' || state || '|') > 0",
        )
        .and_then(|mut stmt| {
            let columns = row.columns();
            let guard: [&dyn rusqlite::ToSql; 2] = [&expected, &allowed];
            stmt.execute(rusqlite::params_from_iter(columns.iter().chain(&guard)))
        });
    match updated {
        Ok(1) => return Ok(Ok(true)),
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Ok(Err(StoreError::Backend(format!(
                "{what}: its idempotency key belongs to another request"
            ))));
        }
        Err(e) => return Err(sql_error(&what, e)),
    }
    // Nothing changed: a newer version, no such record, or not a lifecycle step.
    let stored = conn
        .prepare_cached("SELECT version, state FROM approval_requests WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
        })
        .map_err(|e| sql_error(&what, e))?;
    Ok(match stored {
        Some((version, state)) if version == expected => {
            Err(lifecycle::illegal_transition(&row.id, &state, row.state))
        }
        _ => Ok(false),
    })
}

/// The batch transaction, which holds SQLite's write lock, as the audit log writer sees it.
/// Every step is a synchronous call: the futures are ready when first polled
/// ([`run_now`]).
struct LogTx<'a>(&'a Connection);

impl audit::LogTx for LogTx<'_> {
    async fn head(&mut self) -> Result<(i64, Option<i64>), SqlError> {
        self.0
            .prepare_cached(
                "SELECT (SELECT COALESCE(MAX(line_no), 0) FROM approval_audit_log),
                        (SELECT size FROM approval_audit_witness WHERE id = 1)",
            )
            .and_then(|mut stmt| stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(|e| sql_error("reading the audit log head and its witness", e))
    }

    async fn lines_after(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, SqlError> {
        self.0
            .prepare_cached(
                "SELECT line_no, line FROM approval_audit_log WHERE line_no > ?1
                  ORDER BY line_no LIMIT ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| sql_error("reading the audit log table", e))
    }

    async fn legacy_head(&mut self) -> Result<Option<(i64, String)>, SqlError> {
        self.0
            .prepare_cached("SELECT seq, hash FROM approval_audit ORDER BY seq DESC LIMIT 1")
            .and_then(|mut stmt| {
                stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| sql_error("reading the old audit table's head", e))
    }

    async fn set_witness(&mut self, size: i64, note: &str) -> Result<(), SqlError> {
        let updated = chrono::Utc::now();
        self.0
            .prepare_cached(
                "INSERT INTO approval_audit_witness (id, size, note, updated_at)
                 VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE
                    SET size = excluded.size, note = excluded.note,
                        updated_at = excluded.updated_at",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    size,
                    note,
                    updated.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ])
            })
            .map(|_| ())
            .map_err(|e| sql_error("writing the audit log's witness", e))
    }

    async fn insert(&mut self, rows: &[NewRow]) -> Result<(), SqlError> {
        // One prepared statement, run once per row: inside the transaction each row costs a
        // step of SQLite's virtual machine, not a round trip.
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|e| sql_error("appending to the audit log table", e))?;
        for row in rows {
            stmt.execute(params![
                row.line_no,
                row.seq,
                row.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                row.request_id,
                row.event,
                row.line,
            ])
            .map_err(|e| sql_error("appending to the audit log table", e))?;
        }
        Ok(())
    }
}
