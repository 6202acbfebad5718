//! Loopback fakes of the Microsoft endpoints the Teams channel talks to, for tests: the identity
//! token endpoint ([`FakeTokenEndpoint`]), the Bot Framework OpenID metadata and JWKS endpoints
//! with a JWT minting helper ([`FakeOpenId`], [`TokenSpec`]), and the Bot Connector
//! ([`FakeConnector`], which also serves the Microsoft Graph reads of the conversations it
//! holds). Each listens on `127.0.0.1` on a random port and stops when dropped.
//!
//! Enabled by the `fake` feature. Never use it in production: the RSA keys it signs with are
//! generated per process without any protection.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Map, Value, json};

use crate::auth::BOT_FRAMEWORK_ISSUER;

/// The prefix of the Microsoft Graph access tokens [`FakeTokenEndpoint`] issues (for the scope
/// [`GRAPH_SCOPE`](crate::graph::GRAPH_SCOPE)); the fake Graph accepts only these, and the
/// fake Bot Connector refuses them.
pub const GRAPH_TOKEN_PREFIX: &str = "fake-graph-token-";

/// Bits of the RSA keys the fakes generate.
pub const FAKE_RSA_BITS: usize = 2048;

/// `kid` of the key [`FakeOpenId::start`] publishes.
pub const DEFAULT_KID: &str = "fake-key-1";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Process-wide pool of generated keys: key generation is the slow part of these tests, so
/// each slot is generated once per test binary.
fn pool_key(slot: usize) -> Arc<RsaPrivateKey> {
    static POOL: OnceLock<Mutex<Vec<Arc<RsaPrivateKey>>>> = OnceLock::new();
    let mut pool = lock(POOL.get_or_init(|| Mutex::new(Vec::new())));
    while pool.len() <= slot {
        pool.push(Arc::new(generate_key()));
    }
    pool[slot].clone()
}

/// Generates a [`FAKE_RSA_BITS`]-bit key from four primes: verifiers only see `n` and `e`, and
/// finding four 512-bit primes is several times faster than two 1024-bit ones, which keeps
/// debug-build tests quick. Test keys only.
fn generate_key() -> RsaPrivateKey {
    use num_bigint_dig::RandPrime as _;
    const PRIMES: usize = 4;
    let mut rng = rand::thread_rng();
    let e = rsa::BigUint::from(65_537u32);
    loop {
        let primes: Vec<rsa::BigUint> = (0..PRIMES)
            .map(|_| rng.gen_prime(FAKE_RSA_BITS / PRIMES))
            .collect();
        let distinct = primes
            .iter()
            .enumerate()
            .all(|(i, p)| primes[..i].iter().all(|q| q != p));
        let n = primes
            .iter()
            .fold(rsa::BigUint::from(1u32), |acc, p| acc * p);
        if !distinct || n.bits() != FAKE_RSA_BITS {
            continue;
        }
        if let Ok(key) = RsaPrivateKey::from_primes(primes, e.clone())
            && key.validate().is_ok()
        {
            return key;
        }
    }
}

/// Generates the keys for the default key, the unpublished key and `extra` rotations now, off
/// the async runtime, so that later [`FakeOpenId::publish_key`] calls return at once (useful when
/// a test measures a refetch interval).
pub async fn warm_key_pool(extra: usize) {
    let _ = tokio::task::spawn_blocking(move || pool_key(UNPUBLISHED_SLOT + extra)).await;
}

/// A request as a fake server saw it.
#[derive(Clone, Debug)]
struct FakeRequest {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

type Handler = Arc<dyn Fn(FakeRequest) -> http::Response<Full<Bytes>> + Send + Sync>;

/// A running loopback HTTP/1.1 server; aborted on drop.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(handler: Handler) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let request = FakeRequest {
                                method: parts.method,
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().unwrap_or_default().to_owned(),
                                headers: parts.headers,
                                body,
                            };
                            Ok::<_, Infallible>(handler(request))
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(Server { addr, task })
}

fn json_response(status: StatusCode, body: &Value) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

