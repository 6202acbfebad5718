//! `approvals-mcp`: the MCP approval gateway in embedded mode. An MCP client starts it as its
//! stdio server; it starts the upstream MCP server (the command after `--`) and guards every
//! tool call with the policy, a local SQLite store, a signed audit log and a review server.
//!
//! ```sh
//! approvals-mcp --server-name fs --resource-arg path --policy policy.toml \
//!   --tokens reviewers.toml --agent claude-desktop --on-behalf-of you@example.com \
//!   -- npx @modelcontextprotocol/server-filesystem /srv/data
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use approvals_mcp::DEFAULT_MAX_MESSAGE_BYTES;
use approvals_mcp::embedded::{EmbeddedOptions, run};
use clap::Parser;

/// MCP approval gateway: standard input and output speak MCP to the client; the upstream
/// server is the command after `--`. Nothing is printed on standard output but MCP.
#[derive(Debug, Parser)]
#[command(name = "approvals-mcp", version)]
struct Args {
    /// The upstream server's name in action kinds: mcp.<NAME>.<tool>.
    #[arg(long, env = "APPROVALS_MCP_SERVER_NAME")]
    server_name: String,
    /// Take each action's resource from this tool argument (for example `path`); calls
    /// without it target the server's name.
    #[arg(long, env = "APPROVALS_MCP_RESOURCE_ARG")]
    resource_arg: Option<String>,
    /// Policy file (TOML or JSON rules).
    #[arg(long, env = "APPROVALS_POLICY")]
    policy: PathBuf,
    /// Store URL (SQLite).
    #[arg(
        long,
        env = "APPROVALS_DB",
        default_value = "sqlite://approvals-mcp.db"
    )]
    db: String,
    /// Reviewers' token file (SHA-256 hashes and principals; `approvals token new`).
    #[arg(long, env = "APPROVALS_TOKENS")]
    tokens: PathBuf,
    /// Audit log signer key file (`approvals audit keygen`); a new key for this run otherwise.
    #[arg(long, env = "APPROVALS_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
    /// Where the review server (API and console) listens.
    #[arg(long, env = "APPROVALS_MCP_LISTEN", default_value = "127.0.0.1:8480")]
    listen: String,
    /// The review server's public URL, when reviewers reach it by another address.
    #[arg(long, env = "APPROVALS_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// The agent whose tool calls these are (the requests' initiator).
    #[arg(long, env = "APPROVALS_MCP_AGENT")]
    agent: String,
    /// The agent's model.
    #[arg(long, env = "APPROVALS_MCP_MODEL")]
    model: Option<String>,
    /// The person the agent acts for (can never approve its requests).
    #[arg(long, env = "APPROVALS_MCP_ON_BEHALF_OF")]
    on_behalf_of: String,
    /// A session reference recorded with each request.
    #[arg(long, env = "APPROVALS_MCP_SESSION")]
    session: Option<String>,
    /// Largest MCP message accepted from the client or the upstream server, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Seconds between progress notifications while a call waits for approval.
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
    /// The upstream MCP server's command and arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    upstream: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some((program, upstream_args)) = args.upstream.split_first() else {
        eprintln!("approvals-mcp: give the upstream server's command after --");
        return ExitCode::from(2);
    };
    if args.max_message_bytes < 1024 || args.progress_every == 0 {
        eprintln!(
            "approvals-mcp: --max-message-bytes must be at least 1024 and --progress-every at least 1"
        );
        return ExitCode::from(2);
    }
    let options = EmbeddedOptions {
        upstream_program: program.clone(),
        upstream_args: upstream_args.to_vec(),
        server_name: args.server_name,
        resource_arg: args.resource_arg,
        policy: args.policy,
        db: args.db,
        tokens: args.tokens,
        audit_key: args.audit_key,
        listen: args.listen,
        public_url: args.public_url,
        agent: args.agent,
        model: args.model,
        on_behalf_of: args.on_behalf_of,
        session: args.session,
        max_message_bytes: args.max_message_bytes,
        progress_every: Duration::from_secs(args.progress_every),
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approvals-mcp: {e}");
            ExitCode::FAILURE
        }
    }
}
