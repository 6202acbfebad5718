//! Loopback fakes for tests: [`FakeSlack`] serves the Slack Web API methods this crate uses,
//! interaction `response_url`s, and Socket Mode (`apps.connections.open` plus a WebSocket
//! server that says `hello`, sends envelopes and records acknowledgements). The payload
//! builders produce interactions shaped as Slack documents them, and [`signed_request`] signs
//! them as Slack does.
//!
//! Enabled by the `fake` feature. Never use it in production.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::signature::{SIGNATURE_HEADER, SigningSecret, TIMESTAMP_HEADER};

mod validate;
pub use validate::{validate_blocks, validate_text, validate_view};

/// The bot token the fake accepts.
pub const BOT_TOKEN: &str = "xoxb-fake-bot-token";
/// The app-level token the fake accepts for `apps.connections.open`.
pub const APP_TOKEN: &str = "xapp-1-fake-app-token";
/// The fake's workspace id.
pub const TEAM_ID: &str = "T0FAKE0001";
/// The fake's app id.
pub const APP_ID: &str = "A0FAKE0001";
/// The fake's approvals conversation.
pub const CONVERSATION: &str = "C0APPROVALS";
/// The bot id of the app the fake's bot token belongs to (`auth.test`, and `bot_id` on the
/// messages it posts).
pub const BOT_ID: &str = "B0FAKEBOT";
/// The bot's user id (`auth.test`'s `user_id`, and `user` on the messages it posts).
pub const BOT_USER_ID: &str = "U0FAKEBOT";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One Web API call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method (`chat.postMessage`, ...).
    pub method: String,
    /// The bearer token presented.
    pub token: Option<String>,
    /// The JSON body (or the query parameters as an object for GET).
    pub body: Value,
}

/// A failure the fake answers with instead of success, once.
#[derive(Debug, Clone)]
pub enum Failure {
    /// HTTP 429 with `Retry-After` seconds.
    RateLimited {
        /// Seconds.
        retry_after_secs: u64,
    },
    /// This HTTP status with an empty body.
    Status(u16),
    /// HTTP 200 `{"ok": false, "error": ..}`.
    Api(String),
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    users: HashMap<String, Value>,
    messages: HashMap<String, Value>,
    next_ts: u64,
    responses: Vec<(String, Value)>,
    ws_addr: Option<SocketAddr>,
    socket_opens: u64,
    socket_conns: Vec<mpsc::UnboundedSender<WsMessage>>,
    socket_received: Vec<Value>,
    socket_hello: bool,
}

impl State {
    /// A new message timestamp, like Slack's: the time of posting, unique and increasing.
    fn new_ts(&mut self) -> String {
        let ts = format!("{}.{:06}", now(), self.next_ts);
        self.next_ts += 1;
        ts
    }
}

/// A fake Slack: Web API, response URLs and Socket Mode on `127.0.0.1`. Stops when dropped.
pub struct FakeSlack {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn json_response(status: u16, body: &Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

impl FakeSlack {
    /// Starts the fake (HTTP and WebSocket listeners on random loopback ports).
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            next_ts: 1,
            socket_hello: true,
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        lock(&state).ws_addr = Some(ws_listener.local_addr()?);

        let http_state = state.clone();
        let http_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = http_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(handle_http(&state, &parts, &body, addr))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });

