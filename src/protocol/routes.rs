//! The admin protocol over HTTP: which method and path carry each [`Request`], its body and
//! query, and how a refusal becomes an RFC 9457 problem. Both ways, for the API server and
//! for `flipdns ctl --server`, so the two cannot drift; `docs/openapi.json` describes the
//! same table ([`ROUTES`]), and a test holds them equal.
//!
//! A reply body is the admin protocol's: `200` with the [`Response`] (`{"status": {...}}`),
//! or a problem carrying the [`ErrorKind`] and its exit code. A flip or rollback asked with
//! `Accept: text/event-stream` (and every `events` request) streams the admin protocol's
//! reply lines as Server-Sent Events: `event: progress|ok|error`, `data: LINE`.

use serde::{Deserialize, Serialize};

use super::{Color, Error, ErrorKind, Outcome, Request, ResolverClass, Response};

/// Every route: method and path template, as `docs/openapi.json` lists them.
pub const ROUTES: [(&str, &str); 16] = [
    ("GET", "/v1/version"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/{name}"),
    ("POST", "/v1/services/{name}/prepare"),
    ("POST", "/v1/services/{name}/flip"),
    ("POST", "/v1/services/{name}/rollback"),
    ("POST", "/v1/services/{name}/cancel"),
    ("POST", "/v1/services/{name}/approve"),
    ("POST", "/v1/services/{name}/addresses"),
    ("GET", "/v1/services/{name}/stragglers"),
    ("GET", "/v1/services/{name}/events"),
    ("GET", "/v1/history"),
    ("POST", "/v1/reload"),
    ("POST", "/v1/notify"),
    ("POST", "/v1/log-level"),
    ("GET", "/v1/openapi.json"),
];

/// The media type of a Server-Sent Events stream.
pub const EVENT_STREAM: &str = "text/event-stream";

/// The media type of a problem (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A request as it goes over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path and, when there is one, the query.
    pub target: String,
    /// A JSON body, for `POST`.
    pub body: Option<String>,
    /// Whether the reply is an event stream (`Accept: text/event-stream`).
    pub stream: bool,
}

/// Why an HTTP request is no protocol request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such resource.
    NotFound,
    /// The resource exists, with other methods.
    Method {
        /// The method it takes.
        allowed: &'static str,
    },
    /// A body that is not `application/json`.
    MediaType,
    /// A body or query that is not what the resource takes.
    Invalid(String),
}

