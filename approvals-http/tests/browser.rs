//! The review console in headless Chromium, driven over the DevTools protocol: sign in, open
//! the request, type a reason, click Approve, and the `guard()` waiting in this test gets its
//! grant. Hostile parameters render as text and run nothing.
//!
//! Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it). Without it
//! the test fails when `CI=true` and is skipped, loudly, otherwise. `APPROVALS_CHROMIUM`
//! overrides the binary path. Screenshots go to `/tmp/approvals-console-*.png`.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use approvals_core::{ActionRequest, Initiator, Preview, Principal, RequestContext, Risk};
use approvals_http::console::passkey::PasskeyRegistry;
use common::*;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Whether a DevTools error says the page's script context went away in a navigation.
fn navigating(err: &Value) -> bool {
    let message = err["message"].as_str().unwrap_or_default();
    [
        "Inspected target navigated or closed",
        "Execution context was destroyed",
        "Cannot find default execution context",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// A minimal DevTools protocol client: one page session over the browser's websocket.
struct Cdp {
    ws: Ws,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    async fn send(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params).await {
            Ok(result) => result,
            Err(err) => panic!("{method} failed: {err}"),
        }
    }

    /// Sends one command; its result, or the error Chromium answered with.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send to chromium");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
                .expect("chromium closed the connection")
                .expect("websocket error");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).expect("CDP JSON");
            if value["id"] == id {
                if let Some(err) = value.get("error") {
                    return Err(err.clone());
                }
                return Ok(value["result"].clone());
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .send(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Evaluates `expression`, waiting for the promise it returns.
    async fn eval_async(&mut self, expression: &str) -> Value {
        let r = self
            .send(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(thrown) = r.get("exceptionDetails") {
            panic!("script threw: {thrown}");
        }
        r["result"]["value"].clone()
    }

    async fn wait_for(&mut self, expression: &str, what: &str) {
        for _ in 0..400 {
            let answer = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "returnByValue": true}),
                )
                .await;
            match answer {
                Ok(r) if r["result"]["value"] == json!(true) => return,
                Ok(_) => {}
                // The page is navigating (a click submitted a form, a redirect): its
                // script context is gone until the next page loads; ask again.
                Err(err) if navigating(&err) => {}
                Err(err) => panic!("Runtime.evaluate failed: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let html = self.eval("document.documentElement.outerHTML").await;
        panic!("timed out waiting for {what}; page: {html}");
    }

    async fn goto(&mut self, url: &str) {
        self.send("Page.navigate", json!({"url": url})).await;
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            url,
        )
        .await;
    }

    /// Clicks the centre of the element matched by `selector`, as a mouse would.
    async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).expect("selector");
        let rect = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()"
            ))
            .await;
        assert!(rect.is_object(), "no element matches {selector}");
        for kind in ["mousePressed", "mouseReleased"] {
            self.send(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": rect["x"], "y": rect["y"], "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Focuses `selector` and types `text` into it.
    async fn type_into(&mut self, selector: &str, text: &str) {
        let sel = serde_json::to_string(selector).expect("selector");
        let focused = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.focus(); return true; }})()"
            ))
            .await;
        assert_eq!(focused, json!(true), "no element matches {selector}");
        self.send("Input.insertText", json!({"text": text})).await;
    }

    async fn screenshot(&mut self, path: &str) {
        use base64::Engine as _;
        let shot = self
            .send("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png data"))
            .expect("base64");
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("screenshot: {path}");
    }
}

