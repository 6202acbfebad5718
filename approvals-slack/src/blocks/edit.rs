//! Block Kit for edit on approve: the "Edit and approve" button, the edit modal (one input per
//! editable parameter, then the reason), and the block that says who edited the action and
//! what changed. What may be edited is core's rule ([`approvals_core::edit`]); this module only
//! shows it.

use approvals_core::RequestRecord;
use approvals_core::edit::{field_text, may_edit};
use serde_json::{Value, json};

use super::{MAX_REASON_CHARS, REASON_ACTION_ID, REASON_BLOCK_ID, md, name_md, plain};
use crate::limits;
use crate::text::{mrkdwn, one_line, truncate, truncate_mrkdwn};

/// `action_id` of the "Edit and approve" button.
pub const ACTION_EDIT: &str = "approvals.edit";
/// `callback_id` of the edit modal.
pub const EDIT_CALLBACK_ID: &str = "approvals.edit";
/// Prefix of the `block_id` of each parameter's input in the edit modal; the JSON pointer of
/// the parameter follows it (`approvals.edit:/rows`).
pub const EDIT_BLOCK_PREFIX: &str = "approvals.edit:";
/// `action_id` of each parameter's `plain_text_input` in the edit modal.
pub const EDIT_ACTION_ID: &str = "value";
/// Longest value a reviewer may type for one parameter (Slack's `plain_text_input` limit). A
/// parameter whose current value is longer is not offered for editing in Slack.
pub const MAX_EDIT_VALUE_CHARS: usize = limits::MAX_PLAIN_TEXT_INPUT_CHARS;
/// Longest shown value (before and after) of one changed parameter in the message.
pub const MAX_CHANGE_VALUE_CHARS: usize = 200;

/// One parameter the edit modal offers: its JSON pointer and its current value as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditableField {
    /// The parameter, as a JSON pointer (`/rows`).
    pub pointer: String,
    /// Its current value as [`field_text`] shows it.
    pub text: String,
    /// Whether the current value is text (an empty answer is then a valid value).
    pub is_text: bool,
}

/// What a reviewer may edit on `record` in Slack: the parameters of the rule's `editable`
/// list that the action has, each small enough for a `plain_text_input`. Refused, with a
/// sentence for the reviewer, when the request is not pending, its kind is reserved, core's
/// rule refuses every edit of it (no editable parameters, a standing grant or plan, a preview),
/// or no editable parameter can be shown.
pub fn editable_fields(record: &RequestRecord) -> Result<Vec<EditableField>, String> {
    // Core's rule for whether an edit could be made at all.
    may_edit(record).map_err(|refused| refused.to_string())?;
    let request = &record.request;
    let editable = &record.requirement.editable;
    let fields: Vec<EditableField> = editable
        .iter()
        .filter(|p| block_id(p).chars().count() <= limits::MAX_BLOCK_ID_CHARS)
        .filter_map(|pointer| {
            let current = request.params.pointer(pointer)?;
            let text = field_text(current);
            (text.chars().count() <= MAX_EDIT_VALUE_CHARS).then(|| EditableField {
                pointer: pointer.clone(),
                text,
                is_text: current.is_string(),
            })
        })
        .collect();
    if fields.is_empty() {
        return Err(
            "none of the parameters this rule lets reviewers edit can be edited in Slack; use the console"
                .into(),
        );
    }
    Ok(fields)
}

/// The `block_id` of the input for the parameter at `pointer`.
pub fn block_id(pointer: &str) -> String {
    format!("{EDIT_BLOCK_PREFIX}{pointer}")
}

/// The "Edit and approve" button of a pending request whose parameters reviewers may edit,
/// carrying `value` (the request id and digest, as Approve and Deny do).
pub(super) fn edit_button(record: &RequestRecord, value: &str) -> Option<Value> {
    editable_fields(record).ok()?;
    Some(json!({
        "type": "button",
        "action_id": ACTION_EDIT,
        "text": plain("Edit and approve", limits::MAX_BUTTON_TEXT_CHARS),
        "value": value,
    }))
}

