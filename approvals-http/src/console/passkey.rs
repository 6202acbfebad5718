//! Passkeys in the console: reviewers register them, and approve requests whose rule says
//! `step_up = "passkey"` with a fresh WebAuthn assertion bound to the request and its digest
//! ([`approvals_core::step_up`]).
//!
//! WebAuthn itself (options, attestation, signature, counter and user-verification checks) is
//! `webauthn-rs`'s. What is ours is the challenge: the library draws a random one, and the
//! step-up ceremony replaces it with `step_up::challenge(request id, digest, nonce)` for a
//! fresh random nonce, in the options sent to the browser and in the state the library checks
//! the answer against, so the assertion is of this action and no other. Each ceremony is kept
//! server-side, bound to the session, the reviewer, the request and the digest, and used once.
//!
//! The console pages stay script-free except for `/console/passkey.js`, which only calls
//! `navigator.credentials` and posts the result here (the Content-Security-Policy allows
//! scripts from this origin only).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approvals_core::lifecycle::Review;
use approvals_core::step_up::{StepUpProof, challenge};
use approvals_core::{Digest, Principal, RequestId, ReviewError, identity};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Response, StatusCode, header};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use webauthn_rs::prelude::{
    COSEKeyType, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use super::{CONSOLE_CHANNEL, Viewer, same_origin, viewer};
use crate::html::escape;
use crate::problem::Problem;
use crate::requests::check_reason;
use crate::shared::{Shared, json_response};

/// How long a started ceremony waits for the browser's answer.
const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// The most ceremonies kept at once (each is one click away from being used).
const MAX_CEREMONIES: usize = 10_000;
/// The most passkeys one reviewer may register.
pub const MAX_PASSKEYS_PER_REVIEWER: usize = 10;
/// Longest passkey name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// How soon after signing in a reviewer may register a passkey, by default.
pub const DEFAULT_REGISTRATION_WINDOW: Duration = Duration::from_secs(600);
/// Bytes of the one-time nonce in each step-up challenge.
const NONCE_BYTES: usize = 32;

/// Why passkeys cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The registry file cannot be read or written.
    #[error("passkey registry {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The console's public URL cannot be a WebAuthn relying party.
    #[error("passkeys need the console's public URL with a host name (not an IP address): {0}")]
    RelyingParty(String),
}

/// One registered passkey.
#[derive(Clone, Serialize, Deserialize)]
struct Registered {
    /// The reviewer's canonical id when it was registered.
    reviewer: String,
    /// What the reviewer called it.
    name: String,
    registered_at: DateTime<Utc>,
    passkey: Passkey,
}

/// The passkeys reviewers registered, by reviewer (compared as
/// [`identity::identity_key`]), kept in memory and, when given a file, written to it on each
/// change (the file holds public keys only).
pub struct PasskeyRegistry {
    file: Option<PathBuf>,
    by_reviewer: Mutex<HashMap<String, Vec<Registered>>>,
}

impl std::fmt::Debug for PasskeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyRegistry")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Default for PasskeyRegistry {
    fn default() -> Self {
        Self::in_memory()
    }
}

impl PasskeyRegistry {
    /// A registry that lasts as long as the process (tests, demos).
    pub fn in_memory() -> Self {
        PasskeyRegistry {
            file: None,
            by_reviewer: Mutex::new(HashMap::new()),
        }
    }

