//! Untrusted text: the one rule for which characters every review surface neutralises, the
//! visible form they take, and how text is cut to a bound.
//!
//! Every surface that shows agent-supplied text (the terminal console, the HTML console, Slack,
//! Teams, CEF in the SIEM export, the evidence report) first passes it through [`neutralize`]
//! (or [`one_line`]), then applies its own escaping (HTML entities, `mrkdwn` entities, full-width
//! look-alikes for Markdown, CEF backslashes), then bounds the result with [`truncate`]. So an
//! agent cannot make a reviewer read one action and approve another with characters that are
//! there but not seen, nor inject lines into a log.
//!
//! # The rule
//!
//! [`is_neutralized`] says which characters are replaced:
//!
//! - C0 and C1 control characters (U+0000–U+001F, U+007F–U+009F: escape sequences, carriage
//!   return, backspace, NEL), except line feed and tab, which multi-line values keep (a
//!   one-line surface turns them into spaces with [`one_line`]); a CR LF pair counts as one
//!   line feed;
//! - the line and paragraph separators U+2028 and U+2029;
//! - every `Default_Ignorable_Code_Point` of Unicode: the bidirectional marks, embeddings,
//!   overrides and isolates (which can make `rm -rf /` read as something else), zero-width
//!   spaces and joiners, the word joiner and invisible operators, the BOM, the soft hyphen,
//!   the combining grapheme joiner, Hangul and Khmer fillers, the Mongolian vowel separator and
//!   free variation selectors, variation selectors, tag characters (U+E0000–U+E0FFF) and the
//!   other invisible format controls (see [`is_invisible_format`]);
//! - the interlinear annotation characters U+FFF9–U+FFFB.
//!
//! # The visible form
//!
//! Each neutralised character becomes its code point between single guillemets: U+202E is
//! shown as `‹U+202E›` (see [`marker`]). The form is visible, tells the reviewer exactly which
//! character the agent sent, and uses no character that any surface escapes (`& < > " ' * _ ~
//! ` [ ] ( ) { } \ | = #`), so it reads the same on every surface.
//!
//! ```
//! use approvals_core::text::{neutralize, truncate};
//! assert_eq!(neutralize("rm -rf /\u{202E}txt.exe"), "rm -rf /‹U+202E›txt.exe");
//! assert_eq!(neutralize("plain text\nsecond line"), "plain text\nsecond line");
//! assert_eq!(truncate("abcdef", 4), "abc…");
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

/// Opens the visible form of a neutralised character (U+2039).
pub const MARKER_OPEN: char = '‹';
/// Closes the visible form of a neutralised character (U+203A).
pub const MARKER_CLOSE: char = '›';
/// What [`truncate`] appends to text it cuts (U+2026).
pub const ELLIPSIS: char = '…';

/// Whether `c` changes how surrounding text is shown without being seen itself: every
/// `Default_Ignorable_Code_Point` of Unicode (the bidirectional marks, embeddings, overrides
/// and isolates, zero-width characters, word joiner and invisible operators, the BOM, the soft
/// hyphen, fillers, variation selectors, tag characters) and the interlinear annotation
/// characters.
///
/// ```
/// use approvals_core::text::is_invisible_format;
/// assert!(is_invisible_format('\u{202E}'));
/// assert!(is_invisible_format('\u{E0041}'));
/// assert!(!is_invisible_format('a'));
/// ```
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                        // soft hyphen
            | '\u{034F}'                  // combining grapheme joiner
            | '\u{061C}'                  // Arabic letter mark
            | '\u{115F}'..='\u{1160}'     // Hangul choseong and jungseong fillers
            | '\u{17B4}'..='\u{17B5}'     // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'     // Mongolian free variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}'     // zero-width space and joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}'     // embeddings and overrides
            | '\u{2060}'..='\u{206F}'     // word joiner, invisible operators, isolates, deprecated
            | '\u{3164}'                  // Hangul filler
            | '\u{FE00}'..='\u{FE0F}'     // variation selectors
            | '\u{FEFF}'                  // BOM, zero-width no-break space
            | '\u{FFA0}'                  // halfwidth Hangul filler
            | '\u{FFF0}'..='\u{FFFB}'     // reserved ignorables, interlinear annotation
            | '\u{1BCA0}'..='\u{1BCA3}'   // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}'   // musical symbol format controls
            | '\u{E0000}'..='\u{E0FFF}'    // tags, variation selectors supplement, reserved
    )
}

