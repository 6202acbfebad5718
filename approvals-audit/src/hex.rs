//! Lower-case hex for 32-byte hashes, without allocation.

use crate::merkle::Hash;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the 64 lower-case hex digits of `hash` to `out`.
pub(crate) fn push_hex(out: &mut Vec<u8>, hash: &Hash) {
    for b in hash {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 0x0f) as usize]);
    }
}

/// The hex string of `hash`.
pub(crate) fn to_hex(hash: &Hash) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, hash);
    // Only ASCII digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Parses exactly 64 lower-case hex digits.
pub(crate) fn parse_hex(s: &str) -> Option<Hash> {
    parse_hex_bytes(s.as_bytes())
}

/// Parses exactly 64 lower-case hex digits given as bytes.
pub(crate) fn parse_hex_bytes(s: &[u8]) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let h: Hash = core::array::from_fn(|i| (i * 9) as u8);
        assert_eq!(parse_hex(&to_hex(&h)), Some(h));
        assert_eq!(parse_hex(&to_hex(&h).to_uppercase()), None);
        assert_eq!(parse_hex(&to_hex(&h)[1..]), None);
        assert_eq!(parse_hex(&"g".repeat(64)), None);
    }
}
