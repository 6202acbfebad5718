//! Inbound Bot Framework JWT validation against the loopback OpenID/JWKS fake: every attack is
//! rejected with the right error, valid tokens pass, and key refetches are rate limited.

use std::time::Duration;

use approvals_teams::auth::{AuthConfig, AuthError, BotAuthenticator};
use approvals_teams::fake::{DEFAULT_KID, FakeOpenId, Signer, TokenSpec, now_unix};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

const APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
const SERVICE_URL: &str = "https://smba.trafficmanager.net/amer/";

async fn setup_with(interval: Duration) -> (FakeOpenId, BotAuthenticator) {
    let idp = FakeOpenId::start()
        .await
        .expect("fake OpenID endpoint starts");
    let config = AuthConfig::new(APP_ID)
        .with_openid_metadata_url(idp.metadata_url())
        .with_min_refetch_interval(interval);
    let auth = BotAuthenticator::new(config).expect("authenticator builds");
    (idp, auth)
}

async fn setup() -> (FakeOpenId, BotAuthenticator) {
    setup_with(Duration::from_secs(300)).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn check(auth: &BotAuthenticator, token: &str) -> Result<approvals_teams::Claims, AuthError> {
    auth.validate(&bearer(token), SERVICE_URL).await
}

#[tokio::test]
async fn valid_token_passes_and_returns_claims() {
    let (idp, auth) = setup().await;
    let token =
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("appid", json!("bf-connector")));
    let claims = check(&auth, &token).await.expect("valid token accepted");
    assert_eq!(claims.issuer, "https://api.botframework.com");
    assert_eq!(claims.audience, vec![APP_ID.to_owned()]);
    assert_eq!(claims.service_url, SERVICE_URL);
    assert_eq!(claims.app_id.as_deref(), Some("bf-connector"));
    assert_eq!(claims.key_id, DEFAULT_KID);
    assert_eq!(claims.endorsements, vec!["msteams".to_owned()]);
    // Lower-case scheme and a serviceUrl without the trailing slash are the same request.
    auth.validate(
        &format!("bearer {token}"),
        "https://smba.trafficmanager.net/amer",
    )
    .await
    .expect("scheme is case-insensitive, trailing slash ignored");
    // Keys were fetched once and then served from the cache.
    assert_eq!(idp.metadata_requests(), 1);
    assert_eq!(idp.jwks_requests(), 1);
}

#[tokio::test]
async fn audience_array_containing_the_app_id_passes() {
    let (idp, auth) = setup().await;
    let token =
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("aud", json!(["other", APP_ID])));
    check(&auth, &token)
        .await
        .expect("aud array with our id accepted");
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (idp, auth) = setup().await;
    for alg in ["none", "None", "NONE"] {
        let unsigned = idp.mint(
            &TokenSpec::valid(APP_ID, SERVICE_URL)
                .header("alg", json!(alg))
                .signed_with(Signer::Unsigned),
        );
        let err = check(&auth, &unsigned)
            .await
            .expect_err("alg none rejected");
        assert!(
            matches!(err, AuthError::UnsupportedAlgorithm(ref a) if a == alg),
            "{err}"
        );
        // Even with a genuine RS256 signature attached, a header saying `none` is refused.
        let signed = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("alg", json!(alg)));
        let err = check(&auth, &signed).await.expect_err("alg none rejected");
        assert!(matches!(err, AuthError::UnsupportedAlgorithm(_)), "{err}");
    }
    let no_alg = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).without_header("alg"));
    assert!(matches!(
        check(&auth, &no_alg).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_rejected() {
    let (idp, auth) = setup().await;
    let der = idp.public_key_der(DEFAULT_KID).expect("published key");
    let modulus = idp.public_key_modulus(DEFAULT_KID).expect("published key");
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&der)
    );
    let jwk_n = URL_SAFE_NO_PAD.encode(&modulus);
    for secret in [der, modulus, pem.into_bytes(), jwk_n.into_bytes()] {
        for alg in ["HS256", "hs256", "HS384", "HS512"] {
            let token = idp.mint(
                &TokenSpec::valid(APP_ID, SERVICE_URL)
                    .header("alg", json!(alg))
                    .signed_with(Signer::Hmac(secret.clone())),
            );
            let err = check(&auth, &token).await.expect_err("HMAC token rejected");
            assert!(matches!(err, AuthError::UnsupportedAlgorithm(_)), "{err}");
        }
        // An HMAC signature under an RS256 header does not verify either.
        let token = idp
            .mint(&TokenSpec::valid(APP_ID, SERVICE_URL).signed_with(Signer::Hmac(secret.clone())));
        let err = check(&auth, &token)
            .await
            .expect_err("HMAC signature rejected");
        assert!(matches!(err, AuthError::InvalidSignature), "{err}");
    }
}

