//! PostgreSQL with two replicas: one approval queue shared by several processes.
//!
//! Agents usually run as several replicas behind a load balancer. With the store on
//! PostgreSQL they share one queue: a request created on any replica can be reviewed through
//! any replica, the waiting agent wakes as soon as the decision is committed (the store's
//! LISTEN/NOTIFY), and every replica may sweep for expired requests without doing anything
//! twice (each transition is a compare-and-set).
//!
//! This program starts itself twice more, as two real processes on one database:
//!
//! - **replica A** is the agent: it asks to fail over a database and waits. It polls the store
//!   only once a minute, so when it wakes within moments of the decision, LISTEN/NOTIFY woke
//!   it. It also submits a few requests nobody answers, which expire after one second.
//! - **replica B** serves the approvals HTTP API. The reviewer (this first process) finds the
//!   request in B's queue and approves it through B's API, bound to the digest B showed.
//! - Both replicas sweep every 100 ms; each expired request is recorded exactly once.
//!
//! Both replicas write one audit table; the reviewer counts in it that each expiry was
//! recorded once. At the end the schema the example created is dropped.
//!
//! It needs a PostgreSQL server where it may create a schema, named by
//! `APPROVALS_POSTGRES_URL`:
//!
//! ```text
//! APPROVALS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run -p approvals-examples --bin postgres_replicas
//! ```

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, Principal, RequestId, RulePolicy, Submission,
};
use approvals_http::{ApiClient, ReviewServer, Tokens, generate_token};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The variable naming the PostgreSQL server.
const URL_VAR: &str = "APPROVALS_POSTGRES_URL";
/// How the reviewer's API token reaches replica B (an environment variable, not an argument,
/// so it does not show in `ps`).
const TOKEN_VAR: &str = "APPROVALS_EXAMPLE_REVIEWER_TOKEN";
/// How long the reviewer waits for each step before giving up.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// How many requests are left to expire.
const UNANSWERED: usize = 4;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "database-failover"
kind = "database.failover"
effect = "require_approval"
approvers = { groups = ["dba"] }
timeout = "15m"

[[rules]]
name = "cache-flush"
description = "Short-lived on purpose, so that the demo shows requests expiring."
kind = "cache.flush"
effect = "require_approval"
approvers = { groups = ["dba"] }
timeout = "1s"
"#;

