//! Several replicas deciding at once: gates over one SQLite file (each with its own
//! `SqlStore` pool) and over one PostgreSQL schema (a real server).
//!
//! Per seed, many requests needing 2 or 3 approvals get many concurrent reviews through
//! random replicas: authorized reviewers approving and denying, the same person under a
//! second spelling, an unauthorized person, the human the agent acts for, and an agent. Each
//! review starts after a seeded random delay and a seeded number of yields, so every seed is
//! another interleaving. A waiter per request (on a random replica) runs the action once
//! granted. Afterwards, for every request:
//!
//! - it ended in exactly one terminal outcome (executed, denied, or cancelled by the cleanup),
//!   and its body ran once if executed, never otherwise;
//! - every replica reads the same record;
//! - an authorized deny ⇒ denied, unless the action was already executing when it arrived;
//! - executed ⇒ at least quorum distinct authorized humans approved; refused reviewers are
//!   never stored, and one person never counts twice;
//! - the shared audit table agrees with the store: one `reviewed` event per stored review,
//!   one `review_rejected` per refused review, `approved`, `denied`, `executed` and
//!   `cancelled` exactly when the record says so.
//!
//! And a waiter on one replica returns when another replica decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use approvals_core::{
    ActionRequest, AuditEvent, EventDetail, Gate, GuardError, Initiator, Principal, PrincipalKind,
    RequestId, RequestRecord, RequestState, Review, ReviewError, RulePolicy, Submission, Verdict,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::pg;

const GROUP: &str = "ops";
/// Bound on any one step of the scenario; far above what a loaded machine needs.
const STEP: Duration = Duration::from_secs(60);

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "pairs"
kind = "deploy.pair"
effect = "require_approval"
approvers = { groups = ["ops"] }
quorum = 2
timeout = "1h"

[[rules]]
name = "trios"
kind = "deploy.trio"
effect = "require_approval"
approvers = { groups = ["ops"] }
quorum = 3
timeout = "1h"
"#;

fn initiator() -> Initiator {
    Initiator::agent("deploy-agent").on_behalf_of(Principal::human("dana@example.com"))
}

/// The reviewers: four authorized people, one of them also under a second spelling, and
/// three the gate must refuse.
fn reviewers() -> Vec<Principal> {
    vec![
        Principal::human("alice@example.com").with_groups([GROUP]),
        Principal::human("bob@example.com").with_groups([GROUP]),
        Principal::human("carol@example.com").with_groups([GROUP]),
        Principal::human("erin@example.com").with_groups([GROUP]),
        Principal::human("Alice@Example.COM").with_groups([GROUP]),
        Principal::human("mallory@example.com").with_groups(["sales"]),
        Principal::human("DANA@example.com").with_groups([GROUP]),
        Principal::agent("helper-bot").with_groups([GROUP]),
    ]
}

fn authorized(p: &Principal) -> bool {
    p.kind == PrincipalKind::Human && p.in_group(GROUP) && !initiator().is_self(p)
}

/// SplitMix64: the interleavings depend only on the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One review as launched, and what `decide()` answered.
struct Decision {
    replica: usize,
    reviewer: Principal,
    verdict: Verdict,
    result: Result<approvals_core::ReviewOutcome, ReviewError>,
}

/// What one request went through.
struct Tracked {
    id: RequestId,
    quorum: usize,
    runs: Arc<AtomicU32>,
    decisions: Vec<Decision>,
    waited: Option<Result<(), String>>,
}

/// The replicas: one gate per store, all on the same database.
struct Replicas {
    stores: Vec<SqlStore>,
    gates: Vec<Gate>,
}

impl Replicas {
    fn new(stores: Vec<SqlStore>, poll: Duration) -> Self {
        let gates = stores
            .iter()
            .map(|store| {
                Gate::builder()
                    .policy(RulePolicy::from_toml(POLICY).expect("the test policy parses"))
                    .store(store.clone())
                    .audit(store.audit_sink())
                    .initiator(initiator())
                    .store_timeout(Duration::from_secs(30))
                    .poll_interval(poll)
                    .build()
                    .expect("gate")
            })
            .collect();
        Replicas { stores, gates }
    }

