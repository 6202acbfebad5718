//! A chat-ops review channel over WebSocket: the example of README's "Writing a channel".
//!
//! The whole channel is its wire format. Reviewers' chat clients connect to
//! [`ChatOps::serve`], sign in with a token, see one message per request (kept up to date as
//! the request changes), and answer with a decision. Every rule (who may review, self-approval,
//! reasons, quorum, deny wins) is the gate's: the channel proves who sent a decision and passes
//! it on with [`Gate::decide`], then shows what the gate answered.
//!
//! The protocol, one JSON object per WebSocket text message:
//!
//! | from | message |
//! |---|---|
//! | client | `{"type":"hello","token":"…"}` signs the connection in |
//! | client | `{"type":"decide","request":"…","verdict":"approve"\|"deny","digest":"sha256:…","reason":"…"}` |
//! | server | `{"type":"hello","ok":true\|false}` |
//! | server | `{"type":"message","id":"…","request":"…","digest":"sha256:…","text":"…"}`, sent again with the same `id` whenever it changes |
//! | server | `{"type":"result","request":"…","ok":true\|false,"text":"…"}` answers a `decide` |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::text::{neutralize, truncate};
use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, Digest, DispatchReason, Gate, IdentityResolver,
    RejectCause, RequestId, RequestRecord, Review, Verdict, resolve_reviewer,
};
use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The channel name in audit events, reviews and deliveries.
pub const CHANNEL: &str = "chatops";

/// The largest client message accepted; a longer one closes the connection.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// How long the identity resolver may take before a decision is refused.
const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

/// The channel: an [`Approver`] for the gate, and the WebSocket server reviewers use.
#[derive(Clone)]
pub struct ChatOps {
    room: Arc<Room>,
}

struct Room {
    /// SHA-256 of each sign-in token → the reviewer's chat id (resolved to a principal by the
    /// identity resolver at decision time, so group changes count).
    tokens: HashMap<[u8; 32], String>,
    /// The current version of each request's message, so a client that connects later, and
    /// a redelivery after a crash, find it.
    messages: Mutex<HashMap<RequestId, Value>>,
    /// Every new or changed message, to every connected client.
    feed: broadcast::Sender<Value>,
}

impl ChatOps {
    /// A channel whose reviewers sign in with `tokens` (token → chat id).
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let tokens = tokens
            .into_iter()
            .map(|(token, user)| (token_hash(token), user.to_owned()))
            .collect();
        ChatOps {
            room: Arc::new(Room {
                tokens,
                messages: Mutex::default(),
                feed: broadcast::channel(256).0,
            }),
        }
    }

    /// Serves reviewers on `listener` until the task is dropped: decisions go to `gate`,
    /// senders are resolved with `resolver` (chat id on channel [`CHANNEL`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        gate: Gate,
        resolver: Arc<dyn IdentityResolver>,
    ) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let session = Session {
                room: self.room.clone(),
                gate: gate.clone(),
                resolver: resolver.clone(),
                user: None,
            };
            tokio::spawn(session.run(stream));
        }
    }

    /// Stores the new version of `request`'s message and sends it to every client.
    fn show(&self, request: &RequestRecord, text: String) -> Value {
        let message = json!({
            "type": "message",
            "id": format!("m-{}", request.id),
            "request": request.id,
            "digest": request.digest,
            "text": text,
        });
        if let Ok(mut messages) = self.room.messages.lock() {
            messages.insert(request.id, message.clone());
        }
        // No client connected is not an error: the message is kept for the next one.
        let _ = self.room.feed.send(message.clone());
        message
    }
}

#[async_trait]
impl Approver for ChatOps {
    fn name(&self) -> &str {
        CHANNEL
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let earlier = match reason {
            // Delivered before a crash, but not recorded: keep the message already shown.
            DispatchReason::Redelivery => self
                .room
                .messages
                .lock()
                .ok()
                .and_then(|m| m.get(&request.id).cloned()),
            _ => None,
        };
        let message = match earlier {
            Some(message) => message,
            None => self.show(request, request_text(request, reason)),
        };
        Ok(Some(Delivery {
            channel: CHANNEL.into(),
            reference: json!({ "message": message["id"] }),
        }))
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        let by = approvals_core::lifecycle::decided_by(request)
            .map(|who| format!(" by {}", neutralize(&who)))
            .unwrap_or_default();
        let status = format!("Request {} is now {}{by}.", request.id, request.state);
        self.show(
            request,
            format!("{status}\n{}", request_text(request, DispatchReason::New)),
        );
        Ok(())
    }
}

