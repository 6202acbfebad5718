//! Helpers shared by the gate's unit tests of waiting (`gate/wait.rs`, `gate/poll.rs`).

use tokio::task::JoinHandle;

use super::Gate;
use crate::{ActionRequest, Grant, GuardError, RequestId, Submission};

/// Submits an export of `resource`, which the test's policy sends to a reviewer.
pub(super) async fn pending(gate: &Gate, resource: &str) -> RequestId {
    match gate
        .submit(&ActionRequest::new("data.export", resource))
        .await
    {
        Ok(Submission::Pending(id)) => id,
        other => panic!("expected a pending request, got {other:?}"),
    }
}

/// A caller waiting for `id` in its own task.
pub(super) fn spawn_wait(gate: &Gate, id: RequestId) -> JoinHandle<Result<Grant, GuardError>> {
    let gate = gate.clone();
    tokio::spawn(async move { gate.wait(id).await })
}

/// An agent in `guard()` and one in `run()`, each in its own task, asking for exports that
/// the test's policy sends to a reviewer.
pub(super) fn spawn_guard_and_run(gate: &Gate) -> [JoinHandle<Result<(), GuardError>>; 2] {
    let guarding = tokio::spawn({
        let gate = gate.clone();
        async move {
            let action = ActionRequest::new("data.export", "db://prod/guarded");
            gate.guard(&action).await.map(|_| ())
        }
    });
    let running = tokio::spawn({
        let gate = gate.clone();
        async move {
            let action = ActionRequest::new("data.export", "db://prod/run");
            gate.run(&action, || async { Ok::<_, GuardError>(()) })
                .await
        }
    });
    [guarding, running]
}

/// Requests with a slot in the gate's waiter table (someone waits on each).
pub(super) fn slots(gate: &Gate) -> usize {
    gate.inner
        .waiters
        .lock()
        .map(|w| w.len())
        .unwrap_or(usize::MAX)
}
