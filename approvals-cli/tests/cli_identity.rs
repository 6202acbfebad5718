//! `approvals token new` refuses a principal that cannot be compared safely and writes the
//! canonical form of the one it accepts (issue 16, item 3).

use std::process::{Command, Output, Stdio};

use approvals_http::Tokens;

fn token_new(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_approvals"))
        .args(["token", "new"])
        .args(args)
        .env_remove("APPROVALS_TOKENS")
        .stdin(Stdio::null())
        .output()
        .expect("run approvals")
}

#[test]
fn token_new_refuses_hidden_and_mixed_script_ids_and_writes_canonical_ones() {
    for (args, code_point) in [
        (["--human", "sam\u{200B}@example.com"], "U+200B"),
        (["--human", "\u{202E}sam@example.com"], "U+202E"),
        (["--agent", "b\u{0456}lling-agent"], "U+0456"),
        (["--groups", "sec\u{FEFF}"], "U+FEFF"),
    ] {
        let mut all = args.to_vec();
        if all[0] == "--groups" {
            all.extend(["--human", "sam@example.com"]);
        }
        let out = token_new(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(stderr.contains(code_point), "{all:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{all:?}: no entry is printed");
    }

    let out = token_new(&[
        "--human",
        " Sam@Example.COM ",
        "--groups",
        "Security,ＳＲＥ",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = String::from_utf8_lossy(&out.stdout);
    assert!(entry.contains("\"sam@example.com\""), "{entry}");
    let tokens = Tokens::from_toml(&entry).expect("valid token file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let token = stderr
        .lines()
        .find(|l| l.starts_with("apr_"))
        .expect("token on stderr")
        .trim();
    let sam = tokens.principal(token).expect("maps the token");
    assert_eq!(sam.groups, ["security", "sre"]);
}
