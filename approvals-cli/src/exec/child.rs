//! Running the approved command: inherited standard streams, SIGINT/SIGTERM watched and
//! forwarded, the way it ended turned into exec's exit code and the `executed` record.

use std::io::IsTerminal as _;

use approvals_core::GuardError;

use super::exit;

/// Why the approved command did not succeed, or did not run.
#[derive(Debug)]
pub(super) enum RunError {
    /// The gate refused to run it (digest changed, grant used or lapsed, audit failed).
    Guard(GuardError),
    /// It could not be started.
    NotStarted(String),
    /// It ran and failed: our exit code and how it ended.
    Exited { code: u8, status: String },
}

impl From<GuardError> for RunError {
    fn from(e: GuardError) -> Self {
        RunError::Guard(e)
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Guard(e) => write!(f, "{e}"),
            RunError::NotStarted(e) => write!(f, "could not be started: {e}"),
            RunError::Exited { status, .. } => f.write_str(status),
        }
    }
}

/// Runs the command with inherited standard streams, forwarding signals, until it ends.
/// `env` is set for it on top of this process's environment (the `--param-env` variables as
/// reviewers edited them; empty otherwise).
pub(super) async fn run_child(
    command: &[String],
    env: &[(String, String)],
    signals: &mut Signals,
) -> Result<(), RunError> {
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| RunError::NotStarted("no command".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|e| RunError::NotStarted(format!("{program}: {e}")))?;
    let pid = child.id();
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let mut forwarded: Option<Caught> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.recv() => {
                // A terminal's Ctrl-C reaches the whole foreground process group, the
                // command included: sending it again could make it quit harder.
                if signal == Caught::Interrupt && stdin_is_terminal {
                    continue;
                }
                if let Some(pid) = pid {
                    forward(pid, signal);
                    forwarded = Some(signal);
                }
            }
        }
    };
    let status = status.map_err(|e| RunError::Exited {
        code: exit::UNAVAILABLE,
        status: format!("could not be waited for ({e})"),
    })?;
    if status.success() {
        return Ok(());
    }
    let after = forwarded
        .map(|s| format!(" after {} was forwarded", s.name()))
        .unwrap_or_default();
    if let Some(code) = status.code() {
        return Err(RunError::Exited {
            code: u8::try_from(code).unwrap_or(u8::MAX),
            status: format!("exited with status {code}{after}"),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return Err(RunError::Exited {
                code: u8::try_from(128 + signal).unwrap_or(u8::MAX),
                status: format!("was killed by signal {signal}{after}"),
            });
        }
    }
    Err(RunError::Exited {
        code: u8::MAX,
        status: format!("ended abnormally ({status}){after}"),
    })
}

/// The signals `exec` handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caught {
    Interrupt,
    Terminate,
}

impl Caught {
    pub(super) fn name(self) -> &'static str {
        match self {
            Caught::Interrupt => "SIGINT",
            Caught::Terminate => "SIGTERM",
        }
    }
}

#[cfg(unix)]
pub(super) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    pub(super) fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    pub(super) async fn recv(&mut self) -> Caught {
        tokio::select! {
            _ = self.interrupt.recv() => Caught::Interrupt,
            _ = self.terminate.recv() => Caught::Terminate,
        }
    }
}

#[cfg(unix)]
fn forward(pid: u32, signal: Caught) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let signal = match signal {
        Caught::Interrupt => Signal::INT,
        Caught::Terminate => Signal::TERM,
    };
    // The child may have just exited; its status is collected by the wait.
    let _ = kill_process(pid, signal);
}

#[cfg(not(unix))]
pub(super) struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Signals)
    }

    pub(super) async fn recv(&mut self) -> Caught {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Caught::Interrupt,
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn forward(_pid: u32, _signal: Caught) {
    // Ctrl-C reaches the console's whole process group, the command included.
}
