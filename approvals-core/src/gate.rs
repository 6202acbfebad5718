//! The gate: evaluates policy, persists and dispatches requests, applies reviews, issues and
//! consumes grants, and audits every step.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;

use crate::approver::{Approver, ApproverError, DispatchReason};
use crate::audit::{
    AUDIT_SCHEMA_VERSION, AuditEvent, AuditSink, EventDetail, RefusalCause, RejectCause,
};
use crate::bounds::{clip, contained, within};
use crate::clock::{Clock, SystemClock};
use crate::error::{Component, GuardError, ReviewError};
use crate::policy::{Decision, Policy, Requirement};
use crate::request::{
    Action, ActionRequest, Digest, Initiator, Principal, PrincipalKind, RequestContext,
};
use crate::store::{
    Inserted, ListFilter, MemoryStore, RequestId, RequestRecord, RequestState, Resolution,
    ReviewRecord, Store, StoreError, Verdict,
};

/// Largest canonical request accepted, in bytes: reviewers cannot meaningfully review more,
/// and it bounds what an agent can push into chat messages and logs.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
const MAX_NAME_CHARS: usize = 512;

/// A reviewer's verdict on one request, as submitted by a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Who, as resolved by the channel's identity resolver at decision time.
    pub reviewer: Principal,
    /// Approve or deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Option<String>,
    /// The channel name.
    pub channel: String,
    /// The digest the reviewer was shown; when set, it must match the stored request.
    pub digest: Option<Digest>,
}

impl Review {
    /// An approval by `reviewer`.
    pub fn approve(reviewer: Principal) -> Self {
        Self::new(reviewer, Verdict::Approve)
    }

    /// A denial by `reviewer`.
    pub fn deny(reviewer: Principal) -> Self {
        Self::new(reviewer, Verdict::Deny)
    }

