//! The console's OpenID Connect sign-in against a real provider (the certified `oidc-provider`
//! npm package on loopback, see `.ci/node/oidc-provider.mjs`): the whole flow over HTTP, each
//! check the relying party must make shown to refuse a token or callback that fails it, and
//! group membership checked again at decision time.
//!
//! Needs Node and `cd .ci/node && npm ci`; without them the provider tests fail when
//! `CI=true` and are skipped, loudly, otherwise. The sign-in page test at the end needs no
//! provider: it serves a discovery document itself.

mod common;
#[path = "common/oidc.rs"]
mod provider;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::audit::EventDetail;
use approvals_core::{
    IdentityError, IdentityResolver, Principal, RejectCause, RequestId, RequestState, Verdict,
};
use approvals_http::{OidcClient, OidcConfig, ReviewServer};
use common::*;
use provider::{Browser, Provider, available, param, with_param, without_param};
use serde_json::{Value, json};
use url::Url;

const SECRET: &str = "console-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const OTHER_SECRET: &str = "other-secret-0123456789abcdefghijklmnopqrstuvwxyz";

fn accounts() -> Value {
    json!([
        {"sub": "alice", "claims": {"email": "Alice@Example.com", "email_verified": true, "name": "Alice Reviewer", "groups": ["security"]}},
        {"sub": "bob", "claims": {"email": "bob@example.com", "email_verified": false, "groups": ["security"]}},
        {"sub": "carol", "claims": {"email": "carol@example.com", "email_verified": true, "groups": ["marketing"]}},
    ])
}

/// A provider config with the console's client and another one, both sending browsers back
/// to `callback`.
fn provider_config(callback: &str) -> Value {
    json!({
        "clients": [
            {"client_id": "console", "client_secret": SECRET, "redirect_uris": [callback]},
            {"client_id": "other", "client_secret": OTHER_SECRET, "redirect_uris": [callback]},
        ],
        "accounts": accounts(),
    })
}

/// The console's address, reserved before the provider starts (it must know the callback).
struct Console {
    listener: tokio::net::TcpListener,
    base: String,
}

impl Console {
    async fn reserve() -> Console {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        Console { listener, base }
    }

    fn callback(&self) -> String {
        format!("{}/console/oidc/callback", self.base)
    }

    fn public_url(&self) -> Url {
        Url::parse(&format!("{}/", self.base)).expect("url")
    }

    /// The client configuration for the provider at `issuer`.
    fn config(&self, issuer: &str) -> OidcConfig {
        OidcConfig::new(issuer, "console", &self.public_url())
            .client_secret(SECRET)
            .scopes(["openid", "email", "profile", "groups"])
            .groups_claim("groups")
            .display_name("Test IdP")
    }

    /// Serves the fixture's gate with `oidc`; returns the console's base URL.
    async fn serve(self, f: &Fixture, config: OidcConfig) -> String {
        let oidc = OidcClient::discover(config).await.expect("discovery");
        let server = ReviewServer::builder(f.gate.clone())
            .tokens(tokens())
            .public_url(self.public_url())
            .oidc(oidc)
            .build();
        tokio::spawn(approvals_http::serve(
            self.listener,
            server,
            std::future::pending(),
        ));
        self.base
    }
}

/// A provider, and a console signing in with it through `config` (changed by `tweak`).
async fn setup(
    script: &PathBuf,
    f: &Fixture,
    provider: impl FnOnce(&str) -> Value,
    tweak: impl FnOnce(OidcConfig) -> OidcConfig,
) -> (Provider, String) {
    let console = Console::reserve().await;
    let p = Provider::start(script, &provider(&console.callback())).await;
    let config = tweak(console.config(&p.issuer));
    let base = console.serve(f, config).await;
    (p, base)
}

fn session_cookie_set(a: &provider::Answer) -> bool {
    a.set_cookies
        .iter()
        .any(|c| c.starts_with("approvals_session=") && !c.starts_with("approvals_session=;"))
}

/// Asserts a successful sign-in: a session cookie, and a page that moves on to the console
/// by a refresh from this site (a redirect would carry on the provider's cross-site
/// navigation, and browsers would withhold the `SameSite=Strict` session cookie).
fn signed_in(a: &provider::Answer) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(session_cookie_set(a), "{:?}", a.set_cookies);
    assert!(
        a.body
            .contains(r#"<meta http-equiv="refresh" content="0;url=/console/">"#),
        "{}",
        a.body
    );
}