#[tokio::main]
async fn main() -> ExitCode {
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            eprintln!(
                "{URL_VAR} is not set. This example needs a PostgreSQL server where it may create (and afterwards drops) a schema of its own, for example:\n\n    {URL_VAR}=postgres://postgres@127.0.0.1:5432/test cargo run -p approvals-examples --bin postgres_replicas\n"
            );
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => reviewer(&url).await,
        [flag, name, schema_flag, schema] if flag == "--replica" && schema_flag == "--schema" => {
            match name.as_str() {
                "A" => replica_a(&url, schema).await,
                "B" => replica_b(&url, schema).await,
                _ => Err(
                    format!("unknown replica {name:?}; this program starts A and B itself").into(),
                ),
            }
        }
        _ => Err("usage: postgres_replicas (no arguments; it starts its replicas itself)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postgres_replicas: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The URL without its password, for printing.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

async fn open(url: &str, schema: &str) -> Result<SqlStore, BoxError> {
    let options = SqlStoreOptions::new(url)
        .schema(schema)
        .acquire_timeout(Duration::from_secs(10));
    SqlStore::connect_with(options).await.map_err(|e| {
        format!(
            "cannot use PostgreSQL at {}: {e}. Check that the server runs and that {URL_VAR} names a database you may create a schema in",
            shown(url)
        )
        .into()
    })
}

/// The gate every replica builds: same policy, same store. It polls the store only once a
/// minute, so a quick wake-up shows that a notification did it.
fn gate_on(store: &SqlStore) -> Result<Gate, BoxError> {
    Ok(Gate::builder()
        .policy(RulePolicy::from_toml(POLICY)?)
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(
            Initiator::agent("db-remediation-agent")
                .on_behalf_of(Principal::human("dana@example.com")),
        )
        .poll_interval(Duration::from_secs(60))
        .build()?)
}

fn failover() -> ActionRequest {
    ActionRequest::new("database.failover", "postgres://prod/orders")
        .params(json!({"promote": "orders-replica-2", "demote": "orders-primary-1"}))
        .justification("orders-primary-1 has failed health checks for 4 minutes")
        .environment("production")
}

// ----------------------------------------------------------------------------------------
// The reviewer: starts both replicas, decides on B, checks what happened, cleans up.

async fn reviewer(url: &str) -> Result<(), BoxError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or_default();
    let schema = format!("approvals_example_{}_{nanos}", std::process::id());
    // Create the tables once, before the replicas start.
    let store = open(url, &schema).await?;
    println!("Using schema {schema} on {}", shown(url));
    let result = scenario(url, &schema, &store).await;
    store.close().await;
    match drop_schema(url, &schema).await {
        Ok(()) => println!("Dropped schema {schema}."),
        Err(e) => eprintln!("could not drop schema {schema} (drop it by hand): {e}"),
    }
    result
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
    // The name is ours (letters, digits, underscores), so quoting it is enough.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

async fn scenario(url: &str, schema: &str, store: &SqlStore) -> Result<(), BoxError> {
    let token = generate_token();
    let mut b = Replica::start("B", url, schema, Some(&token))?;
    let api = b.expect("@ready").await?;
    let mut a = Replica::start("A", url, schema, None)?;
    let id = RequestId::parse(&a.expect("@pending").await?)?;

    // The reviewer's view: replica B's queue, which holds what replica A created.
    let client = ApiClient::http(api.parse()?, Some(token))?;
    let queue = client.list("state=pending&kind=database.failover").await?;
    let Some(request) = queue.requests.iter().find(|r| r.id == id) else {
        return Err(format!("replica B does not list request {id} that replica A created").into());
    };
    println!(
        "[reviewer] replica B's queue shows {} on {} (request {id}, created on replica A)",
        request.kind, request.resource
    );
    // Give replica A a moment to settle into its wait, as a human reviewer would take.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let approved_at = Instant::now();
    client
        .decide(
            id,
            true,
            Some("primary is down; promote"),
            Some(request.digest),
        )
        .await?;
    println!("[reviewer] approved through replica B's API");
    a.expect("@woke").await?;
    let wake = approved_at.elapsed();
    println!(
        "[reviewer] replica A woke {} ms after the approval on replica B (it polls once a minute: LISTEN/NOTIFY woke it)",
        wake.as_millis()
    );
    if wake >= Duration::from_secs(20) {
        return Err(format!(
            "replica A needed {wake:?} to notice the decision: it found it by polling, so PostgreSQL's notifications did not reach it"
        )
        .into());
    }
    a.expect("@ran").await?;

    // Expiry: both replicas sweep; wait until every unanswered request has expired, give the
    // sweepers another second to do anything twice, then count.
    let mut expiring = Vec::new();
    for _ in 0..UNANSWERED {
        expiring.push(RequestId::parse(&a.expect("@expiring").await?)?);
    }
    let audit = store.audit_sink();
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let mut done = 0;
        for id in &expiring {
            let events = audit.events_for(*id).await?;
            done += usize::from(events.iter().any(|e| e.name() == "expired"));
        }
        if done == expiring.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {done} of {} unanswered requests expired within {STEP_DEADLINE:?}; are the replicas sweeping?",
                expiring.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &expiring {
        let events = audit.events_for(*id).await?;
        let expired = events.iter().filter(|e| e.name() == "expired").count();
        if expired != 1 {
            return Err(format!("request {id} was expired {expired} times; expected once").into());
        }
    }

    // Stop the replicas (they exit when their stdin closes) and count who expired what.
    let swept_a = a.finish().await?;
    let swept_b = b.finish().await?;
    println!(
        "[reviewer] {UNANSWERED} unanswered requests expired, each exactly once, while both replicas swept (replica A expired {swept_a}, replica B {swept_b})"
    );
    if swept_a + swept_b != UNANSWERED {
        return Err(format!(
            "the replicas report {} expiries for {UNANSWERED} requests",
            swept_a + swept_b
        )
        .into());
    }
    Ok(())
}

/// A replica process: its human-readable lines are shown as they come; lines starting with
/// `@` are progress markers for the reviewer.
struct Replica {
    name: &'static str,
    child: Child,
    markers: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Replica {
    fn start(
        name: &'static str,
        url: &str,
        schema: &str,
        token: Option<&str>,
    ) -> Result<Self, BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--replica", name, "--schema", schema])
            .env(URL_VAR, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(token) = token {
            command.env(TOKEN_VAR, token);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("the replica has no stdout")?;
        let (tx, markers) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with('@') {
                    let _ = tx.send(line);
                } else {
                    println!("{line}");
                }
            }
        });
        Ok(Replica {
            name,
            child,
            markers,
            seen: Vec::new(),
        })
    }

    /// Waits for the next marker `tag` (or takes one that arrived earlier) and returns the
    /// rest of its line.
    async fn expect(&mut self, tag: &str) -> Result<String, BoxError> {
        if let Some(at) = self.seen.iter().position(|l| l.starts_with(tag)) {
            let line = self.seen.remove(at);
            return Ok(line[tag.len()..].trim().to_owned());
        }
        let next = async {
            while let Some(line) = self.markers.recv().await {
                if let Some(rest) = line.strip_prefix(tag) {
                    return Some(rest.trim().to_owned());
                }
                self.seen.push(line);
            }
            None
        };
        match tokio::time::timeout(STEP_DEADLINE, next).await {
            Ok(Some(rest)) => Ok(rest),
            Ok(None) => Err(format!("replica {} stopped before {tag}", self.name).into()),
            Err(_) => Err(format!(
                "replica {} did not report {tag} within {STEP_DEADLINE:?}",
                self.name
            )
            .into()),
        }
    }

    /// Closes its stdin, waits for it to exit, and returns how many requests it expired.
    async fn finish(mut self) -> Result<usize, BoxError> {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(STEP_DEADLINE, self.child.wait()).await??;
        if !status.success() {
            return Err(format!("replica {} exited with {status}", self.name).into());
        }
        while let Some(line) = self.markers.recv().await {
            self.seen.push(line);
        }
        Ok(self
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix("@expired "))
            .filter_map(|n| n.trim().parse::<usize>().ok())
            .sum())
    }
}

