//! Fault injection: wrappers that make a store, an audit sink or an approver fail, hang, or
//! answer late, on chosen calls.
//!
//! A [`FaultPlan`] says which call gets which [`Fault`]: "the 3rd call of any method", or
//! "the 2nd `compare_and_set`". Every call not named passes through untouched. The three
//! wrappers ([`FaultyStore`], [`FaultyAudit`], [`FaultyApprover`]) count their calls and apply
//! the plan, so a plan replays the same faults on the same call numbers every time; build one
//! by hand, or from a seed with [`FaultPlan::random`]. A plan prints readably
//! (`compare_and_set#2 fail-after-commit, call#5 hang`), so a failing property-test case says
//! what was injected.
//!
//! ```
//! # async fn demo() {
//! use std::sync::Arc;
//! use approvals_core::{MemoryStore, Store};
//! use approvals_testkit::faults::{Fault, FaultPlan, FaultyStore, Op};
//!
//! let plan = FaultPlan::new()
//!     .on(Op::CompareAndSet, 1, Fault::FailAfterCommit)
//!     .on_call(4, Fault::Hang);
//! let store = FaultyStore::new(Arc::new(MemoryStore::new()), plan);
//! // Hand `Arc::new(store)` to `Gate::builder().store_shared(..)`.
//! # let _ = store; }
//! ```
//!
//! What each fault means for each wrapper:
//!
//! | fault | store | audit sink | approver |
//! |---|---|---|---|
//! | `Fail` | `StoreError::Unavailable` (retryable), nothing written | `AuditError`, nothing recorded | non-retryable channel error |
//! | `RateLimited` | as `Fail` | as `Fail` | HTTP 429 with `Retry-After`, retryable |
//! | `ServerError` | as `Fail` | as `Fail` | HTTP 5xx, retryable |
//! | `Hang` | never answers | never answers | never answers |
//! | `Slow(d)` | answers after `d` | answers after `d` | answers after `d` |
//! | `FailAfterCommit` | the write lands, the caller sees `Unavailable` | the event is recorded, the caller sees an error | delivered, the caller sees HTTP 502 |
//!
//! `Hang` and `Slow` never call the inner component before their delay ends, so a caller that
//! gives up (a timeout dropping the future) leaves nothing written.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use approvals_core::{
    Approver, ApproverError, AuditError, AuditEvent, AuditSink, Decisions, Delivery,
    DispatchReason, Inserted, ListFilter, RequestId, RequestRecord, Store, StoreError,
};
use async_trait::async_trait;
use tokio::sync::broadcast;

/// What happens to one call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The call goes through untouched.
    Pass,
    /// The call fails at once without reaching the wrapped component.
    Fail,
    /// An approver answers HTTP 429 with `Retry-After` (seconds); a store or sink fails.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u32,
    },
    /// An approver answers this HTTP 5xx status; a store or sink fails.
    ServerError {
        /// The status, 500 to 599.
        status: u16,
    },
    /// The call never completes (the wrapped component is never called).
    Hang,
    /// The call waits this long, then goes through. Longer than the gate's timeout, it is a
    /// hang the caller gives up on; shorter, a slow but working component.
    Slow(Duration),
    /// The wrapped call runs to completion (a write commits, an event is recorded, a message
    /// is posted), then the caller sees an error: the lost-reply fault.
    FailAfterCommit,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Pass => f.write_str("pass"),
            Fault::Fail => f.write_str("fail"),
            Fault::RateLimited { retry_after_secs } => {
                write!(f, "429 retry-after {retry_after_secs}s")
            }
            Fault::ServerError { status } => write!(f, "{status}"),
            Fault::Hang => f.write_str("hang"),
            Fault::Slow(d) => write!(f, "slow {}ms", d.as_millis()),
            Fault::FailAfterCommit => f.write_str("fail-after-commit"),
        }
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A wrapped method, for plans that target one method's calls.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`Store::insert`].
    Insert,
    /// [`Store::get`].
    Get,
    /// [`Store::get_by_idempotency_key`].
    GetByIdempotencyKey,
    /// [`Store::compare_and_set`].
    CompareAndSet,
    /// [`Store::list`].
    List,
    /// [`AuditSink::record`].
    Record,
    /// [`Approver::dispatch`].
    Dispatch,
    /// [`Approver::resolved`].
    Resolved,
}

