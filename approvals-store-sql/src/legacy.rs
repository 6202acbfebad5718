//! The audit table of versions before the signed log: `approval_audit`, a plain SHA-256
//! hash chain, closed by migration 2 (it refuses new rows) and kept unchanged.
//!
//! Each row holds `seq` (1, 2, 3, ... without gaps), `prev_hash`, `hash`, the event as
//! canonical JSON (`event_json`, exactly the bytes hashed), and the columns `at`,
//! `request_id` and `event`. The chain:
//!
//! ```text
//! hash(1)  = SHA-256(32 zero bytes || event_json(1))
//! hash(n)  = SHA-256(hash(n-1) || event_json(n))      (raw 32-byte hashes, not hex)
//! ```
//!
//! [`verify`] checks the rows that are there; the first entry of the signed log
//! (`approval_audit_log`, event `legacy_audit_chain`) records the head this table had when the
//! log started, so [`verify_against`] with that head also detects rows cut off the end, under
//! the protection of the log's signed checkpoints.

use approvals_core::AuditEvent;
use approvals_core::request::canonical_json;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::SqlStore;
use crate::error::SqlError;

/// `prev_hash` of the first row: 32 zero bytes, in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows read per query while verifying.
const PAGE: i64 = 1000;

/// The newest row of the chain: record it elsewhere to detect later truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Its sequence number (the number of rows).
    pub seq: i64,
    /// Its hash (hex).
    pub hash: String,
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The newest row, when there is one.
    pub head: Option<ChainHead>,
}

/// The chain is broken, or could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A row is missing or out of order (deleted or inserted rows).
    #[error("audit row {found} follows row {previous}: rows were deleted, inserted or renumbered")]
    Gap {
        /// The previous sequence number.
        previous: i64,
        /// The one found next.
        found: i64,
    },
    /// A row's `prev_hash` is not the previous row's hash.
    #[error(
        "audit row {seq} does not link to the row before it: rows were deleted, inserted or reordered"
    )]
    BrokenLink {
        /// The row.
        seq: i64,
    },
    /// A row's hash does not match its content.
    #[error("audit row {seq} was edited: its hash does not match its content")]
    Edited {
        /// The row.
        seq: i64,
    },
    /// A row's event is not valid, canonical event JSON, or its columns disagree with it.
    #[error("audit row {seq} is malformed: {detail}")]
    Malformed {
        /// The row.
        seq: i64,
        /// What is wrong.
        detail: String,
    },
    /// The chain ends before (or differs from) a head recorded earlier.
    #[error(
        "the audit chain was truncated or rewritten: expected row {expected_seq} with hash {expected_hash}, found {found}"
    )]
    Truncated {
        /// The recorded head's sequence number.
        expected_seq: i64,
        /// The recorded head's hash.
        expected_hash: String,
        /// What the table holds there.
        found: String,
    },
    /// The table could not be read.
    #[error(transparent)]
    Database(#[from] SqlError),
}

/// A row as stored, before any checking.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
    pub event_json: String,
}

/// `hex(SHA-256(unhex(prev_hash) || event_json))`, or `None` when `prev_hash` is not 64 hex
/// digits.
pub fn chain_hash(prev_hash: &str, event_json: &[u8]) -> Option<String> {
    let prev = hex::decode(prev_hash).ok()?;
    if prev.len() != 32 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(event_json);
    Some(hex::encode(h.finalize()))
}

/// The canonical JSON of an event: the bytes the chain hashes.
pub fn event_json(event: &AuditEvent) -> Result<String, SqlError> {
    let value = serde_json::to_value(event)
        .map_err(|e| SqlError::Database(format!("audit event cannot be encoded: {e}")))?;
    String::from_utf8(canonical_json(&value))
        .map_err(|e| SqlError::Database(format!("audit event is not UTF-8: {e}")))
}

/// Checks the whole chain: sequence without gaps from 1, every link, every hash, and that
/// each row is canonical event JSON agreeing with its columns.
pub async fn verify(store: &SqlStore) -> Result<ChainReport, ChainError> {
    let mut rows = 0_u64;
    let mut prev: Option<(i64, String)> = None;
    loop {
        let after = prev.as_ref().map_or(0, |(seq, _)| *seq);
        let page = store.legacy_audit_rows(after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            check_row(&row, prev.as_ref())?;
            rows += 1;
            prev = Some((row.seq, row.hash));
        }
    }
    Ok(ChainReport {
        rows,
        head: prev.map(|(seq, hash)| ChainHead { seq, hash }),
    })
}

/// [`verify`], and also that the chain still contains `head`
/// (recorded earlier) unchanged: detects truncation of the newest rows.
pub async fn verify_against(store: &SqlStore, head: &ChainHead) -> Result<ChainReport, ChainError> {
    let report = verify(store).await?;
    let found = if head.seq <= 0 {
        None
    } else {
        store
            .legacy_audit_rows(head.seq - 1, 1)
            .await?
            .into_iter()
            .next()
            .filter(|r| r.seq == head.seq)
    };
    match found {
        Some(row) if row.hash == head.hash => Ok(report),
        other => Err(ChainError::Truncated {
            expected_seq: head.seq,
            expected_hash: head.hash.clone(),
            found: other.map_or_else(|| "no such row".to_owned(), |r| format!("hash {}", r.hash)),
        }),
    }
}

fn check_row(row: &RawRow, prev: Option<&(i64, String)>) -> Result<(), ChainError> {
    let (prev_seq, prev_hash) = prev.map_or((0, GENESIS_HASH), |(s, h)| (*s, h.as_str()));
    if row.seq != prev_seq + 1 {
        return Err(ChainError::Gap {
            previous: prev_seq,
            found: row.seq,
        });
    }
    if row.prev_hash != prev_hash {
        return Err(ChainError::BrokenLink { seq: row.seq });
    }
    if chain_hash(&row.prev_hash, row.event_json.as_bytes()).as_deref() != Some(row.hash.as_str()) {
        return Err(ChainError::Edited { seq: row.seq });
    }
    let malformed = |detail: String| ChainError::Malformed {
        seq: row.seq,
        detail,
    };
    let event: AuditEvent = serde_json::from_str(&row.event_json)
        .map_err(|e| malformed(format!("not an audit event: {e}")))?;
    if event_json(&event).map_err(|e| malformed(e.to_string()))? != row.event_json {
        return Err(malformed("the event JSON is not in canonical form".into()));
    }
    if row.event != event.name() {
        return Err(malformed(format!(
            "column event is {:?} but the event is {:?}",
            row.event,
            event.name()
        )));
    }
    if row.request_id != event.request_id.to_string() {
        return Err(malformed(format!(
            "column request_id is {} but the event is about {}",
            row.request_id, event.request_id
        )));
    }
    // PostgreSQL keeps microseconds; compare at that precision.
    if row.at.timestamp_micros() != event.at.timestamp_micros() {
        return Err(malformed(format!(
            "column at is {} but the event is at {}",
            row.at, event.at
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_is_sha256_of_raw_prev_hash_and_json() {
        // Reproduce without this library:
        // python3 -c 'import hashlib; print(hashlib.sha256(bytes(32) + b"{}").hexdigest())'
        assert_eq!(
            chain_hash(GENESIS_HASH, b"{}").as_deref(),
            Some("fb1634c4e6cd4b1f1afe3ce2d6ef080f7ac5d1f357d723ad4dfca782733b62db")
        );
        assert_eq!(chain_hash("zz", b"{}"), None);
        assert_eq!(chain_hash("00", b"{}"), None);
    }
}
