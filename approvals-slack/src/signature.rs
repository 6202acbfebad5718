//! Slack request signing: the `v0` HMAC-SHA256 signature check and replay detection.
//!
//! Slack signs every HTTP request it sends with the app's signing secret: the
//! `X-Slack-Signature` header is `v0=` followed by the lowercase hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}`. [`SigningSecret::verify`] recomputes it over the
//! raw bytes, compares in constant time, and refuses timestamps more than five minutes away
//! from now in either direction. [`ReplayGuard`] then refuses a second delivery of a request
//! that was already accepted inside that window.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq as _;

/// Header carrying the signature (`v0=<hex>`).
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// Header carrying the Unix timestamp (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// The signature version this crate implements.
pub const SIGNATURE_VERSION: &str = "v0";
/// How far a request timestamp may be from now, in either direction.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A Slack app's signing secret ("Basic Information" > "App Credentials" > "Signing Secret").
///
/// Its `Debug` output never shows the secret.
///
/// ```
/// use approvals_slack::SigningSecret;
/// let secret = SigningSecret::new("8f742231b10e8888abcd99yyyzzz85a5")?;
/// let body = b"payload=%7B%7D";
/// let signature = secret.sign(1_700_000_000, body);
/// assert!(secret.verify_at(Some("1700000000"), Some(&signature), body, 1_700_000_010).is_ok());
/// # Ok::<(), approvals_slack::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct SigningSecret {
    key: ring::hmac::Key,
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// What a successful verification proved: the timestamp and the signature bytes, which
/// together identify the request for replay detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The request's `X-Slack-Request-Timestamp`.
    pub timestamp: i64,
    /// The verified HMAC.
    pub mac: [u8; 32],
}

/// Why a request's signature was refused. Nothing was processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A required header is absent.
    #[error(
        "the {0} header is missing; requests must come from Slack, signed with the app's signing secret"
    )]
    MissingHeader(&'static str),
    /// The timestamp header is not a decimal Unix time.
    #[error("the {TIMESTAMP_HEADER} header is not a Unix timestamp")]
    MalformedTimestamp,
    /// The signature header is not `v0=` and 64 hex digits.
    #[error("the {SIGNATURE_HEADER} header is not of the form v0=<64 hex digits>")]
    MalformedSignature,
    /// The timestamp is more than five minutes old.
    #[error(
        "the request timestamp is {age_secs} s old (at most 300 s allowed); it may be a replay, or this machine's clock is wrong"
    )]
    Stale {
        /// Seconds between the timestamp and now.
        age_secs: i64,
    },
    /// The timestamp is more than five minutes in the future.
    #[error(
        "the request timestamp is {ahead_secs} s in the future (at most 300 s allowed); check this machine's clock"
    )]
    FromTheFuture {
        /// Seconds between now and the timestamp.
        ahead_secs: i64,
    },
    /// The signature does not match the body: forged, tampered with, or signed with another
    /// secret.
    #[error(
        "the signature does not match the request body; it was forged, altered, or signed with another app's secret"
    )]
    Mismatch,
}

/// The signing secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The secret is empty.
    #[error(
        "the Slack signing secret is empty; copy it from the app's Basic Information page (SLACK_SIGNING_SECRET)"
    )]
    EmptySecret,
    /// Another setting is invalid.
    #[error("invalid Slack configuration: {0}")]
    Invalid(String),
}

