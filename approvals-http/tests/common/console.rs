//! Calling the review console in-process as a browser would: a form post with a host and
//! origin, a signed-in session cookie, the page's CSRF token.

use bytes::Bytes;
use http::{Method, Request, header};

use super::Reply;
use approvals_http::ReviewServer;

pub const HOST: &str = "review.test:8480";
pub const ORIGIN: &str = "http://review.test:8480";

pub async fn send(
    server: &ReviewServer,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    let body = match form {
        Some(fields) => {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                s.append_pair(k, v);
            }
            Bytes::from(s.finish())
        }
        None => Bytes::new(),
    };
    let resp = server.handle(b.body(body).expect("request")).await;
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Signs in; returns the `name=value` cookie.
pub async fn login(server: &ReviewServer, token: &str) -> String {
    let r = send(
        server,
        Method::POST,
        "/console/login",
        None,
        Some(ORIGIN),
        Some(&[("token", token)]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie").expect("cookie").to_owned();
    set.split(';').next().expect("pair").to_owned()
}

pub fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("csrf field") + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}
