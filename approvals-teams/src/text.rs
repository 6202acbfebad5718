//! Making untrusted text inert and bounded for Adaptive Cards.
//!
//! Every untrusted value first goes through the one rule of [`approvals_core::text`]: control,
//! bidi and other invisible characters (U+200B included) become a visible `‹U+200B›`.
//!
//! Then: Adaptive Cards render a subset of Markdown in `TextBlock` text and in `FactSet`
//! titles and values (bold `**`, italic `_`, lists `- ` / `* ` / `1. `, links `[text](url)`),
//! expand the date functions `{{DATE(..)}}` and `{{TIME(..)}}` in `TextBlock` and `TextRun`
//! text, and hosts differ in how they treat backslash escapes and HTML. So untrusted text gets
//! no escapes to interpret at all:
//!
//! - [`card_text`] (for `TextBlock` and `FactSet`) replaces every character that can start
//!   Markdown or a date function (`*`, `_`, `[`, `]`, `(`, `)`, `` ` ``, `~`, `#`, `<`, `>`,
//!   `&`, `|`, `\`, `{`, `}`, and `-`, `+`, `=` or `.` at the start of the value, where they
//!   would make a list) with its full-width look-alike, and turns line breaks into spaces, so
//!   a value cannot start a line of its own that looks like ours.
//! - [`literal_text`] (for `TextRun`, where Markdown is not rendered) keeps the text as is,
//!   line breaks included, but shows the second brace of `{{`, `}}` and `${` as its full-width
//!   look-alike (`{｛`), so no date function or template expression is expanded. Nothing
//!   invisible is inserted: an invisible separator would itself be a character the one rule
//!   forbids, and copying the text would carry it along.
//!
//! Bound the result with [`truncate`] (after escaping, so the bound holds for what is sent).

use approvals_core::text as core_text;

/// Escapes untrusted text for Markdown-rendering card text (`TextBlock`, `FactSet` values):
/// invisible and control characters become visible markers, every Markdown-active character
/// becomes a full-width look-alike, and line breaks become spaces.
///
/// ```
/// use approvals_teams::text::card_text;
/// assert_eq!(card_text("**ok** [x](https://e.vil)"), "＊＊ok＊＊ ［x］（https://e.vil）");
/// assert_eq!(card_text("- item\n# title"), "－ item ＃ title");
/// assert_eq!(card_text("a\u{200B}b"), "a‹U+200B›b");
/// ```
pub fn card_text(untrusted: &str) -> String {
    let safe = core_text::one_line(untrusted);
    let mut out = String::with_capacity(safe.len() + 8);
    // Still at the start of the value (only blanks and digits so far): where list and
    // heading markers take effect.
    let mut at_start = true;
    for c in safe.chars() {
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
            c => c,
        };
        at_start = at_start && (c.is_ascii_digit() || c == ' ');
        out.push(mapped);
    }
    out
}

/// Makes untrusted text safe for a `TextRun` (rendered literally, no Markdown): keeps line
/// breaks and tabs, shows invisible and control characters as visible markers, and shows the
/// second brace of `{{`, `}}` and `${` full-width so no date function or template expression
/// expands.
///
/// ```
/// use approvals_teams::text::literal_text;
/// assert_eq!(literal_text("a\n{{DATE(2026-01-01T00:00:00Z)}}"), "a\n{｛DATE(2026-01-01T00:00:00Z)}｝");
/// assert_eq!(literal_text("${x} \u{202E}"), "$｛x} ‹U+202E›");
/// ```
pub fn literal_text(untrusted: &str) -> String {
    let safe = core_text::neutralize(untrusted);
    let mut out = String::with_capacity(safe.len() + 8);
    // The last character written.
    let mut prev: Option<char> = None;
    for c in safe.chars() {
        let c = match c {
            '{' if matches!(prev, Some('{') | Some('$')) => '｛',
            '}' if prev == Some('}') => '｝',
            c => c,
        };
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
    core_text::truncate_with(s, max, note).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use approvals_core::text::{hostile, is_neutralized};

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
    fn bidi_and_control_characters_are_shown_visibly() {
        let out = card_text("rm -rf /\u{202E}txt.exe\u{2066}\u{0007}");
        assert_eq!(out, "rm -rf /‹U+202E›txt.exe‹U+2066›‹U+0007›");
        let lit = literal_text("a\u{202E}b\u{0}c\r\nd\te\u{200B}");
        assert_eq!(lit, "a‹U+202E›b‹U+0000›c\nd\te‹U+200B›");
    }

    /// U+200B is neutralised like every other invisible character: the escaping of `{{`
    /// writes none, on either function.
    #[test]
    fn no_invisible_character_is_inserted_or_kept() {
        for s in [
            "{{DATE(2026-01-01T00:00:00Z)}}",
            "${x}",
            "{{{",
            "}}}",
            "a\u{200B}b",
        ] {
            for out in [card_text(s), literal_text(s)] {
                assert_eq!(hostile::leftover(&out), None, "{s:?} -> {out:?}");
            }
        }
        assert_eq!(literal_text("{{{"), "{｛{");
        assert_eq!(literal_text("}}}"), "}｝}");
    }

    #[test]
    fn literal_text_breaks_date_functions_and_templates() {
        let out = literal_text("{{TIME(2026-01-01T00:00:00Z)}} ${secret} {\"a\": {}}");
        assert!(!out.contains("{{") && !out.contains("}}") && !out.contains("${"));
        // Ordinary JSON is unchanged.
        assert_eq!(literal_text("{\"a\": [1, 2]}"), "{\"a\": [1, 2]}");
    }

    /// Many random strings over an alphabet of the characters that matter: `card_text` keeps
    /// one character per visible character and leaves nothing Markdown, date functions or
    /// bidi can use; `literal_text` never leaves `{{`, `}}` or `${`, nor anything invisible.
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
            // One character per visible character, a marker of eight per neutralised one
            // (but the CR of a CR LF, which goes with its line feed).
            let visible = s.chars().filter(|&c| !is_neutralized(c)).count();
            let markers = out.matches('‹').count();
            assert_eq!(
                markers,
                s.chars().filter(|&c| is_neutralized(c)).count() - s.matches("\r\n").count()
            );
            assert_eq!(
                out.chars().count() - 8 * markers,
                visible,
                "{s:?} -> {out:?}"
            );
            for c in MARKDOWN_ACTIVE {
                assert!(!out.contains(*c), "{c:?} survived: {s:?} -> {out:?}");
            }
            assert!(
                !out.chars()
                    .any(|c| is_neutralized(c) || c == '\n' || c == '\t')
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
            assert_eq!(hostile::leftover(&lit), None, "{s:?}");
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
