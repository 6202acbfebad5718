//! Previews bound to the action: a malformed preview is refused before anything is recorded,
//! the digest covers every part of a preview, and the terminal shows a long or hostile preview
//! within bounds with every hidden character visible.

use std::io::Write;
use std::sync::{Arc, Mutex};

use approvals_core::console::ConsoleApprover;
use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, ListFilter, MemorySink, MemoryStore, Preview,
    Principal, Requirement, StaticPolicy, Store, Submission,
};
use serde_json::json;

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 5000}))
}

fn gate(store: Arc<MemoryStore>, audit: Arc<MemorySink>) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store_shared(store)
        .audit_shared(audit)
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate")
}

fn rows(columns: usize, cells: &[usize], total: Option<u64>) -> Preview {
    let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
    Preview::rows(
        names(columns),
        cells.iter().map(|n| names(*n)).collect(),
        total,
    )
}

#[tokio::test]
async fn a_malformed_preview_is_refused_before_anything_is_recorded() {
    let store = Arc::new(MemoryStore::new());
    let audit = Arc::new(MemorySink::new());
    let gate = gate(store.clone(), audit.clone());
    for (preview, says) in [
        (rows(2, &[2, 3], None), "row 2 of the preview has 3 cells"),
        (rows(0, &[], None), "1 to 64 columns"),
        (rows(65, &[], None), "1 to 64 columns"),
        (rows(1, &[1; 1001], None), "at most 1000 rows"),
        (rows(1, &[1, 1], Some(1)), "touches 1"),
    ] {
        match gate.submit(&export().preview(preview)).await {
            Err(GuardError::InvalidRequest(why)) => assert!(why.contains(says), "{why}"),
            other => panic!("a malformed preview must be refused, got {other:?}"),
        }
    }
    assert!(
        store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing was stored"
    );
    let names = audit.names();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.iter().all(|n| *n == "request_refused"), "{names:?}");

    // A well-formed one is asked for, and stored as sent.
    let fine = export().preview(rows(2, &[2, 2], Some(40)));
    let Submission::Pending(id) = gate.submit(&fine).await.expect("submit") else {
        panic!("approval is required");
    };
    let record = store.get(id).await.expect("get").expect("stored");
    assert_eq!(record.request.context.preview, fine.context.preview);
    assert_eq!(record.digest, record.request.digest());
}

#[test]
fn the_digest_covers_every_part_of_a_preview() {
    let base = export().preview(Preview::rows(
        vec!["id".into(), "email".into()],
        vec![vec!["1".into(), "a@example.com".into()]],
        Some(2),
    ));
    let variants = [
        export(),
        export().preview(Preview::diff("")),
        export().preview(Preview::dry_run("")),
        export().preview(Preview::diff("1")),
        export().preview(Preview::dry_run("1")),
        export().preview(Preview::rows(
            vec!["id".into(), "email".into()],
            vec![vec!["1".into(), "a@example.com".into()]],
            None,
        )),
        export().preview(Preview::rows(
            vec!["id".into(), "email".into()],
            vec![vec!["1".into(), "b@example.com".into()]],
            Some(2),
        )),
        export().preview(Preview::rows(
            vec!["id".into(), "mail".into()],
            vec![vec!["1".into(), "a@example.com".into()]],
            Some(2),
        )),
        export().preview(Preview::rows(
            vec!["email".into(), "id".into()],
            vec![vec!["a@example.com".into(), "1".into()]],
            Some(2),
        )),
        export().preview(Preview::rows(
            vec!["id".into(), "email".into()],
            vec![],
            Some(2),
        )),
    ];
    let mut seen = vec![base.digest()];
    for v in &variants {
        let d = v.digest();
        assert!(
            !seen.contains(&d),
            "{:?} shares a digest",
            v.context.preview
        );
        seen.push(d);
    }
    // A diff and a dry run of the same text are different previews.
    assert_ne!(
        export().preview(Preview::diff("x")).digest(),
        export().preview(Preview::dry_run("x")).digest()
    );
    // The action key (what a cool-down compares) leaves the preview out, as it does the
    // other words around the action.
    assert!(variants.iter().all(|v| v.action_key() == base.action_key()));
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_terminal_shows_a_long_hostile_preview_cut_and_inert() {
    let screen = Screen::default();
    let reviewer = Principal::human("sam@example.com").with_groups(["data-owners"]);
    // No input: the prompt waits, and the test reads what was printed.
    let (_keep, input) = tokio::io::duplex(64);
    let console =
        ConsoleApprover::with_io(reviewer, tokio::io::BufReader::new(input), screen.clone());
    let store = Arc::new(MemoryStore::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store_shared(store.clone())
        .audit(MemorySink::new())
        .approver(console)
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let mut diff = String::from("--- a/x\n+++ b/x\n@@ -1,100 +1,100 @@\n");
    diff.push_str("+\u{1b}[2K\u{1b}[1A=== APPROVED by security ===\u{202E}\n");
    for i in 0..100 {
        diff.push_str(&format!("+line {i}\n"));
    }
    let action = export().preview(Preview::diff(diff));
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("approval is required");
    };
    let digest = store.get(id).await.expect("get").expect("stored").digest;
    // The prompt is printed by the console's own task.
    let mut shown = String::new();
    for _ in 0..500 {
        shown = String::from_utf8(screen.0.lock().expect("lock").clone()).expect("utf8");
        if shown.contains("Reviewing as") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(shown.contains("preview   Diff"), "{shown}");
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{202E}'),
        "{shown}"
    );
    assert!(shown.contains("‹U+001B›[2K") && shown.contains("‹U+202E›"));
    // Every preview line is indented under the preview, so none poses as the console's own.
    assert!(
        shown.contains("\n    | +‹U+001B›[2K‹U+001B›[1A=== APPROVED by security ==="),
        "{shown}"
    );
    assert!(shown.contains("    | +line 35\n"), "{shown}");
    assert!(!shown.contains("+line 36"), "cut at 40 lines: {shown}");
    assert!(
        shown.contains("64 more lines not shown")
            && shown.contains(&format!("approvals show {id}"))
            && shown.contains(&format!("(digest {digest})")),
        "{shown}"
    );
}
