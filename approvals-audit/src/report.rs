//! The evidence report for auditors: every privileged action in a period, who asked, who
//! approved before it ran, and whether the log that says so verifies. Output as one
//! self-contained HTML file (inline CSS and SVG, no scripts, no external resources) and CSV.
//!
//! The report is built only from log entries covered by a checkpoint signed by a trusted key;
//! its first section is the verification result (green: verified; amber: verified, with newer
//! entries not yet signed and left out; red: the log failed verification, rows are only those
//! verified before the first problem and must not be relied on).
//!
//! A request belongs to the period when its `requested` event (or, if the log starts later,
//! its first event) falls in `[from, to)`. All text from the log (action parameters, names,
//! reasons) is HTML-escaped and cut to a bounded length; CSV cells are quoted and cells that a
//! spreadsheet would run as a formula are prefixed with `'`.
//!
//! ```
//! use approvals_audit::log::{LogConfig, LogVerifier, LogWriter};
//! use approvals_audit::note::Signer;
//! use approvals_audit::report::{EvidenceReport, ReportOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("audit.jsonl");
//! let signer = Signer::generate("audit.example/prod")?;
//! LogWriter::create(&path, LogConfig::new("audit.example/prod"), signer.clone())?.close()?;
//!
//! let report = EvidenceReport::build(&path, &LogVerifier::new([signer.verifier()]), &ReportOptions::default())?;
//! assert!(report.verified());
//! let html = report.to_html();
//! assert!(html.contains("Log integrity verified"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::hex::to_hex;
use crate::log::{LogError, LogVerifier, VerifyReport, for_each_verified};

mod sample;
mod sections;
pub use crate::view::Actor;
use crate::view::EventView;
pub use sample::{sample, sample_rank};

/// Longest text shown in one HTML table cell, in characters.
const MAX_CELL_CHARS: usize = 300;
/// Most rows in the refused-review table.
const MAX_EXCEPTION_ROWS: usize = 500;

/// What to put in the report.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReportOptions {
    /// First instant of the period (inclusive); `None`: from the start of the log.
    pub from: Option<DateTime<Utc>>,
    /// End of the period (exclusive); `None`: to the end of the log.
    pub to: Option<DateTime<Utc>>,
    /// The report title.
    pub title: String,
    /// When the report was generated (shown in it).
    pub generated_at: DateTime<Utc>,
    /// The command an auditor runs to check the log again (shown in the method section).
    pub verify_command: Option<String>,
    /// A reproducible sample of requests for the auditor: how many, and the seed
    /// ([`sample`]).
    pub sample: Option<(usize, String)>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            title: "Privileged change approvals: audit evidence".into(),
            generated_at: Utc::now(),
            verify_command: None,
            sample: None,
        }
    }
}

impl ReportOptions {
    /// Sets the period; see [`parse_bound`] for accepted texts.
    pub fn period(mut self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Self {
        self.from = from;
        self.to = to;
        self
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the generation time.
    pub fn generated_at(mut self, at: DateTime<Utc>) -> Self {
        self.generated_at = at;
        self
    }

    /// Sets the verification command shown to auditors.
    pub fn verify_command(mut self, command: impl Into<String>) -> Self {
        self.verify_command = Some(command.into());
        self
    }

    /// Adds a sample of `n` requests selected by `seed` ([`sample`]).
    pub fn sample(mut self, n: usize, seed: impl Into<String>) -> Self {
        self.sample = Some((n, seed.into()));
        self
    }
}

/// Parses a period bound: RFC 3339 (`2026-11-01T00:00:00Z`) or a date (`2026-11-01`). A date
/// means the start of that day (UTC) for `from`, and the end of that day for `to`
/// (`end_of_day`), so `--from 2026-11-01 --to 2026-11-30` covers all of November.
pub fn parse_bound(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let date = if end_of_day {
        date.succ_opt()
            .ok_or_else(|| format!("{text:?} is out of range"))?
    } else {
        date
    };
    Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

/// How a request ended (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Outcome {
    /// Approved (or allowed) and executed successfully.
    Executed,
    /// Approved (or allowed) and executed, but the action failed.
    Failed,
    /// Approved; not executed (yet) in the period's log.
    Approved,
    /// Allowed by policy without review; not executed through the gate.
    Allowed,
    /// A reviewer denied it.
    Denied,
    /// The policy refused it.
    PolicyDenied,
    /// Nobody decided in time.
    Expired,
    /// Withdrawn.
    Cancelled,
    /// Approved, but the grant was not used in time.
    Lapsed,
    /// Refused at once: a reviewer had denied the same action within the rule's
    /// `cooldown_after_denial` (`resubmission_refused`), and nobody was asked.
    DeniedBefore,
    /// Still waiting for reviewers.
    Pending,
}

impl Outcome {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Failed => "execution failed",
            Outcome::Approved => "approved, not run",
            Outcome::Allowed => "allowed by policy",
            Outcome::Denied => "denied",
            Outcome::PolicyDenied => "denied by policy",
            Outcome::Expired => "expired",
            Outcome::Cancelled => "cancelled",
            Outcome::Lapsed => "grant lapsed",
            Outcome::DeniedBefore => "refused: denied recently",
            Outcome::Pending => "pending",
        }
    }

    fn css(self) -> &'static str {
        match self {
            Outcome::Executed | Outcome::Approved | Outcome::Allowed => "ok",
            Outcome::Failed | Outcome::Denied | Outcome::PolicyDenied | Outcome::DeniedBefore => {
                "bad"
            }
            _ => "warn",
        }
    }

    fn color(self) -> &'static str {
        match self.css() {
            "ok" => "#1a7f37",
            "bad" => "#c62828",
            _ => "#b26a00",
        }
    }
}

/// One review accepted for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSummary {
    /// Reviewer id.
    pub reviewer: String,
    /// `approve` or `deny`.
    pub verdict: String,
    /// When.
    pub at: Option<DateTime<Utc>>,
    /// Their reason.
    pub reason: Option<String>,
    /// Through which channel.
    pub channel: Option<String>,
    /// The reviewer's groups as the gate saw them when the review was accepted.
    pub groups: Vec<String>,
    /// The step-up proof the approval carried, under a rule that requires one: its method,
    /// credential id and flags (the whole proof is in the `reviewed` event).
    pub step_up: Option<String>,
}