#[tokio::test]
async fn other_algorithms_are_rejected() {
    let (idp, auth) = setup().await;
    for alg in ["RS384", "RS512", "PS256", "ES256", "EdDSA", "rs256", ""] {
        let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("alg", json!(alg)));
        let err = check(&auth, &token).await.expect_err("algorithm rejected");
        assert!(
            matches!(err, AuthError::UnsupportedAlgorithm(ref a) if a == alg),
            "{alg}: {err}"
        );
    }
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("alg", json!(["RS256"])));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn unknown_kid_is_rejected() {
    let (idp, auth) = setup().await;
    let token =
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("kid", json!("attacker-key")));
    let err = check(&auth, &token)
        .await
        .expect_err("unknown kid rejected");
    assert!(
        matches!(err, AuthError::UnknownKeyId { ref kid, .. } if kid == "attacker-key"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_kid_is_rejected() {
    let (idp, auth) = setup().await;
    // Signed with the genuine published key, but the header does not say which.
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).without_header("kid"));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::MissingKeyId)
    ));
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("kid", json!("")));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::MissingKeyId)
    ));
    // No request was needed to refuse it.
    assert_eq!(idp.metadata_requests(), 0);
}

#[tokio::test]
async fn signature_by_an_unpublished_key_is_rejected() {
    let (idp, auth) = setup().await;
    let token =
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).signed_with(Signer::UnpublishedKey));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::InvalidSignature)
    ));
}

#[tokio::test]
async fn tampered_payload_or_header_is_rejected() {
    let (idp, auth) = setup().await;
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL));
    check(&auth, &token)
        .await
        .expect("untampered token accepted");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);

    // Swap the payload for one claiming a different serviceUrl, keep the signature.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["serviceurl"] = json!("https://evil.example/");
    let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let err = auth
        .validate(&bearer(&forged), "https://evil.example/")
        .await
        .expect_err("tampered payload rejected");
    assert!(matches!(err, AuthError::InvalidSignature), "{err}");

    // Extend the expiry.
    claims["serviceurl"] = json!(SERVICE_URL);
    claims["exp"] = json!(now_unix() + 10 * 365 * 86_400);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert!(matches!(
        check(&auth, &forged).await,
        Err(AuthError::InvalidSignature)
    ));

    // Flip one bit of the signature.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    sig[10] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert!(matches!(
        check(&auth, &forged).await,
        Err(AuthError::InvalidSignature)
    ));

    // Header changed (typ added) under the same signature.
    let header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "RS256", "kid": DEFAULT_KID, "typ": "JOSE"}).to_string());
    let forged = format!("{header}.{}.{}", parts[1], parts[2]);
    assert!(matches!(
        check(&auth, &forged).await,
        Err(AuthError::InvalidSignature)
    ));
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let (idp, auth) = setup().await;
    for iss in [
        json!("https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/"),
        json!("https://api.botframework.com/"),
        json!("https://API.botframework.com"),
        json!(["https://api.botframework.com"]),
    ] {
        let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("iss", iss.clone()));
        let err = check(&auth, &token)
            .await
            .expect_err("wrong issuer rejected");
        assert!(matches!(err, AuthError::WrongIssuer { .. }), "{iss}: {err}");
    }
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).without_claim("iss"));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::WrongIssuer { found: None })
    ));
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let (idp, auth) = setup().await;
    for aud in [
        json!("another-bot"),
        json!(["another-bot", "yet-another"]),
        json!(APP_ID.to_uppercase()),
        json!(""),
        json!(42),
    ] {
        let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("aud", aud.clone()));
        let err = check(&auth, &token)
            .await
            .expect_err("wrong audience rejected");
        assert!(
            matches!(err, AuthError::WrongAudience { .. }),
            "{aud}: {err}"
        );
    }
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).without_claim("aud"));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::WrongAudience { .. })
    ));
}

