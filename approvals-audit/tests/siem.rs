//! SIEM export: JSON lines, OCSF and CEF checked field by field on a real gate's log,
//! including hostile text; batch refuses a tampered log; follow releases signed entries only.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_audit::log::{LogEntry, LogVerifier, LogWriter, read_verified};
use approvals_audit::siem::{ExportError, Format, cef_header, cef_value, export_file, follow_file};
use common::*;
use serde_json::Value;

fn verifier() -> LogVerifier {
    LogVerifier::new([signer(1).verifier()])
}

async fn scenario_log(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("audit.jsonl");
    let sink = scenario::run(&path, signer(1)).await;
    sink.close().await.unwrap();
    path
}

fn export(path: &std::path::Path, format: Format) -> Vec<String> {
    let mut out = Vec::new();
    let summary = export_file(path, &verifier(), format, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len() as u64, summary.exported);
    assert_eq!(summary.exported, summary.report.entries);
    lines
}

fn entries(path: &std::path::Path) -> Vec<(LogEntry, Value)> {
    let (report, entries) = read_verified(path, &verifier()).unwrap();
    assert!(report.is_ok(), "{report}");
    entries
        .into_iter()
        .map(|e| {
            let v = e.event_value().unwrap();
            (e, v)
        })
        .collect()
}

fn ms(event: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn json_lines_records_follow_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let all = entries(&path);
    let lines = export(&path, Format::JsonLines);
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (rec, (entry, event)) in records.iter().zip(&all) {
        assert_eq!(rec["schema"], "approvals.audit.export/1");
        assert_eq!(rec["event"], *event, "the event is carried verbatim");
        assert_eq!(rec["event_type"], event["event"]);
        assert_eq!(rec["request_id"], event["request_id"]);
        assert_eq!(rec["time"], event["at"]);
        assert_eq!(rec["time_ms"], ms(event));
        assert_eq!(rec["action"]["kind"], event["kind"]);
        assert_eq!(rec["action"]["resource"], event["resource"]);
        assert_eq!(rec["action"]["digest"], event["digest"]);
        assert_eq!(rec["log"]["origin"], ORIGIN);
        assert_eq!(rec["log"]["seq"], entry.seq);
        assert_eq!(rec["log"]["leaf"], entry.leaf_hex());
        assert!(rec["log"]["checkpoint_size"].as_u64().unwrap() > entry.seq);
    }
    let by = |event: &str, kind: &str| {
        records
            .iter()
            .find(|r| r["event_type"] == event && r["action"]["kind"] == kind)
            .unwrap()
    };
    let rejected = by("review_rejected", "db.migrate");
    assert_eq!(rejected["outcome"], "failure");
    assert_eq!(
        rejected["severity"], "high",
        "self-approval is high severity"
    );
    assert_eq!(rejected["actor"]["id"], "dana@example.com");
    let requested = by("requested", "iam.role.grant");
    assert_eq!(requested["actor"]["id"], "deploy-bot");
    assert_eq!(requested["actor"]["kind"], "agent");
    assert_eq!(
        by("denied", "secrets.rotate")["actor"]["id"],
        "sam@example.com"
    );
    assert_eq!(by("executed", "data.export")["outcome"], "failure");
    assert_eq!(by("executed", "iam.role.grant")["outcome"], "success");
    let hostile = by("reviewed", "deploy.run");
    assert_eq!(hostile["actor"]["id"], "eve|=\\x@example.com");
    assert_eq!(hostile["actor"]["display_name"], scenario::HOSTILE);
}

