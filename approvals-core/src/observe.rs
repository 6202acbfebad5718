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

/// What `submit` did with an action, for the current span and the request counter.
pub(crate) fn submitted(outcome: &'static str, state: &'static str) {
    Span::current().record("state", state);
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
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
    metrics::counter!(RESOLUTIONS, "state" => to.as_str()).increment(1);
    if from == RequestState::Pending && matches!(to, RequestState::Approved | RequestState::Denied)
    {
        let seconds = (now - created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(TIME_TO_DECISION, "verdict" => to.as_str()).record(seconds);
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
