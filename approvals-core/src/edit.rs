//! Edits on approve: a reviewer approves a changed version of an action, changing only the
//! parameters the policy rule lists as `editable`, each to a value of the same JSON type.
//!
//! What an edit may change is decided here, once, for every channel: [`edit_action`] takes the
//! stored action and the parameters a reviewer proposes and returns the edited action with
//! what changed, or why the edit is refused. The rest of the rule (the policy asked again
//! about the edited action, its new digest, the quorum counted again) is the lifecycle's
//! ([`lifecycle::edit`](crate::lifecycle::edit)).
//!
//! ```
//! use approvals_core::edit::edit_action;
//! use approvals_core::ActionRequest;
//! use serde_json::json;
//!
//! let asked = ActionRequest::new("data.export", "db://prod/customers")
//!     .params(json!({"rows": 5000, "table": "customers"}));
//! let editable = vec!["/rows".to_owned()];
//! let (edited, changes) = edit_action(&asked, &editable, &json!({"rows": 500, "table": "customers"}))
//!     .expect("rows may change");
//! assert_eq!(edited.params["rows"], 500);
//! assert_eq!(changes[0].field, "/rows");
//! // Anything else is refused.
//! assert!(edit_action(&asked, &editable, &json!({"rows": 500, "table": "orders"})).is_err());
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::PLAN_KIND;
use crate::policy::Decision;
use crate::request::{ActionRequest, Digest};
use crate::standing::{STANDING_KIND, is_reserved_kind};
use crate::store::{RequestRecord, RequestState};

/// The most parameters one edit may change: a rule lists at most this many.
pub const MAX_EDITED_FIELDS: usize = 20;

/// One parameter a reviewer changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Which parameter, as a JSON pointer (`/rows`).
    pub field: String,
    /// Its value as asked for.
    pub before: Value,
    /// Its value as approved.
    pub after: Value,
}

/// An edit, as stored with the review that made it: the digest it replaced, the digest of the
/// edited action, what changed, and the policy's decision on the edited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRecord {
    /// The digest of the action before this edit.
    pub from: Digest,
    /// The digest of the edited action: what the quorum is counted against from now on.
    pub to: Digest,
    /// The parameters that changed.
    pub changes: Vec<FieldChange>,
    /// What the policy decided about the edited action.
    pub decision: Decision,
}

/// Why an edit is refused. Each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditRefusal {
    /// The policy rule lists no editable parameters.
    #[error("the policy rule does not let reviewers edit this action; approve or deny it as asked")]
    NotEditable,
    /// Standing grants and plans are approved as proposed.
    #[error("a {0} cannot be edited; deny it and propose another")]
    ReservedKind(&'static str),
    /// An action carrying a preview: the preview shows the original's effect.
    #[error(
        "this action carries a preview of what it would change; an edited action would not match it, so deny it and ask for a new one"
    )]
    HasPreview,
    /// The edited parameters are not what was asked for with editable values changed.
    #[error("{0}")]
    OutOfBounds(String),
    /// Nothing changed.
    #[error("the edit changes nothing; approve the action as asked instead")]
    Unchanged,
    /// The request is no longer pending.
    #[error("the request is already {0}")]
    NotPending(RequestState),
    /// The rule (of the action as asked, or of the edited one) requires a step-up proof of each
    /// approval, and a proof is of one version of the action.
    #[error(
        "this action's rule requires a passkey confirmation of each approval, which is of the action as shown; approve or deny it as asked in the review console"
    )]
    StepUp,
}

/// Whether reviewers may edit `record` at all, before anyone types a value: it is pending and
/// [`check_editable`] holds. Every channel asks this before it offers an edit form (the form's
/// values are checked by [`edit_action`] when the edit is decided).
pub fn may_edit(record: &RequestRecord) -> Result<(), EditRefusal> {
    if record.state != RequestState::Pending {
        return Err(EditRefusal::NotPending(record.state));
    }
    if record.requirement.step_up.is_some() {
        return Err(EditRefusal::StepUp);
    }
    check_editable(&record.request, &record.requirement.editable)
}

