//! Edit on approve in Teams: the card's "Edit and approve" form, reading a submitted form
//! back into the action's parameters, and the note on a card whose action was edited.
//!
//! The rules of an edit are core's ([`approvals_core::edit`]), never restated here: the form
//! shows each editable parameter with [`field_text`], a submitted form is read back with
//! [`params_from_fields`], and the gate checks the bounds, asks the policy again and binds the
//! approval to the digest the reviewer saw. This module only shapes the form and reads it.
//!
//! The form is an `Action.ShowCard` holding one `Input.Text` per editable parameter the action
//! has (ids `edit_0`, `edit_1`, ...; the label is the parameter's JSON pointer), a reason
//! input ([`EDIT_REASON_INPUT_ID`]) and an `Action.Execute` with verb [`VERB_APPROVE_EDITED`].
//! Its `data` carries the request id, the digest shown and, under [`FIELDS_KEY`], which input
//! is which pointer; Teams merges the inputs' values into that `data`.
//!
//! A value is offered for editing only when it is shown exactly as it is: a value longer than
//! the card can carry, or holding control, bidi or other invisible characters (which an input
//! would show unmarked), is left out of the form, said so on it, and keeps its value.

use approvals_core::RequestRecord;
use approvals_core::edit::{MAX_EDITED_FIELDS, field_text};
use approvals_core::text::{is_neutralized, one_line};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::text::{literal_text, truncate};

/// `verb` of the form's "Approve with these changes" button.
pub const VERB_APPROVE_EDITED: &str = "approve_edited";
/// Key of the form data naming which input holds which parameter (`{"edit_0": "/rows"}`).
pub const FIELDS_KEY: &str = "edit_fields";
/// `id` of the form's reason `Input.Text`.
pub const EDIT_REASON_INPUT_ID: &str = "edit_reason";
/// Prefix of the ids of the form's parameter inputs (`edit_0`, `edit_1`, ...).
pub const FIELD_INPUT_PREFIX: &str = "edit_";
/// Longest parameter text a form offers, and accepts back, in characters.
pub const MAX_FIELD_CHARS: usize = 1000;

/// A submitted "Edit and approve" form, read from the action data (untrusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditForm {
    /// Each input's parameter (a JSON pointer, as the data claims) and the text typed for it.
    pub fields: Vec<(String, String)>,
    /// The reason typed into the form, trimmed; `None` when empty.
    pub reason: Option<String>,
}

/// Why a submitted form cannot be read. Each is refused as a refused edit; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditFormError {
    /// The data is not a JSON object.
    #[error("the edit form's data is not an object")]
    NotAnObject,
    /// The data does not say which input is which parameter.
    #[error("the edit form does not say which input is which parameter; open the card again")]
    MissingFields,
    /// More inputs than any rule lets reviewers edit.
    #[error("the edit form has more than {MAX_EDITED_FIELDS} inputs")]
    TooManyFields,
    /// An input id that is not one of the form's parameter inputs.
    #[error("the edit form names {0:?}, which is not one of its parameter inputs")]
    BadInputId(String),
    /// Two inputs claim the same parameter.
    #[error("the edit form has two inputs for {0}")]
    DuplicateField(String),
    /// An input's value is missing or not text.
    #[error("the edit form has no text for {0}")]
    MissingValue(String),
    /// An input's value is longer than [`MAX_FIELD_CHARS`].
    #[error("the value for {0} is longer than {MAX_FIELD_CHARS} characters")]
    TooLong(String),
    /// The reason is longer than the card allows.
    #[error("the reason is longer than {0} characters")]
    ReasonTooLong(usize),
}

/// A claimed pointer or input id, bounded for an error message.
fn shown(untrusted: &str) -> String {
    truncate(untrusted, 80, "")
}