impl SigningSecret {
    /// The secret as shown in the app settings (surrounding whitespace is ignored).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref().trim_ascii();
        if secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        Ok(SigningSecret {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        })
    }

    fn mac(&self, timestamp: &[u8], body: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(SIGNATURE_VERSION.as_bytes());
        ctx.update(b":");
        ctx.update(timestamp);
        ctx.update(b":");
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The `X-Slack-Signature` value Slack would send for `body` at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(timestamp.to_string().as_bytes(), body);
        format!("{SIGNATURE_VERSION}={}", hex::encode(mac))
    }

    /// A MAC over `data` under a domain label, for values this crate round-trips through Slack
    /// (modal metadata). Not a Slack request signature.
    pub(crate) fn tag(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Verifies a request against the system clock. See [`verify_at`](Self::verify_at).
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Verified, SignatureError> {
        self.verify_at(timestamp, signature, body, unix_now())
    }

    /// Verifies the two header values against the raw `body`, with `now` as the current Unix
    /// time: the timestamp must be within five minutes of `now` (either direction) and the
    /// signature must match, compared in constant time.
    pub fn verify_at(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, SignatureError> {
        let ts_raw = timestamp.ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
        let sig_raw = signature.ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
        let ts = parse_timestamp(ts_raw)?;
        let presented = parse_signature(sig_raw)?;
        let skew = MAX_CLOCK_SKEW.as_secs() as i64;
        let age = now.saturating_sub(ts);
        if age > skew {
            return Err(SignatureError::Stale { age_secs: age });
        }
        if -age > skew {
            return Err(SignatureError::FromTheFuture {
                ahead_secs: age.saturating_neg(),
            });
        }
        let expected = self.mac(ts_raw.as_bytes(), body);
        if bool::from(expected.ct_eq(&presented)) {
            Ok(Verified {
                timestamp: ts,
                mac: expected,
            })
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn parse_timestamp(raw: &str) -> Result<i64, SignatureError> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    raw.parse().map_err(|_| SignatureError::MalformedTimestamp)
}

fn parse_signature(raw: &str) -> Result<[u8; 32], SignatureError> {
    let hex_part = raw
        .strip_prefix("v0=")
        .ok_or(SignatureError::MalformedSignature)?;
    if hex_part.len() != 64 {
        return Err(SignatureError::MalformedSignature);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| SignatureError::MalformedSignature)?;
    Ok(out)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A request was refused as a replay, or could not be remembered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The same signed request was already accepted.
    #[error("this signed request was already accepted once; replays are refused")]
    Replayed,
    /// Too many requests inside the window to remember another one; refused rather than
    /// accepted unremembered (fail closed).
    #[error(
        "too many signed requests in the last 5 minutes to check for replays ({capacity}); try again shortly"
    )]
    Full {
        /// How many the guard remembers.
        capacity: usize,
    },
}

/// Remembers the requests accepted in the last five minutes (by timestamp and signature) and
/// refuses a second delivery of any of them. Memory is bounded by `capacity`; when it is
/// full of unexpired entries, new requests are refused rather than accepted unchecked.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: Mutex<BTreeSet<(i64, [u8; 32])>>,
    capacity: usize,
}