/// Everything the log says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSummary {
    /// The request id.
    pub request_id: String,
    /// Action kind.
    pub kind: String,
    /// Action resource.
    pub resource: String,
    /// Action digest (`sha256:<hex>`): the approved one, when a reviewer edited the action.
    pub digest: String,
    /// The agent or service that asked.
    pub initiator: Option<Actor>,
    /// The human the initiator acted for.
    pub on_behalf_of: Option<String>,
    /// The model behind the agent.
    pub model: Option<String>,
    /// The environment.
    pub environment: Option<String>,
    /// The ticket.
    pub ticket: Option<String>,
    /// The justification.
    pub justification: Option<String>,
    /// The policy rule that decided.
    pub policy_rule: Option<String>,
    /// The policy version that decided.
    pub policy_version: Option<String>,
    /// Who approved (when quorum was reached).
    pub approvers: Vec<String>,
    /// Accepted reviews, in order.
    pub reviews: Vec<ReviewSummary>,
    /// When it was requested.
    pub requested_at: Option<DateTime<Utc>>,
    /// When it was approved or denied by reviewers.
    pub decided_at: Option<DateTime<Utc>>,
    /// When the action finished executing.
    pub executed_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: Outcome,
    /// The execution error or denial reason.
    pub detail: Option<String>,
    /// Log `seq` of the request's first event.
    pub first_seq: u64,
    /// Log `seq` of the approval or denial event.
    pub decision_seq: Option<u64>,
    /// Whether reviewers were asked.
    pub reviewed: bool,
}

impl RequestSummary {
    fn new(v: &EventView<'_>, seq: u64) -> Self {
        Self {
            request_id: v.request_id().to_owned(),
            kind: v.kind().to_owned(),
            resource: v.resource().to_owned(),
            digest: v.digest().to_owned(),
            initiator: None,
            on_behalf_of: None,
            model: None,
            environment: None,
            ticket: None,
            justification: None,
            policy_rule: None,
            policy_version: None,
            approvers: Vec::new(),
            reviews: Vec::new(),
            requested_at: v.at(),
            decided_at: None,
            executed_at: None,
            outcome: Outcome::Pending,
            detail: None,
            first_seq: seq,
            decision_seq: None,
            reviewed: false,
        }
    }

    /// The person responsible for the request: the human the agent acted for, else the
    /// initiator itself.
    pub fn requester(&self) -> Option<&str> {
        self.on_behalf_of
            .as_deref()
            .or(self.initiator.as_ref().map(|a| a.id.as_str()))
    }

    /// Time from request to the reviewers' decision.
    pub fn decision_latency(&self) -> Option<TimeDelta> {
        Some(self.decided_at? - self.requested_at?)
    }

