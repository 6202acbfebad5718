//! Previews: what running an action would change (a unified diff, a dry run's output, the rows
//! it would touch), carried in the request's context so it is part of the digest. A reviewer
//! approves the action together with what its preview showed; the same action with another
//! preview has another digest and needs its own approval.
//!
//! Surfaces show a preview within their limits: [`Preview::excerpt`] cuts it at whole lines
//! and says how much was left out, so every surface words the cut the same way and points at
//! the full text (the console's request page, `approvals show`). What an excerpt holds is
//! still untrusted text: each surface neutralises and escapes it as it does every other value
//! (see [`crate::text`]).
//!
//! ```
//! use approvals_core::{ActionRequest, Preview};
//! let action = ActionRequest::new("repo.push", "git://infra/main")
//!     .preview(Preview::diff("--- a/main.tf\n+++ b/main.tf\n@@ -1 +1 @@\n-size = 2\n+size = 3\n"));
//! let other = ActionRequest::new("repo.push", "git://infra/main")
//!     .preview(Preview::diff("--- a/main.tf\n+++ b/main.tf\n@@ -1 +1 @@\n-size = 2\n+size = 30\n"));
//! assert_ne!(action.digest(), other.digest());
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::text::{one_line, truncate};

/// Most columns a rows preview may have.
pub const MAX_PREVIEW_COLUMNS: usize = 64;
/// Most rows a rows preview may carry (`total` can say how many the action touches).
pub const MAX_PREVIEW_ROWS: usize = 1000;
/// Most lines of a preview that Slack, Teams and the terminal show; the console shows it
/// whole, and each cut says how much was left out.
pub const SHOWN_LINES: usize = 40;
/// What an empty preview's excerpt reads.
pub const EMPTY: &str = "(empty)";
/// Widest cell in the text form of a rows preview, in characters; the console shows cells
/// whole.
pub const MAX_TEXT_CELL_CHARS: usize = 60;

/// What running the action would change, as its requester shows it to reviewers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preview {
    /// A unified diff (`diff -u`, `git diff`, `kubectl diff`).
    Diff {
        /// The diff as the tool printed it.
        text: String,
    },
    /// What a dry run printed (`terraform plan`, `--dry-run`, `EXPLAIN`).
    DryRun {
        /// The output as the tool printed it.
        text: String,
    },
    /// A table of the rows the action would touch.
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// The rows shown, each with one cell per column.
        rows: Vec<Vec<String>>,
        /// How many rows the action touches, when more than are shown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
}

/// Which kind of line of a unified diff, for surfaces that colour them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffLine {
    /// `diff …`, `index …`, `--- a/…`, `+++ b/…` and other file headers.
    Header,
    /// `@@ -1,3 +1,4 @@`.
    Hunk,
    /// An added line.
    Added,
    /// A removed line.
    Removed,
    /// Context and anything else.
    Context,
}

impl DiffLine {
    /// Classifies one line of a unified diff.
    ///
    /// ```
    /// use approvals_core::preview::DiffLine;
    /// assert_eq!(DiffLine::of("+++ b/main.tf"), DiffLine::Header);
    /// assert_eq!(DiffLine::of("+size = 3"), DiffLine::Added);
    /// assert_eq!(DiffLine::of("@@ -1 +1 @@"), DiffLine::Hunk);
    /// ```
    pub fn of(line: &str) -> DiffLine {
        if line.starts_with("+++ ") || line.starts_with("--- ") {
            DiffLine::Header
        } else if line.starts_with("@@") {
            DiffLine::Hunk
        } else if line.starts_with('+') {
            DiffLine::Added
        } else if line.starts_with('-') {
            DiffLine::Removed
        } else if [
            "diff ",
            "index ",
            "new file",
            "deleted file",
            "similarity",
            "rename ",
        ]
        .iter()
        .any(|p| line.starts_with(p))
        {
            DiffLine::Header
        } else {
            DiffLine::Context
        }
    }
}

/// The part of a preview a surface shows, cut at whole lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The lines shown (untrusted: neutralise and escape them for the surface).
    pub text: String,
    /// Lines of the full text left out.
    pub omitted_lines: usize,
    /// Whether the last line shown was itself cut (one line longer than the whole budget).
    pub cut_line: bool,
}

impl Excerpt {
    /// Whether anything was left out.
    pub fn is_cut(&self) -> bool {
        self.omitted_lines > 0 || self.cut_line
    }

