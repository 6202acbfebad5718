//! Audit events (schema version 1) and the sinks that record them.
//!
//! Every event is one JSON object:
//!
//! ```json
//! {"schema":1,"at":"2026-11-21T12:00:00.000123Z","event":"reviewed",
//!  "request_id":"0193...","kind":"data.export","resource":"db://prod/customers",
//!  "digest":"sha256:...","reviewer":{"kind":"human","id":"sam@example.com"},
//!  "verdict":"approve","channel":"slack","approvals":1,"quorum":1}
//! ```
//!
//! The common fields are `schema` (this is version 1), `at` (RFC 3339, UTC), `event`,
//! `request_id`, and the action's `kind`, `resource` and `digest`. The rest depend on `event`:
//!
//! | event | fields | when |
//! |---|---|---|
//! | `requested` | `request` (the whole [`ActionRequest`]) | `guard()` received an action |
//! | `policy_decided` | `decision` (`outcome`: `allow`, `deny` or `require_approval`, `rule`, `reason`, `requirement`), `policy_version` | the policy decided |
//! | `dispatched` | `channel` | a channel delivered the request to reviewers |
//! | `dispatch_failed` | `channel`, `error` | a channel could not deliver it |
//! | `reviewed` | `reviewer`, `verdict`, `reason`, `channel`, `approvals`, `quorum` | a review was accepted |
//! | `review_rejected` | `reviewer`, `channel`, `cause`, `detail` | a review was refused (self-approval, not authorized, not human, expired, already decided, forged, an edit out of bounds (`edit_refused`), ...) |
//! | `edited` | `by`, `from_digest`, `changes`, `decision`, `policy_version` | a reviewer approved a changed version of the action ([`edit`](crate::edit)); `digest` is the edited action's, `decision` the policy's on it; the editor's `reviewed` follows |
//! | `approved` | `approvers` | the quorum was reached |
//! | `denied` | `by`, `reason` | a reviewer denied it |
//! | `escalated` | `users`, `groups` | further reviewers were asked |
//! | `expired` | | nobody decided in time |
//! | `cancelled` | `by`, `reason` | the request was withdrawn |
//! | `grant_issued` | `approvers`, `expires_at` | the caller received a grant |
//! | `grant_rejected` | `cause`, `detail` | a grant was presented for the wrong action, twice, or too late |
//! | `lapsed` | | an approved grant was not used in time |
//! | `grant_consumed` | | the action is about to run |
//! | `executed` | `ok`, `error`, `initiator` | the action finished (`initiator`: who ran it) |
//! | `request_refused` | `cause` (`initiator_mismatch`, `oversized`, `invalid`), `detail`, `size`, `initiator` | an action was refused before it was recorded: its size and digest, never its body |
//! | `resubmission_refused` | `earlier`, `by`, `reason`, `until` | a recent denial of the same action refused it without asking anyone |
//! | `credential_issued`, `credential_revoked` | `credential` (id, scope, expiry; never the secret), `reason` (revoked) | a credential was minted for the run, or revoked |
//! | `standing_grant_used` | `request`, `action_digest`, `used`, `uses` | on a standing grant ([`standing`](crate::standing)): it approved the action stored as `request` |
//! | `plan_item_used` | `request`, `action_digest`, `item`, `items` | on a plan ([`plan`](crate::plan)): it approved its item number `item` (from 0), the action stored as `request` |
//! | `approved_by_plan` | `plan`, `item`, `approvers` | on an action: an approved plan held it as item `item`; `approvers` approved the plan |
//! | `approved_by_standing_grant` | `standing`, `approvers` | on an action: a standing grant approved it without asking; `approvers` approved the grant |
//!
//! Allowed actions (no approval needed) have `requested`, `policy_decided` and, when run
//! through the gate, `grant_consumed` and `executed` events; they are not stored as requests.
//! New fields may be added within a schema version; consumers must ignore unknown fields.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arcstr::ArcStr;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::Decision;
use crate::request::{ActionRequest, Digest, Initiator, Principal};
use crate::store::{RequestId, Verdict};

