//! HTML escaping for untrusted text.

/// Escapes `text` for HTML element content and quoted attribute values.
///
/// Control characters and invisible formatting characters (bidi overrides and isolates,
/// zero-width characters, which could make `rm -rf /` read as something harmless) are first
/// shown in their visible form by the one rule of [`approvals_core::text::neutralize`]
/// (`‹U+202E›`), so a reviewer sees exactly which characters the requester sent; then
/// `& < > " '` become entities. Line feeds and tabs stay.
///
/// ```
/// assert_eq!(
///     approvals_http::html::escape("<b onclick='x'>\u{202e}"),
///     "&lt;b onclick=&#39;x&#39;&gt;‹U+202E›"
/// );
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    push_escaped(&mut out, text);
    out
}

/// Appends the escaped form of `text` to `out`; see [`escape`].
pub fn push_escaped(out: &mut String, text: &str) {
    for c in approvals_core::text::neutralize(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `text` cut to at most `max` characters, the last being `…` when cut (see
/// [`approvals_core::text::truncate`]).
pub fn truncate(text: &str, max: usize) -> String {
    approvals_core::text::truncate(text, max).into_owned()
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
        assert_eq!(escape("a\u{0}b\u{1b}[31m"), "a‹U+0000›b‹U+001B›[31m");
        assert_eq!(escape("x\u{2067}y\u{feff}"), "x‹U+2067›y‹U+FEFF›");
        assert_eq!(escape("line\nnext"), "line\nnext");
        assert_eq!(truncate("abcdef", 3), "ab…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
