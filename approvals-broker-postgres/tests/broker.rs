//! The broker against a real PostgreSQL server: what a minted role can and cannot do, and
//! every way to make it mint more.

mod common;

use std::time::Duration;

use approvals_core::ActionRequest;
use approvals_core::RequestId;
use approvals_core::credential::{BrokerError, CredentialBroker, IssueRequest, credential_id};
use chrono::{TimeDelta, Utc};
use common::{Db, code, grant};
use serde_json::{Value, json};

fn action(kind: &str, params: Value) -> ActionRequest {
    ActionRequest::new(kind, "postgres://test").params(params)
}

#[tokio::test]
async fn the_agents_own_role_cannot_read_the_table() {
    let Some(db) = Db::new("the_agents_own_role_cannot_read_the_table").await else {
        return;
    };
    let agent = format!("agent_{}", RequestId::new().0.simple());
    db.exec(&format!(
        "CREATE ROLE \"{agent}\" LOGIN PASSWORD 'agent-pw'"
    ))
    .await;
    let mut conn = db
        .connect_as(&agent, "agent-pw")
        .await
        .expect("the agent logs in");
    let err = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("invoices")
    )))
    .execute(&mut conn)
    .await
    .expect_err("no standing access");
    assert_eq!(code(&err), "42501", "{err}");
    drop(conn);
    db.drop_role(&agent).await;
    db.finish().await;
}

#[tokio::test]
async fn the_minted_role_reads_the_approved_table_and_nothing_else() {
    let Some(db) = Db::new("the_minted_role_reads_the_approved_table_and_nothing_else").await
    else {
        return;
    };
    let broker = db.broker();
    let export = action(
        "db.export",
        json!({ "table": db.table("invoices"), "columns": ["id", "total"] }),
    );
    let (grant, id) = grant(&export).await;
    let not_after = Utc::now() + TimeDelta::minutes(5);
    let credential = broker
        .issue(IssueRequest {
            id: &id,
            grant: &grant,
            action: &export,
            not_after,
        })
        .await
        .expect("issued");
    assert_eq!(credential.id(), id);
    assert!(credential.expires_at() <= not_after);
    assert!(not_after - credential.expires_at() < TimeDelta::seconds(1));
    assert_eq!(
        credential.scope(),
        format!(
            "SELECT (id, total) on {} until {}",
            db.table("invoices"),
            credential.expires_at().format("%Y-%m-%dT%H:%M:%SZ")
        )
    );
    assert_eq!(credential.secret().len(), 64);

    let mut conn = db
        .connect_as(&id, credential.secret())
        .await
        .expect("the role logs in");
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(id) FROM {}",
        db.table("invoices")
    )))
    .fetch_one(&mut conn)
    .await
    .expect("reads the approved columns");
    assert_eq!(n, 3);
    for denied in [
        format!("SELECT secret FROM {}", db.table("invoices")),
        format!("SELECT * FROM {}", db.table("invoices")),
        format!("SELECT count(*) FROM {}", db.table("customers")),
        format!(
            "INSERT INTO {} (id, total) VALUES (9, 9)",
            db.table("invoices")
        ),
        format!("UPDATE {} SET total = 0", db.table("invoices")),
        format!("DELETE FROM {}", db.table("invoices")),
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(denied.clone()))
            .execute(&mut conn)
            .await
            .expect_err(&denied);
        assert_eq!(code(&err), "42501", "{denied}: {err}");
    }
    drop(conn);
    // A wrong password is refused: the_credential_expires_by_itself, on a server that
    // checks passwords.
    // The server holds a SCRAM verifier, never the password.
    let (stored,): (Option<String>,) =
        sqlx::query_as("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&id)
            .fetch_one(&db.admin)
            .await
            .expect("pg_authid (the test server's user is a superuser)");
    let stored = stored.expect("a password is set");
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(!stored.contains(credential.secret()));

    broker.revoke(credential.lease()).await.expect("revoked");
    db.drop_role(&id).await;
    db.finish().await;
}