impl RouteError {
    /// The error as a problem's kind and words.
    pub fn error(&self, method: &str, path: &str) -> (u16, Error) {
        let (status, message) = match self {
            RouteError::NotFound => (
                404,
                format!("no resource {path}: `GET /v1/openapi.json` lists them"),
            ),
            RouteError::Method { allowed } => {
                (405, format!("{method} {path}: allowed is {allowed}"))
            }
            RouteError::MediaType => (
                415,
                "a body must be JSON (Content-Type: application/json)".into(),
            ),
            RouteError::Invalid(why) => (400, why.clone()),
        };
        (status, Error::new(ErrorKind::Invalid, message))
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct FlipBody {
    to: Option<Color>,
    #[serde(default)]
    now: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    no_wait_secondaries: bool,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    no_wait_secondaries: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AddressesBody {
    color: Color,
    addresses: Vec<std::net::IpAddr>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    check: bool,
    #[serde(default)]
    no_wait_secondaries: bool,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct NotifyBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secondary: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LogLevelBody {
    filter: String,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The HTTP form of `request`.
pub fn to_http(request: &Request) -> HttpRequest {
    let (method, target, body, stream) = match request {
        Request::Version => ("GET", "/v1/version".to_string(), None, false),
        Request::Status { service: None } => ("GET", "/v1/services".into(), None, false),
        Request::History {
            service,
            limit,
            reads,
        } => {
            let mut query = Vec::new();
            if let Some(service) = service {
                query.push(format!("service={}", encode(service)));
            }
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if *reads {
                query.push("reads=true".into());
            }
            ("GET", with_query("/v1/history".into(), &query), None, false)
        }
        Request::Reload { force } => (
            "POST",
            "/v1/reload".into(),
            json(&ReloadBody { force: *force }),
            false,
        ),
        Request::Notify { secondary } => {
            let body = NotifyBody {
                secondary: secondary.clone(),
            };
            ("POST", "/v1/notify".into(), json(&body), false)
        }
        Request::LogLevel { filter } => {
            let body = LogLevelBody {
                filter: filter.clone(),
            };
            ("POST", "/v1/log-level".into(), json(&body), false)
        }
        about_a_service => service_to_http(about_a_service),
    };
    HttpRequest {
        method,
        target,
        body,
        stream,
    }
}

/// The query of a stragglers report: the options `ctl stragglers` takes.
fn stragglers_query(limit: Option<usize>, classes: &[ResolverClass], all: bool) -> Vec<String> {
    let mut query = Vec::new();
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    for class in classes {
        query.push(format!("class={}", name_of(class)));
    }
    if all {
        query.push("all=true".into());
    }
    query
}

/// The method, target, body and whether to stream of a request about one service (under
/// `/v1/services/{name}`).
fn service_to_http(request: &Request) -> (&'static str, String, Option<String>, bool) {
    let service = |name: &str, what: &str| format!("/v1/services/{}{what}", encode(name));
    match request {
        Request::Status {
            service: Some(name),
        } => ("GET", service(name, ""), None, false),
        Request::Prepare { service: name } => ("POST", service(name, "/prepare"), None, false),
        Request::Flip {
            service: name,
            to,
            now,
            force,
            wait,
            wait_secondaries,
        } => {
            let body = FlipBody {
                to: Some(*to),
                now: *now,
                force: *force,
                no_wait_secondaries: !wait_secondaries,
            };
            ("POST", service(name, "/flip"), json(&body), *wait)
        }
        Request::Rollback {
            service: name,
            force,
            wait,
            wait_secondaries,
        } => {
            let body = RollbackBody {
                force: *force,
                no_wait_secondaries: !wait_secondaries,
            };
            ("POST", service(name, "/rollback"), json(&body), *wait)
        }
        Request::Cancel { service: name } => ("POST", service(name, "/cancel"), None, false),
        Request::Approve {
            service: name,
            wait,
        } => ("POST", service(name, "/approve"), None, *wait),
        Request::Follow { service: name } => ("GET", service(name, "/events"), None, true),
        Request::SetAddresses {
            service: name,
            color,
            addresses,
            force,
            check,
            wait_secondaries,
        } => {
            let body = AddressesBody {
                color: *color,
                addresses: addresses.clone(),
                force: *force,
                check: *check,
                no_wait_secondaries: !wait_secondaries,
            };
            ("POST", service(name, "/addresses"), json(&body), false)
        }
        Request::Stragglers {
            service: name,
            limit,
            classes,
            all,
        } => {
            let query = stragglers_query(*limit, classes, *all);
            let target = with_query(service(name, "/stragglers"), &query);
            ("GET", target, None, false)
        }
        Request::Version
        | Request::Status { service: None }
        | Request::History { .. }
        | Request::Reload { .. }
        | Request::Notify { .. }
        | Request::LogLevel { .. } => unreachable!("not about one service: see to_http"),
    }
}

/// The protocol request an HTTP request carries. `stream`: the client accepts an event
/// stream, so a flip or rollback is followed; without it, the reply comes once the cutover
/// is scheduled. `json_body`: the body's media type is JSON (an empty body needs none).
pub fn from_http(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    json_body: bool,
    stream: bool,
) -> Result<Request, RouteError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = Query::parse(query.unwrap_or(""))?;
    let read = |allowed: &'static str| allow(method, allowed);
    let request = match segments.as_slice() {
        ["v1", "version"] => {
            read("GET")?;
            Request::Version
        }
        ["v1", "services"] => {
            read("GET")?;
            Request::Status { service: None }
        }
        ["v1", "services", name] => {
            read("GET")?;
            Request::Status {
                service: Some(service(name)?),
            }
        }
        ["v1", "services", name, what] => {
            let asked = Asked {
                method,
                body,
                json_body,
                stream,
            };
            service_action(service(name)?, what, &query, asked)?
        }
        ["v1", "history"] => {
            read("GET")?;
            Request::History {
                service: query.text("service").map(str::to_ascii_lowercase),
                limit: query.number("limit")?,
                reads: query.flag("reads")?,
            }
        }
        ["v1", "reload"] => {
            read("POST")?;
            let ReloadBody { force } = parse(body, json_body)?;
            Request::Reload { force }
        }
        ["v1", "notify"] => {
            read("POST")?;
            let NotifyBody { secondary } = parse(body, json_body)?;
            Request::Notify { secondary }
        }
        ["v1", "log-level"] => {
            read("POST")?;
            let LogLevelBody { filter } = parse(body, json_body)?;
            Request::LogLevel { filter }
        }
        _ => return Err(RouteError::NotFound),
    };
    query.all_used()?;
    Ok(request)
}

/// What an HTTP request brought besides its path and query.
struct Asked<'a> {
    method: &'a str,
    body: &'a [u8],
    json_body: bool,
    stream: bool,
}

/// Whether `method` may be used where `allowed` is (`HEAD` where `GET` is).
fn allow(method: &str, allowed: &'static str) -> Result<(), RouteError> {
    match method {
        "GET" | "HEAD" if allowed == "GET" => Ok(()),
        "POST" if allowed == "POST" => Ok(()),
        _ => Err(RouteError::Method { allowed }),
    }
}

/// The request at `/v1/services/{name}/{what}`.
fn service_action(
    name: String,
    what: &str,
    query: &Query,
    asked: Asked<'_>,
) -> Result<Request, RouteError> {
    let Asked {
        method,
        body,
        json_body,
        stream,
    } = asked;
    let read = |allowed: &'static str| allow(method, allowed);
    Ok(match what {
        "stragglers" => {
            read("GET")?;
            Request::Stragglers {
                service: name,
                limit: query.number("limit")?,
                classes: query.classes()?,
                all: query.flag("all")?,
            }
        }
        "events" => {
            read("GET")?;
            Request::Follow { service: name }
        }
        "prepare" | "cancel" | "approve" => {
            read("POST")?;
            let Empty {} = parse(body, json_body)?;
            match what {
                "prepare" => Request::Prepare { service: name },
                "cancel" => Request::Cancel { service: name },
                _ => Request::Approve {
                    service: name,
                    wait: stream,
                },
            }
        }
        "flip" => {
            read("POST")?;
            let body: FlipBody = parse(body, json_body)?;
            let to = body.to.ok_or_else(|| {
                RouteError::Invalid("a flip needs the color: {\"to\": \"green\"}".into())
            })?;
            Request::Flip {
                service: name,
                to,
                now: body.now,
                force: body.force,
                wait: stream,
                wait_secondaries: !body.no_wait_secondaries,
            }
        }
        "rollback" => {
            read("POST")?;
            let body: RollbackBody = parse(body, json_body)?;
            Request::Rollback {
                service: name,
                force: body.force,
                wait: stream,
                wait_secondaries: !body.no_wait_secondaries,
            }
        }
        "addresses" => {
            read("POST")?;
            let body: AddressesBody = parse(body, json_body)?;
            Request::SetAddresses {
                service: name,
                color: body.color,
                addresses: body.addresses,
                force: body.force,
                check: body.check,
                wait_secondaries: !body.no_wait_secondaries,
            }
        }
        _ => return Err(RouteError::NotFound),
    })
}

/// The index in [`ROUTES`] of the route `method` and `path` match (`HEAD` as `GET`), for
/// metrics (a bounded label): `None` for no route.
pub fn route_of(method: &str, path: &str) -> Option<usize> {
    let method = if method == "HEAD" { "GET" } else { method };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.iter().position(|(m, route)| {
        let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
        *m == method
            && parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| *p == "{name}" || p == s)
    })
}

/// The HTTP status of a refusal of `kind`.
pub fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Invalid => 400,
        ErrorKind::Unauthenticated => 401,
        ErrorKind::Forbidden => 403,
        ErrorKind::UnknownService | ErrorKind::UnknownSecondary => 404,
        ErrorKind::RequestTimeout => 408,
        ErrorKind::InvalidConfig => 422,
        ErrorKind::Throttled => 429,
        ErrorKind::Io | ErrorKind::Uncertain | ErrorKind::Client | ErrorKind::NoServer => 500,
        ErrorKind::ShuttingDown | ErrorKind::TooManyClients => 503,
        ErrorKind::RefusedUnhealthy
        | ErrorKind::RefusedInterval
        | ErrorKind::Busy
        | ErrorKind::Cancelled
        | ErrorKind::LedgerOff
        | ErrorKind::SecondariesBehind
        | ErrorKind::RefusedLive
        | ErrorKind::ApprovalRefused => 409,
    }
}