async fn launch(binary: &PathBuf, profile: &std::path::Path) -> (tokio::process::Child, Cdp) {
    let mut child = tokio::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
            "--window-size=1360,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ws_url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited without a DevTools endpoint");
    })
    .await
    .expect("chromium started in time");
    // Keep draining stderr so Chromium never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("connect to DevTools");
    let mut cdp = Cdp {
        ws,
        next: 0,
        session: None,
    };
    let target = cdp
        .send("Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let attached = cdp
        .send(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    cdp.session = Some(
        attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned(),
    );
    cdp.send("Page.enable", json!({})).await;
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1360, "height": 1100, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    (child, cdp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_approves_in_chromium_and_the_waiting_guard_gets_the_grant() {
    let Some(binary) = chromium() else { return };
    let f = fixture();

    // A hostile request from another agent, to check the browser runs none of it.
    let evil = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">";
    let hostile = ActionRequest::new("iam.role.grant", "aws://iam/role/prod-admin")
        .params(json!({"principal": evil, "note": "\u{202e}exe.txt"}))
        .justification(evil);
    // Another agent's identity (with a hostile display name) comes from its credential, as at
    // the agent API: an action cannot name its initiator.
    let other_agent =
        Initiator::agent("other-agent").on_behalf_of(Principal::human("mallory").with_name(evil));
    let hostile_id = match f
        .gate
        .submit_as(&other_agent, &hostile)
        .await
        .expect("submit")
    {
        approvals_core::Submission::Pending(id) => id,
        approvals_core::Submission::Allowed(_) => panic!("the fixture policy requires approval"),
    };

    // The agent asks, and waits for a human.
    let action = ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000, "columns": ["email", "plan", "mrr"], "format": "csv", "destination": "s3://finance-exports/q3/"}))
        .summary("Export 5,000 customer rows to the finance bucket")
        .justification("Quarterly churn analysis requested in FIN-2291.")
        // The gate's own agent, adding its session reference.
        .initiator(
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .session("run-7f3a"),
        )
        .context(RequestContext {
            environment: Some("production".into()),
            ticket: Some("FIN-2291".into()),
            risk: Some(Risk::High),
            impact: Some("Customer emails leave the production database.".into()),
            ..Default::default()
        })
        .preview(Preview::diff(
            "--- a/export.sql\n+++ b/export.sql\n@@ -1,2 +1,2 @@\n SELECT email, plan\n-FROM customers LIMIT 500\n+FROM customers LIMIT 5000\n",
        ));
    let guard = {
        let gate = f.gate.clone();
        let action = action.clone();
        tokio::spawn(async move { gate.guard(&action).await })
    };
    let id = loop {
        let pending = f.gate.pending().await.expect("store");
        if let Some(r) = pending.iter().find(|r| r.request.kind == "data.export") {
            break r.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let base = spawn(f.server.clone()).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let (mut child, mut cdp) = launch(&binary, profile.path()).await;

    // Signing in: the console redirects to the login form.
    cdp.goto(&format!("{base}/console/")).await;
    cdp.wait_for("location.pathname === '/console/login'", "the login page")
        .await;
    cdp.type_into("#token", SAM).await;
    cdp.click("button[type=submit]").await;
    cdp.wait_for(
        "location.pathname === '/console/' && document.readyState === 'complete' && !!document.querySelector('table.list')",
        "the pending list",
    )
    .await;
    let cookies = cdp.eval("document.cookie").await;
    assert_eq!(cookies, json!(""), "the session cookie is HttpOnly");
    cdp.screenshot("/tmp/approvals-console-pending.png").await;

    // Open the request from the list.
    cdp.click(&format!("a[href='/console/requests/{id}']"))
        .await;
    cdp.wait_for(
        &format!("location.pathname === '/console/requests/{id}' && document.readyState === 'complete' && !!document.querySelector('button.approve')"),
        "the request page",
    )
    .await;
    let digest = f
        .gate
        .get(id)
        .await
        .expect("store")
        .expect("record")
        .digest
        .to_string();
    assert_eq!(
        cdp.eval("document.querySelector('#digest').textContent")
            .await,
        json!(digest)
    );
    let params = cdp
        .eval("document.querySelector('#params').textContent")
        .await;
    assert!(
        params
            .as_str()
            .is_some_and(|p| p.contains("s3://finance-exports/q3/")),
        "{params}"
    );
    // The preview is shown whole, its lines marked and styled by the console's stylesheet
    // (which the page's content security policy lets load).
    assert_eq!(
        cdp.eval("Array.from(document.querySelectorAll('#preview span')).map(s => s.className + ' ' + s.textContent)")
            .await,
        json!([
            "d-head --- a/export.sql",
            "d-head +++ b/export.sql",
            "d-hunk @@ -1,2 +1,2 @@",
            "d-ctx  SELECT email, plan",
            "d-del -FROM customers LIMIT 500",
            "d-add +FROM customers LIMIT 5000"
        ])
    );
    assert_eq!(
        cdp.eval("getComputedStyle(document.querySelector('#preview .d-add')).backgroundColor")
            .await,
        json!("rgb(230, 246, 234)")
    );
    cdp.type_into(
        "#reason",
        "Matches FIN-2291; columns limited to billing fields.",
    )
    .await;
    cdp.screenshot("/tmp/approvals-console-request.png").await;
    assert!(!guard.is_finished(), "nothing is granted before the click");

    // Approve.
    cdp.click("button.approve").await;
    let grant = tokio::time::timeout(Duration::from_secs(15), guard)
        .await
        .expect("guard() returned after the click")
        .expect("task")
        .expect("a grant");
    assert!(grant.is_human_approved());
    assert_eq!(grant.approvers()[0].id, "sam@example.com");
    assert_eq!(grant.digest().to_string(), digest);
    cdp.wait_for(
        "document.readyState === 'complete' && document.body.innerText.includes('You approved this request')",
        "the confirmation",
    )
    .await;
    cdp.screenshot("/tmp/approvals-console-approved.png").await;
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.reviews[0].channel, "web");
    assert_eq!(
        record.reviews[0].reason.as_deref(),
        Some("Matches FIN-2291; columns limited to billing fields.")
    );

    // The hostile request renders as inert text.
    cdp.goto(&format!("{base}/console/requests/{hostile_id}"))
        .await;
    cdp.wait_for(
        "!!document.querySelector('#params')",
        "the hostile request page",
    )
    .await;
    assert_eq!(cdp.eval("typeof window.__pwned").await, json!("undefined"));
    assert_eq!(
        cdp.eval("document.querySelectorAll('main script, main img').length")
            .await,
        json!(0)
    );
    let shown = cdp
        .eval("document.querySelector('#params').textContent")
        .await;
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.contains("<script>window.__pwned = 1</script>")),
        "{shown}"
    );
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.contains("‹U+202E›exe.txt")),
        "{shown}"
    );
    cdp.screenshot("/tmp/approvals-console-hostile.png").await;

    let _ = child.kill().await;
}

