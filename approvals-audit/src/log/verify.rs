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
    /// A checkpoint obtained elsewhere agrees with the log's entries, but the log has no
    /// checkpoint line of that size: the writer only hands out checkpoints it wrote into the
    /// log first, so that line was removed (the end of a log cut just after its entries).
    KnownCheckpointAbsent {
        /// The tree size of the known checkpoint.
        size: u64,
        /// Where that checkpoint came from.
        label: String,
    },
    /// Verification had to compare the log with a witness (the latest checkpoint kept outside
    /// the log) and found none: the log's completeness cannot be shown. Restore the witness,
    /// name it, or verify explicitly without one.
    WitnessMissing {
        /// Where the witness was looked for.
        label: String,
    },
    /// The witness is not a checkpoint of this log signed by a trusted key (another log,
    /// another key, or not a checkpoint at all).
    WitnessRejected {
        /// Where the witness came from.
        label: String,
        /// Why it was refused.
        reason: String,
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
            Self::KnownCheckpointAbsent { .. } => "known_checkpoint_absent",
            Self::WitnessMissing { .. } => "witness_missing",
            Self::WitnessRejected { .. } => "witness_rejected",
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
            Self::KnownCheckpointAbsent { size, label } => write!(
                f,
                "truncated: checkpoint {label} of {size} entries agrees with the log, but the \
                 log's own checkpoint line of that size was removed"
            ),
            Self::WitnessMissing { label } => write!(
                f,
                "no witness: {label}; without the latest checkpoint kept outside the log, a \
                 log cut at its end cannot be told from a complete one (restore the witness, \
                 name it with --witness/--witness-url, or pass --no-witness to verify without \
                 proving completeness)"
            ),
            Self::WitnessRejected { label, reason } => {
                write!(f, "witness {label} refused: {reason}")
            }
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

/// Whether the log was shown to hold everything that was signed (invariant 12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completeness {
    /// Verification was explicitly told not to consult a witness: a log cut at its end (with
    /// the checkpoints that signed its last entries) would have verified too.
    #[default]
    Unproven,
    /// The log holds every entry the witness signed, agrees with its root and contains its
    /// checkpoint.
    Proven {
        /// Where the witness came from.
        witness: String,
        /// The tree size the witness signed.
        size: u64,
    },
    /// The witness was missing or refused, or the log disagrees with it (the report's
    /// problems say how).
    Failed,
}

impl Completeness {
    /// A stable snake_case identifier: `unproven`, `proven` or `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unproven => "unproven",
            Self::Proven { .. } => "proven",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for Completeness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unproven => write!(
                f,
                "COMPLETENESS UNPROVEN: no witness was consulted (--no-witness), so entries cut \
                 from the end of the log, with their checkpoints, would not be noticed"
            ),
            Self::Proven { witness, size } => write!(
                f,
                "complete: the log holds all {size} entries signed by the witness {witness}"
            ),
            Self::Failed => write!(
                f,
                "COMPLETENESS NOT SHOWN: the witness was missing, refused, or disagrees with the log"
            ),
        }
    }
}

/// What one signing key signed in a log: its verified checkpoints and the entries they cover.
/// A log spanning a key rotation lists each key, in the order it first signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyUse {
    /// The key, `name+keyid` (as in a verifier key).
    pub key: String,
    /// How many verified checkpoints it signed.
    pub checkpoints: u64,
    /// Line of the first and of the last of them.
    pub lines: (u64, u64),
    /// Tree sizes of the first and of the last of them.
    pub sizes: (u64, u64),
    /// The entries (`seq`) its checkpoints were the first to sign: from the size of the
    /// verified checkpoint before its first one, up to (excluding) its last one's size.
    pub entries: (u64, u64),
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
    /// Whether the log was shown to be complete against a witness.
    pub completeness: Completeness,
    /// Every key that signed a verified checkpoint, in the order each first signed.
    pub signing_keys: Vec<SigningKeyUse>,
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
    /// "warnings": [{"code", "message"}], "completeness": {"status": "proven" | "unproven" |
    /// "failed", "witness", "witness_size", "message"}}`.
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
            "completeness": match &self.completeness {
                Completeness::Proven { witness, size } => serde_json::json!({
                    "status": "proven", "witness": witness, "witness_size": size,
                    "message": self.completeness.to_string(),
                }),
                other => serde_json::json!({
                    "status": other.code(), "message": other.to_string(),
                }),
            },
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
        writeln!(f, "{}", self.completeness)
    }
}

