//! Encoding and decoding of single log lines, and the entry hash chain.

use std::io::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::hex::{parse_hex, push_hex};
use crate::merkle::Hash;

/// The `prev` of the first entry.
pub(crate) const GENESIS: Hash = [0u8; 32];

/// The entry hash that the next entry's `prev` must equal: `SHA-256(0x02 || prev || leaf)`.
pub(crate) fn entry_hash(prev: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x02]);
    h.update(prev);
    h.update(leaf);
    h.finalize().into()
}

/// Appends one entry line (with its newline) to `out`.
pub(crate) fn write_entry(out: &mut Vec<u8>, seq: u64, prev: &Hash, leaf: &Hash, event: &[u8]) {
    out.extend_from_slice(b"{\"seq\":");
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{seq}");
    out.extend_from_slice(b",\"prev\":\"");
    push_hex(out, prev);
    out.extend_from_slice(b"\",\"leaf\":\"");
    push_hex(out, leaf);
    out.extend_from_slice(b"\",\"event\":");
    out.extend_from_slice(event);
    out.extend_from_slice(b"}\n");
}

/// Appends one checkpoint line (with its newline) to `out`.
pub(crate) fn write_checkpoint(out: &mut Vec<u8>, note: &str) {
    out.extend_from_slice(b"{\"checkpoint\":");
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, note);
    out.extend_from_slice(b"}\n");
}

/// One parsed line.
pub(crate) enum Line<'a> {
    /// An entry line; `event` is the exact bytes of the event JSON.
    Entry {
        seq: u64,
        prev: Hash,
        leaf: Hash,
        event: &'a [u8],
    },
    /// A checkpoint line holding a signed note.
    Checkpoint(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    seq: Option<u64>,
    #[serde(borrow)]
    prev: Option<&'a str>,
    #[serde(borrow)]
    leaf: Option<&'a str>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    checkpoint: Option<String>,
}

/// Parses one line (without its newline).
pub(crate) fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    let raw: RawLine<'_> =
        serde_json::from_slice(line).map_err(|e| format!("not a valid log line: {e}"))?;
    match raw {
        RawLine {
            seq: Some(seq),
            prev: Some(prev),
            leaf: Some(leaf),
            event: Some(event),
            checkpoint: None,
        } => Ok(Line::Entry {
            seq,
            prev: parse_hex(prev).ok_or("`prev` is not 64 lower-case hex digits")?,
            leaf: parse_hex(leaf).ok_or("`leaf` is not 64 lower-case hex digits")?,
            event: event.get().as_bytes(),
        }),
        RawLine {
            seq: None,
            prev: None,
            leaf: None,
            event: None,
            checkpoint: Some(note),
        } => Ok(Line::Checkpoint(note)),
        _ => Err("expected an entry line (seq, prev, leaf, event) or a checkpoint line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_line_round_trips() {
        let mut out = Vec::new();
        write_entry(&mut out, 42, &[1; 32], &[2; 32], br#"{"a":1}"#);
        assert_eq!(out.last(), Some(&b'\n'));
        let Ok(Line::Entry {
            seq,
            prev,
            leaf,
            event,
        }) = parse_line(&out[..out.len() - 1])
        else {
            panic!("not an entry");
        };
        assert_eq!(
            (seq, prev, leaf, event),
            (42, [1; 32], [2; 32], &br#"{"a":1}"#[..])
        );
    }

    #[test]
    fn checkpoint_line_round_trips() {
        let mut out = Vec::new();
        write_checkpoint(&mut out, "o\n1\nx\n\n\u{2014} k sig\n");
        assert!(matches!(
            parse_line(&out[..out.len() - 1]),
            Ok(Line::Checkpoint(n)) if n == "o\n1\nx\n\n\u{2014} k sig\n"
        ));
    }

    #[test]
    fn rejects_mixed_duplicate_and_unknown_fields() {
        let h = "0".repeat(64);
        for bad in [
            format!(r#"{{"seq":1,"prev":"{h}","leaf":"{h}"}}"#),
            format!(r#"{{"seq":1,"prev":"{h}","leaf":"{h}","event":{{}},"checkpoint":"x"}}"#),
            format!(r#"{{"seq":1,"seq":2,"prev":"{h}","leaf":"{h}","event":{{}}}}"#),
            format!(r#"{{"seq":1,"prev":"{h}","leaf":"{h}","event":{{}},"x":1}}"#),
            format!(r#"{{"seq":-1,"prev":"{h}","leaf":"{h}","event":{{}}}}"#),
            format!(
                r#"{{"seq":1,"prev":"{}","leaf":"{h}","event":{{}}}}"#,
                "A".repeat(64)
            ),
            "[]".to_owned(),
            String::new(),
        ] {
            assert!(parse_line(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