/// What reviewers read: the exact action, with the digest their decision is bound to.
/// Action text comes from the agent, so it is neutralised (no invisible or bidi characters)
/// and bounded.
fn request_text(request: &RequestRecord, reason: DispatchReason) -> String {
    let action = &request.request;
    let params = serde_json::to_string(&action.params).unwrap_or_default();
    let heading = match reason {
        DispatchReason::Escalation => "Escalated approval request",
        DispatchReason::Reminder => "Reminder, still waiting for review",
        _ => "Approval request",
    };
    let justification = action.justification.as_deref().unwrap_or("none given");
    let text = format!(
        "{heading}: {kind} on {resource}\nParameters: {params}\nJustification: {justification}\nDigest: {digest}\nNeeds {quorum} approval(s); expires {expires}",
        kind = action.kind,
        resource = action.resource,
        digest = request.digest,
        quorum = request.requirement.quorum,
        expires = request.expires_at.format("%Y-%m-%d %H:%M UTC"),
    );
    truncate(&neutralize(&text), 4000).into_owned()
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Inbound {
    Hello {
        token: String,
    },
    Decide {
        request: RequestId,
        verdict: Verdict,
        digest: String,
        reason: Option<String>,
    },
}

/// One connected client.
struct Session {
    room: Arc<Room>,
    gate: Gate,
    resolver: Arc<dyn IdentityResolver>,
    /// The chat id the connection signed in as.
    user: Option<String>,
}

impl Session {
    async fn run(mut self, stream: TcpStream) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CLIENT_MESSAGE))
            .max_frame_size(Some(MAX_CLIENT_MESSAGE));
        let Ok(socket) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
        else {
            return;
        };
        let (mut tx, mut rx) = socket.split();
        let mut feed = self.room.feed.subscribe();
        let backlog: Vec<Value> = match self.room.messages.lock() {
            Ok(messages) => messages.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        for message in backlog {
            if tx.send(Message::text(message.to_string())).await.is_err() {
                return;
            }
        }
        loop {
            let reply = tokio::select! {
                shown = feed.recv() => match shown {
                    Ok(message) => message,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                received = rx.next() => match received {
                    Some(Ok(Message::Text(text))) => self.handle(&text).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                },
            };
            if tx.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, text: &str) -> Value {
        match serde_json::from_str::<Inbound>(text) {
            Ok(Inbound::Hello { token }) => {
                self.user = self.room.tokens.get(&token_hash(&token)).cloned();
                json!({"type": "hello", "ok": self.user.is_some()})
            }
            Ok(Inbound::Decide {
                request,
                verdict,
                digest,
                reason,
            }) => {
                let (ok, text) = self.decide(request, verdict, &digest, reason).await;
                json!({"type": "result", "request": request, "ok": ok, "text": text})
            }
            Err(e) => json!({
                "type": "error",
                "text": format!("Unreadable message: {}", truncate(&e.to_string(), 200)),
            }),
        }
    }

    /// Proves who decided, then hands the decision to the gate and reports its answer.
    async fn decide(
        &self,
        id: RequestId,
        verdict: Verdict,
        digest: &str,
        reason: Option<String>,
    ) -> (bool, String) {
        let Some(user) = &self.user else {
            self.gate
                .record_rejected_callback(id, None, CHANNEL, RejectCause::Forged, "not signed in")
                .await;
            return (false, "You are not signed in; nothing was recorded.".into());
        };
        let reviewer = match resolve_reviewer(&*self.resolver, CHANNEL, user, RESOLVE_LIMIT).await {
            Ok(reviewer) => reviewer,
            Err(e) => {
                let detail = e.to_string();
                self.gate
                    .record_rejected_callback(
                        id,
                        None,
                        CHANNEL,
                        RejectCause::UnknownReviewer,
                        &detail,
                    )
                    .await;
                return (false, format!("You cannot review here: {detail}"));
            }
        };
        let Ok(digest) = Digest::parse(digest) else {
            return (
                false,
                "The digest is not one this channel showed; nothing was recorded.".into(),
            );
        };
        let mut review = Review::new(reviewer, verdict)
            .via(CHANNEL)
            .for_digest(digest);
        if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
            review = review.reason(reason);
        }
        match self.gate.decide(id, review).await {
            Ok(outcome) => (
                true,
                format!(
                    "Recorded: the request is {} ({}/{} approvals).",
                    outcome.state, outcome.approvals, outcome.quorum
                ),
            ),
            Err(refused) => (false, refused.reviewer_message()),
        }
    }
}
