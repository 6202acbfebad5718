//! `approvals exec`: runs one command in a CI pipeline once humans approve exactly that
//! command line (program, arguments and the named environment variables).
//!
//! The flow is a short sequence of calls to the gate: submit the action (its params hold the
//! command line and the `--param-env` values, so the digest binds them), wait for the decision
//! while showing progress and watching for SIGINT/SIGTERM, then `Gate::execute` consumes the
//! grant, runs the child and records `executed` with its exit status. Anything unexpected
//! refuses before the command starts (fail closed).

mod action;
mod child;
mod output;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use approvals_core::{
    Gate, Grant, GuardError, Initiator, Principal, RequestId, RequestRecord, ReviewError,
    RulePolicy, Submission,
};
use clap::Args;
use url::Url;

use self::action::{EditedRun, action, edited_run, initiator};
use self::child::{Caught, RunError, Signals, run_child};
use self::output::{Progress, human, one_line, shell_line};
use crate::command::{Failure, Target, audit_sinks, open_store, redact_url, term};

/// Exit codes of `approvals exec` when the command did not run. Once the command runs,
/// `exec` exits with the command's own code (128 + N when a signal N killed it). They stay
/// clear of 1 and 2 (general and usage errors), 126-127 (not executable, not found) and
/// 128 + N (killed by signal N), so a pipeline can tell "not approved" from "failed".
pub mod exit {
    /// A reviewer denied the request.
    pub const DENIED: u8 = 170;
    /// Nobody decided before the request expired (or the approval lapsed unused).
    pub const EXPIRED: u8 = 171;
    /// Refused before review: by a policy rule, or the gate refused the action itself (too
    /// large, identity refused, idempotency key used for another action, grant already used).
    pub const REFUSED: u8 = 172;
    /// Cancelled: interrupted by SIGINT or SIGTERM while waiting (the request is recorded
    /// as cancelled), or withdrawn by someone else.
    pub const CANCELLED: u8 = 173;
    /// The store, the audit log or a review channel is unreachable or failing: fail closed,
    /// retry later.
    pub const UNAVAILABLE: u8 = 174;
    /// Bad arguments or configuration: an unset `--param-env` variable, an unreadable policy
    /// file, a program that does not exist. Nothing was submitted.
    pub const USAGE: u8 = 175;
    /// Approved, but the command could not be started; recorded as a failed execution.
    pub const NOT_STARTED: u8 = 176;
}

/// `approvals exec --help` after the options.
pub(crate) const EXEC_HELP: &str = "\
Exit codes:
  the command's own   approved: the command ran; its exit code (128+N if signal N killed it)
  170  denied by a reviewer (their name and reason are printed)
  171  expired: nobody decided in time (or the approval lapsed unused)
  172  refused by policy (rule and reason printed) or by the gate; not submitted for review
  173  cancelled: SIGINT/SIGTERM while waiting (the request is cancelled), or withdrawn
  174  unavailable: store, audit log or channel unreachable or failing; retry later
  175  usage: bad arguments, unset --param-env variable, unreadable policy, unknown program
  176  approved, but the command could not be started (recorded as failed)

What is approved: kind, resource, --param/--param-json values, the command line (params
\"command\": program and arguments, exactly) and the --param-env variables (params \"env\":
name and value; other environment variables are not included), the justification,
summary, environment, ticket, the --preview-diff or --preview-dry-run file's text, and the
initiator. Changing any of them needs a new approval.
--param-env values are shown to reviewers and stored in the audit log: never name a secret.

