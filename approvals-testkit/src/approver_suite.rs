//! The approver conformance suite: what every review channel (Slack, Teams, the webhook, the
//! HTTP console, a new one) must do, checked through the channel's own wire format.
//!
//! A channel plugs in with a [`ChannelHarness`]: how to build a gate with the channel's
//! approver and inbound path for a [`Setup`], how to decide as one of the suite's [`Person`]s
//! through that inbound path (a signed payload, a token, a session and form token), how to
//! send a decision that fails the channel's authentication, and what the reviewers see. The
//! rules themselves are the gate's ([`approvals_core::lifecycle`]); the suite checks that the
//! channel routes every decision to them and shows their outcome.
//!
//! Call [`run_all`] from the channel crate's tests, or single behaviours. Every function
//! panics with a message naming the broken behaviour.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Approver, AuditEvent, DispatchReason, EventDetail, Gate, Initiator, ManualClock,
    MemorySink, Principal, RejectCause, RequestId, RequestRecord, RequestState, Requirement,
    Submission, Verdict,
};
use chrono::TimeDelta;
use serde_json::json;

/// The people the suite decides as. A harness maps each to an identity in its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Person {
    /// Allowed by the requirement (group `security`).
    Reviewer,
    /// The human the agent acts for; also in `security`, so only the self-approval rule
    /// refuses them.
    Requester,
    /// Known to the channel, in no allowed group.
    Outsider,
}

impl Person {
    /// Every person, for harnesses that map them all.
    pub const ALL: [Person; 3] = [Person::Reviewer, Person::Requester, Person::Outsider];

    /// The principal this person resolves to.
    pub fn principal(self) -> Principal {
        match self {
            Person::Reviewer => Principal::human("sam@example.com")
                .with_name("Sam Reviewer")
                .with_groups(["security"]),
            Person::Requester => Principal::human("dana@example.com")
                .with_name("Dana Requester")
                .with_groups(["security"]),
            Person::Outsider => Principal::human("eve@example.com")
                .with_name("Eve Outsider")
                .with_groups(["marketing"]),
        }
    }
}

/// What a harness builds its gate from: the requirement every request gets (through a
/// [`StaticPolicy`](approvals_core::StaticPolicy)), the audit sink and clock the suite reads
/// and moves, and the initiator (an agent acting for [`Person::Requester`]).
#[derive(Clone)]
pub struct Setup {
    /// The requirement for every request.
    pub requirement: Requirement,
    /// The audit sink the gate must write to.
    pub audit: Arc<MemorySink>,
    /// The clock the gate must use.
    pub clock: Arc<ManualClock>,
    /// The gate's initiator.
    pub initiator: Initiator,
}

impl Setup {
    /// The default setup: one approval from group `security`, no reason required.
    pub fn new() -> Self {
        Self::with(Requirement::groups(["security"]))
    }

    /// A setup with `requirement`.
    pub fn with(requirement: Requirement) -> Self {
        Setup {
            requirement,
            audit: Arc::new(MemorySink::new()),
            clock: Arc::new(ManualClock::new(chrono::Utc::now())),
            initiator: Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com")),
        }
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

/// One channel under test.
pub trait ChannelHarness: Sized {
    /// Builds the gate (with `setup`'s policy, audit sink, clock and initiator) with this
    /// channel's approver, and the channel's inbound path with every [`Person`] mapped.
    fn start(setup: Setup) -> impl Future<Output = Self>;

    /// The gate built by [`start`](ChannelHarness::start).
    fn gate(&self) -> &Gate;

    /// The channel's approver, or `None` for a channel reviewers visit (a console).
    fn approver(&self) -> Option<Arc<dyn Approver>>;

    /// Decides `verdict` on `id` as `who` through the channel's inbound path, typing `reason`
    /// where the channel asks for one. Returns when the channel has processed it, with what
    /// it told the person (`None` when it tells nothing).
    fn decide(
        &self,
        id: RequestId,
        who: Person,
        verdict: Verdict,
        reason: Option<&str>,
    ) -> impl Future<Output = Option<String>>;

    /// Sends an approval of `id`, claiming to be `who`, that fails the channel's
    /// authentication (a wrong signature, a forged token, a missing form token). Returns when
    /// the channel has refused it.
    fn forge(&self, id: RequestId, who: Person) -> impl Future<Output = ()>;

    /// What reviewers see of `id` now: the text of each message the channel shows about it
    /// (one entry per visible message; a console shows one page).
    fn shown(&self, id: RequestId) -> impl Future<Output = Vec<String>>;
}

/// Runs every behaviour, each on a fresh harness.
pub async fn run_all<H: ChannelHarness>() {
    delivers_the_exact_action::<H>().await;
    shows_every_resolution::<H>().await;
    refuses_self_approval::<H>().await;
    refuses_an_outsider::<H>().await;
    refuses_a_forged_decision::<H>().await;
    requires_a_reason_when_the_policy_does::<H>().await;
    redelivery_shows_no_second_message::<H>().await;
}

/// The action every behaviour submits: its parameters are distinctive so the suite can find
/// them in what the channel shows.
pub fn action() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 48213, "format": "parquet"}))
        .justification("Quarterly report for finance")
        .environment("production")
}

