//! Socket Mode: receive interactions over a WebSocket that this process opens to Slack, so an
//! agent behind a firewall needs no public URL.
//!
//! The client asks `apps.connections.open` (app-level `xapp-` token, scope
//! `connections:write`) for a single-use `wss://` URL, connects, and then for every envelope
//! sends the acknowledgement `{"envelope_id": ...}` at once and hands `interactive` payloads to
//! the same [`SlackInteractions`] processing as the HTTP endpoint: workspace and app checks,
//! identity resolution, the gate's decision. `hello` marks a live connection; `disconnect`
//! (`warning`, `refresh_requested`) makes it reconnect; `link_disabled` (Socket Mode switched
//! off) stops it with an error. Failures reconnect with exponential backoff.
//!
//! Socket Mode payloads carry no signature: the connection itself (TLS to the URL Slack issued
//! for the app token) authenticates them. Envelopes are de-duplicated by `envelope_id`, so a
//! redelivered envelope is acknowledged but not processed twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use rustls_platform_verifier::BuilderVerifierExt as _;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::api::{SlackClient, SlackError, Token};
use crate::interaction::SlackInteractions;

const SEEN_ENVELOPES: usize = 10_000;
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Socket Mode stopped for good.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SocketModeError {
    /// Slack said Socket Mode is turned off for the app (`disconnect` with `link_disabled`).
    #[error("Slack disabled the Socket Mode link; turn Socket Mode on in the app settings")]
    LinkDisabled,
    /// `apps.connections.open` refused the app-level token; retrying cannot help.
    #[error(
        "apps.connections.open refused the app-level token: {0}; use an xapp- token with the connections:write scope (SLACK_APP_TOKEN)"
    )]
    Token(SlackError),
    /// The app token is not an app-level token.
    #[error("Socket Mode needs an app-level token (xapp-...), not {0}")]
    WrongTokenType(String),
}

/// Configures and starts a Socket Mode connection.
///
/// ```no_run
/// # async fn demo(interactions: approvals_slack::SlackInteractions, client: approvals_slack::SlackClient) -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_slack::{SocketMode, Token};
/// let socket = SocketMode::new(client, Token::new(std::env::var("SLACK_APP_TOKEN")?), interactions)
///     .spawn()?;
/// // ... later
/// socket.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SocketMode {
    client: SlackClient,
    app_token: Token,
    interactions: SlackInteractions,
    initial_backoff: Duration,
    max_backoff: Duration,
    idle_timeout: Duration,
}

/// A running Socket Mode connection.
#[derive(Debug)]
pub struct SocketModeHandle {
    stop: watch::Sender<bool>,
    hellos: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<Result<(), SocketModeError>>,
}

impl SocketModeHandle {
    /// How many `hello`s (successful connections) there have been.
    pub fn connections(&self) -> u64 {
        *self.hellos.borrow()
    }

    /// Waits until at least `n` connections have said `hello`.
    pub async fn wait_for_connections(&self, n: u64) {
        let mut rx = self.hellos.clone();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Whether the client stopped (after an unrecoverable error or a shutdown).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Closes the connection and waits for the client to stop; returns why it stopped.
    pub async fn shutdown(self) -> Result<(), SocketModeError> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(Ok(()))
    }

    /// Waits until the client stops by itself (an unrecoverable error).
    pub async fn join(self) -> Result<(), SocketModeError> {
        self.task.await.unwrap_or(Ok(()))
    }
}

enum After {
    Reconnect { backoff: bool },
    Stop(SocketModeError),
    Shutdown,
}

