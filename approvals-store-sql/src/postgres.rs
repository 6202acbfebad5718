//! The PostgreSQL backend: one approval queue shared by every replica.
//!
//! After every committed compare-and-set, a notifier task sends `pg_notify(channel, id)` (in
//! batches, each its own short transaction; see [`notifier`] for why not in the writing
//! transaction). A listener task on its own connection forwards notifications to
//! [`Store::changes`] and reconnects when the connection drops; notifications sent while it
//! was down are lost, and the gate's polling (`GateBuilder::poll_interval`) picks those
//! changes up.
//!
//! [`Store::changes`]: approvals_core::Store::changes

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use approvals_core::{Inserted, ListFilter, RequestId, RequestRecord, StoreError};
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::audit::{self, AuditRow, LogReply, LogRequest, NewRow, TableLog};
use crate::error::{SqlError, store_error};
use crate::legacy::RawRow;
use crate::lifecycle::{self, Columns};
use crate::{SqlStoreOptions, migration_table};

const MIGRATION_1: &str = include_str!("../migrations/postgres/0001_requests_and_audit.sql");
const MIGRATION_2: &str = include_str!("../migrations/postgres/0002_signed_audit_log.sql");
const MIGRATION_3: &str = include_str!("../migrations/postgres/0003_audit_pending_column.sql");
const MIGRATION_4: &str = include_str!("../migrations/postgres/0004_audit_witness.sql");
const MIGRATION_5: &str = include_str!("../migrations/postgres/0005_initiator_key.sql");
const MIGRATION_6: &str = include_str!("../migrations/postgres/0006_due_at.sql");
const MIGRATION_7: &str = include_str!("../migrations/postgres/0007_denied_action_key.sql");

/// Longest schema name accepted (the notification channel name adds 18 bytes; PostgreSQL
/// identifiers end at 63).
const MAX_SCHEMA_LEN: usize = 40;

pub(crate) struct PgBackend {
    pool: PgPool,
    /// `Some` with [`crate::Durability::AtBarriers`]: commits are asynchronous and barriers
    /// flush the WAL.
    barriers: Option<Barriers>,
    /// The database a barrier flushes: the store's and its audit log's.
    pub(crate) domain: approvals_core::SyncDomain,
    changes: broadcast::Sender<RequestId>,
    listener: JoinHandle<()>,
    audits: mpsc::Sender<AuditJob>,
    notices: mpsc::Sender<RequestId>,
}

/// Work for the audit log writer, with where to send its result.
enum AuditJob {
    /// Append an event or write a checkpoint.
    Log(LogRequest, LogReply),
    /// A compare-and-set whose events are appended in the same transaction when it succeeds.
    Recorded(Box<RecordedCas>),
}

struct RecordedCas {
    expected_version: u64,
    record: RequestRecord,
    events: Vec<LogRequest>,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// Most audit events appended in one transaction.
const MAX_AUDIT_BATCH: usize = 512;

impl Drop for PgBackend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Barriers on PostgreSQL, with commits made under `synchronous_commit = off`.
///
/// A barrier commits one transaction under the server's own `synchronous_commit` level (the
/// session default, which the pool's `SET` leaves in place) that writes one WAL record, a
/// transactional logical message that no table keeps; its commit flushes the WAL up to its
/// commit record, which comes after every commit made before the barrier began, on any
/// connection. (A transaction that writes no WAL, such as one that only takes an xid, commits
/// asynchronously whatever the level.) A barrier that finds the server's WAL flushed as far
/// as it is written does nothing. Barriers in flight at once share one flush: a barrier that
/// waited while another flushed returns if that flush began after it was called.
#[derive(Default)]
struct Barriers {
    /// Barriers called so far; each takes the next number.
    called: AtomicU64,
    /// Held while flushing; holds the number of the last barrier the latest flush covers.
    covered: tokio::sync::Mutex<u64>,
    /// Flushes made.
    flushes: AtomicU64,
}

/// One barrier, sent as one simple query: one round trip and one implicit transaction. Its
/// `SET LOCAL … TO DEFAULT` gives the transaction the server's own `synchronous_commit`
/// (the session's is off), which its commit then waits for. When the server has flushed
/// everything inserted into its WAL so far (its WAL writer, or another replica's barrier,
/// came first), the transaction writes nothing and returns false; unless synchronous standbys
/// are configured: a local flush does not say they have it.
///
/// The default once came from `pg_settings`, whose view builds a row for every setting of the
/// server on each read: about 0.5 ms of server time per barrier, the largest single cost in
/// the server's log of the 64-agent lifecycle bench.
const BARRIER_SQL: &str = "SET LOCAL synchronous_commit TO DEFAULT;
    SELECT CASE
        WHEN pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()
             AND current_setting('synchronous_standby_names') = '' THEN false
        ELSE pg_logical_emit_message(true, 'approvals.barrier', '') IS NOT NULL
    END";

impl Barriers {
    async fn flush(&self, pool: &PgPool) -> Result<(), StoreError> {
        let ticket = self.called.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.covered.lock().await;
        if *covered >= ticket {
            return Ok(());
        }
        // Every barrier called up to now is covered by a flush that begins after this line.
        let upto = self.called.load(Ordering::SeqCst);
        let flushed: bool = sqlx::raw_sql(BARRIER_SQL)
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| store_error("flushing the WAL at a barrier", e))?;
        if flushed {
            self.flushes.fetch_add(1, Ordering::SeqCst);
        }
        *covered = upto;
        Ok(())
    }
}

