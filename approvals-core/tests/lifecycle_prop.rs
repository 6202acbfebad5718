//! Property test: whatever reviewers, cancels and the clock do, the lifecycle never leaves a
//! terminal state, follows its allowed steps, and never executes without enough approvals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::lifecycle;
use approvals_core::{
    ActionRequest, Clock, Gate, GuardError, Initiator, ManualClock, MemorySink, Principal,
    PrincipalKind, RequestRecord, RequestState, Requirement, Review, StaticPolicy, Submission,
    Verdict,
};
use chrono::TimeDelta;
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Approve(usize),
    Deny(usize),
    Cancel,
    Advance(i64),
    Sweep,
    Execute,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REVIEWERS).prop_map(Op::Approve),
        1 => (0..REVIEWERS).prop_map(Op::Deny),
        1 => Just(Op::Cancel),
        2 => (0i64..20).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        3 => Just(Op::Execute),
    ]
}

const REVIEWERS: usize = 6;

fn reviewer(i: usize) -> Principal {
    match i {
        0 => Principal::human("sam").with_groups(["owners"]),
        1 => Principal::human("kim").with_groups(["owners"]),
        2 => Principal::human("lee").with_groups(["owners"]),
        // The human the agent acts for, in the right group: must never count.
        3 => Principal::human("dana").with_groups(["owners"]),
        // An agent in the right group: must never count.
        4 => Principal::agent("bot").with_groups(["owners"]),
        // A human outside the group.
        _ => Principal::human("eve").with_groups(["sales"]),
    }
}

fn valid_reviewer(p: &Principal) -> bool {
    p.kind == PrincipalKind::Human && p.in_group("owners") && p.id != "dana"
}

async fn scenario(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["owners"])
                .quorum(2)
                .timeout(Duration::from_secs(30 * 60))
                .reminders([20, 50, 90]),
        ))
        .audit(MemorySink::new())
        .clock(clock.clone())
        .initiator(Initiator::agent("agent").on_behalf_of(Principal::human("dana")))
        .grant_ttl(Duration::from_secs(5 * 60))
        .build()
        .expect("gate");
    let action = ActionRequest::new("data.export", "db://x").params(json!({"rows": 1}));
    let Ok(Submission::Pending(id)) = gate.submit(&action).await else {
        return Err(TestCaseError::fail("expected a pending request"));
    };
    let executions = AtomicUsize::new(0);
    let mut previous: RequestRecord = gate.get(id).await.expect("store").expect("record");

    for op in ops {
        match op {
            Op::Approve(i) => {
                let _ = gate.decide(id, Review::approve(reviewer(i))).await;
            }
            Op::Deny(i) => {
                let _ = gate.decide(id, Review::deny(reviewer(i))).await;
            }
            Op::Cancel => {
                let _ = gate.cancel(id, None, None).await;
            }
            Op::Advance(minutes) => clock.advance(TimeDelta::minutes(minutes)),
            Op::Sweep => {
                gate.sweep().await.expect("sweep");
            }
            Op::Execute => {
                // Only ask for a grant when one may exist: a pending wait would block.
                let state = gate.get(id).await.expect("store").expect("record").state;
                if state != RequestState::Pending {
                    let before = gate.get(id).await.expect("store").expect("record");
                    let result = match gate.wait(id).await {
                        Ok(grant) => {
                            gate.execute(grant, &action, || async {
                                executions.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, GuardError>(())
                            })
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    if result.is_ok() {
                        prop_assert_eq!(before.state, RequestState::Approved);
                        prop_assert!(before.approvers().len() >= 2);
                        prop_assert!(before.denial().is_none());
                    }
                }
            }
        }

        let now = gate.get(id).await.expect("store").expect("record");
        if previous.state.is_terminal() {
            prop_assert_eq!(now.state, previous.state, "left a terminal state");
            prop_assert_eq!(now.reviews.len(), previous.reviews.len());
        } else if now.state != previous.state {
            // One op may pass through Executing (consume, run, finish).
            let via_executing = previous.state.can_become(RequestState::Executing)
                && RequestState::Executing.can_become(now.state);
            prop_assert!(
                previous.state.can_become(now.state) || via_executing,
                "illegal step {} -> {}",
                previous.state,
                now.state
            );
        }
        for review in &now.reviews {
            prop_assert!(
                valid_reviewer(&review.reviewer),
                "accepted review by {:?}",
                review.reviewer
            );
        }
        // Reminders only move forward, and never past the requirement's points.
        prop_assert!(
            now.reminded >= previous.reminded,
            "a reminder was taken back"
        );
        prop_assert!(now.reminded <= 3);
        let approvers = now.approvers();
        prop_assert_eq!(
            approvers.len(),
            now.reviews
                .iter()
                .filter(|r| r.verdict == Verdict::Approve)
                .count(),
            "someone counted twice"
        );
        if matches!(
            now.state,
            RequestState::Approved | RequestState::Executing | RequestState::Executed
        ) {
            prop_assert!(approvers.len() >= 2, "approved without quorum");
            prop_assert!(now.denial().is_none(), "approved despite a deny");
        }
        // A sweep that reads only what its store lists as due (`ListFilter::due_by`) misses
        // nothing: whenever something is due, the record's indexed due time has come.
        for minutes in [-60, 0, 1, 5, 29, 31, 61, 600] {
            let at = clock.now() + TimeDelta::minutes(minutes);
            for recovery in [0, 1, 60] {
                let due = lifecycle::due(&now, at, TimeDelta::minutes(recovery));
                if !matches!(due, lifecycle::Due::Nothing(_)) {
                    let next = lifecycle::next_due(&now);
                    prop_assert!(
                        next.is_some_and(|next| next <= at),
                        "{due:?} at {at} but next_due is {next:?}"
                    );
                }
            }
        }
        prop_assert!(executions.load(Ordering::SeqCst) <= 1, "executed twice");
        if executions.load(Ordering::SeqCst) == 1 {
            prop_assert!(matches!(now.state, RequestState::Executed));
        }
        previous = now;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_holds_under_any_sequence(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(scenario(ops))?;
    }
}
