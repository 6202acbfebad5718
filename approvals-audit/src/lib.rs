//! Tamper-evident audit log: Merkle-hashed entries, signed checkpoints, verification, SIEM export and evidence reports.
//!
//! Audit events are appended to a JSON-lines file. Every entry carries the RFC 6962 leaf
//! hash of its event and the hash of the entry before it; every N entries (or T seconds, on
//! key rotation and on close) the writer appends a checkpoint: a C2SP signed note, signed
//! with Ed25519, over the Merkle tree head of all entries so far. A verifier holding only
//! the public key recomputes everything and names the line of any edit, deletion, insertion
//! or reordering; inclusion proofs show a single event to someone who never sees the log.
//!
//! - [`merkle`]: RFC 6962 tree heads, inclusion and consistency proofs.
//! - [`note`]: C2SP signed notes, Ed25519 note keys and `tlog-checkpoint` bodies.
//! - [`log`]: the log file format, [`LogWriter`], [`log::LogChain`] (the same format for
//!   sinks that are not files, such as SQL), [`log::LogVerifier`], [`log::VerifiedReader`] and
//!   exported proofs.
//! - [`SignedLogSink`]: the gate's [`approvals_core::AuditSink`] writing to a log.
//! - [`grant`]: grants as compact signed tokens another service verifies with a public key.
//! - [`siem`]: verified events as JSON lines, OCSF or CEF, batch or following the log.
//! - [`report`]: the evidence report for auditors (self-contained HTML and CSV).
//! - [`witness`]: the latest checkpoint kept outside the log (file, database table, URL).
//!
//! ```
//! use approvals_audit::log::{LogConfig, LogWriter, prove_inclusion, verify_file};
//! use approvals_audit::note::Signer;
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("audit.jsonl");
//! let signer = Signer::generate("audit.example.com/prod")?; // keep signer.to_skey() secret
//! let trusted = [signer.verifier()]; // publish signer.verifier().to_string()
//!
//! let mut log = LogWriter::create(&path, LogConfig::new("audit.example.com/prod"), signer)?;
//! log.append(&json!({"type": "requested", "request_id": "r-1"}))?;
//! log.append(&json!({"type": "reviewed", "request_id": "r-1", "decision": "approve"}))?;
//! log.close()?; // writes the final checkpoint
//!
//! let report = verify_file(&path, &trusted)?;
//! assert!(report.is_ok(), "{report}");
//!
//! let proof = prove_inclusion(&path, 1, None)?; // entry 1 at the last checkpoint
//! assert_eq!(proof.verify(&trusted)?.checkpoint.size, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is detected, and by what
//!
//! | change to the file                            | found by                                   |
//! |-----------------------------------------------|--------------------------------------------|
//! | an event edited                               | its leaf hash (line and seq reported)      |
//! | an entry deleted, inserted or moved           | `seq` and the hash chain, at that line     |
//! | hashes recomputed after such a change         | the next signed checkpoint's root          |
//! | a checkpoint edited or forged without the key | its signature                              |
//! | the tail cut off (mid-batch, at a checkpoint, to nothing), or the last checkpoint line removed | the witness, by default: `truncated` or `known_checkpoint_absent` ([`witness`]) |
//! | history rewritten and re-signed with the key  | an older signed checkpoint left in the file, or the witness / one kept elsewhere ([`log::LogVerifier::known_checkpoint`]): `known_checkpoint_mismatch` |
//! | the witness missing, of another log or key    | `witness_missing`, `witness_rejected` (verification fails) |
//!
//! The last rows are why the writer keeps its latest checkpoint outside the log (invariant 12):
//! in `<log>.witness` beside it (or a database's witness table), optionally also at a witness
//! URL on another machine ([`log::LogConfig::witness_url`]). Verification compares the log with
//! it by default; [`log::LogVerifier::without_witness`] (`--no-witness`) is the explicit
//! exception, and the report then says in red that completeness is unproven. A log is only as
//! tamper-evident as the checkpoints that someone other than the key holder remembers.
//!
//! A plain JSON-lines file (`approvals_core::JsonLinesSink`) has no chain, checkpoints or
//! witness: verification refuses it as unverifiable; use [`SignedLogSink`] for evidence.
#![warn(missing_docs)]

pub mod grant;
pub mod log;
pub mod merkle;
pub mod note;
pub mod report;
pub mod siem;
mod sink;

mod hex;
mod view;

pub use log::witness;
pub use log::{LogConfig, LogError, LogWriter, SyncPolicy, VerifyReport};
pub use merkle::Hash;
pub use note::{Checkpoint, Signer, Verifier};
pub use sink::SignedLogSink;
