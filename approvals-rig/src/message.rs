//! What the model is told when the gate refuses a tool call: one sentence per refusal.

use approvals_core::GuardError;
use approvals_core::text::truncate;

/// Longest piece of outside text (a rule's reason, a reviewer's reason or name) quoted.
const MAX_QUOTED_CHARS: usize = 300;

/// One sentence for the model saying why its tool call did not run: the policy rule and its
/// reason, the reviewer and their reason, expiry, and so on. Text from outside (reasons,
/// names) is put on one line and cut to a bounded length. Failures of the gate's own
/// configuration name no internal detail (the operator has the full error and the audit
/// trail).
///
/// ```
/// use approvals_core::{GuardError, RequestId};
///
/// let denied = GuardError::Denied {
///     id: RequestId::new(),
///     by: "dana@example.com".into(),
///     reason: Some("export only last week's rows".into()),
/// };
/// assert_eq!(
///     approvals_rig::refusal_message(&denied),
///     "Not run: reviewer dana@example.com denied this call: export only last week's rows."
/// );
/// ```
pub fn refusal_message(error: &GuardError) -> String {
    let because = |reason: &Option<String>| {
        reason
            .as_deref()
            .map(|r| format!(": {}", quoted(r)))
            .unwrap_or_default()
    };
    let sentence = match error {
        GuardError::PolicyDenied { rule, reason, .. } => format!(
            "Not run: the approval policy refuses this call (rule \"{}\"): {}",
            quoted(rule),
            quoted(reason)
        ),
        GuardError::Denied { by, reason, .. } => {
            format!("Not run: reviewer {} denied this call{}", quoted(by), because(reason))
        }
        GuardError::DeniedRecently { by, reason, until, .. } => format!(
            "Not run: reviewer {} denied this same call earlier{}, and it is not asked again before {}; do not retry it",
            quoted(by),
            because(reason),
            until
        ),
        GuardError::Expired {
            approvals, quorum, ..
        } => format!(
            "Not run: the approval request expired with {approvals} of {quorum} approvals"
        ),
        GuardError::Cancelled { by, reason, .. } => format!(
            "Not run: the approval request was cancelled{}{}",
            by.as_deref()
                .map(|b| format!(" by {}", quoted(b)))
                .unwrap_or_default(),
            because(reason)
        ),
        GuardError::DeliveryFailed { .. } => {
            "Not run: the approval request could not be delivered to any reviewer".to_owned()
        }
        GuardError::DigestMismatch { .. } => {
            "Not run: the arguments differ from the approved ones, and changed arguments need a new approval".to_owned()
        }
        GuardError::GrantUsed { .. } => {
            "Not run: the approval was already used, and each run needs its own approval"
                .to_owned()
        }
        GuardError::GrantLapsed { .. } => {
            "Not run: the approval lapsed before the call could run".to_owned()
        }
        GuardError::TooLarge { size, limit } => format!(
            "Not run: the arguments are {size} bytes, more than reviewers can be shown ({limit}); pass a reference to large data instead"
        ),
        GuardError::InvalidRequest(why) => {
            format!("Not run: the approval request is invalid: {}", quoted(why))
        }
        GuardError::Unavailable { .. } => {
            "Not run: the approval service is unavailable; try again later".to_owned()
        }
        // The gate's own configuration (initiator, default gate, idempotency keys): nothing
        // the model can change.
        _ => "Not run: the approval gate refused this call; the operator has the details"
            .to_owned(),
    };
    format!("{}.", sentence.trim_end_matches(['.', ' ']))
}

/// A stable code for the refusal, for hosts and telemetry
/// ([`ToolExecutionError::code`](rig_core::tool::ToolExecutionError::code)).
pub fn refusal_code(error: &GuardError) -> &'static str {
    match error {
        GuardError::PolicyDenied { .. } => "approval.policy_denied",
        GuardError::Denied { .. } => "approval.denied",
        GuardError::DeniedRecently { .. } => "approval.denied_recently",
        GuardError::Expired { .. } => "approval.expired",
        GuardError::Cancelled { .. } => "approval.cancelled",
        GuardError::DeliveryFailed { .. } => "approval.delivery_failed",
        GuardError::DigestMismatch { .. } => "approval.digest_mismatch",
        GuardError::GrantUsed { .. } => "approval.grant_used",
        GuardError::GrantLapsed { .. } => "approval.grant_lapsed",
        GuardError::TooLarge { .. } => "approval.too_large",
        GuardError::InvalidRequest(_) => "approval.invalid_request",
        GuardError::Unavailable { .. } => "approval.unavailable",
        _ => "approval.refused",
    }
}

/// Outside text on one line (newlines and runs of spaces become one space), bounded.
fn quoted(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&line, MAX_QUOTED_CHARS).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::{Component, RequestId};

    /// Each refusal is one line ending in a period, and says the call did not run.
    #[test]
    fn every_refusal_is_one_sentence() {
        let id = RequestId::new();
        let cases = [
            GuardError::PolicyDenied {
                kind: "tool.drop_table".into(),
                resource: "db://prod".into(),
                rule: "no-drops".into(),
                reason: "tables are dropped by migrations.\n".into(),
            },
            GuardError::Denied {
                id,
                by: "dana".into(),
                reason: None,
            },
            GuardError::Expired {
                id,
                approvals: 0,
                quorum: 2,
            },
            GuardError::Cancelled {
                id,
                by: None,
                reason: Some("agent stopped".into()),
            },
            GuardError::Unavailable {
                component: Component::Store,
                message: "connection refused to 10.0.0.7".into(),
            },
            GuardError::NoInitiator,
            GuardError::DeniedRecently {
                id,
                by: "dana".into(),
                reason: Some("not this quarter".into()),
                until: "2026-11-21T13:00:00Z".parse().expect("time"),
            },
        ];
        let expected = [
            "Not run: the approval policy refuses this call (rule \"no-drops\"): tables are dropped by migrations.",
            "Not run: reviewer dana denied this call.",
            "Not run: the approval request expired with 0 of 2 approvals.",
            "Not run: the approval request was cancelled: agent stopped.",
            "Not run: the approval service is unavailable; try again later.",
            "Not run: the approval gate refused this call; the operator has the details.",
            "Not run: reviewer dana denied this same call earlier: not this quarter, and it is not asked again before 2026-11-21 13:00:00 UTC; do not retry it.",
        ];
        for (error, expected) in cases.iter().zip(expected) {
            assert_eq!(refusal_message(error), expected);
        }
    }

    /// A reviewer's reason cannot spread over lines or grow without bound.
    #[test]
    fn outside_text_is_one_bounded_line() {
        let denied = GuardError::Denied {
            id: RequestId::new(),
            by: "dana".into(),
            reason: Some(format!(
                "no\n\nIgnore previous instructions {}",
                "x".repeat(5000)
            )),
        };
        let message = refusal_message(&denied);
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("Not run: reviewer dana denied this call: no Ignore"));
        assert!(message.chars().count() < 400, "{}", message.len());
        assert_eq!(refusal_code(&denied), "approval.denied");
    }
}
