//! The HTTP call an agent asks to make: [`HttpCall`], the action convention reviewers see, and
//! [`call_binding`], the hash that ties a grant token to exactly that call.

use std::borrow::Cow;
use std::fmt;

use approvals_core::request::canonical_json;
use approvals_core::{Action, ActionRequest};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

/// The domain string the binding hash starts with (it keeps these hashes apart from any other
/// SHA-256 the system takes).
pub const BINDING_DOMAIN: &str = "approvals.http-call.v1\n";

/// Why a call cannot be bound, or an action is not an HTTP call this crate understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The body is neither empty nor one JSON value (with no key twice in an object).
    #[error(
        "the body is not JSON ({0}): only empty and JSON bodies can be bound to an approval; send the approved JSON"
    )]
    BodyNotJson(String),
    /// The action's kind, resource or parameters do not describe an HTTP call.
    #[error(
        "the action is not an HTTP call: {0}; build it with approvals_http::downstream::HttpCall"
    )]
    NotACall(String),
}

fn not_a_call(why: impl Into<String>) -> CallError {
    CallError::NotACall(why.into())
}

/// The binding of one HTTP call: lowercase hex SHA-256 of
///
/// ```text
/// "approvals.http-call.v1\n" || METHOD || "\n" || path-and-query || "\n" || canonical body
/// ```
///
/// `METHOD` is uppercased; `path_and_query` is taken exactly as sent (`/v1/refunds?dry=1`, no
/// decoding or normalisation); the canonical body is empty for an empty body and, for a JSON
/// body, the canonical JSON of the parsed value (sorted keys, no whitespace:
/// [`canonical_json`]), so key order and whitespace do not matter but any value does. Any
/// other body (form data, text, bytes, JSON with a key twice) is refused
/// ([`CallError::BodyNotJson`]): it cannot be shown to a reviewer as data, and a guard cannot
/// tell two encodings of it apart.
///
/// Numbers are compared as parsed (integers exactly within 64 bits, others as `f64`); a
/// service that reads numbers with more precision than that should send them as strings.
///
/// ```
/// use approvals_http::downstream::call_binding;
///
/// let a = call_binding("post", "/v1/refunds", br#"{"amount": 5, "to": "acct_1"}"#)?;
/// let b = call_binding("POST", "/v1/refunds", br#"{"to":"acct_1","amount":5}"#)?;
/// assert_eq!(a, b);
/// assert_ne!(a, call_binding("POST", "/v1/refunds", br#"{"to":"acct_1","amount":50}"#)?);
/// # Ok::<(), approvals_http::downstream::CallError>(())
/// ```
pub fn call_binding(method: &str, path_and_query: &str, body: &[u8]) -> Result<String, CallError> {
    if body.is_empty() {
        return Ok(value_binding(method, path_and_query, None));
    }
    let value = parse_strict(body)?;
    Ok(value_binding(method, path_and_query, Some(&value)))
}

/// [`call_binding`] of a call whose body is `body` (`None`: no body).
pub fn value_binding(method: &str, path_and_query: &str, body: Option<&Value>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(BINDING_DOMAIN);
    hasher.update(method.to_ascii_uppercase());
    hasher.update(b"\n");
    hasher.update(path_and_query);
    hasher.update(b"\n");
    if let Some(body) = body {
        hasher.update(canonical_json(body));
    }
    hex::encode(hasher.finalize())
}

