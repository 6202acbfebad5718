//! Bearer tokens: stored as SHA-256 hashes, each mapped to one principal (and, for an agent
//! or service, the initiator it submits actions as).

use std::collections::HashMap;
use std::path::Path;

use approvals_core::{Initiator, InvalidIdentity, Principal, PrincipalKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Prefix of tokens made by [`generate_token`], so leaked tokens are easy to grep for.
pub const TOKEN_PREFIX: &str = "apr_";

/// The SHA-256 of a token, which is all the server keeps.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a token.
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses the lowercase hex form (64 characters).
    pub fn parse_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s.trim()).ok()?;
        Some(TokenHash(bytes.try_into().ok()?))
    }

    /// The lowercase hex form.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not secret, but there is no reason to spread it either.
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// A new random token (256 bits, URL-safe base64, `apr_` prefix).
pub fn generate_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The principals that API tokens stand for, keyed by the SHA-256 of the token.
///
/// Tokens themselves are never stored, logged or shown; a lookup hashes the presented token
/// and looks the hash up in a map. Principals are kept in canonical form
/// ([`Principal::normalized`]): a principal whose id or groups cannot be compared safely
/// (invisible, bidi-control or mixed-script characters) is refused when the file loads, and
/// never authenticates.
///
/// ```
/// use approvals_core::Principal;
/// use approvals_http::Tokens;
///
/// let tokens = Tokens::new()
///     .with_token("s3cret-for-sam", Principal::human("sam@example.com").with_groups(["security"]))
///     .with_token("s3cret-for-bot", Principal::agent("billing-agent"));
/// assert_eq!(tokens.principal("s3cret-for-sam").map(|p| p.id.as_str()), Some("sam@example.com"));
/// assert!(tokens.principal("guess").is_none());
/// ```
#[derive(Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<TokenHash, Holder>,
}

/// Who a token stands for: the principal, and for an agent or service the human it acts for
/// and its model, as configured (never taken from a request).
#[derive(Clone, Debug)]
struct Holder {
    principal: Principal,
    on_behalf_of: Option<Principal>,
    model: Option<String>,
}

/// Longest model name accepted in a token file, in characters.
pub const MAX_MODEL_CHARS: usize = 128;

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.by_hash.len())
            .finish()
    }
}

impl Tokens {
    /// No tokens: every request is unauthenticated.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token (hashed at once). See [`with_hash`](Tokens::with_hash).
    pub fn with_token(self, token: &str, principal: Principal) -> Self {
        self.with_hash(TokenHash::of(token), principal)
    }

    /// Adds a token by its hash, for `principal` in canonical form. A principal whose id or
    /// groups fail [`Principal::validate`] is not added, so its token authenticates nobody;
    /// [`try_with_hash`](Tokens::try_with_hash) reports it instead.
    pub fn with_hash(mut self, hash: TokenHash, principal: Principal) -> Self {
        match principal.normalized() {
            Ok(principal) => {
                self.by_hash.insert(
                    hash,
                    Holder {
                        principal,
                        on_behalf_of: None,
                        model: None,
                    },
                );
            }
            Err(_) => {
                self.by_hash.remove(&hash);
            }
        }
        self
    }

    /// Adds an agent or service token that submits actions as `initiator`: its principal, the
    /// human it acts for and its model (the initiator's session and prompt reference are not
    /// kept; a caller adds its own per request). An initiator that is refused (a human as the
    /// principal, an `on_behalf_of` that is not a human, an id that cannot be compared safely,
    /// a model name over [`MAX_MODEL_CHARS`]) is not added, so its token authenticates nobody;
    /// [`try_with_initiator`](Tokens::try_with_initiator) reports why instead.
    ///
    /// ```
    /// use approvals_core::{Initiator, Principal};
    /// use approvals_http::Tokens;
    ///
    /// let tokens = Tokens::new().with_initiator(
    ///     "s3cret-for-bot",
    ///     Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
    /// );
    /// let initiator = tokens.initiator("s3cret-for-bot").expect("an agent token");
    /// assert_eq!(initiator.on_behalf_of.map(|h| h.id).as_deref(), Some("dana@example.com"));
    /// ```
    pub fn with_initiator(mut self, token: &str, initiator: Initiator) -> Self {
        let hash = TokenHash::of(token);
        match initiator_holder(initiator) {
            Ok(holder) => {
                self.by_hash.insert(hash, holder);
            }
            Err(_) => {
                self.by_hash.remove(&hash);
            }
        }
        self
    }