    fn new(reviewer: Principal, verdict: Verdict) -> Self {
        Review {
            reviewer,
            verdict,
            reason: None,
            channel: "api".into(),
            digest: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the channel name.
    pub fn via(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Binds the review to the digest the reviewer saw.
    pub fn for_digest(mut self, digest: Digest) -> Self {
        self.digest = Some(digest);
        self
    }
}

/// The state of a request after an accepted review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewOutcome {
    /// `Pending` (more approvals needed), `Approved` or `Denied`.
    pub state: RequestState,
    /// Distinct approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub quorum: u32,
}

/// Proof that one exact action may run now. Single-use: [`Gate::execute`] consumes it.
#[derive(Debug)]
pub struct Grant {
    request_id: RequestId,
    digest: Digest,
    approvers: Vec<Principal>,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    policy_rule: Option<String>,
    policy_version: Arc<str>,
    approved: bool,
    initiator: Arc<Initiator>,
}

impl Grant {
    /// Who asked: the authenticated initiator the action was submitted under. Executing the
    /// grant binds the action to it again.
    pub fn initiator(&self) -> &Initiator {
        &self.initiator
    }
    /// The request it belongs to.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }
    /// The approved action digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// Who approved; empty when the policy allowed the action without review.
    pub fn approvers(&self) -> &[Principal] {
        &self.approvers
    }
    /// When it was issued.
    pub fn issued_at(&self) -> DateTime<Utc> {
        self.issued_at
    }
    /// Until when it may be used.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    /// The policy rule behind it.
    pub fn policy_rule(&self) -> Option<&str> {
        self.policy_rule.as_deref()
    }
    /// The policy version behind it.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }
    /// Whether humans approved it (rather than the policy allowing it outright).
    pub fn is_human_approved(&self) -> bool {
        self.approved
    }
}

/// What [`Gate::submit`] did with a request.
#[derive(Debug)]
pub enum Submission {
    /// The policy allowed it; here is the grant.
    Allowed(Grant),
    /// It waits for reviewers (new, or re-attached by idempotency key).
    Pending(RequestId),
}

/// Counts from one [`Gate::sweep`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pending requests that expired.
    pub expired: usize,
    /// Pending requests that escalated.
    pub escalated: usize,
    /// Approved requests whose grant lapsed.
    pub lapsed: usize,
    /// Decisions (approvals and denials) whose audit events were recorded by the sweep
    /// because the reviewer's `decide()` failed or died after persisting them.
    pub recovered: usize,
}

/// Builds a [`Gate`].
#[must_use]
pub struct GateBuilder {
    policy: Option<Arc<dyn Policy>>,
    store: Arc<dyn Store>,
    audit: Option<Arc<dyn AuditSink>>,
    approvers: Vec<Arc<dyn Approver>>,
    clock: Arc<dyn Clock>,
    initiator: Option<Initiator>,
    context: RequestContext,
    grant_ttl: Duration,
    store_timeout: Duration,
    approver_timeout: Duration,
    poll_interval: Duration,
    audit_recovery_after: Duration,
}

impl GateBuilder {
    /// The policy (required).
    pub fn policy(mut self, policy: impl Policy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// A shared policy.
    pub fn policy_shared(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The store (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// A shared store.
    pub fn store_shared(mut self, store: Arc<dyn Store>) -> Self {
        self.store = store;
        self
    }

    /// The audit sink (required: evidence has to go somewhere).
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// A shared audit sink.
    pub fn audit_shared(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Adds a review channel.
    pub fn approver(mut self, approver: impl Approver) -> Self {
        self.approvers.push(Arc::new(approver));
        self
    }

    /// Adds a shared review channel.
    pub fn approver_shared(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approvers.push(approver);
        self
    }

    /// The clock (default: system time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Who this gate acts for: the agent or service (and the human it acts on behalf of)
    /// that every action submitted through [`Gate::guard`], [`Gate::run`], [`Gate::submit`],
    /// the free functions and `#[requires_approval]` is recorded under. Actions cannot change
    /// it; without one, those calls refuse with [`GuardError::NoInitiator`] (doors that
    /// authenticate their callers use [`Gate::submit_as`]).
    pub fn initiator(mut self, initiator: Initiator) -> Self {
        self.initiator = Some(initiator);
        self
    }

    /// Context fields used where an action leaves them empty (for example the environment).
    pub fn context(mut self, context: RequestContext) -> Self {
        self.context = context;
        self
    }

    /// How long an approved grant may wait before it is used (default 10 minutes).
    pub fn grant_ttl(mut self, ttl: Duration) -> Self {
        self.grant_ttl = ttl;
        self
    }

    /// Longest wait for any store call or audit append before the action is refused
    /// (default 5 s).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Longest wait for a channel to deliver a request (default 15 s). A channel that takes
    /// longer counts as failed for that delivery (`dispatch_failed` is audited); when no
    /// channel delivers a new request it is cancelled and the caller gets
    /// [`GuardError::DeliveryFailed`].
    pub fn approver_timeout(mut self, timeout: Duration) -> Self {
        self.approver_timeout = timeout;
        self
    }

    /// How often a waiting `guard()` re-reads the store in case it missed a notification
    /// (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long an approval may stay unaudited (its reviewer's `decide()` failed after
    /// persisting it) before a waiter or sweep records it (default 30 s).
    pub fn audit_recovery_after(mut self, delay: Duration) -> Self {
        self.audit_recovery_after = delay;
        self
    }

    /// Builds the gate.
    pub fn build(self) -> Result<Gate, BuildError> {
        let policy = self.policy.ok_or(BuildError::MissingPolicy)?;
        let audit = self.audit.ok_or(BuildError::MissingAudit)?;
        if let Some(initiator) = &self.initiator {
            initiator.validate().map_err(BuildError::InvalidInitiator)?;
        }
        let policy_version = Mutex::new(Arc::from(policy.version()));
        Ok(Gate {
            inner: Arc::new(Inner {
                policy_version,
                policy,
                store: self.store,
                audit,
                approvers: self.approvers,
                clock: self.clock,
                initiator: self.initiator.map(Arc::new),
                context: Arc::new(self.context),
                grant_ttl: self.grant_ttl,
                store_timeout: self.store_timeout,
                approver_timeout: self.approver_timeout,
                poll_interval: self.poll_interval,
                audit_recovery_after: self.audit_recovery_after,
                waiters: Mutex::new(HashMap::new()),
                forwarder: Mutex::new(None),
            }),
        })
    }
}

/// The gate could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No policy was given.
    #[error("the gate needs a policy: call .policy(RulePolicy::from_file(\"policy.toml\")?)")]
    MissingPolicy,
    /// No audit sink was given.
    #[error(
        "the gate needs an audit sink: call .audit(JsonLinesSink::file(\"audit.jsonl\", true)?) or another sink"
    )]
    MissingAudit,
    /// The configured initiator (or its on-behalf-of human) has an id or group that cannot be
    /// compared safely, so self-approval could not be told apart.
    #[error("the gate's initiator is refused: {0}. Configure it with the id the directory uses")]
    InvalidInitiator(crate::identity::InvalidIdentity),
}

struct Inner {
    policy: Arc<dyn Policy>,
    store: Arc<dyn Store>,
    audit: Arc<dyn AuditSink>,
    approvers: Vec<Arc<dyn Approver>>,
    clock: Arc<dyn Clock>,
    initiator: Option<Arc<Initiator>>,
    context: Arc<RequestContext>,
    grant_ttl: Duration,
    store_timeout: Duration,
    approver_timeout: Duration,
    poll_interval: Duration,
    audit_recovery_after: Duration,
    waiters: Mutex<HashMap<RequestId, Arc<Notify>>>,
    /// The task that turns the store's change notifications into wake-ups of the one waiter
    /// concerned (started with the first wait).
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The policy's version as last seen, shared by the events and grants that record it.
    policy_version: Mutex<Arc<str>>,
}

/// The approval engine. Cheap to clone; clones share everything.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_core::{ActionRequest, Gate, Initiator, MemorySink, RulePolicy};
///
/// let gate = Gate::builder()
///     .policy(RulePolicy::from_toml(r#"
///         version = 1
///         default = "deny"
///         [[rules]]
///         name = "reads"
///         kind = "*.read"
///         effect = "allow"
///     "#)?)
///     .audit(MemorySink::new())
///     .initiator(Initiator::agent("report-bot"))
///     .build()?;
///
/// let read = ActionRequest::new("db.read", "db://analytics/events");
/// let rows = gate.run(&read, || async { Ok::<_, approvals_core::GuardError>(42) }).await?;
/// assert_eq!(rows, 42);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy_version", &self.inner.policy.version())
            .field(
                "approvers",
                &self
                    .inner
                    .approvers
                    .iter()
                    .map(|a| a.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Starts building a gate.
    pub fn builder() -> GateBuilder {
        GateBuilder {
            policy: None,
            store: Arc::new(MemoryStore::new()),
            audit: None,
            approvers: Vec::new(),
            clock: Arc::new(SystemClock),
            initiator: None,
            context: RequestContext::default(),
            grant_ttl: Duration::from_secs(600),
            store_timeout: Duration::from_secs(5),
            approver_timeout: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            audit_recovery_after: Duration::from_secs(30),
        }
    }

    /// The store this gate uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The policy version recorded with decisions.
    pub fn policy_version(&self) -> &str {
        self.inner.policy.version()
    }

    /// The current time on the gate's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    // ------------------------------------------------------------------------------------
    // Asking.

    /// Asks for permission to run `action` and waits until it is allowed, approved, or
    /// refused. The returned grant must be passed to [`execute`](Gate::execute) with the same
    /// action; [`run`](Gate::run) does both.
    pub async fn guard<A: Action + ?Sized>(&self, action: &A) -> Result<Grant, GuardError> {
        // Boxed, so a waiting caller's task does not keep room for submit's larger state.
        match Box::pin(self.submit(action)).await? {
            Submission::Allowed(grant) => Ok(grant),
            Submission::Pending(id) => self.wait(id).await,
        }
    }

    /// Asks for permission and runs `f` once granted, consuming the grant and auditing the
    /// result (`executed` with `ok` or the error text). `f` never runs without a grant.
    pub async fn run<A, F, Fut, T, E>(&self, action: &A, f: F) -> Result<T, E>
    where
        A: Action + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        let grant = self.guard(action).await?;
        // Boxed, so a waiting caller's task does not keep room for execute's larger state.
        Box::pin(self.execute(grant, action, f)).await
    }

    /// Evaluates policy and, if approval is needed, stores and dispatches the request without
    /// waiting. Use [`wait`](Gate::wait) later (possibly in another process) to get the grant.
    ///
    /// The initiator is the gate's own ([`GateBuilder::initiator`]); an action that names
    /// another is refused with [`GuardError::InitiatorMismatch`].
    pub async fn submit<A: Action + ?Sized>(&self, action: &A) -> Result<Submission, GuardError> {
        let initiator = self
            .inner
            .initiator
            .clone()
            .ok_or(GuardError::NoInitiator)?;
        self.submit_bound(initiator, action).await
    }

    /// [`submit`](Gate::submit) for a caller that a door (the HTTP agent API, the MCP
    /// gateway, `approvals exec`) has authenticated: `caller` comes from that credential, never
    /// from the action, and the action is bound to it exactly as `submit` binds it to the
    /// gate's own initiator. Wait with [`wait`](Gate::wait); the grant carries `caller`, and
    /// [`execute`](Gate::execute) binds the action to it again.
    pub async fn submit_as<A: Action + ?Sized>(
        &self,
        caller: &Initiator,
        action: &A,
    ) -> Result<Submission, GuardError> {
        self.submit_bound(Arc::new(caller.clone()), action).await
    }

    async fn submit_bound<A: Action + ?Sized>(
        &self,
        initiator: Arc<Initiator>,
        action: &A,
    ) -> Result<Submission, GuardError> {
        let id = RequestId::new();
        let (request, digest) = self.admit(id, action.to_request(), &initiator).await?;
        let request = Arc::new(request);

        if let Some(key) = &request.idempotency_key
            // Boxed, like create_pending below: the stored record is large, and neither the
            // allow path nor a waiting caller's task needs room for it.
            && let Some(submission) = Box::pin(self.reattach_by_key(key, digest)).await?
        {
            return Ok(submission);
        }

        let now = self.now();
        let subject = EventSubject {
            id,
            kind: request.kind.as_str().into(),
            resource: request.resource.as_str().into(),
            digest,
        };
        self.audit(subject.event(
            now,
            EventDetail::Requested {
                request: request.clone(),
            },
        ))
        .await?;
        let decision = contained(|| self.inner.policy.evaluate(&request))
            .map_err(|panic| {
                GuardError::unavailable(Component::Policy, format!("the policy panicked: {panic}"))
            })?
            .map_err(|e| GuardError::unavailable(Component::Policy, e))?;
        let policy_version = self.shared_policy_version();
        // The decision moves into the event and back out after it is recorded: this is the
        // allow path of every guard() call, so it is not copied.
        let decided = subject.event(
            now,
            EventDetail::PolicyDecided {
                decision,
                policy_version: policy_version.clone(),
            },
        );
        self.audit_ref(&decided).await?;
        let EventDetail::PolicyDecided { decision, .. } = decided.detail else {
            unreachable!("the event was built as PolicyDecided above")
        };

        match decision {
            Decision::Allow { rule } => Ok(Submission::Allowed(Grant {
                request_id: id,
                digest,
                approvers: Vec::new(),
                issued_at: now,
                expires_at: now + to_delta(self.inner.grant_ttl),
                policy_rule: rule,
                policy_version,
                approved: false,
                initiator,
            })),
            Decision::Deny { rule, reason } => Err(GuardError::PolicyDenied {
                kind: request.kind.clone(),
                resource: request.resource.clone(),
                rule,
                reason,
            }),
            Decision::RequireApproval { rule, requirement } => {
                // Boxed: storing and dispatching is the large part of submit's state, and a
                // waiting caller's task need not keep room for it (the allow path never
                // takes this branch, so it pays no allocation for it).
                Box::pin(self.create_pending(id, now, request, digest, rule, requirement)).await
            }
        }
    }

    /// Binds `request` to the authenticated `initiator`, fills in the gate's default context,
    /// and checks it before anything about it is recorded: a claimed initiator other than the
    /// authenticated one, an oversized request or a malformed one is refused with a
    /// `request_refused` event holding its size and digest, never its body.
    async fn admit(
        &self,
        id: RequestId,
        mut request: ActionRequest,
        initiator: &Arc<Initiator>,
    ) -> Result<(ActionRequest, Digest), GuardError> {
        with_defaults(&mut request.context, &self.inner.context);
        let mismatch = match bind_initiator(initiator, request.initiator.as_deref()) {
            Ok(bound) => {
                request.initiator = Some(bound);
                None
            }
            // The refusal records the digest of the action as it was presented.
            Err(refused) => Some(refused),
        };
        let (digest, canonical_size) = request.digest_and_size();
        let size = canonical_size + request.idempotency_key.as_ref().map_or(0, String::len);
        let Some((cause, detail, error)) = mismatch.or_else(|| check_limits(&request, size)) else {
            return Ok((request, digest));
        };
        let event = AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at: self.now(),
            request_id: id,
            kind: clip(&request.kind, MAX_NAME_CHARS).into(),
            resource: clip(&request.resource, MAX_NAME_CHARS).into(),
            digest,
            detail: EventDetail::RequestRefused {
                cause,
                detail: clip(&detail, 1024),
                size: size as u64,
                initiator: Some(initiator.clone()),
            },
        };
        // The action is refused either way; a failing sink cannot make it pass.
        let _ = self.record_bounded(&event).await;
        Err(error)
    }

