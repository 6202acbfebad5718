//! Embedded mode: the gateway with its own SQLite store, policy, signed audit log and review
//! server, serving one MCP client on standard input and output.

use std::path::PathBuf;
use std::time::Duration;

use approvals_core::{Gate, Initiator, Principal, RulePolicy};
use approvals_http::{ConsoleLinkApprover, ReviewServer, Tokens};
use approvals_store_sql::SqlStore;
use approvals_store_sql::audit::{LogConfig, Signer};
use url::Url;

use crate::{
    Gateway, GatewayOptions, InProcess, ToolMapping, Upstream, UpstreamTarget, serve_stdio,
};

/// Everything embedded mode needs; the `approvals-mcp` binary fills it from its flags.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The upstream MCP server.
    pub upstream: UpstreamTarget,
    /// The server's name in action kinds (`mcp.<server>.<tool>`).
    pub server_name: String,
    /// The tool argument that names the action's resource.
    pub resource_arg: Option<String>,
    /// The policy file (TOML or JSON, [`RulePolicy`]).
    pub policy: PathBuf,
    /// The store: `sqlite://FILE` (created if missing).
    pub db: String,
    /// The reviewers' token file (as for `approvals serve --tokens`).
    pub tokens: PathBuf,
    /// The audit log's signer key file (`approvals audit keygen`); a fresh key otherwise.
    pub audit_key: Option<PathBuf>,
    /// Where the review server listens (`127.0.0.1:8480`).
    pub listen: String,
    /// The review server's public URL, when it differs from the listening address.
    pub public_url: Option<Url>,
    /// The agent making the calls: its id.
    pub agent: String,
    /// The agent's model.
    pub model: Option<String>,
    /// The person the agent acts for.
    pub on_behalf_of: String,
    /// A session reference recorded with each request.
    pub session: Option<String>,
    /// Bound on one MCP message from the client or the upstream server.
    pub max_message_bytes: usize,
    /// Progress notification interval while a call waits.
    pub progress_every: Duration,
}

/// Embedded mode could not start or ended with an error. Every message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmbeddedError(pub String);

fn fail(what: &str) -> impl FnOnce(String) -> EmbeddedError + '_ {
    move |e| EmbeddedError(format!("{what}: {e}"))
}

/// Runs the gateway until the MCP client closes its side, then stops the upstream server and
/// the review server and signs the audit log's last entries.
pub async fn run(options: EmbeddedOptions) -> Result<(), EmbeddedError> {
    let mut mapping =
        ToolMapping::new(&options.server_name).map_err(|e| fail("--server-name")(e.0))?;
    if let Some(arg) = &options.resource_arg {
        mapping = mapping.resource_arg(arg);
    }
    let policy = RulePolicy::from_file(&options.policy)
        .map_err(|e| fail("cannot load the policy")(e.to_string()))?;
    let tokens = Tokens::from_file(&options.tokens)
        .map_err(|e| fail("cannot load the reviewer token file")(e.0))?;
    if !options.db.starts_with("sqlite:") {
        return Err(EmbeddedError(format!(
            "--db {:?}: embedded mode takes an SQLite URL, sqlite://FILE",
            options.db
        )));
    }
    let store = SqlStore::connect(&options.db)
        .await
        .map_err(|e| fail("cannot open the store")(e.to_string()))?;
    let signer = match &options.audit_key {
        Some(path) => Signer::from_file(path)
            .map_err(|e| fail("cannot read the audit signer key")(e.to_string()))?,
        None => {
            let signer = Signer::generate("approvals-mcp/audit")
                .map_err(|e| fail("cannot make an audit signer key")(e.to_string()))?;
            eprintln!(
                "approvals-mcp: audit checkpoints signed with a new key; verifier key: {}",
                signer.verifier()
            );
            signer
        }
    };
    let audit_log = store.signed_audit_sink(LogConfig::new(signer.name()), signer);

    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|e| fail(&format!("cannot listen on {}", options.listen))(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| fail("the review server's address")(e.to_string()))?;
    let review_url = match &options.public_url {
        Some(url) => url.clone(),
        None => format!("http://{addr}/")
            .parse()
            .map_err(|e: url::ParseError| fail("the review server's URL")(e.to_string()))?,
    };

    let mut initiator =
        Initiator::agent(&options.agent).on_behalf_of(Principal::human(&options.on_behalf_of));
    if let Some(model) = &options.model {
        initiator = initiator.model(model);
    }
    if let Some(session) = &options.session {
        initiator = initiator.session(session);
    }
    let gate = Gate::builder()
        .policy(policy)
        .store(store.clone())
        .audit(audit_log.clone())
        .approver(ConsoleLinkApprover::new(review_url.clone()))
        .initiator(initiator.clone())
        .build()
        .map_err(|e| fail("cannot build the gate")(e.to_string()))?;
    let sweeper = gate.spawn_sweeper(Duration::from_secs(5));

    let server = ReviewServer::builder(gate.clone())
        .tokens(tokens)
        .public_url(review_url.clone())
        .build();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let console = tokio::spawn(approvals_http::serve(listener, server, async {
        let _ = stopped.await;
    }));
    eprintln!(
        "approvals-mcp: review server on {review_url} (policy {})",
        gate.policy_version()
    );

    let upstream = Upstream::start(&options.upstream, options.max_message_bytes)
        .await
        .map_err(|e| EmbeddedError(e.to_string()))?;
    let mut gateway_options = GatewayOptions::new(mapping);
    gateway_options.review_url = Some(review_url);
    gateway_options.progress_every = options.progress_every;
    let approvals = InProcess::new(gate).cancelled_by(initiator.principal.clone());
    let gateway = Gateway::new(approvals, upstream, gateway_options);

    let served = serve_stdio(gateway, options.max_message_bytes)
        .await
        .map_err(EmbeddedError);
    sweeper.abort();
    let _ = stop.send(());
    let _ = console.await;
    if let Err(e) = audit_log.checkpoint().await {
        eprintln!("approvals-mcp: could not sign the audit log's last entries: {e}");
    }
    served
}
