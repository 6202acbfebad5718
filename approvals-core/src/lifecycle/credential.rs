//! A run's credential: planned when its grant is consumed, issued, then revoked; and when a
//! credential left behind is due for revocation.

use chrono::{DateTime, Utc};

use super::{NotApplicable, Step, Unusable, consume};
use crate::audit::EventDetail;
use crate::credential::{CredentialLease, RevokeReason};
use crate::request::Digest;
use crate::store::{CredentialState, RequestRecord, RequestState};

/// The longest scope text recorded and audited, in characters.
pub const MAX_SCOPE_CHARS: usize = 1024;

/// Approved → Executing, as [`consume`], with a credential planned under `id`: the id is in
/// the same write that consumes the grant, before anything is issued, so no credential ever
/// exists that no record names. It may live until the grant's expiry at the latest.
pub fn consume_with_credential(
    record: &RequestRecord,
    digest: Digest,
    now: DateTime<Utc>,
    id: String,
) -> Result<Step, Unusable> {
    let mut step = consume(record, digest, now)?;
    // `consume` refuses a record without a grant expiry (it lapses), so this is the grant's.
    let expires_at = record.grant_expires_at.unwrap_or(now);
    if let Some(execution) = step.next.execution.as_mut() {
        execution.credential = Some(CredentialState {
            lease: CredentialLease {
                id,
                scope: String::new(),
                expires_at,
            },
            issued: false,
            revoked_at: None,
        });
    }
    Ok(step)
}

/// Why a credential a broker returned is not handed to the action (the gate revokes it and
/// refuses the action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialRefused {
    /// The request is not executing: its grant was not consumed for this run.
    #[error("the request is {0}, not executing")]
    WrongState(RequestState),
    /// No credential was planned when the grant was consumed.
    #[error("no credential was planned when the grant was consumed")]
    NotPlanned,
    /// The planned credential was already issued or revoked.
    #[error("this run's credential was already issued or revoked")]
    AlreadyIssued,
    /// The broker named its credential differently from the planned id, so a sweep could not
    /// find it.
    #[error("the broker issued {issued:?}, but this run's credential is {planned:?}")]
    OtherId {
        /// The planned id.
        planned: String,
        /// The id the broker returned.
        issued: String,
    },
    /// The credential outlives the grant.
    #[error(
        "the credential expires at {expires_at}, after its grant ({not_after}): a credential never outlives the grant it was minted for"
    )]
    OutlivesGrant {
        /// The credential's expiry.
        expires_at: DateTime<Utc>,
        /// The grant's.
        not_after: DateTime<Utc>,
    },
    /// The credential had expired already.
    #[error("the credential expired at {0}, before it could be used")]
    Expired(DateTime<Utc>),
    /// The broker did not say what the credential allows, or said it at more than
    /// [`MAX_SCOPE_CHARS`] characters.
    #[error("the credential's scope must say what it allows in 1 to {MAX_SCOPE_CHARS} characters")]
    BadScope,
}

/// Whether `issued`, what a broker returned, may be handed to the action for which `planned`
/// was planned at `now`. The one check of a credential, for recorded requests
/// ([`credential_issued`]) and for actions the policy allowed without a record.
pub fn check_lease(
    planned: &CredentialLease,
    issued: &CredentialLease,
    now: DateTime<Utc>,
) -> Result<(), CredentialRefused> {
    if issued.id != planned.id {
        return Err(CredentialRefused::OtherId {
            planned: planned.id.clone(),
            issued: issued.id.clone(),
        });
    }
    if issued.expires_at > planned.expires_at {
        return Err(CredentialRefused::OutlivesGrant {
            expires_at: issued.expires_at,
            not_after: planned.expires_at,
        });
    }
    if issued.expires_at <= now {
        return Err(CredentialRefused::Expired(issued.expires_at));
    }
    if issued.scope.trim().is_empty() || issued.scope.chars().count() > MAX_SCOPE_CHARS {
        return Err(CredentialRefused::BadScope);
    }
    Ok(())
}

/// Records that the broker issued `lease` for the executing run: `credential_issued`, with the
/// credential's id, scope and expiry (never its secret). Refused ([`CredentialRefused`]) for a
/// credential that is not the planned one or would outlive the grant.
pub fn credential_issued(
    record: &RequestRecord,
    lease: &CredentialLease,
    now: DateTime<Utc>,
) -> Result<Step, CredentialRefused> {
    if record.state != RequestState::Executing {
        return Err(CredentialRefused::WrongState(record.state));
    }
    let planned = record
        .execution
        .as_ref()
        .and_then(|e| e.credential.as_ref())
        .ok_or(CredentialRefused::NotPlanned)?;
    if planned.issued || !planned.outstanding() {
        return Err(CredentialRefused::AlreadyIssued);
    }
    check_lease(&planned.lease, lease, now)?;
    let mut next = record.clone();
    if let Some(state) = next.execution.as_mut().and_then(|e| e.credential.as_mut()) {
        state.lease = lease.clone();
        state.issued = true;
    }
    let event = EventDetail::CredentialIssued {
        credential: lease.clone(),
    };
    Ok(Step::new(next, vec![event]))
}

/// Records that the run's credential was revoked: `credential_revoked`. Applies to any request
/// with an outstanding credential (planned or issued), whatever its state: revoking is how a
/// credential ends, and it may come after the outcome.
pub fn credential_revoked(
    record: &RequestRecord,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<Step, NotApplicable> {
    let outstanding = outstanding(record).ok_or(NotApplicable::WrongState(record.state))?;
    let lease = outstanding.lease.clone();
    let mut next = record.clone();
    if let Some(state) = next.execution.as_mut().and_then(|e| e.credential.as_mut()) {
        state.revoked_at = Some(now);
    }
    let event = EventDetail::CredentialRevoked {
        credential: lease,
        reason,
    };
    Ok(Step::new(next, vec![event]))
}

/// The run's credential, while it may still exist.
pub fn outstanding(record: &RequestRecord) -> Option<&CredentialState> {
    record
        .execution
        .as_ref()
        .and_then(|e| e.credential.as_ref())
        .filter(|c| c.outstanding())
}

/// When an outstanding credential is due for revocation by someone other than the run that
/// asked for it: at once once the run has ended (its own revocation failed, or it died after
/// recording the outcome), otherwise when the credential expires (its process may still be
/// running the action until then). `None` without an outstanding credential.
pub fn revoke_at(record: &RequestRecord) -> Option<DateTime<Utc>> {
    let credential = outstanding(record)?;
    Some(match record.state {
        RequestState::Executing => credential.lease.expires_at,
        _ => DateTime::UNIX_EPOCH,
    })
}
