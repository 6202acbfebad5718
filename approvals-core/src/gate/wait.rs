//! The wait of one waiting caller, written out as a future by hand.
//!
//! Every agent whose action waits for a reviewer keeps this future in its task for minutes or
//! hours, so its size is paid once per pending request (issue 19's memory budget; BENCHMARKS.md,
//! "Load"). Written as nested `async fn`s, each layer kept its own copy of the gate, the id and
//! the notification handle beside the layer it awaited, and the `select!` kept its own state:
//! 256 bytes for what is, while parked, a notification, a timer and an id. This is the same
//! loop with each value kept once:
//!
//! 1. Look at the request (the boxed [`Gate::wait_step`]; the record it reads lives only
//!    during that look).
//! 2. Decided: release the waiter slot and return. A transition was due and made: look again.
//! 3. Still waiting: park until the request's waiter is woken (a local decision, or the
//!    store's notification of a change made elsewhere), its next deadline, or the poll
//!    interval, whichever comes first; then look again. The poll is the gate's poll queue's
//!    (`gate/poll.rs`); a waiter has a timer of its own only when its deadline may come first.
//!
//! The notification is armed before each look, so a decision made during the look wakes the
//! park that follows it. Dropping the future (a caller that gave up) releases its waiter slot.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use tokio::sync::futures::OwnedNotified;
use tracing::Span;

use super::run::WaitStep;
use super::{Gate, Grant};
use crate::clock::Sleep;
use crate::error::GuardError;
use crate::store::RequestId;

/// What the wait returns: the grant alone, or the decision (a plan's approval has no grant).
pub(super) trait WaitFor {
    type Output;
    fn finish(id: RequestId, decided: Result<Option<Grant>, GuardError>) -> Self::Output;
}

/// Waits for a grant (`wait`, `guard`, `run`): an approved plan is the caller's mistake, and
/// how the wait ended is recorded in the caller's span.
pub(super) struct ForGrant;

impl WaitFor for ForGrant {
    type Output = Result<Grant, GuardError>;

    fn finish(id: RequestId, decided: Result<Option<Grant>, GuardError>) -> Self::Output {
        // A plan's approval issues no grant of its own: its items each get theirs.
        let result = decided.and_then(|grant| {
            grant.ok_or_else(|| {
                GuardError::InvalidRequest(format!(
                    "request {id} is a plan: wait for it with wait_plan; each of its actions gets its own grant when it is asked for"
                ))
            })
        });
        let state = match &result {
            Ok(_) => "approved",
            Err(GuardError::Denied { .. }) => "denied",
            Err(GuardError::Expired { .. }) => "expired",
            Err(GuardError::Cancelled { .. }) => "cancelled",
            Err(GuardError::GrantLapsed { .. }) => "lapsed",
            Err(_) => "failed",
        };
        Span::current().record("state", state);
        result
    }
}

/// Waits for a decision (`wait_plan`): the grant once approved, `None` for an approved plan.
pub(super) struct ForDecision;

impl WaitFor for ForDecision {
    type Output = Result<Option<Grant>, GuardError>;

    fn finish(_: RequestId, decided: Result<Option<Grant>, GuardError>) -> Self::Output {
        decided
    }
}

type Step<'g> = Pin<Box<dyn Future<Output = Result<WaitStep, GuardError>> + Send + 'g>>;

enum Phase<'g> {
    /// Not polled yet.
    Start,
    /// Looking at the request.
    Look(Step<'g>),
    /// Parked until notified, or until its own timer fires when its request's deadline may
    /// come before its poll. Without a timer, the gate's poll queue wakes it at the poll
    /// (`gate/poll.rs`).
    Park(Option<Sleep>),
    /// Returned its outcome.
    Done,
}

/// See the module's doc. Made by [`Gate::wait_for`].
pub(super) struct Wait<'g, W> {
    gate: &'g Gate,
    id: RequestId,
    /// Armed before each look on this request's slot in the gate's waiter table, which it keeps
    /// in the table until released; `None` before the first look and once done. Boxed, and
    /// reused by each look: tokio's notification is 64 bytes, and a parked agent's task is
    /// allocated in steps of 128 bytes (BENCHMARKS.md, "Load").
    notified: Option<Pin<Box<OwnedNotified>>>,
    phase: Phase<'g>,
    want: PhantomData<fn() -> W>,
}

