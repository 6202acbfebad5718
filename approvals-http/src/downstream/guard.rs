//! The service side: [`GrantGuard`] admits a request only with a grant token bound to exactly
//! that call, once; [`GrantGuardLayer`] is it as a `tower::Layer`, [`ApprovedCall`] (with the
//! `axum` feature) the verified claims in an axum handler; [`ReplayCache`] keeps tokens
//! single-use.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use approvals_audit::grant::{GrantClaims, GrantTokenError, GrantTokenVerifier};
use approvals_core::RequestId;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, request};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Body;

use super::call::{CallError, call_binding};
use crate::problem::Problem;

/// Largest request body a guard reads by default: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// A replay cache could not be read or written. The guard refuses the request (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the replay cache is unavailable: {0}")]
pub struct ReplayCacheError(pub String);

/// Remembers which grant tokens were used, so that each is accepted once.
///
/// The in-memory default ([`MemoryReplayCache`]) is right for one process. Replicas of a
/// service behind a load balancer must share one cache (a database table with a unique key,
/// Redis `SET NX PX`), or a token refused by one replica is accepted by another.
#[async_trait]
pub trait ReplayCache: Send + Sync + 'static {
    /// Records that the token of request `id` is used, and keeps that until `until`; in one
    /// atomic step, returns `true` when it was not used before and `false` when it was.
    async fn first_use(
        &self,
        id: RequestId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, ReplayCacheError>;
}

/// A [`ReplayCache`] in this process's memory: request ids with their expiry, pruned of
/// expired ones as it grows. Only for a service that runs as one process.
#[derive(Debug, Default)]
pub struct MemoryReplayCache {
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    until: HashMap<RequestId, DateTime<Utc>>,
    prune_at: usize,
}

impl MemoryReplayCache {
    /// An empty cache.
    pub fn new() -> MemoryReplayCache {
        MemoryReplayCache::default()
    }

    /// How many used tokens it remembers now (expired ones included until the next prune).
    pub fn len(&self) -> usize {
        self.used.lock().map(|u| u.until.len()).unwrap_or(0)
    }

    /// Whether it remembers no used token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_use(
        &self,
        id: RequestId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, ReplayCacheError> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| ReplayCacheError("its lock is poisoned".into()))?;
        if used.until.len() >= used.prune_at {
            used.until.retain(|_, until| *until > now);
            used.prune_at = (used.until.len() * 2).max(1024);
        }
        match used.until.get(&id) {
            Some(kept) if *kept > now => Ok(false),
            _ => {
                used.until.insert(id, until);
                Ok(true)
            }
        }
    }
}

/// Why a guard refused a request. The inner service never sees a refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No `Authorization: Bearer <token>` header (401).
    #[error(
        "no grant token: send the credential the gate issued for this call as Authorization: Bearer <token>"
    )]
    MissingToken,
    /// The token is malformed, forged, expired, for another service or issuer, or not bound
    /// to a call (401).
    #[error("the grant token is not valid here: {0}")]
    InvalidToken(GrantTokenError),
    /// The token is valid, but for another call (method, path, query or body) (403).
    #[error("{0}")]
    CallMismatch(GrantTokenError),
    /// The body is larger than the guard reads (413).
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is neither empty nor JSON, so it cannot be bound to an approval (415).
    #[error("{0}")]
    BodyNotJson(CallError),
    /// The body could not be read (400).
    #[error("the body could not be read: {0}")]
    BodyUnreadable(String),
    /// The token was already used (409): a grant runs one call, once.
    #[error(
        "the grant token of request {request_id} was already used: an approval runs one call once; ask for a new approval"
    )]
    Replayed {
        /// The request the token belongs to.
        request_id: RequestId,
    },
    /// The replay cache failed (503); nothing ran.
    #[error("{0}; nothing ran, try again")]
    Unavailable(ReplayCacheError),
}

