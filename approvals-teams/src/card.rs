//! Adaptive Card rendering: the approval card for a request in each state, the data its
//! buttons carry, and the notice shown to the person who clicked.
//!
//! The card is schema 1.5 with `Action.Execute` buttons (verbs [`VERB_APPROVE`] and
//! [`VERB_DENY`]), each with an `Action.Submit` fallback for clients without Universal Actions,
//! an `Input.Text` (id [`REASON_INPUT_ID`]) for the reason, and, when the policy rule lets
//! reviewers edit the action, an "Edit and approve" form ([`crate::edit`]). When the rule
//! has `step_up`, nothing on the card approves: an approval needs a proof only the review
//! console takes, so the card has an "Approve with passkey" `Action.OpenUrl` to the request's
//! console page (with [`CardOptions::console_url`]) and Deny. A card whose
//! action was edited says who changed what, and shows the edited action's digest. Every
//! untrusted value is made inert (see [`crate::text`]) and bounded; values cut short point at
//! the digest the approval is bound to, which the card always shows in full.

use approvals_core::StepUp;
use approvals_core::lifecycle::needs_step_up;
use approvals_core::plan::PlanTerms;
use approvals_core::preview::SHOWN_LINES;
use approvals_core::{Digest, Preview, RequestId, RequestRecord, RequestState, Verdict};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::text::{card_text, literal_text, truncate};

/// Adaptive Card schema version used (Universal Actions need 1.4 or later; Teams documents
/// 1.5).
pub const CARD_VERSION: &str = "1.5";
/// `verb` of the Approve button.
pub const VERB_APPROVE: &str = "approve";
/// `verb` of the Deny button.
pub const VERB_DENY: &str = "deny";
/// `id` of the "Approve with passkey" `Action.OpenUrl` of a request whose rule has
/// `step_up`: it opens the request's page in the review console, where the approval is made
/// with the proof. It sends nothing to the bot.
pub const STEP_UP_ACTION_ID: &str = "approvals.step_up";
/// `verb` of the card's `refresh` action. Never a decision.
pub const VERB_REFRESH: &str = "refresh";
/// `id` of the reason `Input.Text`; its value arrives in the action data under this key.
pub const REASON_INPUT_ID: &str = "reason";
/// Longest reason accepted.
pub const MAX_REASON_CHARS: usize = 2000;
/// Longest shown parameter text (pretty JSON), as sent.
pub const MAX_PARAMS_CHARS: usize = 2000;
/// Longest shown free text (summary, justification, impact, prompt excerpt), as sent.
pub const MAX_TEXT_CHARS: usize = 800;
/// Longest shown one-line value (kind, resource, model, links), as sent.
pub const MAX_VALUE_CHARS: usize = 200;
/// Longest shown name of a person or agent, as sent.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest list of approvers' names in the status line, as sent; the rest are counted
/// ("and 4 more").
pub const MAX_NAMES_CHARS: usize = 1200;
/// Longest reason or error shown in the status line, as sent.
pub const MAX_STATUS_REASON_CHARS: usize = 500;
/// Largest card sent, serialized. Teams refuses a message over about 28 KB; the activity
/// around the card (summary, addresses) needs the rest. A card over it is rendered again with
/// every untrusted value's share halved, so hostile text that is long in bytes (emoji, CJK)
/// cannot make the card undeliverable.
pub const MAX_CARD_BYTES: usize = 24 * 1024;
/// Most `userIds` Teams accepts in a card's `refresh`.
pub const MAX_REFRESH_USER_IDS: usize = 60;
const MAX_LINKS: usize = 5;
const MAX_LINK_TITLE_CHARS: usize = 40;

/// What the Approve and Deny buttons carry, so a click is bound to exactly the request and
/// action digest the reviewer was shown. The reason typed into the card arrives alongside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardData {
    /// The request.
    pub request_id: RequestId,
    /// The action digest shown on the card.
    pub digest: Digest,
    /// The verdict of the button, `None` for the refresh action.
    pub verdict: Option<Verdict>,
    /// The reason typed into the card, trimmed; `None` when empty.
    pub reason: Option<String>,
}

/// Action data that is not an approval card's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardDataError {
    /// `data` is not a JSON object.
    #[error("the action data is not an object")]
    NotAnObject,
    /// A field is missing or has the wrong type.
    #[error("the action data has no valid `{0}`")]
    Invalid(&'static str),
    /// The reason is longer than [`MAX_REASON_CHARS`].
    #[error("the reason is longer than {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
}

impl CardData {
    /// The `data` object of the card's actions (without the reason, which the card's input
    /// adds).
    pub fn to_json(&self) -> Value {
        let mut data = Map::new();
        data.insert("request_id".into(), json!(self.request_id.to_string()));
        data.insert("digest".into(), json!(self.digest.to_string()));
        if let Some(verdict) = self.verdict {
            data.insert("verdict".into(), json!(verdict.to_string()));
        }
        Value::Object(data)
    }