Initiator in local mode (never taken from --param): agent --agent (default \"ci\"), on behalf of the first
of --on-behalf-of, APPROVALS_ON_BEHALF_OF, GITHUB_ACTOR, GITLAB_USER_LOGIN that is set and
not empty (none: no on-behalf-of human). That human cannot approve the request.

Local mode (--db URL --policy FILE): the request is stored in that database (sqlite://FILE or
postgres://...; default --store, APPROVALS_STORE) and its audit table; reviewers decide with
`approvals serve` on the same database or `approvals approve ID --store URL`.

Server mode (--server URL or APPROVALS_SERVER, with the agent or service token in
APPROVALS_TOKEN): the request goes through the agent API of `approvals serve`, whose policy
decides; the initiator is the token's principal and its on_behalf_of (--agent and
--on-behalf-of do not apply).

Signals: SIGINT or SIGTERM while waiting cancels the request (exit 173). While the command
runs, SIGTERM is forwarded to it, and SIGINT too unless standard input is a terminal (there
Ctrl-C already reaches the command); its outcome is recorded and its exit code returned.";

/// `approvals exec [OPTIONS] -- PROGRAM [ARGS]...`
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Action kind, for example deploy.production (matched by the policy's `kind` globs).
    #[arg(long, value_name = "KIND")]
    kind: String,
    /// Resource, for example svc://payments (matched by the policy's `resource` globs).
    #[arg(long, value_name = "RESOURCE")]
    resource: String,
    /// A parameter reviewers see and the digest binds, as text (repeatable). `command` and
    /// `env` are reserved for the command line and --param-env.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A parameter whose value is JSON, for policies comparing numbers (repeatable):
    /// --param-json rows=5000.
    #[arg(long = "param-json", value_name = "NAME=JSON")]
    params_json: Vec<String>,
    /// Include this environment variable's name and value in the approved action
    /// (repeatable). An unset variable is an error and nothing is submitted.
    #[arg(long = "param-env", value_name = "NAME")]
    params_env: Vec<String>,
    /// Why the command should run (shown to reviewers, recorded).
    #[arg(long, value_name = "TEXT")]
    justification: Option<String>,
    /// One line for reviewers; default: "Run: " and the command line.
    #[arg(long, value_name = "TEXT")]
    summary: Option<String>,
    /// Environment name, for example production (matched by the policy's `environment`).
    #[arg(long, value_name = "NAME")]
    environment: Option<String>,
    /// Ticket or change reference shown to reviewers.
    #[arg(long, value_name = "ID")]
    ticket: Option<String>,
    /// A file holding what the command would change, as a unified diff (`git diff`,
    /// `kubectl diff`): shown to reviewers, bound to the approval.
    #[arg(long, value_name = "FILE", conflicts_with = "preview_dry_run")]
    preview_diff: Option<PathBuf>,
    /// A file holding a dry run's output (`terraform plan -no-color`): shown to reviewers,
    /// bound to the approval.
    #[arg(long, value_name = "FILE")]
    preview_dry_run: Option<PathBuf>,
    /// Re-attach to the request submitted earlier with this key (a retried job waits on the
    /// same request instead of asking again); refused if that request is for another action.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// The agent id this pipeline acts as.
    #[arg(long, env = "APPROVALS_AGENT", default_value = "ci", value_name = "ID")]
    agent: String,
    /// The human this run acts for (cannot approve it). Default: GITHUB_ACTOR, then
    /// GITLAB_USER_LOGIN, when set.
    #[arg(long, env = "APPROVALS_ON_BEHALF_OF", value_name = "ID")]
    on_behalf_of: Option<String>,
    /// Database holding the requests: sqlite://FILE or postgres://... Default: --store.
    #[arg(long, env = "APPROVALS_DB", value_name = "URL")]
    db: Option<String>,
    /// Policy file (TOML or JSON, see RulePolicy) deciding allow, deny or require approval.
    #[arg(long, env = "APPROVALS_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Base URL of the review console (`approvals serve`), to print the request's link.
    #[arg(long, env = "APPROVALS_REVIEW_URL", value_name = "URL")]
    review_url: Option<Url>,
    /// The command to run once approved: program and arguments, after `--`.
    #[arg(
        last = true,
        required = true,
        num_args = 1..,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<String>,
}

/// Whether the process arguments name the `exec` subcommand (before any `--`), so argument
/// errors get exec's usage code instead of clap's 2.
pub(crate) fn invoked(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "exec")
}

/// Runs `approvals exec` and returns its exit code.
pub(crate) async fn run(target: Target, args: ExecArgs) -> ExitCode {
    let mut out = Progress::new();
    // Listen before anything is submitted, so an early Ctrl-C is never the default "die".
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            return fail(
                &mut out,
                exit::UNAVAILABLE,
                format!("cannot watch signals: {e}"),
            );
        }
    };
    match exec(target, args, &mut signals, &mut out).await {
        Ok(code) => ExitCode::from(code),
        Err(f) => fail(&mut out, f.code, f.message),
    }
}

