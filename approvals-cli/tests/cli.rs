//! The `approvals` binary: help and exit codes, tokens, store mode on SQLite (with the same
//! authentication and gate checks as the server), and server mode.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use approvals_core::{Gate, Initiator, Principal, RequestState, Requirement, StaticPolicy};
use approvals_http::{TokenHash, Tokens};
use approvals_store_sql::SqlStore;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_approvals");

fn approvals(args: &[&str], token: Option<&str>, dir: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("APPROVALS_TOKEN")
        .env_remove("APPROVALS_SERVER")
        .env_remove("APPROVALS_STORE")
        .env_remove("APPROVALS_TOKENS")
        .env_remove("APPROVALS_AUDIT")
        .env_remove("APPROVALS_AUDIT_KEY")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("APPROVALS_TOKEN", t);
    }
    cmd.output().expect("run approvals")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn token_file(dir: &Path) -> std::path::PathBuf {
    let entry = |token: &str, principal: &str| {
        format!(
            "[[token]]\nsha256 = \"{}\"\nprincipal = {principal}\n\n",
            TokenHash::of(token).to_hex()
        )
    };
    let text = [
        entry(
            SAM,
            r#"{ kind = "human", id = "sam@example.com", groups = ["security"] }"#,
        ),
        entry(
            DANA,
            r#"{ kind = "human", id = "dana@example.com", groups = ["security"] }"#,
        ),
        entry(
            BOT,
            r#"{ kind = "agent", id = "billing-agent", groups = ["security"] }"#,
        ),
    ]
    .concat();
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).expect("write tokens");
    path
}

#[test]
fn help_explains_commands_and_exit_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let out = approvals(&["--help"], None, dir.path());
    assert_eq!(code(&out), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "serve",
        "pending",
        "show",
        "approve",
        "deny",
        "cancel",
        "Exit codes",
        "APPROVALS_TOKEN",
        "5  unauthenticated",
    ] {
        assert!(help.contains(needle), "--help mentions {needle}: {help}");
    }
    let out = approvals(&["approve", "--help"], None, dir.path());
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--digest"));

    assert_eq!(
        code(&approvals(&["frobnicate"], None, dir.path())),
        2,
        "usage"
    );
    let out = approvals(&["pending", "--store", "memory:"], None, dir.path());
    assert_eq!(code(&out), 5, "no token: {}", text(&out));
    let out = approvals(
        &["show", "nope", "--store", "memory:"],
        Some(SAM),
        dir.path(),
    );
    assert_eq!(
        code(&out),
        2,
        "memory: outside serve is a usage error: {}",
        text(&out)
    );
    let out = approvals(&["pending", "--store", "redis://x"], Some(SAM), dir.path());
    assert_eq!(code(&out), 2, "{}", text(&out));
}

