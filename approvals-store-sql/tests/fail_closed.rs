//! Fail closed: with PostgreSQL unreachable, `guard()` refuses quickly with a typed error and
//! nothing runs; when the database returns, the same gate works again without a restart,
//! and change notifications resume.
//!
//! The database is made unreachable with a loopback TCP proxy in front of the real server:
//! taking the proxy down cuts every open connection and refuses new ones.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::{
    ActionRequest, Component, Gate, GuardError, Initiator, MemorySink, Principal, RequestState,
    Requirement, Review, StaticPolicy, Store, Submission,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::fixtures::{export_request, reviewer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// Forwards loopback connections to the database while up.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // Refused: the database is "down".
                    continue;
                }
                let target = target.clone();
                conns2.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy { port, up, conns }
    }

    async fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.conns.lock().await.abort_all();
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_refuses_then_recovers_without_restart() {
    let Some(url) =
        common::postgres_url("unreachable_postgres_refuses_then_recovers_without_restart")
    else {
        return;
    };
    let parsed = url::Url::parse(&url).expect("test URL");
    let target = format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(target).await;
    let mut proxied = parsed.clone();
    proxied.set_host(Some("127.0.0.1")).expect("host");
    proxied.set_port(Some(proxy.port)).expect("port");

    let schema = common::unique_schema("failclosed");
    let direct = common::pg_store(&url, &schema).await;
    let store = SqlStore::connect_with(
        SqlStoreOptions::new(proxied.as_str())
            .schema(&schema)
            .acquire_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("connect through the proxy");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store.clone())
        .audit(MemorySink::new())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .store_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("gate");
    let ran = Arc::new(AtomicUsize::new(0));
    let run = |action: ActionRequest| {
        let (gate, ran) = (gate.clone(), ran.clone());
        async move {
            gate.run(&action, || async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await
        }
    };

    proxy.down().await;
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        run(export_request().params(serde_json::json!({"attempt": "while down"}))),
    )
    .await
    .expect("guard() must return, not hang, while the database is unreachable");
    match &refused {
        Err(GuardError::Unavailable {
            component: Component::Store,
            ..
        }) => {}
        other => panic!("expected a store-unavailable refusal, got {other:?}"),
    }
    assert!(refused.as_ref().is_err_and(GuardError::is_retryable));
    assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing ran");
    assert!(
        direct
            .list(&Default::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing stored"
    );

    // The database comes back: the same gate works, with no restart.
    proxy.up();
    let action = export_request().params(serde_json::json!({"attempt": "after recovery"}));
    let mut submitted = None;
    for _ in 0..20 {
        match gate.submit(&action).await {
            Ok(Submission::Pending(id)) => {
                submitted = Some(id);
                break;
            }
            Ok(Submission::Allowed(_)) => panic!("approval required"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let id = submitted.expect("the gate works again once the database is back");

    // Notifications resume too: a change made elsewhere reaches this store's listener.
    let mut rx = store.changes().expect("changes");
    let mut record = direct.get(id).await.expect("get").expect("exists");
    let mut noticed = false;
    for _ in 0..40 {
        record.escalated = !record.escalated;
        assert!(
            direct
                .compare_and_set(record.version, &record)
                .await
                .expect("cas")
        );
        record.version += 1;
        if let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            assert_eq!(got, id);
            noticed = true;
            break;
        }
    }
    assert!(
        noticed,
        "the listener reconnected and forwards notifications again"
    );

    let direct_gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(direct.clone())
        .audit(MemorySink::new())
        .build()
        .expect("gate");
    direct_gate
        .decide(id, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approve");
    let grant = gate.wait(id).await.expect("grant");
    let ran2 = ran.clone();
    gate.execute(grant, &action, || async move {
        ran2.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
    .expect("execute");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(
        direct.get(id).await.expect("get").expect("exists").state,
        RequestState::Executed
    );
    store.close().await;
    direct.close().await;
    common::drop_schema(&url, &schema).await;
}