/// A fake Microsoft identity token endpoint for the client-credentials grant.
///
/// Issues `fake-access-token-N` to the configured app id and secret; answers 401
/// `invalid_client` to anything else.
pub struct FakeTokenEndpoint {
    server: Server,
    state: Arc<Mutex<TokenState>>,
}

struct TokenState {
    app_id: String,
    secret: String,
    expires_in: u64,
    requests: usize,
    issued: Vec<String>,
    last_form: Vec<(String, String)>,
    failures: VecDeque<u16>,
}

impl FakeTokenEndpoint {
    /// Starts the endpoint, accepting the given credentials. Tokens last 3600 s by default.
    pub async fn start(app_id: &str, secret: &str) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(TokenState {
            app_id: app_id.to_owned(),
            secret: secret.to_owned(),
            expires_in: 3600,
            requests: 0,
            issued: Vec::new(),
            last_form: Vec::new(),
            failures: VecDeque::new(),
        }));
        let handler_state = state.clone();
        let server = serve(Arc::new(move |req| token_handler(&handler_state, req))).await?;
        Ok(Self { server, state })
    }

    /// The token URL to configure (`TokenConfig::token_url`).
    pub fn token_url(&self) -> String {
        format!(
            "http://{}/botframework.com/oauth2/v2.0/token",
            self.server.addr
        )
    }

    /// The token URL of a tenant (`https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`
    /// in Microsoft's cloud), where Microsoft Graph tokens are requested.
    pub fn tenant_token_url(&self, tenant_id: &str) -> String {
        format!("http://{}/{tenant_id}/oauth2/v2.0/token", self.server.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        lock(&self.state).requests
    }

    /// Tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// The form fields of the last request.
    pub fn last_form(&self) -> Vec<(String, String)> {
        lock(&self.state).last_form.clone()
    }

    /// Sets `expires_in` of tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        lock(&self.state).expires_in = secs;
    }

    /// Answers the next `times` requests with `status`.
    pub fn fail_next(&self, status: u16, times: usize) {
        let mut state = lock(&self.state);
        state.failures.extend(std::iter::repeat_n(status, times));
    }
}

fn token_handler(state: &Mutex<TokenState>, req: FakeRequest) -> http::Response<Full<Bytes>> {
    let mut state = lock(state);
    state.requests += 1;
    if req.method != Method::POST || !req.path.ends_with("/oauth2/v2.0/token") {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"}));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    state.last_form = form.clone();
    if let Some(status) = state.failures.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_response(status, &json!({"error": "temporarily_unavailable"}));
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("client_credentials") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "expected client_credentials"}),
        );
    }
    if field("client_id") != Some(state.app_id.as_str())
        || field("client_secret") != Some(state.secret.as_str())
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
        );
    }
    let graph = field("scope") == Some(crate::graph::GRAPH_SCOPE);
    if field("scope") != Some(crate::token::BOT_FRAMEWORK_SCOPE) && !graph {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_scope", "error_description": "unexpected scope"}),
        );
    }
    if graph && req.path.starts_with("/botframework.com/") {
        // An application token for Graph comes from the tenant that granted the permission.
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": "AADSTS90009: request a Microsoft Graph token from the tenant's token endpoint"}),
        );
    }
    let token = if graph {
        format!("{GRAPH_TOKEN_PREFIX}{}", state.issued.len() + 1)
    } else {
        format!("fake-access-token-{}", state.issued.len() + 1)
    };
    state.issued.push(token.clone());
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": state.expires_in,
            "ext_expires_in": state.expires_in,
            "access_token": token,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// OpenID metadata + JWKS

/// A fake of the Bot Framework OpenID metadata and JWKS endpoints, holding RSA keys generated
/// at test time, and minting tokens signed with them.
pub struct FakeOpenId {
    server: Server,
    state: Arc<Mutex<OpenIdState>>,
}

struct PublishedKey {
    kid: String,
    key: Arc<RsaPrivateKey>,
    endorsements: Vec<String>,
}

struct OpenIdState {
    published: Vec<PublishedKey>,
    next_slot: usize,
    metadata_requests: usize,
    jwks_requests: usize,
    unavailable: bool,
}

/// Pool slot of the key [`Signer::UnpublishedKey`] signs with (never published).
const UNPUBLISHED_SLOT: usize = 1;

