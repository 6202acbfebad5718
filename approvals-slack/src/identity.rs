//! Mapping Slack users to principals by their verified email address (opt-in; the static map
//! in `approvals_core::StaticIdentityResolver` needs no extra scope).

use std::sync::Arc;

use approvals_core::{IdentityError, IdentityResolver, Principal};
use async_trait::async_trait;

use crate::api::{SlackClient, SlackError};
use crate::approver::CHANNEL;

/// The identity channel name under which [`SlackEmailResolver`] looks up email addresses in
/// its directory resolver.
pub const EMAIL_CHANNEL: &str = "email";

/// Resolves a Slack user id by calling `users.info` (scopes `users:read` and
/// `users:read.email`), and then looks up the user's email address in `directory` under the
/// identity channel `"email"`. The directory decides the principal and its groups; Slack only
/// says which address the clicker has.
///
/// Refused as unknown: deleted users, bots and app users, users of another workspace (when
/// workspaces are configured), users without an email or whose email is not confirmed,
/// addresses with invisible, bidi-control or mixed-script characters
/// ([`approvals_core::identity::normalize`]), and addresses the directory does not map to
/// exactly one principal. The directory is asked for the address in canonical form.
///
/// ```
/// use approvals_core::{Principal, StaticIdentityResolver};
/// use approvals_slack::{SlackClient, SlackEmailResolver, Token};
/// # fn demo() -> Result<(), approvals_slack::SlackError> {
/// let directory = StaticIdentityResolver::new()
///     .map("email", "sam@example.com", Principal::human("sam@example.com").with_groups(["security"]));
/// let resolver = SlackEmailResolver::new(SlackClient::new(Token::new("xoxb-..."))?, directory)
///     .team("T0123456789");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SlackEmailResolver {
    client: SlackClient,
    directory: Arc<dyn IdentityResolver>,
    teams: Vec<String>,
}

impl std::fmt::Debug for SlackEmailResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackEmailResolver")
            .field("teams", &self.teams)
            .finish_non_exhaustive()
    }
}

impl SlackEmailResolver {
    /// Looks users up with `client` and maps their email through `directory`.
    pub fn new(client: SlackClient, directory: impl IdentityResolver) -> Self {
        SlackEmailResolver {
            client,
            directory: Arc::new(directory),
            teams: Vec::new(),
        }
    }

    /// Only accepts users of this workspace (may be called several times).
    pub fn team(mut self, team_id: impl Into<String>) -> Self {
        self.teams.push(team_id.into());
        self
    }
}

#[async_trait]
impl IdentityResolver for SlackEmailResolver {
    async fn resolve(&self, channel: &str, external_id: &str) -> Result<Principal, IdentityError> {
        let unknown = || IdentityError::Unknown {
            channel: channel.to_owned(),
            external_id: external_id.to_owned(),
        };
        if channel != CHANNEL {
            return Err(unknown());
        }
        let user = match self.client.user_info(external_id).await {
            Ok(user) => user,
            Err(SlackError::Api { error, .. })
                if matches!(error.as_str(), "user_not_found" | "user_not_visible") =>
            {
                return Err(unknown());
            }
            Err(e) => return Err(IdentityError::Unavailable(e.to_string())),
        };
        let team_ok = self.teams.is_empty()
            || user
                .team_id
                .as_deref()
                .is_some_and(|t| self.teams.iter().any(|a| a == t));
        if user.id != external_id
            || user.deleted
            || user.is_bot
            || user.is_app_user
            || !team_ok
            || user.is_email_confirmed == Some(false)
        {
            return Err(unknown());
        }
        let email = user
            .profile
            .email
            .as_deref()
            .and_then(|e| approvals_core::identity::normalize(e).ok())
            .ok_or_else(unknown)?;
        match self.directory.resolve(EMAIL_CHANNEL, &email).await {
            Ok(p) => Ok(p),
            Err(IdentityError::Unknown { .. }) => Err(unknown()),
            Err(IdentityError::Ambiguous { count, .. }) => Err(IdentityError::Ambiguous {
                channel: channel.to_owned(),
                external_id: external_id.to_owned(),
                count,
            }),
            Err(e) => Err(e),
        }
    }
}