    async fn close(&self) {
        for store in &self.stores {
            store.close().await;
        }
    }
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// How the requests of a run ended, so a reader can see every outcome was exercised.
#[derive(Debug, Default)]
struct Outcomes {
    executed: usize,
    denied: usize,
    cancelled: usize,
    reviews_accepted: usize,
    reviews_refused: usize,
}

impl Outcomes {
    /// Prints the tally and fails if the interleavings never executed or never denied.
    fn assert_varied(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(
            self.executed > 0 && self.denied > 0,
            "{what}: the scenarios should both execute and deny some requests: {self:?}"
        );
    }
}

/// Runs one seeded interleaving of `requests` requests and checks every promise.
async fn scenario(replicas: &Replicas, seed: u64, requests: usize, outcomes: &mut Outcomes) {
    let mut rng = Rng(seed);
    let gates = &replicas.gates;
    let everyone = reviewers();
    let mut tracked = Vec::new();
    for n in 0..requests {
        let quorum = if rng.chance(50) { 2 } else { 3 };
        let kind = if quorum == 2 {
            "deploy.pair"
        } else {
            "deploy.trio"
        };
        let action = ActionRequest::new(kind, format!("k8s://prod/service-{seed}-{n}"))
            .params(serde_json::json!({ "image": format!("v{n}") }));
        let gate = &gates[rng.below(gates.len() as u64) as usize];
        let Submission::Pending(id) = step("submit", gate.submit(&action)).await.expect("submit")
        else {
            panic!("the policy requires approval for {kind}");
        };
        tracked.push((
            action,
            Tracked {
                id,
                quorum,
                runs: Arc::new(AtomicU32::new(0)),
                decisions: Vec::new(),
                waited: None,
            },
        ));
    }

    // A waiter per request on a random replica: wait, then run the action once granted.
    let mut waiters = Vec::new();
    for (action, t) in &tracked {
        let gate = gates[rng.below(gates.len() as u64) as usize].clone();
        let (action, id, runs) = (action.clone(), t.id, t.runs.clone());
        waiters.push(tokio::spawn(async move {
            let grant = gate.wait(id).await.map_err(|e| e.to_string())?;
            gate.execute(grant, &action, || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await
            .map_err(|e| e.to_string())
        }));
    }

    // Reviews from everyone at once, through random replicas, in a seeded interleaving.
    let mut launched = Vec::new();
    for (index, (_, t)) in tracked.iter().enumerate() {
        let count = 4 + rng.below(5);
        for _ in 0..count {
            let reviewer = everyone[rng.below(everyone.len() as u64) as usize].clone();
            let verdict = if rng.chance(12) {
                Verdict::Deny
            } else {
                Verdict::Approve
            };
            let replica = rng.below(gates.len() as u64) as usize;
            let delay = Duration::from_millis(rng.below(25));
            let yields = rng.below(4);
            let gate = gates[replica].clone();
            let id = t.id;
            let who = reviewer.clone();
            let task = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                let review = match verdict {
                    Verdict::Approve => Review::approve(who),
                    Verdict::Deny => Review::deny(who),
                };
                gate.decide(id, review.via("console")).await
            });
            launched.push((index, replica, reviewer, verdict, task));
        }
    }
    for (index, replica, reviewer, verdict, task) in launched {
        let result = step("a review", task).await.expect("review task");
        tracked[index].1.decisions.push(Decision {
            replica,
            reviewer,
            verdict,
            result,
        });
    }

    // Whatever is still pending is withdrawn, so every waiter ends.
    for (_, t) in &tracked {
        let gate = &gates[rng.below(gates.len() as u64) as usize];
        let _ = step(
            "cancel",
            gate.cancel(t.id, None, Some("test cleanup".into())),
        )
        .await;
    }
    for ((_, t), waiter) in tracked.iter_mut().zip(waiters) {
        t.waited = Some(step("a waiter", waiter).await.expect("waiter task"));
    }

    for (_, t) in &tracked {
        match check(replicas, seed, t).await {
            RequestState::Executed => outcomes.executed += 1,
            RequestState::Denied => outcomes.denied += 1,
            _ => outcomes.cancelled += 1,
        }
        let accepted = t.decisions.iter().filter(|d| d.result.is_ok()).count();
        outcomes.reviews_accepted += accepted;
        outcomes.reviews_refused += t.decisions.len() - accepted;
    }
}

