//! Invariant 12 through the command line: `approvals-audit verify`, `report` and `export`
//! compare a log file with its witness by default, and a witness URL (a loopback HTTP server)
//! receives every checkpoint. The library side of these tests is in
//! approvals-audit/tests/witness.rs.

// The audit crate's own test helpers (log writing, keys, the scenario), shared rather than copied.
#[path = "../../approvals-audit/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approvals_audit::log::{LogWriter, WitnessFile};
use approvals_audit::witness::witness_path;
use common::*;
use serde_json::Value;

/// 25 entries: lines 1-10 entries 0-9, 11 checkpoint 10, 12-21 entries 10-19, 22 checkpoint
/// 20, 23-27 entries 20-24, 28 checkpoint 25. The witness beside it holds checkpoint 25.
fn log25(dir: &Path) -> PathBuf {
    let path = write_log(dir, 25);
    assert_eq!(read_lines(&path).len(), 28);
    path
}

/// The checkpoint note of the checkpoint line of this size.
fn note_at(lines: &[String], size: u64) -> String {
    let v: Value = serde_json::from_str(&lines[checkpoint_index(lines, size)]).unwrap();
    v["checkpoint"].as_str().unwrap().to_owned()
}

// The command line.

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_approvals-audit"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn vkeys(dir: &Path) -> String {
    let path = dir.join("audit.vkeys");
    std::fs::write(&path, format!("{}\n", signer(1).verifier())).unwrap();
    path.display().to_string()
}

