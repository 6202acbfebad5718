//! Property test of edit on approve's bounds: for any parameters, any editable list and any
//! proposed parameters, `edit::edit_action` accepts exactly the edits a plain model of the rule
//! accepts (only editable parameters the action has may change, each keeping its JSON type,
//! nothing added or removed, something changed), and an accepted edit is exactly what was
//! proposed, with its own digest.

use std::collections::BTreeMap;

use approvals_core::ActionRequest;
use approvals_core::edit::edit_action;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: [&str; 5] = ["rows", "table", "region", "pii", "columns"];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        Just(json!(2.5)),
        "[a-c]{0,2}".prop_map(Value::String),
        proptest::collection::vec((-2i64..3).prop_map(|n| json!(n)), 0..3).prop_map(Value::Array),
        Just(json!({"x": 1})),
    ]
}

fn params() -> impl Strategy<Value = BTreeMap<String, Value>> {
    proptest::collection::btree_map(proptest::sample::select(KEYS.to_vec()), value(), 0..5)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// What a reviewer might send: each key kept, changed or removed, and perhaps one added.
fn proposal(
    asked: BTreeMap<String, Value>,
) -> impl Strategy<Value = (BTreeMap<String, Value>, BTreeMap<String, Value>)> {
    let n = asked.len();
    (
        proptest::collection::vec((0u8..4, value()), n),
        proptest::option::of((proptest::sample::select(KEYS.to_vec()), value())),
    )
        .prop_map(move |(moves, added)| {
            let mut proposed = BTreeMap::new();
            for ((key, before), (kind, other)) in asked.iter().zip(moves) {
                match kind {
                    0 | 1 => {
                        proposed.insert(key.clone(), before.clone());
                    }
                    2 => {
                        proposed.insert(key.clone(), other);
                    }
                    _ => {} // removed
                }
            }
            if let Some((key, value)) = added {
                proposed.entry(key.to_owned()).or_insert(value);
            }
            (asked.clone(), proposed)
        })
}

fn type_of(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// The rule, written plainly over top-level keys.
fn model_accepts(
    asked: &BTreeMap<String, Value>,
    proposed: &BTreeMap<String, Value>,
    editable: &[&str],
) -> bool {
    if editable.is_empty() {
        return false;
    }
    let keys: std::collections::BTreeSet<&String> = asked.keys().chain(proposed.keys()).collect();
    let mut changed = false;
    for key in keys {
        match (asked.get(key), proposed.get(key)) {
            (Some(a), Some(p)) if a == p => {}
            (Some(a), Some(p)) => {
                if !editable.contains(&key.as_str()) || type_of(a) != type_of(p) {
                    return false;
                }
                changed = true;
            }
            // Added or removed: never within the bounds.
            _ => return false,
        }
    }
    changed
}

fn object(map: &BTreeMap<String, Value>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn edit_action_accepts_exactly_what_the_rule_allows(
        (asked, proposed) in params().prop_flat_map(proposal),
        editable in proptest::sample::subsequence(KEYS.to_vec(), 0..=KEYS.len()),
    ) {
        let request = ActionRequest::new("data.export", "db://prod/customers").params(object(&asked));
        let pointers: Vec<String> = editable.iter().map(|k| format!("/{k}")).collect();
        let result = edit_action(&request, &pointers, &object(&proposed));
        let expected = model_accepts(&asked, &proposed, &editable);
        prop_assert_eq!(result.is_ok(), expected, "{:?} -> {:?} editable {:?}: {:?}", asked, proposed, editable, result);
        if let Ok((edited, changes)) = result {
            prop_assert_eq!(&*edited.params, &object(&proposed));
            prop_assert_ne!(edited.digest(), request.digest());
            prop_assert_eq!(edited.kind, request.kind);
            prop_assert_eq!(edited.resource, request.resource);
            for change in &changes {
                let key = change.field.trim_start_matches('/');
                prop_assert!(editable.contains(&key));
                prop_assert_eq!(Some(&change.before), asked.get(key));
                prop_assert_eq!(Some(&change.after), proposed.get(key));
            }
        }
    }
}
