//! `RulePolicy`: first-match rules loaded from TOML or JSON, compiled once for speed.
//!
//! ```toml
//! version = 1
//! default = "deny"            # or "allow", or a table like a rule's outcome
//!
//! [[rules]]
//! name = "reads-are-free"
//! kind = "*.read"
//! effect = "allow"
//!
//! [[rules]]
//! name = "customer-exports"
//! kind = "data.export"
//! resource = "db://prod/*"
//! environment = "production"
//! initiator = { kind = "agent" }
//! when = [{ param = "rows", gt = 1000 }]
//! effect = "require_approval"
//! approvers = { groups = ["data-owners"] }
//! quorum = 1
//! timeout = "30m"
//! escalate = { after = "10m", groups = ["security-oncall"] }
//! cooldown_after_denial = "4h"
//! remind_at = ["50%", "90%"]
//! standing_grant_max = "8h"
//! standing_grant_max_uses = 50
//! editable = ["rows", "columns"]
//!
//! [[rules]]
//! name = "iam-changes"
//! kind = "iam.*"
//! effect = "require_approval"
//! approvers = { groups = ["security"] }
//! step_up = "passkey"
//!
//! [[rules]]
//! name = "no-drops"
//! kind = "db.schema.*"
//! when = [{ param = "statement", matches = "DROP *" }]
//! effect = "deny"
//! reason = "Dropping tables needs a change ticket; ask the DBA team."
//! ```
//!
//! Rules are tried in file order and the first rule whose every condition matches decides.
//! When none matches, `default` decides; it must be written out, so a policy never allows
//! by accident. Conditions: `kind` and `resource` are globs (`*` any run, `?` one character)
//! or lists of globs; `environment` matches the request context's environment exactly (a
//! request without one never matches a rule that names one); `initiator` matches the
//! initiator's `kind`, `id` (glob), `on_behalf_of` (glob) and `model` (glob); each `when`
//! predicate names a parameter by dotted path (`target.role`) or JSON pointer (`/items/0`)
//! and one operator: `eq`, `ne`, `in`, `not_in`, `gt`, `gte`, `lt`, `lte` (numbers) or
//! `matches` (glob on a string). A predicate on a parameter that is absent is false.
//!
//! `cooldown_after_denial` (at most 30 days): once a reviewer denies an action under this
//! rule, the same action ([`ActionRequest::action_key`](crate::request::ActionRequest::action_key):
//! what would run and for whom, not the words around it) is refused at once for that long,
//! with the reviewer's reason, and nobody is asked again.
//!
//! `remind_at`: reviewers of a request still pending are reminded at these points of its
//! `timeout` (percentages from 1% to 99%, at most 10), once each: a threaded reply in Slack, a
//! reminder line on the Teams card, an `approval.reminder` webhook event; each audited as
//! `reminded`.
//!
//! `standing_grant_max` (at most 30 days) and `standing_grant_max_uses` (1 to 10,000; 100 when
//! not given): reviewers may approve a standing grant under this rule, for one initiator, this
//! kind and a resource pattern, lasting at most that long and approving at most that many
//! actions ([`standing`](crate::standing)). The grant needs this rule's approvers and quorum;
//! without these keys every action is asked for on its own.
//!
//! `editable` (at most 20 parameter paths, dotted or JSON pointers, each naming a parameter
//! the action has): a reviewer may change these parameters before approving, and nothing else
//! ([`edit`](crate::edit)). The policy is asked again about the edited action, which has its
//! own digest and needs the quorum again. Without this key, an action is approved or denied
//! as it was asked for.
//!
//! `step_up = "passkey"`: each approval must carry a WebAuthn assertion with user
//! verification from a passkey the reviewer registered in the console, whose challenge is
//! bound to the request and its digest ([`step_up`](crate::step_up)). Chat channels send
//! their reviewers to the console for it; a deny needs no proof. It cannot be combined with
//! `editable` or `standing_grant_max`, which would approve actions nobody proved.
//!
//! Approver and escalation `users` and `groups` are checked when the file loads: an id or
//! group name with invisible, bidi-control or mixed-script characters is refused with the rule
//! and entry named (see [`identity`](crate::identity)), and the loaded requirement holds their
//! canonical forms (`Sam@Example.com` becomes `sam@example.com`). The `initiator` globs (`id`,
//! `on_behalf_of`, `model`) match canonical forms too ([`canonical_key`](identity::canonical_key) of the pattern and of
//! the request's value): `id = "billing-*"` matches `Billing-Agent` and `ｂｉｌｌｉｎｇ-agent`,
//! so no spelling of an id escapes a rule written for it.

use arcstr::ArcStr;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::duration::parse_duration;
use super::glob::Glob;
use super::index::RuleIndex;
use super::{Decision, Escalation, Policy, PolicyError, Requirement, StandingLimit};
use crate::edit;
use crate::identity;
use crate::request::{ActionRequest, PrincipalKind, canonical_json};
use crate::step_up::StepUp;

const DEFAULT_TIMEOUT: &str = "1h";
/// The longest `cooldown_after_denial` a rule may set.
const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest `standing_grant_max` a rule may set.
const MAX_STANDING: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most `standing_grant_max_uses` a rule may set.
pub(crate) const MAX_STANDING_USES: u32 = 10_000;
/// `standing_grant_max_uses` when a rule sets only `standing_grant_max`.
const DEFAULT_STANDING_USES: u32 = 100;
/// The most parameters one rule may let reviewers edit.
const MAX_EDITABLE: usize = 20;

/// A policy file could not be loaded. Says where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct PolicyLoadError {
    /// The file name, or `<string>`.
    pub source_name: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for PolicyLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy {}", self.source_name)?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, " at line {line}, column {col}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// First-match rule policy. See the [module docs](self) for the file format.
#[derive(Debug, Clone)]
pub struct RulePolicy {
    rules: Vec<CompiledRule>,
    index: RuleIndex,
    default: CompiledOutcome,
    version: String,
}

impl RulePolicy {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, PolicyLoadError> {
        Self::from_toml_named(text, "<string>")
    }

    /// Parses JSON.
    pub fn from_json(text: &str) -> Result<Self, PolicyLoadError> {
        Self::from_json_named(text, "<string>")
    }

