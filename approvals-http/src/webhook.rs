//! `WebhookApprover`: POSTs pending requests and their resolutions to a URL, signed with
//! HMAC-SHA256; and [`verify_webhook`] for receivers.
//!
//! # Wire format
//!
//! Each delivery is a `POST` with a JSON body and three headers, following the
//! [Standard Webhooks](https://www.standardwebhooks.com/) scheme so existing receiver
//! libraries work:
//!
//! | header | value |
//! |---|---|
//! | `webhook-id` | the event's id: `{request id}:requested`, `{request id}:escalated`, or `{request id}:{state}` for a resolution (`…:approved`, `…:executed`, ...); the same on every retry and every redelivery of one event |
//! | `webhook-timestamp` | Unix seconds when this attempt was signed |
//! | `webhook-signature` | `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>` |
//!
//! To verify: recompute the HMAC over the raw body bytes exactly as received, compare in
//! constant time with each space-separated `v1,` signature, refuse timestamps more than five
//! minutes from your clock, and act on each `webhook-id` once. A `webhook-id` you have
//! already acted on is a retry, or a redelivery after the sending process restarted (the
//! gate delivers a pending request again when its agent re-attaches): answer `2xx` and do
//! not act again, so reviewers see one message per request. [`ReplayGuard`] remembers ids
//! for the freshness window; keep the ids you acted on for longer (or key your records by
//! them) to recognise a redelivery after that. With the secret written as `whsec_<base64>`
//! (see [`WebhookSecret::parse`]) the key is the decoded bytes, as in Standard Webhooks.
//!
//! The body:
//!
//! ```json
//! {"type": "approval.requested", "delivery_id": "…", "sent_at": "2026-11-21T12:00:00Z",
//!  "request": { …the API's Request schema… },
//!  "links": {"api": "https://approvals.example.com/v1/requests/…",
//!            "console": "https://approvals.example.com/console/requests/…"}}
//! ```
//!
//! `type` is `approval.requested` (new), `approval.escalated` (more reviewers may now
//! decide), `approval.reminder` (a `remind_at` point of the timeout passed and it is still
//! pending; `request.reminded` counts them), `approval.edited` (a reviewer approved a changed
//! version and more approvals of it are needed: `request.digest` is the edited action's, each
//! edit is in `request.reviews`) or `approval.resolved` (approved, denied, expired, cancelled,
//! executed, ...; see `request.state`). The receiver decides through the API
//! (`POST /v1/requests/{id}/approve` with a human reviewer's token), never through the
//! webhook: a webhook carries no authority.

mod signature;

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, RequestId, RequestRecord,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::view::RequestView;
pub use signature::{
    ReplayGuard, VerifiedWebhook, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
    WEBHOOK_TOLERANCE, WebhookError, WebhookSecret, verify_webhook,
};

const CHANNEL: &str = "webhook";

/// The JSON body of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// `approval.requested`, `approval.escalated`, `approval.reminder`, `approval.edited` or
    /// `approval.resolved`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's id; equals the `webhook-id` header (see the [module docs](self)).
    pub delivery_id: String,
    /// When this delivery was first attempted.
    pub sent_at: DateTime<Utc>,
    /// The request, as the API shows it.
    pub request: RequestView,
    /// Where to view and decide it, when a public URL is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<WebhookLinks>,
}

/// Links in a webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookLinks {
    /// `GET` it here; `POST .../approve` or `.../deny` with a reviewer's token.
    pub api: String,
    /// The console page.
    pub console: String,
}

/// Delivers pending requests (and their resolutions) to a URL as signed webhooks, with
/// retries and exponential backoff.
///
/// ```
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_http::webhook::{WebhookApprover, WebhookSecret};
/// let hook = WebhookApprover::new(
///     "https://hooks.example.com/approvals",
///     WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?,
/// )?
/// .public_url("https://approvals.example.com".parse()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct WebhookApprover {
    url: Url,
    secret: WebhookSecret,
    client: reqwest::Client,
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    public_url: Option<Url>,
}

