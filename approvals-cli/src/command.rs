//! The `approvals` command-line tool: `serve`, `pending`, `show`, `approve`, `deny`,
//! `cancel`, `token`, and the wiring of `exec` (in [`crate::exec`]).
//!
//! Every command except `serve` and `token` is an API call, made either over HTTP to a
//! server (`--server`) or in-process on a store (`--store`, with the same token file the
//! server uses), so both paths run the same authentication and the same `Gate::decide`
//! checks.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, AuditSink, Decision, Digest, FanoutSink, Gate, Initiator, JsonLinesSink,
    MemoryStore, Principal, RequestContext, RequestId, Requirement, Risk, StaticPolicy, Store,
};
use approvals_store_sql::audit::{LogConfig, Signer};
use clap::{Args, Parser, Subcommand};
use url::Url;

use approvals_http::auth::{TokenEntry, TokenHash, Tokens, generate_token};
use approvals_http::client::{ApiClient, ClientError};
use approvals_http::server::ReviewServer;
use approvals_http::view::RequestView;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The server or gate refused: not allowed, self-approval, already decided, reason
    /// required, digest changed.
    pub const REFUSED: u8 = 1;
    /// Bad command line or malformed input.
    pub const USAGE: u8 = 2;
    /// No such request.
    pub const NOT_FOUND: u8 = 3;
    /// The server or store is unreachable or failed; nothing changed. Retry later.
    pub const UNAVAILABLE: u8 = 4;
    /// No token, or the token is not valid.
    pub const UNAUTHENTICATED: u8 = 5;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  refused: not allowed, self-approval, already decided, reason required, action changed
  2  usage error: bad arguments or malformed input
  3  no such request
  4  unavailable: server or store unreachable or failing; nothing changed, retry later
  5  unauthenticated: APPROVALS_TOKEN missing or not valid

Environment:
  APPROVALS_TOKEN    your API token (never pass tokens as arguments: they end up in shell history)
  APPROVALS_SERVER   server URL, same as --server
  APPROVALS_STORE    store URL, same as --store
  APPROVALS_TOKENS   token file, same as --tokens
  APPROVALS_AUDIT    extra JSON-lines audit log, same as --audit
  APPROVALS_AUDIT_KEY  signer key file for the SQL store's audit log, same as --audit-key";

const ABOUT_LONG: &str = "\
Review and decide action-level approval requests, and serve the review API and console.

Against a server (--server URL, or APPROVALS_SERVER), commands call its HTTP API with the token in APPROVALS_TOKEN.

Against a store (--store URL, the default), commands run the same API in-process on that store: you still authenticate with APPROVALS_TOKEN against the token file (--tokens), and decisions go through the same Gate checks (human reviewer, not the requester, in an allowed group, digest unchanged) and are written to the audit log (--audit). Anyone who can write the store file can bypass any tool, so protect it; prefer --server for everyday reviews.";

/// The `approvals` command line.
#[derive(Debug, Parser)]
#[command(
    name = "approvals",
    version,
    about = "Review and decide action-level approval requests; serve the review API and console.",
    long_about = ABOUT_LONG,
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
    /// Approvals server URL, for example http://127.0.0.1:8480. Takes precedence over --store.
    #[arg(long, env = "APPROVALS_SERVER", global = true, value_name = "URL")]
    pub(crate) server: Option<Url>,
    /// Store URL: sqlite://FILE, postgres://..., or memory: (serve only).
    #[arg(
        long,
        env = "APPROVALS_STORE",
        global = true,
        default_value = "sqlite://approvals.db",
        value_name = "URL"
    )]
    pub(crate) store: String,
    /// Token file (TOML, SHA-256 hashes of tokens and their principals); see `approvals token new`.
    #[arg(long, env = "APPROVALS_TOKENS", global = true, value_name = "FILE")]
    pub(crate) tokens: Option<PathBuf>,
    /// Also write audit events as JSON lines to FILE (store mode and serve). SQL stores always
    /// record them in their own hash-chained audit table; a memory: store writes
    /// approvals-audit.jsonl unless this is given.
    #[arg(long, env = "APPROVALS_AUDIT", global = true, value_name = "FILE")]
    pub(crate) audit: Option<PathBuf>,
    /// Sign the SQL store's audit log with this signer key file (`approvals audit keygen`):
    /// checkpoints every 1000 entries and every 10 seconds, named after the key, checked with
    /// `approvals audit verify --db`. Without it the log is hash-chained but unsigned.
    #[arg(long, env = "APPROVALS_AUDIT_KEY", global = true, value_name = "FILE")]
    pub(crate) audit_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the JSON API, the OpenAPI document and the review console on a store.
    Serve(ServeArgs),
    /// List requests waiting for review (or other states with --state).
    Pending(PendingArgs),
    /// Show one request: exact parameters, digest, initiator, context, reviews.
    Show(ShowArgs),
    /// Approve a request (bound to the digest you reviewed).
    Approve(DecideArgs),
    /// Deny a request.
    Deny(DecideArgs),
    /// Withdraw a pending request (its initiator, the human it acts for, or an admin).
    Cancel(CancelArgs),
    /// Standing grants: list the ones in force, propose one, revoke one.
    #[command(subcommand)]
    Standing(StandingCommand),
    /// Run a command (a CI deploy step) once humans approve exactly that command line; exits
    /// with its exit code, or 170-176 when it did not run.
    #[command(after_help = crate::exec::EXEC_HELP, after_long_help = crate::exec::EXEC_HELP)]
    Exec(Box<crate::exec::ExecArgs>),
    /// Make and hash API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Tamper-evident audit logs: keygen, verify, prove, check-proof, consistency, report,
    /// export (JSON lines, OCSF, CEF), grant verify. `approvals audit help` lists them.
    Audit(AuditArgs),
    /// MCP approval gateway between an MCP client and an upstream MCP server (a command or a
    /// streamable-HTTP URL). Give it first: `approvals mcp-proxy --help` lists its own flags.
    McpProxy(McpProxyArgs),
}

