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
//! | `webhook-id` | a unique delivery id (UUID); the same on every retry of one delivery |
//! | `webhook-timestamp` | Unix seconds when this attempt was signed |
//! | `webhook-signature` | `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>` |
//!
//! To verify: recompute the HMAC over the raw body bytes exactly as received, compare in
//! constant time with each space-separated `v1,` signature, refuse timestamps more than five
//! minutes from your clock, and refuse a `webhook-id` you have already accepted. With the
//! secret written as `whsec_<base64>` (see [`WebhookSecret::parse`]) the key is the decoded
//! bytes, as in Standard Webhooks.
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
//! decide) or `approval.resolved` (approved, denied, expired, cancelled, executed, ...; see
//! `request.state`). The receiver decides through the API
//! (`POST /v1/requests/{id}/approve` with a human reviewer's token), never through the
//! webhook: a webhook carries no authority.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use approvals_core::{
    Approver, ApproverError, Delivery, DispatchReason, Gate, RequestId, RequestRecord,
};
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use url::Url;

use crate::view::RequestView;

/// Header with the delivery id.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header with the signing time (Unix seconds).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header with the signature(s).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// How far a delivery's timestamp may be from the receiver's clock.
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

const CHANNEL: &str = "webhook";

/// The shared HMAC key. Its `Debug` output hides the bytes.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret({} bytes)", self.0.len())
    }
}

impl WebhookSecret {
    /// A secret from raw bytes. Use at least 32 random bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        WebhookSecret(bytes.into())
    }

    /// Parses `whsec_<base64>` (the Standard Webhooks form: the key is the decoded bytes);
    /// any other text is used as raw bytes. Refuses secrets shorter than 16 bytes.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let text = text.trim();
        let bytes = match text.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| WebhookError::BadSecret("whsec_ secret is not valid base64"))?,
            None => text.as_bytes().to_vec(),
        };
        if bytes.len() < 16 {
            return Err(WebhookError::BadSecret(
                "webhook secrets must be at least 16 bytes; use 32 random bytes",
            ));
        }
        Ok(WebhookSecret(bytes))
    }

    /// A new random 32-byte secret.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        WebhookSecret(bytes)
    }

    /// The `whsec_<base64>` form, to hand to the receiver.
    pub fn to_whsec(&self) -> String {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for a delivery: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    }
}

/// Why a webhook delivery was refused, or could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A required header is missing or unreadable.
    #[error("webhook header {0} is missing or not text")]
    MissingHeader(&'static str),
    /// The timestamp is not a whole number of seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is too far from now (a stale or replayed delivery, or a skewed clock).
    #[error(
        "webhook timestamp is {skew_secs} s away from now, more than the {tolerance_secs} s allowed; refusing a stale or replayed delivery"
    )]
    Stale {
        /// Seconds between the timestamp and now.
        skew_secs: i64,
        /// The allowed window.
        tolerance_secs: u64,
    },
    /// No signature matches.
    #[error(
        "webhook signature does not match: the body, id or timestamp was changed, or the secret differs"
    )]
    BadSignature,
    /// The delivery id was already accepted.
    #[error("webhook delivery {0} was already received; refusing the replay")]
    Replayed(String),
    /// The secret is unusable.
    #[error("{0}")]
    BadSecret(&'static str),
    /// The URL is unusable.
    #[error("webhook URL {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: &'static str,
    },
}

/// A delivery that passed [`verify_webhook`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    /// The `webhook-id`.
    pub id: String,
    /// The `webhook-timestamp`.
    pub timestamp: i64,
}

