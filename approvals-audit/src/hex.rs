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

/// Nibble values of lower-case hex digits; 0xff for every other byte.
const NIBBLE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Parses exactly 64 lower-case hex digits.
pub(crate) fn parse_hex(s: &str) -> Option<Hash> {
    parse_hex_bytes(s.as_bytes())
}

/// Parses exactly 64 lower-case hex digits given as bytes.
///
/// Branch-free over the digits (a table lookup per digit, validity checked once at the end):
/// the verifier runs this twice per log entry.
pub(crate) fn parse_hex_bytes(s: &[u8]) -> Option<Hash> {
    let s: &[u8; 64] = s.try_into().ok()?;
    let mut out = [0u8; 32];
    let mut invalid = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
        invalid |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // Valid nibbles are below 16; 0xff from any other byte sets the high bits.
    (invalid < 16).then_some(out)
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
        for bad in [b'/', b':', b'`', b'g', b'A', b'F', 0, 0xff] {
            let mut text = to_hex(&h).into_bytes();
            text[63] = bad;
            assert_eq!(parse_hex_bytes(&text), None, "{bad}");
            text[63] = b'0';
            text[0] = bad;
            assert_eq!(parse_hex_bytes(&text), None, "{bad}");
        }
        for c in (b'0'..=b'9').chain(b'a'..=b'f') {
            let text = [c; 64];
            let v = if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
            assert_eq!(parse_hex_bytes(&text), Some([v << 4 | v; 32]));
        }
    }
}
