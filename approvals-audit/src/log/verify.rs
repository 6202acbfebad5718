//! Reading a log back and checking everything it claims.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::LogError;
use super::format::{GENESIS, Line, MAX_LINE_BYTES, ReadLine, entry_hash, parse_line, read_line};
use crate::hex::to_hex;
use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{Checkpoint, NoteError, Verifier, unverified_text};

/// At most this many problems are kept in a report; the rest are only counted.
const MAX_PROBLEMS: usize = 1000;

/// Something wrong with the log: verification fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The 1-based line number where it was found (`None` for the log as a whole).
    pub line: Option<u64>,
    /// The `seq` of the entry on that line, if it is an entry line.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The line is not a valid entry or checkpoint line.
    MalformedLine(String),
    /// The entry's `seq` is not the next one: entries before it were deleted or inserted,
    /// or lines were reordered.
    SeqMismatch {
        /// The `seq` that should be here.
        expected: u64,
    },
    /// The event's bytes do not hash to the entry's `leaf`: the event was edited.
    EventHashMismatch,
    /// The entry's `prev` is not the entry hash of the entry line above it: an entry was
    /// deleted, inserted, reordered or its hashes rewritten just above this line.
    ChainBroken,
    /// The checkpoint note is malformed or has no valid signature from a trusted key.
    CheckpointSignature(NoteError),
    /// The checkpoint names a different log.
    CheckpointOrigin {
        /// The origin of the log.
        expected: String,
        /// The origin in this checkpoint.
        found: String,
    },
    /// The checkpoint's tree size is not the number of entry lines above it: entry lines
    /// before it were deleted or inserted, or the checkpoint line was moved.
    CheckpointMisplaced {
        /// The tree size in the checkpoint.
        size: u64,
        /// How many entry lines precede it.
        entries_before: u64,
    },
    /// The signed root differs from the Merkle root of the entries above it: entries were
    /// edited, or the checkpoint belongs to another history.
    CheckpointRootMismatch {
        /// The tree size in the checkpoint.
        size: u64,
    },
    /// Two validly signed checkpoints of this log cannot both be true: the log was forked
    /// (history rewritten and re-signed). This line's checkpoint does not match the entries;
    /// the other one, which does, extends them.
    Fork {
        /// The tree size of this checkpoint.
        size: u64,
        /// The line of the other checkpoint.
        other_line: u64,
        /// The tree size of the other checkpoint.
        other_size: u64,
    },
    /// A checkpoint obtained elsewhere (a witness, an earlier copy) disagrees with the log:
    /// the first `size` entries were rewritten since that checkpoint was signed.
    KnownCheckpointMismatch {
        /// The tree size of the known checkpoint.
        size: u64,
        /// Where that checkpoint came from.
        label: String,
    },
    /// A checkpoint obtained elsewhere covers more entries than the log holds: the log was
    /// truncated below a size that had already been signed.
    Truncated {
        /// The tree size of the known checkpoint.
        size: u64,
        /// Where that checkpoint came from.
        label: String,
        /// How many entries the log holds.
        entries: u64,
    },
}

