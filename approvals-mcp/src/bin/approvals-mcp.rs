//! `approvals-mcp`: the MCP approval gateway (also `approvals mcp-proxy`); see
//! [`approvals_mcp::cli`] and `approvals-mcp --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    approvals_mcp::cli::run("approvals-mcp", std::env::args_os()).await
}
