//! Where requests, reviews and grants live; every state change is one compare-and-set.

use arcstr::ArcStr;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use thin_vec::ThinVec;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::policy::Requirement;
use crate::request::{ActionRequest, Digest, Principal};

/// Identifies one approval request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub Uuid);

impl RequestId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        RequestId(Uuid::now_v7())
    }

    /// Parses the hyphenated form.
    pub fn parse(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(RequestId)
    }

    /// The path of this request's page in the review console, relative to the server's public
    /// URL (join it to a base that ends with `/`).
    pub fn console_path(&self) -> String {
        format!("console/requests/{self}")
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

/// Where a request is in its lifecycle.
///
/// `Pending -> Approved | Denied | Expired | Cancelled`;
/// `Approved -> Executing -> Executed | Failed`, or `Approved -> Lapsed` when the grant is not
/// used in time, or `Approved -> Denied` when an authorized reviewer denies before the grant
/// is used (deny wins). `Executing` records that the grant was consumed: a process that dies while
/// running the action leaves it there, and it is never run again. Terminal states never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for reviewers.
    Pending,
    /// Enough approvals; the grant may be used.
    Approved,
    /// A reviewer denied it.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// Withdrawn, or undeliverable.
    Cancelled,
    /// The grant was consumed and the action is running.
    Executing,
    /// The action ran and succeeded.
    Executed,
    /// The action ran and returned an error.
    Failed,
    /// Approved, but the grant was not used before it expired.
    Lapsed,
}

impl RequestState {
    /// Whether the state can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestState::Denied
                | RequestState::Expired
                | RequestState::Cancelled
                | RequestState::Executed
                | RequestState::Failed
                | RequestState::Lapsed
        )
    }

    /// Whether no further review is accepted.
    pub fn is_decided(self) -> bool {
        self != RequestState::Pending
    }

    /// The state's name as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
            RequestState::Executing => "executing",
            RequestState::Executed => "executed",
            RequestState::Failed => "failed",
            RequestState::Lapsed => "lapsed",
        }
    }

    /// Whether `self -> next` is an allowed lifecycle step.
    pub fn can_become(self, next: RequestState) -> bool {
        use RequestState::*;
        matches!(
            (self, next),
            (Pending, Pending | Approved | Denied | Expired | Cancelled)
                | (Approved, Executing | Lapsed | Denied)
                | (Executing, Executed | Failed)
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown request state {s:?}"))
    }
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let it run.
    Approve,
    /// Refuse it.
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        })
    }
}

/// An accepted review, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// Who reviewed.
    pub reviewer: Principal,
    /// What they decided.
    pub verdict: Verdict,
    /// Their reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The channel it came through (`slack`, `teams`, `http`, `console`, ...).
    pub channel: String,
    /// When it was accepted.
    pub at: DateTime<Utc>,
    /// For an approval that edited the action ([`edit`](crate::edit)): the digest it
    /// replaced, the new one, and what changed. Approvals before it no longer count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Box<crate::edit::EditRecord>>,
    /// For an approval under a rule with `step_up`: the reviewer's proof of this request and
    /// digest, kept so it can be verified again ([`step_up`](crate::step_up)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<Box<crate::step_up::StepUpProof>>,
}

/// How a channel delivered a request, so the message can be updated later (even after a
/// restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The channel's name.
    pub channel: String,
    /// Channel-specific reference (for example Slack's channel id and message `ts`).
    pub reference: serde_json::Value,
}

/// What happened when the approved action ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// When the grant was consumed.
    pub started_at: DateTime<Utc>,
    /// When the action finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The error text when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The credential minted for this run, when the gate has a
    /// [`CredentialBroker`](crate::credential::CredentialBroker): planned when the grant is
    /// consumed, then issued, then revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialState>,
}