impl Op {
    /// The store's methods.
    pub const STORE: [Op; 5] = [
        Op::Insert,
        Op::Get,
        Op::GetByIdempotencyKey,
        Op::CompareAndSet,
        Op::List,
    ];
    /// The audit sink's method.
    pub const AUDIT: [Op; 1] = [Op::Record];
    /// The approver's methods.
    pub const APPROVER: [Op; 2] = [Op::Dispatch, Op::Resolved];

    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Get => "get",
            Op::GetByIdempotencyKey => "get_by_idempotency_key",
            Op::CompareAndSet => "compare_and_set",
            Op::List => "list",
            Op::Record => "record",
            Op::Dispatch => "dispatch",
            Op::Resolved => "resolved",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which call a plan entry applies to. Call numbers start at 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The n-th call to the wrapper, whatever the method.
    Call(u64),
    /// The n-th call of one method.
    OpCall(Op, u64),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Call(n) => write!(f, "call#{n}"),
            Trigger::OpCall(op, n) => write!(f, "{op}#{n}"),
        }
    }
}

/// Which calls fail, and how. Calls the plan does not name pass. When several entries match a
/// call, the first one added wins.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    entries: Vec<(Trigger, Fault)>,
}

impl FaultPlan {
    /// A plan with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds: the `n`-th call to the wrapper (any method, counting from 1) gets `fault`.
    pub fn on_call(mut self, n: u64, fault: Fault) -> Self {
        self.entries.push((Trigger::Call(n), fault));
        self
    }

    /// Adds: the `n`-th call of `op` (counting from 1) gets `fault`.
    pub fn on(mut self, op: Op, n: u64, fault: Fault) -> Self {
        self.entries.push((Trigger::OpCall(op, n), fault));
        self
    }

    /// Adds an entry.
    pub fn with(mut self, trigger: Trigger, fault: Fault) -> Self {
        self.entries.push((trigger, fault));
        self
    }

    /// A plan of `count` faults drawn from `faults`, each on a call number from 1 to
    /// `max_call` of one of `ops`, decided entirely by `seed`: the same arguments give the same
    /// plan on every machine.
    pub fn random(seed: u64, ops: &[Op], max_call: u64, count: usize, faults: &[Fault]) -> Self {
        let mut rng = SplitMix64(seed);
        let mut plan = FaultPlan::new();
        if ops.is_empty() || faults.is_empty() || max_call == 0 {
            return plan;
        }
        for _ in 0..count {
            let op = ops[rng.below(ops.len() as u64) as usize];
            let n = 1 + rng.below(max_call);
            let fault = faults[rng.below(faults.len() as u64) as usize];
            plan = plan.on(op, n, fault);
        }
        plan
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[(Trigger, Fault)] {
        &self.entries
    }

    /// Whether the plan injects nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|(_, f)| *f == Fault::Pass)
    }

    /// The fault for the `call`-th call overall, which is the `op_call`-th call of `op`.
    pub fn fault_for(&self, op: Op, call: u64, op_call: u64) -> Fault {
        self.entries
            .iter()
            .find(|(trigger, _)| match *trigger {
                Trigger::Call(n) => n == call,
                Trigger::OpCall(o, n) => o == op && n == op_call,
            })
            .map_or(Fault::Pass, |(_, fault)| *fault)
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("no faults");
        }
        for (i, (trigger, fault)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{trigger} {fault}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultPlan({self})")
    }
}

