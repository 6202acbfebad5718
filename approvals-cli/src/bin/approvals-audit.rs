//! `approvals-audit`: generate log keys, verify audit logs, export and check proofs, export to
//! SIEMs, write evidence reports, check grant tokens. See [`approvals_cli::audit`].
//!
//! Exit status: 0 success, 1 verification failed, 2 usage or I/O error.

fn main() -> std::process::ExitCode {
    approvals_cli::audit::run(std::env::args().skip(1).collect())
}
