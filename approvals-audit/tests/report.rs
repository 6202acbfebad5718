//! The evidence report: contents, period filter, escaping, CSV safety, a red banner for a
//! tampered log, and a look at it in headless Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use approvals_audit::log::LogVerifier;
use approvals_audit::report::{EvidenceReport, Outcome, ReportOptions, parse_bound};
use common::*;

fn verifier() -> LogVerifier {
    LogVerifier::new([signer(1).verifier()])
}

async fn scenario_log(dir: &Path) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let sink = scenario::run(&path, signer(1)).await;
    sink.close().await.unwrap();
    path
}

fn options() -> ReportOptions {
    ReportOptions::default()
        .generated_at("2026-11-21T12:00:00Z".parse().unwrap())
        .title("Change approvals \u{2014} production, November 2026")
}

/// A minimal RFC 4180 reader (quoted cells, doubled quotes, CRLF rows).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = vec![];
    let mut row = vec![];
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn the_report_lists_every_request_with_its_people_times_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let report = EvidenceReport::build(&path, &verifier(), &options()).unwrap();
    assert!(report.verified());
    assert_eq!(report.requests.len(), 8);
    let counts = report.outcome_counts();
    let count = |o| counts.get(&o).copied().unwrap_or(0);
    assert_eq!(count(Outcome::Executed), 3);
    assert_eq!(count(Outcome::Failed), 1);
    assert_eq!(count(Outcome::Denied), 1);
    assert_eq!(count(Outcome::PolicyDenied), 1);
    assert_eq!(count(Outcome::Expired), 1);
    assert_eq!(count(Outcome::Cancelled), 1);
    assert_eq!(report.latencies(), [45, 180, 420, 1200]);
    assert_eq!(
        report.decisions_per_reviewer()[0],
        ("sam@example.com".to_owned(), 1, 1)
    );
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].cause, "self_approval");
    assert_eq!(report.refused[0].who.as_deref(), Some("dana@example.com"));

    let iam = &report.requests[0];
    assert_eq!(iam.kind, "iam.role.grant");
    assert_eq!(iam.requester(), Some("dana@example.com"));
    assert_eq!(iam.initiator.as_ref().unwrap().id, "deploy-bot");
    assert_eq!(iam.model.as_deref(), Some("claude-opus-4"));
    assert_eq!(iam.approvers, ["sam@example.com"]);
    assert_eq!(iam.environment.as_deref(), Some("production"));
    assert_eq!(iam.policy_rule.as_deref(), Some("prod-changes"));
    assert!(iam.policy_version.is_some());
    let t = |s: &str| Some(s.parse().unwrap());
    assert_eq!(iam.requested_at, t("2026-11-02T09:00:00Z"));
    assert_eq!(iam.decided_at, t("2026-11-02T09:03:00Z"));
    assert_eq!(iam.executed_at, t("2026-11-02T09:03:20Z"));
    assert!(iam.digest.starts_with("sha256:"));

    let html = report.to_html();
    assert!(html.contains("Log integrity verified"));
    let root = report.verification.last_verified.as_ref().unwrap();
    assert!(html.contains(&format!("size <b>{}</b>", root.checkpoint.size)));
    assert!(html.contains(&report.log_sha256));
    assert!(html.contains("claude-opus-4") && html.contains("sam@example.com"));
    assert!(html.contains("<svg") && !html.contains("<script"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !html.contains("http://") || !html.contains("href="),
        "no links out"
    );
    assert!(!html.contains("src=\"http"), "self-contained");
}