#[tokio::test]
async fn ocsf_api_activity_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let all = entries(&path);
    let records: Vec<Value> = export(&path, Format::Ocsf)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |event: &str, kind: &str| {
        let i = all
            .iter()
            .position(|(_, e)| e["event"] == event && e["kind"] == kind)
            .unwrap();
        (&records[i], &all[i])
    };
    for rec in &records {
        assert_eq!(rec["class_uid"], 6003);
        assert_eq!(rec["class_name"], "API Activity");
        assert_eq!(rec["category_uid"], 6);
        assert_eq!(
            rec["type_uid"].as_u64().unwrap(),
            600300 + rec["activity_id"].as_u64().unwrap()
        );
        assert_eq!(rec["metadata"]["version"], "1.3.0");
        assert_eq!(rec["metadata"]["product"]["name"], "approvals");
        assert!(rec["src_endpoint"]["name"].is_string());
    }

    let (rec, (entry, event)) = at("approved", "iam.role.grant");
    assert_eq!(rec["activity_id"], 3);
    assert_eq!(rec["activity_name"], "Update");
    assert_eq!(rec["time"], ms(event));
    assert_eq!(rec["severity_id"], 1);
    assert_eq!(rec["status_id"], 1);
    assert_eq!(rec["status"], "Success");
    // The approval's actor is its approver, not the gate (a search by approver finds it).
    assert_eq!(rec["actor"]["user"]["uid"], "sam@example.com");
    assert_eq!(rec["actor"]["user"]["type_id"], 1);
    assert_eq!(rec["actor"]["user"]["groups"][0]["name"], "sre");
    assert_eq!(rec["api"]["operation"], "approvals.approved");
    assert_eq!(rec["api"]["request"]["uid"], event["request_id"]);
    assert_eq!(rec["resources"][0]["uid"], "iam://prod/roles/admin");
    assert_eq!(rec["resources"][0]["type"], "iam.role.grant");
    assert_eq!(rec["resources"][0]["data"]["digest"], event["digest"]);
    assert_eq!(rec["metadata"]["uid"], format!("{ORIGIN}/{}", entry.seq));
    assert_eq!(rec["metadata"]["sequence"], entry.seq);
    assert_eq!(rec["metadata"]["log_name"], ORIGIN);
    assert_eq!(rec["metadata"]["correlation_uid"], event["request_id"]);
    assert_eq!(rec["metadata"]["original_time"], event["at"]);
    assert_eq!(rec["unmapped"]["approvals"], *event);
    assert_eq!(rec["unmapped"]["audit_log"]["leaf"], entry.leaf_hex());

    let (rec, _) = at("requested", "iam.role.grant");
    assert_eq!(
        (rec["activity_id"].as_u64(), rec["type_uid"].as_u64()),
        (Some(1), Some(600301))
    );
    // The agent is the client application; the human it acts for is the user context.
    assert_eq!(rec["actor"]["user"]["uid"], "dana@example.com");
    assert_eq!(rec["actor"]["user"]["type_id"], 1);
    assert_eq!(rec["actor"]["app_uid"], "deploy-bot");

    // The execution's actor is the initiator, not the gate.
    let (rec, _) = at("executed", "iam.role.grant");
    assert_eq!(rec["actor"]["user"]["uid"], "dana@example.com");
    assert_eq!(rec["actor"]["app_uid"], "deploy-bot");

    let (rec, _) = at("review_rejected", "db.migrate");
    assert_eq!(rec["status_id"], 2);
    assert_eq!(rec["status"], "Failure");
    assert_eq!(rec["severity_id"], 4);
    assert_eq!(rec["actor"]["user"]["uid"], "dana@example.com");
    assert_eq!(rec["actor"]["user"]["type_id"], 1);
    assert!(
        rec["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("self_approval")
    );

    let (rec, _) = at("executed", "data.export");
    assert_eq!(rec["activity_id"], 99);
    assert_eq!(rec["status_id"], 2);
    assert_eq!(rec["status_detail"], "warehouse timed out");

    let (rec, _) = at("reviewed", "iam.role.grant");
    assert_eq!(rec["src_endpoint"]["name"], "slack");
}

