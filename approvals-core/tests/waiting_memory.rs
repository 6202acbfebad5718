//! What a waiting agent's task keeps while its request is pending. Every agent that waits for
//! a reviewer holds one `guard()` or `run()` future for minutes or hours, so at 1,000,000
//! pending requests each byte of it is a megabyte (BENCHMARKS.md, "Load"; issue 19's budget
//! is 1,024 bytes per waiting request beyond its parameters, the stored record included).
//!
//! A future is as large as the largest set of values alive across one of its `.await`s. The
//! states that only run once (submitting, executing) are boxed and gone while waiting; what
//! stays is the wait (`gate/wait.rs`, one hand-written future): the request id, the
//! notification, room for a timer (boxed, and only when the request's deadline comes before
//! its poll: the gate's poll queue wakes the others, `gate/poll.rs`) and the tracing span.
//! These bounds fail when a change keeps more than that across the wait, such as a value
//! matched on while waiting, or a second timer.

use approvals_core::audit::MemorySink;
use approvals_core::policy::StaticPolicy;
use approvals_core::{ActionRequest, Gate, GuardError, Initiator, MemoryStore};

fn gate() -> Gate {
    Gate::builder()
        .policy(StaticPolicy::allow_all())
        .store(MemoryStore::new())
        .audit(MemorySink::default())
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate")
}

#[test]
fn a_waiting_run_future_keeps_the_wait_and_little_else() {
    let gate = gate();
    let action = ActionRequest::new("data.export", "db://prod/customers");
    let run = gate.run(&action, || async { Ok::<_, GuardError>(()) });
    let bytes = std::mem::size_of_val(&run);
    // 184 bytes at the time of writing (test profile); 208 when run() was an `async fn`
    // around its instrumented future; 376 when the wait was nested async fns, each keeping
    // its own copy of the gate, the id and the notification (gate/wait.rs); 808 when the
    // submission was held across the wait and the poll had a timer of its own.
    assert!(bytes <= 200, "a waiting run() future is {bytes} bytes");
}

#[test]
fn a_waiting_guard_future_keeps_the_wait_and_little_else() {
    let gate = gate();
    let action = ActionRequest::new("data.export", "db://prod/customers");
    let guard = gate.guard(&action);
    let bytes = std::mem::size_of_val(&guard);
    // 192 bytes at the time of writing; 216 when guard() was an `async fn` around its
    // instrumented future; 352 when the wait was nested async fns; over 720 when the
    // submission was held across the wait and the poll had a timer of its own.
    assert!(bytes <= 208, "a waiting guard() future is {bytes} bytes");
}

#[test]
fn a_wait_future_keeps_the_wait_and_little_else() {
    let gate = gate();
    let wait = gate.wait(approvals_core::RequestId::new());
    let bytes = std::mem::size_of_val(&wait);
    // 232 bytes at the time of writing; 248 when wait() was an `async fn`; 376 when the wait
    // was nested async fns; 816 when the barrier after the wait was not boxed.
    assert!(bytes <= 240, "a wait() future is {bytes} bytes");
}

#[test]
fn a_wait_plan_future_keeps_the_wait_and_little_else() {
    let gate = gate();
    let wait = gate.wait_plan(approvals_core::RequestId::new());
    let bytes = std::mem::size_of_val(&wait);
    // 256 bytes at the time of writing; 392 when the wait was nested async fns; 720 when the
    // plan's record was read inline and kept across the wait.
    assert!(bytes <= 272, "a wait_plan() future is {bytes} bytes");
}

#[test]
fn a_stored_record_keeps_its_lists_as_one_pointer_each() {
    // Every pending request has one record in the store, so its size counts like the waiting
    // future's. 352 bytes at the time of writing: its three lists (reviews, deliveries, a
    // plan's used items) are `ThinVec`s, one pointer each; 392 when they were a `Vec` and a
    // boxed slice.
    let bytes = std::mem::size_of::<approvals_core::RequestRecord>();
    assert!(bytes <= 352, "a RequestRecord is {bytes} bytes");
}