#[test]
fn token_new_prints_a_token_once_and_a_file_entry_that_maps_it() {
    let dir = tempfile::tempdir().expect("dir");
    let out = approvals(
        &[
            "token",
            "new",
            "--human",
            "sam@example.com",
            "--groups",
            "security,sre",
        ],
        None,
        dir.path(),
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let token = stderr
        .lines()
        .find(|l| l.starts_with("apr_"))
        .expect("token on stderr")
        .trim()
        .to_owned();
    let entry = String::from_utf8_lossy(&out.stdout);
    assert!(
        !entry.contains(&token),
        "the file entry holds only the hash"
    );
    let tokens = Tokens::from_toml(&entry).expect("valid token file");
    let p = tokens.principal(&token).expect("maps the token");
    assert_eq!(p.id, "sam@example.com");
    assert_eq!(p.groups, ["security", "sre"]);
    assert_eq!(code(&approvals(&["token", "new"], None, dir.path())), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_on_sqlite_authenticates_and_runs_the_gate_checks() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("approvals.db");
    let url = format!("sqlite://{}", db.display());
    let tokens = token_file(dir.path());
    let tokens = tokens.to_str().expect("path");

    // The agent's side: its own gate on the same SQLite file.
    let store = SqlStore::connect(&url).await.expect("sqlite");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("gate");
    let id = submit(&gate, &export()).await;
    let id_s = id.to_string();
    let waiter = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };

    let base = ["--store", url.as_str(), "--tokens", tokens];
    let run = |args: &[&str], token: Option<&str>| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&base);
        approvals(&all, token, dir.path())
    };

    let out = run(&["pending"], Some(SAM));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id_s));
    let out = run(&["show", &id_s, "--json"], Some(SAM));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let digest = view["digest"].as_str().expect("digest").to_owned();

    assert_eq!(code(&run(&["pending"], Some("wrong"))), 5);
    assert_eq!(code(&run(&["pending"], None)), 5);
    let out = run(&["approve", &id_s], Some(BOT));
    assert_eq!(code(&out), 1, "agent refused: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only humans"));
    let out = run(&["approve", &id_s], Some(DANA));
    assert_eq!(code(&out), 1, "requester refused: {}", text(&out));
    let wrong = format!("sha256:{}", "1".repeat(64));
    assert_eq!(
        code(&run(&["approve", &id_s, "--digest", &wrong], Some(SAM))),
        1
    );
    assert_eq!(
        code(&run(&["approve", &id_s, "--digest", "md5:1"], Some(SAM))),
        2
    );
    let missing = approvals_core::RequestId::new().to_string();
    assert_eq!(code(&run(&["show", &missing], Some(SAM))), 3);
    assert_eq!(code(&run(&["show", "not-an-id"], Some(SAM))), 2);
    assert!(!waiter.is_finished());

    let out = run(
        &[
            "approve", &id_s, "--digest", &digest, "--reason", "ok by me",
        ],
        Some(SAM),
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("approved"));
    let grant = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the agent's gate saw the decision")
        .expect("task")
        .expect("grant");
    assert_eq!(grant.approvers()[0].id, "sam@example.com");

    let out = run(&["approve", &id_s], Some(SAM));
    assert_eq!(code(&out), 1, "already decided: {}", text(&out));
    let record = gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Approved);
    assert_eq!(record.reviews[0].channel, "http");
}

/// Reads `GET /metrics` the way Prometheus does and checks the demo's figures: three requests
/// submitted pending, one denied, two still pending.
fn check_metrics(base: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&authority).map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("/metrics answered {head}"));
    }
    if !head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4")
    {
        return Err(format!("not Prometheus text: {head}"));
    }
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("the exposition does not parse: {e}"))?;
    let value = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    };
    let expect = |name: &str, label, want: f64| match value(name, label) {
        Some(v) if v == want => Ok(()),
        other => Err(format!(
            "{name} {label:?}: {other:?}, expected {want}\n{body}"
        )),
    };
    expect(
        "approvals_requests_total",
        Some(("outcome", "pending")),
        3.0,
    )?;
    expect(
        "approvals_resolutions_total",
        Some(("state", "denied")),
        1.0,
    )?;
    expect("approvals_pending_requests", None, 2.0)?;
    if !scrape
        .samples
        .iter()
        .any(|s| s.metric.starts_with("approvals_time_to_decision_seconds"))
    {
        return Err(format!("no time-to-decision samples\n{body}"));
    }
    Ok(())
}

