//! Runnable examples live under src/bin; this library holds what several of them share: how
//! the chat examples (`slack`, `teams`) choose between a real workspace and the offline
//! loopback fakes, and the clear message they print when credentials are missing.

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
