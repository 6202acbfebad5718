//! Bot Connector REST client: posts activities to a conversation and updates them, with the
//! bot's bearer token, retrying throttling (429) and server errors (5xx) with bounded backoff.
//!
//! ```no_run
//! # async fn demo(tokens: approvals_teams::token::TokenProvider) -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_teams::activity::OutgoingActivity;
//! use approvals_teams::connector::ConnectorClient;
//!
//! let connector = ConnectorClient::new(tokens)?;
//! let card = serde_json::json!({"type": "AdaptiveCard", "version": "1.5", "body": []});
//! let sent = connector
//!     .send_to_conversation("https://smba.trafficmanager.net/amer/", "19:abc@thread.tacv2",
//!         &OutgoingActivity::adaptive_card(card.clone()))
//!     .await?;
//! if let Some(id) = sent.id {
//!     connector.update_activity("https://smba.trafficmanager.net/amer/", "19:abc@thread.tacv2",
//!         &id, &OutgoingActivity::adaptive_card(card)).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Only pass a `serviceUrl` that came from an authenticated activity
//! ([`BotAuthenticator::validate`](crate::auth::BotAuthenticator::validate) checked it): the
//! bot's token is sent there.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::token::{TokenError, TokenProvider};
use crate::transport::{self, DEFAULT_HTTP_TIMEOUT, TransportError};

const MAX_RESPONSE_LEN: usize = 256 * 1024;
const MAX_ERROR_BODY_IN_MESSAGE: usize = 512;

/// How failed requests are retried. Build with [`RetryPolicy::default`], then adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total attempts for throttled (429) and server-error (5xx) answers, including the first
    /// (default 4). A 401 is retried once more with a fresh token, outside this count.
    pub max_attempts: u32,
    /// Wait before the first retry when the server gives no `Retry-After`; doubled each retry
    /// (default 500 ms).
    pub initial_backoff: Duration,
    /// Longest computed backoff (default 8 s).
    pub max_backoff: Duration,
    /// Longest wait honoured from a `Retry-After` header (default 30 s); longer values are
    /// capped.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given total attempts and initial backoff, other fields default.
    pub fn new(max_attempts: u32, initial_backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            ..Self::default()
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(16));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The Bot Connector's answer to a send or update: the activity id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ResourceResponse {
    /// The id of the created or updated activity. Teams returns it for sends; it is needed to
    /// update the card later. `None` when the service answered without a body.
    #[serde(default)]
    pub id: Option<String>,
}

