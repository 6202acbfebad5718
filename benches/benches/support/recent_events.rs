//! The audit sink of the in-memory benches (`core`, `peers_policy`, `round_trips`): it keeps
//! the most recent events, as a real sink would take them (a clone each), without growing
//! over a run of millions.

use std::sync::Mutex;

use approvals_core::audit::AuditError;
use approvals_core::{AuditEvent, AuditSink};
use async_trait::async_trait;

/// Keeps the last up to 10,000 events.
#[derive(Default)]
pub struct RecentEvents(Mutex<Vec<AuditEvent>>);

#[async_trait]
impl AuditSink for RecentEvents {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut events = self.0.lock().map_err(|_| AuditError::new("poisoned"))?;
        if events.len() >= 10_000 {
            events.clear();
        }
        events.push(event.clone());
        Ok(())
    }
}