    async fn create_pending(
        &self,
        id: RequestId,
        now: DateTime<Utc>,
        request: Arc<ActionRequest>,
        digest: Digest,
        rule: Option<String>,
        requirement: Arc<Requirement>,
    ) -> Result<Submission, GuardError> {
        if requirement.quorum == 0 {
            return Err(GuardError::unavailable(
                Component::Policy,
                "the policy asked for approval with quorum 0; fix the policy (quorum must be at least 1)",
            ));
        }
        let record = RequestRecord {
            id,
            version: 1,
            request: (*request).clone(),
            digest,
            expires_at: now + to_delta(requirement.timeout),
            escalate_at: requirement
                .escalation
                .as_ref()
                .map(|e| now + to_delta(e.after)),
            requirement,
            policy_rule: rule,
            policy_version: self.shared_policy_version(),
            state: RequestState::Pending,
            created_at: now,
            escalated: false,
            reviews: Vec::new(),
            resolution: None,
            audit_pending: false,
            unaudited: crate::store::Unaudited::default(),
            grant_expires_at: None,
            deliveries: Vec::new(),
            execution: None,
        };
        match self.store_call(self.inner.store.insert(&record)).await? {
            Inserted::Created => {}
            Inserted::Existing(existing) => {
                // Another task inserted the same idempotency key first.
                let key = record.request.idempotency_key.clone().unwrap_or_default();
                return self.reattach(&existing, &key, digest);
            }
        }
        self.dispatch(record, DispatchReason::New).await?;
        Ok(Submission::Pending(id))
    }

    /// Re-attaches to the request stored under `key`, if there is one, delivering it again
    /// if it never was.
    async fn reattach_by_key(
        &self,
        key: &str,
        digest: Digest,
    ) -> Result<Option<Submission>, GuardError> {
        let Some(existing) = self
            .store_call(self.inner.store.get_by_idempotency_key(key))
            .await?
        else {
            return Ok(None);
        };
        let submission = self.reattach(&existing, key, digest)?;
        self.redeliver_if_undelivered(existing).await?;
        Ok(Some(submission))
    }

    fn reattach(
        &self,
        existing: &RequestRecord,
        key: &str,
        digest: Digest,
    ) -> Result<Submission, GuardError> {
        if existing.digest != digest {
            return Err(GuardError::IdempotencyConflict {
                key: key.to_owned(),
                existing: existing.id,
            });
        }
        Ok(Submission::Pending(existing.id))
    }

    /// Delivers a re-attached request again when it is still pending and no delivery was ever
    /// recorded for it: the process that stored it died before telling its channels, or before
    /// recording their answer, so no reviewer may know of it. At least once: the channel is
    /// told it is a [`DispatchReason::Redelivery`], so one that can find a message an earlier
    /// process posted (Slack, by the request id in the message metadata) records that one;
    /// others may show a second message, and a channel that records no delivery (the
    /// terminal) is asked again. When no channel takes it, the request is cancelled as for a
    /// first delivery.
    async fn redeliver_if_undelivered(&self, existing: RequestRecord) -> Result<(), GuardError> {
        if existing.state == RequestState::Pending && existing.deliveries.is_empty() {
            self.dispatch(existing, DispatchReason::Redelivery).await?;
        }
        Ok(())
    }

    /// Delivers to every channel; records the deliveries. Cancels the request when no channel
    /// delivered it (nobody could approve it).
    async fn dispatch(
        &self,
        record: RequestRecord,
        reason: DispatchReason,
    ) -> Result<(), GuardError> {
        if self.inner.approvers.is_empty() {
            // Reviews arrive through the API or another process; nothing to deliver.
            return Ok(());
        }
        let mut deliveries = Vec::new();
        let mut errors = Vec::new();
        for approver in &self.inner.approvers {
            let channel = approver.name().to_owned();
            let timeout = self.inner.approver_timeout;
            let delivered = within(timeout, approver.dispatch(&record, reason, self))
                .await
                .unwrap_or_else(|unfinished| {
                    Err(ApproverError::new(
                        &channel,
                        format!(
                            "the channel did not deliver the request ({unfinished}; approver_timeout {timeout:?})"
                        ),
                    )
                    .retryable())
                });
            match delivered {
                Ok(delivery) => {
                    self.audit(self.event(&record, EventDetail::Dispatched { channel }))
                        .await?;
                    deliveries.extend(delivery);
                }
                Err(e) => {
                    self.audit(self.event(
                        &record,
                        EventDetail::DispatchFailed {
                            channel,
                            error: e.message.clone(),
                        },
                    ))
                    .await?;
                    errors.push(e.to_string());
                }
            }
        }
        // A first delivery, or a redelivery of a request no channel ever recorded: if no channel
        // takes it, no reviewer knows of it, so the agent is refused now rather than left
        // waiting for its deadline.
        if errors.len() == self.inner.approvers.len() && reason != DispatchReason::Escalation {
            let why = errors.join("; ");
            self.cancel_pending(
                record.id,
                None,
                Some(format!("no channel could deliver the request: {why}")),
            )
            .await?;
            return Err(GuardError::DeliveryFailed {
                id: record.id,
                errors: why,
            });
        }
        if !deliveries.is_empty() {
            self.update(record.id, |r| {
                r.deliveries.extend(deliveries.iter().cloned());
                true
            })
            .await
            .map_err(|e| GuardError::unavailable(Component::Store, e))?;
        }
        Ok(())
    }

    /// Waits for a pending request to be decided and returns its grant, or the refusal.
    /// Safe to call again after a restart, from any process sharing the store.
    pub async fn wait(&self, id: RequestId) -> Result<Grant, GuardError> {
        let notify = self.waiter(id);
        let result = self.wait_loop(id, &notify).await;
        self.release_waiter(id, notify);
        result
    }