/// A fault a wrapper injected: which call, and what it did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// The method.
    pub op: Op,
    /// The call number overall (from 1).
    pub call: u64,
    /// The call number of this method (from 1).
    pub op_call: u64,
    /// What was injected.
    pub fault: Fault,
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{} (call#{}) {}",
            self.op, self.op_call, self.call, self.fault
        )
    }
}

impl fmt::Debug for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Call counters and the injection log, shared by the three wrappers.
#[derive(Default)]
struct Schedule {
    plan: FaultPlan,
    state: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    calls: u64,
    per_op: HashMap<Op, u64>,
    injected: Vec<Injection>,
}

impl Schedule {
    fn new(plan: FaultPlan) -> Self {
        Schedule {
            plan,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Counters stay consistent even if a holder panicked: each update is one statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call of `op` and returns what to do with it.
    fn next(&self, op: Op) -> Injection {
        let mut state = self.lock();
        state.calls += 1;
        let call = state.calls;
        let op_call = {
            let n = state.per_op.entry(op).or_default();
            *n += 1;
            *n
        };
        let fault = self.plan.fault_for(op, call, op_call);
        let injection = Injection {
            op,
            call,
            op_call,
            fault,
        };
        if fault != Fault::Pass {
            state.injected.push(injection);
        }
        injection
    }

    fn calls(&self, op: Option<Op>) -> u64 {
        let state = self.lock();
        match op {
            None => state.calls,
            Some(op) => state.per_op.get(&op).copied().unwrap_or_default(),
        }
    }

    fn injected(&self) -> Vec<Injection> {
        self.lock().injected.clone()
    }
}

/// Applies one injection to `call`; `error` makes the caller-visible error.
async fn apply<T, E>(
    injection: Injection,
    call: impl Future<Output = Result<T, E>>,
    error: impl FnOnce(Injection) -> E,
) -> Result<T, E> {
    match injection.fault {
        Fault::Pass => call.await,
        Fault::Hang => std::future::pending().await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            call.await
        }
        Fault::FailAfterCommit => {
            let _ = call.await;
            Err(error(injection))
        }
        Fault::Fail | Fault::RateLimited { .. } | Fault::ServerError { .. } => {
            Err(error(injection))
        }
    }
}

fn describe(injection: Injection) -> String {
    match injection.fault {
        Fault::FailAfterCommit => {
            format!("injected fault on {injection}: the call completed but its answer was lost")
        }
        _ => format!("injected fault on {injection}"),
    }
}

/// A [`Store`] that fails, hangs or loses answers on the calls its plan names.
/// [`Store::changes`] is passed through untouched.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    schedule: Schedule,
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, plan: FaultPlan) -> Self {
        FaultyStore {
            inner,
            schedule: Schedule::new(plan),
        }
    }

    /// The wrapped store, for reading what really happened.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.schedule.plan
    }

    /// Calls so far, of one method or (with `None`) of all.
    pub fn calls(&self, op: Option<Op>) -> u64 {
        self.schedule.calls(op)
    }

    /// The faults injected so far, in call order.
    pub fn injected(&self) -> Vec<Injection> {
        self.schedule.injected()
    }

    async fn run<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        apply(self.schedule.next(op), call, |i| {
            StoreError::Unavailable(describe(i))
        })
        .await
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.schedule.plan)
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        self.run(Op::Insert, self.inner.insert(record)).await
    }

    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.run(Op::Get, self.inner.get(id)).await
    }

    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.run(
            Op::GetByIdempotencyKey,
            self.inner.get_by_idempotency_key(key),
        )
        .await
    }

    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        self.run(
            Op::CompareAndSet,
            self.inner.compare_and_set(expected_version, record),
        )
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.run(Op::List, self.inner.list(filter)).await
    }

    fn changes(&self) -> Option<broadcast::Receiver<RequestId>> {
        self.inner.changes()
    }

    /// Forwarded, outside the plan: barriers are not calls a plan counts.
    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }

    async fn sync_soon(&self) -> Result<(), StoreError> {
        self.inner.sync_soon().await
    }

    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        self.inner.sync_domain()
    }
}