fn fail(out: &mut Progress, code: u8, message: String) -> ExitCode {
    out.line(&message);
    ExitCode::from(code)
}

async fn exec(
    mut target: Target,
    args: ExecArgs,
    signals: &mut Signals,
    out: &mut Progress,
) -> Result<u8, Failure> {
    let action = action(&args)?;
    if let Some(server) = target.server.clone() {
        return server::run(server, &args, action, signals, out).await;
    }
    let initiator = initiator(&args)?;
    if let Some(db) = &args.db {
        target.store = db.clone();
    }
    let agent = initiator.principal.clone();
    let gate = local_gate(&target, &args, initiator).await?;
    let (grant, announced) = match gate.submit(&action).await {
        Ok(Submission::Allowed(grant)) => {
            out.line(&format!(
                "allowed by policy{}; running {}",
                grant
                    .policy_rule()
                    .map(|r| format!(" rule {:?}", term(r)))
                    .unwrap_or_default(),
                term(&shell_line(&args.command))
            ));
            (grant, false)
        }
        Ok(Submission::Pending(id)) => {
            let record = gate.get(id).await.ok().flatten();
            announce(out, id, record.as_ref(), args.review_url.as_ref(), &target);
            match wait(&gate, id, signals, out).await? {
                Waited::Granted(grant) => (grant, true),
                Waited::Interrupted(signal) => {
                    return interrupted(&gate, &agent, id, signal, out).await;
                }
            }
        }
        Err(e) => return Err(refusal(e)),
    };
    if announced {
        let by: Vec<String> = grant.approvers().iter().map(|p| term(&p.id)).collect();
        out.line(&format!(
            "approved by {}; running {}",
            by.join(", "),
            term(&shell_line(&args.command))
        ));
    }
    // Reviewers may have approved a changed command: only that one runs.
    let (action, run) = match grant.edited_action() {
        None => (
            action,
            EditedRun {
                command: args.command.clone(),
                env: Vec::new(),
            },
        ),
        Some(edited) => {
            let run = edited_run(&action.params, &edited.params).map_err(|why| {
                Failure::new(
                    exit::REFUSED,
                    format!("approved with changes, but not run: {why}"),
                )
            })?;
            out.line(&format!(
                "reviewers changed the command before approving; running {}",
                term(&shell_line(&run.command))
            ));
            (edited.clone(), run)
        }
    };
    let ran = gate
        .execute(grant, &action, || {
            run_child(&run.command, &run.env, signals)
        })
        .await;
    match ran {
        Ok(()) => Ok(0),
        Err(RunError::Exited { code, status }) => {
            out.line(&format!("the command {status}; recorded as failed"));
            Ok(code)
        }
        Err(RunError::NotStarted(e)) => Err(Failure::new(
            exit::NOT_STARTED,
            format!("approved, but the command could not be started: {e}; recorded as failed"),
        )),
        Err(RunError::Guard(e)) => Err(refusal(e)),
    }
}

/// A gate on the database, with the policy file and the store's audit table (plus --audit),
/// acting as `initiator`.
async fn local_gate(
    target: &Target,
    args: &ExecArgs,
    initiator: Initiator,
) -> Result<Gate, Failure> {
    let Some(path) = &args.policy else {
        return Err(Failure::new(
            exit::USAGE,
            "give the policy with --policy FILE (or APPROVALS_POLICY): it decides whether the command is allowed, refused or needs approval",
        ));
    };
    let policy =
        RulePolicy::from_file(path).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    if target.store.trim().starts_with("memory:") {
        return Err(Failure::new(
            exit::USAGE,
            "a memory: store cannot be reviewed by anyone else; give --db sqlite://FILE or postgres://...",
        ));
    }
    let opened = open_store(target).await.map_err(exec_code)?;
    let sinks = audit_sinks(target, &opened).map_err(exec_code)?;
    Gate::builder()
        .policy(policy)
        .store_shared(opened.store)
        .audit(sinks)
        .initiator(initiator)
        .poll_interval(Duration::from_millis(500))
        .build()
        .map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "cannot build the gate on {}: {e}",
                    redact_url(&target.store)
                ),
            )
        })
}

