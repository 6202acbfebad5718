//! Reading the approval conversation's messages through Microsoft Graph, so a redelivery can
//! find the card an earlier process posted before it died (the Bot Connector cannot list the
//! messages of a Teams conversation).
//!
//! [`ConversationHistory`] lists the conversation's messages with the bot's own app
//! credentials (client credentials for `https://graph.microsoft.com/.default`) and finds the
//! newest Adaptive Card the bot posted for a request. The least permission it needs is
//! resource-specific consent granted with the app's installation: `ChannelMessage.Read.Group`
//! for a channel of a team, `ChatMessage.Read.Chat` for a group chat (declared in the Teams
//! app manifest under `authorization.permissions.resourceSpecific`).
//!
//! ```no_run
//! # fn demo(approver: approvals_teams::TeamsApprover) -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_teams::graph::{ConversationHistory, GraphConversation};
//! use approvals_teams::{ClientSecret, TokenProvider};
//!
//! let tokens = TokenProvider::new(ConversationHistory::token_config(
//!     std::env::var("TEAMS_APP_ID")?,
//!     ClientSecret::new(std::env::var("TEAMS_APP_SECRET")?),
//!     std::env::var("TEAMS_TENANT_ID")?,
//! ))?;
//! let history = ConversationHistory::new(
//!     tokens,
//!     GraphConversation::Channel {
//!         team_id: std::env::var("TEAMS_TEAM_ID")?, // the team's Microsoft 365 group id
//!         channel_id: "19:0123456789abcdef@thread.tacv2".into(),
//!     },
//! )?;
//! let approver = approver.with_history(history);
//! # Ok(()) }
//! ```

use approvals_core::RequestId;
use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use crate::activity::ADAPTIVE_CARD_CONTENT_TYPE;
use crate::token::{ClientSecret, TokenConfig, TokenError, TokenProvider};
use crate::transport::{self, DEFAULT_HTTP_TIMEOUT, TransportError};

/// The scope of a Microsoft Graph application token.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Microsoft Graph v1.0.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0/";
/// Pages of 50 messages read at most per look-up (default).
pub const DEFAULT_MAX_PAGES: usize = 4;
/// Messages per page (Graph's largest `$top` for channel and chat messages).
const PAGE_SIZE: &str = "50";
/// Largest page read, in bytes (50 messages with cards of up to 28 KB each).
const MAX_PAGE_LEN: usize = 4 * 1024 * 1024;
const MAX_ERROR_BODY_IN_MESSAGE: usize = 512;

/// The conversation the approver posts to, as Microsoft Graph names it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphConversation {
    /// A channel of a team: `GET /teams/{team_id}/channels/{channel_id}/messages`.
    Channel {
        /// The team's id (its Microsoft 365 group id, a GUID).
        team_id: String,
        /// The channel id (`19:...@thread.tacv2`, the approver's conversation id).
        channel_id: String,
    },
    /// A group chat: `GET /chats/{chat_id}/messages`.
    Chat {
        /// The chat id (`19:...@thread.v2`, the approver's conversation id).
        chat_id: String,
    },
}

/// Reading the conversation's messages failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The configuration is unusable (bad Graph URL, TLS setup).
    #[error("Microsoft Graph client misconfigured: {0}")]
    Config(#[from] TransportError),
    /// No Graph token could be obtained.
    #[error("cannot get a Microsoft Graph access token: {0}")]
    Token(#[from] TokenError),
    /// Graph could not be reached.
    #[error("request to Microsoft Graph at {url} failed: {source}")]
    Transport {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Graph refused the request.
    #[error(
        "Microsoft Graph answered {status}: {body}; check that the app has the \
         ChannelMessage.Read.Group (channel) or ChatMessage.Read.Chat (chat) permission and \
         the team or chat id is right"
    )]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// A success status with a body that is not a page of messages.
    #[error("Microsoft Graph answered with an unexpected body: {0}")]
    Malformed(String),
}

/// Finds the bot's earlier cards in the approval conversation through Microsoft Graph. Cheap
/// to clone. See the [module docs](self) for the permission it needs.
#[derive(Clone, Debug)]
pub struct ConversationHistory {
    http: reqwest::Client,
    tokens: TokenProvider,
    base: Url,
    conversation: GraphConversation,
    max_pages: usize,
}

