//! Block Kit rendering: the request message (pending and every resolution) and the reason
//! modal. Untrusted values are made inert (see [`crate::text`]) and every text field is bounded
//! by its Block Kit limit (see [`crate::limits`]) after escaping, with truncation that points
//! at the digest the approval is bound to. Edit on approve's button, modal and "edited" block
//! are in [`edit`]. A pending request whose rule has `step_up` has no button that approves:
//! an "Approve with passkey" link button to its console page, and Deny.

use std::fmt::Write as _;

use approvals_core::lifecycle::needs_step_up;
use approvals_core::plan::PlanTerms;
use approvals_core::preview::SHOWN_LINES;
use approvals_core::text::join_bounded;
use approvals_core::{Digest, Preview, Principal, RequestId, RequestRecord, RequestState, Verdict};
use serde_json::{Value, json};
use url::Url;

use crate::limits;
use crate::text::{
    is_web_url, mrkdwn, mrkdwn_bounded, one_line, printable, truncate, truncate_mrkdwn,
};

pub mod edit;

pub use edit::{
    ACTION_EDIT, EDIT_ACTION_ID, EDIT_BLOCK_PREFIX, EDIT_CALLBACK_ID, EditableField, edit_modal,
    editable_fields,
};

/// `action_id` of the Approve button.
pub const ACTION_APPROVE: &str = "approvals.approve";
/// `action_id` of the Deny button.
pub const ACTION_DENY: &str = "approvals.deny";
/// `action_id` of the "Approve with passkey" link button of a request whose rule has
/// `step_up`: it opens the request's page in the review console, where the approval is made
/// with the proof. A click on it decides nothing (Slack reports it, and the handler ignores
/// it).
pub const ACTION_STEP_UP: &str = "approvals.step_up";
/// `callback_id` of the reason modal.
pub const REASON_CALLBACK_ID: &str = "approvals.reason";
/// `block_id` of the reason input in the modal.
pub const REASON_BLOCK_ID: &str = "approvals.reason";
/// `action_id` of the reason input in the modal.
pub const REASON_ACTION_ID: &str = "reason";

/// Longest reason a reviewer may type.
pub const MAX_REASON_CHARS: usize = 2000;
/// Longest shown parameter text (pretty JSON) before truncation.
pub const MAX_PARAMS_CHARS: usize = 2500;
/// Longest shown one-line value (kind, resource, environment, model) as sent, after escaping.
pub const MAX_VALUE_CHARS: usize = 300;
/// Longest shown free text (justification, impact, prompt excerpt) before truncation.
pub const MAX_TEXT_CHARS: usize = 1500;
/// Longest shown name of a person or agent, after escaping.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest list of approvers' names in the status line, after escaping; the rest are counted
/// ("and 4 more").
pub const MAX_NAMES_CHARS: usize = 1200;
/// Longest reason or error shown in the status line, after escaping.
pub const MAX_STATUS_REASON_CHARS: usize = 500;
/// Longest notification fallback `text` (Slack allows [`limits::MAX_MESSAGE_TEXT_CHARS`]; a
/// notification needs far less).
pub const MAX_FALLBACK_CHARS: usize = 500;
const MAX_LINKS: usize = 10;
const MAX_LINK_LABEL_CHARS: usize = 60;

// Our budgets fit in Slack's limits.
const _: () = {
    assert!(MAX_REASON_CHARS <= limits::MAX_PLAIN_TEXT_INPUT_CHARS);
    assert!(MAX_FALLBACK_CHARS <= limits::MAX_MESSAGE_TEXT_CHARS);
    assert!(MAX_VALUE_CHARS + 20 <= limits::MAX_FIELD_CHARS);
};

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
        if value.chars().count() > limits::MAX_BUTTON_VALUE_CHARS {
            return None;
        }
        let (id, digest) = value.split_once(' ')?;
        Some(ButtonValue {
            request_id: RequestId::parse(id).ok()?,
            digest: Digest::parse(digest).ok()?,
        })
    }
}

/// A `plain_text` object of trusted or already neutralised text, cut to `max` characters.
fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": truncate(text, max, ""), "emoji": false})
}