    /// A registry kept in `path` (JSON), loaded now if the file exists.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, PasskeyError> {
        let path = path.as_ref().to_path_buf();
        let fail = |message: String| PasskeyError::File {
            path: path.clone(),
            message,
        };
        let loaded: Vec<Registered> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        let mut by_reviewer: HashMap<String, Vec<Registered>> = HashMap::new();
        for r in loaded {
            by_reviewer
                .entry(identity::identity_key(&r.reviewer))
                .or_default()
                .push(r);
        }
        Ok(PasskeyRegistry {
            file: Some(path),
            by_reviewer: Mutex::new(by_reviewer),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Registered>>> {
        self.by_reviewer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn of(&self, reviewer: &Principal) -> Vec<Registered> {
        self.lock()
            .get(&identity::identity_key(&reviewer.id))
            .cloned()
            .unwrap_or_default()
    }

    /// How many passkeys `reviewer` has registered.
    pub fn count(&self, reviewer: &Principal) -> usize {
        self.of(reviewer).len()
    }

    fn add(&self, reviewer: &Principal, registered: Registered) -> Result<(), PasskeyError> {
        let mut map = self.lock();
        let mine = map.entry(identity::identity_key(&reviewer.id)).or_default();
        mine.push(registered);
        self.save(&map)
    }

    /// Records the authenticator's new counter after an accepted assertion.
    fn update(
        &self,
        reviewer: &Principal,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), PasskeyError> {
        let mut map = self.lock();
        let mut changed = false;
        if let Some(mine) = map.get_mut(&identity::identity_key(&reviewer.id)) {
            for r in mine.iter_mut() {
                changed |= r.passkey.update_credential(result).unwrap_or(false);
            }
        }
        if changed { self.save(&map) } else { Ok(()) }
    }

    fn save(&self, map: &HashMap<String, Vec<Registered>>) -> Result<(), PasskeyError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let fail = |message: String| PasskeyError::File {
            path: path.clone(),
            message,
        };
        let all: Vec<&Registered> = map.values().flatten().collect();
        let bytes = serde_json::to_vec_pretty(&all).map_err(|e| fail(e.to_string()))?;
        // Written beside the file and renamed over it, so a crash leaves the old or the new.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| fail(e.to_string()))
    }
}

/// A ceremony the browser has not answered yet.
enum Ceremony {
    Register {
        state: PasskeyRegistration,
        name: String,
    },
    StepUp {
        id: RequestId,
        digest: Digest,
        nonce: [u8; NONCE_BYTES],
        state: PasskeyAuthentication,
    },
}

struct Pending {
    /// The reviewer who started it.
    reviewer: String,
    ceremony: Ceremony,
    expires: Instant,
}

/// The console's WebAuthn relying party: the library, the registry and open ceremonies.
pub(crate) struct Passkeys {
    webauthn: Webauthn,
    rp_id: String,
    registry: Arc<PasskeyRegistry>,
    ceremonies: Mutex<HashMap<[u8; 32], Pending>>,
    /// Registering needs a session signed in at most this long ago.
    registration_window: Duration,
}

impl Passkeys {
    /// The relying party of the console served at `public_url`: its host is the relying
    /// party id and its origin the only origin accepted.
    pub(crate) fn new(
        public_url: &Url,
        registry: Arc<PasskeyRegistry>,
        registration_window: Duration,
    ) -> Result<Self, PasskeyError> {
        let host = match public_url.host() {
            Some(url::Host::Domain(host)) => host.to_owned(),
            _ => return Err(PasskeyError::RelyingParty(public_url.to_string())),
        };
        let webauthn = WebauthnBuilder::new(&host, public_url)
            .and_then(|b| b.rp_name("Approvals review console").build())
            .map_err(|e| PasskeyError::RelyingParty(format!("{public_url}: {e}")))?;
        Ok(Passkeys {
            webauthn,
            rp_id: host,
            registry,
            ceremonies: Mutex::new(HashMap::new()),
            registration_window,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Pending>> {
        self.ceremonies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One open ceremony per session and purpose; a new one replaces the old.
    fn key(v: &Viewer, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(v.cookie.as_bytes());
        h.update(b"\n");
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    fn open(&self, v: &Viewer, purpose: &str, ceremony: Ceremony) {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, p| p.expires > now);
        if map.len() >= MAX_CEREMONIES
            && let Some(oldest) = map.iter().min_by_key(|(_, p)| p.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            Self::key(v, purpose),
            Pending {
                reviewer: identity::identity_key(&v.principal.id),
                ceremony,
                expires: now + CEREMONY_TTL,
            },
        );
    }

    /// Takes the session's open ceremony for `purpose`, once, if it is unexpired and was
    /// started by the same reviewer.
    fn take(&self, v: &Viewer, purpose: &str) -> Option<Ceremony> {
        let pending = self.lock().remove(&Self::key(v, purpose))?;
        let same = pending
            .reviewer
            .as_bytes()
            .ct_eq(identity::identity_key(&v.principal.id).as_bytes());
        (pending.expires > Instant::now() && bool::from(same)).then_some(pending.ceremony)
    }
}

// ------------------------------------------------------------------------------------------
// Requests from the page's script.

/// A refusal the script shows as it is.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response<Bytes> {
    json_response(status, &json!({ "error": message.into() }))
}

/// The signed-in reviewer and the JSON body of a post from this console's script: same origin,
/// the session's CSRF token in `X-CSRF-Token`, sent as JSON.
fn trusted_json(
    shared: &Shared,
    request: &Request<Bytes>,
) -> Result<(Viewer, Value), Response<Bytes>> {
    let v = viewer(shared, request).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "Your session has ended; sign in again.",
        )
    })?;
    let csrf = request
        .headers()
        .get("x-csrf-token")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !same_origin(shared, request)
        || !bool::from(csrf.as_bytes().ct_eq(v.csrf.as_bytes()))
        || !is_json
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "The request did not come from this console (its security token or origin did not match).",
        ));
    }
    let body: Value = serde_json::from_slice(request.body())
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "The request body is not JSON."))?;
    if !body.is_object() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "The request body is not a JSON object.",
        ));
    }
    Ok((v, body))
}

