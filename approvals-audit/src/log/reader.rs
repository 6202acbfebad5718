//! Reading entries back only once a trusted signed checkpoint vouches for them, from a whole
//! file or from a file that is still growing.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::LogError;
use super::format::{Line, MAX_LINE_BYTES, ReadLine, parse_line, read_line};
use super::verify::{
    DefaultWitness, LogVerifier, Problem, ProblemKind, Scanner, VerifiedCheckpoint, VerifyReport,
};
use crate::merkle::Hash;

/// One entry of a log, released by a [`VerifiedReader`] after a trusted checkpoint covered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position in the log.
    pub seq: u64,
    /// Its 1-based line in the log file.
    pub line: u64,
    /// The RFC 6962 leaf hash of the event.
    pub leaf: Hash,
    /// The event exactly as stored (canonical JSON).
    pub event: String,
    /// The size of the signed checkpoint that covers it.
    pub checkpoint_size: u64,
}

impl LogEntry {
    /// The event as a JSON value.
    pub fn event_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.event)
    }

    /// The leaf hash as 64 lower-case hex digits.
    pub fn leaf_hex(&self) -> String {
        crate::hex::to_hex(&self.leaf)
    }
}

/// Verifies a log line by line, as [`LogVerifier`] does, and hands out each entry only after a
/// checkpoint signed by a trusted key has covered it. Entries of the unsigned tail are held
/// back; after the first problem nothing more is released (fail closed).
///
/// ```
/// use approvals_audit::log::{LogConfig, LogVerifier, LogWriter, VerifiedReader};
/// use approvals_audit::note::Signer;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("audit.jsonl");
/// let signer = Signer::generate("audit.example/prod")?;
/// let mut log = LogWriter::create(&path, LogConfig::new("audit.example/prod"), signer.clone())?;
/// log.append(&serde_json::json!({"event": "requested"}))?;
/// log.close()?;
///
/// let mut reader = VerifiedReader::new(&LogVerifier::new([signer.verifier()]));
/// for line in std::fs::read_to_string(&path)?.lines() {
///     reader.push_line(line.as_bytes())?;
/// }
/// assert_eq!(reader.next_verified().map(|e| e.seq), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VerifiedReader {
    scanner: Scanner<'static>,
    pending: VecDeque<LogEntry>,
    ready: VecDeque<LogEntry>,
    failed: bool,
    partial: Vec<u8>,
    partial_too_long: bool,
}

impl std::fmt::Debug for VerifiedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedReader")
            .field("lines", &self.scanner.report.lines)
            .field("pending", &self.pending.len())
            .field("ready", &self.ready.len())
            .field("failed", &self.failed)
            .finish()
    }
}

fn problem_count(report: &VerifyReport) -> u64 {
    report.problems.len() as u64 + report.problems_omitted
}

impl VerifiedReader {
    /// A reader checking against `verifier`'s trusted keys, origin, known checkpoints and
    /// witness. Lines pushed into a reader come from nowhere in particular, so there is no
    /// default witness: name one ([`LogVerifier::witness`]), or the final report's
    /// completeness is unproven.
    pub fn new(verifier: &LogVerifier) -> Self {
        let plan = verifier.plan(DefaultWitness::None).unwrap_or_default();
        Self::with_scanner(verifier.scanner(plan))
    }

    /// A reader for the log file at `path`: its default witness is `<path>.witness`.
    pub(crate) fn for_file(verifier: &LogVerifier, path: &Path) -> Result<Self, LogError> {
        let plan = verifier.plan(DefaultWitness::File(path))?;
        Ok(Self::with_scanner(verifier.scanner(plan)))
    }

    fn with_scanner(scanner: Scanner<'static>) -> Self {
        Self {
            scanner,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            failed: false,
            partial: Vec::new(),
            partial_too_long: false,
        }
    }

