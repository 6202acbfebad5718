//! The audit table: append-only and hash-chained, with the core's event schema.
//!
//! Each row holds `seq` (1, 2, 3, ... without gaps), `prev_hash`, `hash`, the event as
//! canonical JSON (`event_json`, exactly the bytes hashed), and the columns `at`,
//! `request_id` and `event` for queries. The chain:
//!
//! ```text
//! hash(1)  = SHA-256(32 zero bytes || event_json(1))
//! hash(n)  = SHA-256(hash(n-1) || event_json(n))      (raw 32-byte hashes, not hex)
//! ```
//!
//! `event_json` is [`canonical_json`] of the [`AuditEvent`] serialized as the core's
//! JSON-lines sink writes it (same fields, same names): sorted keys, no whitespace. Hashes
//! are stored as 64 lowercase hex digits. The table refuses `UPDATE` and `DELETE` (and, on
//! PostgreSQL, `TRUNCATE`) by trigger; [`SqlAuditSink::verify_chain`] detects edits,
//! deletions, insertions and reordering by anyone who bypasses that. Truncation of the
//! newest rows is only detectable against a head recorded elsewhere
//! ([`SqlAuditSink::verify_chain_against`]); `approvals-audit` signs such checkpoints.

use approvals_core::request::canonical_json;
use approvals_core::{AuditError, AuditEvent, AuditSink, RequestId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::SqlStore;
use crate::error::SqlError;

/// `prev_hash` of the first row: 32 zero bytes, in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows read per query while verifying.
const PAGE: i64 = 1000;

/// One audit row as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The previous row's hash (hex); [`GENESIS_HASH`] for the first row.
    pub prev_hash: String,
    /// This row's hash (hex).
    pub hash: String,
    /// The event as canonical JSON: the exact bytes hashed.
    pub event_json: String,
}

impl AuditRow {
    /// The event, parsed.
    pub fn event(&self) -> Result<AuditEvent, SqlError> {
        serde_json::from_str(&self.event_json)
            .map_err(|e| SqlError::Corrupt(format!("audit row {}: {e}", self.seq)))
    }
}

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

/// The row after `(prev_seq, prev_hash)` for an event already encoded as canonical JSON.
pub(crate) fn next_row(
    prev_seq: i64,
    prev_hash: &str,
    event_json: String,
) -> Result<AuditRow, SqlError> {
    let hash = chain_hash(prev_hash, event_json.as_bytes()).ok_or_else(|| {
        SqlError::Corrupt(format!(
            "audit row {prev_seq} has a malformed hash {prev_hash:?}; run verify_chain"
        ))
    })?;
    Ok(AuditRow {
        seq: prev_seq + 1,
        prev_hash: prev_hash.to_owned(),
        hash,
        event_json,
    })
}

/// The rows that follow `(prev_seq, prev_hash)` for events already encoded as canonical JSON,
/// in order.
pub(crate) fn chain_rows(
    prev_seq: i64,
    prev_hash: &str,
    jsons: impl IntoIterator<Item = String>,
) -> Result<Vec<AuditRow>, SqlError> {
    let mut rows: Vec<AuditRow> = Vec::new();
    for json in jsons {
        let (seq, hash) = rows
            .last()
            .map_or((prev_seq, prev_hash), |r| (r.seq, r.hash.as_str()));
        let row = next_row(seq, hash, json)?;
        rows.push(row);
    }
    Ok(rows)
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

/// An [`AuditSink`] that appends every event to the database's hash-chained audit table,
/// committed (durably, on SQLite with `synchronous=FULL`) before `record` returns.
///
/// Appends from several processes or replicas interleave safely: each append takes the
/// table's write lock, reads the head and links to it. Events recorded at the same time by
/// one store are appended together in one transaction (one commit for all of them); each
/// `record` call returns only after its event committed.
#[derive(Debug, Clone)]
pub struct SqlAuditSink {
    store: SqlStore,
}

impl SqlAuditSink {
    /// A sink on `store`'s database (same as [`SqlStore::audit_sink`]).
    pub fn new(store: SqlStore) -> Self {
        SqlAuditSink { store }
    }

    /// Appends one event and returns its row.
    pub async fn append(&self, event: &AuditEvent) -> Result<AuditRow, SqlError> {
        self.store.audit_append(event).await
    }

    /// Rows after `after_seq` (0 for the start), oldest first, at most `limit`.
    pub async fn rows(&self, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, SqlError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .store
            .audit_rows(after_seq, limit)
            .await?
            .into_iter()
            .map(|r| AuditRow {
                seq: r.seq,
                prev_hash: r.prev_hash,
                hash: r.hash,
                event_json: r.event_json,
            })
            .collect())
    }

    /// Every event about one request, oldest first.
    pub async fn events_for(&self, id: RequestId) -> Result<Vec<AuditEvent>, SqlError> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.audit_rows(after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = last.seq;
            let wanted = id.to_string();
            for row in page.iter().filter(|r| r.request_id == wanted) {
                out.push(
                    serde_json::from_str(&row.event_json)
                        .map_err(|e| SqlError::Corrupt(format!("audit row {}: {e}", row.seq)))?,
                );
            }
        }
    }

    /// Checks the whole chain: sequence without gaps from 1, every link, every hash, and that
    /// each row is canonical event JSON agreeing with its columns.
    pub async fn verify_chain(&self) -> Result<ChainReport, ChainError> {
        let mut rows = 0_u64;
        let mut prev: Option<(i64, String)> = None;
        loop {
            let after = prev.as_ref().map_or(0, |(seq, _)| *seq);
            let page = self.store.audit_rows(after, PAGE).await?;
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

    /// [`verify_chain`](Self::verify_chain), and also that the chain still contains `head`
    /// (recorded earlier) unchanged: detects truncation of the newest rows.
    pub async fn verify_chain_against(&self, head: &ChainHead) -> Result<ChainReport, ChainError> {
        let report = self.verify_chain().await?;
        let found = if head.seq <= 0 {
            None
        } else {
            self.store
                .audit_rows(head.seq - 1, 1)
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
                found: other
                    .map_or_else(|| "no such row".to_owned(), |r| format!("hash {}", r.hash)),
            }),
        }
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

#[async_trait]
impl AuditSink for SqlAuditSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.append(event)
            .await
            .map(|_| ())
            .map_err(|e| AuditError::new(e.to_string()))
    }
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