fn passkeys(shared: &Shared) -> Result<&Passkeys, Response<Bytes>> {
    shared.passkeys.as_ref().ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "Passkeys are not set up on this server: it needs its public URL (a host name) to be configured.",
        )
    })
}

/// What every ceremony request starts with: the signed-in reviewer and the body of a post
/// from this console's script ([`trusted_json`]), and the relying party, when set up.
fn begin<'a>(
    shared: &'a Shared,
    request: &Request<Bytes>,
) -> Result<(Viewer, Value, &'a Passkeys), Response<Bytes>> {
    let (v, body) = trusted_json(shared, request)?;
    Ok((v, body, passkeys(shared)?))
}

/// A stable WebAuthn user handle for a reviewer: derived from their canonical id, so every
/// passkey of one person carries the same handle and no personal data.
fn user_handle(reviewer: &Principal) -> Uuid {
    let hash = Sha256::digest(identity::identity_key(&reviewer.id).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    Uuid::from_bytes(bytes)
}

/// `POST /console/passkeys/register/options`: starts registering a passkey for the reviewer.
pub(super) async fn register_options(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let (v, body, p) = match begin(shared, request) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("passkey");
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "A passkey name is at most {MAX_NAME_CHARS} characters, without control characters."
            ),
        );
    }
    // A passkey is what step-up trusts, so adding one takes a fresh sign-in: a session
    // taken from its owner later in its life cannot add a key of its own.
    let fresh = shared
        .sessions
        .age(&v.cookie)
        .is_some_and(|age| age <= p.registration_window);
    if !fresh {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "To register a passkey, sign out and sign in again: registering is allowed only within {} minutes of signing in.",
                p.registration_window.as_secs().div_ceil(60)
            ),
        );
    }
    let mine = p.registry.of(&v.principal);
    if mine.len() >= MAX_PASSKEYS_PER_REVIEWER {
        return refuse(
            StatusCode::CONFLICT,
            format!("You already have {MAX_PASSKEYS_PER_REVIEWER} passkeys registered."),
        );
    }
    let exclude = mine.iter().map(|r| r.passkey.cred_id().clone()).collect();
    match p.webauthn.start_passkey_registration(
        user_handle(&v.principal),
        &v.principal.id,
        v.principal.label(),
        Some(exclude),
    ) {
        Ok((options, state)) => {
            p.open(
                &v,
                "register",
                Ceremony::Register {
                    state,
                    name: name.to_owned(),
                },
            );
            json_response(StatusCode::OK, &options)
        }
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Could not start: {e}"),
        ),
    }
}