/// The HTTP status of a successful reply: `202` for a cutover that is not done yet
/// (scheduled, joined, or waiting for approval), `200` otherwise.
pub fn success_status(response: &Response) -> u16 {
    match response {
        Response::Cutover(c)
            if matches!(
                c.outcome,
                Outcome::Scheduled | Outcome::Joined | Outcome::AwaitingApproval
            ) =>
        {
            202
        }
        _ => 200,
    }
}

/// An RFC 9457 problem: a refusal, with the admin protocol's kind and `ctl`'s exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:flipdns:problem:KIND`.
    #[serde(rename = "type")]
    pub type_: String,
    /// What the kind means.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened and what to do about it (the admin protocol's message).
    pub detail: String,
    /// The admin protocol's error kind.
    pub kind: ErrorKind,
    /// `flipdns ctl`'s exit code for it.
    pub exit_code: u8,
}

impl Problem {
    /// The problem of `error`, answered with `status`.
    pub fn new(status: u16, error: &Error) -> Problem {
        let kind = serde_json::to_value(error.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        Problem {
            type_: format!("urn:flipdns:problem:{kind}"),
            title: error.kind.meaning().trim_end_matches('.').into(),
            status,
            detail: error.message.clone(),
            kind: error.kind,
            exit_code: error.kind.exit_code(),
        }
    }

    /// The admin protocol's error again.
    pub fn error(&self) -> Error {
        Error::new(self.kind, self.detail.clone())
    }
}

/// The SSE event name of a reply line: `progress`, `ok` or `error`.
pub fn event_name(line: &str) -> &'static str {
    if line.starts_with("{\"progress\"") {
        "progress"
    } else if line.starts_with("{\"ok\"") {
        "ok"
    } else {
        "error"
    }
}

