//! The fuzz targets as plain tests: every function of `approvals_reliability::fuzz` runs over
//! every committed input under `fuzz/corpus/<target>/` (seeds) and `fuzz/regressions/<target>/`
//! (inputs that once failed, kept after the fix). A panic names the file.
//!
//! The seeds derived from the test keys (the signed sample log, its checkpoints and proofs, a
//! grant token) are checked to be current; `FUZZ_WRITE_SEEDS=1 cargo test -p
//! approvals-reliability --test fuzz_regressions` rewrites them after a format change.

use std::path::{Path, PathBuf};

use approvals_reliability::fuzz::{TARGETS, Target, generated_seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir/<target>/`, sorted; none when the directory does not exist.
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn run_all(dir: &str) -> usize {
    let mut count = 0;
    for (name, target) in TARGETS {
        for file in inputs(dir, name) {
            let data = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} failed on {} (reproduce: cd fuzz && cargo fuzz run {name} {})",
                file.display(),
                file.display()
            );
            count += 1;
        }
    }
    count
}

#[test]
fn every_target_passes_its_corpus() {
    for (name, _) in TARGETS {
        assert!(
            !inputs("corpus", name).is_empty(),
            "fuzz/corpus/{name}/ has no seed inputs"
        );
    }
    let count = run_all("corpus");
    eprintln!("ran {count} corpus inputs");
}

#[test]
fn every_saved_crash_stays_fixed() {
    let count = run_all("regressions");
    eprintln!("ran {count} regression inputs");
}

#[test]
fn generated_seeds_are_current() {
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for (target, name, bytes) in generated_seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().expect("a corpus file has a directory"))
                .expect("the corpus directory can be created");
            std::fs::write(&path, &bytes).expect("the seed can be written");
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is missing or stale; rerun with FUZZ_WRITE_SEEDS=1",
            path.display()
        );
    }
}

/// The seeds reach the decision logic, so the targets' checks on a changed request are
/// exercised: the reviewer's clicks and API calls decide, everyone else's change nothing.
#[test]
fn seeds_reach_the_decisions() {
    use approvals_core::RequestState::{Approved, Cancelled, Denied, Pending};
    use approvals_reliability::fuzz::{http_api, last_state, slack_interaction, teams_request};
    let cases: [(&str, Target, &str, _); 14] = [
        (
            "slack_interaction",
            slack_interaction,
            "approve-by-reviewer",
            Approved,
        ),
        (
            "slack_interaction",
            slack_interaction,
            "approve-by-behalf",
            Pending,
        ),
        (
            "slack_interaction",
            slack_interaction,
            "approve-foreign-team",
            Pending,
        ),
        (
            "slack_interaction",
            slack_interaction,
            "approve-wrong-digest",
            Pending,
        ),
        (
            "slack_interaction",
            slack_interaction,
            "view-submission-forged-metadata",
            Pending,
        ),
        (
            "teams_request",
            teams_request,
            "approve-by-reviewer",
            Approved,
        ),
        ("teams_request", teams_request, "deny-by-reviewer", Denied),
        ("teams_request", teams_request, "approve-by-behalf", Pending),
        (
            "teams_request",
            teams_request,
            "approve-foreign-tenant",
            Pending,
        ),
        ("http_api", http_api, "approve", Approved),
        ("http_api", http_api, "cancel-by-agent", Cancelled),
        ("http_api", http_api, "approve-by-behalf", Pending),
        ("http_api", http_api, "console-decide", Approved),
        ("http_api", http_api, "console-decide-no-csrf", Pending),
    ];
    for (target, f, seed, expected) in cases {
        let path = fuzz_dir().join("corpus").join(target).join(seed);
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        f(&data);
        assert_eq!(
            last_state(),
            Some(expected),
            "{target} on seed {seed} left the request in another state"
        );
    }
}