impl SocketMode {
    /// A client for `app_token` (`xapp-...`) that calls `apps.connections.open` through
    /// `client`'s base URL and feeds `interactions`.
    pub fn new(client: SlackClient, app_token: Token, interactions: SlackInteractions) -> Self {
        SocketMode {
            client,
            app_token,
            interactions,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }

    /// Reconnect backoff: starts at `initial`, doubles up to `max` (defaults 1 s and 30 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Reconnects when nothing (not even a ping) arrives for this long (default 120 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Starts the client on the current tokio runtime.
    pub fn spawn(self) -> Result<SocketModeHandle, SocketModeError> {
        let prefix = self
            .app_token
            .expose()
            .split('-')
            .next()
            .unwrap_or("")
            .to_owned();
        if prefix != "xapp" {
            return Err(SocketModeError::WrongTokenType(format!(
                "a {prefix:?} token"
            )));
        }
        let (stop, stop_rx) = watch::channel(false);
        let (hellos_tx, hellos) = watch::channel(0u64);
        let task = tokio::spawn(self.run(stop_rx, hellos_tx));
        Ok(SocketModeHandle { stop, hellos, task })
    }

    async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        hellos: watch::Sender<u64>,
    ) -> Result<(), SocketModeError> {
        let tls = match tls_config() {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS for Socket Mode; only loopback ws:// URLs will work");
                None
            }
        };
        let mut seen = Seen::default();
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let after = self
                .connect_once(&tls, &mut stop, &hellos, &mut seen, &mut failures)
                .await;
            match after {
                After::Shutdown => return Ok(()),
                After::Stop(e) => return Err(e),
                After::Reconnect { backoff: false } => {}
                After::Reconnect { backoff: true } => {
                    let wait = self.delay(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
            }
        }
    }

    fn delay(&self, failures: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << failures.min(16))
            .min(self.max_backoff);
        // Up to 25% jitter so many agents do not reconnect in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    async fn connect_once(
        &self,
        tls: &Option<Arc<rustls::ClientConfig>>,
        stop: &mut watch::Receiver<bool>,
        hellos: &watch::Sender<u64>,
        seen: &mut Seen,
        failures: &mut u32,
    ) -> After {
        let url = match self.client.open_socket_url(&self.app_token).await {
            Ok(url) => url,
            Err(e) if !e.is_retryable() && e.api_error().is_some() => {
                return After::Stop(SocketModeError::Token(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "apps.connections.open failed; will retry");
                return After::Reconnect { backoff: true };
            }
        };
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_BYTES));
        let connector = tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls)
            .unwrap_or(tokio_tungstenite::Connector::Plain);
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                Some(config),
                false,
                Some(connector),
            ),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Socket Mode WebSocket connection failed; will retry");
                return After::Reconnect { backoff: true };
            }
            Err(_) => {
                tracing::warn!("Socket Mode WebSocket connection timed out; will retry");
                return After::Reconnect { backoff: true };
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.changed() => {
                    let _ = ws.close(None).await;
                    return After::Shutdown;
                }
                next = tokio::time::timeout(self.idle_timeout, ws.next()) => next,
            };
            let text = match next {
                Err(_) => {
                    tracing::warn!("Socket Mode connection idle too long; reconnecting");
                    return After::Reconnect { backoff: false };
                }
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    return After::Reconnect { backoff: true };
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "Socket Mode connection failed; reconnecting");
                    return After::Reconnect { backoff: true };
                }
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue, // ping/pong/binary
            };
            let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
                tracing::warn!("Socket Mode message is not JSON; ignored");
                continue;
            };
            let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
            if let Some(envelope_id) = message.get("envelope_id").and_then(Value::as_str) {
                let mut ack = json!({"envelope_id": envelope_id});
                if seen.insert(envelope_id) && kind == "interactive" {
                    let payload = message.get("payload").cloned().unwrap_or(Value::Null);
                    if let Some(response) = self.interactions.accept_socket_payload(payload).await
                        && message
                            .get("accepts_response_payload")
                            .and_then(Value::as_bool)
                            != Some(false)
                    {
                        ack["payload"] = response;
                    }
                }
                if let Err(e) = ws.send(Message::text(ack.to_string())).await {
                    tracing::warn!(error = %e, "could not acknowledge a Socket Mode envelope; reconnecting");
                    return After::Reconnect { backoff: true };
                }
                continue;
            }
            match kind {
                "hello" => {
                    *failures = 0;
                    hellos.send_modify(|n| *n += 1);
                }
                "disconnect" => {
                    let reason = message.get("reason").and_then(Value::as_str).unwrap_or("");
                    if reason == "link_disabled" {
                        let _ = ws.close(None).await;
                        return After::Stop(SocketModeError::LinkDisabled);
                    }
                    let _ = ws.close(None).await;
                    return After::Reconnect { backoff: false };
                }
                _ => {}
            }
        }
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Envelope ids already processed (bounded, oldest forgotten first).
#[derive(Default)]
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    /// Returns whether `id` is new.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_ENVELOPES
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}