impl EditForm {
    /// Reads a form from action `data` as merged with its inputs by the client. Every field is
    /// checked; the pointers and texts are only claims until the gate reads them against the
    /// request ([`Review::edit_fields`](approvals_core::Review::edit_fields)). A reason typed in the form wins over the card's own reason input
    /// (also merged into the data).
    pub fn from_data(data: &Value, max_reason_chars: usize) -> Result<EditForm, EditFormError> {
        let data = data.as_object().ok_or(EditFormError::NotAnObject)?;
        let map = data
            .get(FIELDS_KEY)
            .and_then(Value::as_object)
            .ok_or(EditFormError::MissingFields)?;
        if map.len() > MAX_EDITED_FIELDS {
            return Err(EditFormError::TooManyFields);
        }
        let mut fields: Vec<(String, String)> = Vec::with_capacity(map.len());
        for (input, pointer) in map {
            let numbered = input.strip_prefix(FIELD_INPUT_PREFIX).is_some_and(|n| {
                !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit())
            });
            let Some(pointer) = pointer.as_str().filter(|_| numbered) else {
                return Err(EditFormError::BadInputId(shown(input)));
            };
            if fields.iter().any(|(p, _)| p == pointer) {
                return Err(EditFormError::DuplicateField(shown(pointer)));
            }
            let text = data
                .get(input)
                .and_then(Value::as_str)
                .ok_or_else(|| EditFormError::MissingValue(shown(pointer)))?;
            if text.chars().count() > MAX_FIELD_CHARS {
                return Err(EditFormError::TooLong(shown(pointer)));
            }
            fields.push((pointer.to_owned(), text.to_owned()));
        }
        let mut reason = None;
        // The form's reason first, then the card's own reason input (`card::REASON_INPUT_ID`,
        // named here since the card module renders this one).
        for key in [EDIT_REASON_INPUT_ID, "reason"] {
            match data.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(r)) if r.trim().is_empty() => {}
                Some(Value::String(r)) => {
                    if r.trim().chars().count() > max_reason_chars {
                        return Err(EditFormError::ReasonTooLong(max_reason_chars));
                    }
                    reason = Some(r.trim().to_owned());
                    break;
                }
                Some(_) => return Err(EditFormError::MissingValue(key.to_owned())),
            }
        }
        Ok(EditForm { fields, reason })
    }
}

/// Whether `record` is an action reviewers may edit at all (core's `edit::may_edit`).
fn editable(record: &RequestRecord) -> bool {
    approvals_core::edit::may_edit(record).is_ok()
}

/// The "Edit and approve" `Action.ShowCard` for `record`, or `None` when it cannot be edited
/// (not pending, no editable parameters, a reserved kind, or core refuses every edit of it)
/// or no editable value fits an input. `data` is the card's action data
/// (request id and the digest shown, without a verdict); `field_chars` the longest value
/// offered (at most [`MAX_FIELD_CHARS`]); the reason input is required when
/// `reason_required`.
pub fn edit_show_card(
    record: &RequestRecord,
    data: Value,
    field_chars: usize,
    reason_required: bool,
    max_reason_chars: usize,
) -> Option<Value> {
    if !editable(record) {
        return None;
    }
    let field_chars = field_chars.min(MAX_FIELD_CHARS);
    let mut inputs = Vec::new();
    let mut mapping = Map::new();
    let mut left_out = Vec::new();
    for pointer in &record.requirement.editable {
        let Some(current) = record.request.params.pointer(pointer) else {
            continue; // The rule names a parameter this action does not have.
        };
        let text = field_text(current);
        if text.chars().count() > field_chars || text.chars().any(is_neutralized) {
            left_out.push(literal_text(pointer));
            continue;
        }
        let id = format!("{FIELD_INPUT_PREFIX}{}", mapping.len());
        let mut input = json!({
            "type": "Input.Text",
            "id": id,
            "label": truncate(&literal_text(pointer), 120, ""),
            "value": text,
            "maxLength": MAX_FIELD_CHARS,
        });
        if text.contains('\n') {
            input["isMultiline"] = json!(true);
        }
        inputs.push(input);
        mapping.insert(id, json!(pointer));
    }
    if mapping.is_empty() {
        return None;
    }
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": "Change the values below, then approve. Only the action with these values may run; other reviewers approve it as changed.",
        "wrap": true,
    })];
    body.extend(inputs);
    if !left_out.is_empty() {
        let note = truncate(
            &format!(
                "Not editable here (too long, or holding invisible characters): {}. Use the console to change them.",
                left_out.join(", ")
            ),
            400,
            "",
        );
        body.push(json!({
            "type": "RichTextBlock",
            "inlines": [{"type": "TextRun", "text": note, "italic": true}],
        }));
    }
    let mut reason = json!({
        "type": "Input.Text",
        "id": EDIT_REASON_INPUT_ID,
        "label": if reason_required { "Reason for the change (required)" } else { "Reason for the change (optional)" },
        "isMultiline": true,
        "maxLength": max_reason_chars,
    });
    if reason_required {
        reason["isRequired"] = json!(true);
        reason["errorMessage"] = json!("Say why you change and approve this action.");
    }
    body.push(reason);
    let mut data = data;
    if let Some(object) = data.as_object_mut() {
        object.insert(FIELDS_KEY.into(), Value::Object(mapping));
    }
    let title = "Approve with these changes";
    Some(json!({
        "type": "Action.ShowCard",
        "title": "Edit and approve",
        "card": {
            "type": "AdaptiveCard",
            "body": body,
            "actions": [{
                "type": "Action.Execute",
                "title": title,
                "verb": VERB_APPROVE_EDITED,
                "style": "positive",
                "data": data,
                "associatedInputs": "auto",
                "fallback": {"type": "Action.Submit", "title": title, "data": data},
            }],
        },
    }))
}

