//! Migration 5: the initiator filter compares identity keys, as the memory store does, also for
//! requests stored before the migration (their keys are filled when the store migrates).

mod common;

use approvals_core::{Initiator, ListFilter, RequestRecord, Store};
use approvals_store_sql::SqlStore;
use approvals_testkit::fixtures::{epoch, export_request, pending_record};
use chrono::TimeDelta;

/// Requests as an older store kept them, with `initiator_id` trimmed and ASCII-lowercased.
fn old_records() -> Vec<(RequestRecord, String)> {
    [" Deploy-Bot ", "ＤＥＰＬＯＹ-ＢＯＴ", "billing-agent"]
        .into_iter()
        .enumerate()
        .map(|(i, initiator)| {
            let request = export_request().initiator(Initiator::service(initiator));
            let mut record = pending_record(request, epoch() + TimeDelta::seconds(i as i64));
            record.request.idempotency_key = None;
            (record, initiator.trim().to_ascii_lowercase())
        })
        .collect()
}

async fn initiator_ids(store: &SqlStore, initiator: &str) -> Vec<String> {
    let mut found: Vec<String> = store
        .list(&ListFilter {
            initiator: Some(initiator.into()),
            ..ListFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .filter_map(|r| r.request.initiator.as_ref().map(|i| i.principal.id.clone()))
        .collect();
    found.sort();
    found
}

async fn assert_keyed(store: &SqlStore) {
    let deploy = [" Deploy-Bot ", "ＤＥＰＬＯＹ-ＢＯＴ"];
    for spelling in ["deploy-bot", "DEPLOY-BOT", "deploy\u{200B}-bot."] {
        assert_eq!(initiator_ids(store, spelling).await, deploy, "{spelling:?}");
    }
    assert_eq!(
        initiator_ids(store, "Billing-Agent").await,
        ["billing-agent"]
    );
    assert!(initiator_ids(store, "deploy-bat").await.is_empty());
}

#[tokio::test]
async fn migration_5_keys_the_initiators_of_requests_stored_before_it() {
    // SQLite file.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    common::migrations_up_to("sqlite", 3)
        .run(&pool)
        .await
        .expect("migrations 1 to 3");
    for (record, initiator_id) in old_records() {
        sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, initiator_id, created_at, expires_at, record)
             VALUES (?1, 1, 'pending', 'data.export', ?2, ?3, ?3, ?4)",
        )
        .bind(record.id.to_string())
        .bind(initiator_id)
        .bind(record.created_at.timestamp_micros())
        .bind(serde_json::to_string(&record).expect("json"))
        .execute(&pool)
        .await
        .expect("old row");
    }
    pool.close().await;
    let store = SqlStore::connect(&url).await.expect("migrate");
    assert_keyed(&store).await;
    store.close().await;
    // Migrating again finds nothing left to fill.
    let store = SqlStore::connect(&url).await.expect("migrate again");
    assert_keyed(&store).await;
    store.close().await;

    // PostgreSQL schema.
    let test = "migration_5_keys_the_initiators_of_requests_stored_before_it";
    let Some(url) = common::postgres_url(test) else {
        return;
    };
    let schema = common::unique_schema("mig5");
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
    for (record, initiator_id) in old_records() {
        sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, initiator_id, created_at, expires_at, record)
             VALUES ($1, 1, 'pending', 'data.export', $2, $3, $3, $4)",
        )
        .bind(record.id.0)
        .bind(initiator_id)
        .bind(record.created_at)
        .bind(serde_json::to_string(&record).expect("json"))
        .execute(&pool)
        .await
        .expect("old row");
    }
    pool.close().await;
    let store = common::pg_store(&url, &schema).await;
    assert_keyed(&store).await;
    store.close().await;
    common::drop_schema(&url, &schema).await;
}
