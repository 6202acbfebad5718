//! The `approvals serve --config FILE` configuration: the TOML file, its environment
//! overrides (`APPROVALS_<KEY>`, nested keys joined by `__`), secrets read from files or
//! environment variables only, and the checks that refuse a misconfiguration at start with
//! the file, line and field.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use approvals_core::Principal;
use serde::Deserialize;
use toml::Spanned;

/// Every environment variable that sets a configuration key starts with this.
pub(crate) const ENV_PREFIX: &str = "APPROVALS_";

/// Where a setting came from, for messages: `approvals.toml:12:1`, or an environment
/// variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A place in the configuration file.
    File {
        path: String,
        line: usize,
        column: usize,
    },
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => write!(f, "{path}:{line}:{column}"),
            Origin::Env(name) => write!(f, "environment {name}"),
        }
    }
}

/// A refused configuration: where, which field, and what is wrong (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) at: Origin,
    pub(crate) field: String,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.at, self.message)
        } else {
            write!(f, "{}: {}: {}", self.at, self.field, self.message)
        }
    }
}

/// One value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) at: Origin,
    pub(crate) field: String,
}

impl<T> Setting<T> {
    /// An error about this setting.
    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            at: self.at.clone(),
            field: self.field.clone(),
            message: message.into(),
        }
    }
}

/// The configuration file's text, to turn byte spans into lines and columns.
pub(crate) struct Source {
    pub(crate) path: String,
    text: String,
}

impl Source {
    fn at(&self, span: Range<usize>) -> Origin {
        let start = span.start.min(self.text.len());
        let before = self.text.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Origin::File {
            path: self.path.clone(),
            line,
            column,
        }
    }

    /// The dotted key a byte offset belongs to: the nearest table header above it, then the
    /// key on its line (best effort, for parse errors that name no field).
    fn key_at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = self
            .text
            .get(offset..)
            .and_then(|rest| rest.find('\n'))
            .map_or(self.text.len(), |i| offset + i);
        let line = self.text.get(line_start..line_end).unwrap_or("").trim();
        let header = before
            .get(..line_start)
            .unwrap_or("")
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
        if line.starts_with('[') {
            return line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        }
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        match (header, key.is_empty()) {
            (Some(h), false) => format!("{h}.{key}"),
            (Some(h), true) => h,
            (None, _) => key,
        }
    }
}

// ------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    admin_groups: Option<Spanned<Vec<String>>>,
    policy: Option<Spanned<PathBuf>>,
    policy_reload_interval: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
    audit_key: Option<Spanned<PathBuf>>,
    audit: Option<Spanned<PathBuf>>,
    tokens: Option<Spanned<PathBuf>>,
    grant_key: Option<Spanned<PathBuf>>,
    grant_issuer: Option<Spanned<String>>,
    passkeys: Option<Spanned<PathBuf>>,
    #[serde(default)]
    channels: RawChannels,
    oidc: Option<Spanned<RawOidc>>,
}

/// `[oidc]`: console sign-in with an OpenID Connect provider.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<toml::Value>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    client_secret_env: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<String>>>,
    identity_claim: Option<Spanned<String>>,
    groups_claim: Option<Spanned<String>>,
    reviewers: Option<Spanned<BTreeMap<String, RawReviewer>>>,
    session_ttl: Option<Spanned<String>>,
    allowed_clock_skew: Option<Spanned<String>>,
    display_name: Option<Spanned<String>>,
    token_sign_in: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    slack: Option<Spanned<RawSlack>>,
    teams: Option<Spanned<RawTeams>>,
    webhook: Option<Spanned<RawWebhook>>,
}

/// A secret as written: a file or an environment variable; an inline value is kept only to
/// refuse it with its place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    bot_token: Option<Spanned<toml::Value>>,
    bot_token_file: Option<Spanned<PathBuf>>,
    bot_token_env: Option<Spanned<String>>,
    signing_secret: Option<Spanned<toml::Value>>,
    signing_secret_file: Option<Spanned<PathBuf>>,
    signing_secret_env: Option<Spanned<String>>,
    app_token: Option<Spanned<toml::Value>>,
    app_token_file: Option<Spanned<PathBuf>>,
    app_token_env: Option<Spanned<String>>,
    app_id: Option<Spanned<String>>,
    team_id: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    api_base_url: Option<Spanned<String>>,
    response_url_prefix: Option<Spanned<String>>,
    interactivity_path: Option<Spanned<String>>,
    reviewers: Option<Spanned<BTreeMap<String, RawReviewer>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeams {
    app_id: Option<Spanned<String>>,
    app_secret: Option<Spanned<toml::Value>>,
    app_secret_file: Option<Spanned<PathBuf>>,
    app_secret_env: Option<Spanned<String>>,
    tenant_id: Option<Spanned<String>>,
    service_url: Option<Spanned<String>>,
    conversation_id: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    openid_metadata_url: Option<Spanned<String>>,
    messaging_path: Option<Spanned<String>>,
    reviewers: Option<Spanned<BTreeMap<String, RawReviewer>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<Spanned<String>>,
    secret: Option<Spanned<toml::Value>>,
    secret_file: Option<Spanned<PathBuf>>,
    secret_env: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReviewer {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

// ------------------------------------------------------------------------------------------
// The checked configuration.

/// A secret's value: never printed (`Debug` shows where it came from only).
#[derive(Clone)]
pub(crate) struct Secret {
    value: String,
    pub(crate) from: String,
}

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(from {})", self.from)
    }
}

