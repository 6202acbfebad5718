//! `#[requires_approval]` without `gate = ..` uses the process-wide gate. Its own test binary,
//! because the default gate is global.

use std::sync::Arc;

use approvals_core::{
    Gate, GuardError, Initiator, MemorySink, StaticPolicy, requires_approval, set_default_gate,
};

#[requires_approval]
async fn rotate_key(name: String) -> Result<String, GuardError> {
    Ok(format!("rotated {name}"))
}

#[tokio::test]
async fn uses_the_default_gate_and_names_the_kind_after_the_function() {
    let err = rotate_key("payments".into())
        .await
        .expect_err("no gate yet");
    assert!(matches!(err, GuardError::NoDefaultGate), "{err}");

    let sink = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit_shared(sink.clone())
        .initiator(Initiator::service("rotator"))
        .build()
        .expect("gate");
    set_default_gate(gate);

    let out = rotate_key("payments".into()).await.expect("allowed");
    assert_eq!(out, "rotated payments");
    let events = sink.events();
    assert_eq!(&*events[0].kind, concat!(module_path!(), "::rotate_key"));
    assert_eq!(&*events[0].kind, "default_gate::rotate_key");
    assert_eq!(&*events[0].resource, "");
    assert_eq!(
        sink.names(),
        ["requested", "policy_decided", "grant_consumed", "executed"]
    );
}