#[tokio::test]
async fn a_reviewer_edits_in_chromium_and_the_agent_runs_the_edited_action() {
    let Some(binary) = chromium() else { return };
    let f = fixture_with(approvals_core::Requirement::groups(["security"]).editable(["/rows"]));
    let action = ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000, "format": "csv"}))
        .summary("Export 5,000 customer rows");
    let run = {
        let gate = f.gate.clone();
        let action = action.clone();
        tokio::spawn(async move {
            gate.run_approved(&action, |approved| async move {
                Ok::<_, approvals_core::GuardError>(approved.params.as_ref().clone())
            })
            .await
        })
    };
    let id = loop {
        if let Some(r) = f.gate.pending().await.expect("store").first() {
            break r.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let base = spawn(f.server.clone()).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let (mut child, mut cdp) = launch(&binary, profile.path()).await;
    cdp.goto(&format!("{base}/console/login")).await;
    cdp.type_into("#token", SAM).await;
    cdp.click("button[type=submit]").await;
    cdp.wait_for("location.pathname === '/console/'", "the pending list")
        .await;
    cdp.goto(&format!("{base}/console/requests/{id}")).await;
    cdp.wait_for("!!document.querySelector('details#edit')", "the edit form")
        .await;
    // The form is folded until the reviewer opens it.
    assert_eq!(
        cdp.eval("document.querySelector('details#edit').open")
            .await,
        json!(false)
    );
    cdp.click("details#edit > summary").await;
    cdp.wait_for(
        "document.querySelector('details#edit').open",
        "the open form",
    )
    .await;
    assert_eq!(
        cdp.eval("document.querySelector('#edit-0').value").await,
        json!("5000")
    );
    cdp.eval("(() => { const e = document.querySelector('#edit-0'); e.focus(); e.select(); })()")
        .await;
    cdp.send("Input.insertText", json!({"text": "250"})).await;
    cdp.type_into("#edit-reason", "250 rows are enough for the analysis")
        .await;
    cdp.screenshot("/tmp/approvals-console-edit.png").await;
    cdp.click("button[value=approve_edited]").await;
    let ran = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the agent's run returned after the click")
        .expect("task")
        .expect("the edited action ran");
    assert_eq!(ran, json!({"rows": 250, "format": "csv"}));
    cdp.wait_for(
        "document.readyState === 'complete' && !!document.querySelector('#edits') && document.body.innerText.includes('/rows: 5000 → 250')",
        "the edit shown on the request page",
    )
    .await;
    cdp.screenshot("/tmp/approvals-console-edited.png").await;
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, approvals_core::RequestState::Executed);
    assert_eq!(record.reviews[0].channel, "web");

    let _ = child.kill().await;
}

