//! The gateway: an MCP server to the client that puts every `tools/call` through the gate
//! before it reaches the upstream server.
// MCP logging (notifications/message, logging/setLevel) is deprecated by SEP-2577, but it is
// what clients show their users today; the review link goes there.

#![allow(deprecated)]

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{ActionRequest, RequestId};
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig,
    SetLevelRequestParams,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::async_rw::AsyncRwTransport;
use serde_json::json;
use url::Url;

use crate::action::ToolMapping;
use crate::approvals::{Approvals, Asked, CallFailed, InProcess, refused};
use crate::upstream::Upstream;

/// How the gateway reports and waits; see [`Gateway::new`].
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// How tool calls become actions.
    pub mapping: ToolMapping,
    /// The review server's URL; the log message for a pending call links
    /// `<review_url>console/requests/<id>` when the approval service names no review page.
    pub review_url: Option<Url>,
    /// How often a waiting call sends a progress notification (when the client asked for
    /// progress with a progress token).
    pub progress_every: Duration,
}

impl GatewayOptions {
    /// Defaults: no review link, progress every 5 seconds.
    pub fn new(mapping: ToolMapping) -> Self {
        GatewayOptions {
            mapping,
            review_url: None,
            progress_every: Duration::from_secs(5),
        }
    }
}

/// The MCP approval gateway, an rmcp [`ServerHandler`]. `tools/list` passes through to the
/// upstream server; each `tools/call` is asked of the approval service `A` as an action
/// ([`ToolMapping::action`]) and reaches the upstream server only when allowed or approved,
/// exactly once, with exactly the arguments that were approved. A refusal is a tool result
/// with `isError: true` saying why, so the model can read it.
pub struct Gateway<A = InProcess> {
    inner: Arc<Inner<A>>,
}

impl<A> Clone for Gateway<A> {
    fn clone(&self) -> Self {
        Gateway {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<A> {
    approvals: A,
    upstream: Upstream,
    options: GatewayOptions,
}

impl<A> std::fmt::Debug for Gateway<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.inner.upstream)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<A: Approvals> Gateway<A> {
    /// A gateway in front of `upstream`, guarded by `approvals` (whose initiator is the agent
    /// the calls are made for: configured or the caller's credential, never taken from tool
    /// arguments).
    pub fn new(approvals: A, upstream: Upstream, options: GatewayOptions) -> Self {
        Gateway {
            inner: Arc::new(Inner {
                approvals,
                upstream,
                options,
            }),
        }
    }

    /// The approval service the gateway asks.
    pub fn approvals(&self) -> &A {
        &self.inner.approvals
    }

    /// The review console link of a request, when a review URL is configured.
    pub fn review_link(&self, id: RequestId) -> Option<String> {
        let base = self.inner.options.review_url.as_ref()?;
        base.join(&format!("console/requests/{id}"))
            .ok()
            .map(String::from)
    }

    /// One `tools/call`, start to end; always answers with a tool result.
    async fn guarded_call(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let action = match self
            .inner
            .options
            .mapping
            .action(&request.name, request.arguments.as_ref())
        {
            Ok(action) => action,
            Err(e) => return refused(format!("Not run: {e}")),
        };
        if let Some(why) = self.inner.upstream.stopped() {
            return refused(format!("Not run: the upstream MCP server stopped: {why}"));
        }
        let grant = match self.inner.approvals.submit(&action).await {
            Ok(Asked::Allowed(grant)) => grant,
            Ok(Asked::Pending { id, review_url }) => {
                let link = review_url.or_else(|| self.review_link(id));
                match self.await_review(id, link, &action, context).await {
                    Ok(grant) => grant,
                    Err(text) => return refused(text),
                }
            }
            Err(text) => return refused(text),
        };
        // The upstream server stopped while reviewers decided: nothing is run, the grant is
        // left unused (it lapses), and the model is told.
        if let Some(why) = self.inner.upstream.stopped() {
            return refused(format!(
                "Approved, but not run: the upstream MCP server stopped: {why}"
            ));
        }
        // Reviewers may have approved the call with changed arguments: only that call runs.
        let (action, request, edited) = match A::edited(&grant, &action) {
            None => (action, request, None),
            Some(edited) => match edited.params.as_object() {
                // The call's target is read from its arguments; an edit that would send it
                // elsewhere than the approved resource does not run.
                Some(arguments) if !self.targets_the_same(&request.name, arguments, &edited) => {
                    return refused(format!(
                        "Not run: the reviewers' edit changes what the call targets (approved: {} on {})",
                        edited.kind, edited.resource
                    ));
                }
                Some(arguments) => {
                    let mut request = request;
                    request.arguments = Some(arguments.clone());
                    let note = edited_note(&edited.params);
                    notice(context, json!({ "message": note.clone() })).await;
                    (edited, request, Some(note))
                }
                None => {
                    return refused(
                        "Not run: the reviewers' edited arguments are not an object".to_owned(),
                    );
                }
            },
        };
        let upstream = self.inner.upstream.clone();
        let mut result = self
            .inner
            .approvals
            .execute(grant, &action, || async move {
                match upstream.call_tool(request).await {
                    Ok(result) if result.is_error == Some(true) => Err(CallFailed::Tool(result)),
                    Ok(result) => Ok(result),
                    Err(e) => Err(CallFailed::Upstream(e)),
                }
            })
            .await;
        // The model is told that the call it made is not the one that ran.
        if let Some(note) = edited {
            result.content.push(ContentBlock::text(note));
        }
        result
    }

    /// Whether a call of `tool` with `arguments` is the action `approved` names: the same kind
    /// and resource, as the mapping reads them from the arguments.
    fn targets_the_same(
        &self,
        tool: &str,
        arguments: &serde_json::Map<String, serde_json::Value>,
        approved: &ActionRequest,
    ) -> bool {
        self.inner
            .options
            .mapping
            .action(tool, Some(arguments))
            .is_ok_and(|a| a.kind == approved.kind && a.resource == approved.resource)
    }

    /// Waits for the reviewers' decision on `id`, telling the client where to review it and
    /// sending progress meanwhile. The client's cancel, or the upstream server stopping,
    /// withdraws the request.
    async fn await_review(
        &self,
        id: RequestId,
        link: Option<String>,
        action: &ActionRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<A::Grant, String> {
        let message = match &link {
            Some(link) => format!("{} needs approval; review it at {link}", action.kind),
            None => format!("{} needs approval (request {id})", action.kind),
        };
        notice(
            context,
            json!({ "message": message, "request": id.to_string(), "review": link }),
        )
        .await;

        let progress = self.send_progress(id, context);
        let stopped = self.inner.upstream.wait_stopped();
        let outcome = tokio::select! {
            result = self.inner.approvals.wait(id) => return result,
            () = context.ct.cancelled() => "the MCP client cancelled the tool call".to_owned(),
            why = stopped => format!("the upstream MCP server stopped: {why}"),
            () = progress => "progress stopped".to_owned(),
        };
        let cancelled = self.inner.approvals.cancel(id, outcome.clone()).await;
        Err(match cancelled {
            Ok(_) => format!("Not run: {outcome}; approval request {id} withdrawn"),
            Err(e) => format!("Not run: {outcome} ({e})"),
        })
    }

    /// While a call waits: every `progress_every`, a progress notification when the client
    /// gave a progress token, and a log message when reviewers were reminded and nobody has
    /// reviewed the request yet (once per reminder). Never returns.
    async fn send_progress(&self, id: RequestId, context: &RequestContext<RoleServer>) {
        let token = context.meta.get_progress_token();
        let every = self.inner.options.progress_every;
        let mut waited = Duration::ZERO;
        // Reminders already reported as unanswered.
        let mut told = 0;
        loop {
            let unanswered = self.inner.approvals.unanswered_reminders(id).await;
            let nobody = (unanswered > 0).then(|| {
                format!(
                    "nobody has reviewed request {id} yet; its reviewers were reminded ({unanswered})"
                )
            });
            if unanswered > told {
                told = unanswered;
                notice(
                    context,
                    json!({ "message": nobody, "request": id.to_string(), "unanswered_reminders": unanswered }),
                )
                .await;
            }
            if let Some(token) = &token {
                let mut note = format!(
                    "waiting for approval of request {id} ({}s)",
                    waited.as_secs()
                );
                if let Some(nobody) = &nobody {
                    note = format!("{note}; {nobody}");
                }
                let _ = context
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), waited.as_secs_f64())
                            .with_message(note),
                    )
                    .await;
            }
            tokio::time::sleep(every).await;
            waited += every;
        }
    }
}