    /// Applies one of the request's events; `plan_sizes` are the item counts of the plans
    /// that approved actions, by the action's request id (see [`EvidenceReport::build`]).
    fn apply(&mut self, v: &EventView<'_>, seq: u64, plan_sizes: &HashMap<String, u64>) {
        let s = |key: &str| v.str(key).map(str::to_owned);
        match v.name() {
            "requested" => {
                self.requested_at = v.at();
                let request = v.get("request");
                let field = |path: &[&str]| {
                    let mut cur = request?;
                    for p in path {
                        cur = cur.get(p)?;
                    }
                    cur.as_str().map(str::to_owned)
                };
                if let Some(init) = v.initiator() {
                    self.initiator = init.get("principal").and_then(Actor::from_principal);
                    self.on_behalf_of = init
                        .get("on_behalf_of")
                        .and_then(|p| p.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    self.model = init.get("model").and_then(Value::as_str).map(str::to_owned);
                }
                self.environment = field(&["context", "environment"]);
                self.ticket = field(&["context", "ticket"]);
                self.justification = field(&["justification"]);
            }
            "policy_decided" => {
                self.policy_version = s("policy_version");
                let decision = v.get("decision");
                self.policy_rule = decision
                    .and_then(|d| d.get("rule"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                match decision
                    .and_then(|d| d.get("outcome"))
                    .and_then(Value::as_str)
                {
                    Some("allow") => self.outcome = Outcome::Allowed,
                    Some("deny") => {
                        self.outcome = Outcome::PolicyDenied;
                        self.detail = v.reason();
                    }
                    _ => {
                        self.outcome = Outcome::Pending;
                        self.reviewed = true;
                    }
                }
            }
            "reviewed" => {
                let reviewer = v.actor();
                self.reviews.push(ReviewSummary {
                    reviewer: reviewer.id,
                    verdict: s("verdict").unwrap_or_default(),
                    at: v.at(),
                    reason: s("reason"),
                    channel: s("channel"),
                    groups: reviewer.groups,
                    step_up: v.get("step_up").map(step_up_summary),
                });
            }
            // A reviewer changed the action before approving it: what is approved from here
            // on is the edited action, under the policy's decision on it.
            "edited" => {
                self.digest = v.digest().to_owned();
                if let Some(rule) = v
                    .get("decision")
                    .and_then(|d| d.get("rule"))
                    .and_then(Value::as_str)
                {
                    self.policy_rule = Some(rule.to_owned());
                }
                self.policy_version = s("policy_version").or(self.policy_version.take());
                self.detail = Some(format!(
                    "edited by {} before approval ({}); asked as {}",
                    v.actor().id,
                    v.changes().join("; "),
                    s("from_digest").unwrap_or_default()
                ));
            }
            "approved" => {
                self.outcome = Outcome::Approved;
                self.approvers = v.approvers();
                self.decided_at = v.at();
                self.decision_seq = Some(seq);
            }
            // Approved without asking, by the approvers of a standing grant.
            "approved_by_standing_grant" => {
                self.outcome = Outcome::Approved;
                self.approvers = v.approvers();
                self.decided_at = v.at();
                self.decision_seq = Some(seq);
                self.detail = Some(format!(
                    "approved by standing grant {}",
                    s("standing").unwrap_or_default()
                ));
            }
            // Approved without asking again, as an item of a plan its approvers approved.
            "approved_by_plan" => {
                self.outcome = Outcome::Approved;
                self.approvers = v.approvers();
                self.decided_at = v.at();
                self.decision_seq = Some(seq);
                self.detail = Some(plan_detail(v, plan_sizes.get(&self.request_id).copied()));
            }
            "denied" => {
                self.outcome = Outcome::Denied;
                self.decided_at = v.at();
                self.decision_seq = Some(seq);
                self.detail = s("reason");
            }
            "expired" => self.outcome = Outcome::Expired,
            "cancelled" => {
                self.outcome = Outcome::Cancelled;
                self.detail = s("reason");
            }
            "lapsed" => self.outcome = Outcome::Lapsed,
            "resubmission_refused" => {
                self.outcome = Outcome::DeniedBefore;
                self.detail = Some(format!(
                    "denied by {} in request {}{}; not asked again before {}",
                    v.actor().id,
                    s("earlier").unwrap_or_default(),
                    s("reason").map(|r| format!(": {r}")).unwrap_or_default(),
                    s("until").unwrap_or_default()
                ));
            }
            "executed" => {
                self.executed_at = v.at();
                if v.succeeded() {
                    self.outcome = Outcome::Executed;
                } else {
                    self.outcome = Outcome::Failed;
                    self.detail = s("error");
                }
            }
            _ => {}
        }
    }
}

/// `approved by plan <id>, item N of M`: the item 1-based, `of M` when the plan's size is
/// known, no item when the event does not record it.
fn plan_detail(v: &EventView<'_>, items: Option<u64>) -> String {
    let plan = v.str("plan").unwrap_or_default();
    match (v.plan_item(), items) {
        (Some(item), Some(items)) => format!("approved by plan {plan}, item {item} of {items}"),
        (Some(item), None) => format!("approved by plan {plan}, item {item}"),
        (None, _) => format!("approved by plan {plan}"),
    }
}

/// A refused review or grant: a self-approval attempt, an unauthorized reviewer, a forged
/// callback, a grant presented for another action, twice or too late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAttempt {
    /// When.
    pub at: Option<DateTime<Utc>>,
    /// `review_rejected` or `grant_rejected`.
    pub event: String,
    /// The request.
    pub request_id: String,
    /// The action kind.
    pub kind: String,
    /// Who tried, when known.
    pub who: Option<String>,
    /// The cause (`self_approval`, `forged`, ...).
    pub cause: String,
    /// Details.
    pub detail: String,
    /// Its log `seq`.
    pub seq: u64,
}

/// The evidence report: verification result, requests and refused attempts in the period.
#[derive(Debug, Clone)]
pub struct EvidenceReport {
    /// The log's verification report.
    pub verification: VerifyReport,
    /// The log file, as named when building.
    pub log_path: String,
    /// SHA-256 of the log file's bytes as read, hex.
    pub log_sha256: String,
    /// Requests in the period, in log order.
    pub requests: Vec<RequestSummary>,
    /// Refused reviews and grants in the period, in log order.
    pub refused: Vec<RefusedAttempt>,
    /// Verified entries read (all periods).
    pub entries_read: u64,
    /// The options it was built with.
    pub options: ReportOptions,
    /// The audit sample, when [`ReportOptions::sample`] asked for one.
    pub sample: Option<Sample>,
}

/// A reproducible sample of the period's requests ([`sample`] describes the method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The seed.
    pub seed: String,
    /// How many requests were asked for.
    pub requested: usize,
    /// The population: how many requests the period has.
    pub population: usize,
    /// The selected request ids with their rank (`SHA-256(seed || id)`, hex), lowest first.
    pub selected: Vec<(String, String)>,
}

impl Sample {
    /// The 1-based position of `request_id` in the sample, if it was selected.
    pub fn position(&self, request_id: &str) -> Option<usize> {
        self.selected
            .iter()
            .position(|(id, _)| id == request_id)
            .map(|i| i + 1)
    }
}

impl EvidenceReport {
    /// Verifies the log at `path` and gathers the period's requests from its verified entries.
    pub fn build(
        path: impl AsRef<Path>,
        verifier: &LogVerifier,
        options: &ReportOptions,
    ) -> Result<Self, LogError> {
        let path = path.as_ref();
        let log_sha256 = sha256_file(path)?;
        let mut entries_read = 0u64;
        let mut requests: Vec<RequestSummary> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        // How many items the plan that approved an action has, by the action's request id.
        let mut plan_sizes: HashMap<String, u64> = HashMap::new();
        let mut refused = Vec::new();
        let in_period = |t: Option<DateTime<Utc>>| match t {
            Some(t) => {
                options.from.is_none_or(|from| t >= from) && options.to.is_none_or(|to| t < to)
            }
            None => options.from.is_none() && options.to.is_none(),
        };
        let verification = for_each_verified(path, verifier, |entry| {
            entries_read += 1;
            let Ok(event) = entry.event_value() else {
                return Ok::<(), LogError>(());
            };
            let v = EventView(&event);
            // A plan's use names the action it approved and the plan's size, which that
            // action's `approved_by_plan` event does not repeat. Kept whatever the plan's period.
            if v.name() == "plan_item_used"
                && let Some(action) = v.str("request")
                && let Some(items) = v.get("items").and_then(Value::as_u64)
            {
                plan_sizes.insert(action.to_owned(), items);
            }
            let id = v.request_id();
            if id.is_empty() {
                return Ok(());
            }
            // An action refused before it was recorded: an attempt, not a request.
            if v.name() == "request_refused" {
                if in_period(v.at()) {
                    let size = v.get("size").and_then(Value::as_u64).unwrap_or(0);
                    refused.push(RefusedAttempt {
                        at: v.at(),
                        event: v.name().to_owned(),
                        request_id: id.to_owned(),
                        kind: v.kind().to_owned(),
                        who: Some(v.actor().id),
                        cause: v.str("cause").unwrap_or("unknown").to_owned(),
                        detail: format!("{} ({size} bytes)", v.str("detail").unwrap_or("")),
                        seq: entry.seq,
                    });
                }
                return Ok(());
            }
            let i = match index.get(id) {
                Some(&i) => Some(i),
                None if in_period(v.at()) => {
                    requests.push(RequestSummary::new(&v, entry.seq));
                    index.insert(id.to_owned(), requests.len() - 1);
                    Some(requests.len() - 1)
                }
                // First seen outside the period: remember that it is out.
                None => {
                    index.insert(id.to_owned(), usize::MAX);
                    None
                }
            };
            let Some(request) = i.and_then(|i| requests.get_mut(i)) else {
                return Ok(());
            };
            request.apply(&v, entry.seq, &plan_sizes);
            if matches!(v.name(), "review_rejected" | "grant_rejected") {
                refused.push(RefusedAttempt {
                    at: v.at(),
                    event: v.name().to_owned(),
                    request_id: id.to_owned(),
                    kind: v.kind().to_owned(),
                    who: v
                        .get("reviewer")
                        .and_then(Actor::from_principal)
                        .map(|a| a.id),
                    cause: v.str("cause").unwrap_or("unknown").to_owned(),
                    detail: v.str("detail").unwrap_or("").to_owned(),
                    seq: entry.seq,
                });
            }
            Ok(())
        })?;
        Ok(EvidenceReport {
            verification,
            log_path: path.display().to_string(),
            log_sha256,
            requests,
            refused,
            entries_read,
            options: options.clone(),
            sample: None,
        }
        .with_sample())
    }