    /// The standard words for what was left out, for the end of the shown text:
    /// `… 120 more lines not shown. The approval covers the whole preview (digest …); see it
    /// in full in the console or with `approvals show <id>`.` Empty when nothing was.
    pub fn omitted_note(
        &self,
        id: impl std::fmt::Display,
        digest: impl std::fmt::Display,
    ) -> String {
        if !self.is_cut() {
            return String::new();
        }
        let mut note = String::from("… ");
        match self.omitted_lines {
            0 => note.push_str("the last line is cut."),
            1 => note.push_str("1 more line not shown."),
            n => {
                let _ = write!(note, "{n} more lines not shown.");
            }
        }
        let _ = write!(
            note,
            " The approval covers the whole preview (digest {digest}); see it in full in the \
             console or with `approvals show {id}`."
        );
        note
    }
}

impl Preview {
    /// A unified diff.
    pub fn diff(text: impl Into<String>) -> Preview {
        Preview::Diff { text: text.into() }
    }

    /// A dry run's output.
    pub fn dry_run(text: impl Into<String>) -> Preview {
        Preview::DryRun { text: text.into() }
    }

    /// A table of affected rows; `total` when the action touches more rows than are shown.
    pub fn rows(columns: Vec<String>, rows: Vec<Vec<String>>, total: Option<u64>) -> Preview {
        Preview::Rows {
            columns,
            rows,
            total,
        }
    }

    /// Whether the preview is well formed: a rows preview has 1 to [`MAX_PREVIEW_COLUMNS`]
    /// columns, at most [`MAX_PREVIEW_ROWS`] rows, one cell per column in each row, and a
    /// `total` no smaller than the rows it shows. The request's size limit bounds the text.
    pub fn check(&self) -> Result<(), String> {
        let Preview::Rows {
            columns,
            rows,
            total,
        } = self
        else {
            return Ok(());
        };
        if columns.is_empty() || columns.len() > MAX_PREVIEW_COLUMNS {
            return Err(format!(
                "a rows preview must have 1 to {MAX_PREVIEW_COLUMNS} columns, not {}",
                columns.len()
            ));
        }
        if rows.len() > MAX_PREVIEW_ROWS {
            return Err(format!(
                "a rows preview shows at most {MAX_PREVIEW_ROWS} rows, not {} (say how many \
                 there are with `total`)",
                rows.len()
            ));
        }
        if let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, row)| row.len() != columns.len())
        {
            return Err(format!(
                "row {} of the preview has {} cells for {} columns",
                i + 1,
                row.len(),
                columns.len()
            ));
        }
        if total.is_some_and(|t| t < rows.len() as u64) {
            return Err(format!(
                "the preview shows {} rows but says the action touches {}",
                rows.len(),
                total.unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// What the preview is, as a title: `Diff`, `Dry run`, `Affected rows (20 of 15204)`.
    pub fn caption(&self) -> String {
        match self {
            Preview::Diff { .. } => "Diff".to_owned(),
            Preview::DryRun { .. } => "Dry run".to_owned(),
            Preview::Rows { rows, total, .. } => match total {
                Some(t) if *t > rows.len() as u64 => {
                    format!("Affected rows ({} of {t})", rows.len())
                }
                _ => format!("Affected rows ({})", rows.len()),
            },
        }
    }

    /// The whole preview as text: a diff or dry run as given; rows as a table with one line
    /// per row, cells on one line each (their line breaks shown as spaces, hidden characters
    /// shown) and at most [`MAX_TEXT_CELL_CHARS`] wide, columns separated by ` | `.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Preview::Diff { text } | Preview::DryRun { text } => Cow::Borrowed(text),
            Preview::Rows { columns, rows, .. } => Cow::Owned(table(columns, rows)),
        }
    }

    /// The first lines of [`text`](Preview::text) that fit in `max_lines` lines and
    /// `max_chars` characters (line breaks counted); a first line longer than the budget is
    /// cut. An empty preview reads [`EMPTY`], so no surface sends an empty text element.
    pub fn excerpt(&self, max_lines: usize, max_chars: usize) -> Excerpt {
        let text = self.text();
        if text.is_empty() {
            return Excerpt {
                text: truncate(EMPTY, max_chars).into_owned(),
                omitted_lines: 0,
                cut_line: false,
            };
        }
        let total = text.lines().count();
        let mut shown = String::new();
        let mut chars = 0;
        let mut lines = 0;
        let mut cut_line = false;
        for line in text.lines() {
            let len = line.chars().count() + usize::from(lines > 0);
            if lines == max_lines {
                break;
            }
            if chars + len > max_chars {
                if lines == 0 {
                    shown.push_str(&truncate(line, max_chars));
                    lines = 1;
                    cut_line = true;
                }
                break;
            }
            if lines > 0 {
                shown.push('\n');
            }
            shown.push_str(line);
            chars += len;
            lines += 1;
        }
        Excerpt {
            text: shown,
            omitted_lines: total - lines,
            cut_line,
        }
    }
}

