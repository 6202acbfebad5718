//! The bytes of the audit log for a fixed input never change: events are stored and hashed in
//! approvals-core's canonical JSON (`approvals_core::request::write_canonical_json`), and a
//! change to that encoder that moved a byte would make every existing log fail verification.
//! These lines were produced before the log switched from its own copy of the encoder to
//! core's, and must stay exactly as they are.

use approvals_audit::log::LogChain;
use serde_json::json;

fn events() -> Vec<serde_json::Value> {
    vec![
        // Keys out of order at every level, escapes, control characters, non-ASCII text.
        json!({
            "z": {"b": 2, "a": 1, "B": [3, 2, 1]},
            "a": "q\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            "é": "naïve ‹U+202E› 🙂",
            "event": "reviewed",
        }),
        // Numbers: negative, large unsigned, floats in shortest round-trip form.
        json!({"n": [-3, 0, 18446744073709551615_u64, 1.5, 0.1, 1e300, -2.5e-8], "t": true, "f": false, "x": null}),
        // Empty containers and a deep mix.
        json!({"o": {}, "l": [], "s": "", "k": [{"y": [{"b": null, "a": {}}]}, "x"]}),
    ]
}

#[test]
fn the_log_lines_for_fixed_events_are_unchanged() {
    let mut chain = LogChain::new("audit.example/golden").unwrap();
    let lines: Vec<String> = events()
        .iter()
        .map(|e| chain.append(e).unwrap().line)
        .collect();
    let expected: [&str; 3] = [
        concat!(
            r#"{"seq":0,"prev":"0000000000000000000000000000000000000000000000000000000000000000","leaf":"d974d9680f9a916432406014a56ef73db30559304e8680500d33de79c0c3b99c","event":{"a":"q\"\\\n\r\t\b\f\u0001\u001f"#,
            "\u{7f}",
            r#"","event":"reviewed","z":{"B":[3,2,1],"a":1,"b":2},"é":"naïve ‹U+202E› 🙂"}}"#
        ),
        r#"{"seq":1,"prev":"fa74ef30194b65bc2165939c57393d009f21aacfd6f0142bc67c950d4b223816","leaf":"dfc4f2d05227c2712b16b5cc0cdfab8f2c6ad50fc1c172fdd7e462010963dcc8","event":{"f":false,"n":[-3,0,18446744073709551615,1.5,0.1,1e+300,-2.5e-8],"t":true,"x":null}}"#,
        r#"{"seq":2,"prev":"6fe84df06af547da910261524e6ac52284dcfd00be3571e61c0224a08cf86303","leaf":"7c74883112938acd0ff2360c4e1e4024dc434a462539c8cc7f2a302cdb3f0a23","event":{"k":[{"y":[{"a":{},"b":null}]},"x"],"l":[],"o":{},"s":""}}"#,
    ];
    assert_eq!(lines, expected);
}
