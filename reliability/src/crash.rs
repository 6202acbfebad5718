//! Crash hooks and child processes for the crash-and-restart suite (`tests/crash.rs`).
//!
//! A [`CrashPoint`] names a moment in a request's lifecycle. A process started with
//! [`CRASH_AT_ENV`] set to a point's name wraps its store in [`CrashingStore`] and its channel in
//! [`CrashingApprover`]; when the wrapped call reaches that moment, [`crash`] prints
//! `CRASH <point>` on stdout and calls `std::process::abort()`: no destructor, no flush, no
//! cleanup, as in a power cut of that one process (the database keeps what it committed).
//!
//! [`ChildProcess`] re-runs the current test binary as such a process and reads the lines it
//! prints; [`SeededRng`] makes the parent's random SIGKILL timings reproducible from a seed.

use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, Inserted, ListFilter, RequestId,
    RequestRecord, RequestState, Store, StoreError,
};
use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The environment variable naming the [`CrashPoint`] a child process dies at.
pub const CRASH_AT_ENV: &str = "APPROVALS_CRASH_AT";

/// Where in the lifecycle a process kills itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// In `submit`, before the new request is inserted: nothing is stored.
    BeforePersist,
    /// In `submit`, right after the insert committed, before anything else.
    AfterPersist,
    /// Before the channel is asked to deliver the stored request.
    BeforeDispatch,
    /// After the channel delivered (the chat message exists) but before the gate recorded the
    /// delivery in the store.
    AfterDispatch,
    /// Inside the action body, after the grant was consumed and the side effect written.
    DuringExecution,
    /// In a reviewer's `decide`, after the approval was stored but before it was audited
    /// (the request is `Approved` with `audit_pending` set).
    AfterApprovalPersisted,
    /// In a reviewer's `decide`, after the approval was stored and audited, before the chat
    /// message was updated.
    AfterDecide,
}

impl CrashPoint {
    /// Every point, in lifecycle order.
    pub const ALL: [CrashPoint; 7] = [
        CrashPoint::BeforePersist,
        CrashPoint::AfterPersist,
        CrashPoint::BeforeDispatch,
        CrashPoint::AfterDispatch,
        CrashPoint::DuringExecution,
        CrashPoint::AfterApprovalPersisted,
        CrashPoint::AfterDecide,
    ];

    /// The name used in [`CRASH_AT_ENV`] and in the `CRASH` marker line.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::BeforePersist => "before-persist",
            CrashPoint::AfterPersist => "after-persist",
            CrashPoint::BeforeDispatch => "before-dispatch",
            CrashPoint::AfterDispatch => "after-dispatch",
            CrashPoint::DuringExecution => "during-execution",
            CrashPoint::AfterApprovalPersisted => "after-approval-persisted",
            CrashPoint::AfterDecide => "after-decide",
        }
    }

    /// The point named `name`, if any.
    pub fn parse(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The point named by [`CRASH_AT_ENV`] in this process. Panics on an unknown name, so a
    /// typo in a test cannot silently run without its crash.
    pub fn from_env() -> Option<CrashPoint> {
        let name = std::env::var(CRASH_AT_ENV).ok()?;
        if name.is_empty() {
            return None;
        }
        Some(CrashPoint::parse(&name).unwrap_or_else(|| {
            panic!(
                "{CRASH_AT_ENV}={name:?} names no crash point; use one of {:?}",
                CrashPoint::ALL.map(CrashPoint::name)
            )
        }))
    }
}

/// Prints `CRASH <point>` and aborts the process at once.
pub fn crash(point: CrashPoint) -> ! {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "CRASH {}", point.name());
    let _ = out.flush();
    std::process::abort()
}

/// A store that aborts the process at the store-side crash points: around the insert of a new
/// request, and after the compare-and-set that records an approval (with and without its
/// `audit_pending` flag). Every other call goes straight to the inner store.
#[derive(Debug, Clone)]
pub struct CrashingStore<S> {
    inner: S,
    point: Option<CrashPoint>,
}

impl<S: Store> CrashingStore<S> {
    /// Wraps `inner`; `point` is where to die (`None`: never).
    pub fn new(inner: S, point: Option<CrashPoint>) -> Self {
        CrashingStore { inner, point }
    }
}

