//! Puts a [rig](https://docs.rs/rig-core) tool behind an approval gate: the tool runs only once
//! the gate's policy allows the call or humans approve it, exactly once, with exactly the
//! arguments they saw (or, where a rule lets reviewers edit them, the arguments as they
//! edited them); otherwise the model gets the refusal as the tool's error.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_core::{Gate, Initiator, MemorySink, RulePolicy};
//! use approvals_rig::Gated;
//! # use rig_core::tool::{PortableTool};
//! # #[derive(serde::Deserialize, serde::Serialize)] struct Args { table: String }
//! # #[derive(Debug, thiserror::Error)] #[error("export failed")] struct ExportError;
//! # struct ExportTable;
//! # impl PortableTool for ExportTable {
//! #     const NAME: &'static str = "export_table";
//! #     type Args = Args; type Output = String; type Error = ExportError;
//! #     fn description(&self) -> String { String::new() }
//! #     fn parameters(&self) -> serde_json::Value { serde_json::json!({}) }
//! #     async fn call(&self, args: Args) -> Result<String, ExportError> { Ok(args.table) }
//! # }
//!
//! let gate = Gate::builder()
//!     .policy(RulePolicy::from_file("policy.toml")?)
//!     .audit(MemorySink::new())
//!     // Who the agent is: every call is recorded under it, whatever the model sends.
//!     .initiator(Initiator::agent("report-bot").model("gpt-5"))
//!     .build()?;
//!
//! // Same name, description and schema as `ExportTable`; the agent sees no difference.
//! let tool = Gated::new(ExportTable, gate)
//!     .kind("data.export")
//!     .resource_from(|args: &Args| format!("db://prod/{}", args.table));
//! # let _ = tool; Ok(()) }
//! ```
//!
//! Each call becomes an [`ActionRequest`]: kind `tool.<name>` (or [`Gated::kind`]), resource
//! the tool's name (or [`Gated::resource`], [`Gated::resource_from`]), and parameters the
//! tool's arguments as serialized (so reviewers see what the tool receives, and a call with
//! other arguments needs its own approval). The initiator is the gate's
//! ([`GateBuilder::initiator`](approvals_core::GateBuilder::initiator)); nothing the model
//! sends can change it.
//!
//! A refusal (a policy rule, a reviewer's denial, expiry, an unavailable store) reaches the
//! model as one sentence ([`refusal_message`]), classified for rig as a refusal
//! ([`ToolExecutionError::refused`]) with the [`GuardError`] as its source. A tool that
//! fails or panics after approval is audited as `executed` with `ok: false` (the request
//! ends `failed`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use approvals_core::params::ParamsError;
use approvals_core::{ActionRequest, Gate, GuardError};
use futures::FutureExt;
use rig_core::tool::{Tool, ToolContext, ToolExecutionError};
use rig_core::wasm_compat::WasmCompatSend;
use serde::Serialize;

mod message;

pub use message::{refusal_code, refusal_message};

/// Computes a request field (the resource, the summary) from a call's arguments.
type FromArgs<A> = Arc<dyn Fn(&A) -> String + Send + Sync>;

/// A rig [`Tool`] that asks the gate before every call. It has the wrapped tool's name,
/// description and parameter schema, so it registers and is called like the tool itself.
///
/// The tool's `Args` must be [`Serialize`]: the serialized arguments are what reviewers see
/// and approve, so their serialization should show every field the tool uses.
pub struct Gated<T: Tool> {
    tool: T,
    gate: Gate,
    kind: String,
    resource: Option<FromArgs<T::Args>>,
    summary: Option<FromArgs<T::Args>>,
}

impl<T: Tool> std::fmt::Debug for Gated<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated")
            .field("tool", &T::NAME)
            .field("kind", &self.kind)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl<T> Gated<T>
where
    T: Tool,
    T::Args: Serialize,
{
    /// Wraps `tool`: calls go through `gate`, as kind `tool.<name>` on the resource `<name>`.
    pub fn new(tool: T, gate: Gate) -> Self {
        Gated {
            tool,
            gate,
            kind: format!("tool.{}", T::NAME),
            resource: None,
            summary: None,
        }
    }

    /// The action kind policies match on (default `tool.<name>`).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// One resource for every call (default: the tool's name).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        let resource = resource.into();
        self.resource = Some(Arc::new(move |_| resource.clone()));
        self
    }

    /// The resource from each call's arguments, for policies that match on it
    /// (`db://prod/{table}`, `s3://{bucket}/{key}`).
    pub fn resource_from(mut self, f: impl Fn(&T::Args) -> String + Send + Sync + 'static) -> Self {
        self.resource = Some(Arc::new(f));
        self
    }

    /// A one-line summary for reviewers from each call's arguments. Like every field, it is
    /// part of what they approve.
    pub fn summary_from(mut self, f: impl Fn(&T::Args) -> String + Send + Sync + 'static) -> Self {
        self.summary = Some(Arc::new(f));
        self
    }

    /// The request a call with `args` submits: what reviewers see and approve (the gate adds
    /// its initiator and context).
    pub fn action(&self, args: &T::Args) -> Result<ActionRequest, ParamsError> {
        let resource = match &self.resource {
            Some(f) => f(args),
            None => T::NAME.to_owned(),
        };
        let mut action = ActionRequest::new(self.kind.clone(), resource).params_from(args)?;
        if let Some(summary) = &self.summary {
            action = action.summary(summary(args));
        }
        Ok(action)
    }

    /// The wrapped tool.
    pub fn inner(&self) -> &T {
        &self.tool
    }

    /// The gate calls go through.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Unwraps the tool.
    pub fn into_inner(self) -> T {
        self.tool
    }
}