/// A checkpoint from outside the log that the log must agree with.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) size: u64,
    pub(crate) root: Hash,
    pub(crate) label: String,
    /// The origin it names.
    pub(crate) origin: String,
    /// Whether it is the witness (decides [`Completeness`]).
    pub(crate) witness: bool,
}

/// Which witness verification compares the log with.
#[derive(Debug, Clone)]
enum WitnessChoice {
    /// The log's own: `<log>.witness` beside a file, the witness table of a database.
    Default,
    /// These, by label; `None` when looked for and not found.
    Given(Vec<(String, Option<String>)>),
    /// None: completeness is not shown.
    Waived,
}

/// Where a log's default witness is, for [`LogVerifier::plan`].
#[derive(Debug)]
pub(crate) enum DefaultWitness<'a> {
    /// Beside this log file.
    File(&'a Path),
    /// Read already (a database's witness table): label and note.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Note(String, Option<String>),
    /// The log has no default witness (a reader).
    None,
}

/// What one verification pass checks against: known checkpoints (witnesses included) and the
/// witness outcome so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerifyPlan {
    pub(crate) known: Vec<Known>,
    pub(crate) witness: WitnessState,
}

/// What became of the witness before the log was read.
#[derive(Debug, Clone, Default)]
pub(crate) struct WitnessState {
    /// Verification was told not to use one (or is the writer's own structural check).
    pub(crate) waived: bool,
    /// Witnesses missing or refused.
    pub(crate) failures: Vec<ProblemKind>,
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
    witness: WitnessChoice,
}

impl LogVerifier {
    /// A verifier trusting checkpoints signed by any of `verifiers` (for key rotation, list
    /// both the old and the new key).
    pub fn new(verifiers: impl Into<Vec<Verifier>>) -> Self {
        Self {
            verifiers: verifiers.into(),
            origin: None,
            known: Vec::new(),
            witness: WitnessChoice::Default,
        }
    }

    /// Compares the log with this witness (the latest checkpoint kept outside the log) instead
    /// of the log's default one; call it again to add more. `note: None` records that the
    /// witness was looked for and not found, which fails verification.
    ///
    /// By default a log file is compared with `<log>.witness` beside it
    /// ([`super::witness::witness_path`]) and a database log with its witness table; a log
    /// read from a reader has no default, so its report's completeness is
    /// [`Completeness::Unproven`] unless a witness is named here. The witness must be a checkpoint of
    /// this log signed by a trusted key; the log must hold at least its entries, agree with its
    /// root and contain its checkpoint line. Otherwise verification reports truncation, a fork
    /// or the refused witness, and [`VerifyReport::completeness`] is
    /// [`Completeness::Failed`].
    pub fn witness(&mut self, label: impl Into<String>, note: Option<String>) -> &mut Self {
        let entry = (label.into(), note);
        match &mut self.witness {
            WitnessChoice::Given(list) => list.push(entry),
            other => *other = WitnessChoice::Given(vec![entry]),
        }
        self
    }

    /// Compares the log with the witness file at `path` (see [`Self::witness`]); a file that
    /// does not exist fails verification.
    pub fn witness_file(&mut self, path: impl AsRef<Path>) -> Result<&mut Self, LogError> {
        let path = path.as_ref();
        let note = super::witness::read_witness_file(path)?;
        Ok(self.witness(format!("file {}", path.display()), note))
    }

    /// Verifies without a witness: the report's [`VerifyReport::completeness`] is then
    /// [`Completeness::Unproven`], which reports must show (a log cut at its end, with the
    /// checkpoints that signed its last entries, verifies without one).
    pub fn without_witness(&mut self) -> &mut Self {
        self.witness = WitnessChoice::Waived;
        self
    }

    /// Whether [`Self::without_witness`] was called.
    pub fn is_witness_waived(&self) -> bool {
        matches!(self.witness, WitnessChoice::Waived)
    }

    /// Opens a checkpoint note kept outside the log.
    fn open_known(&self, note: &str, label: &str, witness: bool) -> Result<Known, NoteError> {
        let opened = Checkpoint::open(note, &self.verifiers)?;
        if let Some(origin) = &self.origin
            && *origin != opened.checkpoint.origin
        {
            return Err(NoteError::Checkpoint(format!(
                "checkpoint {label} is for log {:?}, not {origin:?}",
                opened.checkpoint.origin
            )));
        }
        Ok(Known {
            size: opened.checkpoint.size,
            root: opened.checkpoint.root,
            label: label.to_owned(),
            origin: opened.checkpoint.origin,
            witness,
        })
    }

