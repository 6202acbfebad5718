//! Every interleaving of two decisions on one request, with an audit failure at each step, on
//! the memory store, an SQLite file and PostgreSQL.
//!
//! Decision A runs until a chosen point of its audit appends (before or after each one) and
//! pauses there; decision B then runs to its end; then A finishes. Independently, one audit
//! append of A and one of B may fail. The scenarios are the four pairs of verdicts (approve
//! and deny in both orders, two approvals toward a quorum of two, two denials). A revoking
//! deny (one that arrives after the approval) is among the interleavings of "approve, then
//! deny".
//!
//! After both, a fresh gate over the same store sweeps past the audit recovery delay. Then:
//!
//! - the request ends `Denied` exactly when a deny was accepted, and `Approved` when the
//!   approvals reached the quorum and no deny was accepted (deny wins);
//! - no flag `audit_pending` is left;
//! - the audit trail (appends that succeeded) has the final decision's events: `denied` by the
//!   denying reviewer, or `approved`; and an approval that a deny revoked still has its
//!   `approved` event;
//! - no grant was issued before an `approved` event, and the agent's `wait` tells a denial only
//!   after `denied` is recorded.
//!
//! This is the class of the bug where a revoking deny whose audit failed went unrecorded
//! forever because the approval's `decide()` cleared the flag the deny had set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::audit::AuditError;
use approvals_core::{
    ActionRequest, AuditEvent, AuditSink, EventDetail, Gate, GuardError, Initiator, ManualClock,
    MemorySink, MemoryStore, Principal, RequestState, Requirement, Review, StaticPolicy, Store,
    Submission, Verdict,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::fixtures::epoch;
use approvals_testkit::pg;
use async_trait::async_trait;
use chrono::TimeDelta;
use tokio::sync::{Mutex, Notify};

tokio::task_local! {
    /// Which decision is appending: 0 for A, 1 for B.
    static ACTOR: usize;
}

/// Where A pauses: before its n-th audit append, or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// B runs to its end before A starts.
    BFirst,
    Before(usize),
    After(usize),
    /// A runs to its end before B starts.
    AFirst,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    verdicts: [Verdict; 2],
    quorum: u32,
    pause: Pause,
    /// Which append (by index) of each decision fails, if any.
    fail: [Option<usize>; 2],
}

/// An audit sink that records successful appends in `reliable`, fails the chosen append of
/// each decision, and pauses decision A at the chosen point.
struct ScriptedSink {
    reliable: Arc<MemorySink>,
    fail: [Option<usize>; 2],
    pause: Pause,
    appends: [AtomicUsize; 2],
    paused: Arc<Notify>,
    release: Arc<Notify>,
}

impl ScriptedSink {
    async fn hold_if(&self, actor: usize, point: Pause) {
        if actor == 0 && self.pause == point {
            self.paused.notify_one();
            self.release.notified().await;
        }
    }
}

#[async_trait]
impl AuditSink for ScriptedSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        // Appends outside a decision (refusal records, sweeps) are plain.
        let Ok(actor) = ACTOR.try_with(|a| *a) else {
            return self.reliable.record(event).await;
        };
        let n = self.appends[actor].fetch_add(1, Ordering::SeqCst);
        self.hold_if(actor, Pause::Before(n)).await;
        if self.fail[actor] == Some(n) {
            return Err(AuditError::new(format!("injected failure of append {n}")));
        }
        self.reliable.record(event).await?;
        self.hold_if(actor, Pause::After(n)).await;
        Ok(())
    }
}

fn reviewer(actor: usize) -> Principal {
    let id = ["alice@example.com", "bob@example.com"][actor];
    Principal::human(id).with_groups(["ops"])
}

fn review(actor: usize, verdict: Verdict) -> Review {
    let who = reviewer(actor);
    match verdict {
        Verdict::Approve => Review::approve(who),
        Verdict::Deny => Review::deny(who).reason(format!("no, says {actor}")),
    }
}