async fn submit<H: ChannelHarness>(h: &H) -> RequestId {
    match h.gate().submit(&action()).await {
        Ok(Submission::Pending(id)) => id,
        other => panic!("the suite's action must go to review, got {other:?}"),
    }
}

async fn record<H: ChannelHarness>(h: &H, id: RequestId) -> RequestRecord {
    h.gate()
        .get(id)
        .await
        .expect("store")
        .unwrap_or_else(|| panic!("request {id} is missing"))
}

/// Polls `shown` (bounded, 10 s) until `pred` holds for it; panics naming `what`.
async fn shown_until<H: ChannelHarness>(
    h: &H,
    id: RequestId,
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut last = Vec::new();
    for _ in 0..500 {
        last = h.shown(id).await;
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: the channel shows {last:#?}");
}

fn rejections(audit: &MemorySink, id: RequestId) -> Vec<RejectCause> {
    audit
        .for_request(id)
        .into_iter()
        .filter_map(|e: AuditEvent| match e.detail {
            EventDetail::ReviewRejected { cause, .. } => Some(cause),
            _ => None,
        })
        .collect()
}

async fn rejection_recorded(audit: &MemorySink, id: RequestId, cause: RejectCause) {
    for _ in 0..500 {
        if rejections(audit, id).contains(&cause) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected a review_rejected event with cause {cause:?}, got {:?}",
        rejections(audit, id)
    );
}

fn mentions(shown: &[String], state: &str) -> bool {
    shown.iter().any(|t| t.to_lowercase().contains(state))
}

/// A new request is shown with its exact parameters and the digest approvals are bound to.
pub async fn delivers_the_exact_action<H: ChannelHarness>() {
    let h = H::start(Setup::new()).await;
    let id = submit(&h).await;
    let digest = record(&h, id).await.digest.to_string();
    let hex = digest.trim_start_matches("sha256:").to_owned();
    shown_until(
        &h,
        id,
        "the new request with its parameters and digest",
        |s| {
            s.iter().any(|t| {
                t.contains("48213")
                    && t.contains("parquet")
                    && t.contains("db://prod/customers")
                    && t.contains(&hex)
            })
        },
    )
    .await;
}

/// Approved, denied, expired, cancelled and executed requests are each shown as such.
pub async fn shows_every_resolution<H: ChannelHarness>() {
    // Approved, then executed.
    let setup = Setup::new();
    let clock = setup.clock.clone();
    let h = H::start(setup).await;
    let id = submit(&h).await;
    h.decide(id, Person::Reviewer, Verdict::Approve, Some("checked"))
        .await;
    assert_eq!(
        record(&h, id).await.state,
        RequestState::Approved,
        "approve"
    );
    shown_until(&h, id, "the approval", |s| mentions(s, "approved")).await;
    let grant = h.gate().wait(id).await.expect("grant");
    h.gate()
        .execute(grant, &action(), || async {
            Ok::<_, approvals_core::GuardError>(())
        })
        .await
        .expect("execute");
    shown_until(&h, id, "the execution", |s| mentions(s, "executed")).await;

    // Denied.
    let id = submit(&h).await;
    h.decide(
        id,
        Person::Reviewer,
        Verdict::Deny,
        Some("not this quarter"),
    )
    .await;
    assert_eq!(record(&h, id).await.state, RequestState::Denied, "deny");
    shown_until(&h, id, "the denial", |s| mentions(s, "denied")).await;

    // Cancelled.
    let id = submit(&h).await;
    h.gate()
        .cancel(
            id,
            Some(Person::Requester.principal()),
            Some("no longer needed".into()),
        )
        .await
        .expect("cancel");
    shown_until(&h, id, "the cancellation", |s| mentions(s, "cancel")).await;

    // Expired.
    let id = submit(&h).await;
    let expires = record(&h, id).await.expires_at;
    let by = expires - h.gate().now() + TimeDelta::seconds(1);
    clock.advance(by);
    h.gate().sweep().await.expect("sweep");
    assert_eq!(record(&h, id).await.state, RequestState::Expired, "expire");
    shown_until(&h, id, "the expiry", |s| mentions(s, "expired")).await;
}

async fn refused_through_channel<H: ChannelHarness>(
    h: &H,
    audit: &MemorySink,
    who: Person,
    cause: RejectCause,
) {
    let id = submit(h).await;
    let before = record(h, id).await;
    let told = h
        .decide(id, who, Verdict::Approve, Some("looks fine"))
        .await;
    rejection_recorded(audit, id, cause).await;
    let after = record(h, id).await;
    assert_eq!(
        after.state,
        RequestState::Pending,
        "{who:?}: nothing changed"
    );
    assert_eq!(after.reviews, before.reviews, "{who:?}: no review stored");
    if let Some(told) = told {
        let lower = told.to_lowercase();
        assert!(
            lower.contains("not") || lower.contains("cannot"),
            "{who:?} is told the decision was refused: {told}"
        );
    }
}

/// The initiator's on-behalf-of human cannot approve their own request.
pub async fn refuses_self_approval<H: ChannelHarness>() {
    let setup = Setup::new();
    let audit = setup.audit.clone();
    let h = H::start(setup).await;
    refused_through_channel(&h, &audit, Person::Requester, RejectCause::SelfApproval).await;
}

/// A person the requirement does not allow cannot approve.
pub async fn refuses_an_outsider<H: ChannelHarness>() {
    let setup = Setup::new();
    let audit = setup.audit.clone();
    let h = H::start(setup).await;
    refused_through_channel(&h, &audit, Person::Outsider, RejectCause::NotAuthorized).await;
}

/// A decision that fails the channel's authentication changes nothing and is audited.
pub async fn refuses_a_forged_decision<H: ChannelHarness>() {
    let setup = Setup::new();
    let audit = setup.audit.clone();
    let h = H::start(setup).await;
    let id = submit(&h).await;
    h.forge(id, Person::Reviewer).await;
    rejection_recorded(&audit, id, RejectCause::Forged).await;
    let after = record(&h, id).await;
    assert_eq!(
        after.state,
        RequestState::Pending,
        "forged: nothing changed"
    );
    assert!(after.reviews.is_empty(), "forged: no review stored");
}

/// Where the policy requires a reason, a decision without one changes nothing; with one it
/// counts and the reason is stored.
pub async fn requires_a_reason_when_the_policy_does<H: ChannelHarness>() {
    let h = H::start(Setup::with(
        Requirement::groups(["security"]).reason_required(true),
    ))
    .await;
    let id = submit(&h).await;
    h.decide(id, Person::Reviewer, Verdict::Approve, None).await;
    let after = record(&h, id).await;
    assert_eq!(
        after.state,
        RequestState::Pending,
        "no reason: nothing changed"
    );
    assert!(after.reviews.is_empty(), "no reason: no review stored");
    h.decide(id, Person::Reviewer, Verdict::Approve, Some("ticket FIN-7"))
        .await;
    let after = record(&h, id).await;
    assert_eq!(after.state, RequestState::Approved, "with a reason");
    assert_eq!(after.reviews[0].reason.as_deref(), Some("ticket FIN-7"));
}

/// Delivering a request again (`DispatchReason::Redelivery`) shows no second message.
pub async fn redelivery_shows_no_second_message<H: ChannelHarness>() {
    let h = H::start(Setup::new()).await;
    let Some(approver) = h.approver() else {
        return; // Nothing is sent; nothing can be sent twice.
    };
    let id = submit(&h).await;
    let first = shown_until(&h, id, "the new request", |s| !s.is_empty()).await;
    let mut record = record(&h, id).await;
    // As after a crash: the delivery was made but not recorded.
    record.deliveries.clear();
    approver
        .dispatch(
            &record,
            DispatchReason::Redelivery,
            Arc::new(h.gate().clone()),
        )
        .await
        .expect("redelivery");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = h.shown(id).await;
    assert_eq!(
        again.len(),
        first.len(),
        "a redelivery must find the earlier message: {again:#?}"
    );
}
