//! Signed grant tokens: a grant from a real gate, checked with the public key alone; every
//! kind of refusal.

mod common;

use approvals_audit::grant::{
    GrantClaims, GrantTokenError, GrantTokenVerifier, sign_claims, sign_grant, verify_grant,
};
use approvals_core::{
    ActionRequest, Gate, Initiator, MemorySink, Principal, Review, RulePolicy, Submission,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{TimeDelta, Utc};
use common::*;

/// A grant, and the digest of the action as the gate stored it (with its initiator filled in),
/// which is what the executing service recomputes.
async fn approved_grant() -> (approvals_core::Grant, approvals_core::Digest) {
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(scenario::POLICY).unwrap())
        .audit(MemorySink::new())
        .initiator(Initiator::agent("deploy-bot").on_behalf_of(Principal::human("dana")))
        .build()
        .unwrap();
    let action = ActionRequest::new("db.migrate", "pg://prod/orders")
        .params(serde_json::json!({"statement": "ALTER TABLE orders ADD COLUMN x int"}));
    let Submission::Pending(id) = gate.submit(&action).await.unwrap() else {
        panic!("expected approval to be required");
    };
    gate.decide(id, Review::approve(scenario::sre("sam@example.com")))
        .await
        .unwrap();
    let stored = gate.get(id).await.unwrap().unwrap();
    assert_ne!(
        stored.request.digest(),
        action.digest(),
        "the initiator is part of it"
    );
    (gate.wait(id).await.unwrap(), stored.request.digest())
}

#[tokio::test]
async fn a_gate_grant_verifies_with_the_public_key_alone() {
    let (grant, digest) = approved_grant().await;
    let token = sign_grant(&grant, &signer(1), "gate.prod", "deployer").unwrap();
    assert!(token.starts_with("apg1.") && !token.contains(['\n', ' ', '=', '+', '/']));

    let claims = GrantTokenVerifier::new(&[signer(1).verifier()])
        .audience("deployer")
        .issuer("gate.prod")
        .verify(&token, &digest, Utc::now())
        .unwrap();
    assert_eq!(claims.request_id, grant.request_id());
    assert_eq!(claims.digest, grant.digest());
    assert_eq!(claims.approvers, ["sam@example.com"]);
    assert!(claims.human_approved);
    assert_eq!(claims.exp, grant.expires_at());
    assert_eq!(claims.policy_version, grant.policy_version());
    assert_eq!(claims.policy_rule.as_deref(), Some("prod-changes"));
    assert_eq!(
        claims.key,
        format!("{ORIGIN}+{:08x}", signer(1).verifier().key_id())
    );
}

#[tokio::test]
async fn refuses_wrong_digest_expired_early_unknown_key_and_wrong_party() {
    let (grant, digest) = approved_grant().await;
    let token = sign_grant(&grant, &signer(1), "gate.prod", "deployer").unwrap();
    let keys = [signer(1).verifier()];
    let now = Utc::now();

    let other = ActionRequest::new("db.migrate", "pg://prod/orders")
        .params(serde_json::json!({"statement": "DROP TABLE orders"}));
    assert!(matches!(
        verify_grant(&token, &keys, &other.digest(), now),
        Err(GrantTokenError::DigestMismatch { .. })
    ));
    let later = grant.expires_at() + TimeDelta::minutes(1);
    assert!(matches!(
        verify_grant(&token, &keys, &digest, later),
        Err(GrantTokenError::Expired { .. })
    ));
    // Within the leeway it is still accepted; just past it, refused.
    let edge = grant.expires_at() + TimeDelta::seconds(29);
    assert!(verify_grant(&token, &keys, &digest, edge).is_ok());
    let earlier = grant.issued_at() - TimeDelta::minutes(5);
    assert!(matches!(
        verify_grant(&token, &keys, &digest, earlier),
        Err(GrantTokenError::NotYetValid { .. })
    ));
    assert!(matches!(
        verify_grant(&token, &[signer(2).verifier()], &digest, now),
        Err(GrantTokenError::UnknownKey { .. })
    ));
    assert!(matches!(
        GrantTokenVerifier::new(&keys)
            .audience("billing")
            .verify(&token, &digest, now),
        Err(GrantTokenError::WrongParty { claim: "aud", .. })
    ));
    assert!(matches!(
        GrantTokenVerifier::new(&keys)
            .issuer("someone-else")
            .verify(&token, &digest, now),
        Err(GrantTokenError::WrongParty { claim: "iss", .. })
    ));
}