/// A `mrkdwn` text object of escaped text, cut to `max` characters without splitting an
/// entity.
fn md(text: &str, max: usize) -> Value {
    json!({"type": "mrkdwn", "text": truncate_mrkdwn(text, max, ""), "verbatim": true})
}

/// A one-line untrusted value, escaped and bounded, with a digest note when cut.
fn value_md(value: &str, digest: &Digest) -> String {
    truncate_mrkdwn(
        &mrkdwn(value),
        MAX_VALUE_CHARS,
        &format!(" (truncated; see digest {})", digest.short()),
    )
    .into_owned()
}

/// A person's or agent's name, escaped and bounded.
fn name_md(p: &Principal) -> String {
    mrkdwn_bounded(p.label(), MAX_NAME_CHARS)
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

/// The preview as a code block (literal text: a rich text element renders no `mrkdwn`),
/// its first [`SHOWN_LINES`] lines within [`MAX_PARAMS_CHARS`], and what was left out
/// said below it with the link to the whole text when the console is known.
fn preview_block(record: &RequestRecord, preview: &Preview, console: Option<&Url>) -> Value {
    let shown = preview.excerpt(SHOWN_LINES, MAX_PARAMS_CHARS);
    let note = shown
        .is_cut()
        .then(|| shown.omitted_note(record.id, record.digest));
    excerpt_block(
        &format!("Preview: {}", preview.caption()),
        &shown.text,
        note,
        console.map(|link| (link, "Open the whole preview")),
    )
}

/// A plan's actions as a code block: as many whole items (number, kind, resource, digest,
/// parameters) as fit in [`MAX_PARAMS_CHARS`], and how many were left out said below it with
/// the link to every item when the console is known.
fn plan_block(record: &RequestRecord, plan: &PlanTerms, console: Option<&Url>) -> Value {
    let shown = plan.excerpt(MAX_PARAMS_CHARS);
    let note = (shown.left_out > 0).then(|| shown.left_out_note(record.id, record.digest));
    excerpt_block(
        &format!(
            "Plan: {} action(s), each approved for one run as shown",
            plan.items.len()
        ),
        &shown.text,
        note,
        console.map(|link| (link, "Open every action")),
    )
}

/// A titled code block of untrusted `text` (within [`MAX_PARAMS_CHARS`]), with `note` in
/// italics below it when something was left out, followed by `link` to the whole.
fn excerpt_block(
    title: &str,
    text: &str,
    note: Option<String>,
    link: Option<(&Url, &str)>,
) -> Value {
    let code = truncate(&printable(text), MAX_PARAMS_CHARS, "");
    let mut elements = vec![
        json!({"type": "rich_text_section", "elements": [rt_bold(title)]}),
        json!({"type": "rich_text_preformatted", "elements": [rt_text(&code)]}),
    ];
    if let Some(note) = note {
        let mut said = vec![json!({"type": "text", "text": note, "style": {"italic": true}})];
        if let Some((url, text)) = link {
            said.push(rt_text(" "));
            said.push(json!({"type": "link", "url": url.as_str(), "text": text}));
        }
        elements.push(json!({"type": "rich_text_section", "elements": said}));
    }
    rich_text(elements)
}

fn slack_date(at: chrono::DateTime<chrono::Utc>) -> String {
    // <!date^unix^format|fallback>: each reader sees their own time zone.
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

/// The reply posted in a request's thread when a reminder point of its timeout passes. Holds
/// no outside text: counts and the expiry only.
pub fn reminder_text(record: &RequestRecord) -> String {
    let status = approvals_core::lifecycle::reminder_status(record);
    format!(
        "⏰ Reminder {} of {}: this request is still waiting for review ({} of {} approvals). It expires {}.",
        status.reminder,
        status.of,
        status.approvals,
        status.quorum,
        slack_date(status.expires_at)
    )
}

/// The approvers' names, escaped; past [`MAX_NAMES_CHARS`] the rest are counted instead.
fn names(record: &RequestRecord) -> String {
    let names: Vec<String> = record.approvers().iter().map(|p| name_md(p)).collect();
    join_bounded(&names, MAX_NAMES_CHARS)
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
        RequestState::Executed => ("✅", "Executed"),
        RequestState::Failed => ("❌", "Failed"),
        RequestState::Lapsed => ("⌛", "Lapsed"),
    }
}

/// The status line for a request: who approved or denied it and why, or how far the quorum
/// is. Trusted words with escaped, bounded names and reasons; at most
/// [`limits::MAX_SECTION_TEXT_CHARS`] characters as sent, whatever the names.
fn status_line(record: &RequestRecord) -> String {
    let quorum = record.requirement.quorum;
    let count = record.approvers().len();
    let by = names(record);
    let resolution_by = record
        .resolution
        .as_ref()
        .and_then(|r| r.by.as_ref())
        .map(name_md);
    let reason = |r: Option<&str>| {
        r.filter(|r| !r.trim().is_empty())
            .map(|r| format!(": “{}”", mrkdwn_bounded(r, MAX_STATUS_REASON_CHARS)))
            .unwrap_or_default()
    };
    let line = match record.state {
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
                .map(|d| name_md(&d.reviewer))
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
        RequestState::Executed => {
            format!("*Approved* by {by}; the action was *executed* successfully.")
        }
        RequestState::Failed => {
            let error = record
                .execution
                .as_ref()
                .and_then(|e| e.error.as_deref())
                .map(|e| format!(": {}", mrkdwn_bounded(e, MAX_STATUS_REASON_CHARS)))
                .unwrap_or_default();
            format!("*Approved* by {by}; the action *failed*{error}.")
        }
        RequestState::Lapsed => {
            format!("*Approved* by {by}, but the grant was not used in time. Nothing was run.")
        }
    };
    truncate_mrkdwn(&line, limits::MAX_SECTION_TEXT_CHARS, "").into_owned()
}

/// The page of request `id` in the review console served at `console`. Ours, not the
/// agent's (the configured public URL and the request id); a URL that could end Slack's
/// `<url|text>` early is not linked (`None`).
pub fn console_page(console: &Url, id: RequestId) -> Option<Url> {
    console
        .join(&id.console_path())
        .ok()
        .filter(|link| !link.as_str().contains(['|', '<', '>']))
}

/// Untrusted free text worth a block of its own: present and not blank.
fn shown(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !t.trim().is_empty())
}