    /// Feeds one complete line, without its newline. Returns the first problem it caused;
    /// after a problem, the reader releases no further entries.
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), Problem> {
        let problems_before = problem_count(&self.scanner.report);
        let verified_before = self.verified_size();
        let line_no = self.scanner.report.lines + 1;
        let entry = match parse_line(line) {
            Ok(Line::Entry {
                seq, leaf, event, ..
            }) => Some(LogEntry {
                seq,
                line: line_no,
                leaf,
                event: String::from_utf8_lossy(event).into_owned(),
                checkpoint_size: 0,
            }),
            _ => None,
        };
        self.scanner.line(line);
        if problem_count(&self.scanner.report) > problems_before {
            self.failed = true;
            self.pending.clear();
        }
        if self.failed {
            return Err(self.first_problem_since(problems_before as usize));
        }
        if let Some(entry) = entry {
            self.pending.push_back(entry);
        }
        let verified = self.verified_size();
        if verified > verified_before {
            while let Some(mut entry) = self.pending.pop_front() {
                if entry.seq >= verified {
                    self.pending.push_front(entry);
                    break;
                }
                entry.checkpoint_size = verified;
                self.ready.push_back(entry);
            }
        }
        Ok(())
    }

    fn first_problem_since(&self, index: usize) -> Problem {
        self.scanner
            .report
            .problems
            .get(index)
            .or(self.scanner.report.problems.first())
            .cloned()
            .unwrap_or(Problem {
                line: None,
                seq: None,
                kind: ProblemKind::MalformedLine("an earlier line failed verification".into()),
            })
    }

    /// Feeds bytes as they arrive (any split); complete lines are verified, a partial last
    /// line is kept until its newline comes.
    pub fn push_bytes(&mut self, mut bytes: &[u8]) -> Result<(), Problem> {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = bytes.split_at(i);
            bytes = &rest[1..];
            if self.partial_too_long {
                self.partial_too_long = false;
                self.partial.clear();
                self.too_long()?;
                continue;
            }
            if self.partial.is_empty() {
                self.push_line(head)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                let result = self.push_line(&line);
                line.clear();
                self.partial = line;
                result?;
            }
        }
        if !self.partial_too_long {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE_BYTES {
                self.partial_too_long = true;
                self.partial = Vec::new();
            }
        }
        Ok(())
    }

    fn too_long(&mut self) -> Result<(), Problem> {
        self.scanner.report.lines += 1;
        let problem = Problem {
            line: Some(self.scanner.report.lines),
            seq: None,
            kind: ProblemKind::MalformedLine(format!("longer than {MAX_LINE_BYTES} bytes")),
        };
        self.scanner.report.problems.push(problem.clone());
        self.failed = true;
        self.pending.clear();
        Err(problem)
    }

    /// The next entry covered by a verified checkpoint, in log order.
    pub fn next_verified(&mut self) -> Option<LogEntry> {
        self.ready.pop_front()
    }

    /// How many entries are covered by a verified checkpoint so far.
    pub fn verified_size(&self) -> u64 {
        self.scanner.report.verified_size()
    }

    /// The last checkpoint that verified.
    pub fn last_verified(&self) -> Option<&VerifiedCheckpoint> {
        self.scanner.report.last_verified.as_ref()
    }

    /// Whether a problem was found (no further entries are released).
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Entries read but not yet covered by a verified checkpoint.
    pub fn unverified_entries(&self) -> usize {
        self.pending.len()
    }

    /// The report so far (without the end-of-log checks of [`Self::finish`]).
    pub fn report(&self) -> &VerifyReport {
        &self.scanner.report
    }

    /// Ends the pass: applies the end-of-log checks (truncation below a known checkpoint, the
    /// unsigned tail, an incomplete last line) and returns the full report.
    pub fn finish(mut self) -> VerifyReport {
        if !self.partial.is_empty() || self.partial_too_long {
            let line = self.scanner.report.lines + 1;
            self.scanner
                .report
                .warnings
                .push(super::Warning::IncompleteLastLine { line });
        }
        self.scanner.finish()
    }
}

/// Reads a whole log file and returns its verification report with every entry covered by a
/// verified checkpoint (in log order). When the report has problems, the entries are those
/// released before the first one. Holds every entry in memory; see [`for_each_verified`].
pub fn read_verified(
    path: impl AsRef<Path>,
    verifier: &LogVerifier,
) -> Result<(VerifyReport, Vec<LogEntry>), LogError> {
    let mut entries = Vec::new();
    let report = for_each_verified(path, verifier, |entry| {
        entries.push(entry);
        Ok::<(), LogError>(())
    })?;
    Ok((report, entries))
}