impl Refusal {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::MissingToken | Refusal::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Refusal::CallMismatch(_) => StatusCode::FORBIDDEN,
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyNotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            Refusal::Replayed { .. } => StatusCode::CONFLICT,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem document it is answered with (`code`: `unauthenticated`,
    /// `invalid_token`, `call_mismatch`, `payload_too_large`, `unsupported_body`,
    /// `bad_request`, `token_used` or `unavailable`).
    pub fn to_problem(&self) -> Problem {
        let (code, title) = match self {
            Refusal::MissingToken => ("unauthenticated", "Authentication required"),
            Refusal::InvalidToken(_) => ("invalid_token", "The grant token is not valid"),
            Refusal::CallMismatch(_) => ("call_mismatch", "Not the approved call"),
            Refusal::BodyTooLarge { .. } => ("payload_too_large", "Request body too large"),
            Refusal::BodyNotJson(_) => ("unsupported_body", "The body cannot be bound"),
            Refusal::BodyUnreadable(_) => ("bad_request", "The request is malformed"),
            Refusal::Replayed { .. } => ("token_used", "The grant token was already used"),
            Refusal::Unavailable(_) => ("unavailable", "Temporarily unavailable"),
        };
        Problem::new(self.status(), code, title, self.to_string())
    }

    /// The answer: a problem document (`application/problem+json`); a 401 carries
    /// `WWW-Authenticate: Bearer` with `error="invalid_token"` when a token was sent
    /// (RFC 6750).
    pub fn into_response(self) -> Response<Bytes> {
        let mut response = self.to_problem().into_response();
        let challenge = match self {
            Refusal::MissingToken => "Bearer realm=\"approvals\"",
            Refusal::InvalidToken(_) => "Bearer realm=\"approvals\", error=\"invalid_token\"",
            _ => return response,
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::MissingToken)?;
    let value = value.to_str().map_err(|_| {
        Refusal::InvalidToken(GrantTokenError::Malformed(
            "the Authorization header is not ASCII".into(),
        ))
    })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(Refusal::MissingToken),
    }
}

/// Decides on the token alone (before the body is read): present, signed by a trusted key,
/// in its time window, for this audience and issuer, bound to a call.
pub fn check_token(
    verifier: &GrantTokenVerifier,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<GrantClaims, Refusal> {
    let token = bearer(headers)?;
    verifier
        .verify_bound(token, now)
        .map_err(Refusal::InvalidToken)
}

/// Decides on the call: the token's `bind` claim is the binding of this method, path and
/// query and body.
pub fn check_call(
    claims: &GrantClaims,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<(), Refusal> {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let binding =
        call_binding(method.as_str(), path_and_query, body).map_err(Refusal::BodyNotJson)?;
    claims.check_bind(&binding).map_err(Refusal::CallMismatch)
}

/// Admits requests that carry a grant token for exactly that call, once: the token from
/// `Authorization: Bearer`, checked by a [`GrantTokenVerifier`] (signature, expiry, and the
/// audience and issuer it is configured with), its `bind` claim compared with the binding of
/// the request's method, path and query and body ([`call_binding`]), and its request id
/// recorded in a [`ReplayCache`] until the token expires. Everything else is a [`Refusal`].
///
/// Configure the verifier with the service's own origin as audience, exactly as agents
/// address it (`https://billing.internal`), and the broker's issuer. Put the guard in front
/// of the whole router, not a nested one: the path it binds is the one it sees.
///
/// ```
/// use approvals_audit::grant::GrantTokenVerifier;
/// use approvals_audit::note::Signer;
/// use approvals_http::downstream::GrantGuard;
///
/// # let signer = Signer::generate("grants.example")?;
/// let verifier = GrantTokenVerifier::new(&[signer.verifier()])
///     .audience("https://billing.internal")
///     .issuer("approvals.example.com");
/// let layer = GrantGuard::new(verifier).body_limit(64 * 1024).into_layer();
/// // axum::Router::new().route(...).layer(layer)
/// # let _ = layer; Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct GrantGuard {
    verifier: GrantTokenVerifier,
    cache: Arc<dyn ReplayCache>,
    body_limit: usize,
}

impl std::fmt::Debug for GrantGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantGuard")
            .field("verifier", &self.verifier)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl GrantGuard {
    /// A guard checking tokens with `verifier`, remembering used tokens in memory
    /// ([`MemoryReplayCache`]) and reading bodies up to [`DEFAULT_BODY_LIMIT`].
    pub fn new(verifier: GrantTokenVerifier) -> GrantGuard {
        GrantGuard {
            verifier,
            cache: Arc::new(MemoryReplayCache::new()),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Uses `cache` to keep tokens single-use (share one across replicas).
    pub fn replay_cache(self, cache: impl ReplayCache) -> GrantGuard {
        self.replay_cache_shared(Arc::new(cache))
    }

    /// Uses a shared `cache` to keep tokens single-use.
    pub fn replay_cache_shared(mut self, cache: Arc<dyn ReplayCache>) -> GrantGuard {
        self.cache = cache;
        self
    }

    /// Refuses bodies larger than `bytes` (413).
    pub fn body_limit(mut self, bytes: usize) -> GrantGuard {
        self.body_limit = bytes;
        self
    }

    /// This guard as a `tower::Layer`.
    pub fn into_layer(self) -> GrantGuardLayer {
        GrantGuardLayer {
            guard: Arc::new(self),
        }
    }

    /// Admits a buffered request, or says why not; the framework-agnostic form of the layer.
    /// On success the token is used up and the request's claims are returned.
    pub async fn admit(&self, request: &Request<Bytes>) -> Result<GrantClaims, Refusal> {
        let claims = check_token(&self.verifier, request.headers(), Utc::now())?;
        let body = request.body();
        if body.len() > self.body_limit {
            return Err(Refusal::BodyTooLarge {
                limit: self.body_limit,
            });
        }
        check_call(&claims, request.method(), request.uri(), body)?;
        self.use_up(claims).await
    }

    /// Checks the token, reads the body (up to the limit), checks the call and uses the token
    /// up; returns the claims and the body.
    async fn admit_streaming<B>(
        &self,
        parts: &request::Parts,
        body: B,
    ) -> Result<(GrantClaims, Bytes), Refusal>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let claims = check_token(&self.verifier, &parts.headers, Utc::now())?;
        let body = match Limited::new(body, self.body_limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(Refusal::BodyTooLarge {
                    limit: self.body_limit,
                });
            }
            Err(e) => return Err(Refusal::BodyUnreadable(e.to_string())),
        };
        check_call(&claims, &parts.method, &parts.uri, &body)?;
        Ok((self.use_up(claims).await?, body))
    }

    /// Records the token as used; refuses it if it was.
    async fn use_up(&self, claims: GrantClaims) -> Result<GrantClaims, Refusal> {
        let until = self.verifier.accepts_until(&claims);
        match self
            .cache
            .first_use(claims.request_id, until, Utc::now())
            .await
        {
            Ok(true) => Ok(claims),
            Ok(false) => Err(Refusal::Replayed {
                request_id: claims.request_id,
            }),
            Err(e) => Err(Refusal::Unavailable(e)),
        }
    }
}

/// [`GrantGuard`] as a `tower::Layer`: wraps a service of `http::Request<B>` so that it only
/// sees admitted requests, with the body restored and the verified [`GrantClaims`] in the
/// request's extensions. `B` is any body that can be rebuilt from bytes (axum's `Body`,
/// `Full<Bytes>`).
#[derive(Debug, Clone)]
pub struct GrantGuardLayer {
    guard: Arc<GrantGuard>,
}

impl GrantGuardLayer {
    /// A layer with a [`GrantGuard::new`] of `verifier` (configure it with the service's
    /// origin as `.audience(..)` and the broker's `.issuer(..)`).
    pub fn new(verifier: GrantTokenVerifier) -> GrantGuardLayer {
        GrantGuard::new(verifier).into_layer()
    }
}

impl From<GrantGuard> for GrantGuardLayer {
    fn from(guard: GrantGuard) -> GrantGuardLayer {
        guard.into_layer()
    }
}

impl<S> tower::Layer<S> for GrantGuardLayer {
    type Service = GrantGuardService<S>;

    fn layer(&self, inner: S) -> GrantGuardService<S> {
        GrantGuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service a [`GrantGuardLayer`] makes: answers refusals itself, passes admitted requests
/// on.
#[derive(Debug, Clone)]
pub struct GrantGuardService<S> {
    inner: S,
    guard: Arc<GrantGuard>,
}

impl<S, B, RB> tower::Service<Request<B>> for GrantGuardService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: From<Bytes> + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            match guard.admit_streaming(&parts, body).await {
                Ok((claims, body)) => {
                    parts.extensions.insert(claims);
                    inner.call(Request::from_parts(parts, B::from(body))).await
                }
                Err(refusal) => {
                    tracing::info!(status = %refusal.status(), reason = %refusal, "grant guard refused a call");
                    Ok(refusal.into_response().map(RB::from))
                }
            }
        })
    }
}