/// The modal in which a reviewer edits the parameters of `fields` and approves the edited
/// action: one `plain_text_input` per parameter, labelled with its pointer and holding its
/// current value, then the reason (required when `reason_required`). `private_metadata` is
/// round-tripped by Slack to the `view_submission`.
pub fn edit_modal(
    record: &RequestRecord,
    fields: &[EditableField],
    reason_required: bool,
    private_metadata: &str,
) -> Value {
    let req = &record.request;
    let question = format!(
        "Approve {} on {} with the parameters below? Only these may change; each keeps its type (text, a number, true or false, or JSON).",
        truncate(&one_line(&req.kind), 200, ""),
        truncate(&one_line(&req.resource), 300, "")
    );
    let mut blocks = vec![
        json!({"type": "section", "text": plain(&question, limits::MAX_SECTION_TEXT_CHARS)}),
        json!({
            "type": "context",
            "elements": [md(
                &format!("Request `{}` · Digest `{}`", record.id, record.digest),
                limits::MAX_TEXT_OBJECT_CHARS,
            )],
        }),
    ];
    for field in fields {
        let multiline = field.text.contains('\n') || field.text.chars().count() > 80;
        let mut element = json!({
            "type": "plain_text_input",
            "action_id": EDIT_ACTION_ID,
            "multiline": multiline,
            "max_length": MAX_EDIT_VALUE_CHARS,
        });
        if !field.text.is_empty() {
            element["initial_value"] = json!(field.text);
        }
        blocks.push(json!({
            "type": "input",
            "block_id": block_id(&field.pointer),
            "optional": field.is_text,
            "label": plain(&one_line(&field.pointer), limits::MAX_INPUT_LABEL_CHARS),
            "element": element,
        }));
    }
    blocks.push(json!({
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
    }));
    blocks.truncate(limits::MAX_MODAL_BLOCKS);
    json!({
        "type": "modal",
        "callback_id": EDIT_CALLBACK_ID,
        "title": plain("Edit and approve", limits::MAX_MODAL_TITLE_CHARS),
        "submit": plain("Approve edited", limits::MAX_MODAL_BUTTON_CHARS),
        "close": plain("Cancel", limits::MAX_MODAL_BUTTON_CHARS),
        "private_metadata": private_metadata,
        "blocks": blocks,
    })
}