/// Sends the client a `notice` log message from the `approvals` logger (best effort: a client
/// that cannot take it loses nothing it needs).
/// What the model is told when reviewers changed its call: the arguments it ran with.
fn edited_note(arguments: &serde_json::Value) -> String {
    let text = serde_json::to_string(arguments).unwrap_or_default();
    format!(
        "Note: a reviewer changed this call's arguments before approving it; it ran with {}",
        approvals_core::text::truncate(&text, 2000)
    )
}

async fn notice(context: &RequestContext<RoleServer>, data: serde_json::Value) {
    let _ = context
        .peer
        .notify_logging_message(
            LoggingMessageNotificationParam::new(LoggingLevel::Notice, data)
                .with_logger("approvals"),
        )
        .await;
}

/// Serves `gateway` to one MCP client on standard input and output until the client closes
/// its side. Each message read is bounded by `max_message_bytes`.
pub async fn serve_stdio<A: Approvals>(
    gateway: Gateway<A>,
    max_message_bytes: usize,
) -> Result<(), String> {
    let transport =
        AsyncRwTransport::<RoleServer, _, _>::new(tokio::io::stdin(), tokio::io::stdout())
            .with_max_line_length(max_message_bytes);
    match rmcp::serve_server(gateway, transport).await {
        Ok(running) => running
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| format!("the MCP connection task failed: {e}")),
        Err(e) => Err(format!(
            "the MCP client did not complete the handshake: {e}"
        )),
    }
}

impl<A: Approvals> ServerHandler for Gateway<A> {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            "approvals-mcp",
            env!("CARGO_PKG_VERSION"),
        ));
        if let Some(instructions) = self
            .inner
            .upstream
            .info()
            .and_then(|i| i.instructions.clone())
        {
            info = info.with_instructions(instructions);
        }
        info
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.inner
            .upstream
            .peer()
            .list_tools(request)
            .await
            .map_err(|e| {
                ErrorData::internal_error(format!("the upstream MCP server failed: {e}"), None)
            })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(self.guarded_call(request, &context).await.into())
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }
}
