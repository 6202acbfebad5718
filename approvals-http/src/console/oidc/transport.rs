//! The HTTP client the `openidconnect` crate calls the provider with: this crate's reqwest
//! client (rustls, the platform's verifier, no redirects: a redirect could lead the token
//! request elsewhere), answers bounded in size.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{HttpRequest, HttpResponse};

use super::{OidcError, error_chain};

/// Largest answer read from the provider, in bytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub(super) struct Http(reqwest::Client);

/// A call to the provider failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HttpError(String);

impl Http {
    pub(super) fn new(timeout: Duration) -> Result<Self, OidcError> {
        crate::client::http_client(timeout)
            .map(Http)
            .map_err(|e| OidcError::Config(format!("cannot build the HTTP client: {e}")))
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)
                .map_err(|e| HttpError(format!("cannot build the request: {e}")))?;
            let url = request.url().clone();
            let mut response = self
                .0
                .execute(request)
                .await
                .map_err(|e| HttpError(format!("{url}: {}", error_chain(&e))))?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| HttpError(format!("{url}: {}", error_chain(&e))))?
            {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError(format!(
                        "{url}: the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder
                .body(body)
                .map_err(|e| HttpError(format!("{url}: {e}")))
        })
    }
}
