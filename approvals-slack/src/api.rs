//! The Slack Web API client: `chat.postMessage`, `chat.update`, `views.open`, `users.info`,
//! `apps.connections.open` and `response_url` replies, with Slack's rate-limit and retry rules.
//!
//! Every call honours HTTP 429 `Retry-After` (up to a limit) and retries 5xx responses and
//! transport failures with exponential backoff; Slack's `{"ok": false, "error": ..}` answers
//! become [`SlackError::Api`]. The base URL is configurable so tests can point at a loopback
//! fake.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_platform_verifier::BuilderVerifierExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

/// Slack's Web API base URL.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api/";
/// Where Slack's `response_url`s point.
pub const DEFAULT_RESPONSE_URL_PREFIX: &str = "https://hooks.slack.com/";
/// Largest Web API response read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A Slack token (`xoxb-` bot token or `xapp-` app-level token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// Wraps a token; surrounding whitespace is ignored.
    pub fn new(token: impl AsRef<str>) -> Self {
        Token(Arc::from(token.as_ref().trim()))
    }

    /// The token text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn prefix(&self) -> &str {
        self.0.split('-').next().unwrap_or("")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}-<redacted>)", self.prefix())
    }
}

/// How calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, including the first (at least 1).
    pub max_attempts: u32,
    /// First backoff after a 5xx or transport failure; doubled each time.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured by waiting; longer ones fail the call (retryable).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// A Web API call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SlackError {
    /// Slack answered `ok: false`.
    #[error("Slack {method} failed: {error}{}", needed.as_ref().map(|n| format!(" (the token needs the {n} scope; add it to the app and reinstall)")).unwrap_or_default())]
    Api {
        /// The method.
        method: String,
        /// Slack's error code (`channel_not_found`, `invalid_auth`, ...).
        error: String,
        /// The missing scope, for `missing_scope`.
        needed: Option<String>,
    },
    /// Rate limited longer than [`RetryPolicy::max_retry_after`], or on every attempt.
    #[error("Slack {method} is rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// The method.
        method: String,
        /// Slack's `Retry-After`.
        retry_after: Duration,
    },
    /// An HTTP error status after all retries.
    #[error("Slack {method} answered HTTP {status}")]
    Status {
        /// The method.
        method: String,
        /// The status.
        status: u16,
    },
    /// No usable answer (connection, timeout, oversized or malformed body).
    #[error("Slack {method} could not be reached: {message}")]
    Transport {
        /// The method.
        method: String,
        /// What happened.
        message: String,
    },
    /// The client is misconfigured (bad URL, TLS setup).
    #[error("Slack client configuration: {0}")]
    Config(String),
}

impl SlackError {
    /// Whether trying again later may work.
    pub fn is_retryable(&self) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Transport { .. } => true,
            SlackError::Status { status, .. } => *status >= 500,
            SlackError::Api { error, .. } => is_retryable_api_error(error),
            SlackError::Config(_) => false,
        }
    }

    /// Slack's error code for [`SlackError::Api`].
    pub fn api_error(&self) -> Option<&str> {
        match self {
            SlackError::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn is_retryable_api_error(error: &str) -> bool {
    matches!(
        error,
        "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "ratelimited"
    )
}

/// Where a posted message lives: conversation id and message timestamp.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct MessageRef {
    /// Conversation id (`C...`, `G...`, `D...`).
    pub channel: String,
    /// Message timestamp, Slack's message id.
    pub ts: String,
}

/// The parts of a Slack user object this crate reads (`users.info`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SlackUser {
    /// User id.
    pub id: String,
    /// The user's workspace.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Deactivated.
    #[serde(default)]
    pub deleted: bool,
    /// A bot user.
    #[serde(default)]
    pub is_bot: bool,
    /// An app user.
    #[serde(default)]
    pub is_app_user: bool,
    /// Whether the email address was confirmed, when Slack says.
    #[serde(default)]
    pub is_email_confirmed: Option<bool>,
    /// Profile.
    #[serde(default)]
    pub profile: SlackProfile,
}

/// The parts of a Slack profile this crate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SlackProfile {
    /// Email (needs the `users:read.email` scope).
    #[serde(default)]
    pub email: Option<String>,
    /// Real name.
    #[serde(default)]
    pub real_name: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The Slack Web API client. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), approvals_slack::SlackError> {
/// use approvals_slack::{SlackClient, Token};
/// let client = SlackClient::new(Token::new(std::env::var("SLACK_BOT_TOKEN").unwrap_or_default()))?;
/// let posted = client.post_message("C0123456789", "hello", &[]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base: Url,
    token: Token,
    retry: RetryPolicy,
    response_prefixes: Arc<Vec<String>>,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Builds an HTTP client on rustls with the `ring` provider and the platform verifier, with
/// no redirects (a redirect could carry the bearer token elsewhere).
pub fn build_http_client(timeout: Duration) -> Result<reqwest::Client, SlackError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SlackError::Config(format!("TLS: {e}")))?
        .with_platform_verifier()
        .map_err(|e| SlackError::Config(format!("TLS: {e}; check the system CA certificates")))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| SlackError::Config(format!("HTTP client: {e}")))
}

