//! Migration 6: requests stored before it get their due time when the store migrates, so a
//! sweep that reads only what is due (`ListFilter::due_by`) still finds every open request and
//! every unaudited decision stored by an older version, and no finished one. Migration 7
//! likewise: a denial stored before it is found by the cool-down's listing
//! (`ListFilter::denied_action`).

mod common;

use approvals_core::{ListFilter, RequestId, RequestRecord, RequestState, Store, Verdict};
use approvals_store_sql::SqlStore;
use approvals_testkit::fixtures::{epoch, export_request, pending_record};
use chrono::{DateTime, TimeDelta, Utc};

fn at(minutes: i64) -> DateTime<Utc> {
    epoch() + TimeDelta::minutes(minutes)
}

/// Rows as an older store kept them: pending (expires at 60), approved (grant until 5), an
/// unaudited denial (due at once), and an executed request (never due).
fn old_records() -> Vec<RequestRecord> {
    let record = |state: RequestState| {
        let mut record = pending_record(export_request(), at(0));
        record.request.idempotency_key = None;
        record.state = state;
        record
    };
    let pending = record(RequestState::Pending);
    let mut approved = record(RequestState::Approved);
    approved.grant_expires_at = Some(at(5));
    let mut denied = record(RequestState::Denied);
    denied.mark_unaudited(Verdict::Deny);
    let executed = record(RequestState::Executed);
    vec![pending, approved, denied, executed]
}

async fn due(store: &SqlStore, minutes: i64) -> Vec<RequestId> {
    let mut ids: Vec<RequestId> = store
        .list(&ListFilter {
            due_by: Some(at(minutes)),
            ..ListFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

async fn assert_due(store: &SqlStore, records: &[RequestRecord]) {
    let ids = |picks: &[usize]| {
        let mut ids: Vec<RequestId> = picks.iter().map(|i| records[*i].id).collect();
        ids.sort();
        ids
    };
    assert_eq!(due(store, -1).await, ids(&[]));
    assert_eq!(due(store, 0).await, ids(&[2]));
    assert_eq!(due(store, 5).await, ids(&[1, 2]));
    assert_eq!(due(store, 60).await, ids(&[0, 1, 2]));
    assert_eq!(due(store, 100_000).await, ids(&[0, 1, 2]));
    // Every record is the same action; only the denied one is a denial of it.
    let denials: Vec<RequestId> = store
        .list(&ListFilter {
            denied_action: Some(records[2].request.action_key()),
            ..ListFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(denials, ids(&[2]), "the denial stored before migration 7");
}

#[tokio::test]
async fn migration_6_gives_requests_stored_before_it_their_due_time() {
    let records = old_records();

    // SQLite file.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    common::migrations_up_to("sqlite", 3)
        .run(&pool)
        .await
        .expect("migrations 1 to 3");
    for record in &records {
        sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, created_at, expires_at, record, audit_pending)
             VALUES (?1, 1, ?2, 'data.export', ?3, ?4, ?5, ?6)",
        )
        .bind(record.id.to_string())
        .bind(record.state.as_str())
        .bind(record.created_at.timestamp_micros())
        .bind(record.expires_at.timestamp_micros())
        .bind(serde_json::to_string(record).expect("json"))
        .bind(record.audit_pending)
        .execute(&pool)
        .await
        .expect("old row");
    }
    pool.close().await;
    let store = SqlStore::connect(&url).await.expect("migrate");
    assert_due(&store, &records).await;
    store.close().await;
    // Migrating again finds nothing left to fill and changes nothing.
    let store = SqlStore::connect(&url).await.expect("migrate again");
    assert_due(&store, &records).await;
    store.close().await;

    // PostgreSQL schema.
    let test = "migration_6_gives_requests_stored_before_it_their_due_time";
    let Some(url) = common::postgres_url(test) else {
        return;
    };
    let schema = common::unique_schema("mig6");
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("url")
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::PgPool::connect_with(options).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&pool)
        .await
        .expect("schema");
    common::migrations_up_to("postgres", 3)
        .run(&pool)
        .await
        .expect("migrations 1 to 3");
    for record in &records {
        sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, created_at, expires_at, record, audit_pending)
             VALUES ($1, 1, $2, 'data.export', $3, $4, $5, $6)",
        )
        .bind(record.id.0)
        .bind(record.state.as_str())
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(serde_json::to_string(record).expect("json"))
        .bind(record.audit_pending)
        .execute(&pool)
        .await
        .expect("old row");
    }
    pool.close().await;
    let store = common::pg_store(&url, &schema).await;
    assert_due(&store, &records).await;
    store.close().await;
    common::drop_schema(&url, &schema).await;
}
