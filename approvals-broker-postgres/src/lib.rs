//! A [`CredentialBroker`] that mints a PostgreSQL login role for exactly one approved action,
//! and drops it when the action ends.
//!
//! The agent holds no standing access to the data: when a reviewer approves an action, the
//! gate asks [`PostgresBroker`] for a credential, which creates a role named after the
//! request (`apr_` + 32 hex digits), with a fresh random password, `VALID UNTIL` the grant's
//! expiry and a small connection limit, and grants it the privileges on the tables the action
//! names, nothing else. The action connects as that role; when it returns, the gate revokes
//! the credential: the role's sessions are ended, its grants revoked and the role dropped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use approvals_broker_postgres::{PostgresBroker, Privilege};
//! use approvals_core::{ActionRequest, Gate, Initiator, MemorySink, StaticPolicy};
//! use sqlx::Connection;
//!
//! // The broker's own connection: a role with CREATEROLE and GRANT OPTION on the tables.
//! let pool = sqlx::PgPool::connect("postgres://broker@db.internal/app").await?;
//! let broker = PostgresBroker::new(pool).allow("db.export", &[Privilege::Select]);
//!
//! let export = ActionRequest::new("db.export", "postgres://db.internal/app")
//!     .params(serde_json::json!({ "table": "public.invoices", "columns": ["id", "total"] }));
//! assert_eq!(broker.describe(&export)?, "SELECT (id, total) on public.invoices");
//!
//! let gate = Gate::builder()
//!     .policy(StaticPolicy::allow_all())
//!     .audit(MemorySink::new())
//!     .initiator(Initiator::agent("billing-agent"))
//!     .credential_broker(broker)
//!     .build()?;
//! let rows = gate
//!     .run_with_credential(&export, |credential| async move {
//!         let url = format!(
//!             "postgres://{}:{}@db.internal/app",
//!             credential.id(),
//!             credential.secret()
//!         );
//!         let mut conn = sqlx::PgConnection::connect(&url).await?;
//!         let (n,): (i64,) = sqlx::query_as("SELECT count(id) FROM public.invoices")
//!             .fetch_one(&mut conn)
//!             .await?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(n)
//!     })
//!     .await?;
//! # let _ = rows; Ok(()) }
//! ```
//!
//! What an action asks for, in its `params`: `"table": "schema.table"` (or `"tables": [..]`;
//! the schema defaults to `public`), optionally `"columns": [..]` (column-level grants on
//! every named table) and `"privileges": ["select", ..]` (a subset of those
//! [allowed](PostgresBroker::allow) for its kind; all of them by default). Every name must be
//! a plain lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes), tables in system
//! schemas (`pg_*`, `information_schema`) are refused, and so is a table or column that does
//! not exist: the broker refuses ([`BrokerError::Refused`]) before any SQL runs with a name
//! in it, and still double-quotes every name it inlines. DDL takes no bind parameters; the
//! only values inlined are checked names, the credential id, a timestamp and the password's
//! SCRAM-SHA-256 verifier.
//!
//! The password never reaches the server: the broker sends only its SCRAM-SHA-256 verifier
//! (as psql's `\password` does), so it appears in no statement, server log or
//! `pg_stat_activity`, and the broker never logs it or puts it in an error.
//!
//! Note that `PASSWORD` and `VALID UNTIL` only stop logins when `pg_hba.conf` requires
//! password authentication (`scram-sha-256`) for these roles: under `trust` anyone who
//! reaches the server can log in as any role. Revocation does not depend on it.
//!
//! Modules: [`ident`] (which names may appear in SQL); the parameters are read by a private
//! `plan` module and the password's verifier computed by a private `scram` module.
#![warn(missing_docs)]

pub mod ident;
mod plan;
mod scram;

use std::collections::BTreeMap;

use approvals_core::ActionRequest;
use approvals_core::credential::{
    BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest,
};
use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

pub use ident::{MAX_IDENTIFIER_LEN, is_credential_id, is_plain_identifier};
pub use plan::{MAX_COLUMNS, MAX_TABLES, Privilege, UnknownPrivilege};

use plan::{Plan, timestamp};

/// How long revoking waits for each of a role's sessions to end.
const TERMINATE_WAIT_MS: i64 = 2_000;