/// Reads a whole log file, calling `f` with each entry as soon as a verified checkpoint covers
/// it (in log order, nothing after the first problem), and returns the full verification
/// report. Memory use is bounded by the entries between two checkpoints. An error from `f`
/// stops the pass and is returned.
pub fn for_each_verified<E: From<LogError>>(
    path: impl AsRef<Path>,
    verifier: &LogVerifier,
    mut f: impl FnMut(LogEntry) -> Result<(), E>,
) -> Result<VerifyReport, E> {
    let path = path.as_ref();
    let file = File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut reader = VerifiedReader::for_file(verifier, path)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let read = read_line(&mut input, &mut buf)
            .map_err(LogError::io(format!("reading {}", path.display())))?;
        match read {
            ReadLine::Eof => break,
            ReadLine::Complete(_) => {
                // Problems are collected in the report; keep reading for the full picture.
                let _ = reader.push_line(&buf);
            }
            ReadLine::Incomplete => {
                reader.partial = std::mem::take(&mut buf);
                break;
            }
            ReadLine::TooLong => {
                let _ = reader.too_long();
            }
        }
        while let Some(entry) = reader.next_verified() {
            f(entry)?;
        }
    }
    while let Some(entry) = reader.next_verified() {
        f(entry)?;
    }
    Ok(reader.finish())
}

/// Follows a log file that a writer is still appending to (like `tail -f`), releasing each
/// entry once a trusted checkpoint covers it.
///
/// Call [`Self::poll`] whenever convenient (a timer); it reads what was appended since the
/// last call. A problem in the new lines, or a file that shrank, is an error and the follower
/// releases nothing more.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    file: File,
    offset: u64,
    reader: VerifiedReader,
    chunk: Vec<u8>,
}

/// Why a [`LogFollower`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// Reading the file failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The new lines failed verification.
    #[error("the audit log failed verification: {0}")]
    Problem(Problem),
    /// The file is shorter than what was already read: it was truncated or replaced.
    #[error(
        "the audit log {} shrank from {read} to {now} bytes: it was truncated or replaced",
        .path.display()
    )]
    Shrunk {
        /// The log file.
        path: PathBuf,
        /// Bytes read before.
        read: u64,
        /// Its length now.
        now: u64,
    },
}

impl LogFollower {
    /// Opens `path` to follow it from its first line.
    pub fn open(path: impl AsRef<Path>, verifier: &LogVerifier) -> Result<Self, LogError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            offset: 0,
            reader: VerifiedReader::for_file(verifier, path)?,
            chunk: vec![0; 1 << 16],
        })
    }

    /// Reads everything appended since the last call and returns the entries that became
    /// verified, in log order.
    pub fn poll(&mut self) -> Result<Vec<LogEntry>, FollowError> {
        if self.reader.has_failed() {
            return Err(FollowError::Problem(self.reader.first_problem_since(0)));
        }
        let context = || format!("reading {}", self.path.display());
        let len = self.file.metadata().map_err(LogError::io(context()))?.len();
        if len < self.offset {
            return Err(FollowError::Shrunk {
                path: self.path.clone(),
                read: self.offset,
                now: len,
            });
        }
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(LogError::io(context()))?;
        let mut out = Vec::new();
        loop {
            let n = self
                .file
                .read(&mut self.chunk)
                .map_err(LogError::io(context()))?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            let result = self.reader.push_bytes(&self.chunk[..n]);
            out.extend(std::iter::from_fn(|| self.reader.next_verified()));
            result.map_err(FollowError::Problem)?;
        }
        Ok(out)
    }

    /// The last checkpoint that verified.
    pub fn last_verified(&self) -> Option<&VerifiedCheckpoint> {
        self.reader.last_verified()
    }

    /// Entries read but not yet covered by a verified checkpoint.
    pub fn unverified_entries(&self) -> usize {
        self.reader.unverified_entries()
    }
}
