//! Backend-neutral pieces: indexed column values, record encoding, lifecycle guards.

use approvals_core::{RequestRecord, RequestState, StoreError};

/// Every request state, for building the lifecycle guard of a compare-and-set.
const ALL_STATES: [RequestState; 9] = [
    RequestState::Pending,
    RequestState::Approved,
    RequestState::Denied,
    RequestState::Expired,
    RequestState::Cancelled,
    RequestState::Executing,
    RequestState::Executed,
    RequestState::Failed,
    RequestState::Lapsed,
];

// Fails to compile when the core adds a state, so ALL_STATES is kept complete.
const _: fn(RequestState) = |s| match s {
    RequestState::Pending
    | RequestState::Approved
    | RequestState::Denied
    | RequestState::Expired
    | RequestState::Cancelled
    | RequestState::Executing
    | RequestState::Executed
    | RequestState::Failed
    | RequestState::Lapsed => {}
};

/// The stored states a record may be in for a compare-and-set to move it to `next`: the same
/// state (other fields change), or a state whose lifecycle allows the step.
pub(crate) fn allowed_from(next: RequestState) -> Vec<&'static str> {
    ALL_STATES
        .iter()
        .filter(|s| **s == next || s.can_become(next))
        .map(|s| s.as_str())
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
    /// Trimmed and ASCII-lowercased, matching how the gate compares ids.
    pub initiator_id: Option<String>,
    pub idempotency_key: Option<&'a str>,
    /// [`RequestRecord::audit_pending`]: a hint for listing; the record is authoritative.
    pub audit_pending: bool,
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
            idempotency_key: record.request.idempotency_key.as_deref(),
            audit_pending: record.audit_pending,
        }
    }
}

/// How initiator ids are stored and compared (see `approvals_core::request::same_id`).
pub(crate) fn normalize_id(id: &str) -> String {
    id.trim().to_ascii_lowercase()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_accept_only_themselves() {
        for s in ALL_STATES.iter().filter(|s| s.is_terminal()) {
            let from = allowed_from(*s);
            assert!(from.contains(&s.as_str()));
            for other in ALL_STATES.iter().filter(|o| *o != s) {
                assert!(
                    !allowed_from(*other).contains(&s.as_str()),
                    "{s} must not become {other}"
                );
            }
        }
        assert_eq!(allowed_from(RequestState::Pending), vec!["pending"]);
    }
}
