//! Appending events and checkpoints to a log file.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use approvals_core::request::write_canonical_json;
use serde_json::Value;

use std::borrow::Cow;

use super::LogError;
use super::format::{MAX_EVENT_BYTES, entry_hash, write_checkpoint, write_entry};
use super::verify::{Known, ProblemKind, Scanner, Warning};
use super::witness::{
    HttpWitness, read_witness_file, sync_parent_dir, witness_path, write_atomically,
    write_witness_file,
};
use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{Checkpoint, Signer, Verifier, unverified_text};

/// When appended entries reach the disk. Checkpoints are always written and synced
/// (`fdatasync`) before [`LogWriter::checkpoint`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Every entry is written and synced to disk before `append` returns: nothing
    /// acknowledged is lost, even on power failure. The slowest policy.
    #[default]
    Always,
    /// Every entry is handed to the operating system before `append` returns: it survives a
    /// crash of the process, not of the machine. Synced at checkpoints.
    Write,
    /// Entries are buffered in memory and written and synced every this many entries, and
    /// at checkpoints, [`LogWriter::sync`] and close (group commit). A crash loses at most
    /// the entries since the last sync. `Batch(0)` and `Batch(1)` behave like `Always`.
    Batch(u32),
    /// Entries are buffered in memory (64 KiB) and written and synced at checkpoints,
    /// [`LogWriter::sync`] and close. Fastest; a crash loses the entries since the last
    /// checkpoint.
    Buffered,
}

/// Where a [`LogWriter`] keeps its witness file: the latest signed checkpoint, outside the log
/// ([`witness`](super::witness)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WitnessFile {
    /// Beside the log: `<log>.witness`, where verification looks by default.
    #[default]
    Beside,
    /// At this path (verifiers must then be told where: `--witness <file>`).
    At(PathBuf),
    /// None (keep a witness URL instead, or verification cannot show completeness).
    Disabled,
}

/// How a [`LogWriter`] names, checkpoints and syncs its log.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// The log's identity, the first line of every checkpoint (e.g. `audit.example.com/prod`).
    /// The signing key's name should match it.
    pub origin: String,
    /// Write a checkpoint after this many entries (0: never by count).
    pub checkpoint_every: u64,
    /// Write a checkpoint when an entry is appended this long after the last checkpoint.
    /// Checked on append; call [`LogWriter::checkpoint`] from a timer for idle logs.
    pub checkpoint_interval: Option<Duration>,
    /// When entries reach the disk.
    pub sync: SyncPolicy,
    /// Also keep the latest signed checkpoint in this file (replaced atomically), to be
    /// copied off the machine or passed to [`super::LogVerifier::known_checkpoint_file`].
    pub latest_checkpoint_file: Option<PathBuf>,
    /// The witness file (default: `<log>.witness`, which verification compares the log with).
    pub witness_file: WitnessFile,
    /// Also `POST` every checkpoint to this witness URL ([`HttpWitness`]).
    pub witness_url: Option<String>,
}

impl LogConfig {
    /// Defaults: a checkpoint every 1000 entries or 10 seconds, [`SyncPolicy::Always`].
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            checkpoint_every: 1000,
            checkpoint_interval: Some(Duration::from_secs(10)),
            sync: SyncPolicy::Always,
            latest_checkpoint_file: None,
            witness_file: WitnessFile::Beside,
            witness_url: None,
        }
    }

    /// Sets [`Self::witness_file`].
    pub fn witness_file(mut self, witness: WitnessFile) -> Self {
        self.witness_file = witness;
        self
    }

    /// Sets [`Self::witness_url`]: every checkpoint is also `POST`ed there.
    pub fn witness_url(mut self, url: impl Into<String>) -> Self {
        self.witness_url = Some(url.into());
        self
    }

    /// Sets [`Self::checkpoint_every`].
    pub fn checkpoint_every(mut self, entries: u64) -> Self {
        self.checkpoint_every = entries;
        self
    }

    /// Sets [`Self::checkpoint_interval`].
    pub fn checkpoint_interval(mut self, interval: Option<Duration>) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets [`Self::sync`].
    pub fn sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`Self::latest_checkpoint_file`].
    pub fn latest_checkpoint_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.latest_checkpoint_file = Some(path.into());
        self
    }
}

