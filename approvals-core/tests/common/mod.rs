//! Shared pieces of the core's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use approvals_core::{Approver, ApproverError, Decisions, Delivery, DispatchReason, RequestRecord};
use async_trait::async_trait;
use serde_json::json;

/// A channel that counts deliveries, so a test can check who was paged (a refused
/// resubmission, an action approved by a standing grant or a plan, must page nobody).
#[derive(Default)]
pub struct Pager {
    dispatched: AtomicUsize,
}

impl Pager {
    /// How many requests were delivered so far.
    pub fn paged(&self) -> usize {
        self.dispatched.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Approver for Pager {
    fn name(&self) -> &str {
        "pager"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        self.dispatched.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Delivery {
            channel: "pager".into(),
            reference: json!({ "message": request.id.to_string() }),
        }))
    }
}
