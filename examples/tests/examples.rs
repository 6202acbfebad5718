//! Runs the pager, postgres_replicas, slack and teams examples as a user would (the real
//! binaries, one command each) and checks what they print and how they exit.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use approvals_testkit::pg::postgres_url;

const SLACK_VARS: [&str; 8] = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_ID",
    "SLACK_TEAM_ID",
    "SLACK_CHANNEL_ID",
    "SLACK_REVIEWERS",
    "SLACK_APP_TOKEN",
    "SLACK_LISTEN",
];
const TEAMS_VARS: [&str; 7] = [
    "TEAMS_APP_ID",
    "TEAMS_APP_SECRET",
    "TEAMS_TENANT_ID",
    "TEAMS_SERVICE_URL",
    "TEAMS_CONVERSATION_ID",
    "TEAMS_REVIEWERS",
    "TEAMS_LISTEN",
];

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    fn assert_success(&self) {
        assert!(
            self.status.success(),
            "exited with {}:\n{}",
            self.status,
            self.all()
        );
    }

    fn assert_stdout_has(&self, expected: &[&str]) {
        for e in expected {
            assert!(self.stdout.contains(e), "missing {e:?} in:\n{}", self.all());
        }
    }

    /// Where `needle` first appears in stdout (panics when absent).
    fn at(&self, needle: &str) -> usize {
        self.stdout
            .find(needle)
            .unwrap_or_else(|| panic!("missing {needle:?} in:\n{}", self.all()))
    }
}

/// Runs `command` to completion, killing it (and failing) after a generous deadline.
fn run(mut command: Command) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the example did not finish within 180 s:\n--- stdout\n{}\n--- stderr\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout read"),
        stderr: stderr.join().expect("stderr read"),
    }
}

/// A command for an example binary with none of the given variables inherited.
fn example(bin: &str, without: &[&str]) -> Command {
    let mut command = Command::new(bin);
    for var in without {
        command.env_remove(var);
    }
    command
}

#[test]
fn pager_pages_escalates_and_runs_the_action_a_human_approved() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_pager")));
    out.assert_success();
    out.assert_stdout_has(&[
        "[pager] incident #1 triggered: approve database.failover on postgres://prod/orders?",
        "[priya's phone] BZZZ incident #1",
        "(Priya is on a flight; nobody answers)",
        "[pager] incident #1 acknowledged by Sam",
        "[sam] approved through the approvals API; the request is now ",
        "[agent] done: orders-replica-2 is the primary",
        // The receiver authenticates before it believes anything.
        "[attacker] forged 'approved' delivery -> HTTP 401",
        "[pager] refused a delivery (HTTP 401): webhook signature does not match",
        "[attacker] replayed a captured delivery -> HTTP 204",
        "was already handled; acknowledged, not acted on again",
        // `approval.resolved` closed the page.
        "resolved: the action ran (approved by Sam (SRE on-call))",
    ]);
    // First the primary on-call, then (without an answer) the escalation and Sam.
    let priya = out.at("[pager] incident #1 paged Priya (db-oncall)");
    let escalated =
        out.at("[pager] incident #1 escalated: no decision from db-oncall; paging sre-oncall");
    let sam = out.at("[pager] incident #1 paged Sam (sre-oncall)");
    // The replayed copy of the first delivery was acknowledged, not acted on: one page each.
    assert_eq!(
        out.stdout
            .matches("[pager] incident #1 paged Priya")
            .count(),
        1,
        "the replay paged again:\n{}",
        out.all()
    );
    assert!(
        priya < escalated && escalated < sam,
        "pages out of order:\n{}",
        out.all()
    );
    // The audit trail: escalated, then Sam's review, then the grant, then the action.
    let trail = out.at("Audit trail (");
    let order = [
        "escalated        to sre-oncall",
        "reviewed         approve by sam@example.com via",
        "grant_issued",
        "executed         ok",
    ]
    .map(|line| {
        trail
            + out.stdout[trail..]
                .find(line)
                .unwrap_or_else(|| panic!("no {line:?} in the trail:\n{}", out.all()))
    });
    assert!(
        order.is_sorted(),
        "audit trail out of order:\n{}",
        out.all()
    );
    assert_eq!(out.stdout.matches("promoting orders-replica-2").count(), 1);
    assert!(!out.stdout.contains("[priya] approved"), "{}", out.all());
}

