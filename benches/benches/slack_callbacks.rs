//! Slack interaction callbacks through `SlackInteractions::handle`: signature verification
//! (HMAC-SHA256 over the raw body, constant-time compare, timestamp window), replay check,
//! payload parsing, workspace and app checks, and the hand-off of the work to a background
//! task, as Slack's HTTP requests reach it. Each iteration handles a distinct, freshly signed
//! `block_actions` click (signing happens outside the timed part).
//!
//! The background work for these clicks is the refusal path (the clicker is not mapped to a
//! reviewer, the refusal is audited when the request exists, the ephemeral reply is refused
//! locally because its URL is outside the allowed prefix), so no network is involved; it runs
//! on the runtime's other worker while the handler keeps accepting.
//!
//! `cpu/handle_and_process_click` reports CPU time rather than wall time: the CPU nanoseconds
//! the whole process (handler thread and runtime worker) spends per click, including the
//! background processing, read from `/proc/self/task/*/schedstat`. On a shared machine the
//! wall-clock figures mostly measure the other load; the CPU figure does not.
//!
//! Run: `cargo bench -p approvals-benches --bench slack_callbacks`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use approvals_core::{Gate, MemorySink, Requirement, StaticIdentityResolver, StaticPolicy};
use approvals_slack::fake::{self, Clicker};
use approvals_slack::{SigningSecret, SlackClient, SlackInteractions, Token};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const SECRET: &str = "e2b6c3f1d7a94b0c8e5f1a2b3c4d5e6f";

fn interactions(runtime: &tokio::runtime::Runtime) -> SlackInteractions {
    let _guard = runtime.enter();
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .audit(MemorySink::new())
        .build()
        .expect("gate");
    let client = SlackClient::new(Token::new("xoxb-bench")).expect("client");
    SlackInteractions::builder(gate, client, SigningSecret::new(SECRET).expect("secret"))
        .team_id(fake::TEAM_ID)
        .app_id(fake::APP_ID)
        .identities(StaticIdentityResolver::new())
        // Room for every distinct request a bench run signs within the 5-minute window.
        .replay_capacity(4_000_000)
        .build()
        .expect("interactions")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let handler = interactions(&runtime);
    let secret = SigningSecret::new(SECRET).expect("secret");
    let counter = AtomicU64::new(0);
    let clicker = Clicker::new("U0BENCH001");
    let value = format!(
        "{} {}",
        approvals_core::RequestId::new(),
        approvals_core::Digest([7; 32])
    );
    let sign_next = || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let ts = format!("1700000000.{n:06}");
        let payload = clicker.block_actions(
            approvals_slack::blocks::ACTION_APPROVE,
            &value,
            &ts,
            "https://example.invalid/not-a-slack-response-url",
        );
        fake::signed_request(&secret, fake::now(), fake::form_body(&payload))
    };

    let mut group = c.benchmark_group("slack_callbacks");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("handle_verified_click", |b| {
        let _guard = runtime.enter();
        b.iter_batched(
            &sign_next,
            |request| {
                let response = handler.handle(request);
                assert_eq!(response.status(), 200);
                response
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("verify_signature_only", |b| {
        let request = sign_next();
        let ts = request.headers()[approvals_slack::signature::TIMESTAMP_HEADER]
            .to_str()
            .expect("ts")
            .to_owned();
        let sig = request.headers()[approvals_slack::signature::SIGNATURE_HEADER]
            .to_str()
            .expect("sig")
            .to_owned();
        let body = request.body().clone();
        b.iter(|| secret.verify(Some(&ts), Some(&sig), &body).expect("valid"));
    });
    group.bench_function("refuse_forged", |b| {
        let other = SigningSecret::new("forged").expect("secret");
        let _guard = runtime.enter();
        let payload = clicker.block_actions("x", "y", "1.2", "https://example.invalid/");
        let body = fake::form_body(&payload);
        b.iter_batched(
            || fake::signed_request(&other, fake::now(), body.clone()),
            |request| {
                let response = handler.handle(request);
                assert_eq!(response.status(), 401);
                response
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();

    let mut cpu = c.benchmark_group("slack_callbacks/cpu");
    cpu.throughput(Throughput::Elements(1));
    cpu.measurement_time(Duration::from_secs(5));
    cpu.bench_function("handle_and_process_click", |b| {
        let _guard = runtime.enter();
        b.iter_custom(|iters| {
            let requests: Vec<_> = (0..iters).map(|_| sign_next()).collect();
            let wall = Instant::now();
            let before = process_cpu();
            for request in requests {
                let response = handler.handle(request);
                assert_eq!(response.status(), 200);
            }
            // Wait (without spinning) for the background work to finish.
            while runtime.metrics().num_alive_tasks() > 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            match (before, process_cpu()) {
                (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
                _ => wall.elapsed(),
            }
        });
    });
    cpu.finish();
}

/// CPU nanoseconds used so far by all threads of this process.
fn process_cpu() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

criterion_group!(benches, bench);
criterion_main!(benches);