#[derive(Debug, Args)]
struct McpProxyArgs {
    /// The gateway's arguments (see `approvals mcp-proxy --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// The audit subcommand and its arguments, handled by approvals-audit.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Run the whole service from this configuration file (policy, store, audit key, tokens,
    /// Slack, Teams and webhook channels, /healthz); every key can also be set with an
    /// `APPROVALS_...` environment variable. See approvals-cli/examples/approvals.toml.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "public_url", "admin_groups", "demo", "oidc_issuer"])]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8480", value_name = "ADDR")]
    listen: String,
    /// The URL reviewers use (for example https://approvals.example.com behind a TLS proxy);
    /// fixes the origin of console forms and makes the session cookie Secure over https.
    #[arg(long, value_name = "URL")]
    public_url: Option<Url>,
    /// Group whose members may cancel any request (repeatable).
    #[arg(long = "admin-group", value_name = "GROUP")]
    admin_groups: Vec<String>,
    /// Seed a few sample pending requests (and, without --tokens, print a reviewer token) to
    /// try the console.
    #[arg(long)]
    demo: bool,
    /// Sign console reviewers in with this OpenID Connect provider (its issuer URL; needs
    /// --public-url and --oidc-client-id; see docs/oidc.md). API tokens still work.
    #[arg(long, value_name = "URL", requires_all = ["public_url", "oidc_client_id"])]
    oidc_issuer: Option<String>,
    /// The console's client id at the OpenID Connect provider.
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// The environment variable holding the client secret (none: a public client).
    #[arg(long, value_name = "VARIABLE", requires = "oidc_issuer")]
    oidc_client_secret_env: Option<String>,
    /// The ID token claim holding the reviewer's groups (an array of strings), such as
    /// `groups`; without it reviewers have no groups.
    #[arg(long, value_name = "CLAIM", requires = "oidc_issuer")]
    oidc_groups_claim: Option<String>,
}