/// Whether [`neutralize`] replaces `c`: control characters other than line feed and tab, the
/// line and paragraph separators, and every [invisible formatting](is_invisible_format)
/// character.
///
/// ```
/// use approvals_core::text::is_neutralized;
/// assert!(is_neutralized('\u{1B}') && is_neutralized('\u{2028}') && is_neutralized('\u{200B}'));
/// assert!(!is_neutralized('\n') && !is_neutralized('\t') && !is_neutralized('é'));
/// ```
pub fn is_neutralized(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || c == '\u{2028}'
        || c == '\u{2029}'
        || is_invisible_format(c)
}

/// The visible form of a neutralised character: its code point, at least four upper-case hex
/// digits, between single guillemets (`‹U+202E›`, `‹U+E0041›`).
///
/// ```
/// assert_eq!(approvals_core::text::marker('\u{1B}'), "‹U+001B›");
/// ```
pub fn marker(c: char) -> String {
    let mut out = String::with_capacity(12);
    push_marker(&mut out, c);
    out
}

fn push_marker(out: &mut String, c: char) {
    let _ = write!(out, "{MARKER_OPEN}U+{:04X}{MARKER_CLOSE}", c as u32);
}

/// `text` with every [neutralised](is_neutralized) character replaced by its visible
/// [`marker`], and each CR LF pair by a line feed. Line feeds and tabs stay; borrowed when
/// nothing changes.
///
/// ```
/// use approvals_core::text::neutralize;
/// assert_eq!(neutralize("https://good.example/\u{202E}gpj.exe"), "https://good.example/‹U+202E›gpj.exe");
/// assert_eq!(neutralize("a\r\nb\rc"), "a\nb‹U+000D›c");
/// assert!(matches!(neutralize("ok"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn neutralize(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(is_neutralized) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    let mut chars = text[first..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() == Some(&'\n') {
            // CR LF is one line break; the LF is written next.
            continue;
        }
        if is_neutralized(c) {
            push_marker(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`neutralize`]d `text` on one line: line feeds and tabs become spaces too, so a value cannot
/// start a line of its own that looks like the surface's.
///
/// ```
/// assert_eq!(approvals_core::text::one_line("a\nb\tc\u{2028}d"), "a b c‹U+2028›d");
/// ```
pub fn one_line(text: &str) -> Cow<'_, str> {
    match neutralize(text) {
        Cow::Borrowed(s) if !s.contains(['\n', '\t']) => Cow::Borrowed(s),
        s => Cow::Owned(s.replace(['\n', '\t'], " ")),
    }
}

/// `text` cut to at most `max_chars` characters (not bytes; never inside a character), ending
/// with `…` when cut. Borrowed when it fits.
///
/// ```
/// use approvals_core::text::truncate;
/// assert_eq!(truncate("héllo", 5), "héllo");
/// assert_eq!(truncate("héllo", 4), "hél…");
/// assert_eq!(truncate("héllo", 0), "");
/// ```
pub fn truncate(text: &str, max_chars: usize) -> Cow<'_, str> {
    truncate_with(text, max_chars, "")
}

