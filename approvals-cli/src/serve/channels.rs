//! The configured review channels (Slack, Teams, a signed webhook): their approvers, their
//! inbound endpoints, and a record of each one's last delivery for `/healthz`.

use std::sync::{Arc, Mutex};

use approvals_core::{
    Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, RequestRecord,
    StaticIdentityResolver,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::config::{ConfigError, Reviewers, SlackConfig, TeamsConfig, WebhookConfig};

/// Longest error text kept for `/healthz`.
const MAX_ERROR_CHARS: usize = 300;

/// What `/healthz` says about one channel.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ChannelStatus {
    pub(crate) configured: bool,
    /// `http` (an endpoint on this server), `socket_mode`, or `outbound` (webhook).
    pub(crate) inbound: &'static str,
    pub(crate) last_delivery_at: Option<DateTime<Utc>>,
    pub(crate) last_error_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
}

impl ChannelStatus {
    /// Healthy unless the latest delivery attempt failed.
    pub(crate) fn ok(&self) -> bool {
        match (self.last_error_at, self.last_delivery_at) {
            (None, _) => true,
            (Some(error), Some(delivered)) => delivered > error,
            (Some(_), None) => false,
        }
    }
}

/// A channel's delivery record, shared between its [`Monitored`] approver and `/healthz`.
#[derive(Debug, Default)]
pub(crate) struct ChannelHealth {
    status: Mutex<ChannelStatus>,
}

impl ChannelHealth {
    fn new(inbound: &'static str) -> Arc<Self> {
        Arc::new(ChannelHealth {
            status: Mutex::new(ChannelStatus {
                configured: true,
                inbound,
                ..ChannelStatus::default()
            }),
        })
    }

    pub(crate) fn status(&self) -> ChannelStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record<T>(&self, result: &Result<T, ApproverError>) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Utc::now();
        match result {
            Ok(_) => status.last_delivery_at = Some(now),
            Err(e) => {
                status.last_error_at = Some(now);
                status.last_error = Some(e.message.chars().take(MAX_ERROR_CHARS).collect());
            }
        }
    }
}

/// An approver whose deliveries are recorded in a [`ChannelHealth`].
struct Monitored<A> {
    inner: A,
    health: Arc<ChannelHealth>,
}

#[async_trait]
impl<A: Approver> Approver for Monitored<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        let result = self.inner.dispatch(request, reason, decisions).await;
        self.health.record(&result);
        result
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        let result = self.inner.resolved(request).await;
        // Updating nothing (the request never reached this channel) proves nothing about it.
        let name = self.inner.name();
        if result.is_err() || request.deliveries.iter().any(|d| d.channel == name) {
            self.health.record(&result);
        }
        result
    }
}

/// One configured channel: its approver (for the gate) and health record.
pub(crate) struct Channel {
    pub(crate) name: &'static str,
    pub(crate) approver: Arc<dyn Approver>,
    pub(crate) health: Arc<ChannelHealth>,
}

fn monitored<A: Approver>(name: &'static str, inner: A, inbound: &'static str) -> Channel {
    let health = ChannelHealth::new(inbound);
    Channel {
        name,
        approver: Arc::new(Monitored {
            inner,
            health: health.clone(),
        }),
        health,
    }
}

fn resolver(
    channel: &str,
    reviewers: &Reviewers,
    id: impl Fn(&str) -> Option<String>,
) -> Result<StaticIdentityResolver, ConfigError> {
    let mut ids = StaticIdentityResolver::new();
    for (user, principal) in &reviewers.entries {
        let refused = |message: String| ConfigError {
            at: reviewers.at.clone(),
            field: format!("{}.{user}", reviewers.field),
            message,
        };
        let external = id(user).ok_or_else(|| refused("not a valid user id".into()))?;
        ids = ids
            .try_map(channel, external, principal.clone())
            .map_err(|e| refused(format!("refused: {e}")))?;
    }
    Ok(ids)
}

fn section_error(at: &super::config::Origin, field: &str, message: String) -> ConfigError {
    ConfigError {
        at: at.clone(),
        field: field.to_owned(),
        message,
    }
}

/// The Slack channel, before the gate exists.
pub(crate) struct SlackParts {
    client: approvals_slack::SlackClient,
    approver: approvals_slack::SlackApprover,
    pub(crate) channel: Channel,
}

/// Builds the Slack client and approver; messages link the console under `public_url`.
pub(crate) fn slack(
    config: &SlackConfig,
    public_url: Option<&url::Url>,
) -> Result<SlackParts, ConfigError> {
    let token = approvals_slack::Token::new(config.bot_token.expose());
    let mut client = approvals_slack::SlackClient::new(token)
        .map_err(|e| section_error(&config.at, "channels.slack", e.to_string()))?;
    if let Some(base) = &config.api_base_url {
        client = client
            .with_base_url(base.value.trim())
            .map_err(|e| base.error(e.to_string()))?;
    }
    if let Some(prefix) = &config.response_url_prefix {
        client = client.allow_response_url_prefix(prefix.clone());
    }
    let mut approver = approvals_slack::SlackApprover::new(client.clone(), config.channel.clone());
    if let Some(url) = public_url {
        approver = approver.console_url(url.clone());
    }
    let inbound = if config.app_token.is_some() {
        "socket_mode"
    } else {
        "http"
    };
    let channel = monitored("slack", approver.clone(), inbound);
    Ok(SlackParts {
        client,
        approver,
        channel,
    })
}