    async fn wait_loop(&self, id: RequestId, notify: &Notify) -> Result<Grant, GuardError> {
        self.forward_store_changes();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Boxed: the record and the rarely taken transitions live only during the check,
            // not in every parked waiter's task (see the load test in reliability/).
            let deadline = match Box::pin(self.wait_step(id)).await? {
                WaitStep::Until(deadline) => deadline,
                WaitStep::Again => continue,
                WaitStep::Done(grant) => return Ok(*grant),
            };
            // Woken by a local decide(), by the store's notification of a change made
            // elsewhere (see forward_store_changes), at the deadline, or by the poll.
            tokio::select! {
                _ = &mut notified => {}
                _ = self.inner.clock.sleep_until(deadline) => {}
                _ = tokio::time::sleep(self.inner.poll_interval) => {}
            }
        }
    }

    /// One look at a waited-for request: the grant, the refusal, a transition that is due
    /// (then look again), or the time to wake up at the latest.
    async fn wait_step(&self, id: RequestId) -> Result<WaitStep, GuardError> {
        let record = self
            .store_call(self.inner.store.get(id))
            .await?
            .ok_or_else(|| GuardError::InvalidRequest(format!("no approval request {id}")))?;
        let now = self.now();
        let deadline = match record.state {
            RequestState::Pending => {
                if now >= record.expires_at {
                    self.expire(&record).await?;
                    return Ok(WaitStep::Again);
                }
                let escalate_at = record.escalate_at.filter(|_| !record.escalated);
                if escalate_at.is_some_and(|at| now >= at) {
                    self.escalate(&record).await?;
                    return Ok(WaitStep::Again);
                }
                escalate_at.map_or(record.expires_at, |at| at.min(record.expires_at))
            }
            RequestState::Approved | RequestState::Denied if record.audit_pending => {
                // A decision not yet in the audit trail: the grant or the refusal is returned
                // only once it is. Wait for the reviewer's `decide()` to record it, or record
                // it ourselves if that never happens. (An approval a deny revoked may still be
                // unrecorded; that does not hold up the refusal, whose denial is recorded.)
                let recover_at = self.recover_at(&record);
                if now >= recover_at {
                    self.recover_decision(&record).await?;
                    return Ok(WaitStep::Again);
                }
                let verdict = if record.state == RequestState::Approved {
                    Verdict::Approve
                } else {
                    Verdict::Deny
                };
                if !record.unaudited_decisions().get(verdict) {
                    return match record.state {
                        RequestState::Approved => {
                            Ok(WaitStep::Done(Box::new(self.issue_grant(record).await?)))
                        }
                        _ => Err(refusal(&record)),
                    };
                }
                recover_at
            }
            RequestState::Approved => {
                return Ok(WaitStep::Done(Box::new(self.issue_grant(record).await?)));
            }
            _ => return Err(refusal(&record)),
        };
        Ok(WaitStep::Until(deadline))
    }

    async fn issue_grant(&self, record: RequestRecord) -> Result<Grant, GuardError> {
        let now = self.now();
        let expires_at = record.grant_expires_at.unwrap_or(now);
        if now >= expires_at {
            self.lapse(&record).await?;
            return Err(GuardError::GrantLapsed { id: record.id });
        }
        let approvers: Vec<Principal> = record.approvers().into_iter().cloned().collect();
        self.audit(self.event(
            &record,
            EventDetail::GrantIssued {
                approvers: approvers.clone(),
                expires_at,
            },
        ))
        .await?;
        Ok(Grant {
            request_id: record.id,
            digest: record.digest,
            approvers,
            issued_at: now,
            expires_at,
            policy_rule: record.policy_rule.clone(),
            policy_version: record.policy_version.clone(),
            approved: true,
            initiator: record
                .request
                .initiator
                .clone()
                .or_else(|| self.inner.initiator.clone())
                .ok_or(GuardError::NoInitiator)?,
        })
    }

    // ------------------------------------------------------------------------------------
    // Running.

    /// Consumes `grant` and runs `f`, which performs `action`. Refuses (without running `f`)
    /// when the action's digest differs from the approved one, or the grant was already used
    /// or has lapsed. The outcome is audited as `executed`.
    pub async fn execute<A, F, Fut, T, E>(&self, grant: Grant, action: &A, f: F) -> Result<T, E>
    where
        A: Action + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        let (request, presented) = self
            .admit(grant.request_id, action.to_request(), &grant.initiator)
            .await?;
        let subject = EventSubject {
            id: grant.request_id,
            kind: request.kind.as_str().into(),
            resource: request.resource.as_str().into(),
            digest: grant.digest,
        };
        if presented != grant.digest {
            self.audit(subject.event(
                self.now(),
                EventDetail::GrantRejected {
                    cause: RejectCause::DigestMismatch,
                    detail: format!("presented {presented}"),
                },
            ))
            .await?;
            return Err(GuardError::DigestMismatch {
                id: grant.request_id,
                approved: grant.digest,
                presented,
            }
            .into());
        }
        if grant.approved {
            self.consume(&grant).await?;
        } else if self.now() >= grant.expires_at {
            return Err(GuardError::GrantLapsed {
                id: grant.request_id,
            }
            .into());
        }
        if let Err(e) = self
            .audit(subject.event(self.now(), EventDetail::GrantConsumed {}))
            .await
        {
            if grant.approved {
                let note = format!("not run: {e}");
                let _ = self
                    .update(grant.request_id, |r| {
                        finish_execution(r, self.now(), Some(note.clone()))
                    })
                    .await;
            }
            return Err(e.into());
        }

        let result = f().await;

