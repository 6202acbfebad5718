//! Hostile text for the tests of every review surface (terminal, HTML console, Slack, Teams,
//! CEF): records whose every untrusted field holds a given text, and the check that a
//! surface's output holds none of the characters [`approvals_core::text::neutralize`] replaces
//! and shows the visible marker of the one planted.
//!
//! The characters themselves are one list, [`CHARS`] (every neutralised class) and
//! [`STRINGS`] (an outside attack suite's exact examples), kept next to the rule in
//! `approvals_core::text`.
//!
//! ```
//! use approvals_core::RequestState;
//! use approvals_testkit::hostile;
//!
//! for &(c, what) in hostile::CHARS {
//!     let record = hostile::record(&format!("x{c}y"), RequestState::Pending);
//!     let shown = approvals_core::console::terminal_safe(&record.request.resource, 200);
//!     hostile::assert_shown(&shown, c, what);
//! }
//! ```

use std::sync::Arc;

use approvals_core::text::{is_neutralized, marker};
use approvals_core::{
    ActionRequest, Link, Preview, Principal, RequestRecord, RequestState, Resolution, ReviewRecord,
    ThinVec, Verdict,
};
use serde_json::{Value, json};

pub use approvals_core::text::hostile::{CHARS, STRINGS};

use crate::fixtures;

/// [`fixtures::full_record`] in `state`, with `text` in every field an agent, a reviewer or a
/// channel fills: kind, resource, a parameter's key and value, summary, justification, the
/// initiator's id, name, model, session and prompt reference, the human it acts for, every
/// context field (environment, ticket, commit, prompt excerpt, impact, a link's label and
/// address, a label, the preview: a diff's file names and lines while pending, a rows
/// preview's column and cell when denied, a dry run's output otherwise), the policy rule, each reviewer's name and reason, the resolution's
/// reason and the execution error. Values are short enough that no surface cuts them.
pub fn record(text: &str, state: RequestState) -> RequestRecord {
    let mut r = fixtures::full_record();
    r.state = state;
    r.policy_rule = Some(format!("rule {text}").into());
    let req = &mut r.request;
    req.kind = format!("data.export{text}").into();
    req.resource = format!("db://prod/{text}").into();
    req.params = Arc::new(json!({ "note": text, text: "key", "nested": [text] }));
    req.summary = Some(format!("summary {text}").into());
    req.justification = Some(format!("why {text}").into());
    if let Some(init) = req.initiator.as_mut() {
        let init = Arc::make_mut(init);
        init.principal.id = format!("agent-{text}");
        init.principal.display_name = Some(format!("Agent {text}"));
        init.on_behalf_of = Some(
            Principal::human(format!("dana{text}@example.com")).with_name(format!("Dana {text}")),
        );
        init.model = Some(format!("model {text}"));
        init.session = Some(format!("session {text}"));
        init.prompt_ref = Some(format!("prompt {text}"));
    }
    let ctx = Arc::make_mut(&mut req.context);
    ctx.environment = Some(format!("prod {text}"));
    ctx.ticket = Some(format!("CHG-1 {text}"));
    ctx.commit = Some(format!("abc {text}"));
    ctx.prompt_excerpt = Some(format!("excerpt {text}"));
    ctx.impact = Some(format!("impact {text}"));
    ctx.links = vec![Link {
        label: format!("runbook {text}"),
        url: format!("https://example.com/{text}"),
    }];
    ctx.labels
        .insert(format!("team {text}"), format!("billing {text}"));
    ctx.preview = Some(match state {
        RequestState::Pending => Preview::diff(format!(
            "--- a/{text}\n+++ b/{text}\n@@ -1 +1 @@\n-old {text}\n+new {text}\n"
        )),
        RequestState::Denied => Preview::rows(
            vec![format!("col {text}")],
            vec![vec![format!("cell {text}")]],
            Some(7),
        ),
        _ => Preview::dry_run(format!("plan {text}\n1 to change")),
    });
    let reviewer = Principal::human("sam@example.com").with_name(format!("Sam {text}"));
    let verdict = if state == RequestState::Denied {
        Verdict::Deny
    } else {
        Verdict::Approve
    };
    r.reviews = vec![ReviewRecord {
        reviewer: reviewer.clone(),
        verdict,
        reason: Some(format!("reason {text}")),
        channel: "slack".into(),
        at: fixtures::epoch(),
        edit: None,
        step_up: None,
    }]
    .into();
    r.resolution = Some(Box::new(Resolution {
        by: Some(reviewer),
        reason: Some(format!("resolution {text}")),
        at: fixtures::epoch(),
    }));
    if let Some(execution) = r.execution.as_mut() {
        execution.error = Some(format!("error {text}"));
    }
    r
}

/// Every string in `value` (keys included), one a line: what a person sees of a JSON payload
/// (Slack blocks, an Adaptive Card), with JSON's own escapes undone.
pub fn json_strings(value: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    out.push_str(k);
                    out.push('\n');
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(value, &mut out);
    out
}

/// Panics unless `output` (what a surface showed) holds no character the one rule neutralises
/// and shows the visible marker of `planted`. `what` names the case in the message.
pub fn assert_shown(output: &str, planted: char, what: &str) {
    assert_clean(output, what);
    let shown = marker(planted);
    assert!(
        output.contains(&shown),
        "{what}: the marker {shown} is not shown in:\n{output}"
    );
}

