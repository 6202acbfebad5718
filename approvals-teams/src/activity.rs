//! Bot Framework activity types: the inbound `invoke` activity named `adaptiveCard/action`
//! (an Adaptive Card `Action.Execute` click), its invoke response, and outgoing card messages.
//!
//! ```
//! use approvals_teams::activity::{Activity, AdaptiveCardInvokeResponse};
//!
//! let body = br#"{
//!   "type": "invoke", "name": "adaptiveCard/action", "id": "f:1", "channelId": "msteams",
//!   "serviceUrl": "https://smba.trafficmanager.net/amer/",
//!   "from": {"id": "29:1", "aadObjectId": "5e1c..."},
//!   "conversation": {"id": "19:abc@thread.tacv2", "tenantId": "t-1"},
//!   "replyToId": "1700000000000",
//!   "value": {"action": {"type": "Action.Execute", "verb": "approve", "data": {"request": "r-1"}},
//!             "trigger": "manual"}
//! }"#;
//! let activity = Activity::from_json(body)?;
//! let click = activity.card_action()?;
//! assert_eq!(click.verb, "approve");
//! assert_eq!(click.tenant_id.as_deref(), Some("t-1"));
//! let response = AdaptiveCardInvokeResponse::card(serde_json::json!({"type": "AdaptiveCard"}));
//! assert_eq!(response.to_http_response().status(), 200);
//! # Ok::<(), approvals_teams::activity::ActivityError>(())
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `type` of invoke activities.
pub const INVOKE_ACTIVITY_TYPE: &str = "invoke";
/// `name` of the invoke activity sent for an Adaptive Card `Action.Execute`.
pub const ADAPTIVE_CARD_ACTION_INVOKE: &str = "adaptiveCard/action";
/// Content type of an Adaptive Card (attachments and invoke responses).
pub const ADAPTIVE_CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// Invoke response type that shows a text message instead of a card.
pub const MESSAGE_RESPONSE_TYPE: &str = "application/vnd.microsoft.activity.message";
/// Invoke response type for errors.
pub const ERROR_RESPONSE_TYPE: &str = "application/vnd.microsoft.error";
/// Largest inbound activity body accepted by [`Activity::from_json`].
pub const MAX_ACTIVITY_LEN: usize = 256 * 1024;

/// An inbound activity could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivityError {
    /// The body exceeds [`MAX_ACTIVITY_LEN`].
    #[error("activity body is larger than {MAX_ACTIVITY_LEN} bytes")]
    TooLarge,
    /// The body is not an activity.
    #[error("activity body is not a valid activity: {0}")]
    Invalid(#[source] serde_json::Error),
    /// The activity is not an `adaptiveCard/action` invoke.
    #[error("activity is a {kind:?} named {name:?}, not an adaptiveCard/action invoke")]
    NotCardAction {
        /// `type`.
        kind: String,
        /// `name`.
        name: Option<String>,
    },
    /// A field needed to handle the click is missing.
    #[error("activity has no {0}")]
    MissingField(&'static str),
    /// `value` is not an Adaptive Card invoke value.
    #[error("activity value is not an adaptive card invoke value: {0}")]
    InvalidValue(#[source] serde_json::Error),
    /// `conversation.tenantId` and `channelData.tenant.id` disagree.
    #[error(
        "activity names two tenants: conversation {conversation:?}, channelData {channel_data:?}"
    )]
    TenantMismatch {
        /// `conversation.tenantId`.
        conversation: String,
        /// `channelData.tenant.id`.
        channel_data: String,
    },
}