    /// Loads a `.toml` or `.json` file (by extension; anything else is read as TOML).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PolicyLoadError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyLoadError {
            source_name: name.clone(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::from_json_named(&text, &name)
        } else {
            Self::from_toml_named(&text, &name)
        }
    }

    fn from_toml_named(text: &str, name: &str) -> Result<Self, PolicyLoadError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_col(text, span.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            PolicyLoadError {
                source_name: name.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        Self::compile(file, name)
    }

    fn from_json_named(text: &str, name: &str) -> Result<Self, PolicyLoadError> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| PolicyLoadError {
            source_name: name.to_owned(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: strip_json_position(&e.to_string()),
        })?;
        Self::compile(file, name)
    }

    fn compile(file: PolicyFile, name: &str) -> Result<Self, PolicyLoadError> {
        let whole_file_error = |message: String| PolicyLoadError {
            source_name: name.to_owned(),
            line: None,
            column: None,
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for rule in &file.rules {
            if !seen.insert(rule.0.name.as_str()) {
                return Err(whole_file_error(format!(
                    "two rules are named {:?}; give every rule a unique name (it is recorded with each decision)",
                    rule.0.name
                )));
            }
        }
        // The version hash covers the parsed rules, so the same rules in TOML or JSON, or
        // with other comments and spacing, have the same version.
        let value = serde_json::to_value(&file).map_err(|e| whole_file_error(e.to_string()))?;
        let version = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(canonical_json(&value)))
        );
        let specs: Vec<RuleSpec> = file.rules.into_iter().map(|r| r.0).collect();
        let index = RuleIndex::build(specs.iter().map(|r| {
            let patterns =
                |p: &Option<OneOrMany>| p.as_ref().map(OneOrMany::to_vec).unwrap_or_default();
            (patterns(&r.kind), patterns(&r.resource))
        }));
        let rules = specs.iter().map(RuleSpec::compile).collect();
        let default = file.default.0.compile_outcome(None);
        Ok(RulePolicy {
            rules,
            index,
            default,
            version,
        })
    }

    /// Number of rules (not counting the default).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (only the default).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Policy for RulePolicy {
    fn evaluate(&self, request: &ActionRequest) -> Result<Decision, PolicyError> {
        let outcome = self
            .index
            .candidates(&request.kind, &request.resource)
            .map(|i| &self.rules[i])
            .find(|rule| rule.matches(request))
            .map_or(&self.default, |rule| &rule.outcome);
        Ok(outcome.to_decision())
    }

    fn version(&self) -> &str {
        &self.version
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// File format (what serde reads). Validation happens in `TryFrom` so errors carry locations.

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(deserialize_with = "format_version")]
    version: u32,
    default: CheckedDefault,
    #[serde(default)]
    rules: Vec<CheckedRule>,
}

fn format_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v != 1 {
        return Err(serde::de::Error::custom(format!(
            "policy format version {v} is not supported; this library reads version = 1"
        )));
    }
    Ok(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Effect {
    Allow,
    Deny,
    RequireApproval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "default must be \"allow\", \"deny\", or a table with effect = ... like a rule's outcome"
)]
enum DefaultSpec {
    Effect(Effect),
    Outcome(Box<OutcomeSpec>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "DefaultSpec", into = "DefaultSpec")]
struct CheckedDefault(OutcomeSpec);

impl TryFrom<DefaultSpec> for CheckedDefault {
    type Error = String;
    fn try_from(spec: DefaultSpec) -> Result<Self, String> {
        let outcome = match spec {
            DefaultSpec::Effect(Effect::RequireApproval) => {
                return Err("default = \"require_approval\" needs approvers: write it as a table, e.g. default = { effect = \"require_approval\", approvers = { groups = [\"security\"] } }".into());
            }
            DefaultSpec::Effect(effect) => OutcomeSpec {
                effect,
                reason: (effect == Effect::Deny)
                    .then(|| "no policy rule matched this action".to_owned()),
                ..OutcomeSpec::default()
            },
            DefaultSpec::Outcome(outcome) => *outcome,
        };
        outcome.check("the default")?;
        Ok(CheckedDefault(outcome))
    }
}

