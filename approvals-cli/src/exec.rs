//! `approvals exec`: runs one command in a CI pipeline once humans approve exactly that
//! command line (program, arguments and the named environment variables).
//!
//! The flow is a short sequence of calls to the gate: submit the action (its params hold the
//! command line and the `--param-env` values, so the digest binds them), wait for the decision
//! while showing progress and watching for SIGINT/SIGTERM, then `Gate::execute` consumes the
//! grant, runs the child and records `executed` with its exit status. Anything unexpected
//! refuses before the command starts (fail closed).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Gate, Grant, GuardError, Initiator, Principal, RequestContext, RequestId,
    RequestRecord, ReviewError, RulePolicy, Submission,
};
use clap::Args;
use serde_json::{Map, Value};
use url::Url;

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
summary, environment, ticket, and the initiator. Changing any of them needs a new approval.
--param-env values are shown to reviewers and stored in the audit log: never name a secret.

Initiator (never taken from --param): agent --agent (default \"ci\"), on behalf of the first
of --on-behalf-of, APPROVALS_ON_BEHALF_OF, GITHUB_ACTOR, GITLAB_USER_LOGIN that is set and
not empty (none: no on-behalf-of human). That human cannot approve the request.

Local mode (--db URL --policy FILE): the request is stored in that database (sqlite://FILE or
postgres://...; default --store, APPROVALS_STORE) and its audit table; reviewers decide with
`approvals serve` on the same database or `approvals approve ID --store URL`.

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
    let initiator = initiator(&args)?;
    if target.server.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            "approvals exec runs on a database (--db URL --policy FILE); it does not reach a server (--server, APPROVALS_SERVER) in this version",
        ));
    }
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
    let command = args.command.clone();
    let ran = gate
        .execute(grant, &action, || run_child(&command, signals))
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

// ------------------------------------------------------------------------------------------
// The action and its initiator.

/// The action: the caller's parameters, the command line and the `--param-env` values.
fn action(args: &ExecArgs) -> Result<ActionRequest, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let mut params = Map::new();
    let mut put = |name: &str, value: Value, flag: &str| -> Result<(), Failure> {
        if name.is_empty() {
            return Err(usage(format!("{flag} needs NAME=VALUE with a name")));
        }
        if name == "command" || name == "env" {
            return Err(usage(format!(
                "{flag} {name}: `command` and `env` are reserved for the command line and --param-env"
            )));
        }
        if params.insert(name.to_owned(), value).is_some() {
            return Err(usage(format!("{flag} {name}: given twice")));
        }
        Ok(())
    };
    for p in &args.params {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| usage(format!("--param {p:?}: write NAME=VALUE")))?;
        put(name, Value::String(value.to_owned()), "--param")?;
    }
    for p in &args.params_json {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| usage(format!("--param-json {p:?}: write NAME=JSON")))?;
        let value = serde_json::from_str(value)
            .map_err(|e| usage(format!("--param-json {name}: not JSON ({e})")))?;
        put(name, value, "--param-json")?;
    }
    let mut env = BTreeMap::new();
    for name in &args.params_env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(usage(format!(
                "--param-env {name:?} is not a variable name"
            )));
        }
        let value = match std::env::var(name) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(usage(format!(
                    "--param-env {name}: the variable is not set, so nothing was submitted; set it (it becomes part of what is approved) or drop the flag"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(usage(format!(
                    "--param-env {name}: the value is not valid text, so nothing was submitted"
                )));
            }
        };
        if env.insert(name.clone(), Value::String(value)).is_some() {
            return Err(usage(format!("--param-env {name}: given twice")));
        }
    }
    let program = args
        .command
        .first()
        .ok_or_else(|| usage("give the command after --".into()))?;
    check_program(program).map_err(usage)?;
    params.insert(
        "command".into(),
        Value::Array(args.command.iter().cloned().map(Value::String).collect()),
    );
    if !env.is_empty() {
        params.insert("env".into(), Value::Object(env.into_iter().collect()));
    }
    let summary = args
        .summary
        .clone()
        .unwrap_or_else(|| format!("Run: {}", shell_line(&args.command)));
    let mut action = ActionRequest::new(&args.kind, &args.resource)
        .params(Value::Object(params))
        .summary(summary)
        .context(RequestContext {
            environment: args.environment.clone(),
            ticket: args.ticket.clone(),
            ..Default::default()
        });
    if let Some(j) = &args.justification {
        action = action.justification(j);
    }
    if let Some(k) = &args.idempotency_key {
        action = action.idempotency_key(k);
    }
    Ok(action)
}