fn gate(
    store: Arc<dyn Store>,
    sink: Arc<dyn AuditSink>,
    clock: Arc<ManualClock>,
    quorum: u32,
) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["ops"])
                .quorum(quorum)
                .timeout(Duration::from_secs(24 * 3600)),
        ))
        .store_shared(store)
        .audit_shared(sink)
        .clock(clock)
        .initiator(Initiator::agent("deployer").on_behalf_of(Principal::human("dana@example.com")))
        .audit_recovery_after(Duration::from_secs(30))
        .grant_ttl(Duration::from_secs(3600))
        .store_timeout(Duration::from_secs(10))
        .build()
        .expect("gate")
}

/// Every case: four verdict pairs, every pause point, every failure position (or none) for
/// each decision. A decision makes at most two appends (`reviewed`, then `approved` or
/// `denied`); a revoking deny may replay the approval's `approved` first, so three.
fn cases() -> Vec<Case> {
    use Verdict::{Approve, Deny};
    let pairs = [
        ([Approve, Deny], 1),
        ([Deny, Approve], 1),
        ([Approve, Approve], 2),
        ([Deny, Deny], 1),
    ];
    let mut pauses = vec![Pause::BFirst, Pause::AFirst];
    for n in 0..3 {
        pauses.push(Pause::Before(n));
        pauses.push(Pause::After(n));
    }
    let fails = [None, Some(0), Some(1), Some(2)];
    let mut cases = Vec::new();
    for (verdicts, quorum) in pairs {
        for &pause in &pauses {
            for fa in fails {
                for fb in fails {
                    cases.push(Case {
                        verdicts,
                        quorum,
                        pause,
                        fail: [fa, fb],
                    });
                }
            }
        }
    }
    cases
}