/// A Bot Framework activity as received (the fields this crate uses; the rest is kept in
/// `extra`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Activity {
    /// `type`: `invoke`, `message`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Activity id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Invoke name, e.g. `adaptiveCard/action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Channel, `msteams` for Teams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// Where replies go. Must be checked against the token's claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_url: Option<String>,
    /// Sender timestamp, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Who clicked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ChannelAccount>,
    /// The bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<ChannelAccount>,
    /// The conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationAccount>,
    /// For a card click: the id of the activity (message) that holds the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<String>,
    /// Invoke payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Channel-specific data (Teams: `tenant.id`, `team`, `channel`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<Value>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A user or bot in a conversation.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ChannelAccount {
    /// Channel-specific id (Teams: `29:...`).
    #[serde(default)]
    pub id: String,
    /// Display name. Untrusted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Microsoft Entra (AAD) object id of the user: the stable identity to resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad_object_id: Option<String>,
    /// `user` or `bot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A conversation reference.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConversationAccount {
    /// Conversation id (Teams: `19:...@thread.tacv2`, `a:...` for personal chats).
    #[serde(default)]
    pub id: String,
    /// Tenant of the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `personal`, `groupChat` or `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_type: Option<String>,
    /// Whether more than two participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_group: Option<bool>,
    /// Display name. Untrusted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `value` of an `adaptiveCard/action` invoke.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AdaptiveCardInvokeValue {
    /// The `Action.Execute` that fired.
    pub action: AdaptiveCardInvokeAction,
    /// Whether a user clicked (`manual`) or the card refreshed itself (`automatic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<InvokeTrigger>,
    /// SSO token exchange data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Value>,
    /// OAuth magic code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The `Action.Execute` of a click.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AdaptiveCardInvokeAction {
    /// `Action.Execute`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The action's `id`, if the card set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The action's `verb` (e.g. `approve`).
    pub verb: String,
    /// The action's `data` merged with the card's input values. Untrusted.
    #[serde(default)]
    pub data: Value,
}

/// What fired an `Action.Execute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InvokeTrigger {
    /// A user clicked the button.
    Manual,
    /// The card's `refresh` action ran when displayed; no one clicked. Never a decision.
    Automatic,
    /// A value this crate does not know.
    #[serde(other)]
    Other,
}

/// The facts of a card click, extracted from an `adaptiveCard/action` invoke.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CardAction {
    /// The action's verb.
    pub verb: String,
    /// The action's data (untrusted).
    pub data: Value,
    /// What fired it; `None` when the client did not say.
    pub trigger: Option<InvokeTrigger>,
    /// The clicker's AAD object id, if sent.
    pub from_aad_object_id: Option<String>,
    /// The clicker's channel id (`29:...`).
    pub from_id: String,
    /// The tenant (see [`Activity::tenant_id`]).
    pub tenant_id: Option<String>,
    /// Where to reply (must equal the token's claim: authenticate first).
    pub service_url: String,
    /// The conversation holding the card.
    pub conversation_id: String,
    /// The id of the message holding the card (`replyToId`), for updates.
    pub card_activity_id: Option<String>,
}

impl Activity {
    /// Parses an activity from a request body of at most [`MAX_ACTIVITY_LEN`] bytes.
    pub fn from_json(body: &[u8]) -> Result<Self, ActivityError> {
        if body.len() > MAX_ACTIVITY_LEN {
            return Err(ActivityError::TooLarge);
        }
        serde_json::from_slice(body).map_err(ActivityError::Invalid)
    }

    /// Whether this is an `adaptiveCard/action` invoke.
    pub fn is_card_action(&self) -> bool {
        self.kind == INVOKE_ACTIVITY_TYPE
            && self.name.as_deref() == Some(ADAPTIVE_CARD_ACTION_INVOKE)
    }