/// Appends events to a log file, hash-chaining them and writing signed checkpoints.
///
/// One writer per file: the writer keeps the chain and tree state in memory, so two writers
/// (or processes) appending to the same file would corrupt it.
///
/// ```
/// use approvals_audit::log::{LogConfig, LogWriter, verify_file};
/// use approvals_audit::note::Signer;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("audit.jsonl");
/// let signer = Signer::generate("audit.example/prod")?;
/// let mut log = LogWriter::create(&path, LogConfig::new("audit.example/prod"), signer.clone())?;
/// log.append(&serde_json::json!({"event": "requested", "request": "r1"}))?;
/// log.close()?;
///
/// let report = verify_file(&path, &[signer.verifier()])?;
/// assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: BufWriter<File>,
    config: LogConfig,
    signers: Vec<Signer>,
    tree: Frontier,
    last_entry_hash: Hash,
    last_checkpoint: Option<Checkpoint>,
    last_checkpoint_at: Instant,
    event_buf: Vec<u8>,
    line_buf: Vec<u8>,
    /// Entries appended since the last sync (for [`SyncPolicy::Batch`]).
    unsynced: u32,
    poisoned: bool,
    closed: bool,
    /// The witness file, resolved.
    witness_file: Option<PathBuf>,
    /// The witness URL.
    witness_http: Option<HttpWitness>,
    /// A checkpoint (note, size) written to the log but not yet to every witness: retried
    /// before every later write, which fails while it cannot be published (fail closed).
    witness_pending: Option<(String, u64)>,
}

fn check_origin(origin: &str) -> Result<(), LogError> {
    if origin.is_empty() || origin.chars().any(char::is_control) {
        return Err(LogError::Invalid(format!(
            "invalid log origin {origin:?}: it must be one non-empty line"
        )));
    }
    Ok(())
}

fn resolve_witness(
    path: &Path,
    config: &LogConfig,
) -> Result<(Option<PathBuf>, Option<HttpWitness>), LogError> {
    let file = match &config.witness_file {
        WitnessFile::Beside => Some(witness_path(path)),
        WitnessFile::At(p) => Some(p.clone()),
        WitnessFile::Disabled => None,
    };
    let http = config
        .witness_url
        .as_deref()
        .map(HttpWitness::new)
        .transpose()?;
    Ok((file, http))
}

/// The witness file's checkpoint, read without checking its signature (the writer checks the
/// log's structure; verifiers check signatures): `None` when there is no witness file.
fn read_witness(path: Option<&Path>, origin: &str) -> Result<Option<Known>, LogError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let Some(note) = read_witness_file(path)? else {
        return Ok(None);
    };
    let checkpoint = unverified_text(&note)
        .and_then(Checkpoint::from_text)
        .map_err(|e| {
            LogError::Invalid(format!(
                "the witness {} does not hold a checkpoint ({e}); restore it",
                path.display()
            ))
        })?;
    if checkpoint.origin != origin {
        return Err(LogError::OriginMismatch {
            expected: origin.to_owned(),
            found: checkpoint.origin,
        });
    }
    Ok(Some(Known {
        size: checkpoint.size,
        root: checkpoint.root,
        label: format!("file {}", path.display()),
        origin: checkpoint.origin,
        witness: true,
    }))
}