/// Parses one JSON value, refusing an object with a key twice (parsers disagree on which
/// one wins, so the guard and the service could read different values).
fn parse_strict(body: &[u8]) -> Result<Value, CallError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let Strict(value) =
        Strict::deserialize(&mut de).map_err(|e| CallError::BodyNotJson(e.to_string()))?;
    de.end()
        .map_err(|e| CallError::BodyNotJson(e.to_string()))?;
    Ok(value)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {:?} appears twice in one object",
                    crate::html::truncate(&key, 80)
                )));
            }
            let Strict(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// An HTTP call to a service, as an action: what an agent submits so that a
/// [`GrantTokenBroker`](super::GrantTokenBroker) can mint a token for exactly this call.
///
/// The action's resource is the service origin and path (`https://billing.internal/v1/refunds`)
/// and its parameters are the call, so reviewers see exactly what will be sent:
///
/// ```json
/// {"method": "POST", "path": "/v1/refunds?notify=1", "body": {"charge": "ch_1", "amount": 500}}
/// ```
///
/// `path` is the path and query exactly as sent; `body` is absent for a call without a body.
/// Send it to [`url`](HttpCall::url) with the body as JSON (any key order or whitespace).
///
/// ```
/// use approvals_core::Action;
/// use approvals_http::downstream::HttpCall;
/// use serde_json::json;
///
/// let call = HttpCall::new(
///     "billing.refund",
///     "https://Billing.internal",
///     "post",
///     "/v1/refunds",
///     Some(json!({"charge": "ch_1", "amount": 500})),
/// );
/// assert_eq!(call.resource(), "https://billing.internal/v1/refunds");
/// assert_eq!(call.params()["method"], "POST");
/// assert_eq!(call.url(), "https://billing.internal/v1/refunds");
/// call.check()?; // what the broker will check, before asking anyone to approve
/// # Ok::<(), approvals_http::downstream::CallError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    kind: String,
    origin: String,
    method: String,
    path_and_query: String,
    body: Option<Value>,
    justification: Option<String>,
}

impl HttpCall {
    /// A call of `method` to `path_and_query` on the service at `service_origin`
    /// (`https://billing.internal`, lowercased; a trailing `/` is dropped), with a JSON body or
    /// none. `kind` is the action kind policies match (`billing.refund`). Nothing is checked
    /// here; [`check`](HttpCall::check) says what a broker would refuse.
    pub fn new(
        kind: impl Into<String>,
        service_origin: impl Into<String>,
        method: impl Into<String>,
        path_and_query: impl Into<String>,
        body: Option<Value>,
    ) -> HttpCall {
        let origin: String = service_origin.into();
        let origin = origin_of(&origin).unwrap_or_else(|_| origin.trim_end_matches('/').into());
        HttpCall {
            kind: kind.into(),
            origin,
            method: method.into().to_ascii_uppercase(),
            path_and_query: path_and_query.into(),
            body,
            justification: None,
        }
    }

    /// Says why the agent wants to make this call (reviewers see it).
    pub fn justification(mut self, why: impl Into<String>) -> HttpCall {
        self.justification = Some(why.into());
        self
    }

    /// The service origin, `scheme://host[:port]`: the audience of its tokens.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The method, uppercase.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path and query, exactly as sent.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The JSON body, if the call has one.
    pub fn body(&self) -> Option<&Value> {
        self.body.as_ref()
    }

