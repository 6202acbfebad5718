//! Policies decide whether an action runs at once, is refused, or needs human approval.

pub(crate) mod duration;
mod glob;
mod index;
mod rules;

use arcstr::ArcStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::request::{ActionRequest, Principal};

pub use duration::{format_duration, parse_duration};
pub use glob::Glob;
pub use rules::{PolicyLoadError, RulePolicy};

/// Decides what happens to an action request.
///
/// Evaluation is synchronous and must not block: it runs on every `guard()` call. An error
/// refuses the action (fail closed).
pub trait Policy: Send + Sync + 'static {
    /// The decision for this request.
    fn evaluate(&self, request: &ActionRequest) -> Result<Decision, PolicyError>;

    /// A version string recorded with every decision (for [`RulePolicy`], a hash of its rules).
    fn version(&self) -> &str;

    /// The decision for this request and the version of the rules that made it, read
    /// together. The gate records this version with the decision, never a separate
    /// [`version`](Policy::version) call.
    ///
    /// The provided method calls `evaluate`, then `version`, which is right for a policy
    /// that never changes. A policy whose rules change in place (one reloaded from a file)
    /// overrides it and answers both from one snapshot, so a reload between the two calls
    /// cannot pair one version's decision with another version's name. A policy that wraps
    /// another forwards this method too, or the inner one's snapshot is lost.
    fn evaluate_versioned(&self, request: &ActionRequest) -> (Result<Decision, PolicyError>, &str) {
        (self.evaluate(request), self.version())
    }
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    /// Run at once.
    Allow {
        /// The rule that allowed it, if named. Shared with the policy's rule, so a decision
        /// copies no name (one allocation less per allowed `guard()`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<ArcStr>,
    },
    /// Refuse.
    Deny {
        /// The rule that denied it.
        rule: ArcStr,
        /// Why, in words for the caller.
        reason: String,
    },
    /// Ask humans first.
    RequireApproval {
        /// The rule that asked for approval, if named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<ArcStr>,
        /// Who must approve and how. Shared: a rule's requirement is not copied into every
        /// request it applies to.
        requirement: Arc<Requirement>,
    },
}

impl Decision {
    /// The rule that produced this decision.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allow { rule } | Decision::RequireApproval { rule, .. } => rule.as_deref(),
            Decision::Deny { rule, .. } => Some(rule),
        }
    }
}

/// Who may approve a request, how many of them, and for how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Reviewers allowed by canonical id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Reviewers allowed by group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How many distinct humans must approve (at least 1).
    pub quorum: u32,
    /// Whether each review must carry a reason.
    #[serde(default)]
    pub reason_required: bool,
    /// How long the request stays open before it expires.
    #[serde(with = "duration::serde_secs")]
    pub timeout: Duration,
    /// After a delay, also ask further reviewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// After a reviewer denies the action, asking again for the same action
    /// ([`ActionRequest::action_key`](crate::request::ActionRequest::action_key)) is refused
    /// at once for this long, with that reviewer's reason, and nobody is asked.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration::serde_opt_secs"
    )]
    pub cooldown_after_denial: Option<Duration>,
    /// When to remind reviewers of a request still pending, in percent of its timeout
    /// (`[50, 90]`: halfway, and with a tenth of the time left), ascending, each from 1 to 99.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminders: Vec<u8>,
    /// Whether reviewers may approve a standing grant under this requirement, and for how
    /// long and how many uses at most ([`standing`](crate::standing)). `None`: every action
    /// is asked for on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<StandingLimit>,
    /// The parameters a reviewer may change before approving, as JSON pointers (`/rows`,
    /// `/target/role`): a rule's `editable` ([`edit`](crate::edit)). Empty: the action is
    /// approved or denied as it was asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub editable: Vec<String>,
    /// What each approval must prove of its reviewer beyond the channel's sign-in: a rule's
    /// `step_up` ([`step_up`](crate::step_up)). `None`: the channel's identity is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<crate::step_up::StepUp>,
}

/// The most a standing grant approved under a rule may allow: how long it lasts and how many
/// actions it may approve (a rule's `standing_grant_max` and `standing_grant_max_uses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingLimit {
    /// The longest a standing grant may last, from its approval.
    #[serde(with = "duration::serde_secs")]
    pub max_for: Duration,
    /// The most actions one standing grant may approve.
    pub max_uses: u32,
}

impl Requirement {
    /// One approval from any of `groups`, open for one hour.
    pub fn groups<I, S>(groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Requirement {
            users: Vec::new(),
            groups: groups.into_iter().map(Into::into).collect(),
            quorum: 1,
            reason_required: false,
            timeout: Duration::from_secs(3600),
            escalation: None,
            cooldown_after_denial: None,
            reminders: Vec::new(),
            standing: None,
            editable: Vec::new(),
            step_up: None,
        }
    }

    /// One approval from any of `users`, open for one hour.
    pub fn users<I, S>(users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Requirement {
            users: users.into_iter().map(Into::into).collect(),
            ..Requirement::groups(Vec::<String>::new())
        }
    }