impl<W> Drop for Wait<'_, W> {
    fn drop(&mut self) {
        // Gave up while waiting: the slot goes, or it would stay in the table for good.
        self.release();
    }
}

impl Gate {
    /// The timer of a waiter parking until `deadline` on the gate's clock, if it needs one of
    /// its own: when the deadline surely comes after the poll, the gate's poll queue wakes it
    /// instead (`gate/poll.rs`) and it has none.
    fn park_timer(&self, id: RequestId, deadline: DateTime<Utc>) -> Option<Sleep> {
        let (clock, poll) = (&self.inner.clock, self.inner.poll_interval);
        let Some(wait) = clock.runtime_wait(deadline) else {
            return Some(clock.sleep_until_or_for(deadline, poll));
        };
        if wait >= poll && self.poll_later(id) {
            return None;
        }
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    /// The wait for request `id`, as one future (see the module's doc).
    pub(super) fn wait_for<W: WaitFor>(&self, id: RequestId) -> Wait<'_, W> {
        Wait {
            gate: self,
            id,
            notified: None,
            phase: Phase::Start,
            want: PhantomData,
        }
    }
}

impl<W: WaitFor> Future for Wait<'_, W> {
    type Output = W::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<W::Output> {
        // Every field is `Unpin`: the notification and the futures it polls are boxed.
        let this = self.get_mut();
        loop {
            let parked = match &mut this.phase {
                Phase::Start => {
                    this.gate.forward_store_changes();
                    None
                }
                Phase::Look(step) => match step.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(WaitStep::Again)) => None,
                    Poll::Ready(Ok(WaitStep::Until(deadline))) => {
                        // Woken by a local decide(), by the store's notification of a change
                        // made elsewhere (see forward_store_changes), at the deadline, or by
                        // the poll.
                        Some(this.gate.park_timer(this.id, deadline))
                    }
                    Poll::Ready(Ok(WaitStep::Done(grant))) => {
                        return Poll::Ready(this.finish(Ok(Some(*grant))));
                    }
                    Poll::Ready(Ok(WaitStep::PlanApproved)) => {
                        return Poll::Ready(this.finish(Ok(None)));
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(this.finish(Err(error))),
                },
                Phase::Park(timer) => {
                    let woken = match &mut this.notified {
                        Some(notified) => notified.as_mut().poll(cx).is_ready(),
                        None => true,
                    };
                    let ready = woken
                        || match timer {
                            Some(timer) => timer.as_mut().poll(cx).is_ready(),
                            None => false,
                        };
                    if !ready {
                        return Poll::Pending;
                    }
                    None
                }
                Phase::Done => panic!("a wait polled after it returned"),
            };
            match parked {
                Some(timer) => this.phase = Phase::Park(timer),
                None => {
                    // Arm the notification, then look: a change during the look wakes the
                    // park after it.
                    let armed = this.gate.waiter(this.id).notified_owned();
                    let notified = match &mut this.notified {
                        Some(notified) => {
                            notified.as_mut().set(armed);
                            notified
                        }
                        None => this.notified.insert(Box::pin(armed)),
                    };
                    notified.as_mut().enable();
                    // Boxed: the record and the rarely taken transitions live only during the
                    // look, not in every parked waiter's task.
                    this.phase = Phase::Look(Box::pin(this.gate.wait_step(this.id)));
                }
            }
        }
    }
}

impl<W: WaitFor> Wait<'_, W> {
    /// Ends the wait: the slot is released before the caller hears the outcome.
    fn finish(&mut self, decided: Result<Option<Grant>, GuardError>) -> W::Output {
        self.phase = Phase::Done;
        self.release();
        W::finish(self.id, decided)
    }
}

