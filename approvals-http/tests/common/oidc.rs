//! A real OpenID Connect provider for the console's sign-in tests (the certified `oidc-provider`
//! npm package, run by `.ci/node/oidc-provider.mjs` on loopback), and a browser that follows
//! redirects by hand and keeps cookies, so each test can stop, change or replay any step.
//!
//! Then a console served on loopback against it, and the assertions the tests share.
//!
//! Needs Node and `cd .ci/node && npm ci`. Without them [`available`] fails when `CI=true` and
//! skips, loudly, otherwise.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use approvals_core::RequestId;
use approvals_http::{OidcClient, OidcConfig, ReviewServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use url::Url;

use crate::common::{Fixture, tokens};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The provider script, when Node and the package are installed.
pub fn available() -> Option<PathBuf> {
    let script = workspace().join(".ci/node/oidc-provider.mjs");
    let package = workspace().join(".ci/node/node_modules/oidc-provider/package.json");
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if node && package.exists() && script.exists() {
        return Some(script);
    }
    let message = "the OpenID Connect sign-in tests need Node and the oidc-provider package: run `cd .ci/node && npm ci`";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPED an OpenID Connect test: {message} ***\n");
    None
}

/// A running provider; killed when dropped.
pub struct Provider {
    pub issuer: String,
    /// Its private signing keys, to start a second provider with the same keys.
    pub jwks: Value,
    _child: tokio::process::Child,
}

impl Provider {
    /// Starts the provider with `config` (see the script's header for the keys).
    pub async fn start(script: &PathBuf, config: &Value) -> Provider {
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // The provider's warnings (Node version, in-memory adapter) go to the test's output.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("oidc-provider: {line}");
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider started within 30s")
            .expect("read the provider's output")
            .expect("the provider printed its address");
        let started: Value = serde_json::from_str(&first).expect("the provider's JSON line");
        // What it prints later (notices) is read too: a closed pipe would end it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("oidc-provider: {line}");
            }
        });
        Provider {
            issuer: started["issuer"].as_str().expect("issuer").to_owned(),
            jwks: started["jwks"].clone(),
            _child: child,
        }
    }
}

/// One answer, with its redirect resolved against the URL asked.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// A browser: no automatic redirects, a cookie jar per origin (enough for loopback servers
/// on different ports).
pub struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, BTreeMap<String, String>>,
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: approvals_http::client::http_client(Duration::from_secs(30)).expect("client"),
            jar: HashMap::new(),
        }
    }

    /// The cookie `name` this browser holds for `url`'s origin.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = Url::parse(url).expect("url");
        self.jar.get(&origin(&url))?.get(name).cloned()
    }

    /// Forgets every cookie of `url`'s origin named `name`.
    pub fn forget(&mut self, url: &str, name: &str) {
        let url = Url::parse(url).expect("url");
        if let Some(cookies) = self.jar.get_mut(&origin(&url)) {
            cookies.remove(name);
        }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        self.send(reqwest::Method::GET, url, None, &[]).await
    }

    /// A form post from a page of `url`'s own origin.
    pub async fn post(&mut self, url: &str, fields: &[(&str, &str)]) -> Answer {
        let parsed = Url::parse(url).expect("url");
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        self.send(
            reqwest::Method::POST,
            url,
            Some(body.finish()),
            &[("origin", origin(&parsed))],
        )
        .await
    }

    async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<String>,
        headers: &[(&str, String)],
    ) -> Answer {
        let parsed = Url::parse(url).expect("url");
        let mut request = self.http.request(method, parsed.clone());
        if let Some(cookies) = self.jar.get(&origin(&parsed)) {
            let header = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            if !header.is_empty() {
                request = request.header("cookie", header);
            }
        }
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        if let Some(body) = form {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| parsed.join(l).expect("location").to_string());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let jar = self.jar.entry(origin(&parsed)).or_default();
        for set in &set_cookies {
            let pair = set.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = set
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"))
                || set
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
            if expired || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let body = response.text().await.unwrap_or_default();
        Answer {
            status,
            location,
            set_cookies,
            body,
        }
    }

    /// `GET /console/oidc/start`: the provider's authorization URL it redirects to.
    pub async fn start(&mut self, console: &str) -> String {
        let a = self.get(&format!("{console}/console/oidc/start")).await;
        assert_eq!(a.status, 303, "{}", a.body);
        a.location.expect("the start redirects to the provider")
    }

    /// At the provider: follows `authorization_url` and logs `account` in (unless this
    /// browser's provider session is still signed in); returns the console callback URL the
    /// provider sends the browser to (not visited).
    pub async fn authorize(&mut self, authorization_url: &str, account: &str) -> String {
        let a = self.get(authorization_url).await;
        assert_eq!(a.status, 303, "authorization: {}", a.body);
        let next = a.location.expect("to the login");
        if !Url::parse(&next)
            .expect("url")
            .path()
            .starts_with("/interaction/")
        {
            return next;
        }
        let a = self.get(&with_param(&next, "account", account)).await;
        assert_eq!(a.status, 303, "login: {}", a.body);
        let resume = a.location.expect("back to the authorization");
        let a = self.get(&resume).await;
        assert_eq!(a.status, 303, "resume: {}", a.body);
        a.location.expect("to the console")
    }

    /// The whole sign-in as `account`: the callback's answer.
    pub async fn sign_in(&mut self, console: &str, account: &str) -> Answer {
        let authorization = self.start(console).await;
        let callback = self.authorize(&authorization, account).await;
        assert!(
            callback.starts_with(&format!("{console}/console/oidc/callback?")),
            "{callback}"
        );
        self.get(&callback).await
    }
}

