//! Signed grant tokens: a compact, Ed25519-signed statement that one exact action was
//! approved, which the system that finally executes the change checks with a public key alone.
//!
//! # Format
//!
//! ```text
//! apg1.<base64url(claims JSON)>.<base64url(4-byte key id || 64-byte Ed25519 signature)>
//! ```
//!
//! The signature covers the bytes `apg1.<base64url(claims JSON)>` (the version prefix keeps
//! these signatures apart from anything else the key signs, such as log checkpoints). The key
//! id is the C2SP note key id of the signing key ([`crate::note::key_id`]), and the claims name
//! the key as `key: "<name>+<8 hex key id>"`, so the same verifier keys (`.vkeys` files) that
//! check audit checkpoints check grant tokens. There is no algorithm field to confuse: version
//! `apg1` is Ed25519 only.
//!
//! The claims ([`GrantClaims`]) are JSON with these fields: `v` (1), `typ` (`approvals.grant`),
//! `iss` and `aud` (free-form issuer and audience strings), `key`, `request_id`, `digest`
//! (`sha256:<hex>`), `approvers` (principal ids), `human_approved`, `iat` and `exp` (RFC 3339,
//! UTC), `policy_rule` (optional) and `policy_version`.
//!
//! A token may also be bound to one HTTP call: the optional `bind` claim is the lowercase hex
//! SHA-256 of that call (method, path and query, body), and a service accepts the token only
//! for exactly that call ([`GrantTokenVerifier::verify_bound`], [`GrantClaims::check_bind`];
//! approvals-http's `downstream` module computes the binding and guards services with it).
//!
//! # What a token is, and is not
//!
//! A token is a verifiable *statement*: "request R for the action with digest D was approved
//! by these people under this policy version, and may run until T". It is not a second copy of
//! the grant. The grant stays single-use in the store ([`approvals_core::Gate::execute`]
//! consumes it); a verifier that accepts a token does not consume anything, so a service that
//! must run each approved change at most once keeps its own record of the `request_id`s it has
//! executed, or executes only through the gate.
//!
//! ```
//! use approvals_audit::grant::{GrantClaims, sign_claims, verify_grant};
//! use approvals_audit::note::Signer;
//! use chrono::{Duration, Utc};
//!
//! let signer = Signer::generate("approvals.example/grants")?;
//! let digest = approvals_core::ActionRequest::new("db.migrate", "pg://prod").digest();
//! let now = Utc::now();
//! let claims = GrantClaims::builder(approvals_core::RequestId::new(), digest, now, now + Duration::minutes(5))
//!     .approvers(["sam@example.com"])
//!     .policy_version("v42")
//!     .audience("deployer");
//! let token = sign_claims(claims, &signer)?;
//!
//! // In another service, with the public key only:
//! let checked = verify_grant(&token, &[signer.verifier()], &digest, Utc::now())?;
//! assert_eq!(checked.approvers, ["sam@example.com"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use approvals_core::{Digest, Grant, RequestId};

use crate::note::{Signer, Verifier};

/// The token prefix and format version.
pub const TOKEN_PREFIX: &str = "apg1.";
/// The `typ` claim.
pub const TOKEN_TYPE: &str = "approvals.grant";
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `iat` and `exp` by [`verify_grant`].
pub const DEFAULT_LEEWAY: TimeDelta = TimeDelta::seconds(30);

/// What a grant token says. See the [module docs](self) for the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GrantClaims {
    /// Claims format version (1).
    pub v: u32,
    /// Always [`TOKEN_TYPE`].
    pub typ: String,
    /// Who issued it (for example the gate's service name); empty when not set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Who it is for (for example the executing service); empty when not set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// The signing key, `<name>+<8 hex key id>`.
    pub key: String,
    /// The approval request.
    pub request_id: RequestId,
    /// The digest of the approved action.
    pub digest: Digest,
    /// Ids of the humans who approved (empty when the policy allowed the action).
    pub approvers: Vec<String>,
    /// Whether humans approved it (rather than the policy allowing it outright).
    pub human_approved: bool,
    /// When the grant was issued.
    #[serde(with = "rfc3339")]
    pub iat: DateTime<Utc>,
    /// Until when the grant may be used.
    #[serde(with = "rfc3339")]
    pub exp: DateTime<Utc>,
    /// The policy rule behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
    /// The policy version behind it.
    pub policy_version: String,
    /// The one HTTP call the token may be used for: lowercase hex SHA-256 of the call (see
    /// approvals-http's `downstream::call_binding`). Absent on tokens that are not bound to a
    /// call, which [`GrantTokenVerifier::verify_bound`] refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

