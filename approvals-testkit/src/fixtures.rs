//! Ready-made records, gates and principals for store and gate tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::edit::{EditRecord, FieldChange};
use approvals_core::{
    ActionRequest, Delivery, Escalation, Execution, Gate, Initiator, Link, ManualClock, MemorySink,
    Preview, Principal, RequestContext, RequestId, RequestRecord, RequestState, Requirement,
    Resolution, ReviewRecord, Risk, StaticPolicy, Store, ThinVec, Verdict,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

/// The fixed start time of [`clock`] and the records made here: 2030-01-01T00:00:00Z.
pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default()
}

/// A manual clock stopped at [`epoch`].
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(epoch()))
}

/// `billing-agent` (model `gpt-5`) on behalf of `dana@example.com`: the initiator of
/// [`export_request`], and the one a gate running it must be configured with (an action cannot
/// choose its initiator).
pub fn billing_agent() -> Initiator {
    Initiator::agent("billing-agent")
        .on_behalf_of(Principal::human("dana@example.com"))
        .model("gpt-5")
}

/// A data export by `billing-agent` on behalf of `dana@example.com`, in `production`.
pub fn export_request() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000, "columns": ["email", "plan"], "format": "csv"}))
        .initiator(billing_agent())
        .environment("production")
        .justification("quarterly churn analysis")
}

/// A pending record for `request`, created at `created_at`, open for one hour.
pub fn pending_record(request: ActionRequest, created_at: DateTime<Utc>) -> RequestRecord {
    let requirement = Requirement::groups(["data-owners"]);
    RequestRecord {
        id: RequestId::new(),
        version: 1,
        digest: request.digest(),
        request,
        expires_at: created_at + TimeDelta::hours(1),
        requirement: Arc::new(requirement),
        policy_rule: Some("exports".into()),
        policy_version: "test-policy".into(),
        state: RequestState::Pending,
        created_at,
        escalate_at: None,
        escalated: false,
        reminded: 0,
        standing_uses: 0,
        plan_used: ThinVec::new(),
        reviews: ThinVec::new(),
        resolution: None,
        audit_pending: false,
        unaudited: approvals_core::Unaudited::default(),
        grant_expires_at: None,
        deliveries: ThinVec::new(),
        execution: None,
    }
}

