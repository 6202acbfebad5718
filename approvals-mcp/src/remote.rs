//! Remote mode: the gateway as a client of an `approvals serve` through its agent API, with
//! an agent (or service) token. One approval service, with its policy, store, audit log and
//! reviewers, serves many gateways. The server decides everything, and the initiator is the
//! token's principal with the `on_behalf_of` and `model` set in the server's token file.
//!
//! Fails closed: a refused or unreachable server means the call is not run and the model gets
//! a tool error saying why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{ActionRequest, GuardError, PrincipalKind, RequestId, RequestState};
use approvals_http::{ApiClient, ClientError, SubmitBody, SubmitStatus};
use rmcp::model::CallToolResult;
use url::Url;

use crate::action::{denied_recently_text, refusal_text};
use crate::approvals::{Approvals, Asked, CallFailed, refused};
use crate::{Gateway, GatewayOptions, ToolMapping, Upstream, UpstreamTarget, serve_stdio};

/// How long one `GET /v1/requests/{id}/wait` parks on the server by default (at most 60 s).
pub const DEFAULT_WAIT_STEP: Duration = Duration::from_secs(30);

/// The longest error text recorded as an execution's outcome.
const MAX_OUTCOME_CHARS: usize = 2000;

/// The approvals of a remote `approvals serve`, asked through its agent API.
#[derive(Debug, Clone)]
pub struct Remote {
    api: ApiClient,
    session: Option<String>,
    wait_step: Duration,
    /// What the last long poll of each waiting request said of unanswered reminders: read
    /// by the progress loop, so it asks the server nothing itself (a wait on a request that
    /// was just approved would have a grant issued and audited for nothing).
    unanswered: Arc<Mutex<HashMap<RequestId, u32>>>,
}

/// Removes a request's entry from [`Remote`]'s notes of unanswered reminders when dropped.
struct Forget<'a> {
    unanswered: &'a Mutex<HashMap<RequestId, u32>>,
    id: RequestId,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.unanswered.lock() {
            m.remove(&self.id);
        }
    }
}

/// An approval from the server: the request and its signed grant token (redacted in debug
/// output).
pub struct RemoteGrant {
    id: RequestId,
    token: String,
    /// The parameters reviewers edited the call to, when they did.
    edited: Option<serde_json::Value>,
}

impl std::fmt::Debug for RemoteGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteGrant")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Remote {
    /// Asks through `api`, which carries the agent's token.
    pub fn new(api: ApiClient) -> Self {
        Remote {
            api,
            session: None,
            wait_step: DEFAULT_WAIT_STEP,
            unanswered: Arc::default(),
        }
    }

    /// A session reference recorded with each request's initiator.
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// How long each long poll parks on the server (1 to 60 seconds).
    pub fn wait_step(mut self, step: Duration) -> Self {
        self.wait_step = step.clamp(Duration::from_secs(1), Duration::from_secs(60));
        self
    }

    /// The API client.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Long-polls until the request is decided, noting what each answer says of unanswered
    /// reminders.
    async fn wait_for(&self, id: RequestId) -> Result<RemoteGrant, String> {
        loop {
            let waited = match self.api.wait(id, self.wait_step).await {
                Ok(waited) => waited,
                Err(e) => {
                    // Fail closed, and leave no request for reviewers that nobody waits for
                    // (best effort: an unreachable server cannot be told).
                    let reason = format!("the MCP gateway stopped waiting: {e}");
                    let withdrawn = match self.api.cancel(id, Some(&reason)).await {
                        Ok(_) => format!("; approval request {id} withdrawn"),
                        Err(_) => String::new(),
                    };
                    return Err(format!("{}{withdrawn}", not_run(&e)));
                }
            };
            if let Ok(mut m) = self.unanswered.lock() {
                m.insert(id, waited.unanswered_reminders);
            }
            let reason = waited.reason;
            return match waited.state {
                RequestState::Pending => continue,
                RequestState::Approved => match waited.grant_token {
                    Some(token) => Ok(RemoteGrant {
                        id,
                        token,
                        edited: waited.edited.map(|e| e.params),
                    }),
                    None => Err(format!(
                        "Not run: request {id} was approved, but the approvals server sent no grant token"
                    )),
                },
                RequestState::Denied => Err(refusal_text(&GuardError::Denied {
                    id,
                    by: waited.decided_by.unwrap_or_else(|| "a reviewer".into()),
                    reason,
                })),
                RequestState::Cancelled => Err(refusal_text(&GuardError::Cancelled {
                    id,
                    by: waited.decided_by,
                    reason,
                })),
                RequestState::Expired => Err(format!(
                    "Not approved in time: request {id} expired before reviewers approved it. Ask again if it is still needed."
                )),
                other => Err(format!("Not run: request {id} is {other}")),
            };
        }
    }
}