/// Splits a CEF line into its 7 header fields and its extension, undoing the escapes.
fn parse_cef(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    assert!(
        !line.contains(['\n', '\r']),
        "a record must stay on one line: {line:?}"
    );
    let chars: Vec<char> = line.chars().collect();
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while header.len() < 7 {
        match chars[i] {
            '\\' => {
                i += 1;
                assert!(
                    matches!(chars[i], '\\' | '|'),
                    "bad header escape in {line}"
                );
                cur.push(chars[i]);
            }
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
        i += 1;
    }
    // Extension: `key=value` pairs separated by spaces; a new pair starts at a space followed
    // by a key and an unescaped `=`.
    let ext = &chars[i..];
    let starts_pair = |at: usize| {
        let mut j = at;
        while j < ext.len() && (ext[j].is_ascii_alphanumeric() || ext[j] == '_') {
            j += 1;
        }
        j > at && j < ext.len() && ext[j] == '='
    };
    let mut map = BTreeMap::new();
    let mut j = 0;
    while j < ext.len() {
        let key_start = j;
        while ext[j] != '=' {
            j += 1;
        }
        let key: String = ext[key_start..j].iter().collect();
        j += 1;
        let mut value = String::new();
        while j < ext.len() {
            match ext[j] {
                '\\' => {
                    j += 1;
                    value.push(match ext[j] {
                        '\\' => '\\',
                        '=' => '=',
                        'n' => '\n',
                        'r' => '\r',
                        other => panic!("bad extension escape \\{other} in {line}"),
                    });
                }
                '=' => panic!("unescaped = in a value of {key}: {line}"),
                ' ' if starts_pair(j + 1) => {
                    j += 1;
                    break;
                }
                c => value.push(c),
            }
            j += 1;
        }
        assert!(
            map.insert(key.clone(), value).is_none(),
            "duplicate key {key}"
        );
    }
    (header, map)
}

#[test]
fn cef_escaping_matches_the_spec() {
    assert_eq!(cef_header(r"a|b\c"), r"a\|b\\c");
    assert_eq!(
        cef_header("line\r\nbreak"),
        "line break",
        "CR LF is one line break"
    );
    assert_eq!(cef_header("a=b"), "a=b", "= needs no escape in the header");
    assert_eq!(
        cef_value(r"a=b\c|d"),
        r"a\=b\\c|d",
        "| needs no escape in values"
    );
    assert_eq!(cef_value("x\r\ny"), r"x\ny");
    assert_eq!(cef_value("tab\there\u{0}"), "tab here‹U+0000›");
    assert_eq!(cef_value("cr\ralone"), "cr‹U+000D›alone");
    let long = "é".repeat(5000);
    let cut = cef_value(&long);
    assert_eq!(cut.chars().count(), 1023);
    assert!(cut.ends_with('\u{2026}'));
}

#[tokio::test]
async fn cef_records_field_by_field_with_hostile_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let all = entries(&path);
    let lines = export(&path, Format::Cef);
    assert_eq!(lines.len(), all.len());
    let parsed: Vec<_> = lines.iter().map(|l| parse_cef(l)).collect();
    for ((header, ext), (entry, event)) in parsed.iter().zip(&all) {
        assert_eq!(header[0], "CEF:0");
        assert_eq!(header[1], "Action-Level Approvals");
        assert_eq!(header[2], "approvals");
        assert_eq!(header[3], env!("CARGO_PKG_VERSION"));
        assert_eq!(header[4], event["event"].as_str().unwrap());
        let severity: u8 = header[6].parse().unwrap();
        assert!(severity <= 10);
        assert_eq!(ext["rt"], ms(event).to_string());
        assert_eq!(ext["externalId"], event["request_id"].as_str().unwrap());
        assert_eq!(ext["act"], event["event"].as_str().unwrap());
        assert_eq!(ext["cat"], event["kind"].as_str().unwrap());
        assert_eq!(ext["cs1Label"], "resource");
        // The one rule for untrusted text makes a CR LF pair one line feed.
        assert_eq!(
            ext["cs1"],
            event["resource"].as_str().unwrap().replace("\r\n", "\n")
        );
        assert_eq!(ext["cs2"], event["digest"].as_str().unwrap());
        assert_eq!(ext["cs5"], ORIGIN);
        assert_eq!(ext["cs6"], entry.leaf_hex());
        assert_eq!(ext["cn1"], entry.seq.to_string());
    }
    let get = |event: &str, kind: &str| {
        let i = all
            .iter()
            .position(|(_, e)| e["event"] == event && e["kind"] == kind)
            .unwrap();
        &parsed[i]
    };

    // The hostile review: every field comes back exactly, nothing leaked into other fields.
    let (header, ext) = get("reviewed", "deploy.run");
    assert_eq!(header[5], "Review accepted");
    assert_eq!(ext["suser"], "eve|=\\x@example.com");
    // A CR LF pair is one line feed on every surface.
    let hostile = scenario::HOSTILE.replace("\r\n", "\n");
    assert_eq!(ext["reason"], hostile);
    assert_eq!(ext["cs1"], format!("svc://prod/{hostile}"));
    assert_eq!(ext["outcome"], "success");
    assert!(!ext.contains_key("x"), "no field injected");
    let raw = &lines[all
        .iter()
        .position(|(_, e)| e["event"] == "reviewed" && e["kind"] == "deploy.run")
        .unwrap()];
    assert!(raw.contains(r"c\=d back\\slash\nCEF:0|x|y"), "{raw}");

    let (header, ext) = get("review_rejected", "db.migrate");
    assert_eq!(
        (header[6].as_str(), ext["outcome"].as_str()),
        ("8", "failure")
    );
    assert_eq!(ext["suser"], "dana@example.com");
    assert!(ext["reason"].starts_with("self_approval: "));

    let (_, ext) = get("approved", "iam.role.grant");
    assert_eq!(ext["cs3Label"], "approvers");
    assert_eq!(ext["cs3"], "sam@example.com");
    let (_, ext) = get("policy_decided", "db.drop");
    assert_eq!(ext["cs4Label"], "policyVersion");
    assert_eq!(ext["reason"], "Dropping tables needs a change ticket");
    let (header, ext) = get("executed", "data.export");
    assert_eq!(header[5], "Action failed");
    assert_eq!(ext["reason"], "warehouse timed out");
}