impl From<CheckedDefault> for DefaultSpec {
    fn from(d: CheckedDefault) -> Self {
        DefaultSpec::Outcome(Box::new(d.0))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approvers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateSpec {
    after: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeSpec {
    effect: Effect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approvers: Option<Approvers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quorum: Option<u32>,
    #[serde(default)]
    reason_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    escalate: Option<EscalateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cooldown_after_denial: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    remind_at: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    standing_grant_max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    standing_grant_max_uses: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    editable: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_up: Option<StepUp>,
}

impl Default for OutcomeSpec {
    fn default() -> Self {
        OutcomeSpec {
            effect: Effect::Deny,
            reason: None,
            approvers: None,
            quorum: None,
            reason_required: false,
            timeout: None,
            escalate: None,
            cooldown_after_denial: None,
            remind_at: Vec::new(),
            standing_grant_max: None,
            standing_grant_max_uses: None,
            editable: Vec::new(),
            step_up: None,
        }
    }
}

impl OutcomeSpec {
    /// Checks the outcome fields fit the effect; `who` names the rule in messages.
    fn check(&self, who: &str) -> Result<(), String> {
        let approval_only = self.approvers.is_some()
            || self.quorum.is_some()
            || self.timeout.is_some()
            || self.escalate.is_some()
            || self.cooldown_after_denial.is_some()
            || !self.remind_at.is_empty()
            || self.standing_grant_max.is_some()
            || self.standing_grant_max_uses.is_some()
            || !self.editable.is_empty()
            || self.step_up.is_some()
            || self.reason_required;
        match self.effect {
            Effect::Allow | Effect::Deny if approval_only => Err(format!(
                "{who}: approvers, quorum, timeout, escalate, cooldown_after_denial, remind_at, standing_grant_max, standing_grant_max_uses, editable, step_up and reason_required only apply to effect = \"require_approval\""
            )),
            Effect::Deny if self.reason.as_deref().is_none_or(|r| r.trim().is_empty()) => {
                Err(format!(
                    "{who}: effect = \"deny\" needs reason = \"...\" telling the caller why and what to do instead"
                ))
            }
            Effect::Allow if self.reason.is_some() => {
                Err(format!("{who}: reason only applies to effect = \"deny\""))
            }
            Effect::RequireApproval => self.check_approval(who),
            _ => Ok(()),
        }
    }

    fn check_approval(&self, who: &str) -> Result<(), String> {
        let approvers = self.approvers.clone().unwrap_or_default();
        if approvers.users.is_empty() && approvers.groups.is_empty() {
            return Err(format!(
                "{who}: effect = \"require_approval\" needs approvers = {{ users = [...], groups = [...] }} with at least one entry"
            ));
        }
        check_identities(who, "approvers", &approvers.users, &approvers.groups)?;
        let quorum = self.quorum.unwrap_or(1);
        if quorum == 0 {
            return Err(format!("{who}: quorum must be at least 1"));
        }
        // One person counts once toward a quorum, under any spelling or look-alike of the id.
        let people: std::collections::HashSet<String> = approvers
            .users
            .iter()
            .map(|u| identity::identity_key(u))
            .collect();
        if approvers.groups.is_empty() && (quorum as usize) > people.len() {
            return Err(format!(
                "{who}: quorum = {quorum} can never be met by {} distinct listed user(s) (spellings or look-alikes of one id count once); add users or groups, or lower the quorum",
                people.len()
            ));
        }
        let timeout = parse_duration(self.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT))
            .map_err(|e| format!("{who}: timeout: {e}"))?;
        if timeout.is_zero() {
            return Err(format!("{who}: timeout must be longer than zero"));
        }
        if let Some(esc) = &self.escalate {
            let after =
                parse_duration(&esc.after).map_err(|e| format!("{who}: escalate.after: {e}"))?;
            if after >= timeout {
                return Err(format!(
                    "{who}: escalate.after ({}) must be shorter than timeout ({}), or the request expires first",
                    esc.after,
                    self.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT)
                ));
            }
            if esc.users.is_empty() && esc.groups.is_empty() {
                return Err(format!(
                    "{who}: escalate needs users or groups to escalate to"
                ));
            }
            check_identities(who, "escalate", &esc.users, &esc.groups)?;
        }
        reminder_points(&self.remind_at).map_err(|e| format!("{who}: remind_at: {e}"))?;
        if let Some(cooldown) = &self.cooldown_after_denial {
            let parsed = parse_duration(cooldown)
                .map_err(|e| format!("{who}: cooldown_after_denial: {e}"))?;
            if parsed.is_zero() || parsed > MAX_COOLDOWN {
                return Err(format!(
                    "{who}: cooldown_after_denial must be longer than zero and at most 30 days (it is {cooldown})"
                ));
            }
        }
        self.standing_limit(who)?;
        editable_pointers(&self.editable).map_err(|e| format!("{who}: editable: {e}"))?;
        if self.step_up.is_some() && !self.editable.is_empty() {
            return Err(format!(
                "{who}: step_up and editable cannot be combined: a step-up proof is of the action as asked, and an edit would approve another one without it"
            ));
        }
        if self.step_up.is_some() && self.standing_grant_max.is_some() {
            return Err(format!(
                "{who}: step_up and standing_grant_max cannot be combined: a step-up proof is of one action, and a standing grant would approve later ones without it"
            ));
        }
        Ok(())
    }

    /// The rule's standing grant limit: `standing_grant_max` (more than zero, at most 30 days)
    /// and `standing_grant_max_uses` (1 to 10,000; 100 when not given, and only with a
    /// `standing_grant_max`).
    fn standing_limit(&self, who: &str) -> Result<Option<StandingLimit>, String> {
        let Some(max) = &self.standing_grant_max else {
            return match self.standing_grant_max_uses {
                Some(_) => Err(format!(
                    "{who}: standing_grant_max_uses needs standing_grant_max = \"...\" (how long a standing grant may last)"
                )),
                None => Ok(None),
            };
        };
        let max_for = parse_duration(max).map_err(|e| format!("{who}: standing_grant_max: {e}"))?;
        if max_for.is_zero() || max_for > MAX_STANDING {
            return Err(format!(
                "{who}: standing_grant_max must be longer than zero and at most 30 days (it is {max})"
            ));
        }
        let max_uses = self
            .standing_grant_max_uses
            .unwrap_or(DEFAULT_STANDING_USES);
        if !(1..=MAX_STANDING_USES).contains(&max_uses) {
            return Err(format!(
                "{who}: standing_grant_max_uses must be from 1 to {MAX_STANDING_USES} (it is {max_uses})"
            ));
        }
        Ok(Some(StandingLimit { max_for, max_uses }))
    }

    fn compile_outcome(&self, rule: Option<&str>) -> CompiledOutcome {
        let rule: Option<ArcStr> = rule.map(ArcStr::from);
        match self.effect {
            Effect::Allow => CompiledOutcome::Allow(rule),
            Effect::Deny => CompiledOutcome::Deny {
                rule: rule.unwrap_or_else(|| "default".into()),
                reason: self.reason.clone().unwrap_or_default(),
            },
            Effect::RequireApproval => {
                let approvers = self.approvers.clone().unwrap_or_default();
                // Durations were validated by `check`.
                let timeout = parse_duration(self.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT))
                    .unwrap_or(Duration::from_secs(3600));
                let escalation = self.escalate.as_ref().map(|e| Escalation {
                    after: parse_duration(&e.after).unwrap_or(timeout / 2),
                    users: canonical_users(&e.users),
                    groups: canonical_groups(&e.groups),
                });
                CompiledOutcome::Require {
                    rule,
                    requirement: Arc::new(Requirement {
                        users: canonical_users(&approvers.users),
                        groups: canonical_groups(&approvers.groups),
                        quorum: self.quorum.unwrap_or(1),
                        reason_required: self.reason_required,
                        timeout,
                        escalation,
                        cooldown_after_denial: self
                            .cooldown_after_denial
                            .as_deref()
                            .and_then(|c| parse_duration(c).ok()),
                        reminders: reminder_points(&self.remind_at).unwrap_or_default(),
                        standing: self.standing_limit("").ok().flatten(),
                        editable: editable_pointers(&self.editable).unwrap_or_default(),
                        step_up: self.step_up,
                    }),
                }
            }
        }
    }
}

