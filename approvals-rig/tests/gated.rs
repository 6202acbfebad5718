//! A gated rig tool: approved calls run once with the arguments reviewers saw; refused calls
//! never run and the model is told why; failures and panics are audited as failed.

mod common;

use approvals_core::{EventDetail, GuardError, RequestState, Review};
use approvals_rig::{GateTool, Gated, GatedError, refusal_message};
use common::{Behaviour, ExportArgs, ExportRows, data_owner, resource};
use rig_core::tool::{Tool, ToolContext, ToolErrorKind};

fn args(database: &str, table: &str, limit: u32) -> ExportArgs {
    ExportArgs {
        database: database.into(),
        table: table.into(),
        limit,
    }
}

fn gated(tool: &ExportRows, gate: &approvals_core::Gate) -> Gated<ExportRows> {
    tool.clone().gated(gate.clone()).resource_from(resource)
}

/// Calls the gated tool as rig's dispatcher does.
async fn call(
    tool: &Gated<ExportRows>,
    args: ExportArgs,
) -> Result<String, GatedError<common::ExportError>> {
    let mut context = ToolContext::default();
    Tool::call(tool, &mut context, args).await
}

#[tokio::test]
async fn an_approved_call_runs_once_with_the_arguments_reviewers_saw() {
    let (gate, mut inbox, sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);
    let asked = args("prod", "orders", 10);

    let review = async {
        let record = inbox
            .recv()
            .await
            .expect("the request reaches the reviewer");
        // What the reviewer sees: the tool's serialized arguments, the resource from them,
        // and the gate's own initiator.
        assert_eq!(record.request.kind, "tool.export_rows");
        assert_eq!(record.request.resource, "db://prod/orders");
        assert_eq!(
            *record.request.params,
            serde_json::json!({ "database": "prod", "table": "orders", "limit": 10 })
        );
        let initiator = record.request.initiator.as_ref().expect("an initiator");
        assert_eq!(initiator.principal.id, "report-bot");
        assert_eq!(
            initiator.on_behalf_of.as_ref().map(|h| h.id.as_str()),
            Some("sam@example.com")
        );
        assert!(tool.calls().is_empty(), "nothing runs before the approval");
        gate.decide(record.id, Review::approve(data_owner()))
            .await
            .expect("the data owner may approve");
        record
    };
    let (result, record) = tokio::join!(call(&gated, asked.clone()), review);

    assert_eq!(result.expect("approved"), "exported 10 rows");
    assert_eq!(
        tool.calls(),
        vec![asked],
        "ran once, with the approved arguments"
    );
    let stored = gate.get(record.id).await.expect("store").expect("record");
    assert_eq!(stored.state, RequestState::Executed);
    let executed: Vec<_> = sink
        .for_request(record.id)
        .into_iter()
        .filter_map(|e| match e.detail {
            EventDetail::Executed { ok, .. } => Some(ok),
            _ => None,
        })
        .collect();
    assert_eq!(executed, vec![true]);
}

#[tokio::test]
async fn a_call_the_policy_allows_runs_without_a_reviewer() {
    let (gate, mut inbox, _sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);

    let result = call(&gated, args("staging", "orders", 5)).await;

    assert_eq!(result.expect("allowed"), "exported 5 rows");
    assert_eq!(tool.calls().len(), 1);
    assert!(inbox.try_recv().is_err(), "no reviewer was asked");
}

#[tokio::test]
async fn a_reviewers_denial_reaches_the_model_and_the_tool_does_not_run() {
    let (gate, mut inbox, _sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);

    let review = async {
        let record = inbox
            .recv()
            .await
            .expect("the request reaches the reviewer");
        gate.decide(
            record.id,
            Review::deny(data_owner()).reason("only last week's orders, and at most 100 rows"),
        )
        .await
        .expect("the data owner may deny");
    };
    let (result, ()) = tokio::join!(call(&gated, args("prod", "orders", 50_000)), review);

    let error = result.expect_err("denied");
    assert!(matches!(
        error,
        GatedError::Refused(GuardError::Denied { .. })
    ));
    assert!(tool.calls().is_empty(), "the tool did not run");
    let seen = gated.map_error(error);
    assert_eq!(
        seen.model_feedback(),
        Some(
            "Not run: reviewer dana@example.com denied this call: only last week's orders, and at most 100 rows."
        )
    );
    assert_eq!(seen.kind(), ToolErrorKind::PermissionDenied);
    assert_eq!(seen.code(), Some("approval.denied"));
    assert!(
        seen.downcast_ref::<GuardError>().is_some(),
        "the host keeps the typed error"
    );
}