/// The transaction-level advisory lock every transaction that changes grants takes first
/// (the ASCII of `apr_brkr`). Concurrent `GRANT`s or `DROP OWNED`s on one schema or table
/// otherwise fail with "tuple concurrently updated"; issuing is short, so one lock per
/// database is enough.
const GRANT_LOCK: i64 = 0x6170_725f_6272_6b72;

/// Mints a PostgreSQL login role per approved action; see the [crate] documentation.
///
/// The pool's role needs `CREATEROLE`, and `GRANT OPTION` on the tables it hands out (or to
/// own them, or be superuser), and membership in `pg_signal_backend` to end the sessions of
/// revoked roles. Roles are cluster-wide; grants are made in the pool's database only.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) {
/// use approvals_broker_postgres::{PostgresBroker, Privilege};
///
/// let broker = PostgresBroker::new(pool)
///     .allow("db.export", &[Privilege::Select])
///     .allow("db.fix_invoice", &[Privilege::Select, Privilege::Update])
///     .connection_limit(2);
/// # let _ = broker; }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresBroker {
    pool: PgPool,
    allowed: BTreeMap<String, Vec<Privilege>>,
    connection_limit: u16,
}

impl PostgresBroker {
    /// A broker creating roles through `pool`, allowing no action kind yet
    /// ([`allow`](PostgresBroker::allow)), each role limited to 4 connections.
    pub fn new(pool: PgPool) -> Self {
        PostgresBroker {
            pool,
            allowed: BTreeMap::new(),
            connection_limit: 4,
        }
    }

    /// Actions of `kind` may get credentials with `privileges` (added to any allowed
    /// before). Any other kind is refused.
    pub fn allow(mut self, kind: &str, privileges: &[Privilege]) -> Self {
        let allowed = self.allowed.entry(kind.to_owned()).or_default();
        for privilege in privileges {
            if !allowed.contains(privilege) {
                allowed.push(*privilege);
            }
        }
        self
    }

    /// How many sessions a minted role may open at once (default 4, at least 1).
    pub fn connection_limit(mut self, limit: u16) -> Self {
        self.connection_limit = limit.max(1);
        self
    }

    /// What a credential for `action` would allow, without touching the database, or why it
    /// would be refused. An issued credential's scope is this line followed by
    /// ` until <expiry>` (`SELECT on public.invoices until 2026-12-04T06:00:00Z`). Does not
    /// check that the tables exist.
    ///
    /// ```no_run
    /// # fn demo(pool: sqlx::PgPool) -> Result<(), approvals_core::credential::BrokerError> {
    /// use approvals_broker_postgres::{PostgresBroker, Privilege};
    /// use approvals_core::ActionRequest;
    ///
    /// let broker = PostgresBroker::new(pool).allow("db.export", &[Privilege::Select]);
    /// let export = ActionRequest::new("db.export", "postgres://db/app")
    ///     .params(serde_json::json!({ "tables": ["invoices", "billing.lines"] }));
    /// assert_eq!(broker.describe(&export)?, "SELECT on public.invoices, billing.lines");
    /// # Ok(()) }
    /// ```
    pub fn describe(&self, action: &ActionRequest) -> Result<String, BrokerError> {
        Ok(self.plan(action)?.scope())
    }

    fn plan(&self, action: &ActionRequest) -> Result<Plan, BrokerError> {
        let Some(allowed) = self.allowed.get(action.kind.as_str()) else {
            return Err(BrokerError::Refused(format!(
                "action kind {:?} gets no PostgreSQL credential: allow it with PostgresBroker::allow",
                ident::shown(&action.kind)
            )));
        };
        Plan::new(&action.kind, allowed, &action.params)
    }

