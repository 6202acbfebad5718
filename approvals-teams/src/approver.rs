//! [`TeamsApprover`]: posts pending requests to a Teams conversation as an Adaptive Card and
//! replaces the card whenever the request changes, until it ends.

use std::sync::Arc;

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, RequestRecord, RequestState,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::activity::OutgoingActivity;
use crate::card::{CardOptions, MAX_REFRESH_USER_IDS, preview_text, request_card};
use crate::connector::{ConnectorClient, ConnectorError};
use crate::graph::ConversationHistory;

/// The channel name recorded in audit events, reviews and deliveries, and passed to the
/// [`IdentityResolver`](approvals_core::IdentityResolver).
pub const CHANNEL: &str = "teams";

/// Where a card was posted: stored with the request (as a [`Delivery`] reference) so the card
/// can be replaced after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRef {
    /// The Bot Connector `serviceUrl` the card was posted through.
    pub service_url: String,
    /// The conversation holding the card.
    pub conversation_id: String,
    /// The activity id of the message holding the card (`None` if the service did not return
    /// one; the card then cannot be replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<String>,
}

/// Posts each pending request to one Teams conversation (a channel, group chat or personal
/// chat the bot is installed in) through the Bot Connector, as a proactive message with an
/// Adaptive Card, and replaces the card (`PUT` on the activity) on every later change: quorum
/// progress, approved by whom, denied by whom and why, expired, cancelled, running, executed,
/// failed, lapsed.
///
/// The bot's token comes from the [`ConnectorClient`]'s
/// [`TokenProvider`](crate::token::TokenProvider) (client credentials, cached until shortly
/// before it expires). A failed delivery is returned to the gate, which audits it
/// (`dispatch_failed`) and cancels the request when no channel delivered it.
///
/// The Bot Connector cannot list a conversation's messages, so on a
/// [`DispatchReason::Redelivery`] (the request's delivery was never recorded, perhaps because
/// the process that posted its card died first) the approver can only find that card through
/// Microsoft Graph: give it a [`ConversationHistory`] with
/// [`with_history`](TeamsApprover::with_history). Without one, or when the look-up fails, it
/// posts the card again: a second card is better than none.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_teams::{ClientSecret, ConnectorClient, TeamsApprover, TokenConfig, TokenProvider};
/// let tokens = TokenProvider::new(TokenConfig::new(
///     std::env::var("TEAMS_APP_ID")?,
///     ClientSecret::new(std::env::var("TEAMS_APP_SECRET")?),
/// ))?;
/// let approver = TeamsApprover::new(
///     ConnectorClient::new(tokens)?,
///     "https://smba.trafficmanager.net/emea/",
///     "19:0123456789abcdef@thread.tacv2",
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TeamsApprover {
    connector: ConnectorClient,
    service_url: String,
    conversation_id: String,
    options: CardOptions,
    history: Option<ConversationHistory>,
}

impl TeamsApprover {
    /// Posts to `conversation_id` through `service_url` (both as Teams reports them in the
    /// activities it sends the bot, for example when the bot is installed in a team).
    pub fn new(
        connector: ConnectorClient,
        service_url: impl Into<String>,
        conversation_id: impl Into<String>,
    ) -> Self {
        TeamsApprover {
            connector,
            service_url: service_url.into(),
            conversation_id: conversation_id.into(),
            options: CardOptions::default(),
            history: None,
        }
    }

    /// Looks for a card posted earlier before posting one on a redelivery (see the type's
    /// docs). `history` must read this approver's conversation.
    pub fn with_history(mut self, history: ConversationHistory) -> Self {
        self.history = Some(history);
        self
    }

