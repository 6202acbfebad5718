//! Identities are compared only after normalisation (DESIGN.md invariant 2, issue 16 item 3):
//! every spelling of one person is the same person for self-approval and the quorum, allow
//! lists and groups match canonical forms only, and spellings that cannot be compared safely
//! are refused where they enter. Each test goes through the public API and tries to break it.

use std::sync::Arc;

use approvals_core::identity::{self, InvalidIdentity};
use approvals_core::{
    ActionRequest, BuildError, EventDetail, Gate, IdentityError, IdentityResolver, Initiator,
    ListFilter, MemorySink, MemoryStore, Principal, RejectCause, RequestId, RequestState,
    Requirement, Review, ReviewError, ReviewRecord, RulePolicy, StaticIdentityResolver, Store,
    Submission, Verdict,
};
use serde_json::json;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }

[[rules]]
name = "roles"
kind = "iam.role.grant"
effect = "require_approval"
approvers = { groups = ["security"] }
quorum = 2

[[rules]]
name = "keys"
kind = "secrets.rotate"
effect = "require_approval"
approvers = { users = ["sam@example.com", "ape@example.com"] }
"#;

const DANA: &str = "dana@example.com";
const SAM: &str = "sam@example.com";
const AGENT: &str = "billing-agent";

fn initiator() -> Initiator {
    Initiator::agent(AGENT)
        .on_behalf_of(Principal::human(DANA).with_groups(["data-owners", "security"]))
}

fn gate() -> (Gate, Arc<MemorySink>, Arc<MemoryStore>) {
    let audit = Arc::new(MemorySink::new());
    let store = Arc::new(MemoryStore::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit_shared(audit.clone())
        .store_shared(store.clone())
        .initiator(initiator())
        .build()
        .expect("gate");
    (gate, audit, store)
}

async fn pending(gate: &Gate, kind: &str) -> RequestId {
    let action = ActionRequest::new(kind, "prod://target").params(json!({"n": 1}));
    match gate.submit(&action).await.expect("submitted") {
        Submission::Pending(id) => id,
        other => panic!("expected a pending request, got {other:?}"),
    }
}

async fn state(gate: &Gate, id: RequestId) -> (RequestState, usize) {
    let record = gate.get(id).await.expect("store").expect("record");
    (record.state, record.reviews.len())
}

/// Invisible and default-ignorable characters of the attack suite and its class.
const INVISIBLES: [char; 16] = [
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{2060}',
    '\u{FEFF}',
    '\u{00AD}',
    '\u{180E}',
    '\u{034F}',
    '\u{FE0F}',
    '\u{FE00}',
    '\u{E0001}',
    '\u{E0041}',
    '\u{E0100}',
    '\u{3164}',
    '\u{115F}',
    '\u{2064}',
];

/// Every bidi control.
const BIDI: [char; 12] = [
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
];

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c),
            c => c,
        })
        .collect()
}

fn math_bold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => char::from_u32(c as u32 - 'a' as u32 + 0x1D41A).unwrap_or(c),
            c => c,
        })
        .collect()
}

/// Other spellings of `id` (an ASCII id with an `a` in its first part and an `@`, or not).
fn aliases(id: &str) -> Vec<String> {
    let (local, domain) = id.split_once('@').unwrap_or((id, ""));
    let at = if domain.is_empty() { "" } else { "@" };
    let mut all = vec![
        id.to_uppercase(),
        format!(" {id}\t"),
        format!("\u{00A0}{id}\u{3000}"),
        format!("{id}."),
        format!("{id}.."),
        fullwidth(id),
        fullwidth(local) + at + domain,
        format!(
            "{local}{}{domain}",
            if at.is_empty() { "" } else { "\u{FF20}" }
        ),
        math_bold(local) + at + domain,
        // Inner whitespace.
        format!("{} {}", &local[..1], &id[1..]),
        format!("{}\u{00A0}{}", &local[..1], &id[1..]),
        format!("{}\u{3000}{}", &local[..1], &id[1..]),
        // Look-alikes from other scripts mixed in.
        id.replacen('a', "\u{0430}", 1),
        id.replacen('a', "\u{03B1}", 1),
        id.replacen('e', "\u{0435}", 1),
        id.replacen('i', "\u{0456}", 1),
        id.replacen('o', "\u{043E}", 1),
        // NFD.
        id.replacen('e', "e\u{0301}", 1)
            .replacen("e\u{0301}", "e", 1),
    ];
    for c in INVISIBLES {
        all.push(format!("{}{c}{}", &id[..1], &id[1..]));
        all.push(format!("{c}{id}"));
        all.push(format!("{id}{c}"));
    }
    for c in BIDI {
        all.push(format!("{c}{id}"));
        all.push(format!("{}{c}{}", &id[..2], &id[2..]));
    }
    all.retain(|a| a != id);
    all.dedup();
    all
}

