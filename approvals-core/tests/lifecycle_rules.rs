//! The lifecycle rulebook on its own, without a gate: a table of every operation from every
//! state, and a property test over any sequence of operations.

use std::sync::Arc;

use approvals_core::credential::{CredentialLease, RevokeReason};
use approvals_core::lifecycle::{
    self, ALL_STATES, Due, NotApplicable, Review, Unusable, may_replace,
};
use approvals_core::{
    ActionRequest, Escalation, EventDetail, GuardError, Initiator, Principal, RequestId,
    RequestRecord, RequestState, Requirement, ReviewError, Verdict,
};
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().expect("time")
}

fn requirement(quorum: u32) -> Requirement {
    Requirement::groups(["owners"])
        .quorum(quorum)
        .timeout(std::time::Duration::from_secs(3600))
        .escalation(Escalation {
            after: std::time::Duration::from_secs(600),
            users: vec![],
            groups: vec!["oncall".into()],
        })
}

fn record(quorum: u32) -> RequestRecord {
    let request = ActionRequest::new("data.export", "db://x")
        .initiator(Initiator::agent("bot").on_behalf_of(Principal::human("dana@example.com")));
    let digest = request.digest();
    lifecycle::open(
        RequestId::new(),
        request,
        digest,
        Some("exports".into()),
        Arc::new(requirement(quorum)),
        "v1".into(),
        t0(),
    )
    .expect("open")
}

fn owner(name: &str) -> Principal {
    Principal::human(format!("{name}@example.com")).with_groups(["owners"])
}

fn names(events: &[EventDetail]) -> Vec<&'static str> {
    events.iter().map(EventDetail::name).collect()
}

const TTL: TimeDelta = TimeDelta::minutes(10);

/// A record in `state`, reached through the rules themselves where a rule leads there.
fn in_state(state: RequestState) -> RequestRecord {
    let r = record(1);
    let approve = |r: &RequestRecord| {
        lifecycle::review(r, &Review::approve(owner("sam")), t0(), TTL)
            .expect("approve")
            .0
            .next
    };
    match state {
        RequestState::Pending => r,
        RequestState::Approved => approve(&r),
        RequestState::Denied => {
            lifecycle::review(&r, &Review::deny(owner("sam")), t0(), TTL)
                .expect("deny")
                .0
                .next
        }
        RequestState::Expired => {
            lifecycle::expire(&r, t0() + TimeDelta::hours(2))
                .expect("expire")
                .next
        }
        RequestState::Cancelled => {
            lifecycle::cancel(&r, None, None, t0())
                .expect("cancel")
                .next
        }
        RequestState::Executing => {
            let approved = lifecycle::audited(&approve(&r), Verdict::Approve).expect("flagged");
            lifecycle::consume(&approved, approved.digest, t0())
                .expect("consume")
                .next
        }
        RequestState::Executed | RequestState::Failed => {
            let executing = in_state(RequestState::Executing);
            let error = (state == RequestState::Failed).then(|| "boom".to_owned());
            lifecycle::finish(&executing, error, t0())
                .expect("finish")
                .next
        }
        RequestState::Lapsed => {
            lifecycle::lapse(&approve(&r), t0() + TimeDelta::hours(1))
                .expect("lapse")
                .next
        }
    }
}