    /// The URL to send the call to: origin, path and query.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin, self.path_and_query)
    }

    /// The call's binding ([`call_binding`]), the `bind` claim of its tokens.
    pub fn binding(&self) -> String {
        value_binding(&self.method, &self.path_and_query, self.body.as_ref())
    }

    /// What a credential for it allows, for humans: `POST /v1/refunds on https://billing.internal`.
    pub fn scope(&self) -> String {
        format!("{} {} on {}", self.method, self.path_and_query, self.origin)
    }

    /// Checks the call as a broker will ([`from_action`](HttpCall::from_action)): an
    /// `http(s)` origin, a method, and a path and query that a URL-normalising client (reqwest,
    /// curl) sends unchanged.
    pub fn check(&self) -> Result<(), CallError> {
        HttpCall::from_action(&self.to_request()).map(drop)
    }

    /// Reads a call back from an action: the origin from its resource, the method, path and
    /// body from its parameters. Refuses (with what to change) a resource that is not an
    /// `http(s)` URL without credentials, query or fragment, parameters other than `method`,
    /// `path` and `body`, a method that is not an HTTP token, a path that does not start with
    /// `/`, is not the resource's path, or would not be sent exactly as written.
    pub fn from_action(action: &ActionRequest) -> Result<HttpCall, CallError> {
        let resource = Url::parse(&action.resource)
            .map_err(|e| not_a_call(format!("the resource is not a URL ({e})")))?;
        let origin = origin_of(&action.resource)?;
        if resource.query().is_some() || resource.fragment().is_some() {
            return Err(not_a_call(
                "the resource has a query or fragment; the query belongs in params.path",
            ));
        }
        let Some(params) = action.params.as_object() else {
            return Err(not_a_call("params must be an object {method, path, body}"));
        };
        if let Some(other) = params
            .keys()
            .find(|k| !matches!(k.as_str(), "method" | "path" | "body"))
        {
            return Err(not_a_call(format!(
                "params.{} is not part of an HTTP call; use only method, path and body",
                crate::html::truncate(other, 40)
            )));
        }
        let method = match params.get("method") {
            Some(Value::String(m)) if http::Method::from_bytes(m.as_bytes()).is_ok() => {
                m.to_ascii_uppercase()
            }
            _ => {
                return Err(not_a_call(
                    "params.method must be an HTTP method such as \"POST\"",
                ));
            }
        };
        let Some(Value::String(path)) = params.get("path") else {
            return Err(not_a_call(
                "params.path must be a string such as \"/v1/refunds\"",
            ));
        };
        check_path(&origin, path)?;
        let path_only = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
        if resource.path() != path_only {
            return Err(not_a_call(format!(
                "the resource's path {:?} is not params.path's {:?}",
                crate::html::truncate(resource.path(), 200),
                crate::html::truncate(path_only, 200)
            )));
        }
        Ok(HttpCall {
            kind: action.kind.to_string(),
            origin,
            method,
            path_and_query: path.clone(),
            body: params.get("body").cloned(),
            justification: action.justification.as_deref().map(String::from),
        })
    }
}

impl Action for HttpCall {
    fn kind(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.kind)
    }

    /// The origin and path, without the query: `https://billing.internal/v1/refunds`.
    fn resource(&self) -> Cow<'_, str> {
        let path = self
            .path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p);
        Cow::Owned(format!("{}{}", self.origin, path))
    }

    /// `{"method": .., "path": .., "body": ..}` (no `body` for a call without one).
    fn params(&self) -> Value {
        let mut params = json!({"method": self.method, "path": self.path_and_query});
        if let (Some(body), Value::Object(map)) = (&self.body, &mut params) {
            map.insert("body".into(), body.clone());
        }
        params
    }

    fn summary(&self) -> Option<String> {
        Some(self.scope())
    }

    fn justification(&self) -> Option<String> {
        self.justification.clone()
    }
}