#[tokio::test]
async fn a_policy_refusal_returns_the_rule_and_reason_without_asking_anyone() {
    let (gate, mut inbox, sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);

    let error = call(&gated, args("prod", "secrets", 1))
        .await
        .expect_err("refused by policy");

    assert!(tool.calls().is_empty(), "the tool did not run");
    assert!(inbox.try_recv().is_err(), "no reviewer was asked");
    let GatedError::Refused(refusal) = &error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_eq!(
        refusal_message(refusal),
        "Not run: the approval policy refuses this call (rule \"no-secrets\"): The secrets table is never exported; ask the security team for a report instead."
    );
    assert_eq!(
        gated.map_error(error).code(),
        Some("approval.policy_denied")
    );
    assert!(
        sink.names().contains(&"policy_decided"),
        "the refusal is audited: {:?}",
        sink.names()
    );
}

#[tokio::test]
async fn changed_arguments_need_their_own_approval() {
    let (gate, mut inbox, _sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);
    let approved = args("prod", "orders", 10);
    let changed = args("prod", "orders", 10_000);

    // The first call is approved and runs.
    let review = async {
        let record = inbox.recv().await.expect("first request");
        gate.decide(record.id, Review::approve(data_owner()))
            .await
            .expect("approve");
        record
    };
    let (first, first_request) = tokio::join!(call(&gated, approved.clone()), review);
    first.expect("approved");

    // The same tool with other arguments is a new request with another digest: the earlier
    // approval does not cover it. Denied, it does not run.
    let review = async {
        let record = inbox.recv().await.expect("a second request");
        assert_ne!(record.id, first_request.id);
        assert_ne!(record.digest, first_request.digest);
        assert_eq!(record.request.params["limit"], 10_000);
        gate.decide(
            record.id,
            Review::deny(data_owner()).reason("too many rows"),
        )
        .await
        .expect("deny");
    };
    let (second, ()) = tokio::join!(call(&gated, changed), review);
    assert!(matches!(
        second,
        Err(GatedError::Refused(GuardError::Denied { .. }))
    ));

    // Even the same arguments again need a new approval: a grant is used once.
    let review = async {
        let record = inbox.recv().await.expect("a third request");
        assert_eq!(
            record.digest, first_request.digest,
            "same action, same digest"
        );
        assert_ne!(record.id, first_request.id, "but a new request");
        gate.decide(
            record.id,
            Review::deny(data_owner()).reason("once is enough"),
        )
        .await
        .expect("deny");
    };
    let (third, ()) = tokio::join!(call(&gated, approved.clone()), review);
    assert!(third.is_err());

    assert_eq!(
        tool.calls(),
        vec![approved],
        "only the approved call ran, once"
    );
}

