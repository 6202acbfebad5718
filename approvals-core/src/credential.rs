//! Credentials scoped to one approved action: the [`CredentialBroker`] trait, the
//! [`Credential`] a broker mints, and the [`CredentialLease`] the gate records and audits.
//!
//! With a broker, an agent holds no standing access of its own: the gate mints a credential
//! for exactly the approved action after consuming its grant, hands it to the action's
//! closure, and revokes it when the action ends, whatever the outcome
//! ([`Gate::execute_with_credential`](crate::Gate::execute_with_credential)). Issuing and
//! revoking are lifecycle transitions ([`lifecycle::credential_issued`],
//! [`lifecycle::credential_revoked`]); a credential a crashed process left behind is revoked
//! by a sweep once its time is over ([`lifecycle::Due::Revoke`]).
//!
//! [`lifecycle::credential_issued`]: crate::lifecycle::credential_issued
//! [`lifecycle::credential_revoked`]: crate::lifecycle::credential_revoked
//! [`lifecycle::Due::Revoke`]: crate::lifecycle::Due::Revoke

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::gate::Grant;
use crate::request::ActionRequest;
use crate::store::RequestId;

/// What is recorded and audited of a credential: its id, what it allows, and until when.
/// Never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialLease {
    /// The broker's name for it (a database role, a token id), chosen by the gate before
    /// issuing ([`credential_id`]) so that a sweep can revoke it even when the process that
    /// asked for it died before recording it.
    pub id: String,
    /// What it allows, for humans and auditors (`SELECT on public.invoices`). Empty while it
    /// is being issued.
    #[serde(default)]
    pub scope: String,
    /// When it stops working by itself; never later than the grant's expiry.
    pub expires_at: DateTime<Utc>,
}

/// The credential id the gate asks a broker to issue for request `id`: `apr_` followed by the
/// request id's 32 hex digits. Lowercase ASCII letters, digits and underscores only, at most
/// 36 bytes: a valid unquoted name in SQL and most other systems.
pub fn credential_id(id: RequestId) -> String {
    format!("apr_{}", id.0.simple())
}

/// A credential minted for one approved action: its [`lease`](Credential::lease) and its
/// secret (a password, a token). `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    lease: CredentialLease,
    secret: String,
}

impl Credential {
    /// A credential with this lease and secret.
    pub fn new(lease: CredentialLease, secret: impl Into<String>) -> Self {
        Credential {
            lease,
            secret: secret.into(),
        }
    }

    /// Its id: the name it logs in with, where it has one.
    pub fn id(&self) -> &str {
        &self.lease.id
    }

    /// What it allows.
    pub fn scope(&self) -> &str {
        &self.lease.scope
    }

    /// When it stops working by itself.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.lease.expires_at
    }

    /// What is recorded of it.
    pub fn lease(&self) -> &CredentialLease {
        &self.lease
    }

    /// The secret. Hand it to the client that performs the action; never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("lease", &self.lease)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a credential was revoked, as audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevokeReason {
    /// The action ran (succeeded or failed).
    Finished,
    /// The action never ran: issuing or recording the credential failed.
    NotRun,
    /// A sweep revoked what a process left behind (it died, or its own revocation failed).
    Swept,
}

/// What the gate asks a broker to issue.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    /// The id to give the credential ([`credential_id`]): the broker names what it creates
    /// by it, so that [`CredentialBroker::revoke`] finds it from the id alone.
    pub id: &'a str,
    /// The consumed grant that approved the action.
    pub grant: &'a Grant,
    /// The approved action, exactly as its digest was approved.
    pub action: &'a ActionRequest,
    /// The latest expiry allowed: the grant's. A credential that lives longer is refused
    /// (and revoked) by the gate.
    pub not_after: DateTime<Utc>,
}

/// A broker could not issue or revoke a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The action asks for something this broker will not grant (an unknown kind, a name
    /// that is not a plain identifier, a privilege it does not hand out). Not retryable: the
    /// action has to change.
    #[error("the credential broker refuses this action: {0}")]
    Refused(String),
    /// The system that mints credentials failed or could not be reached.
    #[error("the credential broker failed: {0}")]
    Unavailable(String),
}

/// Mints a credential for exactly one approved action, and takes it back.
///
/// The gate calls [`issue`](CredentialBroker::issue) after consuming the grant and before
/// running the action, and [`revoke`](CredentialBroker::revoke) when the action has ended
/// (succeeded, failed, or was never run because recording the credential failed), and from a
/// sweep for a credential whose process died. Both must be idempotent: issuing an id that
/// exists replaces it or fails, and revoking an id that no longer exists (or never did)
/// succeeds.
///
/// ```
/// use approvals_core::credential::{
///     BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest,
/// };
///
/// /// Hands out a random token per action from an in-memory table.
/// struct Tokens(std::sync::Mutex<std::collections::HashMap<String, String>>);
///
/// #[async_trait::async_trait]
/// impl CredentialBroker for Tokens {
///     fn name(&self) -> &str {
///         "tokens"
///     }
///     async fn issue(&self, req: IssueRequest<'_>) -> Result<Credential, BrokerError> {
///         let secret = format!("{}-secret", req.id);
///         self.0.lock().unwrap().insert(req.id.to_owned(), secret.clone());
///         let lease = CredentialLease {
///             id: req.id.to_owned(),
///             scope: format!("{} on {}", req.action.kind, req.action.resource),
///             expires_at: req.not_after,
///         };
///         Ok(Credential::new(lease, secret))
///     }
///     async fn revoke(&self, lease: &CredentialLease) -> Result<(), BrokerError> {
///         self.0.lock().unwrap().remove(&lease.id);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait CredentialBroker: Send + Sync + 'static {
    /// The broker's name, for errors and logs (`postgres`, `grant-token`).
    fn name(&self) -> &str;

    /// Issues a credential named `request.id`, scoped to `request.action`, expiring no later
    /// than `request.not_after`. Any error refuses the action (fail closed).
    async fn issue(&self, request: IssueRequest<'_>) -> Result<Credential, BrokerError>;

    /// Revokes the credential `lease` names. Idempotent; `lease.scope` may be empty when the
    /// process that asked for it died before recording what it allows.
    async fn revoke(&self, lease: &CredentialLease) -> Result<(), BrokerError>;

    /// Revokes every credential of this broker that expired before `now`, whether or not a
    /// request record names it, and returns their ids. A sweep calls it
    /// ([`Gate::sweep`](crate::Gate::sweep)): an action the policy allowed outright keeps no
    /// record, so a credential whose process died while running one is found only here.
    ///
    /// The default revokes nothing, which is right for a broker whose credentials cease to
    /// exist by themselves when they expire (signed tokens, cloud sessions). A broker that
    /// creates something lasting (a database role, a user) should implement it.
    async fn revoke_expired(&self, now: DateTime<Utc>) -> Result<Vec<String>, BrokerError> {
        let _ = now;
        Ok(Vec::new())
    }
}