fn check_schema(schema: &str) -> Result<(), SqlError> {
    let ok = !schema.is_empty()
        && schema.len() <= MAX_SCHEMA_LEN
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(SqlError::InvalidOption(format!(
            "schema {schema:?}: use 1 to {MAX_SCHEMA_LEN} lowercase letters, digits and _, not starting with a digit"
        )))
    }
}

impl PgBackend {
    pub(crate) async fn connect(options: &SqlStoreOptions) -> Result<Self, SqlError> {
        let mut connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| SqlError::InvalidOption(format!("database URL: {e}")))?;
        let channel = match &options.schema {
            Some(schema) => {
                check_schema(schema)?;
                connect = connect.options([("search_path", schema.as_str())]);
                format!("approvals_changes_{schema}")
            }
            None => "approvals_changes".to_owned(),
        };
        let at_barriers = options.durability == crate::Durability::AtBarriers;
        let pool_options = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // The store's statements each touch a handful of rows by index. When the
                    // planner misjudges one (statistics not yet gathered after a burst of
                    // inserts), JIT compilation alone costs 100 ms or more: a sweep among
                    // 1,000,000 fresh pending requests took 150 ms with it, 6 ms without.
                    sqlx::query("SET jit = off").execute(&mut *conn).await?;
                    if at_barriers {
                        // A commit returns once its WAL record is written, not flushed;
                        // barriers flush. Set per session, not in the startup packet, so that
                        // the server's own level stays the session's default, which a barrier
                        // restores for its commit.
                        sqlx::query("SET synchronous_commit = off")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        let pool = pool_options
            .connect_with(connect.clone())
            .await
            .map_err(|e| SqlError::from_sqlx("connecting to PostgreSQL", e))?;
        if let Some(schema) = &options.schema {
            create_schema(&pool, schema).await?;
        }

        let (changes, _) = broadcast::channel(1024);
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(connect);
        let listener = subscribe(&listen_pool, &channel)
            .await
            .map_err(|e| SqlError::from_sqlx("listening for changes", e))?;
        let listener = tokio::spawn(forward(
            listener,
            listen_pool,
            channel.clone(),
            changes.clone(),
        ));
        let (notices, rx) = mpsc::channel(4096);
        tokio::spawn(notifier(pool.clone(), channel.clone(), rx));
        let (audits, rx) = mpsc::channel(4 * MAX_AUDIT_BATCH);
        tokio::spawn(audit_writer(pool.clone(), rx, notices.clone()));
        Ok(PgBackend {
            pool,
            barriers: at_barriers.then(Barriers::default),
            domain: approvals_core::SyncDomain::new(),
            changes,
            listener,
            audits,
            notices,
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
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| SqlError::Migrate(e.to_string()))?;
        self.fill_initiator_keys().await?;
        // Open and unaudited rows stored before migration 6; a row changed meanwhile got its
        // own from the write that changed it, and replicas migrating at once fill the same
        // rows with the same values.
        self.fill_from_records(
            "filling due times (migration 6)",
            lifecycle::MISSING_DUE_AT,
            "UPDATE approval_requests SET due_at = $1 WHERE id = $2 AND due_at IS NULL",
            lifecycle::backfilled_due_at,
        )
        .await?;
        // Denied rows stored before migration 7.
        self.fill_from_records(
            "filling denied action keys (migration 7)",
            lifecycle::MISSING_DENIED_ACTION_KEY,
            "UPDATE approval_requests SET denied_action_key = $1
              WHERE id = $2 AND denied_action_key IS NULL",
            lifecycle::backfilled_denied_action_key,
        )
        .await
    }

    /// Fills a column computed from the stored record for the rows `select` finds (`id`,
    /// `version`, `record`, a batch at a time, none once they are filled), one transaction
    /// per batch: `update` sets `$1` to `value` of the record for row `$2`.
    async fn fill_from_records<V>(
        &self,
        what: &str,
        select: &'static str,
        update: &'static str,
        value: impl Fn(&RequestRecord) -> V,
    ) -> Result<(), SqlError>
    where
        V: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
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
                let record =
                    decode_row(row).map_err(|e| SqlError::Migrate(format!("{what}: {e}")))?;
                sqlx::query(update)
                    .bind(value(&record))
                    .bind(record.id.0)
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
    /// per transaction. Finds them through a partial index, so it costs nothing once done;
    /// replicas migrating at once fill the same rows with the same keys.
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
                let id: Uuid = row
                    .try_get("id")
                    .map_err(|e| SqlError::from_sqlx(what, e))?;
                let initiator: String = row
                    .try_get("initiator_id")
                    .map_err(|e| SqlError::from_sqlx(what, e))?;
                sqlx::query(
                    "UPDATE approval_requests SET initiator_key = $1
                      WHERE id = $2 AND initiator_key IS NULL",
                )
                .bind(lifecycle::initiator_key(&initiator))
                .bind(id)
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
        // Whatever was committed is flushed before the store goes, as on SQLite.
        let _ = self.sync().await;
        self.listener.abort();
        self.pool.close().await;
    }

