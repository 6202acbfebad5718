//! Fuzz targets for every parser that takes outside input, as plain functions.
//!
//! Each `pub fn name(data: &[u8])` drives a real public entry point with arbitrary bytes and
//! asserts what must hold whatever the input: it never panics, a refused input changes
//! nothing, and anything accepted is exactly what a legitimate party could have sent. The
//! same functions run under libFuzzer (`fuzz/`, one cargo-fuzz target per function, see
//! `fuzz/README.md`) and under `cargo test` over the committed corpus and regressions
//! (`tests/fuzz_regressions.rs`). A failed check panics, which libFuzzer reports as a crash.
//!
//! Inputs that must reach past authentication have a structured mode: the harness signs
//! what the fuzzer wrote with the test secret or key (Slack signature, Teams JWT), so the
//! payload parsers and the decision logic behind them are exercised too. In those payloads
//! the literal strings [`REQUEST_ID`] and [`REQUEST_DIGEST`] are replaced with the id and
//! digest of the pending request the harness created (ids are random per run).
//!
//! | function               | entry point                                                      |
//! |------------------------|------------------------------------------------------------------|
//! | [`slack_request`]      | `SlackInteractions::handle` on raw requests; `SigningSecret::verify_at`, `ReplayGuard`, `ButtonValue::parse` |
//! | [`slack_interaction`]  | `SlackInteractions::handle` on correctly signed `payload` forms  |
//! | [`teams_activity`]     | `Activity::from_json`, `card_action`, `tenant_id`, `CardData::from_json` |
//! | [`teams_jwt`]          | `BotAuthenticator::validate_for_channel`: raw headers, or arbitrary header/claims signed with the test key |
//! | [`teams_request`]      | `TeamsInteractions::handle` on activities with a valid token     |
//! | [`policy`]             | `RulePolicy::from_toml` / `from_json`, then `evaluate`           |
//! | [`audit_log`]          | `VerifiedReader` / `verify_reader` on raw bytes and on mutations of a signed log |
//! | [`audit_proofs`]       | `Checkpoint::from_text` / `open`, `open_note`, inclusion and consistency proofs, key parsing |
//! | [`grant_token`]        | `GrantTokenVerifier::open` / `verify` on raw, mutated and freshly signed tokens |
//! | [`http_api`]           | `ReviewServer::handle` (API and console) on arbitrary requests    |

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use approvals_audit::grant::{GrantClaims, GrantTokenVerifier, sign_claims};
use approvals_audit::log::{
    ConsistencyProof, InclusionProof, LogChain, LogVerifier, VerifiedReader, verify_reader,
};
use approvals_audit::note::{Checkpoint, Signer, Verifier, open_note};
use approvals_core::{
    ActionRequest, Approver, ApproverError, Decision, Decisions, Delivery, Digest, DispatchReason,
    Gate, GateBuilder, Initiator, MemorySink, MemoryStore, Policy, Principal, RequestContext,
    RequestId, RequestRecord, RequestState, Requirement, RulePolicy, StaticIdentityResolver,
    StaticPolicy, Submission,
};
use approvals_http::{ReviewServer, Tokens};
use approvals_slack::{
    ButtonValue, ReplayGuard, RetryPolicy, SigningSecret, SlackClient, SlackInteractions, Token,
};
use approvals_teams::auth::{AuthConfig, BOT_FRAMEWORK_ISSUER, BotAuthenticator};
use approvals_teams::card::CardData;
use approvals_teams::fake::{FakeOpenId, TokenSpec};
use approvals_teams::{Activity, TeamsInteractions};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// Replaced, in structured inputs, by the id of the pending request the harness created.
pub const REQUEST_ID: &str = "REQUEST_ID";
/// Replaced, in structured inputs, by the digest of that request.
pub const REQUEST_DIGEST: &str = "REQUEST_DIGEST";

/// A fuzz target: takes any bytes, panics on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by name, as `fuzz/` and the regression test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("slack_request", slack_request),
    ("slack_interaction", slack_interaction),
    ("teams_activity", teams_activity),
    ("teams_jwt", teams_jwt),
    ("teams_request", teams_request),
    ("policy", policy),
    ("audit_log", audit_log),
    ("audit_proofs", audit_proofs),
    ("grant_token", grant_token),
    ("http_api", http_api),
];

// ------------------------------------------------------------------------------------------
// The pending request every stateful target works on.

/// The reviewer group of the pending request.
const REVIEWERS: &str = "security";

fn reviewer() -> Principal {
    Principal::human("sam@example.com").with_groups([REVIEWERS])
}

/// The human the agent acts for: also in the reviewer group, and never allowed to approve.
fn behalf() -> Principal {
    Principal::human("dana@example.com").with_groups([REVIEWERS])
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"table": "customers", "rows": 5000, "format": "csv"}))
        .justification("Quarterly report for finance (FIN-1234).")
        .context(RequestContext {
            environment: Some("production".into()),
            ticket: Some("FIN-1234".into()),
            ..Default::default()
        })
}

thread_local! {
    static LAST_STATE: std::cell::Cell<Option<RequestState>> = const { std::cell::Cell::new(None) };
}

/// The state the pending request was left in by the last stateful target run on this thread
/// ([`slack_request`], [`slack_interaction`], [`teams_request`], [`http_api`]), so tests can
/// prove seeds reach the decision logic.
pub fn last_state() -> Option<RequestState> {
    LAST_STATE.with(std::cell::Cell::get)
}

/// What a target may compare before and after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    state: RequestState,
    version: u64,
    reviews: usize,
}

/// A gate on a [`MemoryStore`] holding one pending request that needs one approval from the
/// `security` group, initiated by an agent on behalf of dana.
struct Pending {
    gate: Gate,
    id: RequestId,
    digest: Digest,
}

impl Pending {
    async fn new() -> Pending {
        Self::with_builder(Gate::builder()).await
    }