/// A reviewer: a channel's user id and the principal it stands for.
#[derive(Debug, Clone)]
pub(crate) struct Reviewers {
    pub(crate) entries: Vec<(String, Principal)>,
    pub(crate) at: Origin,
    pub(crate) field: String,
}

/// The Slack channel.
#[derive(Debug)]
pub(crate) struct SlackConfig {
    pub(crate) bot_token: Secret,
    pub(crate) signing_secret: Secret,
    /// With it, clicks arrive over Socket Mode; without it, at `interactivity_path`.
    pub(crate) app_token: Option<Secret>,
    pub(crate) app_id: String,
    pub(crate) team_id: String,
    pub(crate) channel: String,
    pub(crate) api_base_url: Option<Setting<String>>,
    pub(crate) response_url_prefix: Option<String>,
    pub(crate) interactivity_path: String,
    pub(crate) reviewers: Reviewers,
    pub(crate) at: Origin,
}

/// The Microsoft Teams channel.
#[derive(Debug)]
pub(crate) struct TeamsConfig {
    pub(crate) app_id: String,
    pub(crate) app_secret: Secret,
    pub(crate) tenant_id: String,
    pub(crate) service_url: String,
    pub(crate) conversation_id: String,
    pub(crate) token_url: Option<String>,
    pub(crate) openid_metadata_url: Option<String>,
    pub(crate) messaging_path: String,
    pub(crate) reviewers: Reviewers,
    pub(crate) at: Origin,
}

/// The signed webhook channel.
#[derive(Debug)]
pub(crate) struct WebhookConfig {
    pub(crate) url: Setting<String>,
    pub(crate) secret: Secret,
}

/// Console sign-in with an OpenID Connect provider (`[oidc]`).
#[derive(Debug)]
pub(crate) struct OidcSettings {
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<Secret>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) identity_claim: Option<String>,
    pub(crate) groups_claim: Option<String>,
    /// Identity claim value -> the reviewer, with groups (the identity resolver, asked again
    /// at each decision).
    pub(crate) reviewers: Option<Reviewers>,
    pub(crate) session_ttl: Option<Duration>,
    pub(crate) allowed_clock_skew: Option<Duration>,
    pub(crate) display_name: Option<String>,
    pub(crate) token_sign_in: bool,
    pub(crate) at: Origin,
}

impl OidcSettings {
    /// The console's OpenID Connect configuration, for the console served at `public_url`.
    pub(crate) fn config(&self, public_url: &url::Url) -> approvals_http::OidcConfig {
        let mut c = approvals_http::OidcConfig::new(&self.issuer, &self.client_id, public_url)
            .token_sign_in(self.token_sign_in);
        if let Some(secret) = &self.client_secret {
            c = c.client_secret(secret.expose());
        }
        if let Some(scopes) = &self.scopes {
            c = c.scopes(scopes.clone());
        }
        if let Some(claim) = &self.identity_claim {
            c = c.identity_claim(claim);
        }
        if let Some(claim) = &self.groups_claim {
            c = c.groups_claim(claim);
        }
        if let Some(reviewers) = &self.reviewers {
            let mut ids = approvals_core::StaticIdentityResolver::new();
            for (external, principal) in &reviewers.entries {
                ids = ids.map(
                    approvals_http::console::oidc::RESOLVER_CHANNEL,
                    external,
                    principal.clone(),
                );
            }
            c = c.resolver(ids);
        }
        if let Some(ttl) = self.session_ttl {
            c = c.session_ttl(ttl);
        }
        if let Some(skew) = self.allowed_clock_skew {
            c = c.allowed_clock_skew(skew);
        }
        if let Some(name) = &self.display_name {
            c = c.display_name(name);
        }
        c
    }
}

