//! The gate's poll queue: when each parked waiter looks at its request again at the latest,
//! kept by the gate instead of by a timer of each waiter's own.
//!
//! A parked waiter looks again when it is woken: by a local decision, by the store's
//! notification of a change made elsewhere, at its request's next deadline, or, at the
//! latest, once the poll interval has passed (a change made by another process on a store
//! that cannot notify). A tokio timer of its own for that poll is 112 bytes of heap for every
//! parked waiter, paid by every pending request an agent waits on (issue 19's memory budget;
//! BENCHMARKS.md, "Load"). The poll interval is one setting per gate, so polls fall due in
//! the order the waiters parked: one queue in that order, 32 bytes an entry, and one task
//! that sleeps until the first entry is due (up to [`GRAIN`] later, so that one wake-up
//! serves every entry due meanwhile) and wakes those requests' waiters. Waiters park at
//! different moments, so their polls stay spread over the interval, as with timers of their
//! own.
//!
//! An entry stays when its waiter is woken sooner or gives up: when it falls due it wakes
//! whoever waits on that request then, if anyone (one spare look at worst), and is gone.
//! So that a long interval and many short waits do not pile up such entries, the queue drops
//! those of requests nobody waits on any more whenever they could outnumber the rest, at
//! most once per doubling of the queue. The task ends when the queue is empty
//! and is started again by the next entry; it holds the gate weakly, so a dropped gate's
//! queue goes with it.
//!
//! One task per gate, on the runtime of the waiter that started it, like the forwarder of
//! the store's notifications (`Gate::forward_store_changes`): if a gate's waiters live on
//! several runtimes and that one shuts down, the next waiter to park starts another, which
//! then serves every entry.
//!
//! A deadline on the gate's clock that comes before the poll keeps a timer of the waiter's
//! own (`gate/wait.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::io::{lock, wake_waiter};
use super::{Gate, Inner};
use crate::store::RequestId;

/// Entries of requests nobody waits on any more that the queue keeps before it drops them.
const SPARE_ENTRIES: usize = 64;

/// How late a poll may come, so that one wake-up of the task serves every entry that falls
/// due meanwhile: with thousands of short waits a second, most entries outlive their waiter,
/// and one wake-up each would cost a task switch per wait.
const GRAIN: Duration = Duration::from_millis(10);

/// Polls not yet due, in the order they fall due, and the task that runs them.
#[derive(Default)]
pub(super) struct PollQueue {
    due: VecDeque<(Instant, RequestId)>,
    /// How many entries the last clean-up kept: the next waits until the queue has doubled
    /// since, so entries of parked waiters that a clean-up must keep (one that parked again
    /// has two) cannot make it run on every park.
    kept: usize,
    runner: Option<JoinHandle<()>>,
    /// Clean-ups so far, for the tests.
    #[cfg(test)]
    cleanups: usize,
}

impl Gate {
    /// Wakes the waiters of request `id` once the poll interval has passed (and at most
    /// [`GRAIN`] later). `false`, and nothing queued, when the interval is too long to
    /// represent as an instant.
    pub(super) fn poll_later(&self, id: RequestId) -> bool {
        let Some(at) = Instant::now().checked_add(self.inner.poll_interval) else {
            return false;
        };
        let mut queue = lock(&self.inner.polls);
        // The waiter table is looked at only once the queue has doubled since the last
        // clean-up, not on every park.
        if queue.due.len() >= 2 * queue.kept + SPARE_ENTRIES {
            let waiters = lock(&self.inner.waiters);
            if queue.due.len() >= 2 * waiters.len() + SPARE_ENTRIES {
                queue.due.retain(|(_, id)| waiters.contains_key(id));
                queue.kept = queue.due.len();
                #[cfg(test)]
                {
                    queue.cleanups += 1;
                }
            }
        }
        queue.due.push_back((at, id));
        // The runner is gone when the queue emptied, or when its runtime shut down.
        if queue.runner.as_ref().is_none_or(JoinHandle::is_finished) {
            queue.runner = Some(tokio::spawn(run_polls(Arc::downgrade(&self.inner))));
        }
        true
    }
}