#[test]
fn verify_report_and_export_check_completeness_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let log = path.display().to_string();
    let keys = vkeys(dir.path());
    let out_html = dir.path().join("r.html").display().to_string();
    let out_csv = dir.path().join("r.csv").display().to_string();
    let ok = cli(&["verify", &log, "--trust", &keys]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("complete: the log holds all 25 entries"));

    let lines = read_lines(&path);
    write_lines(&path, &lines[..checkpoint_index(&lines, 20) + 1]);
    for args in [
        vec!["verify", &log, "--trust", &keys],
        vec!["report", &log, "--trust", &keys, "--out", &out_html],
        vec!["export", &log, "--trust", &keys, "--format", "ocsf"],
    ] {
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("truncated"), "{args:?}: {}", text(&out));
    }
    let json = cli(&["verify", &log, "--trust", &keys, "--format", "json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["completeness"]["status"], "failed");

    // A missing witness is an error, not a pass.
    std::fs::remove_file(witness_path(&path)).unwrap();
    let out = cli(&["verify", &log, "--trust", &keys]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no witness"), "{}", text(&out));

    // Only when told explicitly: exit 0, and every output says completeness is unproven.
    let out = cli(&["verify", &log, "--trust", &keys, "--no-witness"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("COMPLETENESS UNPROVEN"),
        "{}",
        text(&out)
    );
    let json = cli(&[
        "verify",
        &log,
        "--trust",
        &keys,
        "--no-witness",
        "--format",
        "json",
    ]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["completeness"]["status"], "unproven");
    let out = cli(&[
        "report",
        &log,
        "--trust",
        &keys,
        "--no-witness",
        "--out",
        &out_html,
        "--csv",
        &out_csv,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&out_html).unwrap();
    assert!(html.contains("class=\"completeness bad\""), "red banner");
    assert!(html.contains("Completeness UNPROVEN"), "{html}");
    assert!(
        html.contains("--no-witness"),
        "the re-verify command says so"
    );
    let csv = std::fs::read_to_string(&out_csv).unwrap();
    assert!(csv.lines().next().unwrap().contains("log_completeness"));
    assert!(csv.contains("\"unproven"), "{csv}");
    let out = cli(&[
        "export",
        &log,
        "--trust",
        &keys,
        "--format",
        "jsonl",
        "--no-witness",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("COMPLETENESS UNPROVEN"));
    // Naming a witness and waiving it at once is a usage error.
    let named = witness_path(&path).display().to_string();
    let out = cli(&[
        "verify",
        &log,
        "--trust",
        &keys,
        "--no-witness",
        "--witness",
        &named,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_report_names_everything_needed_to_verify_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let log = path.display().to_string();
    let keys = vkeys(dir.path());
    let html = dir.path().join("r.html");
    let out = cli(&[
        "report",
        &log,
        "--trust",
        &keys,
        "--out",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&html).unwrap();
    let expected = format!(
        "approvals-audit verify {log} --trust {keys} --witness {}",
        witness_path(&path).display()
    );
    assert!(
        html.contains(&approvals_audit::report::esc(&expected)),
        "{expected}"
    );
    assert!(html.contains("Complete"), "the green completeness line");
}

// A witness URL: a loopback HTTP server that keeps the latest checkpoint it was sent.

struct WitnessServer {
    url: String,
    held: Arc<Mutex<Option<String>>>,
    posts: Arc<Mutex<u32>>,
}

fn witness_server() -> WitnessServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/logs/test", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(None::<String>));
    let posts = Arc::new(Mutex::new(0));
    let (h, p) = (held.clone(), posts.clone());
    std::thread::spawn(move || {
        // Bounded: serves for at most a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            let response = if request_line.starts_with("POST /logs/test ") {
                *h.lock().unwrap() = Some(String::from_utf8(body).unwrap());
                *p.lock().unwrap() += 1;
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_owned()
            } else if request_line.starts_with("GET /logs/test ") {
                match h.lock().unwrap().clone() {
                    Some(note) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{note}",
                        note.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                }
            } else {
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    WitnessServer { url, held, posts }
}

#[test]
fn a_witness_url_receives_every_checkpoint_and_verify_fetches_it() {
    let server = witness_server();
    let dir = tempfile::tempdir().unwrap();
    let keys = vkeys(dir.path());
    let path = dir.path().join("audit.jsonl");
    let log = path.display().to_string();

    // Nothing held yet: the witness answers 404.
    let client = approvals_audit::witness::HttpWitness::new(&server.url).unwrap();
    assert_eq!(client.latest().unwrap(), None);

    let mut writer = LogWriter::create(
        &path,
        config()
            .witness_file(WitnessFile::Disabled)
            .witness_url(&server.url),
        signer(1),
    )
    .unwrap();
    for i in 0..25 {
        writer.append(&event(i)).unwrap();
    }
    writer.close().unwrap();
    // The empty log's witness at creation, then checkpoints 10, 20 and 25.
    assert_eq!(*server.posts.lock().unwrap(), 4);
    let held = server.held.lock().unwrap().clone().unwrap();
    assert_eq!(held, note_at(&read_lines(&path), 25));

    let out = cli(&[
        "verify",
        &log,
        "--trust",
        &keys,
        "--witness-url",
        &server.url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("witness URL {}", server.url)));

    // Cut the log and its local witness (the writer kept none): the URL still knows.
    let lines = read_lines(&path);
    write_lines(&path, &lines[..checkpoint_index(&lines, 20) + 1]);
    let out = cli(&[
        "verify",
        &log,
        "--trust",
        &keys,
        "--witness-url",
        &server.url,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("truncated"), "{}", text(&out));
    // Without the URL, the cut log has no witness at all: an error too.
    let out = cli(&["verify", &log, "--trust", &keys]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn an_unreachable_witness_url_fails_the_checkpoint_and_later_appends() {
    // A port nobody listens on: bind, learn the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let err = LogWriter::create(
        &path,
        config().witness_url(format!("http://127.0.0.1:{port}/w")),
        signer(1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(!path.exists(), "no log is left behind");
}

#[tokio::test]
async fn a_plain_json_lines_file_is_refused_with_an_explanation() {
    use approvals_core::AuditSink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.jsonl");
    let sink = approvals_core::JsonLinesSink::file(&path, false).unwrap();
    let action = approvals_core::ActionRequest::new("data.export", "db://x");
    let event = approvals_core::AuditEvent {
        schema: 1,
        at: chrono::Utc::now(),
        request_id: approvals_core::RequestId::new(),
        kind: action.kind.clone(),
        resource: action.resource.clone(),
        digest: action.digest(),
        detail: approvals_core::EventDetail::Expired {},
    };
    sink.record(&event).await.unwrap();
    let keys = vkeys(dir.path());
    let log = path.display().to_string();
    for args in [
        vec!["verify", &log, "--trust", &keys],
        vec!["verify", &log, "--trust", &keys, "--no-witness"],
        vec!["export", &log, "--trust", &keys, "--format", "cef"],
    ] {
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("plain JSON-lines audit file"),
            "{}",
            text(&out)
        );
    }
}