/// Script helpers the step-up test runs in the page, as a page's own script (or an attacker's
/// script on it) could: base64url, posts with the session's CSRF token, a WebAuthn assertion
/// for options from the server.
const PAGE_HELPERS: &str = r#"
window.t = {
  enc: (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''),
  dec: (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0)).buffer,
  csrf: () => document.querySelector('#approve-with-passkey').dataset.csrf,
  post: async (url, body) => {
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': t.csrf() }, body: JSON.stringify(body) });
    return { status: r.status, body: await r.json().catch(() => null) };
  },
  options: (id, digest) => t.post('/console/requests/' + id + '/step-up/options', { digest }),
  assert: async (options, overrides) => {
    const pk = Object.assign(options.publicKey, overrides || {});
    pk.challenge = t.dec(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => { c.id = t.dec(c.id); });
    try {
      const a = await navigator.credentials.get({ publicKey: pk });
      return { id: a.id, rawId: t.enc(a.rawId), type: a.type, extensions: {}, response: {
        authenticatorData: t.enc(a.response.authenticatorData), clientDataJSON: t.enc(a.response.clientDataJSON),
        signature: t.enc(a.response.signature), userHandle: a.response.userHandle ? t.enc(a.response.userHandle) : null } };
    } catch (e) { return { refused: e.name }; }
  },
  finish: (id, digest, credential) => t.post('/console/requests/' + id + '/step-up', { digest, reason: 'checked', credential }),
};
true
"#;

/// The first object in `value` whose `id` is `id`.
fn find_by_id(value: &Value, id: &str) -> Option<Value> {
    match value {
        Value::Object(map) if map.get("id").and_then(Value::as_str) == Some(id) => {
            Some(value.clone())
        }
        Value::Object(map) => map.values().find_map(|v| find_by_id(v, id)),
        Value::Array(items) => items.iter().find_map(|v| find_by_id(v, id)),
        _ => None,
    }
}

/// Verifies an audited passkey proof as an auditor would, with the P-256 library and the
/// proof alone: the challenge is of this request and digest, and the signature over the
/// authenticator data and the client data's hash verifies with the JWK public key.
fn verify_independently(
    proof: &approvals_core::StepUpProof,
    id: approvals_core::RequestId,
    digest: &approvals_core::Digest,
) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::signature::Verifier as _;
    proof
        .check_binding(id, digest)
        .expect("the proof is of this request and digest");
    let jwk: Value = serde_json::from_str(&proof.public_key).expect("the key is a JWK");
    assert_eq!(jwk["kty"], "EC", "{jwk}");
    let coordinate = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().expect("coordinate"))
            .expect("base64url")
    };
    let mut sec1 = vec![0x04];
    sec1.extend(coordinate("x"));
    sec1.extend(coordinate("y"));
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("a P-256 point");
    let signature = p256::ecdsa::Signature::from_der(
        &URL_SAFE_NO_PAD
            .decode(&proof.signature)
            .expect("base64url signature"),
    )
    .expect("a DER signature");
    let message = approvals_core::step_up::signed_message(proof).expect("readable proof");
    key.verify(&message, &signature)
        .expect("the audited signature verifies with the audited key");
    let mut tampered = message.clone();
    tampered[40] ^= 1;
    assert!(
        key.verify(&tampered, &signature).is_err(),
        "a changed message does not verify"
    );
}

