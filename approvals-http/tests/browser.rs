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
use common::*;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("APPROVALS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "headless Chromium not found at {}: install it with `apt-get update && apt-get install -y chromium` (or set APPROVALS_CHROMIUM)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPED the console browser test: {message} ***\n");
    None
}

/// A minimal DevTools protocol client: one page session over the browser's websocket.
struct Cdp {
    ws: Ws,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    async fn send(&mut self, method: &str, params: Value) -> Value {
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
                    panic!("{method} failed: {err}");
                }
                return value["result"].clone();
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

    async fn wait_for(&mut self, expression: &str, what: &str) {
        for _ in 0..400 {
            if self.eval(expression).await == json!(true) {
                return;
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
