//! Durable approval store and audit sink on SQLite (embedded default) and PostgreSQL.
//!
//! [`SqlStore`] implements the core [`Store`] trait: pending approvals survive restarts, and
//! several agent replicas on one PostgreSQL database share one approval queue. Every state
//! change is one compare-and-set (`UPDATE .. WHERE id = ? AND version = ?`) in one
//! transaction; the idempotency key is `UNIQUE`; the store also refuses any change that is
//! not a lifecycle step (terminal states never change), whatever the caller asks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_core::{Gate, Initiator, RulePolicy};
//! use approvals_store_sql::SqlStore;
//! use approvals_store_sql::audit::{LogConfig, Signer};
//!
//! // SQLite file (created if missing), WAL: a returned write survives the process, and
//! // the gate syncs before anything leaves it. For replicas:
//! // SqlStore::connect("postgres://app@db/approvals").
//! let store = SqlStore::connect("sqlite://approvals.db").await?;
//! // The audit log's checkpoint key, from `approvals audit keygen` (file or environment).
//! let signer = Signer::from_file("/etc/approvals/audit.skey")?;
//! let gate = Gate::builder()
//!     .policy(RulePolicy::from_file("policy.toml")?)
//!     .store(store.clone())
//!     .audit(store.signed_audit_sink(LogConfig::new(signer.name()), signer))
//!     .initiator(Initiator::agent("billing-agent"))
//!     .build()?;
//! # let _ = gate; Ok(()) }
//! ```
//!
//! Backends are chosen by the URL: `sqlite:` (feature `sqlite`, on by default) or
//! `postgres:`/`postgresql:` (feature `postgres`). Migrations are embedded per backend and
//! applied on connect (turn that off with [`SqlStoreOptions::migrate()`] and call
//! [`SqlStore::migrate`] yourself). They are tracked in the table
//! `approvals_schema_migrations`, so they never collide with your application's own sqlx
//! migrations.
//!
//! Change notification: on PostgreSQL every committed compare-and-set is announced with
//! `pg_notify` right after its commit (in its own short transaction: `NOTIFY` inside the
//! writing transaction would serialize every commit in the database behind one lock held
//! across the WAL flush), and a listener task on a dedicated connection (reconnecting on
//! loss) forwards the ids to [`Store::changes`], so a decision taken on any replica wakes the
//! waiter on every other replica at once; the gate's polling covers notifications lost to a
//! crash between commit and notify or while the listener reconnects. SQLite notifies waiters in the same process; other processes on the
//! same file notice changes when the gate polls (`GateBuilder::poll_interval`).
//!
//! Durability and concurrency:
//!
//! - SQLite runs in WAL mode. All writes of one `SqlStore` go to a single writer task that
//!   commits whatever is waiting in one transaction, so one commit covers many concurrent
//!   callers; each write is still its own compare-and-set, and callers hear back only after
//!   the commit. By default ([`Durability::AtBarriers`]) commits are written to the WAL
//!   without a sync, so a write that returned survives the process, and the WAL is synced at
//!   each barrier ([`Store::sync`]) the gate raises before anything leaves the process on
//!   the strength of a write (a channel is told, an action runs, a door or a reviewer gets
//!   an answer): one sync covers every commit before it, and concurrent barriers share one
//!   (group commit). Commits no barrier asked for are synced within
//!   [`SqlStoreOptions::flush_after`]. [`Durability::EveryCommit`] syncs every commit
//!   (`synchronous=FULL`) for callers that use the store without a gate. Other processes on the
//!   same file serialize on SQLite's write lock (waiting up to
//!   [`SqlStoreOptions::busy_timeout()`]; then a retryable error).
//! - PostgreSQL commits each write in its own transaction. By default
//!   ([`Durability::AtBarriers`]) the pool's sessions commit with `synchronous_commit = off`
//!   (a commit returns once its WAL record is written, and the server's WAL writer flushes it
//!   within a few hundred milliseconds), and each barrier commits one small transaction at
//!   the server's own `synchronous_commit` level, which flushes the WAL past every commit
//!   made before it, on any connection of any process; concurrent barriers share one flush.
//!   A crash of the server, not only of the machine, can lose commits no barrier has covered
//!   yet: nothing outside the process has acted on them. [`Durability::EveryCommit`] leaves
//!   every commit at the server's level.
//! - When the database cannot be reached, calls fail within
//!   [`SqlStoreOptions::acquire_timeout()`] with [`StoreError::Unavailable`], which the gate
//!   turns into a refusal: nothing runs. The pool reconnects by itself when the database is
//!   back.
//!
//! Tables: `approval_requests` (the full [`RequestRecord`] as JSON plus indexed columns:
//! `id`, `version`, `state`, `kind`, `environment`, `initiator_id` (trimmed, lowercase;
//! kept for older readers), `idempotency_key` UNIQUE, `created_at`, `expires_at`,
//! `audit_pending` (migration 3), `initiator_key` (migration 5: the initiator's
//! [`identity_key`](approvals_core::identity::identity_key), which the initiator filter of
//! [`Store::list`] compares, like the memory store; rows stored before migration 5 are filled
//! when the store migrates)),
//! `approval_audit_log` (the signed audit log, see [`audit`]) and `approval_audit` (the
//! closed hash chain of older versions, see [`legacy`]).
//!
//! Modules: [`audit`] (the signed audit log table), [`legacy`] (the old hash-chained table),
//! [`error`] (errors).
#![warn(missing_docs)]

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("approvals-store-sql needs a backend: enable the `sqlite` or `postgres` feature");

