//! `#[requires_approval]`: an agent's tools put behind approvals with one attribute each.
//!
//! The agent drops two warehouse tables and rotates a key. A reviewer (simulated in this
//! process, standing in for Slack, Teams or the web console) sees each request with its
//! parameters and justification, but never the database credentials, which the tool skips.
//! It approves one drop, denies the other, and approves the rotation. The body of a tool runs
//! only after approval; the audit trail is printed at the end.
//!
//! Run: `cargo run -p approvals-examples --bin macro`

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    Gate, GuardError, Initiator, MemorySink, Principal, RequestContext, Requirement, Review,
    StaticPolicy, requires_approval, set_default_gate,
};

/// What the agent's tools return when they fail or are refused.
#[derive(Debug)]
enum ToolError {
    NotApproved(GuardError),
    Warehouse(String),
}

impl From<GuardError> for ToolError {
    fn from(e: GuardError) -> Self {
        ToolError::NotApproved(e)
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::NotApproved(e) => write!(f, "not approved: {e}"),
            ToolError::Warehouse(e) => write!(f, "warehouse error: {e}"),
        }
    }
}

impl Error for ToolError {}

/// Database credentials: must never be shown to reviewers or written to the audit log.
struct Credentials {
    password: String,
}

struct Warehouse {
    gate: Gate,
    tables: Vec<String>,
}

impl Warehouse {
    /// Drops a table. Reviewers see `{"table": ..}`, the resource, and the justification.
    #[requires_approval(
        kind = "warehouse.drop_table",
        resource = "warehouse://prod/{table}",
        skip(credentials),
        gate = self.gate,
        justification = why,
        context = RequestContext::environment("production"),
    )]
    async fn drop_table(
        &mut self,
        credentials: &Credentials,
        table: String,
        why: String,
    ) -> Result<usize, ToolError> {
        if credentials.password.is_empty() {
            return Err(ToolError::Warehouse("not logged in".into()));
        }
        let before = self.tables.len();
        self.tables.retain(|t| *t != table);
        if self.tables.len() == before {
            return Err(ToolError::Warehouse(format!("no table {table}")));
        }
        println!("[tool] dropped {table}");
        Ok(self.tables.len())
    }
}

/// Rotates a key; asks the process-wide gate (no `gate = ..`).
#[requires_approval(kind = "secrets.rotate", resource = "kms://prod/{key}")]
async fn rotate_key(key: &str, notify_owners: bool) -> Result<String, GuardError> {
    println!("[tool] rotated {key} (notify owners: {notify_owners})");
    Ok(format!("{key}-v2"))
}

/// Stands in for a review channel: shows each pending request and decides it.
async fn reviewer(gate: Gate, decisions: usize) -> Result<(), Box<dyn Error + Send + Sync>> {
    let sam = Principal::human("sam@example.com").with_name("Sam (data owner)");
    let mut decided = 0;
    while decided < decisions {
        let Some(record) = gate.pending().await?.into_iter().next() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let request = &record.request;
        println!(
            "[review] {} on {}\n         params: {}\n         why: {}",
            request.kind,
            request.resource,
            request.params,
            request.justification.as_deref().unwrap_or("-"),
        );
        let review = if request.resource.ends_with("/customers") {
            println!("[review] Sam denies: customer data is not to be dropped");
            Review::deny(sam.clone()).reason("customer data is not to be dropped")
        } else {
            println!("[review] Sam approves");
            Review::approve(sam.clone())
        };
        gate.decide(record.id, review).await?;
        decided += 1;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "sam@example.com",
        ])))
        .audit_shared(audit.clone())
        .initiator(Initiator::agent("warehouse-agent").model("gpt-5"))
        .build()?;
    set_default_gate(gate.clone());
    let review = tokio::spawn(reviewer(gate.clone(), 3));

    let mut warehouse = Warehouse {
        gate: gate.clone(),
        tables: vec!["events_2019".into(), "customers".into(), "orders".into()],
    };
    let credentials = Credentials {
        password: "s3cr3t-password".into(),
    };

    for table in ["events_2019", "customers"] {
        println!("[agent] asking to drop {table}");
        match warehouse
            .drop_table(
                &credentials,
                table.into(),
                "free space before the migration".into(),
            )
            .await
        {
            Ok(left) => println!("[agent] done; {left} tables left"),
            Err(e) => println!("[agent] {e}"),
        }
    }
    println!("[agent] asking to rotate the payments key");
    let new_key = rotate_key("payments", true).await?;
    println!("[agent] new key {new_key}");

    review.await?.map_err(|e| e.to_string())?;

    println!("\nAudit trail:");
    for event in audit.events() {
        println!(
            "  {:<16} {:<22} {}",
            event.name(),
            event.kind,
            event.resource
        );
    }
    let trail = serde_json::to_string(&audit.events())?;
    assert!(
        !trail.contains("s3cr3t"),
        "skipped arguments never reach the audit log"
    );
    println!("\nThe credentials appear nowhere in the trail.");
    Ok(())
}