    /// The checkpoints and witness outcome one verification pass starts from, reading the
    /// default witness where there is one.
    pub(crate) fn plan(&self, default: DefaultWitness<'_>) -> Result<VerifyPlan, LogError> {
        let mut plan = VerifyPlan {
            known: self.known.clone(),
            witness: WitnessState::default(),
        };
        let witnesses = match &self.witness {
            WitnessChoice::Waived => {
                plan.witness.waived = true;
                return Ok(plan);
            }
            WitnessChoice::Given(list) => list.clone(),
            WitnessChoice::Default => match default {
                DefaultWitness::File(log) => {
                    let path = super::witness::witness_path(log);
                    let note = super::witness::read_witness_file(&path)?;
                    vec![(format!("file {}", path.display()), note)]
                }
                #[cfg(any(feature = "sqlite", feature = "postgres"))]
                DefaultWitness::Note(label, note) => vec![(label, note)],
                // Bytes from a reader come from nowhere in particular: without a witness
                // named for them, completeness is unproven (and reports say so).
                DefaultWitness::None => {
                    plan.witness.waived = true;
                    return Ok(plan);
                }
            },
        };
        for (label, note) in witnesses {
            let Some(note) = note else {
                plan.witness
                    .failures
                    .push(ProblemKind::WitnessMissing { label });
                continue;
            };
            match self.open_known(&note, &label, true) {
                Ok(known) => plan.known.push(known),
                Err(e) => plan.witness.failures.push(ProblemKind::WitnessRejected {
                    label,
                    reason: e.to_string(),
                }),
            }
        }
        plan.known.sort_by_key(|k| k.size);
        Ok(plan)
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
        let known = self.open_known(note, label, false)?;
        // The log must then carry the same origin as the checkpoint kept for it.
        self.origin.get_or_insert_with(|| known.origin.clone());
        self.known.push(known);
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

    /// A scanner for one verification pass with `plan`.
    pub(crate) fn scanner(&self, plan: VerifyPlan) -> Scanner<'static> {
        let mut scanner = Scanner::new(
            Some(Cow::Owned(self.verifiers.clone())),
            self.origin.clone(),
            Cow::Owned(plan.known),
        );
        scanner.witness = plan.witness;
        scanner
    }

    /// The trusted keys.
    pub fn verifiers(&self) -> &[Verifier] {
        &self.verifiers
    }

    /// Verifies the log file at `path`, against its witness `<path>.witness` unless another
    /// witness was named or [`Self::without_witness`] was called.
    pub fn verify_file(&self, path: impl AsRef<Path>) -> Result<VerifyReport, LogError> {
        let path = path.as_ref();
        let plan = self.plan(DefaultWitness::File(path))?;
        let file = File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
        let mut scanner = self.scanner(plan);
        scanner
            .read_all(BufReader::with_capacity(1 << 16, file))
            .map_err(|e| match e {
                LogError::Io { context, source } => LogError::Io {
                    context: format!("{context} {}", path.display()),
                    source,
                },
                other => other,
            })?;
        Ok(scanner.finish())
    }

    /// Verifies a log read from `reader`. A reader has no default witness: name one with
    /// [`Self::witness`], or the report's completeness is [`Completeness::Unproven`].
    pub fn verify_reader(&self, reader: impl BufRead) -> Result<VerifyReport, LogError> {
        let mut scanner = self.scanner(self.plan(DefaultWitness::None)?);
        scanner.read_all(reader)?;
        Ok(scanner.finish())
    }
}

/// Verifies the log file at `path` against the trusted `verifiers` and its witness file
/// `<path>.witness` (see [`LogVerifier::witness`]).
pub fn verify_file(
    path: impl AsRef<Path>,
    verifiers: &[Verifier],
) -> Result<VerifyReport, LogError> {
    LogVerifier::new(verifiers).verify_file(path)
}