    /// Parses action data (as merged with the card's inputs by the client). Untrusted: every
    /// field is checked, nothing is guessed.
    pub fn from_json(data: &Value) -> Result<Self, CardDataError> {
        let data = data.as_object().ok_or(CardDataError::NotAnObject)?;
        let request_id = data
            .get("request_id")
            .and_then(Value::as_str)
            .and_then(|s| RequestId::parse(s).ok())
            .ok_or(CardDataError::Invalid("request_id"))?;
        let digest = data
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|s| Digest::parse(s).ok())
            .ok_or(CardDataError::Invalid("digest"))?;
        let verdict = match data.get("verdict") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) if v == VERB_APPROVE => Some(Verdict::Approve),
            Some(Value::String(v)) if v == VERB_DENY => Some(Verdict::Deny),
            Some(_) => return Err(CardDataError::Invalid("verdict")),
        };
        let reason = match data.get(REASON_INPUT_ID) {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => {
                let r = r.trim();
                if r.chars().count() > MAX_REASON_CHARS {
                    return Err(CardDataError::ReasonTooLong);
                }
                (!r.is_empty()).then(|| r.to_owned())
            }
            Some(_) => return Err(CardDataError::Invalid(REASON_INPUT_ID)),
        };
        Ok(CardData {
            request_id,
            digest,
            verdict,
            reason,
        })
    }
}

/// Options for rendering cards.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CardOptions {
    /// Teams user ids (MRIs, `29:...`) whose clients refresh the card automatically when it
    /// is shown (at most [`MAX_REFRESH_USER_IDS`]). Empty: no automatic refresh.
    pub refresh_user_ids: Vec<String>,
    /// The review console's public URL: each card links to the request's page there, where a
    /// long preview and the context are shown whole. `None`: no link.
    pub console_url: Option<url::Url>,
}

/// A message for the person who clicked, shown at the top of the card returned to them only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    text: String,
    refused: bool,
}

impl Notice {
    /// The click was applied (`text` is shown literally).
    pub fn applied(text: impl Into<String>) -> Self {
        Notice {
            text: text.into(),
            refused: false,
        }
    }

    /// The click was refused and nothing changed (`text` is shown literally).
    pub fn refused(text: impl Into<String>) -> Self {
        Notice {
            text: text.into(),
            refused: true,
        }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it reports a refusal.
    pub fn is_refusal(&self) -> bool {
        self.refused
    }
}

fn run(text: &str) -> Value {
    json!({"type": "TextRun", "text": literal_text(text)})
}

fn bold_run(text: &str) -> Value {
    json!({"type": "TextRun", "text": literal_text(text), "weight": "Bolder"})
}

fn rich(inlines: Vec<Value>) -> Value {
    json!({"type": "RichTextBlock", "inlines": inlines})
}

/// How many characters of each kind of untrusted value a card shows, as sent.
#[derive(Debug, Clone, Copy)]
struct Budget {
    value: usize,
    name: usize,
    names: usize,
    text: usize,
    params: usize,
    reason: usize,
}

impl Budget {
    const FULL: Budget = Budget {
        value: MAX_VALUE_CHARS,
        name: MAX_NAME_CHARS,
        names: MAX_NAMES_CHARS,
        text: MAX_TEXT_CHARS,
        params: MAX_PARAMS_CHARS,
        reason: MAX_STATUS_REASON_CHARS,
    };