    /// Lets reviewers change these parameters (JSON pointers such as `/rows`) before they
    /// approve ([`editable`](Requirement::editable)).
    pub fn editable<I, S>(mut self, pointers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.editable = pointers.into_iter().map(Into::into).collect();
        self
    }

    /// Requires each approval to carry a step-up proof ([`step_up`](crate::step_up)).
    pub fn step_up(mut self, method: crate::step_up::StepUp) -> Self {
        self.step_up = Some(method);
        self
    }

    /// Sets the quorum.
    pub fn quorum(mut self, quorum: u32) -> Self {
        self.quorum = quorum;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Requires a reason with every review.
    pub fn reason_required(mut self, yes: bool) -> Self {
        self.reason_required = yes;
        self
    }

    /// Refuses the same action for `cooldown` after a reviewer denied it
    /// ([`cooldown_after_denial`](Requirement::cooldown_after_denial)).
    pub fn cooldown_after_denial(mut self, cooldown: Duration) -> Self {
        self.cooldown_after_denial = Some(cooldown);
        self
    }

    /// Lets reviewers approve standing grants under this requirement, lasting at most
    /// `max_for` and approving at most `max_uses` actions each.
    pub fn standing(mut self, max_for: Duration, max_uses: u32) -> Self {
        self.standing = Some(StandingLimit { max_for, max_uses });
        self
    }

    /// Reminds reviewers of a request still pending at these points, in percent of its
    /// timeout ([`reminders`](Requirement::reminders)); sorted, and points outside 1 to 99
    /// dropped.
    pub fn reminders(mut self, percents: impl IntoIterator<Item = u8>) -> Self {
        let mut points: Vec<u8> = percents
            .into_iter()
            .filter(|p| (1..=99).contains(p))
            .collect();
        points.sort_unstable();
        points.dedup();
        self.reminders = points;
        self
    }

    /// Sets the escalation.
    pub fn escalation(mut self, escalation: Escalation) -> Self {
        self.escalation = Some(escalation);
        self
    }

    /// Whether `reviewer` may review, given whether the request has escalated.
    ///
    /// This only checks the allow lists; the gate separately rejects non-humans, the
    /// initiator's own identities and ids that fail [`Principal::validate`]. Users and groups
    /// are compared by [`canonical_key`](crate::identity::canonical_key): a listed
    /// `sam@example.com` authorizes `SAM@example.com` and `ｓａｍ@example.com`, never a
    /// look-alike of it such as `ѕam@example.com` (with a Cyrillic `ѕ`).
    pub fn authorizes(&self, reviewer: &Principal, escalated: bool) -> bool {
        let listed = |users: &[String], groups: &[String]| {
            users
                .iter()
                .any(|u| crate::identity::same_canonical(u, &reviewer.id))
                || groups.iter().any(|g| reviewer.in_group(g))
        };
        listed(&self.users, &self.groups)
            || (escalated
                && self
                    .escalation
                    .as_ref()
                    .is_some_and(|e| listed(&e.users, &e.groups)))
    }

    /// Refuses a user id or group name in the allow lists (and the escalation's) that cannot
    /// be compared safely ([`identity::normalize`](crate::identity::normalize)).
    /// [`RulePolicy`] checks this when it loads; call it for requirements built in code.
    pub fn validate(&self) -> Result<(), crate::InvalidIdentity> {
        let escalation = self.escalation.as_ref();
        let users = self
            .users
            .iter()
            .chain(escalation.into_iter().flat_map(|e| &e.users));
        let groups = self
            .groups
            .iter()
            .chain(escalation.into_iter().flat_map(|e| &e.groups));
        for user in users {
            crate::identity::validate(user)?;
        }
        for group in groups {
            crate::identity::normalize_group(group)?;
        }
        Ok(())
    }
}

/// Further reviewers asked when a request is still pending after a delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Delay after the request was created.
    #[serde(with = "duration::serde_secs")]
    pub after: Duration,
    /// Extra reviewers by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Extra reviewers by group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A policy could not evaluate a request; the action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy evaluation failed: {message}")]
pub struct PolicyError {
    /// What went wrong.
    pub message: String,
}

impl PolicyError {
    /// A new error.
    pub fn new(message: impl Into<String>) -> Self {
        PolicyError {
            message: message.into(),
        }
    }
}

/// A fixed decision for every request; handy in tests and for the simplest deployments.
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    decision: Decision,
    version: String,
}

impl StaticPolicy {
    /// Every request gets `decision`.
    pub fn new(decision: Decision) -> Self {
        StaticPolicy {
            decision,
            version: "static".into(),
        }
    }

    /// Every request is allowed.
    pub fn allow_all() -> Self {
        Self::new(Decision::Allow {
            rule: Some("allow-all".into()),
        })
    }

    /// Every request needs `requirement`.
    pub fn require(requirement: Requirement) -> Self {
        Self::new(Decision::RequireApproval {
            rule: Some("require-all".into()),
            requirement: Arc::new(requirement),
        })
    }
}

impl Policy for StaticPolicy {
    fn evaluate(&self, _request: &ActionRequest) -> Result<Decision, PolicyError> {
        Ok(self.decision.clone())
    }

    fn version(&self) -> &str {
        &self.version
    }
}
