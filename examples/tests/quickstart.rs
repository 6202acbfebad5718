//! Runs the example binaries as a user would: the quickstart is answered at its terminal
//! prompt, or through its review console's API, like a reviewer in a browser or the CLI.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running quickstart whose output is collected as it comes.
struct Quickstart {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
}

impl Quickstart {
    fn start(name: &str) -> Self {
        let db = std::env::temp_dir().join(format!(
            "approvals-quickstart-{name}-{}.db",
            std::process::id()
        ));
        Self::start_on(&format!("sqlite://{}", db.display()))
    }

    fn start_on(url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
            .env("APPROVALS_DB", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("quickstart starts");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = output.clone();
        // Read as it comes, not by lines: the terminal prompt ends without a newline (the
        // reviewer types on the same line), and whether another line follows it depends on
        // which channel printed first.
        std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut chunk = [0u8; 4096];
            let mut undecoded = Vec::new();
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                undecoded.extend_from_slice(&chunk[..n]);
                // A character split between two reads waits for its remaining bytes.
                let complete = match std::str::from_utf8(&undecoded) {
                    Ok(text) => text.len(),
                    Err(e) => e.valid_up_to(),
                };
                let mut out = sink.lock().expect("lock");
                out.push_str(&String::from_utf8_lossy(&undecoded[..complete]));
                undecoded.drain(..complete);
            }
        });
        let stdin = child.stdin.take();
        Quickstart {
            child,
            stdin,
            output,
        }
    }

    fn text(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    /// Waits until `needle` has appeared `times` times.
    fn wait_for(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let text = self.text();
            if text.matches(needle).count() >= times {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("never saw {needle:?} x{times} in:\n{}", self.text());
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("typed");
        stdin.flush().expect("flushed");
    }

    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().expect("quickstart exits");
        // The reader thread may still be draining the pipe.
        std::thread::sleep(Duration::from_millis(100));
        let text = self.text();
        assert!(status.success(), "quickstart failed:\n{text}");
        text
    }
}

const PROMPT: &str = "Type `approve [reason]` or `deny [reason]`";

fn assert_contains_all(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "missing {e:?} in:\n{text}");
    }
}

#[test]
fn quickstart_at_the_terminal_allows_approves_and_refuses_self_approval() {
    let mut q = Quickstart::start("terminal");
    q.wait_for(PROMPT, 1);
    q.type_line("approve report is due");
    // Answer the role grant only after the agent has tried to approve it itself.
    q.wait_for("approving as Dana, on whose behalf it acts", 1);
    q.wait_for(PROMPT, 2);
    q.type_line("deny permanent admin is too broad");
    let text = q.finish();
    assert_contains_all(
        &text,
        &[
            "Review console: http://127.0.0.1:",
            "read 1204 invoices (allowed by policy",
            "this export would run as a login role minted for it: SELECT (email, plan, mrr) on approvals_quickstart.customers",
            "exporting 48210 rows",
            "export done",
            "approving as the agent itself: refused: billing-agent is not a human",
            "reviewed         iam.role.grant",
            "denied           iam.role.grant",
            "approving as Dana, on whose behalf it acts: refused: dana@example.com cannot review",
            "role grant refused: request",
            "denied by Sam (security): permanent admin is too broad",
            "not_human",
            "self_approval",
            "rows, unbroken.",
        ],
    );
    assert!(
        !text.contains("ACCEPTED"),
        "a self-approval was accepted:\n{text}"
    );
    assert!(
        !text.contains("granting billing-admin"),
        "the denied action ran:\n{text}"
    );
}