#[test]
fn serve_answers_the_cli_over_http() {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = token_file(dir.path());
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--store",
            "memory:",
            "--listen",
            "127.0.0.1:0",
            "--demo",
            "--tokens",
        ])
        .arg(&tokens)
        .current_dir(dir.path())
        .env_remove("APPROVALS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = server.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let console = lines
        .find_map(|l| {
            l.ok()?
                .strip_prefix("Approvals review console: ")
                .map(str::to_owned)
        })
        .expect("serve prints its URL");
    let base = console.trim_end_matches("console/").to_owned();

    let out = approvals(
        &["pending", "--json", "--server", &base],
        Some(SAM),
        dir.path(),
    );
    let result = (|| {
        if code(&out) != 0 {
            return Err(text(&out));
        }
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let first = list["requests"][0]["id"]
            .as_str()
            .ok_or("no demo request")?
            .to_owned();
        let denied = approvals(
            &["deny", &first, "-r", "not today", "--server", &base],
            Some(SAM),
            dir.path(),
        );
        if code(&denied) != 0 {
            return Err(text(&denied));
        }
        check_metrics(&base)?;
        let again = approvals(
            &["approve", &first, "--server", &base],
            Some(SAM),
            dir.path(),
        );
        if code(&again) != 1 {
            return Err(format!("late approve should be refused: {}", text(&again)));
        }
        let unreachable = approvals(
            &["pending", "--server", "http://127.0.0.1:9/"],
            Some(SAM),
            dir.path(),
        );
        if code(&unreachable) != 4 {
            return Err(format!(
                "unreachable server is exit 4: {}",
                text(&unreachable)
            ));
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn audit_subcommands_verify_a_signed_log_and_catch_tampering() {
    use approvals_audit::log::{LogConfig, LogWriter};
    use approvals_audit::note::Signer;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.log");
    let signer = Signer::generate("approvals.example/audit").expect("key");
    std::fs::write(
        dir.path().join("trusted.vkeys"),
        format!("{}\n", signer.verifier()),
    )
    .expect("vkeys");
    let mut writer =
        LogWriter::create(&log, LogConfig::new("approvals.example/audit"), signer).expect("log");
    for i in 0..5 {
        writer
            .append(
                &serde_json::json!({"event": "approved", "request": i, "by": "sam@example.com"}),
            )
            .expect("append");
    }
    writer.close().expect("close");

    let log_arg = log.to_str().expect("utf8 path");
    let ok = approvals(
        &["audit", "verify", log_arg, "--trust", "trusted.vkeys"],
        None,
        dir.path(),
    );
    assert_eq!(code(&ok), 0, "{}", text(&ok));

    let original = std::fs::read_to_string(&log).expect("read");
    std::fs::write(
        &log,
        original.replacen("sam@example.com", "eve@example.com", 1),
    )
    .expect("tamper");
    let bad = approvals(
        &["audit", "verify", log_arg, "--trust", "trusted.vkeys"],
        None,
        dir.path(),
    );
    assert_eq!(code(&bad), 1, "{}", text(&bad));

    let usage = approvals(&["audit", "no-such-command"], None, dir.path());
    assert_eq!(code(&usage), 2, "{}", text(&usage));
    assert!(text(&usage).contains("approvals audit"), "{}", text(&usage));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_signs_the_sql_audit_log_with_the_audit_key() {
    use approvals_store_sql::audit::{LogConfig, Signer};

    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let tokens = token_file(dir.path());
    let tokens = tokens.to_str().expect("path");
    let out = approvals(
        &["audit", "keygen", "approvals.example/audit", "audit.skey"],
        None,
        dir.path(),
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    std::fs::write(dir.path().join("audit.vkeys"), &out.stdout).expect("vkeys");
    let other = Signer::generate("approvals.example/audit").expect("another key");
    std::fs::write(
        dir.path().join("other.vkeys"),
        format!("{}\n", other.verifier()),
    )
    .expect("other vkeys");

    // The agent's gate signs with the same key, so one log covers both processes' events.
    let store = SqlStore::connect(&url).await.expect("sqlite");
    let signer = Signer::from_file(dir.path().join("audit.skey")).expect("key file");
    let sink = store.signed_audit_sink(LogConfig::new(signer.name()), signer);
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .store(store.clone())
        .audit(sink.clone())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("gate");
    let request_id = submit(&gate, &export()).await;
    let id = request_id.to_string();

    let approve = |key: &str| {
        approvals(
            &[
                "approve",
                &id,
                "--store",
                &url,
                "--tokens",
                tokens,
                "--audit-key",
                key,
            ],
            Some(SAM),
            dir.path(),
        )
    };
    let missing = approve("no-such.skey");
    assert_eq!(code(&missing), 2, "{}", text(&missing));
    assert!(
        text(&missing).contains("no-such.skey"),
        "the error names the key file: {}",
        text(&missing)
    );
    let memory = approvals(
        &["pending", "--store", "memory:", "--audit-key", "audit.skey"],
        Some(SAM),
        dir.path(),
    );
    assert_eq!(code(&memory), 2, "{}", text(&memory));

    let out = approve("audit.skey");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let grant = tokio::time::timeout(Duration::from_secs(10), gate.wait(request_id))
        .await
        .expect("the agent's gate saw the decision")
        .expect("grant");
    assert_eq!(grant.approvers()[0].id, "sam@example.com");
    sink.checkpoint().await.expect("final checkpoint");
    store.close().await;

    let verify = |trust: &str| {
        approvals(
            &["audit", "verify", "--db", &url, "--trust", trust],
            None,
            dir.path(),
        )
    };
    let ok = verify("audit.vkeys");
    assert_eq!(code(&ok), 0, "{}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).starts_with("OK"),
        "{}",
        text(&ok)
    );
    let events = approvals(
        &[
            "audit",
            "export",
            "--db",
            &url,
            "--trust",
            "audit.vkeys",
            "--format",
            "jsonl",
        ],
        None,
        dir.path(),
    );
    assert_eq!(code(&events), 0, "{}", text(&events));
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"reviewed\"") && l.contains("sam@example.com")),
        "the CLI's review is in the verified log:\n{events}"
    );
    let wrong = verify("other.vkeys");
    assert_eq!(code(&wrong), 1, "{}", text(&wrong));
}

/// `approvals standing`: a reviewer proposes a standing grant from a request, it is approved
/// like any request, listed with its uses left, used by the agent's next matching action, and
/// revoked; an agent's token cannot propose one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_grants_are_proposed_listed_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = Tokens::from_file(token_file(dir.path())).expect("tokens");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"]).standing(Duration::from_secs(3600), 5),
        ))
        .store(approvals_core::MemoryStore::new())
        .audit(approvals_core::MemorySink::new())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()
        .expect("gate");
    let server = approvals_http::ReviewServer::builder(gate.clone())
        .tokens(tokens)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));
    let first = submit(&gate, &export()).await.to_string();
    let cli = |args: Vec<String>, token: &'static str| {
        let dir = dir.path().to_owned();
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
                all.extend(["--server", base.as_str()]);
                approvals(&all, Some(token), &dir)
            })
            .await
            .expect("cli")
        }
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let propose = args(&[
        "standing",
        "propose",
        "--from",
        &first,
        "--resource",
        "db://prod/*",
        "--for",
        "30m",
        "--uses",
        "2",
        "-j",
        "month-end exports",
    ]);

    let out = cli(propose.clone(), BOT).await;
    assert_eq!(code(&out), 1, "an agent never proposes: {}", text(&out));
    assert!(text(&out).contains("only a human"), "{}", text(&out));
    let mut too_long = propose.clone();
    too_long[7] = "2h".into();
    let out = cli(too_long, SAM).await;
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("at most 1h"), "{}", text(&out));

    let out = cli(propose, SAM).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let grant = stdout
        .split_whitespace()
        .find_map(|w| approvals_core::RequestId::parse(w.trim_end_matches(':')).ok())
        .unwrap_or_else(|| panic!("no id in {stdout}"))
        .to_string();
    let out = cli(args(&["standing", "list"]), SAM).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("No standing grant is in force"),
        "not before its approval: {}",
        text(&out)
    );
    let out = cli(args(&["approve", &grant]), DANA).await;
    assert_eq!(
        code(&out),
        1,
        "the human the agent acts for: {}",
        text(&out)
    );
    let out = cli(args(&["approve", &grant]), SAM).await;
    assert_eq!(code(&out), 0, "{}", text(&out));

    let covered = submit(&gate, &export().params(serde_json::json!({"rows": 1}))).await;
    let record = gate.get(covered).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Approved);
    let out = cli(args(&["standing", "list"]), SAM).await;
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed.contains(&grant) && listed.contains("1 of 2 uses left"),
        "{}",
        text(&out)
    );
    let out = cli(args(&["show", &grant]), SAM).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 more time(s)"),
        "{}",
        text(&out)
    );

    let out = cli(args(&["standing", "revoke", &first]), SAM).await;
    assert_ne!(code(&out), 0, "not a standing grant: {}", text(&out));
    let out = cli(args(&["standing", "revoke", &grant, "-r", "done"]), SAM).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("denied"));
    let out = cli(args(&["standing", "list"]), SAM).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("No standing grant is in force"));
    let after = submit(&gate, &export().params(serde_json::json!({"rows": 2}))).await;
    let record = gate.get(after).await.expect("store").expect("record");
    assert_eq!(
        record.state,
        RequestState::Pending,
        "asked after the revocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_lists_every_action_of_a_plan_with_its_digest_and_what_ran() {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = Tokens::from_file(token_file(dir.path())).expect("tokens");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .store(approvals_core::MemoryStore::new())
        .audit(approvals_core::MemorySink::new())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()
        .expect("gate");
    let server = approvals_http::ReviewServer::builder(gate.clone())
        .tokens(tokens)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));
    let items: Vec<_> = (0..12)
        .map(|i| {
            export().params(serde_json::json!({"table": i, "note": "\u{1b}[2Jcleared\u{202E}"}))
        })
        .collect();
    let plan = gate.submit_plan(&items, None).await.expect("plan");
    gate.decide(
        plan,
        approvals_core::Review::approve(
            Principal::human("sam@example.com").with_groups(["security"]),
        ),
    )
    .await
    .expect("approved");
    let ran = submit(&gate, &items[10].clone().in_plan(plan)).await;
    assert_eq!(
        gate.get(ran).await.expect("store").expect("record").state,
        RequestState::Approved
    );
    let plan_s = plan.to_string();
    let out = tokio::task::spawn_blocking(move || {
        approvals(
            &["show", &plan_s, "--server", base.as_str()],
            Some(SAM),
            dir.path(),
        )
    })
    .await
    .expect("cli");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains("Plan (12 action(s), 1 run under it):"),
        "{shown}"
    );
    let record = gate.get(plan).await.expect("store").expect("record");
    let status = approvals_core::plan::PlanStatus::of(&record).expect("a plan");
    for (i, item) in status.items.iter().enumerate() {
        assert!(shown.contains(&format!("{}. data.export on db://prod/customers", i + 1)));
        assert!(
            shown.contains(&item.digest.to_string()),
            "item {i}: {shown}"
        );
    }
    assert_eq!(shown.matches("(ran under the plan)").count(), 1);
    assert!(shown.contains("11. data.export on db://prod/customers (ran under the plan)"));
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{202E}'),
        "neutralized"
    );
}