    /// Teams user ids (`29:...`) whose clients refresh the card automatically when shown (at
    /// most 60). Refreshes only ever show the current card; they never decide anything.
    pub fn with_refresh_user_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.refresh_user_ids = ids
            .into_iter()
            .map(Into::into)
            .take(MAX_REFRESH_USER_IDS)
            .collect();
        self
    }

    /// Links each card to the request's page in the review console served at `url` (the
    /// server's public URL), where reviewers see a long preview and the context whole.
    ///
    /// Needed to approve requests of rules with `step_up` from Teams: an approval of those
    /// needs a proof (a passkey) that only the console takes, so their card has no Approve
    /// button but an "Approve with passkey" `Action.OpenUrl` to the request's console page,
    /// and Deny. Without a console URL such a card only says to approve in the console (and a
    /// warning is logged when one is posted).
    pub fn with_console_url(mut self, url: url::Url) -> Self {
        self.options.console_url = Some(url);
        self
    }

    /// The Bot Connector client.
    pub fn connector(&self) -> &ConnectorClient {
        &self.connector
    }

    /// The conversation requests are posted to.
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// The `serviceUrl` requests are posted through.
    pub fn service_url(&self) -> &str {
        &self.service_url
    }

    /// The card rendering options.
    pub fn card_options(&self) -> &CardOptions {
        &self.options
    }

    /// The Teams cards recorded for `record`.
    pub fn cards(record: &RequestRecord) -> Vec<CardRef> {
        record
            .deliveries
            .iter()
            .filter(|d| d.channel == CHANNEL)
            .filter_map(|d| serde_json::from_value(d.reference.clone()).ok())
            .collect()
    }

    /// The message for `record` in its current state.
    pub fn message(&self, record: &RequestRecord) -> OutgoingActivity {
        OutgoingActivity::adaptive_card(request_card(record, &self.options, None))
            .with_summary(preview_text(record))
    }

    /// Replaces every Teams card of `record` with one showing its current state (used on
    /// resolution, and by the interaction handler after each approval towards a quorum).
    pub async fn refresh(&self, record: &RequestRecord) -> Result<(), ConnectorError> {
        let message = self.message(record);
        let mut first_error = None;
        for card in Self::cards(record) {
            let Some(activity_id) = card.activity_id.as_deref() else {
                continue;
            };
            let update = message.clone().with_id(activity_id);
            if let Err(e) = self
                .connector
                .update_activity(
                    &card.service_url,
                    &card.conversation_id,
                    activity_id,
                    &update,
                )
                .await
            {
                tracing::warn!(request = %record.id, error = %e, "could not update the Teams card");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The card about `request` this bot posted to the conversation before, found through
    /// Microsoft Graph. `None` without a history, or when the look-up fails (logged).
    async fn find_earlier_card(&self, request: &RequestRecord) -> Option<String> {
        let history = self.history.as_ref()?;
        // Ten minutes of margin for a difference between this host's clock and Teams'.
        let since = request.created_at - chrono::TimeDelta::minutes(10);
        let app_id = &self.connector.tokens().config().app_id;
        match history.find_card(app_id, request.id, since).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(request = %request.id, error = %e, "could not look for an earlier Teams card; posting it again");
                None
            }
        }
    }

    /// The delivery record of a card in this approver's conversation.
    fn delivery(&self, activity_id: Option<String>) -> Result<Delivery, ApproverError> {
        let reference = serde_json::to_value(CardRef {
            service_url: self.service_url.clone(),
            conversation_id: self.conversation_id.clone(),
            activity_id,
        })
        .map_err(|e| ApproverError::new(CHANNEL, format!("cannot record the card: {e}")))?;
        Ok(Delivery {
            channel: CHANNEL.into(),
            reference,
        })
    }
}

fn approver_error(e: ConnectorError) -> ApproverError {
    let retryable = e.is_retryable();
    let error = ApproverError::new(CHANNEL, e.to_string());
    if retryable { error.retryable() } else { error }
}

#[async_trait]
impl Approver for TeamsApprover {
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
        if reason == DispatchReason::Redelivery
            && let Some(earlier) = self.find_earlier_card(request).await
        {
            return self.delivery(Some(earlier)).map(Some);
        }
        // A reminder updates the cards already posted (their title says it is a reminder,
        // with the expiry) instead of posting another card to act on.
        if reason == DispatchReason::Reminder {
            // The reminder is the card updated in place: without a card, nobody was reminded,
            // and the gate must not record that somebody was.
            if !Self::cards(request).iter().any(|c| c.activity_id.is_some()) {
                return Err(ApproverError::new(
                    CHANNEL,
                    "no Teams card of this request is recorded to remind in",
                ));
            }
            return self
                .refresh(request)
                .await
                .map(|()| None)
                .map_err(approver_error);
        }
        if self.options.console_url.is_none()
            && let Some(method) = approvals_core::lifecycle::needs_step_up(request)
        {
            tracing::warn!(
                request = %request.id,
                "each approval of this request needs a {method} confirmation in the review console, \
                 and this Teams approver has no console URL to link: its reviewers can only deny \
                 in Teams (set TeamsApprover::with_console_url)"
            );
        }
        // On escalation a new card goes out (newly allowed reviewers are notified); the old
        // one stays recorded and is updated too.
        let posted = self
            .connector
            .send_to_conversation(
                &self.service_url,
                &self.conversation_id,
                &self.message(request),
            )
            .await
            .map_err(approver_error)?;
        if posted.id.is_none() {
            tracing::warn!(request = %request.id, "the Bot Connector returned no activity id; the card cannot be updated");
        }
        self.delivery(posted.id).map(Some)
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        self.refresh(request).await.map_err(approver_error)
    }
}
