//! The gate's spans, transition events and metrics, read the way an operator's tools read
//! them: spans and events through a `tracing-subscriber` layer, metrics through a recorder
//! installed with the `metrics` facade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use approvals_core::observe::{
    AUDIT_FAILURES, DELIVERY_FAILURES, REQUESTS, RESOLUTIONS, TIME_TO_DECISION, TRANSITION_TARGET,
};
use approvals_core::{
    ActionRequest, Approver, ApproverError, AuditEvent, AuditSink, Decisions, Delivery,
    DispatchReason, Gate, GuardError, Initiator, MemorySink, Principal, RequestRecord, Review,
    RulePolicy,
};
use async_trait::async_trait;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "drops"
kind = "db.drop"
effect = "deny"
reason = "never"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["owners"] }
"#;

/// What the layer saw: every `approval` span's fields, and the transition events.
#[derive(Default, Clone)]
struct Seen {
    spans: Arc<Mutex<HashMap<u64, HashMap<String, String>>>>,
    transitions: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Seen {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "approval" {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.spans
                .lock()
                .expect("lock")
                .insert(id.into_u64(), fields);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(fields) = self.spans.lock().expect("lock").get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == TRANSITION_TARGET {
            let mut fields = HashMap::new();
            event.record(&mut Fields(&mut fields));
            self.transitions.lock().expect("lock").push(fields);
        }
    }
}

impl Seen {
    fn span_with(&self, field: &str, value: &str) -> HashMap<String, String> {
        self.spans
            .lock()
            .expect("lock")
            .values()
            .find(|f| f.get(field).map(String::as_str) == Some(value))
            .cloned()
            .unwrap_or_else(|| panic!("no approval span with {field} = {value}"))
    }
    fn transitions_of(&self, request: &str) -> Vec<(String, String)> {
        self.transitions
            .lock()
            .expect("lock")
            .iter()
            .filter(|t| t.get("request").map(String::as_str) == Some(request))
            .map(|t| (t["from"].clone(), t["to"].clone()))
            .collect()
    }
}

struct FailingChannel;

#[async_trait]
impl Approver for FailingChannel {
    fn name(&self) -> &str {
        "flaky-chat"
    }
    async fn dispatch(
        &self,
        _: &RequestRecord,
        _: DispatchReason,
        _: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        Err(ApproverError::new("flaky-chat", "503"))
    }
}

struct FailingSink;

#[async_trait]
impl AuditSink for FailingSink {
    async fn record(&self, _: &AuditEvent) -> Result<(), approvals_core::audit::AuditError> {
        Err(approvals_core::audit::AuditError::new("disk full"))
    }
}

fn gate() -> Gate {
    Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit(MemorySink::new())
        .initiator(Initiator::agent("bot").on_behalf_of(Principal::human("dana@example.com")))
        .build()
        .expect("gate")
}

/// Metric values, read once: a debugging snapshot drains what it reads.
struct Metrics(Vec<(metrics_util::CompositeKey, DebugValue)>);

impl Metrics {
    fn read(snapshotter: &Snapshotter) -> Self {
        Metrics(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    /// A counter's value, or a histogram's number of samples, summed over matching labels.
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        self.0
            .iter()
            .filter(|(key, _)| {
                key.key().name() == name
                    && label.is_none_or(|(k, v)| {
                        key.key().labels().any(|l| l.key() == k && l.value() == v)
                    })
            })
            .map(|(_, value)| match value {
                DebugValue::Counter(n) => *n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            })
            .sum()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn spans_events_and_metrics_follow_each_request_from_submit_to_resolution() {
    let seen = Seen::default();
    let _tracing = tracing::subscriber::set_default(Registry::default().with(seen.clone()));
    // The only test in this binary, so the process-wide recorder is this test's.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("first recorder");

    let g = gate();
    // Allowed: one span, state allowed, with the rule and digest.
    let read = ActionRequest::new("db.read", "db://analytics");
    g.guard(&read).await.expect("allowed");
    let span = seen.span_with("kind", "db.read");
    assert_eq!(span.get("state").map(String::as_str), Some("allowed"));
    assert_eq!(span.get("rule").map(String::as_str), Some("reads"));
    assert_eq!(
        span.get("resource").map(String::as_str),
        Some("db://analytics")
    );
    assert!(span.get("digest").is_some_and(|d| d.starts_with("sha256:")));

    // Denied by policy.
    let err = g
        .guard(&ActionRequest::new("db.drop", "db://prod"))
        .await
        .expect_err("denied");
    assert!(matches!(err, GuardError::PolicyDenied { .. }));
    assert_eq!(
        seen.span_with("kind", "db.drop")
            .get("state")
            .map(String::as_str),
        Some("denied")
    );

    // Pending, approved, executed: one span from submission to resolution, and one event per
    // state change.
    let export = ActionRequest::new("data.export", "db://prod/customers");
    let waiter = {
        let g = g.clone();
        let export = export.clone();
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        tokio::spawn(async move {
            let _guard = tracing::dispatcher::set_default(&dispatch);
            g.run(&export, || async { Ok::<_, GuardError>(()) }).await
        })
    };
    let id = loop {
        if let Some(r) = g.pending().await.expect("pending").first() {
            break r.id;
        }
        tokio::task::yield_now().await;
    };
    g.decide(
        id,
        Review::approve(Principal::human("sam@example.com").with_groups(["owners"])),
    )
    .await
    .expect("approve");
    waiter.await.expect("task").expect("ran");
    let span = seen.span_with("request", &id.to_string());
    assert_eq!(span.get("kind").map(String::as_str), Some("data.export"));
    assert_eq!(span.get("rule").map(String::as_str), Some("exports"));
    assert_eq!(span.get("state").map(String::as_str), Some("executed"));
    assert_eq!(
        seen.transitions_of(&id.to_string()),
        [
            ("pending".into(), "approved".into()),
            ("approved".into(), "executing".into()),
            ("executing".into(), "executed".into()),
        ]
    );

    // A refused action is counted as refused.
    let claim = ActionRequest::new("db.read", "x").initiator(Initiator::agent("other"));
    g.guard(&claim).await.expect_err("initiator mismatch");
    let m = Metrics::read(&snapshotter);

    assert_eq!(m.get(REQUESTS, Some(("outcome", "allowed"))), 1);
    assert_eq!(m.get(REQUESTS, Some(("outcome", "denied_by_policy"))), 1);
    assert_eq!(m.get(REQUESTS, Some(("outcome", "pending"))), 1);
    assert_eq!(m.get(REQUESTS, Some(("outcome", "refused"))), 1);
    assert_eq!(m.get(RESOLUTIONS, Some(("state", "approved"))), 1);
    assert_eq!(m.get(RESOLUTIONS, Some(("state", "executed"))), 1);
    assert_eq!(m.get(TIME_TO_DECISION, Some(("verdict", "approved"))), 1);
    assert_eq!(m.get(AUDIT_FAILURES, None), 0);
    assert_eq!(m.get(DELIVERY_FAILURES, None), 0);

    // Failures are counted: a channel that cannot deliver, a sink that cannot record.
    let flaky = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit(MemorySink::new())
        .approver(FailingChannel)
        .initiator(Initiator::agent("bot"))
        .build()
        .expect("gate");
    assert!(matches!(
        flaky.submit(&export).await,
        Err(GuardError::DeliveryFailed { .. })
    ));
    let m = Metrics::read(&snapshotter);
    assert_eq!(m.get(DELIVERY_FAILURES, Some(("channel", "flaky-chat"))), 1);
    assert_eq!(m.get(RESOLUTIONS, Some(("state", "cancelled"))), 1);
    let broken = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit(FailingSink)
        .initiator(Initiator::agent("bot"))
        .build()
        .expect("gate");
    assert!(matches!(
        broken.submit(&read).await,
        Err(GuardError::Unavailable { .. })
    ));
    assert!(Metrics::read(&snapshotter).get(AUDIT_FAILURES, None) >= 1);
}