/// The audit event schema version written by this library.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// One audit event. See the [module docs](self) for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Schema version ([`AUDIT_SCHEMA_VERSION`]).
    pub schema: u32,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The request it is about.
    pub request_id: RequestId,
    /// The action kind (shared with the request's, so an event does not copy the text).
    pub kind: ArcStr,
    /// The action resource (shared like `kind`).
    pub resource: ArcStr,
    /// The action digest.
    pub digest: Digest,
    /// What happened.
    #[serde(flatten)]
    pub detail: EventDetail,
}

impl AuditEvent {
    /// The event's name (`requested`, `reviewed`, ...).
    pub fn name(&self) -> &'static str {
        self.detail.name()
    }
}

/// Why a review or grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCause {
    /// The reviewer is the initiator or the human it acts for.
    SelfApproval,
    /// The reviewer is an agent or a service.
    NotHuman,
    /// The reviewer is not in the requirement's users or groups.
    NotAuthorized,
    /// The channel could not map the clicker to exactly one principal.
    UnknownReviewer,
    /// A reason was required and missing.
    ReasonRequired,
    /// The request was already decided.
    AlreadyDecided,
    /// This reviewer's approval was already counted.
    DuplicateReview,
    /// The request had expired.
    Expired,
    /// The review or grant named another action digest.
    DigestMismatch,
    /// The grant was already used.
    AlreadyUsed,
    /// The grant expired before use.
    Lapsed,
    /// The inbound callback failed authentication (signature, token, replay).
    Forged,
    /// The reviewer's id cannot be compared safely (invisible, bidi-control or mixed-script
    /// characters; see [`identity`](crate::identity)): a spelling trick, or a broken mapping.
    InvalidIdentity,
    /// An edit on approve was refused: outside the rule's editable parameters, not allowed by
    /// the rule, or refused by the policy once edited ([`edit`](crate::edit)).
    EditRefused,
    /// An approval under a rule with `step_up` came without a proof (from a chat channel,
    /// say) ([`step_up`](crate::step_up)).
    StepUpRequired,
    /// A step-up proof was refused: of another request or digest, without user verification,
    /// or reused.
    StepUpInvalid,
}