/// Where the credential of one execution stands. Planned (its id recorded, nothing issued yet)
/// in the same write that consumes the grant, so a credential is never issued without a record
/// naming it; a sweep revokes whatever a dead process left unrevoked
/// ([`lifecycle::Due::Revoke`](crate::lifecycle::Due::Revoke)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialState {
    /// Its id, scope (empty until issued) and expiry.
    #[serde(flatten)]
    pub lease: crate::credential::CredentialLease,
    /// Whether the broker issued it (and `credential_issued` was recorded).
    #[serde(default)]
    pub issued: bool,
    /// When it was revoked; `None` while it may still exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl CredentialState {
    /// Whether it may still exist in the system that minted it.
    pub fn outstanding(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A final word on the request: who ended it and why (deny, cancel, expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Who, when a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Principal>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything stored about one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The id.
    pub id: RequestId,
    /// Incremented by every change; the compare-and-set token.
    pub version: u64,
    /// The action as requested.
    pub request: ActionRequest,
    /// `request.digest()`, stored so it is never recomputed differently.
    pub digest: Digest,
    /// Who must approve.
    pub requirement: Arc<Requirement>,
    /// The policy rule that asked for approval; shared with the policy's rule and its
    /// decision, not copied into every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<ArcStr>,
    /// The policy's version, shared with the gate's current one.
    pub policy_version: ArcStr,
    /// Where it is in the lifecycle.
    pub state: RequestState,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires if still pending.
    pub expires_at: DateTime<Utc>,
    /// When it escalates if still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_at: Option<DateTime<Utc>>,
    /// Whether it has escalated.
    #[serde(default)]
    pub escalated: bool,
    /// How many of the requirement's reminder points have passed and been sent (a sweep that
    /// comes late sends one reminder for every point it passed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reminded: u32,
    /// For a standing grant ([`standing`](crate::standing)): how many actions it approved.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub standing_uses: u32,
    /// For a plan ([`plan`](crate::plan)): the positions of the items it approved, in the
    /// order they were asked for.
    ///
    /// This and the record's other lists are [`ThinVec`]s: one pointer in the record, with
    /// the length and capacity kept beside the elements, and no allocation while empty.
    /// Every stored record carries the three lists and most keep them empty or short, so
    /// a `Vec`'s three words each would be 40 bytes more per record (BENCHMARKS.md, "Load").
    #[serde(default, skip_serializing_if = "<[u32]>::is_empty")]
    pub plan_used: ThinVec<u32>,
    /// Accepted reviews, in order.
    #[serde(default)]
    pub reviews: ThinVec<ReviewRecord>,
    /// Who ended it (deny, cancel, expiry) and why. Boxed, like `execution`: set only at the
    /// end, so a pending record does not carry room for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Box<Resolution>>,
    /// Set while a decision (the approval, the denial, or both when a deny revoked an
    /// approval) has audit events not yet recorded: `unaudited` says which. No grant is
    /// issued while the approval is unaudited, and no waiter is told of a denial while the
    /// denial is, so a decision never takes effect before it is in the audit trail. Each
    /// decision's `decide()` clears its own part once audited; a waiter or sweep records and
    /// clears what a failed or dead `decide()` left. Stores index it for sweeps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit_pending: bool,
    /// Which decisions' events are not yet recorded (see `audit_pending`, which is set
    /// exactly when one of these is). Records written before this field existed have
    /// `audit_pending` alone: it then stands for the decision of the current state.
    #[serde(default, skip_serializing_if = "Unaudited::is_empty")]
    pub unaudited: Unaudited,
    /// Until when the grant may be used, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<DateTime<Utc>>,
    /// Channel messages to update on resolution.
    #[serde(default)]
    pub deliveries: ThinVec<Delivery>,
    /// What happened when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Box<Execution>>,
}

/// The decisions of one request whose audit events are not yet recorded. Each decision
/// happens at most once per request (an approval reaching the quorum, a denial), so each is
/// one flag, set by the transition that makes the decision and cleared only by recording that
/// decision's events: one decision's recording can never clear another's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unaudited {
    /// The `approved` event is not yet recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
    /// The denial's `reviewed` and `denied` events are not yet recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denial: bool,
    /// The latest edit's `edited`, `policy_decided` and `reviewed` events are not yet
    /// recorded ([`edit`](crate::edit)). No grant is issued while it is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edit: bool,
}