impl FakeOpenId {
    /// Starts the endpoints with one published key, [`DEFAULT_KID`], endorsed for `msteams`.
    pub async fn start() -> std::io::Result<Self> {
        let key = tokio::task::spawn_blocking(|| pool_key(0))
            .await
            .map_err(std::io::Error::other)?;
        let state = Arc::new(Mutex::new(OpenIdState {
            published: vec![PublishedKey {
                kid: DEFAULT_KID.to_owned(),
                key,
                endorsements: vec!["msteams".to_owned()],
            }],
            next_slot: 2,
            metadata_requests: 0,
            jwks_requests: 0,
            unavailable: false,
        }));
        let handler_state = state.clone();
        let addr_cell: Arc<OnceLock<SocketAddr>> = Arc::new(OnceLock::new());
        let handler_addr = addr_cell.clone();
        let server = serve(Arc::new(move |req| {
            openid_handler(&handler_state, handler_addr.get().copied(), req)
        }))
        .await?;
        let _ = addr_cell.set(server.addr);
        Ok(Self { server, state })
    }

    /// The metadata URL to configure (`AuthConfig::openid_metadata_url`).
    pub fn metadata_url(&self) -> String {
        format!(
            "http://{}/v1/.well-known/openidconfiguration",
            self.server.addr
        )
    }

    /// Metadata document requests received.
    pub fn metadata_requests(&self) -> usize {
        lock(&self.state).metadata_requests
    }

    /// JWKS requests received.
    pub fn jwks_requests(&self) -> usize {
        lock(&self.state).jwks_requests
    }

    /// Makes both endpoints answer 503 (`true`) or work again (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        lock(&self.state).unavailable = unavailable;
    }

    /// Generates a new key and publishes it under `kid` with the given endorsements (a key
    /// rotation).
    pub async fn publish_key(&self, kid: &str, endorsements: &[&str]) {
        let slot = {
            let mut state = lock(&self.state);
            state.next_slot += 1;
            state.next_slot - 1
        };
        let key = match tokio::task::spawn_blocking(move || pool_key(slot)).await {
            Ok(key) => key,
            Err(e) => panic!("key generation task failed: {e}"),
        };
        lock(&self.state).published.push(PublishedKey {
            kid: kid.to_owned(),
            key,
            endorsements: endorsements.iter().map(|e| (*e).to_owned()).collect(),
        });
    }

    /// Stops publishing the key `kid`.
    pub fn unpublish_key(&self, kid: &str) {
        lock(&self.state).published.retain(|k| k.kid != kid);
    }

    /// The DER (SubjectPublicKeyInfo) encoding of a published public key, for key-confusion
    /// attacks (HS256 with the public key as the HMAC secret).
    pub fn public_key_der(&self, kid: &str) -> Option<Vec<u8>> {
        use rsa::pkcs8::EncodePublicKey as _;
        let state = lock(&self.state);
        let key = state.published.iter().find(|k| k.kid == kid)?;
        RsaPublicKey::from(key.key.as_ref())
            .to_public_key_der()
            .ok()
            .map(|d| d.as_bytes().to_vec())
    }

    /// The modulus (big-endian bytes) of a published key.
    pub fn public_key_modulus(&self, kid: &str) -> Option<Vec<u8>> {
        let state = lock(&self.state);
        let key = state.published.iter().find(|k| k.kid == kid)?;
        Some(key.key.n().to_bytes_be())
    }

    /// Mints a compact JWS from `spec`.
    ///
    /// [`Signer::Published`] signs with the published key named by the header's `kid`, or with
    /// [`DEFAULT_KID`] when the header has none or names an unknown key.
    pub fn mint(&self, spec: &TokenSpec) -> String {
        let header = URL_SAFE_NO_PAD.encode(Value::Object(spec.header.clone()).to_string());
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(spec.claims.clone()).to_string());
        let signing_input = format!("{header}.{payload}");
        let signature: Vec<u8> = match &spec.signer {
            Signer::Published => {
                let kid = spec.header.get("kid").and_then(Value::as_str);
                let key = {
                    let state = lock(&self.state);
                    state
                        .published
                        .iter()
                        .find(|k| Some(k.kid.as_str()) == kid)
                        .or_else(|| state.published.iter().find(|k| k.kid == DEFAULT_KID))
                        .or_else(|| state.published.first())
                        .map(|k| k.key.clone())
                };
                let key = key.unwrap_or_else(|| pool_key(0));
                rs256(&key, signing_input.as_bytes())
            }
            Signer::UnpublishedKey => rs256(&pool_key(UNPUBLISHED_SLOT), signing_input.as_bytes()),
            Signer::Hmac(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, signing_input.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            Signer::Unsigned => Vec::new(),
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn rs256(key: &RsaPrivateKey, message: &[u8]) -> Vec<u8> {
    RsaSigningKey::<Sha256>::new(key.clone())
        .sign(message)
        .to_vec()
}

fn openid_handler(
    state: &Mutex<OpenIdState>,
    addr: Option<SocketAddr>,
    req: FakeRequest,
) -> http::Response<Full<Bytes>> {
    let mut state = lock(state);
    let Some(addr) = addr else {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({}));
    };
    match req.path.as_str() {
        "/v1/.well-known/openidconfiguration" => {
            state.metadata_requests += 1;
            if state.unavailable {
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({}));
            }
            json_response(
                StatusCode::OK,
                &json!({
                    "issuer": BOT_FRAMEWORK_ISSUER,
                    "authorization_endpoint": "https://invalid.example/authorize",
                    "jwks_uri": format!("http://{addr}/v1/.well-known/keys"),
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                }),
            )
        }
        "/v1/.well-known/keys" => {
            state.jwks_requests += 1;
            if state.unavailable {
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({}));
            }
            let keys: Vec<Value> = state
                .published
                .iter()
                .map(|k| {
                    json!({
                        "kty": "RSA",
                        "use": "sig",
                        "kid": k.kid,
                        "n": URL_SAFE_NO_PAD.encode(k.key.n().to_bytes_be()),
                        "e": URL_SAFE_NO_PAD.encode(k.key.e().to_bytes_be()),
                        "endorsements": k.endorsements,
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "keys": keys }))
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({})),
    }
}