        let ws_state = state.clone();
        let ws_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = ws_listener.accept().await else {
                    continue;
                };
                let state = ws_state.clone();
                tokio::spawn(serve_socket(state, stream));
            }
        });

        Ok(FakeSlack {
            addr,
            state,
            tasks: vec![http_task, ws_task],
        })
    }

    /// The Web API base URL (`http://127.0.0.1:port/api/`).
    pub fn api_base(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    /// The prefix of the fake's response URLs.
    pub fn response_url_prefix(&self) -> String {
        format!("http://{}/response/", self.addr)
    }

    /// A fresh response URL for one interaction.
    pub fn response_url(&self, name: &str) -> String {
        format!("{}{name}", self.response_url_prefix())
    }

    /// A client for the fake: bot token, base URL, response URLs allowed, fast retries.
    pub fn client(&self) -> crate::SlackClient {
        crate::SlackClient::new(crate::Token::new(BOT_TOKEN))
            .and_then(|c| c.with_base_url(&self.api_base()))
            .map(|c| {
                c.allow_response_url_prefix(self.response_url_prefix())
                    .with_retry(crate::RetryPolicy {
                        max_attempts: 4,
                        base_delay: std::time::Duration::from_millis(10),
                        max_delay: std::time::Duration::from_millis(50),
                        max_retry_after: std::time::Duration::from_secs(2),
                    })
            })
            .unwrap_or_else(|e| panic!("fake client: {e}"))
    }

    /// Every Web API call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// The calls to one method.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Makes the next call to `method` (or `"response_url"`) fail with `failure`; queue
    /// several by calling again.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        lock(&self.state)
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back(failure);
    }

    /// Adds a user for `users.info`.
    pub fn add_user(&self, id: &str, team_id: &str, email: Option<&str>) {
        let user = json!({
            "id": id,
            "team_id": team_id,
            "name": id.to_ascii_lowercase(),
            "deleted": false,
            "is_bot": false,
            "is_app_user": false,
            "is_email_confirmed": true,
            "profile": {"email": email, "real_name": id, "display_name": id},
        });
        lock(&self.state).users.insert(id.to_owned(), user);
    }

    /// Adds a user object as is.
    pub fn add_user_object(&self, user: Value) {
        if let Some(id) = user.get("id").and_then(Value::as_str).map(str::to_owned) {
            lock(&self.state).users.insert(id, user);
        }
    }

    /// The current content (`text`, `blocks`, `channel`, `ts`) of every posted message, in
    /// posting order.
    pub fn messages(&self) -> Vec<Value> {
        let state = lock(&self.state);
        let mut all: Vec<Value> = state.messages.values().cloned().collect();
        all.sort_by(|a, b| {
            let ts = |v: &Value| v.get("ts").and_then(Value::as_str).unwrap_or("").to_owned();
            ts(a).cmp(&ts(b))
        });
        all
    }

    /// Posts a message into `channel` as another app would (its own `bot_id`), with this
    /// message `metadata`; returns its `ts`. For tests of what this crate must not mistake
    /// for its own messages.
    pub fn post_as_another_app(&self, channel: &str, text: &str, metadata: Value) -> String {
        let mut st = lock(&self.state);
        let ts = st.new_ts();
        let message = json!({
            "type": "message",
            "channel": channel,
            "ts": ts,
            "user": "U0OTHERBOT",
            "bot_id": "B0OTHERBOT",
            "app_id": "A0OTHERAPP",
            "text": text,
            "metadata": metadata,
        });
        st.messages.insert(ts.clone(), message);
        ts
    }

    /// Bodies posted to response URLs, with the URL.
    pub fn responses(&self) -> Vec<(String, Value)> {
        lock(&self.state).responses.clone()
    }

    /// Bodies posted to one response URL.
    pub fn responses_to(&self, url: &str) -> Vec<Value> {
        self.responses()
            .into_iter()
            .filter(|(u, _)| u == url)
            .map(|(_, v)| v)
            .collect()
    }

    /// How many Socket Mode URLs were handed out.
    pub fn socket_opens(&self) -> u64 {
        lock(&self.state).socket_opens
    }

    /// Whether new Socket Mode connections get a `hello` (default true).
    pub fn socket_send_hello(&self, yes: bool) {
        lock(&self.state).socket_hello = yes;
    }

    /// Sends a raw message to the newest Socket Mode connection. Returns false when none is
    /// open.
    pub fn socket_send(&self, message: &Value) -> bool {
        let state = lock(&self.state);
        state
            .socket_conns
            .last()
            .is_some_and(|tx| tx.send(WsMessage::text(message.to_string())).is_ok())
    }

    /// Sends an `interactive` envelope with `payload`; returns the envelope id.
    pub fn socket_send_interactive(&self, envelope_id: &str, payload: Value) -> bool {
        let accepts = payload.get("type").and_then(Value::as_str) == Some("view_submission");
        self.socket_send(&json!({
            "envelope_id": envelope_id,
            "payload": payload,
            "type": "interactive",
            "accepts_response_payload": accepts,
        }))
    }

    /// Sends `disconnect` with `reason` (`warning`, `refresh_requested`, `link_disabled`).
    pub fn socket_disconnect(&self, reason: &str) -> bool {
        self.socket_send(&json!({
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "fake-socket"},
        }))
    }

    /// Closes the newest connection abruptly (no `disconnect`).
    pub fn socket_drop(&self) {
        let mut state = lock(&self.state);
        if let Some(tx) = state.socket_conns.pop() {
            let _ = tx.send(WsMessage::Close(None));
        }
    }

    /// Messages the client sent over Socket Mode (acknowledgements), in order.
    pub fn socket_received(&self) -> Vec<Value> {
        lock(&self.state).socket_received.clone()
    }
}

