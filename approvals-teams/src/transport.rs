//! Outbound HTTP plumbing shared by every module: the TLS client and endpoint URL checks.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_platform_verifier::BuilderVerifierExt;
use url::Url;

/// Default timeout for one outbound HTTP request (connect + response).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Building the HTTP client or checking an endpoint address failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TLS configuration could not be built (the platform certificate store could not be
    /// read). Check that the machine has CA certificates installed.
    #[error("cannot configure TLS: {0}; check that the system CA certificates are installed")]
    Tls(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// An endpoint URL is not acceptable.
    #[error(
        "{what} URL {url:?} is not acceptable: {reason}; use an https:// URL (plain http is \
         accepted only for loopback test servers)"
    )]
    InvalidUrl {
        /// Which endpoint the URL is for.
        what: &'static str,
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Builds the HTTP client used by this crate: rustls with the `ring` provider, the platform's
/// certificate verifier, no redirects (a redirect could carry a bearer token elsewhere) and
/// the given overall request timeout.
///
/// Pass one client to several components (`with_http_client` constructors) to share its
/// connection pool.
pub fn build_http_client(timeout: Duration) -> Result<reqwest::Client, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_platform_verifier()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(TransportError::Client)
}

/// Parses an endpoint URL and refuses anything a bearer token or signing key must not travel
/// over: non-http(s) schemes, credentials in the URL, and plain http to a non-loopback host.
pub(crate) fn endpoint_url(what: &'static str, raw: &str) -> Result<Url, TransportError> {
    let invalid = |reason| TransportError::InvalidUrl {
        what,
        url: raw.to_owned(),
        reason,
    };
    let url = Url::parse(raw).map_err(|_| invalid("it does not parse as a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it contains credentials"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(invalid("plain http to a non-loopback host")),
        _ => return Err(invalid("the scheme is not https")),
    }
    if url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Reads a response body, refusing bodies larger than `limit` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reading a response body failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge { limit: usize },
    Transport(reqwest::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge { limit } => write!(f, "response body larger than {limit} bytes"),
            ReadError::Transport(e) => write!(f, "reading the response body failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        assert!(endpoint_url("x", "https://login.botframework.com/v1/x").is_ok());
        assert!(endpoint_url("x", "http://127.0.0.1:8080/x").is_ok());
        assert!(endpoint_url("x", "http://[::1]:8080/x").is_ok());
        assert!(endpoint_url("x", "http://localhost:1/x").is_ok());
        assert!(endpoint_url("x", "http://example.com/x").is_err());
        assert!(endpoint_url("x", "ftp://example.com/x").is_err());
        assert!(endpoint_url("x", "https://user:pw@example.com/x").is_err());
        assert!(endpoint_url("x", "not a url").is_err());
    }

    #[test]
    fn client_builds_without_a_process_default_provider() {
        assert!(build_http_client(DEFAULT_HTTP_TIMEOUT).is_ok());
    }
}