impl GrantClaims {
    /// Claims for a grant issued at `iat`, valid until `exp`; set the rest with the builder
    /// methods. The `key` claim is filled in when signing.
    pub fn builder(
        request_id: RequestId,
        digest: Digest,
        iat: DateTime<Utc>,
        exp: DateTime<Utc>,
    ) -> Self {
        Self {
            v: 1,
            typ: TOKEN_TYPE.to_owned(),
            iss: String::new(),
            aud: String::new(),
            key: String::new(),
            request_id,
            digest,
            approvers: Vec::new(),
            human_approved: false,
            iat,
            exp,
            policy_rule: None,
            policy_version: String::new(),
            bind: None,
        }
    }

    /// The claims of a grant from the gate.
    pub fn from_grant(grant: &Grant) -> Self {
        let mut claims = Self::builder(
            grant.request_id(),
            grant.digest(),
            grant.issued_at(),
            grant.expires_at(),
        );
        claims.approvers = grant.approvers().iter().map(|p| p.id.clone()).collect();
        claims.human_approved = grant.is_human_approved();
        claims.policy_rule = grant.policy_rule().map(str::to_owned);
        claims.policy_version = grant.policy_version().to_owned();
        claims
    }

    /// Sets the approvers' ids and marks the grant human-approved when there are any.
    pub fn approvers<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.approvers = ids.into_iter().map(Into::into).collect();
        self.human_approved = !self.approvers.is_empty();
        self
    }

    /// Sets the policy version.
    pub fn policy_version(mut self, version: impl Into<String>) -> Self {
        self.policy_version = version.into();
        self
    }

    /// Sets the issuer.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = iss.into();
        self
    }

    /// Sets the audience.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.aud = aud.into();
        self
    }

    /// Binds the token to one call: `binding` is the call's lowercase hex SHA-256 (the `bind`
    /// claim).
    pub fn bind(mut self, binding: impl Into<String>) -> Self {
        self.bind = Some(binding.into());
        self
    }

    /// Checks that these claims are bound to exactly the call whose binding is `binding`.
    /// Claims without a `bind` claim are refused ([`GrantTokenError::Unbound`]).
    pub fn check_bind(&self, binding: &str) -> Result<(), GrantTokenError> {
        let Some(bound) = self.bind.as_deref() else {
            return Err(GrantTokenError::Unbound);
        };
        if bound == binding {
            Ok(())
        } else {
            Err(GrantTokenError::BindMismatch {
                expected: binding.to_owned(),
                found: bound.to_owned(),
            })
        }
    }
}

/// Why a grant token was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantTokenError {
    /// The token is not `apg1.<claims>.<signature>` or its parts do not decode.
    #[error("malformed grant token: {0}")]
    Malformed(String),
    /// No trusted key has the token's key id and name.
    #[error("grant token signed by unknown key {key}: add its verifier key to the trusted keys")]
    UnknownKey {
        /// `name+keyid` from the token.
        key: String,
    },
    /// The signature does not verify: the token was altered or forged.
    #[error("grant token signature does not verify with key {key}: the token was altered")]
    BadSignature {
        /// `name+keyid` of the key.
        key: String,
    },
    /// The token approves a different action.
    #[error("grant token is for action {found}, not {expected}: the action changed since approval")]
    DigestMismatch {
        /// The digest the verifier expected.
        expected: Digest,
        /// The digest in the token.
        found: Digest,
    },
    /// The token's expiry has passed.
    #[error("grant token expired at {exp}")]
    Expired {
        /// Its expiry.
        exp: DateTime<Utc>,
    },
    /// The token was issued in the future (clock skew beyond the leeway, or forged times).
    #[error("grant token is not valid before {iat}")]
    NotYetValid {
        /// Its issue time.
        iat: DateTime<Utc>,
    },
    /// The token is for another audience or issuer.
    #[error("grant token {claim} is {found:?}, expected {expected:?}")]
    WrongParty {
        /// `aud` or `iss`.
        claim: &'static str,
        /// The expected value.
        expected: String,
        /// The value in the token.
        found: String,
    },
    /// The token is not bound to a call (it has no `bind` claim), and the verifier only
    /// accepts tokens made for one call.
    #[error(
        "grant token is not bound to a call: ask for a credential through a broker that binds it to the call (a bind claim)"
    )]
    Unbound,
    /// The token is bound to another call than the one it came with.
    #[error(
        "grant token is bound to call {found}, not {expected}: the call changed since approval; send exactly the approved method, path, query and body, or ask for a new approval"
    )]
    BindMismatch {
        /// The binding of the call that came with the token.
        expected: String,
        /// The `bind` claim in the token.
        found: String,
    },
}