    fn with_sample(mut self) -> Self {
        if let Some((n, seed)) = &self.options.sample {
            self.sample = Some(Sample {
                seed: seed.clone(),
                requested: *n,
                population: self.requests.len(),
                selected: sample(
                    self.requests.iter().map(|r| r.request_id.as_str()),
                    *n,
                    seed,
                ),
            });
        }
        self
    }

    /// Whether the log verified without problems.
    pub fn verified(&self) -> bool {
        self.verification.is_ok()
    }

    /// How many requests ended in each outcome.
    pub fn outcome_counts(&self) -> BTreeMap<Outcome, usize> {
        let mut counts = BTreeMap::new();
        for r in &self.requests {
            *counts.entry(r.outcome).or_default() += 1;
        }
        counts
    }

    /// Per reviewer: (approvals, denials), sorted by total, most first.
    pub fn decisions_per_reviewer(&self) -> Vec<(String, usize, usize)> {
        let mut map: HashMap<&str, (usize, usize)> = HashMap::new();
        for review in self.requests.iter().flat_map(|r| &r.reviews) {
            let e = map.entry(review.reviewer.as_str()).or_default();
            if review.verdict == "deny" {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        let mut out: Vec<_> = map
            .into_iter()
            .map(|(k, (a, d))| (k.to_owned(), a, d))
            .collect();
        out.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        out
    }

    /// Reviewer decision latencies (request to approval or denial), in seconds, sorted.
    pub fn latencies(&self) -> Vec<i64> {
        let mut l: Vec<i64> = self
            .requests
            .iter()
            .filter_map(RequestSummary::decision_latency)
            .map(|d| d.num_seconds().max(0))
            .collect();
        l.sort_unstable();
        l
    }

    /// The report as CSV (RFC 4180, UTF-8, header row), one row per request.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header = [
            "request_id",
            "kind",
            "resource",
            "digest",
            "requester",
            "initiator",
            "initiator_kind",
            "model",
            "on_behalf_of",
            "environment",
            "ticket",
            "justification",
            "policy_rule",
            "policy_version",
            "approvers",
            "reviews",
            "review_reasons",
            "reviewer_groups",
            "requested_at",
            "decided_at",
            "executed_at",
            "decision_latency_seconds",
            "outcome",
            "detail",
            "first_log_seq",
            "decision_log_seq",
            "sample_position",
            "log_completeness",
            "review_step_ups",
        ];
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        let completeness = self.completeness_text();
        for r in &self.requests {
            let reviews = r
                .reviews
                .iter()
                .map(|v| format!("{}:{}@{}", v.reviewer, v.verdict, time(v.at)))
                .collect::<Vec<_>>()
                .join("; ");
            let reasons = r
                .reviews
                .iter()
                .filter_map(|v| Some(format!("{}: {}", v.reviewer, v.reason.as_deref()?)))
                .collect::<Vec<_>>()
                .join("; ");
            let groups = r
                .reviews
                .iter()
                .map(|v| format!("{}: {}", v.reviewer, v.groups.join("|")))
                .collect::<Vec<_>>()
                .join("; ");
            let step_ups = r
                .reviews
                .iter()
                .filter_map(|v| Some(format!("{}: {}", v.reviewer, v.step_up.as_deref()?)))
                .collect::<Vec<_>>()
                .join("; ");
            let cells = [
                r.request_id.clone(),
                r.kind.clone(),
                r.resource.clone(),
                r.digest.clone(),
                r.requester().unwrap_or("").to_owned(),
                r.initiator
                    .as_ref()
                    .map(|a| a.id.clone())
                    .unwrap_or_default(),
                r.initiator
                    .as_ref()
                    .map(|a| a.kind.clone())
                    .unwrap_or_default(),
                r.model.clone().unwrap_or_default(),
                r.on_behalf_of.clone().unwrap_or_default(),
                r.environment.clone().unwrap_or_default(),
                r.ticket.clone().unwrap_or_default(),
                r.justification.clone().unwrap_or_default(),
                r.policy_rule.clone().unwrap_or_default(),
                r.policy_version.clone().unwrap_or_default(),
                r.approvers.join("; "),
                reviews,
                reasons,
                groups,
                time(r.requested_at),
                time(r.decided_at),
                time(r.executed_at),
                r.decision_latency()
                    .map(|d| d.num_seconds().to_string())
                    .unwrap_or_default(),
                r.outcome.label().to_owned(),
                r.detail.clone().unwrap_or_default(),
                r.first_seq.to_string(),
                r.decision_seq.map(|s| s.to_string()).unwrap_or_default(),
                self.sample
                    .as_ref()
                    .and_then(|s| s.position(&r.request_id))
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                completeness.clone(),
                step_ups,
            ];
            let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(64 * 1024 + self.requests.len() * 1500);
        let o = &self.options;
        let period = format!(
            "{} \u{2013} {}",
            o.from.map_or("start of log".into(), |t| time(Some(t))),
            o.to.map_or("end of log".into(), |t| time(Some(t)))
        );
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
             <title>{}</title><style>{CSS}</style></head><body><main>",
            esc(&o.title)
        );
        let _ = write!(
            h,
            "<header><h1>{}</h1><dl class=\"meta\"><dt>Period</dt><dd>{}</dd>\
             <dt>Log file</dt><dd><code>{}</code></dd><dt>Generated</dt><dd>{}</dd></dl></header>",
            esc(&o.title),
            esc(&period),
            esc(&clip(&self.log_path, MAX_CELL_CHARS)),
            esc(&time(Some(o.generated_at)))
        );
        self.html_verification(&mut h);
        self.html_summary(&mut h);
        self.html_charts(&mut h);
        self.html_requests(&mut h);
        self.html_refused(&mut h);
        self.html_sample(&mut h);
        self.html_keys(&mut h);
        self.html_method(&mut h);
        h.push_str("</main></body></html>\n");
        h
    }