/// Parses an endpoint URL: https, or plain http only to a loopback host (test fakes); no
/// credentials in the URL.
pub(crate) fn endpoint_url(
    raw: &str,
    secure_scheme: &str,
    plain_scheme: &str,
) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| format!("{raw:?} is not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?} contains credentials"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err(format!("{raw:?} has no host")),
    };
    if url.scheme() == secure_scheme || (url.scheme() == plain_scheme && loopback) {
        Ok(url)
    } else {
        Err(format!(
            "{raw:?} must use {secure_scheme}:// ({plain_scheme}:// is accepted only for loopback test servers)"
        ))
    }
}

impl SlackClient {
    /// A client for the bot token (`xoxb-...`), talking to [`DEFAULT_API_BASE`].
    pub fn new(bot_token: Token) -> Result<Self, SlackError> {
        Ok(SlackClient {
            http: build_http_client(Duration::from_secs(10))?,
            base: Url::parse(DEFAULT_API_BASE).map_err(|e| SlackError::Config(e.to_string()))?,
            token: bot_token,
            retry: RetryPolicy::default(),
            response_prefixes: Arc::new(vec![DEFAULT_RESPONSE_URL_PREFIX.to_owned()]),
        })
    }

    /// Uses another Web API base URL (for example a loopback fake). Must be https, or http to
    /// a loopback address.
    pub fn with_base_url(mut self, base: &str) -> Result<Self, SlackError> {
        let mut url = endpoint_url(base, "https", "http").map_err(SlackError::Config)?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        self.base = url;
        Ok(self)
    }

