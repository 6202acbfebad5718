//! Real OS processes on one database: a waiter killed with SIGKILL and restarted (SQLite),
//! a request that expires while no process is up, and two replicas woken by NOTIFY
//! (PostgreSQL).
//!
//! The child processes are this test binary re-run with `APPROVALS_SQL_CHILD` set: the
//! `child_process` entry point below then acts as an agent process instead of a test.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::clock::Sleep;
use approvals_core::{
    Clock, Gate, GuardError, Initiator, ListFilter, Principal, RequestId, RequestState,
    Requirement, Review, StaticPolicy, Store, Submission,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::fixtures::{export_request, reviewer};
use chrono::{DateTime, TimeDelta, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const ROLE: &str = "APPROVALS_SQL_CHILD";

/// System time shifted by a fixed offset: "the process came back two hours later".
struct OffsetClock(TimeDelta);

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep {
        let wait = (deadline - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

async fn open(url: &str, schema: Option<&str>) -> SqlStore {
    let mut options = SqlStoreOptions::new(url).acquire_timeout(Duration::from_secs(10));
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    SqlStore::connect_with(options).await.expect("open store")
}

fn gate_on(store: &SqlStore, clock: Arc<dyn Clock>, poll: Duration) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store.clone())
        .audit(store.audit_sink())
        .clock(clock)
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .poll_interval(poll)
        .build()
        .expect("gate")
}

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_process() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let code = runtime.block_on(child_main());
    std::process::exit(code);
}

/// Submits (or re-attaches to) the export, waits for the decision and runs the action,
/// appending one line to the marker file. Exit codes: 0 ran, 3 expired, 4 denied, 2 other
/// refusal.
async fn child_main() -> i32 {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let schema = env("CHILD_SCHEMA");
    let store = open(
        &env("CHILD_DB"),
        (!schema.is_empty()).then_some(schema.as_str()),
    )
    .await;
    let offset = env("CHILD_CLOCK_OFFSET_SECS").parse::<i64>().unwrap_or(0);
    let poll = Duration::from_millis(env("CHILD_POLL_MS").parse().unwrap_or(50));
    let gate = gate_on(
        &store,
        Arc::new(OffsetClock(TimeDelta::seconds(offset))),
        poll,
    );
    let action = export_request().idempotency_key(env("CHILD_KEY"));
    let id = match gate.submit(&action).await {
        Ok(Submission::Pending(id)) => id,
        other => {
            println!("ERROR submit: {other:?}");
            return 2;
        }
    };
    // Report the first change notification for this request as it arrives (on PostgreSQL,
    // from another process through LISTEN/NOTIFY).
    if let Some(mut changes) = Store::changes(&store) {
        tokio::spawn(async move {
            while let Ok(changed) = changes.recv().await {
                if changed == id {
                    println!("NOTICED {id}");
                    return;
                }
            }
        });
    }
    println!("PENDING {id}");
    let marker = env("CHILD_MARKER");
    match gate.wait(id).await {
        Ok(grant) => {
            let ran = gate
                .execute(grant, &action, || async {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&marker)
                        .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
                    writeln!(f, "ran in process {}", std::process::id())
                        .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
                    f.sync_all()
                        .map_err(|e| GuardError::InvalidRequest(e.to_string()))
                })
                .await;
            match ran {
                Ok(()) => {
                    println!("RAN");
                    0
                }
                Err(e) => {
                    println!("ERROR execute: {e}");
                    2
                }
            }
        }
        Err(GuardError::Expired { .. }) => {
            println!("EXPIRED");
            3
        }
        Err(GuardError::Denied { .. }) => {
            println!("DENIED");
            4
        }
        Err(e) => {
            println!("ERROR wait: {e}");
            2
        }
    }
}

struct Agent {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Agent {
    fn spawn(vars: &[(&str, String)]) -> Agent {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "waiter")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child process");
        let stdout = child.stdout.take().expect("stdout");
        Agent {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line starting with one of `prefixes` (the test harness prints others).
    async fn expect_line(&mut self, prefixes: &[&str]) -> String {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read child output") {
                // The harness may print "test child_process ... " before our first line.
                if let Some(at) = prefixes.iter().find_map(|p| line.find(p)) {
                    return line[at..].to_owned();
                }
                if line.contains("ERROR") {
                    panic!("child failed: {line}");
                }
            }
            panic!("child exited without printing {prefixes:?}");
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("no {prefixes:?} from the child within 60 s"))
    }

    async fn pending_id(&mut self) -> RequestId {
        let line = self.expect_line(&["PENDING "]).await;
        RequestId::parse(line.trim_start_matches("PENDING ").trim()).expect("request id")
    }

    async fn exit_code(mut self) -> i32 {
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("child exits")
            .expect("wait")
            .code()
            .unwrap_or(-1)
    }
}

