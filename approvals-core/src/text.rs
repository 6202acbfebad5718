//! Untrusted text: the characters every review surface must neutralise.

/// Whether `c` changes how surrounding text is shown without being seen itself: the
/// bidirectional marks, embeddings, overrides and isolates (which can make `rm -rf /` read as
/// something else), zero-width characters, invisible operators and the BOM.
///
/// Every channel (terminal, HTML console, Slack, Teams) replaces these in agent-supplied text,
/// together with control characters, so an agent cannot make a reviewer read one action and
/// approve another.
///
/// ```
/// use approvals_core::text::is_invisible_format;
/// assert!(is_invisible_format('\u{202E}'));
/// assert!(!is_invisible_format('a'));
/// ```
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'                 // Arabic letter mark
            | '\u{200B}'..='\u{200F}' // zero-width space and joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // isolates
            | '\u{FEFF}' // BOM, zero-width no-break space
    )
}

#[cfg(test)]
mod tests {
    use super::is_invisible_format;

    #[test]
    fn bidi_and_zero_width_characters_are_invisible_formatting() {
        for c in [
            '\u{061C}', '\u{200B}', '\u{200E}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
            '\u{FEFF}',
        ] {
            assert!(is_invisible_format(c), "{:04x}", c as u32);
        }
        for c in ['a', ' ', 'é', '\u{05D0}', '😀', '\n'] {
            assert!(!is_invisible_format(c), "{:04x}", c as u32);
        }
    }
}