/// Panics if `output` holds any character the one rule neutralises.
pub fn assert_clean(output: &str, what: &str) {
    if let Some(pos) = output.chars().position(is_neutralized) {
        let c = output.chars().nth(pos).unwrap_or_default();
        let around: String = output
            .chars()
            .skip(pos.saturating_sub(40))
            .take(80)
            .collect();
        panic!(
            "{what}: U+{:04X} survived at character {pos}: {around:?}",
            c as u32
        );
    }
}

/// What every review surface must render within its platform's limits, for the checks against
/// the platforms' own libraries: [`fixtures::full_record`] in every state, one pending and
/// escalated after a reminder, [`record`] with each of [`CHARS`] (pending and denied) and
/// [`STRINGS`], long values in every field with a long diff, and a long dry run, the largest
/// rows preview admission accepts the shape of, an empty diff, standing grant proposals, plans,
/// and requests of rules with `step_up`.
pub fn rendering_cases() -> Vec<RequestRecord> {
    let mut out = Vec::new();
    for state in approvals_core::lifecycle::ALL_STATES {
        let mut r = fixtures::full_record();
        r.state = state;
        out.push(r);
    }
    let mut reminded = fixtures::full_record();
    reminded.state = RequestState::Pending;
    reminded.escalated = true;
    reminded.reminded = 1;
    out.push(reminded);
    for &(c, _) in CHARS {
        out.push(record(&format!("x{c}y"), RequestState::Pending));
        out.push(record(&format!("x{c}y"), RequestState::Denied));
    }
    for s in STRINGS {
        out.push(record(s, RequestState::Pending));
    }
    let long = "😀<&>*_~`{{DATE(2026-01-01T00:00:00Z)}}".repeat(300);
    let mut r = record(&long, RequestState::Pending);
    Arc::make_mut(&mut r.request.context).preview = Some(Preview::diff(
        (0..500)
            .map(|i| format!("+{i} {long}\n"))
            .collect::<String>(),
    ));
    out.push(r);
    for preview in [
        Preview::dry_run("x".repeat(100_000)),
        Preview::rows(
            (0..64).map(|i| format!("column {i}")).collect(),
            (0..1000)
                .map(|r| (0..64).map(|c| format!("{r}:{c}")).collect())
                .collect(),
            Some(u64::MAX),
        ),
        Preview::diff(""),
    ] {
        let mut r = fixtures::full_record();
        r.state = RequestState::Pending;
        Arc::make_mut(&mut r.request.context).preview = Some(preview);
        out.push(r);
    }
    // Standing grant proposals, pending and in force, with hostile terms and proposer.
    for (text, state) in [
        ("x\u{202E}y<b>*</b>", RequestState::Pending),
        ("{{DATE(2026-01-01T00:00:00Z)}}*_~`", RequestState::Approved),
    ] {
        let terms = approvals_core::standing::StandingTerms {
            kind: format!("deploy.{text}"),
            resource: format!("svc://{text}/*"),
            duration: std::time::Duration::from_secs(7200),
            uses: 20,
            proposed_by: approvals_core::Principal::human("kim@example.com").with_name(text),
        };
        let mut r = fixtures::full_record();
        let initiator = r
            .request
            .initiator
            .clone()
            .unwrap_or_else(|| Arc::new(approvals_core::Initiator::agent("billing-agent")));
        r.request = terms.to_request(initiator, format!("incident {text}"));
        r.digest = r.request.digest();
        r.state = state;
        r.standing_uses = 3;
        out.push(r);
    }
    // Plans: two items with hostile kinds, resources and parameters (every item shown), and
    // the largest plan, with long items (most left out and counted).
    for (text, n, state) in [
        ("x\u{202E}y<b>*</b>", 2, RequestState::Pending),
        (
            "{{DATE(2026-01-01T00:00:00Z)}}*_~`",
            approvals_core::plan::MAX_PLAN_ITEMS,
            RequestState::Approved,
        ),
    ] {
        let long = format!("{text}😀").repeat(if n > 2 { 50 } else { 1 });
        let items = (0..n)
            .map(|i| {
                let action =
                    ActionRequest::new(format!("deploy.{text}"), format!("svc://{long}/{i}"))
                        .params(serde_json::json!({"why": long, "n": i}));
                approvals_core::plan::PlanItem {
                    digest: action.digest(),
                    action,
                }
            })
            .collect();
        let mut r = fixtures::full_record();
        let initiator = r
            .request
            .initiator
            .clone()
            .unwrap_or_else(|| Arc::new(approvals_core::Initiator::agent("billing-agent")));
        r.request = approvals_core::plan::PlanTerms { items }
            .to_request(initiator, Some(format!("roll out {text}")));
        r.digest = r.request.digest();
        r.state = state;
        r.plan_used = ThinVec::from(vec![1, 0]);
        out.push(r);
    }
    // Rules with `step_up` (no approval in a chat, a link to the console instead): pending
    // with hostile text, pending with a reason required, and approved.
    for (text, state, reason_required) in [
        ("x\u{202E}y<b>*</b>", RequestState::Pending, false),
        (
            "{{DATE(2026-01-01T00:00:00Z)}}*_~`",
            RequestState::Pending,
            true,
        ),
        ("<!channel>", RequestState::Approved, false),
    ] {
        let mut r = record(text, state);
        let requirement = Arc::make_mut(&mut r.requirement);
        requirement.step_up = Some(approvals_core::StepUp::Passkey);
        requirement.reason_required = reason_required;
        out.push(r);
    }
    out
}