/// `editable` as JSON pointers ([`edit::pointer`]), each path once, at most [`MAX_EDITABLE`].
fn editable_pointers(paths: &[String]) -> Result<Vec<String>, String> {
    if paths.len() > MAX_EDITABLE {
        return Err(format!(
            "at most {MAX_EDITABLE} parameters, not {}",
            paths.len()
        ));
    }
    let mut pointers: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        let pointer = edit::pointer(path).ok_or_else(|| {
            format!(
                "{path:?} is not a parameter path like \"rows\", \"target.role\" or \"/items/0\""
            )
        })?;
        if pointers.contains(&pointer) {
            return Err(format!("{path:?} is listed twice"));
        }
        pointers.push(pointer);
    }
    Ok(pointers)
}

/// `remind_at` as percentages of the timeout, ascending: each `"N%"` with N from 1 to 99, at
/// most 10, none twice.
fn reminder_points(points: &[String]) -> Result<Vec<u8>, String> {
    if points.len() > 10 {
        return Err(format!("at most 10 reminders, not {}", points.len()));
    }
    let mut parsed = Vec::with_capacity(points.len());
    for point in points {
        let percent = point
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u8>().ok())
            .filter(|n| (1..=99).contains(n))
            .ok_or_else(|| {
                format!("{point:?} is not a share of the timeout like \"50%\" (1% to 99%)")
            })?;
        if parsed.contains(&percent) {
            return Err(format!("{point:?} is listed twice"));
        }
        parsed.push(percent);
    }
    parsed.sort_unstable();
    Ok(parsed)
}

/// Refuses user ids and group names that cannot be compared safely, naming the rule, the
/// field and the entry.
fn check_identities(
    who: &str,
    field: &str,
    users: &[String],
    groups: &[String],
) -> Result<(), String> {
    for (i, user) in users.iter().enumerate() {
        identity::validate(user).map_err(|e| format!("{who}: {field}.users[{i}]: {e}"))?;
    }
    for (i, group) in groups.iter().enumerate() {
        identity::normalize_group(group).map_err(|e| format!("{who}: {field}.groups[{i}]: {e}"))?;
    }
    Ok(())
}

/// User ids in canonical form (validated by `check_identities`).
fn canonical_users(users: &[String]) -> Vec<String> {
    users
        .iter()
        .map(|u| identity::normalize(u).unwrap_or_else(|_| u.clone()))
        .collect()
}