/// Whether an action may be edited under a rule listing `editable` parameters, whatever the
/// values: not a standing grant or a plan, the rule lists some parameters, and the action
/// carries no preview (which shows what the action as asked would do).
pub fn check_editable(asked: &ActionRequest, editable: &[String]) -> Result<(), EditRefusal> {
    match asked.kind.as_str() {
        STANDING_KIND => return Err(EditRefusal::ReservedKind("standing grant")),
        PLAN_KIND => return Err(EditRefusal::ReservedKind("plan")),
        // Any other spelling of the reserved namespace, compared canonically.
        kind if is_reserved_kind(kind) => {
            return Err(EditRefusal::ReservedKind("request of a reserved kind"));
        }
        _ => {}
    }
    if editable.is_empty() {
        return Err(EditRefusal::NotEditable);
    }
    if asked.context.preview.is_some() {
        return Err(EditRefusal::HasPreview);
    }
    Ok(())
}

/// The action `asked` with the parameters `proposed` by a reviewer, who may change only the
/// parameters at the JSON pointers `editable`, each of which the action must have, each to a
/// value of the same JSON type (a number stays a number, a list a list). Everything else
/// stays as asked: kind, resource, initiator, context, justification. The agent's summary is
/// dropped, since it described the action before the edit. Returns the edited action and what
/// changed.
pub fn edit_action(
    asked: &ActionRequest,
    editable: &[String],
    proposed: &Value,
) -> Result<(ActionRequest, Vec<FieldChange>), EditRefusal> {
    check_editable(asked, editable)?;
    let fields = || editable.join(", ");
    // What `proposed` must be: the asked parameters with only editable values replaced.
    let mut expected = Value::clone(&asked.params);
    let mut changes = Vec::new();
    for pointer in editable {
        let Some(before) = asked.params.pointer(pointer) else {
            continue; // The rule names a parameter this action does not have.
        };
        let after = proposed.pointer(pointer).ok_or_else(|| {
            EditRefusal::OutOfBounds(format!(
                "the edit leaves out {pointer}; send every parameter, changing only {}",
                fields()
            ))
        })?;
        if json_type(before) != json_type(after) {
            return Err(EditRefusal::OutOfBounds(format!(
                "{pointer} must stay {} (the edit makes it {})",
                json_type(before),
                json_type(after)
            )));
        }
        if before != after {
            changes.push(FieldChange {
                field: pointer.clone(),
                before: before.clone(),
                after: after.clone(),
            });
            if let Some(slot) = expected.pointer_mut(pointer) {
                *slot = after.clone();
            }
        }
    }
    if &expected != proposed {
        let field = first_difference(&expected, proposed, String::new());
        return Err(EditRefusal::OutOfBounds(format!(
            "{field} may not be changed; reviewers may change only {}",
            fields()
        )));
    }
    if changes.is_empty() {
        return Err(EditRefusal::Unchanged);
    }
    let mut edited = asked.clone();
    edited.params = Arc::new(proposed.clone());
    edited.summary = None;
    Ok((edited, changes))
}

/// A parameter path as a JSON pointer: a dotted path (`target.role`) or a JSON pointer
/// (`/items/0`), as policy rules name parameters. `None` for an empty path or segment.
pub fn pointer(path: &str) -> Option<String> {
    let segments = param_segments(path);
    if path.trim().is_empty() || segments.iter().any(String::is_empty) {
        return None;
    }
    Some(
        segments
            .iter()
            .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect(),
    )
}

/// The segments of a parameter path: a JSON pointer (`/items/0`) or a dotted path
/// (`target.role`).
pub(crate) fn param_segments(path: &str) -> Vec<String> {
    match path.strip_prefix('/') {
        Some(pointer) => pointer
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => path.split('.').map(str::to_owned).collect(),
    }
}