    /// The tenant: `conversation.tenantId`, else `channelData.tenant.id`. Two different values
    /// are an error, never a choice.
    pub fn tenant_id(&self) -> Result<Option<&str>, ActivityError> {
        let conversation = self
            .conversation
            .as_ref()
            .and_then(|c| c.tenant_id.as_deref())
            .filter(|t| !t.is_empty());
        let channel_data = self
            .channel_data
            .as_ref()
            .and_then(|d| d.get("tenant"))
            .and_then(|t| t.get("id"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        match (conversation, channel_data) {
            (Some(a), Some(b)) if a != b => Err(ActivityError::TenantMismatch {
                conversation: a.to_owned(),
                channel_data: b.to_owned(),
            }),
            (Some(a), _) | (None, Some(a)) => Ok(Some(a)),
            (None, None) => Ok(None),
        }
    }

    /// Parses `value` of an `adaptiveCard/action` invoke.
    pub fn card_action_value(&self) -> Result<AdaptiveCardInvokeValue, ActivityError> {
        if !self.is_card_action() {
            return Err(ActivityError::NotCardAction {
                kind: self.kind.clone(),
                name: self.name.clone(),
            });
        }
        let value = self
            .value
            .clone()
            .ok_or(ActivityError::MissingField("value"))?;
        serde_json::from_value(value).map_err(ActivityError::InvalidValue)
    }

    /// Extracts what a handler needs from an `adaptiveCard/action` invoke. Requires
    /// `serviceUrl`, `from.id` and `conversation.id`.
    pub fn card_action(&self) -> Result<CardAction, ActivityError> {
        let value = self.card_action_value()?;
        let service_url = self
            .service_url
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(ActivityError::MissingField("serviceUrl"))?;
        let from = self
            .from
            .as_ref()
            .filter(|f| !f.id.is_empty())
            .ok_or(ActivityError::MissingField("from.id"))?;
        let conversation = self
            .conversation
            .as_ref()
            .filter(|c| !c.id.is_empty())
            .ok_or(ActivityError::MissingField("conversation.id"))?;
        Ok(CardAction {
            verb: value.action.verb,
            data: value.action.data,
            trigger: value.trigger,
            from_aad_object_id: from.aad_object_id.clone().filter(|s| !s.is_empty()),
            from_id: from.id.clone(),
            tenant_id: self.tenant_id()?.map(str::to_owned),
            service_url,
            conversation_id: conversation.id.clone(),
            card_activity_id: self.reply_to_id.clone().filter(|s| !s.is_empty()),
        })
    }
}

/// Body of the HTTP response to an `adaptiveCard/action` invoke.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AdaptiveCardInvokeResponse {
    /// 200 for a card or message, 4xx/5xx for an error.
    pub status_code: u16,
    /// [`ADAPTIVE_CARD_CONTENT_TYPE`], [`MESSAGE_RESPONSE_TYPE`] or [`ERROR_RESPONSE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The card, the message text, or `{code, message}`.
    pub value: Value,
}

impl AdaptiveCardInvokeResponse {
    /// Replaces the clicked card with `card` (for the clicker).
    pub fn card(card: Value) -> Self {
        Self {
            status_code: 200,
            kind: ADAPTIVE_CARD_CONTENT_TYPE.to_owned(),
            value: card,
        }
    }

    /// Shows a text message to the clicker, leaving the card unchanged.
    pub fn message(text: impl Into<String>) -> Self {
        Self {
            status_code: 200,
            kind: MESSAGE_RESPONSE_TYPE.to_owned(),
            value: Value::String(text.into()),
        }
    }

    /// An error answer (e.g. 400 `BadRequest`, 401 `Unauthorized`).
    pub fn error(status_code: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status_code,
            kind: ERROR_RESPONSE_TYPE.to_owned(),
            value: serde_json::json!({"code": code.into(), "message": message.into()}),
        }
    }

    /// The HTTP response: status `statusCode` (500 if it is not a valid status) and this
    /// object as the JSON body.
    pub fn to_http_response(&self) -> http::Response<Bytes> {
        let status = http::StatusCode::from_u16(self.status_code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    }
}

/// An attachment of an outgoing activity.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Attachment {
    /// MIME type, e.g. [`ADAPTIVE_CARD_CONTENT_TYPE`].
    pub content_type: String,
    /// The content (the card JSON).
    pub content: Value,
}