    async fn with_builder(builder: GateBuilder) -> Pending {
        let gate = builder
            .policy(StaticPolicy::require(Requirement::groups([REVIEWERS])))
            .store(MemoryStore::new())
            .audit(MemorySink::new())
            .initiator(Initiator::agent("fuzz-agent").on_behalf_of(behalf()))
            .build()
            .expect("a gate on a memory store builds");
        let id = match gate.submit(&export()).await {
            Ok(Submission::Pending(id)) => id,
            other => panic!("the harness request should be pending: {other:?}"),
        };
        let digest = gate
            .get(id)
            .await
            .ok()
            .flatten()
            .expect("the pending request is stored")
            .digest;
        Pending { gate, id, digest }
    }

    async fn snapshot(&self) -> Snapshot {
        let record = self
            .gate
            .get(self.id)
            .await
            .ok()
            .flatten()
            .expect("the pending request is still stored");
        LAST_STATE.with(|s| s.set(Some(record.state)));
        Snapshot {
            state: record.state,
            version: record.version,
            reviews: record.reviews.len(),
        }
    }

    /// `text` with [`REQUEST_ID`] and [`REQUEST_DIGEST`] replaced.
    fn substitute(&self, text: &str) -> String {
        text.replace(REQUEST_ID, &self.id.to_string())
            .replace(REQUEST_DIGEST, &self.digest.to_string())
    }
}

/// A runtime per input for targets whose handler spawns background work, so that work can
/// be run to completion ([`settle`]) before the outcome is checked.
fn local_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime builds")
}

/// Runs the tasks spawned on the current runtime until none is left. A handler that never
/// finishes its background work is a hang, reported as a failure after a minute.
async fn settle() {
    let handle = tokio::runtime::Handle::current();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut rounds = 0u32;
    while handle.metrics().num_alive_tasks() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "background work of the handler did not finish within a minute"
        );
        rounds += 1;
        if rounds < 64 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Splits off the first `n` lines (`\n`), returning them and the rest.
fn lines(data: &[u8], n: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                parts.push(rest);
                rest = &[];
            }
        }
    }
    (parts, rest)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

// ------------------------------------------------------------------------------------------
// Slack.

/// The signing secret the harness signs Slack requests with.
pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The workspace and app the Slack handler accepts.
pub const SLACK_TEAM: &str = "T0FUZZTEAM";
/// See [`SLACK_TEAM`].
pub const SLACK_APP: &str = "A0FUZZAPP";
/// The Slack user mapped to the reviewer (sam, in `security`).
pub const SLACK_REVIEWER: &str = "U0REVIEWER";
/// The Slack user mapped to dana, the human the agent acts for.
pub const SLACK_BEHALF: &str = "U0DANA";
/// The Unix time at which raw Slack seeds are signed and [`slack_request`] checks signatures.
pub const SLACK_SEED_TIME: i64 = 1_700_000_000;

fn slack_secret() -> SigningSecret {
    SigningSecret::new(SLACK_SECRET).expect("the test secret is not empty")
}

/// The Slack Web API client, built once (its TLS setup is the slow part). Web API calls
/// (views.open) go to a closed loopback port and fail at once, without retries; response URLs
/// other than Slack's own are refused by the client.
fn slack_client() -> SlackClient {
    static CLIENT: OnceLock<SlackClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            SlackClient::new(Token::new("xoxb-fuzz"))
                .and_then(|c| c.with_base_url("http://127.0.0.1:9/api/"))
                .expect("the Slack client builds")
                .with_retry(RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                })
        })
        .clone()
}

fn slack_handler(gate: Gate) -> SlackInteractions {
    SlackInteractions::builder(gate, slack_client(), slack_secret())
        .team_id(SLACK_TEAM)
        .app_id(SLACK_APP)
        .identities(
            StaticIdentityResolver::new()
                .map("slack", SLACK_REVIEWER, reviewer())
                .map("slack", SLACK_BEHALF, behalf()),
        )
        .build()
        .expect("the Slack handler builds")
}

/// HMAC-SHA256 of `v0:<timestamp>:<body>` computed here, independently of the crate.
fn slack_mac(timestamp: &[u8], body: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SLACK_SECRET.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp);
    mac.update(b":");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Slack interactivity requests as an attacker sends them (no secret).
///
/// Input: `method\ntimestamp header\nsignature header\nbody`. Checks that
/// `SigningSecret::verify_at` (at [`SLACK_SEED_TIME`]) accepts exactly the requests whose
/// signature is the HMAC of the raw timestamp and body, that the replay guard refuses a
/// second delivery, that `ButtonValue::parse` round-trips whatever it accepts, and that
/// `SlackInteractions::handle` (at the real time, so every input here is stale or forged)
/// refuses the request and leaves the pending request untouched.
pub fn slack_request(data: &[u8]) {
    let (head, body) = lines(data, 3);
    let (method, timestamp, signature) = (head[0], head[1], head[2]);
    let secret = slack_secret();
    let ts = std::str::from_utf8(timestamp).ok();
    let sig = std::str::from_utf8(signature).ok();

    if let Ok(verified) = secret.verify_at(ts, sig, body, SLACK_SEED_TIME) {
        let presented = sig
            .and_then(|s| s.strip_prefix("v0="))
            .map(str::to_ascii_lowercase);
        assert_eq!(
            presented,
            Some(hex::encode(slack_mac(timestamp, body))),
            "verify_at accepted a signature that is not the HMAC of the raw timestamp and body"
        );
        let guard = ReplayGuard::new(4);
        assert!(guard.check(&verified, SLACK_SEED_TIME).is_ok());
        assert!(
            guard.check(&verified, SLACK_SEED_TIME).is_err(),
            "a replayed signed request was accepted twice"
        );
    }

    if let Ok(value) = std::str::from_utf8(body)
        && let Some(button) = ButtonValue::parse(value)
    {
        assert_eq!(ButtonValue::parse(&button.encode()), Some(button));
    }

    let rt = local_runtime();
    rt.block_on(async {
        let pending = Pending::new().await;
        let handler = slack_handler(pending.gate.clone());
        let before = pending.snapshot().await;
        let mut request = http::Request::new(Bytes::copy_from_slice(body));
        *request.method_mut() = http::Method::from_bytes(method).unwrap_or(http::Method::POST);
        for (name, value) in [
            ("x-slack-request-timestamp", timestamp),
            ("x-slack-signature", signature),
        ] {
            if let Ok(value) = http::HeaderValue::from_bytes(value) {
                request.headers_mut().insert(name, value);
            }
        }
        let response = handler.handle(request);
        settle().await;
        assert_ne!(
            response.status(),
            http::StatusCode::OK,
            "an unsigned or stale Slack request was accepted"
        );
        assert_eq!(
            pending.snapshot().await,
            before,
            "a refused Slack request changed the request"
        );
    });
}

