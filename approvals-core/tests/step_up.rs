//! Step-up on approve: a rule with `step_up = "passkey"` needs a proof of the request and
//! its digest in every approval. These tests try to get around it: an approval with no proof
//! (what a chat click sends), a proof of another request, of another digest, of a
//! registration instead of an assertion, without user verification, a nonce reused by a
//! second reviewer, an edit that would approve without a proof, an edit that lands on a
//! step-up rule, and the policy file combining what cannot be combined. A deny needs no proof.

use std::sync::Arc;
use std::time::Duration;

use approvals_core::audit::EventDetail;
use approvals_core::step_up::challenge;
use approvals_core::{
    ActionRequest, Digest, Gate, Initiator, ManualClock, MemorySink, MemoryStore, Principal,
    RejectCause, RequestId, RequestRecord, RequestState, Review, ReviewError, RulePolicy, StepUp,
    StepUpProof, Store, Submission,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest as _, Sha256};

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "iam"
kind = "iam.grant"
effect = "require_approval"
approvers = { groups = ["security"] }
quorum = 2
step_up = "passkey"

[[rules]]
name = "big-exports"
kind = "data.export"
when = [{ param = "rows", gt = 1000 }]
effect = "require_approval"
approvers = { groups = ["security"] }
step_up = "passkey"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["security"] }
editable = ["rows"]
"#;

const RP: &str = "console.example.com";
const UP: u8 = 0x01;
const UV: u8 = 0x04;

fn t0() -> DateTime<Utc> {
    "2026-12-05T09:00:00Z".parse().expect("time")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["security"])
}

fn kim() -> Principal {
    Principal::human("kim@example.com").with_groups(["security"])
}

