//! Where the gateway's approvals are decided: the [`Approvals`] trait, with two
//! implementations. [`InProcess`] asks a [`Gate`] in this process (embedded mode);
//! `Remote` (feature `remote`) asks an `approvals serve` through its agent API. Either way the
//! gate decides everything; an implementation only carries the calls and words the answers
//! for the model.

use std::future::Future;

use approvals_core::{ActionRequest, Gate, GuardError, Principal, RequestId, Submission};
use rmcp::model::{CallToolResult, ContentBlock};

use crate::action::refusal_text;
use crate::upstream::UpstreamError;

/// What the approval service said to a submitted call.
#[derive(Debug)]
pub enum Asked<G> {
    /// The policy allows it: run it with this grant.
    Allowed(G),
    /// Reviewers must decide; [`Approvals::wait`] for it.
    Pending {
        /// The request.
        id: RequestId,
        /// Its review page, when the service names one.
        review_url: Option<String>,
    },
}

/// Why running a call upstream gave no successful result.
#[derive(Debug, thiserror::Error)]
pub enum CallFailed {
    /// The upstream server could not be asked, or failed to answer.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The tool ran and reported an error; the model gets the tool's own result.
    #[error("the tool reported an error (isError: true)")]
    Tool(CallToolResult),
}

impl CallFailed {
    /// What the model is told.
    pub fn into_answer(self) -> CallToolResult {
        match self {
            CallFailed::Tool(result) => result,
            CallFailed::Upstream(e) => refused(format!(
                "Failed: {e}. The call may or may not have reached the server."
            )),
        }
    }
}

/// The approval steps of one tool call. Every `Err(String)` is the text the model is told
/// (the call did not run); every decision is the service's.
pub trait Approvals: Send + Sync + 'static {
    /// Permission to run one action once.
    type Grant: Send;

    /// Asks to run `action`: allowed, pending, or refused (`Err`, with the rule and reason).
    fn submit(
        &self,
        action: &ActionRequest,
    ) -> impl Future<Output = Result<Asked<Self::Grant>, String>> + Send;

    /// Waits until reviewers decide on the pending request `id`: the grant once approved,
    /// otherwise who ended it and why.
    fn wait(&self, id: RequestId) -> impl Future<Output = Result<Self::Grant, String>> + Send;

    /// How many reminders went to the reviewers of the pending request `id` while nobody has
    /// reviewed it (`lifecycle::unanswered_reminders`); 0 when that cannot be read.
    fn unanswered_reminders(&self, id: RequestId) -> impl Future<Output = u32> + Send;

    /// Withdraws the pending request `id`; `Err` says why it could not be.
    fn cancel(
        &self,
        id: RequestId,
        reason: String,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// When reviewers approved a changed version of the call ([`edit`](approvals_core::edit)):
    /// that action, the only one `grant` runs (`asked` with the edited parameters). `None`
    /// when it was approved as asked.
    fn edited(grant: &Self::Grant, asked: &ActionRequest) -> Option<ActionRequest>;

    /// Consumes `grant` for `action` and runs `call` once, then records the outcome. Refuses
    /// (without running `call`) when the grant cannot be used. The tool's own result is
    /// returned once it ran, even if the outcome could not be recorded.
    fn execute<F, Fut>(
        &self,
        grant: Self::Grant,
        action: &ActionRequest,
        call: F,
    ) -> impl Future<Output = CallToolResult> + Send
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<CallToolResult, CallFailed>> + Send;
}

/// A tool result with `isError: true` and `text`.
pub(crate) fn refused(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The approvals of a [`Gate`] in this process, whose initiator is the agent the calls are
/// made for.
#[derive(Clone)]
pub struct InProcess {
    gate: Gate,
    agent: Option<Principal>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    /// Asks `gate` (configured with the agent as its initiator).
    pub fn new(gate: Gate) -> Self {
        InProcess { gate, agent: None }
    }

    /// Records `agent` (the gate's initiator) as who withdrew a request the client cancelled.
    pub fn cancelled_by(mut self, agent: Principal) -> Self {
        self.agent = Some(agent);
        self
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// Why a call did not give a result recorded as executed successfully, as `Gate::execute`
/// needs it.
#[derive(Debug, thiserror::Error)]
enum Run {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Call(CallFailed),
}

impl Approvals for InProcess {
    type Grant = approvals_core::Grant;

    async fn submit(&self, action: &ActionRequest) -> Result<Asked<Self::Grant>, String> {
        match self.gate.submit(action).await {
            Ok(Submission::Allowed(grant)) => Ok(Asked::Allowed(grant)),
            Ok(Submission::Pending(id)) => Ok(Asked::Pending {
                id,
                review_url: None,
            }),
            Err(e) => Err(refusal_text(&e)),
        }
    }

    async fn wait(&self, id: RequestId) -> Result<Self::Grant, String> {
        self.gate.wait(id).await.map_err(|e| refusal_text(&e))
    }

    fn edited(grant: &Self::Grant, _asked: &ActionRequest) -> Option<ActionRequest> {
        grant.edited_action().cloned()
    }

    async fn unanswered_reminders(&self, id: RequestId) -> u32 {
        match self.gate.get(id).await {
            Ok(Some(record)) => approvals_core::lifecycle::unanswered_reminders(&record),
            _ => 0,
        }
    }

    async fn cancel(&self, id: RequestId, reason: String) -> Result<(), String> {
        self.gate
            .cancel(id, self.agent.clone(), Some(reason))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn execute<F, Fut>(
        &self,
        grant: Self::Grant,
        action: &ActionRequest,
        call: F,
    ) -> CallToolResult
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<CallToolResult, CallFailed>> + Send,
    {
        let executed = self
            .gate
            .execute(
                grant,
                action,
                || async move { call().await.map_err(Run::Call) },
            )
            .await;
        match executed {
            Ok(result) => result,
            Err(Run::Call(failed)) => failed.into_answer(),
            Err(Run::Guard(e)) => refused(refusal_text(&e)),
        }
    }
}
