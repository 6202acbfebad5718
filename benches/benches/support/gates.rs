//! Gates for the latency benches (`round_trips`, `peers_pause_resume`): a policy that asks
//! the data owners, an approver channel that hands each dispatched request id to the bench
//! (standing in for Slack or the console), the reviewer, distinct actions, and SQL stores on
//! a temporary SQLite file or a fresh PostgreSQL schema.

// Included by several benches; each uses a part.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use approvals_core::{
    ActionRequest, Approver, ApproverError, AuditSink, Decisions, Delivery, DispatchReason, Gate,
    Initiator, Principal, RequestId, RequestRecord, Requirement, StaticPolicy, Store,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

use approvals_testkit::pg::PG_ENV;

/// A review channel that delivers by handing the request id to the bench. Dispatch happens
/// after the request is stored, so an id received means "pending and persisted".
pub struct IdChannel(mpsc::UnboundedSender<RequestId>);

/// A new channel and the receiver of the ids it is given.
pub fn id_channel() -> (IdChannel, mpsc::UnboundedReceiver<RequestId>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (IdChannel(tx), rx)
}

#[async_trait]
impl Approver for IdChannel {
    fn name(&self) -> &str {
        "bench"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        self.0
            .send(request.id)
            .map_err(|_| ApproverError::new("bench", "the bench stopped listening"))?;
        Ok(None)
    }
}

/// A gate whose policy asks one data owner to approve every action, with `approver` as its
/// only channel. `poll` is how often waiters re-read the store without a notification.
pub fn gate(store: impl Store, audit: impl AuditSink, approver: IdChannel, poll: Duration) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store)
        .audit(audit)
        .approver(approver)
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .poll_interval(poll)
        .build()
        .expect("gate")
}

/// The reviewer: a data owner who is not the initiator.
pub fn reviewer() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A distinct export each call (a new digest, a new request).
pub fn action() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers").params(
        json!({"rows": 5000, "columns": ["email", "plan"], "n": SEQ.fetch_add(1, Ordering::Relaxed)}),
    )
}

/// An SQLite store on a new file in `dir` (WAL, `synchronous=FULL`, as shipped).
pub async fn sqlite_store(dir: &std::path::Path) -> SqlStore {
    sqlite_store_with(dir, approvals_store_sql::Durability::default()).await
}

/// An SQLite store in `dir` that syncs as `durability` says.
#[allow(dead_code)] // not every bench that includes this module compares durabilities
pub async fn sqlite_store_with(
    dir: &std::path::Path,
    durability: approvals_store_sql::Durability,
) -> SqlStore {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    SqlStore::connect_with(
        SqlStoreOptions::new(&url)
            .acquire_timeout(Duration::from_secs(30))
            .durability(durability),
    )
    .await
    .unwrap_or_else(|e| panic!("could not open SQLite at {url}: {e}"))
}

/// A PostgreSQL store in `schema` (created by the migrations).
pub async fn postgres_store(url: &str, schema: &str) -> SqlStore {
    SqlStore::connect_with(SqlStoreOptions::new(url).schema(schema))
        .await
        .unwrap_or_else(|e| panic!("could not connect to PostgreSQL ({PG_ENV}): {e}"))
}
