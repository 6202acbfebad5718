//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace.
//!
//! This is the encoding audit events are hashed and stored in. It follows the same rules as
//! `approvals_core::request::canonical_json` (sorted keys, compact form, serde_json's string
//! escaping and number formatting), so an event hashes the same in both crates.
//!
//! ```
//! let v = serde_json::json!({"b": 1, "a": [true, null, "x"]});
//! assert_eq!(approvals_audit::canonical::to_vec(&v), br#"{"a":[true,null,"x"],"b":1}"#);
//! ```

use serde_json::Value;

/// Encodes `value` canonically into a new buffer.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            // serde_json's default map is already in key order; sort only when it is not.
            if map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes()) {
                write_members(map.iter(), out);
            } else {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                write_members(members.into_iter(), out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        other => write_compact(other, out),
    }
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_compact(key, out);
        out.push(b':');
        write(value, out);
    }
}

/// Writes a string or a scalar in serde_json's compact form.
fn write_compact<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serializing a string or a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_nested_keys_and_escapes_strings() {
        let v = json!({"z": {"b": 2, "a": 1}, "a": "q\"\n\u{1}", "é": 1.5, "B": -3});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"B":-3,"a":"q\"\n\u0001","z":{"a":1,"b":2},"é":1.5}"#
        );
    }

    #[test]
    fn reparsing_canonical_output_is_a_fixed_point() {
        let v = json!({"k": [1, {"y": null, "x": [true, false]}], "n": 12345678901234_u64});
        let once = to_vec(&v);
        let again = to_vec(&serde_json::from_slice(&once).unwrap());
        assert_eq!(once, again);
    }
}