#[test]
fn batch_export_refuses_a_tampered_log_and_holds_back_the_unsigned_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25); // checkpoints at 10, 20 and 25
    let mut lines = read_lines(&path);
    let last = lines.pop().unwrap();
    assert!(last.starts_with("{\"checkpoint\""));
    write_lines(&path, &lines);
    // The witness holds the checkpoint that was cut off: a truncated log, nothing exported.
    let mut out = Vec::new();
    let err = export_file(&path, &verifier(), Format::JsonLines, &mut out).unwrap_err();
    let ExportError::Verification(report) = err else {
        panic!("{err}")
    };
    assert_eq!(report.problems[0].kind.code(), "known_checkpoint_absent");
    assert!(out.is_empty());
    // With a witness from before the last checkpoint, the five newest entries are merely
    // not signed yet, and held back.
    let note: Value = serde_json::from_str(&lines[checkpoint_index(&lines, 20)]).unwrap();
    std::fs::write(
        approvals_audit::witness::witness_path(&path),
        note["checkpoint"].as_str().unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    let summary = export_file(&path, &verifier(), Format::JsonLines, &mut out).unwrap();
    assert_eq!(summary.exported, 20, "entries 20..25 are not signed yet");
    assert_eq!(summary.report.warnings.len(), 1);

    let i = entry_index(&lines, 3);
    lines[i] = lines[i].replace("alice", "mallory");
    write_lines(&path, &lines);
    for format in [Format::JsonLines, Format::Ocsf, Format::Cef] {
        let mut out = Vec::new();
        let err = export_file(&path, &verifier(), format, &mut out).unwrap_err();
        assert!(matches!(err, ExportError::Verification(_)), "{err}");
        assert!(
            out.is_empty(),
            "nothing may be exported from a tampered log"
        );
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Shared {
    fn lines(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
}

#[test]
fn follow_streams_entries_as_checkpoints_sign_them_and_stops_at_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut writer = LogWriter::create(&path, config(), signer(1)).unwrap();
    let out = Shared::default();
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<usize>();
    let follower = {
        let (path, mut out) = (path.clone(), out.clone());
        std::thread::spawn(move || {
            let seen = out.clone();
            let mut polls = 0;
            follow_file(
                &path,
                &verifier(),
                Format::JsonLines,
                &mut out,
                Duration::from_millis(5),
                move || {
                    polls += 1;
                    let _ = progress_tx.send(seen.lines());
                    polls < 20_000
                },
            )
        })
    };
    let wait_for = |n: usize| {
        for seen in progress_rx.iter() {
            if seen >= n {
                return seen;
            }
        }
        panic!("follower ended early");
    };
    for i in 0..15 {
        writer.append(&event(i)).unwrap();
    }
    // Ten are signed by the checkpoint at 10; five wait for the next one.
    assert_eq!(wait_for(10), 10);
    for _ in 0..5 {
        assert_eq!(wait_for(10), 10, "unsigned entries must not be released");
    }
    writer.checkpoint().unwrap();
    assert_eq!(wait_for(15), 15);

    // A forged line appended by someone else stops the stream with an error.
    drop(writer);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let mut forged = read_lines(&path)[1].clone();
    forged = forged.replacen("\"seq\":1,", "\"seq\":16,", 1);
    writeln!(file, "{forged}").unwrap();
    let result = follower.join().unwrap();
    assert!(matches!(result, Err(ExportError::Follow(_))), "{result:?}");
    assert_eq!(out.lines(), 15);
}
