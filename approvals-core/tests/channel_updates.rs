//! Channels are told of each change of a request once, in order: whatever each update costs,
//! the last thing a channel is told is the request's final state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{
    ActionRequest, Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, GuardError,
    Initiator, MemorySink, Principal, RequestRecord, RequestState, Requirement, Review,
    StaticPolicy, Submission,
};
use async_trait::async_trait;

/// Records the state of every update it is given; the update of `slow` takes 300 ms, as a
/// chat API under load might.
struct Recorder {
    slow: RequestState,
    shown: Arc<Mutex<Vec<RequestState>>>,
}

#[async_trait]
impl Approver for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn dispatch(
        &self,
        _: &RequestRecord,
        _: DispatchReason,
        _: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        Ok(None)
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        if request.state == self.slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.shown.lock().expect("lock").push(request.state);
        Ok(())
    }
}

async fn last_shown_after_execution(slow: RequestState) -> Vec<RequestState> {
    let shown = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .audit(MemorySink::new())
        .approver(Recorder {
            slow,
            shown: shown.clone(),
        })
        .initiator(Initiator::agent("bot").on_behalf_of(Principal::human("dana@example.com")))
        .build()
        .expect("gate");
    let action = ActionRequest::new("data.export", "db://prod/customers");
    let Ok(Submission::Pending(id)) = gate.submit(&action).await else {
        panic!("the action goes to review");
    };
    gate.decide(
        id,
        Review::approve(Principal::human("sam@example.com").with_groups(["security"])),
    )
    .await
    .expect("approve");
    let grant = gate.wait(id).await.expect("grant");
    gate.execute(grant, &action, || async { Ok::<_, GuardError>(()) })
        .await
        .expect("execute");
    // Every update is sent within a second; then nothing more arrives.
    for _ in 0..100 {
        if shown.lock().expect("lock").last() == Some(&RequestState::Executed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shown.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_slow_update_never_lands_after_a_later_state() {
    for slow in [RequestState::Approved, RequestState::Executed] {
        let shown = last_shown_after_execution(slow).await;
        assert_eq!(
            shown,
            [RequestState::Approved, RequestState::Executed],
            "with a slow {slow} update, the channel was told every change once, in order"
        );
    }
}
