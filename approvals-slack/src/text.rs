//! Making untrusted text inert and bounded for Slack surfaces.
//!
//! Every untrusted value first goes through the one rule of [`approvals_core::text`]: control,
//! bidi and other invisible characters become a visible `‹U+202E›`. Then, for `mrkdwn`:
//! Slack treats `&`, `<` and `>` as control characters (links, mentions such as `<!channel>`,
//! dates) and `*`, `_`, `~` and backticks as formatting. Slack documents escaping the first
//! three as `&amp;`, `&lt;` and `&gt;`; it has no escape for the formatting characters, so
//! [`mrkdwn`] replaces them with look-alike full-width characters. Untrusted multi-line text
//! (parameters, justification) is never put in `mrkdwn` at all: it goes into `rich_text`
//! elements, which Slack renders literally.
//!
//! Bounds apply to the text as sent, after escaping: [`truncate_mrkdwn`] cuts escaped `mrkdwn`
//! without splitting an entity (`&amp;`) or one of our own `<...>` sequences (dates).

use std::borrow::Cow;

use approvals_core::text::{self as core_text, ELLIPSIS};

/// Escapes untrusted text for a `mrkdwn` text object: invisible and control characters become
/// visible markers, `&`, `<`, `>` become entities, the formatting characters `*`, `_`, `~`
/// and `` ` `` become full-width look-alikes, and line breaks become spaces (so a value cannot
/// start a line of its own that looks like ours).
///
/// ```
/// assert_eq!(approvals_slack::text::mrkdwn("<!channel> *ok*"), "&lt;!channel&gt; ＊ok＊");
/// assert_eq!(approvals_slack::text::mrkdwn("a\u{202E}b"), "a‹U+202E›b");
/// ```
pub fn mrkdwn(untrusted: &str) -> String {
    let safe = core_text::one_line(untrusted);
    let mut out = String::with_capacity(safe.len() + 8);
    for c in safe.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '*' => out.push('＊'),
            '_' => out.push('＿'),
            '~' => out.push('～'),
            '`' => out.push('｀'),
            c => out.push(c),
        }
    }
    out
}

/// [`mrkdwn`] of `untrusted`, cut to at most `max` characters as sent (see
/// [`truncate_mrkdwn`]).
pub fn mrkdwn_bounded(untrusted: &str, max: usize) -> String {
    truncate_mrkdwn(&mrkdwn(untrusted), max, "").into_owned()
}

/// One-line untrusted text for a `plain_text` object or a literal rich text element: invisible
/// and control characters become visible markers, line breaks and tabs become spaces.
pub fn one_line(untrusted: &str) -> String {
    core_text::one_line(untrusted).into_owned()
}

/// Multi-line untrusted text for a literal rich text element: line breaks and tabs stay,
/// invisible and control characters become visible markers.
pub(crate) fn printable(untrusted: &str) -> String {
    core_text::neutralize(untrusted).into_owned()
}

/// Cuts `s` to at most `max` characters (not bytes), ending with `…` and `note` when cut.
/// For plain text only: escaped `mrkdwn` is cut with [`truncate_mrkdwn`].
pub fn truncate(s: &str, max: usize, note: &str) -> String {
    core_text::truncate_with(s, max, note).into_owned()
}

/// Cuts escaped `mrkdwn` to at most `max` characters, ending with `…` and `note` (itself
/// `mrkdwn`) when cut, and never inside an entity (`&amp;`, `&lt;`, `&gt;`) or a `<...>`
/// control sequence (which only we write: untrusted `<` is always escaped), so a cut never
/// leaves a broken escape or an unclosed date.
///
/// ```
/// use approvals_slack::text::{mrkdwn, truncate_mrkdwn};
/// let escaped = mrkdwn("a<b"); // "a&lt;b"
/// assert_eq!(truncate_mrkdwn(&escaped, 5, ""), "a…");
/// assert_eq!(truncate_mrkdwn(&escaped, 6, ""), "a&lt;b");
/// ```
pub fn truncate_mrkdwn<'a>(escaped: &'a str, max: usize, note: &str) -> Cow<'a, str> {
    if escaped.chars().nth(max).is_none() {
        return Cow::Borrowed(escaped);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let note_chars = note.chars().count();
    let note = if note_chars + 1 < max { note } else { "" };
    let keep = max - 1 - note.chars().count();
    // The last byte offset, within `keep` characters, that is not inside an entity or a
    // `<...>` sequence.
    let mut cut = 0;
    let mut open: Option<char> = None;
    for (n, (i, c)) in escaped.char_indices().enumerate() {
        if open.is_none() {
            cut = i;
        }
        if n == keep {
            break;
        }
        open = match (open, c) {
            (None, '&') => Some(';'),
            (None, '<') => Some('>'),
            (Some(end), c) if c == end => None,
            (open, _) => open,
        };
        if open.is_none() {
            cut = i + c.len_utf8();
        }
    }
    let mut out = String::with_capacity(cut + 3 + note.len());
    out.push_str(&escaped[..cut]);
    out.push(ELLIPSIS);
    out.push_str(note);
    Cow::Owned(out)
}