/// A message the bot sends or updates through the Bot Connector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct OutgoingActivity {
    /// `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The activity id; set for updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Plain text; also the notification preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Notification summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Attachments (cards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Any other field (e.g. `channelData`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl OutgoingActivity {
    /// A message carrying one Adaptive Card.
    pub fn adaptive_card(card: Value) -> Self {
        Self {
            kind: "message".to_owned(),
            id: None,
            text: None,
            summary: None,
            attachments: vec![Attachment {
                content_type: ADAPTIVE_CARD_CONTENT_TYPE.to_owned(),
                content: card,
            }],
            extra: Map::new(),
        }
    }

    /// A plain text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: "message".to_owned(),
            id: None,
            text: Some(text.into()),
            summary: None,
            attachments: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Sets the activity id (required in the body of an update).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the notification summary.
    pub fn with_summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = Some(summary.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invoke(value: Value) -> Value {
        json!({
            "type": "invoke", "name": "adaptiveCard/action", "id": "f:1", "channelId": "msteams",
            "serviceUrl": "https://smba.trafficmanager.net/amer/",
            "from": {"id": "29:1", "name": "Ann", "aadObjectId": "aad-1"},
            "recipient": {"id": "28:bot", "name": "Approvals"},
            "conversation": {"id": "19:c@thread.tacv2", "conversationType": "channel", "tenantId": "t-1"},
            "channelData": {"tenant": {"id": "t-1"}},
            "replyToId": "1700000000000",
            "value": value
        })
    }

    fn parse(v: &Value) -> Activity {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        match Activity::from_json(&bytes) {
            Ok(a) => a,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    #[test]
    fn parses_a_click() {
        let a = parse(&invoke(json!({
            "action": {"type": "Action.Execute", "id": "ok", "verb": "approve", "data": {"r": 1}},
            "trigger": "manual"
        })));
        let click = a.card_action().map_err(|e| e.to_string());
        let click = click.as_ref().map_err(String::as_str);
        assert_eq!(click.map(|c| c.verb.as_str()), Ok("approve"));
        assert_eq!(click.map(|c| c.data.clone()), Ok(json!({"r": 1})));
        assert_eq!(click.map(|c| c.trigger), Ok(Some(InvokeTrigger::Manual)));
        assert_eq!(
            click.map(|c| c.from_aad_object_id.as_deref()),
            Ok(Some("aad-1"))
        );
        assert_eq!(click.map(|c| c.tenant_id.as_deref()), Ok(Some("t-1")));
        assert_eq!(
            click.map(|c| c.card_activity_id.as_deref()),
            Ok(Some("1700000000000"))
        );
    }

    #[test]
    fn automatic_and_unknown_triggers() {
        let a = parse(&invoke(
            json!({"action": {"verb": "refresh"}, "trigger": "automatic"}),
        ));
        assert_eq!(
            a.card_action().ok().and_then(|c| c.trigger),
            Some(InvokeTrigger::Automatic)
        );
        let a = parse(&invoke(
            json!({"action": {"verb": "x"}, "trigger": "bogus"}),
        ));
        assert_eq!(
            a.card_action().ok().and_then(|c| c.trigger),
            Some(InvokeTrigger::Other)
        );
    }

    #[test]
    fn rejects_tenant_conflicts_and_wrong_kinds() {
        let mut v = invoke(json!({"action": {"verb": "approve"}}));
        v["channelData"]["tenant"]["id"] = json!("t-2");
        assert!(matches!(
            parse(&v).card_action(),
            Err(ActivityError::TenantMismatch { .. })
        ));
        let mut v = invoke(json!({"action": {"verb": "approve"}}));
        v["name"] = json!("composeExtension/query");
        assert!(matches!(
            parse(&v).card_action(),
            Err(ActivityError::NotCardAction { .. })
        ));
        let v = invoke(json!({"no": "action"}));
        assert!(matches!(
            parse(&v).card_action(),
            Err(ActivityError::InvalidValue(_))
        ));
        let mut v = invoke(json!({"action": {"verb": "approve"}}));
        v.as_object_mut().map(|o| o.remove("serviceUrl"));
        assert!(matches!(
            parse(&v).card_action(),
            Err(ActivityError::MissingField("serviceUrl"))
        ));
        assert!(matches!(
            Activity::from_json(&vec![b' '; MAX_ACTIVITY_LEN + 1]),
            Err(ActivityError::TooLarge)
        ));
        assert!(matches!(
            Activity::from_json(b"[1]"),
            Err(ActivityError::Invalid(_))
        ));
    }

    #[test]
    fn tenant_from_channel_data_only() {
        let mut v = invoke(json!({"action": {"verb": "approve"}}));
        v["conversation"]
            .as_object_mut()
            .map(|o| o.remove("tenantId"));
        assert_eq!(parse(&v).tenant_id().ok().flatten(), Some("t-1"));
    }

    #[test]
    fn invoke_response_shapes() {
        let r = AdaptiveCardInvokeResponse::card(json!({"type": "AdaptiveCard"}));
        assert_eq!(
            serde_json::to_value(&r).ok(),
            Some(
                json!({"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
                        "value": {"type": "AdaptiveCard"}})
            )
        );
        let http = r.to_http_response();
        assert_eq!(http.status(), 200);
        let e = AdaptiveCardInvokeResponse::error(401, "Unauthorized", "not a reviewer");
        assert_eq!(e.to_http_response().status(), 401);
        assert_eq!(e.value["code"], "Unauthorized");
        let m = AdaptiveCardInvokeResponse::message("done");
        assert_eq!(m.kind, MESSAGE_RESPONSE_TYPE);
    }

    #[test]
    fn outgoing_card_shape() {
        let a = OutgoingActivity::adaptive_card(json!({"type": "AdaptiveCard"})).with_id("1");
        assert_eq!(
            serde_json::to_value(&a).ok(),
            Some(json!({"type": "message", "id": "1", "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive",
                 "content": {"type": "AdaptiveCard"}}]}))
        );
    }
}