/// Slack interaction payloads, correctly signed with the test secret at the current time.
///
/// Input: the `payload` JSON (with [`REQUEST_ID`] / [`REQUEST_DIGEST`] placeholders), sent
/// form-encoded like Slack does. The handler parses it, checks workspace and app, maps the
/// user and applies the click through the gate; its background work is run to completion.
/// Checks: a refused payload changes nothing; the request is approved only by a
/// `block_actions` Approve click of the mapped reviewer, from the allowed workspace and app,
/// on a button naming this request and its digest; nothing else (in particular not the human
/// the agent acts for, and no deny without the sealed reason modal) changes it.
pub fn slack_interaction(data: &[u8]) {
    let rt = local_runtime();
    rt.block_on(async {
        let pending = Pending::new().await;
        let handler = slack_handler(pending.gate.clone());
        let payload = pending.substitute(&text(data));
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload)
            .finish();
        let now = Utc::now().timestamp();
        let request = http::Request::post("/slack/interactivity")
            .header("x-slack-request-timestamp", now.to_string())
            .header(
                "x-slack-signature",
                slack_secret().sign(now, body.as_bytes()),
            )
            .body(Bytes::from(body))
            .expect("the request builds");
        let before = pending.snapshot().await;
        let response = handler.handle(request);
        settle().await;
        let status = response.status();
        assert!(
            status == http::StatusCode::OK || status == http::StatusCode::BAD_REQUEST,
            "a signed Slack request was answered {status}"
        );
        let after = pending.snapshot().await;
        if after == before {
            return;
        }
        let v: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let button = format!("{} {}", pending.id, pending.digest);
        assert_eq!(
            after.state,
            RequestState::Approved,
            "{after:?} from {payload}"
        );
        assert_eq!(str_at(&v, &["type"]), Some("block_actions"), "{payload}");
        assert_eq!(
            str_at(&v, &["user", "id"]),
            Some(SLACK_REVIEWER),
            "{payload}"
        );
        assert_eq!(str_at(&v, &["team", "id"]), Some(SLACK_TEAM), "{payload}");
        assert!(
            str_at(&v, &["user", "team_id"]).is_none_or(|t| t == SLACK_TEAM),
            "{payload}"
        );
        assert_eq!(str_at(&v, &["api_app_id"]), Some(SLACK_APP), "{payload}");
        let action = v
            .get("actions")
            .and_then(|a| a.get(0))
            .unwrap_or(&Value::Null);
        assert_eq!(
            str_at(action, &["action_id"]),
            Some(approvals_slack::blocks::ACTION_APPROVE),
            "{payload}"
        );
        assert_eq!(
            str_at(action, &["value"]),
            Some(button.as_str()),
            "{payload}"
        );
    });
}

// ------------------------------------------------------------------------------------------
// Microsoft Teams.

/// The bot's app id (the tokens' audience).
pub const TEAMS_APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
/// The tenant the Teams handler accepts.
pub const TEAMS_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The AAD object id mapped to the reviewer (sam).
pub const TEAMS_REVIEWER: &str = "aad-sam";
/// The AAD object id mapped to dana, the human the agent acts for.
pub const TEAMS_BEHALF: &str = "aad-dana";
/// The `serviceUrl` seeds use.
pub const TEAMS_SERVICE_URL: &str = "https://smba.trafficmanager.net/amer/";

/// The fake OpenID/JWKS endpoint (with its generated RSA key) and an authenticator that has
/// fetched its keys, shared by every Teams input in a process.
struct TeamsEnv {
    runtime: tokio::runtime::Runtime,
    idp: FakeOpenId,
    auth: BotAuthenticator,
}

fn teams_env() -> &'static TeamsEnv {
    static ENV: OnceLock<TeamsEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime builds");
        let (idp, auth) = runtime.block_on(async {
            let idp = FakeOpenId::start()
                .await
                .expect("the fake OpenID endpoint starts");
            let mut config = AuthConfig::new(TEAMS_APP_ID)
                .with_openid_metadata_url(idp.metadata_url())
                .with_min_refetch_interval(Duration::from_secs(24 * 3600));
            config.max_key_age = Duration::from_secs(365 * 24 * 3600);
            let auth = BotAuthenticator::new(config).expect("the authenticator builds");
            let token = idp.mint(&TokenSpec::valid(TEAMS_APP_ID, TEAMS_SERVICE_URL));
            auth.validate(&format!("Bearer {token}"), TEAMS_SERVICE_URL)
                .await
                .expect("a valid token validates (keys fetched once)");
            (idp, auth)
        });
        TeamsEnv { runtime, idp, auth }
    })
}

/// The conversation the harness's card was posted to.
pub const TEAMS_CONVERSATION: &str = "19:approvals@thread.tacv2";

/// Records a Teams card delivery for each dispatched request, as `TeamsApprover` does after
/// posting it, without a Bot Connector: the handler accepts clicks only from a conversation
/// the request was posted to.
struct CardRecorder;

#[async_trait::async_trait]
impl Approver for CardRecorder {
    fn name(&self) -> &str {
        approvals_teams::CHANNEL
    }

    async fn dispatch(
        &self,
        _request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let card = approvals_teams::CardRef {
            service_url: TEAMS_SERVICE_URL.to_owned(),
            conversation_id: TEAMS_CONVERSATION.to_owned(),
            activity_id: Some("activity-1".to_owned()),
        };
        Ok(Some(Delivery {
            channel: approvals_teams::CHANNEL.to_owned(),
            reference: serde_json::to_value(card).expect("a card reference serializes"),
        }))
    }
}