/// A service name from a path segment: a DNS name, so plain ASCII.
fn service(segment: &str) -> Result<String, RouteError> {
    let name = decode(segment)?;
    if name.is_empty() {
        return Err(RouteError::NotFound);
    }
    Ok(name.to_ascii_lowercase())
}

/// A JSON body, or `{}` when there is none.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], json_body: bool) -> Result<T, RouteError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else if !json_body {
        return Err(RouteError::MediaType);
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| RouteError::Invalid(format!("bad body: {e}")))
}

/// A request's query, each key at most once (`class` may repeat), every key used.
struct Query {
    pairs: Vec<(String, String)>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Query {
    fn parse(query: &str) -> Result<Query, RouteError> {
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((decode(key)?, decode(value)?));
        }
        Ok(Query {
            pairs,
            used: Default::default(),
        })
    }

    fn values(&self, key: &str) -> impl Iterator<Item = &str> {
        self.used.borrow_mut().push(key.into());
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.values(key).last()
    }

    fn number(&self, key: &str) -> Result<Option<usize>, RouteError> {
        self.text(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| RouteError::Invalid(format!("{key}={v:?} is not a number")))
            })
            .transpose()
    }

    fn flag(&self, key: &str) -> Result<bool, RouteError> {
        match self.text(key) {
            None | Some("false") => Ok(false),
            Some("true" | "") => Ok(true),
            Some(v) => Err(RouteError::Invalid(format!(
                "{key}={v:?}: expected true or false"
            ))),
        }
    }

    fn classes(&self) -> Result<Vec<ResolverClass>, RouteError> {
        self.values("class")
            .map(|v| {
                serde_json::from_value(serde_json::Value::String(v.into())).map_err(|_| {
                    RouteError::Invalid(format!(
                        "class={v:?}: expected straggler, overdue, draining, silent or converged"
                    ))
                })
            })
            .collect()
    }

    /// Refuses a key no resource takes, so a typo is not silently ignored.
    fn all_used(&self) -> Result<(), RouteError> {
        let used = self.used.borrow();
        match self.pairs.iter().find(|(k, _)| !used.contains(k)) {
            Some((key, _)) => Err(RouteError::Invalid(format!(
                "unknown query parameter {key:?}"
            ))),
            None => Ok(()),
        }
    }
}

/// A class as the query names it.
fn name_of(class: &ResolverClass) -> String {
    serde_json::to_value(class)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn with_query(path: String, query: &[String]) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986 section 2.3).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes percent-escapes (and `+` as a space, as forms send it); the result must be UTF-8.
