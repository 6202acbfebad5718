//! The `approvals` command-line tool. Run `approvals --help`.

fn main() -> std::process::ExitCode {
    approvals_cli::command::main()
}