async fn run_case(case: Case, store: Arc<dyn Store>) {
    let reliable = Arc::new(MemorySink::new());
    let paused = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let sink = Arc::new(ScriptedSink {
        reliable: reliable.clone(),
        fail: case.fail,
        pause: case.pause,
        appends: [AtomicUsize::new(0), AtomicUsize::new(0)],
        paused: paused.clone(),
        release: release.clone(),
    });
    let clock = Arc::new(ManualClock::new(epoch()));
    let g = gate(store.clone(), sink.clone(), clock.clone(), case.quorum);
    let action = ActionRequest::new("deploy.production", "svc://payments")
        .params(serde_json::json!({"case": format!("{case:?}")}));
    let Submission::Pending(id) = g.submit(&action).await.expect("submit") else {
        panic!("approval required")
    };

    let results = Arc::new(Mutex::new([None, None]));
    let decide = |actor: usize| {
        let g = g.clone();
        let results = results.clone();
        let review = review(actor, case.verdicts[actor]);
        ACTOR.scope(actor, async move {
            let out = g.decide(id, review).await;
            results.lock().await[actor] = Some(out.is_ok());
        })
    };
    match case.pause {
        Pause::BFirst => {
            decide(1).await;
            decide(0).await;
        }
        Pause::AFirst => {
            decide(0).await;
            decide(1).await;
        }
        Pause::Before(_) | Pause::After(_) => {
            let mut a = tokio::spawn(decide(0));
            // A pauses at its point, or ends first (it failed or made fewer appends).
            let a_done = tokio::select! {
                _ = paused.notified() => false,
                joined = &mut a => { joined.expect("decision A"); true }
            };
            decide(1).await;
            if !a_done {
                release.notify_one();
                a.await.expect("decision A");
            }
        }
    }
    let accepted = *results.lock().await;

    // The agent is not told of a denial that is not yet in the audit trail.
    let record = g.get(id).await.expect("get").expect("record");
    if record.state == RequestState::Denied && record.unaudited_decisions().denial {
        assert!(
            !reliable.names().contains(&"denied"),
            "{case:?}: flagged although recorded"
        );
        let told = tokio::time::timeout(Duration::from_millis(30), g.wait(id)).await;
        assert!(
            told.is_err(),
            "{case:?}: the agent heard of an unrecorded denial: {told:?}"
        );
    }

    // Recovery: a fresh gate (another process) sweeps past the recovery delay.
    clock.advance(TimeDelta::seconds(60));
    let fresh = gate(store.clone(), reliable.clone(), clock.clone(), case.quorum);
    fresh.sweep().await.expect("sweep");
    let record = fresh.get(id).await.expect("get").expect("record");
    let events = reliable.events();
    let names: Vec<&str> = events.iter().map(AuditEvent::name).collect();
    let ctx = format!(
        "{case:?}, accepted {accepted:?}: {:?} {names:?}",
        record.state
    );

    let denials: Vec<&Principal> = record
        .reviews
        .iter()
        .filter(|r| r.verdict == Verdict::Deny)
        .map(|r| &r.reviewer)
        .collect();
    for (actor, ok) in accepted.iter().enumerate() {
        if *ok == Some(true) {
            assert!(
                record
                    .reviews
                    .iter()
                    .any(|r| r.reviewer.id == reviewer(actor).id),
                "{ctx}: decision {actor} returned Ok but is not stored"
            );
        }
    }
    assert!(!record.audit_pending, "{ctx}: audit_pending left set");
    if !denials.is_empty() {
        // Deny wins, and the denial is in the trail with its reviewer.
        assert_eq!(record.state, RequestState::Denied, "{ctx}");
        let by = events.iter().find_map(|e| match &e.detail {
            EventDetail::Denied { by, .. } => Some(by.id.clone()),
            _ => None,
        });
        assert_eq!(
            by.as_deref(),
            Some(denials[0].id.as_str()),
            "{ctx}: no denied event"
        );
        // An approval it revoked keeps its `approved` event.
        let approvals_before_deny = record
            .reviews
            .iter()
            .take_while(|r| r.verdict == Verdict::Approve)
            .count() as u32;
        if approvals_before_deny >= case.quorum {
            assert!(
                names.contains(&"approved"),
                "{ctx}: the revoked approval is unrecorded"
            );
        }
        let err = fresh.wait(id).await.expect_err("denied");
        assert!(matches!(err, GuardError::Denied { .. }), "{ctx}: {err:?}");
    } else if record.reviews.len() as u32 >= case.quorum {
        assert_eq!(record.state, RequestState::Approved, "{ctx}");
        assert!(names.contains(&"approved"), "{ctx}: no approved event");
        fresh.wait(id).await.expect("grant");
        let events = reliable.names();
        let approved = events.iter().position(|n| *n == "approved");
        let issued = events.iter().position(|n| *n == "grant_issued");
        assert!(
            approved < issued,
            "{ctx}: grant before approval: {events:?}"
        );
    } else {
        assert_eq!(record.state, RequestState::Pending, "{ctx}");
    }
}

#[tokio::test]
async fn every_interleaving_of_two_decisions_with_audit_failures_on_the_memory_store() {
    let cases = cases();
    for case in &cases {
        run_case(*case, Arc::new(MemoryStore::new())).await;
    }
    assert!(cases.len() >= 400, "{} cases", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interleaving_of_two_decisions_with_audit_failures_on_an_sqlite_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect_with(SqlStoreOptions::new(&url))
            .await
            .expect("open SQLite"),
    );
    for case in cases() {
        run_case(case, store.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interleaving_of_two_decisions_with_audit_failures_on_postgres() {
    let Some(url) =
        pg::postgres_url("every_interleaving_of_two_decisions_with_audit_failures_on_postgres")
    else {
        return;
    };
    let schema = pg::unique_schema("interleave");
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect_with(
            SqlStoreOptions::new(&url)
                .schema(&schema)
                .max_connections(4),
        )
        .await
        .expect("connect to PostgreSQL"),
    );
    for case in cases() {
        run_case(case, store.clone()).await;
    }
    pg::drop_schema(&url, &schema).await;
}