/// The event-specific part of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventDetail {
    /// `guard()` received an action.
    Requested {
        /// The whole request.
        request: Arc<ActionRequest>,
    },
    /// The policy decided.
    PolicyDecided {
        /// Its decision.
        decision: Decision,
        /// The policy version.
        policy_version: ArcStr,
    },
    /// A channel delivered the request.
    Dispatched {
        /// The channel.
        channel: String,
    },
    /// A channel could not deliver the request.
    DispatchFailed {
        /// The channel.
        channel: String,
        /// What went wrong.
        error: String,
    },
    /// A review was accepted.
    Reviewed {
        /// Who.
        reviewer: Principal,
        /// Approve or deny.
        verdict: Verdict,
        /// Their reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Through which channel.
        channel: String,
        /// Distinct approvals so far.
        approvals: u32,
        /// Approvals needed.
        quorum: u32,
        /// The reviewer's step-up proof, under a rule that requires one
        /// ([`step_up`](crate::step_up)): raw, so it can be verified again with the
        /// registered public key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_up: Option<Box<crate::step_up::StepUpProof>>,
    },
    /// A reviewer approved a changed version of the action ([`edit`](crate::edit)): the
    /// event's `digest` is the edited action's, `from_digest` the one it replaced, `decision`
    /// the policy's decision on the edited action. The `reviewed` event that follows is the
    /// editor's approval, the first counted toward the quorum of the edited digest.
    Edited {
        /// The reviewer who edited.
        by: Principal,
        /// The digest of the action before the edit.
        from_digest: Digest,
        /// The parameters that changed, with their values before and after.
        changes: Vec<crate::edit::FieldChange>,
        /// The policy's decision on the edited action. An edited action the policy would
        /// allow outright still needs the approvals the request needed.
        decision: Decision,
        /// The policy version that decided.
        policy_version: ArcStr,
    },
    /// A review was refused.
    ReviewRejected {
        /// Who tried, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reviewer: Option<Principal>,
        /// Through which channel.
        channel: String,
        /// Why it was refused.
        cause: RejectCause,
        /// Details.
        detail: String,
    },
    /// The quorum was reached.
    Approved {
        /// Distinct approvers.
        approvers: Vec<Principal>,
    },
    /// A reviewer denied the request.
    Denied {
        /// Who.
        by: Principal,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Further reviewers were asked.
    Escalated {
        /// Extra users.
        users: Vec<String>,
        /// Extra groups.
        groups: Vec<String>,
    },
    /// The reviewers of a request still pending were reminded (a `remind_at` point of its
    /// timeout passed).
    Reminded {
        /// Which reminder this is (1 for the first); a late sweep may skip to a later one.
        reminder: u32,
        /// How many the requirement has.
        of: u32,
        /// Approvals so far.
        approvals: u32,
        /// Approvals needed.
        quorum: u32,
        /// When the request expires.
        expires_at: DateTime<Utc>,
    },
    /// Nobody decided in time.
    Expired {},
    /// The request was withdrawn.
    Cancelled {
        /// Who, when a person did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Principal>,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The caller received a grant.
    GrantIssued {
        /// Who approved (empty when the policy allowed).
        approvers: Vec<Principal>,
        /// Until when it may be used.
        expires_at: DateTime<Utc>,
    },
    /// A grant was refused at use.
    GrantRejected {
        /// Why.
        cause: RejectCause,
        /// Details.
        detail: String,
    },
    /// An approved grant was not used in time.
    Lapsed {},
    /// The grant was consumed; the action is about to run.
    GrantConsumed {},
    /// A standing grant (this event's request) approved an action: one of its uses.
    StandingGrantUsed {
        /// The action's own request, approved by this use.
        request: crate::store::RequestId,
        /// That action's digest (`digest` is the event's own: the standing grant's).
        action_digest: Digest,
        /// Which use this is (1 for the first).
        used: u32,
        /// How many uses the standing grant has in all.
        uses: u32,
    },
    /// The action (this event's request) was approved by a standing grant, without asking.
    ApprovedByStandingGrant {
        /// The standing grant's request.
        standing: crate::store::RequestId,
        /// The humans who approved the standing grant.
        approvers: Vec<Principal>,
    },
    /// A plan (this event's request) approved one of its items: the action stored as
    /// `request`, whose digest is that item's.
    PlanItemUsed {
        /// The action's own request, approved by this use.
        request: crate::store::RequestId,
        /// That action's digest, the item's (`digest` is the event's own: the plan's).
        action_digest: Digest,
        /// The item's position in the plan (from 0).
        item: u32,
        /// How many items the plan has.
        items: u32,
    },
    /// The action (this event's request) was approved by a plan it is an item of, without
    /// asking again.
    ApprovedByPlan {
        /// The plan's request.
        plan: crate::store::RequestId,
        /// The item's position in the plan (from 0).
        item: u32,
        /// The humans who approved the plan.
        approvers: Vec<Principal>,
    },
    /// A credential was minted for the run, scoped to the approved action.
    CredentialIssued {
        /// Its id, scope and expiry (never its secret).
        credential: crate::credential::CredentialLease,
    },
    /// The run's credential was revoked.
    CredentialRevoked {
        /// Its id, scope (empty when it was never recorded as issued) and expiry.
        credential: crate::credential::CredentialLease,
        /// Why: the action ran, never ran, or a sweep found it left behind.
        reason: crate::credential::RevokeReason,
    },
    /// The action finished.
    Executed {
        /// Whether it succeeded.
        ok: bool,
        /// The error text when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Who ran it: the agent or service, and the human it acts for. Absent in logs
        /// written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initiator: Option<Arc<Initiator>>,
    },
    /// An action was refused before anything else about it was recorded: it claimed an
    /// initiator other than the authenticated one, was larger than reviewers are shown, or
    /// was malformed. The event records the action's size and digest, never its body.
    RequestRefused {
        /// Why.
        cause: RefusalCause,
        /// Details for the reader of the log (bounded).
        detail: String,
        /// The size of the action's canonical encoding, in bytes.
        size: u64,
        /// The authenticated initiator the action was submitted under, when there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initiator: Option<Arc<Initiator>>,
    },
    /// The policy required approval, but a reviewer had denied the same action within the
    /// rule's `cooldown_after_denial`: refused at once, and no reviewer was asked.
    ResubmissionRefused {
        /// The earlier, denied request.
        earlier: crate::store::RequestId,
        /// Who denied it.
        by: Principal,
        /// Their reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Until when the same action is refused.
        until: DateTime<Utc>,
    },
}

/// Why an action was refused before it reached the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalCause {
    /// The action named an initiator other than the authenticated one (another agent, a
    /// missing or changed `on_behalf_of`, another model).
    InitiatorMismatch,
    /// The action is larger than `MAX_REQUEST_BYTES`.
    Oversized,
    /// The action is malformed (no kind, an over-long name, an invalid identity).
    Invalid,
}