#[tokio::test]
async fn expired_token_is_rejected_beyond_the_skew() {
    let (idp, auth) = setup().await;
    let now = now_unix();
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("exp", json!(now - 6 * 60)));
    let err = check(&auth, &token)
        .await
        .expect_err("expired token rejected");
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
    // Within the 5-minute skew it is still accepted.
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("exp", json!(now - 2 * 60)));
    check(&auth, &token)
        .await
        .expect("expired within the skew accepted");
    // No expiry at all is refused.
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).without_claim("exp"));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::MissingExpiry)
    ));
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("exp", json!("tomorrow")));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn not_yet_valid_token_is_rejected_beyond_the_skew() {
    let (idp, auth) = setup().await;
    let now = now_unix();
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("nbf", json!(now + 10 * 60)));
    let err = check(&auth, &token)
        .await
        .expect_err("future token rejected");
    assert!(matches!(err, AuthError::NotYetValid { .. }), "{err}");
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).claim("nbf", json!(now + 2 * 60)));
    check(&auth, &token)
        .await
        .expect("nbf within the skew accepted");
}

#[tokio::test]
async fn service_url_mismatch_is_rejected() {
    let (idp, auth) = setup().await;
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL));
    for activity_url in [
        "https://evil.example/amer/",
        "https://smba.trafficmanager.net/emea/",
        "https://smba.trafficmanager.net.evil.example/amer/",
        "",
    ] {
        let err = auth
            .validate(&bearer(&token), activity_url)
            .await
            .expect_err("serviceUrl mismatch rejected");
        assert!(
            matches!(err, AuthError::ServiceUrlMismatch { .. }),
            "{activity_url}: {err}"
        );
    }
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).without_claim("serviceurl"));
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::MissingServiceUrl)
    ));
    // Two spellings of the claim that disagree are refused, not chosen between.
    let token = idp.mint(
        &TokenSpec::valid(APP_ID, SERVICE_URL).claim("serviceUrl", json!("https://evil.example/")),
    );
    assert!(matches!(
        check(&auth, &token).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn endorsement_is_checked_for_the_channel() {
    let (idp, auth) = setup().await;
    let token = bearer(&idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL)));
    auth.validate_for_channel(&token, SERVICE_URL, "msteams")
        .await
        .expect("key endorsed for msteams");
    let err = auth
        .validate_for_channel(&token, SERVICE_URL, "webchat")
        .await
        .expect_err("key not endorsed for webchat");
    assert!(matches!(err, AuthError::MissingEndorsement { .. }), "{err}");
}

