//! The console's server-side sessions: a random cookie value mapped (by its SHA-256) to who
//! signed in (an API token, or a reviewer an OpenID Connect provider named) and the
//! session's CSRF token, with a time to live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use approvals_core::Principal;

use crate::auth::TokenHash;

const MAX_SESSIONS: usize = 10_000;

/// Who a session belongs to.
#[derive(Debug, Clone)]
pub(crate) enum Holder {
    /// Signed in with an API token, looked up again on every request (so revoking the token
    /// ends its sessions).
    Token(TokenHash),
    /// Signed in with OpenID Connect.
    Oidc {
        /// The reviewer, as at sign-in.
        principal: Principal,
        /// The identity claim's value.
        external_id: String,
        /// Whether the identity resolver is asked again before each decision.
        recheck: bool,
        /// The ID token it began with (the hint for the provider's sign-out).
        id_token: String,
    },
}

struct Session {
    holder: Holder,
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// Server-side console sessions, keyed by the SHA-256 of the cookie value.
pub(crate) struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session made with an API token lasts.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session lasting `ttl`; returns the cookie value.
    pub(crate) fn create(&self, holder: Holder, ttl: Duration) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            // Drop the session closest to expiry rather than refuse sign-ins.
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&cookie),
            Session {
                holder,
                csrf: random_token(),
                created: now,
                expires: now + ttl,
            },
        );
        cookie
    }

    /// Who holds the session, and its CSRF token, while it lasts.
    pub(crate) fn get(&self, cookie: &str) -> Option<(Holder, String)> {
        let mut map = self.lock();
        let k = key(cookie);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some((s.holder.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// How long ago the session was signed in, while it lasts.
    pub(crate) fn age(&self, cookie: &str) -> Option<Duration> {
        let now = Instant::now();
        self.lock()
            .get(&key(cookie))
            .filter(|s| s.expires > now)
            .map(|s| now.duration_since(s.created))
    }

    /// Ends a session.
    pub(crate) fn remove(&self, cookie: &str) {
        self.lock().remove(&key(cookie));
    }
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// 32 random bytes, base64url: a session id, a CSRF token, a sign-in's browser binding.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
