//! Rough append and verify throughput on this machine (not a benchmark; see `benches/`).
//!
//! `cargo run --release -p approvals-audit --example throughput -- [events] [dir]`

use std::time::Instant;

use approvals_audit::log::{LogConfig, LogWriter, SyncPolicy, verify_file};
use approvals_audit::note::Signer;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let path = dir.join(format!(
        "approvals-audit-throughput-{}.jsonl",
        std::process::id()
    ));
    let signer = Signer::generate("audit.example/bench")?;
    let config = LogConfig::new("audit.example/bench")
        .checkpoint_every(10_000)
        .checkpoint_interval(None)
        .sync(SyncPolicy::Buffered);
    let events: Vec<_> = (0..1000)
        .map(|i| {
            json!({
                "schema": 1, "type": "reviewed", "request_id": format!("0192f5b6-7c1e-7d2a-9f0e-{i:012}"),
                "at": "2026-11-21T12:00:00.123456Z", "reviewer": {"id": "U024BE7LH", "name": "Alice"},
                "decision": "approve", "reason": "ticket CHG-1234 reviewed", "digest": "ab".repeat(32),
            })
        })
        .collect();

    let start = Instant::now();
    let mut log = LogWriter::create(&path, config, signer.clone())?;
    for i in 0..n {
        log.append(&events[(i % 1000) as usize])?;
    }
    log.close()?;
    let append = start.elapsed();
    let bytes = std::fs::metadata(&path)?.len();

    let start = Instant::now();
    let report = verify_file(&path, &[signer.verifier()])?;
    let verify = start.elapsed();
    assert!(report.is_ok(), "{report}");
    std::fs::remove_file(&path)?;

    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!("{n} events, {} MiB", bytes >> 20);
    println!("append: {:.0} events/s ({append:?})", rate(append));
    println!("verify: {:.0} events/s ({verify:?})", rate(verify));
    Ok(())
}