pub mod audit;
pub mod error;
pub mod legacy;
mod lifecycle;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{Inserted, ListFilter, RequestId, RequestRecord, Store, StoreError};
use async_trait::async_trait;
use tokio::sync::broadcast;

pub use audit::{AuditRow, SqlAuditSink};

pub use error::SqlError;

/// The table that records applied migrations (kept apart from an application's own).
pub(crate) fn migration_table() -> &'static str {
    "approvals_schema_migrations"
}

/// The database behind a [`SqlStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An SQLite file (or in-memory database).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a URL names, from its scheme.
    pub fn from_url(url: &str) -> Result<Backend, SqlError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(SqlError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            }),
        }
    }
}

/// How to connect a [`SqlStore`]. `SqlStoreOptions::new(url)` has sensible defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqlStoreOptions {
    /// `sqlite://path/to/file.db`, `sqlite::memory:`, or `postgres://user@host/db`.
    pub url: String,
    /// Pool size (default 8).
    pub max_connections: u32,
    /// Longest wait for a pooled connection, including connecting (default 3 s). Bounds how
    /// long a call waits when the database is unreachable before it fails (closed).
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the file lock held by another connection or
    /// process before giving up with a retryable error (default 5 s).
    pub busy_timeout: Duration,
    /// Apply the embedded migrations on connect (default true).
    pub migrate: bool,
    /// PostgreSQL: the schema for the tables, created if missing (default: the server's
    /// `search_path`, usually `public`). Letters, digits and `_` only. Also scopes the
    /// LISTEN/NOTIFY channel, so stores in different schemas do not wake each other.
    pub schema: Option<String>,
    /// When commits reach the disk (default [`Durability::AtBarriers`]).
    pub durability: Durability,
    /// SQLite with [`Durability::AtBarriers`]: the longest a commit waits for a sync when no
    /// barrier asks for one (default 50 ms).
    pub flush_after: Duration,
}

/// When a store's commits are synced to disk. On SQLite, either way a write that returned
/// survives the process crashing; the choice is about power loss and the machine crashing.
/// On PostgreSQL the choice also covers the server crashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Commits are written to the WAL without a sync (SQLite `synchronous=NORMAL`,
    /// PostgreSQL `synchronous_commit = off`); the WAL is synced at each barrier
    /// ([`approvals_core::Store::sync`]), which the gate raises before anything leaves the
    /// process on the strength of a write (a channel is told, an action runs, a door or a
    /// reviewer gets an answer). Other commits reach the disk at most
    /// [`SqlStoreOptions::flush_after`] later on SQLite, and within the server's WAL writer
    /// delay on PostgreSQL (`wal_writer_delay`, three times it at worst). Concurrent barriers
    /// share one sync. A lifecycle costs about one sync per
    /// step a human or an action sees, instead of one per write.
    #[default]
    AtBarriers,
    /// Every commit syncs the WAL (SQLite `synchronous=FULL`; PostgreSQL at the server's
    /// `synchronous_commit` level): each write is on disk when it returns, whoever calls the
    /// store; barriers cost nothing.
    EveryCommit,
}