impl EventDetail {
    /// The `event` name.
    pub fn name(&self) -> &'static str {
        match self {
            EventDetail::Requested { .. } => "requested",
            EventDetail::PolicyDecided { .. } => "policy_decided",
            EventDetail::Dispatched { .. } => "dispatched",
            EventDetail::DispatchFailed { .. } => "dispatch_failed",
            EventDetail::Reviewed { .. } => "reviewed",
            EventDetail::ReviewRejected { .. } => "review_rejected",
            EventDetail::Edited { .. } => "edited",
            EventDetail::Approved { .. } => "approved",
            EventDetail::Denied { .. } => "denied",
            EventDetail::Escalated { .. } => "escalated",
            EventDetail::Reminded { .. } => "reminded",
            EventDetail::Expired {} => "expired",
            EventDetail::Cancelled { .. } => "cancelled",
            EventDetail::GrantIssued { .. } => "grant_issued",
            EventDetail::GrantRejected { .. } => "grant_rejected",
            EventDetail::Lapsed {} => "lapsed",
            EventDetail::GrantConsumed {} => "grant_consumed",
            EventDetail::StandingGrantUsed { .. } => "standing_grant_used",
            EventDetail::ApprovedByStandingGrant { .. } => "approved_by_standing_grant",
            EventDetail::PlanItemUsed { .. } => "plan_item_used",
            EventDetail::ApprovedByPlan { .. } => "approved_by_plan",
            EventDetail::CredentialIssued { .. } => "credential_issued",
            EventDetail::CredentialRevoked { .. } => "credential_revoked",
            EventDetail::Executed { .. } => "executed",
            EventDetail::RequestRefused { .. } => "request_refused",
            EventDetail::ResubmissionRefused { .. } => "resubmission_refused",
        }
    }
}

/// An audit sink failed; the gate refuses the action (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("audit sink failed: {message}")]
pub struct AuditError {
    /// What went wrong.
    pub message: String,
}

impl AuditError {
    /// A new error.
    pub fn new(message: impl Into<String>) -> Self {
        AuditError {
            message: message.into(),
        }
    }
}

