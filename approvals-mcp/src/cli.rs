//! The gateway's command line, shared by the `approvals-mcp` binary and `approvals mcp-proxy`
//! (approvals-cli). An MCP client starts it as its stdio server; it starts the upstream MCP
//! server (the command after `--`) or connects to one (`--upstream-url`), and guards every
//! tool call, either embedded (its own policy, SQLite store, signed audit log and review
//! server) or as a client of a remote `approvals serve` (`--server URL`, agent token in
//! `APPROVALS_TOKEN` or `--token-file`).
//!
//! ```sh
//! approvals mcp-proxy --server-name fs --resource-arg path --policy policy.toml \
//!   --tokens reviewers.toml --agent claude-desktop --on-behalf-of you@example.com \
//!   -- npx @modelcontextprotocol/server-filesystem /srv/data
//!
//! APPROVALS_TOKEN=apr_... approvals mcp-proxy --server https://approvals.example.com/ \
//!   --server-name docs --upstream-url https://mcp.internal.example.com/mcp
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::embedded::{self, EmbeddedOptions};
use crate::remote::{self, RemoteOptions};
use crate::{DEFAULT_MAX_MESSAGE_BYTES, UpstreamTarget};

/// The largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// MCP approval gateway: standard input and output speak MCP to the client; the upstream
/// server is the command after `--`, or the streamable-HTTP endpoint given with
/// --upstream-url. Nothing is printed on standard output but MCP.
///
/// Two modes, exactly one: embedded (--policy, --tokens, --agent, --on-behalf-of, ...: its own
/// store, audit log and review server), or remote (--server URL: a client of `approvals
/// serve`, whose policy decides; the initiator is the agent token's principal, with the
/// on_behalf_of and model set in the server's token file).
#[derive(Debug, Parser)]
#[command(name = "approvals-mcp", version)]
struct Args {
    /// Remote mode: the approvals server (`approvals serve`) to ask, through its agent API.
    /// The agent token comes from APPROVALS_TOKEN or --token-file, never the command line.
    #[arg(long, env = "APPROVALS_SERVER")]
    server: Option<url::Url>,
    /// Remote mode: a file holding the agent token (instead of APPROVALS_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The upstream server's name in action kinds: mcp.<NAME>.<tool>.
    #[arg(long, env = "APPROVALS_MCP_SERVER_NAME")]
    server_name: String,
    /// Take each action's resource from this tool argument (for example `path`); calls
    /// without it target the server's name.
    #[arg(long, env = "APPROVALS_MCP_RESOURCE_ARG")]
    resource_arg: Option<String>,
    /// Embedded mode: policy file (TOML or JSON rules).
    #[arg(long, env = "APPROVALS_POLICY")]
    policy: Option<PathBuf>,
    /// Embedded mode: store URL (SQLite) [default: sqlite://approvals-mcp.db].
    #[arg(long, env = "APPROVALS_DB")]
    db: Option<String>,
    /// Embedded mode: reviewers' token file (SHA-256 hashes and principals; `approvals token
    /// new`).
    #[arg(long, env = "APPROVALS_TOKENS")]
    tokens: Option<PathBuf>,
    /// Audit log signer key file (`approvals audit keygen`); a new key for this run otherwise.
    #[arg(long, env = "APPROVALS_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
    /// Embedded mode: where the review server (API and console) listens [default:
    /// 127.0.0.1:8480].
    #[arg(long, env = "APPROVALS_MCP_LISTEN")]
    listen: Option<String>,
    /// The review server's public URL, when reviewers reach it by another address.
    #[arg(long, env = "APPROVALS_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// Embedded mode: the agent whose tool calls these are (the requests' initiator).
    #[arg(long, env = "APPROVALS_MCP_AGENT")]
    agent: Option<String>,
    /// The agent's model.
    #[arg(long, env = "APPROVALS_MCP_MODEL")]
    model: Option<String>,
    /// Embedded mode: the person the agent acts for (can never approve its requests).
    #[arg(long, env = "APPROVALS_MCP_ON_BEHALF_OF")]
    on_behalf_of: Option<String>,
    /// A session reference recorded with each request.
    #[arg(long, env = "APPROVALS_MCP_SESSION")]
    session: Option<String>,
    /// Largest MCP message accepted from the client or the upstream server, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Seconds between progress notifications while a call waits for approval.
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
    /// A streamable-HTTP upstream MCP server (for example http://127.0.0.1:3001/mcp) instead
    /// of a command. A bearer token for it comes from APPROVALS_MCP_UPSTREAM_TOKEN.
    #[arg(long, env = "APPROVALS_MCP_UPSTREAM_URL", value_name = "URL")]
    upstream_url: Option<url::Url>,
    /// The upstream MCP server's command and arguments (unless --upstream-url).
    #[arg(last = true, num_args = 1..)]
    upstream: Vec<String>,
}