#[derive(Debug, Args)]
struct PendingArgs {
    /// Only this action kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only this environment.
    #[arg(long)]
    environment: Option<String>,
    /// Only requests from this initiator id.
    #[arg(long)]
    initiator: Option<String>,
    /// States to list: pending (default), all, or a comma-separated list.
    #[arg(long, default_value = "pending")]
    state: String,
    /// At most this many (a page).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start after this point: the cursor a previous page printed (its `next_cursor`).
    #[arg(long)]
    cursor: Option<String>,
    /// Print JSON (the API's RequestList) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// Request id.
    id: String,
    /// Print JSON (the API's Request) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DecideArgs {
    /// Request id.
    id: String,
    /// Why (recorded in the audit trail; some policies require it).
    #[arg(long, short)]
    reason: Option<String>,
    /// The digest you reviewed (from `approvals show`); refused if the action changed. When
    /// omitted, the request is fetched, printed, and the decision bound to its digest.
    #[arg(long, value_name = "sha256:HEX")]
    digest: Option<String>,
    /// Approve only: change a parameter the rule lets reviewers edit before approving
    /// (`--set /rows=500`, or `--set rows=500`; the value read as the parameter's own type).
    /// Repeat for several. The policy is asked again about the edited action.
    #[arg(long = "set", value_name = "PARAM=VALUE")]
    set: Vec<String>,
    /// Print the resulting request as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum StandingCommand {
    /// List the standing grants in force, with the uses and time they have left.
    List {
        /// Print JSON (the API's StandingList) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Propose a standing grant: let an agent run one kind of action on a resource pattern
    /// for a while, without asking each time. The rule's reviewers approve it like any request
    /// (`approvals approve ID`); only a rule with `standing_grant_max` allows one.
    Propose(ProposeArgs),
    /// Revoke a standing grant (a deny: it covers no further action).
    Revoke(CancelArgs),
}

#[derive(Debug, Args)]
struct ProposeArgs {
    /// Take the kind and the initiator from this request (and, without --resource, its
    /// resource).
    #[arg(long, value_name = "ID", conflicts_with_all = ["kind", "agent", "service"])]
    from: Option<String>,
    /// The action kind (exactly).
    #[arg(long)]
    kind: Option<String>,
    /// The resources, as a glob (`svc://prod/*`).
    #[arg(long)]
    resource: Option<String>,
    /// The agent it is for.
    #[arg(long, conflicts_with = "service")]
    agent: Option<String>,
    /// The service it is for.
    #[arg(long)]
    service: Option<String>,
    /// The human the agent acts for, if it acts for one (it must match, or nothing is covered).
    #[arg(long, value_name = "HUMAN")]
    on_behalf_of: Option<String>,
    /// How long it lasts once approved (`30m`, `8h`).
    #[arg(long = "for", value_name = "DURATION")]
    duration: String,
    /// How many actions it may approve.
    #[arg(long)]
    uses: u32,
    /// Why, for the reviewers.
    #[arg(long, short)]
    justification: String,
    /// The environment the covered actions run in, when the deciding rule names one
    /// (default: the --from request's).
    #[arg(long)]
    environment: Option<String>,
    /// Print the resulting request as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CancelArgs {
    /// Request id.
    id: String,
    /// Why.
    #[arg(long, short)]
    reason: Option<String>,
    /// Print the resulting request as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a new random token; prints the token once and the entry for the token file.
    New(NewTokenArgs),
    /// Print the SHA-256 of a token read from standard input.
    Hash,
}

#[derive(Debug, Args)]
struct NewTokenArgs {
    /// A human reviewer with this id (for example an email).
    #[arg(long, group = "who", value_name = "ID")]
    human: Option<String>,
    /// An AI agent with this id.
    #[arg(long, group = "who", value_name = "ID")]
    agent: Option<String>,
    /// A service with this id.
    #[arg(long, group = "who", value_name = "ID")]
    service: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
}

/// A failure with its exit code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Problem(p) => match p.status {
                401 => exit::UNAUTHENTICATED,
                404 => exit::NOT_FOUND,
                400 | 405 | 413 | 415 => exit::USAGE,
                403 | 409 | 422 => exit::REFUSED,
                _ => exit::UNAVAILABLE,
            },
            // Unreachable, an answer that made no sense, and any kind added later.
            _ => exit::UNAVAILABLE,
        };
        Failure::new(code, e.to_string())
    }
}

/// Parses the process arguments, runs the command, and returns the exit code.
pub fn main() -> ExitCode {
    // `approvals mcp-proxy` has flags of its own, some spelled like the global ones with
    // another meaning (--server is the approvals server it asks, --tokens the reviewers of its
    // embedded console): it takes every argument after its name.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "mcp-proxy") {
        return match runtime() {
            Ok(rt) => rt.block_on(approvals_mcp::cli::run(
                "approvals mcp-proxy",
                argv.into_iter().skip(1),
            )),
            Err(e) => {
                eprintln!("approvals mcp-proxy: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `approvals exec` keeps 2 for the command it runs: its usage errors have their own.
            let code = if e.use_stderr() && crate::exec::invoked(std::env::args_os()) {
                crate::exec::exit::USAGE
            } else {
                u8::try_from(e.exit_code()).unwrap_or(exit::USAGE)
            };
            return ExitCode::from(code);
        }
    };
    if let Command::Audit(audit) = cli.command {
        // Same exit codes: 0 verified, 1 verification failed or token refused, 2 usage or I/O.
        return crate::audit::run_named("approvals audit", audit.args);
    }
    if let Command::McpProxy(_) = cli.command {
        eprintln!(
            "approvals: put mcp-proxy first (`approvals mcp-proxy --help`): its flags are its own, and the global flags before it do not apply"
        );
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("approvals: cannot start the async runtime: {e}");
            return ExitCode::from(match cli.command {
                Command::Exec(_) => crate::exec::exit::UNAVAILABLE,
                _ => exit::UNAVAILABLE,
            });
        }
    };
    if let Command::Exec(args) = cli.command {
        return runtime.block_on(crate::exec::run(cli.target, *args));
    }
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            eprintln!("approvals: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The multi-thread runtime every async command runs on (two workers).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve(&cli.target, args).await,
        Command::Token(cmd) => token(cmd),
        Command::Pending(args) => pending(&client(&cli.target).await?, args).await,
        Command::Show(args) => show(&client(&cli.target).await?, args).await,
        Command::Approve(args) => decide(&client(&cli.target).await?, args, true).await,
        Command::Deny(args) => decide(&client(&cli.target).await?, args, false).await,
        Command::Cancel(args) => cancel(&client(&cli.target).await?, args).await,
        Command::Standing(cmd) => standing(&client(&cli.target).await?, cmd).await,
        Command::Audit(_) | Command::Exec(_) | Command::McpProxy(_) => Err(Failure::new(
            exit::USAGE,
            "audit, exec and mcp-proxy commands are dispatched by main".to_owned(),
        )),
    }
}

// ------------------------------------------------------------------------------------------
// Targets.