/// `approvals approve ID --set rows=500`: the CLI edits the parameters the rule lists as
/// editable (each value read as its parameter's own type) and approves the edited action;
/// `show` then lists what changed and both digests. A parameter not listed, a wrong type and
/// an edit on deny are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_with_set_edits_the_action_and_show_lists_the_edit() {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = Tokens::from_file(token_file(dir.path())).expect("tokens");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"]).editable(["/rows"]),
        ))
        .store(approvals_core::MemoryStore::new())
        .audit(approvals_core::MemorySink::new())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()
        .expect("gate");
    let server = approvals_http::ReviewServer::builder(gate.clone())
        .tokens(tokens)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));
    let id = submit(
        &gate,
        &export().params(serde_json::json!({"rows": 5000, "table": "customers"})),
    )
    .await;
    let asked = gate.get(id).await.expect("store").expect("record");
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                approvals(&args, Some(SAM), &dir)
            })
            .await
            .expect("cli")
        }
    };
    let id_s = id.to_string();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["--server".to_owned(), base.clone()]);
        v
    };
    for refused in [
        args(&["approve", &id_s, "--set", "table=orders"]),
        args(&["approve", &id_s, "--set", "rows=lots"]),
        args(&["deny", &id_s, "--set", "rows=1"]),
    ] {
        let out = run(refused.clone()).await;
        assert_ne!(code(&out), 0, "{refused:?}: {}", text(&out));
    }
    assert_eq!(
        gate.get(id).await.expect("store").expect("record").version,
        asked.version
    );

    let out = run(args(&[
        "approve",
        &id_s,
        "--set",
        "rows=500",
        "--reason",
        "500 is enough",
    ]))
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let record = gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Approved);
    assert_eq!(record.request.params["rows"], 500);
    let out = run(args(&["show", &id_s])).await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("/rows: 5000 → 500"), "{shown}");
    assert!(
        shown.contains(&asked.digest.to_string()) && shown.contains(&record.digest.to_string()),
        "{shown}"
    );
}
