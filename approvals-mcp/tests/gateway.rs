//! The gateway end to end, with real components only: the official MCP Python SDK as the
//! client (tests/python/client.py), the `approvals-mcp` binary in embedded mode, and the
//! unmodified `@modelcontextprotocol/server-filesystem` from npm as the upstream server.
//! Reviewers decide through the review server's HTTP API with a reviewer token; the audit
//! trail is read back from the SQLite store's audit log.
//!
//! Needs `python3 -m pip install -r .ci/requirements.txt` and `cd .ci/node && npm ci`. Without
//! them each test says so and is skipped, except in CI (`CI=true`), where it fails.

mod common;

use std::path::Path;
use std::time::Duration;

use approvals_core::{Digest, EventDetail, RequestState};
use common::{
    Fixture, assert_initiator, executed_ok, missing_prerequisite, names, request_of, tool_text,
};
use serde_json::{Value, json};

impl Fixture {
    /// The gateway in embedded mode: its own store, policy, reviewer tokens and review
    /// server, with a configured initiator.
    fn start(&self, steps: Value) -> common::Client {
        let args = [
            "--policy".to_owned(),
            self.policy.display().to_string(),
            "--tokens".to_owned(),
            self.tokens.display().to_string(),
            "--db".to_owned(),
            self.db.clone(),
            "--listen".to_owned(),
            format!("127.0.0.1:{}", self.port),
            "--agent".to_owned(),
            "claude-code".to_owned(),
            "--model".to_owned(),
            "claude-test".to_owned(),
            "--on-behalf-of".to_owned(),
            "dana@example.com".to_owned(),
        ];
        self.start_with(steps, &args, &[])
    }
}

