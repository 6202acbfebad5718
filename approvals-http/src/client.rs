//! `ApiClient`: the REST API from Rust, over HTTP or in-process (the CLI uses both): the
//! reviewer's calls and the agent's (submit, wait, executions).

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{Digest, RequestId};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use rustls_platform_verifier::BuilderVerifierExt;
use serde::de::DeserializeOwned;
use url::Url;

use crate::problem::Problem;
use crate::server::ReviewServer;
use crate::view::{ExecutionView, Me, RequestList, RequestView, SubmitBody, Submitted, WaitResult};

/// Builds the HTTP client used by this crate: [`http_client_builder`] with `timeout` on each
/// request (and at most 5 seconds to connect).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    http_client_builder()?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| e.to_string())
}

/// An HTTP client builder with this crate's settings and no timeouts, for callers whose
/// requests are long-lived (a streamed MCP answer): rustls with the `ring` provider, the
/// platform's certificate verifier, no redirects (a redirect could carry a bearer token
/// elsewhere).
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none()))
}

/// A failed API call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a problem document.
    #[error("{}", .0.detail)]
    Problem(Problem),
    /// The server could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The server's answer made no sense.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Problem(p) => Some(p.status_code()),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum Transport {
    Http { base: Url, client: reqwest::Client },
    InProcess(ReviewServer),
}