#[tokio::test]
async fn without_columns_the_role_reads_whole_rows_and_writes_what_it_was_allowed() {
    let Some(db) = Db::new("without_columns_the_role_reads_whole_rows").await else {
        return;
    };
    let broker = db.broker();
    let fix = action(
        "db.fix",
        json!({ "table": db.table("invoices"), "privileges": ["select", "insert"] }),
    );
    let (grant, id) = grant(&fix).await;
    let credential = broker
        .issue(IssueRequest {
            id: &id,
            grant: &grant,
            action: &fix,
            not_after: Utc::now() + TimeDelta::minutes(5),
        })
        .await
        .expect("issued");
    assert!(
        credential.scope().starts_with("SELECT, INSERT on "),
        "{}",
        credential.scope()
    );
    let mut conn = db
        .connect_as(&id, credential.secret())
        .await
        .expect("login");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {} VALUES (4, 40, 'd')",
        db.table("invoices")
    )))
    .execute(&mut conn)
    .await
    .expect("insert allowed");
    let err = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET total = 0",
        db.table("invoices")
    )))
    .execute(&mut conn)
    .await
    .expect_err("update was not asked for");
    assert_eq!(code(&err), "42501");
    drop(conn);
    broker.revoke(credential.lease()).await.expect("revoked");
    db.drop_role(&id).await;
    db.finish().await;
}

#[tokio::test]
async fn revoke_ends_sessions_drops_the_role_and_can_be_repeated() {
    let Some(db) = Db::new("revoke_ends_sessions_drops_the_role_and_can_be_repeated").await else {
        return;
    };
    let broker = db.broker();
    let export = action("db.export", json!({ "table": db.table("invoices") }));
    let (grant, id) = grant(&export).await;
    let credential = broker
        .issue(IssueRequest {
            id: &id,
            grant: &grant,
            action: &export,
            not_after: Utc::now() + TimeDelta::minutes(5),
        })
        .await
        .expect("issued");
    let mut open = db
        .connect_as(&id, credential.secret())
        .await
        .expect("login");
    sqlx::query("SELECT 1")
        .execute(&mut open)
        .await
        .expect("session works");
    assert!(db.role_exists(&id).await);

    broker.revoke(credential.lease()).await.expect("revoked");
    assert!(!db.role_exists(&id).await, "the role is dropped");
    assert!(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            db.table("invoices")
        )))
        .execute(&mut open)
        .await
        .is_err(),
        "the open session was terminated"
    );
    let (sessions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(&id)
            .fetch_one(&db.admin)
            .await
            .expect("pg_stat_activity");
    assert_eq!(sessions, 0);
    let err = db
        .connect_as(&id, credential.secret())
        .await
        .expect_err("no login after revoke");
    // 28000 "role does not exist" under trust; 28P01 under password authentication.
    assert!(["28000", "28P01"].contains(&code(&err).as_str()), "{err}");
    broker
        .revoke(credential.lease())
        .await
        .expect("a second revoke is fine");
    db.finish().await;
}

#[tokio::test]
async fn the_credential_expires_by_itself() {
    // A server that checks passwords: under `trust` VALID UNTIL is never consulted.
    let Some(db) = Db::checking_passwords("the_credential_expires_by_itself").await else {
        return;
    };
    let broker = db.broker();
    let export = action("db.export", json!({ "table": db.table("invoices") }));
    let (grant, id) = grant(&export).await;
    let not_after = Utc::now() + TimeDelta::seconds(2);
    let credential = broker
        .issue(IssueRequest {
            id: &id,
            grant: &grant,
            action: &export,
            not_after,
        })
        .await
        .expect("issued");
    let (valid_until,): (Option<i64>,) = sqlx::query_as(
        "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
    )
    .bind(&id)
    .fetch_one(&db.admin)
    .await
    .expect("pg_roles");
    assert_eq!(
        valid_until,
        Some(credential.expires_at().timestamp()),
        "VALID UNTIL is the lease's expiry"
    );
    assert_eq!(credential.expires_at().timestamp_subsec_nanos(), 0);
    assert!(credential.expires_at() <= not_after);
    let mut conn = db
        .connect_as(&id, credential.secret())
        .await
        .expect("valid now");
    let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("invoices")
    )))
    .fetch_one(&mut conn)
    .await
    .expect("reads the approved table while valid");
    assert_eq!(rows, 3);
    drop(conn);
    let err = db
        .connect_as(&id, "not-the-password")
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(code(&err), "28P01", "{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = db
        .connect_as(&id, credential.secret())
        .await
        .expect_err("expired: login refused");
    assert_eq!(code(&err), "28P01", "{err}");
    broker.revoke(credential.lease()).await.expect("revoked");
    db.finish().await;
}