#[test]
fn postgres_replicas_without_a_url_says_what_to_set() {
    let out = run(example(
        env!("CARGO_BIN_EXE_postgres_replicas"),
        &["APPROVALS_POSTGRES_URL"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("APPROVALS_POSTGRES_URL is not set")
            && out
                .stderr
                .contains("APPROVALS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test"),
        "{}",
        out.all()
    );
    assert!(out.stdout.is_empty(), "{}", out.all());
}

#[test]
fn postgres_replicas_share_one_queue_wake_by_notify_and_expire_once() {
    let Some(url) =
        postgres_url("postgres_replicas_share_one_queue_wake_by_notify_and_expire_once")
    else {
        return;
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_postgres_replicas"));
    command.env("APPROVALS_POSTGRES_URL", &url);
    let out = run(command);
    out.assert_success();
    out.assert_stdout_has(&[
        "[replica B] serving the approvals API at http://127.0.0.1:",
        "[replica A] asked to fail over postgres://prod/orders: request ",
        "[reviewer] replica B's queue shows database.failover on postgres://prod/orders",
        "[reviewer] approved through replica B's API",
        "[replica A] woke up: approved by Sam (DBA)",
        "(it polls once a minute: LISTEN/NOTIFY woke it)",
        "[reviewer] 4 unanswered requests expired, each exactly once, while both replicas swept",
    ]);
    assert_eq!(
        out.stdout.matches("promoting orders-replica-2").count(),
        1,
        "{}",
        out.all()
    );
    // The schema it created is gone.
    let schema = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Dropped schema "))
        .map(|s| s.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| panic!("no 'Dropped schema' line:\n{}", out.all()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let left: i64 = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::postgres::PgConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .expect("query")
    });
    assert_eq!(left, 0, "schema {schema} was left behind");
}

/// The agent's own role reads nothing; the export runs as a role minted for it, which reads
/// the approved columns only and is gone afterwards; the audit shows the credential without its
/// password. Checked again here against the server: no `apr_` role of the run is left.
#[test]
fn credentials_export_runs_as_a_minted_role_that_is_dropped_after() {
    let Some(url) = postgres_url("credentials_export_runs_as_a_minted_role_that_is_dropped_after")
    else {
        return;
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_credentials"));
    command.env("APPROVALS_POSTGRES_URL", &url);
    let out = run(command);
    out.assert_success();
    out.assert_stdout_has(&[
        "[agent] as its own role: permission denied",
        "[sam] approving data.export on postgres://example/",
        "[agent] running as apr_",
        "(SELECT (id, customer, amount) on ",
        "[agent]   exported invoice 1: acme 1200",
        "[agent]   exported invoice 3: initech 990",
        "[agent] card numbers (not approved): ",
        "[agent] deleting (not approved): ",
        "[gate] role apr_",
        "dropped after the export",
        "[agent] logging in with the used credential again: ",
        "credential_issued",
        "credential_revoked",
    ]);
    assert!(
        out.at("credential_issued") < out.at("executed")
            && out.at("executed") < out.at("credential_revoked"),
        "{}",
        out.all()
    );
    let role = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("[agent] running as "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no role in the output:\n{}", out.all()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let left: i64 = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::postgres::PgConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&mut conn)
            .await
            .expect("query")
    });
    assert_eq!(left, 0, "role {role} was left behind");
}

#[test]
fn credentials_without_a_url_says_what_to_set() {
    let out = run(example(
        env!("CARGO_BIN_EXE_credentials"),
        &["APPROVALS_POSTGRES_URL"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    assert!(
        out.stderr
            .contains("APPROVALS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test"),
        "{}",
        out.all()
    );
}

/// The list of missing variables in a refusal: between "first:" and "optional:".
fn missing_list(stderr: &str) -> &str {
    let start = stderr.find("first:").map_or(0, |i| i + "first:".len());
    let end = stderr[start..]
        .find("optional:")
        .map_or(stderr.len(), |i| start + i);
    &stderr[start..end]
}

#[test]
fn slack_runs_offline_without_credentials_and_refuses_a_live_run_that_lacks_them() {
    let bin = env!("CARGO_BIN_EXE_slack");

    // Nothing set: the offline demo against the loopback fake, start to finish.
    let out = run(example(bin, &SLACK_VARS));
    out.assert_success();
    out.assert_stdout_has(&[
        "Running offline against a loopback fake of Slack",
        "For a Slack workspace set SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_ID, SLACK_TEAM_ID, SLACK_CHANNEL_ID, SLACK_REVIEWERS",
        "attacker: forged click -> HTTP 401",
        "agent: approved; rotating the key now",
        "agent: done (rotated)",
    ]);

    // --live with nothing set: every required variable named, nothing run.
    let mut live = example(bin, &SLACK_VARS);
    live.arg("--live");
    let out = run(live);
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    let missing = missing_list(&out.stderr);
    for var in &SLACK_VARS[..6] {
        assert!(missing.contains(var), "{var} not named:\n{}", out.all());
    }
    assert!(
        out.stderr.contains("approvals-slack/README.md"),
        "{}",
        out.all()
    );
    assert!(out.stdout.is_empty(), "something ran:\n{}", out.all());

    // Half configured: refused (no silent fall-back to the fake), naming what is missing.
    let mut half = example(bin, &SLACK_VARS);
    half.env("SLACK_BOT_TOKEN", "xoxb-not-a-real-token")
        .env("SLACK_CHANNEL_ID", "C0123456789");
    let out = run(half);
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    let missing = missing_list(&out.stderr);
    for var in [
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_ID",
        "SLACK_TEAM_ID",
        "SLACK_REVIEWERS",
    ] {
        assert!(missing.contains(var), "{var} not named:\n{}", out.all());
    }
    for var in ["SLACK_BOT_TOKEN", "SLACK_CHANNEL_ID"] {
        assert!(!missing.contains(var), "{var} is set:\n{}", out.all());
    }
    assert!(out.stdout.is_empty(), "something ran:\n{}", out.all());
}

#[test]
fn teams_runs_offline_without_credentials_and_refuses_a_live_run_that_lacks_them() {
    let bin = env!("CARGO_BIN_EXE_teams");

    let out = run(example(bin, &TEAMS_VARS));
    out.assert_success();
    out.assert_stdout_has(&[
        "Running offline against loopback fakes of Microsoft's services",
        "For a Microsoft Teams tenant set TEAMS_APP_ID, TEAMS_APP_SECRET, TEAMS_TENANT_ID, TEAMS_SERVICE_URL, TEAMS_CONVERSATION_ID, TEAMS_REVIEWERS",
        "agent: approved; rotating the key now",
        "agent: done (rotated)",
    ]);
    let dana = out.at("teams: dana (the human the agent acts for) clicks Approve");
    let sam = out.at("teams: sam (security) clicks Approve");
    assert!(dana < sam, "{}", out.all());

    let mut live = example(bin, &TEAMS_VARS);
    live.arg("--live");
    let out = run(live);
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    let missing = missing_list(&out.stderr);
    for var in &TEAMS_VARS[..6] {
        assert!(missing.contains(var), "{var} not named:\n{}", out.all());
    }
    assert!(
        out.stderr.contains("approvals-teams/README.md"),
        "{}",
        out.all()
    );
    assert!(out.stdout.is_empty(), "something ran:\n{}", out.all());

    let mut half = example(bin, &TEAMS_VARS);
    half.env("TEAMS_APP_ID", "00000000-0000-4000-8000-0000000000b0");
    let out = run(half);
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    let missing = missing_list(&out.stderr);
    assert!(missing.contains("TEAMS_APP_SECRET"), "{}", out.all());
    assert!(!missing.contains("TEAMS_APP_ID"), "{}", out.all());
    assert!(out.stdout.is_empty(), "something ran:\n{}", out.all());

    // An unknown flag is a usage error that shows the variables.
    let mut bad = example(bin, &TEAMS_VARS);
    bad.arg("--bogus");
    let out = run(bad);
    assert_eq!(out.status.code(), Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("usage: teams [--live | --offline]"),
        "{}",
        out.all()
    );
}