/// The block saying that the action shown was edited by a reviewer, by whom, from which
/// digest, and each change (`/rows: 800 → 200`), escaped for `mrkdwn` and within
/// [`limits::MAX_SECTION_TEXT_CHARS`]. `None` when the action was never edited.
pub(super) fn edited_block(record: &RequestRecord) -> Option<Value> {
    let review = record.last_edit()?;
    let edit = review.edit.as_deref()?;
    let mut text = format!(
        "✏️ *Edited* by {} before approval. The action shown is the edited one (digest `{}`); it was asked for as digest `{}`.",
        name_md(&review.reviewer),
        record.digest.short(),
        record.asked_digest().short(),
    );
    for change in &edit.changes {
        text.push_str("\n• ");
        text.push_str(&mrkdwn(&change.line(MAX_CHANGE_VALUE_CHARS)));
    }
    let note = format!(
        " (more changes not shown; the approval covers digest {})",
        record.digest.short()
    );
    let text = truncate_mrkdwn(&text, limits::MAX_SECTION_TEXT_CHARS, &note);
    Some(json!({"type": "section", "text": md(&text, limits::MAX_SECTION_TEXT_CHARS)}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::edit::{EditRecord, FieldChange};
    use approvals_core::{Decision, Principal, RequestState, ReviewRecord, Verdict};
    use approvals_testkit::fixtures;
    use std::sync::Arc;

    fn pending(editable: &[&str], params: Value) -> RequestRecord {
        let mut r = fixtures::full_record();
        r.state = RequestState::Pending;
        r.reviews.clear();
        r.resolution = None;
        Arc::make_mut(&mut r.request.context).preview = None;
        r.request.params = Arc::new(params);
        Arc::make_mut(&mut r.requirement).editable =
            editable.iter().map(|s| (*s).to_owned()).collect();
        r.digest = r.request.digest();
        r
    }

    #[test]
    fn only_editable_parameters_the_action_has_are_offered() {
        let r = pending(
            &["/rows", "/missing", "/filter/region"],
            json!({"rows": 800, "filter": {"region": "eu"}, "table": "t"}),
        );
        let fields = editable_fields(&r).expect("editable");
        let pointers: Vec<_> = fields.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(pointers, ["/rows", "/filter/region"]);
        assert_eq!(fields[0].text, "800");
        assert!(!fields[0].is_text && fields[1].is_text);

        let too_long = pending(
            &["/rows"],
            json!({"rows": "x".repeat(MAX_EDIT_VALUE_CHARS + 1)}),
        );
        assert!(editable_fields(&too_long).is_err());
        let none = pending(&[], json!({"rows": 1}));
        assert!(editable_fields(&none).is_err());
        let mut reserved = pending(&["/rows"], json!({"rows": 1}));
        reserved.request.kind = "Approvals.Plan".into();
        assert!(editable_fields(&reserved).is_err());
    }

    #[test]
    fn the_modal_stays_within_slacks_limits_whatever_the_values() {
        let hostile = "<!channel> *x*\u{202E}".repeat(200);
        let r = pending(&["/rows", "/note"], json!({"rows": 800, "note": hostile}));
        let fields = editable_fields(&r).expect("editable");
        let modal = edit_modal(&r, &fields, true, "meta");
        crate::fake::validate_view(&modal).expect("valid modal");
        let inputs: Vec<&Value> = modal["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "input")
            .collect();
        assert_eq!(inputs.len(), 3);
        assert_eq!(inputs[0]["block_id"], "approvals.edit:/rows");
        assert_eq!(inputs[0]["label"]["text"], "/rows");
        assert_eq!(inputs[0]["element"]["initial_value"], "800");
        assert_eq!(inputs[1]["element"]["initial_value"], hostile.as_str());
        assert_eq!(inputs[2]["block_id"], REASON_BLOCK_ID);
        assert_eq!(inputs[2]["optional"], false);
    }

    #[test]
    fn the_edited_block_is_escaped_and_bounded() {
        let mut r = pending(&["/rows"], json!({"rows": 200}));
        let changes = (0..20)
            .map(|i| FieldChange {
                field: format!("/f{i}"),
                before: json!("<!channel> *bold* ".repeat(40)),
                after: json!(i),
            })
            .collect();
        r.reviews.push(ReviewRecord {
            reviewer: Principal::human("sam@example.com").with_name("Sam <@U1>"),
            verdict: Verdict::Approve,
            reason: None,
            channel: "slack".into(),
            at: fixtures::epoch(),
            edit: Some(Box::new(EditRecord {
                from: approvals_core::Digest([1; 32]),
                to: r.digest,
                changes,
                decision: Decision::Allow { rule: None },
            })),
            step_up: None,
        });
        let block = edited_block(&r).expect("edited");
        crate::fake::validate_blocks(&json!([block])).expect("valid");
        let text = block["text"]["text"].as_str().unwrap_or_default();
        assert!(text.chars().count() <= limits::MAX_SECTION_TEXT_CHARS);
        assert!(
            !text.contains("<!channel>") && !text.contains("<@U1>"),
            "{text}"
        );
        assert!(text.contains("Sam &lt;@U1&gt;"), "{text}");
        assert!(text.contains("• /f0: &lt;!channel&gt; ＊bold＊"), "{text}");
        assert!(text.contains("more changes not shown"), "{text}");
        assert!(
            text.contains(&approvals_core::Digest([1; 32]).short()),
            "{text}"
        );
    }
}
