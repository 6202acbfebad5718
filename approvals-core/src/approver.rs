//! Channels that show requests to reviewers, and mapping channel identities to principals.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::ReviewError;
use crate::identity::{self, InvalidIdentity};
use crate::lifecycle::{Review, ReviewOutcome};
use crate::request::Principal;
use crate::store::{Delivery, RequestId, RequestRecord, StoreError};

/// Why a request is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchReason {
    /// A new pending request.
    New,
    /// The request escalated; further reviewers are now allowed.
    Escalation,
    /// A reminder that the request is still pending (a `remind_at` point of its timeout
    /// passed, [`RequestRecord::reminded`](crate::RequestRecord::reminded) counts them). A
    /// channel nudges its reviewers where they saw the request (a threaded reply, an updated
    /// card) rather than asking again; what it returns is not recorded as a delivery, and a
    /// failure cancels nothing.
    Reminder,
    /// A pending request whose delivery was never recorded, delivered again when its agent
    /// re-attaches (by idempotency key). The first delivery may have reached the channel
    /// before the process that made it died: a channel that can find its earlier message
    /// should record that one instead of sending a second.
    Redelivery,
}

impl DispatchReason {
    /// Whether the delivery is the request's first word to reviewers (new, or never recorded):
    /// if no channel takes it, no reviewer knows of the request, and it is cancelled. An
    /// escalation or a reminder follows a delivery that was made.
    pub fn introduces(self) -> bool {
        matches!(self, DispatchReason::New | DispatchReason::Redelivery)
    }

    /// Whether what a channel returns is a message to record and update later: not for a
    /// reminder, a nudge about a message already recorded.
    pub fn records_delivery(self) -> bool {
        self != DispatchReason::Reminder
    }
}

/// A channel could not deliver or update a request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{channel}: {message}")]
pub struct ApproverError {
    /// The channel.
    pub channel: String,
    /// What went wrong.
    pub message: String,
    /// Whether trying again later may work.
    pub retryable: bool,
}

impl ApproverError {
    /// A new error.
    pub fn new(channel: impl Into<String>, message: impl Into<String>) -> Self {
        ApproverError {
            channel: channel.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// Marks it retryable.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// Where a channel sends reviewers' decisions: the three calls of the gate a channel needs.
///
/// [`Gate`](crate::Gate) implements it. A channel that decides in process (the terminal)
/// receives it with each delivery; a channel with an inbound handler (Slack, Teams, the
/// console) holds a gate of its own. Either way every rule is the gate's: a channel proves
/// who decided and passes the [`Review`] on.
#[async_trait]
pub trait Decisions: Send + Sync + 'static {
    /// The request's current record.
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError>;

    /// Whether `review` would be accepted now, without recording anything
    /// ([`Gate::check_review`](crate::Gate::check_review)).
    async fn check_review(&self, id: RequestId, review: &Review) -> Result<(), ReviewError>;

    /// Records `review` ([`Gate::decide`](crate::Gate::decide)).
    async fn decide(&self, id: RequestId, review: Review) -> Result<ReviewOutcome, ReviewError>;
}

/// A review channel (Slack, Teams, HTTP, terminal, ...).
///
/// The gate calls [`dispatch`](Approver::dispatch) for each new pending request and on
/// escalation, and [`resolved`](Approver::resolved) whenever the request changes state after
/// that, so reviewers never act on a stale message. Decisions come back through
/// [`Decisions::decide`], from the channel's own inbound handler, after it has proven who
/// clicked.
#[async_trait]
pub trait Approver: Send + Sync + 'static {
    /// The channel name recorded in audit events and deliveries (`slack`, `teams`, ...).
    fn name(&self) -> &str;

    /// Delivers the request to reviewers. Returns a reference to the delivered message so it
    /// can be updated later (stored with the request, so it survives restarts).
    ///
    /// `decisions` lets in-process channels (such as the terminal) submit decisions.
    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError>;

    /// Updates what reviewers see after the request changed state (approved by whom, denied,
    /// expired, cancelled, executed, failed). `request.deliveries` holds this channel's
    /// delivery references.
    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        let _ = request;
        Ok(())
    }
}

/// A channel identity could not be mapped to exactly one principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No principal matches.
    #[error(
        "unknown reviewer {external_id:?} on {channel}: map this identity in the identity resolver"
    )]
    Unknown {
        /// The channel.
        channel: String,
        /// The channel's id for the person.
        external_id: String,
    },
    /// Several principals match; refusing rather than guessing.
    #[error(
        "reviewer {external_id:?} on {channel} matches {count} principals; fix the identity mapping so it matches one"
    )]
    Ambiguous {
        /// The channel.
        channel: String,
        /// The channel's id for the person.
        external_id: String,
        /// How many matched.
        count: usize,
    },
    /// The directory could not be reached.
    #[error("identity directory unavailable: {0}")]
    Unavailable(String),
}

