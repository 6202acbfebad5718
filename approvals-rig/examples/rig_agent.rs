//! A rig agent whose export tool waits for a data owner's approval. Runs offline: the model is
//! scripted (rig-core's `MockCompletionModel`, which answers each turn from a script), so it
//! needs no network and no API key.
//!
//! ```sh
//! cargo run -p approvals-rig --example rig_agent
//! ```
//!
//! Two runs of the same agent. Each time the model calls `export_rows` on a production table,
//! which the policy sends to the data owners; a reviewer (an in-process channel standing in
//! for Slack or the web console) approves the first and denies the second with a reason. The
//! first export runs once; the second never runs, and the model receives the reviewer's reason
//! as the tool's error.

use std::sync::{Arc, Mutex};

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, Initiator, MemorySink,
    Principal, RequestRecord, Review, RulePolicy,
};
use approvals_rig::GateTool;
use rig_agent::AgentBuilder;
use rig_core::completion::{CompletionRequest, Message};
use rig_core::message::UserContent;
use rig_core::test_utils::{MockCompletionModel, MockTurn};
use rig_core::tool::PortableTool;
use serde::{Deserialize, Serialize};

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "prod-exports-need-a-data-owner"
kind = "tool.export_rows"
resource = "db://prod/*"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "15m"
"#;

/// The model's arguments to `export_rows`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ExportArgs {
    /// `staging` or `prod`.
    pub database: String,
    /// The table.
    pub table: String,
    /// At most this many rows.
    pub limit: u32,
}

/// The privileged tool: exports rows (here it only records that it ran).
#[derive(Clone, Default)]
pub struct ExportRows {
    ran: Arc<Mutex<Vec<ExportArgs>>>,
}

/// Never returned here; a real exporter's failures.
#[derive(Debug, thiserror::Error)]
#[error("export failed")]
pub struct ExportError;

impl PortableTool for ExportRows {
    const NAME: &'static str = "export_rows";
    type Args = ExportArgs;
    type Output = String;
    type Error = ExportError;

    fn description(&self) -> String {
        "Exports rows of a table to the analytics bucket.".into()
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "database": { "type": "string", "enum": ["staging", "prod"] },
                "table": { "type": "string" },
                "limit": { "type": "integer", "minimum": 1 }
            },
            "required": ["database", "table", "limit"]
        })
    }

    async fn call(&self, args: ExportArgs) -> Result<String, ExportError> {
        println!(
            "    [tool] exporting {} rows of {}/{}",
            args.limit, args.database, args.table
        );
        let done = format!("exported {} rows of {}", args.limit, args.table);
        if let Ok(mut ran) = self.ran.lock() {
            ran.push(args);
        }
        Ok(done)
    }
}