/// `url` with query parameter `name` set to `value` (added, or replacing the one it had).
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).expect("url");
    let mut pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.push((name.to_owned(), value.to_owned()));
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// `url` without query parameter `name`.
pub fn without_param(url: &str, name: &str) -> String {
    let mut parsed = Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// Query parameter `name` of `url`.
pub fn param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

// ------------------------------------------------------------------------------------------
// A console signing in with the provider.

pub const SECRET: &str = "console-secret-0123456789abcdefghijklmnopqrstuvwxyz";
pub const OTHER_SECRET: &str = "other-secret-0123456789abcdefghijklmnopqrstuvwxyz";

/// Alice (verified, in `security`), Bob (e-mail not verified), Carol (in `marketing`).
pub fn accounts() -> Value {
    json!([
        {"sub": "alice", "claims": {"email": "Alice@Example.com", "email_verified": true, "name": "Alice Reviewer", "groups": ["security"]}},
        {"sub": "bob", "claims": {"email": "bob@example.com", "email_verified": false, "groups": ["security"]}},
        {"sub": "carol", "claims": {"email": "carol@example.com", "email_verified": true, "groups": ["marketing"]}},
    ])
}

/// A provider config with the console's client and another one, both sending browsers back
/// to `callback`.
pub fn provider_config(callback: &str) -> Value {
    json!({
        "clients": [
            {"client_id": "console", "client_secret": SECRET, "redirect_uris": [callback]},
            {"client_id": "other", "client_secret": OTHER_SECRET, "redirect_uris": [callback]},
        ],
        "accounts": accounts(),
    })
}

/// The console's address, reserved before the provider starts (it must know the callback).
pub struct Console {
    listener: tokio::net::TcpListener,
    base: String,
}

impl Console {
    pub async fn reserve() -> Console {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        Console { listener, base }
    }

    pub fn callback(&self) -> String {
        format!("{}/console/oidc/callback", self.base)
    }

    pub fn public_url(&self) -> Url {
        Url::parse(&format!("{}/", self.base)).expect("url")
    }

    /// The client configuration for the provider at `issuer`.
    pub fn config(&self, issuer: &str) -> OidcConfig {
        OidcConfig::new(issuer, "console", &self.public_url())
            .client_secret(SECRET)
            .scopes(["openid", "email", "profile", "groups"])
            .groups_claim("groups")
            .display_name("Test IdP")
    }

    /// Serves the fixture's gate with `oidc`; returns the console's base URL.
    pub async fn serve(self, f: &Fixture, config: OidcConfig) -> String {
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
pub async fn setup(
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

/// Whether the answer sets a console session cookie.
pub fn session_cookie_set(a: &Answer) -> bool {
    a.set_cookies
        .iter()
        .any(|c| c.starts_with("approvals_session=") && !c.starts_with("approvals_session=;"))
}

/// Asserts a successful sign-in: a session cookie, and a page that moves on to the console
/// by a refresh from this site (a redirect would carry on the provider's cross-site
/// navigation, and browsers would withhold the `SameSite=Strict` session cookie).
pub fn signed_in(a: &Answer) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(session_cookie_set(a), "{:?}", a.set_cookies);
    assert!(
        a.body
            .contains(r#"<meta http-equiv="refresh" content="0;url=/console/"#),
        "{}",
        a.body
    );
}

/// Asserts a refused sign-in: the status, the page says `why`, and nobody is signed in.
pub async fn refused(browser: &mut Browser, base: &str, a: &Answer, status: u16, why: &str) {
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
pub async fn open(
    browser: &mut Browser,
    base: &str,
    f: &Fixture,
    id: RequestId,
) -> (String, String) {
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
    (crate::common::console::csrf_of(&page.body), digest)
}

/// Posts `verdict` on request `id` from its page, with a reason.
pub async fn decide(
    browser: &mut Browser,
    base: &str,
    f: &Fixture,
    id: RequestId,
    verdict: &str,
) -> Answer {
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

/// The status of `/console/requests` asked with the session cookie `session`: 200 signed in,
/// 303 (to the sign-in page) otherwise.
pub async fn status_with_session(base: &str, session: &str) -> u16 {
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