/// Group names in canonical form (validated by `check_identities`).
fn canonical_groups(groups: &[String]) -> Vec<String> {
    groups
        .iter()
        .map(|g| identity::normalize_group(g).unwrap_or_else(|_| g.clone()))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitiatorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<PrincipalKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_behalf_of: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<OneOrMany>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredicateSpec {
    param: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eq: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ne: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_in: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    matches: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    environment: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initiator: Option<InitiatorSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    when: Vec<PredicateSpec>,
    #[serde(flatten)]
    outcome: OutcomeSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RuleSpec", into = "RuleSpec")]
struct CheckedRule(RuleSpec);

impl From<CheckedRule> for RuleSpec {
    fn from(rule: CheckedRule) -> Self {
        rule.0
    }
}

impl TryFrom<RuleSpec> for CheckedRule {
    type Error = String;
    fn try_from(rule: RuleSpec) -> Result<Self, String> {
        if rule.name.trim().is_empty() {
            return Err("every rule needs a non-empty name".into());
        }
        let who = format!("rule {:?}", rule.name);
        for p in &rule.when {
            let ops = [
                p.eq.is_some(),
                p.ne.is_some(),
                p.one_of.is_some(),
                p.not_in.is_some(),
                p.gt.is_some(),
                p.gte.is_some(),
                p.lt.is_some(),
                p.lte.is_some(),
                p.matches.is_some(),
            ];
            if ops.iter().filter(|set| **set).count() != 1 {
                return Err(format!(
                    "{who}: the predicate on param {:?} needs exactly one operator of eq, ne, in, not_in, gt, gte, lt, lte, matches",
                    p.param
                ));
            }
            if p.param.trim().is_empty() {
                return Err(format!("{who}: a predicate has an empty param path"));
            }
        }
        rule.outcome.check(&who)?;
        Ok(CheckedRule(rule))
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled form.

#[derive(Debug, Clone)]
enum CompiledOutcome {
    Allow(Option<ArcStr>),
    Deny {
        rule: ArcStr,
        reason: String,
    },
    Require {
        rule: Option<ArcStr>,
        requirement: Arc<Requirement>,
    },
}

impl CompiledOutcome {
    fn to_decision(&self) -> Decision {
        match self {
            CompiledOutcome::Allow(rule) => Decision::Allow { rule: rule.clone() },
            CompiledOutcome::Deny { rule, reason } => Decision::Deny {
                rule: rule.clone(),
                reason: reason.clone(),
            },
            CompiledOutcome::Require { rule, requirement } => Decision::RequireApproval {
                rule: rule.clone(),
                requirement: requirement.clone(),
            },
        }
    }
}

#[derive(Debug, Clone)]
enum Operator {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Matches(Glob),
}

#[derive(Debug, Clone)]
struct Predicate {
    path: Vec<String>,
    op: Operator,
}

impl Predicate {
    fn compile(spec: &PredicateSpec) -> Predicate {
        let path = edit::param_segments(&spec.param);
        // `CheckedRule` guarantees exactly one operator is set.
        let op = if let Some(v) = &spec.eq {
            Operator::Eq(v.clone())
        } else if let Some(v) = &spec.ne {
            Operator::Ne(v.clone())
        } else if let Some(v) = &spec.one_of {
            Operator::In(v.clone())
        } else if let Some(v) = &spec.not_in {
            Operator::NotIn(v.clone())
        } else if let Some(v) = spec.gt {
            Operator::Gt(v)
        } else if let Some(v) = spec.gte {
            Operator::Gte(v)
        } else if let Some(v) = spec.lt {
            Operator::Lt(v)
        } else if let Some(v) = spec.lte {
            Operator::Lte(v)
        } else {
            Operator::Matches(Glob::new(spec.matches.as_deref().unwrap_or("*")))
        };
        Predicate { path, op }
    }

    fn holds(&self, params: &Value) -> bool {
        let mut value = params;
        for segment in &self.path {
            value = match value {
                Value::Object(map) => match map.get(segment) {
                    Some(v) => v,
                    None => return false,
                },
                Value::Array(items) => {
                    match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(v) => v,
                        None => return false,
                    }
                }
                _ => return false,
            };
        }
        let number = || value.as_f64();
        match &self.op {
            Operator::Eq(v) => json_eq(value, v),
            Operator::Ne(v) => !json_eq(value, v),
            Operator::In(vs) => vs.iter().any(|v| json_eq(value, v)),
            Operator::NotIn(vs) => !vs.iter().any(|v| json_eq(value, v)),
            Operator::Gt(x) => number().is_some_and(|n| n > *x),
            Operator::Gte(x) => number().is_some_and(|n| n >= *x),
            Operator::Lt(x) => number().is_some_and(|n| n < *x),
            Operator::Lte(x) => number().is_some_and(|n| n <= *x),
            Operator::Matches(g) => value.as_str().is_some_and(|s| g.matches(s)),
        }
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`, as TOML and JSON differ).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    kinds: Vec<Glob>,
    resources: Vec<Glob>,
    environments: Vec<String>,
    initiator_kind: Option<PrincipalKind>,
    initiator_ids: Vec<Glob>,
    on_behalf_of: Vec<Glob>,
    models: Vec<Glob>,
    predicates: Vec<Predicate>,
    outcome: CompiledOutcome,
}

fn globs(spec: &Option<OneOrMany>) -> Vec<Glob> {
    spec.as_ref()
        .map(|s| s.to_vec().iter().map(|p| Glob::new(p)).collect())
        .unwrap_or_default()
}

fn any_match(globs: &[Glob], text: Option<&str>) -> bool {
    globs.is_empty() || text.is_some_and(|t| globs.iter().any(|g| g.matches(t)))
}

/// Globs over identities: compiled from the patterns' canonical forms, to be matched with
/// [`any_canonical_match`].
fn canonical_globs(spec: &Option<OneOrMany>) -> Vec<Glob> {
    spec.as_ref()
        .map(|s| {
            s.to_vec()
                .iter()
                .map(|p| Glob::new(&identity::canonical_key(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `text`'s canonical form matches one of `globs` (from [`canonical_globs`]).
fn any_canonical_match(globs: &[Glob], text: Option<&str>) -> bool {
    globs.is_empty() || text.is_some_and(|t| any_match(globs, Some(&identity::canonical_key(t))))
}

impl RuleSpec {
    fn compile(&self) -> CompiledRule {
        let initiator = self.initiator.as_ref();
        CompiledRule {
            kinds: globs(&self.kind),
            resources: globs(&self.resource),
            environments: self
                .environment
                .as_ref()
                .map(OneOrMany::to_vec)
                .unwrap_or_default(),
            initiator_kind: initiator.and_then(|i| i.kind),
            initiator_ids: initiator
                .map(|i| canonical_globs(&i.id))
                .unwrap_or_default(),
            on_behalf_of: initiator
                .map(|i| canonical_globs(&i.on_behalf_of))
                .unwrap_or_default(),
            models: initiator
                .map(|i| canonical_globs(&i.model))
                .unwrap_or_default(),
            predicates: self.when.iter().map(Predicate::compile).collect(),
            outcome: self.outcome.compile_outcome(Some(&self.name)),
        }
    }
}

impl CompiledRule {
    fn matches(&self, request: &ActionRequest) -> bool {
        if !any_match(&self.kinds, Some(&request.kind))
            || !any_match(&self.resources, Some(&request.resource))
        {
            return false;
        }
        if !self.environments.is_empty() {
            let env = request.context.environment.as_deref();
            if !env.is_some_and(|e| self.environments.iter().any(|x| x == e)) {
                return false;
            }
        }
        let initiator = request.initiator.as_ref();
        if let Some(kind) = self.initiator_kind
            && initiator.map(|i| i.principal.kind) != Some(kind)
        {
            return false;
        }
        if !any_canonical_match(
            &self.initiator_ids,
            initiator.map(|i| i.principal.id.as_str()),
        ) || !any_canonical_match(
            &self.on_behalf_of,
            initiator
                .and_then(|i| i.on_behalf_of.as_ref())
                .map(|h| h.id.as_str()),
        ) || !any_canonical_match(&self.models, initiator.and_then(|i| i.model.as_deref()))
        {
            return false;
        }
        self.predicates.iter().all(|p| p.holds(&request.params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Initiator, Principal};
    use serde_json::json;

    const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "big-prod-exports"
kind = "data.export"
resource = "db://prod/*"
environment = "production"
initiator = { kind = "agent", id = "billing-*" }
when = [{ param = "rows", gt = 1000 }, { param = "format", in = ["csv", "json"] }]
effect = "require_approval"
approvers = { groups = ["data-owners"], users = ["cto@example.com"] }
quorum = 2
reason_required = true
timeout = "30m"
escalate = { after = "10m", groups = ["security-oncall"] }

[[rules]]
name = "small-exports"
kind = "data.export"
when = [{ param = "/rows", lte = 1000 }]
effect = "allow"

[[rules]]
name = "no-drops"
kind = "db.schema.*"
when = [{ param = "statement", matches = "DROP *" }]
effect = "deny"
reason = "Dropping tables needs a change ticket."

[[rules]]
name = "admin-role"
kind = "iam.role.grant"
when = [{ param = "target.role", eq = "admin" }]
effect = "require_approval"
approvers = { groups = ["security"] }
"#;

    fn export(rows: u64, format: &str) -> ActionRequest {
        ActionRequest::new("data.export", "db://prod/customers")
            .params(json!({"rows": rows, "format": format}))
            .environment("production")
            .initiator(Initiator::agent("billing-agent"))
    }

    fn rule_of(policy: &RulePolicy, req: &ActionRequest) -> Option<String> {
        policy
            .evaluate(req)
            .expect("evaluates")
            .rule()
            .map(str::to_owned)
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = RulePolicy::from_toml(POLICY).expect("valid policy");
        assert_eq!(p.len(), 5);
        assert_eq!(
            rule_of(&p, &ActionRequest::new("db.read", "x")).as_deref(),
            Some("reads")
        );
        assert_eq!(
            rule_of(&p, &export(5000, "csv")).as_deref(),
            Some("big-prod-exports")
        );
        assert_eq!(
            rule_of(&p, &export(10, "csv")).as_deref(),
            Some("small-exports")
        );
        // 5000 rows as parquet: no rule matches, the default denies.
        match p.evaluate(&export(5000, "parquet")).expect("evaluates") {
            Decision::Deny { rule, reason } => {
                assert_eq!(&*rule, "default");
                assert!(reason.contains("no policy rule matched"));
            }
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn requirement_fields_are_loaded() {
        let p = RulePolicy::from_toml(POLICY).expect("valid policy");
        let Decision::RequireApproval { requirement, .. } =
            p.evaluate(&export(5000, "json")).expect("ok")
        else {
            panic!("expected approval");
        };
        assert_eq!(requirement.quorum, 2);
        assert!(requirement.reason_required);
        assert_eq!(requirement.timeout, Duration::from_secs(1800));
        assert_eq!(requirement.groups, vec!["data-owners"]);
        assert_eq!(requirement.users, vec!["cto@example.com"]);
        let esc = requirement.escalation.as_ref().expect("escalation");
        assert_eq!(esc.after, Duration::from_secs(600));
        assert_eq!(esc.groups, vec!["security-oncall"]);
    }

    /// Every spelling of an id a rule names is caught by the rule: case, full width,
    /// compatibility forms, invisible characters and trailing dots, for the agent's id, the
    /// human it acts for and the model. An id that is really different is not.
    #[test]
    fn initiator_globs_match_every_spelling_of_the_id() {
        let p = RulePolicy::from_toml(
            r#"
version = 1
default = "allow"
[[rules]]
name = "no-billing-deletes"
kind = "db.delete"
initiator = { id = "Billing-*", on_behalf_of = "dana@example.com", model = "gpt-*" }
effect = "deny"
reason = "billing agents never delete"
"#,
        )
        .expect("policy");
        let delete = |agent: &str, human: &str, model: &str| {
            ActionRequest::new("db.delete", "db://prod/invoices").initiator(
                Initiator::agent(agent)
                    .on_behalf_of(Principal::human(human))
                    .model(model),
            )
        };
        for (agent, human, model) in [
            ("billing-agent", "dana@example.com", "gpt-5"),
            ("BILLING-AGENT", "Dana@Example.COM", "GPT-5"),
            ("ｂｉｌｌｉｎｇ-agent", "ｄａｎａ@example.com", "ｇｐｔ-5"),
            (
                "bi\u{200B}lling-agent",
                "dana@example.com.",
                "gpt\u{00AD}-5",
            ),
            ("\u{FEFF}Billing-Agent", "DANA@EXAMPLE.COM", "Gpt-4o"),
        ] {
            assert_eq!(
                rule_of(&p, &delete(agent, human, model)).as_deref(),
                Some("no-billing-deletes"),
                "{agent:?} for {human:?} with {model:?} escaped the rule"
            );
        }
        for (agent, human, model) in [
            ("support-agent", "dana@example.com", "gpt-5"),
            ("billing-agent", "sam@example.com", "gpt-5"),
            ("billing-agent", "dana@example.com", "claude-4"),
        ] {
            assert_eq!(
                rule_of(&p, &delete(agent, human, model)),
                None,
                "{agent:?} for {human:?} with {model:?} is not named by the rule"
            );
        }
    }

    #[test]
    fn conditions_on_environment_initiator_and_params() {
        let p = RulePolicy::from_toml(POLICY).expect("valid policy");
        let staging = export(5000, "csv").environment("staging");
        assert_ne!(rule_of(&p, &staging).as_deref(), Some("big-prod-exports"));
        let mut no_env = export(5000, "csv");
        std::sync::Arc::make_mut(&mut no_env.context).environment = None;
        assert_ne!(rule_of(&p, &no_env).as_deref(), Some("big-prod-exports"));
        let other_agent = export(5000, "csv").initiator(Initiator::agent("support-agent"));
        assert_ne!(
            rule_of(&p, &other_agent).as_deref(),
            Some("big-prod-exports")
        );
        let human =
            export(5000, "csv").initiator(Initiator::from_principal(Principal::human("billing-x")));
        assert_ne!(rule_of(&p, &human).as_deref(), Some("big-prod-exports"));
        let drop = ActionRequest::new("db.schema.change", "db://prod")
            .params(json!({"statement": "DROP TABLE users"}));
        assert_eq!(rule_of(&p, &drop).as_deref(), Some("no-drops"));
        let alter = ActionRequest::new("db.schema.change", "db://prod")
            .params(json!({"statement": "ALTER TABLE"}));
        assert_eq!(rule_of(&p, &alter).as_deref(), Some("default"));
        let admin = ActionRequest::new("iam.role.grant", "iam://x")
            .params(json!({"target": {"role": "admin"}}));
        assert_eq!(rule_of(&p, &admin).as_deref(), Some("admin-role"));
        let missing = ActionRequest::new("iam.role.grant", "iam://x").params(json!({}));
        assert_eq!(rule_of(&p, &missing).as_deref(), Some("default"));
    }

    #[test]
    fn json_and_toml_give_the_same_version() {
        let toml_policy = RulePolicy::from_toml(POLICY).expect("valid");
        let value: toml::Value = toml::from_str(POLICY).expect("toml");
        let json = serde_json::to_string_pretty(&value).expect("json");
        let json_policy = RulePolicy::from_json(&json).expect("valid json policy");
        assert_eq!(toml_policy.version(), json_policy.version());
        assert!(toml_policy.version().starts_with("sha256:"));
        let changed =
            RulePolicy::from_toml(&POLICY.replace("quorum = 2", "quorum = 1")).expect("valid");
        assert_ne!(changed.version(), toml_policy.version());
    }

    fn load_error(text: &str) -> PolicyLoadError {
        RulePolicy::from_toml(text).expect_err("must be rejected")
    }

    #[test]
    fn malformed_policies_say_where_and_how_to_fix() {
        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"maybe\"\n",
        );
        // Rules are flattened, so TOML reports the rule's header line.
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("maybe"), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"deny\"\n",
        );
        assert!(e.message.contains("needs reason"), "{e}");
        assert!(e.line.is_some(), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"require_approval\"\n",
        );
        assert!(e.message.contains("needs approvers"), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"require_approval\"\napprovers = { users = [\"a\"] }\nquorum = 2\n",
        );
        assert!(e.message.contains("can never be met"), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"allow\"\nwhen = [{ param = \"a\", gt = 1, lt = 5 }]\n",
        );
        assert!(e.message.contains("exactly one operator"), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"allow\"\nkindd = \"a\"\n",
        );
        assert!(e.message.contains("kindd"), "{e}");

        let e = load_error("version = 1\n[[rules]]\nname = \"x\"\neffect = \"allow\"\n");
        assert!(e.message.contains("default"), "{e}");

        let e = load_error("version = 2\ndefault = \"deny\"\n");
        assert!(e.message.contains("version 2"), "{e}");

        let e = load_error("version = 1\ndefault = \"require_approval\"\n");
        assert!(e.message.contains("needs approvers"), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"require_approval\"\napprovers = { groups = [\"g\"] }\ntimeout = \"10m\"\nescalate = { after = \"20m\", groups = [\"h\"] }\n",
        );
        assert!(e.message.contains("shorter than timeout"), "{e}");

        let e = load_error(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\neffect = \"allow\"\n[[rules]]\nname = \"x\"\neffect = \"allow\"\n",
        );
        assert!(e.message.contains("unique"), "{e}");

        let json = RulePolicy::from_json("{\n  \"version\": 1,\n  \"default\": \"deny\",\n  \"rules\": [ { \"name\": \"x\" } ]\n}")
            .expect_err("missing effect");
        assert_eq!(json.line, Some(4), "{json}");
        assert!(json.to_string().contains("effect"), "{json}");
    }

    /// The kind index never changes which rule decides: compare with a plain linear scan.
    #[test]
    fn indexed_evaluation_equals_a_linear_scan() {
        let kinds = [
            "data.export",
            "data.*",
            "*.read",
            "db.read",
            "db?.read",
            "data",
            "x*",
            "db.*.drop",
        ];
        let mut policy = String::from("version = 1\ndefault = \"deny\"\n");
        for (i, k) in kinds.iter().enumerate() {
            policy.push_str(&format!(
                "[[rules]]\nname = \"r{i}\"\nkind = \"{k}\"\neffect = \"allow\"\n"
            ));
        }
        policy.push_str(
            "[[rules]]\nname = \"multi\"\nkind = [\"zz.a\", \"yy.*\"]\neffect = \"allow\"\n",
        );
        policy.push_str("[[rules]]\nname = \"any\"\nresource = \"r://x\"\neffect = \"allow\"\n");
        let p = RulePolicy::from_toml(&policy).expect("valid");
        let requests = [
            "data.export",
            "data.import",
            "data",
            "db.read",
            "db1.read",
            "dbx.read",
            "db.x.drop",
            "x",
            "xy.z",
            "zz.a",
            "zz.b",
            "yy.q",
            "q.read",
            "",
            ".",
            "data.",
        ];
        for kind in requests {
            for resource in ["r://x", "r://y"] {
                let req = ActionRequest::new(kind, resource);
                let linear = p
                    .rules
                    .iter()
                    .find(|r| r.matches(&req))
                    .map_or(&p.default, |r| &r.outcome);
                assert_eq!(
                    p.evaluate(&req).expect("ok").rule(),
                    linear.to_decision().rule(),
                    "kind {kind:?} resource {resource:?}"
                );
            }
        }
    }

    /// The index (resources, then kinds) never changes which rule decides, for any policy
    /// built from literal, prefix, suffix, `?` and catch-all patterns and any request.
    mod index_equals_linear_scan {
        use proptest::prelude::*;

        use super::*;

        const KIND_PATTERNS: &[&str] = &[
            "data.export",
            "data.*",
            "*.read",
            "db.read",
            "db?.read",
            "data",
            "x*",
            "*",
            "zz.a",
        ];
        const RESOURCE_PATTERNS: &[&str] = &[
            "r://x",
            "r://x/*",
            "r://*",
            "*",
            "r://x/a",
            "r://?",
            "*x",
            "r://x/a/*",
            "r://",
            "r://x*",
            "é://x",
            "r://é*",
            "r*/a",
        ];
        const KINDS: &[&str] = &[
            "data.export",
            "data",
            "db.read",
            "db1.read",
            "x",
            "zz.a",
            "q.read",
            "",
        ];
        const RESOURCES: &[&str] = &[
            "r://x",
            "r://x/a",
            "r://x/a/b",
            "r://y",
            "",
            "r://",
            "é://x",
            "r://éa",
            "r://x/",
        ];

        fn patterns(from: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
            prop::collection::vec(prop::sample::select(from), 0..3)
        }

        fn list(patterns: &[&str]) -> String {
            let quoted: Vec<String> = patterns.iter().map(|p| format!("{p:?}")).collect();
            format!("[{}]", quoted.join(", "))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
            #[test]
            fn for_any_policy_and_request(
                rules in prop::collection::vec((patterns(KIND_PATTERNS), patterns(RESOURCE_PATTERNS)), 0..24),
            ) {
                let mut policy = String::from("version = 1\ndefault = \"deny\"\n");
                for (i, (kinds, resources)) in rules.iter().enumerate() {
                    policy.push_str(&format!("[[rules]]\nname = \"r{i}\"\neffect = \"allow\"\n"));
                    if !kinds.is_empty() {
                        policy.push_str(&format!("kind = {}\n", list(kinds)));
                    }
                    if !resources.is_empty() {
                        policy.push_str(&format!("resource = {}\n", list(resources)));
                    }
                }
                let p = RulePolicy::from_toml(&policy).expect("valid");
                for kind in KINDS {
                    for resource in RESOURCES {
                        let req = ActionRequest::new(*kind, *resource);
                        let linear = p
                            .rules
                            .iter()
                            .find(|r| r.matches(&req))
                            .map_or(&p.default, |r| &r.outcome);
                        let indexed = p.evaluate(&req).expect("ok");
                        let linear = linear.to_decision();
                        prop_assert_eq!(
                            indexed.rule(),
                            linear.rule(),
                            "kind {:?} resource {:?} in\n{}", kind, resource, policy
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn default_can_require_approval() {
        let p = RulePolicy::from_toml(
            "version = 1\ndefault = { effect = \"require_approval\", approvers = { groups = [\"sec\"] }, timeout = \"5m\" }\n",
        )
        .expect("valid");
        let d = p
            .evaluate(&ActionRequest::new("anything", "x"))
            .expect("ok");
        assert!(
            matches!(d, Decision::RequireApproval { ref requirement, .. } if requirement.timeout == Duration::from_secs(300))
        );
    }

    fn approval_rule(approvers: &str, extra: &str) -> String {
        format!(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"exports\"\neffect = \"require_approval\"\napprovers = {approvers}\ntimeout = \"1h\"\n{extra}"
        )
    }

    #[test]
    fn approver_ids_that_cannot_be_compared_are_refused_at_load() {
        for (approvers, extra, field, code_point) in [
            (
                r#"{ users = ["sam@example.com", "da\u200Bna@example.com"] }"#,
                "",
                "approvers.users[1]",
                "U+200B",
            ),
            (
                r#"{ users = ["\u202Esam@example.com"] }"#,
                "",
                "approvers.users[0]",
                "U+202E",
            ),
            (
                r#"{ users = ["s\u0430m@example.com"] }"#,
                "",
                "approvers.users[0]",
                "U+0430",
            ),
            (
                r#"{ users = ["sam @example.com"] }"#,
                "",
                "approvers.users[0]",
                "U+0020",
            ),
            (
                r#"{ groups = ["data-owners", "\uFEFFadmins"] }"#,
                "",
                "approvers.groups[1]",
                "U+FEFF",
            ),
            (
                r#"{ groups = ["adm\u0456ns"] }"#,
                "",
                "approvers.groups[0]",
                "U+0456",
            ),
            (
                r#"{ groups = ["sec"] }"#,
                "escalate = { after = \"10m\", users = [\"cto\\u00ADo@example.com\"] }\n",
                "escalate.users[0]",
                "U+00AD",
            ),
            (
                r#"{ groups = ["sec"] }"#,
                "escalate = { after = \"10m\", groups = [\"on\\u200Dcall\"] }\n",
                "escalate.groups[0]",
                "U+200D",
            ),
        ] {
            let e = load_error(&approval_rule(approvers, extra));
            for part in ["rule \"exports\"", field, code_point] {
                assert!(
                    e.message.contains(part),
                    "{approvers} {extra}: {part} missing in {e}"
                );
            }
        }
        // The same in JSON.
        let json = r#"{"version": 1, "default": "deny", "rules": [{"name": "exports", "effect": "require_approval", "approvers": {"users": ["sam\u2066@example.com"]}}]}"#;
        let e = RulePolicy::from_json(json).expect_err("refused");
        assert!(
            e.message.contains("approvers.users[0]") && e.message.contains("U+2066"),
            "{e}"
        );
    }

    #[test]
    fn approver_ids_load_in_canonical_form() {
        let text = approval_rule(
            r#"{ users = ["Sam@Example.COM.", "ｃｔｏ@example.com"], groups = ["Data-Owners"] }"#,
            "escalate = { after = \"10m\", users = [\"ÉLISE@example.com\"], groups = [\"Security OnCall\"] }\n",
        );
        let p = RulePolicy::from_toml(&text).expect("valid");
        let Decision::RequireApproval { requirement, .. } =
            p.evaluate(&ActionRequest::new("x", "y")).expect("ok")
        else {
            panic!("requires approval");
        };
        assert_eq!(requirement.users, ["sam@example.com", "cto@example.com"]);
        assert_eq!(requirement.groups, ["data-owners"]);
        let esc = requirement.escalation.as_ref().expect("escalation");
        assert_eq!(esc.users, ["élise@example.com"]);
        assert_eq!(esc.groups, ["security oncall"]);
    }

    #[test]
    fn a_quorum_counts_spellings_of_one_listed_user_once() {
        let e = load_error(&approval_rule(
            r#"{ users = ["sam@example.com", "SAM@example.com "] }"#,
            "quorum = 2\n",
        ));
        assert!(e.message.contains("1 distinct listed user"), "{e}");
        assert!(
            RulePolicy::from_toml(&approval_rule(
                r#"{ users = ["sam@example.com", "dana@example.com"] }"#,
                "quorum = 2\n",
            ))
            .is_ok()
        );
    }

    #[test]
    fn editable_parameters_load_as_pointers_and_bad_lists_are_refused() {
        let policy = RulePolicy::from_toml(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"e\"\nkind = \"data.export\"\neffect = \"require_approval\"\napprovers = { groups = [\"x\"] }\neditable = [\"rows\", \"filter.region\", \"/a~1b\"]\n",
        )
        .expect("loads");
        let request = ActionRequest::new("data.export", "db://x");
        let Ok(Decision::RequireApproval { requirement, .. }) = policy.evaluate(&request) else {
            panic!("approval expected");
        };
        assert_eq!(requirement.editable, ["/rows", "/filter/region", "/a~1b"]);
        let rule = |editable: &str, effect: &str| {
            format!(
                "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"e\"\nkind = \"k\"\neffect = \"{effect}\"\n{}editable = {editable}\n",
                if effect == "require_approval" {
                    "approvers = { groups = [\"x\"] }\n"
                } else {
                    ""
                }
            )
        };
        let many: Vec<String> = (0..21).map(|i| format!("\"p{i}\"")).collect();
        for (editable, effect, says) in [
            ("[\"rows\"]", "allow", "only apply to effect"),
            ("[\"\"]", "require_approval", "not a parameter path"),
            ("[\"a..b\"]", "require_approval", "not a parameter path"),
            ("[\"/\"]", "require_approval", "not a parameter path"),
            ("[\"rows\", \"/rows\"]", "require_approval", "listed twice"),
            (
                &format!("[{}]", many.join(", ")),
                "require_approval",
                "at most 20",
            ),
        ] {
            let error = load_error(&rule(editable, effect)).to_string();
            assert!(error.contains(says), "{editable}: {error}");
        }
    }
}