/// Verifies a received delivery: headers present, timestamp within [`WEBHOOK_TOLERANCE`] of
/// `now`, and one of the `v1,` signatures equal (constant time) to the HMAC of
/// `"{id}.{timestamp}.{body}"`. `body` must be the raw bytes as received. Combine with a
/// [`ReplayGuard`] to refuse a delivery seen before.
///
/// ```
/// use approvals_http::webhook::{verify_webhook, WebhookSecret};
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let now = chrono::Utc::now();
/// let body = br#"{"type":"approval.requested"}"#;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("webhook-id", "msg_1".parse()?);
/// headers.insert("webhook-timestamp", now.timestamp().to_string().parse()?);
/// headers.insert("webhook-signature", secret.sign("msg_1", now.timestamp(), body).parse()?);
/// assert!(verify_webhook(&secret, &headers, body, now).is_ok());
/// assert!(verify_webhook(&secret, &headers, b"{}", now).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_webhook(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<VerifiedWebhook, WebhookError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(WebhookError::MissingHeader(name))
    };
    let id = header(WEBHOOK_ID)?;
    let timestamp: i64 = header(WEBHOOK_TIMESTAMP)?
        .parse()
        .map_err(|_| WebhookError::BadTimestamp)?;
    let signatures = header(WEBHOOK_SIGNATURE)?;
    let skew = now.timestamp().saturating_sub(timestamp);
    let tolerance = WEBHOOK_TOLERANCE.as_secs();
    if skew.unsigned_abs() > tolerance {
        return Err(WebhookError::Stale {
            skew_secs: skew,
            tolerance_secs: tolerance,
        });
    }
    let expected = secret.mac(id, timestamp, body);
    let matched = signatures.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|tag| expected.clone().verify_slice(&tag).is_ok())
    });
    if !matched {
        return Err(WebhookError::BadSignature);
    }
    Ok(VerifiedWebhook {
        id: id.to_owned(),
        timestamp,
    })
}

/// Remembers accepted delivery ids for the tolerance window, so a captured delivery cannot
/// be replayed while its timestamp is still fresh. Older ids are forgotten (the timestamp
/// check refuses them anyway).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, i64>>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `delivery`, or refuses it if its id was already recorded.
    pub fn check(
        &self,
        delivery: &VerifiedWebhook,
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = now.timestamp() - 2 * WEBHOOK_TOLERANCE.as_secs() as i64;
        seen.retain(|_, ts| *ts >= horizon);
        if seen.contains_key(&delivery.id) {
            return Err(WebhookError::Replayed(delivery.id.clone()));
        }
        seen.insert(delivery.id.clone(), delivery.timestamp);
        Ok(())
    }

    /// [`verify_webhook`] and then [`check`](ReplayGuard::check).
    pub fn verify(
        &self,
        secret: &WebhookSecret,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<VerifiedWebhook, WebhookError> {
        let delivery = verify_webhook(secret, headers, body, now)?;
        self.check(&delivery, now)?;
        Ok(delivery)
    }
}