/// Wakes each entry's waiters when it falls due; ends when none is left or the gate is gone.
async fn run_polls(gate: Weak<Inner>) {
    loop {
        let Some(inner) = gate.upgrade() else {
            return;
        };
        let now = Instant::now();
        let (woken, next) = {
            let mut queue = lock(&inner.polls);
            let mut woken = Vec::new();
            while let Some(&(at, id)) = queue.due.front()
                && at <= now
            {
                queue.due.pop_front();
                woken.push(id);
            }
            let next = queue.due.front().map(|&(at, _)| at);
            if next.is_none() {
                // Under the lock, so the next entry sees the queue without a runner.
                queue.runner = None;
                queue.kept = 0;
            }
            (woken, next)
        };
        for id in woken {
            wake_waiter(&inner, id);
        }
        drop(inner);
        match next {
            // Entries are added in the order they fall due, so none added while this sleeps
            // is due before `at`.
            Some(at) => tokio::time::sleep_until(at + GRAIN).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::task::JoinHandle;

    use super::super::testing::{self, slots, spawn_guard_and_run, spawn_wait};
    use crate::audit::MemorySink;
    use crate::policy::{Requirement, StaticPolicy};
    use crate::{Gate, GuardError, Initiator, MemoryStore, Principal, RequestId, Review};

    /// Two gates on one store, which cannot notify: a change made through the second reaches
    /// the first's waiters only by their poll. Requests time out after `timeout`.
    fn two_gates(poll: Duration, timeout: Duration) -> (Gate, Gate) {
        let store = Arc::new(MemoryStore::new());
        let gate = || {
            Gate::builder()
                .audit(MemorySink::default())
                .store_shared(store.clone())
                .policy(StaticPolicy::require(
                    Requirement::users(["dana@example.com"]).timeout(timeout),
                ))
                .initiator(Initiator::agent("billing-agent"))
                .poll_interval(poll)
                .build()
                .expect("gate")
        };
        (gate(), gate())
    }

    async fn pending(gate: &Gate) -> RequestId {
        testing::pending(gate, "db://prod/customers").await
    }

    fn queued(gate: &Gate) -> usize {
        super::lock(&gate.inner.polls).due.len()
    }

    fn running(gate: &Gate) -> bool {
        super::lock(&gate.inner.polls).runner.is_some()
    }

    /// No entry left, and no task running for them.
    fn assert_idle(gate: &Gate) {
        assert_eq!(queued(gate), 0);
        assert!(!running(gate));
    }

    /// Lets spawned tasks run until each has parked or finished.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    async fn approve(gate: &Gate, id: RequestId) {
        gate.decide(id, Review::approve(Principal::human("dana@example.com")))
            .await
            .expect("approve");
    }

    /// `n` requests, each waited for until it parks, then approved through `gate`.
    async fn short_waits(gate: &Gate, n: usize) {
        for _ in 0..n {
            let id = pending(gate).await;
            let waiter = spawn_wait(gate, id);
            settle().await;
            approve(gate, id).await;
            waiter.await.expect("waiter").expect("grant");
        }
    }

    /// Waits at most `limit` for `waiter` to return the grant of `id`.
    async fn granted_within(
        waiter: &mut JoinHandle<Result<crate::Grant, GuardError>>,
        limit: Duration,
        id: RequestId,
    ) {
        let grant = tokio::time::timeout(limit, waiter)
            .await
            .expect("woken in time")
            .expect("waiter")
            .expect("grant");
        assert_eq!(grant.request_id, id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_made_elsewhere_reaches_a_parked_waiter_at_its_poll_from_the_queue() {
        let poll = Duration::from_secs(5);
        let (here, elsewhere) = two_gates(poll, Duration::from_secs(3600));
        let id = pending(&here).await;
        let started = tokio::time::Instant::now();
        let mut waiter = spawn_wait(&here, id);
        settle().await;
        // Parked with its poll in the gate's queue, not on a timer of its own.
        assert_eq!(queued(&here), 1);
        assert!(running(&here));

        approve(&elsewhere, id).await;
        // Nothing tells `here` of the approval: its waiter hears of it at the poll, not before.
        let early = tokio::time::timeout(poll - Duration::from_millis(100), &mut waiter).await;
        assert!(early.is_err(), "the waiter returned before its poll");
        granted_within(&mut waiter, poll, id).await;
        assert!(started.elapsed() >= poll);
        // The entry went when it fell due, and the runner with the last entry.
        settle().await;
        assert_idle(&here);
    }

    #[tokio::test(start_paused = true)]
    async fn each_park_polls_again_one_interval_later_until_the_change_arrives() {
        let poll = Duration::from_secs(2);
        let (here, elsewhere) = two_gates(poll, Duration::from_secs(3600));
        let id = pending(&here).await;
        let mut waiter = spawn_wait(&here, id);
        // Three polls find nothing and park again, each with one new entry.
        for _ in 0..3 {
            tokio::time::advance(poll).await;
            settle().await;
            assert_eq!(queued(&here), 1);
            assert!(!waiter.is_finished());
        }
        approve(&elsewhere, id).await;
        granted_within(&mut waiter, poll * 2, id).await;
    }

    /// `guard()` and `run()` wait with the same future as `wait()`, so they too park on the
    /// queue and hear of a change made elsewhere at their poll.
    #[tokio::test(start_paused = true)]
    async fn guard_and_run_park_on_the_queue_as_wait_does() {
        let poll = Duration::from_secs(5);
        let (here, elsewhere) = two_gates(poll, Duration::from_secs(3600));
        let [guarding, running] = spawn_guard_and_run(&here);
        settle().await;
        assert_eq!(queued(&here), 2, "each agent's poll is in the queue");
        for record in elsewhere.pending().await.expect("pending") {
            approve(&elsewhere, record.id).await;
        }
        for agent in [guarding, running] {
            tokio::time::timeout(poll * 2, agent)
                .await
                .expect("woken by its poll")
                .expect("agent")
                .expect("granted and run");
        }
    }

    // Real time: the deadline is on the system clock, which paused tokio time does not move.
    #[tokio::test]
    async fn a_deadline_before_the_poll_is_the_waiters_own_timer() {
        // The request expires after one second; the poll is an hour away.
        let here = two_gates(Duration::from_secs(3600), Duration::from_secs(1)).0;
        let id = pending(&here).await;
        let waiter = spawn_wait(&here, id);
        settle().await;
        assert_eq!(
            queued(&here),
            0,
            "a deadline that comes first needs no poll"
        );
        let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken at the deadline, long before the poll")
            .expect("waiter");
        assert!(
            matches!(outcome, Err(GuardError::Expired { .. })),
            "{outcome:?}"
        );
        assert_eq!(queued(&here), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gave_up_leaves_an_entry_that_wakes_nobody_and_goes() {
        let poll = Duration::from_secs(5);
        let here = two_gates(poll, Duration::from_secs(3600)).0;
        let id = pending(&here).await;
        let waiter = spawn_wait(&here, id);
        settle().await;
        waiter.abort();
        settle().await;
        assert_eq!(queued(&here), 1);
        tokio::time::advance(poll + super::GRAIN).await;
        settle().await;
        assert_idle(&here);
        assert_eq!(slots(&here), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn many_short_waits_within_one_interval_leave_few_entries_behind() {
        let here = two_gates(Duration::from_secs(3600), Duration::from_secs(7200)).0;
        // One waiter stays parked throughout; its entry must survive every clean-up.
        let long = pending(&here).await;
        let mut long_waiter = spawn_wait(&here, long);
        short_waits(&here, 500).await;
        // 501 parks in all; only the long waiter is still parked.
        let left = queued(&here);
        assert!(
            left <= 2 + super::SPARE_ENTRIES,
            "{left} entries kept for one parked waiter"
        );
        approve(&here, long).await;
        granted_within(&mut long_waiter, Duration::from_secs(1), long).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_parks_again_and_again_does_not_make_every_park_clean_up() {
        let here = two_gates(Duration::from_secs(3600), Duration::from_secs(7200)).0;
        let id = pending(&here).await;
        let waiter = spawn_wait(&here, id);
        settle().await;
        // Each wake-up without a decision makes the one waiter look and park again: one more
        // entry each time, all of them its own, which no clean-up may drop.
        for _ in 0..1000 {
            here.wake(id);
            settle().await;
        }
        assert_eq!(queued(&here), 1001);
        // Once per doubling from the spare entries up to 1,001 is a handful; once per park
        // would be nearly a thousand, each through the whole queue.
        let cleanups = super::lock(&here.inner.polls).cleanups;
        assert!(cleanups <= 6, "{cleanups} clean-ups for 1,001 parks");
        waiter.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_up_keeps_the_entry_of_a_waiter_still_parked() {
        let poll = Duration::from_secs(60);
        let (here, elsewhere) = two_gates(poll, Duration::from_secs(7200));
        let long = pending(&here).await;
        let mut long_waiter = spawn_wait(&here, long);
        settle().await;
        // Enough short waits to clean up the queue several times over.
        short_waits(&here, 300).await;
        // Approved where nothing tells this gate: only the long waiter's own entry wakes it.
        approve(&elsewhere, long).await;
        granted_within(&mut long_waiter, poll * 2, long).await;
    }

    #[tokio::test]
    async fn a_poll_too_far_off_to_represent_is_not_queued() {
        let here = two_gates(Duration::MAX, Duration::from_secs(3600)).0;
        let id = pending(&here).await;
        // The waiter then keeps the timer for its deadline (`Gate::park_timer`).
        assert!(!here.poll_later(id));
        assert_idle(&here);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_does_not_keep_a_dropped_gate_alive() {
        let poll = Duration::from_secs(5);
        let here = two_gates(poll, Duration::from_secs(3600)).0;
        let id = pending(&here).await;
        let waiter = spawn_wait(&here, id);
        settle().await;
        assert!(running(&here));
        waiter.abort();
        settle().await;
        let weak = Arc::downgrade(&here.inner);
        drop(here);
        // The runner sleeps towards the entry's poll, holding the gate weakly.
        assert!(
            weak.upgrade().is_none(),
            "the poll queue kept the gate alive"
        );
        tokio::time::advance(poll).await;
        settle().await;
    }
}