/// Asserts a refused sign-in: the status, the page says `why`, and nobody is signed in.
async fn refused(browser: &mut Browser, base: &str, a: &provider::Answer, status: u16, why: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(a.body.contains(why), "expected {why:?} in {}", a.body);
    assert!(!session_cookie_set(a), "{:?}", a.set_cookies);
    let page = browser.get(&format!("{base}/console/requests")).await;
    assert_eq!(page.status, 303, "nobody is signed in");
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{base}/console/login").as_str())
    );
}

/// The request's page, its CSRF token and digest.
async fn open(browser: &mut Browser, base: &str, f: &Fixture, id: RequestId) -> (String, String) {
    let page = browser.get(&format!("{base}/console/requests/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let digest = f
        .gate
        .get(id)
        .await
        .expect("store")
        .expect("record")
        .digest
        .to_string();
    (console::csrf_of(&page.body), digest)
}

async fn decide(
    browser: &mut Browser,
    base: &str,
    f: &Fixture,
    id: RequestId,
    verdict: &str,
) -> provider::Answer {
    let (csrf, digest) = open(browser, base, f, id).await;
    browser
        .post(
            &format!("{base}/console/requests/{id}/decision"),
            &[
                ("csrf", &csrf),
                ("verdict", verdict),
                ("digest", &digest),
                ("reason", "checked"),
            ],
        )
        .await
}

#[tokio::test]
async fn a_reviewer_signs_in_with_the_provider_and_the_waiting_guard_gets_the_grant() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(&script, &f, provider_config, |c| c).await;

    let guard = {
        let gate = f.gate.clone();
        tokio::spawn(async move { gate.guard(&export()).await })
    };
    let id = loop {
        if let Some(r) = f.gate.pending().await.expect("store").first() {
            break r.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut browser = Browser::new();
    // Signed out, the console sends the reviewer to the sign-in page, which links to the
    // provider.
    let login = browser.get(&format!("{base}/console/login")).await;
    assert!(
        login.body.contains("Sign in with Test IdP"),
        "{}",
        login.body
    );

    let authorization = browser.start(&base).await;
    assert_eq!(
        param(&authorization, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        param(&authorization, "client_id").as_deref(),
        Some("console")
    );
    for p in ["state", "nonce", "code_challenge"] {
        assert!(
            param(&authorization, p).is_some_and(|v| v.len() >= 22),
            "{p}"
        );
    }
    let binding = browser
        .cookie(&base, "approvals_oidc")
        .expect("the start binds the browser");
    assert!(!binding.is_empty());
    let callback = browser.authorize(&authorization, "alice").await;
    let a = browser.get(&callback).await;
    signed_in(&a);
    let session = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("approvals_session="))
        .expect("a session");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(
        browser.cookie(&base, "approvals_oidc").is_none(),
        "the binding is cleared"
    );

    // The reviewer is the canonical e-mail address with the token's groups.
    let page = browser.get(&format!("{base}/console/requests")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("alice@example.com"), "{}", page.body);
    assert!(page.body.contains("Alice Reviewer"));
    assert!(page.body.contains("security"));

    let a = decide(&mut browser, &base, &f, id, "approve").await;
    assert_eq!(a.status, 303, "{}", a.body);
    let grant = tokio::time::timeout(Duration::from_secs(10), guard)
        .await
        .expect("the guard returns")
        .expect("task")
        .expect("granted");
    assert_eq!(grant.request_id(), id);
    let reviewed = f
        .audit
        .for_request(id)
        .into_iter()
        .find_map(|e| match e.detail {
            EventDetail::Reviewed {
                reviewer,
                verdict,
                channel,
                ..
            } => Some((reviewer, verdict, channel)),
            _ => None,
        })
        .expect("a reviewed event");
    assert_eq!(reviewed.0.id, "alice@example.com");
    assert_eq!(reviewed.0.groups, vec!["security".to_owned()]);
    assert_eq!(reviewed.1, Verdict::Approve);
    assert_eq!(reviewed.2, "web");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused_though_its_signature_verifies() {
    let Some(script) = available() else { return };
    let f = fixture();
    let console = Console::reserve().await;
    // Provider B signs with the keys provider A publishes, under its own issuer; A's
    // discovery document sends the authorization and the code exchange to B.
    let b = Provider::start(&script, &provider_config(&console.callback())).await;
    let mut a_config = provider_config(&console.callback());
    a_config["jwks"] = b.jwks.clone();
    a_config["discovery"] = json!({
        "authorization_endpoint": format!("{}/auth", b.issuer),
        "token_endpoint": format!("{}/token", b.issuer),
    });
    let a = Provider::start(&script, &a_config).await;
    let config = console.config(&a.issuer);
    let base = console.serve(&f, config).await;

    let mut browser = Browser::new();
    let authorization = browser.start(&base).await;
    assert!(authorization.starts_with(&b.issuer), "{authorization}");
    let callback = browser.authorize(&authorization, "alice").await;
    // The answer names its issuer (RFC 9207): refused before the code is used.
    assert_eq!(param(&callback, "iss").as_deref(), Some(b.issuer.as_str()));
    let answer = browser.get(&callback).await;
    refused(
        &mut browser,
        &base,
        &answer,
        401,
        "another identity provider",
    )
    .await;
    // Without it, the ID token's own issuer is refused.
    let authorization = browser.start(&base).await;
    let callback = browser.authorize(&authorization, "alice").await;
    let answer = browser.get(&without_param(&callback, "iss")).await;
    refused(&mut browser, &base, &answer, 401, "Invalid issuer").await;
}

#[tokio::test]
async fn an_id_token_issued_to_another_client_is_refused() {
    let Some(script) = available() else { return };
    let f = fixture();
    // The token endpoint takes the console's exchange as the other client's, so the code
    // issued to the other client yields an ID token whose audience is the other client.
    let (_p, base) = setup(
        &script,
        &f,
        |callback| {
            let mut c = provider_config(callback);
            c["tokenClientAs"] =
                json!({"console": {"client_id": "other", "client_secret": OTHER_SECRET}});
            c
        },
        |c| c,
    )
    .await;
    let mut browser = Browser::new();
    let authorization = browser.start(&base).await;
    let callback = browser
        .authorize(&with_param(&authorization, "client_id", "other"), "alice")
        .await;
    let answer = browser.get(&callback).await;
    refused(&mut browser, &base, &answer, 401, "Invalid audiences").await;
}

#[tokio::test]
async fn a_token_with_another_nonce_or_a_code_from_another_sign_in_is_refused() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(&script, &f, provider_config, |c| c).await;
    let mut browser = Browser::new();

    // The provider issues the ID token for a nonce this sign-in did not send.
    let authorization = browser.start(&base).await;
    let callback = browser
        .authorize(
            &with_param(&authorization, "nonce", "attacker-chosen-nonce-value"),
            "alice",
        )
        .await;
    let answer = browser.get(&callback).await;
    refused(&mut browser, &base, &answer, 401, "Invalid nonce").await;

    // A code from one sign-in presented with another's state: the PKCE verifier of the
    // second does not match the first's challenge, so the provider refuses the exchange.
    let first = browser.start(&base).await;
    let first_callback = browser.authorize(&first, "alice").await;
    let second = browser.start(&base).await;
    let mixed = with_param(
        &first_callback,
        "state",
        &param(&second, "state").expect("state"),
    );
    let answer = browser.get(&mixed).await;
    refused(&mut browser, &base, &answer, 401, "invalid_grant").await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused_and_the_allowed_skew_is_honoured() {
    let Some(script) = available() else { return };
    // The provider's clock runs 90 seconds late and its ID tokens last 60: each arrives
    // expired by half a minute.
    let late = |callback: &str| {
        let mut c = provider_config(callback);
        c["clockSkew"] = json!(-90);
        c["idTokenTtl"] = json!(60);
        c
    };
    let f = fixture();
    let (_p, base) = setup(&script, &f, late, |c| c.allowed_clock_skew(Duration::ZERO)).await;
    let mut browser = Browser::new();
    let answer = browser.sign_in(&base, "alice").await;
    refused(&mut browser, &base, &answer, 401, "Expired").await;

    // The same provider with two minutes of skew allowed: accepted.
    let f = fixture();
    let (_p, base) = setup(&script, &f, late, |c| {
        c.allowed_clock_skew(Duration::from_secs(120))
    })
    .await;
    let mut browser = Browser::new();
    let answer = browser.sign_in(&base, "alice").await;
    signed_in(&answer);
}

#[tokio::test]
async fn a_state_is_used_once_and_an_unknown_one_is_refused() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(&script, &f, provider_config, |c| c).await;
    let mut browser = Browser::new();
    let authorization = browser.start(&base).await;
    let callback = browser.authorize(&authorization, "alice").await;
    let first = browser.get(&callback).await;
    signed_in(&first);

    // The same callback again, from another browser that started a sign-in of its own (so
    // it has a binding cookie): the state was used.
    let mut other = Browser::new();
    let _ = other.start(&base).await;
    let again = other.get(&callback).await;
    refused(&mut other, &base, &again, 400, "already completed").await;

    let unknown =
        format!("{base}/console/oidc/callback?code=whatever&state=never-issued-state-value");
    let a = other.get(&unknown).await;
    refused(&mut other, &base, &a, 400, "already completed").await;
    let a = other
        .get(&format!("{base}/console/oidc/callback?code=whatever"))
        .await;
    refused(&mut other, &base, &a, 400, "no state").await;
}

#[tokio::test]
async fn a_callback_in_a_browser_that_did_not_start_the_sign_in_is_refused() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(&script, &f, provider_config, |c| c).await;
    // Login CSRF: the attacker signs in at the provider and hands the callback to a victim.
    let mut attacker = Browser::new();
    let authorization = attacker.start(&base).await;
    let callback = attacker.authorize(&authorization, "carol").await;
    let mut victim = Browser::new();
    let a = victim.get(&callback).await;
    refused(&mut victim, &base, &a, 403, "another browser").await;
    // A victim with a sign-in of their own in progress: their cookie binds another state.
    let mut victim = Browser::new();
    let _ = victim.start(&base).await;
    let authorization = attacker.start(&base).await;
    let callback = attacker.authorize(&authorization, "carol").await;
    let a = victim.get(&callback).await;
    refused(&mut victim, &base, &a, 403, "another browser").await;
    // The state was used up by the refused attempt: the attacker cannot finish either.
    let a = attacker.get(&callback).await;
    refused(&mut attacker, &base, &a, 400, "already completed").await;
}

#[tokio::test]
async fn an_unverified_email_and_an_error_from_the_provider_sign_nobody_in() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(&script, &f, provider_config, |c| c).await;
    let mut browser = Browser::new();
    let a = browser.sign_in(&base, "bob").await;
    refused(&mut browser, &base, &a, 401, "not verified").await;

    // The provider answers with an error; its text is shown escaped.
    let authorization = browser.start(&base).await;
    let state = param(&authorization, "state").expect("state");
    let a = browser
        .get(&format!(
            "{base}/console/oidc/callback?state={state}&error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
        ))
        .await;
    refused(&mut browser, &base, &a, 401, "access_denied").await;
    assert!(a.body.contains("&lt;script&gt;alert(1)"), "{}", a.body);
    assert!(!a.body.contains("<script>"), "{}", a.body);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(&script, &f, provider_config, |c| c).await;
    let mut browser = Browser::new();
    let a = browser.sign_in(&base, "alice").await;
    signed_in(&a);
    let session = browser
        .cookie(&base, "approvals_session")
        .expect("signed in");
    let page = browser.get(&format!("{base}/console/requests")).await;
    assert_eq!(page.status, 200);
    let csrf = console::csrf_of(&page.body);
    let out = browser
        .post(&format!("{base}/console/logout"), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    // The old cookie, sent again, is nobody's.
    assert_eq!(
        reqwest_get_with_cookie(&base, &session).await,
        303,
        "the ended session no longer works"
    );
}

async fn reqwest_get_with_cookie(base: &str, session: &str) -> u16 {
    approvals_http::client::http_client(Duration::from_secs(10))
        .expect("client")
        .get(format!("{base}/console/requests"))
        .header("cookie", format!("approvals_session={session}"))
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

#[tokio::test]
async fn with_groups_from_the_claim_the_session_ends_with_the_id_token() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (_p, base) = setup(
        &script,
        &f,
        |callback| {
            let mut c = provider_config(callback);
            c["idTokenTtl"] = json!(3);
            c
        },
        |c| c.allowed_clock_skew(Duration::ZERO),
    )
    .await;
    let mut browser = Browser::new();
    let a = browser.sign_in(&base, "alice").await;
    signed_in(&a);
    let session = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("approvals_session="))
        .expect("a session");
    let max_age: u64 = session
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .expect("Max-Age");
    assert!(max_age <= 3, "{session}");
    let cookie = browser.cookie(&base, "approvals_session").expect("cookie");
    assert_eq!(reqwest_get_with_cookie(&base, &cookie).await, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        reqwest_get_with_cookie(&base, &cookie).await,
        303,
        "the session ended with the ID token"
    );
}

/// A directory whose answers the test changes.
#[derive(Clone, Default)]
struct Directory(Arc<Mutex<HashMap<String, Principal>>>);

impl Directory {
    fn set(&self, email: &str, principal: Option<Principal>) {
        let mut map = self.0.lock().expect("lock");
        match principal {
            Some(p) => map.insert(email.to_owned(), p),
            None => map.remove(email),
        };
    }
}

#[async_trait::async_trait]
impl IdentityResolver for Directory {
    async fn resolve(&self, channel: &str, external_id: &str) -> Result<Principal, IdentityError> {
        assert_eq!(channel, "oidc");
        self.0
            .lock()
            .expect("lock")
            .get(&external_id.to_lowercase())
            .cloned()
            .ok_or_else(|| IdentityError::Unknown {
                channel: channel.to_owned(),
                external_id: external_id.to_owned(),
            })
    }
}

#[tokio::test]
async fn group_membership_from_the_resolver_is_checked_again_at_decision_time() {
    let Some(script) = available() else { return };
    let f = fixture();
    let directory = Directory::default();
    let alice = || Principal::human("alice@example.com").with_name("Alice Reviewer");
    directory.set("alice@example.com", Some(alice().with_groups(["security"])));
    let resolver = directory.clone();
    // The token's groups claim says "security" throughout; only the directory counts.
    let (_p, base) = setup(&script, &f, provider_config, move |c| c.resolver(resolver)).await;
    let id = submit(&f.gate, &export()).await;

    let mut browser = Browser::new();
    let a = browser.sign_in(&base, "alice").await;
    signed_in(&a);
    let page = browser.get(&format!("{base}/console/requests")).await;
    assert!(
        page.body.contains("security"),
        "signed in with the directory's groups"
    );

    // Removed from the group after signing in: the approval is refused, nothing approved.
    directory.set("alice@example.com", Some(alice()));
    let a = decide(&mut browser, &base, &f, id, "approve").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("Nothing was decided"), "{}", a.body);
    assert_eq!(
        f.gate.get(id).await.expect("store").expect("record").state,
        RequestState::Pending
    );
    let rejected = |cause: RejectCause| {
        f.audit.for_request(id).iter().any(|e| {
            matches!(&e.detail, EventDetail::ReviewRejected { cause: c, reviewer: Some(r), .. } if *c == cause && r.id == "alice@example.com")
        })
    };
    assert!(
        rejected(RejectCause::NotAuthorized),
        "{:?}",
        f.audit.names()
    );

    // Gone from the directory: refused as an unknown reviewer.
    directory.set("alice@example.com", None);
    let a = decide(&mut browser, &base, &f, id, "approve").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        rejected(RejectCause::UnknownReviewer),
        "{:?}",
        f.audit.names()
    );
    assert_eq!(
        f.gate.get(id).await.expect("store").expect("record").state,
        RequestState::Pending
    );

    // Back in the group: the same session approves.
    directory.set("alice@example.com", Some(alice().with_groups(["security"])));
    let a = decide(&mut browser, &base, &f, id, "approve").await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(
        f.gate.get(id).await.expect("store").expect("record").state,
        RequestState::Approved
    );
}

