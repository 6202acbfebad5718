//! `ConsoleLinkApprover`: announces each pending request with its review-console link.

use std::io::Write;
use std::sync::{Arc, Mutex};

use approvals_core::{Approver, ApproverError, Decisions, Delivery, DispatchReason, RequestRecord};
use async_trait::async_trait;
use url::Url;

type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// Channel name of the HTTP console in audit events and deliveries.
pub const CONSOLE_LINK_CHANNEL: &str = "http";

/// Tells whoever runs the agent where to review each pending request: one line per request
/// with its console URL, on standard error by default. Reviews then arrive through the
/// [`ReviewServer`](crate::ReviewServer) on that URL. Adding it to a gate also records a
/// `dispatched` audit event for the `http` channel.
///
/// ```
/// use approvals_http::ConsoleLinkApprover;
/// let link = ConsoleLinkApprover::new("http://127.0.0.1:8480/".parse().unwrap());
/// ```
#[derive(Clone)]
pub struct ConsoleLinkApprover {
    base: Url,
    out: Output,
}

impl std::fmt::Debug for ConsoleLinkApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleLinkApprover")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ConsoleLinkApprover {
    /// Announces on standard error; `base` is the review server's URL.
    pub fn new(base: Url) -> Self {
        Self::with_writer(base, std::io::stderr())
    }

    /// Announces on `out` (for tests and embedding).
    pub fn with_writer(base: Url, out: impl Write + Send + 'static) -> Self {
        ConsoleLinkApprover {
            base,
            out: Arc::new(Mutex::new(Box::new(out))),
        }
    }

    /// The console URL of a request.
    pub fn link(&self, record: &RequestRecord) -> String {
        self.base
            .join(&record.id.console_path())
            .map(String::from)
            .unwrap_or_else(|_| format!("{}{}", self.base, record.id.console_path()))
    }

    fn write(&self, line: &str) -> Result<(), ApproverError> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| ApproverError::new(CONSOLE_LINK_CHANNEL, e.to_string()))
    }
}

/// Untrusted text for a terminal line: no control or direction characters (shown in their
/// visible form, see [`approvals_core::text::one_line`]), bounded.
fn plain(text: &str) -> String {
    approvals_core::text::truncate(&approvals_core::text::one_line(text), 160).into_owned()
}

#[async_trait]
impl Approver for ConsoleLinkApprover {
    fn name(&self) -> &str {
        CONSOLE_LINK_CHANNEL
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let link = self.link(request);
        let what = match reason {
            DispatchReason::Escalation => "Approval escalated",
            DispatchReason::Reminder => "Reminder, approval still needed",
            _ => "Approval needed",
        };
        self.write(&format!(
            "{what}: {} on {} (digest {}). Review at {link}",
            plain(&request.request.kind),
            plain(&request.request.resource),
            request.digest
        ))?;
        Ok(Some(Delivery {
            channel: CONSOLE_LINK_CHANNEL.into(),
            reference: serde_json::json!({ "url": link }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::{
        ActionRequest, Gate, Initiator, MemorySink, Requirement, StaticPolicy, Submission,
    };

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn announces_the_console_link_without_control_characters() {
        let buf = Buf::default();
        let link = ConsoleLinkApprover::with_writer(
            "http://127.0.0.1:8480/".parse().expect("url"),
            buf.clone(),
        );
        let gate = Gate::builder()
            .policy(StaticPolicy::require(Requirement::groups(["security"])))
            .audit(MemorySink::new())
            .approver(link)
            .initiator(Initiator::agent("bot"))
            .build()
            .expect("gate");
        let action = ActionRequest::new("data.export\u{1b}[2J", "db://prod/\u{202e}x");
        let Ok(Submission::Pending(id)) = gate.submit(&action).await else {
            panic!("pending expected");
        };
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(
            approvals_core::text::hostile::leftover(&text),
            None,
            "{text:?}"
        );
        assert!(
            text.contains(&format!("http://127.0.0.1:8480/console/requests/{id}")),
            "{text}"
        );
        assert!(
            text.contains("data.export‹U+001B›[2J") && text.contains("db://prod/‹U+202E›x"),
            "{text}"
        );
        let record = gate.get(id).await.expect("store").expect("record");
        assert_eq!(record.deliveries[0].channel, "http");
    }
}
