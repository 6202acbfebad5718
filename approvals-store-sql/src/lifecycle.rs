//! Backend-neutral pieces: indexed column values, record encoding, lifecycle guards.

use approvals_core::{RequestRecord, RequestState, StoreError};

/// The stored states a record may be in for a compare-and-set to move it to `next`: the
/// core's rule ([`approvals_core::lifecycle::may_become`]), the one every store applies.
pub(crate) fn allowed_from(next: RequestState) -> Vec<&'static str> {
    approvals_core::lifecycle::may_become(next)
        .map(RequestState::as_str)
        .collect()
}

/// The error for a compare-and-set that is not a lifecycle step.
pub(crate) fn illegal_transition(
    id: &dyn std::fmt::Display,
    stored: &str,
    next: RequestState,
) -> StoreError {
    StoreError::Backend(format!(
        "refused to change request {id} from {stored} to {next}: that is not a lifecycle step, and terminal states never change"
    ))
}

/// Values of the indexed columns, taken from the record.
pub(crate) struct Columns<'a> {
    pub state: &'static str,
    pub kind: &'a str,
    pub environment: Option<&'a str>,
    /// Trimmed and ASCII-lowercased, as stored before migration 5 (kept for older readers).
    pub initiator_id: Option<String>,
    /// [`initiator_key`]: what the initiator filter of `list` compares.
    pub initiator_key: Option<String>,
    pub idempotency_key: Option<&'a str>,
    /// [`RequestRecord::audit_pending`]: a hint for listing; the record is authoritative.
    pub audit_pending: bool,
    /// [`next_due`](approvals_core::lifecycle::next_due): what a sweep's listing compares.
    pub due_at: Option<chrono::DateTime<chrono::Utc>>,
    /// [`denied_action_key`]: what a denial's cool-down lists.
    pub denied_action_key: Option<String>,
}

impl<'a> Columns<'a> {
    pub(crate) fn of(record: &'a RequestRecord) -> Self {
        Columns {
            state: record.state.as_str(),
            kind: &record.request.kind,
            environment: record.request.context.environment.as_deref(),
            initiator_id: record
                .request
                .initiator
                .as_ref()
                .map(|i| normalize_id(&i.principal.id)),
            initiator_key: record
                .request
                .initiator
                .as_ref()
                .map(|i| initiator_key(&i.principal.id)),
            idempotency_key: record.request.idempotency_key.as_deref(),
            audit_pending: record.audit_pending,
            due_at: approvals_core::lifecycle::next_due(record),
            denied_action_key: denied_action_key(record),
        }
    }
}

/// The `denied_action_key` column: a denied request's
/// [`denied_action_key`](approvals_core::RequestRecord::denied_action_key) (the action key of
/// the action as it was asked for) as text; `None` in every other state (the column is
/// indexed for denied rows only).
pub(crate) fn denied_action_key(record: &RequestRecord) -> Option<String> {
    (record.state == RequestState::Denied).then(|| record.denied_action_key().to_string())
}

/// The `denied_action_key` of a denied row stored before migration 7 (the rows
/// [`MISSING_DENIED_ACTION_KEY`] finds): [`denied_action_key`], which is never `None` for
/// them, so every one is filled.
pub(crate) fn backfilled_denied_action_key(record: &RequestRecord) -> String {
    denied_action_key(record).unwrap_or_else(|| record.denied_action_key().to_string())
}

/// The denied rows stored before migration 7, whose `denied_action_key` has to be filled, a
/// batch at a time (through a partial index that is empty once they are).
pub(crate) const MISSING_DENIED_ACTION_KEY: &str = "SELECT id, version, record
  FROM approval_requests WHERE state = 'denied' AND denied_action_key IS NULL LIMIT 500";

/// The rows stored before migration 6 whose `due_at` has to be filled (open or unaudited;
/// every other row's is NULL), a batch at a time.
pub(crate) const MISSING_DUE_AT: &str = "SELECT id, version, record FROM approval_requests
  WHERE due_at IS NULL AND (state IN ('pending', 'approved') OR audit_pending)
  LIMIT 500";

/// The `due_at` of a row stored before migration 6: its record's next due time, or (never
/// for the rows [`MISSING_DUE_AT`] finds) its creation, so that it is filled either way.
pub(crate) fn backfilled_due_at(record: &RequestRecord) -> chrono::DateTime<chrono::Utc> {
    approvals_core::lifecycle::next_due(record).unwrap_or(record.created_at)
}

/// The `initiator_id` column: trimmed and ASCII-lowercased (how ids were compared before
/// migration 5; kept so that older readers of the table still find their rows).
pub(crate) fn normalize_id(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

/// The `initiator_key` column, and what the initiator filter compares with it: the id's
/// [`identity_key`](approvals_core::identity::identity_key), as the memory store compares
/// ([`ListFilter::matches`](approvals_core::ListFilter::matches)). The key of an
/// `initiator_id` value equals the key of the id it was made from, which is how migration 5
/// fills rows stored before it.
pub(crate) fn initiator_key(id: &str) -> String {
    approvals_core::identity::identity_key(id)
}

/// The record as stored: JSON with the version it will have once written.
pub(crate) fn encode(record: &RequestRecord, version: u64) -> Result<String, StoreError> {
    let mut stored = record.clone();
    stored.version = version;
    serde_json::to_string(&stored)
        .map_err(|e| StoreError::Backend(format!("request {} cannot be encoded: {e}", record.id)))
}

/// A stored row back to a record; the version column is authoritative.
pub(crate) fn decode(id: &str, version: i64, json: &str) -> Result<RequestRecord, StoreError> {
    let mut record: RequestRecord = serde_json::from_str(json).map_err(|e| {
        StoreError::Corrupt(format!(
            "request {id} cannot be read back ({e}); it was written by an incompatible version or edited by hand"
        ))
    })?;
    record.version = u64::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("request {id} has negative version {version}")))?;
    Ok(record)
}