fn assert_embedded_initiator(event: &approvals_core::AuditEvent) {
    assert_initiator(event, "claude-code", "claude-test", "dana@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_pass_and_refused_calls_name_the_rule() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let protected = fx.path("protected/keys.txt");
    let mut client = fx.start(json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
        {"op": "call", "tool": "write_file", "args": {"path": protected, "content": "x"}},
    ]));
    let init = client.next().await;
    assert_eq!(init["server"], "approvals-mcp");

    let tools = client.next().await;
    let tools: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"write_file") && tools.contains(&"list_directory"));

    let listed = client.next().await;
    let text = tool_text(&listed, false);
    assert!(text.contains("hello.txt"), "{text}");

    let refused = client.next().await;
    let text = tool_text(&refused, true);
    assert!(text.contains("protected-files"), "{text}");
    assert!(text.contains("read-only for agents"), "{text}");
    client.finish().await;
    assert!(!Path::new(&protected).exists(), "a refused write happened");

    let events = fx.audit().await;
    let list = request_of(&events, "mcp.fs.list_directory", &fx.path(""));
    assert_embedded_initiator(list);
    assert_eq!(
        names(&events, list.request_id),
        ["requested", "policy_decided", "grant_consumed", "executed"]
    );
    assert_eq!(executed_ok(&events, list.request_id), [true]);

    let write = request_of(&events, "mcp.fs.write_file", &protected);
    assert_embedded_initiator(write);
    assert_eq!(
        names(&events, write.request_id),
        ["requested", "policy_decided"]
    );
    let decided = events
        .iter()
        .find(|e| e.request_id == write.request_id && e.name() == "policy_decided")
        .expect("policy_decided");
    let EventDetail::PolicyDecided { decision, .. } = &decided.detail else {
        panic!("not a decision");
    };
    assert_eq!(decision.rule(), Some("protected-files"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_runs_once_and_changed_arguments_need_a_new_approval() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let notes = fx.path("notes.txt");
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "v1"}, "progress": true},
        {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "v2"}, "progress": true},
    ]));
    client.next().await; // initialize

    let first = fx.next_request("pending", &[]).await;
    assert_eq!(first.kind, "mcp.fs.write_file");
    assert_eq!(first.resource, notes);
    assert_eq!(first.params, json!({"path": notes, "content": "v1"}));
    let initiator = first.initiator.as_ref().expect("initiator");
    assert_eq!(initiator.principal.id, "claude-code");
    assert!(!Path::new(&notes).exists(), "written before approval");
    // Let at least one progress notification go out while it waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fx.api()
        .decide(first.id, true, Some("fine"), Some(first.digest))
        .await
        .expect("approve");

    let done = client.next().await;
    assert_eq!(done["is_error"], false, "{done}");
    assert_eq!(std::fs::read_to_string(&notes).expect("written"), "v1");
    let link = format!("console/requests/{}", first.id);
    assert!(
        done["logs"]
            .as_array()
            .is_some_and(|logs| logs.iter().any(|l| l["data"]["review"]
                .as_str()
                .is_some_and(|r| r.ends_with(&link)))),
        "no log message with the review link: {done}"
    );
    assert!(
        done["progress"].as_array().is_some_and(|p| !p.is_empty()),
        "no progress notification: {done}"
    );

    // The same tool and path with other content is another action: a new request, a new
    // digest, and the first approval does not cover it.
    let second = fx.next_request("pending", &[first.id]).await;
    assert_ne!(second.id, first.id);
    assert_ne!(second.digest, first.digest);
    assert_eq!(second.params["content"], "v2");
    if let Err(e) = fx
        .api()
        .decide(second.id, false, Some("v2 drops the changelog"), None)
        .await
    {
        // Seen once in CI: the gateway's review server was gone here. What the client got for
        // the second call says why the gateway ended.
        let said = client.next().await;
        panic!("deny: {e:?}; the client's answer to the second call: {said}");
    }
    let denied = client.next().await;
    let text = tool_text(&denied, true);
    assert!(text.contains("v2 drops the changelog"), "{text}");
    client.finish().await;
    assert_eq!(std::fs::read_to_string(&notes).expect("file"), "v1");

    assert_eq!(fx.state_of(first.id).await, RequestState::Executed);
    assert_eq!(fx.state_of(second.id).await, RequestState::Denied);
    let events = fx.audit().await;
    let trail = names(&events, first.id);
    for name in [
        "requested",
        "policy_decided",
        "dispatched",
        "reviewed",
        "approved",
    ] {
        assert!(trail.contains(&name), "{name} missing from {trail:?}");
    }
    assert_eq!(
        trail.iter().filter(|n| **n == "grant_consumed").count(),
        1,
        "{trail:?}"
    );
    assert_eq!(executed_ok(&events, first.id), [true]);
    assert!(events.iter().any(|e| e.request_id == first.id
        && matches!(&e.detail, EventDetail::Reviewed { reviewer, .. } if reviewer.id == "sam@example.com")));
    let trail = names(&events, second.id);
    assert!(trail.contains(&"denied"), "{trail:?}");
    assert!(
        !trail.contains(&"grant_consumed") && !trail.contains(&"executed"),
        "{trail:?}"
    );
    let digests: Vec<Digest> = events
        .iter()
        .filter(|e| e.request_id == second.id)
        .map(|e| e.digest)
        .collect();
    assert!(digests.iter().all(|d| *d == second.digest));
}

/// A waiting call's client is told, by a log message and in its progress, when the reviewers
/// were reminded and nobody has reviewed the request yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_told_when_nobody_has_reviewed_at_a_reminder() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let dir = fx.path("reports");
    let mut client = fx.start(json!([
        {"op": "call", "tool": "create_directory", "args": {"path": dir}, "progress": true},
    ]));
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    // The reminder is due at 5% of 20 s (the waiting gateway sends it); the fixture's gateway
    // looks at the request every second (--progress-every 1).
    tokio::time::sleep(Duration::from_secs(7)).await;
    if let Err(e) = fx
        .api()
        .decide(pending.id, false, Some("not now"), None)
        .await
    {
        // Seen twice in CI (here and in the approve-then-change test), never reproduced in
        // isolation or under load: the gateway was gone. What the client got for the call
        // says why it ended.
        let said = client.next().await;
        panic!("deny: {e:?}; the client's answer to the call: {said}");
    }
    let done = client.next().await;
    client.finish().await;
    let told = format!(
        "nobody has reviewed request {} yet; its reviewers were reminded (1)",
        pending.id
    );
    let logs: Vec<&Value> = done["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["data"]["message"] == told.as_str())
        .collect();
    assert_eq!(logs.len(), 1, "one log message per reminder: {done}");
    assert_eq!(logs[0]["data"]["unanswered_reminders"], 1);
    assert!(
        done["progress"].as_array().is_some_and(|p| p
            .iter()
            .any(|n| n["message"].as_str().is_some_and(|m| m.ends_with(&told)))),
        "the progress says so too: {done}"
    );
    assert!(!Path::new(&dir).exists(), "nothing was created");
}