/// A valid token for `service_url`, minted at most half an hour ago. RS256 signing with the
/// fake's test key is the slowest step of a Teams input, and a token depends only on the
/// `serviceUrl` here, so tokens are reused (at most 1024 remembered).
fn valid_token(env: &TeamsEnv, service_url: &str) -> String {
    static TOKENS: OnceLock<Mutex<HashMap<String, (Instant, String)>>> = OnceLock::new();
    let mut tokens = TOKENS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((minted, token)) = tokens.get(service_url)
        && minted.elapsed() < Duration::from_secs(1800)
    {
        return token.clone();
    }
    if tokens.len() >= 1024 {
        tokens.clear();
    }
    let token = env.idp.mint(&TokenSpec::valid(TEAMS_APP_ID, service_url));
    tokens.insert(service_url.to_owned(), (Instant::now(), token.clone()));
    token
}

fn teams_resolver() -> StaticIdentityResolver {
    let id = |aad: &str| {
        approvals_teams::external_id(TEAMS_TENANT, aad).expect("test ids are valid external ids")
    };
    StaticIdentityResolver::new()
        .map("teams", id(TEAMS_REVIEWER), reviewer())
        .map("teams", id(TEAMS_BEHALF), behalf())
}

/// Bot Framework activity JSON, unauthenticated parsing only.
///
/// Checks that `Activity::from_json`, `tenant_id`, `card_action` and `CardData::from_json`
/// never panic, that a tenant is only reported when no two fields disagree, and that card
/// data round-trips through `CardData::to_json`.
pub fn teams_activity(data: &[u8]) {
    let Ok(activity) = Activity::from_json(data) else {
        return;
    };
    let _ = activity.is_card_action();
    let tenant = activity.tenant_id();
    let raw: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    if let Ok(Some(t)) = &tenant {
        for path in [
            &["conversation", "tenantId"][..],
            &["channelData", "tenant", "id"],
        ] {
            if let Some(other) = str_at(&raw, path).filter(|o| !o.is_empty()) {
                assert_eq!(other, *t, "tenant_id chose one of two different tenants");
            }
        }
    }
    if let Ok(click) = activity.card_action() {
        assert!(activity.is_card_action());
        if let Ok(card) = CardData::from_json(&click.data) {
            let again = CardData::from_json(&card.to_json()).expect("to_json output parses");
            assert_eq!(
                (again.request_id, again.digest),
                (card.request_id, card.digest)
            );
            assert_eq!(again.verdict, card.verdict);
        }
    }
    if let Some(value) = &activity.value {
        let _ = CardData::from_json(value);
    }
}

fn numeric(claims: &serde_json::Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64)
}

