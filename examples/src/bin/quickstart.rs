//! Quickstart: an agent reads (allowed by policy), exports customer data (needs one approval
//! from a data owner, given at this terminal), and grants a role, which it then tries to
//! approve itself (refused) before a security reviewer decides. Prints the audit trail.
//!
//! Requests and the signed audit log are stored in an SQLite file (the embedded default;
//! `APPROVALS_DB` overrides the URL, for example `postgres://...`). The log's checkpoints are
//! signed with the key in `APPROVALS_AUDIT_SIGNER_KEY` (as written by `approvals audit
//! keygen`), or with a new key for this run.
//!
//! Review each request where you like: answer the terminal prompt with `approve [reason]`
//! or `deny [reason]`, open the review console it prints (sign in with the printed token),
//! or use the `approvals` CLI against the console. The first decision wins.
//!
//! On PostgreSQL the export runs with a credential minted for it: a login role that may read
//! only the exported columns of `approvals_quickstart.customers` until the grant expires,
//! dropped when the export returns (`PostgresBroker`). On SQLite it says what it would mint.
//!
//! Run: `cargo run -p approvals-examples --bin quickstart`

use std::error::Error;

use approvals_core::{
    ActionRequest, AuditEvent, ConsoleApprover, EventDetail, FanoutSink, Gate, GuardError,
    Initiator, MemorySink, Principal, Review, RulePolicy, Submission,
};
use approvals_http::{ConsoleLinkApprover, ReviewServer, Tokens, generate_token};
use approvals_store_sql::SqlStore;
use approvals_store_sql::audit::{LogConfig, LogVerifier, Signer};
use serde_json::json;