/// The flags given, by name, among `flags`.
fn given(flags: &[(&'static str, bool)]) -> Vec<&'static str> {
    flags
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect()
}

/// The agent token for remote mode: from `--token-file` or `APPROVALS_TOKEN`, exactly one.
fn agent_token(token_file: Option<&PathBuf>) -> Result<String, String> {
    let from_env = std::env::var("APPROVALS_TOKEN").ok();
    let token = match (token_file, from_env) {
        (Some(_), Some(_)) => {
            return Err(
                "give the agent token either in APPROVALS_TOKEN or with --token-file, not both"
                    .into(),
            );
        }
        (Some(path), None) => {
            let text = std::fs::File::open(path)
                .and_then(|file| {
                    let mut text = String::new();
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(file, MAX_TOKEN_FILE_BYTES),
                        &mut text,
                    )?;
                    Ok(text)
                })
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
            text.trim().to_owned()
        }
        (None, Some(token)) => token.trim().to_owned(),
        (None, None) => {
            return Err(
                "--server needs the agent token: set APPROVALS_TOKEN or give --token-file FILE"
                    .into(),
            );
        }
    };
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err("the agent token is empty or holds whitespace".into());
    }
    Ok(token)
}

/// Parses `args` (the first is the program's name, as in `std::env::args_os`) and runs the
/// gateway until the MCP client closes its side. `program` names the command in help and
/// errors (`approvals-mcp`, `approvals mcp-proxy`). Exit codes: 0 when the client closed the
/// session, 1 when the gateway failed, 2 for a usage error.
pub async fn run(
    program: &'static str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> ExitCode {
    let usage = |message: String| {
        eprintln!("{program}: {message}");
        ExitCode::from(2)
    };
    let matches = Args::command()
        .name(program)
        .bin_name(program.to_owned())
        .try_get_matches_from(args);
    let args = match matches.and_then(|m| Args::from_arg_matches(&m)) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let upstream = match upstream_target(args.upstream_url.clone(), &args.upstream) {
        Ok(target) => target,
        Err(message) => return usage(message),
    };
    if args.max_message_bytes < 1024 || args.progress_every == 0 {
        return usage(
            "--max-message-bytes must be at least 1024 and --progress-every at least 1".into(),
        );
    }
    let embedded_flags = given(&[
        ("--policy", args.policy.is_some()),
        ("--db", args.db.is_some()),
        ("--tokens", args.tokens.is_some()),
        ("--audit-key", args.audit_key.is_some()),
        ("--listen", args.listen.is_some()),
        ("--public-url", args.public_url.is_some()),
    ]);
    let initiator_flags = given(&[
        ("--agent", args.agent.is_some()),
        ("--model", args.model.is_some()),
        ("--on-behalf-of", args.on_behalf_of.is_some()),
    ]);
    let progress_every = Duration::from_secs(args.progress_every);

    let result = if let Some(server) = args.server {
        if !embedded_flags.is_empty() {
            return usage(format!(
                "--server asks a remote approvals server, whose policy, store, reviewers and audit log decide; {} belong to embedded mode: drop them, or drop --server",
                embedded_flags.join(", ")
            ));
        }
        if !initiator_flags.is_empty() {
            return usage(format!(
                "with --server the initiator is the agent token's principal, with the on_behalf_of and model set in the server's token file; {} do not apply",
                initiator_flags.join(", ")
            ));
        }
        let token = match agent_token(args.token_file.as_ref()) {
            Ok(token) => token,
            Err(message) => return usage(message),
        };
        remote::run(RemoteOptions {
            upstream,
            server_name: args.server_name,
            resource_arg: args.resource_arg,
            server,
            token,
            session: args.session,
            max_message_bytes: args.max_message_bytes,
            progress_every,
        })
        .await
        .map_err(|e| e.to_string())
    } else {
        if args.token_file.is_some() {
            return usage("--token-file is for remote mode: give --server URL too".into());
        }
        let (Some(policy), Some(tokens), Some(agent), Some(on_behalf_of)) =
            (args.policy, args.tokens, args.agent, args.on_behalf_of)
        else {
            return usage(
                "give either --server URL (remote mode), or --policy FILE --tokens FILE --agent ID --on-behalf-of PERSON (embedded mode)".into(),
            );
        };
        embedded::run(EmbeddedOptions {
            upstream,
            server_name: args.server_name,
            resource_arg: args.resource_arg,
            policy,
            db: args
                .db
                .unwrap_or_else(|| "sqlite://approvals-mcp.db".to_owned()),
            tokens,
            audit_key: args.audit_key,
            listen: args.listen.unwrap_or_else(|| "127.0.0.1:8480".to_owned()),
            public_url: args.public_url,
            agent,
            model: args.model,
            on_behalf_of,
            session: args.session,
            max_message_bytes: args.max_message_bytes,
            progress_every,
        })
        .await
        .map_err(|e| e.to_string())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The upstream server: the command after `--`, or `--upstream-url` (with its bearer token
/// from `APPROVALS_MCP_UPSTREAM_TOKEN`), exactly one.
fn upstream_target(url: Option<url::Url>, command: &[String]) -> Result<UpstreamTarget, String> {
    let bearer = std::env::var("APPROVALS_MCP_UPSTREAM_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    match (url, command.split_first()) {
        (Some(_), Some(_)) => Err(
            "give the upstream server either as a command after -- or with --upstream-url, not both"
                .into(),
        ),
        (None, None) => Err(
            "give the upstream server: its command after -- (a stdio server), or --upstream-url URL (a streamable-HTTP server)"
                .into(),
        ),
        (Some(url), None) => {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("--upstream-url must be http:// or https://, not {url}"));
            }
            Ok(UpstreamTarget::Http { url, bearer })
        }
        (None, Some((program, args))) => {
            if bearer.is_some() {
                return Err(
                    "APPROVALS_MCP_UPSTREAM_TOKEN is for an --upstream-url server; unset it for a command"
                        .into(),
                );
            }
            Ok(UpstreamTarget::Command {
                program: program.clone(),
                args: args.to_vec(),
            })
        }
    }
}