#[tokio::test]
async fn refuses_tampered_tokens() {
    let (grant, digest) = approved_grant().await;
    let token = sign_grant(&grant, &signer(1), "", "").unwrap();
    let keys = [signer(1).verifier()];
    let now = Utc::now();
    let (head, sig) = token.rsplit_once('.').unwrap();
    let payload = head.strip_prefix("apg1.").unwrap();

    // Claims rewritten (more approvers, later expiry) and re-encoded, old signature kept.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap();
    claims["approvers"] = serde_json::json!(["sam@example.com", "mallory"]);
    claims["exp"] = serde_json::json!("2099-01-01T00:00:00.000Z");
    let forged = format!(
        "apg1.{}.{sig}",
        B64URL.encode(serde_json::to_vec(&claims).unwrap())
    );
    assert!(matches!(
        verify_grant(&forged, &keys, &digest, now),
        Err(GrantTokenError::BadSignature { .. })
    ));

    // Any single character of the signature changed.
    let mut bad_sig = sig.to_owned().into_bytes();
    let i = bad_sig.len() / 2;
    bad_sig[i] = if bad_sig[i] == b'A' { b'B' } else { b'A' };
    let bad = format!("{head}.{}", String::from_utf8(bad_sig).unwrap());
    assert!(verify_grant(&bad, &keys, &digest, now).is_err());

    // The same claims signed by an attacker's key that claims the real key's name and id.
    let mut attacker_claims = GrantClaims::from_grant(&grant);
    attacker_claims.approvers = vec!["mallory".into()];
    let attacker = sign_claims(attacker_claims, &signer(9)).unwrap();
    let (a_head, a_sig) = attacker.rsplit_once('.').unwrap();
    let a_payload = a_head.strip_prefix("apg1.").unwrap();
    let mut a_claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(a_payload).unwrap()).unwrap();
    a_claims["key"] = serde_json::json!(format!("{ORIGIN}+{:08x}", signer(1).verifier().key_id()));
    let mut blob = B64URL.decode(a_sig).unwrap();
    blob[..4].copy_from_slice(&signer(1).verifier().key_id().to_be_bytes());
    let spoofed = format!(
        "apg1.{}.{}",
        B64URL.encode(serde_json::to_vec(&a_claims).unwrap()),
        B64URL.encode(blob)
    );
    assert!(matches!(
        verify_grant(&spoofed, &keys, &digest, now),
        Err(GrantTokenError::BadSignature { .. })
    ));

    for junk in [
        "",
        "apg1.",
        "apg1..",
        "apg2.e30.AAAA",
        &token[..token.len() - 3],
        &format!("{token}.extra"),
        &"a".repeat(20_000),
    ] {
        assert!(
            verify_grant(junk, &keys, &digest, now).is_err(),
            "accepted {junk:?}"
        );
    }
}

#[tokio::test]
async fn tokens_from_before_and_after_a_key_rotation_verify_with_both_keys() {
    let (grant, digest) = approved_grant().await;
    let old = sign_grant(&grant, &signer(1), "", "").unwrap();
    let new = sign_grant(&grant, &signer(2), "", "").unwrap();
    let both = [signer(1).verifier(), signer(2).verifier()];
    for token in [&old, &new] {
        verify_grant(token, &both, &digest, Utc::now()).unwrap();
    }
    assert!(verify_grant(&old, &both[1..], &digest, Utc::now()).is_err());
}
