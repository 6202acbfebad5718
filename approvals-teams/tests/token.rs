//! Outbound client-credentials token: request shape, caching, refresh before expiry,
//! invalidation, and errors, against the loopback identity endpoint fake.

use std::time::Duration;

use approvals_teams::fake::FakeTokenEndpoint;
use approvals_teams::token::{ClientSecret, TokenConfig, TokenError, TokenProvider};

const APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
const SECRET: &str = "s3cr3t~value";

async fn setup(margin: Duration) -> (FakeTokenEndpoint, TokenProvider) {
    let idp = FakeTokenEndpoint::start(APP_ID, SECRET)
        .await
        .expect("fake starts");
    let config = TokenConfig::new(APP_ID, ClientSecret::new(SECRET))
        .with_token_url(idp.token_url())
        .with_refresh_margin(margin);
    let tokens = TokenProvider::new(config).expect("provider builds");
    (idp, tokens)
}

#[tokio::test]
async fn sends_a_client_credentials_request_and_caches_the_token() {
    let (idp, tokens) = setup(Duration::from_secs(300)).await;
    let first = tokens.token().await.expect("token issued");
    assert_eq!(first.secret(), "fake-access-token-1");
    let mut form = idp.last_form();
    form.sort();
    assert_eq!(
        form,
        vec![
            ("client_id".to_owned(), APP_ID.to_owned()),
            ("client_secret".to_owned(), SECRET.to_owned()),
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            (
                "scope".to_owned(),
                "https://api.botframework.com/.default".to_owned()
            ),
        ]
    );
    for _ in 0..10 {
        let again = tokens.token().await.expect("cached token");
        assert_eq!(again, first);
    }
    // Clones share the cache.
    let clone = tokens.clone();
    assert_eq!(clone.token().await.expect("cached token"), first);
    assert_eq!(idp.requests(), 1);
}

#[tokio::test]
async fn refreshes_shortly_before_expiry() {
    // Tokens live 2 s; the provider stops using them 1 s before that.
    let (idp, tokens) = setup(Duration::from_secs(1)).await;
    idp.set_expires_in(2);
    let first = tokens.token().await.expect("token issued");
    assert_eq!(tokens.token().await.expect("cached"), first);
    assert_eq!(idp.requests(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = tokens.token().await.expect("refreshed token");
    assert_ne!(second, first);
    assert_eq!(second.secret(), "fake-access-token-2");
    assert_eq!(idp.requests(), 2);
}

#[tokio::test]
async fn a_token_shorter_than_the_margin_is_never_reused() {
    let (idp, tokens) = setup(Duration::from_secs(300)).await;
    idp.set_expires_in(60);
    tokens.token().await.expect("token issued");
    tokens.token().await.expect("token issued");
    assert_eq!(idp.requests(), 2);
}

#[tokio::test]
async fn invalidate_drops_only_the_rejected_token() {
    let (idp, tokens) = setup(Duration::from_secs(300)).await;
    let first = tokens.token().await.expect("token issued");
    tokens.invalidate(&first).await;
    let second = tokens.token().await.expect("new token");
    assert_eq!(second.secret(), "fake-access-token-2");
    // A late invalidation of the old token does not throw away the new one.
    tokens.invalidate(&first).await;
    assert_eq!(tokens.token().await.expect("cached"), second);
    assert_eq!(idp.requests(), 2);
}

#[tokio::test]
async fn wrong_secret_is_a_rejection_that_says_what_to_check() {
    let idp = FakeTokenEndpoint::start(APP_ID, SECRET)
        .await
        .expect("fake starts");
    let config =
        TokenConfig::new(APP_ID, ClientSecret::new("wrong")).with_token_url(idp.token_url());
    let tokens = TokenProvider::new(config).expect("provider builds");
    let err = tokens.token().await.expect_err("wrong secret rejected");
    match &err {
        TokenError::Rejected { status, error, .. } => {
            assert_eq!(*status, 401);
            assert_eq!(error, "invalid_client");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("client secret"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retryable_and_not_cached() {
    let (idp, tokens) = setup(Duration::from_secs(300)).await;
    idp.fail_next(503, 1);
    let err = tokens.token().await.expect_err("503 is an error");
    assert!(
        matches!(err, TokenError::Unavailable { status: 503 }),
        "{err}"
    );
    assert!(err.is_retryable());
    tokens.token().await.expect("next call fetches again");
    assert_eq!(idp.requests(), 2);
}

#[tokio::test]
async fn secrets_are_redacted_from_debug_output() {
    let (_idp, tokens) = setup(Duration::from_secs(300)).await;
    let token = tokens.token().await.expect("token issued");
    let dump = format!("{token:?} {tokens:?} {:?}", ClientSecret::new(SECRET));
    assert!(!dump.contains("fake-access-token-1"), "{dump}");
    assert!(!dump.contains(SECRET), "{dump}");
}

#[tokio::test]
async fn insecure_token_url_is_refused() {
    let config = TokenConfig::new(APP_ID, ClientSecret::new(SECRET))
        .with_token_url("http://login.microsoftonline.com/botframework.com/oauth2/v2.0/token");
    let err = TokenProvider::new(config).expect_err("plain http refused");
    assert!(matches!(err, TokenError::Config(_)), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_retryable_transport_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = TokenConfig::new(APP_ID, ClientSecret::new(SECRET))
        .with_token_url(format!("http://127.0.0.1:{port}/t/oauth2/v2.0/token"));
    let tokens = TokenProvider::new(config).expect("provider builds");
    let err = tokens.token().await.expect_err("nothing listens");
    assert!(matches!(err, TokenError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
}