/// What a store has done to make commits durable ([`SqlStore::sync_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// SQLite: transactions committed by the writer (each holds every write waiting at that
    /// moment). Not counted on PostgreSQL.
    pub commits: u64,
    /// SQLite: WAL syncs made by barriers and the flush timer (SQLite's own syncs at
    /// checkpoints, and on every commit with [`Durability::EveryCommit`], are not counted).
    /// PostgreSQL: WAL flushes made by barriers (the server's WAL writer's are not counted).
    pub syncs: u64,
    /// SQLite: whether a commit is not yet synced. Not tracked on PostgreSQL.
    pub unsynced: bool,
}

impl SqlStoreOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SqlStoreOptions {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            busy_timeout: Duration::from_secs(5),
            migrate: true,
            schema: None,
            durability: Durability::AtBarriers,
            flush_after: Duration::from_millis(50),
        }
    }

    /// Sets the pool size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the connection acquire timeout.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets SQLite's busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Whether to apply migrations on connect.
    pub fn migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }

    /// Sets the PostgreSQL schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets when commits reach the disk.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the longest wait for a sync of a commit no barrier asked for (SQLite, with
    /// [`Durability::AtBarriers`]).
    pub fn flush_after(mut self, delay: Duration) -> Self {
        self.flush_after = delay;
        self
    }
}

pub(crate) enum Inner {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteBackend),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgBackend),
}

/// Runs `$body` with `$b` bound to whichever backend is active.
macro_rules! dispatch {
    ($self:expr, $b:ident => $body:expr) => {
        match &*$self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite($b) => $body,
            #[cfg(feature = "postgres")]
            Inner::Postgres($b) => $body,
        }
    };
}

