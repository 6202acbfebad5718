//! Reminders (`remind_at`): reviewers of a request still pending are nudged once at each point
//! of its timeout, by whichever replica sweeps first; a late sweep sends one reminder for the
//! points it passed; a decided request is never reminded; a reminder nobody could deliver
//! cancels nothing.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use approvals_core::{
    ActionRequest, Approver, ApproverError, Decisions, Delivery, DispatchReason, EventDetail, Gate,
    Initiator, ManualClock, MemorySink, MemoryStore, Principal, RequestId, RequestRecord,
    RequestState, Requirement, Review, RulePolicy, StaticPolicy, Store, Submission,
};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "30m"
remind_at = ["90%", "50%"]
"#;

fn t0() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().expect("time")
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 5000}))
}

/// Moves the manual clock forward to `at`.
fn move_to(clock: &ManualClock, at: DateTime<Utc>) {
    use approvals_core::Clock;
    clock.advance(at - clock.now());
}

/// Records each delivery's reason and the record's reminder count; can be made to fail.
#[derive(Default)]
struct Channel {
    seen: Mutex<Vec<(DispatchReason, u32)>>,
    fail: AtomicBool,
}

impl Channel {
    fn reminders(&self) -> Vec<u32> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(reason, _)| *reason == DispatchReason::Reminder)
            .map(|(_, n)| *n)
            .collect()
    }
}

#[async_trait]
impl Approver for Channel {
    fn name(&self) -> &str {
        "channel"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ApproverError::new("channel", "chat API returned 500"));
        }
        self.seen
            .lock()
            .expect("lock")
            .push((reason, request.reminded));
        Ok(Some(Delivery {
            channel: "channel".into(),
            reference: json!({ "message": request.id.to_string(), "reason": format!("{reason:?}") }),
        }))
    }
}

struct Fixture {
    gate: Gate,
    store: Arc<MemoryStore>,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    channel: Arc<Channel>,
}

fn gate_on(
    store: Arc<MemoryStore>,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    channel: Arc<Channel>,
) -> Gate {
    Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store_shared(store)
        .audit_shared(audit)
        .clock(clock)
        .approver_shared(channel)
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate")
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let audit = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(t0()));
        let channel = Arc::new(Channel::default());
        let gate = gate_on(store.clone(), audit.clone(), clock.clone(), channel.clone());
        Fixture {
            gate,
            store,
            audit,
            clock,
            channel,
        }
    }

    async fn pending(&self) -> RequestId {
        match self.gate.submit(&export()).await.expect("submit") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("the policy requires approval"),
        }
    }

    /// Sweeps at `minutes` after t0 and returns how many requests were reminded.
    async fn sweep_at(&self, minutes: i64, seconds: i64) -> usize {
        move_to(
            &self.clock,
            t0() + TimeDelta::minutes(minutes) + TimeDelta::seconds(seconds),
        );
        self.gate.sweep().await.expect("sweep").reminded
    }

    fn reminded_events(&self) -> Vec<(u32, u32)> {
        self.audit
            .events()
            .iter()
            .filter_map(|e| match &e.detail {
                EventDetail::Reminded { reminder, of, .. } => Some((*reminder, *of)),
                _ => None,
            })
            .collect()
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.store.get(id).await.expect("get").expect("record")
    }
}

/// At 50% and 90% of a 30-minute timeout, once each, audited, and never before its time.
#[tokio::test]
async fn reviewers_are_reminded_once_at_each_point() {
    let f = Fixture::new();
    let id = f.pending().await;
    assert_eq!(f.sweep_at(14, 59).await, 0, "not before half the timeout");
    assert_eq!(f.sweep_at(15, 0).await, 1);
    assert_eq!(f.sweep_at(15, 1).await, 0, "once");
    assert_eq!(f.sweep_at(26, 59).await, 0);
    assert_eq!(f.sweep_at(27, 0).await, 1);
    assert_eq!(f.sweep_at(29, 59).await, 0, "two points, two reminders");
    assert_eq!(f.channel.reminders(), [1, 2]);
    assert_eq!(f.reminded_events(), [(1, 2), (2, 2)]);
    let record = f.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.reminded, 2);
    assert_eq!(
        record.deliveries.len(),
        1,
        "a reminder is not recorded as a message to update"
    );
    assert_eq!(
        approvals_core::lifecycle::unanswered_reminders(&record),
        2,
        "what the waiting requester is told: nobody has reviewed it"
    );
    move_to(&f.clock, t0() + TimeDelta::minutes(30));
    assert_eq!(f.gate.sweep().await.expect("sweep").expired, 1);
    let expired = f.record(id).await;
    assert_eq!(approvals_core::lifecycle::unanswered_reminders(&expired), 0);
}