impl ProblemKind {
    /// A stable snake_case identifier of the kind, for machines (SIEM rules, reports).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedLine(_) => "malformed_line",
            Self::SeqMismatch { .. } => "seq_mismatch",
            Self::EventHashMismatch => "event_hash_mismatch",
            Self::ChainBroken => "chain_broken",
            Self::CheckpointSignature(_) => "checkpoint_signature",
            Self::CheckpointOrigin { .. } => "checkpoint_origin",
            Self::CheckpointMisplaced { .. } => "checkpoint_misplaced",
            Self::CheckpointRootMismatch { .. } => "checkpoint_root_mismatch",
            Self::Fork { .. } => "fork",
            Self::KnownCheckpointMismatch { .. } => "known_checkpoint_mismatch",
            Self::Truncated { .. } => "truncated",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedLine(why) => write!(f, "malformed line: {why}"),
            Self::SeqMismatch { expected } => write!(
                f,
                "expected seq {expected}: entries were deleted or inserted before this line, \
                 or lines were reordered"
            ),
            Self::EventHashMismatch => {
                write!(
                    f,
                    "the event does not match its leaf hash: the event was edited"
                )
            }
            Self::ChainBroken => write!(
                f,
                "`prev` does not match the entry above: an entry was deleted, inserted, \
                 reordered or rewritten just before this line"
            ),
            Self::CheckpointSignature(e) => write!(f, "checkpoint rejected: {e}"),
            Self::CheckpointOrigin { expected, found } => {
                write!(f, "checkpoint is for log {found:?}, not {expected:?}")
            }
            Self::CheckpointMisplaced {
                size,
                entries_before,
            } => write!(
                f,
                "checkpoint of size {size} follows {entries_before} entries: entry lines \
                 were deleted or inserted above it, or it was moved"
            ),
            Self::CheckpointRootMismatch { size } => write!(
                f,
                "signed root of size {size} differs from the entries above it: entries were \
                 edited or the checkpoint belongs to another history"
            ),
            Self::Fork {
                size,
                other_line,
                other_size,
            } => write!(
                f,
                "forked history: this signed checkpoint (size {size}) is inconsistent with the \
                 signed checkpoint at line {other_line} (size {other_size})"
            ),
            Self::KnownCheckpointMismatch { size, label } => write!(
                f,
                "forked history: the first {size} entries differ from checkpoint {label}"
            ),
            Self::Truncated {
                size,
                label,
                entries,
            } => write!(
                f,
                "truncated: the log holds {entries} entries but checkpoint {label} \
                 already signed {size}"
            ),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.seq) {
            (Some(line), Some(seq)) => write!(f, "line {line} (seq {seq}): {}", self.kind),
            (Some(line), None) => write!(f, "line {line}: {}", self.kind),
            _ => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for Problem {}

/// Something verification could not vouch for, without evidence of tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// Entries after the last valid checkpoint: hash-chained, but not signed yet.
    UnverifiedTail {
        /// Line of the first such entry.
        first_line: u64,
        /// Position (`seq`) of the first such entry.
        first_seq: u64,
        /// How many entries.
        entries: u64,
    },
    /// The last line has no newline (an interrupted write); it was ignored.
    IncompleteLastLine {
        /// Its line number.
        line: u64,
    },
}

impl Warning {
    /// A stable snake_case identifier of the warning, for machines.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnverifiedTail { .. } => "unverified_tail",
            Self::IncompleteLastLine { .. } => "incomplete_last_line",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnverifiedTail {
                first_line,
                first_seq,
                entries,
            } => write!(
                f,
                "{entries} entries from line {first_line} (seq {first_seq}) on are not covered \
                 by a signed checkpoint yet"
            ),
            Self::IncompleteLastLine { line } => {
                write!(
                    f,
                    "line {line} is incomplete (interrupted write) and was ignored"
                )
            }
        }
    }
}

/// A checkpoint that verified: trusted signature, right origin, root of the entries above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// Its line.
    pub line: u64,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note, as found in the log.
    pub note: String,
    /// `name+keyid` of the trusted keys whose signatures verified.
    pub signed_by: Vec<String>,
}

/// The outcome of verifying a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Complete lines read.
    pub lines: u64,
    /// Entry lines read.
    pub entries: u64,
    /// Checkpoint lines read.
    pub checkpoints: u64,
    /// The Merkle root over all entries read.
    pub root: Hash,
    /// The last checkpoint that verified.
    pub last_verified: Option<VerifiedCheckpoint>,
    /// Evidence of tampering or corruption; verification passed only if empty.
    pub problems: Vec<Problem>,
    /// Problems found beyond the first 1000, counted but not kept.
    pub problems_omitted: u64,
    /// Things that could not be vouched for.
    pub warnings: Vec<Warning>,
}

impl VerifyReport {
    /// True when no problem was found (warnings may remain).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The number of entries covered by a verified signed checkpoint.
    pub fn verified_size(&self) -> u64 {
        self.last_verified.as_ref().map_or(0, |v| v.checkpoint.size)
    }