fn api_token() -> Result<Option<String>, Failure> {
    match std::env::var("APPROVALS_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::new(
            exit::USAGE,
            "APPROVALS_TOKEN is not valid text",
        )),
    }
}

async fn client(target: &Target) -> Result<ApiClient, Failure> {
    let token = api_token()?;
    if token.is_none() {
        return Err(Failure::new(
            exit::UNAUTHENTICATED,
            "set APPROVALS_TOKEN to your API token (ask an administrator; `approvals token new` makes one)",
        ));
    }
    if let Some(server) = &target.server {
        return ApiClient::http(server.clone(), token).map_err(Failure::from);
    }
    let store = open_store(target).await?;
    if store.memory {
        return Err(Failure::new(
            exit::USAGE,
            "a memory: store lives only inside `approvals serve`; use --server URL to reach it",
        ));
    }
    let server = local_server(target, store, &[], None, false, None)?;
    Ok(ApiClient::in_process(server, token))
}

pub(crate) struct OpenedStore {
    pub(crate) store: Arc<dyn Store>,
    /// The store's own hash-chained audit table, for SQL stores.
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) memory: bool,
}

/// Opens the store URL: `sqlite://FILE` (created if missing), `postgres://...` (with the
/// `postgres` feature), or `memory:`; a SQL store's audit log is signed with `--audit-key`.
pub(crate) async fn open_store(target: &Target) -> Result<OpenedStore, Failure> {
    let url = target.store.trim();
    if url == "memory:" || url == "memory://" {
        if target.audit_key.is_some() {
            return Err(Failure::new(
                exit::USAGE,
                "--audit-key signs a SQL store's audit log; a memory: store has none (its events go to --audit FILE)",
            ));
        }
        return Ok(OpenedStore {
            store: Arc::new(MemoryStore::new()),
            audit: None,
            memory: true,
        });
    }
    if url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")
    {
        let store = approvals_store_sql::SqlStore::connect(url)
            .await
            .map_err(|e| {
                Failure::new(
                    exit::UNAVAILABLE,
                    format!("cannot open the store {}: {e}", redact_url(url)),
                )
            })?;
        let audit = match &target.audit_key {
            Some(path) => {
                let signer = Signer::from_file(path).map_err(|e| {
                    Failure::new(
                        exit::USAGE,
                        format!("cannot read the audit signer key {}: {e}", path.display()),
                    )
                })?;
                store.signed_audit_sink(LogConfig::new(signer.name()), signer)
            }
            None => store.audit_sink(),
        };
        return Ok(OpenedStore {
            audit: Some(Arc::new(audit)),
            store: Arc::new(store),
            memory: false,
        });
    }
    Err(Failure::new(
        exit::USAGE,
        format!(
            "unknown store URL {:?}; use sqlite://FILE, postgres://..., or memory:",
            redact_url(url)
        ),
    ))
}

/// The URL without its password, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Where a gate on `store` records audit events: SQL stores keep their own hash-chained
/// audit table (where agents' gates on the same store write too); --audit adds a JSON-lines
/// copy. A memory store writes the file only.
pub(crate) fn audit_sinks(target: &Target, store: &OpenedStore) -> Result<FanoutSink, Failure> {
    let file = match (&target.audit, store.audit.is_some()) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => Some(PathBuf::from("approvals-audit.jsonl")),
        (None, true) => None,
    };
    let mut sinks = FanoutSink::new();
    if let Some(sql) = &store.audit {
        sinks = sinks.with_shared(sql.clone());
    }
    if let Some(path) = file {
        let sink = JsonLinesSink::file(&path, true).map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot open the audit log {}: {e}", path.display()),
            )
        })?;
        sinks = sinks.with(sink);
    }
    Ok(sinks)
}

/// Reads the OpenID Connect provider's discovery document for console sign-in; `at` says
/// where the settings came from.
pub(crate) async fn discover_oidc(
    config: approvals_http::OidcConfig,
    at: &str,
) -> Result<approvals_http::OidcClient, Failure> {
    approvals_http::OidcClient::discover(config)
        .await
        .map_err(|e| {
            let code = if e.is_retryable() {
                exit::UNAVAILABLE
            } else {
                exit::USAGE
            };
            Failure::new(code, format!("{at}: oidc: {e}"))
        })
}

/// The console's OpenID Connect sign-in from the `serve` flags, when `--oidc-issuer` is given.
async fn oidc_from_flags(args: &ServeArgs) -> Result<Option<approvals_http::OidcClient>, Failure> {
    let (Some(issuer), Some(client_id), Some(public_url)) =
        (&args.oidc_issuer, &args.oidc_client_id, &args.public_url)
    else {
        return Ok(None);
    };
    let mut config = approvals_http::OidcConfig::new(issuer, client_id, public_url);
    if let Some(name) = &args.oidc_client_secret_env {
        match std::env::var(name) {
            Ok(secret) if !secret.trim().is_empty() => {
                config = config.client_secret(secret.trim());
            }
            _ => {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "--oidc-client-secret-env: the environment variable {name} is not set or empty"
                    ),
                ));
            }
        }
    }
    if let Some(claim) = &args.oidc_groups_claim {
        config = config.groups_claim(claim);
    }
    discover_oidc(config, "--oidc-issuer").await.map(Some)
}

