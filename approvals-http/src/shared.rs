//! What the API, the agent API and the console share: the server's state ([`Shared`]: gate,
//! tokens, sessions, grant signer, settings), bearer-token authentication, request parsing
//! (JSON bodies, request ids) and the response helpers they build answers with.

use std::sync::Arc;

use approvals_core::{Gate, Principal, RequestId};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use url::Url;

use crate::auth::Tokens;
use crate::problem::Problem;
use crate::session::Sessions;

/// Longest review or cancel reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// The state behind a [`ReviewServer`](crate::ReviewServer), shared by the API and the console.
pub(crate) struct Shared {
    pub(crate) gate: Gate,
    pub(crate) tokens: Tokens,
    pub(crate) admin_groups: Vec<String>,
    pub(crate) public_url: Option<Url>,
    pub(crate) sessions: Sessions,
    /// Renders the metrics at `GET /metrics` (Prometheus text), once an exporter is attached.
    pub(crate) metrics: std::sync::OnceLock<MetricsRenderer>,
    /// Signs the grant tokens the agent API hands out.
    pub(crate) signer: approvals_audit::note::Signer,
    /// The `iss` claim of those tokens.
    pub(crate) issuer: String,
    /// Grants of actions the policy allowed outright (not stored), until they are run.
    pub(crate) allowed: crate::allowed::AllowedGrants,
    /// The console's WebAuthn relying party, when the public URL allows one.
    pub(crate) passkeys: Option<crate::console::passkey::Passkeys>,
    /// Console sign-in with an OpenID Connect provider, when configured.
    pub(crate) oidc: Option<crate::console::oidc::OidcClient>,
}

impl Shared {
    /// The console page of request `id`: under the public URL, or the `Host` the caller used.
    pub(crate) fn review_url(&self, request: &Request<Bytes>, id: RequestId) -> Option<String> {
        let base = match &self.public_url {
            Some(url) => url.clone(),
            None => {
                let host = request.headers().get(header::HOST)?.to_str().ok()?;
                Url::parse(&format!("http://{host}/")).ok()?
            }
        };
        base.join(&id.console_path()).ok().map(String::from)
    }
}

/// Renders the process's metrics as Prometheus text exposition (see
/// [`ReviewServer::serve_metrics`](crate::ReviewServer::serve_metrics)).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// `Ok` if the request's method is one of `methods`; otherwise the `405` answer to send.
pub(crate) fn only(request: &Request<Bytes>, methods: &[Method]) -> Result<(), Response<Bytes>> {
    if methods.contains(request.method()) {
        return Ok(());
    }
    let allow = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        format!(
            "{} is not allowed here; use {allow}",
            crate::html::truncate(request.method().as_str(), 20)
        ),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    Err(response)
}

/// `value` as an `application/json` response with `status`.
pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Bytes> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Bytes::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            Problem::unavailable(format!("could not encode the response: {e}")).into_response()
        }
    }
}

/// A `303 See Other` to `location`.
pub(crate) fn redirect(location: &str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, value);
    }
    r
}

/// The request's body as a JSON object (`application/json` only; an empty body is `{}`).
pub(crate) fn json_object(
    request: &Request<Bytes>,
) -> Result<serde_json::Map<String, serde_json::Value>, Problem> {
    let body = request.body();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as application/json",
        ));
    }
    let invalid = |e: serde_json::Error| {
        Problem::bad_request(format!(
            "the body is not valid for this call: {}",
            crate::html::truncate(&e.to_string(), 300)
        ))
    };
    // Only an object: serde would also read a struct from a JSON array of its fields.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
    match value {
        serde_json::Value::Object(fields) => Ok(fields),
        _ => Err(Problem::bad_request(
            "the body must be a JSON object, for example {\"reason\": \"...\"}",
        )),
    }
}

pub(crate) fn parse_id(raw: &str) -> Result<RequestId, Problem> {
    RequestId::parse(raw).map_err(|_| {
        Problem::bad_request(format!(
            "{:?} is not a request id; ids are UUIDs like 0193a5c4-7e1f-7b2a-9c3d-4e5f60718293",
            crate::html::truncate(raw, 60)
        ))
    })
}

/// The principal for the request's bearer token.
pub(crate) fn authenticate(
    shared: &Shared,
    request: &Request<Bytes>,
) -> Result<Principal, Problem> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(Problem::unauthenticated(
            "send Authorization: Bearer <token>; ask an administrator for a token (approvals token new)",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Problem::unauthenticated("the Authorization header must be \"Bearer <token>\"")
        })?;
    shared
        .tokens
        .principal(token)
        .cloned()
        .ok_or_else(|| Problem::unauthenticated("the token is not valid (unknown or revoked)"))
}

/// The stored request `id`: `404` when there is none, `503` when the store cannot answer.
pub(crate) async fn load(
    gate: &Gate,
    id: RequestId,
) -> Result<approvals_core::RequestRecord, Problem> {
    gate.get(id)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(|| Problem::not_found(format!("no approval request {id}")))
}