        let error = result.as_ref().err().map(|e| e.to_string());
        // The action has run: report its own result whatever happens to the bookkeeping, so a
        // caller never retries an action that did run. The store keeps `Executing` if this
        // update fails, which still shows the grant was consumed.
        let _ = self
            .audit(subject.event(
                self.now(),
                EventDetail::Executed {
                    ok: error.is_none(),
                    error: error.clone(),
                    initiator: request.initiator.clone(),
                },
            ))
            .await;
        if grant.approved {
            let finished = self
                .update(grant.request_id, |r| {
                    finish_execution(r, self.now(), error.clone())
                })
                .await;
            if let Ok(Some(record)) = finished {
                self.notify_channels(record);
            }
        }
        result
    }

    /// Approved -> Executing, exactly once.
    async fn consume(&self, grant: &Grant) -> Result<(), GuardError> {
        loop {
            let record = self
                .store_call(self.inner.store.get(grant.request_id))
                .await?
                .ok_or_else(|| {
                    GuardError::InvalidRequest(format!("no approval request {}", grant.request_id))
                })?;
            if record.digest != grant.digest {
                return Err(GuardError::DigestMismatch {
                    id: record.id,
                    approved: record.digest,
                    presented: grant.digest,
                });
            }
            match record.state {
                RequestState::Approved if record.unaudited_decisions().approval => {
                    return Err(GuardError::unavailable(
                        Component::Audit,
                        "the approval is not yet recorded in the audit trail",
                    ));
                }
                RequestState::Approved => {}
                RequestState::Denied | RequestState::Cancelled | RequestState::Lapsed => {
                    return Err(refusal(&record));
                }
                state => {
                    self.audit(self.event(
                        &record,
                        EventDetail::GrantRejected {
                            cause: RejectCause::AlreadyUsed,
                            detail: format!("request is {state}"),
                        },
                    ))
                    .await?;
                    return Err(GuardError::GrantUsed {
                        id: record.id,
                        state,
                    });
                }
            }
            let now = self.now();
            if record.grant_expires_at.is_none_or(|t| now >= t) {
                self.lapse(&record).await?;
                return Err(GuardError::GrantLapsed { id: record.id });
            }
            let mut next = record.clone();
            next.state = RequestState::Executing;
            next.execution = Some(Box::new(crate::store::Execution {
                started_at: now,
                finished_at: None,
                error: None,
            }));
            if self
                .store_call(self.inner.store.compare_and_set(record.version, &next))
                .await?
            {
                return Ok(());
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Reviewing.

    /// Applies a reviewer's verdict. Checks, in order: the digest the reviewer saw, that the
    /// request is still pending and not expired, that the reviewer is a human, is neither the
    /// initiator nor the human it acts for, is allowed by the requirement (checked now, not
    /// when the request was sent), gave a reason if one is required, and has not already
    /// approved. One deny ends the request; approvals from distinct humans count toward the
    /// quorum. Every refusal is audited as `review_rejected` and changes nothing.
    pub async fn decide(
        &self,
        id: RequestId,
        review: Review,
    ) -> Result<ReviewOutcome, ReviewError> {
        loop {
            let record = self
                .bounded(self.inner.store.get(id))
                .await
                .map_err(review_unavailable)?
                .ok_or(ReviewError::NotFound(id))?;
            let now = self.now();
            if let Err(refused) = self.check_review(&record, &review, now).await {
                self.audit_rejection(&record, &review, &refused).await;
                return Err(refused);
            }
            let mut next = record.clone();
            next.reviews.push(ReviewRecord {
                reviewer: review.reviewer.clone(),
                verdict: review.verdict,
                reason: review.reason.clone(),
                channel: review.channel.clone(),
                at: now,
            });
            let approvals = next.approvers().len() as u32;
            let quorum = next.requirement.quorum;
            match review.verdict {
                Verdict::Deny => {
                    next.state = RequestState::Denied;
                    // Like an approval, a denial is flagged until it is in the audit trail,
                    // so a waiter can record it if this call dies before doing so.
                    next.mark_unaudited(Verdict::Deny);
                    next.grant_expires_at = None;
                    next.resolution = Some(Box::new(Resolution {
                        by: Some(review.reviewer.clone()),
                        reason: review.reason.clone(),
                        at: now,
                    }));
                }
                Verdict::Approve if approvals >= quorum => {
                    next.state = RequestState::Approved;
                    next.mark_unaudited(Verdict::Approve);
                    next.grant_expires_at = Some(now + to_delta(self.inner.grant_ttl));
                }
                Verdict::Approve => {}
            }
            if !self
                .bounded(self.inner.store.compare_and_set(record.version, &next))
                .await
                .map_err(review_unavailable)?
            {
                continue; // Someone else changed it; re-check against the new state.
            }
            next.version = record.version + 1;
            self.audit(self.event(
                &next,
                EventDetail::Reviewed {
                    reviewer: review.reviewer.clone(),
                    verdict: review.verdict,
                    reason: review.reason.clone(),
                    channel: review.channel.clone(),
                    approvals,
                    quorum,
                },
            ))
            .await
            .map_err(audit_unavailable)?;
            match next.state {
                RequestState::Denied => {
                    self.audit(self.event(
                        &next,
                        EventDetail::Denied {
                            by: review.reviewer.clone(),
                            reason: review.reason.clone(),
                        },
                    ))
                    .await
                    .map_err(audit_unavailable)?;
                    if let Some(cleared) = self.mark_audited(id, review.verdict).await.map_err(|e| {
                        ReviewError::Unavailable {
                            component: Component::Store,
                            message: e.to_string(),
                        }
                    })? {
                        next = cleared;
                    }
                }
                RequestState::Approved => {
                    self.audit(self.event(&next, approved_event(&next)))
                        .await
                        .map_err(audit_unavailable)?;
                    // Only now may a grant be issued.
                    if let Some(cleared) = self.mark_audited(id, review.verdict).await.map_err(|e| {
                        ReviewError::Unavailable {
                            component: Component::Store,
                            message: e.to_string(),
                        }
                    })? {
                        next = cleared;
                    }
                }
                _ => {}
            }
            let state = next.state;
            self.wake(id);
            if state != RequestState::Pending {
                self.notify_channels(next);
            }
            return Ok(ReviewOutcome {
                state,
                approvals,
                quorum,
            });
        }
    }

    async fn check_review(
        &self,
        record: &RequestRecord,
        review: &Review,
        now: DateTime<Utc>,
    ) -> Result<(), ReviewError> {
        let id = record.id;
        let reviewer = &review.reviewer;
        if let Some(presented) = review.digest
            && presented != record.digest
        {
            return Err(ReviewError::DigestMismatch {
                id,
                stored: record.digest,
                presented,
            });
        }
        // A spelling that cannot be compared safely never reaches the identity checks below.
        if let Err(error) = reviewer.validate() {
            return Err(ReviewError::InvalidIdentity { id, error });
        }
        // Deny wins: an authorized deny also revokes an approval whose grant is not yet used.
        let revoking = record.state == RequestState::Approved && review.verdict == Verdict::Deny;
        if record.state != RequestState::Pending && !revoking {
            return Err(ReviewError::AlreadyDecided {
                id,
                state: record.state,
                by: decided_by(record),
            });
        }
        if !revoking && now >= record.expires_at {
            self.expire(record)
                .await
                .map_err(|e| ReviewError::Unavailable {
                    component: Component::Store,
                    message: e.to_string(),
                })?;
            return Err(ReviewError::Expired { id });
        }
        if reviewer.kind != PrincipalKind::Human {
            return Err(ReviewError::NotHuman {
                reviewer: reviewer.id.clone(),
                kind: reviewer.kind,
            });
        }
        if record
            .request
            .initiator
            .as_ref()
            .is_none_or(|i| i.is_self(reviewer))
        {
            return Err(ReviewError::SelfApproval {
                id,
                reviewer: reviewer.id.clone(),
            });
        }
        if !record.requirement.authorizes(reviewer, record.escalated) {
            return Err(ReviewError::NotAuthorized {
                id,
                reviewer: reviewer.id.clone(),
            });
        }
        if record.requirement.reason_required
            && review.reason.as_deref().is_none_or(|r| r.trim().is_empty())
        {
            return Err(ReviewError::ReasonRequired { id });
        }
        if review.verdict == Verdict::Approve
            && record.approvers().iter().any(|p| p.same_identity(reviewer))
        {
            return Err(ReviewError::AlreadyReviewed {
                id,
                reviewer: reviewer.id.clone(),
            });
        }
        Ok(())
    }

    async fn audit_rejection(
        &self,
        record: &RequestRecord,
        review: &Review,
        refused: &ReviewError,
    ) {
        if let Some(cause) = refused.cause() {
            let event = self.event(
                record,
                EventDetail::ReviewRejected {
                    reviewer: Some(review.reviewer.clone()),
                    channel: review.channel.clone(),
                    cause,
                    detail: refused.to_string(),
                },
            );
            // The review is refused either way; a failing sink cannot make it pass.
            let _ = self.record_bounded(&event).await;
        }
    }

    /// Records a callback that a channel refused before it reached [`decide`](Gate::decide)
    /// (failed signature or token, replay, unknown reviewer), when it names a request that
    /// exists. Returns whether an event was written.
    pub async fn record_rejected_callback(
        &self,
        id: RequestId,
        reviewer: Option<Principal>,
        channel: &str,
        cause: RejectCause,
        detail: &str,
    ) -> bool {
        let Ok(Some(record)) = self.bounded(self.inner.store.get(id)).await else {
            return false;
        };
        let event = self.event(
            &record,
            EventDetail::ReviewRejected {
                reviewer,
                channel: channel.to_owned(),
                cause,
                detail: detail.to_owned(),
            },
        );
        self.record_bounded(&event).await.is_ok()
    }

    /// Withdraws a pending request. `by` is recorded; who may cancel is the caller's decision
    /// (the HTTP API allows the initiator and administrators).
    pub async fn cancel(
        &self,
        id: RequestId,
        by: Option<Principal>,
        reason: Option<String>,
    ) -> Result<RequestState, ReviewError> {
        match self.cancel_pending(id, by, reason).await {
            Ok(CancelOutcome::Cancelled) => Ok(RequestState::Cancelled),
            Ok(CancelOutcome::NotPending(record)) => Err(ReviewError::AlreadyDecided {
                id,
                state: record.state,
                by: decided_by(&record),
            }),
            Ok(CancelOutcome::Missing) => Err(ReviewError::NotFound(id)),
            Err(e) => Err(ReviewError::Unavailable {
                component: Component::Store,
                message: e.to_string(),
            }),
        }
    }

    /// Pending requests, newest first.
    pub async fn pending(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.bounded(self.inner.store.list(&ListFilter::pending()))
            .await
    }

    /// One request.
    pub async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.bounded(self.inner.store.get(id)).await
    }

    /// Expires, escalates and lapses whatever is due, and audits decisions whose reviewer
    /// persisted them but died or failed before auditing them (after `audit_recovery_after`).
    /// Safe to run on every replica at once: each change is a compare-and-set, so each
    /// happens once.
    pub async fn sweep(&self) -> Result<SweepReport, GuardError> {
        let mut report = SweepReport::default();
        let filter = ListFilter {
            states: vec![RequestState::Pending, RequestState::Approved],
            ..Default::default()
        };
        // Denials are terminal, so only those still waiting for their audit events are read.
        let unaudited_denials = ListFilter {
            states: vec![RequestState::Denied],
            audit_pending: Some(true),
            ..Default::default()
        };
        let now = self.now();
        let mut records = self.store_call(self.inner.store.list(&filter)).await?;
        records.extend(
            self.store_call(self.inner.store.list(&unaudited_denials))
                .await?,
        );
        for record in records {
            match record.state {
                RequestState::Pending if now >= record.expires_at => {
                    report.expired += usize::from(self.expire(&record).await?);
                }
                RequestState::Pending
                    if !record.escalated && record.escalate_at.is_some_and(|t| now >= t) =>
                {
                    report.escalated += usize::from(self.escalate(&record).await?);
                }
                // A decision its reviewer persisted but did not audit (it died or failed
                // in between), which no waiting agent has recorded since.
                RequestState::Approved | RequestState::Denied
                    if record.audit_pending && now >= self.recover_at(&record) =>
                {
                    self.recover_decision(&record).await?;
                    report.recovered += 1;
                }
                RequestState::Approved if record.grant_expires_at.is_some_and(|t| now >= t) => {
                    report.lapsed += usize::from(self.lapse(&record).await?);
                }
                _ => {}
            }
        }
        Ok(report)
    }

    /// Runs [`sweep`](Gate::sweep) every `interval` until the returned handle is aborted.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let gate = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let _ = gate.sweep().await;
            }
        })
    }

    // ------------------------------------------------------------------------------------
    // Transitions.

    /// Pending -> Expired. Returns whether this call made the change.
    async fn expire(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        let mut next = record.clone();
        next.state = RequestState::Expired;
        next.resolution = Some(Box::new(Resolution {
            by: None,
            reason: Some("no decision before the deadline".into()),
            at: self.now(),
        }));
        self.transition(record, next, EventDetail::Expired {}).await
    }

    /// When a decision still flagged `audit_pending` is recorded by someone other than its
    /// reviewer: `audit_recovery_after` past the last review.
    fn recover_at(&self, record: &RequestRecord) -> DateTime<Utc> {
        let decided_at = record.reviews.last().map_or(record.created_at, |r| r.at);
        decided_at + to_delta(self.inner.audit_recovery_after)
    }

    /// Records the events of the decisions (approval, denial, or an approval and the deny
    /// that revoked it) that their reviewers' `decide()` persisted but did not audit, then
    /// clears their flags. In that rare case an event may appear twice (the reviewer's call
    /// may have recorded it and died before clearing); it never appears zero times before the
    /// decision takes effect.
    async fn recover_decision(&self, record: &RequestRecord) -> Result<(), GuardError> {
        let unaudited = record.unaudited_decisions();
        if unaudited.approval {
            self.audit(self.event(record, approved_event(record))).await?;
            self.mark_audited(record.id, Verdict::Approve).await?;
        }
        if unaudited.denial {
            self.recover_denial(record).await?;
            self.mark_audited(record.id, Verdict::Deny).await?;
        }
        Ok(())
    }

    /// Records the `reviewed` and `denied` events of a denial.
    async fn recover_denial(&self, record: &RequestRecord) -> Result<(), GuardError> {
        if let Some(review) = record
            .reviews
            .iter()
            .rev()
            .find(|r| r.verdict == Verdict::Deny)
        {
            self.audit(self.event(
                record,
                EventDetail::Reviewed {
                    reviewer: review.reviewer.clone(),
                    verdict: Verdict::Deny,
                    reason: review.reason.clone(),
                    channel: review.channel.clone(),
                    approvals: record.approvers().len() as u32,
                    quorum: record.requirement.quorum,
                },
            ))
            .await?;
        }
        let resolution = record.resolution.as_ref();
        match resolution.and_then(|r| r.by.clone()) {
            Some(by) => {
                let reason = resolution.and_then(|r| r.reason.clone());
                self.audit(self.event(record, EventDetail::Denied { by, reason }))
                    .await?;
            }
            None => {
                return Err(GuardError::unavailable(
                    Component::Store,
                    format!("request {} is denied but names no reviewer", record.id),
                ));
            }
        }
        Ok(())
    }

    /// Clears the flag of `decision` once its events are recorded, and wakes waiters. Only
    /// that decision's flag: a compare-and-set on the record's version that leaves another
    /// decision's flag set (a revoking deny's, when this is the approval it revoked), so one
    /// decision's recording never clears another's. Returns the record as it now is.
    async fn mark_audited(
        &self,
        id: RequestId,
        decision: Verdict,
    ) -> Result<Option<RequestRecord>, GuardError> {
        let record = self.update(id, |r| r.mark_audited(decision)).await?;
        self.wake(id);
        Ok(record)
    }

    /// Approved -> Lapsed.
    async fn lapse(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        let mut next = record.clone();
        next.state = RequestState::Lapsed;
        self.transition(record, next, EventDetail::Lapsed {}).await
    }

    /// Marks the request escalated and asks the escalation reviewers.
    async fn escalate(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        let Some(escalation) = record.requirement.escalation.clone() else {
            return Ok(false);
        };
        let mut next = record.clone();
        next.escalated = true;
        let changed = self
            .transition(
                record,
                next.clone(),
                EventDetail::Escalated {
                    users: escalation.users,
                    groups: escalation.groups,
                },
            )
            .await?;
        if changed {
            next.version = record.version + 1;
            self.dispatch(next, DispatchReason::Escalation).await?;
        }
        Ok(changed)
    }

    /// One compare-and-set plus its audit event; wakes waiters and updates channels.
    async fn transition(
        &self,
        record: &RequestRecord,
        mut next: RequestRecord,
        detail: EventDetail,
    ) -> Result<bool, GuardError> {
        if !self
            .store_call(self.inner.store.compare_and_set(record.version, &next))
            .await?
        {
            return Ok(false);
        }
        next.version = record.version + 1;
        self.audit(self.event(&next, detail)).await?;
        self.wake(next.id);
        if next.state != record.state {
            self.notify_channels(next);
        }
        Ok(true)
    }

    /// Pending -> Cancelled.
    async fn cancel_pending(
        &self,
        id: RequestId,
        by: Option<Principal>,
        reason: Option<String>,
    ) -> Result<CancelOutcome, GuardError> {
        loop {
            let Some(record) = self.store_call(self.inner.store.get(id)).await? else {
                return Ok(CancelOutcome::Missing);
            };
            if record.state != RequestState::Pending {
                return Ok(CancelOutcome::NotPending(Box::new(record)));
            }
            let mut next = record.clone();
            next.state = RequestState::Cancelled;
            next.resolution = Some(Box::new(Resolution {
                by: by.clone(),
                reason: reason.clone(),
                at: self.now(),
            }));
            let detail = EventDetail::Cancelled {
                by: by.clone(),
                reason: reason.clone(),
            };
            if self.transition(&record, next, detail).await? {
                return Ok(CancelOutcome::Cancelled);
            }
        }
    }

    /// Read-modify-write with retries; `change` returns false to leave the record alone.
    async fn update(
        &self,
        id: RequestId,
        mut change: impl FnMut(&mut RequestRecord) -> bool,
    ) -> Result<Option<RequestRecord>, GuardError> {
        loop {
            let Some(record) = self.store_call(self.inner.store.get(id)).await? else {
                return Ok(None);
            };
            let mut next = record.clone();
            if !change(&mut next) {
                return Ok(Some(record));
            }
            if self
                .store_call(self.inner.store.compare_and_set(record.version, &next))
                .await?
            {
                next.version = record.version + 1;
                return Ok(Some(next));
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Plumbing.

    fn event(&self, record: &RequestRecord, detail: EventDetail) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at: self.now(),
            request_id: record.id,
            kind: record.request.kind.as_str().into(),
            resource: record.request.resource.as_str().into(),
            digest: record.digest,
            detail,
        }
    }

    // Not an `async fn`: one of those keeps its arguments twice in its state (rust-lang/rust
    // issue 62958), and an event is a few hundred bytes on every guard() call.
    #[allow(clippy::manual_async_fn)]
    fn audit(&self, event: AuditEvent) -> impl Future<Output = Result<(), GuardError>> + '_ {
        async move { self.audit_ref(&event).await }
    }

    /// Records `event`, for callers that still need what it holds afterwards.
    async fn audit_ref(&self, event: &AuditEvent) -> Result<(), GuardError> {
        self.record_bounded(event)
            .await
            .map_err(|e| GuardError::unavailable(Component::Audit, e))
    }

    /// Records one event, waiting no longer than the store timeout: a hung sink refuses the
    /// action, like an unresponsive store, instead of hanging the caller.
    async fn record_bounded(&self, event: &AuditEvent) -> Result<(), crate::audit::AuditError> {
        within(self.inner.store_timeout, self.inner.audit.record(event))
            .await
            .unwrap_or_else(|unfinished| Err(crate::audit::AuditError::new(unfinished.to_string())))
    }

    /// The policy version as a shared string, refreshed if the policy reports a new one.
    fn shared_policy_version(&self) -> Arc<str> {
        let current = self.inner.policy.version();
        let mut cached = self
            .inner
            .policy_version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if &**cached != current {
            *cached = Arc::from(current);
        }
        cached.clone()
    }

    async fn store_call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, GuardError> {
        self.bounded(call)
            .await
            .map_err(|e| GuardError::unavailable(Component::Store, e))
    }

    /// A store call limited to the configured store timeout, so no caller (a `guard()`, a
    /// channel's inbound handler) hangs on an unresponsive database.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.inner.store_timeout, call)
            .await
            .unwrap_or_else(|unfinished| Err(StoreError::Unavailable(unfinished.to_string())))
    }

    fn waiter(&self, id: RequestId) -> Arc<Notify> {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.entry(id).or_default().clone()
    }

    fn release_waiter(&self, id: RequestId, notify: Arc<Notify>) {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // The map holds one reference and `notify` another: nobody else is waiting.
        if Arc::strong_count(&notify) <= 2 {
            waiters.remove(&id);
        }
    }

    fn wake(&self, id: RequestId) {
        wake_waiter(&self.inner, id);
    }

    /// Starts (or restarts, if its runtime went away) the one task per gate that listens to
    /// the store's change notifications and wakes only the waiter of the changed request.
    /// One listener per gate rather than per waiter: with thousands of waiting agents, every
    /// change would otherwise wake every one of them.
    fn forward_store_changes(&self) {
        let mut forwarder = self
            .inner
            .forwarder
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if forwarder.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Some(mut changes) = self.inner.store.changes() else {
            return;
        };
        let inner = Arc::downgrade(&self.inner);
        *forwarder = Some(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let changed = changes.recv().await;
                let Some(inner) = inner.upgrade() else {
                    return; // The gate is gone.
                };
                match changed {
                    Ok(id) => wake_waiter(&inner, id),
                    // Missed some notifications: every waiter re-reads to be safe.
                    Err(RecvError::Lagged(_)) => {
                        let waiters = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
                        for notify in waiters.values() {
                            notify.notify_waiters();
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }));
    }

    /// Tells every channel the request changed, in the background (a slow chat API must not
    /// hold up the decision). Failures are audited as `dispatch_failed`.
    fn notify_channels(&self, record: RequestRecord) {
        if self.inner.approvers.is_empty() {
            return;
        }
        let gate = self.clone();
        tokio::spawn(async move {
            for approver in &gate.inner.approvers {
                let updated = within(gate.inner.approver_timeout, approver.resolved(&record))
                    .await
                    .unwrap_or_else(|unfinished| {
                        Err(ApproverError::new(approver.name(), unfinished.to_string()))
                    });
                if let Err(e) = updated {
                    let event = gate.event(
                        &record,
                        EventDetail::DispatchFailed {
                            channel: approver.name().to_owned(),
                            error: format!("could not update the message: {}", e.message),
                        },
                    );
                    let _ = gate.record_bounded(&event).await;
                }
            }
        });
    }
}