impl Unaudited {
    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        !(self.approval || self.denial || self.edit)
    }

    /// The flag of `decision`.
    pub fn get(&self, decision: Verdict) -> bool {
        match decision {
            Verdict::Approve => self.approval,
            Verdict::Deny => self.denial,
        }
    }

    fn slot(&mut self, decision: Verdict) -> &mut bool {
        match decision {
            Verdict::Approve => &mut self.approval,
            Verdict::Deny => &mut self.denial,
        }
    }
}

impl RequestRecord {
    /// The decisions whose audit events are not yet recorded. A record from before
    /// [`Unaudited`] existed, flagged `audit_pending` alone, stands for its current state's
    /// decision.
    pub fn unaudited_decisions(&self) -> Unaudited {
        if !self.unaudited.is_empty() || !self.audit_pending {
            return self.unaudited;
        }
        Unaudited {
            approval: self.state == RequestState::Approved,
            denial: self.state == RequestState::Denied,
            edit: false,
        }
    }

    /// Flags `decision` as made but not yet audited.
    pub fn mark_unaudited(&mut self, decision: Verdict) {
        self.unaudited = self.unaudited_decisions();
        *self.unaudited.slot(decision) = true;
        self.audit_pending = true;
    }

    /// Clears the flag of `decision` once its events are recorded. Returns whether it was
    /// set; other decisions' flags are left as they are.
    pub fn mark_audited(&mut self, decision: Verdict) -> bool {
        let mut unaudited = self.unaudited_decisions();
        let was = std::mem::replace(unaudited.slot(decision), false);
        if was {
            self.unaudited = unaudited;
            self.audit_pending = !unaudited.is_empty();
        }
        was
    }

    /// Flags the latest edit as made but not yet audited.
    pub fn mark_edit_unaudited(&mut self) {
        self.unaudited = self.unaudited_decisions();
        self.unaudited.edit = true;
        self.audit_pending = true;
    }

    /// Clears the latest edit's flag once its events are recorded. Returns whether it was set.
    pub fn mark_edit_audited(&mut self) -> bool {
        let mut unaudited = self.unaudited_decisions();
        let was = std::mem::replace(&mut unaudited.edit, false);
        if was {
            self.unaudited = unaudited;
            self.audit_pending = !unaudited.is_empty();
        }
        was
    }

    /// The latest review that edited the action, if any ([`edit`](crate::edit)).
    pub fn last_edit(&self) -> Option<&ReviewRecord> {
        self.reviews.iter().rev().find(|r| r.edit.is_some())
    }

    /// The action key a denial of this request refuses during a cool-down
    /// ([`ActionRequest::action_key`]): the key of the action as it was asked for, so an agent
    /// whose request reviewers edited and then denied cannot page them again by asking for
    /// its own version once more.
    pub fn denied_action_key(&self) -> Digest {
        if self.last_edit().is_none() {
            return self.request.action_key();
        }
        let mut asked = self.request.clone();
        asked.params = Arc::new(self.asked_params());
        asked.action_key()
    }

    /// The parameters as they were asked for: the current ones with each edited field's value
    /// before its first edit ([`edit`](crate::edit)).
    pub fn asked_params(&self) -> serde_json::Value {
        let mut params = serde_json::Value::clone(&self.request.params);
        for change in self.edit_changes() {
            if let Some(slot) = params.pointer_mut(&change.field) {
                *slot = change.before;
            }
        }
        params
    }

    /// What reviewers' edits changed, all edits taken together: each field with its value as
    /// asked and as it is now (a field edited back to its asked value is left out).
    pub fn edit_changes(&self) -> Vec<crate::edit::FieldChange> {
        let mut changes: Vec<crate::edit::FieldChange> = Vec::new();
        for change in self
            .reviews
            .iter()
            .filter_map(|r| r.edit.as_deref())
            .flat_map(|e| &e.changes)
        {
            match changes.iter_mut().find(|c| c.field == change.field) {
                Some(seen) => seen.after = change.after.clone(),
                None => changes.push(change.clone()),
            }
        }
        changes.retain(|c| c.before != c.after);
        changes
    }