/// Bot Framework JWTs into `BotAuthenticator::validate_for_channel`.
///
/// Input: first byte even, raw mode: `Authorization header\nactivity serviceUrl`. First byte
/// odd, structured mode: the rest is JSON `{"header": {..}, "claims": {..}, "service_url":
/// ".."}` whose fields replace those of a valid token, signed with the published test key, so
/// the claim checks are reached. Checks: a token is accepted only with alg RS256 and no
/// `crit`, issuer `https://api.botframework.com`, the app id in `aud`, `exp` not passed and
/// `nbf` reached (within the 5-minute skew), and a `serviceurl` claim equal to the activity's.
pub fn teams_jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let env = teams_env();
    if mode % 2 == 0 {
        let (parts, _) = lines(rest, 2);
        let authorization = text(parts[0]);
        let service_url = text(parts[1]);
        let result = env.runtime.block_on(env.auth.validate_for_channel(
            &authorization,
            &service_url,
            "msteams",
        ));
        // Seeds are minted at build time of the corpus and expire within an hour; a forged
        // token has no valid RS256 signature. Either way nothing raw is accepted.
        assert!(
            result.is_err(),
            "a raw token was accepted: {authorization:?} for {service_url:?}"
        );
        return;
    }
    let input: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
    let service_url = str_at(&input, &["service_url"])
        .unwrap_or(TEAMS_SERVICE_URL)
        .to_owned();
    let mut spec = TokenSpec::valid(TEAMS_APP_ID, TEAMS_SERVICE_URL);
    for (part, target) in [("header", &mut spec.header), ("claims", &mut spec.claims)] {
        if let Some(fields) = input.get(part).and_then(Value::as_object) {
            for (k, v) in fields {
                if v.is_null() {
                    target.remove(k);
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let token = env.idp.mint(&spec);
    let now = Utc::now().timestamp() as f64;
    let result = env.runtime.block_on(env.auth.validate_for_channel(
        &format!("Bearer {token}"),
        &service_url,
        "msteams",
    ));
    let Ok(claims) = result else {
        return;
    };
    let (h, c) = (&spec.header, &spec.claims);
    assert_eq!(h.get("alg"), Some(&json!("RS256")), "{h:?}");
    assert!(!h.contains_key("crit"), "{h:?}");
    assert_eq!(c.get("iss"), Some(&json!(BOT_FRAMEWORK_ISSUER)), "{c:?}");
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == TEAMS_APP_ID,
        Some(Value::Array(items)) => items.iter().any(|a| a == TEAMS_APP_ID),
        _ => false,
    };
    assert!(aud_ok, "accepted without the app id in aud: {c:?}");
    let exp = numeric(c, "exp").expect("accepted without a numeric exp");
    assert!(exp + 300.0 > now - 5.0, "accepted an expired token: {c:?}");
    if let Some(nbf) = numeric(c, "nbf") {
        assert!(nbf - 300.0 <= now + 5.0, "accepted before nbf: {c:?}");
    }
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    let claim_url = c.get("serviceurl").and_then(Value::as_str).unwrap_or("");
    assert_eq!(norm(claim_url), norm(&service_url), "{c:?}");
    assert_eq!(claims.service_url, claim_url);
}

/// Teams activities with a valid token into `TeamsInteractions::handle`.
///
/// Input: the activity JSON (with [`REQUEST_ID`] / [`REQUEST_DIGEST`] placeholders); the
/// harness mints a valid token for its `serviceUrl`. Checks: the request changes only
/// through a click from Teams (`channelId` `msteams`) by the mapped reviewer in the allowed
/// tenant, in the conversation the card was posted to, whose data names this request and its
/// digest, with the verdict the click carries.
pub fn teams_request(data: &[u8]) {
    let env = teams_env();
    env.runtime.block_on(async {
        let pending = Pending::with_builder(Gate::builder().approver(CardRecorder)).await;
        let handler = TeamsInteractions::builder(pending.gate.clone(), teams_resolver())
            .authenticator(env.auth.clone())
            .allow_tenant(TEAMS_TENANT)
            .build()
            .expect("the Teams handler builds");
        let body = pending.substitute(&text(data));
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let service_url = str_at(&v, &["serviceUrl"]).unwrap_or(TEAMS_SERVICE_URL);
        let token = valid_token(env, service_url);
        let request = http::Request::post("/api/messages")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Bytes::from(body.clone()))
            .expect("the request builds");
        let before = pending.snapshot().await;
        let _ = handler.handle(request).await;
        let after = pending.snapshot().await;
        if after == before {
            return;
        }
        assert_eq!(str_at(&v, &["channelId"]), Some("msteams"), "{body}");
        let conversation = str_at(&v, &["conversation", "id"]).unwrap_or("");
        assert_eq!(
            conversation.split(';').next().map(str::trim),
            Some(TEAMS_CONVERSATION),
            "{body}"
        );
        assert_eq!(
            str_at(&v, &["from", "aadObjectId"]).map(str::to_ascii_lowercase),
            Some(TEAMS_REVIEWER.to_owned()),
            "{body}"
        );
        let tenants: Vec<&str> = [
            str_at(&v, &["conversation", "tenantId"]),
            str_at(&v, &["channelData", "tenant", "id"]),
        ]
        .into_iter()
        .flatten()
        .filter(|t| !t.is_empty())
        .collect();
        assert!(
            !tenants.is_empty() && tenants.iter().all(|t| t.eq_ignore_ascii_case(TEAMS_TENANT)),
            "{body}"
        );
        let card = match str_at(&v, &["type"]) {
            Some("invoke") => v.pointer("/value/action/data"),
            _ => v.get("value"),
        }
        .unwrap_or(&Value::Null);
        let card = CardData::from_json(card).expect("a click that changed the request parses");
        assert_eq!((card.request_id, card.digest), (pending.id, pending.digest));
        let verb = match str_at(&v, &["type"]) {
            Some("invoke") => str_at(&v, &["value", "action", "verb"]),
            _ => str_at(&v, &["value", "verdict"]),
        };
        match after.state {
            RequestState::Approved => assert_eq!(verb, Some("approve"), "{body}"),
            RequestState::Denied => assert_eq!(verb, Some("deny"), "{body}"),
            other => panic!("a Teams click left the request {other:?}: {body}"),
        }
    });
}

// ------------------------------------------------------------------------------------------
// Policy files.

fn probe_requests() -> Vec<ActionRequest> {
    vec![
        export(),
        ActionRequest::new("iam.role.grant", "aws://iam/role/admin")
            .params(json!({"role": "admin", "user": "mallory"})),
        ActionRequest::new("db.read", "db://staging/orders").params(json!({"rows": 10})),
        ActionRequest::new("", "").params(json!(null)),
    ]
}

/// Policy files into `RulePolicy::from_toml` (first byte even) or `from_json` (odd).
///
/// Checks: loading never panics; a loaded policy evaluates every probe request without
/// panicking; loading the same text again gives the same version hash and the same
/// decisions; a requirement never asks for zero approvers.
pub fn policy(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(source) = std::str::from_utf8(rest) else {
        return;
    };
    let load = |s: &str| {
        if mode % 2 == 0 {
            RulePolicy::from_toml(s)
        } else {
            RulePolicy::from_json(s)
        }
    };
    let Ok(first) = load(source) else {
        return;
    };
    let second = load(source).expect("a policy that loaded once loads again");
    assert_eq!(first.version(), second.version(), "unstable version hash");
    for request in probe_requests() {
        let a = first.evaluate(&request);
        let b = second.evaluate(&request);
        assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "decisions differ across reloads"
        );
        if let Ok(Decision::RequireApproval { requirement, .. }) = a {
            assert!(requirement.quorum >= 1, "a requirement with quorum 0");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Audit logs, proofs, checkpoints and grant tokens.

/// The origin of the sample log.
pub const LOG_ORIGIN: &str = "audit.fuzz.example/test";

/// The test signing key (fixed, so signatures and seeds are reproducible).
fn log_signer() -> Signer {
    Signer::new(
        LOG_ORIGIN,
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
    )
    .expect("the test key name is valid")
}

fn log_verifiers() -> Vec<Verifier> {
    vec![log_signer().verifier()]
}

/// A small signed log, as its lines: six events, a checkpoint after the third and after the
/// sixth. The only checkpoints ever signed with the test key are these two (and those of
/// [`sample_grant_token`]'s key, which signs no checkpoint).
pub struct SampleLog {
    /// Every line, entries and checkpoints, without newlines.
    pub lines: Vec<String>,
    /// The events as stored (canonical JSON), by `seq`.
    pub events: Vec<String>,
    /// The two signed checkpoints, (size, note).
    pub checkpoints: Vec<(Checkpoint, String)>,
}

/// Builds the [`SampleLog`] (deterministic).
pub fn sample_log() -> SampleLog {
    let signer = log_signer();
    let mut chain = LogChain::new(LOG_ORIGIN).expect("the origin is valid");
    let mut lines = Vec::new();
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    let t0 = "2026-01-05T10:00:00Z";
    let script = [
        json!({"type": "requested", "request_id": "r-1", "at": t0, "kind": "data.export"}),
        json!({"type": "policy_decided", "request_id": "r-1", "outcome": "require_approval"}),
        json!({"type": "reviewed", "request_id": "r-1", "decision": "approve", "by": "sam@example.com"}),
        json!({"type": "grant_consumed", "request_id": "r-1"}),
        json!({"type": "executed", "request_id": "r-1", "ok": true}),
        json!({"type": "requested", "request_id": "r-2", "note": "caf\u{e9} \u{202e} <b>"}),
    ];
    for (i, event) in script.iter().enumerate() {
        let entry = chain.append(event).expect("the sample event appends");
        lines.push(entry.line);
        if i == 2 || i == script.len() - 1 {
            let (cp, line) = chain.checkpoint(&[&signer]).expect("the checkpoint signs");
            let note = checkpoint_note(&line);
            checkpoints.push((cp, note));
            lines.push(line);
        }
    }
    // The events as the verifier releases them (canonical JSON), read back from the log.
    let verifier = LogVerifier::new(log_verifiers());
    let mut reader = VerifiedReader::new(&verifier);
    let text = lines.join("\n") + "\n";
    reader
        .push_bytes(text.as_bytes())
        .expect("the sample log verifies");
    while let Some(entry) = reader.next_verified() {
        events.push(entry.event);
    }
    assert_eq!(events.len(), script.len(), "every sample entry is released");
    SampleLog {
        lines,
        events,
        checkpoints,
    }
}

/// The signed note inside a checkpoint line (`{"checkpoint":"<note>"}`).
fn checkpoint_note(line: &str) -> String {
    let v: Value = serde_json::from_str(line).expect("a checkpoint line is JSON");
    str_at(&v, &["checkpoint"])
        .expect("a checkpoint line holds the note")
        .to_owned()
}

fn sample() -> &'static SampleLog {
    static SAMPLE: OnceLock<SampleLog> = OnceLock::new();
    SAMPLE.get_or_init(sample_log)
}

/// Checks that every entry a verifier released is the sample log's entry at that `seq`.
fn assert_authentic(reader: &mut VerifiedReader, input: &[u8]) {
    let sample = sample();
    while let Some(entry) = reader.next_verified() {
        let original = usize::try_from(entry.seq)
            .ok()
            .and_then(|i| sample.events.get(i));
        assert_eq!(
            Some(&entry.event),
            original,
            "the verifier released entry {} that was never signed, from {:?}",
            entry.seq,
            String::from_utf8_lossy(input)
        );
    }
}

/// Applies mutations to the sample log's lines, driven by `ops` (two bytes each): flip a
/// byte, delete, swap or duplicate a line, truncate, or insert a line of fuzz text.
fn mutate_log(ops: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = sample()
        .lines
        .iter()
        .map(|l| l.clone().into_bytes())
        .collect();
    let mut chunks = ops.chunks(2);
    while let Some(op) = chunks.next() {
        let (kind, arg) = (op[0], op.get(1).copied().unwrap_or(0) as usize);
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match kind % 6 {
            0 => {
                let line = &mut lines[arg % n];
                if !line.is_empty() {
                    let at = (arg * 31 + kind as usize) % line.len();
                    line[at] ^= 1 << (kind % 8);
                }
            }
            1 => {
                lines.remove(arg % n);
            }
            2 => lines.swap(arg % n, (arg + 1) % n),
            3 => {
                let copy = lines[arg % n].clone();
                lines.insert(arg % n, copy);
            }
            4 => {
                let line = &mut lines[arg % n];
                line.truncate(arg % (line.len() + 1));
            }
            _ => {
                // The remaining ops bytes become a line of their own.
                let rest: Vec<u8> = chunks.by_ref().flatten().copied().collect();
                lines.insert(arg % (n + 1), rest);
            }
        }
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    out
}

/// Audit logs fed to the verifier.
///
/// Input: first byte even, the rest is a log file; odd, the rest drives mutations of the
/// signed [`SampleLog`] (see `mutate_log`). Checks: `verify_reader` and `VerifiedReader`
/// never panic and agree on how many entries are verified, and every entry released as
/// verified is byte for byte the signed sample's entry at that position: whatever the edit,
/// deletion, reordering, truncation or insertion, nothing unsigned passes as verified.
pub fn audit_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let log = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        mutate_log(rest)
    };
    let verifiers = log_verifiers();
    let report = verify_reader(&log[..], &verifiers);
    let verifier = LogVerifier::new(verifiers);
    let mut reader = VerifiedReader::new(&verifier);
    let _ = reader.push_bytes(&log);
    assert_authentic(&mut reader, &log);
    let streamed = reader.finish();
    assert_authentic_count(&streamed);
    // The two differ by design after a problem: `verify_reader` still counts the entries a
    // later checkpoint covers, the streaming reader releases nothing after the first problem
    // (fuzz/regressions/audit_log/ holds such a log). They must agree on whether the log is
    // intact, and on its verified size when it is.
    if let Ok(report) = report {
        assert_eq!(
            report.is_ok(),
            streamed.is_ok(),
            "verify_reader and VerifiedReader disagree on whether the log is intact"
        );
        if report.is_ok() {
            assert_eq!(
                report.verified_size(),
                streamed.verified_size(),
                "verify_reader and VerifiedReader disagree on the verified size"
            );
        }
        if log == sample_bytes() {
            assert!(report.is_ok(), "the signed sample log does not verify");
            assert_eq!(report.verified_size(), sample().events.len() as u64);
        }
    }
}

fn assert_authentic_count(report: &approvals_audit::log::VerifyReport) {
    assert!(report.verified_size() <= sample().events.len() as u64);
}

/// The sample log as a file.
pub fn sample_bytes() -> Vec<u8> {
    (sample().lines.join("\n") + "\n").into_bytes()
}

/// Signed notes, checkpoints, inclusion and consistency proofs, and key strings.
///
/// Input: first byte selects the parser (mod 6), the rest is its text. Checks: nothing
/// panics; a parsed checkpoint round-trips through `to_text`; a checkpoint or note opened
/// with the test key is one the sample log signed; a verified inclusion proof shows a sample
/// event at its position; a verified consistency proof links two sample checkpoints.
pub fn audit_proofs(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let verifiers = log_verifiers();
    let sample = sample();
    let signed = |cp: &Checkpoint| sample.checkpoints.iter().any(|(c, _)| c == cp);
    match mode % 6 {
        0 => {
            if let Ok(cp) = Checkpoint::from_text(input) {
                let again = Checkpoint::from_text(&cp.to_text()).expect("to_text output parses");
                assert_eq!(again, cp, "checkpoint text does not round-trip");
            }
        }
        1 => {
            if let Ok(opened) = Checkpoint::open(input, &verifiers) {
                assert!(signed(&opened.checkpoint), "opened an unsigned checkpoint");
            }
        }
        2 => {
            if let Ok(opened) = open_note(input, &verifiers) {
                let signed_texts: Vec<String> = sample
                    .checkpoints
                    .iter()
                    .map(|(c, _)| c.to_text())
                    .collect();
                assert!(
                    signed_texts.contains(&opened.text),
                    "opened a note the test key never signed: {:?}",
                    opened.text
                );
            }
        }
        3 => {
            if let Ok(proof) = InclusionProof::from_json(input)
                && let Ok(opened) = proof.verify(&verifiers)
            {
                assert!(signed(&opened.checkpoint));
                let original = usize::try_from(proof.seq)
                    .ok()
                    .and_then(|i| sample.events.get(i));
                assert_eq!(Some(&proof.event), original, "proved an event never logged");
            }
        }
        4 => {
            if let Ok(proof) = serde_json::from_str::<ConsistencyProof>(input)
                && let Ok((old, new)) = proof.verify(&verifiers)
            {
                assert!(signed(&old) && signed(&new));
                assert!(old.size <= new.size, "consistency of a shrinking log");
            }
        }
        _ => {
            if let Ok(v) = Verifier::from_vkey(input) {
                let again = Verifier::from_vkey(&v.to_string()).expect("Display output parses");
                assert_eq!(again.key_id(), v.key_id());
                assert_eq!(again.name(), v.name());
            }
            let _ = Verifier::parse_list(input);
            if let Ok(s) = Signer::from_skey(input) {
                let again = Signer::from_skey(&s.to_skey()).expect("to_skey output parses");
                assert_eq!(again.key_id(), s.key_id());
            }
        }
    }
}

fn grant_signer() -> Signer {
    Signer::new(
        "grants.fuzz.example",
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]),
    )
    .expect("the test key name is valid")
}

