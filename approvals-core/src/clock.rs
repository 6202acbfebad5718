//! Time as the gate sees it: the system clock, or a manual clock for tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// A boxed sleep future.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the gate reads the time and sleeps until deadlines (expiry, escalation).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep;

    /// How long until `deadline` in tokio's time, for a clock that moves with it, as
    /// [`SystemClock`] does; `None` (the default) for a clock that moves on its own, as a
    /// [`ManualClock`] does.
    ///
    /// A parked waiter uses it to tell whether its request's deadline comes before its next
    /// poll. When it surely does not, the waiter needs no timer of its own: the gate's poll
    /// queue wakes it (every waiting request is a timer smaller). Otherwise it sleeps on
    /// [`sleep_until_or_for`](Clock::sleep_until_or_for).
    fn runtime_wait(&self, deadline: DateTime<Utc>) -> Option<Duration> {
        let _ = deadline;
        None
    }

    /// Resolves once `now() >= deadline`, or once `at_most` of the runtime's time has passed,
    /// whichever comes first: a waiting request's one timer (its deadline on this clock, its
    /// poll on tokio's) when its deadline may come before its poll. The default runs both
    /// timers; a clock that moves with tokio's time can run one, as [`SystemClock`] does.
    fn sleep_until_or_for(&self, deadline: DateTime<Utc>, at_most: Duration) -> Sleep {
        let until = self.sleep_until(deadline);
        Box::pin(async move {
            tokio::select! {
                _ = until => {}
                _ = tokio::time::sleep(at_most) => {}
            }
        })
    }
}

/// The system clock with tokio timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep {
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }

    fn runtime_wait(&self, deadline: DateTime<Utc>) -> Option<Duration> {
        Some((deadline - Utc::now()).to_std().unwrap_or_default())
    }

    fn sleep_until_or_for(&self, deadline: DateTime<Utc>, at_most: Duration) -> Sleep {
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait.min(at_most)))
    }
}

/// A clock that only moves when told to; for tests of expiry and escalation.
///
/// ```
/// use approvals_core::clock::{Clock, ManualClock};
/// let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
/// clock.advance(chrono::TimeDelta::minutes(5));
/// assert_eq!(clock.now().to_rfc3339(), "2026-01-01T00:05:00+00:00");
/// ```
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
    tick: watch::Sender<i64>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        let micros = start.timestamp_micros();
        let (tick, _) = watch::channel(micros);
        ManualClock {
            micros: AtomicI64::new(micros),
            tick,
        }
    }

    /// Moves the clock forward and wakes sleepers whose deadline passed.
    pub fn advance(&self, by: TimeDelta) {
        let step = by.num_microseconds().unwrap_or(i64::MAX);
        let now = self
            .micros
            .fetch_add(step, Ordering::SeqCst)
            .saturating_add(step);
        self.tick.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.micros.load(Ordering::SeqCst)).unwrap_or_default()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep {
        let mut rx = self.tick.subscribe();
        let target = deadline.timestamp_micros();
        Box::pin(async move {
            // wait_for checks the current value first, then every change.
            let _ = rx.wait_for(|now| *now >= target).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `sleep` once every simulated millisecond; the milliseconds it took to resolve,
    /// or `None` if it had not within `limit_ms`.
    async fn resolves_after_ms(mut sleep: Sleep, limit_ms: u64) -> Option<u64> {
        for ms in 0..=limit_ms {
            if poll_once(&mut sleep).await {
                return Some(ms);
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        None
    }

    async fn poll_once(sleep: &mut Sleep) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(sleep.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_wakes_at_the_deadline_or_after_at_most_whichever_is_first() {
        let clock = SystemClock;
        // Deadlines are on the system clock, which paused tokio time does not move: a
        // deadline an hour away is never reached here, one already past is at once.
        let far = clock.now() + TimeDelta::hours(1);
        let waited = resolves_after_ms(
            clock.sleep_until_or_for(far, Duration::from_millis(40)),
            100,
        );
        assert_eq!(waited.await, Some(40), "the poll ends the sleep");
        let past = clock.now() - TimeDelta::seconds(1);
        let waited =
            resolves_after_ms(clock.sleep_until_or_for(past, Duration::from_secs(60)), 100);
        assert_eq!(waited.await, Some(0), "a passed deadline ends it at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_of_its_own_wakes_at_its_deadline_or_after_at_most_of_tokio_time() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let clock = ManualClock::new(start);
        let deadline = start + TimeDelta::minutes(5);
        // Nobody moves the manual clock: the runtime's time ends the sleep.
        let waited = resolves_after_ms(
            clock.sleep_until_or_for(deadline, Duration::from_millis(30)),
            100,
        );
        assert_eq!(waited.await, Some(30));
        // The manual clock passes the deadline long before the runtime's 60 s.
        let mut sleep = clock.sleep_until_or_for(deadline, Duration::from_secs(60));
        assert!(!poll_once(&mut sleep).await, "not before the deadline");
        clock.advance(TimeDelta::minutes(4));
        assert!(
            !poll_once(&mut sleep).await,
            "one minute before the deadline"
        );
        clock.advance(TimeDelta::minutes(1));
        assert!(poll_once(&mut sleep).await, "at the deadline");
    }
}