fn malformed(why: impl Into<String>) -> GrantTokenError {
    GrantTokenError::Malformed(why.into())
}

/// Signs a grant from the gate as a token; `issuer` and `audience` may be empty.
pub fn sign_grant(
    grant: &Grant,
    signer: &Signer,
    issuer: &str,
    audience: &str,
) -> Result<String, GrantTokenError> {
    let claims = GrantClaims::from_grant(grant)
        .issuer(issuer)
        .audience(audience);
    sign_claims(claims, signer)
}

/// Signs claims as a token (the `key` claim is set to the signer's key). Refuses claims that
/// [`GrantTokenVerifier::open`] would refuse (another version or type, a token longer than
/// [`MAX_TOKEN_BYTES`]), so no token is issued that nobody can verify.
pub fn sign_claims(mut claims: GrantClaims, signer: &Signer) -> Result<String, GrantTokenError> {
    if claims.v != 1 || claims.typ != TOKEN_TYPE {
        return Err(malformed(format!(
            "cannot sign claims version {} of type {:?}: only version 1 of type {TOKEN_TYPE:?} is verifiable; build them with GrantClaims::builder",
            claims.v, claims.typ
        )));
    }
    claims.key = format!("{}+{:08x}", signer.name(), signer.key_id());
    let json = serde_json::to_vec(&claims)
        .map_err(|e| malformed(format!("claims cannot be encoded: {e}")))?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + json.len() * 4 / 3 + 100);
    token.push_str(TOKEN_PREFIX);
    B64URL.encode_string(&json, &mut token);
    let signature = signer.sign_raw(token.as_bytes());
    let mut blob = [0u8; 68];
    blob[..4].copy_from_slice(&signer.key_id().to_be_bytes());
    blob[4..].copy_from_slice(&signature.to_bytes());
    token.push('.');
    B64URL.encode_string(blob, &mut token);
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed(format!(
            "the token would be {} bytes, more than the {MAX_TOKEN_BYTES} a verifier accepts; name fewer approvers or a shorter policy rule",
            token.len()
        )));
    }
    Ok(token)
}

/// Checks a grant token: signed by one of `verifiers`, for `expected_digest`, issued no later
/// than `now` and not expired at `now` (both with [`DEFAULT_LEEWAY`]). Returns its claims.
///
/// Audience and issuer are not checked here; use [`GrantTokenVerifier`] for that.
pub fn verify_grant(
    token: &str,
    verifiers: &[Verifier],
    expected_digest: &Digest,
    now: DateTime<Utc>,
) -> Result<GrantClaims, GrantTokenError> {
    GrantTokenVerifier::new(verifiers).verify(token, expected_digest, now)
}

/// Checks grant tokens against trusted keys and, optionally, an audience and issuer.
#[derive(Debug, Clone)]
pub struct GrantTokenVerifier {
    verifiers: Vec<Verifier>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: TimeDelta,
}

