//! The console's OpenID Connect sign-in against a real provider (the certified `oidc-provider`
//! npm package on loopback, see `.ci/node/oidc-provider.mjs`): the whole flow over HTTP, each
//! check the relying party must make shown to refuse a token or callback that fails it, and
//! group membership checked again at decision time. The sign-in page, configuration errors
//! and a sign-in in Chromium are in `oidc_console.rs`.
//!
//! Needs Node and `cd .ci/node && npm ci`; without them the tests fail when `CI=true` and are
//! skipped, loudly, otherwise.

mod common;
#[path = "common/oidc.rs"]
mod provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::audit::EventDetail;
use approvals_core::{
    IdentityError, IdentityResolver, Principal, RejectCause, RequestState, Verdict,
};
use common::*;
use provider::*;
use serde_json::json;

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
    // Signed out, a link to the request (what a chat message opens) sends the reviewer to
    // the sign-in page, which links to the provider and remembers the request.
    let to_login = browser.get(&format!("{base}/console/requests/{id}")).await;
    assert_eq!(to_login.status, 303);
    let login_url = to_login.location.expect("to the sign-in page");
    assert!(
        login_url.ends_with(&format!("/console/login?next=/console/requests/{id}")),
        "{login_url}"
    );
    let login = browser.get(&login_url).await;
    assert!(
        login.body.contains("Sign in with Test IdP"),
        "{}",
        login.body
    );
    let start = format!("/console/oidc/start?next=/console/requests/{id}");
    assert!(login.body.contains(&start), "{}", login.body);

    let started = browser.get(&format!("{base}{start}")).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let authorization = started.location.expect("to the provider");
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
    assert!(
        a.body.contains(&format!("url=/console/requests/{id}\"")),
        "back to the request: {}",
        a.body
    );
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
async fn signing_out_ends_the_session_and_offers_the_providers_sign_out() {
    let Some(script) = available() else { return };
    let f = fixture();
    let (p, base) = setup(&script, &f, provider_config, |c| c).await;
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
    // Signed out of the console; the provider's own session can be ended too, with the ID
    // token as the hint (RP-initiated logout).
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.body.contains("Signed out"), "{}", out.body);
    let marker = r#"id="end-session" href=""#;
    let at = out.body.find(marker).expect("the provider's sign-out link") + marker.len();
    let end_session = out.body[at..]
        .split('"')
        .next()
        .expect("href")
        .replace("&amp;", "&");
    assert!(
        end_session.starts_with(&format!("{}/session/end?", p.issuer)),
        "{end_session}"
    );
    assert_eq!(param(&end_session, "client_id").as_deref(), Some("console"));
    assert!(param(&end_session, "id_token_hint").is_some_and(|t| t.split('.').count() == 3));
    let at_provider = browser.get(&end_session).await;
    assert_eq!(
        at_provider.status, 200,
        "the provider asks to confirm: {}",
        at_provider.body
    );
    // The old cookie, sent again, is nobody's.
    assert_eq!(
        status_with_session(&base, &session).await,
        303,
        "the ended session no longer works"
    );
    // A session signed in with an API token goes back to the sign-in page.
    let cookie = console::login(&f.server, SAM).await;
    let csrf = console::csrf_of(
        &console::send(
            &f.server,
            http::Method::GET,
            "/console/requests",
            Some(&cookie),
            None,
            None,
        )
        .await
        .text(),
    );
    let out = console::send(
        &f.server,
        http::Method::POST,
        "/console/logout",
        Some(&cookie),
        Some(console::ORIGIN),
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/console/login"));
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
    assert_eq!(status_with_session(&base, &cookie).await, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        status_with_session(&base, &cookie).await,
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