#[test]
fn aliases_are_really_other_spellings_of_the_same_person() {
    // The test data itself: every alias shares the key, and most are not byte-equal.
    for id in [DANA, SAM, AGENT] {
        let list = aliases(id);
        assert!(list.len() > 60, "{}", list.len());
        for alias in &list {
            assert!(identity::same_id(alias, id), "{alias:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (a) No self-approval under any spelling.

#[tokio::test]
async fn the_human_behind_the_agent_cannot_approve_under_any_spelling() {
    let (gate, audit, _) = gate();
    let id = pending(&gate, "data.export").await;
    for alias in aliases(DANA).into_iter().chain(aliases(AGENT)) {
        let reviewer = Principal::human(alias.clone()).with_groups(["data-owners"]);
        let err = gate
            .decide(id, Review::approve(reviewer))
            .await
            .expect_err("self-approval under an alias");
        assert!(
            matches!(
                err,
                ReviewError::SelfApproval { .. } | ReviewError::InvalidIdentity { .. }
            ),
            "{alias:?}: {err:?}"
        );
        assert_eq!(
            state(&gate, id).await,
            (RequestState::Pending, 0),
            "{alias:?}"
        );
    }
    // Each refusal is audited with its cause.
    let causes: Vec<RejectCause> = audit
        .for_request(id)
        .into_iter()
        .filter_map(|e| match e.detail {
            EventDetail::ReviewRejected { cause, .. } => Some(cause),
            _ => None,
        })
        .collect();
    assert_eq!(causes.len(), aliases(DANA).len() + aliases(AGENT).len());
    assert!(causes.contains(&RejectCause::InvalidIdentity));
    assert!(causes.contains(&RejectCause::SelfApproval));
    assert!(
        causes
            .iter()
            .all(|c| matches!(c, RejectCause::SelfApproval | RejectCause::InvalidIdentity))
    );
}

#[tokio::test]
async fn a_look_alike_that_passes_validation_is_still_refused_as_self() {
    let (gate, _, _) = gate();
    let id = pending(&gate, "data.export").await;
    // Valid ids on their own (one script per label), yet they read as the initiator's.
    for alias in [
        "bi11ing-agent",
        "BILLING-AGENT",
        "d\u{0430}n\u{0430}@example.com",
    ] {
        let reviewer = Principal::human(alias).with_groups(["data-owners"]);
        let err = gate
            .decide(id, Review::approve(reviewer))
            .await
            .expect_err("self");
        assert!(
            matches!(
                err,
                ReviewError::SelfApproval { .. } | ReviewError::InvalidIdentity { .. }
            ),
            "{alias:?}: {err:?}"
        );
    }
    let err = gate
        .decide(
            id,
            Review::approve(Principal::human("bi11ing-agent").with_groups(["data-owners"])),
        )
        .await
        .expect_err("self");
    assert!(matches!(err, ReviewError::SelfApproval { .. }), "{err:?}");
    assert_eq!(state(&gate, id).await, (RequestState::Pending, 0));
}

#[tokio::test]
async fn an_invalid_reviewer_is_refused_before_any_other_rule_and_says_which_character() {
    let (gate, _, _) = gate();
    let id = pending(&gate, "data.export").await;
    let reviewer = Principal::human("kim\u{200B}@example.com").with_groups(["data-owners"]);
    let err = gate
        .decide(id, Review::approve(reviewer))
        .await
        .expect_err("invalid");
    let ReviewError::InvalidIdentity { id: refused, error } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*refused, id);
    assert_eq!(error.code_point(), Some('\u{200B}'));
    assert_eq!(err.cause(), Some(RejectCause::InvalidIdentity));
    let message = err.to_string();
    assert!(message.contains("U+200B"), "{message}");
    assert!(!message.contains('\u{200B}'), "{message:?}");
    // A group name is checked too.
    let reviewer = Principal::human("kim@example.com").with_groups(["data-owners", "adm\u{202E}"]);
    let err = gate
        .decide(id, Review::approve(reviewer))
        .await
        .expect_err("invalid group");
    assert!(
        matches!(&err, ReviewError::InvalidIdentity { error, .. } if error.code_point() == Some('\u{202E}')),
        "{err:?}"
    );
    // An agent with an invalid id gets the identity refusal, not "not human".
    let err = gate
        .decide(id, Review::approve(Principal::agent("bot\u{FEFF}")))
        .await
        .expect_err("invalid");
    assert!(
        matches!(err, ReviewError::InvalidIdentity { .. }),
        "{err:?}"
    );
    assert_eq!(state(&gate, id).await, (RequestState::Pending, 0));
}

// ---------------------------------------------------------------------------------------------
// (b) One person counts once toward a quorum.

#[tokio::test]
async fn one_person_under_two_spellings_counts_once_toward_a_quorum_of_two() {
    let (gate, _, _) = gate();
    let id = pending(&gate, "iam.role.grant").await;
    let first = gate
        .decide(
            id,
            Review::approve(Principal::human(SAM).with_groups(["security"])),
        )
        .await
        .expect("first approval");
    assert_eq!((first.state, first.approvals), (RequestState::Pending, 1));
    for alias in aliases(SAM) {
        let err = gate
            .decide(
                id,
                Review::approve(Principal::human(alias.clone()).with_groups(["security"])),
            )
            .await
            .expect_err("second approval by the same person");
        assert!(
            matches!(
                err,
                ReviewError::AlreadyReviewed { .. } | ReviewError::InvalidIdentity { .. }
            ),
            "{alias:?}: {err:?}"
        );
        assert_eq!(
            state(&gate, id).await,
            (RequestState::Pending, 1),
            "{alias:?}"
        );
    }
    let second = gate
        .decide(
            id,
            Review::approve(Principal::human("kim@example.com").with_groups(["security"])),
        )
        .await
        .expect("another person");
    assert_eq!(
        (second.state, second.approvals),
        (RequestState::Approved, 2)
    );
}

#[tokio::test]
async fn stored_reviews_under_aliases_count_as_one_approver() {
    // Reviews recorded before identities were normalised (or by another process) may carry
    // any spelling: the record still counts people, not strings.
    let (gate, _, store) = gate();
    let id = pending(&gate, "iam.role.grant").await;
    let mut record = store.get(id).await.expect("store").expect("record");
    for spelling in [
        SAM.to_owned(),
        "SAM@example.com".to_owned(),
        "s\u{0430}m@example.com".to_owned(),
        "sam\u{200B}@example.com.".to_owned(),
        fullwidth(SAM),
    ] {
        record.reviews.push(ReviewRecord {
            reviewer: Principal::human(spelling),
            verdict: Verdict::Approve,
            reason: None,
            channel: "test".into(),
            at: record.created_at,
            edit: None,
            step_up: None,
        });
    }
    let approvers = record.approvers();
    assert_eq!(approvers.len(), 1, "{approvers:?}");
    assert_eq!(approvers[0].id, SAM);
    record.reviews.push(ReviewRecord {
        reviewer: Principal::human("kim@example.com"),
        verdict: Verdict::Approve,
        reason: None,
        channel: "test".into(),
        at: record.created_at,
        edit: None,
        step_up: None,
    });
    assert_eq!(record.approvers().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// (c) Allow lists match canonical forms, never a look-alike of another user.

#[tokio::test]
async fn a_listed_user_is_authorized_under_case_and_width_variants() {
    let (gate, _, _) = gate();
    for spelling in [
        "SAM@EXAMPLE.COM".to_owned(),
        " Sam@Example.com. ".to_owned(),
        fullwidth("sam") + "@example.com",
        fullwidth("SAM@EXAMPLE.COM"),
    ] {
        let id = pending(&gate, "secrets.rotate").await;
        let outcome = gate
            .decide(id, Review::approve(Principal::human(spelling.clone())))
            .await
            .unwrap_or_else(|e| panic!("{spelling:?}: {e}"));
        assert_eq!(outcome.state, RequestState::Approved, "{spelling:?}");
    }
}

#[tokio::test]
async fn a_look_alike_of_a_listed_user_is_never_authorized() {
    let (gate, _, _) = gate();
    let id = pending(&gate, "secrets.rotate").await;
    for (spelling, expected) in [
        // Mixed scripts: refused at entry.
        ("\u{0455}am@example.com", "invalid"),
        ("s\u{0430}m@example.com", "invalid"),
        ("sam@ex\u{0430}mple.com", "invalid"),
        // Invisible characters: refused at entry.
        ("sa\u{200B}m@example.com", "invalid"),
        ("sam@example.com\u{202E}", "invalid"),
        // Compatibility forms other than width: refused at entry.
        ("\u{1D42C}am@example.com", "invalid"),
        // Valid ids that only look like a listed one: another person, not authorized.
        ("sarn@example.com", "not authorized"),
        ("sam@examp1e.com", "not authorized"),
        ("\u{0430}\u{0440}\u{0435}@example.com", "not authorized"),
    ] {
        let err = gate
            .decide(id, Review::approve(Principal::human(spelling)))
            .await
            .expect_err("look-alike");
        let got = match err {
            ReviewError::InvalidIdentity { .. } => "invalid",
            ReviewError::NotAuthorized { .. } => "not authorized",
            other => panic!("{spelling:?}: {other:?}"),
        };
        assert_eq!(got, expected, "{spelling:?}");
    }
    assert_eq!(state(&gate, id).await, (RequestState::Pending, 0));
}

#[test]
fn requirement_allow_lists_compare_canonical_forms() {
    let req = Requirement::users(["Sam@Example.com"]).escalation(approvals_core::Escalation {
        after: std::time::Duration::from_secs(60),
        users: vec!["ｋｉｍ@example.com".into()],
        groups: vec!["On-Call".into()],
    });
    assert!(req.authorizes(&Principal::human("sam@example.com."), false));
    assert!(!req.authorizes(&Principal::human("sarn@example.com"), false));
    assert!(!req.authorizes(&Principal::human("kim@example.com"), false));
    assert!(req.authorizes(&Principal::human("KIM@example.com"), true));
    assert!(req.authorizes(&Principal::human("x").with_groups(["ON-CALL"]), true));
    assert!(!req.authorizes(&Principal::human("x").with_groups(["0n-call"]), true));
    assert!(req.validate().is_ok());
    let bad = Requirement::users(["sam@example.com"]).escalation(approvals_core::Escalation {
        after: std::time::Duration::from_secs(60),
        users: vec![],
        groups: vec!["on\u{200D}call".into()],
    });
    assert!(matches!(
        bad.validate(),
        Err(InvalidIdentity::Invisible {
            code_point: '\u{200D}',
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// (d) Group membership by canonical name.

#[tokio::test]
async fn group_membership_compares_canonical_group_names() {
    let (gate, _, _) = gate();
    for groups in [
        ["DATA-OWNERS"],
        ["Data-Owners."],
        [" data-owners "],
        ["ｄａｔａ－ｏｗｎｅｒｓ"],
    ] {
        let id = pending(&gate, "data.export").await;
        let reviewer = Principal::human("kim@example.com").with_groups(groups);
        let outcome = gate
            .decide(id, Review::approve(reviewer))
            .await
            .unwrap_or_else(|e| panic!("{groups:?}: {e}"));
        assert_eq!(outcome.state, RequestState::Approved, "{groups:?}");
    }
    let id = pending(&gate, "data.export").await;
    for (group, expected) in [
        ("data\u{200B}-owners", "invalid"),
        ("d\u{0430}ta-owners", "invalid"),
        ("\u{202E}data-owners", "invalid"),
        ("data-0wners", "not authorized"),
        ("dataowners", "not authorized"),
    ] {
        let reviewer = Principal::human("kim@example.com").with_groups([group]);
        let err = gate
            .decide(id, Review::approve(reviewer))
            .await
            .expect_err("not a member");
        let got = match err {
            ReviewError::InvalidIdentity { .. } => "invalid",
            ReviewError::NotAuthorized { .. } => "not authorized",
            other => panic!("{group:?}: {other:?}"),
        };
        assert_eq!(got, expected, "{group:?}");
    }
    assert_eq!(state(&gate, id).await, (RequestState::Pending, 0));
}

#[test]
fn principal_group_checks_and_validation() {
    let kim = Principal::human("kim@example.com").with_groups(["Security", "ｏｐｓ"]);
    assert!(kim.in_group("security"));
    assert!(kim.in_group("OPS"));
    assert!(!kim.in_group("sec"));
    assert!(!kim.in_group("\u{0455}ecurity"));
    assert!(kim.validate().is_ok());
    assert!(
        Principal::human("kim@example.com")
            .with_groups(["ops\u{2060}"])
            .validate()
            .is_err()
    );
    let normal = Principal::human(" KIM@Example.com.")
        .with_groups([" Security "])
        .normalized()
        .expect("valid");
    assert_eq!(normal.id, "kim@example.com");
    assert_eq!(normal.groups, ["security"]);
}

// ---------------------------------------------------------------------------------------------
// Where identities enter.

#[test]
fn a_gate_refuses_an_initiator_it_could_not_compare() {
    let build = |initiator: Initiator| {
        Gate::builder()
            .policy(RulePolicy::from_toml(POLICY).expect("policy"))
            .audit(MemorySink::new())
            .initiator(initiator)
            .build()
    };
    for initiator in [
        Initiator::agent("billing\u{200B}-agent"),
        Initiator::agent("b\u{0456}lling-agent"),
        Initiator::agent(AGENT).on_behalf_of(Principal::human("\u{202E}dana@example.com")),
        Initiator::agent(AGENT).on_behalf_of(Principal::human("dana @example.com")),
        Initiator::agent(AGENT)
            .on_behalf_of(Principal::human(DANA).with_groups(["admins\u{FEFF}"])),
        Initiator::agent(""),
    ] {
        let err = build(initiator.clone()).expect_err("refused");
        assert!(
            matches!(err, BuildError::InvalidInitiator(_)),
            "{initiator:?}: {err:?}"
        );
        assert!(initiator.validate().is_err());
    }
    assert!(build(initiator()).is_ok());
    assert!(build(Initiator::agent("Billing-Agent")).is_ok());
}

#[tokio::test]
async fn the_static_resolver_refuses_invalid_principals_and_resolves_by_canonical_key() {
    let err = StaticIdentityResolver::new()
        .try_map("slack", "U1", Principal::human("s\u{0430}m@example.com"))
        .expect_err("mixed script");
    assert!(
        matches!(err, InvalidIdentity::MixedScript { .. }),
        "{err:?}"
    );
    assert!(
        StaticIdentityResolver::new()
            .try_map("email", "sam\u{200B}@example.com", Principal::human(SAM))
            .is_err()
    );

    let ids = StaticIdentityResolver::new()
        .try_map(
            "email",
            "Sam@Example.com",
            Principal::human("Sam@Example.COM").with_groups(["Security"]),
        )
        .expect("valid")
        // Mapped without checking: kept out, so it never resolves.
        .map("slack", "U2", Principal::human("d\u{0430}na@example.com"));
    let sam = ids
        .resolve("email", "SAM@example.com")
        .await
        .expect("by key");
    assert_eq!(sam.id, SAM);
    assert_eq!(sam.groups, ["security"]);
    assert!(ids.resolve("email", "ｓａｍ@example.com.").await.is_ok());
    // A lookalike or hidden character in the external id matches nothing.
    for external in [
        "s\u{0430}m@example.com",
        "sam\u{200B}@example.com",
        "sarn@example.com",
    ] {
        assert!(
            matches!(
                ids.resolve("email", external).await,
                Err(IdentityError::Unknown { .. })
            ),
            "{external:?}"
        );
    }
    assert!(matches!(
        ids.resolve("slack", "U2").await,
        Err(IdentityError::Unknown { .. })
    ));
}

#[tokio::test]
async fn listing_by_initiator_matches_any_spelling_of_it() {
    let (gate, _, store) = gate();
    let id = pending(&gate, "data.export").await;
    for spelling in [
        AGENT.to_owned(),
        "BILLING-AGENT".to_owned(),
        " billing-agent. ".to_owned(),
        "billing\u{200B}-agent".to_owned(),
        fullwidth(AGENT),
    ] {
        let found = store
            .list(&ListFilter {
                initiator: Some(spelling.clone()),
                ..ListFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(
            found.iter().map(|r| r.id).collect::<Vec<_>>(),
            [id],
            "{spelling:?}"
        );
    }
    let none = store
        .list(&ListFilter {
            initiator: Some("other-agent".into()),
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert!(none.is_empty());
}