    /// Half of every share, never below 24 characters (the digest note still fits).
    fn halved(self) -> Budget {
        let half = |n: usize| (n / 2).max(24);
        Budget {
            value: half(self.value),
            name: half(self.name),
            names: half(self.names),
            text: half(self.text),
            params: half(self.params),
            reason: half(self.reason),
        }
    }
}

/// A name for a literal text run: neutralised and bounded (the run's own escaping changes
/// nothing more).
fn name(p: &approvals_core::Principal, budget: Budget) -> String {
    truncate(&literal_text(p.label()), budget.name, "")
}

/// A name for a fact: escaped and bounded.
fn fact_name(text: &str, budget: Budget) -> String {
    truncate(&card_text(text), budget.name, "")
}

/// The approvers' names; past the budget the rest are counted instead.
fn names(record: &RequestRecord, budget: Budget) -> String {
    let names: Vec<String> = record.approvers().iter().map(|p| name(p, budget)).collect();
    approvals_core::text::join_bounded(&names, budget.names)
}

/// A one-line untrusted value for a fact: escaped, bounded, with a digest note when cut.
fn fact_value(value: &str, digest: &Digest, budget: Budget) -> String {
    truncate(
        &card_text(value),
        budget.value,
        &format!(" (truncated; see digest {})", digest.short()),
    )
}

fn fact(title: &str, value: String) -> Value {
    json!({"title": title, "value": value})
}

/// A labelled block of untrusted multi-line text, shown literally (a `TextRun` renders no
/// Markdown).
fn labelled(label: &str, value: &str, digest: &Digest, max: usize, monospace: bool) -> Value {
    let shown = truncate(
        &literal_text(value),
        max,
        &format!(" (truncated; the approval covers the full text, digest {digest})"),
    );
    let mut body = run(&shown);
    if monospace {
        body["fontType"] = json!("Monospace");
    }
    json!({
        "type": "Container",
        "spacing": "Medium",
        "items": [
            {"type": "TextBlock", "text": label, "weight": "Bolder", "wrap": true},
            {"type": "RichTextBlock", "inlines": [body]},
        ],
    })
}

/// The preview in monospace text (a `TextRun` renders no Markdown): its first
/// [`SHOWN_LINES`] lines within the parameters' budget, and what was left out said below
/// it.
fn preview_container(record: &RequestRecord, preview: &Preview, budget: Budget) -> Value {
    let shown = preview.excerpt(SHOWN_LINES, budget.params);
    let note = shown
        .is_cut()
        .then(|| shown.omitted_note(record.id, record.digest));
    excerpt_container(
        &format!("Preview: {}", preview.caption()),
        &shown.text,
        note,
        budget,
    )
}

/// A plan's actions in monospace text: as many whole items (number, kind, resource, digest,
/// parameters) as fit in the parameters' budget, and how many were left out said below it.
fn plan_container(record: &RequestRecord, plan: &PlanTerms, budget: Budget) -> Value {
    let shown = plan.excerpt(budget.params);
    let note = (shown.left_out > 0).then(|| shown.left_out_note(record.id, record.digest));
    excerpt_container(
        &format!(
            "Plan: {} action(s), each approved for one run as shown",
            plan.items.len()
        ),
        &shown.text,
        note,
        budget,
    )
}

/// A titled monospace block of untrusted `text` (within the parameters' budget), with `note`
/// in italics below it when something was left out.
fn excerpt_container(title: &str, text: &str, note: Option<String>, budget: Budget) -> Value {
    let mut code = run(&truncate(&literal_text(text), budget.params, ""));
    code["fontType"] = json!("Monospace");
    let mut items = vec![
        json!({"type": "TextBlock", "text": title, "weight": "Bolder", "wrap": true}),
        json!({"type": "RichTextBlock", "inlines": [code]}),
    ];
    if let Some(note) = note {
        let mut note = run(&note);
        note["italic"] = json!(true);
        items.push(json!({"type": "RichTextBlock", "inlines": [note]}));
    }
    json!({"type": "Container", "spacing": "Medium", "items": items})
}

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn title(record: &RequestRecord) -> (&'static str, &'static str) {
    match record.state {
        RequestState::Pending if record.escalated && record.reminded > 0 => {
            ("⏰", "Reminder: escalated, approval still needed")
        }
        RequestState::Pending if record.escalated => ("⏫", "Escalated, approval needed"),
        RequestState::Pending if record.reminded > 0 => ("⏰", "Reminder: approval still needed"),
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

/// The status line: who approved or denied and why, or how far the quorum is. Trusted words
/// in bold, untrusted names and reasons as literal text runs.
pub fn status_inlines(record: &RequestRecord) -> Vec<Value> {
    status_within(record, Budget::FULL)
}

fn status_within(record: &RequestRecord, budget: Budget) -> Vec<Value> {
    let quorum = record.requirement.quorum;
    let count = record.approvers().len() as u32;
    let by = names(record, budget);
    let bounded = |r: &str| truncate(&literal_text(r), budget.reason, "");
    let reason = |r: Option<&str>| {
        r.filter(|r| !r.trim().is_empty())
            .map(|r| format!(": “{}”", bounded(r)))
            .unwrap_or_default()
    };
    let resolution_by = record
        .resolution
        .as_ref()
        .and_then(|r| r.by.as_ref())
        .map(|p| name(p, budget));
    match record.state {
        RequestState::Pending if count == 0 => vec![
            bold_run("Waiting for approval"),
            run(&format!(" (0 of {quorum}).")),
        ],
        RequestState::Pending => vec![
            bold_run(&format!("{count} of {quorum} approvals")),
            run(&format!(
                " so far: {by}. Waiting for {} more.",
                quorum.saturating_sub(count)
            )),
        ],
        RequestState::Approved => {
            let until = record
                .grant_expires_at
                .map(|t| format!(" The grant may be used until {}.", utc(t)))
                .unwrap_or_default();
            vec![
                bold_run("Approved"),
                run(&format!(" by {by} ({count} of {quorum}).{until}")),
            ]
        }
        RequestState::Denied => {
            let denial = record.denial();
            let who = denial
                .map(|d| name(&d.reviewer, budget))
                .or(resolution_by)
                .unwrap_or_else(|| "a reviewer".into());
            vec![
                bold_run("Denied"),
                run(&format!(
                    " by {who}{}. Nothing was run.",
                    reason(denial.and_then(|d| d.reason.as_deref()))
                )),
            ]
        }
        RequestState::Expired => vec![
            bold_run("Expired"),
            run(&format!(
                " with {count} of {quorum} approvals. Nothing was run."
            )),
        ],
        RequestState::Cancelled => {
            let who = resolution_by
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            vec![
                bold_run("Cancelled"),
                run(&format!(
                    "{who}{}. Nothing was run.",
                    reason(record.resolution.as_ref().and_then(|r| r.reason.as_deref()))
                )),
            ]
        }
        RequestState::Executing => vec![
            bold_run("Approved"),
            run(&format!(" by {by}; the action is running.")),
        ],
        RequestState::Executed => vec![
            bold_run("Approved"),
            run(&format!(" by {by}; the action was executed successfully.")),
        ],
        RequestState::Failed => {
            let error = record
                .execution
                .as_ref()
                .and_then(|e| e.error.as_deref())
                .map(|e| format!(": {}", bounded(e)))
                .unwrap_or_default();
            vec![
                bold_run("Approved"),
                run(&format!(" by {by}; the action failed{error}.")),
            ]
        }
        RequestState::Lapsed => vec![
            bold_run("Approved"),
            run(&format!(
                " by {by}, but the grant was not used in time. Nothing was run."
            )),
        ],
    }
}

/// Renders the card for `record` in its current state: header, status, the full context
/// (initiator, action, resource, parameters, justification, links, environment, impact,
/// expiry, request id, digest), and while it is pending the reason input and the Approve and
/// Deny buttons. `notice` is shown first (for the person who clicked).
///
/// The card is at most [`MAX_CARD_BYTES`] serialized: when hostile values make it larger, it is
/// rendered again with every untrusted value's share halved.
pub fn request_card(
    record: &RequestRecord,
    options: &CardOptions,
    notice: Option<&Notice>,
) -> Value {
    let mut budget = Budget::FULL;
    loop {
        let card = card_within(record, options, notice, budget);
        let size = serde_json::to_vec(&card).map_or(usize::MAX, |b| b.len());
        if size <= MAX_CARD_BYTES || budget.value <= 24 {
            return card;
        }
        budget = budget.halved();
    }
}

fn card_within(
    record: &RequestRecord,
    options: &CardOptions,
    notice: Option<&Notice>,
    budget: Budget,
) -> Value {
    let req = &record.request;
    let digest = &record.digest;
    let (icon, word) = title(record);
    let mut body = Vec::new();

    if let Some(notice) = notice {
        let mut text = bold_run(&truncate(&literal_text(notice.text()), 600, ""));
        text["color"] = json!(if notice.refused { "Attention" } else { "Good" });
        body.push(json!({
            "type": "Container",
            "style": if notice.refused { "attention" } else { "good" },
            "items": [rich(vec![text])],
        }));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": format!("{icon} {word}: {}", fact_value(&req.kind, digest, budget)),
        "size": "Medium",
        "weight": "Bolder",
        "wrap": true,
    }));
    body.push(rich(status_within(record, budget)));
    if let Some(note) = crate::edit::edited_note(record, budget.name, budget.text) {
        body.push(note);
    }
    if let Some(summary) = req.summary.as_deref() {
        body.push(labelled("Summary", summary, digest, budget.text, false));
    }

    let mut facts = Vec::new();
    if let Some(init) = &req.initiator {
        // Our parentheses around escaped parts: untrusted text has no `]` left to make a link.
        let p = &init.principal;
        let mut who = format!("{} ({}", fact_name(p.label(), budget), p.kind);
        if p.display_name.is_some() {
            who.push_str(", ");
            who.push_str(&fact_name(&p.id, budget));
        }
        who.push(')');
        facts.push(fact("Requested by", who));
        if let Some(human) = &init.on_behalf_of {
            let mut h = fact_name(human.label(), budget);
            if human.display_name.is_some() {
                h = format!("{h} ({})", fact_name(&human.id, budget));
            }
            facts.push(fact("On behalf of", h));
        }
        if let Some(model) = init.model.as_deref() {
            facts.push(fact("Model", fact_value(model, digest, budget)));
        }
        if let Some(session) = init.session.as_deref() {
            facts.push(fact("Session", fact_value(session, digest, budget)));
        }
    }
    facts.push(fact("Action", fact_value(&req.kind, digest, budget)));
    facts.push(fact("Resource", fact_value(&req.resource, digest, budget)));
    if let Some(env) = req.context.environment.as_deref() {
        facts.push(fact("Environment", fact_value(env, digest, budget)));
    }
    if let Some(risk) = req.context.risk {
        let risk = serde_json::to_value(risk)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        facts.push(fact("Risk", fact_value(&risk, digest, budget)));
    }
    if let Some(t) = req.context.ticket.as_deref() {
        facts.push(fact("Ticket", fact_value(t, digest, budget)));
    }
    if let Some(c) = req.context.commit.as_deref() {
        facts.push(fact("Commit", fact_value(c, digest, budget)));
    }
    if let Some(p) = req.initiator.as_ref().and_then(|i| i.prompt_ref.as_deref()) {
        facts.push(fact("Prompt", fact_value(p, digest, budget)));
    }
    for link in req.context.links.iter().take(MAX_LINKS) {
        // Links are shown as text, never as a clickable label that could hide the address.
        facts.push(fact(
            &truncate(&card_text(&link.label), MAX_LINK_TITLE_CHARS, ""),
            fact_value(&link.url, digest, budget),
        ));
    }
    body.push(json!({"type": "FactSet", "spacing": "Medium", "facts": facts}));

    if let Some(why) = req.justification.as_deref() {
        body.push(labelled("Justification", why, digest, budget.text, false));
    }
    if let Some(impact) = req.context.impact.as_deref() {
        body.push(labelled("Impact", impact, digest, budget.text, false));
    }
    if let Some(excerpt) = req.context.prompt_excerpt.as_deref() {
        body.push(labelled(
            "Prompt excerpt",
            excerpt,
            digest,
            budget.text,
            false,
        ));
    }
    match PlanTerms::of(record) {
        Some(plan) => body.push(plan_container(record, &plan, budget)),
        None => {
            let params = serde_json::to_string_pretty(&req.params).unwrap_or_else(|_| "{}".into());
            body.push(labelled("Parameters", &params, digest, budget.params, true));
        }
    }
    let console_link = options
        .console_url
        .as_ref()
        .and_then(|base| base.join(&record.id.console_path()).ok());
    if let Some(preview) = &req.context.preview {
        body.push(preview_container(record, preview, budget));
    }

    // Ids, digests and times are ours, not the agent's: shown as they are.
    let mut meta = vec![fact("Request", record.id.to_string())];
    meta.push(fact("Digest", digest.to_string()));
    if record.asked_digest() != *digest {
        meta.push(fact("Digest as asked", record.asked_digest().to_string()));
    }
    if let Some(rule) = record.policy_rule.as_deref() {
        meta.push(fact("Policy rule", fact_value(rule, digest, budget)));
    }
    meta.push(fact(
        "Reviewers",
        truncate(&card_text(&reviewers(record)), budget.value, ""),
    ));
    if record.state == RequestState::Pending {
        meta.push(fact("Expires", utc(record.expires_at)));
    }
    body.push(json!({"type": "FactSet", "spacing": "Medium", "separator": true, "facts": meta}));
    if let Some(link) = &console_link {
        // Ours, not the agent's: the configured public URL and the request id.
        body.push(json!({
            "type": "ActionSet",
            "actions": [{"type": "Action.OpenUrl", "title": "Open in the console", "url": link.as_str()}],
        }));
    }

    let mut card = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    });

    if record.state == RequestState::Pending {
        let reason_required = record.requirement.reason_required;
        let step_up = needs_step_up(record);
        if let Some(items) = card["body"].as_array_mut() {
            if let Some(method) = step_up {
                items.push(step_up_note(method, console_link.is_some()));
            }
            items.push(json!({
                "type": "Input.Text",
                "id": REASON_INPUT_ID,
                "label": if reason_required { "Reason (required)" } else { "Reason (optional)" },
                "placeholder": if step_up.is_some() { "Why do you deny this?" } else { "Why do you approve or deny this?" },
                "isMultiline": true,
                "maxLength": MAX_REASON_CHARS,
            }));
        }
        let button = |verdict: Verdict, verb: &str, title: &str, style: &str| {
            let data = CardData {
                request_id: record.id,
                digest: *digest,
                verdict: Some(verdict),
                reason: None,
            }
            .to_json();
            json!({
                "type": "Action.Execute",
                "title": title,
                "verb": verb,
                "style": style,
                "data": data,
                "associatedInputs": "auto",
                "fallback": {"type": "Action.Submit", "title": title, "data": data},
            })
        };
        let deny = button(Verdict::Deny, VERB_DENY, "Deny", "destructive");
        let actions = match step_up {
            // Nothing on the card approves: the approval is a link to the console, which
            // takes the proof, and deny needs none.
            Some(method) => console_link
                .as_ref()
                .map(|link| {
                    json!({
                        "type": "Action.OpenUrl",
                        "id": STEP_UP_ACTION_ID,
                        "title": format!("Approve with {method}"),
                        "url": link.as_str(),
                        "style": "positive",
                    })
                })
                .into_iter()
                .chain([deny])
                .collect(),
            None => {
                let form_data = CardData {
                    request_id: record.id,
                    digest: *digest,
                    verdict: None,
                    reason: None,
                }
                .to_json();
                std::iter::once(button(
                    Verdict::Approve,
                    VERB_APPROVE,
                    "Approve",
                    "positive",
                ))
                .chain([deny])
                .chain(crate::edit::edit_show_card(
                    record,
                    form_data,
                    budget.params / 2,
                    reason_required,
                    MAX_REASON_CHARS,
                ))
                .collect()
            }
        };
        card["actions"] = Value::Array(actions);
        let users: Vec<&String> = options
            .refresh_user_ids
            .iter()
            .take(MAX_REFRESH_USER_IDS)
            .collect();
        if !users.is_empty() {
            let data = CardData {
                request_id: record.id,
                digest: *digest,
                verdict: None,
                reason: None,
            }
            .to_json();
            card["refresh"] = json!({
                "action": {"type": "Action.Execute", "title": "Refresh", "verb": VERB_REFRESH, "data": data},
                "userIds": users,
            });
        }
    }
    card
}

