//! Time as the gate sees it: the system clock, or a manual clock for tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};

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