/// Receives every audit event. An error makes the gate refuse the action it was about.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Records one event durably enough for this sink's promise before returning.
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError>;

    /// Records `events` in order, as [`record`](AuditSink::record) does each: a sink that
    /// can write them in one commit should (the default records them one by one, stopping
    /// at the first failure). A sink wrapping another should forward it.
    async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        for event in events {
            self.record(event).await?;
        }
        Ok(())
    }

    /// A durability barrier, like [`Store::sync`](crate::Store::sync): returns once every
    /// event recorded so far is on disk. A sink may record without syncing and sync here;
    /// the default does nothing (every record is as durable as it will be when it returns).
    /// A sink wrapping another must forward it.
    async fn sync(&self) -> Result<(), AuditError> {
        Ok(())
    }

    /// A barrier that may wait for the sink's next sync instead of causing one, like
    /// [`Store::sync_soon`](crate::Store::sync_soon). The default is
    /// [`sync`](AuditSink::sync). A sink wrapping another should forward it.
    async fn sync_soon(&self) -> Result<(), AuditError> {
        self.sync().await
    }

    /// What this sink's [`sync`](AuditSink::sync) makes durable, when it is also what a
    /// store's sync makes durable ([`Store::sync_domain`](crate::Store::sync_domain)); the
    /// gate then syncs only the store. `None` (the default) when not shared.
    fn sync_domain(&self) -> Option<crate::store::SyncDomain> {
        None
    }

    /// The sink itself, for a store that can write its log in the store's own transactions
    /// ([`Store::recorded_writes`](crate::Store::recorded_writes)) and needs to recognise it.
    /// `None` (the default) for every other sink. A sink wrapping another must not forward
    /// it when the wrapper does something of its own with each event.
    fn as_log(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

#[async_trait]
impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        (**self).record(event).await
    }
    async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        (**self).record_all(events).await
    }
    async fn sync(&self) -> Result<(), AuditError> {
        (**self).sync().await
    }
    async fn sync_soon(&self) -> Result<(), AuditError> {
        (**self).sync_soon().await
    }
    fn sync_domain(&self) -> Option<crate::store::SyncDomain> {
        (**self).sync_domain()
    }
    fn as_log(&self) -> Option<&dyn std::any::Any> {
        (**self).as_log()
    }
}

/// Writes each event as one JSON line to stdout, stderr or a file.
///
/// Plain lines are a feed, not evidence: they carry no hash chain, no signed checkpoints and
/// no witness, so `approvals audit verify` refuses them as unverifiable (a line can be edited,
/// removed or the end cut off without trace). For audit evidence use
/// `approvals_audit::SignedLogSink` (a hash-chained log file with signed checkpoints and its
/// witness `<log>.witness`) or the SQL store's signed audit sink.
pub struct JsonLinesSink {
    out: Mutex<Box<dyn Write + Send>>,
    sync: Option<std::fs::File>,
}

impl std::fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSink").finish_non_exhaustive()
    }
}

impl JsonLinesSink {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::writer(std::io::stdout())
    }

    /// Writes to standard error.
    pub fn stderr() -> Self {
        Self::writer(std::io::stderr())
    }

    /// Writes to any writer (flushed after every event).
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        JsonLinesSink {
            out: Mutex::new(Box::new(w)),
            sync: None,
        }
    }

    /// Appends to a file, creating it. With `fsync`, every event is synced to disk before
    /// `record` returns.
    pub fn file(path: impl AsRef<Path>, fsync: bool) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let sync = if fsync { Some(file.try_clone()?) } else { None };
        Ok(JsonLinesSink {
            out: Mutex::new(Box::new(file)),
            sync,
        })
    }
}

#[async_trait]
impl AuditSink for JsonLinesSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(event).map_err(|e| AuditError::new(e.to_string()))?;
        line.push(b'\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| AuditError::new("audit writer poisoned by an earlier panic"))?;
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|e| AuditError::new(format!("cannot write audit line: {e}")))?;
        if let Some(file) = &self.sync {
            file.sync_data()
                .map_err(|e| AuditError::new(format!("cannot sync audit file: {e}")))?;
        }
        Ok(())
    }
}

