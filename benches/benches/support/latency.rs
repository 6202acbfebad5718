//! Per-iteration latency recording for the benches whose figure is a median and a p99 rather
//! than criterion's per-batch estimate: a fixed number of timed iterations after a warm-up,
//! summarized with the same nearest-rank rule as `benches/peers/langgraph/pause_resume.py`,
//! printed, and written as JSON for `benches/compare` when `APPROVALS_BENCH_JSON_DIR` is set.
//!
//! `APPROVALS_BENCH_QUICK=1` divides the iteration counts by ten (smoke runs).

use std::time::Duration;

use serde_json::{Value, json};

/// Where `benches/compare` wants the JSON summaries.
pub const JSON_DIR_ENV: &str = "APPROVALS_BENCH_JSON_DIR";
/// Set to `1` for a smoke run with a tenth of the iterations.
pub const QUICK_ENV: &str = "APPROVALS_BENCH_QUICK";

/// `full` iterations, or a tenth of them (at least 20) in a quick run.
pub fn iterations(full: usize) -> usize {
    if std::env::var(QUICK_ENV).is_ok_and(|v| v == "1") {
        (full / 10).max(20)
    } else {
        full
    }
}

/// Median, p99 and mean of some samples, in microseconds.
pub fn summary(samples: &[Duration]) -> Value {
    assert!(!samples.is_empty(), "no samples to summarize");
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let median = if n % 2 == 1 {
        us[n / 2]
    } else {
        (us[n / 2 - 1] + us[n / 2]) / 2.0
    };
    let p99 = us[((n as f64 * 0.99) as usize).min(n - 1)];
    json!({
        "n": n,
        "median_us": median,
        "p99_us": p99,
        "mean_us": us.iter().sum::<f64>() / n as f64,
        "max_us": us[n - 1],
    })
}

/// Prints one line per measurement and, when asked, writes `<dir>/<bench>.json` holding
/// `{"bench": .., "results": {name: summary, ..}, ..extra}`.
pub fn report(bench: &str, results: &[(String, Value)], extra: Value) {
    for (name, s) in results {
        let us = |key: &str| s[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{bench}/{name}: n={} median={:.1} us p99={:.1} us max={:.1} us",
            s["n"],
            us("median_us"),
            us("p99_us"),
            us("max_us")
        );
    }
    let Ok(dir) = std::env::var(JSON_DIR_ENV) else {
        return;
    };
    let mut doc = json!({
        "bench": bench,
        "results": results.iter().cloned().collect::<serde_json::Map<String, Value>>(),
    });
    if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
        doc.extend(extra);
    }
    let path = std::path::Path::new(&dir).join(format!("{bench}.json"));
    let text = serde_json::to_string_pretty(&doc).expect("JSON");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        panic!("could not write {}: {e}", path.display());
    }
    println!("{bench}: wrote {}", path.display());
}
