//! Encoding and decoding of single log lines, and the entry hash chain.

use std::io::{self, BufRead, Read as _, Write as _};

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::hex::{parse_hex, parse_hex_bytes, push_hex};
use crate::merkle::Hash;

/// The largest event the writer accepts, in bytes of canonical JSON.
pub const MAX_EVENT_BYTES: usize = 4 << 20;
/// The longest line readers accept (an event plus the entry's other fields).
pub(crate) const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 4096;

/// What [`read_line`] found.
pub(crate) enum ReadLine {
    /// End of input.
    Eof,
    /// A complete line, now in the buffer without its newline; the count includes it.
    Complete(usize),
    /// Bytes without a final newline at the end of the input (an interrupted write).
    Incomplete,
    /// A line longer than [`MAX_LINE_BYTES`]; it was skipped.
    TooLong,
}

/// Reads one line into `buf`, never holding more than [`MAX_LINE_BYTES`] of it in memory.
pub(crate) fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<ReadLine> {
    buf.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let n = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(ReadLine::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(ReadLine::Complete(n));
    }
    if n <= MAX_LINE_BYTES {
        return Ok(ReadLine::Incomplete);
    }
    buf.clear();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                break;
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
    Ok(ReadLine::TooLong)
}

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
    if let Some(entry) = parse_entry_fast(line) {
        return Ok(entry);
    }
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

/// Reads an entry line in exactly the layout [`write_entry`] produces, without a JSON parser.
///
/// The event bytes are not checked to be JSON here: they are whatever lies between
/// `"event":` and the final `}`, and the leaf hash covers exactly those bytes, so any change
/// to the line's tail (an extra key, altered JSON) shows up as a leaf hash mismatch. Lines in
/// any other layout go through the JSON parser.
fn parse_entry_fast(line: &[u8]) -> Option<Line<'_>> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let seq = rest[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let rest = rest[digits..].strip_prefix(b",\"prev\":\"")?;
    let prev = parse_hex_bytes(rest.get(..64)?)?;
    let rest = rest[64..].strip_prefix(b"\",\"leaf\":\"")?;
    let leaf = parse_hex_bytes(rest.get(..64)?)?;
    let event = rest[64..]
        .strip_prefix(b"\",\"event\":")?
        .strip_suffix(b"}")?;
    Some(Line::Entry {
        seq,
        prev,
        leaf,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_not_buffered() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nok\npartial");
        let mut reader = std::io::BufReader::new(&input[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(ReadLine::TooLong)
        ));
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(ReadLine::Complete(3))
        ));
        assert_eq!(buf, b"ok");
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(ReadLine::Incomplete)
        ));
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(ReadLine::Eof)
        ));
    }

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
            format!(r#"{{"seq":1,"seq":2,"prev":"{h}","leaf":"{h}","event":{{}}}}"#),
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
        // The fast path takes everything after `"event":` as the event, so extra keys end
        // up inside the hashed bytes, where they cannot match the leaf hash.
        for tail in [r#","checkpoint":"x""#, r#","x":1"#] {
            let line = format!(r#"{{"seq":1,"prev":"{h}","leaf":"{h}","event":{{}}{tail}}}"#);
            let Ok(Line::Entry { event, .. }) = parse_line(line.as_bytes()) else {
                panic!("{line}");
            };
            assert_eq!(event, format!("{{}}{tail}").as_bytes());
        }
    }

    #[test]
    fn fast_path_agrees_with_the_json_parser() {
        let mut out = Vec::new();
        write_entry(&mut out, 1234, &[0xab; 32], &[0x01; 32], br#"{"k":"}"}"#);
        let line = &out[..out.len() - 1];
        let Some(Line::Entry {
            seq,
            prev,
            leaf,
            event,
        }) = parse_entry_fast(line)
        else {
            panic!("fast path rejected the writer's own layout");
        };
        assert_eq!(
            (seq, prev, leaf, event),
            (1234, [0xab; 32], [0x01; 32], &br#"{"k":"}"}"#[..])
        );
        // Reordered keys are still a valid line, read by the JSON parser.
        let h = "ab".repeat(32);
        let reordered = format!(r#"{{"prev":"{h}","seq":7,"leaf":"{h}","event":[1]}}"#);
        assert!(parse_entry_fast(reordered.as_bytes()).is_none());
        assert!(matches!(
            parse_line(reordered.as_bytes()),
            Ok(Line::Entry {
                seq: 7,
                event: b"[1]",
                ..
            })
        ));
        for bad_seq in ["01", "", "99999999999999999999"] {
            let line = format!(r#"{{"seq":{bad_seq},"prev":"{h}","leaf":"{h}","event":1}}"#);
            assert!(parse_entry_fast(line.as_bytes()).is_none(), "{line}");
        }
    }
}