/// How [`FakeOpenId::mint`] signs a token.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Signer {
    /// RS256 with a published key (see [`FakeOpenId::mint`]).
    Published,
    /// RS256 with a key that is never published.
    UnpublishedKey,
    /// HMAC-SHA256 with the given secret (whatever the header's `alg` says).
    Hmac(Vec<u8>),
    /// An empty signature.
    Unsigned,
}

/// What to put in a minted token: header, claims and signer. Start from
/// [`TokenSpec::valid`] and change one thing per attack.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
    /// How to sign.
    pub signer: Signer,
}

impl TokenSpec {
    /// A token the Bot Connector would send to `app_id` for an activity from `service_url`:
    /// RS256 with [`DEFAULT_KID`], issuer `https://api.botframework.com`, valid from a minute
    /// ago for an hour.
    pub fn valid(app_id: &str, service_url: &str) -> Self {
        let now = unix_now();
        let mut header = Map::new();
        header.insert("alg".into(), json!("RS256"));
        header.insert("kid".into(), json!(DEFAULT_KID));
        header.insert("typ".into(), json!("JWT"));
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(BOT_FRAMEWORK_ISSUER));
        claims.insert("aud".into(), json!(app_id));
        claims.insert("serviceurl".into(), json!(service_url));
        claims.insert("nbf".into(), json!(now - 60));
        claims.insert("exp".into(), json!(now + 3600));
        Self {
            header,
            claims,
            signer: Signer::Published,
        }
    }

    /// Sets a header field.
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.to_owned(), value);
        self
    }

    /// Removes a header field.
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// Sets a claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.to_owned(), value);
        self
    }

    /// Removes a claim.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets the signer.
    pub fn signed_with(mut self, signer: Signer) -> Self {
        self.signer = signer;
        self
    }
}

/// Seconds since the Unix epoch, for building `exp`/`nbf` claims.
pub fn now_unix() -> i64 {
    unix_now()
}

// ---------------------------------------------------------------------------------------------
// Bot Connector