/// A durable [`Store`] on SQLite or PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects to the database the URL names and applies the embedded migrations.
    ///
    /// `sqlite://approvals.db` creates the file if it is missing; `sqlite::memory:` is a
    /// private scratch database (a file in a new temporary directory, never synced, removed
    /// when the store is dropped). `postgres://...` needs the `postgres` feature.
    pub async fn connect(url: &str) -> Result<SqlStore, SqlError> {
        Self::connect_with(SqlStoreOptions::new(url)).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(options: SqlStoreOptions) -> Result<SqlStore, SqlError> {
        let inner = match Backend::from_url(&options.url)? {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Inner::Sqlite(sqlite::SqliteBackend::connect(&options).await?),
            #[cfg(feature = "postgres")]
            Backend::Postgres => Inner::Postgres(postgres::PgBackend::connect(&options).await?),
            #[allow(unreachable_patterns)]
            other => {
                return Err(SqlError::FeatureDisabled {
                    backend: other,
                    feature: match other {
                        Backend::Sqlite => "sqlite",
                        Backend::Postgres => "postgres",
                    },
                });
            }
        };
        let store = SqlStore {
            inner: Arc::new(inner),
        };
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies any embedded migrations not yet applied. Safe to run from several processes
    /// at once (PostgreSQL takes an advisory lock, SQLite the file's write lock).
    pub async fn migrate(&self) -> Result<(), SqlError> {
        dispatch!(self, b => b.migrate().await)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// An audit sink writing entries to this database's audit log table, without signed
    /// checkpoints; [`SqlAuditSink::signed`] adds them (use that in production).
    pub fn audit_sink(&self) -> SqlAuditSink {
        SqlAuditSink::new(self.clone())
    }

    /// A sink writing to this database's audit log with checkpoints signed by `signer`; see
    /// [`SqlAuditSink::signed`].
    pub fn signed_audit_sink(
        &self,
        config: approvals_audit::LogConfig,
        signer: approvals_audit::Signer,
    ) -> SqlAuditSink {
        SqlAuditSink::signed(self.clone(), config, signer)
    }

    /// How the database would run the listing for `filter`: its query plan as text, one line
    /// per plan node (SQLite's `EXPLAIN QUERY PLAN`, PostgreSQL's `EXPLAIN`). On PostgreSQL
    /// sequential scans are disabled for the explanation, so the plan shows whether an index
    /// can serve the listing even while the table is small enough to scan.
    pub async fn explain_list(&self, filter: &ListFilter) -> Result<String, SqlError> {
        dispatch!(self, b => b.explain_list(filter).await)
    }

    /// What the store did to make commits durable: on SQLite its writer's commits and WAL
    /// syncs; on PostgreSQL the WAL flushes its barriers made (`syncs` only).
    pub fn sync_stats(&self) -> SyncStats {
        dispatch!(self, b => b.sync_stats())
    }

    /// Makes what was committed durable (a barrier), then closes the pool (and the
    /// PostgreSQL listener). Later calls fail as unavailable.
    pub async fn close(&self) {
        dispatch!(self, b => b.close().await)
    }

    pub(crate) async fn audit_log(
        &self,
        request: audit::LogRequest,
    ) -> Result<Option<AuditRow>, SqlError> {
        dispatch!(self, b => b.audit_log(request).await)
    }

    pub(crate) async fn audit_lines_for(
        &self,
        request_id: &str,
    ) -> Result<Vec<(i64, String)>, SqlError> {
        dispatch!(self, b => b.audit_lines_for(request_id).await)
    }

    /// The database, for the audit log reader of approvals-audit.
    pub(crate) fn log_db(&self) -> approvals_audit::log::db::LogDb {
        dispatch!(self, b => b.log_db())
    }

    pub(crate) async fn legacy_audit_rows(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<legacy::RawRow>, SqlError> {
        dispatch!(self, b => b.legacy_audit_rows(after_seq, limit).await)
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        dispatch!(self, b => b.insert(record).await)
    }

    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        dispatch!(self, b => b.get(id).await)
    }

    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        dispatch!(self, b => b.get_by_idempotency_key(key).await)
    }

    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        dispatch!(self, b => b.compare_and_set(expected_version, record).await)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        dispatch!(self, b => b.list(filter).await)
    }

    fn changes(&self) -> Option<broadcast::Receiver<RequestId>> {
        dispatch!(self, b => Some(b.changes()))
    }

    async fn sync(&self) -> Result<(), StoreError> {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(b) => b.sync().await,
            #[cfg(feature = "postgres")]
            Inner::Postgres(b) => b.sync().await,
        }
    }

    /// The database: its audit sinks ([`SqlAuditSink`]) share it, so the gate syncs once.
    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        Some(dispatch!(self, b => b.domain))
    }

    /// For a [`SqlAuditSink`] of this store: each transition commits with its events in one
    /// transaction (on SQLite in the writer's batch, on PostgreSQL in the audit writer's,
    /// under the log's lock).
    fn recorded_writes(
        &self,
        audit: &dyn approvals_core::AuditSink,
    ) -> Option<Arc<dyn approvals_core::RecordedWrites>> {
        audit::RecordedSql::of(self, audit).map(|w| Arc::new(w) as Arc<_>)
    }

    /// SQLite: answered by the writer's next sync (a barrier's, or the flush timer's within
    /// `flush_after`). PostgreSQL: a barrier of its own.
    async fn sync_soon(&self) -> Result<(), StoreError> {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(b) => b.sync_soon().await,
            #[cfg(feature = "postgres")]
            Inner::Postgres(b) => b.sync().await,
        }
    }
}

#[async_trait]
impl approvals_core::RecordedWrites for audit::RecordedSql {
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: &[approvals_core::AuditEvent],
    ) -> Result<bool, StoreError> {
        let events = self.requests(events)?;
        dispatch!(self.store, b => b.compare_and_set_recorded(expected_version, record, events).await)
    }
}
