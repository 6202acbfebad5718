//! The process-wide default gate behind the free functions. One test in its own binary, since
//! the default is global to the process.

use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, MemorySink, StaticPolicy, guard, run,
    set_default_gate,
};

#[tokio::test]
async fn free_functions_use_the_default_gate_and_fail_closed_without_one() {
    let read = ActionRequest::new("db.read", "db://x");
    let err = guard(&read).await.expect_err("no default gate yet");
    assert!(matches!(err, GuardError::NoDefaultGate));
    assert!(err.to_string().contains("set_default_gate"));

    let gate = Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit(MemorySink::new())
        .initiator(Initiator::agent("bot"))
        .build()
        .expect("gate");
    assert!(set_default_gate(gate).is_none());
    let grant = guard(&read).await.expect("allowed");
    assert_eq!(grant.policy_rule(), Some("allow-all"));
    let value = run(&read, || async { Ok::<_, GuardError>(7) })
        .await
        .expect("ran");
    assert_eq!(value, 7);
}
