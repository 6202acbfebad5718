//! [`SignedLogSink`]: the gate's audit events, written to a tamper-evident log.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use approvals_core::{AuditError, AuditEvent, AuditSink};
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::log::{LogConfig, LogError, LogWriter};
use crate::note::{Checkpoint, Signer, Verifier};

/// Most events appended in one group commit.
const MAX_BATCH: usize = 512;

enum Command {
    Append(Value, oneshot::Sender<Result<u64, LogError>>),
    Checkpoint(oneshot::Sender<Result<Checkpoint, LogError>>),
    RotateKey(Box<Signer>, oneshot::Sender<Result<Checkpoint, LogError>>),
    Close(oneshot::Sender<Result<Checkpoint, LogError>>),
}

/// An [`AuditSink`] that appends every event to a hash-chained log with signed checkpoints
/// ([`LogWriter`]).
///
/// A dedicated thread owns the writer, so file I/O never blocks the async runtime.
/// [`AuditSink::record`] returns only after the entry was written as the log's
/// [`crate::SyncPolicy`] promises (by default synced to disk); events recorded concurrently
/// are group-committed with one sync. Any write error is returned as an [`AuditError`], so the
/// gate refuses the action (fail closed), and the writer then refuses every later event.
///
/// The thread also checkpoints on a timer (by default the log's `checkpoint_interval`), so an
/// idle log's last events get a signed checkpoint without waiting for the next event.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_audit::{LogConfig, SignedLogSink, note::Signer};
/// use std::sync::Arc;
///
/// let dir = tempfile::tempdir()?;
/// let signer = Signer::generate("audit.example/prod")?;
/// let sink = Arc::new(SignedLogSink::open(
///     dir.path().join("audit.jsonl"),
///     LogConfig::new("audit.example/prod"),
///     signer,
/// )?);
/// // let gate = approvals_core::Gate::builder().audit_shared(sink.clone()) ... .build()?;
/// sink.close().await?; // final checkpoint
/// # Ok(()) }
/// ```
pub struct SignedLogSink {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    verifier: Option<Verifier>,
}

impl std::fmt::Debug for SignedLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedLogSink")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl SignedLogSink {
    /// Opens (or creates) the log at `path` and starts the writer thread, checkpointing on a
    /// timer every `config.checkpoint_interval`.
    pub fn open(
        path: impl AsRef<Path>,
        config: LogConfig,
        signer: Signer,
    ) -> Result<Self, LogError> {
        Self::new(LogWriter::open(path, config, signer)?)
    }

    /// Starts the writer thread over an open writer, with the checkpoint timer set to the
    /// writer's `checkpoint_interval`.
    pub fn new(writer: LogWriter) -> Result<Self, LogError> {
        let timer = writer.config().checkpoint_interval;
        Self::with_timer(writer, timer)
    }

    /// Starts the writer thread with an explicit checkpoint timer: every `timer`, a checkpoint
    /// is written if one is due by the writer's configuration (`None`: no timer).
    pub fn with_timer(writer: LogWriter, timer: Option<Duration>) -> Result<Self, LogError> {
        let verifier = writer.verifier();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("approvals-audit-log".into())
            .spawn(move || run(writer, rx, timer))
            .map_err(LogError::io("starting the audit log writer thread"))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            verifier,
        })
    }

    /// The verifier key of the current signing key (publish it to auditors).
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Command,
    ) -> Result<T, LogError> {
        let (ack, done) = oneshot::channel();
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(make(ack)).is_ok());
        if !sent {
            return Err(LogError::Poisoned);
        }
        done.await.map_err(|_| LogError::Poisoned)?
    }

    /// Appends one JSON event (for events that are not [`AuditEvent`]s); returns its `seq`.
    pub async fn append(&self, event: Value) -> Result<u64, LogError> {
        self.call(|ack| Command::Append(event, ack)).await
    }

    /// Writes a checkpoint now.
    pub async fn checkpoint(&self) -> Result<Checkpoint, LogError> {
        self.call(Command::Checkpoint).await
    }

    /// Switches to a new signing key; see [`LogWriter::rotate_key`].
    pub async fn rotate_key(&self, signer: Signer) -> Result<Checkpoint, LogError> {
        self.call(|ack| Command::RotateKey(Box::new(signer), ack))
            .await
    }

    /// Writes the final checkpoint and closes the log; later events are refused.
    pub async fn close(&self) -> Result<Checkpoint, LogError> {
        self.call(Command::Close).await
    }
}

impl Drop for SignedLogSink {
    /// Closes the log (final checkpoint) and waits for the writer thread.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl AuditSink for SignedLogSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let value = serde_json::to_value(event)
            .map_err(|e| AuditError::new(format!("cannot encode the audit event: {e}")))?;
        self.append(value)
            .await
            .map(|_| ())
            .map_err(|e| AuditError::new(format!("cannot append to the audit log: {e}")))
    }
}

fn run(mut writer: LogWriter, rx: mpsc::Receiver<Command>, timer: Option<Duration>) {
    let mut events = Vec::new();
    let mut acks = Vec::new();
    loop {
        let first = match timer {
            Some(t) => match rx.recv_timeout(t) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // An error poisons the writer; the next event reports it.
                    let _ = writer.checkpoint_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            },
        };
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(event, ack) => {
                    events.push(event);
                    acks.push(ack);
                    if events.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                other => {
                    commit(&mut writer, &mut events, &mut acks);
                    match other {
                        Command::Checkpoint(ack) => {
                            let _ = ack.send(writer.checkpoint());
                        }
                        Command::RotateKey(signer, ack) => {
                            let _ = ack.send(writer.rotate_key(*signer));
                        }
                        Command::Close(ack) => {
                            let _ = ack.send(writer.close());
                            refuse_all(&rx);
                            return;
                        }
                        Command::Append(..) => {}
                    }
                    next = rx.try_recv().ok();
                }
            }
        }
        commit(&mut writer, &mut events, &mut acks);
    }
    // Every sender is gone: close with a final checkpoint. Errors cannot be reported.
    let _ = writer.close();
}

fn commit(
    writer: &mut LogWriter,
    events: &mut Vec<Value>,
    acks: &mut Vec<oneshot::Sender<Result<u64, LogError>>>,
) {
    if events.is_empty() {
        return;
    }
    let results = writer.append_batch(events);
    for (ack, result) in acks.drain(..).zip(results) {
        let _ = ack.send(result);
    }
    events.clear();
}

/// After close: answer every queued and later command with an error until all senders are gone.
fn refuse_all(rx: &mpsc::Receiver<Command>) {
    while let Ok(command) = rx.recv() {
        match command {
            Command::Append(_, ack) => {
                let _ = ack.send(Err(LogError::Poisoned));
            }
            Command::Checkpoint(ack) | Command::RotateKey(_, ack) | Command::Close(ack) => {
                let _ = ack.send(Err(LogError::Poisoned));
            }
        }
    }
}