/// `POST /console/passkeys/register`: the browser's new credential, checked by webauthn-rs
/// against the ceremony this session started.
pub(super) async fn register(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let (v, body, p) = match begin(shared, request) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let Some(Ceremony::Register { state, name }) = p.take(&v, "register") else {
        return refuse(
            StatusCode::CONFLICT,
            "No registration was started in this session, or it expired; start again.",
        );
    };
    let credential: RegisterPublicKeyCredential =
        match serde_json::from_value(body.get("credential").cloned().unwrap_or(Value::Null)) {
            Ok(c) => c,
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "The credential cannot be read."),
        };
    let passkey = match p.webauthn.finish_passkey_registration(&credential, &state) {
        Ok(passkey) => passkey,
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("The passkey was not registered: {e}"),
            );
        }
    };
    let registered = Registered {
        reviewer: v.principal.id.clone(),
        name,
        registered_at: shared.gate.now(),
        passkey,
    };
    if let Err(e) = p.registry.add(&v.principal, registered) {
        tracing::error!(error = %e, "passkey registry");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The passkey could not be saved; try again.",
        );
    }
    tracing::info!(reviewer = %v.principal.id, "passkey registered");
    json_response(StatusCode::OK, &json!({ "location": "/console/passkeys" }))
}

/// The reviewer `v` acts as on request `id` (groups resolved again for a directory-backed
/// sign-in, [`super::oidc::acting_reviewer`]), or the refusal as the script reads it.
async fn acting(shared: &Shared, v: &Viewer, id: RequestId) -> Result<Principal, Response<Bytes>> {
    super::oidc::acting_reviewer(shared, v, id)
        .await
        .map_err(|page| {
            refuse(
                page.status(),
                "Your identity provider's directory does not confirm that you may decide this request now; nothing was decided.",
            )
        })
}

/// The digest the page was showing, from the script's body.
fn shown_digest(body: &Value) -> Option<Digest> {
    body.get("digest")
        .and_then(Value::as_str)
        .and_then(|d| Digest::parse(d).ok())
}

/// `POST /console/requests/{id}/step-up/options`: starts a step-up approval of request `id`
/// at the digest the page showed. The gate's rules are run dry first: only an approval that
/// lacks nothing but the proof (and perhaps the reason, posted with it) starts a ceremony.
pub(super) async fn step_up_options(
    shared: &Shared,
    request: &Request<Bytes>,
    id: RequestId,
) -> Response<Bytes> {
    let (v, body, p) = match begin(shared, request) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let Some(digest) = shown_digest(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The page did not say which version of the action you reviewed; reload it.",
        );
    };
    let reviewer = match acting(shared, &v, id).await {
        Ok(reviewer) => reviewer,
        Err(r) => return r,
    };
    let dry = Review::approve(reviewer)
        .via(CONSOLE_CHANNEL)
        .for_digest(digest);
    match shared.gate.check_review(id, &dry).await {
        Err(ReviewError::StepUpRequired { .. }) => {}
        Ok(()) => {
            return refuse(
                StatusCode::CONFLICT,
                "This request needs no passkey; approve it with the Approve button.",
            );
        }
        Err(refused) => {
            return refuse(
                Problem::from(refused.clone()).status_code(),
                refused.reviewer_message(),
            );
        }
    }
    let mine: Vec<Passkey> = p
        .registry
        .of(&v.principal)
        .into_iter()
        .map(|r| r.passkey)
        .collect();
    if mine.is_empty() {
        return refuse(
            StatusCode::CONFLICT,
            "You have no passkey registered: register one on the Passkeys page first.",
        );
    }
    let (options, state) = match p.webauthn.start_passkey_authentication(&mine) {
        Ok(started) => started,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Could not start: {e}"),
            );
        }
    };
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let bound = URL_SAFE_NO_PAD.encode(challenge(id, &digest, &nonce));
    let (Some(options), Some(state)) = (
        with_challenge(&options, &["publicKey", "challenge"], &bound),
        with_challenge(&state, &["ast", "challenge"], &bound),
    ) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not bind the challenge to this action.",
        );
    };
    let state: PasskeyAuthentication = match serde_json::from_value(state) {
        Ok(state) => state,
        Err(_) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not bind the challenge to this action.",
            );
        }
    };
    p.open(
        &v,
        &format!("step-up {id}"),
        Ceremony::StepUp {
            id,
            digest,
            nonce,
            state,
        },
    );
    json_response(StatusCode::OK, &options)
}

