//! The gate: the executor of the lifecycle rules. For each operation it loads the record,
//! applies the rule from [`lifecycle`](crate::lifecycle), compares-and-sets the result, audits
//! its events and wakes whoever waits; it evaluates policy, delivers requests to channels and
//! runs approved actions exactly once.
//!
//! Files by concern: this one holds the API types and the builder; `submit` admits and stores
//! actions; `run` waits, issues grants and executes; `review` applies verdicts; `maintenance`
//! makes due transitions (sweeps, recovery); `io` bounds every store, audit and channel call.

use arcstr::ArcStr;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::approver::Approver;
use crate::audit::AuditSink;
use crate::clock::{Clock, SystemClock};
use crate::credential::CredentialBroker;
use crate::error::GuardError;
use crate::memory::MemoryStore;
use crate::policy::Policy;
use crate::request::{Action, ActionRequest, Digest, Initiator, Principal, RequestContext};
use crate::store::{RequestId, Store};

pub use crate::lifecycle::{Review, ReviewOutcome};
pub use review::PendingPage;
pub use standing::StandingProposal;

mod credential;
mod io;
mod maintenance;
mod plan;
mod poll;
mod review;
mod run;
mod standing;
mod submit;
#[cfg(test)]
mod testing;
mod wait;

pub use crate::admission::MAX_REQUEST_BYTES;

/// Proof that one exact action may run now. Single-use: [`Gate::execute`] consumes it.
#[derive(Debug)]
pub struct Grant {
    request_id: RequestId,
    digest: Digest,
    approvers: Vec<Principal>,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    policy_rule: Option<ArcStr>,
    policy_version: ArcStr,
    approved: bool,
    initiator: Arc<Initiator>,
    edited: Option<Box<ActionRequest>>,
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
    /// When reviewers approved a changed version of the action ([`edit`](crate::edit)): that
    /// version, the only one this grant runs. `None` when the action was approved as asked.
    pub fn edited_action(&self) -> Option<&ActionRequest> {
        self.edited.as_deref()
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
    /// Pending requests whose reviewers were reminded.
    pub reminded: usize,
    /// Approved requests whose grant lapsed.
    pub lapsed: usize,
    /// Decisions (approvals and denials) whose audit events were recorded by the sweep
    /// because the reviewer's `decide()` failed or died after persisting them.
    pub recovered: usize,
    /// Credentials revoked because their run left them outstanding (its process died, or
    /// its own revocation failed).
    pub revoked: usize,
    /// Expired credentials the broker found and revoked that no request record named
    /// ([`CredentialBroker::revoke_expired`]): left by a process that died while running an
    /// action the policy allowed outright.
    pub credentials_expired: usize,
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
    broker: Option<Arc<dyn CredentialBroker>>,
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

    /// The broker that mints a credential for each action run with
    /// [`Gate::execute_with_credential`] or [`Gate::run_with_credential`] (default: none;
    /// those calls then refuse). Its calls are bounded by the store timeout.
    pub fn credential_broker(mut self, broker: impl CredentialBroker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// A shared credential broker.
    pub fn credential_broker_shared(mut self, broker: Arc<dyn CredentialBroker>) -> Self {
        self.broker = Some(broker);
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
        let policy_version = Mutex::new(ArcStr::from(policy.version()));
        let recorded = self.store.recorded_writes(&*audit);
        Ok(Gate {
            inner: Arc::new(Inner {
                policy_version,
                policy,
                store: self.store,
                audit,
                recorded,
                approvers: self.approvers,
                clock: self.clock,
                initiator: self.initiator.map(Arc::new),
                context: Arc::new(self.context),
                broker: self.broker,
                grant_ttl: self.grant_ttl,
                store_timeout: self.store_timeout,
                approver_timeout: self.approver_timeout,
                poll_interval: self.poll_interval,
                audit_recovery_after: self.audit_recovery_after,
                waiters: Mutex::new(HashMap::new()),
                updates: Mutex::new(HashMap::new()),
                reporting: Mutex::default(),
                forwarder: Mutex::new(None),
                polls: Mutex::default(),
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
    /// Set when the store keeps the audit sink's log: each transition then commits with its
    /// events ([`Store::recorded_writes`]).
    recorded: Option<Arc<dyn crate::store::RecordedWrites>>,
    approvers: Vec<Arc<dyn Approver>>,
    clock: Arc<dyn Clock>,
    initiator: Option<Arc<Initiator>>,
    context: Arc<RequestContext>,
    broker: Option<Arc<dyn CredentialBroker>>,
    grant_ttl: Duration,
    store_timeout: Duration,
    approver_timeout: Duration,
    poll_interval: Duration,
    audit_recovery_after: Duration,
    waiters: Mutex<HashMap<RequestId, Arc<Notify>>>,
    /// Requests whose channels are being told of a change, with the changes queued behind it
    /// (see `Gate::notify_channels`).
    updates: Mutex<HashMap<RequestId, io::Updates>>,
    /// Requests whose execution outcome is being recorded (see `Gate::finish_execution`).
    reporting: Mutex<std::collections::HashSet<RequestId>>,
    /// The task that turns the store's change notifications into wake-ups of the one waiter
    /// concerned (started with the first wait).
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When each parked waiter looks again at the latest (see `gate/poll.rs`).
    polls: Mutex<poll::PollQueue>,
    /// The policy's version as last seen, shared by the events and grants that record it.
    policy_version: Mutex<ArcStr>,
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
            broker: None,
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