/// An [`AuditSink`] that fails, hangs or loses answers on the calls its plan names. Put a
/// [`MemorySink`](approvals_core::MemorySink) beneath it to see exactly the events whose
/// append really happened.
pub struct FaultyAudit {
    inner: Arc<dyn AuditSink>,
    schedule: Schedule,
}

impl FaultyAudit {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AuditSink>, plan: FaultPlan) -> Self {
        FaultyAudit {
            inner,
            schedule: Schedule::new(plan),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.schedule.plan
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.schedule.calls(None)
    }

    /// The faults injected so far, in call order.
    pub fn injected(&self) -> Vec<Injection> {
        self.schedule.injected()
    }
}

impl fmt::Debug for FaultyAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyAudit({})", self.schedule.plan)
    }
}

#[async_trait]
impl AuditSink for FaultyAudit {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        apply(
            self.schedule.next(Op::Record),
            self.inner.record(event),
            |i| AuditError::new(describe(i)),
        )
        .await
    }

    /// Forwarded, outside the plan: barriers are not calls a plan counts.
    async fn sync(&self) -> Result<(), AuditError> {
        self.inner.sync().await
    }

    async fn sync_soon(&self) -> Result<(), AuditError> {
        self.inner.sync_soon().await
    }

    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        self.inner.sync_domain()
    }
}

/// An [`Approver`] whose channel fails the way chat APIs do (HTTP 429 with `Retry-After`,
/// 5xx, a lost reply) or hangs, on the calls its plan names. Its name is the wrapped
/// approver's.
pub struct FaultyApprover {
    inner: Arc<dyn Approver>,
    schedule: Schedule,
}

impl FaultyApprover {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Approver>, plan: FaultPlan) -> Self {
        FaultyApprover {
            inner,
            schedule: Schedule::new(plan),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.schedule.plan
    }

    /// Calls so far, of one method or (with `None`) of all.
    pub fn calls(&self, op: Option<Op>) -> u64 {
        self.schedule.calls(op)
    }

    /// The faults injected so far, in call order.
    pub fn injected(&self) -> Vec<Injection> {
        self.schedule.injected()
    }

    fn error(&self, injection: Injection) -> ApproverError {
        let channel = self.inner.name().to_owned();
        let what = describe(injection);
        match injection.fault {
            Fault::RateLimited { retry_after_secs } => ApproverError::new(
                channel,
                format!(
                    "HTTP 429 Too Many Requests (Retry-After: {retry_after_secs}); {what}; retry after {retry_after_secs} s"
                ),
            )
            .retryable(),
            Fault::ServerError { status } => ApproverError::new(
                channel,
                format!("HTTP {status} from the channel's API; {what}; retry later"),
            )
            .retryable(),
            Fault::FailAfterCommit => ApproverError::new(
                channel,
                format!("HTTP 502 Bad Gateway after the message was posted; {what}"),
            )
            .retryable(),
            _ => ApproverError::new(
                channel,
                format!("HTTP 400 the channel refused the call; {what}"),
            ),
        }
    }
}

impl fmt::Debug for FaultyApprover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FaultyApprover({}: {})",
            self.inner.name(),
            self.schedule.plan
        )
    }
}

#[async_trait]
impl Approver for FaultyApprover {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let injection = self.schedule.next(Op::Dispatch);
        apply(
            injection,
            self.inner.dispatch(request, reason, decisions),
            |i| self.error(i),
        )
        .await
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        let injection = self.schedule.next(Op::Resolved);
        apply(injection, self.inner.resolved(request), |i| self.error(i)).await
    }
}

/// SplitMix64: a tiny, well-mixed generator, so plans depend on nothing but their seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