#[test]
fn every_operation_from_every_state_is_a_step_or_a_typed_refusal() {
    let late = t0() + TimeDelta::hours(2);
    for state in ALL_STATES {
        let r = in_state(state);
        assert_eq!(r.state, state);
        let pending = state == RequestState::Pending;
        let approved = state == RequestState::Approved;

        // Approve: only while pending.
        let approve = lifecycle::review(&r, &Review::approve(owner("kim")), t0(), TTL);
        match (&approve, pending) {
            (Ok((step, _)), true) => {
                assert_eq!(step.next.state, RequestState::Approved);
                assert_eq!(names(&step.events), ["reviewed", "approved"]);
                assert!(step.next.unaudited.approval && step.next.audit_pending);
            }
            (Err(ReviewError::AlreadyDecided { state: s, .. }), false) => assert_eq!(*s, state),
            other => panic!("approve from {state}: {other:?}"),
        }
        // Deny: while pending, or revoking an unused approval (deny wins).
        let deny = lifecycle::review(&r, &Review::deny(owner("kim")), t0(), TTL);
        match (&deny, pending || approved) {
            (Ok((step, _)), true) => {
                assert_eq!(step.next.state, RequestState::Denied);
                assert_eq!(names(&step.events), ["reviewed", "denied"]);
                assert!(step.next.unaudited.denial);
                assert_eq!(step.next.grant_expires_at, None);
            }
            (Err(ReviewError::AlreadyDecided { .. }), false) => {}
            other => panic!("deny from {state}: {other:?}"),
        }
        // Expire: pending and past the deadline only.
        match (lifecycle::expire(&r, late), pending) {
            (Ok(step), true) => assert_eq!(names(&step.events), ["expired"]),
            (Err(NotApplicable::WrongState(s)), false) => assert_eq!(s, state),
            other => panic!("expire from {state}: {other:?}"),
        }
        if pending {
            assert_eq!(
                lifecycle::expire(&r, t0()).err(),
                Some(NotApplicable::NotDue)
            );
        }
        // Escalate: pending, after the escalation delay.
        match (
            lifecycle::escalate(&r, t0() + TimeDelta::minutes(11)),
            pending,
        ) {
            (Ok(step), true) => {
                assert_eq!(step.next.state, RequestState::Pending);
                assert!(step.next.escalated);
                assert_eq!(names(&step.events), ["escalated"]);
            }
            (Err(NotApplicable::WrongState(_)), false) => {}
            other => panic!("escalate from {state}: {other:?}"),
        }
        // Lapse: approved, after the grant's time.
        match (lifecycle::lapse(&r, late), approved) {
            (Ok(step), true) => assert_eq!(names(&step.events), ["lapsed"]),
            (Err(NotApplicable::WrongState(_)), false) => {}
            other => panic!("lapse from {state}: {other:?}"),
        }
        // Cancel: pending only.
        match (lifecycle::cancel(&r, None, Some("x".into()), t0()), pending) {
            (Ok(step), true) => assert_eq!(names(&step.events), ["cancelled"]),
            (Err(NotApplicable::WrongState(_)), false) => {}
            other => panic!("cancel from {state}: {other:?}"),
        }
        // Consume: an audited approval only; the rest are typed refusals.
        let audited = lifecycle::audited(&r, Verdict::Approve).unwrap_or_else(|| r.clone());
        match (lifecycle::consume(&audited, r.digest, t0()), state) {
            (Ok(step), RequestState::Approved) => {
                assert_eq!(step.next.state, RequestState::Executing)
            }
            (
                Err(Unusable::Refused(e, Some(_))),
                RequestState::Executing | RequestState::Executed | RequestState::Failed,
            ) if matches!(*e, GuardError::GrantUsed { .. }) => {}
            (Err(Unusable::Refused(_, None)), _) if !approved => {}
            other => panic!("consume from {state}: {other:?}"),
        }
        // Finish: executing only.
        match (lifecycle::finish(&r, None, t0()), state) {
            (Ok(step), RequestState::Executing) => {
                assert_eq!(step.next.state, RequestState::Executed)
            }
            (Err(NotApplicable::WrongState(_)), s) if s != RequestState::Executing => {}
            other => panic!("finish from {state}: {other:?}"),
        }
    }
}