/// A gate and review server on `store`. The gate never submits actions (agents do, in
/// their own processes), so its policy is deny-all, except in demo mode; reviews are checked
/// against the requirement stored with each request.
fn local_server(
    target: &Target,
    store: OpenedStore,
    admin_groups: &[String],
    public_url: Option<Url>,
    demo: bool,
    oidc: Option<approvals_http::OidcClient>,
) -> Result<ReviewServer, Failure> {
    let tokens = match &target.tokens {
        Some(path) => Tokens::from_file(path).map_err(|e| Failure::new(exit::USAGE, e.0))?,
        None if demo => Tokens::new(),
        None => {
            return Err(Failure::new(
                exit::USAGE,
                "give the token file with --tokens FILE (or APPROVALS_TOKENS); `approvals token new` prints entries for it",
            ));
        }
    };
    let sinks = audit_sinks(target, &store)?;
    let store = store.store;
    let policy = if demo {
        StaticPolicy::require(
            Requirement::groups(["security"]).timeout(Duration::from_secs(24 * 3600)),
        )
    } else {
        StaticPolicy::new(Decision::Deny {
            rule: "review-only".into(),
            reason: "this process only reviews; actions are submitted by agents' own gates".into(),
        })
    };
    let gate = Gate::builder()
        .policy(policy)
        .store_shared(store)
        .audit(sinks)
        .build()
        .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let mut builder = ReviewServer::builder(gate)
        .tokens(tokens)
        .admin_groups(admin_groups.to_vec());
    if let Some(url) = public_url {
        builder = builder.public_url(url);
    }
    if let Some(oidc) = oidc {
        builder = builder.oidc(oidc);
    }
    Ok(builder.build())
}

// ------------------------------------------------------------------------------------------
// Commands.

async fn serve(target: &Target, args: ServeArgs) -> Result<(), Failure> {
    if let Some(path) = &args.config {
        return crate::serve::run(path).await;
    }
    // The gate's metrics (approvals_core::observe), recorded from the start (the demo's
    // requests included) and served at /metrics.
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            eprintln!("warning: metrics are not served: {e}");
            None
        }
    };
    let oidc = oidc_from_flags(&args).await?;
    let opened = open_store(target).await?;
    let mut server = local_server(
        target,
        opened,
        &args.admin_groups,
        args.public_url.clone(),
        args.demo,
        oidc.clone(),
    )?;
    if args.demo {
        if target.tokens.is_none() {
            let token = generate_token();
            let reviewer = Principal::human("reviewer@example.com")
                .with_name("Demo Reviewer")
                .with_groups(["security"]);
            let tokens = Tokens::new().with_token(&token, reviewer);
            let mut builder = ReviewServer::builder(server.gate().clone())
                .tokens(tokens)
                .admin_groups(args.admin_groups.clone());
            if let Some(url) = args.public_url.clone() {
                builder = builder.public_url(url);
            }
            if let Some(oidc) = oidc {
                builder = builder.oidc(oidc);
            }
            server = builder.build();
            println!("Demo reviewer token (group security): {token}");
        }
        seed_demo(server.gate()).await?;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot listen on {}: {e}", args.listen),
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    let base = args
        .public_url
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_else(|| format!("http://{addr}/"));
    println!("Approvals review console: {base}console/");
    println!("API: {base}v1/requests   OpenAPI: {base}openapi.json");
    let _ = std::io::stdout().flush();
    if let Some(handle) = metrics {
        server.serve_metrics(std::sync::Arc::new(move || handle.render()));
        println!("Metrics (Prometheus): {base}metrics");
    }
    let sweeper = server.gate().spawn_sweeper(Duration::from_secs(5));
    let result = approvals_http::server::serve(listener, server, shutdown_signal()).await;
    sweeper.abort();
    result.map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn seed_demo(gate: &Gate) -> Result<(), Failure> {
    let agent = Initiator::agent("billing-agent")
        .on_behalf_of(Principal::human("dana@example.com").with_name("Dana Whitfield"))
        .model("claude-opus-4")
        .session("run-7f3a");
    let requests = [
        ActionRequest::new("data.export", "db://prod/customers")
            .params(serde_json::json!({"rows": 5000, "columns": ["email", "plan", "mrr"], "format": "csv", "destination": "s3://finance-exports/q3/"}))
            .summary("Export 5,000 customer rows to the finance bucket")
            .justification("Quarterly churn analysis requested in FIN-2291.")
            .initiator(agent.clone())
            .context(RequestContext {
                environment: Some("production".into()),
                ticket: Some("FIN-2291".into()),
                risk: Some(Risk::High),
                impact: Some("Customer emails leave the production database.".into()),
                ..Default::default()
            }),
        ActionRequest::new("iam.role.grant", "aws://iam/role/prod-admin")
            .params(serde_json::json!({"principal": "ci-deployer<script>alert(1)</script>", "note": "<img src=x onerror=alert(2)>", "ttl": "\u{202e}h1"}))
            .summary("Grant prod-admin to the CI deployer for one hour")
            .initiator(Initiator::service("deploy-pipeline"))
            .context(RequestContext {
                environment: Some("production".into()),
                risk: Some(Risk::Critical),
                ..Default::default()
            }),
        ActionRequest::new("secrets.rotate", "kms://staging/payments-key")
            .params(serde_json::json!({"key": "payments-key", "grace_period_hours": 24}))
            .initiator(agent)
            .environment("staging"),
    ];
    // Each demo request comes from its own initiator: the seeding plays the part of the agent
    // API, which submits for the caller its token authenticates.
    for request in &requests {
        let caller = request
            .initiator
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Initiator::agent("demo-agent"));
        gate.submit_as(&caller, request)
            .await
            .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("demo seeding failed: {e}")))?;
    }
    Ok(())
}