const POLICY: &str = include_str!("../../policies/quickstart.toml");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dana = Principal::human("dana@example.com").with_name("Dana (finance)");
    let agent = Initiator::agent("billing-agent")
        .on_behalf_of(dana.clone())
        .model("gpt-5")
        .session("run-2291");
    // The person at this terminal reviews as Sam, a data owner and security engineer.
    let sam = Principal::human("sam@example.com")
        .with_name("Sam (security)")
        .with_groups(["data-owners", "security"]);

    let url = match std::env::var("APPROVALS_DB") {
        Ok(url) => url,
        Err(_) => {
            let path = std::env::temp_dir().join("approvals-quickstart.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            format!("sqlite://{}", path.display())
        }
    };
    let store = SqlStore::connect(&url).await?;
    println!("Requests and audit trail stored in {url}");
    let on_postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
    let broker = credentials::broker(&url, on_postgres).await?;

    // The review console, on 127.0.0.1:8480 (or a free port when that one is taken).
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:8480").await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let base: url::Url = format!("http://{}/", listener.local_addr()?).parse()?;
    let token = generate_token();

    // Every event goes to the database's signed audit log and, for printing, memory.
    let signer = match std::env::var("APPROVALS_AUDIT_SIGNER_KEY") {
        Ok(_) => Signer::from_env("APPROVALS_AUDIT_SIGNER_KEY")?,
        Err(_) => Signer::generate("quickstart.approvals.example/audit")?,
    };
    let audit_log = store.signed_audit_sink(LogConfig::new(signer.name()), signer.clone());
    let audit = std::sync::Arc::new(MemorySink::new());
    let mut gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY)?)
        .store(store.clone())
        .audit(
            FanoutSink::new()
                .with(audit_log.clone())
                .with_shared(audit.clone()),
        )
        .approver(ConsoleApprover::new(sam.clone()))
        .approver(ConsoleLinkApprover::with_writer(
            base.clone(),
            std::io::stdout(),
        ))
        .initiator(agent.clone());
    if on_postgres {
        gate = gate.credential_broker(broker.clone());
    }
    let gate = gate.build()?;

    let server = ReviewServer::builder(gate.clone())
        .tokens(Tokens::new().with_token(&token, sam))
        .public_url(base.clone())
        .build();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let console = tokio::spawn(approvals_http::serve(listener, server, async {
        let _ = stopped.await;
    }));

    println!("Policy {} loaded.", gate.policy_version());
    println!("Review console: {base}console  (sign in as Sam with token {token})");
    println!(
        "Or from another terminal: APPROVALS_TOKEN={token} cargo run -q -p approvals-cli --bin approvals -- --server {base} pending\n"
    );

    // 1. A read: the policy allows it outright.
    let read = ActionRequest::new("warehouse.read", "db://prod/invoices")
        .params(json!({"month": "2026-10"}));
    let rows = gate
        .run(&read, || async { Ok::<_, GuardError>(1_204) })
        .await?;
    println!("[agent] read {rows} invoices (allowed by policy, no human needed)");

    // 2. A customer-data export: waits for a data owner at this terminal.
    let export = ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"table": credentials::TABLE, "columns": ["email", "plan", "mrr"], "format": "csv", "destination": "s3://finance-reports/churn.csv"}))
        .environment("production")
        .justification("Monthly churn report requested by Dana");
    println!("[agent] asking to export customer data...");
    let exported = if on_postgres {
        // The agent has no access of its own: the export runs as a role minted for it.
        gate.run_with_credential(&export, |credential| credentials::export(&url, credential))
            .await
    } else {
        match broker.describe(&export) {
            Ok(scope) => println!(
                "[agent] (on PostgreSQL, APPROVALS_DB=postgres://..., this export would run as a login role minted for it: {scope}, valid until the grant expires and dropped afterwards)"
            ),
            Err(e) => println!("[agent] (on PostgreSQL no credential would be minted: {e})"),
        }
        gate.run(&export, || async {
            println!("[agent] exporting 48210 rows to s3://finance-reports/churn.csv");
            Ok::<_, GuardError>(())
        })
        .await
    };
    match exported {
        Ok(()) => println!("[agent] export done"),
        Err(e) => println!("[agent] export refused: {e}"),
    }

    // 3. A role escalation, which the agent tries to approve itself.
    let grant_role = ActionRequest::new("iam.role.grant", "iam://prod/roles/billing-admin")
        .params(
            json!({"user": "dana@example.com", "role": "billing-admin", "duration": "permanent"}),
        )
        .environment("production")
        .justification("Needs admin to fix invoice numbering");
    println!("\n[agent] asking to grant billing-admin to Dana...");
    let Submission::Pending(id) = gate.submit(&grant_role).await? else {
        return Err("the policy should require approval for role grants".into());
    };
    for (who, reviewer) in [
        (
            "the agent itself",
            agent.principal.clone().with_groups(["security"]),
        ),
        (
            "Dana, on whose behalf it acts",
            dana.clone().with_groups(["security"]),
        ),
    ] {
        match gate
            .decide(id, Review::approve(reviewer).reason("looks fine to me"))
            .await
        {
            Ok(_) => println!("[agent] approving as {who}: ACCEPTED (this must never happen)"),
            Err(e) => println!("[agent] approving as {who}: refused: {e}"),
        }
    }
    match gate.wait(id).await {
        Ok(grant) => {
            let approvers: Vec<&str> = grant.approvers().iter().map(|p| p.label()).collect();
            println!("[agent] role grant approved by {}", approvers.join(", "));
            gate.execute(grant, &grant_role, || async {
                println!("[agent] granting billing-admin to dana@example.com");
                Ok::<_, GuardError>(())
            })
            .await?;
        }
        Err(e) => println!("[agent] role grant refused: {e}"),
    }
    // The agent hears of a denial as soon as it is stored; give the reviewer's side a moment
    // to finish recording it so the trail below is complete.
    for _ in 0..100 {
        let events = audit.for_request(id);
        if events
            .iter()
            .any(|e| matches!(e.name(), "denied" | "executed"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    println!("\nAudit trail ({} events):", audit.events().len());
    for event in audit.events() {
        println!("  {}", describe(&event));
    }
    let _ = stop.send(());
    let _ = console.await;
    // Sign the last entries, then check the whole log with the public key only, as an
    // auditor would with `approvals audit verify --db <url> --trust <key file>`.
    audit_log.checkpoint().await?;
    let vkey = std::env::temp_dir().join("approvals-quickstart.vkey");
    std::fs::write(&vkey, format!("{}\n", signer.verifier()))?;
    match audit_log
        .verify(&LogVerifier::new([signer.verifier()]))
        .await
    {
        Ok(report) if report.is_ok() && report.warnings.is_empty() => println!(
            "\nAudit chain in the database verified: {} rows, unbroken. {} entries, all covered \
             by {} signed checkpoint(s), key {}.\nCheck it yourself: approvals audit verify --db {url} \
             --trust {}",
            report.lines,
            report.entries,
            report.checkpoints,
            signer.name(),
            vkey.display()
        ),
        Ok(report) => println!("\nAudit log in the database FAILED verification:\n{report}"),
        Err(e) => println!("\nAudit log in the database could not be verified: {e}"),
    }
    Ok(())
}

fn describe(event: &AuditEvent) -> String {
    let detail = match &event.detail {
        EventDetail::PolicyDecided { decision, .. } => {
            let json = serde_json::to_value(decision).unwrap_or_default();
            let outcome = json["outcome"].as_str().unwrap_or("?").to_owned();
            format!("{outcome} by rule {}", decision.rule().unwrap_or("-"))
        }
        EventDetail::Reviewed {
            reviewer,
            verdict,
            reason,
            ..
        } => format!(
            "{verdict} by {} ({})",
            reviewer.id,
            reason.as_deref().unwrap_or("no reason")
        ),
        EventDetail::ReviewRejected {
            reviewer, cause, ..
        } => format!(
            "{} refused: {}",
            reviewer.as_ref().map_or("?", |r| r.id.as_str()),
            serde_json::to_value(cause)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("?")
        ),
        EventDetail::Executed { ok, error, .. } => {
            if *ok {
                "ok".to_owned()
            } else {
                format!("failed: {}", error.as_deref().unwrap_or(""))
            }
        }
        EventDetail::Dispatched { channel } => format!("to {channel}"),
        EventDetail::CredentialIssued { credential } => {
            format!("{} ({})", credential.id, credential.scope)
        }
        EventDetail::CredentialRevoked { credential, .. } => credential.id.clone(),
        _ => String::new(),
    };
    format!(
        "{} {:<16} {:<15} {:<32} {}",
        event.at.format("%H:%M:%S%.3f"),
        event.name(),
        event.kind,
        event.resource,
        detail
    )
}

/// The export's credential: the PostgreSQL broker, the demo table it reads, and the export run
/// as the minted role.
mod credentials {
    use approvals_broker_postgres::{PostgresBroker, Privilege};
    use approvals_core::{Credential, GuardError};
    use sqlx::Connection;
    use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

    /// The table the export reads, created on PostgreSQL.
    pub const TABLE: &str = "approvals_quickstart.customers";

    /// A broker allowing exports to read; on PostgreSQL with the demo table in place. On
    /// SQLite it never connects: it only describes what it would mint.
    pub async fn broker(
        url: &str,
        on_postgres: bool,
    ) -> Result<PostgresBroker, Box<dyn std::error::Error>> {
        let pool = if on_postgres {
            let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
            for sql in [
                "CREATE SCHEMA IF NOT EXISTS approvals_quickstart",
                "CREATE TABLE IF NOT EXISTS approvals_quickstart.customers (email text, plan text, mrr int, card_number text)",
                "TRUNCATE approvals_quickstart.customers",
                "INSERT INTO approvals_quickstart.customers VALUES ('ann@acme.test', 'pro', 490, '4111-1111'), ('bo@globex.test', 'team', 1290, '5500-0000'), ('cy@initech.test', 'pro', 490, '3400-0000')",
            ] {
                sqlx::query(sql).execute(&pool).await?;
            }
            pool
        } else {
            PgPoolOptions::new().connect_lazy("postgres://localhost/unused")?
        };
        Ok(PostgresBroker::new(pool).allow("data.export", &[Privilege::Select]))
    }

    /// The export, logged in as the minted role: the approved columns of the demo table.
    pub async fn export(url: &str, credential: Credential) -> Result<(), GuardError> {
        let failed = |e: sqlx::Error| GuardError::InvalidRequest(format!("export failed: {e}"));
        println!(
            "[agent] exporting as {}, a role minted for this export: {}",
            credential.id(),
            credential.scope()
        );
        let options: PgConnectOptions = url.parse().map_err(failed)?;
        let mut conn = PgConnection::connect_with(
            &options
                .username(credential.id())
                .password(credential.secret()),
        )
        .await
        .map_err(failed)?;
        let rows: Vec<(String, String, i32)> =
            sqlx::query_as("SELECT email, plan, mrr FROM approvals_quickstart.customers")
                .fetch_all(&mut conn)
                .await
                .map_err(failed)?;
        println!(
            "[agent] exported {} rows to s3://finance-reports/churn.csv",
            rows.len()
        );
        if let Err(e) = sqlx::query("SELECT card_number FROM approvals_quickstart.customers")
            .fetch_all(&mut conn)
            .await
        {
            let message = e
                .as_database_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            println!("[agent] reading card numbers as that role: {message}");
        }
        conn.close().await.map_err(failed)?;
        Ok(())
    }
}
