//! Policy walkthrough: loads `examples/policies/walkthrough.toml`, shows which rule decides a
//! set of sample actions and why, then shows the error a malformed policy gets.
//!
//! Run: `cargo run -p approvals-examples --bin policy [path/to/policy.toml]`

use std::error::Error;

use approvals_core::{ActionRequest, Decision, Initiator, Policy, Principal, RulePolicy};
use serde_json::json;

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies/walkthrough.toml").to_owned()
    });
    let policy = RulePolicy::from_file(&path)?;
    println!(
        "{path}: {} rules, version {}\n",
        policy.len(),
        policy.version()
    );

    let agent = Initiator::agent("etl-agent").on_behalf_of(Principal::human("dana@example.com"));
    let samples = [
        ActionRequest::new("warehouse.read", "db://prod/orders"),
        ActionRequest::new("db.schema.alter", "db://prod/orders")
            .params(json!({"statement": "DROP TABLE orders"}))
            .environment("production"),
        ActionRequest::new("db.schema.alter", "db://staging/orders")
            .params(json!({"statement": "ALTER TABLE orders ADD COLUMN note text"}))
            .environment("staging"),
        ActionRequest::new("data.export", "db://prod/customers")
            .params(json!({"rows": 200, "format": "csv"})),
        ActionRequest::new("data.export", "db://prod/customers")
            .params(json!({"rows": 90_000, "format": "csv"})),
        ActionRequest::new("iam.role.grant", "iam://prod/admin"),
    ];
    for sample in samples {
        let request = sample.initiator(agent.clone());
        let decision = policy.evaluate(&request)?;
        println!(
            "{:<16} {:<22} {}",
            request.kind,
            request.resource,
            describe(&decision)
        );
    }

    println!("\nA malformed policy is refused at load, with where and how to fix it:");
    let broken = "version = 1\ndefault = \"deny\"\n\n[[rules]]\nname = \"exports\"\nkind = \"data.export\"\neffect = \"require_approval\"\nquorum = 2\n";
    if let Err(e) = RulePolicy::from_toml(broken) {
        println!("  {e}");
    }
    Ok(())
}

fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Allow { rule } => format!("allow (rule {})", rule.as_deref().unwrap_or("-")),
        Decision::Deny { rule, reason } => format!("deny (rule {rule}): {reason}"),
        Decision::RequireApproval { rule, requirement } => {
            let mut who: Vec<String> = requirement
                .groups
                .iter()
                .map(|g| format!("group {g}"))
                .collect();
            who.extend(requirement.users.iter().map(|u| format!("user {u}")));
            let mut text = format!(
                "needs {} approval(s) from {} within {} (rule {})",
                requirement.quorum,
                who.join(" or "),
                approvals_core::policy::format_duration(requirement.timeout),
                rule.as_deref().unwrap_or("-")
            );
            if requirement.reason_required {
                text.push_str(", reason required");
            }
            if let Some(e) = &requirement.escalation {
                text.push_str(&format!(
                    ", escalates to {} after {}",
                    e.groups.join(", "),
                    approvals_core::policy::format_duration(e.after)
                ));
            }
            text
        }
    }
}
