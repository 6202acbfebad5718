//! Grants of actions the policy allowed outright, held for the agent API until the agent runs
//! the action ([`AllowedGrants`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use approvals_core::{ActionRequest, Gate, Grant, GuardError, Initiator, RequestId, RequestState};
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::problem::Problem;
use crate::view::ExecutionView;

/// Most grants of allowed (unstored) actions kept waiting to be run at once.
pub const MAX_ALLOWED_GRANTS: usize = 10_000;
/// How long an allowed action may run before its outcome counts as failed (unreported).
pub const MAX_ALLOWED_RUN: Duration = Duration::from_secs(3600);

/// Grants of actions the policy allowed outright. The gate does not store those, so the agent
/// API keeps each grant here until the agent runs the action: `executions` hands it to
/// [`Gate::execute`] (which records `grant_consumed`, then waits for the outcome), and
/// `executions/outcome` completes it (`executed`). Held in memory: after a restart an allowed
/// action is submitted again (the policy allows it again).
#[derive(Default)]
pub(crate) struct AllowedGrants {
    entries: Mutex<HashMap<RequestId, Allowed>>,
}

struct Allowed {
    caller: Initiator,
    expires_at: DateTime<Utc>,
    stage: Stage,
}

enum Stage {
    Granted(Box<(Grant, ActionRequest)>),
    Running {
        outcome: oneshot::Sender<Option<String>>,
        done: oneshot::Receiver<Result<(), String>>,
    },
    Finishing,
}

/// The outcome of an allowed action, as `Gate::execute` sees it.
#[derive(Debug)]
enum RunError {
    Guard(GuardError),
    Failed(String),
}

impl From<GuardError> for RunError {
    fn from(e: GuardError) -> Self {
        RunError::Guard(e)
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Guard(e) => e.fmt(f),
            RunError::Failed(e) => f.write_str(e),
        }
    }
}

impl AllowedGrants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, Allowed>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(
        &self,
        grant: Grant,
        action: ActionRequest,
        caller: Initiator,
        now: DateTime<Utc>,
    ) -> Result<(), Problem> {
        let mut entries = self.lock();
        let stale = now - chrono::TimeDelta::from_std(MAX_ALLOWED_RUN).unwrap_or_default();
        entries.retain(|_, a| match a.stage {
            Stage::Granted(_) => a.expires_at > now,
            _ => a.expires_at > stale,
        });
        if entries.len() >= MAX_ALLOWED_GRANTS {
            return Err(Problem::unavailable(format!(
                "{MAX_ALLOWED_GRANTS} allowed actions are waiting to be run; run or drop some first"
            )));
        }
        entries.insert(
            grant.request_id(),
            Allowed {
                caller,
                expires_at: grant.expires_at(),
                stage: Stage::Granted(Box::new((grant, action))),
            },
        );
        Ok(())
    }

    /// Takes the entry's stage if `caller` asked for it; `404` for anyone else.
    fn take(&self, id: RequestId, caller: &Initiator) -> Result<Stage, Problem> {
        let mut entries = self.lock();
        let not_found = || Problem::not_found(format!("no approval request {id}"));
        let entry = entries.get_mut(&id).ok_or_else(not_found)?;
        let same = entry.caller.principal.kind == caller.principal.kind
            && approvals_core::identity::same_canonical(
                &entry.caller.principal.id,
                &caller.principal.id,
            );
        if !same {
            return Err(not_found());
        }
        Ok(std::mem::replace(&mut entry.stage, Stage::Finishing))
    }

    fn put_back(&self, id: RequestId, stage: Stage) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.stage = stage;
        }
    }

    pub(crate) async fn start(
        &self,
        gate: &Gate,
        id: RequestId,
        caller: &Initiator,
    ) -> Result<ExecutionView, Problem> {
        let (grant, action) = match self.take(id, caller)? {
            Stage::Granted(granted) => *granted,
            other => {
                self.put_back(id, other);
                return Err(Problem::conflict(
                    "grant_used",
                    format!(
                        "the grant for request {id} was already used; submit the action again to run it again"
                    ),
                ));
            }
        };
        let (outcome_tx, outcome_rx) = oneshot::channel::<Option<String>>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<Result<(), String>>();
        let gate = gate.clone();
        let run = tokio::spawn(async move {
            let result = gate
                .execute(grant, &action, move || async move {
                    let _ = started_tx.send(());
                    match tokio::time::timeout(MAX_ALLOWED_RUN, outcome_rx).await {
                        Ok(Ok(None)) => Ok(()),
                        Ok(Ok(Some(error))) => Err(RunError::Failed(error)),
                        _ => Err(RunError::Failed(format!(
                            "no outcome was reported within {} s",
                            MAX_ALLOWED_RUN.as_secs()
                        ))),
                    }
                })
                .await;
            let result = match result {
                Ok(()) => Ok(()),
                Err(RunError::Failed(e)) => Err(e),
                Err(RunError::Guard(e)) => return Err(e),
            };
            let _ = done_tx.send(result);
            Ok(())
        });
        if started_rx.await.is_ok() {
            self.put_back(
                id,
                Stage::Running {
                    outcome: outcome_tx,
                    done: done_rx,
                },
            );
            return Ok(ExecutionView {
                id,
                state: RequestState::Executing,
                error: None,
            });
        }
        // The gate refused before running: the grant is gone either way.
        match run.await {
            Ok(Err(e)) => Err(Problem::from(e)),
            _ => Err(Problem::unavailable(
                "the grant could not be consumed; submit the action again",
            )),
        }
    }

    pub(crate) async fn finish(
        &self,
        id: RequestId,
        caller: &Initiator,
        error: Option<String>,
    ) -> Result<ExecutionView, Problem> {
        let (outcome, done) = match self.take(id, caller)? {
            Stage::Running { outcome, done } => (outcome, done),
            other => {
                let not_started = matches!(other, Stage::Granted(_));
                self.put_back(id, other);
                return Err(if not_started {
                    Problem::conflict(
                        "not_executing",
                        format!(
                            "request {id} is not executing: start the execution (POST /v1/requests/{id}/executions) first"
                        ),
                    )
                } else {
                    Problem::conflict(
                        "grant_used",
                        format!("the outcome of request {id} is already recorded"),
                    )
                });
            }
        };
        let failed = error.is_some();
        let _ = outcome.send(error.clone());
        let recorded = done.await;
        self.lock().remove(&id);
        match recorded {
            Ok(_) => Ok(ExecutionView {
                id,
                state: if failed {
                    RequestState::Failed
                } else {
                    RequestState::Executed
                },
                error,
            }),
            Err(_) => Err(Problem::unavailable("the outcome could not be recorded")),
        }
    }
}