    fn html_verification(&self, h: &mut String) {
        let v = &self.verification;
        let tail: u64 = v
            .warnings
            .iter()
            .map(|w| match w {
                crate::log::Warning::UnverifiedTail { entries, .. } => *entries,
                _ => 0,
            })
            .sum();
        let (class, title) = if !v.is_ok() {
            (
                "bad",
                "Log integrity FAILED \u{2014} this log was altered or damaged; do not rely on this report",
            )
        } else if v.completeness == crate::log::Completeness::Unproven {
            (
                "bad",
                "Log integrity verified, but completeness UNPROVEN \u{2014} no witness was consulted; \
                 entries may be missing from the end of the log",
            )
        } else if v.last_verified.is_none() {
            (
                "warn",
                "No signed checkpoint found \u{2014} nothing could be verified",
            )
        } else if tail > 0 {
            (
                "warn",
                "Log integrity verified (newest entries not yet signed and left out)",
            )
        } else {
            ("ok", "Log integrity verified")
        };
        let _ = write!(
            h,
            "<section class=\"verify {class}\"><h2><span class=\"mark\">{}</span> {}</h2><dl>",
            if class == "ok" {
                "\u{2714}"
            } else if class == "warn" {
                "!"
            } else {
                "\u{2716}"
            },
            esc(title)
        );
        let mut row = |k: &str, val: String| {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), val);
        };
        if let Some(cp) = &v.last_verified {
            row(
                "Log origin",
                format!("<code>{}</code>", esc(&cp.checkpoint.origin)),
            );
            row(
                "Last verified checkpoint",
                format!(
                    "size <b>{}</b>, root <code>{}</code>",
                    cp.checkpoint.size,
                    to_hex(&cp.checkpoint.root)
                ),
            );
            row(
                "Signed by",
                esc(&cp.signed_by.join(", ")).replace(", ", "<br>"),
            );
        }
        row(
            "Entries checked",
            format!(
                "{} entries, {} checkpoints; every leaf hash, the hash chain and every checkpoint signature recomputed",
                v.entries, v.checkpoints
            ),
        );
        row(
            "Log file SHA-256",
            format!("<code>{}</code>", self.log_sha256),
        );
        if tail > 0 && v.is_ok() {
            row(
                "Not yet signed",
                format!(
                    "{tail} newest entries are not covered by a signed checkpoint and are not in this report"
                ),
            );
        } else if tail > 0 {
            row(
                "Left out",
                format!("{tail} entries after the last verified checkpoint are not in this report"),
            );
        }
        h.push_str("</dl>");
        self.html_completeness(h);
        if !v.problems.is_empty() {
            h.push_str("<h3>Problems found</h3><ul class=\"problems\">");
            for p in v.problems.iter().take(50) {
                let _ = write!(
                    h,
                    "<li><code>{}</code> {}</li>",
                    esc(p.kind.code()),
                    esc(&clip(&p.to_string(), MAX_CELL_CHARS))
                );
            }
            if v.problems.len() > 50 || v.problems_omitted > 0 {
                let _ = write!(
                    h,
                    "<li>\u{2026} {} more</li>",
                    v.problems.len().saturating_sub(50) as u64 + v.problems_omitted
                );
            }
            h.push_str("</ul>");
        }
        h.push_str("</section>");
    }

    fn html_summary(&self, h: &mut String) {
        let counts = self.outcome_counts();
        let c = |o: Outcome| counts.get(&o).copied().unwrap_or(0);
        let reviewed = self.requests.iter().filter(|r| r.reviewed).count();
        let lat = self.latencies();
        let tiles: [(&str, String, &str); 8] = [
            ("Requests", self.requests.len().to_string(), ""),
            ("Needed human approval", reviewed.to_string(), ""),
            (
                "Approved by humans",
                self.requests
                    .iter()
                    .filter(|r| !r.approvers.is_empty())
                    .count()
                    .to_string(),
                "ok",
            ),
            (
                "Denied",
                (c(Outcome::Denied) + c(Outcome::PolicyDenied)).to_string(),
                "bad",
            ),
            ("Expired", c(Outcome::Expired).to_string(), "warn"),
            (
                "Executed",
                (c(Outcome::Executed) + c(Outcome::Failed)).to_string(),
                "",
            ),
            (
                "Median / p95 decision time",
                format!(
                    "{} / {}",
                    percentile(&lat, 50).map_or("\u{2013}".into(), duration),
                    percentile(&lat, 95).map_or("\u{2013}".into(), duration)
                ),
                "",
            ),
            (
                "Refused reviews & grants",
                self.refused.len().to_string(),
                if self.refused.is_empty() { "" } else { "warn" },
            ),
        ];
        h.push_str("<section><h2>Summary</h2><div class=\"tiles\">");
        for (label, value, class) in tiles {
            let _ = write!(
                h,
                "<div class=\"tile {class}\"><div class=\"v\">{}</div><div class=\"l\">{}</div></div>",
                esc(&value),
                esc(label)
            );
        }
        h.push_str("</div></section>");
    }

    fn html_charts(&self, h: &mut String) {
        h.push_str("<section><h2>Charts</h2><div class=\"charts\">");
        // Decision latency histogram.
        let buckets: [(&str, i64); 7] = [
            ("<1m", 60),
            ("1\u{2013}5m", 300),
            ("5\u{2013}15m", 900),
            ("15\u{2013}60m", 3600),
            ("1\u{2013}4h", 4 * 3600),
            ("4\u{2013}24h", 24 * 3600),
            (">24h", i64::MAX),
        ];
        let mut counts = [0usize; 7];
        for l in self.latencies() {
            let i = buckets.iter().position(|(_, max)| l < *max).unwrap_or(6);
            counts[i] += 1;
        }
        let bars: Vec<(String, Vec<(usize, &str)>)> = buckets
            .iter()
            .zip(counts)
            .map(|((label, _), n)| (label.to_string(), vec![(n, "#3b6fb6")]))
            .collect();
        chart_columns(h, "Approval latency (request \u{2192} decision)", &bars);
        // Decisions per reviewer.
        let mut per: Vec<(String, Vec<(usize, &str)>)> = self
            .decisions_per_reviewer()
            .into_iter()
            .take(12)
            .map(|(who, a, d)| (who, vec![(a, "#1a7f37"), (d, "#c62828")]))
            .collect();
        if per.is_empty() {
            per.push(("(no reviews)".into(), vec![(0, "#1a7f37")]));
        }
        chart_rows(
            h,
            "Decisions per approver",
            &per,
            &[("approve", "#1a7f37"), ("deny", "#c62828")],
        );
        // Outcomes.
        let outcome_counts = self.outcome_counts();
        let outcomes: Vec<(String, Vec<(usize, &str)>)> = [
            Outcome::Executed,
            Outcome::Failed,
            Outcome::Approved,
            Outcome::Allowed,
            Outcome::Denied,
            Outcome::PolicyDenied,
            Outcome::Expired,
            Outcome::Cancelled,
            Outcome::Lapsed,
            Outcome::Pending,
        ]
        .iter()
        .map(|o| {
            (
                o.label().to_owned(),
                vec![(outcome_counts.get(o).copied().unwrap_or(0), o.color())],
            )
        })
        .collect();
        chart_rows(h, "Outcomes (denied, expired, ...)", &outcomes, &[]);
        h.push_str("</div></section>");
    }

    fn html_requests(&self, h: &mut String) {
        let _ = write!(
            h,
            "<section><h2>Privileged actions ({})</h2><table class=\"req\"><thead><tr>\
             <th>Action</th><th>Requester / initiator / model</th><th>Reviewers: verdict, groups, reason</th>\
             <th>Requested</th><th>Approved / denied</th><th>Executed</th>\
             <th>Digest</th><th>Policy</th><th>Outcome</th></tr></thead><tbody>",
            self.requests.len()
        );
        if self.requests.is_empty() {
            h.push_str(
                "<tr><td colspan=\"9\" class=\"empty\">No requests in this period.</td></tr>",
            );
        }
        for r in &self.requests {
            let initiator = r.initiator.as_ref().map_or(String::new(), |a| {
                format!("{} <span class=\"k\">{}</span>", cell(&a.id), cell(&a.kind))
            });
            // Every accepted review: who, the verdict, their groups when they decided, and
            // why (a change ticket, for example); approvers without a review event last.
            let mut approvers = r
                .reviews
                .iter()
                .map(|v| {
                    let mut out = format!(
                        "<b>{}</b> <span class=\"k\">{}</span>",
                        cell(&v.reviewer),
                        cell(&v.verdict)
                    );
                    if !v.groups.is_empty() {
                        let _ = write!(
                            out,
                            "<br><span class=\"k\">groups</span> {}",
                            cell(&v.groups.join(", "))
                        );
                    }
                    if let Some(reason) = &v.reason {
                        let _ = write!(out, "<br><q class=\"why\">{}</q>", cell(reason));
                    }
                    out
                })
                .collect::<Vec<_>>();
            approvers.extend(
                r.approvers
                    .iter()
                    .filter(|a| !r.reviews.iter().any(|v| v.reviewer == **a))
                    .map(|a| format!("<b>{}</b>", cell(a))),
            );
            let approvers = approvers.join("<br>");
            let mut action = format!(
                "<b>{}</b><br><code>{}</code><br><span class=\"id\">{}</span>",
                cell(&r.kind),
                cell(&r.resource),
                cell(&r.request_id)
            );
            if let Some(t) = &r.ticket {
                let _ = write!(action, "<br><span class=\"k\">ticket</span> {}", cell(t));
            }
            if let Some(j) = &r.justification {
                let _ = write!(action, "<br><i>{}</i>", cell(j));
            }
            let mut who = format!(
                "<b>{}</b>",
                r.requester().map(cell).unwrap_or_else(|| "\u{2013}".into())
            );
            if r.on_behalf_of.is_some() {
                let _ = write!(who, "<br>via {initiator}");
            } else if r.initiator.is_some() {
                let _ = write!(
                    who,
                    " <span class=\"k\">{}</span>",
                    cell(r.initiator.as_ref().map_or("", |a| a.kind.as_str()))
                );
            }
            if let Some(m) = &r.model {
                let _ = write!(who, "<br><span class=\"k\">model</span> {}", cell(m));
            }
            let mut outcome = format!(
                "<span class=\"pill {}\">{}</span>",
                r.outcome.css(),
                esc(r.outcome.label())
            );
            if let Some(d) = &r.detail {
                let _ = write!(outcome, "<br><small>{}</small>", cell(d));
            }
            let _ = write!(
                outcome,
                "<br><span class=\"k\">log seq {}</span>",
                r.decision_seq.unwrap_or(r.first_seq)
            );
            let digest_hex = r.digest.strip_prefix("sha256:").unwrap_or(&r.digest);
            let _ = write!(
                h,
                "<tr><td>{action}</td><td>{who}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td>\
                 <td><code class=\"dg\" title=\"{}\">{}</code></td><td>{}<br><code>{}</code></td><td>{outcome}</td></tr>",
                if approvers.is_empty() {
                    "\u{2013}".into()
                } else {
                    approvers
                },
                time_cell(r.requested_at),
                time_cell(r.decided_at),
                r.decision_latency()
                    .map(|d| format!(
                        "<br><span class=\"k\">after {}</span>",
                        duration(d.num_seconds().max(0))
                    ))
                    .unwrap_or_default(),
                time_cell(r.executed_at),
                cell(&r.digest),
                cell(&clip(digest_hex, 13)),
                r.policy_rule
                    .as_deref()
                    .map(cell)
                    .unwrap_or_else(|| "\u{2013}".into()),
                r.policy_version
                    .as_deref()
                    .map(|v| cell(&clip(v, 20)))
                    .unwrap_or_default(),
            );
        }
        h.push_str("</tbody></table></section>");
    }

    fn html_refused(&self, h: &mut String) {
        let _ = write!(
            h,
            "<section><h2>Refused reviews and grants ({})</h2>\
             <p class=\"note\">Attempts the gate refused: self-approval, unauthorized or non-human reviewers, \
             forged callbacks, grants presented for another action, twice or too late, and actions refused \
             before they were recorded (<code>request_refused</code>: a claimed identity other than the \
             authenticated one, an oversized or malformed action; its actor is the initiator).</p>\
             <table><thead><tr><th>Time</th><th>Event</th><th>Cause</th><th>Who</th><th>Action</th>\
             <th>Detail</th><th>Log seq</th></tr></thead><tbody>",
            self.refused.len()
        );
        if self.refused.is_empty() {
            h.push_str("<tr><td colspan=\"7\" class=\"empty\">None in this period.</td></tr>");
        }
        for a in self.refused.iter().take(MAX_EXCEPTION_ROWS) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><span class=\"pill warn\">{}</span></td><td>{}</td>\
                 <td>{}<br><span class=\"id\">{}</span></td><td>{}</td><td>{}</td></tr>",
                time_cell(a.at),
                cell(&a.event),
                cell(&a.cause),
                a.who
                    .as_deref()
                    .map(cell)
                    .unwrap_or_else(|| "\u{2013}".into()),
                cell(&a.kind),
                cell(&a.request_id),
                cell(&a.detail),
                a.seq
            );
        }
        if self.refused.len() > MAX_EXCEPTION_ROWS {
            let _ = write!(
                h,
                "<tr><td colspan=\"7\">\u{2026} {} more in the CSV and the log</td></tr>",
                self.refused.len() - MAX_EXCEPTION_ROWS
            );
        }
        h.push_str("</tbody></table></section>");
    }

    fn html_method(&self, h: &mut String) {
        let command = self.options.verify_command.clone().unwrap_or_else(|| {
            format!(
                "approvals-audit verify {} --trust <verifier keys file> --witness {}",
                self.log_path,
                crate::log::witness::witness_path(&self.log_path).display()
            )
        });
        let note = self
            .verification
            .last_verified
            .as_ref()
            .map(|c| c.note.clone())
            .unwrap_or_default();
        let _ = write!(
            h,
            "<section class=\"method\"><h2>How this evidence was produced</h2><ol>\
             <li>Every audit event is one line of an append-only log. Each entry carries the RFC 6962 \
             Merkle leaf hash of its event and the hash of the entry before it; periodically the \
             writer appends a checkpoint (C2SP signed note) signed with Ed25519 over the Merkle tree \
             head of all entries so far.</li>\
             <li>Before this report was written, every entry's hash, the chain and every checkpoint \
             signature were recomputed against the trusted public keys. Any edited, deleted, \
             inserted or reordered entry, or a forged checkpoint, fails that check and turns the \
             banner at the top red.</li>\
             <li>The log was then compared with its witness: the latest signed checkpoint, kept \
             outside the log by its writer (a file beside it, a database table, or a witness \
             service). The log must hold every entry the witness signed and agree with it; \
             otherwise entries were cut from its end. The completeness line at the top says \
             whether this was shown.</li>\
             <li>Only entries covered by a verified checkpoint are used. Times are UTC as recorded \
             by the gate. \u{201c}Approved / denied\u{201d} is when the reviewers' quorum was \
             reached; decision time is measured from the request.</li>\
             <li>To check independently: <code>{}</code>; to prove a single event: \
             <code>approvals-audit prove &lt;log&gt; &lt;seq&gt;</code> and \
             <code>approvals-audit check-proof</code>.</li></ol>\
             <h3>Last verified checkpoint</h3><pre>{}</pre></section>",
            esc(&command),
            esc(&note)
        );
    }
}