/// Calls the approvals API with a bearer token, either over HTTP or directly on an
/// in-process [`ReviewServer`] (same checks, no socket).
#[derive(Clone)]
pub struct ApiClient {
    transport: Transport,
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.transport {
            Transport::Http { base, .. } => base.to_string(),
            Transport::InProcess(_) => "in-process".to_owned(),
        };
        f.debug_struct("ApiClient")
            .field("target", &target)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ApiClient {
    /// A client for the server at `base` (for example `http://127.0.0.1:8480/`).
    pub fn http(base: Url, token: Option<String>) -> Result<Self, ClientError> {
        let client = http_client(Duration::from_secs(30)).map_err(ClientError::Unavailable)?;
        Ok(ApiClient {
            transport: Transport::Http { base, client },
            token,
        })
    }

    /// A client that calls `server` in-process.
    pub fn in_process(server: ReviewServer, token: Option<String>) -> Self {
        ApiClient {
            transport: Transport::InProcess(server),
            token,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.call_within(method, path, body, None).await
    }

    /// `call`, with a longer HTTP timeout for a long poll.
    async fn call_within<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let (status, bytes) = match &self.transport {
            Transport::Http { base, client } => {
                let url = base
                    .join(path.trim_start_matches('/'))
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let mut req = client.request(method, url);
                if let Some(timeout) = timeout {
                    req = req.timeout(timeout);
                }
                if let Some(t) = &self.token {
                    req = req.bearer_auth(t);
                }
                if let Some(b) = body {
                    req = req.header(header::CONTENT_TYPE, "application/json").body(b);
                }
                let resp = req.send().await.map_err(|e| {
                    ClientError::Unavailable(format!(
                        "cannot reach the approvals server at {base}: {}",
                        if e.is_timeout() {
                            "no answer in time"
                        } else {
                            "connection failed"
                        }
                    ))
                })?;
                let status = resp.status();
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| ClientError::Unavailable(e.to_string()))?;
                (status, bytes)
            }
            Transport::InProcess(server) => {
                let mut builder = Request::builder().method(method).uri(path);
                if let Some(t) = &self.token {
                    builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
                }
                if body.is_some() {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                }
                let request = builder
                    .body(body.unwrap_or_default())
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let response = server.handle(request).await;
                (response.status(), response.into_body())
            }
        };
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => Err(ClientError::Problem(p)),
                Err(_) => Err(ClientError::Problem(Problem::new(
                    status,
                    "http_error",
                    "HTTP error",
                    format!("the server answered {status}"),
                ))),
            }
        }
    }

    /// `GET /v1/me`.
    pub async fn me(&self) -> Result<Me, ClientError> {
        self.call(Method::GET, "/v1/me", None).await
    }

    /// `GET /v1/requests` with a query string such as `state=pending&kind=data.export`.
    pub async fn list(&self, query: &str) -> Result<RequestList, ClientError> {
        let path = if query.is_empty() {
            "/v1/requests".to_owned()
        } else {
            format!("/v1/requests?{query}")
        };
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/requests/{id}`.
    pub async fn get(&self, id: RequestId) -> Result<RequestView, ClientError> {
        self.call(Method::GET, &format!("/v1/requests/{id}"), None)
            .await
    }

    /// `POST /v1/requests/{id}/approve` or `/deny`.
    pub async fn decide(
        &self,
        id: RequestId,
        approve: bool,
        reason: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<RequestView, ClientError> {
        let verb = if approve { "approve" } else { "deny" };
        let mut body = serde_json::Map::new();
        if let Some(r) = reason {
            body.insert("reason".into(), r.into());
        }
        if let Some(d) = digest {
            body.insert("digest".into(), d.to_string().into());
        }
        self.call(
            Method::POST,
            &format!("/v1/requests/{id}/{verb}"),
            Some(body.into()),
        )
        .await
    }

    /// `POST /v1/requests/{id}/approve` with `params`: approves the action as edited (every
    /// parameter; only those the rule lists as editable may differ), bound to `digest`, the
    /// version the reviewer saw.
    pub async fn approve_edited(
        &self,
        id: RequestId,
        digest: Digest,
        params: serde_json::Value,
        reason: Option<&str>,
    ) -> Result<RequestView, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(r) = reason {
            body.insert("reason".into(), r.into());
        }
        body.insert("digest".into(), digest.to_string().into());
        body.insert("params".into(), params);
        self.call(
            Method::POST,
            &format!("/v1/requests/{id}/approve"),
            Some(body.into()),
        )
        .await
    }

    /// `POST /v1/requests/{id}/cancel`.
    pub async fn cancel(
        &self,
        id: RequestId,
        reason: Option<&str>,
    ) -> Result<RequestView, ClientError> {
        let body = reason_body(reason);
        self.call(
            Method::POST,
            &format!("/v1/requests/{id}/cancel"),
            Some(body),
        )
        .await
    }

    /// `GET /v1/standing-grants`: the standing grants in force.
    pub async fn standing_grants(&self) -> Result<crate::standing::StandingList, ClientError> {
        self.call(Method::GET, "/v1/standing-grants", None).await
    }

    /// `POST /v1/standing-grants`: proposes a standing grant (a human's token); the rule's
    /// reviewers approve it like any request.
    pub async fn propose_standing(
        &self,
        proposal: &crate::standing::ProposeBody,
    ) -> Result<RequestView, ClientError> {
        let body = serde_json::to_value(proposal)
            .map_err(|e| ClientError::Protocol(format!("the proposal is not JSON: {e}")))?;
        self.call(Method::POST, "/v1/standing-grants", Some(body))
            .await
    }

    /// `POST /v1/standing-grants/{id}/revoke`.
    pub async fn revoke_standing(
        &self,
        id: RequestId,
        reason: Option<&str>,
    ) -> Result<RequestView, ClientError> {
        let body = reason_body(reason);
        self.call(
            Method::POST,
            &format!("/v1/standing-grants/{id}/revoke"),
            Some(body),
        )
        .await
    }

    // -------------------------------------------------------------------------------------
    // The agent's calls (agent or service token).

    /// `POST /v1/requests`: asks to run `action`. The initiator is the token's; the action's
    /// own initiator is not sent (only its session and prompt reference). Answers
    /// [`Submitted`] with status `allowed` (run it with the `grant_token`) or `pending` (wait
    /// with [`wait`](ApiClient::wait)). A policy refusal is an error: a
    /// [`ClientError::Problem`] with code `policy_denied` and the `rule` and `reason`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), approvals_http::ClientError> {
    /// use approvals_core::ActionRequest;
    /// use approvals_http::{ApiClient, SubmitStatus};
    ///
    /// let api = ApiClient::http("http://127.0.0.1:8480/".parse().unwrap(), Some("apr_…".into()))?;
    /// let export = ActionRequest::new("data.export", "db://prod/customers").idempotency_key("job-42");
    /// let submitted = api.submit(&export).await?;
    /// let token = match submitted.status {
    ///     SubmitStatus::Allowed => submitted.grant_token,
    ///     SubmitStatus::Pending => {
    ///         let mut waited = api.wait(submitted.id, std::time::Duration::from_secs(30)).await?;
    ///         while waited.state == approvals_core::RequestState::Pending {
    ///             waited = api.wait(submitted.id, std::time::Duration::from_secs(30)).await?;
    ///         }
    ///         waited.grant_token // None: denied, expired or cancelled (see state and reason)
    ///     }
    /// };
    /// if let Some(token) = token {
    ///     api.start_execution(submitted.id, &token).await?;
    ///     // ... run the action ...
    ///     api.finish_execution(submitted.id, Ok(())).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn submit(
        &self,
        action: &approvals_core::ActionRequest,
    ) -> Result<Submitted, ClientError> {
        self.submit_body(&SubmitBody::of(action)).await
    }

    /// `POST /v1/requests` with a body as given.
    pub async fn submit_body(&self, body: &SubmitBody) -> Result<Submitted, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(Method::POST, "/v1/requests", Some(body)).await
    }

    /// `POST /v1/plans`: asks for `actions` as one plan, reviewed once. Wait for it with
    /// [`wait`](ApiClient::wait) (an approved plan has no grant token), then submit each
    /// action with [`ActionRequest::in_plan`](approvals_core::ActionRequest::in_plan).
    pub async fn submit_plan(
        &self,
        actions: &[approvals_core::ActionRequest],
        justification: Option<&str>,
    ) -> Result<Submitted, ClientError> {
        let body = crate::view::PlanBody {
            actions: actions
                .iter()
                .map(|a| {
                    let mut body = SubmitBody::of(a);
                    body.idempotency_key = None;
                    body.plan = None;
                    body
                })
                .collect(),
            justification: justification.map(str::to_owned),
        };
        let body = serde_json::to_value(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(Method::POST, "/v1/plans", Some(body)).await
    }

    /// `GET /v1/requests/{id}/wait?timeout=…`: waits up to `timeout` (at most 60 s; the
    /// server refuses more) for the request to be decided. State `pending` means the time ran
    /// out: call again. Once approved, `grant_token` is set; denied, expired or cancelled
    /// requests carry `decided_by` and `reason`.
    pub async fn wait(&self, id: RequestId, timeout: Duration) -> Result<WaitResult, ClientError> {
        let secs = timeout.as_secs();
        self.call_within(
            Method::GET,
            &format!("/v1/requests/{id}/wait?timeout={secs}"),
            None,
            Some(Duration::from_secs(secs + 15)),
        )
        .await
    }

    /// `POST /v1/requests/{id}/executions`: consumes the grant, once. Run the action only
    /// after this succeeds, then report with [`finish_execution`](ApiClient::finish_execution).
    pub async fn start_execution(
        &self,
        id: RequestId,
        grant_token: &str,
    ) -> Result<ExecutionView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/requests/{id}/executions"),
            Some(serde_json::json!({ "grant_token": grant_token })),
        )
        .await
    }

    /// `POST /v1/requests/{id}/executions/outcome`: records how the action ended: `Ok(())`,
    /// or `Err` with a short text (at most 2000 characters).
    pub async fn finish_execution(
        &self,
        id: RequestId,
        outcome: Result<(), &str>,
    ) -> Result<ExecutionView, ClientError> {
        let body = match outcome {
            Ok(()) => serde_json::json!({ "ok": true }),
            Err(error) => serde_json::json!({ "ok": false, "error": error }),
        };
        self.call(
            Method::POST,
            &format!("/v1/requests/{id}/executions/outcome"),
            Some(body),
        )
        .await
    }
}

/// `{"reason": ...}`, or `{}` without a reason.
fn reason_body(reason: Option<&str>) -> serde_json::Value {
    match reason {
        Some(r) => serde_json::json!({ "reason": r }),
        None => serde_json::json!({}),
    }
}
