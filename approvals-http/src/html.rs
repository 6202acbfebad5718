//! HTML escaping for untrusted text.

use std::fmt::Write as _;

/// Escapes `text` for HTML element content and quoted attribute values.
///
/// Besides `& < > " '`, control characters and Unicode direction overrides and isolates
/// (which could make `rm -rf /` read as something harmless) are shown as visible `\u{..}`
/// escapes, so a reviewer sees exactly which characters the requester sent.
///
/// ```
/// assert_eq!(
///     approvals_http::html::escape("<b onclick='x'>\u{202e}"),
///     "&lt;b onclick=&#39;x&#39;&gt;\\u{202e}"
/// );
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    push_escaped(&mut out, text);
    out
}

/// Appends the escaped form of `text` to `out`; see [`escape`].
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if is_invisible_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Characters that change how surrounding text is shown without being seen themselves.
pub(crate) fn is_invisible_control(c: char) -> bool {
    c.is_control() || approvals_core::text::is_invisible_format(c)
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_hidden_characters() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>&"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}[31m"), "a\\u{0}b\\u{1b}[31m");
        assert_eq!(escape("x\u{2067}y\u{feff}"), "x\\u{2067}y\\u{feff}");
        assert_eq!(escape("line\nnext"), "line\nnext");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
