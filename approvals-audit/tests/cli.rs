//! The `approvals-audit` command, run as a separate process over logs written here.

mod common;

use std::process::{Command, Output};

use approvals_audit::log::LogWriter;
use approvals_audit::note::Signer;
use common::*;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_approvals-audit"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keygen_verify_prove_and_check_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (skey, vkeys, log, proof) = (
        p("log.skey"),
        p("log.vkeys"),
        p("audit.jsonl"),
        p("proof.json"),
    );

    let out = cli(&["keygen", ORIGIN, &skey]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&vkeys, stdout(&out)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&skey).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        cli(&["keygen", ORIGIN, &skey]).status.code(),
        Some(2),
        "never overwrites"
    );

    let signer = Signer::from_file(&skey).unwrap();
    let mut writer = LogWriter::create(&log, config(), signer).unwrap();
    for i in 0..12 {
        writer.append(&event(i)).unwrap();
    }
    writer.close().unwrap();

    let out = cli(&["verify", &log, "--trust", &vkeys]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("OK: 12 entries"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["prove", &log, "4", "--size", "10"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&proof, stdout(&out)).unwrap();
    let out = cli(&["check-proof", &proof, "--trust", &vkeys]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("entry 4 is in log"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["consistency", &log, "10", "12"]);
    assert!(out.status.success(), "{out:?}");

    // Tampering shows up as exit status 1 and a located problem.
    let mut lines = read_lines(std::path::Path::new(&log));
    let i = entry_index(&lines, 2);
    lines[i] = lines[i].replace("alice", "mallory");
    write_lines(std::path::Path::new(&log), &lines);
    let out = cli(&["verify", &log, "--trust", &vkeys]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains("line 3 (seq 2): the event does not match"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["verify", &log, "--trust", &vkeys, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"][0]["code"], "event_hash_mismatch");
    assert_eq!(report["problems"][0]["line"], 3);
    assert_eq!(report["problems"][0]["seq"], 2);

    let edited = std::fs::read_to_string(&proof)
        .unwrap()
        .replace("req-4", "req-5");
    std::fs::write(&proof, edited).unwrap();
    assert_eq!(
        cli(&["check-proof", &proof, "--trust", &vkeys])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    assert_eq!(cli(&[]).status.code(), Some(2));
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        cli(&["verify", "/nonexistent"]).status.code(),
        Some(2),
        "no trusted key"
    );
    assert_eq!(cli(&["prove", "/nonexistent", "x"]).status.code(), Some(2));
    assert!(cli(&["help"]).status.success());
}
