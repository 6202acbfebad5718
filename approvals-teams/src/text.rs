//! Making untrusted text inert and bounded for Adaptive Cards.
//!
//! Adaptive Cards render a subset of Markdown in `TextBlock` text and in `FactSet` titles and
//! values (bold `**`, italic `_`, lists `- ` / `* ` / `1. `, links `[text](url)`), expand the
//! date functions `{{DATE(..)}}` and `{{TIME(..)}}` in `TextBlock` and `TextRun` text, and hosts
//! differ in how they treat backslash escapes and HTML. So untrusted text gets no escapes to
//! interpret at all:
//!
//! - [`card_text`] (for `TextBlock` and `FactSet`) replaces every character that can start
//!   Markdown or a date function (`*`, `_`, `[`, `]`, `(`, `)`, `` ` ``, `~`, `#`, `<`, `>`,
//!   `&`, `|`, `\`, `{`, `}`, and `-`, `+`, `=` or `.` at the start of the value, where they
//!   would make a list) with its full-width look-alike, and turns line breaks into spaces, so
//!   a value cannot start a line of its own that looks like ours.
//! - [`literal_text`] (for `TextRun`, where Markdown is not rendered) keeps the text as is,
//!   line breaks included, but breaks up `{{` and `${` so no date function or template
//!   expression is expanded.
//!
//! Both replace control characters and the Unicode bidirectional controls (which can make text
//! read backwards, hiding what an action really does) with U+FFFD, and [`truncate`] bounds
//! every value in characters.

/// Whether `c` reorders or hides text visually: the set every channel neutralises, except
/// U+200B, which [`literal_text`] itself inserts to break `{{` and `${` template syntax.
fn is_bidi_control(c: char) -> bool {
    c != '\u{200B}' && approvals_core::text::is_invisible_format(c)
}

/// Whether `c` is a line or paragraph break.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Escapes untrusted text for Markdown-rendering card text (`TextBlock`, `FactSet` values):
/// every Markdown-active character becomes a full-width look-alike, line breaks become spaces,
/// and control and bidi characters become U+FFFD.
///
/// ```
/// use approvals_teams::text::card_text;
/// assert_eq!(card_text("**ok** [x](https://e.vil)"), "＊＊ok＊＊ ［x］（https://e.vil）");
/// assert_eq!(card_text("- item\n# title"), "－ item ＃ title");
/// ```
pub fn card_text(untrusted: &str) -> String {
    let mut out = String::with_capacity(untrusted.len() + 8);
    // Still at the start of the value (only blanks and digits so far): where list and
    // heading markers take effect.
    let mut at_start = true;
    for c in untrusted.chars() {
        let mapped = match c {
            '*' => '＊',
            '_' => '＿',
            '[' => '［',
            ']' => '］',
            '(' => '（',
            ')' => '）',
            '`' => '｀',
            '~' => '～',
            '#' => '＃',
            '<' => '＜',
            '>' => '＞',
            '&' => '＆',
            '|' => '｜',
            '\\' => '＼',
            '{' => '｛',
            '}' => '｝',
            '-' if at_start => '－',
            '+' if at_start => '＋',
            '=' if at_start => '＝',
            // "1. item" starts a numbered list.
            '.' if at_start => '．',
            c if is_line_break(c) => ' ',
            '\t' => ' ',
            c if c.is_control() || is_bidi_control(c) => '\u{FFFD}',
            c => c,
        };
        at_start = at_start && (c.is_ascii_digit() || c == ' ' || is_line_break(c) || c == '\t');
        out.push(mapped);
    }
    out
}