    /// The digest the action had when it was asked for: the first edit's `from`, or the
    /// digest when it was never edited.
    pub fn asked_digest(&self) -> Digest {
        self.reviews
            .iter()
            .find_map(|r| r.edit.as_ref().map(|e| e.from))
            .unwrap_or(self.digest)
    }

    /// Distinct humans who approved the action as it stands, in order: approvals given before
    /// the latest edit were of another digest and do not count. Reviews whose reviewer ids
    /// could be one person ([`Principal::same_identity`]: any spelling or look-alike) count
    /// once.
    pub fn approvers(&self) -> Vec<&Principal> {
        let mut seen: Vec<(&Principal, String)> = Vec::new();
        let since = self
            .reviews
            .iter()
            .rposition(|r| r.edit.is_some())
            .unwrap_or(0);
        for r in &self.reviews[since..] {
            if r.verdict != Verdict::Approve {
                continue;
            }
            let key = crate::identity::identity_key(&r.reviewer.id);
            if !seen.iter().any(|(_, k)| *k == key) {
                seen.push((&r.reviewer, key));
            }
        }
        seen.into_iter().map(|(p, _)| p).collect()
    }

    /// The review that denied it, if any.
    pub fn denial(&self) -> Option<&ReviewRecord> {
        self.reviews.iter().find(|r| r.verdict == Verdict::Deny)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Filter for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only these states (all when empty).
    pub states: Vec<RequestState>,
    /// Only this action kind (exact).
    pub kind: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only requests whose initiator could be this id: any spelling or look-alike of it
    /// ([`identity::same_id`](crate::identity::same_id)).
    pub initiator: Option<String>,
    /// Only records whose decision is (`Some(true)`) or is not (`Some(false)`) still
    /// waiting to be audited ([`RequestRecord::audit_pending`]). Sweeps use it to find
    /// denials whose reviewer died before auditing them, without reading every decided
    /// request.
    pub audit_pending: Option<bool>,
    /// Only records that may have something due by this time: their
    /// [`next_due`](crate::lifecycle::next_due) is at or before it, earliest due first
    /// (instead of newest first). Sweeps use it to read what is due, not every open request;
    /// stores index it.
    pub due_by: Option<DateTime<Utc>>,
    /// Only denied requests for this action
    /// ([`ActionRequest::action_key`](crate::request::ActionRequest::action_key)), which is
    /// what a denial's cool-down lists; stores index it.
    pub denied_action: Option<Digest>,
    /// At most this many, in the listing's order (all when `None`).
    pub limit: Option<usize>,
    /// Only records after this one in the newest-first order (created earlier, or at the same
    /// time with a smaller id): the next page of a listing whose last record was
    /// [`PageCursor::of`] it. Ignored with `due_by`.
    pub after: Option<PageCursor>,
    /// With `due_by`: only records after this one in the earliest-due-first order (due later,
    /// or due at the same time with a larger id): the next page of a due listing whose last
    /// record was [`DueCursor::of`] it. Sweeps read what is due a page at a time.
    pub due_after: Option<DueCursor>,
}

/// Where a page of a due listing ([`ListFilter::due_by`]) ended: the last record's
/// [`next_due`](crate::lifecycle::next_due) time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DueCursor {
    /// When the last record of the page was due (to the microsecond, as stores keep it).
    pub due_at: DateTime<Utc>,
    /// Its id.
    pub id: RequestId,
}

impl DueCursor {
    /// The cursor after `record`; `None` when nothing about it is ever due.
    pub fn of(record: &RequestRecord) -> Option<Self> {
        crate::lifecycle::next_due(record).map(|due| DueCursor {
            due_at: truncate_to_micros(due),
            id: record.id,
        })
    }

    /// Whether `record` comes after this cursor in the earliest-due-first order.
    pub fn precedes(&self, record: &RequestRecord) -> bool {
        DueCursor::of(record).is_some_and(|at| at > *self)
    }
}