    /// Refuses a table or column of `plan` that does not exist.
    async fn check_exists(
        tx: &mut Transaction<'static, Postgres>,
        plan: &Plan,
    ) -> Result<(), BrokerError> {
        for table in &plan.tables {
            let kind: Option<(String,)> = sqlx::query_as(
                "SELECT c.relkind::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
            )
            .bind(&table.schema)
            .bind(&table.name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(unavailable)?;
            // Tables, partitioned tables, views, materialized views, foreign tables.
            if !kind.is_some_and(|(k,)| ["r", "p", "v", "m", "f"].contains(&k.as_str())) {
                return Err(BrokerError::Refused(format!(
                    "table {table} does not exist"
                )));
            }
            if plan.columns.is_empty() {
                continue;
            }
            let missing: Option<(String,)> = sqlx::query_as(
                "SELECT col FROM unnest($3::text[]) AS col WHERE NOT EXISTS ( \
                   SELECT 1 FROM pg_catalog.pg_attribute a \
                   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
                     AND NOT a.attisdropped AND a.attname::text = col) \
                 LIMIT 1",
            )
            .bind(&table.schema)
            .bind(&table.name)
            .bind(&plan.columns)
            .fetch_optional(&mut **tx)
            .await
            .map_err(unavailable)?;
            if let Some((column,)) = missing {
                return Err(BrokerError::Refused(format!(
                    "column {column} does not exist in table {table}"
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl CredentialBroker for PostgresBroker {
    fn name(&self) -> &str {
        "postgres"
    }

    /// Creates the role `request.id` and grants it what the action names, in one
    /// transaction, replacing a role of that name a crashed attempt left behind.
    async fn issue(&self, request: IssueRequest<'_>) -> Result<Credential, BrokerError> {
        let role = ident::role(request.id)?;
        let plan = self.plan(request.action)?;
        // VALID UNTIL in whole seconds, never after the grant.
        let expires_at = request
            .not_after
            .with_nanosecond(0)
            .ok_or_else(|| BrokerError::Refused("the grant's expiry is out of range".into()))?;
        if expires_at <= Utc::now() {
            return Err(BrokerError::Refused(format!(
                "the grant expires at {}: too soon for a credential",
                request.not_after
            )));
        }
        let password = scram::new_password();
        let mut statements = vec![create_role(
            role,
            &scram::verifier(&password),
            expires_at,
            self.connection_limit,
        )];
        statements.extend(plan.grants(role));

        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        lock_grants(&mut tx).await?;
        Self::check_exists(&mut tx, &plan).await?;
        if role_exists(&mut tx, role).await? {
            tracing::warn!(
                credential = role,
                "replacing a role an earlier attempt left behind"
            );
            terminate_sessions(&mut tx, role).await?;
            for statement in drop_role(role) {
                execute(&mut tx, statement).await?;
            }
        }
        for statement in statements {
            execute(&mut tx, statement).await?;
        }
        tx.commit().await.map_err(unavailable)?;

        let scope = plan.scope_until(expires_at);
        tracing::info!(credential = role, scope = %scope, "issued a PostgreSQL credential");
        let lease = CredentialLease {
            id: role.to_owned(),
            scope,
            expires_at,
        };
        Ok(Credential::new(lease, password))
    }

    /// Stops new logins (`NOLOGIN`), ends the role's sessions, revokes its grants in this
    /// database (`DROP OWNED BY`) and drops it. A role that does not exist is already
    /// revoked.
    async fn revoke(&self, lease: &CredentialLease) -> Result<(), BrokerError> {
        let role = ident::role(&lease.id)?;
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let no_login = format!("ALTER ROLE \"{role}\" NOLOGIN");
        match sqlx::raw_sql(AssertSqlSafe(no_login))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {}
            Err(e) if is_undefined_object(&e) => return Ok(()),
            Err(e) => return Err(unavailable(e)),
        }
        terminate_sessions(&mut conn, role).await?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(unavailable)?;
        lock_grants(&mut tx).await?;
        for statement in drop_role(role) {
            match sqlx::raw_sql(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {}
                // Revoked by someone else meanwhile.
                Err(e) if is_undefined_object(&e) => return Ok(()),
                Err(e) => return Err(unavailable(e)),
            }
        }
        tx.commit().await.map_err(unavailable)?;
        tracing::info!(credential = role, "revoked a PostgreSQL credential");
        Ok(())
    }

    /// Drops every credential role (`apr_` and 32 hex digits) whose `VALID UNTIL` passed
    /// before `now`, as [`revoke`](CredentialBroker::revoke) does. Roles are cluster-wide: a
    /// role that still holds privileges in another database cannot be dropped from this one,
    /// and is left to the broker of that database (logged, not an error).
    async fn revoke_expired(&self, now: DateTime<Utc>) -> Result<Vec<String>, BrokerError> {
        let expired: Vec<(String,)> = sqlx::query_as(
            "SELECT rolname FROM pg_catalog.pg_roles \
             WHERE rolname ~ '^apr_[0-9a-f]{32}$' AND rolvaliduntil < $1 ORDER BY rolname",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut revoked = Vec::new();
        for (role,) in expired {
            if !ident::is_credential_id(&role) {
                continue;
            }
            let lease = CredentialLease {
                id: role,
                scope: String::new(),
                expires_at: now,
            };
            match self.revoke(&lease).await {
                Ok(()) => revoked.push(lease.id),
                Err(e) => {
                    tracing::info!(credential = %lease.id, error = %e, "an expired credential role was not dropped from this database")
                }
            }
        }
        Ok(revoked)
    }
}

/// `CREATE ROLE` for a credential: login with `verifier`, no other attribute, at most
/// `limit` sessions, valid until `expires_at`.
fn create_role(role: &str, verifier: &str, expires_at: DateTime<Utc>, limit: u16) -> String {
    format!(
        "CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT \
         NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {limit} VALID UNTIL '{}' PASSWORD '{verifier}'",
        timestamp(expires_at)
    )
}

/// Revokes everything `role` was granted in this database, then drops it.
fn drop_role(role: &str) -> [String; 2] {
    [
        format!("DROP OWNED BY \"{role}\""),
        format!("DROP ROLE IF EXISTS \"{role}\""),
    ]
}

/// Waits for [`GRANT_LOCK`], held until the transaction ends.
async fn lock_grants(conn: &mut sqlx::PgConnection) -> Result<(), BrokerError> {
    sqlx::query("SELECT pg_catalog.pg_advisory_xact_lock($1)")
        .bind(GRANT_LOCK)
        .execute(conn)
        .await
        .map(drop)
        .map_err(unavailable)
}

async fn role_exists(conn: &mut sqlx::PgConnection, role: &str) -> Result<bool, BrokerError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(conn)
            .await
            .map_err(unavailable)?;
    Ok(exists)
}

/// Ends `role`'s sessions, waiting up to [`TERMINATE_WAIT_MS`] for each.
async fn terminate_sessions(conn: &mut sqlx::PgConnection, role: &str) -> Result<(), BrokerError> {
    let ended: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_catalog.pg_terminate_backend(pid, $2) FROM pg_catalog.pg_stat_activity \
         WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()",
    )
    .bind(role)
    .bind(TERMINATE_WAIT_MS)
    .fetch_all(conn)
    .await
    .map_err(unavailable)?;
    if ended.iter().any(|(done,)| !done) {
        tracing::warn!(
            credential = role,
            "a session of the role did not end in time"
        );
    }
    Ok(())
}

/// Runs one statement built from checked names (no parameters, not prepared or cached).
async fn execute(conn: &mut sqlx::PgConnection, statement: String) -> Result<(), BrokerError> {
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(conn)
        .await
        .map(drop)
        .map_err(unavailable)
}

/// SQLSTATE 42704: the role does not exist.
fn is_undefined_object(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42704")
}

/// A server or connection error, with the server's message (statements are not included:
/// they hold nothing secret, but say nothing useful either).
fn unavailable(e: sqlx::Error) -> BrokerError {
    match e.as_database_error() {
        Some(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            let hint = if code == "42501" {
                ": the broker's role needs CREATEROLE, GRANT OPTION on the tables (or to own them) and pg_signal_backend"
            } else {
                ""
            };
            BrokerError::Unavailable(format!(
                "PostgreSQL refused the statement: {} (SQLSTATE {code}){hint}",
                db.message()
            ))
        }
        None => BrokerError::Unavailable(format!("PostgreSQL could not be reached: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_gets_login_and_nothing_else() {
        let sql = create_role(
            "apr_0123456789abcdef0123456789abcdef",
            "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5",
            "2026-12-04T06:00:00.5Z".parse().expect("time"),
            3,
        );
        assert_eq!(
            sql,
            "CREATE ROLE \"apr_0123456789abcdef0123456789abcdef\" LOGIN NOSUPERUSER NOCREATEDB \
             NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 \
             VALID UNTIL '2026-12-04T06:00:00Z' PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5'"
        );
    }
}