/// `value` (serialized) with the string at `path` replaced by `challenge`; `None` when the
/// library's shape has no string there.
fn with_challenge<T: Serialize>(value: &T, path: &[&str], challenge: &str) -> Option<Value> {
    let mut value = serde_json::to_value(value).ok()?;
    let mut at = &mut value;
    for key in path {
        at = at.get_mut(*key)?;
    }
    at.is_string()
        .then(|| *at = Value::String(challenge.to_owned()))?;
    Some(value)
}

/// `POST /console/requests/{id}/step-up`: the browser's assertion for the ceremony this
/// session started for request `id`. webauthn-rs checks it against the reviewer's passkeys
/// (signature, challenge, origin, relying party, user verification, counter); the gate then
/// decides the approval with the proof, under every other rule.
pub(super) async fn step_up(
    shared: &Shared,
    request: &Request<Bytes>,
    id: RequestId,
) -> Response<Bytes> {
    let (v, body, p) = match begin(shared, request) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let refused = |detail: &str| {
        let detail = detail.to_owned();
        let reviewer = v.principal.clone();
        async move {
            let _ = shared
                .gate
                .record_rejected_callback(
                    id,
                    Some(reviewer),
                    CONSOLE_CHANNEL,
                    approvals_core::RejectCause::StepUpInvalid,
                    &detail,
                )
                .await;
            refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Your passkey confirmation was refused: {detail}. Nothing was decided."),
            )
        }
    };
    let Some(Ceremony::StepUp {
        id: started_for,
        digest,
        nonce,
        state,
    }) = p.take(&v, &format!("step-up {id}"))
    else {
        return refused("no confirmation was started for this request in this session, or it expired or was already used").await;
    };
    if started_for != id || shown_digest(&body) != Some(digest) {
        return refused("it was started for another version of the action").await;
    }
    let reason = match check_reason(
        body.get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    ) {
        Ok(reason) => reason,
        Err(problem) => return refuse(problem.status_code(), problem.detail),
    };
    let credential: PublicKeyCredential =
        match serde_json::from_value(body.get("credential").cloned().unwrap_or(Value::Null)) {
            Ok(c) => c,
            Err(_) => return refused("the assertion cannot be read").await,
        };
    let result = match p
        .webauthn
        .finish_passkey_authentication(&credential, &state)
    {
        Ok(result) => result,
        Err(e) => return refused(&format!("the assertion does not verify ({e})")).await,
    };
    if !result.user_verified() {
        return refused("the authenticator did not verify you (no PIN or biometrics)").await;
    }
    let Some(registered) = p
        .registry
        .of(&v.principal)
        .into_iter()
        .find(|r| r.passkey.cred_id() == result.cred_id())
    else {
        return refused("the passkey is not one of yours").await;
    };
    if let Err(e) = p.registry.update(&v.principal, &result) {
        tracing::error!(error = %e, "passkey registry");
    }
    let proof = StepUpProof::passkey(
        &p.rp_id,
        &credential.raw_id,
        &nonce,
        &credential.response.client_data_json,
        &credential.response.authenticator_data,
        &credential.response.signature,
        jwk(&registered.passkey).to_string(),
    );
    // The passkey proves the signed-in person; their groups are the directory's now.
    let reviewer = match acting(shared, &v, id).await {
        Ok(reviewer) => reviewer,
        Err(r) => return r,
    };
    let mut review = Review::approve(reviewer)
        .via(CONSOLE_CHANNEL)
        .for_digest(digest)
        .step_up(proof);
    if let Some(reason) = reason {
        review = review.reason(reason);
    }
    match shared.gate.decide(id, review).await {
        Ok(_) => json_response(
            StatusCode::OK,
            &json!({ "location": format!("/console/requests/{id}") }),
        ),
        Err(refused) => refuse(
            Problem::from(refused.clone()).status_code(),
            refused.reviewer_message(),
        ),
    }
}