/// A shared helper's failure with exec's exit code: usage stays usage, the rest is
/// unavailable.
fn exec_code(f: Failure) -> Failure {
    let code = if f.code == crate::command::exit::USAGE {
        exit::USAGE
    } else {
        exit::UNAVAILABLE
    };
    Failure::new(code, f.message)
}

// ------------------------------------------------------------------------------------------
// Waiting.

enum Waited {
    Granted(Grant),
    Interrupted(Caught),
}

/// Says what was submitted and where to review it.
fn announce(
    out: &mut Progress,
    id: RequestId,
    record: Option<&RequestRecord>,
    review_url: Option<&Url>,
    target: &Target,
) {
    match record {
        Some(r) => {
            out.line(&format!(
                "request {id} needs approval{}: {} on {}, digest {}",
                r.policy_rule
                    .as_deref()
                    .map(|rule| format!(" (policy rule {:?})", term(rule)))
                    .unwrap_or_default(),
                term(&r.request.kind),
                term(&r.request.resource),
                r.digest
            ));
        }
        None => out.line(&format!("request {id} needs approval")),
    }
    if let Some(base) = review_url {
        let link = base
            .join(&format!("console/requests/{id}"))
            .map(String::from)
            .unwrap_or_else(|_| format!("{base}console/requests/{id}"));
        out.line(&format!("review it at {link}"));
    }
    out.line(&format!(
        "or: approvals approve {id} --store {}",
        redact_url(target.store.trim())
    ));
}

/// Waits for the decision, updating the progress line, until it comes or a signal arrives.
/// The request is looked at every second: a reminder nobody answered is reported when it is
/// seen; the progress line is rewritten every second on a terminal and printed once a minute
/// in a log.
async fn wait(
    gate: &Gate,
    id: RequestId,
    signals: &mut Signals,
    out: &mut Progress,
) -> Result<Waited, Failure> {
    let started = std::time::Instant::now();
    let status_every = if out.tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    };
    let mut status_at = started + status_every;
    let look_every = Duration::from_secs(1);
    let mut looks = tokio::time::interval_at(tokio::time::Instant::now() + look_every, look_every);
    let decision = gate.wait(id);
    tokio::pin!(decision);
    // Reminders already reported as unanswered.
    let mut told = 0;
    loop {
        tokio::select! {
            result = &mut decision => {
                out.clear();
                return result.map(Waited::Granted).map_err(refusal);
            }
            signal = signals.recv() => {
                out.clear();
                return Ok(Waited::Interrupted(signal));
            }
            _ = looks.tick() => {
                let record = gate.get(id).await.ok().flatten();
                if let Some(r) = &record {
                    let unanswered = approvals_core::lifecycle::unanswered_reminders(r);
                    if unanswered > told {
                        told = unanswered;
                        out.line(&unanswered_text(id, unanswered, r.expires_at - gate.now()));
                    }
                }
                if std::time::Instant::now() >= status_at {
                    status_at += status_every;
                    out.status(&progress_text(id, record.as_ref(), started.elapsed(), gate));
                }
            }
        }
    }
}

/// What the requester is told when reviewers were reminded and nobody has reviewed yet.
fn unanswered_text(id: RequestId, reminders: u32, left: chrono::TimeDelta) -> String {
    format!(
        "nobody has reviewed request {id} yet; its reviewers were reminded ({reminders} {}); it expires in {}",
        if reminders == 1 { "time" } else { "times" },
        human(left.to_std().unwrap_or_default())
    )
}

fn progress_text(
    id: RequestId,
    record: Option<&RequestRecord>,
    elapsed: Duration,
    gate: &Gate,
) -> String {
    let mut text = format!("waiting for approval of {id}: {} elapsed", human(elapsed));
    if let Some(r) = record {
        let left = (r.expires_at - gate.now()).to_std().unwrap_or_default();
        text.push_str(&format!(
            ", {} of {} approvals, expires in {}",
            r.approvers().len(),
            r.requirement.quorum,
            human(left)
        ));
    }
    text
}