/// Where a page of a newest-first listing ended: the last record's creation time and id.
/// Shown to clients as text ([`Display`](std::fmt::Display), [`FromStr`](std::str::FromStr)):
/// `<microseconds since the epoch>.<request id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageCursor {
    /// When the last record of the page was created (to the microsecond, as stores keep it).
    pub created_at: DateTime<Utc>,
    /// Its id.
    pub id: RequestId,
}

impl PageCursor {
    /// The cursor after `record`.
    pub fn of(record: &RequestRecord) -> Self {
        PageCursor {
            created_at: truncate_to_micros(record.created_at),
            id: record.id,
        }
    }

    /// Whether `record` comes after the cursor in the newest-first order.
    pub fn precedes(&self, record: &RequestRecord) -> bool {
        (truncate_to_micros(record.created_at), record.id) < (self.created_at, self.id)
    }
}

/// Stores keep times to the microsecond; cursors compare at that precision everywhere.
fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl std::fmt::Display for PageCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

/// A page cursor that is not one this library printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a page cursor: pass the `next_cursor` of the previous page unchanged")]
pub struct BadCursor;

impl std::str::FromStr for PageCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (micros, id) = s.split_once('.').ok_or(BadCursor)?;
        if micros.is_empty() || micros.len() > 20 {
            return Err(BadCursor);
        }
        let micros: i64 = micros.parse().map_err(|_| BadCursor)?;
        Ok(PageCursor {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(BadCursor)?,
            id: RequestId::parse(id).map_err(|_| BadCursor)?,
        })
    }
}

impl ListFilter {
    /// Pending requests only.
    pub fn pending() -> Self {
        ListFilter {
            states: vec![RequestState::Pending],
            ..Default::default()
        }
    }

    /// Whether `record` passes the filter (ignoring `limit`).
    pub fn matches(&self, record: &RequestRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&record.state))
            && self
                .kind
                .as_deref()
                .is_none_or(|k| k == record.request.kind)
            && self
                .environment
                .as_deref()
                .is_none_or(|e| record.request.context.environment.as_deref() == Some(e))
            && self.initiator.as_deref().is_none_or(|i| {
                record
                    .request
                    .initiator
                    .as_ref()
                    .is_some_and(|init| crate::identity::same_id(&init.principal.id, i))
            })
            && self
                .audit_pending
                .is_none_or(|pending| record.audit_pending == pending)
            && self.denied_action.is_none_or(|key| {
                record.state == RequestState::Denied && record.denied_action_key() == key
            })
            && self
                .due_by
                .is_none_or(|by| crate::lifecycle::next_due(record).is_some_and(|due| due <= by))
            && (self.due_by.is_some() || self.after.is_none_or(|c| c.precedes(record)))
            && (self.due_by.is_none() || self.due_after.is_none_or(|c| c.precedes(record)))
    }
}

/// Result of [`Store::insert`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The record was stored.
    Created,
    /// A record with the same idempotency key exists; here it is, unchanged.
    Existing(Box<RequestRecord>),
}

/// A store failure. The gate turns it into a refusal (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or timed out; retrying later may work.
    #[error("approval store unavailable: {0}")]
    Unavailable(String),
    /// The stored data could not be read back (corrupt or from an incompatible version).
    #[error("approval store data is invalid: {0}")]
    Corrupt(String),
    /// Any other backend error.
    #[error("approval store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Where requests live.