fn grant_time(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .expect("a valid timestamp")
}

fn sample_claims() -> GrantClaims {
    let id = RequestId::parse("0190f5c2-7a3b-7cde-8f01-23456789abcd").expect("a valid id");
    let digest = export().digest();
    GrantClaims::builder(
        id,
        digest,
        grant_time(1_767_600_000),
        grant_time(1_767_600_900),
    )
    .approvers(["sam@example.com"])
    .issuer("gate.fuzz.example")
    .audience("exporter")
}

/// The one grant token the test grant key signs outside the structured mode.
pub fn sample_grant_token() -> String {
    sign_claims(sample_claims(), &grant_signer()).expect("the sample claims sign")
}

/// Grant tokens into `GrantTokenVerifier`.
///
/// Input: first byte mod 3: 0, the rest is a token; 1, the rest flips bytes of the sample
/// token (two bytes per flip: position, mask); 2, the rest is claims JSON that is signed
/// with the test key. Checks: a token opens only if it carries exactly claims the key signed
/// (mutations never yield other claims); signed claims open unchanged; `verify` accepts only
/// what `open` accepts, for the expected digest, inside its validity window.
pub fn grant_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = GrantTokenVerifier::new(&[grant_signer().verifier()]);
    let sample_token = sample_grant_token();
    let mut expected = sample_claims();
    expected.key = format!("{}+{:08x}", grant_signer().name(), grant_signer().key_id());
    let token = match mode % 3 {
        0 => text(rest),
        1 => {
            let mut bytes = sample_token.clone().into_bytes();
            for flip in rest.chunks(2) {
                if let [at, mask] = flip {
                    let i = usize::from(*at) * 7 % bytes.len();
                    bytes[i] ^= mask;
                }
            }
            text(&bytes)
        }
        _ => {
            let Ok(claims) = serde_json::from_slice::<GrantClaims>(rest) else {
                return;
            };
            let Ok(token) = sign_claims(claims.clone(), &grant_signer()) else {
                return;
            };
            let opened = verifier.open(&token).expect("freshly signed claims open");
            let mut signed = claims;
            signed.key.clone_from(&opened.key);
            assert_eq!(opened, signed, "signed claims came back changed");
            expected = signed;
            token
        }
    };
    let opened = verifier.open(&token);
    if let Ok(claims) = &opened {
        assert_eq!(
            claims, &expected,
            "a token opened with claims nobody signed"
        );
    }
    let at = expected.iat + chrono::TimeDelta::seconds(60);
    if let Ok(claims) = verifier.verify(&token, &expected.digest, at) {
        assert!(opened.is_ok());
        assert_eq!(claims.digest, expected.digest);
        assert!(at < claims.exp + chrono::TimeDelta::seconds(30));
    }
}

