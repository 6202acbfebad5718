//! [`SlackApprover`]: posts pending requests to a Slack conversation and keeps the message in
//! step with the request until it ends.

use std::sync::Arc;

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, RequestRecord, RequestState,
};
use async_trait::async_trait;
use serde_json::json;

use crate::api::{MessageRef, SlackClient, SlackError};
use crate::blocks::{Message, request_message_linked};

/// The channel name recorded in audit events, reviews and deliveries.
pub const CHANNEL: &str = "slack";

/// Posts each pending request to one Slack conversation with `chat.postMessage` (Block Kit,
/// Approve and Deny buttons) and rewrites it with `chat.update` on every later change: quorum
/// progress, approved by whom, denied by whom and why, expired, cancelled, running, executed,
/// failed, lapsed. The message reference is stored with the request (as a
/// [`Delivery`]), so updates work after a restart.
///
/// A failed delivery is returned to the gate, which audits it (`dispatch_failed`) and cancels
/// the request when no channel delivered it: a delivery failure never approves anything.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_slack::{SlackApprover, SlackClient, Token};
/// let client = SlackClient::new(Token::new(std::env::var("SLACK_BOT_TOKEN")?))?;
/// let approver = SlackApprover::new(client, "C0123456789");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SlackApprover {
    client: SlackClient,
    channel: String,
    console: Option<url::Url>,
}

impl SlackApprover {
    /// Posts to `channel`, a conversation id the bot is a member of (`C...`, `G...`), or a
    /// user id for a direct message.
    pub fn new(client: SlackClient, channel: impl Into<String>) -> Self {
        SlackApprover {
            client,
            channel: channel.into(),
            console: None,
        }
    }

    /// Links each message to the request's page in the review console served at `url` (the
    /// server's public URL), where reviewers see a long preview and the context whole.
    ///
    /// Needed to approve requests of rules with `step_up` from Slack: an approval of those
    /// needs a proof (a passkey) that only the console takes, so their message has no Approve
    /// button but an "Approve with passkey" link to the request's console page, and Deny.
    /// Without a console URL such a message only says to approve in the console (and a warning
    /// is logged when one is posted).
    pub fn console_url(mut self, url: url::Url) -> Self {
        self.console = Some(url);
        self
    }

    /// The Web API client.
    pub fn client(&self) -> &SlackClient {
        &self.client
    }

    /// The conversation requests are posted to.
    pub fn conversation(&self) -> &str {
        &self.channel
    }

    /// The Slack messages recorded for `record`.
    pub fn messages(record: &RequestRecord) -> Vec<MessageRef> {
        record
            .deliveries
            .iter()
            .filter(|d| d.channel == CHANNEL)
            .filter_map(|d| serde_json::from_value(d.reference.clone()).ok())
            .collect()
    }

    /// The page of request `id` in the review console, when a console URL is configured.
    pub fn console_page(&self, id: approvals_core::RequestId) -> Option<url::Url> {
        self.console
            .as_ref()
            .and_then(|base| crate::blocks::console_page(base, id))
    }

    /// The message for `record` in its current state, linked to the console when one is
    /// configured.
    pub fn message(&self, record: &RequestRecord) -> Message {
        request_message_linked(record, self.console.as_ref())
    }

    /// Rewrites every Slack message of `record` to show its current state (used on
    /// resolution, and by the interaction handler after each approval towards a quorum).
    pub async fn refresh(&self, record: &RequestRecord) -> Result<(), SlackError> {
        let message = self.message(record);
        let mut first_error = None;
        for target in Self::messages(record) {
            if let Err(e) = self
                .client
                .update_message(&target, &message.text, &message.blocks)
                .await
            {
                tracing::warn!(request = %record.id, error = %e, "could not update the Slack message");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The message about `request` that this app posted before, found by the request id in
    /// its metadata. Only this app's own messages count (by `bot_id`, from `auth.test`):
    /// another app in the channel cannot pass a message of its own off as the request's.
    async fn find_earlier_post(
        &self,
        request: &RequestRecord,
        id: &str,
    ) -> Result<Option<MessageRef>, SlackError> {
        let bot_id = self.client.bot_id().await?;
        self.client
            .find_message(
                &self.channel,
                // Ten minutes of margin for a difference between this host's clock and
                // Slack's.
                &slack_ts(request.created_at - chrono::TimeDelta::minutes(10)),
                &bot_id,
                METADATA_EVENT,
                "request_id",
                id,
            )
            .await
    }
}

/// The `event_type` of the metadata on every request message: its payload names the request
/// (`request_id`), so a redelivery can find a message an earlier process posted.
pub const METADATA_EVENT: &str = "approval_request";

/// The delivery record of a posted message.
fn delivery(message: &MessageRef) -> Result<Delivery, ApproverError> {
    let reference = serde_json::to_value(message)
        .map_err(|e| ApproverError::new(CHANNEL, format!("cannot record the message: {e}")))?;
    Ok(Delivery {
        channel: CHANNEL.into(),
        reference,
    })
}

impl SlackApprover {
    /// Replies in the thread of each of the request's messages that it is still waiting: a
    /// reminder the reviewers see under the message they were asked in.
    async fn remind(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        let messages = Self::messages(request);
        if messages.is_empty() {
            return Err(ApproverError::new(
                CHANNEL,
                "no Slack message of this request is recorded to remind in",
            ));
        }
        let text = crate::blocks::reminder_text(request);
        for message in messages {
            self.client
                .reply_in_thread(&message, &text)
                .await
                .map_err(approver_error)?;
        }
        Ok(())
    }
}

/// A Slack timestamp (`seconds.micros`) for a time.
fn slack_ts(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("{}.{:06}", at.timestamp(), at.timestamp_subsec_micros())
}

fn approver_error(e: SlackError) -> ApproverError {
    let retryable = e.is_retryable();
    let error = ApproverError::new(CHANNEL, e.to_string());
    if retryable { error.retryable() } else { error }
}

#[async_trait]
impl Approver for SlackApprover {
    fn name(&self) -> &str {
        CHANNEL
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        if request.state != RequestState::Pending {
            return Ok(None);
        }
        if reason == DispatchReason::Reminder {
            return self.remind(request).await.map(|()| None);
        }
        let id = request.id.to_string();
        // A redelivery may follow a post that Slack accepted just before its process died
        // (chat.postMessage has no idempotency key): look for that message by its metadata
        // first. If the look-up fails (no history scope, a channel name instead of an id),
        // post again: a second message is better than none.
        if reason == DispatchReason::Redelivery
            && let Ok(Some(earlier)) = self.find_earlier_post(request, &id).await
        {
            return delivery(&earlier).map(Some);
        }
        if self.console.is_none()
            && let Some(method) = approvals_core::lifecycle::needs_step_up(request)
        {
            tracing::warn!(
                request = %request.id,
                "each approval of this request needs a {method} confirmation in the review console, \
                 and this Slack approver has no console URL to link: its reviewers can only deny \
                 in Slack (set SlackApprover::console_url)"
            );
        }
        // On escalation a new message goes out (reviewers newly allowed are notified); the
        // old one stays recorded and is updated too.
        let message = self.message(request);
        let metadata = json!({
            "event_type": METADATA_EVENT,
            "event_payload": { "request_id": id },
        });
        let posted = self
            .client
            .post_message_with_metadata(&self.channel, &message.text, &message.blocks, &metadata)
            .await
            .map_err(approver_error)?;
        delivery(&posted).map(Some)
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        self.refresh(request).await.map_err(approver_error)
    }
}