/// `approvals serve --config FILE`, checked: every file it names was readable and every
/// secret present when it was loaded.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    pub(crate) listen: String,
    pub(crate) public_url: Option<url::Url>,
    pub(crate) admin_groups: Vec<String>,
    pub(crate) policy: Setting<PathBuf>,
    pub(crate) policy_reload_interval: Duration,
    pub(crate) store: Setting<String>,
    pub(crate) audit_key: Setting<PathBuf>,
    pub(crate) audit: Option<PathBuf>,
    pub(crate) tokens: Setting<PathBuf>,
    pub(crate) grant_key: Option<Setting<PathBuf>>,
    pub(crate) grant_issuer: String,
    /// Where the console keeps reviewers' passkeys (public keys only); in memory without it.
    pub(crate) passkeys: Option<Setting<PathBuf>>,
    pub(crate) slack: Option<SlackConfig>,
    pub(crate) teams: Option<TeamsConfig>,
    pub(crate) webhook: Option<WebhookConfig>,
    pub(crate) oidc: Option<OidcSettings>,
}

/// Reads, overrides from the environment and checks the configuration file. `env` looks up
/// one environment variable (the process environment in production).
pub(crate) fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServeConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        at: Origin::File {
            path: shown.clone(),
            line: 1,
            column: 1,
        },
        field: String::new(),
        message: format!("cannot read the configuration file: {e}"),
    })?;
    let source = Source { path: shown, text };
    let raw: RawConfig = toml::from_str(&source.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError {
            at: source.at(span.clone()),
            field: source.key_at(span.start),
            message: e.message().trim().to_owned(),
        }
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Resolver {
        source: &source,
        env,
        base,
    }
    .resolve(raw)
}

struct Resolver<'a> {
    source: &'a Source,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Relative paths in the file are relative to the file's directory.
    base: PathBuf,
}

/// `channels.slack.bot_token_file` -> `APPROVALS_CHANNELS__SLACK__BOT_TOKEN_FILE`.
pub(crate) fn env_name(field: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        field.replace('.', "__").to_ascii_uppercase()
    )
}