/// Checks one request after the run; returns its final state.
async fn check(replicas: &Replicas, seed: u64, t: &Tracked) -> RequestState {
    let id = t.id;
    let ctx = format!("seed {seed}, request {id} (quorum {})", t.quorum);
    let mut records: Vec<RequestRecord> = Vec::new();
    for gate in &replicas.gates {
        records.push(
            step("get", gate.get(id))
                .await
                .expect("read")
                .unwrap_or_else(|| panic!("{ctx}: missing on a replica")),
        );
    }
    let record = records[0].clone();
    for (n, other) in records.iter().enumerate().skip(1) {
        assert_eq!(
            &record, other,
            "{ctx}: replica {n} disagrees with replica 0"
        );
    }

    let runs = t.runs.load(Ordering::SeqCst);
    let state = record.state;
    assert!(
        matches!(
            state,
            RequestState::Executed | RequestState::Denied | RequestState::Cancelled
        ),
        "{ctx}: ended {state}, waiter said {:?}",
        t.waited
    );
    assert_eq!(
        runs,
        u32::from(state == RequestState::Executed),
        "{ctx}: body ran {runs} times and the request is {state}"
    );

    // Refused reviewers are never stored; one person counts once.
    for review in &record.reviews {
        assert!(
            authorized(&review.reviewer),
            "{ctx}: stored a review by {}",
            review.reviewer.id
        );
    }
    let approvals: Vec<&Principal> = record
        .reviews
        .iter()
        .filter(|r| r.verdict == Verdict::Approve)
        .map(|r| &r.reviewer)
        .collect();
    for (i, a) in approvals.iter().enumerate() {
        assert!(
            !approvals[..i].iter().any(|b| b.same_identity(a)),
            "{ctx}: {} approved twice: {:?}",
            a.id,
            record.reviews
        );
    }
    let accepted: Vec<&Decision> = t.decisions.iter().filter(|d| d.result.is_ok()).collect();
    for d in &accepted {
        assert!(
            authorized(&d.reviewer),
            "{ctx}: accepted a review by {}",
            d.reviewer.id
        );
    }
    assert_eq!(
        accepted.len(),
        record.reviews.len(),
        "{ctx}: {} reviews accepted, {} stored",
        accepted.len(),
        record.reviews.len()
    );
    if state == RequestState::Executed {
        assert!(
            record.approvers().len() >= t.quorum,
            "{ctx}: executed with approvals from {:?}",
            record.approvers()
        );
    }

    // Deny wins, unless the action was already running.
    for d in t
        .decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Deny && authorized(&d.reviewer))
    {
        match &d.result {
            Ok(_) => assert_eq!(state, RequestState::Denied, "{ctx}: a deny was accepted"),
            Err(ReviewError::AlreadyDecided { state: then, .. }) => assert!(
                matches!(
                    then,
                    RequestState::Denied | RequestState::Executing | RequestState::Executed
                ),
                "{ctx}: {} denied on replica {} but was told the request was {then}",
                d.reviewer.id,
                d.replica
            ),
            Err(e) => panic!("{ctx}: an authorized deny failed: {e}"),
        }
    }
    if state == RequestState::Executed {
        assert!(
            t.decisions
                .iter()
                .filter(|d| d.verdict == Verdict::Deny && authorized(&d.reviewer))
                .all(|d| d.result.is_err()),
            "{ctx}: executed although a deny was accepted"
        );
    }
    for d in t.decisions.iter().filter(|d| !authorized(&d.reviewer)) {
        assert!(
            matches!(
                d.result,
                Err(ReviewError::NotAuthorized { .. }
                    | ReviewError::SelfApproval { .. }
                    | ReviewError::NotHuman { .. }
                    | ReviewError::AlreadyDecided { .. })
            ),
            "{ctx}: {} got {:?}",
            d.reviewer.id,
            d.result
        );
    }

    // The shared audit table agrees with the store.
    let events: Vec<AuditEvent> = step("audit", replicas.stores[0].audit_sink().events_for(id))
        .await
        .expect("audit events");
    let count = |name: &str| events.iter().filter(|e| e.name() == name).count();
    let mut audited: Vec<(String, Verdict)> = events
        .iter()
        .filter_map(|e| match &e.detail {
            EventDetail::Reviewed {
                reviewer, verdict, ..
            } => Some((reviewer.id.clone(), *verdict)),
            _ => None,
        })
        .collect();
    let mut stored: Vec<(String, Verdict)> = record
        .reviews
        .iter()
        .map(|r| (r.reviewer.id.clone(), r.verdict))
        .collect();
    audited.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
    stored.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
    assert_eq!(
        audited, stored,
        "{ctx}: reviewed events differ from stored reviews"
    );
    let refused = t
        .decisions
        .iter()
        .filter(|d| {
            d.result
                .as_ref()
                .err()
                .and_then(ReviewError::cause)
                .is_some()
        })
        .count();
    assert_eq!(
        count("review_rejected"),
        refused,
        "{ctx}: review_rejected events"
    );
    let reached_quorum = record.approvers().len() >= t.quorum;
    assert_eq!(
        count("approved"),
        usize::from(reached_quorum),
        "{ctx}: approved events"
    );
    assert_eq!(
        count("denied"),
        usize::from(state == RequestState::Denied),
        "{ctx}: denied events"
    );
    assert_eq!(
        count("executed"),
        usize::from(state == RequestState::Executed),
        "{ctx}: executed events"
    );
    assert_eq!(
        count("cancelled"),
        usize::from(state == RequestState::Cancelled),
        "{ctx}: cancelled events"
    );
    if state == RequestState::Executed {
        let approved = events.iter().position(|e| e.name() == "approved");
        let consumed = events.iter().position(|e| e.name() == "grant_consumed");
        assert!(
            approved.is_some() && consumed.is_some() && approved < consumed,
            "{ctx}: approved must precede grant_consumed: {:?}",
            events.iter().map(AuditEvent::name).collect::<Vec<_>>()
        );
    }
    state
}