/// What [`Gate::wait_step`] found.
enum WaitStep {
    /// Still waiting; wake up by this time.
    Until(DateTime<Utc>),
    /// A transition was made; look again.
    Again,
    /// Approved and audited: the grant.
    Done(Box<Grant>),
}

enum CancelOutcome {
    Cancelled,
    NotPending(Box<RequestRecord>),
    Missing,
}

struct EventSubject {
    id: RequestId,
    kind: Arc<str>,
    resource: Arc<str>,
    digest: Digest,
}

impl EventSubject {
    fn event(&self, at: DateTime<Utc>, detail: EventDetail) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at,
            request_id: self.id,
            kind: self.kind.clone(),
            resource: self.resource.clone(),
            digest: self.digest,
            detail,
        }
    }
}

/// A refusal found before anything about an action is recorded: the cause and detail for the
/// `request_refused` event, and the caller's error.
type Refusal = (RefusalCause, String, GuardError);

/// The initiator of an action submitted under the authenticated `initiator`. The action may
/// name none (the common case: the authenticated one is used as it is), or name the same
/// principal and `on_behalf_of` human (compared as identities) and add a session, a prompt
/// reference, or a model where the authenticated initiator has none. Anything else — another
/// agent or service, another kind of principal, a dropped, added or changed `on_behalf_of`,
/// another model — is refused: the initiator is who authenticated, not what the action says.
fn bind_initiator(
    initiator: &Arc<Initiator>,
    claimed: Option<&Initiator>,
) -> Result<Arc<Initiator>, Refusal> {
    let Some(claimed) = claimed else {
        return Ok(initiator.clone());
    };
    let same_principal = |a: &Principal, b: &Principal| a.kind == b.kind && a.same_identity(b);
    let same_human = match (&initiator.on_behalf_of, &claimed.on_behalf_of) {
        (None, None) => true,
        (Some(a), Some(b)) => same_principal(a, b),
        _ => false,
    };
    let same_model = match (&initiator.model, &claimed.model) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    if !(same_principal(&initiator.principal, &claimed.principal) && same_human && same_model) {
        let (authenticated, claimed) = (describe(initiator), describe(claimed));
        let detail = format!("the action claims {claimed}; the authenticated initiator is {authenticated}");
        return Err((
            RefusalCause::InitiatorMismatch,
            detail,
            GuardError::InitiatorMismatch {
                authenticated,
                claimed,
            },
        ));
    }
    let adds = |mine: &Option<String>, theirs: &Option<String>| theirs.is_some() && mine != theirs;
    if !(adds(&initiator.session, &claimed.session)
        || adds(&initiator.prompt_ref, &claimed.prompt_ref)
        || adds(&initiator.model, &claimed.model))
    {
        return Ok(initiator.clone());
    }
    let mut bound = (**initiator).clone();
    for (slot, claim) in [
        (&mut bound.session, &claimed.session),
        (&mut bound.prompt_ref, &claimed.prompt_ref),
        (&mut bound.model, &claimed.model),
    ] {
        if claim.is_some() {
            slot.clone_from(claim);
        }
    }
    Ok(Arc::new(bound))
}