    /// Like [`with_initiator`](Tokens::with_initiator) with the token's hash, refusing an
    /// initiator that cannot stand for a token, with the reason.
    pub fn try_with_initiator_hash(
        mut self,
        hash: TokenHash,
        initiator: Initiator,
    ) -> Result<Self, TokenFileError> {
        let holder = initiator_holder(initiator)?;
        self.by_hash.insert(hash, holder);
        Ok(self)
    }

    /// Like [`with_hash`](Tokens::with_hash), but refuses a principal that cannot be compared
    /// safely, naming the character.
    pub fn try_with_hash(
        self,
        hash: TokenHash,
        principal: Principal,
    ) -> Result<Self, InvalidIdentity> {
        principal.validate()?;
        Ok(self.with_hash(hash, principal))
    }

    /// The principal for a presented token.
    pub fn principal(&self, token: &str) -> Option<&Principal> {
        self.principal_by_hash(&TokenHash::of(token))
    }

    /// The principal for a token hash.
    pub fn principal_by_hash(&self, hash: &TokenHash) -> Option<&Principal> {
        self.by_hash.get(hash).map(|h| &h.principal)
    }

    /// The initiator an agent or service token submits actions as: its principal, with the
    /// `on_behalf_of` human and model configured for the token. `None` for an unknown token
    /// and for a human's token (humans review; agents and services ask).
    pub fn initiator(&self, token: &str) -> Option<Initiator> {
        self.initiator_by_hash(&TokenHash::of(token))
    }

    /// [`initiator`](Tokens::initiator) for a token hash.
    pub fn initiator_by_hash(&self, hash: &TokenHash) -> Option<Initiator> {
        let holder = self.by_hash.get(hash)?;
        if holder.principal.kind == PrincipalKind::Human {
            return None;
        }
        let mut initiator = Initiator::from_principal(holder.principal.clone());
        initiator.on_behalf_of = holder.on_behalf_of.clone();
        initiator.model = holder.model.clone();
        Some(initiator)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Parses a token file (TOML):
    ///
    /// ```toml
    /// [[token]]
    /// sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    /// principal = { kind = "human", id = "sam@example.com", display_name = "Sam", groups = ["security"] }
    ///
    /// [[token]]
    /// sha256 = "…"
    /// principal = { kind = "agent", id = "billing-agent" }
    /// # optional, agents and services only: who the agent acts for, and its model
    /// on_behalf_of = { kind = "human", id = "dana@example.com" }
    /// model = "claude-opus-4"
    /// ```
    ///
    /// A human's token reviews; an agent's or service's token submits actions through the agent
    /// API (`POST /v1/requests`) as the initiator its entry names: its `principal`, acting
    /// `on_behalf_of` that human (who can then never approve its requests), with that `model`.
    /// Both are optional and come only from this file, never from a request. `on_behalf_of`
    /// must be a human, and neither is accepted on a human's entry. Files without them read as
    /// before.
    ///
    /// `approvals token new` prints such entries. Two entries with one hash are refused.
    pub fn from_toml(text: &str) -> Result<Self, TokenFileError> {
        let file: TokenFile =
            toml::from_str(text).map_err(|e| TokenFileError(format!("invalid token file: {e}")))?;
        let mut tokens = Tokens::new();
        for (i, entry) in file.token.into_iter().enumerate() {
            let hash = TokenHash::parse_hex(&entry.sha256).ok_or_else(|| {
                TokenFileError(format!(
                    "token entry {} has sha256 {:?}: expected 64 hex characters (the SHA-256 of the token, not the token)",
                    i + 1,
                    entry.sha256.chars().take(12).collect::<String>()
                ))
            })?;
            let holder = holder(entry.principal, entry.on_behalf_of, entry.model)
                .map_err(|e| TokenFileError(format!("token entry {}: {}", i + 1, e.0)))?;
            if tokens.by_hash.contains_key(&hash) {
                return Err(TokenFileError(format!(
                    "token entry {} repeats a token hash already in the file; each token must map to one principal",
                    i + 1
                )));
            }
            tokens.by_hash.insert(hash, holder);
        }
        Ok(tokens)
    }

    /// Reads a token file; see [`from_toml`](Tokens::from_toml).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            TokenFileError(format!("cannot read token file {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }
}

/// The fields every `[[token]]` entry of a token file has (what `approvals token new`
/// prints). An agent's or service's entry may add `on_behalf_of` and `model`; see
/// [`Tokens::from_toml`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// Who the token stands for.
    pub principal: Principal,
}