/// A request the fake Bot Connector received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedCall {
    /// `POST` (send) or `PUT` (update).
    pub method: String,
    /// Decoded conversation id from the path.
    pub conversation_id: String,
    /// Decoded activity id from the path (updates).
    pub activity_id: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body (`null` if not JSON).
    pub body: Value,
    /// The status the fake answered.
    pub status: u16,
}

/// A fake Bot Connector: records sends and updates, and can be told to fail.
pub struct FakeConnector {
    server: Server,
    state: Arc<Mutex<ConnectorState>>,
}

struct Scripted {
    status: u16,
    retry_after: Option<String>,
}

struct ConnectorState {
    calls: Vec<RecordedCall>,
    script: VecDeque<Scripted>,
    revoked: HashSet<String>,
    next_id: u64,
    held: Vec<HeldActivity>,
    bot_app_id: String,
    team_channels: HashSet<(String, String)>,
    graph_requests: usize,
}

/// A message the fake Bot Connector holds: what the conversation shows now, the last update
/// applied.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HeldActivity {
    /// The activity id the fake assigned when it was posted.
    pub id: String,
    /// The conversation it was posted to.
    pub conversation_id: String,
    /// The activity as last sent (posted, then replaced by each update), with its `id`.
    pub activity: Value,
    /// The app that posted it (Graph's `from.application.id`).
    pub app_id: String,
    /// When it was posted.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl FakeConnector {
    /// Starts the fake.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(ConnectorState {
            calls: Vec::new(),
            script: VecDeque::new(),
            revoked: HashSet::new(),
            next_id: 1,
            held: Vec::new(),
            bot_app_id: String::new(),
            team_channels: HashSet::new(),
            graph_requests: 0,
        }));
        let handler_state = state.clone();
        let server = serve(Arc::new(move |req| connector_handler(&handler_state, req))).await?;
        Ok(Self { server, state })
    }

    /// The `serviceUrl` to use (with a trailing slash, as Teams sends it).
    pub fn service_url(&self) -> String {
        format!("http://{}/amer/", self.server.addr)
    }

    /// Answers the next `times` requests with `status` and, if given, a `Retry-After` header.
    pub fn fail_next(&self, status: u16, times: usize, retry_after: Option<&str>) {
        let mut state = lock(&self.state);
        for _ in 0..times {
            state.script.push_back(Scripted {
                status,
                retry_after: retry_after.map(str::to_owned),
            });
        }
    }

    /// Answers 401 to requests bearing this access token.
    pub fn revoke_token(&self, token: &str) {
        lock(&self.state).revoked.insert(token.to_owned());
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.state).calls.clone()
    }

    /// Successful sends (`POST`), in order.
    pub fn posted(&self) -> Vec<RecordedCall> {
        self.successful("POST")
    }

    /// Successful updates (`PUT`), in order.
    pub fn updated(&self) -> Vec<RecordedCall> {
        self.successful("PUT")
    }

    /// Every message posted so far, in posting order, as the conversation shows it now
    /// (updates applied).
    pub fn activities(&self) -> Vec<HeldActivity> {
        lock(&self.state).held.clone()
    }

    /// The app id of the bot posting through the fake: Microsoft Graph names it as the
    /// sender (`from.application.id`) of the messages posted from now on.
    pub fn set_bot_app_id(&self, app_id: &str) {
        lock(&self.state).bot_app_id = app_id.to_owned();
    }

    /// Makes `channel_id` (a conversation id) a channel of the team `team_id` for Microsoft
    /// Graph (`/teams/{team_id}/channels/{channel_id}/messages`; other pairs are 404).
    pub fn add_team_channel(&self, team_id: &str, channel_id: &str) {
        lock(&self.state)
            .team_channels
            .insert((team_id.to_owned(), channel_id.to_owned()));
    }

    /// Posts `activity` into `conversation_id` as another app would (Graph names `app_id` as
    /// its sender); returns its id. For tests of what must not be mistaken for the bot's own
    /// messages.
    pub fn post_as_another_app(
        &self,
        conversation_id: &str,
        app_id: &str,
        activity: Value,
    ) -> String {
        let mut state = lock(&self.state);
        let id = format!("activity-{}", state.next_id);
        state.next_id += 1;
        let mut activity = activity;
        if let Some(fields) = activity.as_object_mut() {
            fields.insert("id".into(), json!(id));
        }
        state.held.push(HeldActivity {
            id: id.clone(),
            conversation_id: conversation_id.to_owned(),
            activity,
            app_id: app_id.to_owned(),
            created_at: chrono::Utc::now(),
        });
        id
    }

    /// The Microsoft Graph base URL serving the conversations the fake holds
    /// (`http://127.0.0.1:port/v1.0/`).
    pub fn graph_url(&self) -> String {
        format!("http://{}/v1.0/", self.server.addr)
    }

    /// Microsoft Graph requests received.
    pub fn graph_requests(&self) -> usize {
        lock(&self.state).graph_requests
    }

    fn successful(&self, method: &str) -> Vec<RecordedCall> {
        lock(&self.state)
            .calls
            .iter()
            .filter(|c| c.method == method && (200..300).contains(&c.status))
            .cloned()
            .collect()
    }
}

