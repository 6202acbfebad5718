//! The append-only audit log file: JSON lines, hash-chained entries, signed Merkle checkpoints.
//!
//! # File format (version 1)
//!
//! A log is a UTF-8 text file of newline-terminated JSON objects, one per line, of two kinds.
//!
//! **Entry lines** hold one event each, in this exact key order:
//!
//! ```text
//! {"seq":0,"prev":"<64 hex>","leaf":"<64 hex>","event":{...}}
//! ```
//!
//! - `seq`: the entry's position in the log, counting from 0, without gaps.
//! - `event`: the event in canonical JSON ([`approvals_core::request::canonical_json`]:
//!   sorted keys, no whitespace). Re-encoding a parsed event may not give back the same bytes
//!   when it holds floats (serde_json's default float parsing is not exact), so verifiers
//!   hash the stored bytes, never a re-encoding.
//! - `leaf`: the RFC 6962 leaf hash of the exact `event` bytes, `SHA-256(0x00 || event)`.
//!   Entry `seq` is leaf number `seq` of the log's Merkle tree.
//! - `prev`: the entry hash of the previous entry, 64 zeros for the first entry. The entry hash
//!   of an entry is `SHA-256(0x02 || prev || leaf)`, so every entry commits to all entries
//!   before it and a deleted, inserted or reordered line breaks the chain where it happened,
//!   even between checkpoints.
//!
//! **Checkpoint lines** hold a C2SP signed note with a `tlog-checkpoint` body
//! ([`crate::note`]) as a JSON string:
//!
//! ```text
//! {"checkpoint":"audit.example/prod\n1000\n<base64 root>\n\n— audit.example/prod <sig>\n"}
//! ```
//!
//! A checkpoint line commits to the tree head over all entries written before it, so its
//! tree size always equals the number of entry lines above it. The writer adds one every
//! N entries or T seconds, on [`LogWriter::checkpoint`], on key rotation (signed by both the
//! old and the new key) and on close.
//!
//! # What verification proves
//!
//! [`verify_file`] recomputes every leaf hash, the hash chain and the tree head at every
//! checkpoint, and checks each checkpoint's signature against the trusted keys. Entries after
//! the last valid checkpoint are reported as an unverified tail (a warning): nothing signed
//! covers them yet. It then compares the log with its witness, the writer's latest checkpoint
//! kept outside the log (`<log>.witness` by default, see [`witness`]): a log cut below
//! it, missing its checkpoint line, or disagreeing with it fails, and so does a missing or
//! foreign witness; [`VerifyReport::completeness`] says whether completeness was shown.
//! Someone holding the signing key can rewrite the whole file consistently; that is caught by
//! comparing with checkpoints kept elsewhere (a witness URL, a SIEM): pass them with
//! [`LogVerifier::witness`] or [`LogVerifier::known_checkpoint`], and a log that was rewritten
//! (forked) or cut below a known checkpoint fails verification.

mod chain;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod db;
mod format;
mod proof;
mod reader;
mod verify;
pub mod witness;
mod writer;

pub use chain::{ChainedEntry, EncodedEvent, LogChain};
pub use format::MAX_EVENT_BYTES;
pub use proof::{ConsistencyProof, InclusionProof, prove_consistency, prove_inclusion};
pub use reader::{
    FollowError, LogEntry, LogFollower, VerifiedReader, for_each_verified, read_verified,
};
pub use verify::{
    Completeness, LogVerifier, Problem, ProblemKind, SigningKeyUse, VerifiedCheckpoint,
    VerifyReport, Warning, verify_file, verify_reader,
};
pub use writer::{LogConfig, LogWriter, SyncPolicy, WitnessFile};

use std::path::PathBuf;

use crate::merkle::ProofError;
use crate::note::NoteError;

/// Errors from writing, opening or proving against a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Reading or writing the file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Signing or opening a checkpoint note failed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// An existing log failed its integrity check, so the writer refuses to append to it.
    #[error(
        "the audit log {} failed its integrity check ({} problem(s)), first: {}; \
         run verification for the full report and restore the log before appending",
        .path.display(), .report.problems.len(),
        .report.problems.first().map(ToString::to_string).unwrap_or_default()
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// What the check found.
        report: Box<VerifyReport>,
    },
    /// The existing log was written for a different origin.
    #[error("the audit log has origin {found:?}, but the writer is configured for {expected:?}")]
    OriginMismatch {
        /// The configured origin.
        expected: String,
        /// The origin found in the log's checkpoints.
        found: String,
    },
    /// An earlier write failed; the writer refuses further appends (fail closed).
    #[error("an earlier write to the audit log failed; reopen the log to recover")]
    Poisoned,
    /// The event could not be turned into JSON.
    #[error("the event cannot be serialized as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A proof could not be built or did not verify.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The requested entry or checkpoint is not in the log, or the input is malformed.
    #[error("{0}")]
    Invalid(String),
}

impl LogError {
    /// Whether retrying the same operation later may succeed (I/O errors only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Io { .. })
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
        let context = context.into();
        move |source| LogError::Io { context, source }
    }
}
