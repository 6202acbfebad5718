//! Making untrusted text inert and bounded for Slack surfaces.
//!
//! Slack's `mrkdwn` treats `&`, `<` and `>` as control characters (links, mentions such as
//! `<!channel>`, dates) and `*`, `_`, `~` and backticks as formatting. Slack documents escaping
//! the first three as `&amp;`, `&lt;` and `&gt;`; it has no escape for the formatting
//! characters, so [`mrkdwn`] replaces them with look-alike full-width characters. Untrusted
//! multi-line text (parameters, justification) is never put in `mrkdwn` at all: it goes into
//! `rich_text` elements, which Slack renders literally.

use approvals_core::text::is_invisible_format;

/// Escapes untrusted text for a `mrkdwn` text object: `&`, `<`, `>` become entities, the
/// formatting characters `*`, `_`, `~` and `` ` `` become full-width look-alikes, and line
/// breaks become spaces (so a value cannot start a line of its own that looks like ours).
///
/// ```
/// assert_eq!(approvals_slack::text::mrkdwn("<!channel> *ok*"), "&lt;!channel&gt; ＊ok＊");
/// ```
pub fn mrkdwn(untrusted: &str) -> String {
    let mut out = String::with_capacity(untrusted.len() + 8);
    for c in untrusted.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '*' => out.push('＊'),
            '_' => out.push('＿'),
            '~' => out.push('～'),
            '`' => out.push('｀'),
            '\n' | '\r' | '\u{2028}' | '\u{2029}' => out.push(' '),
            c if c.is_control() || is_invisible_format(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Replaces line breaks and other control characters with spaces, for one-line values shown
/// in plain text (headers, button confirmations).
pub fn one_line(untrusted: &str) -> String {
    untrusted
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else if is_invisible_format(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Keeps only line breaks and tabs among control characters, for multi-line literal text.
pub(crate) fn printable(untrusted: &str) -> String {
    untrusted
        .chars()
        .map(|c| {
            if (c.is_control() && c != '\n' && c != '\t') || is_invisible_format(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Cuts `s` to at most `max` characters (not bytes), ending with `…` and `note` when cut.
/// The result never exceeds `max` characters.
pub fn truncate(s: &str, max: usize, note: &str) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let suffix = format!("…{note}");
    let suffix_len = suffix.chars().count();
    if suffix_len >= max {
        return s.chars().take(max).collect();
    }
    let mut out: String = s.chars().take(max - suffix_len).collect();
    out.push_str(&suffix);
    out
}

/// Whether `s` is an absolute `http` or `https` URL that is safe to show as a link target.
pub(crate) fn is_web_url(s: &str) -> bool {
    if s.len() > 2000 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    matches!(url::Url::parse(s), Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_cannot_reorder_what_reviewers_read() {
        let hostile = "rm -rf /\u{202E}txt.exe\u{2066}\u{200B}";
        for out in [mrkdwn(hostile), one_line(hostile), printable(hostile)] {
            assert!(!out.chars().any(is_invisible_format), "{out:?}");
            assert!(out.starts_with("rm -rf /"), "{out:?}");
        }
    }

    #[test]
    fn hostile_mrkdwn_is_inert() {
        for hostile in [
            "<!channel>",
            "<!here|here>",
            "<https://evil.example|safe>",
            "<@U024BE7LH>",
            "*Approved by security*",
            "_italic_ ~strike~ `code` ```block```",
            "a & b",
            "line\n*Approved*",
        ] {
            let out = mrkdwn(hostile);
            for bad in ['<', '>', '*', '_', '~', '`', '\n'] {
                assert!(!out.contains(bad), "{hostile:?} -> {out:?}");
            }
            // Ampersands only start the three entities.
            let stripped = out
                .replace("&amp;", "")
                .replace("&lt;", "")
                .replace("&gt;", "");
            assert!(!stripped.contains('&'), "{out:?}");
        }
        assert_eq!(mrkdwn("<a&b>"), "&lt;a&amp;b&gt;");
    }

    #[test]
    fn truncation_counts_characters_and_keeps_the_note() {
        assert_eq!(truncate("short", 10, " (cut)"), "short");
        let long = "é".repeat(100);
        let cut = truncate(&long, 20, " (cut)");
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.ends_with("… (cut)"));
        assert_eq!(truncate("abcdef", 3, " long note").chars().count(), 3);
    }

    #[test]
    fn only_web_urls_are_links() {
        assert!(is_web_url("https://tickets.example.com/CHG-1"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("<https://evil|safe>"));
        assert!(!is_web_url("https://evil.example/a b"));
        assert!(!is_web_url("CHG-1234"));
    }

    #[test]
    fn one_line_removes_breaks() {
        assert_eq!(one_line("a\nb\r\tc\u{2028}d"), "a b  c d");
        assert_eq!(printable("a\nb\u{7}"), "a\nb\u{FFFD}");
    }
}
