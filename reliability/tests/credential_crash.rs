//! Credentials minted per action survive no crash (issue 22), on SQLite and on PostgreSQL
//! stores, with the real PostgreSQL broker minting real login roles.
//!
//! An agent process runs a `Gate` on `SqlStore` with the store's audit table and a
//! `PostgresBroker` wrapped so that the process aborts at a named point:
//!
//! - `before-issue`: the grant consumed (the credential's id recorded), nothing minted yet;
//! - `issuing`: the broker created the role, the gate has not recorded it;
//! - `running`: inside the action, the credential issued, recorded and used;
//! - `revoking`: the action done, before the broker drops the role;
//! - `revoked`: the broker dropped the role, the gate has not recorded it.
//!
//! The parent approves through its own gate on the same store, waits for the abort, and
//! checks that the role is still there (except before it was minted and after it was
//! dropped), that a sweep leaves it alone
//! while the credential's time runs (the action may still be running), and that a sweep after
//! its expiry drops it, records `credential_revoked` (reason `swept`) once, and that the audit
//! chain verifies. PostgreSQL runs when `APPROVALS_TEST_POSTGRES_URL` is set (loud skip without
//! it, failure with `CI=true`).

use std::time::Duration;

use approvals_broker_postgres::{PostgresBroker, Privilege};
use approvals_core::credential::{
    BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest,
};
use approvals_core::{
    ActionRequest, Gate, Initiator, Principal, RequestId, RequestRecord, RequestState, Requirement,
    Review, StaticPolicy, Submission,
};
use approvals_reliability::crash::ChildProcess;
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::pg;
use async_trait::async_trait;
use sqlx::Connection;

const ROLE: &str = "APPROVALS_CREDENTIAL_CRASH_ROLE";
/// How long a grant (and so its credential) lives in these runs.
const GRANT_TTL: Duration = Duration::from_secs(4);
const POINTS: [&str; 5] = ["before-issue", "issuing", "running", "revoking", "revoked"];

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn policy() -> StaticPolicy {
    StaticPolicy::require(Requirement::groups(["data-owners"]))
}

fn export(table: &str) -> ActionRequest {
    ActionRequest::new("db.export", format!("postgres://test/{table}"))
        .params(serde_json::json!({ "table": table }))
}

async fn open_store(url: &str, schema: &str) -> SqlStore {
    let mut options = SqlStoreOptions::new(url).acquire_timeout(Duration::from_secs(20));
    if !schema.is_empty() {
        options = options.schema(schema);
    }
    SqlStore::connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("open the store at {url}: {e}"))
}

async fn broker(pg_url: &str) -> PostgresBroker {
    let pool = sqlx::PgPool::connect(pg_url)
        .await
        .unwrap_or_else(|e| panic!("connect the broker to {pg_url}: {e}"));
    PostgresBroker::new(pool).allow("db.export", &[Privilege::Select])
}

fn abort_at(point: &str) -> ! {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "CRASH {point}");
    let _ = out.flush();
    std::process::abort()
}

/// The PostgreSQL broker, aborting the process at the broker-side points.
struct CrashingBroker {
    inner: PostgresBroker,
    point: String,
}

#[async_trait]
impl CredentialBroker for CrashingBroker {
    fn name(&self) -> &str {
        "crashing-postgres"
    }

    async fn issue(&self, req: IssueRequest<'_>) -> Result<Credential, BrokerError> {
        if self.point == "before-issue" {
            abort_at("before-issue");
        }
        let credential = self.inner.issue(req).await?;
        if self.point == "issuing" {
            abort_at("issuing");
        }
        Ok(credential)
    }