/// On PostgreSQL the export runs as a role minted for it, which reads the exported columns and
/// nothing else and is gone afterwards; the audit trail records it. A database of its own, so
/// the quickstart's tables and demo schema meet no other test's.
#[test]
fn quickstart_on_postgres_exports_with_a_minted_role() {
    let Some(url) =
        approvals_testkit::pg::postgres_url("quickstart_on_postgres_exports_with_a_minted_role")
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let name = format!("approvals_quickstart_{}", std::process::id());
    let admin = |sql: String| {
        let url = url.clone();
        runtime.block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::postgres::PgConnection::connect(&url)
                .await
                .expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("admin statement");
        })
    };
    admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    admin(format!("CREATE DATABASE {name}"));
    let mut db_url: url::Url = url.parse().expect("postgres URL");
    db_url.set_path(&name);

    let mut q = Quickstart::start_on(db_url.as_str());
    q.wait_for(PROMPT, 1);
    q.type_line("approve report is due");
    q.wait_for(PROMPT, 2);
    q.type_line("deny not today");
    let text = q.finish();
    admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    assert_contains_all(
        &text,
        &[
            "[agent] exporting as apr_",
            "a role minted for this export: SELECT (email, plan, mrr) on approvals_quickstart.customers until ",
            "[agent] exported 3 rows to s3://finance-reports/churn.csv",
            "[agent] reading card numbers as that role: ",
            "permission denied",
            "export done",
            "credential_issued",
            "credential_revoked",
            "Audit chain in the database verified",
        ],
    );
    let role = text
        .lines()
        .find_map(|l| l.split("[agent] exporting as ").nth(1))
        .and_then(|l| l.split(',').next())
        .expect("role printed")
        .to_owned();
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
    assert_eq!(left, 0, "role {role} outlived the export");
}

#[test]
fn quickstart_requests_can_be_decided_through_the_review_console() {
    let mut q = Quickstart::start("console");
    let text = q.wait_for(PROMPT, 1);
    let base = text
        .lines()
        .find_map(|l| l.strip_prefix("Review console: "))
        .and_then(|l| l.split("console").next())
        .expect("console URL printed")
        .to_owned();
    let token = text
        .lines()
        .find_map(|l| l.split("with token ").nth(1))
        .map(|t| t.trim_end_matches(')').to_owned())
        .expect("token printed");
    let link = |text: &str, n: usize| -> approvals_core::RequestId {
        let id = text
            .lines()
            .filter_map(|l| l.split("/console/requests/").nth(1))
            .nth(n)
            .expect("review link printed");
        approvals_core::RequestId::parse(id.trim()).expect("request id")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client =
        approvals_http::ApiClient::http(base.parse().expect("url"), Some(token)).expect("client");

    // The export is approved by Sam through the API, exactly as the browser form does. Its
    // review link comes from another channel than the prompt, in either order.
    let export = link(&q.wait_for("/console/requests/", 1), 0);
    runtime.block_on(async {
        let view = client.get(export).await.expect("request visible");
        client
            .decide(
                export,
                true,
                Some("approved in the console"),
                Some(view.digest),
            )
            .await
            .expect("approved");
    });
    // The terminal prompt steps aside, and the role grant is denied at the terminal.
    let text = q.wait_for("approving as Dana, on whose behalf it acts", 1);
    assert!(text.contains("decided in another channel"), "{text}");
    q.wait_for(PROMPT, 2);
    let role = link(&q.wait_for("/console/requests/", 2), 1);
    assert_ne!(role, export);
    q.type_line("deny not today");
    let text = q.finish();
    assert_contains_all(
        &text,
        &[
            "exporting 48210 rows",
            "approve by sam@example.com (approved in the console)",
            "denied by Sam (security): not today",
            "Audit chain in the database verified",
        ],
    );
}

#[test]
fn policy_walkthrough_explains_each_decision_and_a_malformed_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_policy"))
        .output()
        .expect("policy example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_contains_all(
        &stdout,
        &[
            "warehouse.read   db://prod/orders       allow (rule reads)",
            "deny (rule no-prod-drops): Dropping production tables",
            "needs 1 approval(s) from group dba within 2h (rule schema-changes)",
            "allow (rule small-exports)",
            "needs 2 approval(s) from group data-owners within 30m (rule large-exports), reason required, escalates to security-oncall after 15m",
            "deny (rule default): no policy rule matched",
            "at line 4, column 1",
            "needs approvers",
        ],
    );
}
