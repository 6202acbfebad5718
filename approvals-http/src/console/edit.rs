//! The console's edit on approve: the form that approves the action with some of its
//! parameters changed (those the rule lists as editable), and the card showing what reviewers
//! changed. The rules are the gate's; this only shows and reads the form.

use std::collections::HashMap;
use std::fmt::Write as _;

use approvals_core::RequestRecord;
use approvals_core::edit::{field_text, json_type, may_edit};

use super::Viewer;
use crate::html::escape;

/// The prefix of the form fields that carry edited values: `edit:/rows`.
pub(super) const FIELD_PREFIX: &str = "edit:";

/// The longest value the form accepts for one parameter, in characters.
const MAX_FIELD_CHARS: usize = 4000;

/// The "Edit and approve" form, for a pending request whose rule lets reviewers edit it and
/// that `v` may approve (`may_approve`, from the gate's dry-run check): one field per editable
/// parameter the action has, with its current value. Empty otherwise.
pub(super) fn edit_form(
    record: &RequestRecord,
    v: &Viewer,
    may_approve: bool,
    reason_required: bool,
) -> String {
    let editable = &record.requirement.editable;
    if !may_approve || may_edit(record).is_err() {
        return String::new();
    }
    let mut inputs = String::new();
    for (i, pointer) in editable.iter().enumerate() {
        let Some(value) = record.request.params.pointer(pointer) else {
            continue;
        };
        let _ = write!(
            inputs,
            r#"<label for="edit-{i}"><code>{pointer}</code> <span class="hint">({kind})</span></label>
<input type="text" id="edit-{i}" name="{prefix}{pointer}" value="{value}" maxlength="{max}" spellcheck="false">"#,
            pointer = escape(pointer),
            kind = json_type(value),
            prefix = FIELD_PREFIX,
            value = escape(&field_text(value)),
            max = MAX_FIELD_CHARS,
        );
    }
    if inputs.is_empty() {
        return String::new();
    }
    format!(
        r#"<details class="card decide edit" id="edit"><summary><h2>Edit and approve</h2></summary>
<p class="hint">Change what the rule lets reviewers change; everything else stays as asked. The policy is asked again about the edited action, which gets its own digest: the agent can run only the edited version, and approvals of the version above no longer count.</p>
<form method="post" action="/console/requests/{id}/decision" class="stack">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="digest" value="{digest}">
{inputs}
<label for="edit-reason">Reason{req}</label>
<textarea id="edit-reason" name="reason" rows="2" maxlength="2000" placeholder="Why you changed it (recorded in the audit trail)"{required}></textarea>
<div class="buttons"><button type="submit" name="verdict" value="approve_edited" class="approve">Approve the edited action</button></div>
</form></details>"#,
        id = record.id,
        csrf = escape(&v.csrf),
        digest = record.digest,
        req = if reason_required { " (required)" } else { "" },
        required = if reason_required { " required" } else { "" },
    )
}

/// What each edit changed, who made it and the digests before and after; empty when the
/// action was never edited.
pub(super) fn edits_card(record: &RequestRecord) -> String {
    let mut b = String::new();
    for review in &record.reviews {
        let Some(edit) = review.edit.as_deref() else {
            continue;
        };
        let mut changes = String::new();
        for change in &edit.changes {
            let _ = write!(
                changes,
                "<li><code>{}</code></li>",
                escape(&change.line(200))
            );
        }
        let _ = write!(
            b,
            r#"<li><p>Edited by {by} at {at}: the action asked for had digest <code class="digest">{from}</code>; the edited one has <code class="digest">{to}</code>.</p><ul class="changes">{changes}</ul></li>"#,
            by = escape(review.reviewer.label()),
            at = super::fragments::fmt_time(review.at),
            from = edit.from,
            to = edit.to,
        );
    }
    if b.is_empty() {
        return b;
    }
    format!(
        r#"<section class="card edited" id="edits"><h2>Edited by a reviewer</h2><p class="hint">The parameters above are the edited action's: the only version that can run. Approvals count toward its digest only.</p><ol>{b}</ol></section>"#
    )
}

/// The form's `edit:` fields as `(JSON pointer, text)`, for
/// [`Review::edit_fields`](approvals_core::Review::edit_fields).
pub(super) fn form_fields(fields: &HashMap<String, String>) -> Vec<(String, String)> {
    fields
        .iter()
        .filter_map(|(name, value)| {
            Some((name.strip_prefix(FIELD_PREFIX)?.to_owned(), value.clone()))
        })
        .collect()
}
