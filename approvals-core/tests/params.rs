//! Non-finite numbers never reach reviewers as `null`: every way a typed value becomes
//! parameters refuses NaN and ±infinity when the request is built, before anything is recorded.

use std::sync::Arc;

use approvals_core::params::ParamsError;
use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, MemorySink, StaticPolicy, requires_approval,
};
use serde::Serialize;

#[derive(Serialize)]
struct Rebalance {
    account: String,
    ratio: f64,
    weights: Vec<f32>,
}

#[test]
fn params_from_refuses_every_non_finite_float() {
    for ratio in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = ActionRequest::new("fx.rebalance", "acct://1")
            .params_from(&Rebalance {
                account: "a".into(),
                ratio,
                weights: vec![],
            })
            .expect_err("refused");
        assert!(
            matches!(err, ParamsError::NonFinite { ref path, .. } if path == "$.ratio"),
            "{err}"
        );
    }
    let err = ActionRequest::new("fx.rebalance", "acct://1")
        .params_from(&Rebalance {
            account: "a".into(),
            ratio: 0.5,
            weights: vec![0.1, f32::NAN],
        })
        .expect_err("refused");
    assert!(err.to_string().contains("$.weights[1]"), "{err}");
    // A NaN and a null no longer share a digest, because the NaN never becomes a request.
    let null = ActionRequest::new("fx.rebalance", "acct://1")
        .params_from(&serde_json::json!({"account": "a", "ratio": null, "weights": []}))
        .expect("null is a value");
    assert!(null.params["ratio"].is_null());
}

fn gate(sink: Arc<MemorySink>) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit_shared(sink)
        .initiator(Initiator::agent("fx-agent"))
        .build()
        .expect("gate")
}

#[requires_approval(kind = "fx.rebalance", resource = "acct://{account}", gate = gate)]
async fn rebalance(gate: &Gate, account: &str, ratio: f64) -> Result<f64, GuardError> {
    Ok(ratio)
}

#[tokio::test]
async fn the_macro_refuses_a_non_finite_argument_before_anything_is_recorded() {
    let sink = Arc::new(MemorySink::new());
    let g = gate(sink.clone());
    for ratio in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = rebalance(&g, "acct-1", ratio).await.expect_err("refused");
        assert!(
            matches!(&err, GuardError::InvalidRequest(m) if m.contains("ratio")),
            "{err:?}"
        );
    }
    assert!(sink.names().is_empty(), "{:?}", sink.names());
    assert_eq!(rebalance(&g, "acct-1", 0.25).await.expect("finite"), 0.25);
}
