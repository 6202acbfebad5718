//! What the console makes of a verified ID token: who the reviewer is (the identity claim,
//! `email_verified`, the authorized party) and their groups (a claim, or the identity
//! resolver, asked again before each decision).

use std::time::Duration;

use approvals_core::{IdentityResolver, Principal, PrincipalKind};

use super::{Claims, Groups, OidcClient, RESOLVER_CHANNEL};

/// Who signed in, read from verified claims.
#[derive(Debug)]
pub(crate) struct SignedIn {
    /// The identity claim's value (the resolver's external id).
    pub(crate) external_id: String,
    /// The reviewer, in canonical form.
    pub(crate) principal: Principal,
    /// When the session must end at the latest (the ID token's expiry, with groups from a
    /// claim).
    pub(crate) until: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the resolver is asked again before each decision.
    pub(crate) recheck: bool,
}

/// Why a sign-in was refused after the provider answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error(
        "the ID token has no {0:?} claim (string) to name you by; ask an administrator to check the console's identity claim"
    )]
    NoIdentity(String),
    #[error("your e-mail address is not verified by the identity provider")]
    EmailNotVerified,
    #[error(
        "the ID token was issued to {found:?} on behalf of another client (azp), not this console"
    )]
    AuthorizedParty { found: String },
    #[error("the {claim:?} claim must be an array of group names")]
    Groups { claim: String },
    #[error("your identity {0}")]
    Invalid(String),
    #[error("{0}")]
    Resolver(approvals_core::IdentityError),
    #[error("the identity resolver maps you to an agent or service; the console is for people")]
    NotHuman,
}

impl OidcClient {
    /// The reviewer the verified `claims` name, with their groups.
    pub(super) async fn signed_in(&self, claims: &Claims) -> Result<SignedIn, ClaimError> {
        let config = &self.inner.config;
        // azp: when present it must be this client (several audiences would need it).
        if let Some(azp) = claims.authorized_party()
            && azp.as_str() != self.inner.client.client_id().as_str()
        {
            return Err(ClaimError::AuthorizedParty {
                found: azp.as_str().to_owned(),
            });
        }
        let all = serde_json::to_value(claims).unwrap_or_default();
        let claim = config.identity_claim.trim();
        let external_id = all
            .get(claim)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ClaimError::NoIdentity(claim.to_owned()))?
            .to_owned();
        if claim == "email" && all.get("email_verified") == Some(&serde_json::Value::Bool(false)) {
            return Err(ClaimError::EmailNotVerified);
        }
        let name = all
            .get("name")
            .and_then(serde_json::Value::as_str)
            .filter(|n| !n.trim().is_empty());
        match &config.groups {
            Groups::Resolver(resolver) => {
                let principal = resolve(resolver.as_ref(), &external_id).await?;
                Ok(SignedIn {
                    external_id,
                    principal,
                    until: None,
                    recheck: true,
                })
            }
            groups => {
                let mut principal = Principal::human(external_id.clone());
                if let Some(name) = name {
                    principal = principal.with_name(name);
                }
                if let Groups::Claim(c) = groups {
                    let list = match all.get(c.trim()) {
                        None | Some(serde_json::Value::Null) => Vec::new(),
                        Some(serde_json::Value::Array(items)) => items
                            .iter()
                            .map(|g| g.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| ClaimError::Groups { claim: c.clone() })?,
                        Some(_) => return Err(ClaimError::Groups { claim: c.clone() }),
                    };
                    principal = principal.with_groups(list);
                }
                let principal = principal
                    .normalized()
                    .map_err(|e| ClaimError::Invalid(e.to_string()))?;
                Ok(SignedIn {
                    external_id,
                    principal,
                    until: matches!(groups, Groups::Claim(_)).then(|| claims.expiration()),
                    recheck: false,
                })
            }
        }
    }

    /// The principal the resolver maps `external_id` to now, for a decision; `None` when this
    /// sign-in takes its groups from the ID token.
    pub(crate) async fn resolve_again(
        &self,
        external_id: &str,
    ) -> Option<Result<Principal, ClaimError>> {
        match &self.inner.config.groups {
            Groups::Resolver(resolver) => Some(resolve(resolver.as_ref(), external_id).await),
            _ => None,
        }
    }
}

/// How long the identity resolver may take before the sign-in or decision is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

async fn resolve(
    resolver: &dyn IdentityResolver,
    external_id: &str,
) -> Result<Principal, ClaimError> {
    let principal =
        approvals_core::resolve_reviewer(resolver, RESOLVER_CHANNEL, external_id, RESOLVE_TIMEOUT)
            .await
            .map_err(ClaimError::Resolver)?;
    if principal.kind != PrincipalKind::Human {
        return Err(ClaimError::NotHuman);
    }
    principal
        .normalized()
        .map_err(|e| ClaimError::Invalid(e.to_string()))
}
