//! Names that may appear in generated SQL: plain lowercase identifiers, credential ids, and
//! their double-quoted form.

use approvals_core::credential::BrokerError;

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`), in bytes.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Whether `name` is a plain lowercase SQL identifier: `^[a-z_][a-z0-9_]{0,62}$` (ASCII only,
/// so no quoting, case folding or look-alike characters can change what it names).
///
/// ```
/// use approvals_broker_postgres::is_plain_identifier;
///
/// assert!(is_plain_identifier("invoices_2026"));
/// assert!(!is_plain_identifier("Invoices"));
/// assert!(!is_plain_identifier("invoices; DROP TABLE x"));
/// ```
pub fn is_plain_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_lowercase() || *b == b'_' => {}
        _ => return false,
    }
    bytes.len() <= MAX_IDENTIFIER_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Whether `id` is a credential id the gate chooses
/// ([`credential_id`](approvals_core::credential::credential_id)): `^apr_[0-9a-f]{32}$`.
///
/// ```
/// use approvals_broker_postgres::is_credential_id;
///
/// assert!(is_credential_id("apr_0123456789abcdef0123456789abcdef"));
/// assert!(!is_credential_id("postgres"));
/// ```
pub fn is_credential_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("apr_")
        && id.as_bytes()[4..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// `id` as a role name, or [`BrokerError::Refused`].
pub(crate) fn role(id: &str) -> Result<&str, BrokerError> {
    if is_credential_id(id) {
        Ok(id)
    } else {
        Err(BrokerError::Refused(format!(
            "credential id {:?} is not `apr_` followed by 32 lowercase hex digits",
            shown(id)
        )))
    }
}

/// A validated identifier in double quotes. The validation already excludes `"`; quoting
/// keeps the name exact even if it is a keyword.
pub(crate) fn quoted(name: &str) -> String {
    debug_assert!(is_plain_identifier(name));
    format!("\"{name}\"")
}

/// At most 80 characters of untrusted `text`, for an error message.
pub(crate) fn shown(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_only() {
        for ok in ["a", "_", "invoices", "t_2026_q4", &"a".repeat(63)] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Invoices",
            "in voices",
            "invoices;",
            "\"invoices\"",
            "invoices--",
            "a.b",
            "inv\u{043e}ices", // Cyrillic o
            "ｉnvoices",       // fullwidth i
            "é",
            &"a".repeat(64),
        ] {
            assert!(!is_plain_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn credential_ids_only() {
        assert!(is_credential_id("apr_0123456789abcdef0123456789abcdef"));
        for bad in [
            "apr_0123456789ABCDEF0123456789abcdef",
            "apr_0123456789abcdef0123456789abcde",
            "apr_0123456789abcdef0123456789abcdef0",
            "apr_0123456789abcdef0123456789abcdeg",
            "xpr_0123456789abcdef0123456789abcdef",
            "postgres",
            "",
            "apr_0123456789abcdef0123456789abcd\"f",
        ] {
            assert!(!is_credential_id(bad), "{bad:?}");
            assert!(matches!(role(bad), Err(BrokerError::Refused(_))));
        }
    }
}
