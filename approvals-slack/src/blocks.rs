//! Block Kit rendering: the request message (pending and every resolution) and the reason
//! modal. Untrusted values are made inert (see [`crate::text`]) and every Block Kit limit is
//! respected, with truncation that points at the digest the approval is bound to.

use std::fmt::Write as _;

use approvals_core::{Digest, RequestId, RequestRecord, RequestState, Verdict};
use serde_json::{Value, json};

use crate::text::{is_web_url, mrkdwn, one_line, printable, truncate};

/// `action_id` of the Approve button.
pub const ACTION_APPROVE: &str = "approvals.approve";
/// `action_id` of the Deny button.
pub const ACTION_DENY: &str = "approvals.deny";
/// `callback_id` of the reason modal.
pub const REASON_CALLBACK_ID: &str = "approvals.reason";
/// `block_id` of the reason input in the modal.
pub const REASON_BLOCK_ID: &str = "approvals.reason";
/// `action_id` of the reason input in the modal.
pub const REASON_ACTION_ID: &str = "reason";

/// Most blocks Slack accepts in one message.
pub const MAX_BLOCKS: usize = 50;
/// Longest `header` block text.
pub const MAX_HEADER_CHARS: usize = 150;
/// Longest `section` text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Longest section field text.
pub const MAX_FIELD_CHARS: usize = 2000;
/// Longest button `value`.
pub const MAX_BUTTON_VALUE_CHARS: usize = 2000;
/// Longest reason a reviewer may type.
pub const MAX_REASON_CHARS: usize = 2000;
/// Longest shown parameter text (pretty JSON) before truncation.
pub const MAX_PARAMS_CHARS: usize = 2500;
/// Longest shown one-line value (kind, resource, names) before truncation.
pub const MAX_VALUE_CHARS: usize = 300;
/// Longest shown free text (justification, impact, prompt excerpt) before truncation.
pub const MAX_TEXT_CHARS: usize = 1500;
const MAX_LINKS: usize = 10;

/// What a Slack message for a request consists of: the notification `text` fallback and the
/// Block Kit `blocks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Fallback text for notifications (escaped `mrkdwn`).
    pub text: String,
    /// The blocks.
    pub blocks: Vec<Value>,
}

/// The request id and digest carried by the Approve and Deny buttons, so a click is bound to
/// exactly what the reviewer was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonValue {
    /// The request.
    pub request_id: RequestId,
    /// The digest shown.
    pub digest: Digest,
}

impl ButtonValue {
    /// `"<request id> <digest>"`.
    pub fn encode(&self) -> String {
        format!("{} {}", self.request_id, self.digest)
    }

    /// Parses [`encode`](Self::encode)'s output; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() > MAX_BUTTON_VALUE_CHARS {
            return None;
        }
        let (id, digest) = value.split_once(' ')?;
        Some(ButtonValue {
            request_id: RequestId::parse(id).ok()?,
            digest: Digest::parse(digest).ok()?,
        })
    }
}

fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": truncate(&one_line(text), max, ""), "emoji": false})
}