/// How a reviewer's form shows the current value of an editable parameter: text as it is,
/// anything else as compact JSON (`800`, `true`, `["a","b"]`). [`params_from_fields`] reads
/// it back.
pub fn field_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The full parameters a reviewer's form proposes: the action's `params` with each
/// `(pointer, text)` from the form put in place, the text read as the parameter's own type
/// (text as it is; a number, true or false, a list or an object as JSON). Every channel
/// with a form (console, Slack modal, Teams card) reads its inputs through this, then submits
/// the result as the review's edit; the bounds are checked by [`edit_action`] when it
/// is decided. A field that is not editable, or not in the action, is refused here.
pub fn params_from_fields<'a>(
    params: &Value,
    editable: &[String],
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Value, EditRefusal> {
    let mut proposed = params.clone();
    for (pointer, text) in fields {
        if !editable.iter().any(|e| e == pointer) {
            return Err(EditRefusal::OutOfBounds(format!(
                "{pointer} may not be changed; reviewers may change only {}",
                editable.join(", ")
            )));
        }
        let Some(slot) = proposed.pointer_mut(pointer) else {
            return Err(EditRefusal::OutOfBounds(format!(
                "the action has no parameter {pointer}"
            )));
        };
        *slot = match &*slot {
            Value::String(_) => Value::String(text.to_owned()),
            current => {
                let read: Value = serde_json::from_str(text.trim()).map_err(|_| {
                    EditRefusal::OutOfBounds(format!(
                        "{pointer} must be {} written as JSON (it was {:?})",
                        json_type(current),
                        crate::text::truncate(text, 40)
                    ))
                })?;
                if json_type(&read) != json_type(current) {
                    return Err(EditRefusal::OutOfBounds(format!(
                        "{pointer} must stay {} (the edit makes it {})",
                        json_type(current),
                        json_type(&read)
                    )));
                }
                read
            }
        };
    }
    Ok(proposed)
}

impl FieldChange {
    /// One line for people: `/rows: 800 → 200`, each value as [`field_text`] shows it, cut to
    /// `budget` characters each. Surfaces escape it for their own format.
    pub fn line(&self, budget: usize) -> String {
        let cut = |v: &Value| crate::text::truncate(&field_text(v), budget).into_owned();
        format!(
            "{}: {} → {}",
            self.field,
            cut(&self.before),
            cut(&self.after)
        )
    }
}