/// Keeps events in memory; for tests, demos and benches.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of all events so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The names of all events so far, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.events
            .lock()
            .map(|e| e.iter().map(AuditEvent::name).collect())
            .unwrap_or_default()
    }

    /// Events about one request.
    pub fn for_request(&self, id: RequestId) -> Vec<AuditEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.request_id == id)
            .collect()
    }

    /// Forgets all events.
    pub fn clear(&self) {
        if let Ok(mut e) = self.events.lock() {
            e.clear();
        }
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.events
            .lock()
            .map_err(|_| AuditError::new("memory sink poisoned"))?
            .push(event.clone());
        Ok(())
    }
}

/// Sends every event to several sinks; fails if any fails (after trying all).
#[derive(Default)]
pub struct FanoutSink {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for FanoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSink")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl FanoutSink {
    /// No sinks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    pub fn with(mut self, sink: impl AuditSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds a shared sink.
    pub fn with_shared(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sinks.push(sink);
        self
    }
}

#[async_trait]
impl AuditSink for FanoutSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut first_error = None;
        for sink in &self.sinks {
            if let Err(e) = sink.record(event).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let mut first_error = None;
        for sink in &self.sinks {
            if let Err(e) = sink.record_all(events).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn sync(&self) -> Result<(), AuditError> {
        let mut first_error = None;
        for sink in &self.sinks {
            if let Err(e) = sink.sync().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn sync_soon(&self) -> Result<(), AuditError> {
        let mut first_error = None;
        for sink in &self.sinks {
            if let Err(e) = sink.sync_soon().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The one sink's, when there is exactly one: the fan-out then adds nothing to it.
    fn sync_domain(&self) -> Option<crate::store::SyncDomain> {
        match self.sinks.as_slice() {
            [only] => only.sync_domain(),
            _ => None,
        }
    }

    /// The one sink's, when there is exactly one, so that a store keeping its log commits
    /// transitions with their events; with several, every event must reach every sink
    /// through [`record`](AuditSink::record).
    fn as_log(&self) -> Option<&dyn std::any::Any> {
        match self.sinks.as_slice() {
            [only] => only.as_log(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail: EventDetail) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at: "2026-11-21T12:00:00Z".parse().expect("time"),
            request_id: RequestId::new(),
            kind: "data.export".into(),
            resource: "db://x".into(),
            digest: ActionRequest::new("data.export", "db://x").digest(),
            detail,
        }
    }

    #[test]
    fn events_round_trip_through_json_with_a_flat_shape() {
        let e = event(EventDetail::Reviewed {
            reviewer: Principal::human("sam"),
            verdict: Verdict::Approve,
            reason: None,
            channel: "slack".into(),
            approvals: 1,
            quorum: 2,
            step_up: None,
        });
        let json = serde_json::to_value(&e).expect("serialize");
        assert_eq!(json["event"], "reviewed");
        assert_eq!(json["schema"], 1);
        assert_eq!(json["verdict"], "approve");
        assert_eq!(json["reviewer"]["id"], "sam");
        let back: AuditEvent = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, e);
        let expired = event(EventDetail::Expired {});
        let text = serde_json::to_string(&expired).expect("serialize");
        assert_eq!(
            serde_json::from_str::<AuditEvent>(&text).expect("parse"),
            expired
        );
    }

    /// An event's own fields are flattened beside the envelope's (`request_id`, `kind`,
    /// `resource`, `digest`, ...): a detail field of the same name would be written twice and
    /// read back into the envelope, losing the detail's (the standing grant and plan events
    /// once named the covered action's digest `digest`).
    #[test]
    fn no_event_repeats_an_envelope_field_and_each_round_trips_as_text() {
        let other = RequestId::new();
        let action_digest = ActionRequest::new("deploy.restart", "svc://prod/api").digest();
        let approvers = vec![Principal::human("sam")];
        for detail in [
            EventDetail::StandingGrantUsed {
                request: other,
                action_digest,
                used: 1,
                uses: 3,
            },
            EventDetail::ApprovedByStandingGrant {
                standing: other,
                approvers: approvers.clone(),
            },
            EventDetail::PlanItemUsed {
                request: other,
                action_digest,
                item: 0,
                items: 2,
            },
            EventDetail::ApprovedByPlan {
                plan: other,
                item: 0,
                approvers,
            },
            EventDetail::Edited {
                by: Principal::human("kim"),
                from_digest: action_digest,
                changes: vec![crate::edit::FieldChange {
                    field: "/rows".into(),
                    before: serde_json::json!(800),
                    after: serde_json::json!(200),
                }],
                decision: Decision::Allow { rule: None },
                policy_version: "sha256:p".into(),
            },
        ] {
            let detail_json = serde_json::to_value(&detail).expect("serialize");
            let envelope = ["schema", "at", "request_id", "kind", "resource", "digest"];
            let fields = detail_json.as_object().expect("an object");
            assert!(
                envelope.iter().all(|k| !fields.contains_key(*k)),
                "{detail_json}"
            );
            let e = event(detail);
            let text = serde_json::to_string(&e).expect("serialize");
            assert_eq!(text.matches("\"digest\":").count(), 1, "{text}");
            let back: AuditEvent = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, e);
        }
    }

    #[tokio::test]
    async fn json_lines_file_sink_appends_one_line_per_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let sink = JsonLinesSink::file(&path, true).expect("open");
        sink.record(&event(EventDetail::Expired {}))
            .await
            .expect("record");
        sink.record(&event(EventDetail::GrantConsumed {}))
            .await
            .expect("record");
        let text = std::fs::read_to_string(&path).expect("read");
        let names: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<AuditEvent>(l)
                    .expect("valid line")
                    .name()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["expired", "grant_consumed"]);
    }

    struct Broken;
    #[async_trait]
    impl AuditSink for Broken {
        async fn record(&self, _: &AuditEvent) -> Result<(), AuditError> {
            Err(AuditError::new("disk full"))
        }
    }

    #[tokio::test]
    async fn fanout_fails_when_any_sink_fails_but_still_feeds_the_others() {
        let memory = Arc::new(MemorySink::new());
        let fanout = FanoutSink::new().with(Broken).with_shared(memory.clone());
        let err = fanout
            .record(&event(EventDetail::Expired {}))
            .await
            .expect_err("must fail");
        assert!(err.to_string().contains("disk full"));
        assert_eq!(memory.names(), ["expired"]);
    }

    /// A sink that says it is a store's log, in one sync domain.
    struct StoreLog(crate::store::SyncDomain);

    #[async_trait]
    impl AuditSink for StoreLog {
        async fn record(&self, _event: &AuditEvent) -> Result<(), AuditError> {
            Ok(())
        }
        fn sync_domain(&self) -> Option<crate::store::SyncDomain> {
            Some(self.0)
        }
        fn as_log(&self) -> Option<&dyn std::any::Any> {
            Some(self)
        }
    }

    #[tokio::test]
    async fn a_fanout_of_one_sink_is_that_sink_to_a_store_and_of_several_is_not() {
        let domain = crate::store::SyncDomain::new();
        let one = FanoutSink::new().with(StoreLog(domain));
        assert_eq!(one.sync_domain(), Some(domain));
        assert!(one.as_log().is_some_and(|log| log.is::<StoreLog>()));
        let two = FanoutSink::new()
            .with(StoreLog(domain))
            .with(MemorySink::new());
        assert_eq!(two.sync_domain(), None);
        assert!(two.as_log().is_none());
        // Every sink gets every event of a batch.
        let memory = Arc::new(MemorySink::new());
        let fanout = FanoutSink::new()
            .with(StoreLog(domain))
            .with_shared(memory.clone());
        fanout
            .record_all(&[
                event(EventDetail::Expired {}),
                event(EventDetail::Lapsed {}),
            ])
            .await
            .expect("recorded");
        assert_eq!(memory.names(), ["expired", "lapsed"]);
    }
}