fn sha256_file(path: &Path) -> Result<String, LogError> {
    let mut file =
        std::fs::File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(LogError::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finalize().into()))
}

fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn time_cell(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => format!(
            "<span class=\"t\">{}<br><b>{}</b></span>",
            t.format("%Y-%m-%d"),
            t.format("%H:%M:%S")
        ),
        None => "\u{2013}".into(),
    }
}

/// Escapes text for HTML element content and attribute values: control, bidi and other
/// invisible characters are shown as visible `‹U+XXXX›` markers (the one rule of
/// [`approvals_core::text::neutralize`]), then `& < > " '` become entities.
pub fn esc(text: &str) -> String {
    let shown = approvals_core::text::neutralize(text);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts text to `max` characters, marking the cut with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    approvals_core::text::truncate(text, max).into_owned()
}

/// Untrusted text for a table cell: neutralised and bounded, then escaped.
fn cell(text: &str) -> String {
    let shown = approvals_core::text::neutralize(text);
    esc(&approvals_core::text::truncate(&shown, MAX_CELL_CHARS))
}

/// One line for a `reviewed` event's step-up proof: method, credential id (shortened) and
/// whether the authenticator verified the user.
fn step_up_summary(proof: &Value) -> String {
    let text = |key: &str| proof.get(key).and_then(Value::as_str).unwrap_or("unknown");
    let credential: String = text("credential_id").chars().take(16).collect();
    let verified = proof.get("user_verified").and_then(Value::as_bool) == Some(true);
    format!(
        "{} (credential {credential}…, {})",
        text("method"),
        if verified {
            "user verified"
        } else {
            "user not verified"
        }
    )
}