#[tokio::test]
async fn malformed_authorization_values_are_rejected() {
    let (idp, auth) = setup().await;
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL));
    for value in [
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwdw==",
        token.as_str(),
    ] {
        let err = auth
            .validate(value, SERVICE_URL)
            .await
            .expect_err("no bearer token");
        assert!(matches!(err, AuthError::MissingToken), "{value:?}: {err}");
    }
    for value in [
        "Bearer a.b",
        "Bearer a.b.c.d.e",
        "Bearer !!!.???.***",
        "Bearer e30.e30",
        "Bearer .e30.abc",
    ] {
        let err = auth
            .validate(value, SERVICE_URL)
            .await
            .expect_err("malformed token");
        assert!(matches!(err, AuthError::Malformed(_)), "{value:?}: {err}");
    }
    let huge = format!("Bearer {}", "a".repeat(20_000));
    assert!(matches!(
        auth.validate(&huge, SERVICE_URL).await,
        Err(AuthError::Malformed(_))
    ));
    let crit = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("crit", json!(["exp"])));
    assert!(matches!(
        check(&auth, &crit).await,
        Err(AuthError::UnsupportedCriticalHeader)
    ));
    // None of these needed the keys.
    assert_eq!(idp.metadata_requests(), 0);
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    // Long enough that the burst below surely fits in it even on a loaded machine.
    let interval = Duration::from_secs(2);
    let (idp, auth) = setup_with(interval).await;
    let valid = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL));
    let attack: Vec<String> = (0..71)
        .map(|i| {
            idp.mint(
                &TokenSpec::valid(APP_ID, SERVICE_URL).header("kid", json!(format!("bogus-{i}"))),
            )
        })
        .collect();
    check(&auth, &valid).await.expect("valid token accepted");
    assert_eq!(idp.jwks_requests(), 1);

    // A burst of tokens with unknown kids right after a fetch triggers no fetch at all.
    for token in &attack[..50] {
        let err = check(&auth, token).await.expect_err("unknown kid rejected");
        assert!(
            matches!(
                err,
                AuthError::UnknownKeyId {
                    refetch_suppressed: true,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(idp.metadata_requests(), 1);
    assert_eq!(idp.jwks_requests(), 1);

    // After the interval, one unknown kid may trigger exactly one refetch ...
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let err = check(&auth, &attack[50])
        .await
        .expect_err("unknown kid rejected");
    assert!(
        matches!(
            err,
            AuthError::UnknownKeyId {
                refetch_suppressed: false,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(idp.jwks_requests(), 2);
    // ... and the burst after it is suppressed again.
    for token in &attack[51..] {
        assert!(check(&auth, token).await.is_err());
    }
    assert_eq!(idp.metadata_requests(), 2);
    assert_eq!(idp.jwks_requests(), 2);
    // Known keys keep working throughout.
    check(&auth, &valid)
        .await
        .expect("valid token still accepted");
}

#[tokio::test]
async fn concurrent_first_requests_fetch_keys_once() {
    let (idp, auth) = setup().await;
    let token = bearer(&idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let auth = auth.clone();
        let token = token.clone();
        tasks.spawn(async move { auth.validate(&token, SERVICE_URL).await.is_ok() });
    }
    while let Some(ok) = tasks.join_next().await {
        assert!(ok.expect("task ran"), "every concurrent validation passes");
    }
    assert_eq!(idp.metadata_requests(), 1);
    assert_eq!(idp.jwks_requests(), 1);
}

#[tokio::test]
async fn rotated_key_is_picked_up_after_the_interval() {
    let interval = Duration::from_secs(1);
    // Key generation must not eat into the interval measured below.
    approvals_teams::fake::warm_key_pool(1).await;
    let (idp, auth) = setup_with(interval).await;
    check(&auth, &idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL)))
        .await
        .expect("first key accepted");
    idp.publish_key("fake-key-2", &["msteams"]).await;
    let rotated =
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("kid", json!("fake-key-2")));
    // Too soon: the refetch is suppressed.
    assert!(matches!(
        check(&auth, &rotated).await,
        Err(AuthError::UnknownKeyId {
            refetch_suppressed: true,
            ..
        })
    ));
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let claims = check(&auth, &rotated).await.expect("rotated key accepted");
    assert_eq!(claims.key_id, "fake-key-2");
}

#[tokio::test]
async fn unreachable_keys_fail_closed_and_are_retryable() {
    let interval = Duration::from_secs(1);
    let (idp, auth) = setup_with(interval).await;
    idp.set_unavailable(true);
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL));
    let err = check(&auth, &token).await.expect_err("no keys, no entry");
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err}");
    assert!(err.is_retryable());
    // A failed fetch counts toward the rate limit too.
    idp.set_unavailable(false);
    assert!(check(&auth, &token).await.is_err());
    assert_eq!(idp.metadata_requests(), 1);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    check(&auth, &token).await.expect("keys reachable again");
}

#[tokio::test]
async fn insecure_metadata_url_is_refused() {
    for url in [
        "http://login.botframework.com/v1/.well-known/openidconfiguration",
        "file:///etc/passwd",
        "https://user:pw@login.botframework.com/",
    ] {
        let err = BotAuthenticator::new(AuthConfig::new(APP_ID).with_openid_metadata_url(url))
            .expect_err("insecure metadata URL refused");
        assert!(matches!(err, AuthError::Config(_)), "{url}: {err}");
    }
}

#[tokio::test]
async fn stale_keys_are_refreshed_but_kept_when_the_refresh_fails() {
    let idp = FakeOpenId::start().await.expect("fake starts");
    let mut config = AuthConfig::new(APP_ID)
        .with_openid_metadata_url(idp.metadata_url())
        .with_min_refetch_interval(Duration::from_millis(1));
    config.max_key_age = Duration::from_millis(1);
    let auth = BotAuthenticator::new(config).expect("authenticator builds");
    let token = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL));
    check(&auth, &token).await.expect("first fetch");
    tokio::time::sleep(Duration::from_millis(20)).await;
    check(&auth, &token).await.expect("stale keys refreshed");
    assert_eq!(idp.jwks_requests(), 2);
    // The endpoint goes down: the known (stale) key keeps working, the outage is not a lockout.
    idp.set_unavailable(true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    check(&auth, &token)
        .await
        .expect("stale key used while the endpoint is down");
    assert_eq!(idp.metadata_requests(), 3);
    // A key it never saw is still refused.
    let other = idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL).header("kid", json!("new")));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(matches!(
        check(&auth, &other).await,
        Err(AuthError::KeysUnavailable(_))
    ));
}