/// An initiator in words, for refusals (ids clipped: they come from the action).
fn describe(initiator: &Initiator) -> String {
    let p = &initiator.principal;
    let mut text = format!("{} {:?}", p.kind, clip(&p.id, 128));
    if let Some(human) = &initiator.on_behalf_of {
        text.push_str(&format!(" on behalf of {:?}", clip(&human.id, 128)));
    } else {
        text.push_str(" on behalf of nobody");
    }
    if let Some(model) = &initiator.model {
        text.push_str(&format!(" (model {:?})", clip(model, 128)));
    }
    text
}

/// Longest idempotency key accepted, in characters.
const MAX_KEY_CHARS: usize = 512;

/// The size and shape limits every action meets before it is recorded or evaluated.
fn check_limits(request: &ActionRequest, size: usize) -> Option<Refusal> {
    let invalid = |message: String| {
        Some((
            RefusalCause::Invalid,
            message.clone(),
            GuardError::InvalidRequest(message),
        ))
    };
    if request.kind.trim().is_empty() || request.kind.chars().count() > MAX_NAME_CHARS {
        return invalid(format!(
            "the action kind must be 1 to {MAX_NAME_CHARS} characters"
        ));
    }
    if request.resource.chars().count() > MAX_NAME_CHARS {
        return invalid(format!(
            "the action resource must be at most {MAX_NAME_CHARS} characters"
        ));
    }
    if request
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.chars().count() > MAX_KEY_CHARS)
    {
        return invalid(format!(
            "the idempotency key must be at most {MAX_KEY_CHARS} characters"
        ));
    }
    if size > MAX_REQUEST_BYTES {
        return Some((
            RefusalCause::Oversized,
            format!("{size} bytes; the limit is {MAX_REQUEST_BYTES}"),
            GuardError::TooLarge {
                size,
                limit: MAX_REQUEST_BYTES,
            },
        ));
    }
    None
}