/// The JSON body of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// `approval.requested`, `approval.escalated` or `approval.resolved`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Equals the `webhook-id` header.
    pub delivery_id: String,
    /// When the delivery was first attempted.
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
            console: base
                .join(&format!("console/requests/{id}"))
                .ok()?
                .to_string(),
        })
    }

    /// Sends one event with retries. Returns the delivery id.
    pub async fn deliver(
        &self,
        event_type: &str,
        record: &RequestRecord,
    ) -> Result<String, ApproverError> {
        let delivery_id = uuid::Uuid::now_v7().to_string();
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

#[async_trait]
impl Approver for WebhookApprover {
    fn name(&self) -> &str {
        CHANNEL
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _gate: &Gate,
    ) -> Result<Option<Delivery>, ApproverError> {
        let event = match reason {
            DispatchReason::Escalation => "approval.escalated",
            _ => "approval.requested",
        };
        let id = self.deliver(event, request).await?;
        Ok(Some(Delivery {
            channel: CHANNEL.into(),
            reference: serde_json::json!({ "delivery_id": id }),
        }))
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        self.deliver("approval.resolved", request).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn signed(secret: &WebhookSecret, id: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(WEBHOOK_ID, HeaderValue::from_str(id).expect("id"));
        h.insert(
            WEBHOOK_TIMESTAMP,
            HeaderValue::from_str(&ts.to_string()).expect("ts"),
        );
        h.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_str(&secret.sign(id, ts, body)).expect("sig"),
        );
        h
    }

    fn secret() -> WebhookSecret {
        WebhookSecret::from_bytes(*b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn known_vector() {
        // Standard Webhooks' published example: secret, id, timestamp, body and signature.
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn accepts_a_fresh_genuine_delivery_and_refuses_forgeries() {
        let s = secret();
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"type":"approval.requested"}"#;
        let h = signed(&s, "d1", ts, body);
        assert_eq!(
            verify_webhook(&s, &h, body, now).map(|d| d.id),
            Ok("d1".to_owned())
        );
        // Body changed.
        assert_eq!(
            verify_webhook(&s, &h, br#"{"type":"approval.resolved"}"#, now),
            Err(WebhookError::BadSignature)
        );
        // Other secret.
        let other = WebhookSecret::from_bytes(*b"another-secret-of-32-bytes-long!");
        assert_eq!(
            verify_webhook(&other, &h, body, now),
            Err(WebhookError::BadSignature)
        );
        // Id or timestamp swapped onto a genuine signature.
        let mut swapped = h.clone();
        swapped.insert(WEBHOOK_ID, HeaderValue::from_static("d2"));
        assert_eq!(
            verify_webhook(&s, &swapped, body, now),
            Err(WebhookError::BadSignature)
        );
        let mut moved = h.clone();
        moved.insert(
            WEBHOOK_TIMESTAMP,
            HeaderValue::from_str(&(ts + 1).to_string()).expect("ts"),
        );
        assert_eq!(
            verify_webhook(&s, &moved, body, now),
            Err(WebhookError::BadSignature)
        );
        // Garbage and missing headers.
        let mut garbage = h.clone();
        garbage.insert(WEBHOOK_SIGNATURE, HeaderValue::from_static("v1,!!! v0,abc"));
        assert_eq!(
            verify_webhook(&s, &garbage, body, now),
            Err(WebhookError::BadSignature)
        );
        let mut missing = h.clone();
        missing.remove(WEBHOOK_SIGNATURE);
        assert_eq!(
            verify_webhook(&s, &missing, body, now),
            Err(WebhookError::MissingHeader(WEBHOOK_SIGNATURE))
        );
        // Several signatures (key rotation): one valid is enough.
        let mut rotated = h.clone();
        let both = format!("v1,AAAA {}", s.sign("d1", ts, body));
        rotated.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_str(&both).expect("sig"),
        );
        assert!(verify_webhook(&s, &rotated, body, now).is_ok());
    }

    #[test]
    fn refuses_stale_and_future_deliveries() {
        let s = secret();
        let now = Utc::now();
        let body = b"{}";
        let old = signed(&s, "d1", now.timestamp() - 301, body);
        assert!(matches!(
            verify_webhook(&s, &old, body, now),
            Err(WebhookError::Stale { skew_secs: 301, .. })
        ));
        let future = signed(&s, "d1", now.timestamp() + 301, body);
        assert!(matches!(
            verify_webhook(&s, &future, body, now),
            Err(WebhookError::Stale { .. })
        ));
        let edge = signed(&s, "d1", now.timestamp() - 300, body);
        assert!(verify_webhook(&s, &edge, body, now).is_ok());
        let mut bad = edge.clone();
        bad.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("12.5"));
        assert_eq!(
            verify_webhook(&s, &bad, body, now),
            Err(WebhookError::BadTimestamp)
        );
    }

    #[test]
    fn replay_guard_refuses_a_second_delivery_with_the_same_id() {
        let s = secret();
        let guard = ReplayGuard::new();
        let now = Utc::now();
        let body = b"{}";
        let h = signed(&s, "d1", now.timestamp(), body);
        assert!(guard.verify(&s, &h, body, now).is_ok());
        assert_eq!(
            guard.verify(&s, &h, body, now),
            Err(WebhookError::Replayed("d1".into()))
        );
        let other = signed(&s, "d2", now.timestamp(), body);
        assert!(guard.verify(&s, &other, body, now).is_ok());
    }

    #[test]
    fn secrets_and_urls_are_checked() {
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse("whsec_***").is_err());
        let s = WebhookSecret::generate();
        assert_eq!(
            WebhookSecret::parse(&s.to_whsec()).map(|p| p.0),
            Ok(s.0.clone())
        );
        assert!(!format!("{s:?}").contains(&s.to_whsec()));
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