    pub(crate) fn changes(&self) -> broadcast::Receiver<RequestId> {
        self.changes.subscribe()
    }

    /// The durability barrier ([`approvals_core::Store::sync`]): once it returns, every
    /// transaction committed before it was called, by this process or any other, is flushed.
    pub(crate) async fn sync(&self) -> Result<(), StoreError> {
        match &self.barriers {
            Some(barriers) => barriers.flush(&self.pool).await,
            None => Ok(()),
        }
    }

    /// WAL flushes made by barriers.
    pub(crate) fn sync_stats(&self) -> crate::SyncStats {
        crate::SyncStats {
            syncs: self
                .barriers
                .as_ref()
                .map_or(0, |b| b.flushes.load(Ordering::SeqCst)),
            ..crate::SyncStats::default()
        }
    }

    pub(crate) async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        let c = Columns::of(record);
        let json = lifecycle::encode(record, 1)?;
        let id = record.id;
        let result = sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, environment, initiator_id, idempotency_key,
                  created_at, expires_at, record, audit_pending, initiator_key, due_at,
                  denied_action_key)
             VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(id.0)
        .bind(c.state)
        .bind(c.kind)
        .bind(c.environment)
        .bind(c.initiator_id.as_deref())
        .bind(c.idempotency_key)
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(&json)
        .bind(c.audit_pending)
        .bind(c.initiator_key.as_deref())
        .bind(c.due_at)
        .bind(c.denied_action_key.as_deref())
        .execute(&self.pool)
        .await;
        match result {
            Ok(done) if done.rows_affected() == 1 => Ok(Inserted::Created),
            Ok(_) => {
                let key = c.idempotency_key.unwrap_or_default();
                match self.get_by_idempotency_key(key).await? {
                    Some(existing) => Ok(Inserted::Existing(Box::new(existing))),
                    None => Err(StoreError::Backend(format!(
                        "request {id} was not stored and no request holds its idempotency key"
                    ))),
                }
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Backend(
                format!("request id {id} already exists"),
            )),
            Err(e) => Err(store_error(&format!("storing request {id}"), e)),
        }
    }

    pub(crate) async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query("SELECT id, version, record FROM approval_requests WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error(&format!("reading request {id}"), e))?;
        row.map(|r| decode_row(&r)).transpose()
    }

    pub(crate) async fn get_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version, record FROM approval_requests WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| store_error("reading a request by idempotency key", e))?;
        row.map(|r| decode_row(&r)).transpose()
    }

    pub(crate) async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        let id = record.id;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| store_error(&format!("updating request {id}"), e))?;
        let set = cas(&mut conn, expected_version, record)
            .await
            .map_err(StoreError::from)??;
        if set {
            // Committed: tell the other replicas (best effort; they also poll).
            let _ = self.notices.try_send(id);
        }
        Ok(set)
    }

    /// A compare-and-set that the audit writer runs in its transaction, appending `events`
    /// when it succeeds (under the log's lock, like any append).
    pub(crate) async fn compare_and_set_recorded(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: Vec<LogRequest>,
    ) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        let gone =
            || StoreError::Unavailable("the audit writer stopped (the store was closed)".into());
        let job = RecordedCas {
            expected_version,
            record: record.clone(),
            events,
            reply,
        };
        self.audits
            .send(AuditJob::Recorded(Box::new(job)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub(crate) async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        let rows = lifecycle::list_query::<sqlx::Postgres, _, _>("", filter, |t| t, |id| id.0)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| store_error("listing requests", e))?;
        rows.iter().map(decode_row).collect()
    }

    pub(crate) async fn explain_list(&self, filter: &ListFilter) -> Result<String, SqlError> {
        let explain = |e| SqlError::from_sqlx("explaining a listing", e);
        let mut tx = self.pool.begin().await.map_err(explain)?;
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .map_err(explain)?;
        let plan: Vec<(String,)> =
            lifecycle::list_query::<sqlx::Postgres, _, _>("EXPLAIN ", filter, |t| t, |id| id.0)
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(explain)?;
        tx.rollback().await.map_err(explain)?;
        Ok(plan
            .into_iter()
            .map(|(line,)| line)
            .collect::<Vec<_>>()
            .join("\n"))
    }

    pub(crate) async fn audit_log(
        &self,
        request: LogRequest,
    ) -> Result<Option<AuditRow>, SqlError> {
        let (tx, rx) = oneshot::channel();
        let gone =
            || SqlError::Unavailable("the audit writer stopped (the store was closed)".into());
        self.audits
            .send(AuditJob::Log(request, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub(crate) fn log_db(&self) -> approvals_audit::log::db::LogDb {
        approvals_audit::log::db::LogDb::Postgres(self.pool.clone())
    }

    pub(crate) async fn audit_lines_for(
        &self,
        request_id: &str,
    ) -> Result<Vec<(i64, String)>, SqlError> {
        sqlx::query_as(
            "SELECT line_no, line FROM approval_audit_log WHERE request_id = $1 ORDER BY line_no",
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
              WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| SqlError::from_sqlx(what, e))?;
        rows.iter()
            .map(|r| {
                Ok(RawRow {
                    seq: r.try_get("seq")?,
                    at: r.try_get::<DateTime<Utc>, _>("at")?,
                    request_id: r.try_get::<Uuid, _>("request_id")?.to_string(),
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

/// Sends a notification for every committed change, in batches, each in its own short
/// transaction after the change committed.
///
/// Not in the writing transaction on purpose: PostgreSQL serializes the commits of all
/// transactions that issued `NOTIFY` behind one database-wide lock held across the WAL
/// flush, which would make every compare-and-set wait for every other one. A notification
/// lost here (the process died right after the commit, or the connection dropped) only
/// delays the wake-up until the waiter's next poll.
async fn notifier(pool: PgPool, channel: String, mut rx: mpsc::Receiver<RequestId>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let ids: Vec<String> = batch.drain(..).map(|id| id.to_string()).collect();
        let _ = sqlx::query("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id")
            .bind(&channel)
            .bind(&ids)
            .execute(&pool)
            .await;
    }
}

/// Runs audit log requests in batches: every request waiting when a batch starts goes into
/// one transaction (one lock, one head check, one insert, one commit), and each caller hears
/// back after the commit. A recorded compare-and-set runs in that transaction too, under the
/// lock, its events appended where it arrived. Keeps the log's state between batches and
/// checks it against the table under the lock, so replicas appending to the same table stay
/// one sequence. Ends when the store is dropped.
async fn audit_writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<AuditJob>,
    notices: mpsc::Sender<RequestId>,
) {
    let mut batch = Vec::with_capacity(MAX_AUDIT_BATCH);
    let mut log: Option<TableLog> = None;
    while rx.recv_many(&mut batch, MAX_AUDIT_BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match append_batch(&pool, log.as_ref(), &jobs).await {
            Ok((state, mut results, mut sets)) => {
                log = Some(state);
                for job in jobs {
                    match job {
                        AuditJob::Log(_, reply) => {
                            let _ = reply.send(results.remove(0));
                        }
                        AuditJob::Recorded(cas) => {
                            let set = sets.remove(0);
                            if matches!(set, Ok(true)) {
                                let _ = notices.try_send(cas.record.id);
                            }
                            let _ = cas.reply.send(set);
                        }
                    }
                }
            }
            Err(e) => {
                for job in jobs {
                    match job {
                        AuditJob::Log(_, reply) => {
                            let _ = reply.send(Err(e.copy()));
                        }
                        AuditJob::Recorded(cas) => {
                            let _ = cas.reply.send(Err(e.copy().into()));
                        }
                    }
                }
            }
        }
    }
}

/// The log's new state, the results of the log requests and those of the recorded
/// compare-and-sets, each in job order.
type BatchResults = (
    TableLog,
    Vec<audit::LogResult>,
    Vec<Result<bool, StoreError>>,
);

async fn append_batch(
    pool: &PgPool,
    log: Option<&TableLog>,
    jobs: &[AuditJob],
) -> Result<BatchResults, SqlError> {
    let what = "appending to the audit log table";
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| SqlError::from_sqlx(what, e))?;
    // Appends from every replica serialize here; readers are not blocked.
    sqlx::query("LOCK TABLE approval_audit_log IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(|e| SqlError::from_sqlx(what, e))?;
    // Each request, and whether it is a log job's (`true`) or a recorded event (`false`).
    let mut requests: Vec<(&LogRequest, bool)> = Vec::new();
    let mut sets = Vec::new();
    for job in jobs {
        match job {
            AuditJob::Log(request, _) => requests.push((request, true)),
            AuditJob::Recorded(cas_job) => {
                let set = cas(&mut tx, cas_job.expected_version, &cas_job.record).await?;
                if matches!(set, Ok(true)) {
                    requests.extend(cas_job.events.iter().map(|r| (r, false)));
                }
                sets.push(set);
            }
        }
    }
    let all: Vec<&LogRequest> = requests.iter().map(|(r, _)| *r).collect();
    let (state, results) = audit::append(&mut PgLogTx(&mut tx), log, &all).await?;
    let mut replies = Vec::new();
    for ((_, replied), result) in requests.iter().zip(results) {
        match (replied, result) {
            (true, result) => replies.push(result),
            (false, Ok(_)) => {}
            // An event of a recorded compare-and-set that cannot be written: the change must
            // not commit without it.
            (false, Err(e)) => return Err(e),
        }
    }
    tx.commit()
        .await
        .map_err(|e| SqlError::from_sqlx(what, e))?;
    Ok((state, replies, sets))
}

/// Compare-and-sets `record` on `conn` (inside the caller's transaction, if any). The outer
/// error fails the transaction; the inner one is this write's own (not a lifecycle step).
async fn cas(
    conn: &mut sqlx::PgConnection,
    expected_version: u64,
    record: &RequestRecord,
) -> Result<Result<bool, StoreError>, SqlError> {
    let c = Columns::of(record);
    let expected = match lifecycle::db_version(expected_version) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let json = match lifecycle::encode(record, expected_version.saturating_add(1)) {
        Ok(json) => json,
        Err(e) => return Ok(Err(e)),
    };
    let id = record.id;
    let what = format!("updating request {id}");
    let allowed = lifecycle::allowed_from(record.state);
    let updated = sqlx::query(
        "UPDATE approval_requests
            SET version = version + 1, state = $3, kind = $4, environment = $5,
                initiator_id = $6, idempotency_key = $7, created_at = $8,
                expires_at = $9, record = $10, audit_pending = $12, initiator_key = $13,
                due_at = $14, denied_action_key = $15
          WHERE id = $1 AND version = $2 AND state = ANY($11)",
    )
    .bind(id.0)
    .bind(expected)
    .bind(c.state)
    .bind(c.kind)
    .bind(c.environment)
    .bind(c.initiator_id.as_deref())
    .bind(c.idempotency_key)
    .bind(record.created_at)
    .bind(record.expires_at)
    .bind(&json)
    .bind(&allowed)
    .bind(c.audit_pending)
    .bind(c.initiator_key.as_deref())
    .bind(c.due_at)
    .bind(c.denied_action_key.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(|e| SqlError::from_sqlx(&what, e))?;
    if updated.rows_affected() == 1 {
        return Ok(Ok(true));
    }
    // Nothing changed: a newer version, no such record, or not a lifecycle step.
    let stored = sqlx::query("SELECT version, state FROM approval_requests WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| SqlError::from_sqlx(&what, e))?;
    Ok(match stored {
        Some(row) if row.try_get::<i64, _>("version").ok() == Some(expected) => {
            let state: String = row.try_get("state").unwrap_or_default();
            Err(lifecycle::illegal_transition(&id, &state, record.state))
        }
        _ => Ok(false),
    })
}

/// A transaction holding the audit log table's lock, as the audit log writer sees it.
struct PgLogTx<'a>(&'a mut sqlx::PgConnection);

impl audit::LogTx for PgLogTx<'_> {
    async fn head(&mut self) -> Result<(i64, Option<i64>), SqlError> {
        sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(line_no), 0)::BIGINT FROM approval_audit_log),
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
            "SELECT line_no, line FROM approval_audit_log WHERE line_no > $1
              ORDER BY line_no LIMIT $2",
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
            "INSERT INTO approval_audit_witness (id, size, note, updated_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE
                SET size = excluded.size, note = excluded.note, updated_at = excluded.updated_at",
        )
        .bind(size)
        .bind(note)
        .bind(updated)
        .execute(&mut *self.0)
        .await
        .map(|_| ())
        .map_err(|e| SqlError::from_sqlx("writing the audit log's witness", e))
    }

    async fn insert(&mut self, rows: &[NewRow]) -> Result<(), SqlError> {
        // 6 values per row, under PostgreSQL's limit of 65535 bound parameters per chunk.
        for chunk in rows.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line) ",
            );
            insert.push_values(chunk, |mut b, row| {
                b.push_bind(row.line_no)
                    .push_bind(row.seq)
                    .push_bind(row.at)
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

/// `CREATE SCHEMA IF NOT EXISTS`, tolerating another process creating it at the same time.
async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), SqlError> {
    // The name was checked to be [a-z0-9_]+, so quoting it is enough.
    let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    for attempt in 0..3 {
        match sqlx::query(AssertSqlSafe(sql.clone())).execute(pool).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() && attempt < 2 => {}
            Err(e) => return Err(SqlError::from_sqlx(&format!("creating schema {schema}"), e)),
        }
    }
    Ok(())
}

async fn subscribe(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Forwards notifications to the broadcast channel until the store is dropped or closed.
async fn forward(
    mut listener: PgListener,
    pool: PgPool,
    channel: String,
    changes: broadcast::Sender<RequestId>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => {
                backoff = Duration::from_millis(50);
                if let Ok(id) = RequestId::parse(note.payload()) {
                    // No receivers is fine: nobody is waiting.
                    let _ = changes.send(id);
                }
            }
            // The connection dropped and was re-established; anything sent in between is
            // lost, and waiters find it by polling.
            Ok(None) => {}
            Err(_) if pool.is_closed() => return,
            Err(_) => {
                // Could not reconnect: start over with a fresh listener after a pause.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if let Ok(fresh) = subscribe(&pool, &channel).await {
                    listener = fresh;
                }
            }
        }
    }
}

fn decode_row(row: &PgRow) -> Result<RequestRecord, StoreError> {
    let id: Uuid = row
        .try_get("id")
        .map_err(|e| store_error("reading a request id", e))?;
    let id = id.to_string();
    let version: i64 = row
        .try_get("version")
        .map_err(|e| store_error(&format!("reading request {id}"), e))?;
    let json: String = row
        .try_get("record")
        .map_err(|e| store_error(&format!("reading request {id}"), e))?;
    lifecycle::decode(&id, version, &json)
}