/// [`truncate`] with a note after the `…` when cut (for example which digest the approval
/// covers). The result never exceeds `max_chars` characters; when the note does not fit, only
/// `…` marks the cut.
///
/// ```
/// use approvals_core::text::truncate_with;
/// assert_eq!(truncate_with("abcdefghij", 8, " (cut)"), "a… (cut)");
/// assert_eq!(truncate_with("abcdefghij", 4, " (cut)"), "abc…");
/// assert_eq!(truncate_with("abc", 4, " (cut)"), "abc");
/// ```
pub fn truncate_with<'a>(text: &'a str, max_chars: usize, note: &str) -> Cow<'a, str> {
    if text.char_indices().nth(max_chars).is_none() {
        return Cow::Borrowed(text);
    }
    if max_chars == 0 {
        return Cow::Borrowed("");
    }
    let note_chars = note.chars().count();
    // At least one character of the text stays before the note.
    let note = if note_chars + 1 < max_chars { note } else { "" };
    let keep = max_chars - 1 - note.chars().count();
    let cut = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    let mut out = String::with_capacity(cut + 3 + note.len());
    out.push_str(&text[..cut]);
    out.push(ELLIPSIS);
    out.push_str(note);
    Cow::Owned(out)
}

/// `items` (already made safe for the surface) joined with `, ` while the result stays within
/// `max_chars` characters; the ones that do not fit are counted instead (` and 3 more`). The
/// first item is always shown, so bound each item too.
///
/// ```
/// use approvals_core::text::join_bounded;
/// let names = ["Ann", "Bob", "Cy"].map(String::from);
/// assert_eq!(join_bounded(&names, 100), "Ann, Bob, Cy");
/// assert_eq!(join_bounded(&names, 8), "Ann, Bob and 1 more");
/// ```
pub fn join_bounded(items: &[String], max_chars: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for (i, item) in items.iter().enumerate() {
        let len = item.chars().count();
        if i > 0 {
            if shown + 2 + len > max_chars {
                let _ = write!(out, " and {} more", items.len() - i);
                break;
            }
            out.push_str(", ");
            shown += 2;
        }
        out.push_str(item);
        shown += len;
    }
    out
}

/// Hostile samples for the tests of every surface: one character of each class [`neutralize`]
/// replaces, and the exact strings an outside attack suite used. Not part of the API.
#[doc(hidden)]
pub mod hostile {
    /// One character of each neutralised class, with what it is.
    pub const CHARS: &[(char, &str)] = &[
        ('\u{0000}', "C0 null"),
        ('\u{0007}', "C0 bell"),
        ('\u{0008}', "C0 backspace"),
        ('\u{000B}', "C0 vertical tab"),
        ('\u{000C}', "C0 form feed"),
        ('\u{000D}', "C0 lone carriage return"),
        ('\u{001B}', "C0 escape (ANSI sequences)"),
        ('\u{007F}', "delete"),
        ('\u{0085}', "C1 next line"),
        ('\u{009B}', "C1 control sequence introducer"),
        ('\u{00AD}', "soft hyphen"),
        ('\u{034F}', "combining grapheme joiner"),
        ('\u{061C}', "Arabic letter mark"),
        ('\u{115F}', "Hangul choseong filler"),
        ('\u{1160}', "Hangul jungseong filler"),
        ('\u{17B4}', "Khmer vowel inherent aq"),
        ('\u{180B}', "Mongolian free variation selector one"),
        ('\u{180E}', "Mongolian vowel separator"),
        ('\u{200B}', "zero-width space"),
        ('\u{200C}', "zero-width non-joiner"),
        ('\u{200D}', "zero-width joiner"),
        ('\u{200E}', "left-to-right mark"),
        ('\u{200F}', "right-to-left mark"),
        ('\u{2028}', "line separator"),
        ('\u{2029}', "paragraph separator"),
        ('\u{202A}', "left-to-right embedding"),
        ('\u{202B}', "right-to-left embedding"),
        ('\u{202C}', "pop directional formatting"),
        ('\u{202D}', "left-to-right override"),
        ('\u{202E}', "right-to-left override"),
        ('\u{2060}', "word joiner"),
        ('\u{2061}', "function application"),
        ('\u{2062}', "invisible times"),
        ('\u{2063}', "invisible separator"),
        ('\u{2064}', "invisible plus"),
        ('\u{2066}', "left-to-right isolate"),
        ('\u{2067}', "right-to-left isolate"),
        ('\u{2068}', "first strong isolate"),
        ('\u{2069}', "pop directional isolate"),
        ('\u{206A}', "inhibit symmetric swapping"),
        ('\u{206F}', "nominal digit shapes"),
        ('\u{3164}', "Hangul filler"),
        ('\u{FE00}', "variation selector 1"),
        ('\u{FE0F}', "variation selector 16"),
        ('\u{FEFF}', "byte order mark"),
        ('\u{FFA0}', "halfwidth Hangul filler"),
        ('\u{FFF9}', "interlinear annotation anchor"),
        ('\u{FFFA}', "interlinear annotation separator"),
        ('\u{FFFB}', "interlinear annotation terminator"),
        ('\u{1BCA0}', "shorthand format letter overlap"),
        ('\u{1D173}', "musical symbol begin beam"),
        ('\u{E0001}', "language tag"),
        ('\u{E0041}', "tag latin capital letter a"),
        ('\u{E007F}', "cancel tag"),
        ('\u{E0100}', "variation selector 17"),
    ];

