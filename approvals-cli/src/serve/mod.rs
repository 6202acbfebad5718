//! `approvals serve --config FILE`: the whole service from one configuration file: the
//! agent API and the reviewer API and console on a SQL store with a signed audit log, the
//! policy (reloaded when its file changes), the Slack, Teams and webhook channels with their
//! inbound endpoints, console sign-in with an OpenID Connect provider, the sweeper, and
//! `/healthz`.
//!
//! - [`config`]: the file, environment overrides and the checks made at start.
//! - [`policy`]: the reloading policy.
//! - [`channels`]: the channels and their delivery records.
//! - [`health`]: the `/healthz` report.

pub(crate) mod channels;
pub(crate) mod config;
pub(crate) mod health;
pub(crate) mod policy;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::{FanoutSink, Gate, JsonLinesSink};
use approvals_http::auth::Tokens;
use approvals_http::server::ReviewServer;
use approvals_store_sql::audit::{LogConfig, Signer};

use crate::command::{Failure, exit, redact_url};
use config::{ConfigError, ServeConfig, Setting};
use health::{AuditHealth, Health, MonitoredSink};
use policy::{Reload, ReloadingPolicy};

fn refused(e: ConfigError) -> Failure {
    Failure::new(exit::USAGE, e.to_string())
}

fn signer(setting: &Setting<std::path::PathBuf>) -> Result<Signer, Failure> {
    Signer::from_file(&setting.value).map_err(|e| {
        refused(setting.error(format!(
            "cannot read the signer key {}: {e} (make one with `approvals audit keygen`)",
            setting.value.display()
        )))
    })
}