/// A rule with `step_up = "passkey"`, in Chromium with a virtual authenticator: no approval
/// without a registered passkey; a plain approval forged with the session's own token is
/// refused; an assertion of another request, an assertion without user verification and a
/// replayed assertion are refused; the reviewer's click with a fresh assertion approves, and
/// the audit holds a proof anyone can verify with the registered key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_step_up_approves_only_the_action_it_was_made_for() {
    let Some(binary) = chromium() else { return };
    let store = std::sync::Arc::new(approvals_core::MemoryStore::new());
    let audit = std::sync::Arc::new(approvals_core::MemorySink::new());
    let gate = approvals_core::Gate::builder()
        .policy(approvals_core::StaticPolicy::require(
            approvals_core::Requirement::groups(["security"])
                .step_up(approvals_core::StepUp::Passkey),
        ))
        .store_shared(store.clone())
        .audit_shared(audit.clone())
        .initiator(Initiator::agent("iam-bot").on_behalf_of(Principal::human("dana@example.com")))
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    // WebAuthn needs a host name: the console is reached as localhost.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://localhost:{port}");
    let keys_dir = tempfile::tempdir().expect("dir");
    let keys_file = keys_dir.path().join("passkeys.json");
    let server = approvals_http::ReviewServer::builder(gate.clone())
        .tokens(tokens())
        .public_url(base.parse().expect("url"))
        .passkeys(PasskeyRegistry::file(&keys_file).expect("no file yet is an empty registry"))
        .build();
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));

    let grant_admin = ActionRequest::new("iam.role.grant", "aws://iam/role/prod-admin")
        .params(json!({"user": "ci-bot"}));
    let rotate = ActionRequest::new("kms.key.rotate", "aws://kms/key/payments")
        .params(json!({"key": "payments"}));
    let guard = {
        let gate = gate.clone();
        let action = grant_admin.clone();
        tokio::spawn(async move { gate.guard(&action).await })
    };
    let a = loop {
        if let Some(r) = gate.pending().await.expect("store").first() {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let b = match gate.submit(&rotate).await.expect("submit") {
        approvals_core::Submission::Pending(id) => {
            gate.get(id).await.expect("store").expect("record")
        }
        approvals_core::Submission::Allowed(_) => panic!("the rule requires approval"),
    };
    let (da, db) = (a.digest.to_string(), b.digest.to_string());

    let profile = tempfile::tempdir().expect("profile dir");
    let (mut child, mut cdp) = launch(&binary, profile.path()).await;
    cdp.send("WebAuthn.enable", json!({"enableUI": false}))
        .await;
    let authenticator = cdp
        .send(
            "WebAuthn.addVirtualAuthenticator",
            json!({"options": {"protocol": "ctap2", "ctap2Version": "ctap2_1", "transport": "internal",
                "hasResidentKey": true, "hasUserVerification": true, "isUserVerified": true,
                "automaticPresenceSimulation": true}}),
        )
        .await["authenticatorId"]
        .clone();

    cdp.goto(&format!("{base}/console/login")).await;
    cdp.type_into("#token", SAM).await;
    cdp.click("button[type=submit]").await;
    cdp.wait_for("location.pathname === '/console/'", "the pending list")
        .await;

    // Without a passkey there is no way to approve, only a link to register one.
    cdp.goto(&format!("{base}/console/requests/{}", a.id)).await;
    assert_eq!(
        cdp.eval("[!!document.querySelector('button[value=approve]'), !!document.querySelector('#approve-with-passkey'), !!document.querySelector('a[href=\"/console/passkeys\"]'), !!document.querySelector('button[value=deny]')]").await,
        json!([false, false, true, true])
    );

    // Registering a passkey in the console.
    cdp.goto(&format!("{base}/console/passkeys")).await;
    cdp.type_into("#passkey-name", "test authenticator").await;
    cdp.click("#register-passkey").await;
    cdp.wait_for(
        "document.readyState === 'complete' && document.body.innerText.includes('test authenticator')",
        "the registered passkey listed",
    )
    .await;
    // Kept in the registry file (public keys only), for the next start.
    let sam = Principal::human("sam@example.com");
    assert_eq!(
        PasskeyRegistry::file(&keys_file)
            .expect("the file reads back")
            .count(&sam),
        1
    );
    std::fs::write(keys_dir.path().join("broken.json"), "{").expect("write");
    assert!(PasskeyRegistry::file(keys_dir.path().join("broken.json")).is_err());

    // What a Slack or Teams reviewer of this rule gets: no approve action, a link that opens
    // this request's page in the console, where the passkey button is.
    let console: url::Url = format!("{base}/").parse().expect("url");
    let message = approvals_slack::blocks::request_message_linked(&a, Some(&console));
    let slack_link = message
        .blocks
        .iter()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == approvals_slack::blocks::ACTION_STEP_UP)
        .and_then(|e| e["url"].as_str().map(str::to_owned))
        .expect("Slack's message links the console");
    let card = approvals_teams::request_card(
        &a,
        &{
            let mut options = approvals_teams::CardOptions::default();
            options.console_url = Some(console.clone());
            options
        },
        None,
    );
    let card_text = card.to_string();
    assert!(!card_text.contains("\"verb\":\"approve\""), "{card_text}");
    let teams_link = find_by_id(&card, approvals_teams::card::STEP_UP_ACTION_ID)
        .and_then(|e| e["url"].as_str().map(str::to_owned))
        .expect("Teams' card links the console");
    for link in [slack_link, teams_link] {
        cdp.goto(&link).await;
        cdp.wait_for(
            &format!(
                "location.pathname === '/console/requests/{}' && !!document.querySelector('#approve-with-passkey')",
                a.id
            ),
            "the step-up page from a chat link",
        )
        .await;
    }

    cdp.goto(&format!("{base}/console/requests/{}", a.id)).await;
    cdp.wait_for(
        "!!document.querySelector('#approve-with-passkey')",
        "the passkey button",
    )
    .await;
    assert_eq!(
        cdp.eval("!!document.querySelector('button[value=approve]')")
            .await,
        json!(false),
        "no plain Approve button"
    );
    assert_eq!(cdp.eval(PAGE_HELPERS).await, json!(true));

    // A plain approval posted with the session's own CSRF token: refused by the gate.
    let forged = cdp
        .eval_async(&format!(
            "fetch('/console/requests/{id}/decision', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: new URLSearchParams({{csrf: t.csrf(), digest: '{da}', verdict: 'approve'}})}}).then((r) => r.status)",
            id = a.id
        ))
        .await;
    assert_eq!(forged, json!(403));

    // The page claims another digest: refused before any ceremony starts.
    let lying = cdp
        .eval_async(&format!(
            "t.options('{}', '{db}').then((r) => r.status)",
            a.id
        ))
        .await;
    assert_eq!(lying, json!(409));

    // An assertion made for request B, posted to approve request A (both ceremonies open).
    let other = cdp
        .eval_async(&format!(
            "(async () => {{ await t.options('{a}', '{da}'); const ob = await t.options('{b}', '{db}'); const x = await t.assert(ob.body); const r = await t.finish('{a}', '{da}', x); return r.status; }})()",
            a = a.id,
            b = b.id
        ))
        .await;
    assert_eq!(
        other,
        json!(422),
        "an assertion for another action is refused"
    );

    // Without user verification: the browser refuses to make one, or the server refuses it.
    cdp.send(
        "WebAuthn.setUserVerified",
        json!({"authenticatorId": authenticator, "isUserVerified": false}),
    )
    .await;
    let unverified = cdp
        .eval_async(&format!(
            "(async () => {{ const o = await t.options('{a}', '{da}'); const x = await t.assert(o.body, {{userVerification: 'discouraged'}}); if (x.refused) return 'browser:' + x.refused; const r = await t.finish('{a}', '{da}', x); return r.status; }})()",
            a = a.id
        ))
        .await;
    assert!(
        unverified == json!(422)
            || unverified
                .as_str()
                .is_some_and(|s| s.starts_with("browser:")),
        "{unverified}"
    );
    cdp.send(
        "WebAuthn.setUserVerified",
        json!({"authenticatorId": authenticator, "isUserVerified": true}),
    )
    .await;
    assert_eq!(
        gate.get(a.id).await.expect("store").expect("record").state,
        approvals_core::RequestState::Pending,
        "nothing refused was counted"
    );

    // Request B approved with a good assertion; replaying that assertion for A, or for B
    // again, is refused.
    let replay = cdp
        .eval_async(&format!(
            "(async () => {{ const ob = await t.options('{b}', '{db}'); const x = await t.assert(ob.body); const first = await t.finish('{b}', '{db}', x); await t.options('{a}', '{da}'); const toA = await t.finish('{a}', '{da}', x); const again = await t.finish('{b}', '{db}', x); return [first.status, toA.status, again.status]; }})()",
            a = a.id,
            b = b.id
        ))
        .await;
    assert_eq!(replay, json!([200, 422, 422]));
    assert_eq!(
        gate.get(b.id).await.expect("store").expect("record").state,
        approvals_core::RequestState::Approved
    );

    // The reviewer's own click: a reason, the passkey, and the waiting agent gets its grant.
    cdp.goto(&format!("{base}/console/requests/{}", a.id)).await;
    cdp.wait_for(
        "!!document.querySelector('#approve-with-passkey')",
        "the passkey button",
    )
    .await;
    cdp.type_into("#reason", "rotating the CI role, CHG-88")
        .await;
    cdp.screenshot("/tmp/approvals-console-step-up.png").await;
    cdp.click("#approve-with-passkey").await;
    let granted = tokio::time::timeout(Duration::from_secs(15), guard)
        .await
        .expect("the guard returned after the click")
        .expect("task");
    assert!(granted.is_ok(), "{granted:?}");
    cdp.wait_for(
        &format!("location.pathname === '/console/requests/{}' && document.readyState === 'complete' && !document.querySelector('#approve-with-passkey')", a.id),
        "the approved request",
    )
    .await;

    // The audit: each approval's proof, verifiable without this library; the refusals.
    let events = audit.events();
    let proofs: Vec<(approvals_core::RequestId, approvals_core::StepUpProof)> = events
        .iter()
        .filter_map(|e| match &e.detail {
            approvals_core::audit::EventDetail::Reviewed {
                step_up: Some(p), ..
            } => Some((e.request_id, (**p).clone())),
            _ => None,
        })
        .collect();
    assert_eq!(proofs.len(), 2, "one proof per approval");
    for (id, proof) in &proofs {
        let digest = if *id == a.id { a.digest } else { b.digest };
        assert!(proof.user_verified && proof.user_present);
        verify_independently(proof, *id, &digest);
    }
    for (id, proof) in &proofs {
        let (other, other_digest) = if *id == a.id {
            (b.id, b.digest)
        } else {
            (a.id, a.digest)
        };
        assert!(
            proof.check_binding(other, &other_digest).is_err(),
            "a proof is of one request only"
        );
    }
    let causes: Vec<approvals_core::RejectCause> = events
        .iter()
        .filter_map(|e| match &e.detail {
            approvals_core::audit::EventDetail::ReviewRejected { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect();
    assert!(
        causes.contains(&approvals_core::RejectCause::StepUpRequired),
        "{causes:?}"
    );
    assert!(
        causes.contains(&approvals_core::RejectCause::StepUpInvalid),
        "{causes:?}"
    );

    let _ = child.kill().await;
}