/// One `[[token]]` entry as read: [`TokenEntry`] and the agent's initiator fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    sha256: String,
    principal: Principal,
    #[serde(default)]
    on_behalf_of: Option<Principal>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<FileEntry>,
}

/// An agent's or service's token for `initiator`; a human is refused.
fn initiator_holder(initiator: Initiator) -> Result<Holder, TokenFileError> {
    if initiator.principal.kind == PrincipalKind::Human {
        return Err(TokenFileError(format!(
            "{} is a human: humans review, so their tokens stand for a principal (with_token), not an initiator",
            initiator.principal.id
        )));
    }
    holder(initiator.principal, initiator.on_behalf_of, initiator.model)
}

/// Who a token stands for, checked and in canonical form.
fn holder(
    principal: Principal,
    on_behalf_of: Option<Principal>,
    model: Option<String>,
) -> Result<Holder, TokenFileError> {
    let principal = principal
        .normalized()
        .map_err(|e| TokenFileError(format!("the principal is refused: {e}")))?;
    let agent = principal.kind != PrincipalKind::Human;
    if !agent && (on_behalf_of.is_some() || model.is_some()) {
        return Err(TokenFileError(format!(
            "{} is a human; on_behalf_of and model belong on an agent's or service's token",
            principal.id
        )));
    }
    let on_behalf_of = match on_behalf_of {
        None => None,
        Some(human) if human.kind != PrincipalKind::Human => {
            return Err(TokenFileError(format!(
                "on_behalf_of must be a human, not the {} {:?}",
                human.kind, human.id
            )));
        }
        Some(human) => Some(
            human
                .normalized()
                .map_err(|e| TokenFileError(format!("on_behalf_of is refused: {e}")))?,
        ),
    };
    if let Some(model) = &model
        && (model.trim().is_empty()
            || model.chars().count() > MAX_MODEL_CHARS
            || model.chars().any(char::is_control))
    {
        return Err(TokenFileError(format!(
            "model must be 1 to {MAX_MODEL_CHARS} characters on one line"
        )));
    }
    Ok(Holder {
        principal,
        on_behalf_of,
        model,
    })
}