    async fn revoke(&self, lease: &CredentialLease) -> Result<(), BrokerError> {
        if self.point == "revoking" {
            abort_at("revoking");
        }
        self.inner.revoke(lease).await?;
        if self.point == "revoked" {
            abort_at("revoked");
        }
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------
// The child process.

/// Entry point of the agent process; a no-op in a normal test run.
#[test]
fn child_process() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(agent());
}

/// Submits the export, prints `PENDING <id>`, waits for the approval, and runs the export
/// with a minted credential: `READ <rows>` once it has read the table as that role, then
/// `RAN` (or `ERROR ...`), unless it aborts first.
async fn agent() {
    let point = env("CRED_POINT");
    let store = open_store(&env("CRED_DB"), &env("CRED_SCHEMA")).await;
    let pg_url = env("CRED_PG");
    let allowed = env("CRED_ALLOWED") == "1";
    let policy = if allowed {
        StaticPolicy::allow_all()
    } else {
        policy()
    };
    let gate = Gate::builder()
        .policy(policy)
        .audit(store.audit_sink())
        .store(store)
        .credential_broker(CrashingBroker {
            inner: broker(&pg_url).await,
            point: point.clone(),
        })
        .initiator(Initiator::agent("export-bot"))
        .grant_ttl(GRANT_TTL)
        .poll_interval(Duration::from_millis(50))
        .store_timeout(Duration::from_secs(20))
        .build()
        .expect("gate");
    let action = export(&env("CRED_TABLE"));
    if allowed {
        // Allowed outright: no record names the credential.
        let table = env("CRED_TABLE");
        let ran = gate
            .run_with_credential(&action, |credential| async move {
                println!("ROLE {}", credential.id());
                let rows = read_as(&pg_url, &credential, &table).await?;
                println!("READ {rows}");
                if point == "running" {
                    abort_at("running");
                }
                Ok::<_, approvals_core::GuardError>(rows)
            })
            .await;
        match ran {
            Ok(_) => println!("RAN"),
            Err(e) => println!("ERROR run: {e}"),
        }
        return;
    }
    let id = match gate.submit(&action).await {
        Ok(Submission::Pending(id)) => id,
        other => {
            println!("ERROR submit: {other:?}");
            return;
        }
    };
    println!("PENDING {id}");
    let grant = match gate.wait(id).await {
        Ok(grant) => grant,
        Err(e) => {
            println!("ERROR wait: {e}");
            return;
        }
    };
    let table = env("CRED_TABLE");
    let ran = gate
        .execute_with_credential(grant, &action, |credential| async move {
            let rows = read_as(&pg_url, &credential, &table).await?;
            println!("READ {rows}");
            if point == "running" {
                abort_at("running");
            }
            Ok::<_, approvals_core::GuardError>(rows)
        })
        .await;
    match ran {
        Ok(_) => println!("RAN"),
        Err(e) => println!("ERROR execute: {e}"),
    }
}

/// Logs in as the credential and counts the table's rows.
async fn read_as(
    pg_url: &str,
    credential: &Credential,
    table: &str,
) -> Result<i64, approvals_core::GuardError> {
    let refused = |e: sqlx::Error| approvals_core::GuardError::InvalidRequest(e.to_string());
    let options: sqlx::postgres::PgConnectOptions = pg_url.parse().map_err(refused)?;
    let mut conn = sqlx::postgres::PgConnection::connect_with(
        &options
            .username(credential.id())
            .password(credential.secret()),
    )
    .await
    .map_err(refused)?;
    let rows: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .map_err(refused)?;
    Ok(rows)
}

// ----------------------------------------------------------------------------------------
// The parent.

struct Rig {
    pg_url: String,
    store_url: String,
    store_schema: String,
    store: SqlStore,
    gate: Gate,
    data_schema: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(pg_url: &str, on_postgres: bool) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store_url, store_schema) = if on_postgres {
            (pg_url.to_owned(), pg::unique_schema("credcrash"))
        } else {
            (
                format!("sqlite://{}", dir.path().join("approvals.db").display()),
                String::new(),
            )
        };
        let store = open_store(&store_url, &store_schema).await;
        let gate = Gate::builder()
            .policy(policy())
            .audit(store.audit_sink())
            .store(store.clone())
            .credential_broker(broker(pg_url).await)
            .initiator(Initiator::agent("export-bot"))
            .grant_ttl(GRANT_TTL)
            .build()
            .expect("parent gate");
        let data_schema = pg::unique_schema("credcrash_data");
        let mut conn = sqlx::postgres::PgConnection::connect(pg_url)
            .await
            .expect("connect");
        for sql in [
            format!("CREATE SCHEMA {data_schema}"),
            format!("CREATE TABLE {data_schema}.invoices (id int primary key, amount int)"),
            format!(
                "INSERT INTO {data_schema}.invoices SELECT g, g * 10 FROM generate_series(1, 3) g"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("test data");
        }
        Rig {
            pg_url: pg_url.to_owned(),
            store_url,
            store_schema,
            store,
            gate,
            data_schema,
            _dir: dir,
        }
    }

    fn agent(&self, point: &str) -> ChildProcess {
        self.agent_with(point, false)
    }

