//! The upstream MCP server: a child process spoken to over stdio, or (feature
//! `http-upstream`) a streamable-HTTP endpoint; and whether it still answers.

use std::process::Stdio;
use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, CallToolResult, ServerPeerInfo};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::process::Command;
use tokio::sync::watch;

/// The default bound on one JSON-RPC message read from either side (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Where the upstream MCP server is.
#[derive(Clone)]
#[non_exhaustive]
pub enum UpstreamTarget {
    /// A child process spoken to over standard input and output.
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A streamable-HTTP MCP endpoint (feature `http-upstream`).
    #[cfg(feature = "http-upstream")]
    Http {
        /// The endpoint, for example `http://127.0.0.1:3001/mcp`.
        url: url::Url,
        /// A bearer token sent with every request (never printed).
        bearer: Option<String>,
    },
}

impl std::fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamTarget::Command { program, args } => f
                .debug_struct("Command")
                .field("program", program)
                .field("args", args)
                .finish(),
            #[cfg(feature = "http-upstream")]
            UpstreamTarget::Http { url, bearer } => f
                .debug_struct("Http")
                .field("url", &url.as_str())
                .field("bearer", &bearer.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// The upstream server could not be started or spoken to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The command could not be started.
    #[error("cannot start the upstream MCP server {command:?}: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The MCP handshake with it failed.
    #[error("the upstream MCP server did not complete the MCP handshake: {0}")]
    Handshake(String),
    /// It stopped (exited, or closed its pipes).
    #[error("the upstream MCP server stopped: {0}")]
    Stopped(String),
    /// A request to it failed.
    #[error("the upstream MCP server failed: {0}")]
    Call(String),
}

/// A running upstream MCP server. Cloning shares it. Once it stops, every call fails and
/// [`stopped`](Upstream::stopped) says why; it is never restarted behind the caller's back.
#[derive(Clone)]
pub struct Upstream {
    peer: Peer<RoleClient>,
    info: Option<Arc<ServerPeerInfo>>,
    stopped: watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field(
                "server",
                &self
                    .info
                    .as_ref()
                    .and_then(|i| i.server_info.as_ref())
                    .map(|s| &s.name),
            )
            .field("stopped", &*self.stopped.borrow())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Starts or connects to the upstream server at `target` and completes the MCP
    /// handshake; see [`spawn`](Upstream::spawn) and [`connect`](Upstream::connect).
    pub async fn start(
        target: &UpstreamTarget,
        max_message_bytes: usize,
    ) -> Result<Upstream, UpstreamError> {
        match target {
            UpstreamTarget::Command { program, args } => {
                Upstream::spawn(program, args, max_message_bytes).await
            }
            #[cfg(feature = "http-upstream")]
            UpstreamTarget::Http { url, bearer } => {
                Upstream::connect(url, bearer.as_deref(), max_message_bytes).await
            }
        }
    }

    /// Starts `program` with `args` (standard error passed through) and completes the MCP
    /// handshake with it. Each message read from it is bounded by `max_message_bytes`; a
    /// longer one is dropped. The child is killed when the last task holding it ends.
    pub async fn spawn(
        program: &str,
        args: &[String],
        max_message_bytes: usize,
    ) -> Result<Upstream, UpstreamError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| UpstreamError::Spawn {
                command: program.to_owned(),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(UpstreamError::Handshake(
                "the child process has no standard input or output".into(),
            ));
        };
        let (tx, stopped) = watch::channel(None);
        let tx = Arc::new(tx);
        let on_exit = tx.clone();
        tokio::spawn(async move {
            let why = match child.wait().await {
                Ok(status) => format!("the process exited ({status})"),
                Err(e) => format!("the process could not be watched: {e}"),
            };
            on_exit.send_if_modified(|s| set_once(s, why));
        });

        let transport = AsyncRwTransport::<RoleClient, _, _>::new(stdout, stdin)
            .with_max_line_length(max_message_bytes);
        let running: RunningService<RoleClient, ()> =
            rmcp::serve_client((), transport).await.map_err(|e| {
                tx.send_if_modified(|s| set_once(s, format!("handshake failed: {e}")));
                UpstreamError::Handshake(e.to_string())
            })?;
        Ok(Upstream::watch(running, tx, stopped))
    }

    /// Connects to a streamable-HTTP MCP endpoint and completes the MCP handshake. TLS is
    /// checked against the platform's roots, redirects are not followed (a bearer token must
    /// not travel elsewhere), and each server-sent event or JSON answer is bounded by
    /// `max_message_bytes`. Unlike a child process, a server that goes away is noticed at
    /// the next request to it, which fails: the call is not run.
    #[cfg(feature = "http-upstream")]
    pub async fn connect(
        url: &url::Url,
        bearer: Option<&str>,
        max_message_bytes: usize,
    ) -> Result<Upstream, UpstreamError> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

        let client = approvals_http::client::http_client_builder()
            .and_then(|b| {
                b.connect_timeout(std::time::Duration::from_secs(10))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| UpstreamError::Handshake(format!("cannot make the HTTP client: {e}")))?;
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .max_sse_event_size(max_message_bytes)
            .max_json_response_size(max_message_bytes);
        if let Some(token) = bearer {
            config = config.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::with_client(client, config);
        let (tx, stopped) = watch::channel(None);
        let tx = Arc::new(tx);
        let running: RunningService<RoleClient, ()> = rmcp::serve_client((), transport)
            .await
            .map_err(|e| UpstreamError::Handshake(format!("{url}: {e}")))?;
        Ok(Upstream::watch(running, tx, stopped))
    }

    /// The upstream handle over a connection that completed its handshake; a task records
    /// why the connection ended, once it does.
    fn watch(
        running: RunningService<RoleClient, ()>,
        tx: Arc<watch::Sender<Option<String>>>,
        stopped: watch::Receiver<Option<String>>,
    ) -> Upstream {
        let peer = running.peer().clone();
        let info = running.peer_info();
        tokio::spawn(async move {
            let why = match running.waiting().await {
                Ok(reason) => format!("its MCP connection ended ({reason:?})"),
                Err(e) => format!("its MCP connection task failed: {e}"),
            };
            tx.send_if_modified(|s| set_once(s, why));
        });
        Upstream {
            peer,
            info,
            stopped,
        }
    }

    /// What the upstream server said about itself in the handshake.
    pub fn info(&self) -> Option<&ServerPeerInfo> {
        self.info.as_deref()
    }

    /// The MCP client connection to the upstream server.
    pub fn peer(&self) -> &Peer<RoleClient> {
        &self.peer
    }

    /// Why the server stopped, once it has.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }

    /// Resolves with the reason once the server has stopped.
    pub async fn wait_stopped(&self) -> String {
        let mut rx = self.stopped.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "its watcher ended".to_owned(),
        }
    }

    /// Calls a tool; fails (without a result) if the server stops first.
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
    ) -> Result<CallToolResult, UpstreamError> {
        if let Some(why) = self.stopped() {
            return Err(UpstreamError::Stopped(why));
        }
        tokio::select! {
            result = self.peer.call_tool(params) => result.map_err(|e| UpstreamError::Call(e.to_string())),
            why = self.wait_stopped() => Err(UpstreamError::Stopped(why)),
        }
    }
}

fn set_once(slot: &mut Option<String>, why: String) -> bool {
    if slot.is_none() {
        *slot = Some(why);
        true
    } else {
        false
    }
}
