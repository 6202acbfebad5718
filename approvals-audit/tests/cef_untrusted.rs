//! CEF in the SIEM export against the cross-surface table of hostile characters: each one,
//! planted in every agent- or reviewer-supplied field of every event of a real gate's log, is
//! shown in the CEF line (header and extension) as its visible marker, and none is written.

mod common;

use approvals_audit::log::{LogVerifier, read_verified};
use approvals_audit::siem::to_cef;
use approvals_testkit::hostile;
use common::*;
use serde_json::Value;

/// Appends `planted` to every string of `v` under a key an agent, a reviewer or a channel
/// fills (kinds, resources, ids and names of principals, reasons, details, errors).
fn plant(v: &mut Value, planted: &str) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(s)
                        if matches!(
                            key.as_str(),
                            "kind"
                                | "resource"
                                | "id"
                                | "display_name"
                                | "reason"
                                | "detail"
                                | "error"
                                | "channel"
                                | "rule"
                                | "model"
                        ) =>
                    {
                        s.push_str(planted);
                    }
                    other => plant(other, planted),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| plant(i, planted)),
        _ => {}
    }
}

#[tokio::test]
async fn every_hostile_character_is_shown_as_a_visible_marker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.jsonl");
    let sink = scenario::run(&path, signer(1)).await;
    sink.close().await.expect("closed");
    let (report, entries) =
        read_verified(&path, &LogVerifier::new([signer(1).verifier()])).expect("read");
    assert!(report.is_ok(), "{report}");
    assert!(entries.len() > 10, "a log with every kind of event");

    let cases = hostile::CHARS
        .iter()
        .map(|&(c, what)| (Some(c), what, format!("x{c}y")))
        .chain(hostile::STRINGS.iter().map(|s| (None, *s, (*s).to_owned())));
    for (c, what, planted) in cases {
        for entry in &entries {
            let mut event = entry.event_value().expect("json");
            plant(&mut event, &planted);
            let line = to_cef(entry, &event, &format!("{ORIGIN}{planted}"), "0.1.0");
            let name = event["event"].as_str().unwrap_or_default();
            match c {
                Some(c) => hostile::assert_shown(&line, c, &format!("{what} in {name}")),
                None => hostile::assert_clean(&line, &format!("{what} in {name}")),
            }
            assert!(!line.contains(['\n', '\r']), "one line: {line:?}");
        }
    }
}