#[tokio::test]
async fn csv_has_one_safe_row_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let report = EvidenceReport::build(&path, &verifier(), &options()).unwrap();
    let rows = parse_csv(&report.to_csv());
    assert_eq!(rows.len(), 9);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let iam = &rows[1];
    assert_eq!(iam[col("kind")], "iam.role.grant");
    assert_eq!(iam[col("requester")], "dana@example.com");
    assert_eq!(iam[col("initiator")], "deploy-bot");
    assert_eq!(iam[col("model")], "claude-opus-4");
    assert_eq!(iam[col("approvers")], "sam@example.com");
    assert_eq!(iam[col("requested_at")], "2026-11-02T09:00:00Z");
    assert_eq!(iam[col("decided_at")], "2026-11-02T09:03:00Z");
    assert_eq!(iam[col("executed_at")], "2026-11-02T09:03:20Z");
    assert_eq!(iam[col("decision_latency_seconds")], "180");
    assert_eq!(iam[col("outcome")], "executed");
    let hostile = rows
        .iter()
        .find(|r| r[col("resource")].contains("HYPERLINK"))
        .unwrap();
    // A spreadsheet must not run it as a formula; the text survives otherwise intact.
    assert_eq!(
        hostile[col("justification")],
        format!("'{}", scenario::HOSTILE)
    );
    assert!(hostile[col("approvers")].starts_with("eve|=\\x@"));
}

#[tokio::test]
async fn the_period_selects_requests_by_request_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let from = parse_bound("2026-11-02T09:01:00Z", false).unwrap();
    let report =
        EvidenceReport::build(&path, &verifier(), &options().period(Some(from), None)).unwrap();
    assert_eq!(
        report.requests.len(),
        7,
        "the first request is before the period"
    );
    assert!(
        report
            .requests
            .iter()
            .all(|r| r.requested_at.unwrap() >= from)
    );
    let to = parse_bound("2026-11-01", true).unwrap();
    let report =
        EvidenceReport::build(&path, &verifier(), &options().period(None, Some(to))).unwrap();
    assert!(report.requests.is_empty());
    assert_eq!(
        parse_bound("2026-11-30", true).unwrap(),
        "2026-12-01T00:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    assert!(parse_bound("yesterday", false).is_err());
}

#[tokio::test]
async fn a_tampered_log_gets_a_red_banner_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let mut lines = read_lines(&path);
    let i = lines
        .iter()
        .position(|l| l.contains("\"event\":\"denied\""))
        .unwrap();
    lines[i] = lines[i].replace("not during the freeze", "fine by me");
    write_lines(&path, &lines);
    let report = EvidenceReport::build(&path, &verifier(), &options()).unwrap();
    assert!(!report.verified());
    let html = report.to_html();
    assert!(html.contains("Log integrity FAILED"));
    assert!(html.contains("event_hash_mismatch"));
    assert!(html.contains("entries after the last verified checkpoint are not in this report"));
    assert!(!html.contains("Not yet signed"));
    assert!(html.contains(&format!("line {}", i + 1)));
    if let Some(dir) = std::env::var_os("APPROVALS_REPORT_SCREENSHOT_DIR") {
        std::fs::write(
            PathBuf::from(dir).join("evidence-report-failed.html"),
            &html,
        )
        .unwrap();
    }
    assert!(
        !html.contains("fine by me"),
        "tampered entries are not reported as fact"
    );
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Renders `html_file` to `png` in headless Chromium (killed after two minutes).
fn screenshot(chromium: &Path, html_file: &Path, png: &Path, profile: &Path) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1400,2000")
        .arg(format!("file://{}", html_file.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn the_html_report_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium is required in CI (apt-get install chromium)");
        }
        eprintln!(
            "\n*** SKIPPED: chromium not found; the evidence report was not rendered. \
             Install it with `apt-get install chromium`. ***\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Keep the picture for people to look at when asked to.
    let out_dir = std::env::var_os("APPROVALS_REPORT_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().to_owned());
    std::fs::create_dir_all(&out_dir).unwrap();
    let path = scenario_log(dir.path()).await;
    let report = EvidenceReport::build(&path, &verifier(), &options()).unwrap();
    let html_file = out_dir.join("evidence-report.html");
    std::fs::write(&html_file, report.to_html()).unwrap();
    let png = out_dir.join("evidence-report.png");
    let _ = std::fs::remove_file(&png);
    screenshot(&chromium, &html_file, &png, &dir.path().join("profile"));

    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 2000));
    // A blank page compresses to a few kilobytes; the report with tables and charts does not.
    assert!(
        bytes.len() > 60_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
}
