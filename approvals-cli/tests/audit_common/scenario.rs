//! A realistic approval history, run through a real `Gate` into a `SignedLogSink`: approvals,
//! a failed execution, a denial, a refused self-approval, an expiry, a policy denial, an
//! allowed read, a cancellation, and one request full of hostile text.

use std::path::Path;
use std::sync::Arc;

use approvals_audit::SignedLogSink;
use approvals_audit::log::{LogConfig, SyncPolicy};
use approvals_audit::note::Signer;
use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, ManualClock, Principal, RequestContext, Review,
    RulePolicy, Submission,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

pub const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "no-drops"
kind = "db.drop"
effect = "deny"
reason = "Dropping tables needs a change ticket"

[[rules]]
name = "prod-changes"
kind = "*"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "1h"
"#;

/// Text an agent could put anywhere: CEF and HTML metacharacters, a CSV formula, newlines.
pub const HOSTILE: &str =
    "=HYPERLINK(\"http://evil\") <script>alert(1)</script> a|b c=d back\\slash\r\nCEF:0|x|y";

pub const START: &str = "2026-11-02T09:00:00Z";

pub fn start() -> DateTime<Utc> {
    START.parse().unwrap()
}

pub fn sre(id: &str) -> Principal {
    Principal::human(id).with_groups(["sre"])
}

#[derive(Debug)]
pub struct Boom(pub String);
impl From<GuardError> for Boom {
    fn from(e: GuardError) -> Self {
        Boom(e.to_string())
    }
}
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn sink_config() -> LogConfig {
    LogConfig::new(super::ORIGIN)
        .checkpoint_every(7)
        .checkpoint_interval(None)
        .sync(SyncPolicy::Write)
}

/// Runs the whole history into a new log at `path`, signed by `signer`.
pub async fn run(path: &Path, signer: Signer) -> Arc<SignedLogSink> {
    let sink = Arc::new(SignedLogSink::open(path, sink_config(), signer).unwrap());
    let clock = Arc::new(ManualClock::new(start()));
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).unwrap())
        .audit_shared(sink.clone())
        .clock(clock.clone())
        .initiator(
            Initiator::agent("deploy-bot")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("claude-opus-4"),
        )
        .build()
        .unwrap();
    let pending = |s: Submission| match s {
        Submission::Pending(id) => id,
        Submission::Allowed(_) => panic!("expected a pending request"),
    };

    // 1. IAM change approved after 3 minutes and executed.
    let iam = ActionRequest::new("iam.role.grant", "iam://prod/roles/admin")
        .params(json!({"user": "bob", "role": "admin"}))
        .context(RequestContext::environment("production"))
        .justification("INC-4211: on-call needs admin to rotate certificates");
    let id = pending(gate.submit(&iam).await.unwrap());
    clock.advance(TimeDelta::minutes(3));
    gate.decide(id, Review::approve(sre("sam@example.com")).via("slack"))
        .await
        .unwrap();
    let grant = gate.wait(id).await.unwrap();
    clock.advance(TimeDelta::seconds(20));
    gate.execute(grant, &iam, || async { Ok::<_, Boom>(()) })
        .await
        .unwrap();

    // 2. Export approved after 20 minutes; the action fails.
    let export =
        ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 50000}));
    let id = pending(gate.submit(&export).await.unwrap());
    clock.advance(TimeDelta::minutes(20));
    gate.decide(id, Review::approve(sre("alex@example.com")).via("teams"))
        .await
        .unwrap();
    let grant = gate.wait(id).await.unwrap();
    clock.advance(TimeDelta::seconds(5));
    let failed = gate
        .execute(grant, &export, || async {
            Err::<(), _>(Boom("warehouse timed out".into()))
        })
        .await;
    assert!(failed.is_err());

    // 3. Key rotation denied after 45 seconds.
    let rotate = ActionRequest::new("secrets.rotate", "kms://prod/payments-key");
    let id = pending(gate.submit(&rotate).await.unwrap());
    clock.advance(TimeDelta::seconds(45));
    gate.decide(
        id,
        Review::deny(sre("sam@example.com")).reason("not during the freeze"),
    )
    .await
    .unwrap();
    assert!(gate.wait(id).await.is_err());

    // 4. The human the agent acts for tries to approve it herself; then nobody decides.
    let migrate = ActionRequest::new("db.migrate", "pg://prod/orders");
    let id = pending(gate.submit(&migrate).await.unwrap());
    clock.advance(TimeDelta::minutes(1));
    assert!(
        gate.decide(id, Review::approve(sre("dana@example.com")))
            .await
            .is_err()
    );
    clock.advance(TimeDelta::hours(2));
    gate.sweep().await.unwrap();

    // 5. Refused by policy.
    let drop = ActionRequest::new("db.drop", "pg://prod/orders");
    assert!(gate.submit(&drop).await.is_err());

    // 6. Allowed by policy and run.
    let read = ActionRequest::new("config.read", "cfg://prod/app");
    gate.run(&read, || async { Ok::<_, Boom>(()) })
        .await
        .unwrap();

    // 7. Cancelled.
    let deploy = ActionRequest::new("deploy.run", "svc://prod/api");
    let id = pending(gate.submit(&deploy).await.unwrap());
    clock.advance(TimeDelta::minutes(2));
    gate.cancel(id, None, Some("superseded".into()))
        .await
        .unwrap();

    // 8. Hostile text everywhere an agent or a directory can put it; approved and run.
    let hostile = ActionRequest::new("deploy.run", format!("svc://prod/{HOSTILE}"))
        .params(json!({"note": HOSTILE}))
        .justification(HOSTILE);
    let id = pending(gate.submit(&hostile).await.unwrap());
    clock.advance(TimeDelta::minutes(7));
    let mut reviewer = sre("eve|=\\x@example.com");
    reviewer.display_name = Some(HOSTILE.into());
    gate.decide(id, Review::approve(reviewer).reason(HOSTILE))
        .await
        .unwrap();
    let grant = gate.wait(id).await.unwrap();
    gate.execute(grant, &hostile, || async { Ok::<_, Boom>(()) })
        .await
        .unwrap();

    sink
}