impl Resolver<'_> {
    /// The file's value for `field`, replaced by its environment variable when that is set.
    fn text(&self, field: &str, raw: Option<Spanned<String>>) -> Option<Setting<String>> {
        let name = env_name(field);
        if let Some(value) = (self.env)(&name) {
            return Some(Setting {
                value,
                at: Origin::Env(name),
                field: field.to_owned(),
            });
        }
        raw.map(|s| Setting {
            at: self.source.at(s.span()),
            value: s.into_inner(),
            field: field.to_owned(),
        })
    }

    fn path(&self, field: &str, raw: Option<Spanned<PathBuf>>) -> Option<Setting<PathBuf>> {
        let name = env_name(field);
        if let Some(value) = (self.env)(&name) {
            return Some(Setting {
                value: PathBuf::from(value),
                at: Origin::Env(name),
                field: field.to_owned(),
            });
        }
        raw.map(|s| {
            let at = self.source.at(s.span());
            let value = s.into_inner();
            Setting {
                value: if value.is_relative() {
                    self.base.join(value)
                } else {
                    value
                },
                at,
                field: field.to_owned(),
            }
        })
    }

    fn required<T>(
        &self,
        field: &str,
        value: Option<Setting<T>>,
        section: &Origin,
    ) -> Result<Setting<T>, ConfigError> {
        value.ok_or_else(|| ConfigError {
            at: section.clone(),
            field: field.to_owned(),
            message: format!("missing; set it in the file or with {}", env_name(field)),
        })
    }

    fn file_origin(&self) -> Origin {
        self.source.at(0..0)
    }

    /// Does any environment variable set a key of this section (so the section exists even
    /// when the file has none)?
    fn env_section(&self, prefix: &str, keys: &[&str]) -> bool {
        keys.iter()
            .any(|k| (self.env)(&env_name(&format!("{prefix}.{k}"))).is_some())
    }

    fn secret(
        &self,
        field: &str,
        inline: Option<Spanned<toml::Value>>,
        file: Option<Spanned<PathBuf>>,
        var: Option<Spanned<String>>,
        section: &Origin,
    ) -> Result<Option<Secret>, ConfigError> {
        if let Some(inline) = inline {
            return Err(ConfigError {
                at: self.source.at(inline.span()),
                field: field.to_owned(),
                message: format!(
                    "secrets are not written in the configuration file; use {field}_file = \"/run/secrets/...\" or {field}_env = \"VARIABLE\""
                ),
            });
        }
        let direct = env_name(field);
        if (self.env)(&direct).is_some() {
            return Err(ConfigError {
                at: Origin::Env(direct.clone()),
                field: field.to_owned(),
                message: format!(
                    "secrets are read from a file or a variable you name: set {} or {} instead",
                    env_name(&format!("{field}_file")),
                    env_name(&format!("{field}_env"))
                ),
            });
        }
        let file = self.path(&format!("{field}_file"), file);
        let var = self.text(&format!("{field}_env"), var);
        match (file, var) {
            (Some(f), Some(v)) => Err(v.error(format!(
                "give one of {field}_file and {field}_env, not both (the other is at {})",
                f.at
            ))),
            (Some(f), None) => {
                let text = std::fs::read_to_string(&f.value)
                    .map_err(|e| f.error(format!("cannot read {}: {e}", f.value.display())))?;
                let value = text.trim().to_owned();
                if value.is_empty() {
                    return Err(f.error(format!("{} is empty", f.value.display())));
                }
                Ok(Some(Secret {
                    value,
                    from: f.value.display().to_string(),
                }))
            }
            (None, Some(v)) => {
                let name = v.value.trim();
                if name.is_empty() {
                    return Err(v.error("name the environment variable that holds the secret"));
                }
                match (self.env)(name) {
                    Some(value) if !value.trim().is_empty() => Ok(Some(Secret {
                        value: value.trim().to_owned(),
                        from: format!("${name}"),
                    })),
                    Some(_) => Err(v.error(format!("the environment variable {name} is empty"))),
                    None => Err(v.error(format!("the environment variable {name} is not set"))),
                }
            }
            (None, None) => {
                let _ = section;
                Ok(None)
            }
        }
    }

    fn required_secret(
        &self,
        field: &str,
        inline: Option<Spanned<toml::Value>>,
        file: Option<Spanned<PathBuf>>,
        var: Option<Spanned<String>>,
        section: &Origin,
    ) -> Result<Secret, ConfigError> {
        self.secret(field, inline, file, var, section)?
            .ok_or_else(|| ConfigError {
                at: section.clone(),
                field: field.to_owned(),
                message: format!(
                    "missing; set {field}_file (a file holding the secret) or {field}_env (the name of an environment variable holding it)"
                ),
            })
    }

    fn reviewers(
        &self,
        field: &str,
        raw: Option<Spanned<BTreeMap<String, RawReviewer>>>,
        section: &Origin,
    ) -> Result<Reviewers, ConfigError> {
        let name = env_name(field);
        let (entries, at) = if let Some(spec) = (self.env)(&name) {
            let at = Origin::Env(name.clone());
            let entries = parse_reviewers(&spec).map_err(|message| ConfigError {
                at: at.clone(),
                field: field.to_owned(),
                message,
            })?;
            (entries, at)
        } else if let Some(raw) = raw {
            let at = self.source.at(raw.span());
            let entries = raw
                .into_inner()
                .into_iter()
                .map(|(user, r)| {
                    let mut principal = Principal::human(r.id).with_groups(r.groups);
                    if let Some(name) = r.name {
                        principal = principal.with_name(name);
                    }
                    (user, principal)
                })
                .collect();
            (entries, at)
        } else {
            return Err(ConfigError {
                at: section.clone(),
                field: field.to_owned(),
                message: format!(
                    "missing: map each reviewer's channel user id to a person, for example [{field}] U024BE7LH = {{ id = \"sam@example.com\", groups = [\"security\"] }} (or {name}=\"U024BE7LH=sam@example.com:security\")"
                ),
            });
        };
        if entries.is_empty() {
            return Err(ConfigError {
                at,
                field: field.to_owned(),
                message: "no reviewers: nobody could decide a request on this channel".into(),
            });
        }
        let mut checked = Vec::with_capacity(entries.len());
        for (user, principal) in entries {
            if user.trim().is_empty() {
                return Err(ConfigError {
                    at,
                    field: field.to_owned(),
                    message: "a reviewer's user id is empty".into(),
                });
            }
            let principal = principal.normalized().map_err(|e| ConfigError {
                at: at.clone(),
                field: format!("{field}.{user}"),
                message: format!("refused: {e}"),
            })?;
            checked.push((user, principal));
        }
        Ok(Reviewers {
            entries: checked,
            at,
            field: field.to_owned(),
        })
    }

    fn resolve(&self, raw: RawConfig) -> Result<ServeConfig, ConfigError> {
        let top = self.file_origin();
        let listen = self
            .text("listen", raw.listen)
            .map_or_else(|| "127.0.0.1:8480".to_owned(), |s| s.value);
        let public_url = match self.text("public_url", raw.public_url) {
            Some(s) => Some(
                url::Url::parse(s.value.trim()).map_err(|e| s.error(format!("not a URL: {e}")))?,
            ),
            None => None,
        };
        let admin_groups = match (self.env)(&env_name("admin_groups")) {
            Some(list) => split_list(&list),
            None => raw
                .admin_groups
                .map(Spanned::into_inner)
                .unwrap_or_default(),
        };
        let policy = self.required("policy", self.path("policy", raw.policy), &top)?;
        let policy_reload_interval = match self
            .text("policy_reload_interval", raw.policy_reload_interval)
        {
            Some(s) => {
                let d = approvals_core::policy::parse_duration(&s.value).map_err(|e| s.error(e))?;
                if d < Duration::from_millis(100) {
                    return Err(s.error("check the policy file at most every 100ms"));
                }
                d
            }
            None => Duration::from_secs(5),
        };
        let store = self.required("store", self.text("store", raw.store), &top)?;
        let audit_key = self.required("audit_key", self.path("audit_key", raw.audit_key), &top)?;
        let audit = self.path("audit", raw.audit).map(|s| s.value);
        let tokens = self.required("tokens", self.path("tokens", raw.tokens), &top)?;
        let grant_key = self.path("grant_key", raw.grant_key);
        let grant_issuer = self
            .text("grant_issuer", raw.grant_issuer)
            .map_or_else(|| "approvals".to_owned(), |s| s.value);
        let passkeys = self.path("passkeys", raw.passkeys);

        let slack = self.slack(raw.channels.slack, &top)?;
        let teams = self.teams(raw.channels.teams, &top)?;
        let webhook = self.webhook(raw.channels.webhook, &top)?;
        let oidc = self.oidc(raw.oidc, &top)?;
        if let (Some(o), None) = (&oidc, &public_url) {
            return Err(ConfigError {
                at: o.at.clone(),
                field: "public_url".into(),
                message: "[oidc] needs public_url: the console's address, where the provider sends reviewers back (its console/oidc/callback must be a registered redirect URI)".into(),
            });
        }
        Ok(ServeConfig {
            listen,
            public_url,
            admin_groups,
            policy,
            policy_reload_interval,
            store,
            audit_key,
            audit,
            tokens,
            grant_key,
            grant_issuer,
            passkeys,
            slack,
            teams,
            webhook,
            oidc,
        })
    }

    /// The section's place, and its contents (empty when only the environment sets it).
    fn section<T: Default>(
        &self,
        name: &str,
        keys: &[&str],
        raw: Option<Spanned<T>>,
        top: &Origin,
    ) -> Option<(Origin, T)> {
        match raw {
            Some(s) => Some((self.source.at(s.span()), s.into_inner())),
            None if self.env_section(name, keys) => Some((top.clone(), T::default())),
            None => None,
        }
    }

    fn slack(
        &self,
        raw: Option<Spanned<RawSlack>>,
        top: &Origin,
    ) -> Result<Option<SlackConfig>, ConfigError> {
        const KEYS: &[&str] = &[
            "bot_token_file",
            "bot_token_env",
            "signing_secret_file",
            "signing_secret_env",
            "app_token_file",
            "app_token_env",
            "app_id",
            "team_id",
            "channel",
            "api_base_url",
            "response_url_prefix",
            "interactivity_path",
            "reviewers",
        ];
        let Some((at, raw)) = self.section("channels.slack", KEYS, raw, top) else {
            return Ok(None);
        };
        let p = |k: &str| format!("channels.slack.{k}");
        let bot_token = self.required_secret(
            &p("bot_token"),
            raw.bot_token,
            raw.bot_token_file,
            raw.bot_token_env,
            &at,
        )?;
        let signing_secret = self.required_secret(
            &p("signing_secret"),
            raw.signing_secret,
            raw.signing_secret_file,
            raw.signing_secret_env,
            &at,
        )?;
        let app_token = self.secret(
            &p("app_token"),
            raw.app_token,
            raw.app_token_file,
            raw.app_token_env,
            &at,
        )?;
        let id = |k: &str, v| -> Result<String, ConfigError> {
            let s = self.required(&p(k), self.text(&p(k), v), &at)?;
            nonblank(s)
        };
        let app_id = id("app_id", raw.app_id)?;
        let team_id = id("team_id", raw.team_id)?;
        let channel = id("channel", raw.channel)?;
        let api_base_url = self.text(&p("api_base_url"), raw.api_base_url);
        let response_url_prefix = self
            .text(&p("response_url_prefix"), raw.response_url_prefix)
            .map(|s| s.value);
        let interactivity_path = endpoint_path(
            self.text(&p("interactivity_path"), raw.interactivity_path),
            "/slack/interactivity",
        )?;
        let reviewers = self.reviewers(&p("reviewers"), raw.reviewers, &at)?;
        Ok(Some(SlackConfig {
            bot_token,
            signing_secret,
            app_token,
            app_id,
            team_id,
            channel,
            api_base_url,
            response_url_prefix,
            interactivity_path,
            reviewers,
            at,
        }))
    }

    fn teams(
        &self,
        raw: Option<Spanned<RawTeams>>,
        top: &Origin,
    ) -> Result<Option<TeamsConfig>, ConfigError> {
        const KEYS: &[&str] = &[
            "app_id",
            "app_secret_file",
            "app_secret_env",
            "tenant_id",
            "service_url",
            "conversation_id",
            "token_url",
            "openid_metadata_url",
            "messaging_path",
            "reviewers",
        ];
        let Some((at, raw)) = self.section("channels.teams", KEYS, raw, top) else {
            return Ok(None);
        };
        let p = |k: &str| format!("channels.teams.{k}");
        let app_secret = self.required_secret(
            &p("app_secret"),
            raw.app_secret,
            raw.app_secret_file,
            raw.app_secret_env,
            &at,
        )?;
        let id = |k: &str, v| -> Result<String, ConfigError> {
            let s = self.required(&p(k), self.text(&p(k), v), &at)?;
            nonblank(s)
        };
        let app_id = id("app_id", raw.app_id)?;
        let tenant_id = id("tenant_id", raw.tenant_id)?;
        let service_url = id("service_url", raw.service_url)?;
        let conversation_id = id("conversation_id", raw.conversation_id)?;
        let token_url = self.text(&p("token_url"), raw.token_url).map(|s| s.value);
        let openid_metadata_url = self
            .text(&p("openid_metadata_url"), raw.openid_metadata_url)
            .map(|s| s.value);
        let messaging_path = endpoint_path(
            self.text(&p("messaging_path"), raw.messaging_path),
            approvals_teams::DEFAULT_PATH,
        )?;
        let reviewers = self.reviewers(&p("reviewers"), raw.reviewers, &at)?;
        Ok(Some(TeamsConfig {
            app_id,
            app_secret,
            tenant_id,
            service_url,
            conversation_id,
            token_url,
            openid_metadata_url,
            messaging_path,
            reviewers,
            at,
        }))
    }

    fn webhook(
        &self,
        raw: Option<Spanned<RawWebhook>>,
        top: &Origin,
    ) -> Result<Option<WebhookConfig>, ConfigError> {
        const KEYS: &[&str] = &["url", "secret_file", "secret_env"];
        let Some((at, raw)) = self.section("channels.webhook", KEYS, raw, top) else {
            return Ok(None);
        };
        let url = self.required(
            "channels.webhook.url",
            self.text("channels.webhook.url", raw.url),
            &at,
        )?;
        let secret = self.required_secret(
            "channels.webhook.secret",
            raw.secret,
            raw.secret_file,
            raw.secret_env,
            &at,
        )?;
        Ok(Some(WebhookConfig { url, secret }))
    }
}

