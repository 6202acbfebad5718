//! Runnable examples live under src/bin; this library holds what several of them share: how
//! the chat examples (`slack`, `teams`) choose between a real workspace and the offline
//! loopback fakes, the clear message they print when credentials are missing, and the
//! key-rotation scenario both of them run ([`rotation`]); and [`chatops`], the example
//! channel of README's "Writing a channel".

pub mod chatops;

use std::future::Future;
use std::process::ExitCode;

/// The error type of the examples' flows.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An environment variable an example reads, and what it is used for.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    /// The variable's name.
    pub name: &'static str,
    /// What it is used for, shown when it is missing.
    pub purpose: &'static str,
}

/// Where a chat example runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Against the crate's loopback fakes, with simulated reviewers; needs no account.
    Offline,
    /// Against the real service, with the credentials from the environment.
    Live,
}

/// What a chat example needs for a live run.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    /// The example's name (`slack`).
    pub example: &'static str,
    /// The service, for messages (`a Slack workspace`).
    pub service: &'static str,
    /// Where the setup is documented (`approvals-slack/README.md`).
    pub docs: &'static str,
    /// Every one of these must be set for a live run.
    pub required: &'static [Var],
    /// Read when set.
    pub optional: &'static [Var],
}

impl Credentials {
    /// Chooses the mode from the command line (`--live`, `--offline`, or nothing) and the
    /// environment:
    ///
    /// - `--offline`: offline, whatever is set.
    /// - `--live`: live; an error naming every missing required variable if any is unset.
    /// - nothing: live when every required variable is set, offline when none is, and an
    ///   error naming the missing ones when only some are (a half-configured live run is a
    ///   mistake, not a reason to fall back to the fake silently).
    pub fn choose(&self, args: &[String]) -> Result<Mode, String> {
        let set = |v: &&Var| std::env::var(v.name).is_ok_and(|s| !s.trim().is_empty());
        let missing: Vec<&Var> = self.required.iter().filter(|v| !set(v)).collect();
        let wanted = match args {
            [] => None,
            [flag] if flag == "--live" => Some(Mode::Live),
            [flag] if flag == "--offline" => Some(Mode::Offline),
            _ => {
                return Err(format!(
                    "usage: {} [--live | --offline]\n\n{}",
                    self.example,
                    self.help()
                ));
            }
        };
        match wanted {
            Some(Mode::Offline) => Ok(Mode::Offline),
            _ if missing.is_empty() => Ok(Mode::Live),
            None if missing.len() == self.required.len() => Ok(Mode::Offline),
            _ => Err(format!(
                "cannot run the {} example against {}; set {} first:\n{}\n{}",
                self.example,
                self.service,
                if missing.len() == 1 {
                    "this variable"
                } else {
                    "these variables"
                },
                lines(&missing),
                self.footer()
            )),
        }
    }

    /// One line naming the variables a live run needs, for the offline banner.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.required.iter().map(|v| v.name).collect();
        format!(
            "For {} set {} (see {}; `--live` explains each).",
            self.service,
            names.join(", "),
            self.docs
        )
    }

    /// Which variables a live run reads, and what happens without them.
    pub fn help(&self) -> String {
        format!(
            "For {} set all of:\n{}\n{}",
            self.service,
            lines(&self.required.iter().collect::<Vec<_>>()),
            self.footer()
        )
    }

    /// The value of one of the example's variables, or an error naming it and the setup
    /// documentation.
    pub fn var(&self, name: &str) -> Result<String, BoxError> {
        std::env::var(name).map_err(|_| format!("set {name} (see {})", self.docs).into())
    }

    /// The example's `main`: runs `live` or `offline` as [`choose`](Credentials::choose)
    /// says for the command line. Exits 2 on a usage or configuration error (the message
    /// names what is missing), 1 if the flow fails.
    pub async fn main(
        &self,
        live: impl Future<Output = Result<(), BoxError>>,
        offline: impl Future<Output = Result<(), BoxError>>,
    ) -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let result = match self.choose(&args) {
            Ok(Mode::Live) => live.await,
            Ok(Mode::Offline) => offline.await,
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{} example failed: {e}", self.example);
                ExitCode::FAILURE
            }
        }
    }

    fn footer(&self) -> String {
        format!(
            "optional:\n{}\nSee {} for setting up the app. With none of the required variables set, or with --offline, the example runs against loopback fakes and needs no account.",
            lines(&self.optional.iter().collect::<Vec<_>>()),
            self.docs
        )
    }
}

fn lines(vars: &[&Var]) -> String {
    vars.iter()
        .map(|v| format!("  {:<24} {}", v.name, v.purpose))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The scenario of the chat examples: an agent acting for Dana asks to rotate the payments
/// signing key, and one member of the security group must approve within 15 minutes.
pub mod rotation {
    use std::sync::Arc;
    use std::time::Duration;

    use approvals_core::{
        ActionRequest, Approver, BuildError, Gate, GuardError, Initiator, MemorySink, Principal,
        Requirement, StaticPolicy,
    };
    use serde_json::json;

    /// The action the agent asks for.
    pub fn action() -> ActionRequest {
        ActionRequest::new("secrets.rotate", "kms://prod/payments-key")
            .params(json!({"key": "payments-key", "grace_period_hours": 24}))
            .summary("Rotate the payments signing key")
            .justification(
                "The key is 400 days old; policy SEC-12 requires rotation within 365 days",
            )
            .environment("production")
    }

    /// The agent's gate, reviewed through `approver`.
    pub fn gate(approver: impl Approver) -> Result<Gate, BuildError> {
        Gate::builder()
            .policy(StaticPolicy::require(
                Requirement::groups(["security"]).timeout(Duration::from_secs(15 * 60)),
            ))
            .audit_shared(Arc::new(MemorySink::new()))
            .approver(approver)
            .initiator(
                Initiator::agent("key-rotation-agent")
                    .model("claude-opus-4")
                    .on_behalf_of(Principal::human("dana@example.com")),
            )
            .build()
    }

    /// The agent: asks, and rotates the key once approved.
    pub async fn run_agent(gate: &Gate) {
        println!("agent: asking for approval to rotate kms://prod/payments-key ...");
        let outcome = gate
            .run(&action(), || async {
                println!("agent: approved; rotating the key now");
                Ok::<_, GuardError>("rotated")
            })
            .await;
        match outcome {
            Ok(result) => println!("agent: done ({result})"),
            Err(e) => println!("agent: not run: {e}"),
        }
    }

    /// Parses a reviewer list such as
    /// `U024BE7LH=sam@example.com:security,U0G9QF9C6=alex@example.com:security+sre` from the
    /// variable `var`: each entry is the reviewer's id in the chat service, their canonical
    /// identity, and their groups joined by `+`.
    pub fn reviewers<'a>(var: &str, spec: &'a str) -> Result<Vec<(&'a str, Principal)>, String> {
        let mut out = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (user, rest) = entry
                .split_once('=')
                .ok_or_else(|| format!("{var} entry {entry:?} is not ID=email:group"))?;
            let (email, groups) = rest.split_once(':').unwrap_or((rest, ""));
            let principal =
                Principal::human(email).with_groups(groups.split('+').filter(|g| !g.is_empty()));
            out.push((user, principal));
        }
        Ok(out)
    }
}