/// One CSV cell: always quoted; a leading `=`, `+`, `-`, `@`, tab or CR (a spreadsheet
/// formula) is neutralized with a `'`.
pub fn csv_cell(text: &str) -> String {
    let guarded = matches!(
        text.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    );
    let mut out = String::with_capacity(text.len() + 3);
    out.push('"');
    if guarded {
        out.push('\'');
    }
    out.push_str(&text.replace('"', "\"\""));
    out.push('"');
    out
}

/// Vertical bars with labels under them.
fn chart_columns(h: &mut String, title: &str, bars: &[(String, Vec<(usize, &str)>)]) {
    let (w, ht, top, bottom, left) = (390.0, 220.0, 24.0, 36.0, 34.0);
    let max = bars
        .iter()
        .map(|(_, v)| v.iter().map(|x| x.0).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_h = ht - top - bottom;
    let slot = (w - left - 10.0) / bars.len().max(1) as f64;
    let _ = write!(
        h,
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    let _ = write!(
        h,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
        ht - bottom,
        w - 5.0,
        ht - bottom
    );
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"{}\" class=\"ax\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" class=\"ax\" text-anchor=\"end\">0</text>",
        left - 4.0,
        top + 4.0,
        max as usize,
        left - 4.0,
        ht - bottom + 4.0
    );
    for (i, (label, parts)) in bars.iter().enumerate() {
        let x = left + i as f64 * slot + slot * 0.15;
        let bw = slot * 0.7;
        let mut y = ht - bottom;
        let total: usize = parts.iter().map(|p| p.0).sum();
        for (n, color) in parts {
            let bh = *n as f64 / max * plot_h;
            y -= bh;
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/>"
            );
        }
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"n\" text-anchor=\"middle\">{total}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"middle\">{}</text>",
            x + bw / 2.0,
            y - 4.0,
            x + bw / 2.0,
            ht - bottom + 16.0,
            esc(label)
        );
    }
    h.push_str("</svg></figure>");
}