/// Verifies a log read from `reader` against the trusted `verifiers`, without a witness:
/// the report's completeness is [`Completeness::Unproven`]. Use [`LogVerifier::witness`] to
/// compare with one.
pub fn verify_reader(
    reader: impl BufRead,
    verifiers: &[Verifier],
) -> Result<VerifyReport, LogError> {
    LogVerifier::new(verifiers)
        .without_witness()
        .verify_reader(reader)
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
    /// Sizes of verified checkpoint lines that a known checkpoint also has.
    known_seen: Vec<u64>,
    /// The witness outcome before the log was read.
    pub(crate) witness: WitnessState,
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
            known_seen: Vec::new(),
            witness: WitnessState {
                waived: true,
                failures: Vec::new(),
            },
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

    /// Reads every line of `reader`. Lines are read in batches whose event hashes (the bulk of
    /// the work) are computed on all cores ([`entry_hashes`]); everything that depends on order
    /// (sequence, chain, tree, checkpoints) then runs line by line, as [`line`](Self::line).
    pub(crate) fn read_all(&mut self, mut reader: impl BufRead) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(1024);
        let mut batch = Batch::default();
        loop {
            let read = read_line(&mut reader, &mut buf).map_err(LogError::io("reading log"))?;
            if let ReadLine::Complete(n) = read {
                batch.push(&buf, n);
                if batch.is_full() {
                    self.batch(&mut batch);
                }
                continue;
            }
            self.batch(&mut batch);
            match read {
                ReadLine::Eof => return Ok(()),
                ReadLine::Complete(_) => {}
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

    /// Feeds the lines of `batch`, with their event hashes computed in parallel, and empties it.
    fn batch(&mut self, batch: &mut Batch) {
        let hashes = entry_hashes(batch);
        for (i, hashed) in hashes.into_iter().enumerate() {
            self.line_hashed(batch.line(i), hashed);
        }
        self.complete_bytes += batch.read;
        batch.clear();
    }

    /// Feeds one complete line (without its newline).
    pub(crate) fn line(&mut self, bytes: &[u8]) {
        self.line_hashed(bytes, None);
    }

    /// [`line`](Self::line), with the hashes of an entry line when they were computed
    /// already ([`Hashed`]).
    fn line_hashed(&mut self, bytes: &[u8], hashed: Option<Hashed>) {
        self.report.lines += 1;
        let line = self.report.lines;
        match parse_line(bytes) {
            Err(why) => self.problem(Some(line), None, ProblemKind::MalformedLine(why)),
            Ok(Line::Entry {
                seq,
                prev,
                leaf,
                event,
            }) => {
                let hashed = hashed.unwrap_or_else(|| Hashed::of(&prev, &leaf, event));
                self.entry(line, seq, &prev, &leaf, hashed)
            }
            Ok(Line::Checkpoint(note)) => self.checkpoint(line, note),
        }
    }

    /// An entry line, with its [`Hashed`] values.
    fn entry(&mut self, line: u64, seq: u64, prev: &Hash, leaf: &Hash, hashed: Hashed) {
        let computed = hashed.leaf;
        if seq != self.expected_seq {
            let expected = self.expected_seq;
            self.problem(Some(line), Some(seq), ProblemKind::SeqMismatch { expected });
        }
        self.expected_seq = seq.saturating_add(1);
        if &computed != leaf {
            self.problem(Some(line), Some(seq), ProblemKind::EventHashMismatch);
        }
        if prev != &self.last_entry_hash {
            self.problem(Some(line), Some(seq), ProblemKind::ChainBroken);
        }
        self.last_entry_hash = hashed.entry;
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
        if self.known.iter().any(|k| k.size == size) {
            self.known_seen.push(size);
        }
        let before = self.report.verified_size();
        for key in &signed_by {
            match self.report.signing_keys.iter_mut().find(|k| k.key == *key) {
                Some(k) => {
                    k.checkpoints += 1;
                    k.lines.1 = line;
                    k.sizes.1 = size;
                    k.entries.1 = size;
                }
                None => self.report.signing_keys.push(SigningKeyUse {
                    key: key.clone(),
                    checkpoints: 1,
                    lines: (line, line),
                    sizes: (size, size),
                    entries: (before, size),
                }),
            }
        }
        self.report.last_verified = Some(VerifiedCheckpoint {
            line,
            checkpoint,
            note,
            signed_by,
        });
    }

    /// Whether a known checkpoint was already reported as disagreeing with the log.
    fn disagrees(&self, known: &Known) -> bool {
        self.report.problems.iter().any(|p| {
            matches!(&p.kind, ProblemKind::KnownCheckpointMismatch { size, label }
                if *size == known.size && *label == known.label)
        })
    }

    /// Reports missing, refused and foreign witnesses and decides the completeness.
    fn finish_witness(&mut self) {
        if self.witness.waived {
            self.report.completeness = Completeness::Unproven;
            return;
        }
        let mut failures = std::mem::take(&mut self.witness.failures);
        let log_origin = self
            .report
            .last_verified
            .as_ref()
            .map(|v| v.checkpoint.origin.clone());
        for k in self.known.iter().filter(|k| k.witness) {
            if let Some(origin) = &log_origin
                && *origin != k.origin
            {
                // Another log's checkpoint: comparing sizes and roots with it means nothing.
                self.report.problems.retain(|p| match &p.kind {
                    ProblemKind::KnownCheckpointMismatch { label, .. }
                    | ProblemKind::Truncated { label, .. }
                    | ProblemKind::KnownCheckpointAbsent { label, .. } => *label != k.label,
                    _ => true,
                });
                failures.push(ProblemKind::WitnessRejected {
                    label: k.label.clone(),
                    reason: format!(
                        "it is a checkpoint of log {:?}, but this log is {origin:?}",
                        k.origin
                    ),
                });
            }
        }
        let failed_before = !failures.is_empty();
        for kind in failures {
            self.problem(None, None, kind);
        }
        let witnesses: Vec<&Known> = self.known.iter().filter(|k| k.witness).collect();
        let about_witness = |p: &Problem| match &p.kind {
            ProblemKind::KnownCheckpointMismatch { label, .. }
            | ProblemKind::Truncated { label, .. }
            | ProblemKind::KnownCheckpointAbsent { label, .. } => {
                witnesses.iter().any(|w| w.label == *label)
            }
            _ => false,
        };
        let disagrees =
            self.report.problems.iter().any(about_witness) || self.report.problems_omitted > 0;
        self.report.completeness = match witnesses.last() {
            Some(w) if !failed_before && !disagrees => Completeness::Proven {
                witness: w.label.clone(),
                size: w.size,
            },
            _ => Completeness::Failed,
        };
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
        // Every checkpoint handed out was written into the log first: one the log agrees
        // with but does not contain was cut out of it.
        let absent: Vec<ProblemKind> = self
            .known
            .iter()
            .filter(|k| k.size > 0 && k.size <= entries && !self.known_seen.contains(&k.size))
            .filter(|k| !self.disagrees(k))
            .map(|k| ProblemKind::KnownCheckpointAbsent {
                size: k.size,
                label: k.label.clone(),
            })
            .collect();
        for kind in absent {
            self.problem(None, None, kind);
        }
        self.finish_witness();
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

/// Complete lines read but not yet fed to the scanner, in one buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// The end of each line in `bytes`.
    ends: Vec<usize>,
    /// Bytes read from the log for these lines, newlines included.
    read: u64,
}

impl Batch {
    /// Lines per batch: enough to share out across cores, few enough to stay in cache.
    const LINES: usize = 4096;
    /// Bytes per batch, whichever comes first.
    const BYTES: usize = 4 << 20;

    fn push(&mut self, line: &[u8], read: usize) {
        self.bytes.extend_from_slice(line);
        self.ends.push(self.bytes.len());
        self.read += read as u64;
    }

    fn is_full(&self) -> bool {
        self.ends.len() >= Self::LINES || self.bytes.len() >= Self::BYTES
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.read = 0;
    }
}

/// What an entry line hashes to, from the line alone: the leaf hash of its event bytes, and
/// the entry hash its `prev` and `leaf` fields give (what the next line's `prev` must be).
#[derive(Debug, Clone, Copy)]
struct Hashed {
    leaf: Hash,
    entry: Hash,
}

impl Hashed {
    fn of(prev: &Hash, leaf: &Hash, event: &[u8]) -> Self {
        Hashed {
            leaf: leaf_hash(event),
            entry: entry_hash(prev, leaf),
        }
    }
}

/// The [`Hashed`] values of each entry line in `batch` (`None` for other lines), computed on
/// up to [`std::thread::available_parallelism`] threads.
fn entry_hashes(batch: &Batch) -> Vec<Option<Hashed>> {
    let hash = |i: usize| match parse_line(batch.line(i)) {
        Ok(Line::Entry {
            prev, leaf, event, ..
        }) => Some(Hashed::of(&prev, &leaf, event)),
        _ => None,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below a few hundred lines a thread costs more than it saves.
    if threads < 2 || batch.len() < 512 {
        return (0..batch.len()).map(hash).collect();
    }
    let per_thread = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..batch.len())
            .step_by(per_thread)
            .map(|start| {
                let end = (start + per_thread).min(batch.len());
                (
                    start,
                    end,
                    scope.spawn(move || (start..end).map(hash).collect::<Vec<_>>()),
                )
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(start, end, part)| {
                // A hashing thread does not panic (no indexing outside the batch, no unwrap);
                // if one did, hashing its lines here gives the same answer.
                part.join()
                    .unwrap_or_else(|_| (start..end).map(hash).collect())
            })
            .collect()
    })
}