fn token(cmd: TokenCommand) -> Result<(), Failure> {
    match cmd {
        TokenCommand::New(args) => {
            let mut principal = match (args.human, args.agent, args.service) {
                (Some(id), None, None) => Principal::human(id),
                (None, Some(id), None) => Principal::agent(id),
                (None, None, Some(id)) => Principal::service(id),
                _ => {
                    return Err(Failure::new(
                        exit::USAGE,
                        "say who the token is for: --human ID, --agent ID or --service ID",
                    ));
                }
            };
            if let Some(name) = args.name {
                principal = principal.with_name(name);
            }
            principal = principal.with_groups(args.groups.into_iter().filter(|g| !g.is_empty()));
            // The token file refuses a principal that cannot be compared safely: so does this.
            let principal = principal.normalized().map_err(|e| {
                Failure::new(
                    exit::USAGE,
                    format!("the token's principal is refused: {e}"),
                )
            })?;
            let token = generate_token();
            let entry = TokenEntry {
                sha256: TokenHash::of(&token).to_hex(),
                principal,
            };
            #[derive(serde::Serialize)]
            struct One<'a> {
                token: [&'a TokenEntry; 1],
            }
            let toml = toml::to_string(&One { token: [&entry] })
                .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
            eprintln!(
                "Token (shown once; give it to its owner, who sets APPROVALS_TOKEN):\n{token}\n\nAppend to the token file:"
            );
            println!("{toml}");
            Ok(())
        }
        TokenCommand::Hash => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
            let token = line.trim();
            if token.is_empty() {
                return Err(Failure::new(exit::USAGE, "no token on standard input"));
            }
            println!("{}", TokenHash::of(token).to_hex());
            Ok(())
        }
    }
}

async fn pending(client: &ApiClient, args: PendingArgs) -> Result<(), Failure> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("state", &args.state);
    query.append_pair("limit", &args.limit.to_string());
    for (k, v) in [
        ("kind", &args.kind),
        ("environment", &args.environment),
        ("initiator", &args.initiator),
        ("cursor", &args.cursor),
    ] {
        if let Some(v) = v {
            query.append_pair(k, v);
        }
    }
    let list = client.list(&query.finish()).await?;
    if args.json {
        return print_json(&list);
    }
    if list.requests.is_empty() {
        println!("No matching requests.");
        return Ok(());
    }
    println!(
        "{:<36}  {:<9}  {:<24}  {:<32}  {:<11}  {:<24}  {:<5}",
        "ID", "STATE", "KIND", "RESOURCE", "ENV", "INITIATOR", "APPR"
    );
    for r in &list.requests {
        println!(
            "{:<36}  {:<9}  {:<24}  {:<32}  {:<11}  {:<24}  {}/{}",
            r.id,
            r.state,
            term(&approvals_http::html::truncate(&r.kind, 24)),
            term(&approvals_http::html::truncate(&r.resource, 32)),
            term(&approvals_http::html::truncate(
                r.context.environment.as_deref().unwrap_or("-"),
                11
            )),
            term(&approvals_http::html::truncate(
                r.initiator
                    .as_ref()
                    .map_or("-", |i| i.principal.id.as_str()),
                24
            )),
            r.approvals,
            r.requirement.quorum,
        );
    }
    if let Some(cursor) = &list.next_cursor {
        println!("More requests match: add --cursor {cursor} for the next page.");
    }
    Ok(())
}

async fn show(client: &ApiClient, args: ShowArgs) -> Result<(), Failure> {
    let id = parse_id(&args.id)?;
    let view = client.get(id).await?;
    if args.json {
        return print_json(&view);
    }
    print_view(&view);
    Ok(())
}