    /// The report as one JSON object, for machines:
    /// `{"ok", "entries", "checkpoints", "verified_size", "root", "last_checkpoint",
    /// "problems": [{"line", "seq", "code", "message"}], "problems_omitted",
    /// "warnings": [{"code", "message"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let problems: Vec<_> = self
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "line": p.line,
                    "seq": p.seq,
                    "code": p.kind.code(),
                    "message": p.kind.to_string(),
                })
            })
            .collect();
        let warnings: Vec<_> = self
            .warnings
            .iter()
            .map(|w| serde_json::json!({"code": w.code(), "message": w.to_string()}))
            .collect();
        serde_json::json!({
            "ok": self.is_ok(),
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "verified_size": self.verified_size(),
            "root": to_hex(&self.root),
            "last_checkpoint": self.last_verified.as_ref().map(|v| serde_json::json!({
                "line": v.line,
                "origin": v.checkpoint.origin,
                "size": v.checkpoint.size,
                "signed_by": v.signed_by,
                "note": v.note,
            })),
            "problems": problems,
            "problems_omitted": self.problems_omitted,
            "warnings": warnings,
        })
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} entries, {} checkpoints, {} entries covered by a verified checkpoint, root {}",
            if self.is_ok() { "OK" } else { "FAILED" },
            self.entries,
            self.checkpoints,
            self.verified_size(),
            to_hex(&self.root)
        )?;
        for p in &self.problems {
            writeln!(f, "error: {p}")?;
        }
        if self.problems_omitted > 0 {
            writeln!(f, "error: {} more problems omitted", self.problems_omitted)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// A checkpoint from outside the log that the log must agree with.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    size: u64,
    root: Hash,
    label: String,
}

/// Verifies logs against trusted keys and, optionally, checkpoints kept elsewhere.
///
/// ```no_run
/// use approvals_audit::log::LogVerifier;
/// use approvals_audit::note::Verifier;
///
/// let keys = Verifier::from_file("/etc/approvals/audit.vkeys")?;
/// let mut verifier = LogVerifier::new(keys);
/// verifier.known_checkpoint_file("/var/lib/approvals/witnessed.checkpoint")?;
/// let report = verifier.verify_file("/var/log/approvals/audit.jsonl")?;
/// assert!(report.is_ok(), "{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LogVerifier {
    verifiers: Vec<Verifier>,
    origin: Option<String>,
    known: Vec<Known>,
}

impl LogVerifier {
    /// A verifier trusting checkpoints signed by any of `verifiers` (for key rotation, list
    /// both the old and the new key).
    pub fn new(verifiers: impl Into<Vec<Verifier>>) -> Self {
        Self {
            verifiers: verifiers.into(),
            origin: None,
            known: Vec::new(),
        }
    }

    /// Requires every checkpoint to carry this origin (otherwise the first valid checkpoint's
    /// origin is expected of all others).
    pub fn origin(&mut self, origin: impl Into<String>) -> &mut Self {
        self.origin = Some(origin.into());
        self
    }

    /// Adds a signed checkpoint obtained outside the log (from a witness, a monitor, the
    /// writer's latest-checkpoint file). The log must contain at least its size and agree
    /// with its root; otherwise verification reports truncation or a fork. The checkpoint's
    /// origin becomes the expected origin of the log unless [`Self::origin`] set one.
    pub fn known_checkpoint(&mut self, note: &str, label: &str) -> Result<&mut Self, NoteError> {
        let opened = Checkpoint::open(note, &self.verifiers)?;
        match &self.origin {
            Some(origin) if *origin != opened.checkpoint.origin => {
                return Err(NoteError::Checkpoint(format!(
                    "checkpoint {label} is for log {:?}, not {origin:?}",
                    opened.checkpoint.origin
                )));
            }
            Some(_) => {}
            // The log must then carry the same origin as the checkpoint kept for it.
            None => self.origin = Some(opened.checkpoint.origin.clone()),
        }
        self.known.push(Known {
            size: opened.checkpoint.size,
            root: opened.checkpoint.root,
            label: label.to_owned(),
        });
        self.known.sort_by_key(|k| k.size);
        Ok(self)
    }

    /// Reads a known checkpoint (a signed note) from a file; see [`Self::known_checkpoint`].
    pub fn known_checkpoint_file(&mut self, path: impl AsRef<Path>) -> Result<&mut Self, LogError> {
        let path = path.as_ref();
        let note = std::fs::read_to_string(path).map_err(LogError::io(format!(
            "reading checkpoint {}",
            path.display()
        )))?;
        self.known_checkpoint(&note, &path.display().to_string())?;
        Ok(self)
    }

    /// The trusted keys, the expected origin and the known checkpoints.
    pub(crate) fn parts(&self) -> (&[Verifier], Option<&str>, &[Known]) {
        (&self.verifiers, self.origin.as_deref(), &self.known)
    }

    /// The trusted keys.
    pub fn verifiers(&self) -> &[Verifier] {
        &self.verifiers
    }