/// A record with every optional field set, including non-ASCII text, nanosecond times and
/// nested JSON, so a round trip shows whether a store loses anything.
pub fn full_record() -> RequestRecord {
    let at = epoch() + TimeDelta::nanoseconds(123_456_789);
    let mut labels = BTreeMap::new();
    labels.insert("team".to_owned(), "billing".to_owned());
    labels.insert(
        "ünïcode".to_owned(),
        "✓ \"quoted\" \\ back\nslash".to_owned(),
    );
    let request = ActionRequest::new("secrets.rotate", "kms://prod/payments-key")
        .params(json!({
            "key": "payments",
            "nested": {"list": [1, 2.5, -3, true, null, "x"], "big": 18_446_744_073_709_551_615_u64},
            "emoji": "🔑",
        }))
        .summary("Rotate the payments key")
        .initiator(
            Initiator::agent("rotator")
                .on_behalf_of(Principal::human("dana@example.com").with_name("Dana"))
                .model("claude-opus-4")
                .session("run-42")
                .prompt_ref("turn-7"),
        )
        .context(RequestContext {
            environment: Some("production".into()),
            ticket: Some("CHG-1234".into()),
            commit: Some("abc123".into()),
            prompt_excerpt: Some("rotate the key now".into()),
            impact: Some("payments restart".into()),
            risk: Some(Risk::High),
            links: vec![Link {
                label: "runbook".into(),
                url: "https://example.com/runbook".into(),
            }],
            labels,
            preview: Some(Preview::rows(
                vec!["key".into(), "état".into()],
                vec![vec!["payments".into(), "✓ \"active\"\nsince 2029".into()]],
                Some(u64::MAX),
            )),
        })
        .justification("key age policy")
        .idempotency_key("rotate-payments-2030-01");
    let sam = Principal::human("sam@example.com")
        .with_name("Sam")
        .with_groups(["security", "sre"]);
    RequestRecord {
        id: RequestId::new(),
        version: 1,
        digest: request.digest(),
        request,
        requirement: Requirement::groups(["security"])
            .quorum(2)
            .reason_required(true)
            .timeout(Duration::from_secs(1800))
            .escalation(Escalation {
                after: Duration::from_secs(600),
                users: vec!["ciso@example.com".into()],
                groups: vec!["security-leads".into()],
            })
            .cooldown_after_denial(Duration::from_secs(3600))
            .reminders([50, 90])
            .editable(["/window"])
            .into(),
        policy_rule: Some("key-rotation".into()),
        policy_version: "sha256:policy".into(),
        state: RequestState::Approved,
        created_at: at,
        expires_at: at + TimeDelta::minutes(30),
        escalate_at: Some(at + TimeDelta::minutes(10)),
        escalated: true,
        reminded: 1,
        standing_uses: 0,
        plan_used: ThinVec::from(vec![2, 0]),
        reviews: vec![ReviewRecord {
            reviewer: sam.clone(),
            verdict: Verdict::Approve,
            reason: Some("looks right".into()),
            channel: "slack".into(),
            at: at + TimeDelta::seconds(5),
            edit: Some(Box::new(EditRecord {
                from: approvals_core::Digest([7; 32]),
                to: approvals_core::Digest([8; 32]),
                changes: vec![FieldChange {
                    field: "/window".into(),
                    before: serde_json::json!("now"),
                    after: serde_json::json!("22:00 UTC \u{1F510}"),
                }],
                decision: approvals_core::Decision::Allow { rule: None },
            })),
            step_up: None,
        }]
        .into(),
        resolution: Some(Box::new(Resolution {
            by: Some(sam),
            reason: Some("approved".into()),
            at: at + TimeDelta::seconds(6),
        })),
        // Set so the round trip covers it; no gate acts on this record.
        audit_pending: true,
        unaudited: approvals_core::Unaudited {
            approval: true,
            denial: false,
            edit: true,
        },
        grant_expires_at: Some(at + TimeDelta::minutes(40)),
        deliveries: vec![Delivery {
            channel: "slack".into(),
            reference: json!({"channel": "C123", "ts": "1700000000.000100"}),
        }]
        .into(),
        execution: Some(Box::new(Execution {
            started_at: at + TimeDelta::seconds(7),
            finished_at: Some(at + TimeDelta::seconds(8)),
            error: Some("partial failure: ☠".into()),
            credential: Some(approvals_core::store::CredentialState {
                lease: approvals_core::credential::CredentialLease {
                    id: "apr_0123456789abcdef0123456789abcdef".into(),
                    scope: "SELECT on public.invoices".into(),
                    expires_at: at + TimeDelta::minutes(40),
                },
                issued: true,
                revoked_at: Some(at + TimeDelta::seconds(9)),
            }),
        })),
    }
}

/// A reviewer allowed by [`gate`]'s policy (group `data-owners`).
pub fn reviewer(id: &str) -> Principal {
    Principal::human(id).with_groups(["data-owners"])
}

/// A gate on `store` that requires one approval from `data-owners` within one hour, with a
/// manual clock, an in-memory audit sink and a short poll interval.
pub fn gate(store: Arc<dyn Store>, clock: Arc<ManualClock>, audit: Arc<MemorySink>) -> Gate {
    gate_requiring(Requirement::groups(["data-owners"]), store, clock, audit)
}

/// [`gate`] with its policy requiring `requirement` instead.
pub fn gate_requiring(
    requirement: Requirement,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    audit: Arc<MemorySink>,
) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(requirement))
        .store_shared(store)
        .audit_shared(audit)
        .clock(clock)
        .initiator(billing_agent())
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap_or_else(|e| panic!("the test gate is fully configured: {e}"))
}
