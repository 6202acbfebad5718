//! Step-up: a policy rule can require each approval to carry a fresh, phishing-resistant
//! proof of the reviewer, bound to the action approved (`step_up = "passkey"`).
//!
//! A passkey proof is a WebAuthn assertion whose challenge is [`challenge`] of the request id,
//! the action digest and a one-time nonce the server chose for the ceremony. The console
//! checks the assertion's signature against the reviewer's registered passkey (with a
//! WebAuthn library) before it builds a [`StepUpProof`]; the rulebook
//! ([`check_review`](crate::lifecycle::check_review)) then refuses any approval of such a rule
//! without a proof, and any proof that is not of this request and this digest, lacks user
//! verification, or reuses a nonce an earlier review of the request used. So no channel can
//! approve a step-up rule without a proof of this very action: Slack and Teams send their
//! reviewers to the console instead.
//!
//! The proof is stored with the review and written into its `reviewed` audit event, raw
//! (client data, authenticator data, signature, public key), so an auditor can check it later
//! without this library:
//!
//! 1. `challenge(request id, digest, nonce)`, base64url without padding, is the
//!    `challenge` of the client data, whose `type` is `webauthn.get`;
//! 2. the authenticator data starts with SHA-256 of the relying party id and its flags have
//!    user presence and user verification set;
//! 3. the signature over `authenticator data || SHA-256(client data)` verifies with the
//!    public key, which is the one registered for the credential id.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::request::Digest;
use crate::store::RequestId;

/// What a rule's `step_up` requires of each approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepUp {
    /// A WebAuthn assertion with user verification, from a passkey the reviewer registered,
    /// whose challenge is bound to the request and its digest.
    Passkey,
}

impl std::fmt::Display for StepUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepUp::Passkey => "passkey",
        })
    }
}

/// Domain separation of [`challenge`]: a step-up challenge is never a valid challenge of
/// anything else, and the other way round.
pub const CHALLENGE_DOMAIN: &str = "action-level-approvals step-up v1";

/// The shortest nonce accepted, in bytes.
pub const MIN_NONCE_BYTES: usize = 16;

/// Flag bits of WebAuthn authenticator data.
const USER_PRESENT: u8 = 0x01;
const USER_VERIFIED: u8 = 0x04;

/// The WebAuthn challenge of a step-up approval of request `id` at `digest`, with the
/// server's one-time `nonce`: SHA-256 of the domain, the id, the digest (`sha256:<hex>`) and
/// the nonce, separated by newlines.
pub fn challenge(id: RequestId, digest: &Digest, nonce: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHALLENGE_DOMAIN.as_bytes());
    h.update(b"\n");
    h.update(id.to_string().as_bytes());
    h.update(b"\n");
    h.update(digest.to_string().as_bytes());
    h.update(b"\n");
    h.update(nonce);
    h.finalize().into()
}

/// A reviewer's step-up proof, as stored with the review and audited. Binary fields are
/// base64url without padding, as WebAuthn's JSON encodings use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpProof {
    /// How the reviewer proved it.
    pub method: StepUp,
    /// The WebAuthn relying party id the passkey is scoped to (the console's host).
    pub rp_id: String,
    /// The credential id of the passkey.
    pub credential_id: String,
    /// The server's one-time nonce of this ceremony (see [`challenge`]).
    pub nonce: String,
    /// `clientDataJSON`, as the browser sent it.
    pub client_data_json: String,
    /// The authenticator data, as the authenticator signed it.
    pub authenticator_data: String,
    /// The assertion signature.
    pub signature: String,
    /// The passkey's public key (the one registered for the credential id), as a JSON Web Key
    /// (RFC 7517) text with its COSE algorithm name in `alg`.
    pub public_key: String,
    /// Whether the authenticator saw the user (flag UP).
    pub user_present: bool,
    /// Whether the authenticator verified the user (flag UV: PIN or biometrics).
    pub user_verified: bool,
    /// The authenticator's signature counter (0 for authenticators that keep none).
    pub sign_count: u32,
}