/// A JSON value's type, in words (`a number`, `text`, `a list`, ...): what a form says a
/// field must hold, and what refusals name.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The JSON pointer of the first place `a` and `b` differ (`""` is the whole value).
fn first_difference(a: &Value, b: &Value, at: String) -> String {
    let child = |key: &str| format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) if other == value => {}
                    Some(other) => return first_difference(value, other, child(key)),
                    None => return child(key),
                }
            }
            b.keys()
                .find(|key| !a.contains_key(*key))
                .map(|key| child(key))
                .unwrap_or(at)
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .map(|i| first_difference(&a[i], &b[i], child(&i.to_string())))
            .unwrap_or(at),
        _ if at.is_empty() => "the parameters as a whole".to_owned(),
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preview::Preview;
    use serde_json::json;

    fn asked() -> ActionRequest {
        ActionRequest::new("data.export", "db://prod/customers")
            .params(json!({"rows": 5000, "table": "customers", "filter": {"region": "eu", "tags": ["a"]}}))
            .summary("Export 5,000 customers")
    }

    fn pointers(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_editable_value_changes_and_nothing_else_does() {
        let editable = pointers(&["/rows", "/filter/region"]);
        let proposed =
            json!({"rows": 10, "table": "customers", "filter": {"region": "us", "tags": ["a"]}});
        let (edited, changes) = edit_action(&asked(), &editable, &proposed).expect("in bounds");
        assert_eq!(*edited.params, proposed);
        assert_ne!(edited.digest(), asked().digest());
        assert_eq!(
            edited.summary, None,
            "the agent's summary described the old action"
        );
        assert_eq!(edited.kind, "data.export");
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].field, "/filter/region");
        assert_eq!(changes[1].before, json!("eu"));
        assert_eq!(changes[1].after, json!("us"));
    }

    #[test]
    fn every_change_outside_the_editable_parameters_is_refused() {
        let editable = pointers(&["/rows"]);
        let cases = [
            (
                json!({"rows": 10, "table": "orders", "filter": {"region": "eu", "tags": ["a"]}}),
                "/table",
            ),
            (
                json!({"rows": 10, "table": "customers", "filter": {"region": "eu", "tags": ["a", "b"]}}),
                "/filter/tags",
            ),
            (
                json!({"rows": 10, "table": "customers", "filter": {"region": "eu", "tags": ["a"]}, "extra": 1}),
                "/extra",
            ),
            (
                json!({"rows": 10, "filter": {"region": "eu", "tags": ["a"]}}),
                "/table",
            ),
            (
                json!({"rows": "10", "table": "customers", "filter": {"region": "eu", "tags": ["a"]}}),
                "/rows",
            ),
            (
                json!({"table": "customers", "filter": {"region": "eu", "tags": ["a"]}}),
                "/rows",
            ),
            (json!([1, 2]), "/rows"),
        ];
        for (proposed, field) in cases {
            match edit_action(&asked(), &editable, &proposed) {
                Err(EditRefusal::OutOfBounds(why)) => {
                    assert!(why.contains(field), "{proposed}: {why} should name {field}")
                }
                other => panic!("{proposed}: expected a refusal naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn form_fields_are_read_as_each_parameters_own_type() {
        let editable = pointers(&["/rows", "/filter/region", "/filter/tags"]);
        let params = asked().params;
        assert_eq!(field_text(&params["rows"]), "5000");
        assert_eq!(field_text(&params["filter"]["region"]), "eu");
        let proposed = params_from_fields(
            &params,
            &editable,
            [
                ("/rows", " 250 "),
                ("/filter/region", "\"us\""),
                ("/filter/tags", "[\"a\",\"b\"]"),
            ],
        )
        .expect("read");
        assert_eq!(proposed["rows"], json!(250));
        assert_eq!(
            proposed["filter"]["region"],
            json!("\"us\""),
            "text stays text"
        );
        assert_eq!(proposed["filter"]["tags"], json!(["a", "b"]));
        for (field, text, says) in [
            ("/rows", "many", "must be a number"),
            ("/rows", "\"250\"", "must stay a number"),
            ("/table", "orders", "may not be changed"),
            ("/filter/tags", "{}", "must stay a list"),
        ] {
            let refused = params_from_fields(&params, &editable, [(field, text)]).unwrap_err();
            assert!(
                refused.to_string().contains(says),
                "{field}={text}: {refused}"
            );
        }
        let change = FieldChange {
            field: "/rows".into(),
            before: json!(5000),
            after: json!(250),
        };
        assert_eq!(change.line(40), "/rows: 5000 → 250");
    }

    #[test]
    fn a_rule_without_editable_parameters_a_reserved_kind_a_preview_or_no_change_is_refused() {
        let proposed =
            json!({"rows": 10, "table": "customers", "filter": {"region": "eu", "tags": ["a"]}});
        assert_eq!(
            edit_action(&asked(), &[], &proposed).unwrap_err(),
            EditRefusal::NotEditable
        );
        let editable = pointers(&["/rows"]);
        let mut plan = asked();
        plan.kind = PLAN_KIND.into();
        assert!(matches!(
            edit_action(&plan, &editable, &proposed),
            Err(EditRefusal::ReservedKind("plan"))
        ));
        let previewed = asked().preview(Preview::diff("-a\n+b\n"));
        assert_eq!(
            edit_action(&previewed, &editable, &proposed).unwrap_err(),
            EditRefusal::HasPreview
        );
        assert_eq!(
            edit_action(&asked(), &editable, &asked().params).unwrap_err(),
            EditRefusal::Unchanged
        );
    }
}