/// A version as the database stores it.
pub(crate) fn db_version(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| StoreError::Backend(format!("version {version} is out of range")))
}

/// The listing query for `filter`, built with only the predicates the filter sets (no
/// catch-all `? IS NULL OR …`), so the planner can use the `(state, created_at)` index for the
/// states asked for instead of scanning every request in creation order. `prefix` goes before
/// the `SELECT` (`EXPLAIN` to see its plan). `time` and `id` give a time and a request id as
/// the backend stores them (microseconds and text on SQLite).
pub(crate) fn list_query<DB, T, I>(
    prefix: &str,
    filter: &approvals_core::ListFilter,
    time: impl Fn(chrono::DateTime<chrono::Utc>) -> T,
    id: impl Fn(approvals_core::RequestId) -> I,
) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'t> T: sqlx::Encode<'t, DB> + sqlx::Type<DB> + Clone + 't,
    for<'t> I: sqlx::Encode<'t, DB> + sqlx::Type<DB> + 't,
    <DB as sqlx::Database>::Arguments: Default,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::QueryBuilder::new(prefix);
    query.push("SELECT id, version, record FROM approval_requests");
    let mut clause = " WHERE ";
    let mut and = |query: &mut sqlx::QueryBuilder<DB>| {
        query.push(clause);
        clause = " AND ";
    };
    if !filter.states.is_empty() {
        and(&mut query);
        query.push("state IN (");
        let mut states = query.separated(", ");
        for state in &filter.states {
            states.push_bind(state.as_str());
        }
        query.push(")");
    }
    if let Some(kind) = filter.kind.as_deref() {
        and(&mut query);
        query.push("kind = ").push_bind(kind);
    }
    if let Some(environment) = filter.environment.as_deref() {
        and(&mut query);
        query.push("environment = ").push_bind(environment);
    }
    if let Some(key) = filter.initiator.as_deref().map(initiator_key) {
        and(&mut query);
        query.push("initiator_key = ").push_bind(key);
    }
    if let Some(pending) = filter.audit_pending {
        and(&mut query);
        query.push("audit_pending = ").push_bind(pending);
    }
    if let Some(key) = filter.denied_action {
        and(&mut query);
        query
            .push("denied_action_key = ")
            .push_bind(key.to_string());
    }
    // The next page of a newest-first listing: rows after the cursor in that order, which
    // the (state, created_at) and (created_at, id) indexes serve as a range. (A due listing
    // has its own cursor, below.)
    let created_after = filter
        .after
        .filter(|_| filter.due_by.is_none())
        .map(|c| (time(c.created_at), id(c.id)));
    if let Some((created_at, id)) = created_after {
        and(&mut query);
        query
            .push("(created_at < ")
            .push_bind(created_at.clone())
            .push(" OR (created_at = ")
            .push_bind(created_at)
            .push(" AND id < ")
            .push_bind(id)
            .push("))");
    }
    // `due_by` as the backend stores times (microseconds on SQLite), from the caller;
    // earliest due first, which the due index serves without a sort. With a cursor, the
    // next page of that order.
    if let Some(by) = filter.due_by {
        and(&mut query);
        query.push("due_at <= ").push_bind(time(by));
        if let Some((due_at, id)) = filter.due_after.map(|c| (time(c.due_at), id(c.id))) {
            query
                .push(" AND (due_at > ")
                .push_bind(due_at.clone())
                .push(" OR (due_at = ")
                .push_bind(due_at)
                .push(" AND id > ")
                .push_bind(id)
                .push("))");
        }
        query.push(" ORDER BY due_at, id");
    } else {
        query.push(" ORDER BY created_at DESC, id DESC");
    }
    if let Some(limit) = filter.limit {
        query
            .push(" LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_accept_only_themselves() {
        for s in approvals_core::lifecycle::ALL_STATES
            .iter()
            .filter(|s| s.is_terminal())
        {
            let from = allowed_from(*s);
            assert!(from.contains(&s.as_str()));
            for other in approvals_core::lifecycle::ALL_STATES
                .iter()
                .filter(|o| *o != s)
            {
                assert!(
                    !allowed_from(*other).contains(&s.as_str()),
                    "{s} must not become {other}"
                );
            }
        }
        assert_eq!(allowed_from(RequestState::Pending), vec!["pending"]);
    }

    #[test]
    fn the_key_of_a_stored_initiator_id_is_the_key_of_the_id() {
        // Migration 5 fills initiator_key from initiator_id: both must give one key.
        for id in [
            "billing-agent",
            " Deploy-Bot ",
            "ＤＥＰＬＯＹ-ｂｏｔ",
            "de\u{200B}ploy-bot",
            "\u{FEFF} Deploy-Bot.",
            "A\u{030A}ngstr\u{00D6}m",
            "ΣΊΣΥΦΟΣ",
            "STRASSE",
            "D\u{0430}NA@Example.com",
            "\u{0130}stanbul",
            "\u{212A}elvin",
        ] {
            assert_eq!(
                initiator_key(&normalize_id(id)),
                initiator_key(id),
                "{id:?}"
            );
        }
        assert_ne!(initiator_key("deploy-bot"), initiator_key("deploy-bat"));
    }
}