/// Makes untrusted text safe for a `TextRun` (rendered literally, no Markdown): keeps line
/// breaks and tabs, replaces other control and bidi characters with U+FFFD, and inserts a
/// zero-width space into `{{` and `${` so no date function or template expression expands.
///
/// ```
/// use approvals_teams::text::literal_text;
/// assert_eq!(literal_text("a\n{{DATE(2026-01-01T00:00:00Z)}}"), "a\n{\u{200B}{DATE(2026-01-01T00:00:00Z)}\u{200B}}");
/// ```
pub fn literal_text(untrusted: &str) -> String {
    let mut out = String::with_capacity(untrusted.len() + 8);
    // The last character written, and whether the last one read was a carriage return.
    let mut prev: Option<char> = None;
    let mut after_cr = false;
    for c in untrusted.chars() {
        if c == '\n' && after_cr {
            // "\r\n" is one line break, already written.
            after_cr = false;
            continue;
        }
        after_cr = c == '\r';
        let c = match c {
            '\n' | '\t' => c,
            c if is_line_break(c) => '\n',
            c if c.is_control() || is_bidi_control(c) => '\u{FFFD}',
            c => c,
        };
        if (c == '{' && matches!(prev, Some('{') | Some('$'))) || (c == '}' && prev == Some('}')) {
            out.push('\u{200B}');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// Cuts `s` to at most `max` characters (not bytes), ending with `…` and `note` when cut.
/// The result never exceeds `max` characters.
///
/// ```
/// use approvals_teams::text::truncate;
/// assert_eq!(truncate("abcdef", 4, ""), "abc…");
/// assert_eq!(truncate("abc", 4, " (cut)"), "abc");
/// ```
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

#[cfg(test)]
mod tests {
    use super::*;

    const MARKDOWN_ACTIVE: &[char] = &[
        '*', '_', '[', ']', '(', ')', '`', '~', '#', '<', '>', '&', '|', '\\', '{', '}', '\n', '\r',
    ];

    #[test]
    fn card_text_leaves_nothing_markdown_can_use() {
        let hostile = "**APPROVED** by _security_\n- [click](https://evil.example)\n# Title\n> quote\n1. one\n`code` <at>all</at> &amp; | a | b |\r\n{{DATE(2026-01-01T00:00:00Z)}} ${x} ![img](x)";
        let out = card_text(hostile);
        for c in MARKDOWN_ACTIVE {
            assert!(!out.contains(*c), "{c:?} survived in {out:?}");
        }
        // List markers only matter where a line starts; there is only one line left.
        for start in ["- a", "+ a", "1. a", "  12. a", "= a"] {
            let out = card_text(start);
            assert!(
                !out.starts_with(['-', '+', '=']) && !out.contains('.'),
                "{start:?} -> {out:?}"
            );
        }
        assert_eq!(card_text("FIN-1234 v1.2"), "FIN-1234 v1.2");
    }

    #[test]
    fn bidi_and_control_characters_are_replaced() {
        let out = card_text("rm -rf /\u{202E}txt.exe\u{2066}\u{0007}");
        assert!(!out.contains('\u{202E}') && !out.contains('\u{2066}') && !out.contains('\u{7}'));
        assert_eq!(out.matches('\u{FFFD}').count(), 3);
        let lit = literal_text("a\u{202E}b\u{0}c\r\nd\te");
        assert_eq!(lit, "a\u{FFFD}b\u{FFFD}c\nd\te");
    }

    #[test]
    fn literal_text_breaks_date_functions_and_templates() {
        let out = literal_text("{{TIME(2026-01-01T00:00:00Z)}} ${secret} {\"a\": {}}");
        assert!(!out.contains("{{") && !out.contains("}}") && !out.contains("${"));
        // Ordinary JSON is unchanged.
        assert_eq!(literal_text("{\"a\": [1, 2]}"), "{\"a\": [1, 2]}");
    }

    /// Many random strings over an alphabet of the characters that matter: `card_text` keeps
    /// one character per character and leaves nothing Markdown, date functions or bidi can
    /// use; `literal_text` never leaves `{{`, `}}` or `${`.
    #[test]
    fn random_text_is_always_inert() {
        const ALPHABET: &[char] = &[
            '*', '_', '[', ']', '(', ')', '`', '~', '#', '<', '>', '&', '|', '\\', '{', '}', '$',
            '!', '-', '+', '=', '.', '1', '9', 'a', ' ', '\n', '\r', '\t', '\u{2028}', '\u{202E}',
            '\u{2066}', '\u{0}', '\u{1b}', 'é', '✅',
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let s: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let out = card_text(&s);
            assert_eq!(out.chars().count(), s.chars().count(), "{s:?}");
            for c in MARKDOWN_ACTIVE {
                assert!(!out.contains(*c), "{c:?} survived: {s:?} -> {out:?}");
            }
            assert!(
                !out.chars()
                    .any(|c| c.is_control() || is_bidi_control(c) || is_line_break(c))
            );
            assert!(
                !out.trim_start().starts_with(['-', '+', '=']),
                "{s:?} -> {out:?}"
            );
            let lit = literal_text(&s);
            assert!(
                !lit.contains("{{") && !lit.contains("}}") && !lit.contains("${"),
                "{s:?}"
            );
            assert!(
                !lit.chars()
                    .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c))
            );
        }
    }

    #[test]
    fn truncation_is_bounded_in_characters() {
        let s = "é".repeat(50);
        assert_eq!(truncate(&s, 10, "").chars().count(), 10);
        assert_eq!(truncate(&s, 10, " (see digest)").chars().count(), 10);
        assert_eq!(truncate(&s, 30, " (see digest)").chars().count(), 30);
        assert!(truncate(&s, 30, " (see digest)").ends_with("… (see digest)"));
    }
}