/// After a denial under `cooldown_after_denial`, the same tool call is refused at once with
/// the reviewer's name and reason, nobody is asked again and nothing is stored; other
/// arguments are another action and are asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_call_after_a_denial_is_refused_at_once() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let (from, to, elsewhere) = (fx.path("a.txt"), fx.path("b.txt"), fx.path("c.txt"));
    std::fs::write(&from, "a").expect("file");
    let call = |to: &str| json!({"op": "call", "tool": "move_file", "args": {"source": from, "destination": to}});
    let mut client = fx.start(json!([call(&to), call(&to), call(&elsewhere)]));
    client.next().await; // initialize
    let first = fx.next_request("pending", &[]).await;
    fx.api()
        .decide(first.id, false, Some("keep a.txt where it is"), None)
        .await
        .expect("deny");
    let denied = client.next().await;
    assert!(tool_text(&denied, true).contains("keep a.txt where it is"));

    let again = client.next().await;
    let text = tool_text(&again, true);
    assert!(
        text.contains("Denied by a reviewer earlier")
            && text.contains("sam@example.com")
            && text.contains("keep a.txt where it is")
            && text.contains("Do not retry"),
        "{text}"
    );
    // The third call (another destination) is asked for; nothing was stored for the second.
    let other = fx.next_request("pending", &[first.id]).await;
    assert_eq!(other.params["destination"], elsewhere.as_str());
    fx.api()
        .decide(other.id, false, Some("no"), None)
        .await
        .expect("deny");
    client.next().await;
    client.finish().await;
    let events = fx.audit().await;
    let requested: Vec<_> = events.iter().filter(|e| e.name() == "requested").collect();
    assert_eq!(requested.len(), 3, "three calls asked");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.name() == "resubmission_refused")
            .count(),
        1
    );
    assert_eq!(std::fs::read_to_string(&from).expect("a.txt stays"), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_withdraws_the_request() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let draft = fx.path("draft.txt");
    // The SDK gives up after 3 seconds and sends notifications/cancelled for the call.
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": draft, "content": "d"}, "timeout": 3},
        {"op": "sleep", "seconds": 1},
        {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
    ]));
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    let gave_up = client.next().await;
    assert!(gave_up["exception"].is_string(), "{gave_up}");
    client.next().await; // sleep
    let listed = client.next().await;
    assert_eq!(
        listed["is_error"], false,
        "the gateway still serves: {listed}"
    );
    // Approving it now is refused: there is nothing left to approve.
    let late = fx
        .api()
        .decide(pending.id, true, Some("too late"), Some(pending.digest))
        .await;
    assert!(late.is_err(), "{late:?}");
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Cancelled);
    assert!(!Path::new(&draft).exists());
    let events = fx.audit().await;
    let cancelled = events
        .iter()
        .find(|e| e.request_id == pending.id && e.name() == "cancelled")
        .expect("a cancelled event");
    let text = serde_json::to_string(cancelled).expect("json");
    assert!(
        text.contains("the MCP client cancelled the tool call"),
        "{text}"
    );
    assert!(executed_ok(&events, pending.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_crash_fails_closed() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let report = fx.path("report.txt");
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": report, "content": "r"}},
        {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
    ]));
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;

    let pid = std::fs::read_to_string(&fx.pidfile).expect("the upstream's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let failed = client.next().await;
    let text = tool_text(&failed, true);
    assert!(text.contains("upstream MCP server stopped"), "{text}");
    let after = client.next().await;
    let text = tool_text(&after, true);
    assert!(text.contains("upstream MCP server stopped"), "{text}");
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Cancelled);
    assert!(!Path::new(&report).exists());
    let events = fx.audit().await;
    let cancelled = events
        .iter()
        .find(|e| e.request_id == pending.id && e.name() == "cancelled")
        .expect("a cancelled event");
    let text = serde_json::to_string(cancelled).expect("json");
    assert!(text.contains("upstream MCP server stopped"), "{text}");
    assert!(
        !events.iter().any(|e| e.name() == "executed"),
        "something was reported executed after the crash"
    );
}