/// Horizontal bars, one row per label, stacked parts; an optional legend.
fn chart_rows(
    h: &mut String,
    title: &str,
    rows: &[(String, Vec<(usize, &str)>)],
    legend: &[(&str, &str)],
) {
    let (w, row_h, top, label_w) = (390.0, 20.0, 8.0, 150.0);
    let legend_h = if legend.is_empty() { 0.0 } else { 22.0 };
    let ht = top + rows.len() as f64 * row_h + legend_h + 8.0;
    let max = rows
        .iter()
        .map(|(_, v)| v.iter().map(|x| x.0).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_w = w - label_w - 40.0;
    let _ = write!(
        h,
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    for (i, (label, parts)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + row_h * 0.7,
            esc(&clip(label, 24))
        );
        let mut x = label_w;
        let total: usize = parts.iter().map(|p| p.0).sum();
        for (n, color) in parts {
            let bw = *n as f64 / max * plot_w;
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                y + 3.0,
                row_h - 6.0
            );
            x += bw;
        }
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"n\">{total}</text>",
            x + 4.0,
            y + row_h * 0.7
        );
    }
    let mut x = label_w;
    for (name, color) in legend {
        let y = top + rows.len() as f64 * row_h + 8.0;
        let _ = write!(
            h,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"ax\">{}</text>",
            x + 14.0,
            y + 9.0,
            esc(name)
        );
        x += 90.0;
    }
    h.push_str("</svg></figure>");
}

const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;background:#f4f5f7;color:#1f2328;font:14px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif}\
main{max-width:1320px;margin:0 auto;padding:24px 28px;background:#fff}\
h1{font-size:24px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}\
h3{font-size:15px;margin:14px 0 6px}\
dl.meta{display:grid;grid-template-columns:110px auto;gap:2px 12px;margin:0;color:#57606a}dl.meta dd{margin:0}\
.verify{border:2px solid;border-radius:8px;padding:10px 18px 14px;margin-top:18px}\
.verify h2{border:0;margin:6px 0 10px;font-size:20px}\
.verify dl{display:grid;grid-template-columns:170px auto;gap:4px 14px;margin:0}.verify dd{margin:0;word-break:break-all}\
.verify.ok{border-color:#1a7f37;background:#eef9f0}.verify.ok h2{color:#1a7f37}\
.verify.warn{border-color:#b26a00;background:#fff6e5}.verify.warn h2{color:#8a5300}\
.verify.bad{border-color:#c62828;background:#fdecec}.verify.bad h2{color:#c62828}\
.mark{display:inline-block;width:28px;height:28px;border-radius:14px;color:#fff;text-align:center;line-height:28px}\
.ok .mark{background:#1a7f37}.warn .mark{background:#b26a00}.bad .mark{background:#c62828}\
.problems li{margin:3px 0}\
.completeness{border-radius:6px;padding:8px 12px;margin:12px 0 4px;font-weight:600}\
.completeness.ok{background:#dafbe1;color:#116329}\
.completeness.bad{background:#c62828;color:#fff;font-size:17px;border:3px solid #7f1010}\
q.why{font-style:italic;color:#1f2328}\
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}\
.tile{border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}.tile .v{font-size:24px;font-weight:600}\
.tile .l{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.03em}\
.tile.ok .v{color:#1a7f37}.tile.bad .v{color:#c62828}.tile.warn .v{color:#b26a00}\
.charts{display:flex;flex-wrap:wrap;gap:14px}\
.chart{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:8px}\
.chart figcaption{font-weight:600;margin-bottom:4px}\
svg text{font:11px -apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif;fill:#1f2328}svg .n{font-weight:600}\
table{border-collapse:collapse;width:100%;font-size:12.5px}\
th{background:#f6f8fa;text-align:left;border-bottom:2px solid #d0d7de;padding:6px;vertical-align:bottom}\
td{border-bottom:1px solid #e5e8eb;padding:6px;vertical-align:top;word-break:break-word}\
tbody tr:nth-child(even){background:#fafbfc}\
table.req td:nth-child(1){max-width:300px}\
code{font:12px ui-monospace,'DejaVu Sans Mono',monospace;background:#f6f8fa;padding:0 2px;border-radius:3px}\
.id{font:11px ui-monospace,'DejaVu Sans Mono',monospace;color:#57606a}.k{color:#57606a;font-size:11px}\
.pill{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;white-space:nowrap}\
.pill.ok{background:#dafbe1;color:#116329}.pill.bad{background:#ffebe9;color:#a40e26}.pill.warn{background:#fff1d6;color:#7d4e00}\
.t,.dg{white-space:nowrap}\
.empty{color:#57606a;text-align:center;padding:14px}.note{color:#57606a;margin:0 0 8px}\
.method ol{padding-left:20px}.method li{margin:4px 0}\
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:12px}\
@media print{body{background:#fff}main{padding:0}.verify,.tile,.chart{break-inside:avoid}}";