/// Why a step-up proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A field is not base64url, or the client data is not the JSON WebAuthn defines.
    #[error("the proof's {0} cannot be read")]
    Unreadable(&'static str),
    /// The client data is not of an assertion.
    #[error("the proof is not a WebAuthn assertion (client data type {0:?})")]
    NotAnAssertion(String),
    /// The challenge is not the one of this request, digest and nonce.
    #[error("the proof is for another request or another version of the action")]
    OtherAction,
    /// The nonce is too short to be one-time.
    #[error("the proof's nonce is shorter than {MIN_NONCE_BYTES} bytes")]
    ShortNonce,
    /// The authenticator data is not for this relying party.
    #[error("the proof's authenticator data is not for relying party {0:?}")]
    OtherRelyingParty(String),
    /// User presence or user verification is missing.
    #[error("the authenticator did not verify the user (no PIN or biometrics)")]
    NotVerified,
    /// The flags or counter stated in the proof differ from its authenticator data.
    #[error("the proof's stated flags or counter differ from its authenticator data")]
    Inconsistent,
}

/// The flags and the signature counter of WebAuthn authenticator data (bytes 32 to 36, after
/// the relying party id's hash); `None` when it is too short to hold them.
fn flags_and_counter(data: &[u8]) -> Option<(u8, u32)> {
    let flags = *data.get(32)?;
    let counter = u32::from_be_bytes(data.get(33..37)?.try_into().ok()?);
    Some((flags, counter))
}

fn decode(field: &'static str, value: &str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| ProofError::Unreadable(field))
}

/// The parts of `clientDataJSON` a step-up proof is checked by.
#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
}

impl StepUpProof {
    /// Checks that the proof is of request `id` at `digest`: the client data is an assertion
    /// over [`challenge`] of them and the proof's nonce, the authenticator data is for the
    /// proof's relying party, with the user present and verified, and the stated flags and
    /// counter are the authenticator data's. The signature is checked by whoever built the
    /// proof, against the key registered for the credential (over [`signed_message`]).
    pub fn check_binding(&self, id: RequestId, digest: &Digest) -> Result<(), ProofError> {
        let nonce = decode("nonce", &self.nonce)?;
        if nonce.len() < MIN_NONCE_BYTES {
            return Err(ProofError::ShortNonce);
        }
        let client_data = decode("client data", &self.client_data_json)?;
        let client: ClientData = serde_json::from_slice(&client_data)
            .map_err(|_| ProofError::Unreadable("client data"))?;
        if client.kind != "webauthn.get" {
            return Err(ProofError::NotAnAssertion(
                crate::text::truncate(&client.kind, 40).into(),
            ));
        }
        let presented = decode("client data challenge", &client.challenge)
            .map_err(|_| ProofError::OtherAction)?;
        if presented != challenge(id, digest, &nonce) {
            return Err(ProofError::OtherAction);
        }
        let data = decode("authenticator data", &self.authenticator_data)?;
        let (flags, counter) =
            flags_and_counter(&data).ok_or(ProofError::Unreadable("authenticator data"))?;
        let rp_hash: [u8; 32] = Sha256::digest(self.rp_id.as_bytes()).into();
        if data[..32] != rp_hash {
            return Err(ProofError::OtherRelyingParty(self.rp_id.clone()));
        }
        if flags & USER_PRESENT == 0 || flags & USER_VERIFIED == 0 {
            return Err(ProofError::NotVerified);
        }
        if !self.user_present || !self.user_verified || counter != self.sign_count {
            return Err(ProofError::Inconsistent);
        }
        Ok(())
    }

    /// A passkey proof from the raw parts of an assertion whose signature was verified against
    /// the key registered for `credential_id` (`public_key`, a JWK text). The flags and the
    /// counter are read from the authenticator data, so they always say what it says.
    pub fn passkey(
        rp_id: &str,
        credential_id: &[u8],
        nonce: &[u8],
        client_data_json: &[u8],
        authenticator_data: &[u8],
        signature: &[u8],
        public_key: String,
    ) -> Self {
        let (flags, sign_count) = flags_and_counter(authenticator_data).unwrap_or_default();
        StepUpProof {
            method: StepUp::Passkey,
            rp_id: rp_id.to_owned(),
            credential_id: URL_SAFE_NO_PAD.encode(credential_id),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            client_data_json: URL_SAFE_NO_PAD.encode(client_data_json),
            authenticator_data: URL_SAFE_NO_PAD.encode(authenticator_data),
            signature: URL_SAFE_NO_PAD.encode(signature),
            public_key,
            user_present: flags & USER_PRESENT != 0,
            user_verified: flags & USER_VERIFIED != 0,
            sign_count,
        }
    }

    /// The nonce's bytes, when readable: one review of a request may use a nonce.
    pub fn nonce_bytes(&self) -> Option<Vec<u8>> {
        decode("nonce", &self.nonce).ok()
    }
}