#[tokio::test]
async fn parallel_approvals_get_distinct_roles_each_limited_to_its_table() {
    let Some(db) = Db::new("parallel_approvals_get_distinct_roles").await else {
        return;
    };
    let s = db.schema.clone();
    for i in 0..8 {
        db.exec(&format!(
            "CREATE TABLE \"{s}\".t{i} (n int); INSERT INTO \"{s}\".t{i} SELECT generate_series(1, {})",
            i + 1
        ))
        .await;
    }
    let broker = db.broker();
    let mut actions = Vec::new();
    for i in 0..8 {
        let a = action("db.export", json!({ "table": db.table(&format!("t{i}")) }));
        let (g, id) = grant(&a).await;
        actions.push((a, g, id));
    }
    let not_after = Utc::now() + TimeDelta::minutes(5);
    let issued = futures::future::join_all(actions.iter().map(|(a, g, id)| {
        broker.issue(IssueRequest {
            id,
            grant: g,
            action: a,
            not_after,
        })
    }))
    .await;
    let credentials: Vec<_> = issued.into_iter().map(|c| c.expect("issued")).collect();
    let ids: std::collections::BTreeSet<_> =
        credentials.iter().map(|c| c.id().to_owned()).collect();
    assert_eq!(ids.len(), 8, "eight distinct roles");
    for (i, credential) in credentials.iter().enumerate() {
        assert_eq!(credential.id(), actions[i].2);
        let mut conn = db
            .connect_as(credential.id(), credential.secret())
            .await
            .expect("login");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            db.table(&format!("t{i}"))
        )))
        .fetch_one(&mut conn)
        .await
        .expect("own table");
        assert_eq!(n, i as i64 + 1);
        let other = db.table(&format!("t{}", (i + 1) % 8));
        let err = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {other}")))
            .execute(&mut conn)
            .await
            .expect_err("not another approval's table");
        assert_eq!(code(&err), "42501");
    }
    futures::future::join_all(credentials.iter().map(|c| broker.revoke(c.lease())))
        .await
        .into_iter()
        .for_each(|r| r.expect("revoked"));
    for id in &ids {
        assert!(!db.role_exists(id).await);
    }
    db.finish().await;
}

