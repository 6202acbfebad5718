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
    // 120 bytes at the time of writing (test profile); 184 when the wait kept tokio's
    // notification inline, beside its own reference to the waiter slot; 208 when run() was an `async fn`
    // around its instrumented future; 376 when the wait was nested async fns, each keeping
    // its own copy of the gate, the id and the notification (gate/wait.rs); 808 when the
    // submission was held across the wait and the poll had a timer of its own.
    assert!(bytes <= 136, "a waiting run() future is {bytes} bytes");
}

#[test]
fn a_waiting_guard_future_keeps_the_wait_and_little_else() {
    let gate = gate();
    let action = ActionRequest::new("data.export", "db://prod/customers");
    let guard = gate.guard(&action);
    let bytes = std::mem::size_of_val(&guard);
    // 128 bytes at the time of writing; 192 when the wait kept tokio's notification inline;
    // 216 when guard() was an `async fn` around its
    // instrumented future; 352 when the wait was nested async fns; over 720 when the
    // submission was held across the wait and the poll had a timer of its own.
    assert!(bytes <= 144, "a waiting guard() future is {bytes} bytes");
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
    // 192 bytes at the time of writing; 256 when the wait kept tokio's notification inline;
    // 392 when the wait was nested async fns; 720 when the
    // plan's record was read inline and kept across the wait.
    assert!(bytes <= 208, "a wait_plan() future is {bytes} bytes");
}

#[test]
fn a_stored_record_keeps_its_lists_as_one_pointer_each() {
    // Every pending request has one record in the store, so its size counts like the waiting
    // future's. 256 bytes at the time of writing: its three lists (reviews, deliveries, a
    // plan's used items) are `ThinVec`s, one pointer each, and its request's text fields and
    // policy rule and version `ArcStr`s; 272 when the rule and version were `Arc<str>`s (two
    // pointers each); 352 when the request's text was `String`s; 392 when the lists were a
    // `Vec` and a boxed slice.
    let bytes = std::mem::size_of::<approvals_core::RequestRecord>();
    assert!(bytes <= 256, "a RequestRecord is {bytes} bytes");
}

#[test]
fn a_request_keeps_its_text_as_one_shared_pointer_per_field() {
    // A waiting agent keeps its action, and the store keeps it again in the record. 72 bytes
    // at the time of writing: kind, resource, summary, justification and idempotency key are
    // `ArcStr`s (one pointer, `None` included), shared by every copy; 152 as `String`s.
    let bytes = std::mem::size_of::<ActionRequest>();
    assert!(bytes <= 72, "an ActionRequest is {bytes} bytes");
}

#[test]
fn a_stored_request_shares_its_text_with_the_agents_action() {
    // The record's copy of the request points at the agent's text rather than copying it:
    // the agent's action and the stored record hold the same bytes once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = std::sync::Arc::new(MemoryStore::new());
        let gate = Gate::builder()
            .policy(StaticPolicy::require(approvals_core::Requirement::users([
                "dana@example.com",
            ])))
            .store_shared(store.clone())
            .audit(MemorySink::default())
            .initiator(Initiator::agent("billing-agent"))
            .build()
            .expect("gate");
        let action = ActionRequest::new("data.export", "db://prod/customers")
            .summary("Export customers")
            .justification("quarterly report");
        let id = match gate.submit(&action).await.expect("submitted") {
            approvals_core::Submission::Pending(id) => id,
            other => panic!("expected pending, got {other:?}"),
        };
        let record = approvals_core::Store::get(&*store, id)
            .await
            .expect("read")
            .expect("stored");
        let stored = &record.request;
        assert!(std::ptr::eq(stored.kind.as_ptr(), action.kind.as_ptr()));
        assert!(std::ptr::eq(
            stored.resource.as_ptr(),
            action.resource.as_ptr()
        ));
        let text = |s: &Option<approvals_core::ArcStr>| s.as_ref().map(|s| s.as_ptr());
        assert_eq!(text(&stored.summary), text(&action.summary));
        assert_eq!(text(&stored.justification), text(&action.justification));
    });
}