impl Resolver<'_> {
    fn oidc(
        &self,
        raw: Option<Spanned<RawOidc>>,
        top: &Origin,
    ) -> Result<Option<OidcSettings>, ConfigError> {
        const KEYS: &[&str] = &[
            "issuer",
            "client_id",
            "client_secret_file",
            "client_secret_env",
            "scopes",
            "identity_claim",
            "groups_claim",
            "reviewers",
            "session_ttl",
            "allowed_clock_skew",
            "display_name",
            "token_sign_in",
        ];
        let Some((at, raw)) = self.section("oidc", KEYS, raw, top) else {
            return Ok(None);
        };
        let p = |k: &str| format!("oidc.{k}");
        let required = |k: &str, v| -> Result<String, ConfigError> {
            nonblank(self.required(&p(k), self.text(&p(k), v), &at)?)
        };
        let issuer_setting =
            self.required(&p("issuer"), self.text(&p("issuer"), raw.issuer), &at)?;
        let issuer = nonblank(issuer_setting.clone())?;
        match url::Url::parse(&issuer) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => {}
            Ok(_) | Err(_) => {
                return Err(issuer_setting.error(
                    "must be the provider's issuer URL, for example https://login.example.com/realms/staff",
                ));
            }
        }
        let client_id = required("client_id", raw.client_id)?;
        let client_secret = self.secret(
            &p("client_secret"),
            raw.client_secret,
            raw.client_secret_file,
            raw.client_secret_env,
            &at,
        )?;
        let optional = |k: &str, v| -> Result<Option<String>, ConfigError> {
            self.text(&p(k), v).map(nonblank).transpose()
        };
        let identity_claim = optional("identity_claim", raw.identity_claim)?;
        let groups_claim = optional("groups_claim", raw.groups_claim)?;
        let display_name = optional("display_name", raw.display_name)?;
        let scopes = match (self.env)(&env_name(&p("scopes"))) {
            Some(list) => Some(split_list(&list)),
            None => raw.scopes.map(Spanned::into_inner),
        };
        let duration = |k: &str, v| -> Result<Option<Duration>, ConfigError> {
            self.text(&p(k), v)
                .map(|s| approvals_core::policy::parse_duration(&s.value).map_err(|e| s.error(e)))
                .transpose()
        };
        let session_ttl = duration("session_ttl", raw.session_ttl)?;
        if session_ttl.is_some_and(|d| d < Duration::from_secs(60)) {
            return Err(ConfigError {
                at: at.clone(),
                field: p("session_ttl"),
                message: "sessions must last at least a minute".into(),
            });
        }
        let allowed_clock_skew = duration("allowed_clock_skew", raw.allowed_clock_skew)?;
        let token_sign_in = match (self.env)(&env_name(&p("token_sign_in"))) {
            Some(v) => match v.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ConfigError {
                        at: Origin::Env(env_name(&p("token_sign_in"))),
                        field: p("token_sign_in"),
                        message: "must be true or false".into(),
                    });
                }
            },
            None => raw.token_sign_in.is_none_or(Spanned::into_inner),
        };
        let reviewers =
            if raw.reviewers.is_some() || (self.env)(&env_name(&p("reviewers"))).is_some() {
                Some(self.reviewers(&p("reviewers"), raw.reviewers, &at)?)
            } else {
                None
            };
        if let (Some(_), Some(r)) = (&groups_claim, &reviewers) {
            return Err(ConfigError {
                at: r.at.clone(),
                field: p("reviewers"),
                message: "give groups_claim (groups from the ID token) or reviewers (groups from this map, checked again at each decision), not both".into(),
            });
        }
        Ok(Some(OidcSettings {
            issuer,
            client_id,
            client_secret,
            scopes,
            identity_claim,
            groups_claim,
            reviewers,
            session_ttl,
            allowed_clock_skew,
            display_name,
            token_sign_in,
            at,
        }))
    }
}

