//! Load: 100,000 pending requests in one process (live heap per pending request, measured by
//! this binary's counting allocator, and RSS), all resolved and checked; and four replica
//! processes on one PostgreSQL schema with 10,000 requests each, deciding each other's requests
//! (throughput, decide-to-wake latency, every request resolved once, audit chain verified).
//!
//! ```sh
//! cargo bench -p approvals-benches --bench load                  # memory, 100,000 requests
//! cargo bench -p approvals-benches --bench load -- memory 20000  # another count
//! APPROVALS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p approvals-benches --bench load -- postgres     # 4 x 10,000
//! cargo bench -p approvals-benches --bench load -- postgres 2000 # 4 x 2,000
//! ```
//!
//! Not a criterion bench: memory is a count, not a timing, and each run is one long
//! scenario. The replicas are this binary re-executed with `__replica`, one process each.
//! Figures and how to read them: BENCHMARKS.md, "Load".

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use approvals_reliability::load::{self, ReplicaOptions, ReplicaReport};
use approvals_testkit::pg::{self, PG_ENV};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn live_bytes() -> usize {
    ALLOCATOR.allocated()
}

const REPLICA_PREFIX: &str = "REPLICA_REPORT ";

fn main() {
    // cargo passes `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number = |i: usize, default: usize| {
        args.get(i)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| fail(&format!("{s:?} is not a number of requests")))
            })
            .unwrap_or(default)
    };
    let result = match args.first().map(String::as_str) {
        None | Some("memory") => memory(number(1, 100_000)),
        Some("postgres") => postgres(4, number(1, 10_000)),
        Some("__replica") => replica(&args),
        Some(other) => Err(format!(
            "unknown mode {other:?}: use `memory [requests]` or `postgres [requests per replica]`"
        )),
    };
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("load bench failed: {message}");
    std::process::exit(1)
}

fn memory(requests: usize) -> Result<(), String> {
    for waiters in [true, false] {
        let report = load::memory_run(requests, waiters, live_bytes)?;
        println!("{report}");
        report.check()?;
        println!("  check: every request resolved exactly once, as planned\n");
    }
    Ok(())
}

fn postgres(replicas: usize, requests: usize) -> Result<(), String> {
    let Some(url) = pg::postgres_url("load -- postgres") else {
        return Ok(());
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let schema = pg::unique_schema("load_bench");
    rt.block_on(load::pg_prepare(&url, &schema))?;
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let start = Instant::now();
    let children: Vec<_> = (0..replicas)
        .map(|r| {
            Command::new(&exe)
                .args(["__replica", &schema])
                .args([r, replicas, requests].map(|n| n.to_string()))
                .env(PG_ENV, &url)
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting replica {r}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (r, mut child) in children.into_iter().enumerate() {
        let mut report = None;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match line.strip_prefix(REPLICA_PREFIX) {
                    Some(json) => report = Some(ReplicaReport::from_json(json)?),
                    None => println!("replica {r}: {line}"),
                }
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        match report {
            Some(report) if status.success() => reports.push(report),
            _ => failures.push(format!("replica {r} exited with {status} without a report")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let summary = if failures.is_empty() {
        rt.block_on(load::pg_summarize(&url, &schema, reports, secs))
    } else {
        Err(failures.join("; "))
    };
    rt.block_on(pg::drop_schema(&url, &schema));
    let summary = summary?;
    println!("{summary}");
    summary.check()?;
    println!(
        "  check: every request resolved exactly once, as planned, decided on another replica"
    );
    Ok(())
}

/// `__replica <schema> <replica> <replicas> <requests>`: one replica process.
fn replica(args: &[String]) -> Result<(), String> {
    let url = std::env::var(PG_ENV).map_err(|_| format!("{PG_ENV} is not set"))?;
    let arg = |i: usize| {
        args.get(i)
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| format!("replica argument {i} missing or not a number"))
    };
    let schema = args.get(1).ok_or("replica: no schema")?.clone();
    let opts = ReplicaOptions {
        url,
        schema,
        replica: arg(2)?,
        replicas: arg(3)?,
        requests: arg(4)?,
        expiring_timeout_secs: 10,
        deadline_secs: 1800,
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let report = rt.block_on(load::pg_replica(opts))?;
    println!("{REPLICA_PREFIX}{}", report.to_json());
    Ok(())
}
