//! [`GrantTokenBroker`]: the gate's credential for an approved [`HttpCall`] is a grant token
//! bound to that one call and addressed to that one service.

use approvals_audit::grant::{GrantClaims, sign_claims};
use approvals_audit::note::Signer;
use approvals_core::credential::{
    BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest,
};
use async_trait::async_trait;

use super::call::HttpCall;

/// Mints, for each approved [`HttpCall`], a signed grant token that one service accepts for
/// exactly that call ([`GrantGuard`](super::GrantGuard)).
///
/// The token's claims are the grant's (request id, action digest, approvers, policy), with
/// `iss` the broker's issuer, `aud` the service origin from the action's resource
/// (`https://billing.internal`), `bind` the call's [binding](super::call_binding), and `exp`
/// the grant's expiry. The credential's id is the gate's ([`IssueRequest::id`]), its scope
/// `POST /v1/refunds on https://billing.internal`, its secret the token.
///
/// ```no_run
/// # async fn demo(policy: approvals_core::RulePolicy) -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_audit::note::Signer;
/// use approvals_core::{Gate, GuardError};
/// use approvals_http::downstream::{GrantTokenBroker, HttpCall};
/// use serde_json::json;
///
/// let gate = Gate::builder()
///     .policy(policy)
///     .credential_broker(GrantTokenBroker::new(
///         Signer::from_env("APPROVALS_GRANT_KEY")?,
///         "approvals.example.com",
///     ))
///     .build()?;
/// let body = json!({"charge": "ch_1", "amount": 500});
/// let call = HttpCall::new("billing.refund", "https://billing.internal", "POST", "/v1/refunds", Some(body.clone()));
/// let (http, url) = (approvals_http::client::http_client(std::time::Duration::from_secs(10))?, call.url());
/// let status = gate
///     .run_with_credential(&call, |credential| async move {
///         let sent = http.post(url).bearer_auth(credential.secret()).json(&body).send().await;
///         Ok::<_, GuardError>(sent.map(|r| r.status()))
///     })
///     .await?;
/// # let _ = status; Ok(()) }
/// ```
#[derive(Clone)]
pub struct GrantTokenBroker {
    signer: Signer,
    issuer: String,
}

impl GrantTokenBroker {
    /// Signs tokens with `signer` and names `issuer` in them (the `iss` services check). The
    /// services trust the signer's verifier key (`signer.verifier()`).
    pub fn new(signer: Signer, issuer: impl Into<String>) -> GrantTokenBroker {
        GrantTokenBroker {
            signer,
            issuer: issuer.into(),
        }
    }
}

impl std::fmt::Debug for GrantTokenBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTokenBroker")
            .field(
                "key",
                &format!("{}+{:08x}", self.signer.name(), self.signer.key_id()),
            )
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[async_trait]
impl CredentialBroker for GrantTokenBroker {
    fn name(&self) -> &str {
        "grant-token"
    }

    /// Refuses ([`BrokerError::Refused`]) an action that is not an [`HttpCall`]
    /// ([`HttpCall::from_action`] says why) or claims that cannot be signed.
    async fn issue(&self, request: IssueRequest<'_>) -> Result<Credential, BrokerError> {
        let call = HttpCall::from_action(request.action)
            .map_err(|e| BrokerError::Refused(e.to_string()))?;
        let mut claims = GrantClaims::from_grant(request.grant)
            .issuer(self.issuer.as_str())
            .audience(call.origin())
            .bind(call.binding());
        claims.exp = request.not_after;
        let token =
            sign_claims(claims, &self.signer).map_err(|e| BrokerError::Refused(e.to_string()))?;
        let lease = CredentialLease {
            id: request.id.to_owned(),
            scope: call.scope(),
            expires_at: request.not_after,
        };
        Ok(Credential::new(lease, token))
    }

    /// Does nothing and succeeds: a bearer token cannot be called back once handed out. It
    /// needs no recall: the service accepts it once ([`GrantGuard`](super::GrantGuard) keeps a
    /// record of used request ids), for the one call it is bound to, and not after the grant's
    /// expiry.
    async fn revoke(&self, _lease: &CredentialLease) -> Result<(), BrokerError> {
        Ok(())
    }
}