/// A Bot Connector call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The client is misconfigured, or the serviceUrl is unacceptable.
    #[error("{0}")]
    Config(#[from] TransportError),
    /// The access token could not be obtained.
    #[error("cannot get a Bot Connector access token: {0}")]
    Token(#[from] TokenError),
    /// The activity could not be serialized.
    #[error("cannot serialize the activity: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The connector could not be reached. Retryable.
    #[error(
        "request to the Bot Connector at {url} failed: {source}; check outbound access to the serviceUrl"
    )]
    Transport {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// 401 even with a freshly fetched token.
    #[error(
        "the Bot Connector rejected the bot's token (401) twice; check that the app id and \
         secret belong to this bot registration and that the token URL matches its tenant"
    )]
    Unauthorized,
    /// 403: the bot may not post in this conversation.
    #[error(
        "the Bot Connector refused access to the conversation (403): {body}; check that the bot \
         is installed in the team or chat and was not removed or blocked"
    )]
    Forbidden {
        /// Start of the response body.
        body: String,
    },
    /// 404: the conversation or the activity does not exist.
    #[error(
        "the Bot Connector does not know this conversation or activity (404): {body}; the \
         conversation may have been deleted or the activity id is wrong"
    )]
    NotFound {
        /// Start of the response body.
        body: String,
    },
    /// Still throttled after every retry. Retryable later.
    #[error("the Bot Connector is throttling the bot (429) after {attempts} attempts; retry later")]
    Throttled {
        /// Attempts made.
        attempts: u32,
        /// The last `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Still failing with 5xx after every retry. Retryable later.
    #[error("the Bot Connector failed with {status} after {attempts} attempts; retry later")]
    Unavailable {
        /// Last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// Another 4xx: the request itself is wrong.
    #[error("the Bot Connector rejected the request ({status}): {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// A success status with a body that is not a resource response.
    #[error("the Bot Connector answered with an unexpected body: {0}")]
    MalformedResponse(String),
}

impl ConnectorError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Transport { .. }
            | ConnectorError::Throttled { .. }
            | ConnectorError::Unavailable { .. } => true,
            ConnectorError::Token(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Client for the Bot Connector REST API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectorClient {
    http: reqwest::Client,
    tokens: TokenProvider,
    retry: RetryPolicy,
}

impl ConnectorClient {
    /// Creates a client with its own HTTP client and the default retry policy.
    pub fn new(tokens: TokenProvider) -> Result<Self, ConnectorError> {
        let http = transport::build_http_client(DEFAULT_HTTP_TIMEOUT)?;
        Ok(Self::with_http_client(tokens, http))
    }

    /// Creates a client that uses the given HTTP client.
    pub fn with_http_client(tokens: TokenProvider, http: reqwest::Client) -> Self {
        Self {
            http,
            tokens,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The token provider in use.
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// Posts an activity to a conversation:
    /// `POST {serviceUrl}/v3/conversations/{conversationId}/activities`.
    pub async fn send_to_conversation<A: Serialize + ?Sized>(
        &self,
        service_url: &str,
        conversation_id: &str,
        activity: &A,
    ) -> Result<ResourceResponse, ConnectorError> {
        let url = activities_url(service_url, conversation_id, None)?;
        self.call(reqwest::Method::POST, url, activity).await
    }

    /// Replaces an activity the bot sent earlier (for instance to show the decision on the
    /// card): `PUT {serviceUrl}/v3/conversations/{conversationId}/activities/{activityId}`.
    pub async fn update_activity<A: Serialize + ?Sized>(
        &self,
        service_url: &str,
        conversation_id: &str,
        activity_id: &str,
        activity: &A,
    ) -> Result<ResourceResponse, ConnectorError> {
        let url = activities_url(service_url, conversation_id, Some(activity_id))?;
        self.call(reqwest::Method::PUT, url, activity).await
    }

    async fn call<A: Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        url: Url,
        activity: &A,
    ) -> Result<ResourceResponse, ConnectorError> {
        let body =
            bytes::Bytes::from(serde_json::to_vec(activity).map_err(ConnectorError::Serialize)?);
        let mut attempts = 0u32;
        let mut refreshed_token = false;
        loop {
            attempts += 1;
            let token = self.tokens.token().await?;
            let sent = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.secret())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                // Only a failed connection is surely not delivered; anything later could
                // duplicate a posted card, so it is reported instead.
                Err(e) if e.is_connect() && attempts < self.retry.max_attempts => {
                    let wait = self.retry.backoff(attempts - 1);
                    tracing::debug!(%url, ?wait, "Bot Connector unreachable, retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(source) => {
                    return Err(ConnectorError::Transport {
                        url: url.to_string(),
                        source,
                    });
                }
            };
            let status = response.status();
            if status.is_success() {
                let body = read_body(response, &url).await?;
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(ResourceResponse::default());
                }
                return serde_json::from_slice(&body)
                    .map_err(|e| ConnectorError::MalformedResponse(e.to_string()));
            }
            if status == http::StatusCode::UNAUTHORIZED && !refreshed_token {
                refreshed_token = true;
                attempts -= 1;
                tracing::debug!(%url, "Bot Connector answered 401, refreshing the token once");
                self.tokens.invalidate(&token).await;
                continue;
            }
            let retry_after = retry_after(response.headers());
            let retryable =
                status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable && attempts < self.retry.max_attempts {
                let wait = match retry_after {
                    Some(d) => d.min(self.retry.max_retry_after),
                    None => self.retry.backoff(attempts - 1),
                };
                tracing::debug!(%url, %status, ?wait, attempts, "Bot Connector asked to retry");
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = error_text(response).await;
            return Err(match status.as_u16() {
                401 => ConnectorError::Unauthorized,
                403 => ConnectorError::Forbidden { body: text },
                404 => ConnectorError::NotFound { body: text },
                429 => ConnectorError::Throttled {
                    attempts,
                    retry_after,
                },
                s if status.is_server_error() => ConnectorError::Unavailable {
                    status: s,
                    attempts,
                },
                s => ConnectorError::Rejected {
                    status: s,
                    body: text,
                },
            });
        }
    }
}

/// Builds `{serviceUrl}/v3/conversations/{id}/activities[/{activityId}]`, percent-encoding the
/// ids as path segments (Teams conversation ids contain `:`, `@` and `;`).
fn activities_url(
    service_url: &str,
    conversation_id: &str,
    activity_id: Option<&str>,
) -> Result<Url, ConnectorError> {
    let invalid = |reason| {
        ConnectorError::Config(TransportError::InvalidUrl {
            what: "conversation",
            url: service_url.to_owned(),
            reason,
        })
    };
    if conversation_id.is_empty() {
        return Err(invalid("the conversation id is empty"));
    }
    if activity_id.is_some_and(str::is_empty) {
        return Err(invalid("the activity id is empty"));
    }
    let mut url = transport::endpoint_url("serviceUrl", service_url)?;
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| invalid("it cannot be a base URL"))?;
        segments
            .pop_if_empty()
            .extend(["v3", "conversations", conversation_id, "activities"]);
        if let Some(id) = activity_id {
            segments.push(id);
        }
    }
    Ok(url)
}

fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    // Delta-seconds only; an HTTP date falls back to the computed backoff.
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

async fn read_body(response: reqwest::Response, url: &Url) -> Result<Vec<u8>, ConnectorError> {
    transport::read_capped(response, MAX_RESPONSE_LEN)
        .await
        .map_err(|e| match e {
            transport::ReadError::Transport(source) => ConnectorError::Transport {
                url: url.to_string(),
                source,
            },
            other => ConnectorError::MalformedResponse(other.to_string()),
        })
}

async fn error_text(response: reqwest::Response) -> String {
    let body = transport::read_capped(response, MAX_RESPONSE_LEN)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let mut end = text.len().min(MAX_ERROR_BODY_IN_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_encoded_urls() {
        let url = activities_url(
            "https://smba.trafficmanager.net/amer/",
            "19:abc@thread.tacv2;messageid=1",
            None,
        )
        .map(|u| u.to_string())
        .unwrap_or_default();
        assert_eq!(
            url,
            "https://smba.trafficmanager.net/amer/v3/conversations/19:abc@thread.tacv2;messageid=1/activities"
        );
        let url = activities_url("https://x.example/base", "a/b?c#d", Some("1/2"))
            .map(|u| u.to_string())
            .unwrap_or_default();
        assert_eq!(
            url,
            "https://x.example/base/v3/conversations/a%2Fb%3Fc%23d/activities/1%2F2"
        );
        assert!(activities_url("http://evil.example/", "c", None).is_err());
        assert!(activities_url("https://x.example/", "", None).is_err());
        assert!(activities_url("https://x.example/", "c", Some("")).is_err());
    }

    #[test]
    fn retry_after_parsing() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("0.5"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0), Duration::from_millis(500));
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(40), Duration::from_secs(8));
    }
}