/// The note on a card whose action was edited: who changed it, when, and each change
/// ([`FieldChange::line`](approvals_core::edit::FieldChange::line)), as literal text (a
/// `TextRun` renders no Markdown) within `name_chars` per name and `text_chars` in all.
/// `None` when the action was never edited.
pub fn edited_note(record: &RequestRecord, name_chars: usize, text_chars: usize) -> Option<Value> {
    record.last_edit()?;
    let edits: Vec<_> = record
        .reviews
        .iter()
        .filter_map(|r| r.edit.as_deref().map(|e| (r, e)))
        .collect();
    let per_change = edits
        .iter()
        .map(|(_, e)| e.changes.len())
        .sum::<usize>()
        .max(1);
    // Each value's share of the text, so every change gets a line.
    let value_chars = (text_chars / (2 * per_change)).clamp(12, 200);
    let mut text = String::new();
    for (review, edit) in &edits {
        // One line each: a value with line breaks cannot start a line that looks like ours.
        let reviewer = &review.reviewer;
        let name = |s: &str| truncate(&literal_text(&one_line(s)), name_chars, "");
        let who = match reviewer.display_name {
            Some(_) => format!("{} ({})", name(reviewer.label()), name(&reviewer.id)),
            None => name(&reviewer.id),
        };
        text.push_str(&format!("Edited by {who} at {}:\n", utc(review.at)));
        for change in &edit.changes {
            text.push_str("  ");
            text.push_str(&literal_text(&one_line(&change.line(value_chars))));
            text.push('\n');
        }
    }
    let text = truncate(
        text.trim_end(),
        text_chars,
        &format!(" (more changes; see digest {})", record.digest.short()),
    );
    let mut changes = json!({"type": "TextRun", "text": text, "fontType": "Monospace"});
    if text.is_empty() {
        changes["text"] = json!("(no change recorded)");
    }
    Some(json!({
        "type": "Container",
        "style": "warning",
        "spacing": "Medium",
        "items": [
            {
                "type": "TextBlock",
                "text": "📝 Edited by a reviewer: the approval covers the action as changed",
                "weight": "Bolder",
                "wrap": true,
            },
            {"type": "RichTextBlock", "inlines": [changes]},
        ],
    }))
}

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_read_only_from_numbered_inputs_each_pointer_once() {
        let data = json!({
            "request_id": "x", "digest": "y",
            FIELDS_KEY: {"edit_0": "/rows", "edit_1": "/filter/region"},
            "edit_0": "200", "edit_1": "us", "reason": "card reason", EDIT_REASON_INPUT_ID: " smaller ",
        });
        let form = EditForm::from_data(&data, 100).expect("read");
        assert_eq!(
            form.fields,
            [
                ("/rows".to_owned(), "200".to_owned()),
                ("/filter/region".to_owned(), "us".to_owned())
            ]
        );
        assert_eq!(
            form.reason.as_deref(),
            Some("smaller"),
            "the form's reason wins"
        );

        let refused = |data: Value| EditForm::from_data(&data, 100).expect_err("refused");
        assert_eq!(refused(json!([])), EditFormError::NotAnObject);
        assert_eq!(
            refused(json!({"edit_0": "1"})),
            EditFormError::MissingFields
        );
        assert!(matches!(
            refused(json!({FIELDS_KEY: {"digest": "/rows"}, "digest": "1"})),
            EditFormError::BadInputId(_)
        ));
        assert!(matches!(
            refused(
                json!({FIELDS_KEY: {"edit_0": "/rows", "edit_1": "/rows"}, "edit_0": "1", "edit_1": "2"})
            ),
            EditFormError::DuplicateField(_)
        ));
        assert!(matches!(
            refused(json!({FIELDS_KEY: {"edit_0": "/rows"}, "edit_0": 5})),
            EditFormError::MissingValue(_)
        ));
        assert!(matches!(
            refused(
                json!({FIELDS_KEY: {"edit_0": "/rows"}, "edit_0": "9".repeat(MAX_FIELD_CHARS + 1)})
            ),
            EditFormError::TooLong(_)
        ));
        assert_eq!(
            refused(json!({FIELDS_KEY: {}, EDIT_REASON_INPUT_ID: "x".repeat(101)})),
            EditFormError::ReasonTooLong(100)
        );
    }
}