/// A standing grant through the MCP door: a maintainer proposes one from the agent's first
/// write (`*.txt` in the served directory, two uses) and approves it; the agent's next two
/// matching writes run without asking, each audited as a use; the third is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_grant_lets_matching_calls_run_without_asking_until_its_uses_run_out() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let write = |name: &str| json!({"op": "call", "tool": "write_file", "args": {"path": fx.path(name), "content": name}});
    let mut client = fx.start(json!([
        write("a.txt"),
        write("b.txt"),
        write("c.txt"),
        write("d.txt"),
    ]));
    client.next().await; // initialize
    let first = fx.next_request("pending", &[]).await;
    let api = fx.api();
    let grant = api
        .propose_standing(&approvals_http::standing::ProposeBody {
            from_request: Some(first.id),
            kind: None,
            resource: Some(fx.path("*.txt")),
            initiator: None,
            duration: "30m".into(),
            uses: 2,
            justification: "notes for the release".into(),
            environment: None,
        })
        .await
        .expect("proposed")
        .id;
    api.decide(grant, true, None, None)
        .await
        .expect("the standing grant is approved");
    api.decide(first.id, true, None, None)
        .await
        .expect("the first write is approved");
    for name in ["a.txt", "b.txt", "c.txt"] {
        let done = client.next().await;
        let text = tool_text(&done, false);
        assert!(text.contains("Successfully wrote"), "{name}: {text}");
    }
    // The grant's two uses are taken: the fourth write is asked for.
    let fourth = fx.next_request("pending", &[first.id, grant]).await;
    assert_eq!(fourth.resource, fx.path("d.txt"));
    api.decide(fourth.id, false, Some("enough"), None)
        .await
        .expect("deny");
    let refused = client.next().await;
    assert!(tool_text(&refused, true).contains("enough"));
    client.finish().await;
    assert!(!Path::new(&fx.path("d.txt")).exists());

    let events = fx.audit().await;
    let uses: Vec<&approvals_core::AuditEvent> = events
        .iter()
        .filter(|e| e.name() == "standing_grant_used")
        .collect();
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|e| e.request_id == grant));
    for name in ["b.txt", "c.txt"] {
        let action = request_of(&events, "mcp.fs.write_file", &fx.path(name));
        assert_embedded_initiator(action);
        assert_eq!(
            names(&events, action.request_id),
            [
                "requested",
                "policy_decided",
                "approved_by_standing_grant",
                "grant_issued",
                "grant_consumed",
                "executed"
            ],
            "{name}"
        );
        assert_eq!(executed_ok(&events, action.request_id), [true]);
    }
}

/// Edit on approve through the MCP door: a maintainer approves the agent's write with its
/// content changed (the rule lets reviewers edit `content`); the upstream server is called
/// with the edited arguments only, the model is told, and the trail holds the edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewers_edit_is_the_call_that_runs_and_the_model_is_told() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let notes = fx.path("notes.txt");
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "draft"}},
    ]));
    client.next().await; // initialize
    let asked = fx.next_request("pending", &[]).await;
    assert_eq!(asked.requirement.editable, ["/content"]);
    // The path is not editable: an edit of it is refused and changes nothing.
    let refused = fx
        .api()
        .approve_edited(
            asked.id,
            asked.digest,
            json!({"path": fx.path("other.txt"), "content": "draft"}),
            None,
        )
        .await
        .expect_err("the path may not change");
    assert!(
        refused.to_string().contains("may not be changed"),
        "{refused}"
    );
    fx.api()
        .approve_edited(
            asked.id,
            asked.digest,
            json!({"path": notes, "content": "reviewed"}),
            Some("keep it short"),
        )
        .await
        .expect("approved as edited");
    let done = client.next().await;
    let text = tool_text(&done, false);
    assert!(text.contains("Successfully wrote"), "{text}");
    assert!(
        text.contains("a reviewer changed this call's arguments") && text.contains("reviewed"),
        "the model is told: {text}"
    );
    client.finish().await;
    assert_eq!(
        std::fs::read_to_string(&notes).expect("written"),
        "reviewed"
    );

    let events = fx.audit().await;
    assert_eq!(
        names(&events, asked.id),
        [
            "requested",
            "policy_decided",
            "dispatched",
            "review_rejected",
            "edited",
            "reviewed",
            "approved",
            "grant_issued",
            "grant_consumed",
            "executed"
        ]
    );
    let executed = events
        .iter()
        .find(|e| e.request_id == asked.id && e.name() == "executed")
        .expect("executed");
    assert_ne!(executed.digest, asked.digest, "the edited action ran");
}