///
/// Implementations must make [`compare_and_set`](Store::compare_and_set) atomic: it replaces
/// the record only if the stored version still equals `expected_version`, and the new record
/// carries `expected_version + 1`. The conformance suite in `approvals-testkit` checks every
/// store against the same behaviour.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new record (version 1). If its idempotency key is already used, stores
    /// nothing and returns the existing record.
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError>;

    /// The record with this id.
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError>;

    /// The record with this idempotency key.
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError>;

    /// Replaces the record if its stored version is `expected_version`. Returns `false`
    /// (changing nothing) when another writer got there first or the record is missing.
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError>;

    /// Records matching the filter, newest first (earliest due first with
    /// [`ListFilter::due_by`]).
    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError>;

    /// A stream of ids whose record changed, including changes made by other processes
    /// where the backend can tell (PostgreSQL LISTEN/NOTIFY). `None` when the store cannot
    /// notify; the gate then polls.
    fn changes(&self) -> Option<broadcast::Receiver<RequestId>> {
        None
    }

    /// A durability barrier: returns once every write this store has committed so far is on
    /// disk. The gate calls it before anything leaves the process on the strength of those
    /// writes (a channel is told, an action runs, a door answers, a waiter is woken), so a
    /// store may commit without syncing and make many commits durable with one sync here
    /// (group commit). The default does nothing: right for a store whose every commit is
    /// durable when it returns, or that keeps nothing on disk.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A barrier that need not cost a sync of its own: returns once every write committed so
    /// far is on disk, which a store may wait for rather than cause, answering at its next
    /// sync (another caller's barrier, or its own timer within a bounded delay). The gate
    /// uses it where only the timing of a message depends on it (a channel's update about an
    /// outcome), never before an action runs or a caller is answered. The default is
    /// [`sync`](Store::sync).
    async fn sync_soon(&self) -> Result<(), StoreError> {
        self.sync().await
    }

    /// What this store's [`sync`](Store::sync) makes durable, when an audit sink's sync makes
    /// the same durable (a log kept in the store's own database): the gate then syncs once
    /// instead of twice. `None` (the default) when not shared.
    fn sync_domain(&self) -> Option<SyncDomain> {
        None
    }

    /// Writes that commit a change of a request together with the audit events it produced,
    /// in one transaction, when this store keeps `audit`'s log in its own database (the SQL
    /// store and its [`SqlAuditSink`](https://docs.rs/approvals-store-sql)). The gate asks
    /// once, when it is built; with `None` (the default) it compare-and-sets, then records
    /// each event, as two steps. A store wrapping another forwards it only when its own
    /// writes are the inner store's.
    fn recorded_writes(&self, audit: &dyn crate::AuditSink) -> Option<Arc<dyn RecordedWrites>> {
        let _ = audit;
        None
    }
}

/// A compare-and-set and its audit events in one transaction ([`Store::recorded_writes`]):
/// the events are in the log exactly when the change is in the store, so a transition costs
/// one commit instead of one per row, and no crash can leave a change without its events.
#[async_trait]
pub trait RecordedWrites: Send + Sync {
    /// [`Store::compare_and_set`], recording `events` (in order, after every event recorded
    /// before) in the same transaction when it succeeds. `Ok(false)`: a newer version won,
    /// and nothing was written. An error: nothing was written.
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
        events: &[crate::AuditEvent],
    ) -> Result<bool, StoreError>;
}

/// One durable medium that a barrier syncs as a whole (a database), so that a store and an
/// audit sink writing to it can say so ([`Store::sync_domain`],
/// [`AuditSink::sync_domain`](crate::AuditSink::sync_domain)). Each value made by
/// [`SyncDomain::new`] is distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncDomain(u64);

impl SyncDomain {
    /// A domain no other value equals.
    pub fn new() -> SyncDomain {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SyncDomain(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for SyncDomain {
    fn default() -> Self {
        SyncDomain::new()
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        (**self).insert(record).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        (**self).get(id).await
    }
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        (**self).get_by_idempotency_key(key).await
    }
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        (**self).compare_and_set(expected_version, record).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        (**self).list(filter).await
    }
    fn changes(&self) -> Option<broadcast::Receiver<RequestId>> {
        (**self).changes()
    }
    async fn sync(&self) -> Result<(), StoreError> {
        (**self).sync().await
    }
    async fn sync_soon(&self) -> Result<(), StoreError> {
        (**self).sync_soon().await
    }
    fn sync_domain(&self) -> Option<SyncDomain> {
        (**self).sync_domain()
    }
    fn recorded_writes(&self, audit: &dyn crate::AuditSink) -> Option<Arc<dyn RecordedWrites>> {
        (**self).recorded_writes(audit)
    }
}