fn connector_handler(
    state: &Mutex<ConnectorState>,
    req: FakeRequest,
) -> http::Response<Full<Bytes>> {
    let mut state = lock(state);
    if req.path.starts_with("/v1.0/") {
        return graph_handler(&mut state, &req);
    }
    let segments: Vec<String> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    // /amer/v3/conversations/{id}/activities[/{activityId}]
    let parsed = match segments.as_slice() {
        [_, v3, c, conv, a] if v3 == "v3" && c == "conversations" && a == "activities" => {
            Some((conv.clone(), None))
        }
        [_, v3, c, conv, a, id] if v3 == "v3" && c == "conversations" && a == "activities" => {
            Some((conv.clone(), Some(id.clone())))
        }
        _ => None,
    };
    let authorization = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let (conversation_id, activity_id) = parsed.clone().unwrap_or_default();
    let mut record = RecordedCall {
        method: req.method.to_string(),
        conversation_id,
        activity_id,
        authorization: authorization.clone(),
        body,
        status: 0,
    };

    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    // A Graph token's audience is Microsoft Graph, not the Bot Connector.
    let response = if token.is_empty()
        || state.revoked.contains(token)
        || token.starts_with(GRAPH_TOKEN_PREFIX)
    {
        json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": "Unauthorized", "message": "Authorization has been denied for this request."}}),
        )
    } else if let Some(scripted) = state.script.pop_front() {
        let status =
            StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(
            status,
            &json!({"error": {"code": "ServiceError", "message": "scripted failure"}}),
        );
        if let Some(retry_after) = scripted
            .retry_after
            .and_then(|r| http::HeaderValue::from_str(&r).ok())
        {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after);
        }
        response
    } else {
        match (&req.method, &parsed) {
            (&Method::POST, Some((conversation, None))) => {
                let id = format!("activity-{}", state.next_id);
                state.next_id += 1;
                let mut activity = record.body.clone();
                if let Some(fields) = activity.as_object_mut() {
                    fields.insert("id".into(), json!(id));
                }
                let app_id = state.bot_app_id.clone();
                state.held.push(HeldActivity {
                    id: id.clone(),
                    conversation_id: conversation.clone(),
                    activity,
                    app_id,
                    created_at: chrono::Utc::now(),
                });
                json_response(StatusCode::CREATED, &json!({ "id": id }))
            }
            (&Method::PUT, Some((conversation, Some(id)))) => {
                let mut activity = record.body.clone();
                if let Some(fields) = activity.as_object_mut() {
                    fields.insert("id".into(), json!(id));
                }
                if let Some(held) = state
                    .held
                    .iter_mut()
                    .find(|h| &h.id == id && &h.conversation_id == conversation)
                {
                    held.activity = activity;
                }
                json_response(StatusCode::OK, &json!({ "id": id }))
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": {"code": "NotFound", "message": "no such route"}}),
            ),
        }
    };
    record.status = response.status().as_u16();
    state.calls.push(record);
    response
}

