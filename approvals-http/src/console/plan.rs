//! The console's view of a plan: every action it holds, each with its digest, parameters and
//! whether it ran under the plan.

use std::fmt::Write as _;

use approvals_core::RequestRecord;
use approvals_core::plan::PlanStatus;

use crate::html::escape;

/// What a plan's request page shows in place of the raw parameters: each action, in order,
/// with what an approval lets run (kind, resource, digest, environment, parameters, summary,
/// justification and preview, all escaped) and whether it ran. Empty for any other request.
pub(super) fn items_card(record: &RequestRecord) -> String {
    let Some(status) = PlanStatus::of(record) else {
        return String::new();
    };
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<section class="card plan"><h2>Plan: {n} action(s)</h2><p class="hint">Approving the plan approves each action below for one run, exactly as shown: each is bound to its own digest. Anything else the agent asks for, or an action here with anything changed, is asked for on its own.</p><ol class="plan-items" id="plan-items">"#,
        n = status.items.len()
    );
    for (i, item) in status.items.iter().enumerate() {
        let action = &item.action;
        let ran = u32::try_from(i).is_ok_and(|i| status.used.contains(&i));
        let _ = write!(
            b,
            r#"<li id="plan-item-{n}"><p><code>{kind}</code> on <code>{resource}</code>{ran}</p><dl class="kv"><dt>Digest</dt><dd><code class="digest">{digest}</code></dd>"#,
            n = i + 1,
            kind = escape(&action.kind),
            resource = escape(&action.resource),
            ran = if ran {
                r#" <span class="badge approved">ran under the plan</span>"#
            } else {
                ""
            },
            digest = item.digest,
        );
        let mut row = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                let _ = write!(b, "<dt>{k}</dt><dd>{}</dd>", escape(v));
            }
        };
        row("Environment", action.context.environment.as_deref());
        row("Summary", action.summary.as_deref());
        row("Justification", action.justification.as_deref());
        b.push_str("</dl>");
        let params = serde_json::to_string_pretty(&*action.params).unwrap_or_default();
        let _ = write!(b, r#"<pre class="params">{}</pre>"#, escape(&params));
        if let Some(preview) = &action.context.preview {
            let _ = write!(
                b,
                r#"<p class="muted">Preview: {}</p><pre class="preview">{}</pre>"#,
                escape(&preview.caption()),
                escape(&preview.text())
            );
        }
        b.push_str("</li>");
    }
    b.push_str("</ol></section>");
    b
}
