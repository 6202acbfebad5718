//! The log's hash chain and Merkle tree without a file, for sinks that keep entries elsewhere.

use serde_json::Value;

use super::LogError;
use super::format::{GENESIS, MAX_EVENT_BYTES, entry_hash, write_checkpoint, write_entry};
use super::verify::Scanner;
use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{Checkpoint, Signer};

/// One entry produced by [`LogChain::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEntry {
    /// Its position in the log.
    pub seq: u64,
    /// The RFC 6962 leaf hash of the event.
    pub leaf: Hash,
    /// The complete entry line in the log format (without the newline).
    pub line: String,
}

/// An event in the log's canonical JSON with its leaf hash: everything about an entry that
/// does not depend on the entries before it, made once on any thread and appended with
/// [`LogChain::append_encoded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    json: Vec<u8>,
    leaf: Hash,
}

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(event: &Value) -> Self {
        let mut json = Vec::with_capacity(512);
        approvals_core::request::write_canonical_json(event, &mut json);
        let leaf = leaf_hash(&json);
        EncodedEvent { json, leaf }
    }

    /// The canonical JSON.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// The state of a log (hash chain and Merkle tree) with no storage of its own: for audit sinks
/// that keep entries somewhere other than a file, such as a SQL table.
///
/// Every entry and checkpoint it returns is one line of the log format ([`crate::log`]). Store
/// the lines in order (for example as rows keyed by `seq`, with checkpoints in the same
/// sequence) and feed them, newline-terminated, to [`super::verify_reader`] or
/// [`super::LogVerifier::verify_reader`]: verification, proofs and exports then work exactly as
/// for a file. Store each entry in the same transaction as the state change it records.
///
/// ```
/// use approvals_audit::log::{LogChain, verify_reader};
/// use approvals_audit::note::Signer;
///
/// let signer = Signer::generate("audit.example/sql")?;
/// let mut chain = LogChain::new("audit.example/sql")?;
/// let mut rows = Vec::new(); // stand-in for a table
/// rows.push(chain.append(&serde_json::json!({"event": "requested"}))?.line);
/// rows.push(chain.checkpoint(&[&signer])?.1);
///
/// let text: String = rows.iter().map(|l| format!("{l}\n")).collect();
/// let report = verify_reader(text.as_bytes(), &[signer.verifier()])?;
/// assert!(report.is_ok() && report.verified_size() == 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LogChain {
    origin: String,
    tree: Frontier,
    last_entry_hash: Hash,
    event_buf: Vec<u8>,
    line_buf: Vec<u8>,
}

impl LogChain {
    /// An empty log named `origin`.
    pub fn new(origin: impl Into<String>) -> Result<Self, LogError> {
        let origin = origin.into();
        if origin.is_empty() || origin.chars().any(char::is_control) {
            return Err(LogError::Invalid(format!(
                "invalid log origin {origin:?}: it must be one non-empty line"
            )));
        }
        Ok(Self {
            origin,
            tree: Frontier::new(),
            last_entry_hash: GENESIS,
            event_buf: Vec::with_capacity(1024),
            line_buf: Vec::with_capacity(1024),
        })
    }

    /// Rebuilds the state from the lines stored so far (entries and checkpoints, in order,
    /// without newlines). Hashes, the chain and checkpoint roots must be intact and the
    /// checkpoints must carry `origin` (signatures are not checked here; verify separately).
    pub fn resume<'a>(
        origin: impl Into<String>,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, LogError> {
        let mut chain = Self::new(origin)?;
        let mut scanner = Scanner::unsigned(Some(chain.origin.clone()));
        for line in lines {
            scanner.line(line.as_bytes());
        }
        scanner.finish_in_place();
        if !scanner.report.is_ok() {
            return Err(LogError::Invalid(format!(
                "the stored audit log failed its integrity check ({} problem(s)), first: {}",
                scanner.report.problems.len(),
                scanner
                    .report
                    .problems
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )));
        }
        chain.tree = scanner.tree;
        chain.last_entry_hash = scanner.last_entry_hash;
        Ok(chain)
    }

    /// Adds one event (stored in canonical JSON) and returns its entry line.
    pub fn append(&mut self, event: &Value) -> Result<ChainedEntry, LogError> {
        let mut json = std::mem::take(&mut self.event_buf);
        json.clear();
        approvals_core::request::write_canonical_json(event, &mut json);
        let entry = self.append_canonical(&json, || leaf_hash(&json));
        self.event_buf = json;
        entry
    }

    /// Adds one event encoded beforehand ([`EncodedEvent::new`]), so the encoding and its hash
    /// need not be done by whoever holds the chain (a database's one writer thread).
    pub fn append_encoded(&mut self, event: &EncodedEvent) -> Result<ChainedEntry, LogError> {
        self.append_canonical(&event.json, || event.leaf)
    }

    /// Adds the event whose canonical JSON is `json`; `leaf` gives its leaf hash, called only
    /// for an event within the size limit.
    fn append_canonical(
        &mut self,
        json: &[u8],
        leaf: impl FnOnce() -> Hash,
    ) -> Result<ChainedEntry, LogError> {
        if json.len() > MAX_EVENT_BYTES {
            return Err(LogError::Invalid(format!(
                "the event is {} bytes of JSON, more than the limit of {MAX_EVENT_BYTES}",
                json.len()
            )));
        }
        let seq = self.tree.size();
        let leaf = leaf();
        self.line_buf.clear();
        write_entry(&mut self.line_buf, seq, &self.last_entry_hash, &leaf, json);
        self.line_buf.pop(); // the newline
        let line = String::from_utf8_lossy(&self.line_buf).into_owned();
        self.last_entry_hash = entry_hash(&self.last_entry_hash, &leaf);
        self.tree.push(leaf);
        Ok(ChainedEntry { seq, leaf, line })
    }

    /// Signs a checkpoint over all entries so far; returns it and its line.
    pub fn checkpoint(&self, signers: &[&Signer]) -> Result<(Checkpoint, String), LogError> {
        let checkpoint = Checkpoint::new(self.origin.clone(), self.tree.size(), self.tree.root());
        let note = checkpoint.sign(signers)?;
        let mut line = Vec::with_capacity(note.len() + 20);
        write_checkpoint(&mut line, &note);
        line.pop();
        Ok((checkpoint, String::from_utf8_lossy(&line).into_owned()))
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The Merkle tree head over all entries.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}