impl ConversationHistory {
    /// Token settings for Microsoft Graph with the bot's app credentials, from the tenant's
    /// own token endpoint (an application token for Graph is issued per tenant).
    pub fn token_config(
        app_id: impl Into<String>,
        app_secret: ClientSecret,
        tenant_id: impl AsRef<str>,
    ) -> TokenConfig {
        let mut config = TokenConfig::new(app_id, app_secret).with_token_url(format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            tenant_id.as_ref().trim()
        ));
        config.scope = GRAPH_SCOPE.to_owned();
        config
    }

    /// Reads `conversation` with tokens from `tokens` (see
    /// [`token_config`](Self::token_config)), at [`DEFAULT_GRAPH_URL`].
    pub fn new(
        tokens: TokenProvider,
        conversation: GraphConversation,
    ) -> Result<Self, HistoryError> {
        Ok(ConversationHistory {
            http: transport::build_http_client(DEFAULT_HTTP_TIMEOUT)?,
            tokens,
            base: transport::endpoint_url("Microsoft Graph", DEFAULT_GRAPH_URL)?,
            conversation,
            max_pages: DEFAULT_MAX_PAGES,
        })
    }

    /// Uses another Graph base URL (a national cloud, or a loopback fake in tests). Must be
    /// https, or http to a loopback address.
    pub fn with_base_url(mut self, base: &str) -> Result<Self, HistoryError> {
        let mut url = transport::endpoint_url("Microsoft Graph", base)?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        self.base = url;
        Ok(self)
    }

    /// Uses this HTTP client (shares its connection pool; keep redirects disabled).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Reads at most `pages` pages of 50 messages per look-up (default
    /// [`DEFAULT_MAX_PAGES`]; at least 1).
    pub fn with_max_pages(mut self, pages: usize) -> Self {
        self.max_pages = pages.max(1);
        self
    }

    /// The conversation read.
    pub fn conversation(&self) -> &GraphConversation {
        &self.conversation
    }

    /// The id of the newest message the bot `app_id` posted since `since` whose Adaptive
    /// Card is about `request` (its buttons or its request fact name it), or `None`. Only
    /// the bot's own messages count: a message posted by anyone else is never taken for the
    /// request's card, whatever it contains.
    pub async fn find_card(
        &self,
        app_id: &str,
        request: RequestId,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, HistoryError> {
        let request = request.to_string();
        let mut next = Some(self.first_page(since)?);
        let mut newest: Option<(DateTime<Utc>, String)> = None;
        for _ in 0..self.max_pages {
            let Some(url) = next.take() else {
                break;
            };
            let page = self.get(&url).await?;
            let messages = page
                .get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| HistoryError::Malformed("no `value` array".into()))?;
            for message in messages {
                let Some(created) = created_at(message).filter(|c| *c >= since) else {
                    continue;
                };
                if is_card_of(message, app_id, &request)
                    && let Some(id) = message.get("id").and_then(Value::as_str)
                    && newest.as_ref().is_none_or(|(at, _)| created > *at)
                {
                    newest = Some((created, id.to_owned()));
                }
            }
            next = page
                .get("@odata.nextLink")
                .and_then(Value::as_str)
                .and_then(|link| self.same_service(link));
        }
        Ok(newest.map(|(_, id)| id))
    }

    fn first_page(&self, since: DateTime<Utc>) -> Result<Url, HistoryError> {
        let mut url = self.base.clone();
        let invalid = || {
            HistoryError::Config(TransportError::InvalidUrl {
                what: "Microsoft Graph",
                url: self.base.to_string(),
                reason: "it cannot be a base URL",
            })
        };
        {
            let mut segments = url.path_segments_mut().map_err(|()| invalid())?;
            segments.pop_if_empty();
            match &self.conversation {
                GraphConversation::Channel {
                    team_id,
                    channel_id,
                } => {
                    segments.extend(["teams", team_id, "channels", channel_id, "messages"]);
                }
                GraphConversation::Chat { chat_id } => {
                    segments.extend(["chats", chat_id, "messages"]);
                }
            }
        }
        let mut query = url.query_pairs_mut();
        query.append_pair("$top", PAGE_SIZE);
        if matches!(self.conversation, GraphConversation::Chat { .. }) {
            // Chats can be filtered and ordered by creation time; channels only page.
            query
                .append_pair("$orderby", "createdDateTime desc")
                .append_pair(
                    "$filter",
                    &format!(
                        "createdDateTime gt {}",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    ),
                );
        }
        drop(query);
        Ok(url)
    }

    /// A `@odata.nextLink` is followed only to the same scheme, host and port as the base:
    /// the bearer token is sent with it.
    fn same_service(&self, link: &str) -> Option<Url> {
        let url = Url::parse(link).ok()?;
        (url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
            && url.path().starts_with(self.base.path()))
        .then_some(url)
    }

    async fn get(&self, url: &Url) -> Result<Value, HistoryError> {
        let token = self.tokens.token().await?;
        let transport_err = |source| HistoryError::Transport {
            url: url.to_string(),
            source,
        };
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(token.secret())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport_err)?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED {
            self.tokens.invalidate(&token).await;
        }
        let body = transport::read_capped(response, MAX_PAGE_LEN)
            .await
            .map_err(|e| match e {
                transport::ReadError::Transport(source) => transport_err(source),
                other => HistoryError::Malformed(other.to_string()),
            })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(HistoryError::Status {
                status: status.as_u16(),
                body: approvals_core::text::truncate(&text, MAX_ERROR_BODY_IN_MESSAGE).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| HistoryError::Malformed(e.to_string()))
    }
}