// ------------------------------------------------------------------------------------------
// The HTTP API and console.

/// The reviewer's API token (sam, in `security`).
pub const API_REVIEWER_TOKEN: &str = "apr_fuzz_reviewer_0123456789abcdef";
/// The token of dana, the human the agent acts for (may cancel, never approve).
pub const API_BEHALF_TOKEN: &str = "apr_fuzz_behalf_0123456789abcdef01";
/// The agent's token (may cancel its own request, never review).
pub const API_AGENT_TOKEN: &str = "apr_fuzz_agent_0123456789abcdef0123";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime builds")
    })
}

/// Replaced, in [`http_api`] requests, by the `name=value` of the last session cookie the
/// server set in this input.
pub const SESSION_COOKIE: &str = "SESSION_COOKIE";
/// Replaced, in [`http_api`] requests, by the last CSRF token the console rendered.
pub const CSRF_TOKEN: &str = "CSRF_TOKEN";

/// Arbitrary requests into `ReviewServer::handle` (API and console), with a gate on a memory
/// store.
///
/// Input: up to four requests separated by `\n===\n`, each `METHOD target\n`, header lines
/// `name: value\n`, an empty line, then the body. [`REQUEST_ID`] / [`REQUEST_DIGEST`] are
/// substituted everywhere, [`SESSION_COOKIE`] / [`CSRF_TOKEN`] by what earlier responses
/// set, so a console sign-in followed by a decision is reachable. Checks: the handler answers
/// (never panics); the request is approved or denied only if the input carries the
/// reviewer's token, cancelled only with the agent's or dana's, and nothing changes it
/// without a valid token.
pub fn http_api(data: &[u8]) {
    runtime().block_on(async {
        let pending = Pending::new().await;
        let server = ReviewServer::builder(pending.gate.clone())
            .tokens(
                Tokens::new()
                    .with_token(API_REVIEWER_TOKEN, reviewer())
                    .with_token(API_BEHALF_TOKEN, behalf())
                    .with_token(API_AGENT_TOKEN, Principal::agent("fuzz-agent")),
            )
            .build();
        let input = pending.substitute(&text(data));
        let before = pending.snapshot().await;
        let (mut cookie, mut csrf) = (String::new(), String::new());
        for part in input.split("\n===\n").take(4) {
            let part = part
                .replace(SESSION_COOKIE, &cookie)
                .replace(CSRF_TOKEN, &csrf);
            let Some(request) = parse_request(&part) else {
                continue;
            };
            let response = server.handle(request).await;
            if let Some(set) = response
                .headers()
                .get(http::header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                && let Some(pair) = set.split(';').next()
            {
                pair.trim().clone_into(&mut cookie);
            }
            let body = String::from_utf8_lossy(response.body());
            if let Some(at) = body.find(r#"name="csrf" value=""#) {
                let rest = &body[at + r#"name="csrf" value=""#.len()..];
                rest.split('"').next().unwrap_or("").clone_into(&mut csrf);
            }
        }
        let after = pending.snapshot().await;
        if after == before {
            return;
        }
        let has = |token: &str| input.contains(token);
        match after.state {
            RequestState::Approved | RequestState::Denied => assert!(
                has(API_REVIEWER_TOKEN),
                "reviewed without the reviewer's token: {input:?}"
            ),
            RequestState::Cancelled => assert!(
                has(API_AGENT_TOKEN) || has(API_BEHALF_TOKEN),
                "cancelled without the initiator's token: {input:?}"
            ),
            other => panic!("an API request left the request {other:?}: {input:?}"),
        }
    });
}

fn parse_request(input: &str) -> Option<http::Request<Bytes>> {
    let (head, body) = input.split_once("\n\n").unwrap_or((input, ""));
    let mut head_lines = head.lines();
    let (method, target) = head_lines.next()?.split_once(' ')?;
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).ok()?)
        .uri(target.trim());
    for line in head_lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            let value = http::HeaderValue::from_str(value.trim()).ok()?;
            builder = builder.header(name, value);
        }
    }
    builder.body(Bytes::from(body.to_owned())).ok()
}