/// Maps a channel identity (Slack user id, Teams AAD object id, API token subject) to a
/// [`Principal`] with its current groups. Channels call it at decision time, so group changes
/// since the request was sent are honoured.
#[async_trait]
pub trait IdentityResolver: Send + Sync + 'static {
    /// The principal for `external_id` on `channel`.
    async fn resolve(&self, channel: &str, external_id: &str) -> Result<Principal, IdentityError>;
}

/// Resolves `external_id` on `channel` through `resolver`, the way every channel's inbound
/// handler should: a resolver that panics or does not answer within `limit` is
/// [`IdentityError::Unavailable`], so the decision is refused (fail closed) instead of the
/// panic unwinding into the handler or the click hanging.
pub async fn resolve_reviewer(
    resolver: &(impl IdentityResolver + ?Sized),
    channel: &str,
    external_id: &str,
    limit: std::time::Duration,
) -> Result<Principal, IdentityError> {
    crate::bounds::within(limit, resolver.resolve(channel, external_id))
        .await
        .unwrap_or_else(|unfinished| {
            Err(IdentityError::Unavailable(format!(
                "the identity resolver failed ({unfinished}); the decision was refused"
            )))
        })
}

#[async_trait]
impl<R: IdentityResolver + ?Sized> IdentityResolver for Arc<R> {
    async fn resolve(&self, channel: &str, external_id: &str) -> Result<Principal, IdentityError> {
        (**self).resolve(channel, external_id).await
    }
}

/// A fixed map from `(channel, external id)` to principals.
///
/// Principals are kept in canonical form ([`Principal::normalized`]), and external ids are
/// matched by [`canonical_key`](identity::canonical_key): an entry mapped as
/// `sam@example.com` is found as `SAM@example.com` or `ｓａｍ@example.com`, while an external
/// id with invisible, bidi-control or mixed-script characters matches nothing.
///
/// ```
/// use approvals_core::{Principal, StaticIdentityResolver};
/// let ids = StaticIdentityResolver::new()
///     .try_map("slack", "U024BE7LH", Principal::human("sam@example.com").with_groups(["security"]))?
///     .try_map("email", "sam@example.com", Principal::human("sam@example.com"))?;
/// # Ok::<(), approvals_core::InvalidIdentity>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticIdentityResolver {
    /// By channel and canonical external id; a refused mapping is kept as `None`, so that the
    /// external id resolves to nothing rather than to another entry.
    entries: HashMap<(String, String), Vec<Option<Principal>>>,
}

impl StaticIdentityResolver {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `external_id` on `channel` to `principal`. Mapping one id twice (under any
    /// spelling) makes it ambiguous, and it is then refused. A mapping whose external id or
    /// principal fails validation ([`Principal::validate`]) is kept out: that external id then
    /// resolves to nothing. [`try_map`](Self::try_map) reports it instead.
    pub fn map(
        mut self,
        channel: impl Into<String>,
        external_id: impl Into<String>,
        principal: Principal,
    ) -> Self {
        let external_id = external_id.into();
        let entry = identity::validate(&external_id)
            .and_then(|()| principal.normalized())
            .ok();
        self.entries
            .entry((channel.into(), identity::canonical_key(&external_id)))
            .or_default()
            .push(entry);
        self
    }

    /// Like [`map`](Self::map), but refuses an external id or principal (id or group) that
    /// cannot be compared safely, naming the character.
    pub fn try_map(
        self,
        channel: impl Into<String>,
        external_id: impl Into<String>,
        principal: Principal,
    ) -> Result<Self, InvalidIdentity> {
        let external_id = external_id.into();
        identity::validate(&external_id)?;
        principal.validate()?;
        Ok(self.map(channel, external_id, principal))
    }
}

#[async_trait]
impl IdentityResolver for StaticIdentityResolver {
    async fn resolve(&self, channel: &str, external_id: &str) -> Result<Principal, IdentityError> {
        let found = match identity::normalize(external_id) {
            Ok(key) => self.entries.get(&(channel.to_owned(), key)),
            Err(_) => None,
        };
        match found.map(Vec::as_slice) {
            Some([Some(one)]) => Ok(one.clone()),
            Some(many) if many.len() > 1 => Err(IdentityError::Ambiguous {
                channel: channel.to_owned(),
                external_id: external_id.to_owned(),
                count: many.len(),
            }),
            _ => Err(IdentityError::Unknown {
                channel: channel.to_owned(),
                external_id: external_id.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_or_several_matches_are_refused() {
        let ids = StaticIdentityResolver::new()
            .map("slack", "U1", Principal::human("sam"))
            .map("slack", "U2", Principal::human("a"))
            .map("slack", "U2", Principal::human("b"));
        assert_eq!(
            ids.resolve("slack", "U1").await.map(|p| p.id),
            Ok("sam".to_owned())
        );
        assert!(matches!(
            ids.resolve("slack", "U2").await,
            Err(IdentityError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            ids.resolve("slack", "U3").await,
            Err(IdentityError::Unknown { .. })
        ));
        assert!(matches!(
            ids.resolve("teams", "U1").await,
            Err(IdentityError::Unknown { .. })
        ));
    }
}