async fn decide(client: &ApiClient, args: DecideArgs, approve: bool) -> Result<(), Failure> {
    let id = parse_id(&args.id)?;
    if !args.set.is_empty() {
        if !approve {
            return Err(Failure::new(
                exit::USAGE,
                "--set edits go only with approve; deny takes the action as asked",
            ));
        }
        return approve_edited(client, args, id).await;
    }
    let digest = match &args.digest {
        Some(d) => Some(Digest::parse(d).map_err(|_| {
            Failure::new(
                exit::USAGE,
                "--digest must look like sha256:<64 hex digits>",
            )
        })?),
        None => {
            let view = client.get(id).await?;
            eprintln!(
                "{} this request (digest {}):",
                if approve { "Approving" } else { "Denying" },
                view.digest
            );
            print_view_to_stderr(&view);
            Some(view.digest)
        }
    };
    let view = client
        .decide(id, approve, args.reason.as_deref(), digest)
        .await?;
    if args.json {
        return print_json(&view);
    }
    println!(
        "{} request {}: it is now {} ({} of {} approvals)",
        if approve { "Approved" } else { "Denied" },
        view.id,
        view.state,
        view.approvals,
        view.requirement.quorum
    );
    Ok(())
}

/// `approve --set PARAM=VALUE ...`: the request's parameters with those changed (read by
/// `edit::params_from_fields`, as every channel's form is), approved bound to the digest
/// reviewed.
async fn approve_edited(
    client: &ApiClient,
    args: DecideArgs,
    id: RequestId,
) -> Result<(), Failure> {
    let view = client.get(id).await?;
    let digest = match &args.digest {
        Some(d) => Digest::parse(d).map_err(|_| {
            Failure::new(
                exit::USAGE,
                "--digest must look like sha256:<64 hex digits>",
            )
        })?,
        None => {
            eprintln!("Editing this request (digest {}):", view.digest);
            print_view_to_stderr(&view);
            view.digest
        }
    };
    let mut fields = Vec::with_capacity(args.set.len());
    for set in &args.set {
        let (name, value) = set.split_once('=').ok_or_else(|| {
            Failure::new(exit::USAGE, format!("--set {set:?}: write PARAM=VALUE"))
        })?;
        // A dotted path or a JSON pointer, as in the policy's `editable`.
        let pointer = approvals_core::edit::pointer(name).ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                format!("--set {set:?}: {name:?} is not a parameter path"),
            )
        })?;
        fields.push((pointer, value.to_owned()));
    }
    let params = approvals_core::edit::params_from_fields(
        &view.params,
        &view.requirement.editable,
        fields.iter().map(|(p, v)| (p.as_str(), v.as_str())),
    )
    .map_err(|e| Failure::new(exit::USAGE, format!("the edit is refused: {e}")))?;
    let view = client
        .approve_edited(id, digest, params, args.reason.as_deref())
        .await?;
    if args.json {
        return print_json(&view);
    }
    println!(
        "Approved request {} as edited: it is now {} ({} of {} approvals), digest {}",
        view.id, view.state, view.approvals, view.requirement.quorum, view.digest
    );
    Ok(())
}

async fn cancel(client: &ApiClient, args: CancelArgs) -> Result<(), Failure> {
    let id = parse_id(&args.id)?;
    let view = client.cancel(id, args.reason.as_deref()).await?;
    if args.json {
        return print_json(&view);
    }
    println!("Cancelled request {}", view.id);
    Ok(())
}

async fn standing(client: &ApiClient, cmd: StandingCommand) -> Result<(), Failure> {
    match cmd {
        StandingCommand::List { json } => {
            let list = client.standing_grants().await?;
            if json {
                return print_json(&list);
            }
            if list.standing_grants.is_empty() {
                println!("No standing grant is in force.");
            }
            for view in &list.standing_grants {
                let Some(status) = &view.standing else {
                    continue;
                };
                let initiator = view
                    .initiator
                    .as_ref()
                    .map(|i| format!("{} {}", i.principal.kind, i.principal.id))
                    .unwrap_or_default();
                println!(
                    "{}  {} may run {} on {}: {} of {} uses left, until {}",
                    view.id,
                    term(&initiator),
                    term(&status.terms.kind),
                    term(&status.terms.resource),
                    status.uses_left,
                    status.terms.uses,
                    status
                        .expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                );
            }
            Ok(())
        }
        StandingCommand::Propose(args) => {
            let initiator = match (&args.agent, &args.service) {
                (Some(id), None) => Some(Initiator::agent(id.clone())),
                (None, Some(id)) => Some(Initiator::from_principal(Principal::service(id.clone()))),
                _ => None,
            }
            .map(|i| match &args.on_behalf_of {
                Some(human) => i.on_behalf_of(Principal::human(human.clone())),
                None => i,
            });
            let body = approvals_http::standing::ProposeBody {
                from_request: args.from.as_deref().map(parse_id).transpose()?,
                kind: args.kind,
                resource: args.resource,
                initiator,
                duration: args.duration,
                uses: args.uses,
                justification: args.justification,
                environment: args.environment,
            };
            let view = client.propose_standing(&body).await?;
            if args.json {
                return print_json(&view);
            }
            println!(
                "Proposed standing grant {}: it takes effect once approved (approvals approve {}).",
                view.id, view.id
            );
            Ok(())
        }
        StandingCommand::Revoke(args) => {
            let id = parse_id(&args.id)?;
            let view = client.revoke_standing(id, args.reason.as_deref()).await?;
            if args.json {
                return print_json(&view);
            }
            println!(
                "Revoked standing grant {}: it is now {}",
                view.id, view.state
            );
            Ok(())
        }
    }
}