// ------------------------------------------------------------------------------------------
// Seeds.

/// Seed inputs derived from the test keys (the sample log and its checkpoints and proofs, a
/// grant token), as `(target, file name, bytes)`. Static seeds (Slack and Teams payloads,
/// policies, API requests) are plain files under `fuzz/corpus/`; these are generated so they
/// stay valid, and `tests/fuzz_regressions.rs` checks the committed copies are current
/// (`FUZZ_WRITE_SEEDS=1` rewrites them).
pub fn generated_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let sample = sample();
    let with_mode = |mode: u8, body: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(body);
        v
    };
    let mut seeds = vec![
        (
            "audit_log",
            "sample-log".to_owned(),
            with_mode(0, &sample_bytes()),
        ),
        (
            "audit_log",
            "mutate-flip".to_owned(),
            with_mode(1, &[0, 3, 2, 1]),
        ),
        (
            "grant_token",
            "sample".to_owned(),
            with_mode(0, sample_grant_token().as_bytes()),
        ),
        ("grant_token", "flip".to_owned(), with_mode(1, &[40, 1])),
    ];
    let claims = serde_json::to_vec(&sample_claims()).expect("claims serialize");
    seeds.push(("grant_token", "claims".to_owned(), with_mode(2, &claims)));
    for (i, (cp, note)) in sample.checkpoints.iter().enumerate() {
        seeds.push((
            "audit_proofs",
            format!("checkpoint-text-{i}"),
            with_mode(0, cp.to_text().as_bytes()),
        ));
        seeds.push((
            "audit_proofs",
            format!("checkpoint-note-{i}"),
            with_mode(1, note.as_bytes()),
        ));
        seeds.push((
            "audit_proofs",
            format!("note-{i}"),
            with_mode(2, note.as_bytes()),
        ));
    }
    // An inclusion proof of entry 1 at the first checkpoint (size 3), and the consistency of
    // the two checkpoints, built from the leaves.
    let leaves: Vec<_> = sample
        .events
        .iter()
        .map(|e| approvals_audit::merkle::leaf_hash(e.as_bytes()))
        .collect();
    if let Ok(path) = approvals_audit::merkle::inclusion_proof(&leaves[..3], 1) {
        let proof = InclusionProof {
            seq: 1,
            event: sample.events[1].clone(),
            checkpoint: sample.checkpoints[0].1.clone(),
            path,
        };
        if let Ok(json) = proof.to_json() {
            seeds.push((
                "audit_proofs",
                "inclusion".to_owned(),
                with_mode(3, json.as_bytes()),
            ));
        }
    }
    if let Ok(proof) = approvals_audit::merkle::consistency_proof(&leaves, 3) {
        let proof = json!({
            "old_checkpoint": sample.checkpoints[0].1,
            "new_checkpoint": sample.checkpoints[1].1,
            "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        });
        seeds.push((
            "audit_proofs",
            "consistency".to_owned(),
            // Canonical, so the seed is the same whatever serde_json features the build has.
            with_mode(4, &approvals_core::request::canonical_json(&proof)),
        ));
    }
    let vkey = log_signer().verifier().to_string();
    seeds.push((
        "audit_proofs",
        "vkey".to_owned(),
        with_mode(5, vkey.as_bytes()),
    ));
    seeds.push((
        "audit_proofs",
        "skey".to_owned(),
        with_mode(5, log_signer().to_skey().as_bytes()),
    ));
    seeds
}