/// Runs the service described by the file at `path` until Ctrl-C or SIGTERM.
pub(crate) async fn run(path: &Path) -> Result<(), Failure> {
    let config = config::load(path, &|name| std::env::var(name).ok()).map_err(refused)?;
    let ServeConfig {
        listen,
        public_url,
        admin_groups,
        policy: policy_setting,
        policy_reload_interval,
        store: store_setting,
        audit_key,
        audit,
        tokens,
        grant_key,
        grant_issuer,
        passkeys,
        slack,
        teams,
        webhook,
        oidc,
    } = config;

    // Everything read from files first: a bad file refuses the start before any connection.
    let policy = Arc::new(
        ReloadingPolicy::load(&policy_setting.value)
            .map_err(|e| refused(policy_setting.error(e)))?,
    );
    let tokens = Tokens::from_file(&tokens.value).map_err(|e| refused(tokens.error(e.0)))?;
    let audit_signer = signer(&audit_key)?;
    let grant_signer = match &grant_key {
        Some(setting) => signer(setting)?,
        None => audit_signer.clone(),
    };
    let mut channels = Vec::new();
    let slack_parts = slack
        .as_ref()
        .map(|c| channels::slack(c, public_url.as_ref()))
        .transpose()
        .map_err(refused)?;
    let teams_parts = teams
        .as_ref()
        .map(|c| channels::teams(c, public_url.as_ref()))
        .transpose()
        .map_err(refused)?;
    let webhook_channel = webhook
        .as_ref()
        .map(|w| channels::webhook(w, public_url.as_ref()))
        .transpose()
        .map_err(refused)?;

    // The store and its signed audit log.
    let url = store_setting.value.trim().to_owned();
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        "postgres"
    } else {
        return Err(refused(store_setting.error(format!(
            "unknown store URL {:?}; use sqlite://FILE or postgres://...",
            redact_url(&url)
        ))));
    };
    let redact: Vec<String> = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .into_iter()
        .collect();
    let store = approvals_store_sql::SqlStore::connect(&url)
        .await
        .map_err(|e| {
            let mut message = format!("cannot open the store {}: {e}", redact_url(&url));
            for secret in &redact {
                message = message.replace(secret.as_str(), "***");
            }
            Failure::new(exit::UNAVAILABLE, store_setting.error(message).to_string())
        })?;
    let audit_health = Arc::new(AuditHealth::default());
    let key_name = audit_signer.name().to_owned();
    let sql_sink = store.signed_audit_sink(LogConfig::new(audit_signer.name()), audit_signer);
    let mut sinks = FanoutSink::new().with(MonitoredSink {
        inner: sql_sink,
        health: audit_health.clone(),
    });
    if let Some(path) = &audit {
        let file = JsonLinesSink::file(path, true).map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot open the audit log {}: {e}", path.display()),
            )
        })?;
        sinks = sinks.with(file);
    }
    let store: Arc<dyn approvals_core::Store> = Arc::new(store);

    // The gate: this process is where agents' requests are decided.
    let mut builder = Gate::builder()
        .policy_shared(policy.clone())
        .store_shared(store.clone())
        .audit(sinks);
    for channel in [
        slack_parts.as_ref().map(|p| &p.channel),
        teams_parts.as_ref().map(|p| &p.channel),
        webhook_channel.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        builder = builder.approver_shared(channel.approver.clone());
        channels.push((channel.name, channel.health.clone()));
    }
    let gate = builder
        .build()
        .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;

    let mut server = ReviewServer::builder(gate.clone())
        .tokens(tokens)
        .admin_groups(admin_groups)
        .grant_signer(grant_signer)
        .grant_issuer(grant_issuer);
    if let Some(url) = public_url.clone() {
        server = server.public_url(url);
    }
    if let Some(setting) = &passkeys {
        let registry = approvals_http::console::passkey::PasskeyRegistry::file(&setting.value)
            .map_err(|e| refused(setting.error(e.to_string())))?;
        server = server.passkeys(registry);
    }
    if let (Some(settings), Some(url)) = (&oidc, &public_url) {
        server = server.oidc(
            crate::command::discover_oidc(settings.config(url), &settings.at.to_string()).await?,
        );
    }
    let server = server.build();

    // Inbound endpoints.
    let health = Arc::new(Health {
        store,
        backend,
        audit: audit_health,
        audit_key: key_name,
        policy: policy.clone(),
        channels,
        redact,
    });
    let mut app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let health = health.clone();
            async move {
                let (code, body) = health.report().await;
                (
                    code,
                    [(http::header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
            }
        }),
    );
    let mut notes = Vec::new();
    let mut socket = None;
    if let (Some(config), Some(parts)) = (&slack, slack_parts) {
        match channels::slack_inbound(config, parts, &gate).map_err(refused)? {
            channels::SlackInbound::Http(path, router) => {
                notes.push(format!(
                    "Slack interactivity Request URL: {{base}}{}",
                    &path[1..]
                ));
                app = app.merge(router);
            }
            channels::SlackInbound::Socket(handle) => {
                notes.push("Slack: receiving clicks over Socket Mode".to_owned());
                socket = Some(handle);
            }
        }
    }
    if let (Some(config), Some(parts)) = (&teams, teams_parts) {
        let router = channels::teams_inbound(config, parts, &gate).map_err(refused)?;
        notes.push(format!(
            "Teams messaging endpoint: {{base}}{}",
            &config.messaging_path[1..]
        ));
        app = app.merge(router);
    }
    if webhook.is_some() {
        notes.push("Webhook: requests are delivered to the configured URL".to_owned());
    }
    let app = app.fallback_service(server.service());

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    let base = public_url
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_else(|| format!("http://{addr}/"));
    println!("Approvals review console: {base}console/");
    println!("API: {base}v1/requests   OpenAPI: {base}openapi.json   Health: {base}healthz");
    println!(
        "Policy {} (version {}), checked for changes every {:?}",
        policy.path().display(),
        policy.current_version(),
        policy_reload_interval
    );
    for note in notes {
        println!("{}", note.replace("{base}", &base));
    }
    let _ = std::io::stdout().flush();

    let sweeper = gate.spawn_sweeper(Duration::from_secs(5));
    let reloader = tokio::spawn(watch_policy(policy, policy_reload_interval));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    sweeper.abort();
    reloader.abort();
    if let Some(socket) = socket {
        let _ = socket.shutdown().await;
    }
    result.map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))
}

/// Checks the policy file every `interval`; a refused edit is logged once and the policy in
/// force stays.
async fn watch_policy(policy: Arc<ReloadingPolicy>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match policy.reload() {
            Reload::Unchanged => {}
            Reload::Replaced { version } => {
                println!(
                    "policy {} reloaded: version {version}",
                    policy.path().display()
                );
                let _ = std::io::stdout().flush();
            }
            Reload::Refused(why) => eprintln!(
                "approvals: policy edit refused, version {} stays in force: {why}",
                policy.current_version()
            ),
        }
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