/// Renders the message for `record` in its current state: the full context, the status line,
/// and the Approve and Deny buttons while it is pending.
pub fn request_message(record: &RequestRecord) -> Message {
    request_message_linked(record, None)
}

/// [`request_message`] with a link to the request's page in the review console under
/// `console` (the server's public URL), where the whole preview and context are shown.
pub fn request_message_linked(record: &RequestRecord, console: Option<&Url>) -> Message {
    let req = &record.request;
    let digest = &record.digest;
    let (icon, word) = title(record);
    let mut blocks = Vec::new();

    blocks.push(json!({
        "type": "header",
        "text": plain(&format!("{icon} {word}: {}", one_line(&req.kind)), limits::MAX_HEADER_CHARS),
    }));
    blocks.push(json!({
        "type": "section",
        "text": md(&status_line(record), limits::MAX_SECTION_TEXT_CHARS),
    }));
    if let Some(edited) = edit::edited_block(record) {
        blocks.push(edited);
    }
    if let Some(summary) = shown(req.summary.as_deref()) {
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
        fields.push(format!("*Risk*\n{}", value_md(&risk, digest)));
    }
    if let Some(init) = &req.initiator {
        let p = &init.principal;
        fields.push(format!(
            "*Requested by*\n{} ({}{})",
            name_md(p),
            p.kind,
            if p.display_name.is_some() {
                format!(", {}", mrkdwn_bounded(&p.id, MAX_NAME_CHARS))
            } else {
                String::new()
            }
        ));
        if let Some(human) = &init.on_behalf_of {
            fields.push(format!("*On behalf of*\n{}", name_md(human)));
        }
        if let Some(model) = init.model.as_deref() {
            fields.push(format!("*Model*\n{}", value_md(model, digest)));
        }
        if let Some(session) = init.session.as_deref() {
            fields.push(format!("*Session*\n{}", value_md(session, digest)));
        }
    }
    fields.truncate(limits::MAX_SECTION_FIELDS);
    blocks.push(json!({
        "type": "section",
        "fields": fields.iter().map(|f| md(f, limits::MAX_FIELD_CHARS)).collect::<Vec<_>>(),
    }));

    if let Some(why) = shown(req.justification.as_deref()) {
        blocks.push(labelled_text("Justification", why, digest, false));
    }
    if let Some(impact) = shown(req.context.impact.as_deref()) {
        blocks.push(labelled_text("Impact", impact, digest, false));
    }
    if let Some(excerpt) = shown(req.context.prompt_excerpt.as_deref()) {
        blocks.push(labelled_text("Prompt excerpt", excerpt, digest, false));
    }
    let console_link = console.and_then(|base| console_page(base, record.id));
    match PlanTerms::of(record) {
        Some(plan) => blocks.push(plan_block(record, &plan, console_link.as_ref())),
        None => {
            let params = serde_json::to_string_pretty(&req.params).unwrap_or_else(|_| "{}".into());
            blocks.push(labelled_text("Parameters", &params, digest, true));
        }
    }
    if let Some(preview) = &req.context.preview {
        blocks.push(preview_block(record, preview, console_link.as_ref()));
    }

    let mut links: Vec<(&str, &str)> = Vec::new();
    if let Some(t) = req.context.ticket.as_deref() {
        links.push(("Ticket", t));
    }
    if let Some(c) = req.context.commit.as_deref() {
        links.push(("Commit", c));
    }
    if let Some(p) = req.initiator.as_ref().and_then(|i| i.prompt_ref.as_deref()) {
        links.push(("Prompt", p));
    }
    for l in &req.context.links {
        links.push((&l.label, &l.url));
    }
    if !links.is_empty() {
        let mut elements = Vec::new();
        for (i, (label, target)) in links.iter().take(MAX_LINKS).enumerate() {
            if i > 0 {
                elements.push(rt_text("\n"));
            }
            elements.push(rt_bold(&format!(
                "{}: ",
                truncate(&one_line(label), MAX_LINK_LABEL_CHARS, "")
            )));
            if is_web_url(target) {
                // No custom link text: the reviewer sees the real address.
                elements.push(json!({"type": "link", "url": target}));
            } else {
                // Not a plain web address (or one with hidden characters): inert text, with
                // every hidden character shown.
                elements.push(rt_text(&truncate(&one_line(target), MAX_VALUE_CHARS, "")));
            }
        }
        blocks.push(rich_text(vec![
            json!({"type": "rich_text_section", "elements": elements}),
        ]));
    }

    let mut context = format!("Request `{}` · Digest `{digest}`", record.id);
    if let Some(link) = &console_link {
        let _ = write!(context, " · <{link}|Open in the console>");
    }
    if let Some(rule) = record.policy_rule.as_deref() {
        let _ = write!(context, " · Rule {}", value_md(rule, digest));
    }
    if record.state == RequestState::Pending {
        let _ = write!(context, " · Expires {}", slack_date(record.expires_at));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [md(&context, limits::MAX_TEXT_OBJECT_CHARS)],
    }));

    if record.state == RequestState::Pending {
        if let Some(note) = step_up_note(record, console_link.as_ref()) {
            blocks.push(note);
        }
        blocks.push(buttons(record, console_link.as_ref()));
    }
    blocks.truncate(limits::MAX_BLOCKS);

    let text = format!("{word}: {} on {}", mrkdwn(&req.kind), mrkdwn(&req.resource));
    let text = truncate_mrkdwn(&text, MAX_FALLBACK_CHARS, "").into_owned();
    Message { text, blocks }
}

