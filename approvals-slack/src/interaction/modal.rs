//! The modal round trip and what Slack is answered: the metadata a modal carries from the
//! click to its submission (sealed with a MAC under the signing secret), and the answer to an
//! interaction, given at once or once the decision started for it is known.

use approvals_core::{Digest, RequestId, Verdict};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::signature::SigningSecret;
use crate::text::truncate;

pub(super) const METADATA_DOMAIN: &str = "approvals-slack/modal/v1";
pub(super) const MAX_METADATA_CHARS: usize = 3000;

/// What the modal carries from the click to the submission; sealed with a MAC under the
/// signing secret so it cannot be altered on the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ModalMetadata {
    #[serde(rename = "r")]
    pub(super) request_id: RequestId,
    #[serde(rename = "d")]
    pub(super) digest: Digest,
    #[serde(rename = "a")]
    pub(super) verdict: Verdict,
    #[serde(rename = "u")]
    pub(super) user: String,
    #[serde(rename = "q")]
    pub(super) reason_required: bool,
    #[serde(rename = "ru", default, skip_serializing_if = "Option::is_none")]
    pub(super) response_url: Option<String>,
    /// Whether the modal is the edit modal (an approval with edited parameters).
    #[serde(rename = "e", default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) edit: bool,
}

impl ModalMetadata {
    pub(super) fn seal(&self, secret: &SigningSecret) -> String {
        let mut meta = self.clone();
        loop {
            let body = serde_json::to_string(&meta).unwrap_or_default();
            let sealed = format!(
                "{body}.{}",
                hex::encode(secret.tag(METADATA_DOMAIN, body.as_bytes()))
            );
            if sealed.len() <= MAX_METADATA_CHARS || meta.response_url.is_none() {
                return sealed;
            }
            meta.response_url = None;
        }
    }

    pub(super) fn open(sealed: &str, secret: &SigningSecret) -> Option<Self> {
        let (body, tag) = sealed.rsplit_once('.')?;
        let mut presented = [0u8; 32];
        hex::decode_to_slice(tag, &mut presented).ok()?;
        let expected = secret.tag(METADATA_DOMAIN, body.as_bytes());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &presented[..])) {
            return None;
        }
        serde_json::from_str(body).ok()
    }
}

/// What to answer Slack with, immediately.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ack {
    /// An empty 200 (closes a modal; acknowledges a click).
    Empty,
    /// A JSON answer (modal validation errors).
    Json(Value),
}

impl Ack {
    /// Modal validation errors: `message` shown under the input `block_id`.
    pub(super) fn errors(block_id: &str, message: &str) -> Ack {
        Ack::Json(json!({
            "response_action": "errors",
            "errors": { block_id: truncate(&crate::text::one_line(message), MAX_ERROR_CHARS, "…") },
        }))
    }
}

/// Longest error shown under a modal input.
const MAX_ERROR_CHARS: usize = 300;

/// How long [`SlackInteractions::handle_async`](super::SlackInteractions::handle_async) waits for an edit's decision before it answers
/// Slack (which allows 3 seconds); past it the modal closes and the reviewer is told in an
/// ephemeral reply instead.
const SUBMISSION_WAIT: std::time::Duration = std::time::Duration::from_millis(2500);

/// What to answer Slack with: now, or once the work started on the interaction says.
pub(crate) enum Answer {
    /// Known at once.
    Now(Ack),
    /// Known when the background work sends it (an edit's decision); whoever stops waiting
    /// drops the receiver, and the work then tells the reviewer another way.
    Later(tokio::sync::oneshot::Receiver<Ack>),
}

impl Answer {
    /// The answer without waiting: a later one is left to the background work.
    pub(super) fn now(self) -> Ack {
        match self {
            Answer::Now(ack) => ack,
            Answer::Later(_) => Ack::Empty,
        }
    }

    /// The answer, waiting at most [`SUBMISSION_WAIT`] for a later one.
    pub(super) async fn wait(self) -> Ack {
        match self {
            Answer::Now(ack) => ack,
            Answer::Later(mut rx) => match tokio::time::timeout(SUBMISSION_WAIT, &mut rx).await {
                Ok(Ok(ack)) => ack,
                Ok(Err(_)) => Ack::Empty,
                Err(_) => {
                    // Sent just as the wait ended: still answer with it.
                    rx.close();
                    rx.try_recv().unwrap_or(Ack::Empty)
                }
            },
        }
    }
}

pub(super) fn ack_response(ack: Ack) -> http::Response<Bytes> {
    match ack {
        Ack::Empty => http::Response::new(Bytes::new()),
        Ack::Json(value) => {
            let mut response = http::Response::new(Bytes::from(value.to_string()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modal_metadata_is_sealed() {
        let secret = SigningSecret::new("s3cret").expect("secret");
        let meta = ModalMetadata {
            request_id: RequestId::new(),
            digest: Digest([7; 32]),
            verdict: Verdict::Deny,
            user: "U1".into(),
            reason_required: true,
            response_url: Some("https://hooks.slack.com/actions/T1/1/x".into()),
            edit: false,
        };
        let sealed = meta.seal(&secret);
        let opened = ModalMetadata::open(&sealed, &secret).expect("opens");
        assert_eq!(opened.user, "U1");
        assert_eq!(opened.verdict, Verdict::Deny);
        // Any change breaks the seal: flip deny to approve.
        let forged = sealed.replacen("\"deny\"", "\"approve\"", 1);
        assert_ne!(forged, sealed);
        assert!(ModalMetadata::open(&forged, &secret).is_none());
        let other = SigningSecret::new("other").expect("secret");
        assert!(ModalMetadata::open(&sealed, &other).is_none());
        assert!(ModalMetadata::open("garbage", &secret).is_none());
        // Oversized response URLs are dropped rather than breaking Slack's 3000-char limit.
        let long = ModalMetadata {
            response_url: Some(format!("https://hooks.slack.com/{}", "x".repeat(4000))),
            ..meta
        };
        let sealed = long.seal(&secret);
        assert!(sealed.len() <= MAX_METADATA_CHARS);
        assert!(
            ModalMetadata::open(&sealed, &secret)
                .expect("opens")
                .response_url
                .is_none()
        );
    }
}