fn nonblank(s: Setting<String>) -> Result<String, ConfigError> {
    if s.value.trim().is_empty() {
        Err(s.error("is empty"))
    } else {
        Ok(s.value.trim().to_owned())
    }
}

fn endpoint_path(s: Option<Setting<String>>, default: &str) -> Result<String, ConfigError> {
    match s {
        None => Ok(default.to_owned()),
        Some(s) => {
            let path = s.value.trim();
            let reserved = ["/v1", "/console", "/healthz", "/metrics", "/openapi.json"];
            if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', ' ']) {
                return Err(s.error("must be a path such as /slack/interactivity"));
            }
            if reserved
                .iter()
                .any(|r| path == *r || path.starts_with(&format!("{r}/")))
            {
                return Err(s.error(format!(
                    "{path} is served by the review API; choose another path"
                )));
            }
            Ok(path.to_owned())
        }
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `U024BE7LH=sam@example.com:security+sre,U0G9QF9C6=alex@example.com:security`.
fn parse_reviewers(spec: &str) -> Result<Vec<(String, Principal)>, String> {
    let mut out = Vec::new();
    for entry in split_list(spec) {
        let (user, rest) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not USER_ID=person@example.com:group+group"))?;
        let (id, groups) = rest.split_once(':').unwrap_or((rest, ""));
        if user.trim().is_empty() || id.trim().is_empty() {
            return Err(format!(
                "{entry:?} is not USER_ID=person@example.com:group+group"
            ));
        }
        let groups = groups
            .split('+')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned);
        out.push((
            user.trim().to_owned(),
            Principal::human(id.trim()).with_groups(groups),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_names_nest_with_double_underscores() {
        assert_eq!(env_name("store"), "APPROVALS_STORE");
        assert_eq!(
            env_name("channels.slack.bot_token_file"),
            "APPROVALS_CHANNELS__SLACK__BOT_TOKEN_FILE"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line_and_table() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(
            dir.path(),
            "approvals.toml",
            "policy = \"p.toml\"\n\n[channels.slack]\nchanel = \"C1\"\n",
        );
        let e = load(&path, &no_env).expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains("approvals.toml:4:1: channels.slack.chanel: unknown field `chanel`"),
            "{text}"
        );
    }

    #[test]
    fn the_example_config_loads_with_its_secrets_from_files_and_variables() {
        let dir = tempfile::tempdir().expect("dir");
        let bot = write(dir.path(), "bot", "xoxb-example\n");
        let teams = write(dir.path(), "teams", "teams-secret");
        let env = |name: &str| match name {
            "APPROVALS_CHANNELS__SLACK__BOT_TOKEN_FILE" => Some(bot.display().to_string()),
            "APPROVALS_CHANNELS__TEAMS__APP_SECRET_FILE" => Some(teams.display().to_string()),
            "APPROVALS_STORE" => Some("sqlite://override.db".to_owned()),
            "SLACK_SIGNING_SECRET" => Some("signing".to_owned()),
            "PAGER_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            _ => None,
        };
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/approvals.toml");
        let config = load(&example, &env).expect("the example loads");
        assert_eq!(config.store.value, "sqlite://override.db");
        assert_eq!(config.store.at, Origin::Env("APPROVALS_STORE".into()));
        let slack = config.slack.expect("slack");
        assert_eq!(slack.bot_token.expose(), "xoxb-example");
        assert_eq!(slack.reviewers.entries.len(), 2);
        assert!(
            !format!("{slack:?}").contains("xoxb-example"),
            "secrets are not printed"
        );
        assert_eq!(
            config.teams.expect("teams").app_secret.expose(),
            "teams-secret"
        );
        assert!(config.webhook.is_some());
        assert_eq!(
            config.passkeys.map(|p| p.value),
            Some(PathBuf::from("/var/lib/approvals/passkeys.json"))
        );
    }

    fn base(dir: &Path, oidc: &str) -> PathBuf {
        write(
            dir,
            "approvals.toml",
            &format!(
                "policy = \"p.toml\"\nstore = \"sqlite://x.db\"\naudit_key = \"k\"\ntokens = \"t.toml\"\npublic_url = \"https://approvals.example.com/\"\n\n[oidc]\n{oidc}"
            ),
        )
    }

    #[test]
    fn the_oidc_section_loads_with_its_secret_from_a_variable() {
        let dir = tempfile::tempdir().expect("dir");
        let path = base(
            dir.path(),
            "issuer = \"https://login.example.com/realms/staff\"\nclient_id = \"approvals-console\"\nclient_secret_env = \"OIDC_SECRET\"\ngroups_claim = \"groups\"\nscopes = [\"openid\", \"email\", \"groups\"]\nsession_ttl = \"30m\"\ntoken_sign_in = false\n",
        );
        let env = |name: &str| (name == "OIDC_SECRET").then(|| "s3cret".to_owned());
        let config = load(&path, &env).expect("loads");
        let oidc = config.oidc.expect("oidc");
        assert_eq!(oidc.issuer, "https://login.example.com/realms/staff");
        assert_eq!(
            oidc.client_secret.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert_eq!(oidc.session_ttl, Some(Duration::from_secs(1800)));
        assert!(!oidc.token_sign_in);
        assert!(
            !format!("{oidc:?}").contains("s3cret"),
            "secrets are not printed"
        );
        let built = format!(
            "{:?}",
            oidc.config(config.public_url.as_ref().expect("url"))
        );
        assert!(
            built.contains("claim groups") && !built.contains("s3cret"),
            "{built}"
        );
    }

    #[test]
    fn oidc_mistakes_are_refused_with_their_place() {
        let dir = tempfile::tempdir().expect("dir");
        let cases = [
            ("client_id = \"c\"\n", "oidc.issuer: missing"),
            (
                "issuer = \"login.example.com\"\nclient_id = \"c\"\n",
                "oidc.issuer: must be the provider's issuer URL",
            ),
            (
                "issuer = \"https://l.example.com\"\nclient_id = \"c\"\nclient_secret = \"inline\"\n",
                "secrets are not written in the configuration file",
            ),
            (
                "issuer = \"https://l.example.com\"\nclient_id = \"c\"\nclient_secret_env = \"UNSET_VAR\"\n",
                "UNSET_VAR is not set",
            ),
            (
                "issuer = \"https://l.example.com\"\nclient_id = \"c\"\ngroups_claim = \"groups\"\n[oidc.reviewers]\n\"a@example.com\" = { id = \"a@example.com\" }\n",
                "not both",
            ),
            (
                "issuer = \"https://l.example.com\"\nclient_id = \"c\"\nsession_ttl = \"5s\"\n",
                "at least a minute",
            ),
            (
                "issuer = \"https://l.example.com\"\nclient = \"c\"\n",
                "unknown field `client`",
            ),
        ];
        for (section, expected) in cases {
            let path = base(dir.path(), section);
            let e = load(&path, &no_env).expect_err(section).to_string();
            assert!(e.contains(expected), "{section}: {e}");
            assert!(!e.contains("inline\""), "{e}");
        }
        // Without public_url there is nowhere to come back to.
        let path = write(
            dir.path(),
            "approvals.toml",
            "policy = \"p.toml\"\nstore = \"sqlite://x.db\"\naudit_key = \"k\"\ntokens = \"t.toml\"\n[oidc]\nissuer = \"https://l.example.com\"\nclient_id = \"c\"\n",
        );
        let e = load(&path, &no_env).expect_err("refused").to_string();
        assert!(e.contains("public_url: [oidc] needs public_url"), "{e}");
    }

    #[test]
    fn env_overrides_the_file_and_reviewers_parse_from_env() {
        let entries = parse_reviewers("U1=sam@example.com:security+sre, U2=alex@example.com")
            .expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].1.groups.len(), 2);
        assert!(parse_reviewers("U1").is_err());
    }
}