#[test]
fn review_refusals_come_in_the_documented_order() {
    let r = record(2);
    let id = r.id;
    let other_digest = ActionRequest::new("x", "y").digest();
    let cases: Vec<(Review, &str)> = vec![
        (
            Review::approve(owner("sam")).for_digest(other_digest),
            "digest",
        ),
        (
            Review::approve(Principal::human("sa\u{200B}m@example.com")),
            "identity",
        ),
        (
            Review::approve(Principal::agent("helper").with_groups(["owners"])),
            "human",
        ),
        (
            Review::approve(Principal::human("DANA@example.com").with_groups(["owners"])),
            "self",
        ),
        (
            Review::approve(Principal::human("bot").with_groups(["owners"])),
            "self",
        ),
        (
            Review::approve(Principal::human("eve@example.com")),
            "authorized",
        ),
    ];
    for (review, what) in cases {
        let err = lifecycle::check_review(&r, &review, t0()).expect_err(what);
        let ok = match what {
            "digest" => matches!(err, ReviewError::DigestMismatch { .. }),
            "identity" => matches!(err, ReviewError::InvalidIdentity { .. }),
            "human" => matches!(err, ReviewError::NotHuman { .. }),
            "self" => matches!(err, ReviewError::SelfApproval { .. }),
            _ => matches!(err, ReviewError::NotAuthorized { .. }),
        };
        assert!(ok, "{what}: {err:?}");
        assert!(err.cause().is_some(), "{what} is audited");
    }
    // Expiry at the exact deadline; a revoking deny is not subject to it.
    let at_deadline = r.expires_at;
    assert!(matches!(
        lifecycle::check_review(&r, &Review::approve(owner("sam")), at_deadline),
        Err(ReviewError::Expired { id: e }) if e == id
    ));
    // One person counts once, under any spelling.
    let (step, outcome) =
        lifecycle::review(&r, &Review::approve(owner("sam")), t0(), TTL).expect("first");
    assert_eq!(
        (outcome.approvals, outcome.state),
        (1, RequestState::Pending)
    );
    let again = Review::approve(Principal::human(" SAM@Example.com").with_groups(["owners"]));
    assert!(matches!(
        lifecycle::check_review(&step.next, &again, t0()),
        Err(ReviewError::AlreadyReviewed { .. })
    ));
    // A reason when required.
    let mut strict = record(1);
    Arc::make_mut(&mut strict.requirement).reason_required = true;
    assert!(matches!(
        lifecycle::check_review(&strict, &Review::approve(owner("sam")).reason("  "), t0()),
        Err(ReviewError::ReasonRequired { .. })
    ));
    // A non-escalated request refuses the escalation group; an escalated one accepts it.
    let oncall = Principal::human("oli@example.com").with_groups(["oncall"]);
    assert!(matches!(
        lifecycle::may_review(&r, &oncall),
        Err(ReviewError::NotAuthorized { .. })
    ));
    let escalated = lifecycle::escalate(&r, t0() + TimeDelta::minutes(10))
        .expect("due")
        .next;
    lifecycle::may_review(&escalated, &oncall).expect("escalation reviewer");
}

#[test]
fn due_names_the_one_transition_to_make() {
    let hour = TimeDelta::seconds(30);
    let r = record(1);
    assert_eq!(
        lifecycle::due(&r, t0(), hour),
        Due::Nothing(Some(t0() + TimeDelta::minutes(10)))
    );
    assert_eq!(
        lifecycle::due(&r, t0() + TimeDelta::minutes(10), hour),
        Due::Escalate
    );
    assert_eq!(
        lifecycle::due(&r, t0() + TimeDelta::hours(1), hour),
        Due::Expire
    );
    let (step, _) = lifecycle::review(&r, &Review::approve(owner("sam")), t0(), TTL).expect("ok");
    // An unaudited approval is recovered before anything else happens to it, lapse included.
    assert_eq!(
        lifecycle::due(&step.next, t0() + TimeDelta::seconds(29), hour),
        Due::Nothing(Some(t0() + TimeDelta::seconds(30)))
    );
    assert_eq!(
        lifecycle::due(&step.next, t0() + TimeDelta::hours(5), hour),
        Due::Recover
    );
    let audited = lifecycle::audited(&step.next, Verdict::Approve).expect("flagged");
    assert_eq!(lifecycle::due(&audited, t0() + TTL, hour), Due::Lapse);
    assert_eq!(
        lifecycle::due(&in_state(RequestState::Executed), t0(), hour),
        Due::Nothing(None)
    );
}

