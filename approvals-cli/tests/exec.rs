//! `approvals exec`: the real binary as a CI step would run it, on a real SQLite file (and
//! PostgreSQL when `APPROVALS_TEST_POSTGRES_URL` is set), with reviewers deciding through a
//! gate on the same database or the `approvals approve` command.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use approvals_core::Store as _;
use approvals_core::{
    Gate, Preview, Principal, RequestRecord, RequestState, Review, ReviewError, StaticPolicy,
};
use approvals_http::TokenHash;
use approvals_store_sql::SqlStore;

const BIN: &str = env!("CARGO_BIN_EXE_approvals");

/// Exit codes documented in `approvals exec --help`.
const DENIED: i32 = 170;
const EXPIRED: i32 = 171;
const REFUSED: i32 = 172;
const CANCELLED: i32 = 173;
const UNAVAILABLE: i32 = 174;
const USAGE: i32 = 175;

const SAM_TOKEN: &str = "tok-sam-sre";

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "deploys-need-sre"
kind = "deploy.*"
effect = "require_approval"
approvers = { groups = ["sre"] }
quorum = 1
timeout = "10m"

[[rules]]
name = "nobody-answers"
kind = "flaky.deploy"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "1s"

[[rules]]
name = "slow-reviewers"
kind = "slow.deploy"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "20s"
remind_at = ["10%"]

[[rules]]
name = "no-second-asking"
kind = "risky.deploy"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "10m"
cooldown_after_denial = "1h"

[[rules]]
name = "release-trains"
kind = "train.deploy"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "10m"
standing_grant_max = "1h"

[[rules]]
name = "canaries"
kind = "canary.deploy"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "10m"
editable = ["command", "ticket"]

[[rules]]
name = "freeze"
kind = "db.drop"
effect = "deny"
reason = "no drops during the freeze"
"#;