impl LogWriter {
    /// Creates a new, empty log at `path`; fails if the file exists.
    pub fn create(
        path: impl AsRef<Path>,
        config: LogConfig,
        signer: Signer,
    ) -> Result<Self, LogError> {
        let path = path.as_ref();
        check_origin(&config.origin)?;
        let (witness_file, _) = resolve_witness(path, &config)?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(LogError::io(format!(
                "creating audit log {}",
                path.display()
            )))?;
        let witness = match read_witness(witness_file.as_deref(), &config.origin) {
            Ok(witness) => witness,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        if let Some(known) = witness
            && known.size > 0
        {
            let _ = std::fs::remove_file(path);
            return Err(LogError::Invalid(format!(
                "the witness {} says {} entries of this log were signed, but the log {} did \
                 not exist: it was deleted or moved; restore it (or, for a new log, use a new \
                 path or move the old witness away)",
                known.label,
                known.size,
                path.display()
            )));
        }
        sync_parent_dir(path);
        let started = Self::from_parts(path, file, config, signer, Scanner::unsigned(None))
            .and_then(|mut writer| {
                // The empty log's witness: from now on, cutting the log is noticed.
                writer.publish_start(None).map(|()| writer)
            });
        match started {
            Ok(writer) => Ok(writer),
            Err(e) => {
                // Nothing was logged: leave no log behind (nor write a checkpoint on drop).
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Gives the witnesses a starting point: the log's last checkpoint (`note`), or a signed
    /// checkpoint of the entries so far, unless the witness file already has one.
    fn publish_start(&mut self, note: Option<String>) -> Result<(), LogError> {
        let has_file = match &self.witness_file {
            Some(path) => read_witness_file(path)?.is_some(),
            None => true,
        };
        if has_file && self.witness_http.is_none() {
            return Ok(());
        }
        let (note, size) = match (note, &self.last_checkpoint) {
            (Some(note), Some(c)) => (note, c.size),
            _ => {
                // No checkpoint yet: sign the tree head of the entries so far without writing
                // a line (a witness of size 0 for a new log).
                let checkpoint = Checkpoint::new(
                    self.config.origin.clone(),
                    self.last_checkpoint.as_ref().map_or(0, |c| c.size),
                    self.last_checkpoint
                        .as_ref()
                        .map_or_else(|| Frontier::new().root(), |c| c.root),
                );
                let signers: Vec<&Signer> = self.signers.iter().collect();
                (checkpoint.sign(&signers)?, checkpoint.size)
            }
        };
        if !has_file && let Some(path) = &self.witness_file {
            write_witness_file(path, &note, size)?;
        }
        if let Some(http) = &self.witness_http {
            http.submit(&note)?;
        }
        Ok(())
    }

    /// Hands a checkpoint to every witness; on failure keeps it pending (see [`Self::ready`]).
    fn publish(&mut self, note: String, size: u64) -> Result<(), LogError> {
        let result = (|| {
            if let Some(path) = &self.witness_file {
                write_witness_file(path, &note, size)?;
            }
            if let Some(http) = &self.witness_http {
                http.submit(&note)?;
            }
            Ok(())
        })();
        if result.is_err() {
            self.witness_pending = Some((note, size));
        }
        result
    }

    /// Opens the log at `path` to append to it, creating it if it does not exist.
    ///
    /// An existing log is read first: entry hashes, the chain and every checkpoint's root
    /// must be intact (signatures are not checked here; use [`super::verify_file`]), and its
    /// checkpoints must carry `config.origin`. An incomplete last line, left by a write that
    /// was interrupted before it returned, is cut off.
    ///
    /// `signer` may differ from the key that signed the existing checkpoints (a rotation
    /// across restarts, without a handover checkpoint): verifiers then need both keys.
    pub fn open(
        path: impl AsRef<Path>,
        config: LogConfig,
        signer: Signer,
    ) -> Result<Self, LogError> {
        let path = path.as_ref();
        check_origin(&config.origin)?;
        let existing = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Self::create(path, config, signer);
            }
            Err(e) => return Err(LogError::io(format!("opening {}", path.display()))(e)),
        };
        let (witness_file, _) = resolve_witness(path, &config)?;
        let witness = read_witness(witness_file.as_deref(), &config.origin)?;
        let has_witness = witness.is_some();
        let mut scanner = Scanner::new(
            None,
            Some(config.origin.clone()),
            Cow::Owned(witness.into_iter().collect()),
        );
        scanner.read_all(BufReader::with_capacity(1 << 16, existing))?;
        scanner.finish_in_place();
        if let Some(p) = scanner.report.problems.iter().find_map(|p| match &p.kind {
            ProblemKind::CheckpointOrigin { found, .. } => Some(found.clone()),
            _ => None,
        }) {
            return Err(LogError::OriginMismatch {
                expected: config.origin,
                found: p,
            });
        }
        if !scanner.report.is_ok() {
            return Err(LogError::Corrupt {
                path: path.to_owned(),
                report: Box::new(scanner.report),
            });
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(LogError::io(format!("opening {}", path.display())))?;
        let torn = scanner
            .report
            .warnings
            .iter()
            .any(|w| matches!(w, Warning::IncompleteLastLine { .. }));
        if torn {
            file.set_len(scanner.complete_bytes)
                .and_then(|()| file.sync_data())
                .map_err(LogError::io(format!(
                    "cutting the incomplete last line of {}",
                    path.display()
                )))?;
        }
        let last_note = scanner
            .report
            .last_verified
            .as_ref()
            .map(|v| v.note.clone());
        let mut writer = Self::from_parts(path, file, config, signer, scanner)?;
        if !has_witness {
            // A log written before witness files (or whose witness was lost): start the
            // witness from the log's own last checkpoint.
            writer.publish_start(last_note)?;
        }
        Ok(writer)
    }

    fn from_parts(
        path: &Path,
        file: File,
        config: LogConfig,
        signer: Signer,
        scanner: Scanner<'_>,
    ) -> Result<Self, LogError> {
        let (witness_file, witness_http) = resolve_witness(path, &config)?;
        Ok(Self {
            path: path.to_owned(),
            file: BufWriter::with_capacity(1 << 16, file),
            config,
            signers: vec![signer],
            tree: scanner.tree,
            last_entry_hash: scanner.last_entry_hash,
            last_checkpoint: scanner.report.last_verified.map(|v| v.checkpoint),
            last_checkpoint_at: Instant::now(),
            event_buf: Vec::with_capacity(1024),
            line_buf: Vec::with_capacity(1024),
            unsynced: 0,
            poisoned: false,
            closed: false,
            witness_file,
            witness_http,
            witness_pending: None,
        })
    }

    /// Appends one event and returns its `seq`. The event is stored in canonical JSON.
    ///
    /// When this returns `Ok`, the entry has reached the disk or the OS as the
    /// [`SyncPolicy`] says. On error the writer refuses all further appends.
    pub fn append(&mut self, event: &Value) -> Result<u64, LogError> {
        let mut buf = std::mem::take(&mut self.event_buf);
        buf.clear();
        write_canonical_json(event, &mut buf);
        let result = self.append_canonical(&buf);
        self.event_buf = buf;
        result
    }

    /// Serializes `event` to JSON and appends it; see [`Self::append`].
    pub fn append_serialize<T: serde::Serialize + ?Sized>(
        &mut self,
        event: &T,
    ) -> Result<u64, LogError> {
        let value = serde_json::to_value(event)?;
        self.append(&value)
    }

    /// Appends several events with one sync at the end (group commit): under
    /// [`SyncPolicy::Always`] and [`SyncPolicy::Write`], every entry of the batch reaches the
    /// disk (or the OS) before this returns, at the cost of one `fdatasync` instead of one per
    /// entry. Returns one result per event; if the final sync fails, every event that was
    /// written reports that error.
    pub fn append_batch(&mut self, events: &[Value]) -> Vec<Result<u64, LogError>> {
        let mut buf = std::mem::take(&mut self.event_buf);
        let mut results: Vec<Result<u64, LogError>> = Vec::with_capacity(events.len());
        for event in events {
            buf.clear();
            write_canonical_json(event, &mut buf);
            results.push(self.append_canonical_with(&buf, true));
        }
        self.event_buf = buf;
        let commit = match self.config.sync {
            SyncPolicy::Always => self.flush(true),
            SyncPolicy::Write => self.flush(false),
            SyncPolicy::Batch(_) | SyncPolicy::Buffered => Ok(()),
        };
        if let Err(e) = commit {
            let message = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(LogError::Io {
                    context: message.clone(),
                    source: std::io::Error::other("group commit failed"),
                });
            }
        }
        results
    }

    fn append_canonical(&mut self, event: &[u8]) -> Result<u64, LogError> {
        self.append_canonical_with(event, false)
    }

    fn append_canonical_with(&mut self, event: &[u8], defer_sync: bool) -> Result<u64, LogError> {
        self.ready()?;
        if event.len() > MAX_EVENT_BYTES {
            return Err(LogError::Invalid(format!(
                "the event is {} bytes of JSON, more than the limit of {MAX_EVENT_BYTES}; \
                 bound untrusted fields before auditing them",
                event.len()
            )));
        }
        let seq = self.tree.size();
        let leaf = leaf_hash(event);
        self.line_buf.clear();
        write_entry(&mut self.line_buf, seq, &self.last_entry_hash, &leaf, event);
        self.write_line()?;
        match self.config.sync {
            SyncPolicy::Always | SyncPolicy::Write if defer_sync => {}
            SyncPolicy::Always => self.flush(true)?,
            SyncPolicy::Write => self.flush(false)?,
            SyncPolicy::Batch(n) => {
                self.unsynced += 1;
                if self.unsynced >= n {
                    self.flush(true)?;
                }
            }
            SyncPolicy::Buffered => {}
        }
        self.last_entry_hash = entry_hash(&self.last_entry_hash, &leaf);
        self.tree.push(leaf);
        if self.checkpoint_due() {
            self.checkpoint()?;
        }
        Ok(seq)
    }

    /// Writes a checkpoint if one is due by the configured count or interval and entries are
    /// not yet covered; returns it. Call this from a timer so idle logs get checkpointed too.
    pub fn checkpoint_if_due(&mut self) -> Result<Option<Checkpoint>, LogError> {
        if self.checkpoint_due() {
            self.checkpoint().map(Some)
        } else {
            Ok(None)
        }
    }

    fn checkpoint_due(&self) -> bool {
        let size = self.tree.size();
        let since = size - self.last_checkpoint.as_ref().map_or(0, |c| c.size);
        since > 0
            && ((self.config.checkpoint_every > 0 && since >= self.config.checkpoint_every)
                || self
                    .config
                    .checkpoint_interval
                    .is_some_and(|t| self.last_checkpoint_at.elapsed() >= t))
    }

    /// Refuses to write after an I/O error or close, and while a checkpoint has not reached
    /// every witness (retrying it first).
    fn ready(&mut self) -> Result<(), LogError> {
        if self.poisoned || self.closed {
            return Err(LogError::Poisoned);
        }
        if let Some((note, size)) = self.witness_pending.take() {
            self.publish(note, size)?;
        }
        Ok(())
    }

    /// Writes `line_buf`; any failure poisons the writer.
    fn write_line(&mut self) -> Result<(), LogError> {
        if let Err(e) = self.file.write_all(&self.line_buf) {
            self.poisoned = true;
            return Err(LogError::io(format!("writing {}", self.path.display()))(e));
        }
        Ok(())
    }

    fn flush(&mut self, sync: bool) -> Result<(), LogError> {
        let result = self.file.flush().and_then(|()| {
            if sync {
                self.file.get_ref().sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            self.poisoned = true;
            return Err(LogError::io(format!("syncing {}", self.path.display()))(e));
        }
        if sync {
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Writes everything buffered and syncs it to disk.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.ready()?;
        self.flush(true)
    }

    /// Signs and writes a checkpoint over all entries so far, syncs the log, and updates the
    /// latest-checkpoint file if one is configured.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, LogError> {
        self.ready()?;
        let checkpoint = Checkpoint::new(
            self.config.origin.clone(),
            self.tree.size(),
            self.tree.root(),
        );
        let signers: Vec<&Signer> = self.signers.iter().collect();
        let note = checkpoint.sign(&signers)?;
        self.line_buf.clear();
        write_checkpoint(&mut self.line_buf, &note);
        self.write_line()?;
        self.flush(true)?;
        self.last_checkpoint = Some(checkpoint.clone());
        self.last_checkpoint_at = Instant::now();
        if let Some(latest) = &self.config.latest_checkpoint_file {
            write_atomically(latest, note.as_bytes())?;
        }
        self.publish(note, checkpoint.size)?;
        Ok(checkpoint)
    }

    /// Switches to a new signing key. The handover checkpoint is signed by both the old and
    /// the new key, so a verifier trusting either accepts it; later checkpoints are signed by
    /// the new key only. Verifiers should trust both keys for logs spanning the rotation.
    pub fn rotate_key(&mut self, new_signer: Signer) -> Result<Checkpoint, LogError> {
        self.signers.push(new_signer);
        match self.checkpoint() {
            Ok(checkpoint) => {
                let new = self.signers.split_off(self.signers.len() - 1);
                self.signers = new;
                Ok(checkpoint)
            }
            Err(e) => {
                self.signers.pop();
                Err(e)
            }
        }
    }

    /// Writes a final checkpoint (unless the last one already covers every entry), syncs
    /// and closes the log.
    pub fn close(mut self) -> Result<Checkpoint, LogError> {
        let result = self.finish();
        self.closed = true;
        result
    }

    fn finish(&mut self) -> Result<Checkpoint, LogError> {
        match &self.last_checkpoint {
            Some(c) if c.size == self.tree.size() => {
                let c = c.clone();
                self.sync()?;
                Ok(c)
            }
            _ => self.checkpoint(),
        }
    }

    /// The number of entries in the log.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The Merkle tree head over all entries.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The last checkpoint written (or found when the log was opened).
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.last_checkpoint.as_ref()
    }

    /// The verifier key of the current signing key.
    pub fn verifier(&self) -> Option<Verifier> {
        self.signers.last().map(Signer::verifier)
    }

    /// The configuration the writer runs with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LogWriter {
    /// Best effort: a writer dropped without [`LogWriter::close`] still writes its final
    /// checkpoint. Errors cannot be reported here; call `close` to see them.
    fn drop(&mut self) {
        if !self.closed && !self.poisoned {
            let _ = self.finish();
        }
    }
}