fn parse_id(raw: &str) -> Result<RequestId, Failure> {
    RequestId::parse(raw.trim()).map_err(|_| {
        Failure::new(
            exit::USAGE,
            format!("{raw:?} is not a request id (ids are UUIDs; see `approvals pending`)"),
        )
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Untrusted text made safe for a terminal: control characters (escape sequences) and
/// invisible formatting characters shown in their visible form (`‹U+001B›`, see
/// [`approvals_core::text::neutralize`]); line feeds and tabs stay.
pub(crate) fn term(text: &str) -> String {
    approvals_core::text::neutralize(text).into_owned()
}

fn render_view(v: &RequestView) -> String {
    let mut s = String::new();
    let mut line = |k: &str, val: &str| s.push_str(&format!("{k:<14} {}\n", term(val)));
    line("Request", &v.id.to_string());
    line("State", v.state.as_str());
    line("Kind", &v.kind);
    line("Resource", &v.resource);
    if let Some(x) = &v.summary {
        line("Summary", x);
    }
    if let Some(i) = &v.initiator {
        line(
            "Initiator",
            &format!("{} {}", i.principal.kind, i.principal.id),
        );
        if let Some(h) = &i.on_behalf_of {
            line("On behalf of", &h.id);
        }
        if let Some(m) = &i.model {
            line("Model", m);
        }
    }
    if let Some(e) = &v.context.environment {
        line("Environment", e);
    }
    if let Some(t) = &v.context.ticket {
        line("Ticket", t);
    }
    if let Some(x) = &v.justification {
        line("Justification", x);
    }
    line("Digest", &v.digest.to_string());
    line(
        "Approvals",
        &format!(
            "{} of {} (groups: {}; users: {})",
            v.approvals,
            v.requirement.quorum,
            v.requirement.groups.join(", "),
            v.requirement.users.join(", ")
        ),
    );
    line("Created", &v.created_at.to_rfc3339());
    line("Expires", &v.expires_at.to_rfc3339());
    if !v.requirement.editable.is_empty() {
        line("Editable", &v.requirement.editable.join(", "));
    }
    if let Some(asked) = v.asked_digest {
        line("Asked digest", &asked.to_string());
    }
    for r in &v.reviews {
        if let Some(edit) = &r.edit {
            let changes: Vec<String> = edit.changes.iter().map(|c| c.line(200)).collect();
            line(
                "Edited",
                &format!(
                    "by {} (digest {} -> {}): {}",
                    r.reviewer.id,
                    edit.from,
                    edit.to,
                    changes.join("; ")
                ),
            );
        }
        line(
            "Review",
            &format!(
                "{} by {} via {} at {}{}",
                r.verdict,
                r.reviewer.id,
                r.channel,
                r.at.to_rfc3339(),
                r.reason
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(by) = v.decided_by() {
        line("Decided by", &by);
    }
    if let Some(status) = &v.standing {
        line(
            "Standing",
            &format!(
                "lets its initiator run {} on {} {} more time(s){}",
                status.terms.kind,
                status.terms.resource,
                status.uses_left,
                status
                    .expires_at
                    .map(|t| format!(", until {}", t.to_rfc3339()))
                    .unwrap_or_else(|| " once approved".into())
            ),
        );
    }
    match &v.plan {
        // Whole: this is where the chat surfaces' cut plans point.
        Some(plan) => {
            s.push_str(&format!(
                "Plan ({} action(s), {} run under it):\n",
                plan.items.len(),
                plan.used.len()
            ));
            for (i, item) in plan.items.iter().enumerate() {
                let action = &item.action;
                let ran = u32::try_from(i).is_ok_and(|i| plan.used.contains(&i));
                let params = serde_json::to_string_pretty(&*action.params).unwrap_or_default();
                let mut text = format!(
                    "{}. {} on {}{}\n   digest {}\n",
                    i + 1,
                    action.kind,
                    action.resource,
                    if ran { " (ran under the plan)" } else { "" },
                    item.digest
                );
                if let Some(env) = &action.context.environment {
                    text.push_str(&format!("   environment {env}\n"));
                }
                text.push_str(&format!("   params {}\n", params.replace('\n', "\n   ")));
                s.push_str(&term(&text));
            }
        }
        None => {
            let params = serde_json::to_string_pretty(&v.params).unwrap_or_default();
            s.push_str("Parameters:\n");
            s.push_str(&term(&params));
            s.push('\n');
        }
    }
    if let Some(preview) = &v.context.preview {
        // Whole: this is where the chat surfaces' cut previews point.
        s.push_str(&format!("Preview ({}):\n", preview.caption()));
        s.push_str(&term(&preview.text()));
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

fn print_view(v: &RequestView) {
    print!("{}", render_view(v));
}

fn print_view_to_stderr(v: &RequestView) {
    eprint!("{}", render_view(v));
}
