//! The remote gateway learns of unanswered reminders from its own long polls: the progress
//! loop reads what the last answer said and asks the server nothing itself, so no grant is
//! issued (and audited) for a wait nobody needed.

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Gate, MemorySink, MemoryStore, Principal, Requirement, Review, StaticPolicy,
};
use approvals_http::{ApiClient, ReviewServer, Tokens};
use approvals_mcp::remote::Remote;
use approvals_mcp::{Approvals, Asked};

const AGENT: &str = "tok-agent";

/// `gate`'s review server on a loopback port, and the remote approvals of an agent token
/// there, long-polling in 1 s steps.
async fn remote_to(gate: Gate) -> Remote {
    let server = ReviewServer::builder(gate)
        .tokens(Tokens::new().with_token(AGENT, Principal::agent("gateway-bot")))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url: url::Url = format!("http://{}/", listener.local_addr().expect("addr"))
        .parse()
        .expect("url");
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));
    Remote::new(ApiClient::http(url, Some(AGENT.into())).expect("client"))
        .wait_step(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_waits_report_unanswered_reminders_without_asking_again() {
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"])
                .timeout(Duration::from_secs(20))
                .reminders([5]),
        ))
        .store(MemoryStore::new())
        .audit_shared(audit.clone())
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    let remote = remote_to(gate.clone()).await;

    let action = ActionRequest::new("mcp.fs.write_file", "/srv/notes.txt");
    let Ok(Asked::Pending { id, .. }) = remote.submit(&action).await else {
        panic!("approval is required");
    };
    assert_eq!(remote.unanswered_reminders(id).await, 0);
    let waiting = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.wait(id).await })
    };
    // The reminder is due after 1 s (5% of 20 s); the server's waiter sends it, and the next
    // long poll (1 s steps here) says nobody has reviewed.
    let mut told = 0;
    for _ in 0..100 {
        told = remote.unanswered_reminders(id).await;
        if told > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told, 1, "the long poll reported the unanswered reminder");
    let issued = || {
        audit
            .names()
            .iter()
            .filter(|n| **n == "grant_issued")
            .count()
    };
    assert_eq!(issued(), 0);

    gate.decide(
        id,
        Review::approve(Principal::human("sam@example.com").with_groups(["security"])),
    )
    .await
    .expect("approve");
    let grant = waiting.await.expect("the wait ends");
    assert!(grant.is_ok(), "approved");
    assert_eq!(
        remote.unanswered_reminders(id).await,
        0,
        "forgotten once decided"
    );
    assert_eq!(issued(), 1, "one grant, for the one wait");
}

/// A wait the client cancels (its future dropped mid-poll) leaves no note behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_forgets_its_request() {
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"])
                .timeout(Duration::from_secs(20))
                .reminders([5]),
        ))
        .store(MemoryStore::new())
        .audit(MemorySink::new())
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    let remote = remote_to(gate).await;
    let action = ActionRequest::new("mcp.fs.write_file", "/srv/notes.txt");
    let Ok(Asked::Pending { id, .. }) = remote.submit(&action).await else {
        panic!("approval is required");
    };
    let waiting = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.wait(id).await })
    };
    let mut told = 0;
    for _ in 0..100 {
        told = remote.unanswered_reminders(id).await;
        if told > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told, 1);
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(
        remote.unanswered_reminders(id).await,
        0,
        "forgotten on cancel"
    );
}