/// A sweep that comes after both points sends one reminder, counted as the second.
#[tokio::test]
async fn a_late_sweep_sends_one_reminder_for_every_point_it_passed() {
    let f = Fixture::new();
    f.pending().await;
    assert_eq!(f.sweep_at(28, 0).await, 1);
    assert_eq!(f.sweep_at(29, 0).await, 0);
    assert_eq!(f.channel.reminders(), [2]);
    assert_eq!(f.reminded_events(), [(2, 2)]);
}

/// Approved, denied or cancelled before a point: nobody is reminded.
#[tokio::test]
async fn a_decided_request_is_never_reminded() {
    let f = Fixture::new();
    let approved = f.pending().await;
    let denied = f.pending().await;
    let cancelled = f.pending().await;
    let reviewer = Principal::human("sam@example.com").with_groups(["data-owners"]);
    f.gate
        .decide(approved, Review::approve(reviewer.clone()))
        .await
        .expect("approve");
    f.gate
        .decide(denied, Review::deny(reviewer))
        .await
        .expect("deny");
    f.gate.cancel(cancelled, None, None).await.expect("cancel");
    assert_eq!(f.sweep_at(16, 0).await, 0);
    assert_eq!(f.sweep_at(28, 0).await, 0);
    assert!(f.channel.reminders().is_empty());
    assert!(f.reminded_events().is_empty());
}

/// Replicas sweeping at once: one reminder per point, whoever wins the compare-and-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_sweeping_at_once_remind_once() {
    let f = Fixture::new();
    f.pending().await;
    let replicas: Vec<Gate> = (0..8)
        .map(|_| {
            gate_on(
                f.store.clone(),
                f.audit.clone(),
                f.clock.clone(),
                f.channel.clone(),
            )
        })
        .collect();
    move_to(&f.clock, t0() + TimeDelta::minutes(16));
    let sweeps = replicas.iter().map(|gate| {
        let gate = gate.clone();
        tokio::spawn(async move { gate.sweep().await.expect("sweep").reminded })
    });
    let mut reminded = 0;
    for sweep in sweeps.collect::<Vec<_>>() {
        reminded += sweep.await.expect("task");
    }
    assert_eq!(reminded, 1);
    assert_eq!(f.channel.reminders(), [1]);
    assert_eq!(f.reminded_events(), [(1, 2)]);
}

/// A reminder no channel could deliver is audited as failed and cancels nothing: the request
/// stays open for its reviewers.
#[tokio::test]
async fn an_undelivered_reminder_cancels_nothing() {
    let f = Fixture::new();
    let id = f.pending().await;
    f.channel.fail.store(true, Ordering::SeqCst);
    assert_eq!(f.sweep_at(15, 0).await, 1);
    assert_eq!(f.record(id).await.state, RequestState::Pending);
    let names = f.audit.names();
    assert!(names.contains(&"reminded"), "{names:?}");
    assert!(names.contains(&"dispatch_failed"), "{names:?}");
    assert!(!names.contains(&"cancelled"), "{names:?}");
}