/// The verified claims of the grant token that admitted this request, as an axum extractor.
/// Answers 500 when no [`GrantGuardLayer`] is in front of the route (a wiring mistake, never
/// a pass).
///
/// ```
/// use approvals_http::downstream::ApprovedCall;
///
/// async fn refund(ApprovedCall(grant): ApprovedCall) -> String {
///     format!("refund approved by {:?} (request {})", grant.approvers, grant.request_id)
/// }
/// ```
#[cfg(feature = "axum")]
#[derive(Debug, Clone)]
pub struct ApprovedCall(pub GrantClaims);

#[cfg(feature = "axum")]
impl<St: Send + Sync> axum::extract::FromRequestParts<St> for ApprovedCall {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut request::Parts,
        _state: &St,
    ) -> Result<ApprovedCall, axum::response::Response> {
        parts
            .extensions
            .get::<GrantClaims>()
            .cloned()
            .map(ApprovedCall)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "grant_guard_missing",
                    "The service is misconfigured",
                    "this route reads the approved call, but no GrantGuardLayer is in front of it: add .layer(GrantGuardLayer::new(verifier)) to the router",
                )
                .into_response()
                .map(axum::body::Body::from)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::HttpCall;
    use approvals_audit::grant::sign_claims;
    use approvals_audit::note::Signer;
    use approvals_core::Action as _;
    use chrono::TimeDelta;
    use serde_json::json;

    #[tokio::test]
    async fn admit_takes_a_buffered_request_once_and_only_the_approved_call() {
        let signer = Signer::generate("grants.test").expect("valid key name");
        let origin = "https://billing.internal";
        let guard = GrantGuard::new(
            GrantTokenVerifier::new(&[signer.verifier()])
                .audience(origin)
                .issuer("gate"),
        )
        .body_limit(64);
        let call = HttpCall::new("k", origin, "PUT", "/v1/a?b=1", Some(json!({"x": 1})));
        let now = Utc::now();
        let claims = GrantClaims::builder(
            RequestId::new(),
            call.to_request().digest(),
            now,
            now + TimeDelta::minutes(5),
        )
        .issuer("gate")
        .audience(origin)
        .bind(call.binding());
        let token = sign_claims(claims, &signer).expect("claims sign");
        let request = |uri: &str, body: &str, token: Option<&str>| {
            let mut r = Request::builder().method("PUT").uri(uri);
            if let Some(token) = token {
                r = r.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            r.body(Bytes::from(body.to_owned())).expect("request")
        };
        let refusal = |r: Result<GrantClaims, Refusal>| r.expect_err("refused").status();

        let missing = guard.admit(&request("/v1/a?b=1", r#"{"x":1}"#, None)).await;
        assert_eq!(refusal(missing), StatusCode::UNAUTHORIZED);
        let other = guard
            .admit(&request("/v1/a?b=2", r#"{"x":1}"#, Some(&token)))
            .await;
        assert_eq!(refusal(other), StatusCode::FORBIDDEN);
        let big = format!(r#"{{"x":1,"pad":"{}"}}"#, "y".repeat(64));
        let big = guard.admit(&request("/v1/a?b=1", &big, Some(&token))).await;
        assert_eq!(refusal(big), StatusCode::PAYLOAD_TOO_LARGE);
        let text = guard
            .admit(&request("/v1/a?b=1", "x=1", Some(&token)))
            .await;
        assert_eq!(refusal(text), StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let admitted = guard
            .admit(&request("/v1/a?b=1", r#" { "x" : 1 } "#, Some(&token)))
            .await
            .expect("the approved call");
        assert_eq!(admitted.bind, Some(call.binding()));
        let again = guard
            .admit(&request("/v1/a?b=1", r#"{"x":1}"#, Some(&token)))
            .await;
        assert_eq!(refusal(again), StatusCode::CONFLICT);
    }

    #[tokio::test]
    async fn the_memory_cache_admits_each_id_once_and_forgets_expired_ones() {
        let cache = MemoryReplayCache::new();
        let now = Utc::now();
        let id = RequestId::new();
        let later = now + TimeDelta::minutes(5);
        assert_eq!(cache.first_use(id, later, now).await, Ok(true));
        assert_eq!(cache.first_use(id, later, now).await, Ok(false));
        assert_eq!(
            cache
                .first_use(id, later, now + TimeDelta::minutes(4))
                .await,
            Ok(false)
        );
        for _ in 0..2_000 {
            let _ = cache.first_use(RequestId::new(), now, now).await;
        }
        let after = now + TimeDelta::minutes(10);
        assert_eq!(
            cache.first_use(RequestId::new(), after, after).await,
            Ok(true)
        );
        assert!(cache.len() < 1_100, "pruned to {}", cache.len());
    }
}