async fn sqlite_replicas(dir: &tempfile::TempDir, n: usize, poll: Duration) -> Replicas {
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let mut stores = Vec::new();
    for _ in 0..n {
        let options = SqlStoreOptions::new(&url)
            .busy_timeout(Duration::from_secs(30))
            .acquire_timeout(Duration::from_secs(30));
        stores.push(
            SqlStore::connect_with(options)
                .await
                .expect("open the SQLite file"),
        );
    }
    Replicas::new(stores, poll)
}

async fn pg_replicas(url: &str, schema: &str, n: usize, poll: Duration) -> Replicas {
    let mut stores = Vec::new();
    for _ in 0..n {
        let options = SqlStoreOptions::new(url)
            .schema(schema)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30));
        stores.push(
            SqlStore::connect_with(options)
                .await
                .expect("connect to PostgreSQL"),
        );
    }
    Replicas::new(stores, poll)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replicas_agree_on_every_interleaving() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // Replicas on one SQLite file learn of each other's changes by polling.
    let replicas = sqlite_replicas(&dir, 3, Duration::from_millis(50)).await;
    let mut outcomes = Outcomes::default();
    for seed in [1, 2, 3] {
        scenario(&replicas, seed, 8, &mut outcomes).await;
    }
    replicas.close().await;
    outcomes.assert_varied("SQLite replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_agree_on_every_interleaving() {
    let Some(url) = pg::postgres_url("postgres_replicas_agree_on_every_interleaving") else {
        return;
    };
    let schema = pg::unique_schema("replicas");
    let replicas = pg_replicas(&url, &schema, 3, Duration::from_millis(200)).await;
    let mut outcomes = Outcomes::default();
    for seed in [11, 12, 13] {
        scenario(&replicas, seed, 8, &mut outcomes).await;
    }
    replicas.close().await;
    pg::drop_schema(&url, &schema).await;
    outcomes.assert_varied("PostgreSQL replicas");
}

/// A waiter on replica A returns when replica B decides. On PostgreSQL, A polls only once a
/// minute, so only the cross-replica notification can wake it in time.
async fn waiter_wakes_across_replicas(replicas: &Replicas) {
    let (a, b) = (&replicas.gates[0], &replicas.gates[1]);
    for verdict in [Verdict::Approve, Verdict::Deny] {
        let action = ActionRequest::new("deploy.pair", "k8s://prod/wake")
            .params(serde_json::json!({ "verdict": verdict.to_string() }));
        let Submission::Pending(id) = a.submit(&action).await.expect("submit") else {
            panic!("approval required");
        };
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.wait(id).await })
        };
        // Let the waiter start waiting before anyone decides.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alice = Principal::human("alice@example.com").with_groups([GROUP]);
        let bob = Principal::human("bob@example.com").with_groups([GROUP]);
        match verdict {
            Verdict::Approve => {
                b.decide(id, Review::approve(alice))
                    .await
                    .expect("alice approves");
                b.decide(id, Review::approve(bob))
                    .await
                    .expect("bob approves");
            }
            Verdict::Deny => {
                b.decide(id, Review::deny(alice))
                    .await
                    .expect("alice denies");
            }
        }
        let woke = tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("the waiter on replica A did not wake after replica B decided")
            .expect("waiter task");
        match verdict {
            Verdict::Approve => {
                let grant = woke.expect("approved on replica B");
                assert_eq!(grant.request_id(), id);
                assert_eq!(grant.approvers().len(), 2);
            }
            Verdict::Deny => assert!(
                matches!(woke, Err(GuardError::Denied { id: denied, .. }) if denied == id),
                "{woke:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_one_sqlite_replica_wakes_when_another_decides() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let replicas = sqlite_replicas(&dir, 2, Duration::from_millis(100)).await;
    waiter_wakes_across_replicas(&replicas).await;
    replicas.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_one_postgres_replica_wakes_when_another_decides() {
    let Some(url) = pg::postgres_url("a_waiter_on_one_postgres_replica_wakes_when_another_decides")
    else {
        return;
    };
    let schema = pg::unique_schema("wake");
    let replicas = pg_replicas(&url, &schema, 2, Duration::from_secs(60)).await;
    waiter_wakes_across_replicas(&replicas).await;
    replicas.close().await;
    pg::drop_schema(&url, &schema).await;
}