impl WebhookApprover {
    /// Delivers to `url` (https, or http to a loopback address) signed with `secret`.
    /// Defaults: 4 attempts, backoff from 500 ms doubling to at most 8 s, 10 s per attempt.
    pub fn new(url: &str, secret: WebhookSecret) -> Result<Self, WebhookError> {
        let bad = |reason| WebhookError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|_| bad("it does not parse as a URL"))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(bad("plain http is allowed only to loopback; use https")),
            _ => return Err(bad("use an https URL")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "put no credentials in the URL; the signature authenticates",
            ));
        }
        let client = crate::client::http_client(Duration::from_secs(10))
            .map_err(|_| bad("the HTTP client could not be built"))?;
        Ok(WebhookApprover {
            url: parsed,
            secret,
            client,
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            public_url: None,
        })
    }

    /// Total attempts per delivery (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The first retry delay; it doubles per retry up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Uses this HTTP client (for its timeouts, proxy or connection pool).
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// The review server's public URL, for the `links` in each body.
    pub fn public_url(mut self, url: Url) -> Self {
        self.public_url = Some(url);
        self
    }

    fn links(&self, id: RequestId) -> Option<WebhookLinks> {
        let base = self.public_url.as_ref()?;
        Some(WebhookLinks {
            api: base.join(&format!("v1/requests/{id}")).ok()?.to_string(),
            console: base.join(&id.console_path()).ok()?.to_string(),
        })
    }

    /// Sends one event with retries. Returns the event's id ([`event_id`]).
    pub async fn deliver(
        &self,
        event_type: &str,
        record: &RequestRecord,
    ) -> Result<String, ApproverError> {
        let delivery_id = event_id(event_type, record);
        let payload = WebhookPayload {
            event_type: event_type.to_owned(),
            delivery_id: delivery_id.clone(),
            sent_at: Utc::now(),
            request: RequestView::of(record),
            links: self.links(record.id),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| ApproverError::new(CHANNEL, format!("could not encode: {e}")))?;
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let timestamp = Utc::now().timestamp();
            let signature = self.secret.sign(&delivery_id, timestamp, &body);
            let sent = self
                .client
                .post(self.url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("approvals-http/", env!("CARGO_PKG_VERSION")),
                )
                .header(WEBHOOK_ID, &delivery_id)
                .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
                .header(WEBHOOK_SIGNATURE, signature)
                .body(body.clone())
                .send()
                .await;
            let retry_after = match sent {
                Ok(response) if response.status().is_success() => return Ok(delivery_id),
                Ok(response) => {
                    let status = response.status();
                    last = format!("the receiver answered {status}");
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    if !retryable {
                        return Err(ApproverError::new(
                            CHANNEL,
                            format!("{last} to {}; not retrying a client error", self.url),
                        ));
                    }
                    response
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs)
                }
                Err(e) => {
                    last = if e.is_timeout() {
                        "the receiver did not answer in time".to_owned()
                    } else {
                        "the receiver could not be reached".to_owned()
                    };
                    None
                }
            };
            if attempt < self.attempts {
                let wait = retry_after.unwrap_or(delay).min(self.max_backoff);
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(self.max_backoff);
            }
        }
        Err(ApproverError::new(
            CHANNEL,
            format!("{last} ({} attempts to {})", self.attempts, self.url),
        )
        .retryable())
    }
}

/// The id of the event `event_type` about `record`, sent as `webhook-id`: the same for every
/// delivery of one event, so a receiver acts on it once. It is `{request id}:requested` and
/// `{request id}:escalated` (each happens once per request), `{request id}:{state}` for
/// `approval.resolved` (a request enters each state at most once), and `{request id}:edited-N`
/// for the request's Nth edit.
///
/// ```
/// # use approvals_core::{ActionRequest, RequestState};
/// # let mut record = approvals_testkit::fixtures::pending_record(
/// #     ActionRequest::new("data.export", "db://prod/customers"),
/// #     approvals_testkit::fixtures::epoch(),
/// # );
/// use approvals_http::webhook::event_id;
/// let id = record.id;
/// assert_eq!(event_id("approval.requested", &record), format!("{id}:requested"));
/// record.state = RequestState::Approved;
/// assert_eq!(event_id("approval.resolved", &record), format!("{id}:approved"));
/// ```
pub fn event_id(event_type: &str, record: &RequestRecord) -> String {
    let what = match event_type {
        "approval.resolved" => record.state.as_str().to_owned(),
        "approval.edited" => format!(
            "edited-{}",
            record.reviews.iter().filter(|r| r.edit.is_some()).count()
        ),
        other => other.strip_prefix("approval.").unwrap_or(other).to_owned(),
    };
    format!("{}:{what}", record.id)
}

#[async_trait]
impl Approver for WebhookApprover {
    fn name(&self) -> &str {
        CHANNEL
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let event = match reason {
            DispatchReason::Escalation => "approval.escalated",
            DispatchReason::Reminder => "approval.reminder",
            _ => "approval.requested",
        };
        let id = self.deliver(event, request).await?;
        Ok(Some(Delivery {
            channel: CHANNEL.into(),
            reference: serde_json::json!({ "delivery_id": id }),
        }))
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        // Still pending after a change: only an edit short of the quorum tells channels so.
        let event = if request.state == approvals_core::RequestState::Pending {
            "approval.edited"
        } else {
            "approval.resolved"
        };
        self.deliver(event, request).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::from_bytes(*b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn urls_are_checked() {
        for bad in [
            "http://hooks.example.com/x",
            "ftp://127.0.0.1/x",
            "https://user:pw@hooks.example.com/",
            "not a url",
        ] {
            assert!(WebhookApprover::new(bad, secret()).is_err(), "{bad}");
        }
        assert!(WebhookApprover::new("http://127.0.0.1:9/x", secret()).is_ok());
        assert!(WebhookApprover::new("https://hooks.example.com/x", secret()).is_ok());
    }
}