/// Whether `s` is an absolute `http` or `https` URL that is safe to show as a link target:
/// at most 2000 bytes, no white space, and no character the one rule neutralises (a URL with a
/// bidi override or a zero-width space must not become a clickable link that reads as another).
pub(crate) fn is_web_url(s: &str) -> bool {
    if s.len() > 2000
        || s.chars()
            .any(|c| c.is_whitespace() || core_text::is_neutralized(c))
    {
        return false;
    }
    matches!(url::Url::parse(s), Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::text::hostile;

    #[test]
    fn bidi_overrides_cannot_reorder_what_reviewers_read() {
        let hostile = "rm -rf /\u{202E}txt.exe\u{2066}\u{200B}";
        for out in [mrkdwn(hostile), one_line(hostile), printable(hostile)] {
            assert_eq!(hostile::leftover(&out), None, "{out:?}");
            assert!(out.starts_with("rm -rf /‹U+202E›txt.exe"), "{out:?}");
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

    /// Every cut of escaped hostile text, at every bound: never longer than the bound, never
    /// inside an entity or a `<...>` sequence, and exactly the text when it fits.
    #[test]
    fn mrkdwn_truncation_never_splits_an_entity() {
        let escaped = format!(
            "{} <!date^1700000000^{{date_short}}|2023-11-14> {}",
            mrkdwn("<&>ab<&>"),
            mrkdwn("x&y")
        );
        let len = escaped.chars().count();
        for max in 0..len + 2 {
            for note in ["", " (see digest)"] {
                let cut = truncate_mrkdwn(&escaped, max, note);
                assert!(cut.chars().count() <= max, "{max}: {cut}");
                if max >= len {
                    assert_eq!(cut, escaped.as_str());
                    continue;
                }
                let body = cut.strip_suffix(note).unwrap_or(&cut);
                let body = body.strip_suffix(ELLIPSIS).unwrap_or(body);
                assert!(escaped.starts_with(body), "{max}: {cut}");
                // Every `&` starts a whole entity; every `<` is closed.
                let rest = body
                    .replace("&amp;", "")
                    .replace("&lt;", "")
                    .replace("&gt;", "");
                assert!(!rest.contains('&'), "{max}: {cut}");
                assert_eq!(
                    body.matches('<').count(),
                    body.matches('>').count(),
                    "{cut}"
                );
            }
        }
        // Exactly at the limit, and one over.
        let at = mrkdwn(&"&".repeat(600)); // 3000 characters
        assert_eq!(at.chars().count(), 3000);
        assert_eq!(truncate_mrkdwn(&at, 3000, ""), at.as_str());
        let over = format!("{at}a");
        let cut = truncate_mrkdwn(&over, 3000, "");
        assert_eq!(cut.chars().count(), 2996);
        assert!(cut.ends_with("&amp;…"));
    }

    #[test]
    fn only_web_urls_are_links() {
        assert!(is_web_url("https://tickets.example.com/CHG-1"));
        assert!(is_web_url("https://good.example/x"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("<https://evil|safe>"));
        assert!(!is_web_url("https://evil.example/a b"));
        assert!(!is_web_url("CHG-1234"));
        assert!(!is_web_url("https://good.example/\u{202E}gpj.exe"));
        for &(c, what) in hostile::CHARS {
            assert!(!is_web_url(&format!("https://good.example/{c}x")), "{what}");
        }
    }

    #[test]
    fn one_line_removes_breaks() {
        assert_eq!(one_line("a\nb\r\tc\u{2028}d"), "a b‹U+000D› c‹U+2028›d");
        assert_eq!(printable("a\nb\u{7}"), "a\nb‹U+0007›");
    }
}