#[test]
fn recovery_records_each_unaudited_decision_and_clears_only_its_own_flag() {
    let r = record(1);
    let (approved, _) =
        lifecycle::review(&r, &Review::approve(owner("sam")), t0(), TTL).expect("approve");
    let (denied, _) = lifecycle::review(
        &approved.next,
        &Review::deny(owner("kim")).reason("no"),
        t0(),
        TTL,
    )
    .expect("revoking deny");
    // Both decisions are flagged: the approval's events were never recorded.
    let both = denied.next.unaudited_decisions();
    assert!(both.approval && both.denial);
    // The approval's decide() finishing late clears its own flag, not the denial's.
    let after_approval = lifecycle::audited(&denied.next, Verdict::Approve).expect("flagged");
    assert!(after_approval.audit_pending && after_approval.unaudited.denial);
    assert_eq!(lifecycle::audited(&after_approval, Verdict::Approve), None);
    // Recovering the original: the approval, then the denial, and nothing left flagged.
    let (step, decisions) = lifecycle::recover(&denied.next)
        .expect("ok")
        .expect("flagged");
    assert_eq!(names(&step.events), ["approved", "reviewed", "denied"]);
    assert_eq!(decisions, [Verdict::Approve, Verdict::Deny]);
    assert!(!step.next.audit_pending && step.next.unaudited.is_empty());
    assert!(lifecycle::recover(&step.next).expect("ok").is_none());
}