/// The console page of `link` as a button's `url`, when Slack accepts it there.
fn button_url(link: Option<&Url>) -> Option<&str> {
    link.map(Url::as_str)
        .filter(|url| url.chars().count() <= limits::MAX_BUTTON_URL_CHARS)
}

/// What a reviewer of a pending request whose rule has `step_up` must know: an approval needs
/// the proof, made in the review console (linked by the button when `console` is known); a
/// deny works here. `None` for other requests.
fn step_up_note(record: &RequestRecord, console: Option<&Url>) -> Option<Value> {
    let method = needs_step_up(record)?;
    let text = if button_url(console).is_some() {
        format!(
            "🔑 Each approval of this rule needs a {method} confirmation: approve with the button below, in the review console. Deny works here."
        )
    } else {
        format!(
            "🔑 Each approval of this rule needs a {method} confirmation in the review console, which this Slack app does not link to: open request `{}` there to approve. Deny works here.",
            record.id
        )
    };
    Some(json!({
        "type": "context",
        "elements": [md(&text, limits::MAX_TEXT_OBJECT_CHARS)],
    }))
}

/// The buttons of a pending request, each carrying the request id and digest: Approve, "Edit
/// and approve" when reviewers may edit it ([`edit::editable_fields`]), and Deny. When its
/// rule has `step_up` ([`needs_step_up`]) nothing here approves: the approval is a link button
/// to the request's page in the review console (none when `console` is unknown), and Deny.
fn buttons(record: &RequestRecord, console: Option<&Url>) -> Value {
    let req = &record.request;
    let value = ButtonValue {
        request_id: record.id,
        digest: record.digest,
    }
    .encode();
    let button = |action_id: &str, text: &str, style: &str| {
        json!({
            "type": "button",
            "action_id": action_id,
            "text": plain(text, limits::MAX_BUTTON_TEXT_CHARS),
            "style": style,
            "value": value,
        })
    };
    let deny = button(ACTION_DENY, "Deny", "danger");
    let block_id = truncate(
        &format!("approvals.actions.{}", record.version),
        limits::MAX_BLOCK_ID_CHARS,
        "",
    );
    if let Some(method) = needs_step_up(record) {
        // A link, not an action: the click opens the console and Slack's report of it
        // decides nothing.
        let approve = button_url(console).map(|url| {
            json!({
                "type": "button",
                "action_id": ACTION_STEP_UP,
                "text": plain(&format!("Approve with {method}"), limits::MAX_BUTTON_TEXT_CHARS),
                "style": "primary",
                "url": url,
            })
        });
        return json!({
            "type": "actions",
            "block_id": block_id,
            "elements": approve.into_iter().chain([deny]).collect::<Vec<_>>(),
        });
    }
    let mut approve = button(ACTION_APPROVE, "Approve", "primary");
    if !record.requirement.reason_required {
        let what = format!(
            "{} on {}",
            truncate(&one_line(&req.kind), 100, ""),
            truncate(&one_line(&req.resource), 150, "")
        );
        approve["confirm"] = json!({
            "title": plain("Approve this action?", limits::MAX_CONFIRM_TITLE_CHARS),
            "text": plain(&what, limits::MAX_CONFIRM_TEXT_CHARS),
            "confirm": plain("Approve", limits::MAX_CONFIRM_BUTTON_CHARS),
            "deny": plain("Cancel", limits::MAX_CONFIRM_BUTTON_CHARS),
        });
    }
    json!({
        "type": "actions",
        "block_id": block_id,
        "elements": std::iter::once(approve)
            .chain(edit::edit_button(record, &value))
            .chain([deny])
            .collect::<Vec<_>>(),
    })
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
    let question = format!(
        "{submit} {} on {}?",
        truncate(&one_line(&req.kind), 200, ""),
        truncate(&one_line(&req.resource), 300, "")
    );
    json!({
        "type": "modal",
        "callback_id": REASON_CALLBACK_ID,
        "title": plain(title, limits::MAX_MODAL_TITLE_CHARS),
        "submit": plain(submit, limits::MAX_MODAL_BUTTON_CHARS),
        "close": plain("Cancel", limits::MAX_MODAL_BUTTON_CHARS),
        "private_metadata": private_metadata,
        "blocks": [
            {
                "type": "section",
                "text": plain(&question, limits::MAX_SECTION_TEXT_CHARS),
            },
            {
                "type": "context",
                "elements": [md(
                    &format!("Request `{}` · Digest `{}`", record.id, record.digest),
                    limits::MAX_TEXT_OBJECT_CHARS,
                )],
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "optional": !reason_required,
                "label": plain("Reason", limits::MAX_INPUT_LABEL_CHARS),
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

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::ReviewRecord;
    use approvals_testkit::fixtures;

    fn pending() -> RequestRecord {
        let mut r = fixtures::full_record();
        r.state = RequestState::Pending;
        r.escalated = false;
        r.reviews.clear();
        r.resolution = None;
        std::sync::Arc::make_mut(&mut r.requirement).reason_required = false;
        r
    }

    fn approved_by(n: usize, name: &str) -> RequestRecord {
        let mut r = pending();
        std::sync::Arc::make_mut(&mut r.requirement).quorum = n as u32;
        r.state = RequestState::Approved;
        r.reviews = (0..n)
            .map(|i| ReviewRecord {
                reviewer: Principal::human(format!("r{i}@example.com"))
                    .with_name(format!("{name}{i}")),
                verdict: Verdict::Approve,
                reason: None,
                channel: "slack".into(),
                at: fixtures::epoch(),
                edit: None,
                step_up: None,
            })
            .collect();
        r
    }

    fn fields(message: &Message) -> Value {
        message
            .blocks
            .iter()
            .find(|b| b.get("fields").is_some())
            .map(|b| b["fields"].clone())
            .unwrap_or_default()
    }

    fn text_of(block: &Value) -> &str {
        block["text"]["text"].as_str().unwrap_or_default()
    }

    /// Every `&` of escaped text starts a whole entity.
    fn entities_whole(s: &str) -> bool {
        !s.replace("&amp;", "")
            .replace("&lt;", "")
            .replace("&gt;", "")
            .contains('&')
    }

    #[test]
    fn twelve_long_hostile_names_keep_the_status_line_within_3000() {
        // 90 characters of `<&>` per name: 390 once escaped.
        let name = "<&>".repeat(30);
        let record = approved_by(12, &name);
        let message = request_message(&record);
        let status = text_of(&message.blocks[1]);
        assert!(
            status.chars().count() <= limits::MAX_SECTION_TEXT_CHARS,
            "{}",
            status.len()
        );
        assert!(status.starts_with("*Approved* by "), "{status}");
        assert!(
            status.contains("(12 of 12)"),
            "the count survives: {status}"
        );
        assert!(entities_whole(status), "{status}");

        // Far more approvers than fit: the rest are counted.
        let record = approved_by(40, &name);
        let status = text_of(&request_message(&record).blocks[1]).to_owned();
        assert!(status.chars().count() <= limits::MAX_SECTION_TEXT_CHARS);
        assert!(status.contains(" more (40 of 40)."), "{status}");
        assert!(entities_whole(&status), "{status}");
    }

    #[test]
    fn the_header_is_bounded_at_150() {
        let prefix = "🔐 Approval needed: ";
        let fits = "k".repeat(limits::MAX_HEADER_CHARS - prefix.chars().count());
        let mut r = pending();
        r.request.kind = fits.clone().into();
        let header = text_of(&request_message(&r).blocks[0]).to_owned();
        assert_eq!(
            header,
            format!("{prefix}{fits}"),
            "exactly at the limit: unchanged"
        );
        r.request.kind = format!("{fits}x").into();
        let header = text_of(&request_message(&r).blocks[0]).to_owned();
        assert_eq!(header.chars().count(), limits::MAX_HEADER_CHARS);
        assert!(header.ends_with('…'), "{header}");
    }

    #[test]
    fn one_line_values_are_bounded_after_escaping() {
        let mut r = pending();
        r.request.resource = "r".repeat(MAX_VALUE_CHARS).into();
        let shown = fields(&request_message(&r));
        assert_eq!(
            shown[1]["text"],
            format!("*Resource*\n{}", r.request.resource)
        );
        // One over, and hostile text that grows five-fold when escaped.
        for resource in ["r".repeat(MAX_VALUE_CHARS + 1), "<&>".repeat(200)] {
            r.request.resource = resource.into();
            let message = request_message(&r);
            let field = fields(&message)[1]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let value = field.strip_prefix("*Resource*\n").unwrap_or_default();
            assert!(
                value.chars().count() <= MAX_VALUE_CHARS,
                "{}",
                value.chars().count()
            );
            assert!(value.contains("(truncated; see digest"), "{value}");
            assert!(entities_whole(value), "{value}");
            assert!(message.text.chars().count() <= MAX_FALLBACK_CHARS);
            assert!(entities_whole(&message.text), "{}", message.text);
            let confirm = &message
                .blocks
                .last()
                .map(|b| b["elements"][0]["confirm"]["text"]["text"].clone());
            let confirm = confirm.as_ref().and_then(Value::as_str).unwrap_or_default();
            assert!(
                !confirm.is_empty() && confirm.chars().count() <= limits::MAX_CONFIRM_TEXT_CHARS
            );
        }
    }

    #[test]
    fn reasons_and_errors_are_bounded_without_splitting_an_entity() {
        let mut r = approved_by(1, "Sam");
        r.state = RequestState::Denied;
        r.reviews[0].verdict = Verdict::Deny;
        r.reviews[0].reason = Some("&".repeat(2000));
        let status = text_of(&request_message(&r).blocks[1]).to_owned();
        assert!(status.chars().count() < 700, "{}", status.chars().count());
        assert!(status.contains("&amp;…”"), "{status}");
        assert!(entities_whole(&status));

        r.state = RequestState::Failed;
        r.reviews[0].verdict = Verdict::Approve;
        r.execution = Some(Box::new(approvals_core::Execution {
            started_at: fixtures::epoch(),
            finished_at: None,
            error: Some("<".repeat(5000)),
            credential: None,
        }));
        let status = text_of(&request_message(&r).blocks[1]).to_owned();
        assert!(status.contains("&lt;…."), "{status}");
        assert!(entities_whole(&status));
    }

    #[test]
    fn the_modal_and_buttons_stay_within_their_limits() {
        let mut r = pending();
        r.request.kind = "<&>".repeat(1000).into();
        r.request.resource = "\u{202E}".repeat(1000).into();
        let modal = reason_modal(&r, Verdict::Deny, true, "meta");
        crate::fake::validate_view(&modal).expect("the modal is valid");
        let question = modal["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            question.starts_with("Deny <&>"),
            "plain text is not escaped: {question}"
        );
        assert!(question.contains("‹U+202E›") && !question.contains('\u{202E}'));
        let message = request_message(&r);
        crate::fake::validate_blocks(&json!(message.blocks)).expect("valid blocks");
        let actions = message.blocks.last().cloned().unwrap_or_default();
        assert_eq!(actions["type"], "actions");
        for button in actions["elements"].as_array().into_iter().flatten() {
            let value = button["value"].as_str().unwrap_or_default();
            assert_eq!(ButtonValue::parse(value).map(|v| v.request_id), Some(r.id));
        }
    }

    fn preview_of(message: &Message) -> Value {
        message
            .blocks
            .iter()
            .find(|b| {
                b["elements"][0]["elements"][0]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Preview: "))
            })
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_long_preview_is_cut_at_whole_lines_and_points_at_the_whole() {
        let mut r = pending();
        let diff: String = (0..300)
            .map(|i| format!("+line {i} <!channel> *bold* <https://e.vil|x>\n"))
            .collect();
        std::sync::Arc::make_mut(&mut r.request.context).preview = Some(Preview::diff(diff));
        let base = Url::parse("https://approvals.example.com/").expect("url");
        let message = request_message_linked(&r, Some(&base));
        crate::fake::validate_blocks(&json!(message.blocks)).expect("valid blocks");
        let block = preview_of(&message);
        assert_eq!(block["elements"][0]["elements"][0]["text"], "Preview: Diff");
        // Literal text in a code block: Slack renders no mrkdwn, mention or link in it.
        let code = &block["elements"][1];
        assert_eq!(code["type"], "rich_text_preformatted");
        let text = code["elements"][0]["text"].as_str().unwrap_or_default();
        assert!(text.starts_with("+line 0 <!channel> *bold*"), "{text}");
        assert!(text.chars().count() <= MAX_PARAMS_CHARS);
        let shown = text.lines().count();
        assert!((1..=SHOWN_LINES).contains(&shown), "{shown} lines");
        assert!(text.ends_with(&format!(
            "+line {} <!channel> *bold* <https://e.vil|x>",
            shown - 1
        )));
        let note = &block["elements"][2]["elements"];
        let words = note[0]["text"].as_str().unwrap_or_default();
        assert!(
            words.contains(&format!("{} more lines not shown", 300 - shown))
                && words.contains(&r.digest.to_string())
                && words.contains(&format!("approvals show {}", r.id)),
            "{words}"
        );
        let link = format!("https://approvals.example.com/console/requests/{}", r.id);
        assert_eq!(note[2]["url"], link.as_str());
        // The context line links the console page too; without a console, no link at all.
        let blocks = json!(message.blocks).to_string();
        assert!(blocks.contains(&format!("<{link}|Open in the console>")));
        let unlinked = json!(request_message(&r).blocks).to_string();
        assert!(!unlinked.contains("console/requests"), "{unlinked}");
    }

    #[test]
    fn a_short_preview_is_whole_and_rows_read_as_a_table() {
        let mut r = pending();
        std::sync::Arc::make_mut(&mut r.request.context).preview = Some(Preview::rows(
            vec!["id".into(), "email".into()],
            vec![vec!["1".into(), "ann@example.com".into()]],
            Some(15_204),
        ));
        let message = request_message(&r);
        let block = preview_of(&message);
        assert_eq!(
            block["elements"][0]["elements"][0]["text"],
            "Preview: Affected rows (1 of 15204)"
        );
        let text = block["elements"][1]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.contains("id | email") && text.contains("1  | ann@example.com"),
            "{text}"
        );
        assert_eq!(
            block["elements"].as_array().map(Vec::len),
            Some(2),
            "nothing was cut"
        );
    }

    fn plan_of(n: usize, why: &str) -> RequestRecord {
        use approvals_core::plan::{PlanItem, PlanTerms};
        let items = (0..n)
            .map(|i| {
                let action = approvals_core::ActionRequest::new(
                    "deploy.restart",
                    format!("svc://prod/s{i}"),
                )
                .params(json!({ "why": why }));
                PlanItem {
                    digest: action.digest(),
                    action,
                }
            })
            .collect();
        let mut r = pending();
        let initiator = r.request.initiator.clone().expect("initiator");
        r.request = PlanTerms { items }.to_request(initiator, None);
        r.digest = r.request.digest();
        r
    }

    fn plan_block_of(message: &Message) -> Value {
        message
            .blocks
            .iter()
            .find(|b| {
                b["elements"][0]["elements"][0]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Plan: "))
            })
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_plan_shows_each_action_with_its_digest_or_says_how_many_were_left_out() {
        let base = Url::parse("https://approvals.example.com/").expect("url");
        let small = plan_of(3, "<!channel> *now*");
        let message = request_message_linked(&small, Some(&base));
        crate::fake::validate_blocks(&json!(message.blocks)).expect("valid blocks");
        let block = plan_block_of(&message);
        assert_eq!(
            block["elements"][0]["elements"][0]["text"],
            "Plan: 3 action(s), each approved for one run as shown"
        );
        let code = block["elements"][1]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        let terms = approvals_core::plan::PlanTerms::of(&small).expect("plan");
        for (i, item) in terms.items.iter().enumerate() {
            assert!(
                code.contains(&format!("{}. deploy.restart on svc://prod/s{i}", i + 1)),
                "{code}"
            );
            assert!(code.contains(&item.digest.to_string()), "{code}");
        }
        assert!(code.contains("<!channel> *now*"), "literal text: {code}");
        assert!(block["elements"].get(2).is_none(), "nothing left out");
        assert!(
            !message
                .blocks
                .iter()
                .any(|b| b["elements"][0]["elements"][0]["text"] == "Parameters"),
            "the items are shown, not the plan's raw parameters"
        );

        let large = plan_of(approvals_core::plan::MAX_PLAN_ITEMS, &"x".repeat(200));
        let message = request_message_linked(&large, Some(&base));
        crate::fake::validate_blocks(&json!(message.blocks)).expect("valid blocks");
        let block = plan_block_of(&message);
        let code = block["elements"][1]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(code.chars().count() <= MAX_PARAMS_CHARS);
        let shown = code.matches(". deploy.restart on ").count();
        assert!((1..100).contains(&shown), "{shown}");
        let note = &block["elements"][2]["elements"];
        let said = note[0]["text"].as_str().unwrap_or_default();
        assert!(
            said.starts_with(&format!("… {} more actions not shown", 100 - shown))
                && said.contains("covers all 100"),
            "{said}"
        );
        assert_eq!(note[2]["text"], "Open every action");
        assert_eq!(
            note[2]["url"],
            format!(
                "https://approvals.example.com/console/requests/{}",
                large.id
            )
        );
    }
}
