//! Bounds on every call into a user-supplied part (policy, store, audit sink, channel,
//! identity resolver): a time limit, and a panic contained as an error instead of unwinding
//! into the caller's task.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a bounded call produced no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// It did not finish within the limit.
    TimedOut(Duration),
    /// It panicked; the panic's message.
    Panicked(String),
}

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfinished::TimedOut(limit) => write!(f, "no answer within {limit:?}"),
            Unfinished::Panicked(message) => write!(f, "it panicked: {message}"),
        }
    }
}

/// `call`'s output, unless it panics or does not finish within `limit`. A call that is ready
/// at once (an in-memory store or sink) finishes without a timer being set up or room kept
/// for one: the allow path of `guard()` makes an audit append through this.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = T>,
) -> Result<T, Unfinished> {
    let mut call = std::pin::pin!(call);
    let first = std::future::poll_fn(|cx| Poll::Ready(poll_contained(call.as_mut(), cx))).await;
    match first {
        Poll::Ready(out) => return out.map_err(Unfinished::Panicked),
        Poll::Pending => {}
    }
    // Boxed: the timer is most of this future's room, and only a call that waits needs it.
    match Box::pin(tokio::time::timeout(
        limit,
        std::future::poll_fn(|cx| poll_contained(call.as_mut(), cx)),
    ))
    .await
    {
        Ok(out) => out.map_err(Unfinished::Panicked),
        Err(_) => Err(Unfinished::TimedOut(limit)),
    }
}

/// `f()`, or the message of its panic.
pub(crate) fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// Polls `call` once, turning a panic into its message. A future that panicked is not polled
/// again: the caller gets the error and drops it.
fn poll_contained<F: Future>(
    call: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, String>> {
    match catch_unwind(AssertUnwindSafe(|| call.poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
    }
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    crate::text::truncate(&text, 512).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_call_gives_its_output() {
        assert_eq!(within(Duration::from_secs(1), async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_times_out() {
        let out = within(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert_eq!(out, Err(Unfinished::TimedOut(Duration::from_secs(1))));
    }

    #[tokio::test]
    async fn a_panic_before_or_after_the_first_wait_becomes_an_error() {
        let at_once = within(Duration::from_secs(1), async { panic!("boom {}", 1) }).await;
        assert_eq!(at_once, Err(Unfinished::Panicked("boom 1".into())));
        let later = within(Duration::from_secs(5), async {
            tokio::task::yield_now().await;
            panic!("late");
        })
        .await;
        assert_eq!(later, Err::<(), _>(Unfinished::Panicked("late".into())));
        assert_eq!(
            contained(|| -> u8 { panic!("sync") }),
            Err("sync".to_owned())
        );
    }
}
