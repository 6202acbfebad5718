//! Runs the quickstart binary as a user would, answering its prompts through stdin.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn quickstart_runs_allowed_approved_and_self_approval_refused_paths() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quickstart starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"approve report is due\ndeny permanent admin is too broad\n")
        .expect("answers written");
    let out = child.wait_with_output().expect("quickstart finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "read 1204 invoices (allowed by policy",
        "exporting 48210 rows",
        "export done",
        "approving as the agent itself: refused",
        "approving as Dana, on whose behalf it acts: refused",
        "role grant refused: request",
        "denied by Sam (security): permanent admin is too broad",
        "review_rejected  iam.role.grant",
        "self_approval",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("ACCEPTED"),
        "a self-approval was accepted:\n{stdout}"
    );
    assert!(
        !stdout.contains("granting billing-admin"),
        "the denied action ran:\n{stdout}"
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
    for expected in [
        "warehouse.read   db://prod/orders       allow (rule reads)",
        "deny (rule no-prod-drops): Dropping production tables",
        "needs 1 approval(s) from group dba within 2h (rule schema-changes)",
        "allow (rule small-exports)",
        "needs 2 approval(s) from group data-owners within 30m (rule large-exports), reason required, escalates to security-oncall after 15m",
        "deny (rule default): no policy rule matched",
        "at line 4, column 1",
        "needs approvers",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