    /// The attack suite's examples: a link whose address reads backwards, a file name that
    /// reads as another, zero-width characters inside a command.
    pub const STRINGS: &[&str] = &[
        "https://good.example/\u{202E}gpj.exe",
        "rm -rf /\u{202E}txt.exe\u{2066}\u{200B}",
        "invoice\u{2066}\u{2069}.pdf\u{E0041}\u{E007F}",
    ];

    /// Whether `output` still holds any character [`super::neutralize`] replaces other than
    /// the ones a surface itself may write (none): the first one found.
    pub fn leftover(output: &str) -> Option<char> {
        output.chars().find(|&c| super::is_neutralized(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_neutralised_and_ordinary_text_is_not() {
        for &(c, what) in hostile::CHARS {
            assert!(is_neutralized(c), "{what} U+{:04X}", c as u32);
            let input = format!("a{c}b");
            let out = neutralize(&input);
            assert_eq!(out, format!("a{}b", marker(c)), "{what}");
            assert!(hostile::leftover(&out).is_none(), "{what}");
        }
        for c in [
            'a', ' ', 'é', '\u{05D0}', '😀', '\n', '\t', '\u{00A0}', '‹', '\u{3000}', 'ｱ',
        ] {
            assert!(!is_neutralized(c), "U+{:04X}", c as u32);
        }
        // Ordinary letters around the ranges' edges stay.
        for c in [
            '\u{00AC}',
            '\u{2027}',
            '\u{202F}',
            '\u{2070}',
            '\u{FFFD}',
            '\u{E1000}',
        ] {
            assert!(!is_neutralized(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn the_attack_suite_examples_come_out_visible() {
        assert_eq!(
            neutralize(hostile::STRINGS[0]),
            "https://good.example/‹U+202E›gpj.exe"
        );
        assert_eq!(
            neutralize(hostile::STRINGS[1]),
            "rm -rf /‹U+202E›txt.exe‹U+2066›‹U+200B›"
        );
        for s in hostile::STRINGS {
            assert!(hostile::leftover(&neutralize(s)).is_none(), "{s:?}");
            assert!(hostile::leftover(&one_line(s)).is_none(), "{s:?}");
        }
    }

    #[test]
    fn line_breaks_stay_or_become_spaces() {
        assert_eq!(neutralize("a\nb\r\nc\td"), "a\nb\nc\td");
        assert_eq!(neutralize("a\r"), "a‹U+000D›");
        assert_eq!(one_line("a\nb\r\nc\td"), "a b c d");
        assert!(matches!(one_line("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn truncation_counts_characters_and_never_exceeds_the_bound() {
        let s = "é".repeat(50);
        for max in 0..60 {
            let cut = truncate(&s, max);
            assert_eq!(cut.chars().count(), max.min(50), "{max}");
            let noted = truncate_with(&s, max, " (see digest)");
            assert!(noted.chars().count() <= max, "{max}: {noted}");
            if max < 50 && max > 14 {
                assert!(noted.ends_with("… (see digest)"), "{max}: {noted}");
            }
        }
        assert!(matches!(truncate(&s, 50), Cow::Borrowed(_)));
        assert_eq!(truncate(&s, 49).chars().last(), Some(ELLIPSIS));
        assert_eq!(truncate("😀😀😀", 2), "😀…");
    }
}