impl<W> Wait<'_, W> {
    /// Gives the request's waiter slot back (once): the armed notification holds this
    /// waiter's reference to it, which would otherwise count as another waiter's.
    fn release(&mut self) {
        if self.notified.take().is_some() {
            self.gate.release_waiter(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{pending, slots, spawn_guard_and_run, spawn_wait};
    use crate::audit::MemorySink;
    use crate::policy::{Requirement, StaticPolicy};
    use crate::{Gate, GuardError, Initiator, Principal, RequestId, Review};

    fn gate() -> Gate {
        Gate::builder()
            .audit(MemorySink::default())
            .policy(StaticPolicy::require(Requirement::users([
                "dana@example.com",
            ])))
            .initiator(Initiator::agent("billing-agent"))
            .build()
            .expect("gate")
    }

    /// Callers parked on `id`'s slot: the table holds one reference to it, and each parked
    /// caller one (its armed notification).
    fn parked_on(gate: &Gate, id: RequestId) -> usize {
        let waiters = gate.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters
            .get(&id)
            .map_or(0, |slot| std::sync::Arc::strong_count(slot) - 1)
    }

    /// Waits until `n` callers are parked on `id`.
    async fn parked(gate: &Gate, id: RequestId, n: usize) {
        for _ in 0..1000 {
            if parked_on(gate, id) == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "expected {n} callers parked on {id}, found {}",
            parked_on(gate, id)
        );
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_leaves_no_waiter_slot_behind() {
        let gate = gate();
        // Given up by abort, by a timeout around the wait, and by dropping it unpolled.
        let id = pending(&gate, "db://prod/a").await;
        let aborted = spawn_wait(&gate, id);
        parked(&gate, id, 1).await;
        aborted.abort();
        assert!(aborted.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(slots(&gate), 0, "an aborted waiter's slot stays");

        let timed_out = tokio::time::timeout(Duration::from_millis(20), gate.wait(id)).await;
        assert!(timed_out.is_err(), "the request is still pending");
        assert_eq!(slots(&gate), 0, "a timed-out waiter's slot stays");

        drop(gate.wait(id));
        assert_eq!(slots(&gate), 0);
    }

    /// Every door that waits for an agent gives the slot back when it is given up: `guard()`
    /// and `run()` as well as `wait()` (they submit, then wait in the same future).
    #[tokio::test]
    async fn an_agent_that_gives_up_in_guard_or_run_leaves_no_waiter_slot_behind() {
        let gate = gate();
        let [guarding, running] = spawn_guard_and_run(&gate);
        // Both submitted their request and parked on its slot.
        for _ in 0..1000 {
            if slots(&gate) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(slots(&gate), 2, "both agents wait");
        guarding.abort();
        running.abort();
        assert!(guarding.await.is_err_and(|e| e.is_cancelled()));
        assert!(running.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(slots(&gate), 0, "a given-up agent's slot stays");
    }

    #[tokio::test]
    async fn two_waiters_share_a_slot_until_the_last_one_goes() {
        let gate = gate();
        let id = pending(&gate, "db://prod/b").await;
        let first = spawn_wait(&gate, id);
        let second = spawn_wait(&gate, id);
        parked(&gate, id, 2).await;
        first.abort();
        assert!(first.await.is_err_and(|e| e.is_cancelled()));
        // The other waiter still waits on the slot, and is still woken by the decision.
        assert_eq!(parked_on(&gate, id), 1);
        gate.decide(id, Review::approve(Principal::human("dana@example.com")))
            .await
            .expect("approved");
        let grant = second.await.expect("joined").expect("granted");
        assert_eq!(grant.request_id(), id);
        assert_eq!(slots(&gate), 0);
    }

    #[tokio::test]
    async fn a_refused_or_failed_wait_releases_its_slot() {
        let gate = gate();
        let id = pending(&gate, "db://prod/c").await;
        let waiter = spawn_wait(&gate, id);
        parked(&gate, id, 1).await;
        gate.cancel(id, Some(Principal::human("dana@example.com")), None)
            .await
            .expect("cancelled");
        let refused = waiter.await.expect("joined");
        assert!(
            matches!(refused, Err(GuardError::Cancelled { .. })),
            "{refused:?}"
        );
        assert_eq!(slots(&gate), 0);
        // A request that does not exist ends the wait with an error at its first look.
        let unknown = gate.wait(RequestId::new()).await;
        assert!(
            matches!(unknown, Err(GuardError::InvalidRequest(_))),
            "{unknown:?}"
        );
        assert_eq!(slots(&gate), 0);
    }
}