/// What the model is told when the server refused or could not be asked.
fn not_run(e: &ClientError) -> String {
    match e {
        ClientError::Problem(p) => format!("Not run: the approvals server refused: {}", p.detail),
        ClientError::Unavailable(why) => {
            format!("Not run: the approvals server is unreachable ({why})")
        }
        other => format!("Not run: {other}"),
    }
}

impl Approvals for Remote {
    type Grant = RemoteGrant;

    async fn submit(&self, action: &ActionRequest) -> Result<Asked<RemoteGrant>, String> {
        let mut body = SubmitBody::of(action);
        body.session = self.session.clone();
        let submitted = match self.api.submit_body(&body).await {
            Ok(submitted) => submitted,
            Err(ClientError::Problem(p)) if p.code == "policy_denied" => {
                return Err(refusal_text(&GuardError::PolicyDenied {
                    kind: action.kind.to_string(),
                    resource: action.resource.to_string(),
                    rule: p.rule.unwrap_or_default(),
                    reason: p.reason.unwrap_or(p.detail),
                }));
            }
            Err(ClientError::Problem(p)) if p.code == "denied_recently" => {
                return Err(denied_recently_text(&p.detail));
            }
            Err(e) => return Err(not_run(&e)),
        };
        match submitted.status {
            SubmitStatus::Allowed => match submitted.grant_token {
                Some(token) => Ok(Asked::Allowed(RemoteGrant {
                    id: submitted.id,
                    token,
                    edited: None,
                })),
                None => Err(
                    "Not run: the approvals server allowed the call but sent no grant token".into(),
                ),
            },
            SubmitStatus::Pending => Ok(Asked::Pending {
                id: submitted.id,
                review_url: submitted.review_url,
            }),
        }
    }

    async fn unanswered_reminders(&self, id: RequestId) -> u32 {
        self.unanswered
            .lock()
            .ok()
            .and_then(|m| m.get(&id).copied())
            .unwrap_or(0)
    }

    async fn wait(&self, id: RequestId) -> Result<RemoteGrant, String> {
        // Forgotten however the wait ends, one dropped when the client cancels included.
        let _forget = Forget {
            unanswered: &self.unanswered,
            id,
        };
        self.wait_for(id).await
    }
    fn edited(grant: &RemoteGrant, asked: &ActionRequest) -> Option<ActionRequest> {
        let params = grant.edited.clone()?;
        let mut edited = asked.clone();
        edited.params = std::sync::Arc::new(params);
        Some(edited)
    }

