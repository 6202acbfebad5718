//! Shared fixtures for the `approvals` binary's tests: a token for every kind of caller and a
//! sample request.
#![allow(dead_code)]

use approvals_core::{ActionRequest, Gate, RequestId, Submission};

pub const SAM: &str = "tok-sam-reviewer-security";
pub const DANA: &str = "tok-dana-requester";
pub const EVE: &str = "tok-eve-no-groups";
pub const BOT: &str = "tok-billing-agent";
pub const OTHER_BOT: &str = "tok-other-agent";
pub const SVC: &str = "tok-deploy-service";
pub const ADMIN: &str = "tok-admin";

pub fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(serde_json::json!({"rows": 5000, "format": "csv"}))
        .environment("production")
        .justification("quarterly report")
}

pub async fn submit(gate: &Gate, action: &ActionRequest) -> RequestId {
    match gate.submit(action).await.expect("submit") {
        Submission::Pending(id) => id,
        Submission::Allowed(_) => panic!("the fixture policy requires approval"),
    }
}