/// The passkey's public key as a JSON Web Key (RFC 7517), with its COSE algorithm: what an
/// auditor verifies the audited signature with, using any JOSE or crypto library.
fn jwk(passkey: &Passkey) -> Value {
    let key = passkey.get_public_key();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let alg = format!("{:?}", key.type_);
    match &key.key {
        COSEKeyType::EC_EC2(ec) => json!({
            "kty": "EC",
            "crv": format!("{:?}", ec.curve),
            "x": b64(&ec.x),
            "y": b64(&ec.y),
            "alg": alg,
        }),
        COSEKeyType::EC_OKP(okp) => json!({
            "kty": "OKP",
            "crv": format!("{:?}", okp.curve),
            "x": b64(&okp.x),
            "alg": alg,
        }),
        COSEKeyType::RSA(rsa) => json!({
            "kty": "RSA",
            "n": b64(&rsa.n),
            "e": b64(&rsa.e),
            "alg": alg,
        }),
    }
}

// ------------------------------------------------------------------------------------------
// Pages.

/// The script that runs the ceremonies, the one script the console serves.
pub(super) const PASSKEY_JS: &str = include_str!("../passkey.js");

/// `GET /console/passkeys`: the reviewer's passkeys and a button to register one.
pub(super) fn passkeys_page(shared: &Shared, v: &Viewer) -> Response<Bytes> {
    let mut b = String::from(r#"<section class="card"><h1>Your passkeys</h1>"#);
    match &shared.passkeys {
        None => b.push_str(
            r#"<p class="muted">Passkeys are not set up on this server: it needs its public URL (a host name) configured.</p>"#,
        ),
        Some(p) => {
            let mine = p.registry.of(&v.principal);
            if mine.is_empty() {
                b.push_str(r#"<p class="muted">You have no passkey yet. Requests whose rule requires a passkey can only be approved with one.</p>"#);
                b.push_str(r#"<p class="muted">Registering a passkey is allowed shortly after signing in; if it is refused, sign out and in again.</p>"#);
            } else {
                b.push_str("<table><thead><tr><th>Name</th><th>Registered</th><th>Credential</th></tr></thead><tbody>");
                for r in &mine {
                    let id = URL_SAFE_NO_PAD.encode::<&[u8]>(r.passkey.cred_id());
                    b.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                        escape(&r.name),
                        super::fragments::fmt_time(r.registered_at),
                        escape(&crate::html::truncate(&id, 24)),
                    ));
                }
                b.push_str("</tbody></table>");
            }
            b.push_str(&format!(
                r#"<div class="stack"><label for="passkey-name">Name for a new passkey</label>
<input id="passkey-name" type="text" maxlength="{MAX_NAME_CHARS}" placeholder="laptop">
<div class="buttons"><button type="button" id="register-passkey" class="primary" data-csrf="{csrf}">Register a passkey</button></div>
<p id="passkey-status" class="muted" role="status"></p></div>
<script src="/console/passkey.js" defer></script>"#,
                csrf = escape(&v.csrf),
            ));
        }
    }
    b.push_str("</section>");
    super::fragments::html_response(
        StatusCode::OK,
        &super::fragments::page("Passkeys", Some(v), &b),
    )
}

/// The approve part of the decision form of a request whose rule requires a passkey: a
/// button the script turns into the ceremony, or why there is none.
pub(super) fn step_up_button(
    shared: &Shared,
    v: &Viewer,
    id: RequestId,
    digest: &Digest,
) -> String {
    match &shared.passkeys {
        None => r#"<p class="muted">Approving this request needs a passkey, and passkeys are not set up on this server (it needs its public URL).</p>"#.to_owned(),
        Some(p) if p.registry.count(&v.principal) == 0 => r#"<p class="muted">Approving this request needs a passkey. <a href="/console/passkeys">Register one</a>, then come back.</p>"#.to_owned(),
        Some(_) => format!(
            r#"<button type="button" id="approve-with-passkey" class="approve" data-request="{id}" data-digest="{digest}" data-csrf="{csrf}">Approve with passkey</button><script src="/console/passkey.js" defer></script>"#,
            csrf = escape(&v.csrf),
        ),
    }
}