    async fn cancel(&self, id: RequestId, reason: String) -> Result<(), String> {
        match self.api.cancel(id, Some(&reason)).await {
            Ok(_) => Ok(()),
            Err(ClientError::Problem(p)) => Err(p.detail),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn execute<F, Fut>(
        &self,
        grant: RemoteGrant,
        _action: &ActionRequest,
        call: F,
    ) -> CallToolResult
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<CallToolResult, CallFailed>> + Send,
    {
        // The server checks the token (this request, this digest, unused, in time) and
        // consumes it; the call runs only after that.
        if let Err(e) = self.api.start_execution(grant.id, &grant.token).await {
            return refused(format!("{}; the grant was not used", not_run(&e)));
        }
        let result = call().await;
        let error = result.as_ref().err().map(|e| {
            approvals_core::text::truncate(&e.to_string(), MAX_OUTCOME_CHARS).into_owned()
        });
        // The tool ran: its own result goes back whatever happens to the bookkeeping. An
        // outcome never reported is counted as failed by the server, never as executed.
        if let Err(e) = self
            .api
            .finish_execution(grant.id, error.as_deref().map_or(Ok(()), Err))
            .await
        {
            eprintln!(
                "approvals-mcp: request {} ran, but its outcome could not be recorded: {e}",
                grant.id
            );
        }
        result.unwrap_or_else(CallFailed::into_answer)
    }
}

/// Everything remote mode needs; the `approvals-mcp` binary fills it from its flags and the
/// environment.
#[derive(Clone)]
pub struct RemoteOptions {
    /// The upstream MCP server.
    pub upstream: UpstreamTarget,
    /// The server's name in action kinds (`mcp.<server>.<tool>`).
    pub server_name: String,
    /// The tool argument that names the action's resource.
    pub resource_arg: Option<String>,
    /// The approvals server (`approvals serve`), for example `https://approvals.example.com/`.
    pub server: Url,
    /// The agent (or service) token; never from the command line.
    pub token: String,
    /// A session reference recorded with each request.
    pub session: Option<String>,
    /// Bound on one MCP message from the client or the upstream server.
    pub max_message_bytes: usize,
    /// Progress notification interval while a call waits.
    pub progress_every: Duration,
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("upstream", &self.upstream)
            .field("server_name", &self.server_name)
            .field("resource_arg", &self.resource_arg)
            .field("server", &self.server.as_str())
            .field("token", &"<redacted>")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Remote mode could not start or ended with an error. Every message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteError(pub String);

/// Checks the server and the token, then runs the gateway until the MCP client closes its
/// side.
pub async fn run(options: RemoteOptions) -> Result<(), RemoteError> {
    let mut mapping = ToolMapping::new(&options.server_name)
        .map_err(|e| RemoteError(format!("--server-name: {e}")))?;
    if let Some(arg) = &options.resource_arg {
        mapping = mapping.resource_arg(arg);
    }
    let api = ApiClient::http(options.server.clone(), Some(options.token.clone()))
        .map_err(|e| RemoteError(format!("cannot make the HTTP client: {e}")))?;
    let me = api.me().await.map_err(|e| {
        RemoteError(match e {
            ClientError::Problem(p) if p.status == 401 => format!(
                "the approvals server at {} refused the token: {}",
                options.server, p.detail
            ),
            e => format!("cannot use the approvals server at {}: {e}", options.server),
        })
    })?;
    if !matches!(
        me.principal.kind,
        PrincipalKind::Agent | PrincipalKind::Service
    ) {
        return Err(RemoteError(format!(
            "the token stands for {} (a {}), a reviewer; the gateway needs an agent or service token (an entry with on_behalf_of in the server's token file)",
            me.principal.id, me.principal.kind
        )));
    }
    eprintln!(
        "approvals-mcp: asking the approvals server at {} as {}",
        options.server, me.principal.id
    );

    let upstream = Upstream::start(&options.upstream, options.max_message_bytes)
        .await
        .map_err(|e| RemoteError(e.to_string()))?;
    let mut remote = Remote::new(api);
    if let Some(session) = &options.session {
        remote = remote.session(session);
    }
    let mut gateway_options = GatewayOptions::new(mapping);
    gateway_options.review_url = Some(options.server);
    gateway_options.progress_every = options.progress_every;
    let gateway = Gateway::new(remote, upstream, gateway_options);
    serve_stdio(gateway, options.max_message_bytes)
        .await
        .map_err(RemoteError)
}