    /// Verifies the log file at `path`.
    pub fn verify_file(&self, path: impl AsRef<Path>) -> Result<VerifyReport, LogError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
        self.verify_reader(BufReader::with_capacity(1 << 16, file))
            .map_err(|e| match e {
                LogError::Io { context, source } => LogError::Io {
                    context: format!("{context} {}", path.display()),
                    source,
                },
                other => other,
            })
    }

    /// Verifies a log read from `reader`.
    pub fn verify_reader(&self, reader: impl BufRead) -> Result<VerifyReport, LogError> {
        let mut scanner = Scanner::new(
            Some(Cow::Borrowed(&self.verifiers)),
            self.origin.clone(),
            Cow::Borrowed(&self.known),
        );
        scanner.read_all(reader)?;
        Ok(scanner.finish())
    }
}

/// Verifies the log file at `path` against the trusted `verifiers`.
pub fn verify_file(
    path: impl AsRef<Path>,
    verifiers: &[Verifier],
) -> Result<VerifyReport, LogError> {
    LogVerifier::new(verifiers).verify_file(path)
}

/// Verifies a log read from `reader` against the trusted `verifiers`.
pub fn verify_reader(
    reader: impl BufRead,
    verifiers: &[Verifier],
) -> Result<VerifyReport, LogError> {
    LogVerifier::new(verifiers).verify_reader(reader)
}

