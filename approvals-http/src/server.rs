//! `ReviewServer`: the REST API and the review console over one [`Gate`], as a plain
//! `http::Request<Bytes> -> http::Response<Bytes>` handler, a `tower::Service`, and a hyper
//! server loop. It sits on top: it builds the state the API and the console share and routes
//! each request to [`api`](crate::api) or [`console`](crate::console).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use approvals_core::Gate;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use url::Url;

use crate::auth::Tokens;
use crate::problem::Problem;
use crate::session::Sessions;
pub use crate::shared::{MAX_REASON_CHARS, MetricsRenderer};
use crate::shared::{Shared, json_response, only, redirect};

/// The OpenAPI 3.1 document of the API, as kept in the repository
/// (`approvals-http/openapi.json`) and served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Name of the grant signing key a server makes for itself when none is configured.
pub const EPHEMERAL_KEY_NAME: &str = "approvals-http.ephemeral";

/// Largest request body read, in bytes. Larger bodies get `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Serves the JSON API (`/v1/...`), the OpenAPI document (`/openapi.json`) and the review
/// console (`/console/...`) for one [`Gate`]. Cheap to clone.
///
/// ```
/// # async fn demo(gate: approvals_core::Gate) -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_core::Principal;
/// use approvals_http::{ReviewServer, Tokens};
///
/// let server = ReviewServer::builder(gate)
///     .tokens(Tokens::new().with_token("…", Principal::human("sam@example.com").with_groups(["security"])))
///     .build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8480").await?;
/// approvals_http::serve(listener, server, std::future::pending()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReviewServer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ReviewServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewServer")
            .field("tokens", &self.shared.tokens)
            .field("admin_groups", &self.shared.admin_groups)
            .field(
                "public_url",
                &self.shared.public_url.as_ref().map(Url::as_str),
            )
            .finish_non_exhaustive()
    }
}

/// Builds a [`ReviewServer`].
#[must_use]
#[derive(Debug)]
pub struct ReviewServerBuilder {
    gate: Gate,
    tokens: Tokens,
    admin_groups: Vec<String>,
    public_url: Option<Url>,
    session_ttl: std::time::Duration,
    signer: Option<approvals_audit::note::Signer>,
    issuer: String,
    passkeys: Option<Arc<crate::console::passkey::PasskeyRegistry>>,
    passkey_registration_window: std::time::Duration,
    oidc: Option<crate::console::oidc::OidcClient>,
}

impl ReviewServerBuilder {
    /// Where the console keeps the passkeys reviewers register (default: in memory, for as
    /// long as the process runs; `approvals serve` keeps them in a file). Passkeys need the
    /// [`public_url`](Self::public_url), whose host is the WebAuthn relying party id: requests
    /// whose rule says `step_up = "passkey"` can only be approved with one.
    pub fn passkeys(mut self, registry: crate::console::passkey::PasskeyRegistry) -> Self {
        self.passkeys = Some(Arc::new(registry));
        self
    }

    /// The key that signs the grant tokens the agent API hands out
    /// (`GET /v1/requests/{id}/wait`); verifiers trust its public key
    /// ([`ReviewServer::grant_verifier`], `GET /v1/grant-key`). Without one, the server makes
    /// a key of its own when built, which lasts only as long as the process: tokens it signed
    /// cannot be checked after a restart. `approvals serve` uses the audit signing key.
    pub fn grant_signer(mut self, signer: approvals_audit::note::Signer) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The issuer (`iss` claim) of the grant tokens (default `approvals`).
    pub fn grant_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The API tokens and who they stand for (default: none, so every call is refused).
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Groups whose members may cancel any request (the initiator, and the human it acts for,
    /// may always cancel their own).
    pub fn admin_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.admin_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// The URL reviewers use to reach this server (for example behind a TLS proxy). It fixes
    /// the origin that console form posts must come from, and with `https` the session
    /// cookie is `Secure` and `__Host-` prefixed. Without it the origin is taken from the
    /// `Host` header over plain http (fine on loopback; use it for anything else).
    pub fn public_url(mut self, url: Url) -> Self {
        self.public_url = Some(url);
        self
    }

    /// How long a console session lasts (default 8 hours).
    pub fn session_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Signs console reviewers in with an OpenID Connect provider
    /// ([`OidcClient::discover`](crate::OidcClient::discover)): the sign-in page links to it,
    /// and, with [`OidcConfig::token_sign_in`](crate::OidcConfig::token_sign_in) `false`, the
    /// API-token form is gone. The `/v1` API still takes API tokens.
    pub fn oidc(mut self, client: crate::console::oidc::OidcClient) -> Self {
        self.oidc = Some(client);
        self
    }

    /// How soon after signing in a reviewer may register a passkey (default 10 minutes): a
    /// session taken from its owner later in its life cannot add a key of its own.
    pub fn passkey_registration_window(mut self, window: std::time::Duration) -> Self {
        self.passkey_registration_window = window;
        self
    }

    /// Builds the server.
    pub fn build(self) -> ReviewServer {
        let signer = self.signer.unwrap_or_else(|| {
            tracing::info!("no grant signer configured: grant tokens are signed with a key made for this process");
            approvals_audit::note::Signer::generate(EPHEMERAL_KEY_NAME)
                .expect("the constant key name is valid")
        });
        let passkeys = self.public_url.as_ref().and_then(|url| {
            let registry = self.passkeys.clone().unwrap_or_default();
            crate::console::passkey::Passkeys::new(url, registry, self.passkey_registration_window)
                .inspect_err(|e| tracing::warn!(error = %e, "passkeys are off"))
                .ok()
        });
        ReviewServer {
            shared: Arc::new(Shared {
                gate: self.gate,
                tokens: self.tokens,
                admin_groups: self.admin_groups,
                public_url: self.public_url,
                sessions: Sessions::new(self.session_ttl),
                metrics: std::sync::OnceLock::new(),
                signer,
                issuer: self.issuer,
                allowed: crate::allowed::AllowedGrants::default(),
                passkeys,
                oidc: self.oidc,
            }),
        }
    }
}

impl ReviewServer {
    /// Starts building a server for `gate`.
    pub fn builder(gate: Gate) -> ReviewServerBuilder {
        ReviewServerBuilder {
            gate,
            tokens: Tokens::new(),
            admin_groups: Vec::new(),
            public_url: None,
            session_ttl: std::time::Duration::from_secs(8 * 3600),
            signer: None,
            issuer: "approvals".to_owned(),
            passkeys: None,
            passkey_registration_window: crate::console::passkey::DEFAULT_REGISTRATION_WINDOW,
            oidc: None,
        }
    }

