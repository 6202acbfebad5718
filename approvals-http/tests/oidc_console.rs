//! The console's OpenID Connect sign-in page (a provider link, API tokens refused when
//! turned off, the start's PKCE, state and nonce) against a provider that only serves its
//! discovery document, configuration errors, and a whole sign-in in headless Chromium
//! against the certified `oidc-provider` (Node; `cd .ci/node && npm ci`) with the provider on
//! another site than the console.

mod common;
#[path = "common/oidc.rs"]
mod provider;

use std::time::Duration;

use approvals_http::{OidcClient, OidcConfig, ReviewServer};
use common::*;
use provider::*;
use serde_json::json;
use url::Url;

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

    let start = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", &format!("{base}/console/oidc/start"))
        .finish();
    // Headless Chromium's `--dump-dom` under a virtual time budget now and then prints
    // nothing at all (about one run in five here). An empty dump says nothing about the
    // console, so it is tried again, each time as a new sign-in in a new profile; a page that
    // is not signed in still fails below.
    let mut dom = String::new();
    for _ in 0..4 {
        let profile = tempfile::tempdir().expect("profile");
        let run = tokio::process::Command::new(&chromium)
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
        dom = String::from_utf8_lossy(&out.stdout).into_owned();
        if !dom.trim().is_empty() {
            break;
        }
    }
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