/// The single pass over a log shared by the verifier and by the writer when it reopens a log.
pub(crate) struct Scanner<'a> {
    /// `None`: structure, hashes and roots only, signatures unchecked (writer reopening).
    verifiers: Option<Cow<'a, [Verifier]>>,
    origin: Option<String>,
    known: Cow<'a, [Known]>,
    next_known: usize,
    expected_seq: u64,
    pub(crate) last_entry_hash: Hash,
    pub(crate) tree: Frontier,
    /// Checkpoints signed validly whose root did not match: (line, size).
    suspects: Vec<(u64, u64)>,
    /// First entry not covered by the last verified checkpoint: (line, seq).
    tail_start: Option<(u64, u64)>,
    /// Byte length of the complete lines read.
    pub(crate) complete_bytes: u64,
    pub(crate) report: VerifyReport,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(
        verifiers: Option<Cow<'a, [Verifier]>>,
        origin: Option<String>,
        known: Cow<'a, [Known]>,
    ) -> Self {
        let mut scanner = Self {
            verifiers,
            origin,
            known,
            next_known: 0,
            expected_seq: 0,
            last_entry_hash: GENESIS,
            tree: Frontier::new(),
            suspects: Vec::new(),
            tail_start: None,
            complete_bytes: 0,
            report: VerifyReport::default(),
        };
        scanner.check_known();
        scanner
    }

    /// A scanner for the writer: no signature checks, no known checkpoints.
    pub(crate) fn unsigned(origin: Option<String>) -> Scanner<'static> {
        Scanner::new(None, origin, Cow::Borrowed(&[]))
    }

    fn problem(&mut self, line: Option<u64>, seq: Option<u64>, kind: ProblemKind) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(Problem { line, seq, kind });
        } else {
            self.report.problems_omitted += 1;
        }
    }

    pub(crate) fn read_all(&mut self, mut reader: impl BufRead) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let read = read_line(&mut reader, &mut buf).map_err(LogError::io("reading log"))?;
            match read {
                ReadLine::Eof => return Ok(()),
                ReadLine::Complete(n) => {
                    self.line(&buf);
                    self.complete_bytes += n as u64;
                }
                ReadLine::Incomplete => {
                    let line = self.report.lines + 1;
                    self.report
                        .warnings
                        .push(Warning::IncompleteLastLine { line });
                }
                ReadLine::TooLong => {
                    self.report.lines += 1;
                    let why = format!("longer than {MAX_LINE_BYTES} bytes");
                    self.problem(
                        Some(self.report.lines),
                        None,
                        ProblemKind::MalformedLine(why),
                    );
                }
            }
        }
    }

    /// Feeds one complete line (without its newline).
    pub(crate) fn line(&mut self, bytes: &[u8]) {
        self.report.lines += 1;
        let line = self.report.lines;
        match parse_line(bytes) {
            Err(why) => self.problem(Some(line), None, ProblemKind::MalformedLine(why)),
            Ok(Line::Entry {
                seq,
                prev,
                leaf,
                event,
            }) => self.entry(line, seq, &prev, &leaf, event),
            Ok(Line::Checkpoint(note)) => self.checkpoint(line, note),
        }
    }

    fn entry(&mut self, line: u64, seq: u64, prev: &Hash, leaf: &Hash, event: &[u8]) {
        if seq != self.expected_seq {
            let expected = self.expected_seq;
            self.problem(Some(line), Some(seq), ProblemKind::SeqMismatch { expected });
        }
        self.expected_seq = seq.saturating_add(1);
        let computed = leaf_hash(event);
        if &computed != leaf {
            self.problem(Some(line), Some(seq), ProblemKind::EventHashMismatch);
        }
        if prev != &self.last_entry_hash {
            self.problem(Some(line), Some(seq), ProblemKind::ChainBroken);
        }
        self.last_entry_hash = entry_hash(prev, leaf);
        if self.tail_start.is_none() {
            self.tail_start = Some((line, self.tree.size()));
        }
        self.tree.push(computed);
        self.report.entries += 1;
        self.check_known();
    }

    /// Compares the tree with every known checkpoint of the current size.
    fn check_known(&mut self) {
        let size = self.tree.size();
        while let Some(known) = self.known.get(self.next_known) {
            if known.size > size {
                break;
            }
            self.next_known += 1;
            if known.root != self.tree.root() {
                let kind = ProblemKind::KnownCheckpointMismatch {
                    size: known.size,
                    label: known.label.clone(),
                };
                let line = (size > 0).then_some(self.report.lines);
                self.problem(line, size.checked_sub(1), kind);
            }
        }
    }

    fn checkpoint(&mut self, line: u64, note: String) {
        self.report.checkpoints += 1;
        let opened = match &self.verifiers {
            Some(verifiers) => Checkpoint::open(&note, verifiers).map(|o| {
                let signed_by = o
                    .note
                    .verified_by
                    .iter()
                    .map(|(name, id)| format!("{name}+{id:08x}"))
                    .collect();
                (o.checkpoint, signed_by)
            }),
            None => unverified_text(&note)
                .and_then(Checkpoint::from_text)
                .map(|c| (c, Vec::new())),
        };
        let (checkpoint, signed_by) = match opened {
            Ok(o) => o,
            Err(e) => return self.problem(Some(line), None, ProblemKind::CheckpointSignature(e)),
        };
        match &self.origin {
            Some(expected) if *expected != checkpoint.origin => {
                let kind = ProblemKind::CheckpointOrigin {
                    expected: expected.clone(),
                    found: checkpoint.origin,
                };
                return self.problem(Some(line), None, kind);
            }
            Some(_) => {}
            None => self.origin = Some(checkpoint.origin.clone()),
        }
        let size = checkpoint.size;
        let entries_before = self.tree.size();
        if size != entries_before {
            let kind = ProblemKind::CheckpointMisplaced {
                size,
                entries_before,
            };
            return self.problem(Some(line), None, kind);
        }
        if checkpoint.root != self.tree.root() {
            self.problem(
                Some(line),
                None,
                ProblemKind::CheckpointRootMismatch { size },
            );
            match &self.report.last_verified {
                Some(v) if v.checkpoint.size == size => {
                    let kind = ProblemKind::Fork {
                        size,
                        other_line: v.line,
                        other_size: size,
                    };
                    self.problem(Some(line), None, kind);
                }
                _ => self.suspects.push((line, size)),
            }
            return;
        }
        // This checkpoint matches the entries, so the entries' history is the only one it
        // extends: every earlier signed checkpoint that disagreed with them is a fork.
        for (suspect_line, suspect_size) in std::mem::take(&mut self.suspects) {
            let kind = ProblemKind::Fork {
                size: suspect_size,
                other_line: line,
                other_size: size,
            };
            self.problem(Some(suspect_line), None, kind);
        }
        self.tail_start = None;
        self.report.last_verified = Some(VerifiedCheckpoint {
            line,
            checkpoint,
            note,
            signed_by,
        });
    }

    /// Closes the pass: truncation below known checkpoints and the unverified tail.
    pub(crate) fn finish(mut self) -> VerifyReport {
        self.finish_in_place();
        self.report
    }

    pub(crate) fn finish_in_place(&mut self) {
        let entries = self.tree.size();
        let missing: Vec<ProblemKind> = self.known[self.next_known..]
            .iter()
            .map(|known| ProblemKind::Truncated {
                size: known.size,
                label: known.label.clone(),
                entries,
            })
            .collect();
        for kind in missing {
            self.problem(None, None, kind);
        }
        self.next_known = self.known.len();
        if let Some((first_line, first_seq)) = self.tail_start {
            self.report.warnings.push(Warning::UnverifiedTail {
                first_line,
                first_seq,
                entries: entries - first_seq,
            });
        }
        self.report.root = self.tree.root();
    }
}