/// Refuses a program that cannot be run, before anyone is asked to approve it.
fn check_program(program: &str) -> Result<(), String> {
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            }
            #[cfg(not(unix))]
            {
                m.is_file()
            }
        })
    };
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        if runnable(Path::new(program)) {
            return Ok(());
        }
        return Err(format!(
            "{program:?} is not an executable file, so nothing was submitted"
        ));
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))));
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program:?} is not found on PATH, so nothing was submitted"
        ))
    }
}

/// The configured initiator: `--agent`, on behalf of `--on-behalf-of` or the CI's actor.
fn initiator(args: &ExecArgs) -> Result<Initiator, Failure> {
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let human = non_empty(args.on_behalf_of.clone())
        .or_else(|| non_empty(std::env::var("GITHUB_ACTOR").ok()))
        .or_else(|| non_empty(std::env::var("GITLAB_USER_LOGIN").ok()));
    let mut initiator = Initiator::agent(args.agent.trim());
    if let Some(human) = human {
        initiator = initiator.on_behalf_of(Principal::human(human));
    }
    initiator.validate().map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("the initiator (--agent, --on-behalf-of or the CI's actor) is refused: {e}"),
        )
    })?;
    Ok(initiator)
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
async fn wait(
    gate: &Gate,
    id: RequestId,
    signals: &mut Signals,
    out: &mut Progress,
) -> Result<Waited, Failure> {
    let started = std::time::Instant::now();
    let every = if out.tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let decision = gate.wait(id);
    tokio::pin!(decision);
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
            _ = ticks.tick() => {
                let record = gate.get(id).await.ok().flatten();
                out.status(&progress_text(id, record.as_ref(), started.elapsed(), gate));
            }
        }
    }
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
    let reason = format!(
        "approvals exec was interrupted by {} while waiting",
        signal.name()
    );
    match gate.cancel(id, Some(by.clone()), Some(reason)).await {
        Ok(_) => {
            out.line(&format!(
                "interrupted by {}: request {id} cancelled; the command was not run",
                signal.name()
            ));
            Ok(exit::CANCELLED)
        }
        Err(ReviewError::AlreadyDecided { state, .. }) => {
            out.line(&format!(
                "interrupted by {}: request {id} was already {state}; the command was not run",
                signal.name()
            ));
            Ok(exit::CANCELLED)
        }
        Err(e) => Err(Failure::new(
            exit::UNAVAILABLE,
            format!(
                "interrupted by {}; the command was not run, but request {id} could not be cancelled ({e}); it stays pending until it expires",
                signal.name()
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

// ------------------------------------------------------------------------------------------
// Running.

/// Why the approved command did not succeed, or did not run.
#[derive(Debug)]
enum RunError {
    /// The gate refused to run it (digest changed, grant used or lapsed, audit failed).
    Guard(GuardError),
    /// It could not be started.
    NotStarted(String),
    /// It ran and failed: our exit code and how it ended.
    Exited { code: u8, status: String },
}

impl From<GuardError> for RunError {
    fn from(e: GuardError) -> Self {
        RunError::Guard(e)
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Guard(e) => write!(f, "{e}"),
            RunError::NotStarted(e) => write!(f, "could not be started: {e}"),
            RunError::Exited { status, .. } => f.write_str(status),
        }
    }
}

/// Runs the command with inherited standard streams, forwarding signals, until it ends.
async fn run_child(command: &[String], signals: &mut Signals) -> Result<(), RunError> {
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| RunError::NotStarted("no command".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|e| RunError::NotStarted(format!("{program}: {e}")))?;
    let pid = child.id();
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let mut forwarded: Option<Caught> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.recv() => {
                // A terminal's Ctrl-C reaches the whole foreground process group, the
                // command included: sending it again could make it quit harder.
                if signal == Caught::Interrupt && stdin_is_terminal {
                    continue;
                }
                if let Some(pid) = pid {
                    forward(pid, signal);
                    forwarded = Some(signal);
                }
            }
        }
    };
    let status = status.map_err(|e| RunError::Exited {
        code: exit::UNAVAILABLE,
        status: format!("could not be waited for ({e})"),
    })?;
    if status.success() {
        return Ok(());
    }
    let after = forwarded
        .map(|s| format!(" after {} was forwarded", s.name()))
        .unwrap_or_default();
    if let Some(code) = status.code() {
        return Err(RunError::Exited {
            code: u8::try_from(code).unwrap_or(u8::MAX),
            status: format!("exited with status {code}{after}"),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return Err(RunError::Exited {
                code: u8::try_from(128 + signal).unwrap_or(u8::MAX),
                status: format!("was killed by signal {signal}{after}"),
            });
        }
    }
    Err(RunError::Exited {
        code: u8::MAX,
        status: format!("ended abnormally ({status}){after}"),
    })
}

// ------------------------------------------------------------------------------------------
// Signals.

/// The signals `exec` handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caught {
    Interrupt,
    Terminate,
}

impl Caught {
    fn name(self) -> &'static str {
        match self {
            Caught::Interrupt => "SIGINT",
            Caught::Terminate => "SIGTERM",
        }
    }
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> Caught {
        tokio::select! {
            _ = self.interrupt.recv() => Caught::Interrupt,
            _ = self.terminate.recv() => Caught::Terminate,
        }
    }
}