/// What a reviewer of a pending request whose rule has `step_up` must know: an approval needs
/// the proof, made in the review console (linked by the card's button when `linked`); a deny
/// works here.
fn step_up_note(method: StepUp, linked: bool) -> Value {
    let text = if linked {
        format!(
            "🔑 Each approval of this rule needs a {method} confirmation: approve with the button below, in the review console. Deny works here."
        )
    } else {
        format!(
            "🔑 Each approval of this rule needs a {method} confirmation in the review console, which this bot does not link to: open the request there to approve. Deny works here."
        )
    };
    json!({
        "type": "TextBlock",
        "text": text,
        "wrap": true,
        "spacing": "Medium",
        "weight": "Bolder",
    })
}

fn reviewers(record: &RequestRecord) -> String {
    let r = &record.requirement;
    let mut who: Vec<String> = r.users.clone();
    who.extend(r.groups.iter().map(|g| format!("group {g}")));
    if record.escalated
        && let Some(e) = &r.escalation
    {
        who.extend(e.users.iter().cloned());
        who.extend(e.groups.iter().map(|g| format!("group {g}")));
    }
    let list = if who.is_empty() {
        "none named".to_owned()
    } else {
        who.join(", ")
    };
    format!("{} of: {list}", r.quorum)
}

/// The plain-text notification preview for a request (`summary` of the message).
pub fn preview_text(record: &RequestRecord) -> String {
    let (_, word) = title(record);
    let what = format!(
        "{word}: {} on {}",
        record.request.kind, record.request.resource
    );
    truncate(&approvals_core::text::one_line(&what), 200, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::{
        ActionRequest, Execution, Initiator, Principal, Requirement, Resolution, ReviewRecord,
        ThinVec,
    };

    fn record(state: RequestState) -> RequestRecord {
        let now = Utc::now();
        let request = ActionRequest::new("db.migrate", "db://prod/main")
            .initiator(Initiator::agent("migrator").on_behalf_of(Principal::human("dana")));
        RequestRecord {
            id: RequestId::new(),
            version: 3,
            digest: request.digest(),
            request,
            requirement: Requirement::groups(["dba"]).quorum(2).into(),
            policy_rule: Some("migrations".into()),
            policy_version: "v1".into(),
            state,
            created_at: now,
            expires_at: now + chrono::TimeDelta::hours(1),
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

    fn review(name: &str, verdict: Verdict, reason: Option<&str>) -> ReviewRecord {
        ReviewRecord {
            reviewer: Principal::human(format!("{name}@example.com")).with_name(name),
            verdict,
            reason: reason.map(str::to_owned),
            channel: "teams".into(),
            at: Utc::now(),
            edit: None,
            step_up: None,
        }
    }

    fn status(record: &RequestRecord) -> String {
        status_inlines(record)
            .iter()
            .filter_map(|r| r["text"].as_str())
            .collect()
    }

    /// A reminder shows on every pending card, an escalated one included.
    #[test]
    fn the_title_says_reminder_after_escalation_too() {
        let header = |r: &RequestRecord| {
            request_card(r, &CardOptions::default(), None)["body"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let mut r = record(RequestState::Pending);
        assert!(
            header(&r).starts_with("🔐 Approval needed"),
            "{}",
            header(&r)
        );
        r.escalated = true;
        assert!(header(&r).starts_with("⏫ Escalated"), "{}", header(&r));
        r.reminded = 1;
        assert!(
            header(&r).starts_with("⏰ Reminder: escalated, approval still needed"),
            "{}",
            header(&r)
        );
        r.escalated = false;
        assert!(header(&r).starts_with("⏰ Reminder: approval still needed"));
    }

    #[test]
    fn status_line_for_every_state() {
        let mut r = record(RequestState::Pending);
        assert_eq!(status(&r), "Waiting for approval (0 of 2).");
        r.reviews.push(review("Ann", Verdict::Approve, None));
        assert_eq!(
            status(&r),
            "1 of 2 approvals so far: Ann. Waiting for 1 more."
        );
        r.reviews.push(review("Bob", Verdict::Approve, None));
        r.state = RequestState::Approved;
        assert!(status(&r).starts_with("Approved by Ann, Bob (2 of 2)."));
        r.state = RequestState::Executed;
        assert!(status(&r).contains("executed successfully"));
        r.state = RequestState::Failed;
        r.execution = Some(Box::new(Execution {
            started_at: Utc::now(),
            finished_at: None,
            error: Some("disk full".into()),
            credential: None,
        }));
        assert!(status(&r).contains("failed: disk full"));
        r.state = RequestState::Lapsed;
        assert!(status(&r).contains("not used in time"));

        let mut d = record(RequestState::Denied);
        d.reviews
            .push(review("Cy", Verdict::Deny, Some("not in the window")));
        assert_eq!(
            status(&d),
            "Denied by Cy: “not in the window”. Nothing was run."
        );
        let mut c = record(RequestState::Cancelled);
        c.resolution = Some(Box::new(Resolution {
            by: None,
            reason: Some("no channel could deliver".into()),
            at: Utc::now(),
        }));
        assert!(status(&c).starts_with("Cancelled: “no channel could deliver”"));
        assert!(status(&record(RequestState::Expired)).contains("Expired with 0 of 2"));
    }

    #[test]
    fn buttons_input_and_refresh_only_while_pending() {
        let options = CardOptions {
            refresh_user_ids: vec!["29:ann".into(); 70],
            ..CardOptions::default()
        };
        let mut r = record(RequestState::Pending);
        std::sync::Arc::make_mut(&mut r.requirement).reason_required = true;
        let card = request_card(&r, &options, None);
        assert_eq!(card["version"], CARD_VERSION);
        assert_eq!(card["actions"][0]["verb"], VERB_APPROVE);
        assert_eq!(card["actions"][1]["verb"], VERB_DENY);
        assert_eq!(card["refresh"]["action"]["verb"], VERB_REFRESH);
        assert_eq!(
            card["refresh"]["userIds"].as_array().map(Vec::len),
            Some(MAX_REFRESH_USER_IDS)
        );
        let data = CardData::from_json(&card["refresh"]["action"]["data"]);
        assert_eq!(
            data.map(|d| d.verdict),
            Ok(None),
            "refresh carries no verdict"
        );
        let input = card["body"]
            .as_array()
            .and_then(|b| b.iter().find(|e| e["type"] == "Input.Text"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(input["id"], REASON_INPUT_ID);
        assert_eq!(input["label"], "Reason (required)");

        for state in [
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Expired,
            RequestState::Cancelled,
            RequestState::Executed,
        ] {
            let card = request_card(&record(state), &options, None);
            assert!(card.get("actions").is_none(), "{state}");
            assert!(card.get("refresh").is_none(), "{state}");
            assert!(!card.to_string().contains("Input.Text"), "{state}");
        }
    }

    #[test]
    fn notice_comes_first_and_is_literal() {
        let r = record(RequestState::Pending);
        let card = request_card(
            &r,
            &CardOptions::default(),
            Some(&Notice::refused("**no** {{x}}")),
        );
        let first = &card["body"][0];
        assert_eq!(first["style"], "attention");
        assert_eq!(first["items"][0]["type"], "RichTextBlock");
        let text = first["items"][0]["inlines"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.starts_with("**no**") && !text.contains("{{"), "{text}");
    }

    #[test]
    fn card_data_round_trips_and_rejects_junk() {
        let data = CardData {
            request_id: RequestId::new(),
            digest: Digest([7; 32]),
            verdict: Some(Verdict::Deny),
            reason: None,
        };
        let mut json = data.to_json();
        assert_eq!(CardData::from_json(&json), Ok(data.clone()));
        json["reason"] = json!("  too risky  ");
        assert_eq!(
            CardData::from_json(&json).map(|d| d.reason),
            Ok(Some("too risky".to_owned()))
        );
        json["reason"] = json!("   ");
        assert_eq!(CardData::from_json(&json).map(|d| d.reason), Ok(None));
        json["reason"] = json!("x".repeat(MAX_REASON_CHARS + 1));
        assert_eq!(
            CardData::from_json(&json),
            Err(CardDataError::ReasonTooLong)
        );
        json["reason"] = json!(5);
        assert!(CardData::from_json(&json).is_err());
        let mut json = data.to_json();
        json["verdict"] = json!("APPROVE");
        assert_eq!(
            CardData::from_json(&json),
            Err(CardDataError::Invalid("verdict"))
        );
        let mut json = data.to_json();
        json["digest"] = json!("sha256:abc");
        assert_eq!(
            CardData::from_json(&json),
            Err(CardDataError::Invalid("digest"))
        );
        let mut json = data.to_json();
        json["request_id"] = json!(12);
        assert_eq!(
            CardData::from_json(&json),
            Err(CardDataError::Invalid("request_id"))
        );
        assert_eq!(
            CardData::from_json(&json!([1])),
            Err(CardDataError::NotAnObject)
        );
    }
    #[test]
    fn many_long_hostile_names_are_bounded_and_counted() {
        let mut r = record(RequestState::Approved);
        std::sync::Arc::make_mut(&mut r.requirement).quorum = 40;
        let name = format!("\u{202E}{}", "<&>".repeat(40));
        for i in 0..40 {
            r.reviews
                .push(review(&format!("{name}{i}"), Verdict::Approve, None));
        }
        let text = status(&r);
        assert!(
            text.chars().count() < MAX_NAMES_CHARS + 200,
            "{}",
            text.chars().count()
        );
        assert!(text.contains(" more (40 of 40)."), "{text}");
        assert!(
            text.contains("‹U+202E›") && !text.contains('\u{202E}'),
            "{text}"
        );
    }

    /// Values long in bytes (four-byte emoji everywhere an agent or reviewer writes) and many
    /// approvers: the card still fits a Teams message, and the digest is shown in full.
    #[test]
    fn a_card_of_hostile_text_long_in_bytes_fits_a_teams_message() {
        let long = "😀".repeat(5000);
        let mut r = record(RequestState::Pending);
        std::sync::Arc::make_mut(&mut r.requirement).quorum = 50;
        let req = &mut r.request;
        req.kind = long.clone().into();
        req.resource = long.clone().into();
        req.summary = Some(long.clone().into());
        req.justification = Some(long.clone().into());
        req.params = std::sync::Arc::new(json!({ "note": long }));
        let ctx = std::sync::Arc::make_mut(&mut req.context);
        ctx.environment = Some(long.clone());
        ctx.ticket = Some(long.clone());
        ctx.commit = Some(long.clone());
        ctx.impact = Some(long.clone());
        ctx.prompt_excerpt = Some(long.clone());
        ctx.preview = Some(Preview::diff(format!("+{long}\n").repeat(40)));
        ctx.links = (0..10)
            .map(|_| approvals_core::Link {
                label: long.clone(),
                url: long.clone(),
            })
            .collect();
        for i in 0..49 {
            r.reviews
                .push(review(&format!("{long}{i}"), Verdict::Approve, Some(&long)));
        }
        let card = request_card(&r, &CardOptions::default(), None);
        let size = serde_json::to_vec(&card)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        assert!(size <= MAX_CARD_BYTES, "{size} bytes");
        assert!(card.to_string().contains(&r.digest.to_string()));
        // An ordinary card is rendered with the full budget.
        let plain = request_card(
            &record(RequestState::Pending),
            &CardOptions::default(),
            None,
        );
        assert!(plain.to_string().contains("db://prod/main"));
    }

    #[test]
    fn a_long_preview_is_monospace_cut_at_whole_lines_and_links_the_console() {
        let mut r = record(RequestState::Pending);
        let diff: String = (0..300)
            .map(|i| {
                format!(
                    "+line {i} **bold** [x](https://e.vil) {{{{DATE(2026-01-01T00:00:00Z)}}}}\n"
                )
            })
            .collect();
        std::sync::Arc::make_mut(&mut r.request.context).preview = Some(Preview::diff(diff));
        let options = CardOptions {
            console_url: Some(url::Url::parse("https://approvals.example.com/").expect("url")),
            ..CardOptions::default()
        };
        let card = request_card(&r, &options, None);
        let body = card["body"].as_array().cloned().unwrap_or_default();
        let preview = body
            .iter()
            .find(|b| b["items"][0]["text"] == "Preview: Diff")
            .cloned()
            .unwrap_or_default();
        let code = &preview["items"][1]["inlines"][0];
        assert_eq!(code["type"], "TextRun", "a text run renders no Markdown");
        assert_eq!(code["fontType"], "Monospace");
        let text = code["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("+line 0 **bold** [x](https://e.vil) {｛DATE"),
            "{text}"
        );
        assert!(!text.contains("{{"), "no date function survives: {text}");
        let shown = text.lines().count();
        assert!((1..=SHOWN_LINES).contains(&shown), "{shown} lines");
        assert!(text.chars().count() <= MAX_PARAMS_CHARS);
        let note = preview["items"][2]["inlines"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            note.contains(&format!("{} more lines not shown", 300 - shown))
                && note.contains(&r.digest.to_string())
                && note.contains(&format!("approvals show {}", r.id)),
            "{note}"
        );
        let open = body
            .iter()
            .find(|b| b["type"] == "ActionSet")
            .map(|b| b["actions"][0].clone())
            .unwrap_or_default();
        assert_eq!(open["type"], "Action.OpenUrl");
        assert_eq!(
            open["url"],
            format!("https://approvals.example.com/console/requests/{}", r.id)
        );
        // Without a console there is no link, and a short preview is whole.
        std::sync::Arc::make_mut(&mut r.request.context).preview =
            Some(Preview::dry_run("Plan: 1 to change."));
        let card = request_card(&r, &CardOptions::default(), None);
        assert!(!card.to_string().contains("Action.OpenUrl"));
        assert!(card.to_string().contains("Plan: 1 to change."));
        assert!(!card.to_string().contains("more lines not shown"));
    }

    #[test]
    fn a_plan_shows_each_action_with_its_digest_or_says_how_many_were_left_out() {
        use approvals_core::plan::{MAX_PLAN_ITEMS, PlanItem, PlanTerms};
        let plan = |n: usize, why: &str| {
            let items = (0..n)
                .map(|i| {
                    let action = ActionRequest::new("db.migrate", format!("db://prod/t{i}"))
                        .params(serde_json::json!({ "why": why }));
                    PlanItem {
                        digest: action.digest(),
                        action,
                    }
                })
                .collect();
            let mut r = record(RequestState::Pending);
            let initiator = r.request.initiator.clone().expect("initiator");
            r.request = PlanTerms { items }.to_request(initiator, None);
            r.digest = r.request.digest();
            r
        };
        let block_of = |card: &Value| {
            card["body"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| {
                    b["items"][0]["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("Plan: "))
                })
                .cloned()
                .unwrap_or_default()
        };
        let small = plan(2, "**bold** [x](https://e.vil)");
        let block = block_of(&request_card(&small, &CardOptions::default(), None));
        let code = &block["items"][1]["inlines"][0];
        assert_eq!(code["fontType"], "Monospace");
        let text = code["text"].as_str().unwrap_or_default();
        let terms = PlanTerms::of(&small).expect("plan");
        for (i, item) in terms.items.iter().enumerate() {
            assert!(
                text.contains(&format!("{}. db.migrate on db://prod/t{i}", i + 1)),
                "{text}"
            );
            assert!(text.contains(&item.digest.to_string()), "{text}");
        }
        assert!(block["items"].get(2).is_none(), "nothing left out");

        let large = plan(MAX_PLAN_ITEMS, &"x".repeat(200));
        let block = block_of(&request_card(&large, &CardOptions::default(), None));
        let text = block["items"][1]["inlines"][0]["text"]
            .as_str()
            .unwrap_or_default();
        let shown = text.matches(". db.migrate on ").count();
        assert!((1..MAX_PLAN_ITEMS).contains(&shown), "{shown}");
        let note = block["items"][2]["inlines"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            note.starts_with(&format!(
                "… {} more actions not shown",
                MAX_PLAN_ITEMS - shown
            )) && note.contains(&format!("approvals show {}", large.id)),
            "{note}"
        );
    }
}
