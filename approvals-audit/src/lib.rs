//! Tamper-evident audit log: Merkle-hashed entries, signed checkpoints, verification, SIEM export and evidence reports.
//!
//! - [`merkle`]: RFC 6962 tree heads, inclusion and consistency proofs.
//! - [`note`]: C2SP signed notes, Ed25519 note keys and `tlog-checkpoint` bodies.
//! - [`log`]: the append-only JSON-lines audit log, its writer, verifier and proofs.
//! - [`canonical`]: the canonical JSON encoding that entries are hashed in.
#![warn(missing_docs)]

pub mod canonical;
pub mod log;
pub mod merkle;
pub mod note;

mod hex;

pub use log::{LogConfig, LogError, LogWriter, SyncPolicy, VerifyReport};
pub use merkle::Hash;
pub use note::{Checkpoint, Signer, Verifier};