#[tokio::test]
async fn a_tool_error_after_approval_is_recorded_as_failed() {
    let (gate, mut inbox, sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Fail);
    let gated = gated(&tool, &gate);

    let review = async {
        let record = inbox.recv().await.expect("request");
        gate.decide(record.id, Review::approve(data_owner()))
            .await
            .expect("approve");
        record
    };
    let (result, record) = tokio::join!(call(&gated, args("prod", "orders", 10)), review);

    let error = result.expect_err("the tool failed");
    assert!(matches!(error, GatedError::Tool(_)));
    assert_eq!(tool.calls().len(), 1);
    let stored = gate.get(record.id).await.expect("store").expect("record");
    assert_eq!(stored.state, RequestState::Failed);
    let errors: Vec<_> = sink
        .for_request(record.id)
        .into_iter()
        .filter_map(|e| match e.detail {
            EventDetail::Executed { ok, error, .. } => Some((ok, error)),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec![(
            false,
            Some("the warehouse refused the export: disk full".to_owned())
        )]
    );
    // The model sees the tool's own presentation of its error (rig's default hides the
    // source text), not an approval refusal.
    let seen = gated.map_error(error);
    assert_ne!(seen.kind(), ToolErrorKind::PermissionDenied);
}

#[tokio::test]
async fn a_tool_panic_after_approval_is_recorded_as_failed_and_does_not_unwind() {
    let (gate, mut inbox, sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Panic);
    let gated = gated(&tool, &gate);

    let review = async {
        let record = inbox.recv().await.expect("request");
        gate.decide(record.id, Review::approve(data_owner()))
            .await
            .expect("approve");
        record
    };
    let (result, record) = tokio::join!(call(&gated, args("prod", "orders", 10)), review);

    let error = result.expect_err("the tool panicked");
    let GatedError::Panicked(message) = &error else {
        panic!("expected a panic, got {error:?}");
    };
    assert_eq!(message, "index out of bounds in the exporter");
    let stored = gate.get(record.id).await.expect("store").expect("record");
    assert_eq!(stored.state, RequestState::Failed);
    assert!(sink.for_request(record.id).iter().any(|e| matches!(
        &e.detail,
        EventDetail::Executed { ok: false, error: Some(text), .. } if text.contains("panicked")
    )));
    assert_eq!(
        gated.map_error(error).model_feedback(),
        Some("The tool failed unexpectedly after it was approved.")
    );
}

#[test]
fn the_gated_tool_looks_like_the_tool_to_the_agent() {
    let (gate, _inbox, _sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);
    assert_eq!(<Gated<ExportRows> as Tool>::NAME, "export_rows");
    assert_eq!(Tool::description(&gated), Tool::description(&tool));
    assert_eq!(Tool::parameters(&gated), Tool::parameters(&tool));
    let action = gated.action(&args("prod", "orders", 1)).expect("action");
    assert_eq!(action.kind, "tool.export_rows");
    assert!(
        action.initiator.is_none(),
        "the gate sets the initiator, not the call"
    );
    let renamed = Gated::new(tool, gate)
        .kind("data.export")
        .resource("db://warehouse");
    let action = renamed.action(&args("prod", "orders", 1)).expect("action");
    assert_eq!(
        (action.kind.as_str(), action.resource.as_str()),
        ("data.export", "db://warehouse")
    );
}

/// A reviewer lowers the limit before approving (the rule lets reviewers edit `limit`): the
/// tool runs once, with the edited arguments only.
#[tokio::test]
async fn a_reviewers_edit_is_the_call_the_tool_runs() {
    let (gate, mut inbox, _sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);
    let review = async {
        let record = inbox
            .recv()
            .await
            .expect("the request reaches the reviewer");
        gate.decide(
            record.id,
            Review::approve(data_owner())
                .for_digest(record.digest)
                .edit(serde_json::json!({ "database": "prod", "table": "orders", "limit": 3 })),
        )
        .await
        .expect("approved as edited");
        record
    };
    let (result, record) = tokio::join!(call(&gated, args("prod", "orders", 500)), review);
    assert_eq!(result.expect("approved"), "exported 3 rows");
    assert_eq!(
        tool.calls(),
        vec![args("prod", "orders", 3)],
        "ran once, as edited"
    );
    let stored = gate.get(record.id).await.expect("store").expect("record");
    assert_eq!(stored.state, RequestState::Executed);
    assert_ne!(stored.digest, record.digest);
}

/// The tool's resource is read from its arguments: an edit that would run it on another table
/// than the one approved (the policy and the reviewers judged `db://prod/orders`) runs
/// nothing, and the grant's use is recorded as failed.
#[tokio::test]
async fn an_edit_that_would_change_the_resource_runs_nothing() {
    let (gate, mut inbox, _sink) = common::gate();
    let tool = ExportRows::new(Behaviour::Succeed);
    let gated = gated(&tool, &gate);
    let review = async {
        let record = inbox
            .recv()
            .await
            .expect("the request reaches the reviewer");
        gate.decide(
            record.id,
            Review::approve(data_owner())
                .for_digest(record.digest)
                .edit(serde_json::json!({ "database": "prod", "table": "customers", "limit": 3 })),
        )
        .await
        .expect("the edit itself is within the rule");
        record
    };
    let (result, record) = tokio::join!(call(&gated, args("prod", "orders", 5)), review);
    let refused = result.expect_err("nothing runs");
    assert!(
        matches!(&refused, GatedError::EditedArguments(why) if why.contains("db://prod/customers")),
        "{refused:?}"
    );
    assert!(tool.calls().is_empty(), "the tool never ran");
    let stored = gate.get(record.id).await.expect("store").expect("record");
    assert_eq!(stored.state, RequestState::Failed);
}