/// Microsoft Graph's list of channel messages (`/v1.0/teams/{team}/channels/{channel}/messages`)
/// and chat messages (`/v1.0/chats/{chat}/messages`) over the held activities: newest first,
/// `$top` (default 20, at most 50) with `@odata.nextLink` paging, and for chats
/// `$filter=createdDateTime gt {time}`. Bot messages carry their cards as attachments whose
/// `content` is the card's JSON as a string, as Graph returns them.
fn graph_handler(state: &mut ConnectorState, req: &FakeRequest) -> http::Response<Full<Bytes>> {
    state.graph_requests += 1;
    let error = |status: StatusCode, code: &str, message: &str| {
        json_response(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    };
    let token = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !token.starts_with(GRAPH_TOKEN_PREFIX) || state.revoked.contains(token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    }
    if req.method != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequest",
            "only GET is served",
        );
    }
    let segments: Vec<String> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let (conversation, chat) = match segments.as_slice() {
        [_, t, team, c, channel, m] if t == "teams" && c == "channels" && m == "messages" => {
            if !state
                .team_channels
                .contains(&(team.clone(), channel.clone()))
            {
                return error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "No team or channel found.",
                );
            }
            (channel.clone(), false)
        }
        [_, c, chat, m] if c == "chats" && m == "messages" => (chat.clone(), true),
        _ => return error(StatusCode::NOT_FOUND, "NotFound", "Resource not found."),
    };
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let top = match param("$top").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=50).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "$top must be 1 to 50.",
            );
        }
    };
    let skip = param("$skiptoken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let after = match param("$filter") {
        None => None,
        Some(f) if chat => match f
            .strip_prefix("createdDateTime gt ")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => Some(t.with_timezone(&chrono::Utc)),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Unsupported $filter.",
                );
            }
        },
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Query option 'Filter' is not allowed.",
            );
        }
    };
    let mut messages: Vec<&HeldActivity> = state
        .held
        .iter()
        .filter(|h| h.conversation_id == conversation)
        .filter(|h| after.is_none_or(|t| h.created_at > t))
        .collect();
    messages.reverse();
    let page: Vec<Value> = messages
        .iter()
        .skip(skip)
        .take(top)
        .map(|h| graph_message(h, &conversation, chat))
        .collect();
    let mut body = json!({"value": page});
    if skip + top < messages.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "$skiptoken") {
            next.append_pair(k, v);
        }
        next.append_pair("$skiptoken", &(skip + top).to_string());
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        body["@odata.nextLink"] = json!(format!("http://{host}{}?{}", req.path, next.finish()));
    }
    json_response(StatusCode::OK, &body)
}

/// A held activity as a Graph `chatMessage`.
fn graph_message(held: &HeldActivity, conversation: &str, chat: bool) -> Value {
    let attachments: Vec<Value> = held.activity["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "id": format!("{}-{i}", held.id),
                "contentType": a["contentType"],
                "contentUrl": null,
                "content": a["content"].to_string(),
                "name": null,
                "thumbnailUrl": null,
            })
        })
        .collect();
    let content = if attachments.is_empty() {
        held.activity["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        attachments
            .iter()
            .map(|a| {
                format!(
                    "<attachment id=\"{}\"></attachment>",
                    a["id"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    let at = held
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut message = json!({
        "id": held.id,
        "replyToId": null,
        "etag": "1",
        "messageType": "message",
        "createdDateTime": at,
        "lastModifiedDateTime": at,
        "deletedDateTime": null,
        "subject": null,
        "importance": "normal",
        "locale": "en-us",
        "from": {
            "application": {
                "@odata.type": "#microsoft.graph.teamworkApplicationIdentity",
                "id": held.app_id,
                "displayName": "Approvals",
                "applicationIdentityType": "bot",
            },
            "device": null,
            "user": null,
        },
        "body": {"contentType": "html", "content": content},
        "attachments": attachments,
        "mentions": [],
        "reactions": [],
    });
    if chat {
        message["chatId"] = json!(conversation);
    } else {
        message["channelIdentity"] = json!({"channelId": conversation});
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%3a%"), "a/b:%");
        assert_eq!(percent_decode("19:x@thread;m=1"), "19:x@thread;m=1");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
