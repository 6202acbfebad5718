//! Observability: the gate's `tracing` span and events, and its metrics.
//!
//! **Tracing.** `guard()`, `run()` and `submit()` run inside one span named `approval` with
//! the fields `request` (id), `kind`, `resource`, `digest`, `rule` and `state`, filled in as
//! they become known, from submission to resolution (`wait()` on its own opens an `approval`
//! span with the request id and state). Every state change is one event with target
//! `approvals::transition` and the fields `request`, `from` and `to`. Install any
//! `tracing` subscriber to see them; without one they cost a few nanoseconds.
//!
//! **Metrics**, through the [`metrics`](https://docs.rs/metrics) facade: the library only
//! records; the application installs a recorder (`approvals serve` exports Prometheus text
//! at `/metrics`). The facade was chosen over the OpenTelemetry SDK because a library that
//! records through it compiles one small crate and does nothing until the application picks
//! an exporter (Prometheus, StatsD, or OpenTelemetry through a bridge), while the SDK would
//! bring its runtime into every agent that embeds the gate.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `approvals_requests_total` | counter | `outcome`: `allowed`, `denied_by_policy`, `denied_recently`, `pending`, `standing` (approved by a standing grant), `plan` (approved as an item of an approved plan), `refused` | actions submitted, by what the gate did with them |
//! | `approvals_resolutions_total` | counter | `state`: `approved`, `denied`, `expired`, `cancelled`, `lapsed`, `executed`, `failed` | requests reaching a state past `pending` |
//! | `approvals_time_to_decision_seconds` | histogram | `verdict`: `approved`, `denied` | from submission to the deciding review |
//! | `approvals_delivery_failures_total` | counter | `channel` | deliveries and message updates a channel failed |
//! | `approvals_audit_failures_total` | counter | | audit appends that failed or timed out |
//! | `approvals_pending_requests` | gauge | | pending requests in the store (set by the exporter at each scrape) |

use chrono::{DateTime, Utc};
use metrics::{Counter, Key, Label, Level, Metadata};
use tracing::Span;

use crate::store::{RequestId, RequestState};

/// `approvals_requests_total`.
pub const REQUESTS: &str = "approvals_requests_total";
/// `approvals_resolutions_total`.
pub const RESOLUTIONS: &str = "approvals_resolutions_total";
/// `approvals_time_to_decision_seconds`.
pub const TIME_TO_DECISION: &str = "approvals_time_to_decision_seconds";
/// `approvals_delivery_failures_total`.
pub const DELIVERY_FAILURES: &str = "approvals_delivery_failures_total";
/// `approvals_audit_failures_total`.
pub const AUDIT_FAILURES: &str = "approvals_audit_failures_total";
/// `approvals_pending_requests`.
pub const PENDING: &str = "approvals_pending_requests";

/// The target of the transition events.
pub const TRANSITION_TARGET: &str = "approvals::transition";

/// A metric key with one label, both static (the value a constant expression). The facade's
/// macros build the label list on the heap on every call (their literal-label form is not
/// reached through `counter!`), and the request counter is on the allow path of every
/// `guard()` call.
macro_rules! static_key {
    ($name:expr, $label:literal => $value:expr) => {{
        static LABELS: [Label; 1] = [Label::from_static_parts($label, $value)];
        static KEY: Key = Key::from_static_parts($name, &LABELS);
        &KEY
    }};
}

/// The metadata the facade's macros would give the gate's metrics.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The counter of `key` in the installed recorder (a no-op without one).
fn counter(key: &Key) -> Counter {
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
}

/// A new `approval` span, its fields empty until known.
pub(crate) fn request_span() -> Span {
    tracing::info_span!(
        "approval",
        request = tracing::field::Empty,
        kind = tracing::field::Empty,
        resource = tracing::field::Empty,
        digest = tracing::field::Empty,
        rule = tracing::field::Empty,
        state = tracing::field::Empty,
    )
}

/// What `submit` did with an action: the `outcome` label of `approvals_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    Allowed,
    DeniedByPolicy,
    DeniedRecently,
    Pending,
    Standing,
    Plan,
    Refused,
}

