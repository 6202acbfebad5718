//! The test server: a fresh schema with tables per test, grants to issue against, and
//! connections as a minted role.
#![allow(dead_code)]

pub mod scram;

use std::str::FromStr;

use approvals_broker_postgres::{PostgresBroker, Privilege};
use approvals_core::credential::credential_id;
use approvals_core::gate::Grant;
use approvals_core::{ActionRequest, Gate, Initiator, MemorySink, RequestId, StaticPolicy};
use approvals_testkit::pg::{drop_schema, postgres_url, unique_schema};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// A schema `invoices` (id, total, secret: 3 rows) and `customers` (id, name: 2 rows).
pub struct Db {
    pub url: String,
    pub schema: String,
    pub admin: PgPool,
    /// The private password-checking server, when the test runs on one.
    server: Option<scram::ScramServer>,
}

impl Db {
    /// `None` (after a loud SKIPPED line) when no server is configured outside CI.
    pub async fn new(test: &str) -> Option<Db> {
        let url = postgres_url(test)?;
        Some(Db::on(url, None).await)
    }

    /// The same, on a private server that checks passwords ([`scram::ScramServer`]), for the
    /// login checks a `trust` server cannot make.
    pub async fn checking_passwords(test: &str) -> Option<Db> {
        let server = scram::ScramServer::start(test)?;
        let db = Db::on(server.url.clone(), Some(server)).await;
        assert!(
            db.checks_passwords().await,
            "the private server must refuse a wrong password"
        );
        Some(db)
    }

    async fn on(url: String, server: Option<scram::ScramServer>) -> Db {
        let schema = unique_schema("brk");
        let admin = PgPoolOptions::new()
            .max_connections(12)
            .connect(&url)
            .await
            .expect("connect to the test server");
        let db = Db {
            url,
            schema,
            admin,
            server,
        };
        let s = &db.schema;
        db.exec(&format!(
            "CREATE SCHEMA \"{s}\";
             CREATE TABLE \"{s}\".invoices (id int PRIMARY KEY, total numeric NOT NULL, secret text);
             INSERT INTO \"{s}\".invoices VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c');
             CREATE TABLE \"{s}\".customers (id int PRIMARY KEY, name text);
             INSERT INTO \"{s}\".customers VALUES (1, 'ada'), (2, 'bob');"
        ))
        .await;
        db
    }

    /// Runs trusted test SQL as the admin.
    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `schema.table`.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    pub fn broker(&self) -> PostgresBroker {
        PostgresBroker::new(self.admin.clone())
            .allow("db.export", &[Privilege::Select])
            .allow(
                "db.fix",
                &[Privilege::Select, Privilege::Insert, Privilege::Update],
            )
    }

    /// Connects as `user` with `password`.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<PgConnection, sqlx::Error> {
        let options = PgConnectOptions::from_str(&self.url)
            .expect("test URL")
            .username(user)
            .password(password);
        PgConnection::connect_with(&options).await
    }

    pub async fn role_exists(&self, role: &str) -> bool {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_one(&self.admin)
            .await
            .expect("pg_roles");
        n == 1
    }

    /// Drops a role the test made, whatever it holds.
    pub async fn drop_role(&self, role: &str) {
        if self.role_exists(role).await {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity WHERE usename = '{role}';
                 DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\""
            )))
            .execute(&self.admin)
            .await;
        }
    }

    /// Whether the server checks passwords on TCP logins from here (not under `trust`):
    /// a throwaway role with a password is refused with a wrong one.
    pub async fn checks_passwords(&self) -> bool {
        let role = format!("pwcheck_{}", RequestId::new().0.simple());
        self.exec(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD 'right-one'"
        ))
        .await;
        let refused = self.connect_as(&role, "wrong-one").await.is_err();
        self.drop_role(&role).await;
        if !refused {
            eprintln!(
                "\n*** NOTE: the test server does not check passwords for TCP logins (pg_hba `trust`); \
                 the password and VALID UNTIL login checks are skipped, the role attributes are still checked ***"
            );
        }
        refused
    }

    pub async fn finish(self) {
        self.admin.close().await;
        drop_schema(&self.url, &self.schema).await;
        drop(self.server);
    }
}

/// A grant for `action` from a gate that allows everything, and the credential id the gate
/// would choose for it.
pub async fn grant(action: &ActionRequest) -> (Grant, String) {
    let gate = Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit(MemorySink::new())
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let grant = gate.guard(action).await.expect("allowed");
    let id = credential_id(grant.request_id());
    (grant, id)
}

/// The SQLSTATE of a failed query.
pub fn code(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}
