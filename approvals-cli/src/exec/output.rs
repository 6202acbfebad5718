//! What `approvals exec` says, on standard error (standard output is the command's): a
//! progress line updated in place on a terminal, plain lines otherwise.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

/// Messages and the progress line: updated in place on a terminal, plain lines otherwise.
pub(super) struct Progress {
    pub(super) tty: bool,
    showing: bool,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            showing: false,
        }
    }

    /// A message on a line of its own.
    pub(super) fn line(&mut self, text: &str) {
        self.clear();
        let _ = writeln!(std::io::stderr(), "approvals exec: {text}");
    }

    /// The current status: rewritten in place on a terminal, a new line otherwise.
    pub(super) fn status(&mut self, text: &str) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.showing = true;
        } else {
            self.line(text);
        }
    }

    pub(super) fn clear(&mut self) {
        if self.showing {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.showing = false;
        }
    }
}

/// `4s`, `3m05s`, `2h10m`.
pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The command line as a reader would type it: arguments with spaces or shell characters
/// in single quotes.
pub(super) fn shell_line(command: &[String]) -> String {
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
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(4)), "4s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(7800)), "2h10m");
    }
}