/// The `approved` event of a record whose approvals reached the quorum.
fn approved_event(record: &RequestRecord) -> EventDetail {
    EventDetail::Approved {
        approvers: record.approvers().into_iter().cloned().collect(),
    }
}

fn wake_waiter(inner: &Inner, id: RequestId) {
    let waiters = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(notify) = waiters.get(&id) {
        notify.notify_waiters();
    }
}

/// When the request was decided: the last accepted review (the one that reached the quorum, or
/// the denial).
fn finish_execution(record: &mut RequestRecord, now: DateTime<Utc>, error: Option<String>) -> bool {
    if record.state != RequestState::Executing {
        return false;
    }
    record.state = if error.is_some() {
        RequestState::Failed
    } else {
        RequestState::Executed
    };
    let started_at = record.execution.as_ref().map_or(now, |e| e.started_at);
    record.execution = Some(Box::new(crate::store::Execution {
        started_at,
        finished_at: Some(now),
        error,
    }));
    true
}

/// Fills the fields `context` leaves empty from the gate's `defaults`. The common cases copy
/// nothing: a request without context shares the defaults, and one that needs nothing from
/// them is left as it is.
fn with_defaults(context: &mut Arc<RequestContext>, defaults: &Arc<RequestContext>) {
    fn missing(slot: &Option<String>, default: &Option<String>) -> bool {
        slot.is_none() && default.is_some()
    }
    if context.is_empty() {
        context.clone_from(defaults);
        return;
    }
    let needed = missing(&context.environment, &defaults.environment)
        || missing(&context.ticket, &defaults.ticket)
        || missing(&context.commit, &defaults.commit)
        || missing(&context.impact, &defaults.impact)
        || (context.risk.is_none() && defaults.risk.is_some());
    if !needed {
        return;
    }
    let ctx = Arc::make_mut(context);
    fill(&mut ctx.environment, &defaults.environment);
    fill(&mut ctx.ticket, &defaults.ticket);
    fill(&mut ctx.commit, &defaults.commit);
    fill(&mut ctx.impact, &defaults.impact);
    if ctx.risk.is_none() {
        ctx.risk = defaults.risk;
    }
}

fn fill(slot: &mut Option<String>, default: &Option<String>) {
    if slot.is_none() {
        slot.clone_from(default);
    }
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn decided_by(record: &RequestRecord) -> Option<String> {
    match record.state {
        RequestState::Denied | RequestState::Cancelled => record
            .resolution
            .as_ref()
            .and_then(|r| r.by.as_ref())
            .map(|p| p.label().to_owned()),
        RequestState::Pending | RequestState::Expired | RequestState::Lapsed => None,
        _ => {
            let names: Vec<&str> = record.approvers().iter().map(|p| p.label()).collect();
            (!names.is_empty()).then(|| names.join(", "))
        }
    }
}

/// The caller-facing error for a request that ended without a grant.
fn refusal(record: &RequestRecord) -> GuardError {
    let id = record.id;
    let resolution = record.resolution.as_ref();
    match record.state {
        RequestState::Denied => {
            let denial = record.denial();
            GuardError::Denied {
                id,
                by: denial.map_or_else(
                    || "a reviewer".to_owned(),
                    |d| d.reviewer.label().to_owned(),
                ),
                reason: denial.and_then(|d| d.reason.clone()),
            }
        }
        RequestState::Expired => GuardError::Expired {
            id,
            approvals: record.approvers().len() as u32,
            quorum: record.requirement.quorum,
        },
        RequestState::Cancelled => GuardError::Cancelled {
            id,
            by: resolution
                .and_then(|r| r.by.as_ref())
                .map(|p| p.label().to_owned()),
            reason: resolution.and_then(|r| r.reason.clone()),
        },
        RequestState::Lapsed => GuardError::GrantLapsed { id },
        state => GuardError::GrantUsed { id, state },
    }
}

fn review_unavailable(e: StoreError) -> ReviewError {
    ReviewError::Unavailable {
        component: Component::Store,
        message: e.to_string(),
    }
}

fn audit_unavailable(e: GuardError) -> ReviewError {
    ReviewError::Unavailable {
        component: Component::Audit,
        message: e.to_string(),
    }
}

// ----------------------------------------------------------------------------------------
// The process-wide default gate.

static DEFAULT_GATE: RwLock<Option<Gate>> = RwLock::new(None);

/// Sets the gate used by the free functions [`guard`] and [`run`] (and by
/// `#[requires_approval]` without `gate = ..`). Returns the previous one.
pub fn set_default_gate(gate: Gate) -> Option<Gate> {
    DEFAULT_GATE
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .replace(gate)
}

/// The process-wide default gate, if set.
pub fn default_gate() -> Option<Gate> {
    DEFAULT_GATE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// [`Gate::guard`] on the process-wide default gate.
pub async fn guard<A: Action + ?Sized>(action: &A) -> Result<Grant, GuardError> {
    default_gate()
        .ok_or(GuardError::NoDefaultGate)?
        .guard(action)
        .await
}

/// [`Gate::run`] on the process-wide default gate.
pub async fn run<A, F, Fut, T, E>(action: &A, f: F) -> Result<T, E>
where
    A: Action + ?Sized,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<GuardError> + std::fmt::Display,
{
    let gate = default_gate().ok_or(GuardError::NoDefaultGate)?;
    gate.run(action, f).await
}