#[tokio::test]
async fn injection_through_any_name_is_refused_and_creates_nothing() {
    let Some(db) = Db::new("injection_through_any_name_is_refused").await else {
        return;
    };
    let broker = db.broker();
    let s = db.schema.clone();
    let long = "a".repeat(64);
    let hostile: Vec<Value> = vec![
        json!({ "table": "invoices; DROP TABLE x" }),
        json!({ "table": format!("{s}.invoices; DROP TABLE {s}.customers") }),
        json!({ "table": "\"invoices\"" }),
        json!({ "table": format!("{s}.\"invoices\"") }),
        json!({ "table": format!("{s}.invoices--") }),
        json!({ "table": format!("{s}.invoices /*") }),
        json!({ "table": "pg_catalog.pg_authid" }),
        json!({ "table": "information_schema.tables" }),
        json!({ "table": format!("{}.invoices", s.to_uppercase()) }),
        json!({ "table": format!("{s}.Invoices") }),
        json!({ "table": format!("{s}.inv\u{043e}ices") }),
        json!({ "table": format!("{s}.ｉnvoices") }),
        json!({ "table": format!("{s}.invoices\u{200b}") }),
        json!({ "table": format!("{s}.{long}") }),
        json!({ "table": format!("{long}.invoices") }),
        json!({ "table": "" }),
        json!({ "table": format!("{s}.") }),
        json!({ "table": format!("x.{s}.invoices") }),
        json!({ "tables": [db.table("invoices"), "customers; --"] }),
        json!({ "table": db.table("invoices"), "columns": ["id\"; DROP ROLE postgres; --"] }),
        json!({ "table": db.table("invoices"), "columns": ["ID"] }),
        json!({ "table": db.table("invoices"), "columns": ["id, secret"] }),
        json!({ "table": db.table("invoices"), "columns": [long.clone()] }),
        json!({ "table": db.table("invoices"), "privileges": ["select; GRANT ALL"] }),
        json!({ "table": db.table("invoices"), "privileges": ["SELECT"] }),
        json!({ "table": db.table("invoices"), "privileges": ["all"] }),
    ];
    for params in hostile {
        let export = action("db.export", params.clone());
        let (grant, id) = grant(&export).await;
        let err = broker
            .issue(IssueRequest {
                id: &id,
                grant: &grant,
                action: &export,
                not_after: Utc::now() + TimeDelta::minutes(5),
            })
            .await
            .expect_err("refused");
        assert!(matches!(err, BrokerError::Refused(_)), "{params}: {err:?}");
        assert!(!db.role_exists(&id).await, "{params}: no role");
        assert!(broker.describe(&export).is_err(), "{params}");
    }
    // Hostile ids: the gate chooses them, but the broker checks anyway.
    let export = action("db.export", json!({ "table": db.table("invoices") }));
    let (grant, good) = grant(&export).await;
    for id in [
        format!("{good}\"; DROP ROLE postgres; --"),
        good.to_uppercase(),
        "postgres".to_owned(),
        format!("{good}0"),
        good[..35].to_owned(),
        format!("apr_{}", "g".repeat(32)),
        String::new(),
    ] {
        let err = broker
            .issue(IssueRequest {
                id: &id,
                grant: &grant,
                action: &export,
                not_after: Utc::now() + TimeDelta::minutes(5),
            })
            .await
            .expect_err("refused");
        assert!(matches!(err, BrokerError::Refused(_)), "{id}: {err:?}");
        let lease = approvals_core::CredentialLease {
            id: id.clone(),
            scope: String::new(),
            expires_at: Utc::now(),
        };
        assert!(
            matches!(broker.revoke(&lease).await, Err(BrokerError::Refused(_))),
            "{id}"
        );
    }
    assert!(!db.role_exists(&good).await);
    // The tables are all still there.
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename IN ('invoices', 'customers')",
    )
    .bind(&s)
    .fetch_one(&db.admin)
    .await
    .expect("pg_tables");
    assert_eq!(n, 2);
    assert!(db.role_exists("postgres").await);
    db.finish().await;
}

#[tokio::test]
async fn kinds_privileges_and_names_beyond_the_allowed_are_refused() {
    let Some(db) = Db::new("kinds_privileges_and_names_beyond_the_allowed_are_refused").await
    else {
        return;
    };
    let broker = db.broker();
    let invoices = db.table("invoices");
    let cases = [
        ("db.drop", json!({ "table": invoices })),
        ("DB.EXPORT", json!({ "table": invoices })),
        (
            "db.export",
            json!({ "table": invoices, "privileges": ["insert"] }),
        ),
        (
            "db.export",
            json!({ "table": invoices, "privileges": ["select", "delete"] }),
        ),
        (
            "db.fix",
            json!({ "table": invoices, "privileges": ["delete"] }),
        ),
        ("db.export", json!({ "table": db.table("no_such_table") })),
        ("db.export", json!({ "table": "no_such_schema.invoices" })),
        (
            "db.export",
            json!({ "table": invoices, "columns": ["id", "no_such_column"] }),
        ),
        (
            "db.export",
            json!({ "tables": [invoices, db.table("missing")] }),
        ),
    ];
    for (kind, params) in cases {
        let a = action(kind, params.clone());
        let (grant, id) = grant(&a).await;
        let err = broker
            .issue(IssueRequest {
                id: &id,
                grant: &grant,
                action: &a,
                not_after: Utc::now() + TimeDelta::minutes(5),
            })
            .await
            .expect_err("refused");
        assert!(
            matches!(err, BrokerError::Refused(_)),
            "{kind} {params}: {err:?}"
        );
        assert!(!db.role_exists(&id).await, "{kind} {params}");
    }
    // An expired grant gets nothing either.
    let a = action("db.export", json!({ "table": invoices }));
    let (grant, id) = grant(&a).await;
    let err = broker
        .issue(IssueRequest {
            id: &id,
            grant: &grant,
            action: &a,
            not_after: Utc::now(),
        })
        .await
        .expect_err("too late");
    assert!(matches!(err, BrokerError::Refused(_)), "{err:?}");
    db.finish().await;
}