#[cfg(unix)]
fn forward(pid: u32, signal: Caught) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let signal = match signal {
        Caught::Interrupt => Signal::INT,
        Caught::Terminate => Signal::TERM,
    };
    // The child may have just exited; its status is collected by the wait.
    let _ = kill_process(pid, signal);
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals)
    }

    async fn recv(&mut self) -> Caught {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Caught::Interrupt,
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn forward(_pid: u32, _signal: Caught) {
    // Ctrl-C reaches the console's whole process group, the command included.
}

// ------------------------------------------------------------------------------------------
// Output on standard error (standard output is the command's).

/// Messages and the progress line: updated in place on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    showing: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            showing: false,
        }
    }

    /// A message on a line of its own.
    fn line(&mut self, text: &str) {
        self.clear();
        let _ = writeln!(std::io::stderr(), "approvals exec: {text}");
    }

    /// The current status: rewritten in place on a terminal, a new line otherwise.
    fn status(&mut self, text: &str) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.showing = true;
        } else {
            self.line(text);
        }
    }

    fn clear(&mut self) {
        if self.showing {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.showing = false;
        }
    }
}

/// `4s`, `3m05s`, `2h10m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The command line as a reader would type it: arguments with spaces or shell characters
/// in single quotes.
fn shell_line(command: &[String]) -> String {
    command
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_quotes_what_a_shell_would_split() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_line(&c(&["./deploy.sh", "1.4.2"])),
            "./deploy.sh 1.4.2"
        );
        assert_eq!(
            shell_line(&c(&["sh", "-c", "echo it's $HOME"])),
            r"sh -c 'echo it'\''s $HOME'"
        );
        assert_eq!(shell_line(&c(&["x", ""])), "x ''");
    }

    #[test]
    fn invoked_looks_only_before_the_command() {
        let a = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(invoked(a(&["approvals", "--store", "x", "exec", "--kind"])));
        assert!(!invoked(a(&["approvals", "pending"])));
        assert!(!invoked(a(&["approvals", "serve", "--", "exec"])));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(4)), "4s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(7800)), "2h10m");
    }
}
