//! The audit log table: the signed Merkle log of `approvals-audit`, kept in the database.
//!
//! `approval_audit_log` holds one line of the audit log format per row ([`approvals_audit::log`]
//! describes the lines, [`approvals_audit::log::db`] the table): every event is an entry with
//! its RFC 6962 leaf hash and the hash of the entry before it, and a [`SqlAuditSink::signed`]
//! sink adds C2SP checkpoints signed with Ed25519 every N entries or T seconds. The same
//! verifier as for log files checks it (`approvals audit verify --db <url> --trust <keys>`, or
//! [`SqlAuditSink::verify`]), names the row of any edit, deletion, insertion or reordering,
//! and proves single events ([`SqlAuditSink::prove_inclusion`]).
//!
//! Writing: an entry is appended in the same transaction discipline as the store's other
//! writes (on SQLite inside the group-commit transaction after the request writes; on
//! PostgreSQL in the audit writer's own transaction), committed before `record` returns.
//! Appends from every process and replica serialize on the table's write lock (SQLite's
//! `BEGIN IMMEDIATE`, PostgreSQL's `LOCK TABLE .. IN EXCLUSIVE MODE`); under that lock the
//! writer compares the table's last `line_no` with the state it holds and, when another writer
//! moved the log, reads the rows it has not seen and replays them through its
//! [`LogChain`], checking that each stored line is exactly what the chain produces. So the log
//! stays one linear sequence whatever the number of writers, and a writer refuses to append
//! (fail closed) to a log whose rows do not chain or that lost rows it had seen. A writer
//! starting on an existing log replays it once (about as fast as verifying it).
//!
//! Completeness (invariant 12): every checkpoint row is also copied, in the same transaction,
//! to the witness table `approval_audit_witness` (one row: the note and its tree size; migration
//! 4, whose trigger refuses a smaller size or a delete), and a new signed log starts it with the
//! signed empty tree. Verification compares the log table with it by default, so rows cut from
//! the end together with their checkpoints are found; a writer refuses to append to a table
//! shorter than its witness (fail closed). An unsigned sink writes no witness: its log cannot be
//! shown complete.
//!
//! Older databases: migration 2 creates `approval_audit_log` and closes the old hash-chained
//! table `approval_audit`, whose rows stay as they were ([`crate::legacy`] verifies them).
//! When the new log starts on a database whose old table has rows, its first entry is a
//! `legacy_audit_chain` event recording the old table's row count and head hash, so the first
//! signed checkpoint also commits to the old rows.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use approvals_audit::LogError;
pub use approvals_audit::log::db::{DbRow as AuditRow, TABLE};
use approvals_audit::log::{EncodedEvent, LogChain};
use approvals_audit::note::Checkpoint;
/// The `approvals-audit` types a signed sink is configured and verified with.
pub use approvals_audit::{
    LogConfig,
    log::{InclusionProof, LogVerifier, VerifyReport},
    note::{Signer, Verifier},
};
use approvals_core::{AuditError, AuditEvent, AuditSink, RequestId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::error::SqlError;
use crate::{Inner, SqlStore};

/// Rows read per query while catching up with other writers.
pub(crate) const PAGE: i64 = 1000;

/// Origin of the hash chain itself (checkpoints carry the sink's configured origin).
const CHAIN_NAME: &str = "approvals-store-sql";

/// How a sink names and checkpoints the log, and the keys it signs with.
#[derive(Debug)]
pub(crate) struct LogSettings {
    config: Option<LogConfig>,
    signers: Mutex<Vec<Signer>>,
}

impl LogSettings {
    fn signers(&self) -> Vec<Signer> {
        self.signers.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// What a sink asks the database writer to do.
#[derive(Debug)]
pub(crate) enum LogOp {
    /// Append events, in order (one, or all of a transition's); the result is the last
    /// one's row.
    Append(Vec<LoggedEvent>),
    /// Write a checkpoint: always (`force`), or only if one is due.
    Checkpoint { force: bool },
}

/// An event as the writer appends it: encoded and hashed by the caller
/// ([`LoggedEvent::encode`]), so the database's one writer thread, which every transition
/// waits for, only chains it.
#[derive(Debug)]
pub(crate) struct LoggedEvent {
    at: DateTime<Utc>,
    request_id: RequestId,
    name: &'static str,
    encoded: EncodedEvent,
}

impl LoggedEvent {
    /// `events`, encoded; an event that cannot be encoded refuses them all.
    pub(crate) fn encode(events: &[AuditEvent]) -> Result<Vec<LoggedEvent>, SqlError> {
        events
            .iter()
            .map(|event| {
                let value = serde_json::to_value(event).map_err(|e| {
                    SqlError::Database(format!("the audit event cannot be encoded: {e}"))
                })?;
                Ok(LoggedEvent {
                    at: event.at,
                    request_id: event.request_id,
                    name: event.name(),
                    encoded: EncodedEvent::new(&value),
                })
            })
            .collect()
    }
}

/// One request to the writer: the operation and the settings of the sink asking.
#[derive(Debug)]
pub(crate) struct LogRequest {
    pub op: LogOp,
    pub settings: Arc<LogSettings>,
}

/// The writer's answer: the row written (the entry, or the checkpoint), or `None` when no
/// checkpoint was due.
pub(crate) type LogReply = oneshot::Sender<LogResult>;

/// The result of one [`LogRequest`].
pub(crate) type LogResult = Result<Option<AuditRow>, SqlError>;

/// A row to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub line_no: i64,
    pub seq: Option<i64>,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub event: Option<String>,
    pub line: String,
}

impl NewRow {
    fn to_row(&self) -> AuditRow {
        AuditRow {
            line_no: self.line_no,
            seq: self.seq,
            request_id: self.request_id.clone(),
            event: self.event.clone(),
            line: self.line.clone(),
        }
    }
}

/// The log's state as of row `last_line_no`: the chain and Merkle tree, and its last
/// checkpoint. Each database writer keeps one between transactions.
#[derive(Debug, Clone)]
pub(crate) struct TableLog {
    chain: LogChain,
    last_line_no: i64,
    /// Origin of the checkpoints in the table, once there is one.
    origin: Option<String>,
    /// Tree size of the last checkpoint.
    checkpointed: u64,
    last_checkpoint_at: Instant,
    /// The last checkpoint this writer signed in the current batch (size, note), for the
    /// witness table.
    new_witness: Option<(u64, String)>,
}

#[derive(serde::Deserialize)]
struct EntryLine<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
}

#[derive(serde::Deserialize)]
struct CheckpointLine {
    checkpoint: String,
}

fn corrupt(line_no: i64, why: &str) -> SqlError {
    SqlError::Corrupt(format!(
        "audit log line {line_no} {why}; nothing more is appended until the table is restored \
         (run `approvals audit verify --db <url> --trust <keys>` to see what changed)"
    ))
}

fn log_error(e: LogError) -> SqlError {
    SqlError::Database(format!("audit log: {e}"))
}

impl TableLog {
    fn new() -> Result<Self, SqlError> {
        Ok(TableLog {
            chain: LogChain::new(CHAIN_NAME).map_err(log_error)?,
            last_line_no: 0,
            origin: None,
            checkpointed: 0,
            last_checkpoint_at: Instant::now(),
            new_witness: None,
        })
    }

    /// Replays rows written after `last_line_no` (by this or another writer), checking that each
    /// continues the chain exactly.
    fn catch_up(&mut self, rows: &[(i64, String)]) -> Result<(), SqlError> {
        for (line_no, line) in rows {
            let line_no = *line_no;
            if line_no != self.last_line_no + 1 {
                return Err(corrupt(
                    line_no,
                    &format!(
                        "follows line {}: rows were deleted or renumbered",
                        self.last_line_no
                    ),
                ));
            }
            if line.starts_with("{\"checkpoint\":") {
                let note = serde_json::from_str::<CheckpointLine>(line)
                    .map_err(|e| corrupt(line_no, &format!("is not a checkpoint line: {e}")))?
                    .checkpoint;
                let origin = note.lines().next().unwrap_or_default().to_owned();
                let expected =
                    Checkpoint::new(origin.clone(), self.chain.size(), self.chain.root()).to_text();
                if !note.starts_with(&format!("{expected}\n")) {
                    return Err(corrupt(
                        line_no,
                        "is a checkpoint that does not match the entries above it",
                    ));
                }
                if self.origin.as_ref().is_some_and(|o| *o != origin) {
                    return Err(corrupt(
                        line_no,
                        &format!(
                            "is a checkpoint for log {origin:?}, but earlier ones are for {:?}",
                            self.origin.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                self.origin = Some(origin);
                self.checkpointed = self.chain.size();
                self.last_checkpoint_at = Instant::now();
            } else {
                let entry = serde_json::from_str::<EntryLine<'_>>(line)
                    .map_err(|e| corrupt(line_no, &format!("is not an entry line: {e}")))?;
                let event: Value = serde_json::from_str(entry.event.get())
                    .map_err(|e| corrupt(line_no, &format!("holds an invalid event: {e}")))?;
                let produced = self.chain.append(&event).map_err(log_error)?;
                if produced.line != *line {
                    return Err(corrupt(
                        line_no,
                        "does not continue the chain: it was edited, inserted or moved",
                    ));
                }
            }
            self.last_line_no = line_no;
        }
        Ok(())
    }

    fn checkpoint_due(&self, config: &LogConfig) -> bool {
        let since = self.chain.size() - self.checkpointed;
        since > 0
            && ((config.checkpoint_every > 0 && since >= config.checkpoint_every)
                || config
                    .checkpoint_interval
                    .is_some_and(|t| self.last_checkpoint_at.elapsed() >= t))
    }

    fn push_entry(
        &mut self,
        encoded: &EncodedEvent,
        at: DateTime<Utc>,
        request_id: Option<String>,
        event: Option<String>,
        rows: &mut Vec<NewRow>,
    ) -> Result<AuditRow, SqlError> {
        let entry = self.chain.append_encoded(encoded).map_err(log_error)?;
        self.last_line_no += 1;
        let row = NewRow {
            line_no: self.last_line_no,
            seq: i64::try_from(entry.seq).ok(),
            at,
            request_id,
            event,
            line: entry.line,
        };
        let out = row.to_row();
        rows.push(row);
        Ok(out)
    }

    fn push_checkpoint(
        &mut self,
        config: &LogConfig,
        signers: &[Signer],
        rows: &mut Vec<NewRow>,
    ) -> Result<AuditRow, SqlError> {
        if let Some(origin) = self.origin.as_ref().filter(|o| **o != config.origin) {
            return Err(SqlError::InvalidOption(format!(
                "the audit log in this database has origin {origin:?}, but the sink is \
                 configured for {:?}; use the same origin on every replica",
                config.origin
            )));
        }
        let checkpoint =
            Checkpoint::new(config.origin.clone(), self.chain.size(), self.chain.root());
        let signers: Vec<&Signer> = signers.iter().collect();
        let note = checkpoint
            .sign(&signers)
            .map_err(|e| SqlError::Database(format!("signing an audit checkpoint: {e}")))?;
        let note_json = serde_json::to_string(&note)
            .map_err(|e| SqlError::Database(format!("encoding an audit checkpoint: {e}")))?;
        self.new_witness = Some((checkpoint.size, note));
        self.last_line_no += 1;
        self.origin = Some(config.origin.clone());
        self.checkpointed = self.chain.size();
        self.last_checkpoint_at = Instant::now();
        let row = NewRow {
            line_no: self.last_line_no,
            seq: None,
            at: Utc::now(),
            request_id: None,
            event: None,
            line: format!("{{\"checkpoint\":{note_json}}}"),
        };
        let out = row.to_row();
        rows.push(row);
        Ok(out)
    }

    /// Applies the requests in order; returns the rows to insert and one result per request.
    /// An error signing a checkpoint fails the whole batch; an event that cannot be encoded
    /// fails only its own request.
    fn plan(
        &mut self,
        requests: &[&LogRequest],
        legacy_head: Option<(i64, String)>,
    ) -> Result<(Vec<NewRow>, Vec<LogResult>), SqlError> {
        let mut rows = Vec::new();
        let mut results = Vec::with_capacity(requests.len());
        if let Some((count, hash)) = legacy_head {
            let now = Utc::now();
            let anchor = serde_json::json!({
                "schema": 1,
                "at": now,
                "event": "legacy_audit_chain",
                "table": "approval_audit",
                "rows": count,
                "head_hash": hash,
            });
            self.push_entry(
                &EncodedEvent::new(&anchor),
                now,
                None,
                Some("legacy_audit_chain".into()),
                &mut rows,
            )?;
        }
        for request in requests {
            let signers = request.settings.signers();
            let config = request
                .settings
                .config
                .as_ref()
                .filter(|_| !signers.is_empty());
            let result = match &request.op {
                LogOp::Append(events) => {
                    let mut last = Ok(None);
                    for event in events {
                        let row = self.push_entry(
                            &event.encoded,
                            event.at,
                            Some(event.request_id.to_string()),
                            Some(event.name.to_owned()),
                            &mut rows,
                        );
                        if row.is_ok()
                            && let Some(config) = config
                            && self.checkpoint_due(config)
                        {
                            self.push_checkpoint(config, &signers, &mut rows)?;
                        }
                        last = row.map(Some);
                        if last.is_err() {
                            break;
                        }
                    }
                    last
                }
                LogOp::Checkpoint { force } => match config {
                    Some(config) if *force || self.checkpoint_due(config) => {
                        self.push_checkpoint(config, &signers, &mut rows).map(Some)
                    }
                    Some(_) => Ok(None),
                    None if *force => Err(SqlError::InvalidOption(
                        "this audit sink has no signing key: create it with SqlAuditSink::signed"
                            .into(),
                    )),
                    None => Ok(None),
                },
            };
            results.push(result);
        }
        Ok((rows, results))
    }
}

/// What the log writer needs from a transaction that holds the table's write lock.
pub(crate) trait LogTx {
    /// The largest `line_no` in the table (0 when empty), and the tree size of the checkpoint
    /// in the witness table, if it has one: one query, as every append starts with both.
    async fn head(&mut self) -> Result<(i64, Option<i64>), SqlError>;
    /// Up to `limit` rows `(line_no, line)` after `after`, in order.
    async fn lines_after(&mut self, after: i64, limit: i64)
    -> Result<Vec<(i64, String)>, SqlError>;
    /// The old table's row count and head hash, if it has rows.
    async fn legacy_head(&mut self) -> Result<Option<(i64, String)>, SqlError>;
    /// Inserts the rows.
    async fn insert(&mut self, rows: &[NewRow]) -> Result<(), SqlError>;
    /// Replaces the witness (the trigger refuses a smaller size).
    async fn set_witness(&mut self, size: i64, note: &str) -> Result<(), SqlError>;
}

/// Appends the requests inside `tx` (which holds the table's write lock), starting from the
/// writer's `cached` state when the table has not moved since, and returns the new state (to
/// keep only once the transaction commits) and one result per request.
pub(crate) async fn append(
    tx: &mut impl LogTx,
    cached: Option<&TableLog>,
    requests: &[&LogRequest],
) -> Result<(TableLog, Vec<LogResult>), SqlError> {
    let (head, witnessed) = tx.head().await?;
    let mut state = match cached {
        Some(state) if state.last_line_no <= head => state.clone(),
        // Rows this writer wrote or read are gone: someone cut the end of the log.
        Some(state) => {
            return Err(corrupt(
                state.last_line_no,
                &format!("is gone (the table ends at line {head}): rows were deleted from the end"),
            ));
        }
        None => TableLog::new()?,
    };
    while state.last_line_no < head {
        let rows = tx.lines_after(state.last_line_no, PAGE).await?;
        if rows.is_empty() {
            return Err(corrupt(
                state.last_line_no + 1,
                "is missing below the last line: rows were deleted",
            ));
        }
        state.catch_up(&rows)?;
    }
    // Invariant 12: a log that lost rows its witness had signed is not appended to.
    if let Some(size) = witnessed
        && u64::try_from(size).unwrap_or(u64::MAX) > state.chain.size()
    {
        return Err(corrupt(
            state.last_line_no,
            &format!(
                "ends a log of {} entries, but the witness table approval_audit_witness holds \
                 a checkpoint of {size}: rows were deleted from the end",
                state.chain.size()
            ),
        ));
    }
    let starts_log = head == 0
        && requests
            .iter()
            .any(|r| matches!(&r.op, LogOp::Append(events) if !events.is_empty()));
    let legacy = if starts_log {
        tx.legacy_head().await?
    } else {
        None
    };
    state.new_witness = None;
    let (rows, results) = state.plan(requests, legacy)?;
    if !rows.is_empty() {
        tx.insert(&rows).await?;
    }
    let new_witness = match state.new_witness.take() {
        Some(witness) => Some(witness),
        // A signed log without a witness yet (a new one): the empty tree, signed, so that
        // from the first entry on a cut log is noticed.
        None if witnessed.is_none() => requests
            .iter()
            .find_map(|r| {
                let signers = r.settings.signers();
                let config = r.settings.config.as_ref()?;
                (!signers.is_empty()).then(|| (config.origin.clone(), signers))
            })
            .map(|(origin, signers)| {
                let empty = approvals_audit::merkle::Frontier::new().root();
                let signers: Vec<&Signer> = signers.iter().collect();
                Checkpoint::new(origin, 0, empty)
                    .sign(&signers)
                    .map(|note| (0, note))
                    .map_err(|e| SqlError::Database(format!("signing the audit witness: {e}")))
            })
            .transpose()?,
        None => None,
    };
    if let Some((size, note)) = new_witness {
        let size = i64::try_from(size)
            .map_err(|_| SqlError::Database("the audit log is too large".into()))?;
        tx.set_witness(size, &note).await?;
    }
    Ok((state, results))
}

/// An [`AuditSink`] writing every event to the database's audit log table, committed before
/// `record` returns; see the [module documentation](self).
///
/// [`SqlAuditSink::signed`] also writes signed checkpoints (use it in production: only a
/// signed checkpoint lets a verifier detect entries rewritten together with their hashes, or
/// cut off the end). [`SqlStore::audit_sink`] and [`SqlAuditSink::new`] write entries only,
/// hash-chained and Merkle-hashed but unsigned.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_audit::{LogConfig, note::Signer};
/// use approvals_store_sql::{SqlAuditSink, SqlStore};
///
/// let store = SqlStore::connect("sqlite://approvals.db").await?;
/// // The key as written by `approvals audit keygen`, from a file or an environment variable.
/// let signer = Signer::from_env("APPROVALS_AUDIT_SIGNER_KEY")
///     .or_else(|_| Signer::from_file("/etc/approvals/audit.skey"))?;
/// let config = LogConfig::new(signer.name()).checkpoint_every(1000); // and every 10 s
/// let sink = SqlAuditSink::signed(store.clone(), config, signer);
/// // Gate::builder().store(store).audit(sink.clone()) ...
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlAuditSink {
    store: SqlStore,
    settings: Arc<LogSettings>,
}

impl std::fmt::Debug for SqlAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlAuditSink")
            .field("store", &self.store)
            .field("origin", &self.settings.config.as_ref().map(|c| &c.origin))
            .finish_non_exhaustive()
    }
}

/// A compare-and-set and its events in one transaction ([`approvals_core::RecordedWrites`]),
/// for a store and a sink of it on the same database.
pub(crate) struct RecordedSql {
    pub(crate) store: SqlStore,
    pub(crate) settings: Arc<LogSettings>,
}

impl RecordedSql {
    /// The sink's writes, when `audit` is a [`SqlAuditSink`] of `store`'s own pool.
    pub(crate) fn of(store: &SqlStore, audit: &dyn AuditSink) -> Option<RecordedSql> {
        let sink = audit.as_log()?.downcast_ref::<SqlAuditSink>()?;
        Arc::ptr_eq(&sink.store.inner, &store.inner).then(|| RecordedSql {
            store: store.clone(),
            settings: sink.settings.clone(),
        })
    }

    /// One append request for the events, with the sink's settings.
    pub(crate) fn requests(&self, events: &[AuditEvent]) -> Result<Vec<LogRequest>, SqlError> {
        Ok(vec![LogRequest {
            op: LogOp::Append(LoggedEvent::encode(events)?),
            settings: self.settings.clone(),
        }])
    }
}

impl SqlAuditSink {
    /// A sink writing entries without checkpoints (same as [`SqlStore::audit_sink`]).
    pub fn new(store: SqlStore) -> Self {
        SqlAuditSink {
            store,
            settings: Arc::new(LogSettings {
                config: None,
                signers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A sink that also writes checkpoints signed by `signer`: every
    /// `config.checkpoint_every` entries, and when an entry comes `config.checkpoint_interval`
    /// after the last checkpoint; a timer task (started when a Tokio runtime is running)
    /// checkpoints an idle log's last entries after that interval too. `config.origin` names
    /// the log in every checkpoint and must be the same on every replica; `config.sync`,
    /// `config.latest_checkpoint_file`, `config.witness_file` and `config.witness_url` do not
    /// apply (commits are durable; the witness is the table `approval_audit_witness`).
    pub fn signed(store: SqlStore, config: LogConfig, signer: Signer) -> Self {
        let interval = config.checkpoint_interval;
        let sink = SqlAuditSink {
            store,
            settings: Arc::new(LogSettings {
                config: Some(config),
                signers: Mutex::new(vec![signer]),
            }),
        };
        if let (Some(interval), Ok(runtime)) = (interval, tokio::runtime::Handle::try_current()) {
            runtime.spawn(checkpoint_timer(
                Arc::downgrade(&sink.store.inner),
                Arc::downgrade(&sink.settings),
                interval,
            ));
        }
        sink
    }

    /// The verifier key of the current signing key (publish it to auditors).
    pub fn verifier(&self) -> Option<Verifier> {
        self.settings.signers().last().map(Signer::verifier)
    }

    async fn request(&self, op: LogOp) -> Result<Option<AuditRow>, SqlError> {
        let request = LogRequest {
            op,
            settings: self.settings.clone(),
        };
        self.store.audit_log(request).await
    }

    /// Appends one event and returns its row.
    pub async fn append(&self, event: &AuditEvent) -> Result<AuditRow, SqlError> {
        self.request(LogOp::Append(LoggedEvent::encode(std::slice::from_ref(
            event,
        ))?))
        .await?
        .ok_or_else(|| SqlError::Database("the audit append wrote no row".into()))
    }

    /// Writes a signed checkpoint now, over every entry in the table.
    pub async fn checkpoint(&self) -> Result<AuditRow, SqlError> {
        self.request(LogOp::Checkpoint { force: true })
            .await?
            .ok_or_else(|| SqlError::Database("the checkpoint wrote no row".into()))
    }

    /// Switches to a new signing key: the handover checkpoint is signed by both keys, later
    /// ones by the new key only. Verifiers should trust both keys for a log spanning the
    /// rotation (other replicas keep signing with the keys they were given).
    pub async fn rotate_key(&self, signer: Signer) -> Result<AuditRow, SqlError> {
        let with_both = |signers: &mut Vec<Signer>| signers.push(signer.clone());
        if let Ok(mut signers) = self.settings.signers.lock() {
            with_both(&mut signers);
        }
        let result = self.checkpoint().await;
        if let Ok(mut signers) = self.settings.signers.lock() {
            match &result {
                Ok(_) => signers.retain(|s| s.key_id() == signer.key_id()),
                Err(_) => {
                    signers.pop();
                }
            }
        }
        result
    }

    /// Up to `limit` rows after line `after_line_no` (0 for the start), in order.
    pub async fn rows(&self, after_line_no: i64, limit: usize) -> Result<Vec<AuditRow>, SqlError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store
            .log_db()
            .rows(after_line_no, limit)
            .await
            .map_err(log_error)
    }

    /// Every event about one request, oldest first (found by the `request_id` column; run
    /// [`Self::verify`] to know the columns and lines are intact).
    pub async fn events_for(&self, id: RequestId) -> Result<Vec<AuditEvent>, SqlError> {
        let lines = self.store.audit_lines_for(&id.to_string()).await?;
        lines
            .into_iter()
            .map(|(line_no, line)| {
                serde_json::from_str::<EntryLine<'_>>(&line)
                    .and_then(|e| serde_json::from_str(e.event.get()))
                    .map_err(|e| SqlError::Corrupt(format!("audit log line {line_no}: {e}")))
            })
            .collect()
    }

    /// Verifies the table with `verifier` (trusted keys, expected origin, checkpoints kept
    /// elsewhere) exactly as a log file is verified; see [`approvals_audit::log::db`].
    pub async fn verify(&self, verifier: &LogVerifier) -> Result<VerifyReport, SqlError> {
        self.store
            .log_db()
            .verify(verifier)
            .await
            .map_err(log_error)
    }

    /// Checks the table's structure without keys (hashes, chain, checkpoint roots), for logs
    /// written by unsigned sinks or when no key is at hand. Not evidence: use [`Self::verify`].
    pub async fn check_unsigned(&self) -> Result<VerifyReport, SqlError> {
        self.store
            .log_db()
            .check_unsigned()
            .await
            .map_err(log_error)
    }

    /// The inclusion proof of entry `seq` at the checkpoint of size `checkpoint_size` (default:
    /// the last one).
    pub async fn prove_inclusion(
        &self,
        seq: u64,
        checkpoint_size: Option<u64>,
    ) -> Result<InclusionProof, SqlError> {
        self.store
            .log_db()
            .prove_inclusion(seq, checkpoint_size)
            .await
            .map_err(log_error)
    }
}

/// Every `interval`, asks the writer for a checkpoint if one is due, until the sink or the
/// store is gone.
async fn checkpoint_timer(store: Weak<Inner>, settings: Weak<LogSettings>, interval: Duration) {
    let interval = interval.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(interval).await;
        let (Some(inner), Some(settings)) = (store.upgrade(), settings.upgrade()) else {
            return;
        };
        let store = SqlStore { inner };
        let request = LogRequest {
            op: LogOp::Checkpoint { force: false },
            settings,
        };
        // A failure (database unavailable) is retried at the next tick.
        let _ = store.audit_log(request).await;
    }
}

#[async_trait]
impl AuditSink for SqlAuditSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.append(event)
            .await
            .map(|_| ())
            .map_err(|e| AuditError::new(e.to_string()))
    }

    /// One append of all the events: one commit.
    async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let events = LoggedEvent::encode(events).map_err(|e| AuditError::new(e.to_string()))?;
        self.request(LogOp::Append(events))
            .await
            .map(|_| ())
            .map_err(|e| AuditError::new(e.to_string()))
    }

    /// The store's barrier: the log is a table of the same database.
    async fn sync(&self) -> Result<(), AuditError> {
        approvals_core::Store::sync(&self.store)
            .await
            .map_err(|e| AuditError::new(e.to_string()))
    }

    /// The store's database ([`approvals_core::Store::sync_domain`]).
    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        approvals_core::Store::sync_domain(&self.store)
    }

    /// This sink, so that its store commits the gate's transitions with their events
    /// ([`SqlStore`]'s [`recorded_writes`](approvals_core::Store::recorded_writes)).
    fn as_log(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn sync_soon(&self) -> Result<(), AuditError> {
        approvals_core::Store::sync_soon(&self.store)
            .await
            .map_err(|e| AuditError::new(e.to_string()))
    }
}