fn md(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

/// A one-line untrusted value, escaped and bounded, with a digest note when cut.
fn value_md(value: &str, digest: &Digest) -> String {
    truncate(
        &mrkdwn(value),
        MAX_VALUE_CHARS,
        &format!(" (truncated; see digest {})", digest.short()),
    )
}

fn rich_text(elements: Vec<Value>) -> Value {
    json!({"type": "rich_text", "elements": elements})
}

fn rt_text(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn rt_bold(text: &str) -> Value {
    json!({"type": "text", "text": text, "style": {"bold": true}})
}

/// A labelled block of untrusted free text, rendered literally.
fn labelled_text(label: &str, value: &str, digest: &Digest, preformatted: bool) -> Value {
    let shown = truncate(
        &printable(value),
        if preformatted {
            MAX_PARAMS_CHARS
        } else {
            MAX_TEXT_CHARS
        },
        &format!(" (truncated; the approval covers the full text, digest {digest})"),
    );
    let body = if preformatted {
        json!({"type": "rich_text_preformatted", "elements": [rt_text(&shown)]})
    } else {
        json!({"type": "rich_text_quote", "elements": [rt_text(&shown)]})
    };
    rich_text(vec![
        json!({"type": "rich_text_section", "elements": [rt_bold(label)]}),
        body,
    ])
}

fn slack_date(at: chrono::DateTime<chrono::Utc>) -> String {
    // <!date^unix^format|fallback>: each reader sees their own time zone.
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

fn names(record: &RequestRecord) -> String {
    let approvers: Vec<String> = record
        .approvers()
        .iter()
        .map(|p| mrkdwn(&truncate(p.label(), 80, "")))
        .collect();
    approvers.join(", ")
}

fn title(record: &RequestRecord) -> (&'static str, &'static str) {
    match record.state {
        RequestState::Pending if record.escalated => ("⏫", "Escalated, approval needed"),
        RequestState::Pending => ("🔐", "Approval needed"),
        RequestState::Approved => ("✅", "Approved"),
        RequestState::Denied => ("⛔", "Denied"),
        RequestState::Expired => ("⌛", "Expired"),
        RequestState::Cancelled => ("🚫", "Cancelled"),
        RequestState::Executing => ("▶️", "Running"),
        RequestState::Executed => ("✅", "Done"),
        RequestState::Failed => ("❌", "Failed"),
        RequestState::Lapsed => ("⌛", "Lapsed"),
    }
}

/// The status line for a request: who approved or denied it and why, or how far the quorum
/// is. Trusted words with escaped names and reasons.
fn status_line(record: &RequestRecord) -> String {
    let quorum = record.requirement.quorum;
    let count = record.approvers().len();
    let by = names(record);
    let resolution_by = record
        .resolution
        .as_ref()
        .and_then(|r| r.by.as_ref())
        .map(|p| mrkdwn(&truncate(p.label(), 80, "")));
    let reason = |r: Option<&str>| {
        r.filter(|r| !r.trim().is_empty())
            .map(|r| format!(": “{}”", truncate(&mrkdwn(r), 500, "")))
            .unwrap_or_default()
    };
    match record.state {
        RequestState::Pending if count == 0 => {
            format!("*Waiting for approval* (0 of {quorum}).")
        }
        RequestState::Pending => format!(
            "*{count} of {quorum} approvals* so far: {by}. Waiting for {} more.",
            quorum as usize - count.min(quorum as usize)
        ),
        RequestState::Approved => {
            let until = record
                .grant_expires_at
                .map(|t| format!(" The grant may be used until {}.", slack_date(t)))
                .unwrap_or_default();
            format!("*Approved* by {by} ({count} of {quorum}).{until}")
        }
        RequestState::Denied => {
            let denial = record.denial();
            let who = denial
                .map(|d| mrkdwn(&truncate(d.reviewer.label(), 80, "")))
                .or(resolution_by)
                .unwrap_or_else(|| "a reviewer".into());
            format!(
                "*Denied* by {who}{}. Nothing was run.",
                reason(denial.and_then(|d| d.reason.as_deref()))
            )
        }
        RequestState::Expired => {
            format!("*Expired* with {count} of {quorum} approvals. Nothing was run.")
        }
        RequestState::Cancelled => {
            let who = resolution_by
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            format!(
                "*Cancelled*{who}{}. Nothing was run.",
                reason(record.resolution.as_ref().and_then(|r| r.reason.as_deref()))
            )
        }
        RequestState::Executing => format!("*Approved* by {by}; the action is *running*."),
        RequestState::Executed => format!("*Approved* by {by}; the action *ran successfully*."),
        RequestState::Failed => {
            let error = record
                .execution
                .as_ref()
                .and_then(|e| e.error.as_deref())
                .map(|e| format!(": {}", truncate(&mrkdwn(e), 500, "")))
                .unwrap_or_default();
            format!("*Approved* by {by}; the action *failed*{error}.")
        }
        RequestState::Lapsed => {
            format!("*Approved* by {by}, but the grant was not used in time. Nothing was run.")
        }
    }
}

/// Renders the message for `record` in its current state: the full context, the status line,
/// and the Approve and Deny buttons while it is pending.
pub fn request_message(record: &RequestRecord) -> Message {
    let req = &record.request;
    let digest = &record.digest;
    let (icon, word) = title(record);
    let mut blocks = Vec::new();

    blocks.push(json!({
        "type": "header",
        "text": plain(&format!("{icon} {word}: {}", req.kind), MAX_HEADER_CHARS),
    }));
    blocks.push(json!({"type": "section", "text": md(status_line(record))}));
    if let Some(summary) = req.summary.as_deref() {
        blocks.push(labelled_text("Summary", summary, digest, false));
    }

    let mut fields = vec![
        format!("*Action*\n{}", value_md(&req.kind, digest)),
        format!("*Resource*\n{}", value_md(&req.resource, digest)),
    ];
    if let Some(env) = req.context.environment.as_deref() {
        fields.push(format!("*Environment*\n{}", value_md(env, digest)));
    }
    if let Some(risk) = req.context.risk {
        let risk = serde_json::to_value(risk)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        fields.push(format!("*Risk*\n{}", mrkdwn(&risk)));
    }
    if let Some(init) = &req.initiator {
        let p = &init.principal;
        fields.push(format!(
            "*Requested by*\n{} ({}{})",
            value_md(p.label(), digest),
            p.kind,
            if p.display_name.is_some() {
                format!(", {}", value_md(&p.id, digest))
            } else {
                String::new()
            }
        ));
        if let Some(human) = &init.on_behalf_of {
            fields.push(format!(
                "*On behalf of*\n{}",
                value_md(human.label(), digest)
            ));
        }
        if let Some(model) = init.model.as_deref() {
            fields.push(format!("*Model*\n{}", value_md(model, digest)));
        }
        if let Some(session) = init.session.as_deref() {
            fields.push(format!("*Session*\n{}", value_md(session, digest)));
        }
    }
    fields.truncate(10);
    blocks.push(json!({
        "type": "section",
        "fields": fields.into_iter().map(|f| md(truncate(&f, MAX_FIELD_CHARS, ""))).collect::<Vec<_>>(),
    }));

    if let Some(why) = req.justification.as_deref() {
        blocks.push(labelled_text("Justification", why, digest, false));
    }
    if let Some(impact) = req.context.impact.as_deref() {
        blocks.push(labelled_text("Impact", impact, digest, false));
    }
    if let Some(excerpt) = req.context.prompt_excerpt.as_deref() {
        blocks.push(labelled_text("Prompt excerpt", excerpt, digest, false));
    }
    let params = serde_json::to_string_pretty(&req.params).unwrap_or_else(|_| "{}".into());
    blocks.push(labelled_text("Parameters", &params, digest, true));

    let mut links: Vec<(String, String)> = Vec::new();
    if let Some(t) = req.context.ticket.as_deref() {
        links.push(("Ticket".into(), t.to_owned()));
    }
    if let Some(c) = req.context.commit.as_deref() {
        links.push(("Commit".into(), c.to_owned()));
    }
    if let Some(p) = req.initiator.as_ref().and_then(|i| i.prompt_ref.as_deref()) {
        links.push(("Prompt".into(), p.to_owned()));
    }
    for l in &req.context.links {
        links.push((l.label.clone(), l.url.clone()));
    }
    if !links.is_empty() {
        let mut elements = Vec::new();
        for (i, (label, target)) in links.iter().take(MAX_LINKS).enumerate() {
            if i > 0 {
                elements.push(rt_text("\n"));
            }
            elements.push(rt_bold(&format!(
                "{}: ",
                truncate(&one_line(label), 60, "…")
            )));
            if is_web_url(target) {
                // No custom link text: the reviewer sees the real address.
                elements.push(json!({"type": "link", "url": target}));
            } else {
                elements.push(rt_text(&truncate(&one_line(target), MAX_VALUE_CHARS, "…")));
            }
        }
        blocks.push(rich_text(vec![
            json!({"type": "rich_text_section", "elements": elements}),
        ]));
    }

    let mut context = format!("Request `{}` · Digest `{digest}`", record.id);
    if let Some(rule) = record.policy_rule.as_deref() {
        let _ = write!(context, " · Rule {}", value_md(rule, digest));
    }
    if record.state == RequestState::Pending {
        let _ = write!(context, " · Expires {}", slack_date(record.expires_at));
    }
    blocks.push(json!({"type": "context", "elements": [md(context)]}));

    if record.state == RequestState::Pending {
        let value = ButtonValue {
            request_id: record.id,
            digest: *digest,
        }
        .encode();
        let mut approve = json!({
            "type": "button",
            "action_id": ACTION_APPROVE,
            "text": {"type": "plain_text", "text": "Approve", "emoji": false},
            "style": "primary",
            "value": value,
        });
        if !record.requirement.reason_required {
            approve["confirm"] = json!({
                "title": {"type": "plain_text", "text": "Approve this action?", "emoji": false},
                "text": plain(
                    &format!("{} on {}", truncate(&req.kind, 100, "…"), truncate(&req.resource, 150, "…")),
                    300,
                ),
                "confirm": {"type": "plain_text", "text": "Approve", "emoji": false},
                "deny": {"type": "plain_text", "text": "Cancel", "emoji": false},
            });
        }
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("approvals.actions.{}", record.version),
            "elements": [
                approve,
                {
                    "type": "button",
                    "action_id": ACTION_DENY,
                    "text": {"type": "plain_text", "text": "Deny", "emoji": false},
                    "style": "danger",
                    "value": value,
                },
            ],
        }));
    }
    blocks.truncate(MAX_BLOCKS);

    let text = truncate(
        &format!("{word}: {} on {}", mrkdwn(&req.kind), mrkdwn(&req.resource)),
        MAX_SECTION_CHARS,
        "",
    );
    Message { text, blocks }
}

/// The modal asking a reviewer for a reason before their verdict is applied.
/// `private_metadata` is round-tripped by Slack to the `view_submission`.
pub fn reason_modal(
    record: &RequestRecord,
    verdict: Verdict,
    reason_required: bool,
    private_metadata: &str,
) -> Value {
    let (title, submit) = match verdict {
        Verdict::Approve => ("Approve request", "Approve"),
        Verdict::Deny => ("Deny request", "Deny"),
    };
    let req = &record.request;
    json!({
        "type": "modal",
        "callback_id": REASON_CALLBACK_ID,
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": submit},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": private_metadata,
        "blocks": [
            {
                "type": "section",
                "text": plain(
                    &format!("{submit} {} on {}?", truncate(&req.kind, 200, "…"), truncate(&req.resource, 300, "…")),
                    MAX_SECTION_CHARS,
                ),
            },
            {
                "type": "context",
                "elements": [md(format!("Request `{}` · Digest `{}`", record.id, record.digest))],
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "optional": !reason_required,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION_ID,
                    "multiline": true,
                    "max_length": MAX_REASON_CHARS,
                },
            },
        ],
    })
}