/// Rows as aligned text.
fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| truncate(&one_line(s), MAX_TEXT_CELL_CHARS).into_owned();
    let header: Vec<String> = columns.iter().map(|c| cell(c)).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str(" | ");
            }
            out.push_str(c);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        out.push('\n');
    };
    line(&header, &mut out);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for row in &body {
        line(row, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Preview {
        Preview::dry_run(
            (1..=n)
                .map(|i| format!("line {i}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    #[test]
    fn an_excerpt_keeps_whole_lines_and_counts_the_rest() {
        let p = numbered(10);
        let e = p.excerpt(3, 1000);
        assert_eq!(e.text, "line 1\nline 2\nline 3");
        assert_eq!(e.omitted_lines, 7);
        assert!(e.is_cut() && !e.cut_line);
        let note = e.omitted_note("r-1", "sha256:ab");
        assert!(note.starts_with("… 7 more lines not shown."), "{note}");
        assert!(note.contains("sha256:ab") && note.contains("approvals show r-1"));

        // The character budget ends the excerpt at the last whole line that fits.
        let e = p.excerpt(100, 15);
        assert_eq!(e.text, "line 1\nline 2");
        assert_eq!(e.omitted_lines, 8);

        let whole = p.excerpt(100, 1000);
        assert!(!whole.is_cut());
        assert_eq!(whole.omitted_note("r-1", "d"), "");
    }

    #[test]
    fn a_first_line_longer_than_the_budget_is_cut() {
        let p = Preview::diff(format!("+{}\n+second", "x".repeat(500)));
        let e = p.excerpt(10, 100);
        assert_eq!(e.text.chars().count(), 100);
        assert!(e.cut_line);
        assert_eq!(e.omitted_lines, 1);
        assert!(p.excerpt(10, 0).text.is_empty());
        let empty = Preview::diff("").excerpt(10, 100);
        assert_eq!(empty.text, EMPTY);
        assert!(!empty.is_cut());
    }

    #[test]
    fn rows_are_checked() {
        let cols = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        assert!(
            Preview::rows(cols(2), vec![cols(2)], Some(10))
                .check()
                .is_ok()
        );
        let short = Preview::rows(cols(2), vec![cols(2), cols(1)], None).check();
        assert!(short.is_err_and(|e| e.contains("row 2") && e.contains("1 cells")));
        assert!(Preview::rows(vec![], vec![], None).check().is_err());
        assert!(Preview::rows(cols(65), vec![], None).check().is_err());
        let many = vec![cols(1); MAX_PREVIEW_ROWS + 1];
        assert!(Preview::rows(cols(1), many, None).check().is_err());
        let total = Preview::rows(cols(1), vec![cols(1), cols(1)], Some(1)).check();
        assert!(total.is_err_and(|e| e.contains("touches 1")));
        assert!(Preview::diff("").check().is_ok());
    }

    #[test]
    fn rows_read_as_an_aligned_table_with_cells_on_one_line() {
        let p = Preview::rows(
            vec!["id".into(), "email".into()],
            vec![
                vec!["1".into(), "ann@example.com".into()],
                vec!["22".into(), "bob\nrm -rf /\u{202E}".into()],
            ],
            Some(15_204),
        );
        assert_eq!(p.caption(), "Affected rows (2 of 15204)");
        assert_eq!(
            p.text(),
            format!(
                "id | email\n---+{}\n1  | ann@example.com\n22 | bob rm -rf /‹U+202E›\n",
                "-".repeat(21)
            )
        );
        let long = Preview::rows(vec!["c".into()], vec![vec!["y".repeat(200)]], None);
        assert!(
            long.text()
                .lines()
                .all(|l| l.chars().count() <= MAX_TEXT_CELL_CHARS)
        );
    }

    #[test]
    fn the_wire_form_is_tagged_and_strict() {
        let p = Preview::dry_run("Plan: 1 to add");
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "dry_run", "text": "Plan: 1 to add"})
        );
        let odd = serde_json::json!({"type": "diff", "text": "", "hidden": "x"});
        assert!(serde_json::from_value::<Preview>(odd).is_err());
        let unknown = serde_json::json!({"type": "screenshot", "text": ""});
        assert!(serde_json::from_value::<Preview>(unknown).is_err());
    }

    #[test]
    fn diff_lines_are_classified() {
        let kinds: Vec<DiffLine> =
            "diff --git a/x b/x\nindex 1..2\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n ctx\n-old\n+new"
                .lines()
                .map(DiffLine::of)
                .collect();
        use DiffLine::*;
        assert_eq!(
            kinds,
            [
                Header, Header, Header, Header, Hunk, Context, Removed, Added
            ]
        );
    }
}
