//! `GET /healthz`: the store (one cheap keyed read), the audit log (its last write), the
//! policy in force, and each channel's last delivery, as JSON; 200 when all is well, 503
//! otherwise. No token needed, so it says nothing secret: no URLs with credentials, no
//! tokens, no request content.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{AuditError, AuditEvent, AuditSink, RequestId, Store};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Value, json};

use super::channels::ChannelHealth;
use super::policy::ReloadingPolicy;

/// How long the store check may take before the store counts as unavailable.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The audit log's last write, recorded by [`MonitoredSink`].
#[derive(Debug, Default)]
pub(crate) struct AuditHealth {
    state: Mutex<AuditState>,
}

#[derive(Debug, Default, Clone)]
struct AuditState {
    last_write_at: Option<DateTime<Utc>>,
    last_error_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

/// An audit sink whose writes are recorded in an [`AuditHealth`].
pub(crate) struct MonitoredSink<S> {
    pub(crate) inner: S,
    pub(crate) health: Arc<AuditHealth>,
}

#[async_trait]
impl<S: AuditSink> AuditSink for MonitoredSink<S> {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let result = self.inner.record(event).await;
        self.note(&result);
        result
    }

    async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let result = self.inner.record_all(events).await;
        self.note(&result);
        result
    }

    async fn sync(&self) -> Result<(), AuditError> {
        self.inner.sync().await
    }

    async fn sync_soon(&self) -> Result<(), AuditError> {
        self.inner.sync_soon().await
    }

    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        self.inner.sync_domain()
    }

    /// The SQL log's, so that the store commits each transition with its events. Those
    /// commits do not pass through here; every new request's first events do, so a log that
    /// cannot be written still shows as failing at the next request, and a transition whose
    /// events cannot be written fails as a whole.
    fn as_log(&self) -> Option<&dyn std::any::Any> {
        self.inner.as_log()
    }
}

impl<S> MonitoredSink<S> {
    /// Notes a write's outcome for `/healthz`.
    fn note(&self, result: &Result<(), AuditError>) {
        let mut state = self
            .health
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Ok(()) => state.last_write_at = Some(Utc::now()),
            Err(e) => {
                state.last_error_at = Some(Utc::now());
                state.last_error = Some(e.message.chars().take(300).collect());
            }
        }
    }
}

/// Everything `/healthz` looks at.
pub(crate) struct Health {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) backend: &'static str,
    pub(crate) audit: Arc<AuditHealth>,
    pub(crate) audit_key: String,
    pub(crate) policy: Arc<ReloadingPolicy>,
    pub(crate) channels: Vec<(&'static str, Arc<ChannelHealth>)>,
    /// Texts never shown (the store URL's password): replaced in any error message.
    pub(crate) redact: Vec<String>,
}

impl Health {
    fn scrub(&self, text: &str) -> String {
        let mut text: String = text.chars().take(300).collect();
        for secret in self.redact.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    /// The report and its status code.
    pub(crate) async fn report(&self) -> (StatusCode, Value) {
        let mut healthy = true;
        let probe = tokio::time::timeout(STORE_CHECK_TIMEOUT, self.store.get(RequestId::new()));
        let store = match probe.await {
            Ok(Ok(_)) => json!({"status": "ok", "backend": self.backend}),
            Ok(Err(e)) => {
                healthy = false;
                json!({"status": "unavailable", "backend": self.backend, "error": self.scrub(&e.to_string())})
            }
            Err(_) => {
                healthy = false;
                json!({"status": "unavailable", "backend": self.backend, "error": format!("no answer within {} s", STORE_CHECK_TIMEOUT.as_secs())})
            }
        };
        let audit = {
            let state = self
                .audit
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let ok = match (state.last_error_at, state.last_write_at) {
                (None, _) => true,
                (Some(error), Some(written)) => written > error,
                (Some(_), None) => false,
            };
            healthy &= ok;
            json!({
                "status": if ok { "ok" } else { "failing" },
                "signed": true,
                "key": self.audit_key,
                "last_write_at": state.last_write_at,
                "last_error_at": state.last_error_at,
                "last_error": state.last_error.as_deref().map(|e| self.scrub(e)),
            })
        };
        let refused = self.policy.refused();
        let policy = json!({
            "status": if refused.is_none() { "ok" } else { "edit_refused" },
            "version": self.policy.current_version(),
            "file": self.policy.path().display().to_string(),
            "refused_edit": refused,
        });
        let mut channels = serde_json::Map::new();
        for (name, health) in &self.channels {
            let status = health.status();
            let ok = status.ok();
            healthy &= ok;
            let mut value = serde_json::to_value(&status).unwrap_or(Value::Null);
            if let Some(map) = value.as_object_mut() {
                map.insert("status".into(), json!(if ok { "ok" } else { "failing" }));
                if let Some(Value::String(e)) = map.get("last_error").cloned() {
                    map.insert("last_error".into(), json!(self.scrub(&e)));
                }
            }
            channels.insert((*name).to_owned(), value);
        }
        let code = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = json!({
            "status": if healthy { "ok" } else { "unavailable" },
            "store": store,
            "audit": audit,
            "policy": policy,
            "channels": channels,
        });
        (code, body)
    }
}