fn decode(text: &str) -> Result<String, RouteError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        RouteError::Invalid(format!("bad percent-escape in {text:?}"))
                    })?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| RouteError::Invalid(format!("{text:?} is not UTF-8")))
}

/// A request body as JSON.
fn json(body: &impl Serialize) -> Option<String> {
    Some(serde_json::to_string(body).expect("bodies serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request goes over HTTP and comes back the same.
    #[test]
    fn every_request_survives_the_trip() {
        let requests = [
            Request::Version,
            Request::Status { service: None },
            Request::Status {
                service: Some("app".into()),
            },
            Request::Prepare {
                service: "app".into(),
            },
            Request::Flip {
                service: "app".into(),
                to: Color::Green,
                now: true,
                force: false,
                wait: true,
                wait_secondaries: false,
            },
            Request::Rollback {
                service: "app".into(),
                force: true,
                wait: false,
                wait_secondaries: true,
            },
            Request::Cancel {
                service: "app".into(),
            },
            Request::Approve {
                service: "app".into(),
                wait: true,
            },
            Request::Follow {
                service: "app".into(),
            },
            Request::SetAddresses {
                service: "app".into(),
                color: Color::Blue,
                addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
                force: false,
                check: true,
                wait_secondaries: true,
            },
            Request::Stragglers {
                service: "app".into(),
                limit: Some(5),
                classes: vec![ResolverClass::Straggler, ResolverClass::Silent],
                all: true,
            },
            Request::History {
                service: Some("app".into()),
                limit: Some(3),
                reads: true,
            },
            Request::History {
                service: None,
                limit: None,
                reads: false,
            },
            Request::Reload { force: true },
            Request::Notify {
                secondary: Some("knot one".into()),
            },
            Request::LogLevel {
                filter: "flipdns::fleet=debug".into(),
            },
        ];
        for request in requests {
            let http = to_http(&request);
            let (path, query) = match http.target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (http.target.as_str(), None),
            };
            let body = http.body.unwrap_or_default();
            let back = from_http(http.method, path, query, body.as_bytes(), true, http.stream);
            assert_eq!(back, Ok(request.clone()), "{request:?} as {path}");
            assert!(route_of(http.method, path).is_some(), "{path} is a route");
        }
    }

    #[test]
    fn bad_requests_are_named() {
        let route = |m, p, q, b: &str, json| from_http(m, p, q, b.as_bytes(), json, false);
        assert_eq!(
            route("GET", "/v1/nothing", None, "", true),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route("DELETE", "/v1/services/app", None, "", true),
            Err(RouteError::Method { allowed: "GET" })
        );
        assert_eq!(
            route(
                "POST",
                "/v1/services/app/flip",
                None,
                "{\"to\":\"green\"}",
                false
            ),
            Err(RouteError::MediaType)
        );
        let unknown = route(
            "POST",
            "/v1/services/app/flip",
            None,
            "{\"to\":\"green\",\"fast\":1}",
            true,
        );
        assert!(
            matches!(unknown, Err(RouteError::Invalid(e)) if e.contains("unknown field `fast`"))
        );
        let no_color = route("POST", "/v1/services/app/flip", None, "", true);
        assert!(matches!(no_color, Err(RouteError::Invalid(e)) if e.contains("\"to\"")));
        let typo = route(
            "GET",
            "/v1/services/app/stragglers",
            Some("limt=3"),
            "",
            true,
        );
        assert!(matches!(typo, Err(RouteError::Invalid(e)) if e.contains("limt")));
        let utf8 = route("GET", "/v1/services/%FF", None, "", true);
        assert!(matches!(utf8, Err(RouteError::Invalid(e)) if e.contains("UTF-8")));
    }

    #[test]
    fn every_kind_has_a_status_and_a_problem() {
        for kind in ErrorKind::ALL {
            let problem = Problem::new(status_of(kind), &Error::new(kind, "why"));
            assert!(problem.status >= 400);
            assert!(problem.type_.starts_with("urn:flipdns:problem:") && problem.type_.len() > 20);
            assert_eq!(problem.exit_code, kind.exit_code());
            assert_eq!(problem.error(), Error::new(kind, "why"));
        }
    }
}