/// The policy file: `remind_at` only on approval rules, shares from 1% to 99%, none twice, at
/// most ten; loaded sorted.
#[test]
fn the_policy_file_checks_remind_at() {
    let rule = |extra: &str| {
        format!(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\nkind = \"data.export\"\n{extra}\n"
        )
    };
    let approval = "effect = \"require_approval\"\napprovers = { groups = [\"g\"] }\n";
    for (extra, expected) in [
        (
            "effect = \"allow\"\nremind_at = [\"50%\"]".to_owned(),
            "only apply to effect = \"require_approval\"",
        ),
        (format!("{approval}remind_at = [\"0%\"]"), "remind_at"),
        (format!("{approval}remind_at = [\"100%\"]"), "remind_at"),
        (format!("{approval}remind_at = [\"10m\"]"), "remind_at"),
        (format!("{approval}remind_at = [\"50%\", \"50%\"]"), "twice"),
        (
            format!(
                "{approval}remind_at = [{}]",
                (1..=11)
                    .map(|n| format!("\"{n}%\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "at most 10",
        ),
    ] {
        let e = RulePolicy::from_toml(&rule(&extra)).expect_err(&extra);
        assert!(e.to_string().contains(expected), "{extra}: {e}");
    }
    let policy = RulePolicy::from_toml(POLICY).expect("valid");
    let decision = approvals_core::Policy::evaluate(
        &policy,
        &export().initiator(Initiator::agent("billing-agent")),
    )
    .expect("decision");
    let approvals_core::Decision::RequireApproval { requirement, .. } = decision else {
        panic!("requires approval");
    };
    assert_eq!(requirement.reminders, [50, 90]);
}

/// Reminder points set on a requirement by hand, out of order and repeated, count as the
/// policy file would have them: at 50% and then at 90%, once each.
#[tokio::test]
async fn points_out_of_order_remind_in_time_order() {
    let store = Arc::new(MemoryStore::new());
    let audit = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let channel = Arc::new(Channel::default());
    let mut requirement = Requirement::groups(["data-owners"]).timeout(Duration::from_secs(1800));
    requirement.reminders = vec![90, 50, 90, 0, 100];
    let gate = Gate::builder()
        .policy(StaticPolicy::require(requirement))
        .store_shared(store)
        .audit_shared(audit.clone())
        .clock(clock.clone())
        .approver_shared(channel.clone())
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    gate.submit(&export()).await.expect("submit");
    let mut reminded = Vec::new();
    for minutes in [15, 27, 29] {
        move_to(&clock, t0() + TimeDelta::minutes(minutes));
        reminded.push(gate.sweep().await.expect("sweep").reminded);
    }
    assert_eq!(reminded, [1, 1, 0]);
    assert_eq!(channel.reminders(), [1, 2]);
}

/// A waiting agent drives reminders as it drives escalation, without any sweeper.
#[tokio::test]
async fn a_waiter_sends_the_reminder_when_no_sweeper_runs() {
    let f = Fixture::new();
    let id = f.pending().await;
    let waiter = {
        let gate = f.gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };
    move_to(&f.clock, t0() + TimeDelta::minutes(16));
    for _ in 0..500 {
        if f.record(id).await.reminded == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(f.record(id).await.reminded, 1);
    assert_eq!(f.channel.reminders(), [1]);
    f.gate
        .decide(
            id,
            Review::approve(Principal::human("sam@example.com").with_groups(["data-owners"])),
        )
        .await
        .expect("approve");
    assert!(waiter.await.expect("task").is_ok());
}

/// The terminal's reminder line counts the approvals already given against the quorum.
#[tokio::test]
async fn the_terminal_reminder_counts_approvals_so_far() {
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Screen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let screen = Screen::default();
    let terminal = approvals_core::ConsoleApprover::with_io(
        Principal::human("kim@example.com").with_groups(["data-owners"]),
        tokio::io::BufReader::new(tokio::io::empty()),
        screen.clone(),
    );
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["data-owners"])
                .quorum(2)
                .timeout(Duration::from_secs(1800))
                .reminders([50]),
        ))
        .store_shared(store)
        .audit(MemorySink::new())
        .clock(clock.clone())
        .approver(terminal)
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let Submission::Pending(id) = gate.submit(&export()).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    gate.decide(
        id,
        Review::approve(Principal::human("sam@example.com").with_groups(["data-owners"])),
    )
    .await
    .expect("one approval of two");
    move_to(&clock, t0() + TimeDelta::minutes(15));
    assert_eq!(gate.sweep().await.expect("sweep").reminded, 1);
    let text = String::from_utf8_lossy(&screen.0.lock().expect("lock")).into_owned();
    assert!(
        text.contains(&format!(
            "(reminder 1 of 1: request {id} has 1 of 2 approvals;"
        )),
        "{text}"
    );
}