fn grant_admin() -> ActionRequest {
    ActionRequest::new("iam.grant", "aws://iam/role/admin").params(json!({"user": "bot"}))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The parts of a passkey assertion over `challenge(id, digest, nonce)`, as a browser and an
/// authenticator make them. Signatures are the console's to check against the registered
/// key (tested in approvals-http with a real authenticator); the rulebook checks what the
/// proof is of.
fn proof(id: RequestId, digest: &Digest, nonce: &[u8], kind: &str, flags: u8) -> StepUpProof {
    let client = json!({
        "type": kind,
        "challenge": b64(&challenge(id, digest, nonce)),
        "origin": format!("https://{RP}"),
    })
    .to_string();
    let mut data = Sha256::digest(RP.as_bytes()).to_vec();
    data.push(flags);
    data.extend_from_slice(&7u32.to_be_bytes());
    StepUpProof {
        method: StepUp::Passkey,
        rp_id: RP.into(),
        credential_id: b64(b"credential-1"),
        nonce: b64(nonce),
        client_data_json: b64(client.as_bytes()),
        authenticator_data: b64(&data),
        signature: b64(b"signature"),
        public_key: b64(b"cose key"),
        user_present: flags & UP != 0,
        user_verified: flags & UV != 0,
        sign_count: 7,
    }
}

fn good(record: &RequestRecord, nonce: u8) -> StepUpProof {
    proof(
        record.id,
        &record.digest,
        &[nonce; 16],
        "webauthn.get",
        UP | UV,
    )
}

struct Fixture {
    gate: Gate,
    store: Arc<dyn Store>,
    audit: Arc<MemorySink>,
}

impl Fixture {
    fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let audit = Arc::new(MemorySink::new());
        let gate = Gate::builder()
            .policy(RulePolicy::from_toml(POLICY).expect("policy"))
            .store_shared(store.clone())
            .audit_shared(audit.clone())
            .clock(Arc::new(ManualClock::new(t0())))
            .initiator(Initiator::agent("iam-bot"))
            .grant_ttl(Duration::from_secs(3600))
            .build()
            .expect("gate");
        Fixture { gate, store, audit }
    }

    async fn ask(&self, action: &ActionRequest) -> RequestRecord {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => self.record(id).await,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.store.get(id).await.expect("get").expect("stored")
    }

    fn rejections(&self) -> Vec<RejectCause> {
        self.audit
            .events()
            .into_iter()
            .filter_map(|e| match e.detail {
                EventDetail::ReviewRejected { cause, .. } => Some(cause),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn an_approval_without_a_proof_is_refused_on_every_path_and_changes_nothing() {
    let f = Fixture::new();
    let asked = f.ask(&grant_admin()).await;
    assert_eq!(asked.requirement.step_up, Some(StepUp::Passkey));

    // What a chat click, the API or the CLI sends: no proof.
    for review in [
        Review::approve(sam()).via("slack"),
        Review::approve(sam()).via("teams").for_digest(asked.digest),
        Review::approve(sam()).via("api").reason("looks fine"),
    ] {
        let refused = f.gate.decide(asked.id, review.clone()).await;
        assert!(
            matches!(
                refused,
                Err(ReviewError::StepUpRequired {
                    method: StepUp::Passkey,
                    ..
                })
            ),
            "{refused:?}"
        );
        // The pre-check a channel makes before it opens a dialog says the same.
        assert!(matches!(
            f.gate.check_review(asked.id, &review).await,
            Err(ReviewError::StepUpRequired { .. })
        ));
    }
    let record = f.record(asked.id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.reviews.is_empty(), "nothing was counted");
    assert_eq!(f.rejections(), vec![RejectCause::StepUpRequired; 3]);
    assert!(
        ReviewError::StepUpRequired {
            id: asked.id,
            method: StepUp::Passkey
        }
        .reviewer_message()
        .contains("review console")
    );
}

#[tokio::test]
async fn proofs_of_anything_but_this_request_at_this_digest_are_refused() {
    let f = Fixture::new();
    let asked = f.ask(&grant_admin()).await;
    let other = f
        .ask(&ActionRequest::new("iam.grant", "aws://iam/role/other").params(json!({"user": "x"})))
        .await;
    let nonce = [3u8; 16];
    let cases = [
        (
            "another request",
            proof(other.id, &other.digest, &nonce, "webauthn.get", UP | UV),
        ),
        (
            "another digest",
            proof(asked.id, &other.digest, &nonce, "webauthn.get", UP | UV),
        ),
        (
            "a registration",
            proof(asked.id, &asked.digest, &nonce, "webauthn.create", UP | UV),
        ),
        (
            "no user verification",
            proof(asked.id, &asked.digest, &nonce, "webauthn.get", UP),
        ),
        (
            "no user presence",
            proof(asked.id, &asked.digest, &nonce, "webauthn.get", UV),
        ),
        (
            "a short nonce",
            proof(asked.id, &asked.digest, &[3u8; 8], "webauthn.get", UP | UV),
        ),
        ("another relying party", {
            let mut p = good(&asked, 3);
            p.rp_id = "evil.example.com".into();
            p
        }),
        ("a counter it does not have", {
            let mut p = good(&asked, 3);
            p.sign_count = 8;
            p
        }),
        ("unreadable client data", {
            let mut p = good(&asked, 3);
            p.client_data_json = "not base64url!".into();
            p
        }),
    ];
    for (what, proof) in cases {
        let refused = f
            .gate
            .decide(asked.id, Review::approve(sam()).step_up(proof))
            .await;
        assert!(
            matches!(refused, Err(ReviewError::StepUpRefused { .. })),
            "{what}: {refused:?}"
        );
    }
    let record = f.record(asked.id).await;
    assert!(record.reviews.is_empty(), "no refused proof counted");
    assert!(
        f.rejections()
            .iter()
            .all(|c| *c == RejectCause::StepUpInvalid)
    );
}

#[tokio::test]
async fn approvals_with_proofs_reach_the_quorum_and_the_audit_holds_each_proof() {
    let f = Fixture::new();
    let asked = f.ask(&grant_admin()).await;
    let sams = good(&asked, 1);
    f.gate
        .decide(asked.id, Review::approve(sam()).step_up(sams.clone()))
        .await
        .expect("a proof of this action");

    // The second reviewer presents the first one's proof (same nonce): refused.
    let replayed = f
        .gate
        .decide(asked.id, Review::approve(kim()).step_up(sams.clone()))
        .await;
    assert!(
        matches!(&replayed, Err(ReviewError::StepUpRefused { why, .. }) if why.contains("already used")),
        "{replayed:?}"
    );
    // The first reviewer again: one person counts once.
    assert!(matches!(
        f.gate
            .decide(asked.id, Review::approve(sam()).step_up(good(&asked, 9)))
            .await,
        Err(ReviewError::AlreadyReviewed { .. })
    ));

    let outcome = f
        .gate
        .decide(asked.id, Review::approve(kim()).step_up(good(&asked, 2)))
        .await
        .expect("a fresh proof");
    assert_eq!(outcome.state, RequestState::Approved);

    let record = f.record(asked.id).await;
    assert_eq!(record.reviews[0].step_up.as_deref(), Some(&sams));
    let audited: Vec<StepUpProof> = f
        .audit
        .events()
        .into_iter()
        .filter_map(|e| match e.detail {
            EventDetail::Reviewed { step_up, .. } => step_up.map(|p| *p),
            _ => None,
        })
        .collect();
    assert_eq!(audited, vec![sams, good(&asked, 2)]);
    // What the audit holds is checkable against the request it names.
    for p in &audited {
        p.check_binding(asked.id, &asked.digest)
            .expect("each audited proof is of this request and digest");
    }
    f.gate.wait(asked.id).await.expect("granted");
}

#[tokio::test]
async fn a_deny_needs_no_proof() {
    let f = Fixture::new();
    let asked = f.ask(&grant_admin()).await;
    let outcome = f
        .gate
        .decide(asked.id, Review::deny(sam()).via("slack"))
        .await
        .expect("stopping an action needs no step-up");
    assert_eq!(outcome.state, RequestState::Denied);
}

#[tokio::test]
async fn edits_cannot_approve_without_a_proof() {
    let f = Fixture::new();
    // The action as asked is under the step-up rule: it cannot be edited at all.
    let big = f
        .ask(
            &ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 5000})),
        )
        .await;
    assert!(approvals_core::edit::may_edit(&big).is_err());
    let refused = f
        .gate
        .decide(
            big.id,
            Review::approve(sam())
                .for_digest(big.digest)
                .edit(json!({"rows": 500})),
        )
        .await;
    assert!(
        matches!(refused, Err(ReviewError::EditRefused { .. })),
        "{refused:?}"
    );

    // An editable action whose edit lands on the step-up rule: refused, not approved.
    let small = f
        .ask(&ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 500})))
        .await;
    let refused = f
        .gate
        .decide(
            small.id,
            Review::approve(sam())
                .for_digest(small.digest)
                .edit(json!({"rows": 5000})),
        )
        .await;
    assert!(
        matches!(&refused, Err(ReviewError::EditRefused { why, .. }) if why.contains("passkey")),
        "{refused:?}"
    );
    let record = f.record(small.id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.digest, small.digest, "nothing changed");
}

#[test]
fn the_policy_file_refuses_what_cannot_be_combined() {
    let rule = |extra: &str, effect: &str| {
        format!(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"r\"\nkind = \"k\"\neffect = \"{effect}\"\n{extra}\n"
        )
    };
    for (text, says) in [
        (
            rule(
                "approvers = { groups = [\"g\"] }\nstep_up = \"passkey\"\neditable = [\"rows\"]",
                "require_approval",
            ),
            "cannot be combined",
        ),
        (
            rule(
                "approvers = { groups = [\"g\"] }\nstep_up = \"passkey\"\nstanding_grant_max = \"8h\"",
                "require_approval",
            ),
            "cannot be combined",
        ),
        (rule("step_up = \"passkey\"", "allow"), "step_up"),
        (
            rule(
                "approvers = { groups = [\"g\"] }\nstep_up = \"sms\"",
                "require_approval",
            ),
            "passkey",
        ),
    ] {
        let error = RulePolicy::from_toml(&text).expect_err(&text).to_string();
        assert!(error.contains(says), "{text}: {error}");
    }
}