// ----------------------------------------------------------------------------------------
// The replicas.

/// Sweeps every 100 ms, reporting what this replica expired.
fn sweep_every_100ms(gate: Gate, name: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match gate.sweep().await {
                Ok(report) if report.expired > 0 => {
                    println!(
                        "[replica {name}] sweep: expired {} request(s)",
                        report.expired
                    );
                    println!("@expired {}", report.expired);
                }
                Ok(_) => {}
                Err(e) => eprintln!("[replica {name}] sweep failed: {e}"),
            }
        }
    })
}

/// Returns when stdin closes: the reviewer is done with this replica (or has gone away).
async fn until_stdin_closes() {
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
}

/// The agent: asks, waits, runs; leaves a few requests unanswered.
async fn replica_a(url: &str, schema: &str) -> Result<(), BoxError> {
    let store = open(url, schema).await?;
    let gate = gate_on(&store)?;
    let sweeper = sweep_every_100ms(gate.clone(), "A");
    for n in 0..UNANSWERED {
        let flush = ActionRequest::new("cache.flush", format!("redis://prod/sessions-{n}"));
        let Submission::Pending(id) = gate.submit(&flush).await? else {
            return Err("the policy should require approval for a cache flush".into());
        };
        println!("@expiring {id}");
    }
    println!(
        "[replica A] asked for {UNANSWERED} cache flushes nobody will answer (they expire after 1 s)"
    );
    let action = failover();
    let Submission::Pending(id) = gate.submit(&action).await? else {
        return Err("the policy should require approval for a failover".into());
    };
    println!(
        "[replica A] asked to fail over postgres://prod/orders: request {id} is pending; waiting (polling once a minute, so a notification must wake me)"
    );
    println!("@pending {id}");
    let grant = gate.wait(id).await?;
    println!("@woke");
    let approvers: Vec<&str> = grant.approvers().iter().map(|p| p.label()).collect();
    println!("[replica A] woke up: approved by {}", approvers.join(", "));
    gate.execute(grant, &action, || async {
        println!("[replica A] promoting orders-replica-2 (runs once, here)");
        Ok::<_, GuardError>(())
    })
    .await?;
    println!("@ran");
    until_stdin_closes().await;
    sweeper.abort();
    store.close().await;
    Ok(())
}

/// Serves the approvals API for reviewers, and sweeps.
async fn replica_b(url: &str, schema: &str) -> Result<(), BoxError> {
    let token = std::env::var(TOKEN_VAR)
        .map_err(|_| format!("replica B expects the reviewer's token in {TOKEN_VAR}"))?;
    let store = open(url, schema).await?;
    let gate = gate_on(&store)?;
    let sam = Principal::human("sam@example.com")
        .with_name("Sam (DBA)")
        .with_groups(["dba"]);
    let server = ReviewServer::builder(gate.clone())
        .tokens(Tokens::new().with_token(&token, sam))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/", listener.local_addr()?);
    let sweeper = sweep_every_100ms(gate.clone(), "B");
    println!("[replica B] serving the approvals API at {base}");
    println!("@ready {base}");
    approvals_http::serve(listener, server, until_stdin_closes()).await?;
    sweeper.abort();
    store.close().await;
    Ok(())
}