/// Default number of requests a [`ReplayGuard`] remembers.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` requests (at least 1).
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            seen: Mutex::new(BTreeSet::new()),
            capacity: capacity.max(1),
        }
    }

    /// Records `verified` as accepted at `now`, or refuses it as a replay.
    pub fn check(&self, verified: &Verified, now: i64) -> Result<(), ReplayError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (verified.timestamp, verified.mac);
        if seen.contains(&key) {
            return Err(ReplayError::Replayed);
        }
        if seen.len() >= self.capacity {
            // Forget what can no longer pass the timestamp check.
            let oldest_valid = now.saturating_sub(MAX_CLOCK_SKEW.as_secs() as i64);
            *seen = seen.split_off(&(oldest_valid, [0u8; 32]));
            if seen.len() >= self.capacity {
                return Err(ReplayError::Full {
                    capacity: self.capacity,
                });
            }
        }
        seen.insert(key);
        Ok(())
    }

    /// How many requests are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from Slack's "Verifying requests from Slack" guide.
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: &str = "1531420618";
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_documented_example_verifies() {
        let secret = SigningSecret::new(DOC_SECRET).expect("secret");
        assert_eq!(secret.sign(1531420618, DOC_BODY.as_bytes()), DOC_SIG);
        let v = secret
            .verify_at(
                Some(DOC_TS),
                Some(DOC_SIG),
                DOC_BODY.as_bytes(),
                1531420618 + 10,
            )
            .expect("verifies");
        assert_eq!(v.timestamp, 1531420618);
    }

    #[test]
    fn every_byte_matters() {
        let secret = SigningSecret::new(DOC_SECRET).expect("secret");
        let now = 1531420618;
        let mut body = DOC_BODY.as_bytes().to_vec();
        body[10] ^= 1;
        assert_eq!(
            secret.verify_at(Some(DOC_TS), Some(DOC_SIG), &body, now),
            Err(SignatureError::Mismatch)
        );
        // Timestamp changed: the signature covers it.
        assert_eq!(
            secret.verify_at(Some("1531420619"), Some(DOC_SIG), DOC_BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        // Another secret.
        let other = SigningSecret::new("another-secret").expect("secret");
        assert_eq!(
            other.verify_at(Some(DOC_TS), Some(DOC_SIG), DOC_BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        // Upper-case hex is not what Slack sends, but is the same MAC.
        let upper = format!("v0={}", DOC_SIG[3..].to_uppercase());
        assert!(
            secret
                .verify_at(Some(DOC_TS), Some(&upper), DOC_BODY.as_bytes(), now)
                .is_ok()
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let secret = SigningSecret::new(DOC_SECRET).expect("secret");
        let body = DOC_BODY.as_bytes();
        let now = 1531420618;
        assert_eq!(
            secret.verify_at(None, Some(DOC_SIG), body, now),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            secret.verify_at(Some(DOC_TS), None, body, now),
            Err(SignatureError::MissingHeader(SIGNATURE_HEADER))
        );
        for ts in [
            "",
            "-1531420618",
            "+1531420618",
            " 1531420618",
            "1531420618.5",
            "99999999999999",
        ] {
            assert_eq!(
                secret.verify_at(Some(ts), Some(DOC_SIG), body, now),
                Err(SignatureError::MalformedTimestamp),
                "{ts:?}"
            );
        }
        let short = &DOC_SIG[..DOC_SIG.len() - 2];
        let v1 = DOC_SIG.replacen("v0=", "v1=", 1);
        let nothex = format!("v0={}", "z".repeat(64));
        for sig in ["", "v0=", short, &v1, &nothex, &DOC_SIG[3..]] {
            assert_eq!(
                secret.verify_at(Some(DOC_TS), Some(sig), body, now),
                Err(SignatureError::MalformedSignature),
                "{sig:?}"
            );
        }
    }

    #[test]
    fn five_minute_window_both_ways() {
        let secret = SigningSecret::new(DOC_SECRET).expect("secret");
        let ts = 1531420618;
        let ok = |now| secret.verify_at(Some(DOC_TS), Some(DOC_SIG), DOC_BODY.as_bytes(), now);
        assert!(ok(ts + 300).is_ok());
        assert!(ok(ts - 300).is_ok());
        assert_eq!(ok(ts + 301), Err(SignatureError::Stale { age_secs: 301 }));
        assert_eq!(
            ok(ts - 301),
            Err(SignatureError::FromTheFuture { ahead_secs: 301 })
        );
    }

    #[test]
    fn empty_secret_is_refused_and_debug_is_redacted() {
        assert_eq!(
            SigningSecret::new("  ").err(),
            Some(ConfigError::EmptySecret)
        );
        let s = SigningSecret::new(DOC_SECRET).expect("secret");
        assert!(!format!("{s:?}").contains(DOC_SECRET));
    }

    #[test]
    fn replays_are_refused_and_memory_is_bounded() {
        let guard = ReplayGuard::new(2);
        let v = |ts, b| Verified {
            timestamp: ts,
            mac: [b; 32],
        };
        let now = 10_000;
        assert_eq!(guard.check(&v(now, 1), now), Ok(()));
        assert_eq!(guard.check(&v(now, 1), now), Err(ReplayError::Replayed));
        assert_eq!(guard.check(&v(now, 2), now), Ok(()));
        // Full of live entries: refuse rather than forget a live one.
        assert_eq!(
            guard.check(&v(now, 3), now),
            Err(ReplayError::Full { capacity: 2 })
        );
        // Later, the old entries can no longer pass the timestamp check and are dropped.
        let later = now + 301;
        assert_eq!(guard.check(&v(later, 3), later), Ok(()));
        assert_eq!(guard.len(), 1);
    }
}