#[tokio::test]
async fn a_role_left_behind_is_replaced_on_retry() {
    let Some(db) = Db::new("a_role_left_behind_is_replaced_on_retry").await else {
        return;
    };
    let broker = db.broker();
    let id = credential_id(RequestId::new());
    // A crashed attempt left a role with more than it should have.
    db.exec(&format!(
        "CREATE ROLE \"{id}\" LOGIN PASSWORD 'old'; GRANT USAGE ON SCHEMA \"{s}\" TO \"{id}\";
         GRANT SELECT ON \"{s}\".customers TO \"{id}\"",
        s = db.schema
    ))
    .await;
    let export = action("db.export", json!({ "table": db.table("invoices") }));
    let (grant, _) = grant(&export).await;
    let credential = broker
        .issue(IssueRequest {
            id: &id,
            grant: &grant,
            action: &export,
            not_after: Utc::now() + TimeDelta::minutes(5),
        })
        .await
        .expect("issued over the leftover");
    let mut conn = db
        .connect_as(&id, credential.secret())
        .await
        .expect("login");
    let err = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {}",
        db.table("customers")
    )))
    .execute(&mut conn)
    .await
    .expect_err("the leftover's grants are gone");
    assert_eq!(code(&err), "42501");
    drop(conn);
    broker.revoke(credential.lease()).await.expect("revoked");
    assert!(!db.role_exists(&id).await);
    db.finish().await;
}

#[tokio::test]
async fn expired_roles_are_dropped_and_valid_ones_kept() {
    // A private server: no other test's roles expire or get dropped on it meanwhile.
    let Some(db) = Db::checking_passwords("expired_roles_are_dropped_and_valid_ones_kept").await
    else {
        return;
    };
    let broker = db.broker();
    let export = action("db.export", json!({ "table": db.table("invoices") }));
    let issue = async |ttl: TimeDelta| {
        let (grant, id) = grant(&export).await;
        broker
            .issue(IssueRequest {
                id: &id,
                grant: &grant,
                action: &export,
                not_after: Utc::now() + ttl,
            })
            .await
            .expect("issued")
    };
    let short = issue(TimeDelta::seconds(2)).await;
    let long = issue(TimeDelta::minutes(5)).await;
    // A role that only looks like a credential by its prefix is not the broker's.
    db.exec("CREATE ROLE \"apr_not_a_credential\" VALID UNTIL '2000-01-01'")
        .await;

    assert_eq!(
        broker.revoke_expired(Utc::now()).await.expect("swept"),
        Vec::<String>::new(),
        "nothing has expired yet"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revoked = broker.revoke_expired(Utc::now()).await.expect("swept");
    assert_eq!(revoked, [short.id().to_owned()]);
    assert!(
        !db.role_exists(short.id()).await,
        "the expired role is gone"
    );
    assert!(db.role_exists(long.id()).await, "the valid one stays");
    assert!(db.role_exists("apr_not_a_credential").await);
    let mut conn = db
        .connect_as(long.id(), long.secret())
        .await
        .expect("the valid credential still logs in");
    let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("invoices")
    )))
    .fetch_one(&mut conn)
    .await
    .expect("and reads");
    assert_eq!(rows, 3);
    drop(conn);
    assert!(
        broker
            .revoke_expired(Utc::now())
            .await
            .expect("swept")
            .is_empty(),
        "once"
    );
    broker.revoke(long.lease()).await.expect("revoked");
    db.drop_role("apr_not_a_credential").await;
    db.finish().await;
}