impl Submitted {
    /// The request's state after it, for the span.
    fn state(self) -> &'static str {
        match self {
            Submitted::Allowed => "allowed",
            Submitted::DeniedByPolicy | Submitted::DeniedRecently => RequestState::Denied.as_str(),
            Submitted::Pending => RequestState::Pending.as_str(),
            Submitted::Standing | Submitted::Plan => RequestState::Approved.as_str(),
            Submitted::Refused => "refused",
        }
    }

    fn key(self) -> &'static Key {
        match self {
            Submitted::Allowed => static_key!(REQUESTS, "outcome" => "allowed"),
            Submitted::DeniedByPolicy => static_key!(REQUESTS, "outcome" => "denied_by_policy"),
            Submitted::DeniedRecently => static_key!(REQUESTS, "outcome" => "denied_recently"),
            Submitted::Pending => static_key!(REQUESTS, "outcome" => "pending"),
            Submitted::Standing => static_key!(REQUESTS, "outcome" => "standing"),
            Submitted::Plan => static_key!(REQUESTS, "outcome" => "plan"),
            Submitted::Refused => static_key!(REQUESTS, "outcome" => "refused"),
        }
    }
}

/// What `submit` did with an action, for the current span and the request counter.
pub(crate) fn submitted(outcome: Submitted) {
    Span::current().record("state", outcome.state());
    counter(outcome.key()).increment(1);
}

/// The `approvals_resolutions_total` key of a request reaching `state`, labelled with the
/// state's own name.
fn resolution_key(state: RequestState) -> &'static Key {
    macro_rules! key {
        ($state:expr) => {
            static_key!(RESOLUTIONS, "state" => $state.as_str())
        };
    }
    use RequestState::*;
    match state {
        Pending => key!(Pending),
        Approved => key!(Approved),
        Denied => key!(Denied),
        Expired => key!(Expired),
        Cancelled => key!(Cancelled),
        Executing => key!(Executing),
        Executed => key!(Executed),
        Failed => key!(Failed),
        Lapsed => key!(Lapsed),
    }
}

/// One state change of request `id`: a `tracing` event, the resolution counter and, for a
/// review that decided a pending request, the time to decision.
pub(crate) fn transition(
    id: RequestId,
    from: RequestState,
    to: RequestState,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    if from == to {
        return;
    }
    tracing::info!(target: TRANSITION_TARGET, request = %id, from = from.as_str(), to = to.as_str(), "transition");
    Span::current().record("state", to.as_str());
    counter(resolution_key(to)).increment(1);
    if from == RequestState::Pending && matches!(to, RequestState::Approved | RequestState::Denied)
    {
        let seconds = (now - created_at).num_milliseconds().max(0) as f64 / 1000.0;
        let verdict = if to == RequestState::Approved {
            static_key!(TIME_TO_DECISION, "verdict" => RequestState::Approved.as_str())
        } else {
            static_key!(TIME_TO_DECISION, "verdict" => RequestState::Denied.as_str())
        };
        metrics::with_recorder(|recorder| recorder.register_histogram(verdict, &METADATA))
            .record(seconds);
    }
}

/// A channel failed to deliver or update.
pub(crate) fn delivery_failed(channel: &str) {
    metrics::counter!(DELIVERY_FAILURES, "channel" => channel.to_owned()).increment(1);
}

/// An audit append failed.
pub(crate) fn audit_failed() {
    metrics::counter!(AUDIT_FAILURES).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBMITTED: [(Submitted, &str); 7] = [
        (Submitted::Allowed, "allowed"),
        (Submitted::DeniedByPolicy, "denied_by_policy"),
        (Submitted::DeniedRecently, "denied_recently"),
        (Submitted::Pending, "pending"),
        (Submitted::Standing, "standing"),
        (Submitted::Plan, "plan"),
        (Submitted::Refused, "refused"),
    ];

    fn label(key: &Key) -> (&str, &str) {
        let labels: Vec<&Label> = key.labels().collect();
        assert_eq!(labels.len(), 1, "{key:?}");
        (labels[0].key(), labels[0].value())
    }

    #[test]
    fn each_outcome_counts_under_its_documented_label() {
        for (outcome, value) in SUBMITTED {
            let key = outcome.key();
            assert_eq!(key.name(), REQUESTS);
            assert_eq!(label(key), ("outcome", value));
        }
    }

    #[test]
    fn each_state_counts_under_its_own_name() {
        use RequestState::*;
        for state in [
            Pending, Approved, Denied, Expired, Cancelled, Executing, Executed, Failed, Lapsed,
        ] {
            let key = resolution_key(state);
            assert_eq!(key.name(), RESOLUTIONS);
            assert_eq!(label(key), ("state", state.as_str()));
        }
    }
}