/// A token file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenFileError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_errors() {
        let hash = TokenHash::of("t1").to_hex();
        let text = format!(
            "[[token]]\nsha256 = \"{hash}\"\nprincipal = {{ kind = \"human\", id = \"sam\", groups = [\"sec\"] }}\n"
        );
        let tokens = Tokens::from_toml(&text).expect("valid");
        assert_eq!(tokens.principal("t1").map(|p| p.id.as_str()), Some("sam"));
        assert!(tokens.principal("t2").is_none());

        let twice = format!("{text}{text}");
        assert!(Tokens::from_toml(&twice).is_err());
        let raw = text.replace(&hash, "t1");
        let err = Tokens::from_toml(&raw).expect_err("raw token is not a hash");
        assert!(err.0.contains("64 hex"), "{err}");
    }

    #[test]
    fn token_file_principals_are_refused_or_kept_in_canonical_form() {
        let entry = |id: &str, groups: &str| {
            format!(
                "[[token]]\nsha256 = \"{}\"\nprincipal = {{ kind = \"human\", id = \"{id}\", groups = [{groups}] }}\n",
                TokenHash::of("t1").to_hex()
            )
        };
        let tokens =
            Tokens::from_toml(&entry(" Sam@Example.COM. ", "\"Security\"")).expect("valid");
        let sam = tokens.principal("t1").expect("sam");
        assert_eq!(
            (sam.id.as_str(), sam.groups.as_slice()),
            ("sam@example.com", ["security".to_owned()].as_slice())
        );
        for (id, groups, code_point) in [
            ("sam\\u200B@example.com", "", "U+200B"),
            ("\\u202Esam@example.com", "", "U+202E"),
            ("s\\u0430m@example.com", "", "U+0430"),
            ("sam@example.com", "\"sec\\uFEFF\"", "U+FEFF"),
            ("", "", "cannot be empty"),
            ("  ", "", "cannot be empty"),
        ] {
            let err = Tokens::from_toml(&entry(id, groups)).expect_err("refused");
            assert!(
                err.0.contains("token entry 1") && err.0.contains(code_point),
                "{id:?}: {err}"
            );
        }
    }

    #[test]
    fn a_principal_added_in_code_that_cannot_be_compared_never_authenticates() {
        let tokens = Tokens::new()
            .with_token("t1", Principal::human("s\u{0430}m@example.com"))
            .with_token("t2", Principal::human("KIM@example.com"));
        assert!(tokens.principal("t1").is_none());
        assert_eq!(
            tokens.principal("t2").map(|p| p.id.as_str()),
            Some("kim@example.com")
        );
        let err = Tokens::new()
            .try_with_hash(TokenHash::of("t3"), Principal::agent("bot\u{2066}"))
            .expect_err("refused");
        assert_eq!(err.code_point(), Some('\u{2066}'));
    }

    #[test]
    fn agent_entries_carry_their_initiator_and_old_files_read_as_before() {
        let hash = |t: &str| TokenHash::of(t).to_hex();
        let text = format!(
            "[[token]]\nsha256 = \"{}\"\nprincipal = {{ kind = \"agent\", id = \"Billing-Agent\" }}\non_behalf_of = {{ kind = \"human\", id = \"Dana@Example.com\" }}\nmodel = \"claude-opus-4\"\n\n[[token]]\nsha256 = \"{}\"\nprincipal = {{ kind = \"service\", id = \"deploy\" }}\n\n[[token]]\nsha256 = \"{}\"\nprincipal = {{ kind = \"human\", id = \"sam\" }}\n",
            hash("bot"),
            hash("svc"),
            hash("sam")
        );
        let tokens = Tokens::from_toml(&text).expect("valid");
        let bot = tokens.initiator("bot").expect("agent");
        assert_eq!(bot.principal.id, "billing-agent");
        assert_eq!(
            bot.on_behalf_of.as_ref().map(|h| h.id.as_str()),
            Some("dana@example.com")
        );
        assert_eq!(bot.model.as_deref(), Some("claude-opus-4"));
        let svc = tokens.initiator("svc").expect("service");
        assert!(svc.on_behalf_of.is_none() && svc.model.is_none());
        assert!(tokens.initiator("sam").is_none(), "humans do not submit");
        assert_eq!(tokens.principal("sam").map(|p| p.id.as_str()), Some("sam"));

        for (entry, expected) in [
            (
                "principal = { kind = \"human\", id = \"sam\" }\non_behalf_of = { kind = \"human\", id = \"dana\" }",
                "is a human",
            ),
            (
                "principal = { kind = \"agent\", id = \"bot\" }\non_behalf_of = { kind = \"agent\", id = \"boss\" }",
                "must be a human",
            ),
            (
                "principal = { kind = \"agent\", id = \"bot\" }\non_behalf_of = { kind = \"human\", id = \"d\\u0430na\" }",
                "U+0430",
            ),
            (
                "principal = { kind = \"agent\", id = \"bot\" }\nmodel = \"\"",
                "model must be",
            ),
            (
                "principal = { kind = \"agent\", id = \"bot\" }\ninitiator = \"x\"",
                "unknown field",
            ),
        ] {
            let text = format!("[[token]]\nsha256 = \"{}\"\n{entry}\n", hash("t"));
            let err = Tokens::from_toml(&text).expect_err("refused");
            assert!(err.0.contains(expected), "{entry}: {err}");
        }
        let refused =
            Tokens::new().with_initiator("h", Initiator::from_principal(Principal::human("sam")));
        assert!(refused.is_empty(), "a human is no initiator");
    }

    #[test]
    fn generated_tokens_are_distinct_and_prefixed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
    }
}