    /// The public key that checks the grant tokens this server signs (for
    /// `approvals-audit grant verify --trust`, or [`approvals_audit::grant::verify_grant`]).
    pub fn grant_verifier(&self) -> approvals_audit::note::Verifier {
        self.shared.signer.verifier()
    }

    /// The gate it serves.
    pub fn gate(&self) -> &Gate {
        &self.shared.gate
    }

    /// Serves `GET /metrics` with what `render` returns (Prometheus text, for example
    /// `metrics_exporter_prometheus::PrometheusHandle::render`; `approvals serve` attaches
    /// one). Before each render the `approvals_pending_requests` gauge is set from the store.
    /// The endpoint carries counts only, no request content, and needs no token, like most
    /// scrape targets: expose it to the monitoring network only. Returns `false` if metrics
    /// were already attached.
    pub fn serve_metrics(&self, render: MetricsRenderer) -> bool {
        self.shared.metrics.set(render).is_ok()
    }

    async fn metrics(&self) -> Response<Bytes> {
        match self.shared.gate.pending().await {
            Ok(pending) => {
                metrics::gauge!(approvals_core::observe::PENDING).set(pending.len() as f64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the store could not count pending requests")
            }
        }
        let text = self
            .shared
            .metrics
            .get()
            .map(|render| render())
            .unwrap_or_default();
        let mut r = Response::new(Bytes::from(text));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    /// Handles one request. Never panics on any input; every error is a problem document
    /// (API) or an error page (console).
    pub async fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut response = match segments.as_slice() {
            [] => redirect("/console/"),
            ["openapi.json"] => match only(&request, &[Method::GET, Method::HEAD]) {
                Ok(()) => {
                    let mut r = Response::new(Bytes::from_static(OPENAPI_JSON.as_bytes()));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                Err(r) => r,
            },
            ["metrics"] if self.shared.metrics.get().is_some() => {
                match only(&request, &[Method::GET, Method::HEAD]) {
                    Ok(()) => self.metrics().await,
                    Err(r) => r,
                }
            }
            ["healthz"] => match only(&request, &[Method::GET, Method::HEAD]) {
                Ok(()) => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
                Err(r) => r,
            },
            ["v1", rest @ ..] => crate::api::handle(&self.shared, &request, rest).await,
            ["console", rest @ ..] => crate::console::handle(&self.shared, &request, rest).await,
            _ => Problem::not_found(format!(
                "no resource at {}; the API is under /v1 (see /openapi.json), the console under /console/",
                crate::html::truncate(&path, 200)
            ))
            .into_response(),
        };
        let headers = response.headers_mut();
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // Not `no-referrer`: with it, browsers send `Origin: null` on form posts, and the
        // console's CSRF check needs the real origin. `same-origin` leaks nothing elsewhere.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        if request.method() == Method::HEAD {
            *response.body_mut() = Bytes::new();
        }
        response
    }

    /// This server as a `tower::Service` over any request body (read up to
    /// [`MAX_BODY_BYTES`]; larger bodies get `413`).
    pub fn service(&self) -> ReviewService {
        ReviewService {
            server: self.clone(),
        }
    }

    /// This server as an `axum::Router`, to merge or nest into an axum application.
    #[cfg(feature = "axum")]
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback_service(self.service())
    }
}

/// [`ReviewServer`] as a `tower::Service`. See [`ReviewServer::service`].
#[derive(Clone, Debug)]
pub struct ReviewService {
    server: ReviewServer,
}

impl<B> tower::Service<Request<B>> for ReviewService
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let server = self.server.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = match Limited::new(body, MAX_BODY_BYTES).collect().await {
                Ok(collected) => {
                    server
                        .handle(Request::from_parts(parts, collected.to_bytes()))
                        .await
                }
                Err(e) => {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Problem::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            "Request body too large",
                            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
                        )
                        .into_response()
                    } else {
                        Problem::bad_request("the request body could not be read").into_response()
                    }
                }
            };
            Ok(response.map(Full::new))
        })
    }
}

/// How long [`serve`] waits, once told to stop, for requests already being answered.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `server` over HTTP/1.1 on `listener` until `shutdown` completes. Each connection
/// runs on its own task; connection errors are logged and do not stop the server.
///
/// Once `shutdown` completes no connection is accepted, and requests already being answered
/// are finished (for up to [`SHUTDOWN_GRACE`]) before this returns: a reviewer whose decision
/// was recorded is told so, even when the decision is what ends the process (an MCP gateway
/// whose client leaves once its last call is answered).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: ReviewServer,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = server.service();
        let hyper_service = hyper::service::service_fn(move |request| {
            let mut service = service.clone();
            tower::Service::call(&mut service, request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(30))
            .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still unanswered {SHUTDOWN_GRACE:?} after shutdown; closing");
    }
    Ok(())
}
