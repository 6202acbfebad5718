//! Property test: whatever reviewers, revocations, the clock and the agents do, a standing
//! grant approves only matching actions of its own initiator, only while approved by a quorum
//! of valid reviewers, never past its end, never more than its uses, and every use is audited.

use std::sync::Arc;
use std::time::Duration;

use approvals_core::standing::StandingTerms;
use approvals_core::{
    ActionRequest, Clock, Gate, Initiator, ManualClock, MemorySink, MemoryStore, Principal,
    PrincipalKind, RequestId, RequestState, Requirement, Review, StandingProposal, StaticPolicy,
    Store, Submission,
};
use chrono::TimeDelta;
use proptest::prelude::*;

const USES: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    Approve(usize),
    Revoke(usize),
    Advance(i64),
    Sweep,
    /// An action: which resource (0 and 1 match the pattern, 2 does not), which initiator
    /// (0 the grant's, 1 another agent, 2 the same agent for another human).
    Ask(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REVIEWERS).prop_map(Op::Approve),
        1 => (0..REVIEWERS * 2).prop_map(Op::Revoke),
        1 => (0i64..40).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        8 => (0usize..3, 0usize..3).prop_map(|(r, i)| Op::Ask(r, i)),
    ]
}

const REVIEWERS: usize = 5;

fn reviewer(i: usize) -> Principal {
    match i {
        0 => Principal::human("sam").with_groups(["owners"]),
        1 => Principal::human("kim").with_groups(["owners"]),
        // The human the agent acts for: never counts, never revokes.
        2 => Principal::human("dana").with_groups(["owners"]),
        3 => Principal::agent("bot").with_groups(["owners"]),
        _ => Principal::human("eve").with_groups(["sales"]),
    }
}

fn valid_reviewer(p: &Principal) -> bool {
    p.kind == PrincipalKind::Human && p.in_group("owners") && p.id != "dana"
}

fn agent() -> Initiator {
    Initiator::agent("agent").on_behalf_of(Principal::human("dana"))
}

fn caller(i: usize) -> Initiator {
    match i {
        0 => agent(),
        1 => Initiator::agent("other").on_behalf_of(Principal::human("dana")),
        _ => Initiator::agent("agent").on_behalf_of(Principal::human("lee")),
    }
}

fn action(resource: usize, n: usize) -> ActionRequest {
    let resource = match resource {
        0 => "svc://prod/api",
        1 => "svc://prod/web",
        _ => "svc://staging/api",
    };
    ActionRequest::new("deploy.restart", resource).params(serde_json::json!({ "n": n }))
}

async fn scenario(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    let store = Arc::new(MemoryStore::new());
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["owners"])
                .quorum(2)
                .timeout(Duration::from_secs(30 * 60))
                .standing(Duration::from_secs(3600), 10),
        ))
        .store_shared(store.clone())
        .audit_shared(audit.clone())
        .clock(clock.clone())
        .initiator(agent())
        .build()
        .expect("gate");
    let grant = gate
        .propose_standing(
            StandingProposal {
                kind: "deploy.restart".into(),
                resource: "svc://prod/*".into(),
                initiator: agent(),
                duration: Duration::from_secs(3600),
                uses: USES,
                justification: "incident".into(),
                environment: None,
            },
            Principal::human("kim"),
        )
        .await
        .map_err(|e| TestCaseError::fail(format!("proposed: {e}")))?;
    let mut covered: Vec<RequestId> = Vec::new();

    for (n, op) in ops.into_iter().enumerate() {
        let before = store.get(grant).await.expect("store").expect("grant");
        match op {
            Op::Approve(i) => {
                let _ = gate.decide(grant, Review::approve(reviewer(i))).await;
            }
            Op::Revoke(i) => {
                let _ = gate.revoke_standing(grant, Review::deny(reviewer(i))).await;
            }
            Op::Advance(minutes) => clock.advance(TimeDelta::minutes(minutes)),
            Op::Sweep => {
                gate.sweep().await.expect("sweep");
            }
            Op::Ask(resource, who) => {
                let now = clock.now();
                let submitted = gate.submit_as(&caller(who), &action(resource, n)).await;
                let Ok(Submission::Pending(id)) = submitted else {
                    return Err(TestCaseError::fail(format!("not stored: {submitted:?}")));
                };
                let record = store.get(id).await.expect("store").expect("action");
                if record.state == RequestState::Approved {
                    // Covered: only what the grant allows, only while it could.
                    prop_assert_eq!(resource < 2 && who == 0, true, "covered a wider action");
                    prop_assert_eq!(before.state, RequestState::Approved);
                    prop_assert!(before.denial().is_none(), "covered after a revocation");
                    let approvers = before.approvers();
                    prop_assert!(approvers.len() >= 2, "covered without the quorum");
                    prop_assert!(approvers.iter().all(|p| valid_reviewer(p)));
                    let end = before.grant_expires_at.expect("an end");
                    prop_assert!(now < end, "covered after its end");
                    prop_assert!(record.grant_expires_at.is_some_and(|t| t <= end));
                    covered.push(id);
                } else {
                    prop_assert_eq!(record.state, RequestState::Pending);
                }
            }
        }
        let after = store.get(grant).await.expect("store").expect("grant");
        if before.state.is_terminal() {
            prop_assert_eq!(after.state, before.state, "left a terminal state");
        }
        prop_assert!(covered.len() as u32 <= USES, "more uses than it has");
        prop_assert_eq!(after.standing_uses as usize, covered.len());
        let used_events = audit
            .events()
            .iter()
            .filter(|e| e.name() == "standing_grant_used" && e.request_id == grant)
            .count();
        prop_assert_eq!(used_events, covered.len(), "a use without its event");
        prop_assert!(StandingTerms::of(&after).is_some());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_standing_grant_holds_under_any_sequence(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(scenario(ops))?;
    }
}