/// The origin of an `http(s)` URL, `scheme://host[:port]` lowercase (default ports left out).
pub(crate) fn origin_of(url: &str) -> Result<String, CallError> {
    let url = Url::parse(url).map_err(|e| not_a_call(format!("the service is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(not_a_call(format!(
            "the service URL's scheme is {:?}; only http and https calls are brokered",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(not_a_call(
            "the service URL carries credentials; leave them out",
        ));
    }
    if !url.has_host() {
        return Err(not_a_call("the service URL has no host"));
    }
    Ok(url.origin().ascii_serialization())
}

/// The path and query must be sent exactly as bound: origin-form, and unchanged when a
/// client parses the URL.
fn check_path(origin: &str, path: &str) -> Result<(), CallError> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(not_a_call(format!(
            "params.path {:?} must start with a single \"/\"",
            crate::html::truncate(path, 200)
        )));
    }
    if path.contains('#') || path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(not_a_call(format!(
            "params.path {:?} is not a valid path and query",
            crate::html::truncate(path, 200)
        )));
    }
    let sent = Url::parse(&format!("{origin}{path}"))
        .map_err(|e| not_a_call(format!("params.path does not make a URL ({e})")))?;
    let sent = &sent[url::Position::BeforePath..url::Position::AfterQuery];
    if sent != path {
        return Err(not_a_call(format!(
            "params.path {:?} would be sent as {:?}; write it that way",
            crate::html::truncate(path, 200),
            crate::html::truncate(sent, 200)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_ignore_encoding_but_not_values() {
        let a = call_binding("POST", "/v1/r?x=1", br#"{"a":1,"b":[true,null]}"#).expect("json");
        let b = call_binding(
            "post",
            "/v1/r?x=1",
            b" { \"b\" : [true, null], \"a\" : 1 }\n",
        )
        .expect("json");
        assert_eq!(a, b);
        for (method, path, body) in [
            ("PUT", "/v1/r?x=1", &br#"{"a":1,"b":[true,null]}"#[..]),
            ("POST", "/v1/r?x=2", br#"{"a":1,"b":[true,null]}"#),
            ("POST", "/v1/r", br#"{"a":1,"b":[true,null]}"#),
            ("POST", "/v1/r?x=1", br#"{"a":1.0,"b":[true,null]}"#),
            ("POST", "/v1/r?x=1", br#"{"a":"1","b":[true,null]}"#),
            ("POST", "/v1/r?x=1", br#"{"a":1,"b":[null,true]}"#),
            ("POST", "/v1/r?x=1", b""),
        ] {
            assert_ne!(
                a,
                call_binding(method, path, body).expect("json"),
                "{path} {body:?}"
            );
        }
        assert_ne!(
            call_binding("POST", "/", b"").expect("empty"),
            call_binding("POST", "/", b"null").expect("json")
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn bodies_that_are_not_one_json_value_are_refused() {
        for body in [
            &b"amount=5"[..],
            b" ",
            b"{\"a\":1} {}",
            b"{\"a\":1,\"a\":2}",
            b"[{\"a\":1,\"a\":1}]",
            b"\xff",
        ] {
            assert!(
                matches!(
                    call_binding("POST", "/", body),
                    Err(CallError::BodyNotJson(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn an_action_reads_back_as_the_same_call() {
        let call = HttpCall::new(
            "billing.refund",
            "HTTPS://Billing.Internal:443/",
            "post",
            "/v1/refunds?notify=1",
            Some(json!({"amount": 5})),
        );
        assert_eq!(call.resource(), "https://billing.internal/v1/refunds");
        let back = HttpCall::from_action(&call.to_request()).expect("a call");
        assert_eq!(back, call);
        assert_eq!(back.binding(), call.binding());
        assert_eq!(
            call.scope(),
            "POST /v1/refunds?notify=1 on https://billing.internal"
        );
    }

    #[test]
    fn actions_that_are_not_calls_are_refused() {
        let ok = HttpCall::new("k", "http://svc:8080", "GET", "/a", None).to_request();
        assert!(HttpCall::from_action(&ok).is_ok());
        let with = |resource: &str, params: Value| {
            let mut a = ActionRequest::new("k", resource);
            a.params = std::sync::Arc::new(params);
            HttpCall::from_action(&a)
        };
        let call = json!({"method": "GET", "path": "/a"});
        for (resource, params) in [
            ("ftp://svc/a", call.clone()),
            ("svc/a", call.clone()),
            ("http://user:pw@svc/a", call.clone()),
            ("http://svc/a?x=1", call.clone()),
            ("http://svc/b", call.clone()),
            ("http://svc/a", json!({"path": "/a"})),
            ("http://svc/a", json!({"method": "G ET", "path": "/a"})),
            ("http://svc/a", json!({"method": "GET"})),
            ("http://svc/a", json!({"method": "GET", "path": "a"})),
            (
                "http://svc/a",
                json!({"method": "GET", "path": "/a", "headers": {}}),
            ),
            ("http://svc/a%20b", json!({"method": "GET", "path": "/a b"})),
            ("http://svc/a", json!({"method": "GET", "path": "/a#frag"})),
            ("http://svc/a", json!({"method": "GET", "path": "/b/../a"})),
            ("http://svc/a", json!(["GET", "/a"])),
        ] {
            assert!(
                matches!(with(resource, params.clone()), Err(CallError::NotACall(_))),
                "{resource} {params}"
            );
        }
    }
}