/// Debian's Chromium (`APPROVALS_CHROMIUM` overrides the path), as in tests/browser.rs: a
/// failure when `CI=true`, a loud skip otherwise.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("APPROVALS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "headless Chromium not found at {}: install it with `apt-get install -y chromium` (or set APPROVALS_CHROMIUM)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPED an OpenID Connect browser test: {message} ***\n");
    None
}

/// In a real browser, a sign-in that comes back from the provider's site (another site than
/// the console's) lands on the console signed in: browsers withhold the `SameSite=Strict`
/// session cookie from a redirect chain that began on another site, so the callback must
/// not redirect.
#[tokio::test]
async fn in_chromium_a_sign_in_coming_back_from_the_providers_site_lands_signed_in() {
    let Some(script) = available() else { return };
    let Some(chromium) = chromium() else { return };
    let f = fixture();
    let console = Console::reserve().await;
    // The provider at `localhost`, the console at 127.0.0.1: two sites.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = provider_config(&console.callback());
    config["port"] = json!(port);
    config["issuer"] = json!(format!("http://localhost:{port}"));
    config["login"] = json!("alice");
    let p = Provider::start(&script, &config).await;
    let oidc = console.config(&p.issuer);
    let base = console.serve(&f, oidc).await;
    let id = submit(&f.gate, &export()).await;

    let profile = tempfile::tempdir().expect("profile");
    let start = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", &format!("{base}/console/oidc/start"))
        .finish();
    let run = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{}/go?{start}", p.issuer))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished in time")
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("alice@example.com"), "signed in: {dom}");
    assert!(
        dom.contains(&format!("/console/requests/{id}")),
        "the pending list: {dom}"
    );
}