#[async_trait]
impl<S: Store> Store for CrashingStore<S> {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        if self.point == Some(CrashPoint::BeforePersist) {
            crash(CrashPoint::BeforePersist);
        }
        let inserted = self.inner.insert(record).await?;
        if self.point == Some(CrashPoint::AfterPersist) && inserted == Inserted::Created {
            crash(CrashPoint::AfterPersist);
        }
        Ok(inserted)
    }

    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get(id).await
    }

    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get_by_idempotency_key(key).await
    }

    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        let set = self.inner.compare_and_set(expected_version, record).await?;
        if set && record.state == RequestState::Approved {
            match self.point {
                Some(p @ CrashPoint::AfterApprovalPersisted) if record.audit_pending => crash(p),
                Some(p @ CrashPoint::AfterDecide) if !record.audit_pending => crash(p),
                _ => {}
            }
        }
        Ok(set)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.list(filter).await
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<RequestId>> {
        self.inner.changes()
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }
}

/// A channel that aborts the process just before it delivers a new request, or just after
/// the delivery succeeded (before the gate can record it).
pub struct CrashingApprover<A> {
    inner: A,
    point: Option<CrashPoint>,
}

impl<A: Approver> CrashingApprover<A> {
    /// Wraps `inner`; `point` is where to die (`None`: never).
    pub fn new(inner: A, point: Option<CrashPoint>) -> Self {
        CrashingApprover { inner, point }
    }
}

#[async_trait]
impl<A: Approver> Approver for CrashingApprover<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        if self.point == Some(CrashPoint::BeforeDispatch) {
            crash(CrashPoint::BeforeDispatch);
        }
        let delivered = self.inner.dispatch(request, reason, decisions).await;
        if self.point == Some(CrashPoint::AfterDispatch) && delivered.is_ok() {
            crash(CrashPoint::AfterDispatch);
        }
        delivered
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        self.inner.resolved(request).await
    }
}

/// How long [`ChildProcess`] waits for an expected line or for the process to exit: generous,
/// for a loaded 2-core machine.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The current test binary re-run as a child process: `--exact <entry>` selects the test
/// function that acts as the child, `role_env` tells it which role to play. Its stdout is
/// read line by line; its stdin stays open until [`close_stdin`](ChildProcess::close_stdin),
/// so a child can linger after its work (for example until its background chat updates are
/// sent) and exit when told. Killed when dropped.
pub struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl ChildProcess {
    /// Starts the test function `entry` of this binary with `role_env=role` and `vars`.
    pub fn spawn(entry: &str, role_env: &str, role: &str, vars: &[(String, String)]) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .env(role_env, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // An aborting child may leave a core file in its working directory.
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn a child process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("the child's stdout");
        ChildProcess {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The OS process id.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next line containing one of `markers`, from the first marker on (the test harness
    /// prints other text, sometimes on the same line). Panics when the child exits or stays
    /// silent for [`CHILD_TIMEOUT`], showing what it printed.
    pub async fn expect(&mut self, markers: &[&str]) -> String {
        let read = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                let found = markers.iter().find_map(|m| line.find(m));
                self.seen.push(line.clone());
                if let Some(at) = found {
                    return Some(line[at..].to_owned());
                }
            }
            None
        };
        match tokio::time::timeout(CHILD_TIMEOUT, read).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "the child exited without printing {markers:?}; it printed {:?}",
                self.seen
            ),
            Err(_) => panic!(
                "no {markers:?} from the child within {CHILD_TIMEOUT:?}; it printed {:?}",
                self.seen
            ),
        }
    }

    /// Closes the child's stdin: a lingering child takes it as its signal to exit.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends SIGKILL (if it is still running) and reaps the process.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to end. Returns the exit code, or `None` when a signal ended it
    /// (`abort()` ends it with SIGABRT).
    pub async fn exit(mut self) -> Option<i32> {
        self.stdin = None;
        tokio::time::timeout(CHILD_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the child did not exit within {CHILD_TIMEOUT:?}"))
            .expect("wait for the child")
            .code()
    }
}

/// A small deterministic random source (SplitMix64) for reproducible kill timings: the same
/// seed gives the same schedule, so a failing seed can be replayed.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A source starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// A duration in `0..max`, in whole milliseconds.
    pub fn millis(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.below(max.as_millis() as u64))
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_point_names_round_trip() {
        for p in CrashPoint::ALL {
            assert_eq!(CrashPoint::parse(p.name()), Some(p));
        }
        assert_eq!(CrashPoint::parse("after-lunch"), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a: Vec<u64> = (0..8)
            .scan(SeededRng::new(7), |r, _| Some(r.below(1000)))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(SeededRng::new(7), |r, _| Some(r.below(1000)))
            .collect();
        let c: Vec<u64> = (0..8)
            .scan(SeededRng::new(8), |r, _| Some(r.below(1000)))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&n| n < 1000));
    }
}
