//! Shared by the tests: a tool that records its calls, a reviewer inbox, and a gate.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, Initiator, MemorySink,
    Principal, RequestRecord, RulePolicy,
};
use rig_core::tool::PortableTool;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Reads rows matching a filter, needing approval for production; its calls are recorded.
pub const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "no-secrets"
kind = "tool.export_rows"
when = [{ param = "table", eq = "secrets" }]
effect = "deny"
reason = "The secrets table is never exported; ask the security team for a report instead."

[[rules]]
name = "staging-is-free"
kind = "tool.export_rows"
resource = "db://staging/*"
effect = "allow"

[[rules]]
name = "prod-needs-a-data-owner"
kind = "tool.export_rows"
resource = "db://prod/*"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "15m"
editable = ["limit", "table"]
"#;

/// The arguments the model sends.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ExportArgs {
    pub database: String,
    pub table: String,
    pub limit: u32,
}

/// What the tool does when called.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    Succeed,
    Fail,
    Panic,
}

/// The tool behind the gate: returns a row count, or fails or panics as told; records every
/// call's arguments.
#[derive(Clone)]
pub struct ExportRows {
    pub calls: Arc<Mutex<Vec<ExportArgs>>>,
    pub behaviour: Behaviour,
}

impl ExportRows {
    pub fn new(behaviour: Behaviour) -> Self {
        ExportRows {
            calls: Arc::default(),
            behaviour,
        }
    }

    pub fn calls(&self) -> Vec<ExportArgs> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the warehouse refused the export: disk full")]
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
                "limit": { "type": "integer" }
            },
            "required": ["database", "table", "limit"]
        })
    }

    async fn call(&self, args: ExportArgs) -> Result<String, ExportError> {
        let limit = args.limit;
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(args);
        }
        match self.behaviour {
            Behaviour::Succeed => Ok(format!("exported {limit} rows")),
            Behaviour::Fail => Err(ExportError),
            Behaviour::Panic => panic!("index out of bounds in the exporter"),
        }
    }
}

/// A review channel that hands each pending request to the test, which decides through the
/// gate like a channel's inbound handler would.
pub struct Inbox(pub mpsc::UnboundedSender<RequestRecord>);

#[async_trait::async_trait]
impl Approver for Inbox {
    fn name(&self) -> &str {
        "inbox"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        self.0
            .send(request.clone())
            .map_err(|_| ApproverError::new("inbox", "the test stopped reading"))?;
        Ok(None)
    }
}

/// A gate acting for the agent `report-bot` on behalf of `sam`, with the inbox as its only
/// channel and every event kept.
pub fn gate() -> (
    Gate,
    mpsc::UnboundedReceiver<RequestRecord>,
    Arc<MemorySink>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("the test policy parses"))
        .audit_shared(sink.clone())
        .approver(Inbox(tx))
        .initiator(
            Initiator::agent("report-bot")
                .model("scripted")
                .on_behalf_of(Principal::human("sam@example.com")),
        )
        .build()
        .expect("the test gate builds");
    (gate, rx, sink)
}

/// A data owner who may review.
pub fn data_owner() -> Principal {
    Principal::human("dana@example.com").with_groups(["data-owners"])
}

/// The resource the gated tool names: `db://<database>/<table>`.
pub fn resource(args: &ExportArgs) -> String {
    format!("db://{}/{}", args.database, args.table)
}