fn created_at(message: &Value) -> Option<DateTime<Utc>> {
    let raw = message.get("createdDateTime")?.as_str()?;
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a Graph `chatMessage` is a live message from the bot `app_id` carrying an
/// Adaptive Card about `request`.
fn is_card_of(message: &Value, app_id: &str, request: &str) -> bool {
    let from_bot = message
        .pointer("/from/application/id")
        .and_then(Value::as_str)
        .is_some_and(|id| id.trim().eq_ignore_ascii_case(app_id.trim()));
    let live = message.get("deletedDateTime").is_none_or(Value::is_null)
        && message
            .get("messageType")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "message");
    if !from_bot || !live {
        return false;
    }
    message
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| {
            a.get("contentType").and_then(Value::as_str) == Some(ADAPTIVE_CARD_CONTENT_TYPE)
        })
        .filter_map(|a| a.get("content").and_then(Value::as_str))
        .filter_map(|content| serde_json::from_str::<Value>(content).ok())
        .any(|card| card_names(&card, request))
}

/// Whether a card is about `request`: one of its actions carries it as `request_id`, or a
/// fact titled `Request` shows it.
fn card_names(card: &Value, request: &str) -> bool {
    let in_actions = card
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|a| a.pointer("/data/request_id").and_then(Value::as_str) == Some(request));
    let in_facts = card
        .get("body")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("facts").and_then(Value::as_array))
        .flatten()
        .any(|f| {
            f.get("title").and_then(Value::as_str) == Some("Request")
                && f.get("value").and_then(Value::as_str) == Some(request)
        });
    in_actions || in_facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const APP: &str = "5b0e6d2a-0000-4000-8000-00000000a5e7";

    fn message(from_app: &str, card: &Value) -> Value {
        json!({
            "id": "1700000000001",
            "messageType": "message",
            "createdDateTime": "2026-01-01T10:00:00.000Z",
            "deletedDateTime": null,
            "from": {"application": {"id": from_app, "displayName": "Approvals", "applicationIdentityType": "bot"}, "user": null},
            "body": {"contentType": "html", "content": "<attachment id=\"a1\"></attachment>"},
            "attachments": [{"id": "a1", "contentType": ADAPTIVE_CARD_CONTENT_TYPE, "content": card.to_string()}],
        })
    }

    #[test]
    fn only_the_bots_own_live_card_for_the_request_matches() {
        let id = RequestId::new().to_string();
        let pending = json!({"actions": [{"type": "Action.Execute", "data": {"request_id": id}}]});
        let resolved =
            json!({"body": [{"type": "FactSet", "facts": [{"title": "Request", "value": id}]}]});
        assert!(is_card_of(&message(APP, &pending), APP, &id));
        assert!(is_card_of(
            &message(&APP.to_uppercase(), &resolved),
            APP,
            &id
        ));
        // Another app's message naming the request, another request, a deleted message.
        assert!(!is_card_of(&message("another-app", &pending), APP, &id));
        assert!(!is_card_of(
            &message(APP, &pending),
            APP,
            &RequestId::new().to_string()
        ));
        let mut deleted = message(APP, &pending);
        deleted["deletedDateTime"] = json!("2026-01-01T11:00:00Z");
        assert!(!is_card_of(&deleted, APP, &id));
        // A user's message quoting the card's JSON as text.
        let mut user = message(APP, &pending);
        user["from"] = json!({"user": {"id": "u1"}, "application": null});
        assert!(!is_card_of(&user, APP, &id));
    }

    #[test]
    fn next_links_stay_on_the_graph_service() {
        let tokens = TokenProvider::new(ConversationHistory::token_config(
            APP,
            ClientSecret::new("s"),
            "tenant",
        ))
        .map_err(|e| e.to_string());
        let Ok(tokens) = tokens else {
            panic!("token provider: {tokens:?}");
        };
        let history = ConversationHistory::new(
            tokens,
            GraphConversation::Chat {
                chat_id: "19:abc@thread.v2".into(),
            },
        )
        .map_err(|e| e.to_string());
        let Ok(history) = history else {
            panic!("history: {history:?}");
        };
        assert!(
            history
                .same_service("https://graph.microsoft.com/v1.0/chats/x/messages?$skiptoken=1")
                .is_some()
        );
        assert!(
            history
                .same_service("https://evil.example/v1.0/chats/x/messages")
                .is_none()
        );
        assert!(
            history
                .same_service("http://graph.microsoft.com/v1.0/chats/x/messages")
                .is_none()
        );
        let first = history
            .first_page(DateTime::<Utc>::UNIX_EPOCH)
            .map(|u| u.to_string())
            .unwrap_or_default();
        assert!(
            first.starts_with("https://graph.microsoft.com/v1.0/chats/19:abc@thread.v2/messages?%24top=50&%24orderby=createdDateTime+desc&%24filter=createdDateTime+gt+1970-01-01T00%3A00%3A00.000Z"),
            "{first}"
        );
    }
}