// ------------------------------------------------------------------------------------------
// The sign-in page, with a provider that only serves its discovery document (no Node).

async fn static_provider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { ([("content-type", "application/json")], d) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async {
                ([("content-type", "application/json")], r#"{"keys":[]}"#)
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

#[tokio::test]
async fn the_sign_in_page_links_to_the_provider_and_can_refuse_api_tokens() {
    use http::Method;
    let issuer = static_provider().await;
    let f = fixture();
    let public = Url::parse(console::ORIGIN).expect("url");
    let config = OidcConfig::new(&issuer, "console", &public).display_name("Example <SSO>");
    let both = ReviewServer::builder(f.gate.clone())
        .tokens(tokens())
        .oidc(
            OidcClient::discover(config.clone())
                .await
                .expect("discovery"),
        )
        .build();
    let page = console::send(&both, Method::GET, "/console/login", None, None, None).await;
    let html = page.text();
    assert!(
        html.contains(r#"href="/console/oidc/start">Sign in with Example &lt;SSO&gt;</a>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"name="token""#),
        "the token form is still offered"
    );
    assert!(!console::login(&both, SAM).await.is_empty());

    let oidc_only = ReviewServer::builder(f.gate.clone())
        .tokens(tokens())
        .oidc(
            OidcClient::discover(config.token_sign_in(false))
                .await
                .expect("discovery"),
        )
        .build();
    let page = console::send(&oidc_only, Method::GET, "/console/login", None, None, None).await;
    let html = page.text();
    assert!(html.contains("/console/oidc/start"), "{html}");
    assert!(!html.contains(r#"name="token""#), "{html}");
    assert!(!html.contains(r#"action="/console/login""#), "{html}");
    let post = console::send(
        &oidc_only,
        Method::POST,
        "/console/login",
        None,
        Some(console::ORIGIN),
        Some(&[("token", SAM)]),
    )
    .await;
    assert_eq!(post.status, 403, "{}", post.text());
    assert!(post.text().contains("turned off"), "{}", post.text());
    assert!(post.header("set-cookie").is_none());
    // The API still takes the token.
    let me = call(&oidc_only, Method::GET, "/v1/requests", Some(SAM), None).await;
    assert_eq!(me.status, 200, "{}", me.text());

    // The start: PKCE S256, state and nonce, the provider's endpoint, a Lax binding cookie.
    let start = console::send(
        &oidc_only,
        Method::GET,
        "/console/oidc/start",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(start.status, 303);
    let location = start
        .header("location")
        .expect("to the provider")
        .to_owned();
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    assert_eq!(
        param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        param(&location, "redirect_uri").as_deref(),
        Some("http://review.test:8480/console/oidc/callback")
    );
    assert_eq!(
        param(&location, "scope").as_deref(),
        Some("openid email profile")
    );
    let cookie = start.header("set-cookie").expect("binding cookie");
    for attr in [
        "approvals_oidc=",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // Without OpenID Connect configured, the routes do not exist.
    let r = console::send(
        &f.server,
        Method::GET,
        "/console/oidc/start",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_misconfigured_or_unreachable_provider_is_a_clear_error() {
    let public = Url::parse("https://approvals.example.com/").expect("url");
    let e = OidcClient::discover(OidcConfig::new("not a url", "console", &public))
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("not a URL"), "{e}");
    assert!(!e.is_retryable());
    let e = OidcClient::discover(
        OidcConfig::new("http://127.0.0.1:9", "console", &public)
            .redirect_url(Url::parse("https://approvals.example.com/elsewhere").expect("url")),
    )
    .await
    .expect_err("refused");
    assert!(e.to_string().contains("/console/oidc/callback"), "{e}");
    // Nothing listens on the discard port.
    let e = OidcClient::discover(OidcConfig::new("http://127.0.0.1:9", "console", &public))
        .await
        .expect_err("refused");
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("discovery document"), "{e}");
}
