//! Helpers shared by the integration tests: deterministic keys, sample logs, line surgery.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use approvals_audit::log::{LogConfig, LogWriter, SyncPolicy};
use approvals_audit::note::Signer;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

pub const ORIGIN: &str = "audit.example/test";

/// A signer with a fixed seed, so failures are reproducible.
pub fn signer(seed: u8) -> Signer {
    Signer::new(ORIGIN, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

pub fn event(i: u64) -> Value {
    json!({
        "type": "reviewed",
        "request_id": format!("req-{i}"),
        "n": i,
        "reviewer": {"id": "alice", "groups": ["sre", "dba"]},
        "reason": "looks \"fine\"\n",
    })
}

pub fn config() -> LogConfig {
    LogConfig::new(ORIGIN)
        .checkpoint_every(10)
        .checkpoint_interval(None)
        .sync(SyncPolicy::Write)
}

/// Writes `n` events (checkpoints at 10, 20, ... and at close) and returns the log path.
pub fn write_log(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    for i in 0..n {
        assert_eq!(log.append(&event(i)).unwrap(), i);
    }
    log.close().unwrap();
    path
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Index (0-based) of the entry line with this seq.
pub fn entry_index(lines: &[String], seq: u64) -> usize {
    let prefix = format!("{{\"seq\":{seq},");
    lines.iter().position(|l| l.starts_with(&prefix)).unwrap()
}

/// Index (0-based) of the checkpoint line with this tree size.
pub fn checkpoint_index(lines: &[String], size: u64) -> usize {
    lines
        .iter()
        .position(|l| l.contains(&format!("{ORIGIN}\\n{size}\\n")))
        .unwrap()
}
pub mod scenario;