#[test]
fn stores_may_replace_only_with_lifecycle_steps() {
    for from in ALL_STATES {
        for to in ALL_STATES {
            let mut current = record(1);
            current.state = from;
            let mut next = current.clone();
            next.state = to;
            let allowed = from == to || from.can_become(to);
            assert_eq!(
                may_replace(&current, &next).is_ok(),
                allowed,
                "{from} -> {to}"
            );
            if from.is_terminal() && from != to {
                assert!(
                    may_replace(&current, &next).is_err(),
                    "{from} never changes"
                );
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Review(usize, Verdict),
    Advance(i64),
    Due,
    Cancel,
    Consume,
    /// Consume with a credential planned.
    ConsumeCredential,
    /// The broker issued the planned credential, expiring this many seconds before (negative:
    /// after) the grant.
    Issue(i64),
    /// The run revoked its credential.
    Revoke,
    Finish(bool),
    Audited(Verdict),
}

/// Reviewers: three owners (one under two spellings), the human behind the agent, an agent,
/// an outsider.
fn reviewer(i: usize) -> Principal {
    match i {
        0 => owner("sam"),
        1 => Principal::human(" SAM@EXAMPLE.COM").with_groups(["owners"]),
        2 => owner("kim"),
        3 => owner("lee"),
        4 => Principal::human("dana@example.com").with_groups(["owners"]),
        5 => Principal::agent("helper").with_groups(["owners"]),
        _ => Principal::human("eve@example.com"),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let verdict = prop_oneof![3 => Just(Verdict::Approve), 1 => Just(Verdict::Deny)];
    prop_oneof![
        6 => (0usize..7, verdict.clone()).prop_map(|(i, v)| Op::Review(i, v)),
        2 => (0i64..900).prop_map(Op::Advance),
        2 => Just(Op::Due),
        1 => Just(Op::Cancel),
        2 => Just(Op::Consume),
        2 => Just(Op::ConsumeCredential),
        2 => (-5i64..300).prop_map(Op::Issue),
        1 => Just(Op::Revoke),
        1 => any::<bool>().prop_map(Op::Finish),
        2 => verdict.prop_map(Op::Audited),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any sequence of operations: every step is one a store accepts; a terminal state never
    /// changes; a request is approved only with a quorum of distinct authorized humans (the
    /// same person under two spellings counts once; the human behind the agent, agents and
    /// outsiders never count); once a deny is accepted the request stays denied; every state
    /// change made by a rule carries its audit events (consume and finish excepted: the gate
    /// records `grant_consumed` and `executed` around the action itself).
    #[test]
    fn any_sequence_keeps_the_invariants(quorum in 1u32..4, ops in prop::collection::vec(op(), 0..40)) {
        let mut r = record(quorum);
        let mut now = t0();
        let mut denied = false;
        let recovery = TimeDelta::seconds(30);
        for op in ops {
            let prev = r.clone();
            let step = match op {
                Op::Review(i, v) => {
                    let review = Review::new(reviewer(i), v).reason("because");
                    lifecycle::review(&r, &review, now, TTL).ok().map(|(s, _)| s)
                }
                Op::Advance(secs) => { now += TimeDelta::seconds(secs); None }
                Op::Due => match lifecycle::due(&r, now, recovery) {
                    Due::Expire => lifecycle::expire(&r, now).ok(),
                    Due::Escalate => lifecycle::escalate(&r, now).ok(),
                    Due::Remind => lifecycle::remind(&r, now).ok(),
                    Due::Lapse => lifecycle::lapse(&r, now).ok(),
                    Due::Recover => lifecycle::recover(&r).ok().flatten().map(|(s, _)| s),
                    Due::Revoke => {
                        let revoked = lifecycle::credential_revoked(&r, RevokeReason::Swept, now);
                        prop_assert!(revoked.is_ok(), "due for revocation, but the rule refuses");
                        revoked.ok()
                    }
                    Due::Nothing(_) => None,
                },
                Op::Cancel => lifecycle::cancel(&r, None, None, now).ok(),
                Op::Consume => lifecycle::consume(&r, r.digest, now).ok(),
                Op::ConsumeCredential => lifecycle::consume_with_credential(&r, r.digest, now, "apr_x".into()).ok(),
                Op::Issue(before) => {
                    let lease = CredentialLease {
                        id: "apr_x".into(),
                        scope: "SELECT on public.invoices".into(),
                        expires_at: r.grant_expires_at.unwrap_or(now) - TimeDelta::seconds(before),
                    };
                    lifecycle::credential_issued(&r, &lease, now).ok()
                }
                Op::Revoke => lifecycle::credential_revoked(&r, RevokeReason::Finished, now).ok(),
                Op::Finish(ok) => lifecycle::finish(&r, (!ok).then(|| "x".into()), now).ok(),
                Op::Audited(v) => lifecycle::audited(&r, v).map(|next| lifecycle::Step { next, events: vec![] }),
            };
            let Some(step) = step else { continue };
            prop_assert!(may_replace(&prev, &step.next).is_ok(), "{} -> {}", prev.state, step.next.state);
            if prev.state.is_terminal() {
                prop_assert_eq!(step.next.state, prev.state, "a terminal state changed");
            }
            let changed = step.next.state != prev.state;
            let by_execution = matches!(step.next.state, RequestState::Executing | RequestState::Executed | RequestState::Failed);
            if changed && !by_execution {
                prop_assert!(!step.events.is_empty(), "{} -> {} without events", prev.state, step.next.state);
            }
            // A credential exists only for a run: planned when a grant is consumed, issued
            // while executing, within the grant's time; once revoked, it stays revoked.
            let credential = |r: &RequestRecord| r.execution.as_ref().and_then(|e| e.credential.clone());
            if let Some(c) = credential(&step.next) {
                prop_assert!(matches!(step.next.state, RequestState::Executing | RequestState::Executed | RequestState::Failed));
                prop_assert!(step.next.grant_expires_at.is_some_and(|g| c.lease.expires_at <= g), "outlives the grant");
                if let Some(before) = credential(&prev) {
                    prop_assert!(before.revoked_at.is_none() || c.revoked_at == before.revoked_at, "revoked, then not");
                    prop_assert!(!before.issued || c.issued, "issued, then not");
                    prop_assert!(!c.issued || before.issued || step.next.state == RequestState::Executing, "issued after the run");
                }
                prop_assert_eq!(lifecycle::outstanding(&step.next).is_some(), c.revoked_at.is_none());
            }
            r = step.next;
            if r.state == RequestState::Denied { denied = true; }
            if denied { prop_assert_eq!(r.state, RequestState::Denied, "deny wins"); }
            if matches!(r.state, RequestState::Approved | RequestState::Executing | RequestState::Executed | RequestState::Failed | RequestState::Lapsed) {
                let valid: std::collections::BTreeSet<String> = r.reviews.iter()
                    .filter(|rv| rv.verdict == Verdict::Approve)
                    .map(|rv| approvals_core::identity::canonical_key(&rv.reviewer.id))
                    .collect();
                prop_assert!(valid.len() as u32 >= quorum, "approved with {} distinct approvers of {}", valid.len(), quorum);
                prop_assert!(!valid.iter().any(|k| k.contains("dana") || k == "helper" || k.contains("eve")));
            }
        }
    }
}
