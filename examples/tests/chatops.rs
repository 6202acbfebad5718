//! The approver conformance suite (`approvals_testkit::approver_suite`) against the example
//! chat-ops channel (`approvals_examples::chatops`), over real WebSockets on loopback: a
//! viewer client records what the channel shows, and each decision is sent by a client that
//! signs in with the person's token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{Approver, Gate, RequestId, StaticIdentityResolver, StaticPolicy, Verdict};
use approvals_examples::chatops::{CHANNEL, ChatOps};
use approvals_testkit::approver_suite::{self, ChannelHarness, Person, Setup};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The sign-in token and chat id of each of the suite's people.
fn account(who: Person) -> (&'static str, &'static str) {
    match who {
        Person::Reviewer => ("token-sam-7f3a", "sam"),
        Person::Requester => ("token-dana-91c2", "dana"),
        Person::Outsider => ("token-eve-44d0", "eve"),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct ChatOpsHarness {
    gate: Gate,
    channel: ChatOps,
    url: String,
    /// What the viewer client has been shown: message id → (request, text), latest version.
    seen: Arc<Mutex<HashMap<String, (String, String)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ChatOpsHarness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ChatOpsHarness {
    async fn connect(&self) -> Socket {
        let (socket, _) = tokio_tungstenite::connect_async(self.url.as_str())
            .await
            .expect("connect to the chat-ops channel");
        socket
    }

    /// Sends `message` and returns the first reply of type `kind` (bounded, 10 s).
    async fn ask(socket: &mut Socket, message: Value, kind: &str) -> Value {
        socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(frame)) = socket.next().await {
                if let Message::Text(text) = frame {
                    let value: Value = serde_json::from_str(&text).expect("the channel sends JSON");
                    if value["type"] == kind {
                        return value;
                    }
                }
            }
            panic!("the channel closed the connection before answering {kind}");
        })
        .await;
        reply.unwrap_or_else(|_| panic!("no {kind} reply within 10 s"))
    }

    /// The digest shown with `id`'s message: what a reviewer approves.
    async fn shown_digest(&self, id: RequestId) -> String {
        for _ in 0..500 {
            let record = self.gate.get(id).await.expect("store").expect("request");
            let shown = self
                .seen
                .lock()
                .expect("viewer")
                .get(&format!("m-{id}"))
                .map(|(_, text)| text.clone());
            if let Some(text) = shown {
                let digest = record.digest.to_string();
                assert!(text.contains(&digest), "the message shows the digest");
                return digest;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the viewer was never shown {id}");
    }

    async fn signed_in(&self, token: &str) -> (Socket, bool) {
        let mut socket = self.connect().await;
        let hello = Self::ask(
            &mut socket,
            json!({"type": "hello", "token": token}),
            "hello",
        )
        .await;
        let ok = hello["ok"] == true;
        (socket, ok)
    }
}

impl ChannelHarness for ChatOpsHarness {
    async fn start(setup: Setup) -> Self {
        let channel = ChatOps::new(Person::ALL.map(account));
        let mut resolver = StaticIdentityResolver::new();
        for who in Person::ALL {
            resolver = resolver.map(CHANNEL, account(who).1, who.principal());
        }
        let gate = Gate::builder()
            .policy(StaticPolicy::require(setup.requirement))
            .audit_shared(setup.audit)
            .clock(setup.clock)
            .initiator(setup.initiator)
            .approver(channel.clone())
            .build()
            .expect("gate");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn({
            let channel = channel.clone();
            let gate = gate.clone();
            async move {
                let _ = channel.serve(listener, gate, Arc::new(resolver)).await;
            }
        });
        let mut harness = ChatOpsHarness {
            gate,
            channel,
            url,
            seen: Arc::default(),
            tasks: vec![server],
        };
        let mut viewer = harness.connect().await;
        let seen = harness.seen.clone();
        harness.tasks.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = viewer.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if value["type"] == "message"
                    && let (Some(id), Some(request), Some(text)) = (
                        value["id"].as_str(),
                        value["request"].as_str(),
                        value["text"].as_str(),
                    )
                    && let Ok(mut seen) = seen.lock()
                {
                    seen.insert(id.to_owned(), (request.to_owned(), text.to_owned()));
                }
            }
        }));
        harness
    }

    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn approver(&self) -> Option<Arc<dyn Approver>> {
        Some(Arc::new(self.channel.clone()))
    }

    async fn decide(
        &self,
        id: RequestId,
        who: Person,
        verdict: Verdict,
        reason: Option<&str>,
    ) -> Option<String> {
        let digest = self.shown_digest(id).await;
        let (mut socket, ok) = self.signed_in(account(who).0).await;
        assert!(ok, "{who:?} signs in");
        let verdict = match verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        };
        let result = Self::ask(
            &mut socket,
            json!({"type": "decide", "request": id, "verdict": verdict, "digest": digest, "reason": reason}),
            "result",
        )
        .await;
        result["text"].as_str().map(str::to_owned)
    }

    async fn forge(&self, id: RequestId, who: Person) {
        let digest = self.shown_digest(id).await;
        let (mut socket, ok) = self.signed_in(&format!("{}-forged", account(who).0)).await;
        assert!(!ok, "a wrong token does not sign in");
        let result = Self::ask(
            &mut socket,
            json!({"type": "decide", "request": id, "verdict": "approve", "digest": digest}),
            "result",
        )
        .await;
        assert_eq!(result["ok"], false, "{result}");
    }

    async fn shown(&self, id: RequestId) -> Vec<String> {
        let id = id.to_string();
        self.seen
            .lock()
            .expect("viewer")
            .values()
            .filter(|(request, _)| *request == id)
            .map(|(_, text)| text.clone())
            .collect()
    }
}

#[tokio::test]
async fn delivers_the_exact_action() {
    approver_suite::delivers_the_exact_action::<ChatOpsHarness>().await;
}

#[tokio::test]
async fn shows_every_resolution() {
    approver_suite::shows_every_resolution::<ChatOpsHarness>().await;
}

#[tokio::test]
async fn refuses_self_approval() {
    approver_suite::refuses_self_approval::<ChatOpsHarness>().await;
}

#[tokio::test]
async fn refuses_an_outsider() {
    approver_suite::refuses_an_outsider::<ChatOpsHarness>().await;
}

#[tokio::test]
async fn refuses_a_forged_decision() {
    approver_suite::refuses_a_forged_decision::<ChatOpsHarness>().await;
}

#[tokio::test]
async fn requires_a_reason_when_the_policy_does() {
    approver_suite::requires_a_reason_when_the_policy_does::<ChatOpsHarness>().await;
}

#[tokio::test]
async fn redelivery_shows_no_second_message() {
    approver_suite::redelivery_shows_no_second_message::<ChatOpsHarness>().await;
}

/// A message larger than the channel accepts closes that connection and decides nothing.
#[tokio::test]
async fn an_oversized_message_closes_the_connection() {
    let harness = ChatOpsHarness::start(Setup::new()).await;
    let mut socket = harness.connect().await;
    let huge = json!({"type": "hello", "token": "x".repeat(64 * 1024)});
    let _ = socket.send(Message::text(huge.to_string())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the connection is closed");
}
