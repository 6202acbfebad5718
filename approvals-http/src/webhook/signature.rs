//! Signing and checking deliveries: the shared secret, the Standard Webhooks signature
//! ([`WebhookSecret::sign`], [`verify_webhook`]), the freshness window and the memory of
//! accepted event ids ([`ReplayGuard`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// Header with the event id (the same on every retry and redelivery of one event).
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header with the signing time (Unix seconds).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header with the signature(s).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// How far a delivery's timestamp may be from the receiver's clock.
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

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
    /// The event id was already accepted: a retry, a redelivery or a replay. Acknowledge it
    /// (`2xx`) without acting on it again.
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

/// Remembers accepted event ids for the tolerance window, so a delivery is acted on once
/// while its timestamp is still fresh. Older ids are forgotten (the timestamp check refuses
/// them anyway).
///
/// A signed delivery whose id was already accepted ([`WebhookError::Replayed`]) is a retry,
/// a redelivery by a restarted sender, or a captured copy: answer it `2xx` and do not act on
/// it again. Answering `4xx` would make the sender give up on a genuine redelivery (and
/// fail closed).
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
    fn secrets_are_checked() {
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse("whsec_***").is_err());
        let s = WebhookSecret::generate();
        assert_eq!(
            WebhookSecret::parse(&s.to_whsec()).map(|p| p.0),
            Ok(s.0.clone())
        );
        assert!(!format!("{s:?}").contains(&s.to_whsec()));
    }
}