/// Puts a tool behind a gate: `tool.gated(gate)` is [`Gated::new`]`(tool, gate)`.
pub trait GateTool: Tool + Sized
where
    Self::Args: Serialize,
{
    /// See [`Gated::new`].
    fn gated(self, gate: Gate) -> Gated<Self> {
        Gated::new(self, gate)
    }
}

impl<T> GateTool for T
where
    T: Tool,
    T::Args: Serialize,
{
}

/// Why a gated call did not return the tool's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatedError<E> {
    /// The gate did not let the call run (policy, reviewer, expiry, failure). The tool did not
    /// run. The model is told [`refusal_message`].
    #[error(transparent)]
    Refused(#[from] GuardError),
    /// The arguments cannot be shown to reviewers as JSON (a NaN or infinite float, a map
    /// with non-string keys). Nothing was submitted; the tool did not run.
    #[error("the tool's arguments cannot be shown to reviewers: {0}")]
    Arguments(ParamsError),
    /// The tool ran (once, approved) and failed. Audited as `executed` with `ok: false`.
    #[error("{0}")]
    Tool(E),
    /// The tool ran (once, approved) and panicked. Audited as `executed` with `ok: false`;
    /// the panic does not reach the agent.
    #[error("the tool panicked: {0}")]
    Panicked(String),
    /// Reviewers approved the call with edited arguments that the tool's `Args` cannot read.
    /// The grant was used and the tool did not run; audited as `executed` with `ok: false`.
    #[error("the reviewers' edited arguments do not fit the tool: {0}")]
    EditedArguments(String),
}

impl<T> Tool for Gated<T>
where
    T: Tool,
    T::Args: Serialize,
    // The gate's run future holds the output across its audit writes.
    T::Output: WasmCompatSend,
{
    const NAME: &'static str = T::NAME;
    type Args = T::Args;
    type Output = T::Output;
    type Error = GatedError<T::Error>;

    fn description(&self) -> String {
        self.tool.description()
    }

    fn parameters(&self) -> serde_json::Value {
        self.tool.parameters()
    }

    fn map_error(&self, error: Self::Error) -> ToolExecutionError {
        match error {
            GatedError::Tool(error) => self.tool.map_error(error),
            GatedError::Refused(error) => {
                let message = refusal_message(&error);
                let refusal = if error.is_retryable() {
                    ToolExecutionError::other(message).with_retryable(true)
                } else {
                    ToolExecutionError::refused(message)
                };
                refusal.with_code(refusal_code(&error)).with_source(error)
            }
            GatedError::Arguments(error) => ToolExecutionError::invalid_args(format!(
                "The arguments cannot be shown to reviewers ({error}); send plain JSON values."
            )),
            GatedError::Panicked(_) => {
                ToolExecutionError::other("The tool failed unexpectedly after it was approved.")
                    .with_retryable(false)
            }
            GatedError::EditedArguments(why) => ToolExecutionError::other(format!(
                "Reviewers approved this call with edited arguments that the tool cannot read ({why}); it did not run."
            ))
            .with_retryable(false),
        }
    }

    async fn call(
        &self,
        context: &mut ToolContext,
        args: Self::Args,
    ) -> Result<Self::Output, Self::Error> {
        let action = self.action(&args).map_err(GatedError::Arguments)?;
        let asked = action.params.clone();
        let tool = &self.tool;
        // Reviewers may approve the call with edited arguments (a rule's `editable`): the
        // tool then runs with those, and only those.
        self.gate
            .run_approved(&action, move |approved| async move {
                let args = if approved.params == asked {
                    args
                } else {
                    let edited: T::Args = serde_json::from_value(approved.params.as_ref().clone())
                        .map_err(|e| GatedError::EditedArguments(e.to_string()))?;
                    // The resource is read from the arguments: an edit must not send the call
                    // elsewhere than the resource the policy and the reviewers judged.
                    let target = self
                        .action(&edited)
                        .map_err(|e| GatedError::EditedArguments(e.to_string()))?;
                    if target.kind != approved.kind || target.resource != approved.resource {
                        return Err(GatedError::EditedArguments(format!(
                            "they would run it on {} instead of the approved {}",
                            target.resource, approved.resource
                        )));
                    }
                    edited
                };
                match AssertUnwindSafe(tool.call(context, args))
                    .catch_unwind()
                    .await
                {
                    Ok(result) => result.map_err(GatedError::Tool),
                    Err(panic) => {
                        let message = panic_message(panic.as_ref());
                        tracing::error!(tool = T::NAME, panic = %message, "an approved tool call panicked");
                        Err(GatedError::Panicked(message))
                    }
                }
            })
            .await
    }
}

/// The text of a panic payload (`panic!("..")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(no message)"
    };
    approvals_core::text::truncate(text, 500).into_owned()
}
