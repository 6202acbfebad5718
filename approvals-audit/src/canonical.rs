//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace.
//!
//! This is the encoding audit events are hashed and stored in. It follows the same rules as
//! `approvals_core::request::canonical_json` (sorted keys, compact form, serde_json's string
//! escaping and number formatting), so an event hashes the same in both crates.
//!
//! Re-encoding a parsed event is not guaranteed to give back the same bytes when it holds
//! floating-point numbers (serde_json's default float parsing is not exact), so verifiers
//! hash the stored bytes, never a re-encoding.
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

    /// The same value with every object's members inserted in key order, so serde_json's
    /// own compact output is a reference encoding whatever its map type.
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }

    fn has_float(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(has_float),
            Value::Object(map) => map.values().any(has_float),
            _ => false,
        }
    }

    fn json_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn matches_serde_json_compact_output_in_key_order(v in json_strategy()) {
            let ours = to_vec(&v);
            proptest::prop_assert_eq!(&ours, &serde_json::to_vec(&sorted(&v)).unwrap());
            // Parsing and re-encoding gives the same bytes, except for floats: serde_json's
            // default parser may land one ulp off, which is why the log hashes and proves
            // the stored event bytes and never a re-encoding of a parsed event.
            if !has_float(&v) {
                let back: Value = serde_json::from_slice(&ours).unwrap();
                proptest::prop_assert_eq!(to_vec(&back), ours);
            }
        }
    }

    #[test]
    fn reparsing_canonical_output_is_a_fixed_point() {
        let v = json!({"k": [1, {"y": null, "x": [true, false]}], "n": 12345678901234_u64});
        let once = to_vec(&v);
        let again = to_vec(&serde_json::from_slice(&once).unwrap());
        assert_eq!(once, again);
    }
}