/// A reviewer's verdict, read by the in-process channel for each request it is shown.
#[derive(Clone)]
enum Verdict {
    Approve,
    Deny(&'static str),
}

/// An in-process review channel: shows each request the way a chat message would, then a
/// data owner decides through the gate (as Slack's or the console's inbound handler does
/// after proving who clicked).
struct Reviewer {
    verdicts: Mutex<Vec<Verdict>>,
}

#[async_trait::async_trait]
impl Approver for Reviewer {
    fn name(&self) -> &str {
        "example-reviewer"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        _reason: DispatchReason,
        decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let asker = request
            .request
            .initiator
            .as_ref()
            .map(|i| i.principal.id.clone())
            .unwrap_or_default();
        println!(
            "    [review] {asker} asks for {} on {} with {} (digest {})",
            request.request.kind, request.request.resource, request.request.params, request.digest
        );
        let verdict = self
            .verdicts
            .lock()
            .map_err(|_| ApproverError::new("example-reviewer", "lock poisoned"))?
            .pop()
            .ok_or_else(|| ApproverError::new("example-reviewer", "no verdict scripted"))?;
        let dana = Principal::human("dana@example.com").with_groups(["data-owners"]);
        let review = match verdict {
            Verdict::Approve => Review::approve(dana),
            Verdict::Deny(reason) => Review::deny(dana).reason(reason),
        };
        let id = request.id;
        // Decided after delivery returns, like a person clicking a moment later.
        tokio::spawn(async move {
            match decisions.decide(id, review).await {
                Ok(outcome) => println!("    [review] dana@example.com: {}", outcome.state),
                Err(e) => println!("    [review] refused: {}", e.reviewer_message()),
            }
        });
        Ok(None)
    }
}

/// What one agent run showed.
#[derive(Debug)]
pub struct RunReport {
    /// The tool results the model received: (is an error, text).
    pub tool_results: Vec<(bool, String)>,
    /// The agent's final answer.
    pub answer: String,
}

/// What the demo showed.
#[derive(Debug)]
pub struct Report {
    /// The run a data owner approved.
    pub approved: RunReport,
    /// The run a data owner denied.
    pub denied: RunReport,
    /// The calls the export tool actually ran.
    pub exports: Vec<ExportArgs>,
    /// The audit trail's event names, in order.
    pub audit: Vec<&'static str>,
}

/// The tool results in the last request the model received.
fn tool_results(model: &MockCompletionModel) -> Vec<(bool, String)> {
    let requests: Vec<CompletionRequest> = model.requests();
    let Some(last) = requests.last() else {
        return Vec::new();
    };
    last.chat_history
        .iter()
        .flat_map(|message| match message {
            Message::User { content } => content.clone(),
            _ => Vec::new(),
        })
        .filter_map(|content| match content {
            UserContent::ToolResult(result) => Some((
                result.is_error,
                result
                    .content
                    .iter()
                    .filter_map(|c| c.as_text())
                    .collect::<Vec<_>>()
                    .join(" "),
            )),
            _ => None,
        })
        .collect()
}

/// Runs the agent twice: approved, then denied with a reason.
pub async fn demo() -> Result<Report, Box<dyn std::error::Error>> {
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY)?)
        .audit_shared(audit.clone())
        // Popped from the end: the first request is approved, the second denied.
        .approver(Reviewer {
            verdicts: Mutex::new(vec![
                Verdict::Deny("the whole table is too much; export at most 100 rows"),
                Verdict::Approve,
            ]),
        })
        // The agent's identity is the gate's, whatever the model puts in the arguments.
        .initiator(
            Initiator::agent("report-bot")
                .model("scripted-model")
                .on_behalf_of(Principal::human("sam@example.com")),
        )
        .build()?;
    let tool = ExportRows::default();

    let mut runs = Vec::new();
    for (prompt, limit, answer) in [
        (
            "Export 100 recent orders for the weekly report.",
            100,
            "The 100 orders are exported.",
        ),
        (
            "Now export the whole orders table.",
            5_000_000,
            "The data owner refused the full export; I can export at most 100 rows.",
        ),
    ] {
        println!("\nuser: {prompt}");
        let model = MockCompletionModel::from_turns([
            MockTurn::tool_call(
                "call-1",
                "export_rows",
                serde_json::json!({ "database": "prod", "table": "orders", "limit": limit }),
            ),
            MockTurn::text(answer),
        ]);
        let agent = AgentBuilder::new(model.clone())
            .preamble("You export data for reports.")
            .tool(
                tool.clone()
                    .gated(gate.clone())
                    .resource_from(|a: &ExportArgs| format!("db://{}/{}", a.database, a.table)),
            )
            .build();
        let response = agent.prompt(prompt).max_turns(3).await?;
        let tool_results = tool_results(&model);
        for (is_error, text) in &tool_results {
            let label = if *is_error {
                "tool error"
            } else {
                "tool result"
            };
            println!("    [model receives {label}] {text}");
        }
        println!("assistant: {}", response.output());
        runs.push(RunReport {
            tool_results,
            answer: response.output(),
        });
    }

    let audit_names = audit.names();
    println!("\naudit trail: {}", audit_names.join(", "));
    let exports = tool.ran.lock().map(|r| r.clone()).unwrap_or_default();
    let mut runs = runs.into_iter();
    let (Some(approved), Some(denied)) = (runs.next(), runs.next()) else {
        return Err("the demo makes two runs".into());
    };
    Ok(Report {
        approved,
        denied,
        exports,
        audit: audit_names,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = demo().await?;
    println!(
        "\nThe export ran {} time(s): only the approved call.",
        report.exports.len()
    );
    Ok(())
}