    /// The agent, running an action its policy allows outright when `allowed`.
    fn agent_with(&self, point: &str, allowed: bool) -> ChildProcess {
        let vars = [
            ("CRED_POINT", point.to_owned()),
            ("CRED_ALLOWED", if allowed { "1" } else { "0" }.to_owned()),
            ("CRED_DB", self.store_url.clone()),
            ("CRED_SCHEMA", self.store_schema.clone()),
            ("CRED_PG", self.pg_url.clone()),
            ("CRED_TABLE", format!("{}.invoices", self.data_schema)),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        ChildProcess::spawn("child_process", ROLE, "agent", &vars)
    }

    async fn role_exists(&self, name: &str) -> bool {
        let mut conn = sqlx::postgres::PgConnection::connect(&self.pg_url)
            .await
            .expect("connect");
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .expect("pg_roles")
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.gate
            .store()
            .get(id)
            .await
            .expect("get")
            .expect("record")
    }

    async fn events(&self, id: RequestId) -> Vec<serde_json::Value> {
        let sink = self.store.audit_sink();
        sink.check_unsigned()
            .await
            .unwrap_or_else(|e| panic!("audit chain broken after the crash: {e}"));
        sink.events_for(id)
            .await
            .expect("read audit events")
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect()
    }

    async fn finish(self) {
        self.store.close().await;
        if !self.store_schema.is_empty() {
            pg::drop_schema(&self.pg_url, &self.store_schema).await;
        }
        pg::drop_schema(&self.pg_url, &self.data_schema).await;
    }
}

/// The agent dies at `point`; nothing it minted outlives the credential's expiry.
async fn agent_dies_at(rig: &Rig, point: &str) {
    let mut agent = rig.agent(point);
    let line = agent.expect(&["PENDING ", "ERROR"]).await;
    let id: RequestId = line
        .strip_prefix("PENDING ")
        .and_then(|s| RequestId::parse(s.trim()).ok())
        .unwrap_or_else(|| panic!("{point}: {line}"));
    rig.gate
        .decide(
            id,
            Review::approve(Principal::human("sam@example.com").with_groups(["data-owners"])),
        )
        .await
        .expect("approve");
    let minted = point != "before-issue";
    let used = minted && point != "issuing";
    if used {
        assert_eq!(agent.expect(&["READ ", "ERROR"]).await, "READ 3", "{point}");
    }
    assert_eq!(
        agent.expect(&["CRASH ", "RAN", "ERROR"]).await,
        format!("CRASH {point}")
    );
    assert_eq!(agent.exit().await, None, "{point}: the agent aborted");

    let record = rig.record(id).await;
    assert_eq!(record.state, RequestState::Executing, "{point}: {record:?}");
    let credential = approvals_core::lifecycle::outstanding(&record)
        .unwrap_or_else(|| panic!("{point}: no outstanding credential on {record:?}"))
        .clone();
    let role = credential.lease.id.clone();
    assert_eq!(
        rig.role_exists(&role).await,
        minted && point != "revoked",
        "{point}: what the crash left"
    );

    // Not due while the credential's time runs: the action may still be running somewhere.
    assert_eq!(rig.gate.sweep().await.expect("sweep").revoked, 0, "{point}");
    let wait = (credential.lease.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert_eq!(rig.gate.sweep().await.expect("sweep").revoked, 1, "{point}");
    assert!(!rig.role_exists(&role).await, "{point}: the role survived");
    assert_eq!(
        rig.gate.sweep().await.expect("sweep").revoked,
        0,
        "{point}: once"
    );

    let events = rig.events(id).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let swept: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "credential_revoked")
        .collect();
    assert_eq!(swept.len(), 1, "{point}: {names:?}");
    assert_eq!(swept[0]["reason"], "swept", "{point}");
    assert_eq!(swept[0]["credential"]["id"], role, "{point}");
    assert_eq!(
        names.contains(&"credential_issued"),
        used,
        "{point}: {names:?}"
    );
}

async fn every_point(rig: &Rig) {
    for point in POINTS {
        agent_dies_at(rig, point).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_agent_killed_at_every_credential_point_leaves_no_role() {
    let Some(url) =
        pg::postgres_url("sqlite_store_agent_killed_at_every_credential_point_leaves_no_role")
    else {
        return;
    };
    let rig = Rig::new(&url, false).await;
    every_point(&rig).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_agent_killed_at_every_credential_point_leaves_no_role() {
    let Some(url) =
        pg::postgres_url("postgres_store_agent_killed_at_every_credential_point_leaves_no_role")
    else {
        return;
    };
    let rig = Rig::new(&url, true).await;
    every_point(&rig).await;
    rig.finish().await;
}

/// An action the policy allows outright keeps no record: when its agent dies inside it, the
/// broker's own sweep ([`CredentialBroker::revoke_expired`]) drops the role once it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_inside_an_allowed_action_leaves_no_role() {
    let Some(url) = pg::postgres_url("agent_killed_inside_an_allowed_action_leaves_no_role") else {
        return;
    };
    let rig = Rig::new(&url, false).await;
    let mut agent = rig.agent_with("running", true);
    let line = agent.expect(&["ROLE ", "ERROR"]).await;
    let role = line
        .strip_prefix("ROLE ")
        .unwrap_or_else(|| panic!("{line}"))
        .trim()
        .to_owned();
    assert_eq!(agent.expect(&["READ ", "ERROR"]).await, "READ 3");
    assert_eq!(
        agent.expect(&["CRASH ", "RAN", "ERROR"]).await,
        "CRASH running"
    );
    assert_eq!(agent.exit().await, None, "the agent aborted");
    assert!(rig.role_exists(&role).await, "the crash left the role");

    // Still valid: a sweep leaves it (the action may still be running somewhere).
    rig.gate.sweep().await.expect("sweep");
    assert!(rig.role_exists(&role).await, "not dropped while valid");
    tokio::time::sleep(GRANT_TTL + Duration::from_millis(1200)).await;
    // Another test's sweep on this server may drop it first; either way it is gone after
    // this one.
    rig.gate.sweep().await.expect("sweep");
    assert!(
        !rig.role_exists(&role).await,
        "the role survived its expiry"
    );
    rig.finish().await;
}