fn handle_http(
    state: &Arc<Mutex<State>>,
    parts: &http::request::Parts,
    body: &Bytes,
    addr: SocketAddr,
) -> http::Response<Full<Bytes>> {
    let path = parts.uri.path();
    if let Some(rest) = path.strip_prefix("/response/") {
        let url = format!("http://{addr}/response/{rest}");
        let mut st = lock(state);
        if let Some(f) = st
            .failures
            .get_mut("response_url")
            .and_then(VecDeque::pop_front)
        {
            return failure_response(&f);
        }
        let value = serde_json::from_slice(body).unwrap_or(Value::Null);
        st.responses.push((url, value));
        let mut r = http::Response::new(Full::new(Bytes::from_static(b"ok")));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        return r;
    }
    let Some(method) = path.strip_prefix("/api/") else {
        return json_response(404, &json!({"ok": false, "error": "not_found"}));
    };
    let token = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body_value = if parts.method == http::Method::GET {
        let query = parts.uri.query().unwrap_or("");
        Value::Object(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    let mut st = lock(state);
    st.calls.push(Call {
        method: method.to_owned(),
        token: token.clone(),
        body: body_value.clone(),
    });
    if let Some(f) = st.failures.get_mut(method).and_then(VecDeque::pop_front) {
        return failure_response(&f);
    }
    let err = |e: &str| json_response(200, &json!({"ok": false, "error": e}));
    if method == "apps.connections.open" {
        return match token.as_deref() {
            Some(APP_TOKEN) => {
                st.socket_opens += 1;
                let ws = st.ws_addr.map(|a| a.to_string()).unwrap_or_default();
                json_response(
                    200,
                    &json!({"ok": true, "url": format!("ws://{ws}/link/?ticket=fake-{}&app_id={APP_ID}", st.socket_opens)}),
                )
            }
            Some(t) if t.starts_with("xoxb-") => err("not_allowed_token_type"),
            _ => err("invalid_auth"),
        };
    }
    if token.as_deref() != Some(BOT_TOKEN) {
        return err(if token.is_some() {
            "invalid_auth"
        } else {
            "not_authed"
        });
    }
    let field = |name: &str| {
        body_value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match method {
        "chat.postMessage" => {
            let channel = field("channel");
            if channel.is_empty() {
                return err("channel_not_found");
            }
            if let Some(blocks) = body_value.get("blocks")
                && validate_blocks(blocks).is_err()
            {
                return err("invalid_blocks");
            }
            if validate_text(body_value.get("text")).is_err() {
                return err("msg_too_long");
            }
            let ts = st.new_ts();
            let mut message = json!({
                "type": "message",
                "channel": channel,
                "ts": ts,
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "app_id": APP_ID,
                "text": body_value.get("text").cloned().unwrap_or(Value::Null),
                "blocks": body_value.get("blocks").cloned().unwrap_or(Value::Null),
            });
            if let Some(metadata) = body_value.get("metadata") {
                message["metadata"] = metadata.clone();
            }
            if let Some(thread_ts) = body_value.get("thread_ts") {
                message["thread_ts"] = thread_ts.clone();
            }
            st.messages.insert(ts.clone(), message.clone());
            json_response(
                200,
                &json!({"ok": true, "channel": channel, "ts": ts, "message": message}),
            )
        }
        "chat.update" => {
            let (channel, ts) = (field("channel"), field("ts"));
            let Some(existing) = st.messages.get(&ts) else {
                return err("message_not_found");
            };
            if existing.get("channel").and_then(Value::as_str) != Some(channel.as_str()) {
                return err("channel_not_found");
            }
            if let Some(blocks) = body_value.get("blocks")
                && validate_blocks(blocks).is_err()
            {
                return err("invalid_blocks");
            }
            if validate_text(body_value.get("text")).is_err() {
                return err("msg_too_long");
            }
            // Like Slack: an app may only update the messages it posted.
            if existing.get("bot_id").and_then(Value::as_str) != Some(BOT_ID) {
                return err("cant_update_message");
            }
            // The author and, when the update does not replace it, the metadata are kept.
            let mut message = existing.clone();
            message["text"] = body_value.get("text").cloned().unwrap_or(Value::Null);
            message["blocks"] = body_value.get("blocks").cloned().unwrap_or(Value::Null);
            if let Some(metadata) = body_value.get("metadata") {
                message["metadata"] = metadata.clone();
            }
            st.messages.insert(ts.clone(), message);
            json_response(200, &json!({"ok": true, "channel": channel, "ts": ts}))
        }
        "auth.test" => json_response(
            200,
            &json!({
                "ok": true,
                "url": "https://fake-workspace.slack.com/",
                "team": "Fake Workspace",
                "user": "approvals",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": false,
            }),
        ),
        "conversations.history" => {
            let channel = field("channel");
            if channel.is_empty() || channel.starts_with('#') {
                return err("channel_not_found");
            }
            let oldest = ts_value(&field("oldest"));
            let limit = field("limit").parse::<usize>().unwrap_or(100).clamp(1, 999);
            let metadata = field("include_all_metadata") == "true";
            let mut found: Vec<Value> = st
                .messages
                .values()
                .filter(|m| m["channel"] == channel.as_str())
                .filter(|m| ts_value(m["ts"].as_str().unwrap_or("")) > oldest)
                .cloned()
                .map(|mut m| {
                    if !metadata && let Some(o) = m.as_object_mut() {
                        o.remove("metadata");
                    }
                    m
                })
                .collect();
            found.sort_by_key(|m| std::cmp::Reverse(ts_value(m["ts"].as_str().unwrap_or(""))));
            let has_more = found.len() > limit;
            found.truncate(limit);
            json_response(
                200,
                &json!({"ok": true, "messages": found, "has_more": has_more}),
            )
        }
        "views.open" => {
            let view = body_value.get("view").cloned().unwrap_or(Value::Null);
            if field("trigger_id").is_empty() {
                return err("invalid_trigger_id");
            }
            if validate_view(&view).is_err() {
                return err("invalid_arguments");
            }
            json_response(
                200,
                &json!({"ok": true, "view": {"id": format!("V{}", st.calls.len())}}),
            )
        }
        "users.info" => match st.users.get(&field("user")) {
            Some(user) => json_response(200, &json!({"ok": true, "user": user})),
            None => err("user_not_found"),
        },
        _ => err("unknown_method"),
    }
}

/// A Slack timestamp (`seconds.micros`) as a number that orders like it; 0 if malformed.
fn ts_value(ts: &str) -> u128 {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs = secs.parse::<u128>().unwrap_or(0);
    let micros = micros.parse::<u128>().unwrap_or(0);
    secs * 1_000_000 + micros
}

fn failure_response(f: &Failure) -> http::Response<Full<Bytes>> {
    match f {
        Failure::RateLimited { retry_after_secs } => {
            let mut r = json_response(429, &json!({"ok": false, "error": "ratelimited"}));
            if let Ok(v) = http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            r
        }
        Failure::Status(status) => {
            let mut r = http::Response::new(Full::new(Bytes::new()));
            *r.status_mut() = http::StatusCode::from_u16(*status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            r
        }
        Failure::Api(error) => json_response(200, &json!({"ok": false, "error": error})),
    }
}

async fn serve_socket(state: Arc<Mutex<State>>, stream: tokio::net::TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsMessage>();
    let hello = {
        let mut st = lock(&state);
        st.socket_conns.push(tx);
        st.socket_hello
    };
    if hello {
        let message = json!({
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake-socket", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        });
        if sink
            .send(WsMessage::text(message.to_string()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(WsMessage::Close(frame)) => {
                    let _ = sink.send(WsMessage::Close(frame)).await;
                    return;
                }
                Some(m) => {
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(t))) => {
                    let v = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    lock(&state).socket_received.push(v);
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Who clicks, where: the parts of an interaction payload that identify the clicker.
#[derive(Debug, Clone)]
pub struct Clicker {
    /// Workspace id (`team.id`).
    pub team_id: String,
    /// The user's own workspace (`user.team_id`); differs in Slack Connect channels.
    pub user_team_id: String,
    /// App id (`api_app_id`).
    pub app_id: String,
    /// User id (`user.id`).
    pub user_id: String,
}

impl Clicker {
    /// A user of the fake workspace, clicking in the fake app.
    pub fn new(user_id: &str) -> Self {
        Clicker {
            team_id: TEAM_ID.into(),
            user_team_id: TEAM_ID.into(),
            app_id: APP_ID.into(),
            user_id: user_id.into(),
        }
    }

    /// A `block_actions` payload for a click on the button `action_id` with `value` on the
    /// message `message_ts`.
    pub fn block_actions(
        &self,
        action_id: &str,
        value: &str,
        message_ts: &str,
        response_url: &str,
    ) -> Value {
        json!({
            "type": "block_actions",
            "user": {"id": self.user_id, "username": self.user_id.to_ascii_lowercase(), "name": self.user_id.to_ascii_lowercase(), "team_id": self.user_team_id},
            "api_app_id": self.app_id,
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": CONVERSATION, "is_ephemeral": false},
            "trigger_id": format!("13345224609.738474920.{}", message_ts.replace('.', "")),
            "team": {"id": self.team_id, "domain": "fake-workspace"},
            "enterprise": null,
            "is_enterprise_install": false,
            "channel": {"id": CONVERSATION, "name": "approvals"},
            "message": {"type": "message", "ts": message_ts, "text": "Approval needed", "blocks": []},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [{
                "action_id": action_id,
                "block_id": "approvals.actions.1",
                "text": {"type": "plain_text", "text": "Approve", "emoji": false},
                "value": value,
                "type": "button",
                "action_ts": "1700000001.000200",
            }],
        })
    }

    /// A `view_submission` payload for the reason modal, carrying `private_metadata` as
    /// `views.open` set it and `reason` typed into the input.
    pub fn view_submission(
        &self,
        callback_id: &str,
        private_metadata: &str,
        reason: Option<&str>,
    ) -> Value {
        json!({
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "fake-workspace"},
            "user": {"id": self.user_id, "username": self.user_id.to_ascii_lowercase(), "name": self.user_id.to_ascii_lowercase(), "team_id": self.user_team_id},
            "api_app_id": self.app_id,
            "token": "deprecated-verification-token",
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "view": {
                "id": "V0FAKEVIEW",
                "team_id": self.team_id,
                "type": "modal",
                "blocks": [],
                "private_metadata": private_metadata,
                "callback_id": callback_id,
                "state": {"values": {"approvals.reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
                "hash": "156663117.cd33ad1f",
                "title": {"type": "plain_text", "text": "Deny request"},
                "app_id": self.app_id,
                "bot_id": BOT_ID,
                "root_view_id": "V0FAKEVIEW",
                "previous_view_id": null,
                "app_installed_team_id": self.team_id,
            },
            "response_urls": [],
            "is_enterprise_install": false,
            "enterprise": null,
        })
    }
}

/// The form body Slack posts: `payload=<url-encoded JSON>`.
pub fn form_body(payload: &Value) -> Bytes {
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    Bytes::from(encoded)
}

/// A POST of `body` signed with `secret` at `timestamp`, with Slack's headers.
pub fn signed_request(secret: &SigningSecret, timestamp: i64, body: Bytes) -> http::Request<Bytes> {
    let signature = secret.sign(timestamp, &body);
    http::Request::post("/slack/interactivity")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature)
        .header(
            http::header::USER_AGENT,
            "Slackbot 1.0 (+https://api.slack.com/robots)",
        )
        .body(body)
        .unwrap_or_else(|e| panic!("request: {e}"))
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    crate::signature::unix_now()
}