fn marker_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn sqlite_vars(db: &str, marker: &Path, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CHILD_DB", db.to_owned()),
        ("CHILD_MARKER", marker.display().to_string()),
        ("CHILD_KEY", key.to_owned()),
        ("CHILD_POLL_MS", "50".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_waiter_restarts_reattaches_and_runs_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let marker = dir.path().join("marker.txt");
    let vars = sqlite_vars(&db, &marker, "nightly-export-1");

    let mut first = Agent::spawn(&vars);
    let id = first.pending_id().await;
    first
        .child
        .kill()
        .await
        .expect("SIGKILL the waiting process");

    // The request outlived the process that asked for it.
    let store = open(&db, None).await;
    let pending = store.list(&ListFilter::pending()).await.expect("list");
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);

    let mut second = Agent::spawn(&vars);
    assert_eq!(
        second.pending_id().await,
        id,
        "the restart re-attaches by idempotency key"
    );

    let gate = gate_on(
        &store,
        Arc::new(OffsetClock(TimeDelta::zero())),
        Duration::from_millis(50),
    );
    gate.decide(id, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approve from another process");
    second.expect_line(&["RAN"]).await;
    assert_eq!(second.exit_code().await, 0);
    assert_eq!(marker_lines(&marker), 1, "the action ran exactly once");

    // A third start with the same key finds the request already executed and runs nothing.
    let mut third = Agent::spawn(&vars);
    assert_eq!(third.pending_id().await, id);
    assert_eq!(third.exit_code().await, 2, "a used approval is refused");
    assert_eq!(marker_lines(&marker), 1, "still exactly once");

    let stored = store.get(id).await.expect("get").expect("exists");
    assert_eq!(stored.state, RequestState::Executed);
    let report = store
        .audit_sink()
        .check_unsigned()
        .await
        .expect("audit log readable");
    assert!(
        report.is_ok(),
        "audit log from all processes intact: {report}"
    );
    assert!(report.entries >= 6, "events from all processes: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expired_while_down_is_resolved_on_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let marker = dir.path().join("marker.txt");
    let mut vars = sqlite_vars(&db, &marker, "expiring-export");

    let mut first = Agent::spawn(&vars);
    let id = first.pending_id().await;
    first.child.kill().await.expect("SIGKILL");

    // The process comes back two hours later: past the one-hour deadline.
    vars.push(("CHILD_CLOCK_OFFSET_SECS", "7200".to_owned()));
    let mut second = Agent::spawn(&vars);
    assert_eq!(second.pending_id().await, id);
    second.expect_line(&["EXPIRED"]).await;
    assert_eq!(second.exit_code().await, 3);

    let store = open(&db, None).await;
    assert_eq!(
        store.get(id).await.expect("get").expect("exists").state,
        RequestState::Expired
    );
    assert_eq!(marker_lines(&marker), 0, "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_one_postgres_replica_wakes_the_waiter_on_another() {
    let Some(url) =
        common::postgres_url("a_decision_on_one_postgres_replica_wakes_the_waiter_on_another")
    else {
        return;
    };
    let schema = common::unique_schema("replica");
    let store = open(&url, Some(&schema)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("marker.txt");
    let vars = vec![
        ("CHILD_DB", url.clone()),
        ("CHILD_SCHEMA", schema.clone()),
        ("CHILD_MARKER", marker.display().to_string()),
        ("CHILD_KEY", "replica-export".to_owned()),
        ("CHILD_POLL_MS", "500".to_owned()),
    ];
    let mut replica = Agent::spawn(&vars);
    let id = replica.pending_id().await;

    // This process is the second replica, with its own gate on the shared queue.
    let gate = gate_on(
        &store,
        Arc::new(OffsetClock(TimeDelta::zero())),
        Duration::from_secs(60),
    );
    assert_eq!(gate.pending().await.expect("pending").len(), 1);
    gate.decide(id, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approve");
    // The other process hears of the decision through NOTIFY (its own store never wrote it),
    // then its waiting gate issues the grant and runs the action once.
    let first = replica.expect_line(&["NOTICED", "RAN"]).await;
    let second = replica.expect_line(&["NOTICED", "RAN"]).await;
    let mut seen = [first, second];
    seen.sort();
    assert_eq!(seen, [format!("NOTICED {id}"), "RAN".to_owned()]);
    assert_eq!(replica.exit_code().await, 0);
    assert_eq!(marker_lines(&marker), 1);
    assert_eq!(
        store.get(id).await.expect("get").expect("exists").state,
        RequestState::Executed
    );
    let report = store
        .audit_sink()
        .check_unsigned()
        .await
        .expect("audit log readable");
    assert!(report.is_ok(), "one audit log from two replicas: {report}");
    store.close().await;
    common::drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_on_one_postgres_replica_wakes_the_waiter_on_another_at_once() {
    let Some(url) =
        common::postgres_url("a_deny_on_one_postgres_replica_wakes_the_waiter_on_another_at_once")
    else {
        return;
    };
    let schema = common::unique_schema("replicadeny");
    let store = open(&url, Some(&schema)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("marker.txt");
    let vars = vec![
        ("CHILD_DB", url.clone()),
        ("CHILD_SCHEMA", schema.clone()),
        ("CHILD_MARKER", marker.display().to_string()),
        ("CHILD_KEY", "replica-deny".to_owned()),
        // Polling alone would take a minute: only NOTIFY can wake the waiter in time.
        ("CHILD_POLL_MS", "60000".to_owned()),
    ];
    let mut replica = Agent::spawn(&vars);
    let id = replica.pending_id().await;
    let gate = gate_on(
        &store,
        Arc::new(OffsetClock(TimeDelta::zero())),
        Duration::from_secs(60),
    );
    gate.decide(
        id,
        Review::deny(reviewer("sam@example.com")).reason("not now"),
    )
    .await
    .expect("deny");
    let woke =
        tokio::time::timeout(Duration::from_secs(30), replica.expect_line(&["DENIED"])).await;
    assert!(
        woke.is_ok(),
        "the waiter on the other replica must wake well before its 60 s poll"
    );
    assert_eq!(replica.exit_code().await, 4);
    assert_eq!(marker_lines(&marker), 0, "nothing ran");
    store.close().await;
    common::drop_schema(&url, &schema).await;
}