    /// Also accepts `response_url`s starting with `prefix` (the default accepts only
    /// `https://hooks.slack.com/`). For loopback test servers.
    pub fn allow_response_url_prefix(mut self, prefix: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.response_prefixes).push(prefix.into());
        self
    }

    /// Uses this HTTP client (shares its connection pool). Build it with
    /// [`build_http_client`] or keep redirects disabled.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The Web API base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Calls a Web API method with a JSON body and the bot token.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let url = self.method_url(method)?;
        let token = self.token.clone();
        self.send(method, || {
            self.http
                .post(url.clone())
                .bearer_auth(token.expose())
                .header(
                    http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(body.to_string())
        })
        .await
    }

    fn method_url(&self, method: &str) -> Result<Url, SlackError> {
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(SlackError::Config(format!(
                "{method:?} is not a Web API method name"
            )));
        }
        self.base
            .join(method)
            .map_err(|e| SlackError::Config(e.to_string()))
    }

    /// `chat.postMessage` with message metadata (`{"event_type": ..., "event_payload": {...}}`),
    /// which [`find_message`](SlackClient::find_message) can look for later.
    pub async fn post_message_with_metadata(
        &self,
        channel: &str,
        text: &str,
        blocks: &[Value],
        metadata: &Value,
    ) -> Result<MessageRef, SlackError> {
        self.post(channel, text, blocks, Some(metadata)).await
    }

    /// `auth.test`: the bot id (`B...`) of the app this bot token belongs to, which Slack
    /// puts on every message the app posts.
    pub async fn bot_id(&self) -> Result<String, SlackError> {
        let answer = self.call("auth.test", &json!({})).await?;
        answer
            .get("bot_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                SlackError::Config(
                    "auth.test named no bot_id: use the app's bot token (xoxb-...)".into(),
                )
            })
    }

    /// `conversations.history` (scope `channels:history`, or `groups:history` for a private
    /// channel) with `include_all_metadata`: the newest of the last 200 messages since
    /// `oldest` (a Slack timestamp) that were posted by the app with `bot_id` and whose
    /// metadata has `event_type` and `event_payload[key] == value`. Messages of other apps
    /// never match, whatever their metadata says. `channel` must be a conversation id
    /// (`C...`), not a name.
    pub async fn find_message(
        &self,
        channel: &str,
        oldest: &str,
        bot_id: &str,
        event_type: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<MessageRef>, SlackError> {
        let mut url = self.method_url("conversations.history")?;
        url.query_pairs_mut()
            .append_pair("channel", channel)
            .append_pair("oldest", oldest)
            .append_pair("limit", "200")
            .append_pair("include_all_metadata", "true");
        let token = self.token.clone();
        let answer = self
            .send("conversations.history", || {
                self.http.get(url.clone()).bearer_auth(token.expose())
            })
            .await?;
        let messages = answer
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(messages
            .iter()
            .find(|m| {
                let metadata = &m["metadata"];
                m["bot_id"] == bot_id
                    && metadata["event_type"] == event_type
                    && metadata["event_payload"][key].as_str() == Some(value)
            })
            .and_then(|m| m["ts"].as_str())
            .map(|ts| MessageRef {
                channel: channel.to_owned(),
                ts: ts.to_owned(),
            }))
    }

    /// `chat.postMessage`: posts `blocks` with `text` as the notification fallback. Link and
    /// media unfurling are off.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &[Value],
    ) -> Result<MessageRef, SlackError> {
        self.post(channel, text, blocks, None).await
    }

    /// `chat.postMessage` with `thread_ts`: a plain-text reply in the thread of `parent`.
    pub async fn reply_in_thread(
        &self,
        parent: &MessageRef,
        text: &str,
    ) -> Result<MessageRef, SlackError> {
        let body = json!({
            "channel": parent.channel,
            "thread_ts": parent.ts,
            "text": text,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        let answer = self.call("chat.postMessage", &body).await?;
        message_ref("chat.postMessage", &answer)
    }

    async fn post(
        &self,
        channel: &str,
        text: &str,
        blocks: &[Value],
        metadata: Option<&Value>,
    ) -> Result<MessageRef, SlackError> {
        let mut body = json!({
            "channel": channel,
            "text": text,
            "blocks": blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        if let Some(metadata) = metadata {
            body["metadata"] = metadata.clone();
        }
        let answer = self.call("chat.postMessage", &body).await?;
        message_ref("chat.postMessage", &answer)
    }

    /// `chat.update`: replaces a message's text and blocks.
    pub async fn update_message(
        &self,
        message: &MessageRef,
        text: &str,
        blocks: &[Value],
    ) -> Result<(), SlackError> {
        self.call(
            "chat.update",
            &json!({
                "channel": message.channel,
                "ts": message.ts,
                "text": text,
                "blocks": blocks,
            }),
        )
        .await
        .map(|_| ())
    }

    /// `views.open`: opens a modal for `trigger_id` (valid for 3 seconds after the click).
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackError> {
        self.call(
            "views.open",
            &json!({"trigger_id": trigger_id, "view": view}),
        )
        .await
        .map(|_| ())
    }

    /// `users.info`: one user (with `users:read`, and `users:read.email` for the email).
    pub async fn user_info(&self, user: &str) -> Result<SlackUser, SlackError> {
        let mut url = self.method_url("users.info")?;
        url.query_pairs_mut().append_pair("user", user);
        let token = self.token.clone();
        let answer = self
            .send("users.info", || {
                self.http.get(url.clone()).bearer_auth(token.expose())
            })
            .await?;
        serde_json::from_value(answer.get("user").cloned().unwrap_or(Value::Null)).map_err(|e| {
            SlackError::Transport {
                method: "users.info".into(),
                message: format!("unexpected user object: {e}"),
            }
        })
    }

    /// `apps.connections.open` with an app-level token (`xapp-...`, scope
    /// `connections:write`): a fresh single-use Socket Mode WebSocket URL.
    pub async fn open_socket_url(&self, app_token: &Token) -> Result<Url, SlackError> {
        let url = self.method_url("apps.connections.open")?;
        let answer = self
            .send("apps.connections.open", || {
                self.http
                    .post(url.clone())
                    .bearer_auth(app_token.expose())
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
            })
            .await?;
        let raw =
            answer
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| SlackError::Transport {
                    method: "apps.connections.open".into(),
                    message: "the answer has no url".into(),
                })?;
        endpoint_url(raw, "wss", "ws").map_err(|e| SlackError::Transport {
            method: "apps.connections.open".into(),
            message: e,
        })
    }

    /// Posts `body` to an interaction's `response_url` (for example an ephemeral reply).
    /// Refuses URLs outside the allowed prefixes, so a payload cannot point the client at an
    /// arbitrary host.
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<(), SlackError> {
        const METHOD: &str = "response_url";
        if !self
            .response_prefixes
            .iter()
            .any(|p| response_url.starts_with(p.as_str()))
        {
            return Err(SlackError::Config(format!(
                "response_url {response_url:?} is not under an allowed prefix"
            )));
        }
        let url = endpoint_url(response_url, "https", "http").map_err(SlackError::Config)?;
        let text = body.to_string();
        self.send_with(METHOD, false, || {
            self.http
                .post(url.clone())
                .header(
                    http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(text.clone())
        })
        .await
        .map(|_| ())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.retry
            .base_delay
            .saturating_mul(factor)
            .min(self.retry.max_delay)
    }

    /// Sends with retries: 429 waits `Retry-After`, 5xx and transport errors back off.
    async fn send(
        &self,
        method: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        self.send_with(method, true, request).await
    }

    /// Like `send`; with `web_api` false any 2xx answer is success (response URLs).
    async fn send_with(
        &self,
        method: &str,
        web_api: bool,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        let max = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= max;
            let wait = match request().send().await {
                Err(e) => {
                    let err = SlackError::Transport {
                        method: method.into(),
                        message: e.to_string(),
                    };
                    if last {
                        return Err(err);
                    }
                    tracing::debug!(%method, attempt, error = %err, "retrying Slack call");
                    self.backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    if status == http::StatusCode::TOO_MANY_REQUESTS {
                        let after = retry_after(&response).unwrap_or(Duration::from_secs(1));
                        if last || after > self.retry.max_retry_after {
                            return Err(SlackError::RateLimited {
                                method: method.into(),
                                retry_after: after,
                            });
                        }
                        tracing::debug!(%method, attempt, ?after, "Slack rate limit; waiting");
                        after
                    } else if status.is_server_error() {
                        if last {
                            return Err(SlackError::Status {
                                method: method.into(),
                                status: status.as_u16(),
                            });
                        }
                        self.backoff(attempt)
                    } else if !status.is_success() {
                        return Err(SlackError::Status {
                            method: method.into(),
                            status: status.as_u16(),
                        });
                    } else if !web_api {
                        return Ok(Value::Null);
                    } else {
                        let body =
                            read_capped(response, MAX_RESPONSE_BYTES)
                                .await
                                .map_err(|message| SlackError::Transport {
                                    method: method.into(),
                                    message,
                                })?;
                        let answer: Value =
                            serde_json::from_slice(&body).map_err(|e| SlackError::Transport {
                                method: method.into(),
                                message: format!("the answer is not JSON: {e}"),
                            })?;
                        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
                            return Ok(answer);
                        }
                        let error = answer
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown_error")
                            .to_owned();
                        if last || !is_retryable_api_error(&error) {
                            return Err(SlackError::Api {
                                method: method.into(),
                                needed: answer
                                    .get("needed")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned),
                                error,
                            });
                        }
                        self.backoff(attempt)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(format!("answer larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn message_ref(method: &str, answer: &Value) -> Result<MessageRef, SlackError> {
    let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
    match (field("channel"), field("ts")) {
        (Some(channel), Some(ts)) => Ok(MessageRef { channel, ts }),
        _ => Err(SlackError::Transport {
            method: method.into(),
            message: "the answer has no channel and ts".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted() {
        let t = Token::new("xoxb-123-secret");
        assert_eq!(format!("{t:?}"), "Token(xoxb-<redacted>)");
    }

    #[test]
    fn endpoint_rules() {
        assert!(endpoint_url("https://slack.com/api/", "https", "http").is_ok());
        assert!(endpoint_url("http://127.0.0.1:9/api/", "https", "http").is_ok());
        assert!(endpoint_url("http://slack.com/api/", "https", "http").is_err());
        assert!(endpoint_url("https://u:p@slack.com/api/", "https", "http").is_err());
        assert!(endpoint_url("wss://wss-primary.slack.com/link/?ticket=1", "wss", "ws").is_ok());
        assert!(endpoint_url("ws://evil.example/link", "wss", "ws").is_err());
        assert!(endpoint_url("ws://127.0.0.1:1/link", "wss", "ws").is_ok());
    }

    #[tokio::test]
    async fn response_urls_outside_the_prefixes_are_refused_without_a_request() {
        let client = SlackClient::new(Token::new("xoxb-1")).expect("client");
        let err = client
            .respond("https://evil.example/hook", &json!({}))
            .await
            .expect_err("refused");
        assert!(matches!(err, SlackError::Config(_)), "{err}");
        let err = client
            .respond("https://hooks.slack.com.evil.example/x", &json!({}))
            .await
            .expect_err("refused");
        assert!(matches!(err, SlackError::Config(_)), "{err}");
    }

    #[test]
    fn method_names_are_checked() {
        let client = SlackClient::new(Token::new("xoxb-1")).expect("client");
        assert!(client.method_url("chat.postMessage").is_ok());
        assert!(client.method_url("../admin").is_err());
        assert!(client.method_url("https://evil.example/").is_err());
    }
}
