//! Listings are served by an index, not by a scan of every request ever stored: the query
//! plans of the common listings, as SQLite (`EXPLAIN QUERY PLAN`) and PostgreSQL (`EXPLAIN`)
//! report them.

mod common;

use approvals_core::{ListFilter, RequestState};
use approvals_store_sql::SqlStore;

/// The listings the gate, the API and the console run, each with the index that must serve
/// it.
fn listings() -> Vec<(&'static str, ListFilter, &'static str)> {
    vec![
        (
            "pending",
            ListFilter::pending(),
            "approval_requests_by_state",
        ),
        (
            "the next page of pending requests",
            ListFilter {
                after: Some(approvals_core::PageCursor {
                    created_at: chrono::Utc::now(),
                    id: approvals_core::RequestId::new(),
                }),
                limit: Some(100),
                ..ListFilter::pending()
            },
            "approval_requests_by_state",
        ),
        (
            "approved, for the lapse sweep",
            ListFilter {
                states: vec![RequestState::Approved],
                ..Default::default()
            },
            "approval_requests_by_state",
        ),
        (
            "what a sweep reads: only what is due",
            ListFilter {
                due_by: Some(chrono::Utc::now()),
                ..Default::default()
            },
            "approval_requests_due",
        ),
        (
            "a sweep's next page of what is due",
            ListFilter {
                due_by: Some(chrono::Utc::now()),
                limit: Some(500),
                due_after: Some(approvals_core::DueCursor {
                    due_at: chrono::Utc::now() - chrono::TimeDelta::minutes(5),
                    id: approvals_core::RequestId::new(),
                }),
                ..Default::default()
            },
            "approval_requests_due",
        ),
        (
            "the newest denials of one action, for a cool-down after a denial",
            ListFilter {
                denied_action: Some(
                    approvals_core::ActionRequest::new("data.export", "db://x").action_key(),
                ),
                limit: Some(approvals_core::lifecycle::COOLDOWN_SCAN),
                ..Default::default()
            },
            "approval_requests_denied_action",
        ),
        (
            "history: every state but pending",
            ListFilter {
                states: approvals_core::lifecycle::ALL_STATES
                    .into_iter()
                    .filter(|s| *s != RequestState::Pending)
                    .collect(),
                limit: Some(200),
                ..Default::default()
            },
            "approval_requests_by_",
        ),
    ]
}

async fn check(store: &SqlStore, scan_marker: &str) {
    for (what, filter, index) in listings() {
        let plan = store.explain_list(&filter).await.expect("explain");
        assert!(
            plan.contains(index),
            "{what}: the plan does not use {index}:\n{plan}"
        );
        assert!(
            !plan.contains(scan_marker),
            "{what}: the plan scans the table:\n{plan}"
        );
    }
}

#[tokio::test]
async fn sqlite_listings_use_the_state_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::sqlite_store(dir.path(), "plans.db").await;
    // SQLite says `SCAN approval_requests` for a full scan without an index.
    check(&store, "SCAN approval_requests\n").await;
    let pending = store
        .explain_list(&ListFilter::pending())
        .await
        .expect("explain");
    assert!(
        pending.contains("SEARCH approval_requests USING INDEX approval_requests_by_state"),
        "{pending}"
    );
}

#[tokio::test]
async fn postgres_listings_use_the_state_index() {
    let Some(url) = common::postgres_url("postgres_listings_use_the_state_index") else {
        return;
    };
    let schema = common::unique_schema("plans");
    let store = common::pg_store(&url, &schema).await;
    check(&store, "Seq Scan on approval_requests").await;
    common::drop_schema(&url, &schema).await;
}