/// Withdraws the request after a signal; the command never runs.
async fn interrupted(
    gate: &Gate,
    by: &Principal,
    id: RequestId,
    signal: Caught,
    out: &mut Progress,
) -> Result<u8, Failure> {
    let withdrawal = match gate
        .cancel(id, Some(by.clone()), Some(interrupted_reason(signal)))
        .await
    {
        Ok(_) => Withdrawal::Cancelled,
        Err(ReviewError::AlreadyDecided { state, .. }) => {
            Withdrawal::AlreadyResolved(state.to_string())
        }
        Err(e) => Withdrawal::Failed(e.to_string()),
    };
    withdrawn(id, signal, withdrawal, out)
}

/// The reason recorded when a signal withdraws the request.
fn interrupted_reason(signal: Caught) -> String {
    format!(
        "approvals exec was interrupted by {} while waiting",
        signal.name()
    )
}

/// What became of a pending request that a signal withdrew.
enum Withdrawal {
    Cancelled,
    /// It was resolved first (`state`: `approved`, `denied`, or `decided` when not known).
    AlreadyResolved(String),
    /// It could not be cancelled (why, on one line).
    Failed(String),
}

/// Reports a withdrawal on one line; exec exits with [`exit::CANCELLED`], or
/// [`exit::UNAVAILABLE`] when the request stays pending.
fn withdrawn(
    id: RequestId,
    signal: Caught,
    withdrawal: Withdrawal,
    out: &mut Progress,
) -> Result<u8, Failure> {
    let signal = signal.name();
    match withdrawal {
        Withdrawal::Cancelled => {
            out.line(&format!(
                "interrupted by {signal}: request {id} cancelled; the command was not run"
            ));
            Ok(exit::CANCELLED)
        }
        Withdrawal::AlreadyResolved(state) => {
            out.line(&format!(
                "interrupted by {signal}: request {id} was already {state}; the command was not run"
            ));
            Ok(exit::CANCELLED)
        }
        Withdrawal::Failed(why) => Err(Failure::new(
            exit::UNAVAILABLE,
            format!(
                "interrupted by {signal}; the command was not run, but request {id} could not be cancelled ({why}); it stays pending until it expires"
            ),
        )),
    }
}

/// The one-line reason and exit code for an action that did not run.
fn refusal(e: GuardError) -> Failure {
    let (code, message) = match &e {
        GuardError::Denied { by, reason, .. } => (
            exit::DENIED,
            format!(
                "denied by {}{}; the command was not run",
                term(by),
                reason
                    .as_deref()
                    .map(|r| format!(": {}", term(&one_line(r))))
                    .unwrap_or_default()
            ),
        ),
        GuardError::DeniedRecently { .. } => (
            exit::DENIED,
            format!(
                "{}; the command was not run",
                term(&one_line(&e.to_string()))
            ),
        ),
        GuardError::Expired { .. } | GuardError::GrantLapsed { .. } => (
            exit::EXPIRED,
            format!("{}; the command was not run", term(&e.to_string())),
        ),
        GuardError::PolicyDenied { rule, reason, .. } => (
            exit::REFUSED,
            format!(
                "refused by policy rule {:?}: {}; the command was not run",
                term(rule),
                term(&one_line(reason))
            ),
        ),
        GuardError::Cancelled { .. } => (
            exit::CANCELLED,
            format!(
                "{}; the command was not run",
                term(&one_line(&e.to_string()))
            ),
        ),
        GuardError::Unavailable { .. } | GuardError::DeliveryFailed { .. } => (
            exit::UNAVAILABLE,
            format!(
                "{}; the command was not run",
                term(&one_line(&e.to_string()))
            ),
        ),
        _ => (
            exit::REFUSED,
            format!(
                "{}; the command was not run",
                term(&one_line(&e.to_string()))
            ),
        ),
    };
    Failure::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoked_looks_only_before_the_command() {
        let a = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(invoked(a(&["approvals", "--store", "x", "exec", "--kind"])));
        assert!(!invoked(a(&["approvals", "pending"])));
        assert!(!invoked(a(&["approvals", "serve", "--", "exec"])));
    }
}