/// A temporary directory with the database, the policy, the reviewers' token file, and a
/// gate on the same database to review through.
struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    store: SqlStore,
    reviewers: Gate,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
        let store = SqlStore::connect(&url).await.expect("sqlite");
        Self::with(dir, url, store)
    }

    fn with(dir: tempfile::TempDir, url: String, store: SqlStore) -> Fixture {
        std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy");
        std::fs::write(
            dir.path().join("tokens.toml"),
            format!(
                "[[token]]\nsha256 = \"{}\"\nprincipal = {{ kind = \"human\", id = \"sam@example.com\", groups = [\"sre\"] }}\n",
                TokenHash::of(SAM_TOKEN).to_hex()
            ),
        )
        .expect("tokens");
        // The reviewers' side never submits; it decides on what exec stored.
        let reviewers = Gate::builder()
            .policy(StaticPolicy::new(approvals_core::Decision::Deny {
                rule: "review-only".into(),
                reason: "reviews only".into(),
            }))
            .store(store.clone())
            .audit(store.audit_sink())
            .build()
            .expect("gate");
        Fixture {
            dir,
            url,
            store,
            reviewers,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `approvals exec --db .. --policy .. <flags> -- <command>`, started.
    fn exec(&self, flags: &[&str], command: &[&str], env: &[(&str, &str)]) -> Child {
        let mut cmd = self.command(flags, command, env);
        cmd.stdin(Stdio::null());
        cmd.spawn().expect("start approvals exec")
    }

    fn command(&self, flags: &[&str], command: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("exec")
            .args(["--db", &self.url, "--policy"])
            .arg(self.path("policy.toml"))
            .args(flags)
            .arg("--")
            .args(command)
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "APPROVALS_TOKEN",
            "APPROVALS_SERVER",
            "APPROVALS_STORE",
            "APPROVALS_DB",
            "APPROVALS_POLICY",
            "APPROVALS_AUDIT",
            "APPROVALS_AUDIT_KEY",
            "APPROVALS_AGENT",
            "APPROVALS_ON_BEHALF_OF",
            "APPROVALS_REVIEW_URL",
            "GITHUB_ACTOR",
            "GITLAB_USER_LOGIN",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The one pending request of `kind`, once exec has stored it (bounded poll).
    async fn pending(&self, kind: &str, exec: &mut Child) -> RequestRecord {
        for _ in 0..600 {
            let pending = self.reviewers.pending().await.expect("store");
            let mine: Vec<_> = pending
                .into_iter()
                .filter(|r| r.request.kind == kind)
                .collect();
            if let [one] = mine.as_slice() {
                return one.clone();
            }
            assert!(mine.len() < 2, "one request per exec: {mine:?}");
            if let Some(status) = exec.try_wait().expect("try_wait") {
                panic!("exec ended ({status}) before its request was pending");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no pending {kind} request after 30 s");
    }

    /// The request `digest` names, pending, from all pending requests.
    async fn pending_all(&self, kind: &str, n: usize) -> Vec<RequestRecord> {
        for _ in 0..600 {
            let mine: Vec<_> = self
                .reviewers
                .pending()
                .await
                .expect("store")
                .into_iter()
                .filter(|r| r.request.kind == kind)
                .collect();
            if mine.len() == n {
                return mine;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} pending {kind} requests after 30 s");
    }

    async fn decide(&self, record: &RequestRecord, approve: bool, reason: &str) {
        let sam = Principal::human("sam@example.com").with_groups(["sre"]);
        let review = if approve {
            Review::approve(sam)
        } else {
            Review::deny(sam)
        };
        self.reviewers
            .decide(record.id, review.reason(reason).for_digest(record.digest))
            .await
            .expect("decided");
    }

    async fn record(&self, record: &RequestRecord) -> RequestRecord {
        self.reviewers
            .get(record.id)
            .await
            .expect("store")
            .expect("record")
    }

    /// The request's audit events as JSON, from the database's audit table.
    async fn events(&self, record: &RequestRecord) -> Vec<serde_json::Value> {
        self.store
            .audit_sink()
            .events_for(record.id)
            .await
            .expect("audit")
            .iter()
            .map(|e| serde_json::to_value(e).expect("json"))
            .collect()
    }

    fn marker(&self) -> Option<String> {
        std::fs::read_to_string(self.path("ran.txt")).ok()
    }
}

/// Waits for the process to end (bounded) and collects its output.
async fn finish(child: Child) -> Output {
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("approvals exec ended within 60 s")
        .expect("task")
        .expect("output")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    )
}

fn event<'a>(events: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    events.iter().find(|e| e["event"] == name)
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("pid");
    rustix::process::kill_process(pid, signal).expect("signal");
}

/// A command that records each run in ran.txt and prints to both streams.
const RECORDING: &[&str] = &[
    "sh",
    "-c",
    r#"echo run >> ran.txt; read line; echo "out $1 $line"; echo "to stderr" >&2; exit "$2""#,
    "sh",
];

async fn approved_run(fx: &Fixture, exit: &str, via_cli: bool) -> (Output, RequestRecord) {
    let mut command = RECORDING.to_vec();
    command.extend(["1.4.2", exit]);
    let mut cmd = fx.command(
        &[
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
            "--param",
            "version=1.4.2",
            "--param",
            "initiator=root",
            "--justification",
            "release train 42",
            "--on-behalf-of",
            "dana@example.com",
        ],
        &command,
        &[("GITHUB_ACTOR", "someone-else")],
    );
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("exec");
    let record = fx.pending("deploy.production", &mut child).await;
    if via_cli {
        let out = Command::new(BIN)
            .args(["approve", &record.id.to_string(), "--reason", "go"])
            .args(["--store", &fx.url, "--tokens"])
            .arg(fx.path("tokens.toml"))
            .env("APPROVALS_TOKEN", SAM_TOKEN)
            .env_remove("APPROVALS_SERVER")
            .current_dir(fx.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("approvals approve");
        assert_eq!(code(&out), 0, "approve: {}", text(&out));
    } else {
        fx.decide(&record, true, "go").await;
    }
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"from-stdin\n").expect("write stdin");
    drop(stdin);
    (finish(child).await, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_runs_once_with_its_streams_and_exit_code_and_is_audited() {
    let fx = Fixture::sqlite().await;
    let (out, record) = approved_run(&fx, "0", true).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out 1.4.2 from-stdin\n",
        "stdout is the command's alone: {}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("to stderr"), "{}", text(&out));
    assert!(
        err.contains(&format!("request {} needs approval", record.id)),
        "{}",
        text(&out)
    );
    assert!(
        err.contains("approved by sam@example.com"),
        "{}",
        text(&out)
    );
    assert_eq!(fx.marker().as_deref(), Some("run\n"), "ran exactly once");

    // What was approved: the parameters, the exact command line, the configured initiator.
    assert_eq!(record.request.params["version"], "1.4.2");
    assert_eq!(
        record.request.params["command"],
        serde_json::json!(["sh", "-c", RECORDING[2], "sh", "1.4.2", "0"])
    );
    let initiator = record.request.initiator.as_deref().expect("initiator");
    assert_eq!(initiator.principal.id, "ci");
    assert_eq!(
        initiator.on_behalf_of.as_ref().map(|p| p.id.as_str()),
        Some("dana@example.com"),
        "--on-behalf-of wins over GITHUB_ACTOR; --param initiator is only a parameter"
    );
    assert_eq!(
        record.request.justification.as_deref(),
        Some("release train 42")
    );

    let done = fx.record(&record).await;
    assert_eq!(done.state, RequestState::Executed);
    let events = fx.events(&record).await;
    let executed = event(&events, "executed").expect("executed event");
    assert_eq!(executed["ok"], true, "{executed}");
    assert!(event(&events, "grant_consumed").is_some());

    // A non-zero exit: returned as exec's own code, recorded as failed.
    let fx = Fixture::sqlite().await;
    let (out, record) = approved_run(&fx, "3", false).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(fx.marker().as_deref(), Some("run\n"));
    assert_eq!(fx.record(&record).await.state, RequestState::Failed);
    let events = fx.events(&record).await;
    let executed = event(&events, "executed").expect("executed event");
    assert_eq!(executed["ok"], false, "{executed}");
    assert!(
        executed["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with status 3")),
        "{executed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_is_not_run_and_says_who_and_why() {
    let fx = Fixture::sqlite().await;
    let mut child = fx.exec(
        &[
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
        ],
        &["sh", "-c", "echo run >> ran.txt"],
        &[],
    );
    let record = fx.pending("deploy.production", &mut child).await;
    fx.decide(&record, false, "not during the freeze").await;
    let out = finish(child).await;
    assert_eq!(code(&out), DENIED, "{}", text(&out));
    assert!(
        stderr(&out).contains("denied by sam@example.com: not during the freeze"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert_eq!(fx.marker(), None, "a denied command never runs");
    let events = fx.events(&record).await;
    assert!(event(&events, "denied").is_some());
    assert!(event(&events, "executed").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_refused_by_policy_are_not_run() {
    let fx = Fixture::sqlite().await;
    // Nobody answers within the rule's 1 s timeout: exec's own wait expires the request.
    let out = finish(fx.exec(
        &["--kind", "flaky.deploy", "--resource", "svc://payments"],
        &["sh", "-c", "echo run >> ran.txt"],
        &[],
    ))
    .await;
    assert_eq!(code(&out), EXPIRED, "{}", text(&out));
    assert!(stderr(&out).contains("expired"), "{}", text(&out));
    assert_eq!(fx.marker(), None);
    let all = fx
        .store
        .list(&approvals_core::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, RequestState::Expired);

    let out = finish(fx.exec(
        &["--kind", "db.drop", "--resource", "db://prod/customers"],
        &["sh", "-c", "echo run >> ran.txt"],
        &[],
    ))
    .await;
    assert_eq!(code(&out), REFUSED, "{}", text(&out));
    assert!(
        stderr(&out).contains(r#"refused by policy rule "freeze": no drops during the freeze"#),
        "{}",
        text(&out)
    );
    assert_eq!(fx.marker(), None);
    assert!(fx.reviewers.pending().await.expect("store").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_and_param_env_values_are_what_is_approved() {
    let fx = Fixture::sqlite().await;
    let flags = [
        "--kind",
        "deploy.production",
        "--resource",
        "svc://payments",
        "--param-env",
        "DEPLOY_TARGET",
    ];
    let run = |arg: &'static str| -> Vec<&'static str> {
        vec![
            "sh",
            "-c",
            "echo \"$1 $DEPLOY_TARGET\" >> ran.txt",
            "sh",
            arg,
        ]
    };
    let secret = [("UNNAMED_SECRET", "hunter2")];
    let mut a = fx.exec(&flags, &run("v1"), &[("DEPLOY_TARGET", "blue"), secret[0]]);
    let first = fx.pending("deploy.production", &mut a).await;
    let b = fx.exec(&flags, &run("v1"), &[("DEPLOY_TARGET", "green"), secret[0]]);
    let c = fx.exec(&flags, &run("v2"), &[("DEPLOY_TARGET", "blue"), secret[0]]);
    let all = fx.pending_all("deploy.production", 3).await;
    let find = |target: &str, arg: &str| {
        all.iter()
            .find(|r| {
                r.request.params["env"]["DEPLOY_TARGET"] == target
                    && r.request.params["command"][4] == arg
            })
            .cloned()
            .expect("request")
    };
    let (ra, rb, rc) = (find("blue", "v1"), find("green", "v1"), find("blue", "v2"));
    assert_eq!(ra.id, first.id);
    assert_ne!(
        ra.digest, rb.digest,
        "a changed --param-env value is another action"
    );
    assert_ne!(ra.digest, rc.digest, "a changed argument is another action");
    assert_ne!(rb.digest, rc.digest);
    for r in &all {
        let params = r.request.params.to_string();
        assert!(
            !params.contains("hunter2"),
            "only named variables: {params}"
        );
        assert_eq!(
            r.request.params["env"].as_object().map(|o| o.len()),
            Some(1)
        );
    }

    // Approval given for one action does not carry over to the changed ones.
    let sam = Principal::human("sam@example.com").with_groups(["sre"]);
    let reused = fx
        .reviewers
        .decide(rb.id, Review::approve(sam).for_digest(ra.digest))
        .await;
    assert!(
        matches!(reused, Err(ReviewError::DigestMismatch { .. })),
        "{reused:?}"
    );
    fx.decide(&ra, true, "blue v1 is fine").await;
    let out = finish(a).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(fx.marker().as_deref(), Some("v1 blue\n"));
    assert_eq!(fx.record(&rb).await.state, RequestState::Pending);
    assert_eq!(fx.record(&rc).await.state, RequestState::Pending);

    fx.decide(&rb, false, "not green").await;
    fx.decide(&rc, false, "not v2").await;
    assert_eq!(code(&finish(b).await), DENIED);
    assert_eq!(code(&finish(c).await), DENIED);
    assert_eq!(
        fx.marker().as_deref(),
        Some("v1 blue\n"),
        "only the approved one ran"
    );

    // An unset --param-env variable: a clear error, and nothing is submitted.
    let out = finish(fx.exec(
        &[
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
            "--param-env",
            "NOT_SET_ANYWHERE",
        ],
        &["sh", "-c", "echo run >> ran.txt"],
        &[],
    ))
    .await;
    assert_eq!(code(&out), USAGE, "{}", text(&out));
    assert!(
        stderr(&out).contains("--param-env NOT_SET_ANYWHERE: the variable is not set"),
        "{}",
        text(&out)
    );
    let requests = fx
        .store
        .list(&approvals_core::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(requests.len(), 3, "nothing new was submitted");
}

/// `--preview-dry-run` and `--preview-diff`: the file's text is shown to reviewers and bound
/// to the approval, so the same command with another plan is another action; a file that
/// cannot be a preview is a usage error and nothing is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_file_is_shown_and_bound_to_the_approval() {
    let fx = Fixture::sqlite().await;
    let flags = |file: &'static str| {
        vec![
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
            "--preview-dry-run",
            file,
        ]
    };
    let run = ["sh", "-c", "echo applied >> ran.txt"];
    std::fs::write(fx.path("plan-a.txt"), "Plan: 1 to change, 0 to destroy.\n").expect("plan");
    std::fs::write(fx.path("plan-b.txt"), "Plan: 0 to change, 9 to destroy.\n").expect("plan");
    let mut a = fx.exec(&flags("plan-a.txt"), &run, &[]);
    let first = fx.pending("deploy.production", &mut a).await;
    assert_eq!(
        first.request.context.preview,
        Some(Preview::dry_run("Plan: 1 to change, 0 to destroy.\n"))
    );
    let b = fx.exec(&flags("plan-b.txt"), &run, &[]);
    let all = fx.pending_all("deploy.production", 2).await;
    let other = all
        .iter()
        .find(|r| r.id != first.id)
        .cloned()
        .expect("the second request");
    assert_ne!(other.digest, first.digest, "another plan is another action");
    let sam = Principal::human("sam@example.com").with_groups(["sre"]);
    let reused = fx
        .reviewers
        .decide(other.id, Review::approve(sam).for_digest(first.digest))
        .await;
    assert!(
        matches!(reused, Err(ReviewError::DigestMismatch { .. })),
        "{reused:?}"
    );
    fx.decide(&first, true, "one change is fine").await;
    let out = finish(a).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    fx.decide(&other, false, "nine destroys is not").await;
    assert_eq!(code(&finish(b).await), DENIED);
    assert_eq!(
        fx.marker().as_deref(),
        Some("applied\n"),
        "only the approved plan ran"
    );

    std::fs::write(fx.path("binary.bin"), [0xff, 0xfe, 0x00]).expect("file");
    std::fs::write(fx.path("huge.txt"), "x".repeat(300 * 1024)).expect("file");
    for (args, says) in [
        (vec!["--preview-diff", "binary.bin"], "not UTF-8 text"),
        (vec!["--preview-diff", "missing.diff"], "missing.diff"),
        (
            vec!["--preview-dry-run", "huge.txt"],
            "larger than the request limit",
        ),
        (
            vec![
                "--preview-diff",
                "plan-a.txt",
                "--preview-dry-run",
                "plan-a.txt",
            ],
            "cannot be used with",
        ),
    ] {
        let mut flags = vec![
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
        ];
        flags.extend(args.iter().copied());
        let out = finish(fx.exec(&flags, &run, &[])).await;
        assert_eq!(code(&out), USAGE, "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", text(&out));
    }
    let requests = fx
        .store
        .list(&approvals_core::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(requests.len(), 2, "nothing new was submitted");
}

/// A waiting pipeline is told when its reviewers were reminded and nobody has reviewed the
/// request yet (in a log, not only on a terminal), and still waits for the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_is_told_when_nobody_has_reviewed_at_a_reminder() {
    let fx = Fixture::sqlite().await;
    let mut exec = fx.exec(
        &["--kind", "slow.deploy", "--resource", "svc://payments"],
        &["sh", "-c", "echo ran >> ran.txt"],
        &[],
    );
    let pending = fx.pending("slow.deploy", &mut exec).await;
    // The waiting exec drives the reminder at 10% of 20 s, and looks at its request each second.
    for _ in 0..100 {
        if fx.record(&pending).await.reminded == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fx.record(&pending).await.reminded,
        1,
        "the reminder was sent"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fx.decide(&pending, false, "not today").await;
    let out = finish(exec).await;
    assert_eq!(code(&out), DENIED, "{}", text(&out));
    let told = format!(
        "nobody has reviewed request {} yet; its reviewers were reminded (1 time)",
        pending.id
    );
    assert_eq!(stderr(&out).matches(&told).count(), 1, "{}", text(&out));
    assert!(fx.marker().is_none(), "nothing ran");
}

/// After a denial under `cooldown_after_denial`, running the same command again (reworded,
/// with a new idempotency key) is refused at once with the reviewer's name and reason: exit
/// DENIED, nothing stored, nothing run, nobody asked. Another command is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_after_a_denial_is_refused_at_once() {
    let fx = Fixture::sqlite().await;
    let flags = ["--kind", "risky.deploy", "--resource", "svc://payments"];
    let run = ["sh", "-c", "echo ran >> ran.txt"];
    let mut first = fx.exec(&flags, &run, &[]);
    let pending = fx.pending("risky.deploy", &mut first).await;
    fx.decide(&pending, false, "breaks the \u{1b}[31mbilling freeze")
        .await;
    assert_eq!(code(&finish(first).await), DENIED);

    for extra in [
        &[][..],
        &["--justification", "please, it is urgent"][..],
        &[
            "--idempotency-key",
            "a-new-key",
            "--summary",
            "Something else",
        ][..],
    ] {
        let mut args = flags.to_vec();
        args.extend_from_slice(extra);
        let out = finish(fx.exec(&args, &run, &[])).await;
        assert_eq!(code(&out), DENIED, "{extra:?}: {}", text(&out));
        let said = stderr(&out);
        assert!(
            said.contains("sam@example.com") && said.contains("billing freeze"),
            "{extra:?}: {said}"
        );
        assert!(
            !said.contains('\u{1b}'),
            "the reason is shown inert: {said}"
        );
        assert!(said.contains(&pending.id.to_string()), "{said}");
    }
    let stored = fx
        .store
        .list(&approvals_core::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(stored.len(), 1, "a refused resubmission stores nothing");
    assert!(fx.marker().is_none(), "nothing ran");

    // Another command is another action: asked for.
    let mut other = fx.exec(&flags, &["sh", "-c", "echo other >> ran.txt"], &[]);
    let asked = fx.pending("risky.deploy", &mut other).await;
    assert_ne!(asked.id, pending.id);
    fx.decide(&asked, false, "not this one either").await;
    assert_eq!(code(&finish(other).await), DENIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_waiting_cancels_the_request() {
    let fx = Fixture::sqlite().await;
    for (sig, name) in [
        (rustix::process::Signal::INT, "SIGINT"),
        (rustix::process::Signal::TERM, "SIGTERM"),
    ] {
        let kind = format!("deploy.{}", name.to_lowercase());
        let mut child = fx.exec(
            &["--kind", &kind, "--resource", "svc://payments"],
            &["sh", "-c", "echo run >> ran.txt"],
            &[],
        );
        let record = fx.pending(&kind, &mut child).await;
        signal(&child, sig);
        let out = finish(child).await;
        assert_eq!(code(&out), CANCELLED, "{name}: {}", text(&out));
        assert!(
            stderr(&out).contains(&format!("interrupted by {name}")),
            "{}",
            text(&out)
        );
        let after = fx.record(&record).await;
        assert_eq!(after.state, RequestState::Cancelled, "{name}");
        assert_eq!(
            after.resolution.and_then(|r| r.by).map(|p| p.id),
            Some("ci".to_owned())
        );
        assert!(event(&fx.events(&record).await, "cancelled").is_some());
        assert_eq!(fx.marker(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_running_is_forwarded_and_the_outcome_recorded() {
    let fx = Fixture::sqlite().await;
    let script = r#"trap 'echo stopping; exit 7' TERM; echo started > started.txt; while :; do sleep 0.05; done"#;
    let mut child = fx.exec(
        &[
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
        ],
        &["sh", "-c", script],
        &[],
    );
    let record = fx.pending("deploy.production", &mut child).await;
    fx.decide(&record, true, "go").await;
    let mut started = false;
    for _ in 0..600 {
        if fx.path("started.txt").exists() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the command started");
    signal(&child, rustix::process::Signal::TERM);
    let out = finish(child).await;
    assert_eq!(code(&out), 7, "the command's own code: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stopping\n");
    assert_eq!(fx.record(&record).await.state, RequestState::Failed);
    let events = fx.events(&record).await;
    let executed = event(&events, "executed").expect("executed");
    assert_eq!(executed["ok"], false);
    assert!(
        executed["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with status 7 after SIGTERM was forwarded")),
        "{executed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_or_audit_log_refuses_without_running() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy");
    let run = |db: &str, extra: &[&str]| {
        Command::new(BIN)
            .arg("exec")
            .args(["--db", db, "--policy", "policy.toml"])
            .args(extra)
            .args([
                "--kind",
                "deploy.production",
                "--resource",
                "svc://payments",
            ])
            .args(["--", "sh", "-c", "echo run >> ran.txt"])
            .current_dir(dir.path())
            .env_remove("APPROVALS_SERVER")
            .env_remove("APPROVALS_AUDIT")
            .stdin(Stdio::null())
            .output()
            .expect("exec")
    };
    let missing = dir.path().join("no/such/dir/approvals.db");
    let out = run(&format!("sqlite://{}", missing.display()), &[]);
    assert_eq!(code(&out), UNAVAILABLE, "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot open the store"),
        "{}",
        text(&out)
    );

    let db = format!("sqlite://{}", dir.path().join("ok.db").display());
    let out = run(&db, &["--audit", "no/such/dir/audit.jsonl"]);
    assert_eq!(code(&out), UNAVAILABLE, "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot open the audit log"),
        "{}",
        text(&out)
    );

    #[cfg(feature = "postgres")]
    {
        // Nothing listens on port 1: the connection fails, closed.
        let out = run("postgres://postgres@127.0.0.1:1/none", &[]);
        assert_eq!(code(&out), UNAVAILABLE, "{}", text(&out));
    }
    assert!(!dir.path().join("ran.txt").exists(), "nothing ran");
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_have_their_own() {
    let out = Command::new(BIN)
        .args(["exec", "--help"])
        .output()
        .expect("help");
    assert_eq!(code(&out), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "170  denied",
        "171  expired",
        "172  refused by policy",
        "173  cancelled",
        "174  unavailable",
        "175  usage",
        "176  approved, but the command could not be started",
        "--param-env",
        "GITHUB_ACTOR",
        "GITLAB_USER_LOGIN",
    ] {
        assert!(
            help.contains(needle),
            "exec --help mentions {needle:?}:\n{help}"
        );
    }
    // clap's own argument errors: exec's usage code, not the 2 a command may return.
    let dir = tempfile::tempdir().expect("dir");
    for args in [
        &["exec", "--resource", "x", "--", "true"][..],
        &["exec", "--kind", "k", "--resource", "x"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("exec");
        assert_eq!(code(&out), USAGE, "{args:?}: {}", text(&out));
    }
    let out = Command::new(BIN)
        .args([
            "exec",
            "--kind",
            "k",
            "--resource",
            "x",
            "--policy",
            "p.toml",
        ])
        .args(["--db", "sqlite://x.db", "--", "no-such-program-anywhere"])
        .current_dir(dir.path())
        .env_remove("APPROVALS_SERVER")
        .output()
        .expect("exec");
    assert_eq!(code(&out), USAGE, "{}", text(&out));
    assert!(stderr(&out).contains("not found on PATH"), "{}", text(&out));
    assert!(
        !dir.path().join("x.db").exists(),
        "nothing was opened or submitted"
    );
    assert_eq!(
        code(&Command::new(BIN).arg("frobnicate").output().expect("run")),
        2,
        "other commands keep clap's usage code"
    );
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_on_postgres() {
    use approvals_testkit::pg;
    let Some(base) = pg::postgres_url("approved_on_postgres") else {
        return;
    };
    let schema = pg::unique_schema("exec");
    let store =
        SqlStore::connect_with(approvals_store_sql::SqlStoreOptions::new(&base).schema(&schema))
            .await
            .expect("postgres");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    let fx = Fixture::with(tempfile::tempdir().expect("dir"), url, store);
    let mut child = fx.exec(
        &[
            "--kind",
            "deploy.production",
            "--resource",
            "svc://payments",
        ],
        &["sh", "-c", "echo run >> ran.txt; exit 5"],
        &[],
    );
    let record = fx.pending("deploy.production", &mut child).await;
    fx.decide(&record, true, "go").await;
    let out = finish(child).await;
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert_eq!(fx.marker().as_deref(), Some("run\n"));
    let events = fx.events(&record).await;
    assert_eq!(event(&events, "executed").expect("executed")["ok"], false);
    pg::drop_schema(&base, &schema).await;
}

/// `--server`: the same step through the agent API of a real HTTP server (in this process),
/// its initiator the agent token's principal. Approved runs once with its code; denied says
/// who and why; SIGINT while waiting cancels through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_through_the_agent_api() {
    use approvals_core::{Initiator, RulePolicy};
    use approvals_http::{ReviewServer, Tokens};

    const AGENT_TOKEN: &str = "tok-ci-agent";
    let fx = Fixture::sqlite().await;
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store(fx.store.clone())
        .audit(fx.store.audit_sink())
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    let tokens = Tokens::new().with_initiator(
        AGENT_TOKEN,
        Initiator::agent("ci-deployer").on_behalf_of(Principal::human("dana@example.com")),
    );
    let server = ReviewServer::builder(gate).tokens(tokens).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let base = format!("http://{}/", listener.local_addr().expect("addr"));
    let serving = tokio::spawn(approvals_http::server::serve(
        listener,
        server,
        std::future::pending(),
    ));

    let start = |kind: &str, command: &[&str], token: &str| {
        let mut cmd = fx.command(&[], command, &[("APPROVALS_TOKEN", token)]);
        // Server mode: no --db/--policy, the server's policy decides.
        let mut args: Vec<std::ffi::OsString> =
            vec!["exec".into(), "--server".into(), base.clone().into()];
        args.extend(["--kind", kind, "--resource", "svc://payments", "--"].map(Into::into));
        args.extend(command.iter().map(Into::into));
        let mut plain = Command::new(BIN);
        plain
            .args(args)
            .current_dir(fx.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => plain.env(k, v),
                None => plain.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null());
        plain.spawn().expect("exec --server")
    };

    let mut child = start(
        "deploy.production",
        &["sh", "-c", "echo run >> ran.txt; echo deployed; exit 4"],
        AGENT_TOKEN,
    );
    let record = fx.pending("deploy.production", &mut child).await;
    let initiator = record.request.initiator.as_deref().expect("initiator");
    assert_eq!(
        initiator.principal.id, "ci-deployer",
        "the token's principal"
    );
    fx.decide(&record, true, "go").await;
    let out = finish(child).await;
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deployed\n");
    assert_eq!(fx.marker().as_deref(), Some("run\n"));
    assert_eq!(fx.record(&record).await.state, RequestState::Failed);
    let events = fx.events(&record).await;
    assert_eq!(event(&events, "executed").expect("executed")["ok"], false);

    let mut child = start(
        "deploy.staging",
        &["sh", "-c", "echo run >> ran.txt"],
        AGENT_TOKEN,
    );
    let record = fx.pending("deploy.staging", &mut child).await;
    fx.decide(&record, false, "not during the freeze").await;
    let out = finish(child).await;
    assert_eq!(code(&out), DENIED, "{}", text(&out));
    assert!(
        stderr(&out).contains("denied by sam@example.com: not during the freeze"),
        "{}",
        text(&out)
    );

    let mut child = start(
        "deploy.canary",
        &["sh", "-c", "echo run >> ran.txt"],
        AGENT_TOKEN,
    );
    let record = fx.pending("deploy.canary", &mut child).await;
    signal(&child, rustix::process::Signal::INT);
    let out = finish(child).await;
    assert_eq!(code(&out), CANCELLED, "{}", text(&out));
    assert_eq!(fx.record(&record).await.state, RequestState::Cancelled);

    // A reviewer edits the command before approving: the wait's answer carries it, and only
    // the edited command runs.
    let mut child = start(
        "canary.deploy",
        &["sh", "-c", "echo 10 >> canary.txt"],
        AGENT_TOKEN,
    );
    let record = fx.pending("canary.deploy", &mut child).await;
    let mut params = (*record.request.params).clone();
    params["command"] = serde_json::json!(["sh", "-c", "echo 5 >> canary.txt"]);
    Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store(fx.store.clone())
        .audit(fx.store.audit_sink())
        .build()
        .expect("gate")
        .decide(
            record.id,
            Review::approve(Principal::human("sam@example.com").with_groups(["sre"]))
                .for_digest(record.digest)
                .edit(params),
        )
        .await
        .expect("approved as edited");
    let out = finish(child).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(fx.path("canary.txt"))
            .ok()
            .as_deref(),
        Some("5\n"),
        "only the edited command ran: {}",
        text(&out)
    );
    assert_eq!(fx.record(&record).await.state, RequestState::Executed);

    let out = finish(start(
        "db.drop",
        &["sh", "-c", "echo run >> ran.txt"],
        AGENT_TOKEN,
    ))
    .await;
    assert_eq!(code(&out), REFUSED, "{}", text(&out));
    assert!(stderr(&out).contains("freeze"), "{}", text(&out));
    let out = finish(start("deploy.production", &["true"], "wrong-token")).await;
    assert_eq!(code(&out), USAGE, "{}", text(&out));
    assert_eq!(
        fx.marker().as_deref(),
        Some("run\n"),
        "only the approved command ran"
    );
    serving.abort();
}

/// A standing grant through the CI door: approved for the pipeline's release trains on
/// `svc://*` (one use), it lets the next train run without asking, audited as its use; the
/// train after that is asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_grant_runs_the_next_train_without_asking_then_asks_again() {
    let fx = Fixture::sqlite().await;
    let train = |service: &str| {
        fx.exec(
            &[
                "--kind",
                "train.deploy",
                "--resource",
                &format!("svc://{service}"),
                "--on-behalf-of",
                "dana@example.com",
            ],
            &["sh", "-c", "echo run >> ran.txt"],
            &[],
        )
    };
    let mut first = train("payments");
    let asked = fx.pending("train.deploy", &mut first).await;
    // A human proposes the standing grant for the pipeline that asked, through a gate with
    // the pipeline's policy; the rule's reviewer approves it.
    let proposer = Gate::builder()
        .policy(approvals_core::RulePolicy::from_toml(POLICY).expect("policy"))
        .store(fx.store.clone())
        .audit(fx.store.audit_sink())
        .build()
        .expect("gate");
    let initiator = asked
        .request
        .initiator
        .as_deref()
        .cloned()
        .expect("initiator");
    let grant = proposer
        .propose_standing(
            approvals_core::StandingProposal {
                kind: "train.deploy".into(),
                resource: "svc://*".into(),
                initiator,
                duration: Duration::from_secs(1800),
                uses: 1,
                justification: "release day".into(),
                environment: None,
            },
            Principal::human("kim@example.com"),
        )
        .await
        .expect("proposed");
    let grant = fx
        .reviewers
        .get(grant)
        .await
        .expect("store")
        .expect("record");
    fx.decide(&grant, true, "release day").await;
    fx.decide(&asked, true, "go").await;
    let out = finish(first).await;
    assert_eq!(code(&out), 0, "{}", text(&out));

    let out = finish(train("billing")).await;
    assert_eq!(code(&out), 0, "covered: {}", text(&out));
    assert_eq!(fx.marker().as_deref(), Some("run\nrun\n"));
    let covered: Vec<RequestRecord> = fx
        .store
        .list(&approvals_core::ListFilter {
            kind: Some("train.deploy".into()),
            ..approvals_core::ListFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .filter(|r| r.request.resource == "svc://billing")
        .collect();
    let [covered] = covered.as_slice() else {
        panic!("one request for the billing train: {covered:?}");
    };
    assert_eq!(covered.state, RequestState::Executed);
    let events = fx.events(covered).await;
    let approved = event(&events, "approved_by_standing_grant").expect("approved by the grant");
    assert_eq!(
        approved["standing"],
        serde_json::json!(grant.id.to_string())
    );
    let used = fx.events(&grant).await;
    let used = event(&used, "standing_grant_used").expect("the use");
    assert_eq!(used["request"], serde_json::json!(covered.id.to_string()));
    assert_eq!(
        used["action_digest"],
        serde_json::json!(covered.digest.to_string())
    );

    // Its one use is taken: the next train is asked for, and a deny stops it.
    let mut third = train("search");
    let again = fx.pending("train.deploy", &mut third).await;
    assert_eq!(again.request.resource, "svc://search");
    fx.decide(&again, false, "one was enough").await;
    let out = finish(third).await;
    assert_eq!(code(&out), DENIED, "{}", text(&out));
    assert_eq!(fx.marker().as_deref(), Some("run\nrun\n"));
}

/// Edit on approve through `approvals exec`: a reviewer changes the command line before
/// approving and only the edited command runs; a change to a `--param` value, which the
/// command does not read, runs nothing and exits as refused.
#[tokio::test]
async fn a_reviewers_edit_of_the_command_is_what_runs_and_other_edits_run_nothing() {
    let fx = Fixture::sqlite().await;
    // Reviewers decide through a gate with the pipeline's policy: the policy is asked again
    // about the edited action.
    let reviewers = Gate::builder()
        .policy(approvals_core::RulePolicy::from_toml(POLICY).expect("policy"))
        .store(fx.store.clone())
        .audit(fx.store.audit_sink())
        .build()
        .expect("gate");
    let sam = || Principal::human("sam@example.com").with_groups(["sre"]);
    let canary = |percent: &str| {
        fx.exec(
            &[
                "--kind",
                "canary.deploy",
                "--resource",
                "svc://payments",
                "--param",
                "ticket=OPS-1",
            ],
            &["sh", "-c", &format!("echo {percent} >> ran.txt")],
            &[],
        )
    };

    let mut first = canary("10");
    let asked = fx.pending("canary.deploy", &mut first).await;
    let mut params = (*asked.request.params).clone();
    params["command"] = serde_json::json!(["sh", "-c", "echo 5 >> ran.txt"]);
    reviewers
        .decide(
            asked.id,
            Review::approve(sam())
                .for_digest(asked.digest)
                .edit(params)
                .reason("5% first"),
        )
        .await
        .expect("approved as edited");
    let out = finish(first).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("reviewers changed the command"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fx.marker().as_deref(),
        Some("5\n"),
        "only the edited command ran"
    );
    let done = fx.record(&asked).await;
    assert_eq!(done.state, RequestState::Executed);
    assert_ne!(done.digest, asked.digest);

    let mut second = canary("20");
    let asked = fx.pending("canary.deploy", &mut second).await;
    let mut params = (*asked.request.params).clone();
    params["ticket"] = serde_json::json!("OPS-2");
    reviewers
        .decide(
            asked.id,
            Review::approve(sam()).for_digest(asked.digest).edit(params),
        )
        .await
        .expect("approved as edited");
    let out = finish(second).await;
    assert_eq!(code(&out), REFUSED, "{}", text(&out));
    assert!(text(&out).contains("does not read"), "{}", text(&out));
    assert_eq!(fx.marker().as_deref(), Some("5\n"), "nothing more ran");
    assert_eq!(
        fx.record(&asked).await.state,
        RequestState::Approved,
        "the grant is left unused"
    );
}