/// How Slack clicks arrive.
pub(crate) enum SlackInbound {
    /// At this path on the server.
    Http(String, axum::Router),
    /// Over a Socket Mode connection this process keeps open.
    Socket(approvals_slack::SocketModeHandle),
}

/// The Slack interactivity handler, once the gate exists.
pub(crate) fn slack_inbound(
    config: &SlackConfig,
    parts: SlackParts,
    gate: &Gate,
) -> Result<SlackInbound, ConfigError> {
    let secret = approvals_slack::SigningSecret::new(config.signing_secret.expose())
        .map_err(|e| section_error(&config.at, "channels.slack.signing_secret", e.to_string()))?;
    let ids = resolver(approvals_slack::CHANNEL, &config.reviewers, |u| {
        Some(u.to_owned())
    })?;
    let interactions =
        approvals_slack::SlackInteractions::builder(gate.clone(), parts.client.clone(), secret)
            .team_id(config.team_id.clone())
            .app_id(config.app_id.clone())
            .identities(ids)
            .approver(parts.approver)
            .build()
            .map_err(|e| section_error(&config.at, "channels.slack", e.to_string()))?;
    match &config.app_token {
        Some(app_token) => {
            let socket = approvals_slack::SocketMode::new(
                parts.client,
                approvals_slack::Token::new(app_token.expose()),
                interactions,
            )
            .spawn()
            .map_err(|e| section_error(&config.at, "channels.slack.app_token", e.to_string()))?;
            Ok(SlackInbound::Socket(socket))
        }
        None => Ok(SlackInbound::Http(
            config.interactivity_path.clone(),
            interactions.router(&config.interactivity_path),
        )),
    }
}

/// The Teams channel, before the gate exists.
pub(crate) struct TeamsParts {
    approver: approvals_teams::TeamsApprover,
    pub(crate) channel: Channel,
}

/// Builds the Teams token provider, connector and approver; cards link the console under
/// `public_url`.
pub(crate) fn teams(
    config: &TeamsConfig,
    public_url: Option<&url::Url>,
) -> Result<TeamsParts, ConfigError> {
    let err = |field: &str, e: String| section_error(&config.at, field, e);
    let mut token_config = approvals_teams::TokenConfig::new(
        config.app_id.clone(),
        approvals_teams::ClientSecret::new(config.app_secret.expose()),
    );
    if let Some(url) = &config.token_url {
        token_config = token_config.with_token_url(url.clone());
    }
    let tokens = approvals_teams::TokenProvider::new(token_config)
        .map_err(|e| err("channels.teams.token_url", e.to_string()))?;
    let connector = approvals_teams::ConnectorClient::new(tokens)
        .map_err(|e| err("channels.teams", e.to_string()))?;
    let mut approver = approvals_teams::TeamsApprover::new(
        connector,
        config.service_url.clone(),
        config.conversation_id.clone(),
    );
    if let Some(url) = public_url {
        approver = approver.with_console_url(url.clone());
    }
    let channel = monitored("teams", approver.clone(), "http");
    Ok(TeamsParts { approver, channel })
}

/// The Teams messaging endpoint, once the gate exists.
pub(crate) fn teams_inbound(
    config: &TeamsConfig,
    parts: TeamsParts,
    gate: &Gate,
) -> Result<axum::Router, ConfigError> {
    let err = |field: &str, e: String| section_error(&config.at, field, e);
    let tenant = config.tenant_id.clone();
    let ids = resolver(approvals_teams::CHANNEL, &config.reviewers, |aad| {
        approvals_teams::external_id(&tenant, aad)
    })?;
    let mut auth = approvals_teams::AuthConfig::new(config.app_id.clone());
    if let Some(url) = &config.openid_metadata_url {
        auth = auth.with_openid_metadata_url(url.clone());
    }
    let authenticator = approvals_teams::BotAuthenticator::new(auth)
        .map_err(|e| err("channels.teams.openid_metadata_url", e.to_string()))?;
    let handler = approvals_teams::TeamsInteractions::builder(gate.clone(), ids)
        .authenticator(authenticator)
        .allow_tenant(config.tenant_id.clone())
        .approver(parts.approver)
        .build()
        .map_err(|e| err("channels.teams", e.to_string()))?;
    Ok(handler.router(&config.messaging_path))
}

/// The signed webhook channel.
pub(crate) fn webhook(
    config: &WebhookConfig,
    public_url: Option<&url::Url>,
) -> Result<Channel, ConfigError> {
    let secret =
        approvals_http::WebhookSecret::parse(config.secret.expose()).map_err(|e| ConfigError {
            at: config.url.at.clone(),
            field: "channels.webhook.secret".into(),
            message: e.to_string(),
        })?;
    let mut approver = approvals_http::WebhookApprover::new(config.url.value.trim(), secret)
        .map_err(|e| config.url.error(e.to_string()))?;
    if let Some(url) = public_url {
        approver = approver.public_url(url.clone());
    }
    Ok(monitored("webhook", approver, "outbound"))
}