impl GrantTokenVerifier {
    /// Trusts tokens signed by any of `verifiers` (list old and new keys across a rotation).
    pub fn new(verifiers: &[Verifier]) -> Self {
        Self {
            verifiers: verifiers.to_vec(),
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Requires the `aud` claim to equal `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Requires the `iss` claim to equal `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Sets the tolerated clock skew (default 30 seconds).
    pub fn leeway(mut self, leeway: TimeDelta) -> Self {
        self.leeway = leeway;
        self
    }

    /// Checks the signature first, then the digest, the times, the audience and the issuer.
    pub fn verify(
        &self,
        token: &str,
        expected_digest: &Digest,
        now: DateTime<Utc>,
    ) -> Result<GrantClaims, GrantTokenError> {
        let claims = self.open(token)?;
        if claims.digest != *expected_digest {
            return Err(GrantTokenError::DigestMismatch {
                expected: *expected_digest,
                found: claims.digest,
            });
        }
        if now >= claims.exp + self.leeway {
            return Err(GrantTokenError::Expired { exp: claims.exp });
        }
        if claims.iat > now + self.leeway {
            return Err(GrantTokenError::NotYetValid { iat: claims.iat });
        }
        for (claim, expected, found) in [
            ("aud", &self.audience, &claims.aud),
            ("iss", &self.issuer, &claims.iss),
        ] {
            if let Some(expected) = expected
                && expected != found
            {
                return Err(GrantTokenError::WrongParty {
                    claim,
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
        }
        Ok(claims)
    }

    /// Checks a token made for one call, where the action's digest is not known (a service
    /// guarding its HTTP API): the signature first, then the times, the audience and the
    /// issuer, as [`verify`](Self::verify) does, and that the token has a `bind` claim
    /// ([`GrantTokenError::Unbound`] otherwise). The caller then compares the claim with
    /// the call it came with ([`GrantClaims::check_bind`]) and keeps the token single-use
    /// (by `request_id`, until [`accepts_until`](Self::accepts_until)).
    pub fn verify_bound(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<GrantClaims, GrantTokenError> {
        let claims = self.open(token)?;
        self.check_window_and_parties(&claims, now)?;
        if claims.bind.is_none() {
            return Err(GrantTokenError::Unbound);
        }
        Ok(claims)
    }

    /// The last instant this verifier accepts `claims`: their expiry plus the tolerated clock
    /// skew. A record of used tokens has to keep each one until then.
    pub fn accepts_until(&self, claims: &GrantClaims) -> DateTime<Utc> {
        claims.exp + self.leeway
    }

    /// The times, the audience and the issuer of opened claims (as in `verify`).
    fn check_window_and_parties(
        &self,
        claims: &GrantClaims,
        now: DateTime<Utc>,
    ) -> Result<(), GrantTokenError> {
        if now >= claims.exp + self.leeway {
            return Err(GrantTokenError::Expired { exp: claims.exp });
        }
        if claims.iat > now + self.leeway {
            return Err(GrantTokenError::NotYetValid { iat: claims.iat });
        }
        for (claim, expected, found) in [
            ("aud", &self.audience, &claims.aud),
            ("iss", &self.issuer, &claims.iss),
        ] {
            if let Some(expected) = expected
                && expected != found
            {
                return Err(GrantTokenError::WrongParty {
                    claim,
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks the signature only and returns the claims (no digest, time or party checks).
    pub fn open(&self, token: &str) -> Result<GrantClaims, GrantTokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let token = token.trim();
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| malformed("it does not start with \"apg1.\""))?;
        let (payload, sig) = rest
            .split_once('.')
            .ok_or_else(|| malformed("expected apg1.<claims>.<signature>"))?;
        let signed = &token[..TOKEN_PREFIX.len() + payload.len()];
        let blob = B64URL
            .decode(sig)
            .map_err(|_| malformed("the signature is not base64url"))?;
        if blob.len() != 68 {
            return Err(malformed("the signature must be a key id and 64 bytes"));
        }
        let key_id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let json = B64URL
            .decode(payload)
            .map_err(|_| malformed("the claims are not base64url"))?;
        // The key name comes from the claims, which are only trusted once the signature
        // verifies; a wrong name just finds no key.
        #[derive(Deserialize)]
        struct KeyOnly {
            key: String,
        }
        let named: KeyOnly = serde_json::from_slice(&json)
            .map_err(|e| malformed(format!("the claims are not valid: {e}")))?;
        let name = named
            .key
            .rsplit_once('+')
            .map(|(name, _)| name)
            .unwrap_or(named.key.as_str());
        let key_label = format!("{name}+{key_id:08x}");
        if named.key != key_label {
            return Err(malformed(format!(
                "the key claim {:?} does not match the signature's key id {key_id:08x}",
                named.key
            )));
        }
        let verifier = self
            .verifiers
            .iter()
            .find(|v| v.key_id() == key_id && v.name() == name)
            .ok_or_else(|| GrantTokenError::UnknownKey {
                key: key_label.clone(),
            })?;
        let signature = Signature::from_slice(&blob[4..])
            .map_err(|_| malformed("the signature is not an Ed25519 signature"))?;
        verifier
            .public_key()
            .verify_strict(signed.as_bytes(), &signature)
            .map_err(|_| GrantTokenError::BadSignature { key: key_label })?;
        let claims: GrantClaims = serde_json::from_slice(&json)
            .map_err(|e| malformed(format!("the claims are not valid: {e}")))?;
        if claims.v != 1 || claims.typ != TOKEN_TYPE {
            return Err(malformed(format!(
                "unsupported claims version {} or type {:?}",
                claims.v, claims.typ
            )));
        }
        Ok(claims)
    }
}

impl GrantClaims {
    /// The claims as pretty JSON, for people.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The expiry as RFC 3339.
    pub fn expires(&self) -> String {
        self.exp.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::{ActionRequest, RequestId};
    use chrono::TimeZone as _;

    fn claims() -> GrantClaims {
        let at = |s| Utc.timestamp_opt(s, 0).single().expect("valid time");
        let id = RequestId::parse("0190f5c2-7a3b-7cde-8f01-23456789abcd").expect("valid id");
        GrantClaims::builder(
            id,
            ActionRequest::new("k", "r").digest(),
            at(1_000),
            at(2_000),
        )
    }

    fn signer() -> Signer {
        Signer::new(
            "grants.test",
            ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]),
        )
        .expect("valid key name")
    }

    /// Found by fuzzing (fuzz/regressions/grant_token/): claims of another type were signed
    /// into a token that no verifier opens.
    #[test]
    fn signing_refuses_claims_no_verifier_accepts() {
        let mut other_type = claims();
        other_type.typ = "approvals.other".into();
        assert!(matches!(
            sign_claims(other_type, &signer()),
            Err(GrantTokenError::Malformed(_))
        ));
        let mut other_version = claims();
        other_version.v = 2;
        assert!(sign_claims(other_version, &signer()).is_err());
        let huge = claims().approvers((0..2_000).map(|i| format!("reviewer-{i}@example.com")));
        assert!(sign_claims(huge, &signer()).is_err());

        let token = sign_claims(claims(), &signer()).expect("valid claims sign");
        let opened = GrantTokenVerifier::new(&[signer().verifier()])
            .open(&token)
            .expect("a signed token opens");
        assert_eq!(opened.request_id, claims().request_id);
    }

    #[test]
    fn claims_without_a_binding_encode_as_before() {
        let json = serde_json::to_value(claims()).expect("claims encode");
        assert!(json.get("bind").is_none(), "{json}");
        let bound = serde_json::to_value(claims().bind("ab".repeat(32))).expect("claims encode");
        assert_eq!(bound["bind"], "ab".repeat(32));
    }

    #[test]
    fn a_bound_token_verifies_only_for_its_call() {
        let at = |s| Utc.timestamp_opt(s, 0).single().expect("valid time");
        let binding = "0f".repeat(32);
        let verifier = GrantTokenVerifier::new(&[signer().verifier()])
            .audience("https://billing.internal")
            .issuer("gate");
        let bound = claims()
            .audience("https://billing.internal")
            .issuer("gate")
            .bind(binding.clone());
        let token = sign_claims(bound, &signer()).expect("valid claims sign");
        let checked = verifier
            .verify_bound(&token, at(1_500))
            .expect("a bound token verifies");
        assert_eq!(checked.check_bind(&binding), Ok(()));
        assert!(matches!(
            checked.check_bind(&"1f".repeat(32)),
            Err(GrantTokenError::BindMismatch { .. })
        ));
        assert_eq!(verifier.accepts_until(&checked), at(2_000) + DEFAULT_LEEWAY);
        assert!(matches!(
            verifier.verify_bound(&token, at(2_100)),
            Err(GrantTokenError::Expired { .. })
        ));

        let unbound = claims().audience("https://billing.internal").issuer("gate");
        let token = sign_claims(unbound, &signer()).expect("valid claims sign");
        assert_eq!(
            verifier.verify_bound(&token, at(1_500)),
            Err(GrantTokenError::Unbound)
        );

        let elsewhere = claims()
            .audience("https://other.internal")
            .issuer("gate")
            .bind(binding);
        let token = sign_claims(elsewhere, &signer()).expect("valid claims sign");
        assert!(matches!(
            verifier.verify_bound(&token, at(1_500)),
            Err(GrantTokenError::WrongParty { claim: "aud", .. })
        ));
    }
}