/// What a WebAuthn assertion signs, and what an auditor verifies the proof's signature over
/// with its public key: the authenticator data followed by SHA-256 of the client data.
pub fn signed_message(proof: &StepUpProof) -> Result<Vec<u8>, ProofError> {
    let mut message = decode("authenticator data", &proof.authenticator_data)?;
    let client_data = decode("client data", &proof.client_data_json)?;
    message.extend_from_slice(&Sha256::digest(&client_data));
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn authenticator_data(rp_id: &str, flags: u8, counter: u32) -> Vec<u8> {
        let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend_from_slice(&counter.to_be_bytes());
        data
    }

    /// A proof's unsigned parts, as an authenticator would make them.
    fn signed(id: RequestId, digest: &Digest, flags: u8) -> StepUpProof {
        let nonce = [9u8; 16];
        let client = serde_json::json!({
            "type": "webauthn.get",
            "challenge": b64(&challenge(id, digest, &nonce)),
            "origin": "https://console.example.com",
        })
        .to_string();
        let data = authenticator_data("console.example.com", flags, 3);
        StepUpProof {
            method: StepUp::Passkey,
            rp_id: "console.example.com".into(),
            credential_id: b64(b"credential"),
            nonce: b64(&nonce),
            client_data_json: b64(client.as_bytes()),
            authenticator_data: b64(&data),
            signature: b64(b"signature"),
            public_key: b64(b"key"),
            user_present: flags & USER_PRESENT != 0,
            user_verified: flags & USER_VERIFIED != 0,
            sign_count: 3,
        }
    }

    #[test]
    fn a_proof_verifies_for_its_own_request_and_digest_only() {
        let id = RequestId::new();
        let digest = Digest([1; 32]);
        let proof = signed(id, &digest, USER_PRESENT | USER_VERIFIED);
        assert_eq!(proof.check_binding(id, &digest), Ok(()));
        assert_eq!(
            proof.check_binding(RequestId::new(), &digest),
            Err(ProofError::OtherAction)
        );
        assert_eq!(
            proof.check_binding(id, &Digest([2; 32])),
            Err(ProofError::OtherAction)
        );
        let message = signed_message(&proof).expect("readable");
        assert_eq!(message.len(), 37 + 32);
    }

    #[test]
    fn without_user_verification_or_with_altered_parts_a_proof_is_refused() {
        let id = RequestId::new();
        let digest = Digest([1; 32]);
        let unverified = signed(id, &digest, USER_PRESENT);
        assert_eq!(
            unverified.check_binding(id, &digest),
            Err(ProofError::NotVerified)
        );

        let mut claims_more = signed(id, &digest, USER_PRESENT | USER_VERIFIED);
        claims_more.sign_count = 4;
        assert_eq!(
            claims_more.check_binding(id, &digest),
            Err(ProofError::Inconsistent)
        );

        let mut other_rp = signed(id, &digest, USER_PRESENT | USER_VERIFIED);
        other_rp.rp_id = "evil.example.com".into();
        assert!(matches!(
            other_rp.check_binding(id, &digest),
            Err(ProofError::OtherRelyingParty(_))
        ));

        let mut short = signed(id, &digest, USER_PRESENT | USER_VERIFIED);
        short.nonce = b64(&[1; 8]);
        assert_eq!(
            short.check_binding(id, &digest),
            Err(ProofError::ShortNonce)
        );

        let mut registration = signed(id, &digest, USER_PRESENT | USER_VERIFIED);
        let client = serde_json::json!({
            "type": "webauthn.create",
            "challenge": b64(&challenge(id, &digest, &[9u8; 16])),
        })
        .to_string();
        registration.client_data_json = b64(client.as_bytes());
        assert!(matches!(
            registration.check_binding(id, &digest),
            Err(ProofError::NotAnAssertion(_))
        ));
    }

    #[test]
    fn the_challenge_separates_every_input() {
        let id = RequestId::new();
        let d = Digest([1; 32]);
        let base = challenge(id, &d, b"0123456789abcdef");
        assert_ne!(base, challenge(RequestId::new(), &d, b"0123456789abcdef"));
        assert_ne!(base, challenge(id, &Digest([2; 32]), b"0123456789abcdef"));
        assert_ne!(base, challenge(id, &d, b"0123456789abcdeg"));
        assert_eq!(base, challenge(id, &d, b"0123456789abcdef"));
    }
}
