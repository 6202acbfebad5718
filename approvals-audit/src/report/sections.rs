//! The report's sections on completeness, the audit sample and the signing keys.

use std::fmt::Write as _;

use super::{EvidenceReport, cell, esc};
use crate::log::Completeness;

impl EvidenceReport {
    /// The log's completeness in words, for the CSV (`log_completeness`) and the HTML.
    pub fn completeness_text(&self) -> String {
        match &self.verification.completeness {
            Completeness::Proven { witness, size } => {
                format!("proven: the log holds all {size} entries signed by the witness {witness}")
            }
            Completeness::Unproven => "unproven: verified without a witness (--no-witness); \
                 entries cut from the end of the log would not show"
                .to_owned(),
            Completeness::Failed => {
                "failed: the witness is missing or refused, or the log was cut below it".to_owned()
            }
        }
    }

    /// The completeness line of the verification section: green when proven, red otherwise.
    pub(super) fn html_completeness(&self, h: &mut String) {
        let (class, text) = match &self.verification.completeness {
            Completeness::Proven { witness, size } => (
                "ok",
                format!(
                    "Complete: the log holds all {size} entries signed by the witness ({witness}), \
                     and agrees with it."
                ),
            ),
            Completeness::Unproven => (
                "bad",
                "Completeness UNPROVEN: this report was made with --no-witness. Entries cut from \
                 the end of the log, together with the checkpoints that signed them, would not \
                 show here: do not rely on this report being complete."
                    .to_owned(),
            ),
            Completeness::Failed => (
                "bad",
                "Completeness NOT shown: the witness was missing or refused, or the log was cut \
                 below what it signed (see the problems below)."
                    .to_owned(),
            ),
        };
        let _ = write!(
            h,
            "<p class=\"completeness {class}\" role=\"status\">{}</p>",
            esc(&text)
        );
    }

    /// The audit sample: which requests, how they were chosen, and how to choose them again.
    pub(super) fn html_sample(&self, h: &mut String) {
        let Some(sample) = &self.sample else {
            return;
        };
        let _ = write!(
            h,
            "<section><h2>Audit sample ({} of {} requests)</h2>\
             <p class=\"note\">Seed <code>{}</code>, sample size N = {}, population = {} requests \
             of the period. Method: each request is ranked by <code>SHA-256(seed || request_id)</code> \
             (UTF-8 bytes of the seed followed directly by the request id as shown, lowercase hex); \
             the N lowest are the sample (all of them when N exceeds the population). To reproduce \
             it from the CSV with standard tools:</p>\
             <pre>SEED={}; N={}\ntail -n +2 evidence.csv | cut -d, -f1 | tr -d '\"' | while read -r id; do\n  \
             printf '%s %s\\n' \"$(printf '%s%s' \"$SEED\" \"$id\" | sha256sum | cut -d' ' -f1)\" \"$id\"\n\
             done | sort | head -n \"$N\" | cut -d' ' -f2</pre>\
             <table><thead><tr><th>#</th><th>Request</th><th>Action</th><th>Outcome</th>\
             <th>Reviewers and reasons</th><th>Rank</th></tr></thead><tbody>",
            sample.selected.len(),
            sample.population,
            esc(&sample.seed),
            sample.requested,
            sample.population,
            esc(&shell_quote(&sample.seed)),
            sample.requested,
        );
        if sample.selected.is_empty() {
            h.push_str(
                "<tr><td colspan=\"6\" class=\"empty\">No requests in this period.</td></tr>",
            );
        }
        for (i, (id, rank)) in sample.selected.iter().enumerate() {
            let request = self.requests.iter().find(|r| r.request_id == *id);
            let (action, outcome, reviews) = match request {
                Some(r) => (
                    format!("{}<br><code>{}</code>", cell(&r.kind), cell(&r.resource)),
                    esc(r.outcome.label()),
                    r.reviews
                        .iter()
                        .map(|v| {
                            format!(
                                "{} ({}{}){}",
                                cell(&v.reviewer),
                                cell(&v.verdict),
                                v.step_up
                                    .as_deref()
                                    .map(|p| format!(", step-up: {}", cell(p)))
                                    .unwrap_or_default(),
                                v.reason
                                    .as_deref()
                                    .map(|why| format!(": <q class=\"why\">{}</q>", cell(why)))
                                    .unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("<br>"),
                ),
                None => Default::default(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><span class=\"id\">{}</span></td><td>{action}</td>\
                 <td>{outcome}</td><td>{reviews}</td><td><span class=\"id\">{}</span></td></tr>",
                i + 1,
                cell(id),
                esc(rank)
            );
        }
        h.push_str("</tbody></table></section>");
    }

    /// Every key that signed the log's checkpoints, with what it signed (a rotation lists both).
    pub(super) fn html_keys(&self, h: &mut String) {
        let keys = &self.verification.signing_keys;
        let _ = write!(
            h,
            "<section><h2>Signing keys ({})</h2>\
             <p class=\"note\">Each key whose signature verified on a checkpoint, in the order it \
             first signed. A key rotation shows the old and the new key, both on the handover \
             checkpoint.</p><table><thead><tr><th>Key (name+id)</th><th>Checkpoints signed</th>\
             <th>Checkpoint sizes</th><th>Entries (seq) first signed</th><th>Log lines</th></tr>\
             </thead><tbody>",
            keys.len()
        );
        if keys.is_empty() {
            h.push_str("<tr><td colspan=\"5\" class=\"empty\">No verified checkpoint.</td></tr>");
        }
        for k in keys {
            let entries = if k.entries.1 > k.entries.0 {
                format!("{} \u{2013} {}", k.entries.0, k.entries.1 - 1)
            } else {
                "\u{2013}".to_owned()
            };
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{} \u{2013} {}</td><td>{entries}</td>\
                 <td>{} \u{2013} {}</td></tr>",
                cell(&k.key),
                k.checkpoints,
                k.sizes.0,
                k.sizes.1,
                k.lines.0,
                k.lines.1
            );
        }
        h.push_str("</tbody></table></section>");
    }
}

/// Quotes text for a POSIX shell: in single quotes, each `'` written as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
