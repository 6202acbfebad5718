//! An agent with no standing database access exports data only after approval.
//!
//! The agent's own PostgreSQL role can log in but read nothing. When it asks to export
//! invoices, a data owner approves, and the gate's `PostgresBroker` mints a login role for
//! exactly that export: `SELECT` on the approved columns of the approved table, valid until the
//! grant expires. The export runs as that role; when it returns, the role is dropped. The
//! program shows each step against the real server: the agent's own role refused, the minted
//! role reading the approved columns and refused everything else, the role gone afterwards,
//! and the audit events that record it (never the password).
//!
//! It needs a PostgreSQL server where it may create a schema and roles, named by
//! `APPROVALS_POSTGRES_URL`:
//!
//! ```text
//! APPROVALS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run -p approvals-examples --bin credentials
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use approvals_broker_postgres::{PostgresBroker, Privilege};
use approvals_core::{
    ActionRequest, Credential, EventDetail, Gate, GuardError, Initiator, MemorySink, Principal,
    Review, RulePolicy,
};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The variable naming the PostgreSQL server.
const URL_VAR: &str = "APPROVALS_POSTGRES_URL";

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "15m"
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!(
            "This example needs a PostgreSQL server where it may create a schema and roles. Set {URL_VAR}, for example:\n  {URL_VAR}=postgres://postgres@127.0.0.1:5432/test cargo run -p approvals-examples --bin credentials"
        );
        return ExitCode::from(2);
    };
    let suffix = std::process::id();
    let schema = format!("credentials_example_{suffix}");
    let agent_role = format!("export_agent_{suffix}");
    let result = run(&url, &schema, &agent_role).await;
    cleanup(&url, &schema, &agent_role).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, schema: &str, agent_role: &str) -> Result<(), BoxError> {
    let admin: PgConnectOptions = url.parse()?;
    let mut conn = PgConnection::connect_with(&admin).await?;
    let agent_password = format!("agent-{}", approvals_core::RequestId::new());
    for sql in [
        format!("CREATE SCHEMA {schema}"),
        format!(
            "CREATE TABLE {schema}.invoices (id int PRIMARY KEY, customer text, amount int, card_number text)"
        ),
        format!(
            "INSERT INTO {schema}.invoices VALUES (1, 'acme', 1200, '4111-1111'), (2, 'globex', 560, '5500-0000'), (3, 'initech', 990, '3400-0000')"
        ),
        format!("CREATE ROLE {agent_role} LOGIN PASSWORD '{agent_password}'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    let table = format!("{schema}.invoices");
    println!("Set up {table} (3 invoices) and the agent's own role {agent_role}.");

    // 1. The agent's standing access: it can log in, and read nothing.
    let mut own =
        PgConnection::connect_with(&admin.clone().username(agent_role).password(&agent_password))
            .await?;
    match count(&mut own, &table).await {
        Err(e) => println!("[agent] as its own role: {e}  (no standing access)"),
        Ok(n) => return Err(format!("the agent's own role read {n} rows").into()),
    }
    own.close().await?;

    // 2. The gate, minting PostgreSQL roles for approved exports.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin.clone())
        .await?;
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY)?)
        .audit_shared(audit.clone())
        .credential_broker(PostgresBroker::new(pool).allow("data.export", &[Privilege::Select]))
        .initiator(
            Initiator::agent("export-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()?;

    // 3. A data owner approves the export as soon as it is pending.
    let reviewer = gate.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(pending) = reviewer.pending().await
                && let Some(request) = pending.first()
            {
                let sam = Principal::human("sam@example.com").with_groups(["data-owners"]);
                println!(
                    "[sam] approving {} on {}",
                    request.request.kind, request.request.resource
                );
                let _ = reviewer
                    .decide(request.id, Review::approve(sam).reason("Q3 revenue report"))
                    .await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });

    // 4. The export, with a credential minted for exactly it.
    let export = ActionRequest::new("data.export", format!("postgres://example/{table}"))
        .params(json!({"table": table, "columns": ["id", "customer", "amount"]}))
        .justification("Q3 revenue report");
    println!("[agent] asking to export id, customer and amount from {table}...");
    let admin_for_agent = admin.clone();
    let table_for_agent = table.clone();
    let minted = gate
        .run_with_credential(&export, |credential| async move {
            export_as(&admin_for_agent, &credential, &table_for_agent)
                .await
                .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
            Ok::<_, GuardError>(credential)
        })
        .await?;

    // 5. After the action: the role is gone.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(minted.id())
            .fetch_one(&mut conn)
            .await?;
    if exists {
        return Err(format!("role {} still exists after the export", minted.id()).into());
    }
    println!("[gate] role {} dropped after the export", minted.id());
    match PgConnection::connect_with(&login(&admin, &minted)).await {
        Err(e) => println!(
            "[agent] logging in with the used credential again: {}",
            message(&e)
        ),
        Ok(_) => return Err("the minted credential still logs in".into()),
    }

    println!("\nAudit trail (the credential's id, scope and expiry; never its password):");
    for event in audit.events() {
        let detail = match &event.detail {
            EventDetail::CredentialIssued { credential } => {
                format!("{} ({})", credential.id, credential.scope)
            }
            EventDetail::CredentialRevoked { credential, reason } => {
                format!("{} ({reason:?})", credential.id)
            }
            _ => String::new(),
        };
        println!("  {:<18} {detail}", event.name());
        if serde_json::to_string(&event)?.contains(minted.secret()) {
            return Err("the password reached the audit trail".into());
        }
    }
    Ok(())
}

/// The export itself, as the minted role: the approved columns, and nothing else.
async fn export_as(
    admin: &PgConnectOptions,
    credential: &Credential,
    table: &str,
) -> Result<(), BoxError> {
    println!(
        "[agent] running as {} ({}), valid until {}",
        credential.id(),
        credential.scope(),
        credential.expires_at()
    );
    let mut conn = PgConnection::connect_with(&login(admin, credential)).await?;
    let rows: Vec<(i32, String, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, customer, amount FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut conn)
    .await?;
    for (id, customer, amount) in &rows {
        println!("[agent]   exported invoice {id}: {customer} {amount}");
    }
    match sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT card_number FROM {table}"
    )))
    .fetch_all(&mut conn)
    .await
    {
        Err(e) => println!("[agent] card numbers (not approved): {}", message(&e)),
        Ok(_) => return Err("the minted role read a column it was not granted".into()),
    }
    match sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(&mut conn)
        .await
    {
        Err(e) => println!("[agent] deleting (not approved): {}", message(&e)),
        Ok(_) => return Err("the minted role deleted rows".into()),
    }
    Ok(())
}

fn login(admin: &PgConnectOptions, credential: &Credential) -> PgConnectOptions {
    admin
        .clone()
        .username(credential.id())
        .password(credential.secret())
}

async fn count(conn: &mut PgConnection, table: &str) -> Result<i64, String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(conn)
        .await
        .map_err(|e| message(&e))
}

/// The server's own message for a database error (`permission denied for table invoices`).
fn message(e: &sqlx::Error) -> String {
    e.as_database_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

async fn cleanup(url: &str, schema: &str, agent_role: &str) {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return;
    };
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("DROP ROLE IF EXISTS {agent_role}"),
    ] {
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
}
