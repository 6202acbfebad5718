//! End to end through the gate: a credential is minted for the approved action, used, revoked,
//! and audited without its secret.

mod common;

use std::sync::Arc;

use approvals_core::{
    ActionRequest, Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, Initiator,
    MemorySink, MemoryStore, Principal, RequestRecord, RequestState, Requirement, Review,
    StaticPolicy,
};
use async_trait::async_trait;
use common::Db;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel that takes every request (the test decides through the gate).
struct Inbox;

#[async_trait]
impl Approver for Inbox {
    fn name(&self) -> &str {
        "inbox"
    }
    async fn dispatch(
        &self,
        request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        Ok(Some(Delivery {
            channel: "inbox".into(),
            reference: json!({ "request": request.id.to_string() }),
        }))
    }
}

/// Connects as the credential and counts the rows of `table`.
async fn count_as(
    db_url: &str,
    credential: approvals_core::Credential,
    table: &str,
) -> Result<(i64, String, String), BoxError> {
    let options: sqlx::postgres::PgConnectOptions = db_url.parse()?;
    let options = options
        .username(credential.id())
        .password(credential.secret());
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await?;
    Ok((
        n,
        credential.id().to_owned(),
        credential.secret().to_owned(),
    ))
}

/// The credential events in the audit trail: `credential_issued` then `credential_revoked`,
/// with the id and scope, and the secret in no event.
fn assert_audited(audit: &MemorySink, id: &str, scope_start: &str, secret: &str) {
    let events = audit.events();
    let names = audit.names();
    let issued = names
        .iter()
        .position(|n| *n == "credential_issued")
        .expect("issued audited");
    let revoked = names
        .iter()
        .position(|n| *n == "credential_revoked")
        .expect("revoked audited");
    assert!(issued < revoked, "{names:?}");
    for (at, name) in [
        (issued, "credential_issued"),
        (revoked, "credential_revoked"),
    ] {
        let event = serde_json::to_value(&events[at]).expect("json");
        let text = event.to_string();
        assert!(text.contains(id), "{name} names the credential: {text}");
        assert!(text.contains(scope_start), "{name} has the scope: {text}");
    }
    for event in &events {
        let text = serde_json::to_string(event).expect("json");
        assert!(
            !text.contains(secret),
            "the secret leaked into {}",
            event.name()
        );
    }
}

#[tokio::test]
async fn an_allowed_action_runs_with_its_own_role_which_is_dropped_after() {
    let Some(db) = Db::new("an_allowed_action_runs_with_its_own_role").await else {
        return;
    };
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit_shared(audit.clone())
        .initiator(Initiator::agent("billing-agent"))
        .credential_broker(db.broker())
        .build()
        .expect("gate");
    let invoices = db.table("invoices");
    let export =
        ActionRequest::new("db.export", "postgres://test").params(json!({ "table": invoices }));
    let url = db.url.clone();
    let table = invoices.clone();
    let (n, id, secret) = gate
        .run_with_credential(&export, |credential| async move {
            count_as(&url, credential, &table).await
        })
        .await
        .expect("ran");
    assert_eq!(n, 3);
    assert!(!db.role_exists(&id).await, "revoked after the action");
    assert_audited(
        &audit,
        &id,
        &format!("SELECT on {invoices} until "),
        &secret,
    );
    db.finish().await;
}

#[tokio::test]
async fn an_approved_action_runs_with_its_own_role_and_the_record_keeps_the_lease() {
    let Some(db) = Db::new("an_approved_action_runs_with_its_own_role").await else {
        return;
    };
    let audit = Arc::new(MemorySink::new());
    let store = Arc::new(MemoryStore::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "dana@example.com",
        ])))
        .audit_shared(audit.clone())
        .store_shared(store.clone())
        .approver(Inbox)
        .initiator(Initiator::agent("billing-agent"))
        .credential_broker(db.broker())
        .build()
        .expect("gate");
    let invoices = db.table("invoices");
    let export = ActionRequest::new("db.export", "postgres://test")
        .params(json!({ "table": invoices, "columns": ["id"] }))
        .justification("quarterly report");
    let agent = {
        let gate = gate.clone();
        let url = db.url.clone();
        let table = invoices.clone();
        tokio::spawn(async move {
            gate.run_with_credential(&export, |credential| async move {
                let options: sqlx::postgres::PgConnectOptions = url.parse()?;
                let options = options
                    .username(credential.id())
                    .password(credential.secret());
                let mut conn = sqlx::PgConnection::connect_with(&options).await?;
                let (n,): (i64,) =
                    sqlx::query_as(AssertSqlSafe(format!("SELECT count(id) FROM {table}")))
                        .fetch_one(&mut conn)
                        .await?;
                let denied = sqlx::query(AssertSqlSafe(format!("SELECT secret FROM {table}")))
                    .execute(&mut conn)
                    .await
                    .is_err();
                Ok::<_, BoxError>((
                    n,
                    denied,
                    credential.id().to_owned(),
                    credential.secret().to_owned(),
                ))
            })
            .await
        })
    };
    let id = loop {
        if let Some(r) = gate.pending().await.expect("list").first() {
            break r.id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let role = approvals_core::credential::credential_id(id);
    assert!(
        !db.role_exists(&role).await,
        "no credential before approval"
    );
    let reviewer = tokio::spawn({
        let gate = gate.clone();
        async move {
            gate.decide(
                id,
                Review::approve(Principal::human("dana@example.com")).via("test"),
            )
            .await
        }
    });
    reviewer.await.expect("join").expect("approved");
    let (n, denied, cred_id, secret) = agent.await.expect("join").expect("ran");
    assert_eq!(n, 3);
    assert!(denied, "only the approved column");
    assert_eq!(cred_id, role);
    assert!(!db.role_exists(&role).await, "revoked after the action");
    let record = gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Executed);
    let record_json = serde_json::to_string(&record).expect("json");
    assert!(record_json.contains(&role), "the record keeps the lease");
    assert!(!record_json.contains(&secret), "never the secret");
    assert_audited(
        &audit,
        &role,
        &format!("SELECT (id) on {invoices} until "),
        &secret,
    );
    db.finish().await;
}
