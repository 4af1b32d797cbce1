//! The HTTPS control API: the admin protocol over HTTP ([`crate::protocol::routes`]) for a
//! pipeline that runs elsewhere. Each request is authenticated (its token, and the client
//! certificate where `[api]` requires one), checked against the token's scopes, carried out
//! by the admin socket's own command code ([`carry_out`]) and audited.
//!
//! Order of the checks, each refusal a problem (RFC 9457) that changes nothing: the source's
//! throttle (429, unread), the client certificate and the token (401), the route and body
//! (404, 405, 415, 400), the scope (403). Tokens and TLS files are read from the catalog per
//! request and per connection, so a reload's take effect at once.

mod audit;
pub mod auth;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;

use crate::admin::audit::READ;
use crate::admin::commands::{self, Context, carry_out};
use crate::config::{ApiConfig, ApiToken};
use crate::http::tls::ClientCertificate;
use crate::http::{self as web, Body};
use crate::observed::api::ApiCounters;
use crate::protocol::routes::{self, EVENT_STREAM, PROBLEM_JSON, Problem};
use crate::protocol::{AuditEntry, Error, ErrorKind, Reply, Request};

/// The OpenAPI 3.1 document of the routes, as shipped in `docs/`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Buffer between a command's reply lines and an event stream's client, in lines: a slow
/// reader holds the command back (and the command's write timeout ends the stream).
const STREAM_BUFFER: usize = 16;

/// The API's request handler.
pub struct Api {
    context: Arc<Context>,
    counters: Arc<ApiCounters>,
    throttle: auth::Throttle,
    /// Reads and refusals, tallied on their way to the audit trail.
    alike: Arc<audit::Alike>,
    /// Event streams followed at once (`api.followers`).
    followers: Arc<Semaphore>,
}

impl Api {
    /// The API's handler; its tallies of alike audit entries are recorded every few
    /// seconds, and all of them at shutdown.
    pub fn new(context: Arc<Context>, followers: usize) -> Api {
        let alike = Arc::new(audit::Alike::new(context.audit.clone()));
        let (tallies, clock, shutdown) = (
            alike.clone(),
            context.clock.clone(),
            context.shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => tallies.flush(clock.now_ms()),
                    _ = shutdown.cancelled() => return tallies.flush(u64::MAX),
                }
            }
        });
        Api {
            context,
            counters: Arc::new(ApiCounters::new(&routes::ROUTES)),
            throttle: auth::Throttle::default(),
            alike,
            followers: Arc::new(Semaphore::new(followers)),
        }
    }
}

impl Api {
    /// What the API counts, for `/metrics`.
    pub fn counters(&self) -> Arc<ApiCounters> {
        self.counters.clone()
    }
}

impl web::Handler for Api {
    fn handle(
        &self,
        request: http::Request<Bytes>,
        peer: web::Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        Box::pin(async move {
            let route = routes::route_of(request.method().as_str(), request.uri().path());
            let template = route.map_or("none", |r| routes::ROUTES[r].1);
            let response = self.respond(request, &peer, template).await;
            self.counters.request(route, response.status().as_u16());
            response
        })
    }

    fn refuse(&self, status: StatusCode, text: &str) -> Response<Body> {
        let kind = match status {
            StatusCode::REQUEST_TIMEOUT => ErrorKind::RequestTimeout,
            StatusCode::SERVICE_UNAVAILABLE => ErrorKind::TooManyClients,
            _ => ErrorKind::Invalid,
        };
        problem(status.as_u16(), &Error::new(kind, text))
    }
}

/// What was asked, as the audit trail names it: `METHOD TARGET`, and the route template
/// (`none` for no route) alike entries are tallied under.
struct Asked {
    line: String,
    route: &'static str,
}

/// Whether the body's media type is JSON.
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// Whether the client accepts an event stream (a followed flip).
fn wants_events(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains(EVENT_STREAM)))
}

/// Who a refused request came from, for the audit trail.
enum Asker<'a> {
    Anonymous,
    Token(&'a str),
}

impl Api {
    async fn respond(
        &self,
        request: http::Request<Bytes>,
        peer: &web::Peer,
        route: &'static str,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let (method, path) = (parts.method.as_str(), parts.uri.path());
        if path == "/v1/openapi.json" && matches!(method, "GET" | "HEAD") {
            // The routes are no secret: the document is in the repository.
            return with_type(StatusCode::OK, "application/json", OPENAPI);
        }
        let catalog = self.context.switch.catalog();
        let api = &catalog.config.api;
        let now = self.context.clock.now_ms();
        let source = peer.address.ip();
        if let Some(refused) = self.throttled(source, now, api.auth_failures_per_minute) {
            return refused;
        }
        let asked = Asked {
            line: format!("{method} {}", parts.uri),
            route,
        };
        if let Some(why) = certificate_problem(api, &peer.client_certificate) {
            return self.unauthenticated(peer, &asked, why);
        }
        let presented = auth::bearer(parts.headers.get(header::AUTHORIZATION));
        let Some(token) = presented.and_then(|t| auth::principal(&api.tokens, t)) else {
            let why = match presented {
                None => "no token: send `Authorization: Bearer TOKEN`",
                Some(_) => "the token is not one the config names (`[[api.token]]`)",
            };
            return self.unauthenticated(peer, &asked, why.into());
        };
        let json_body = is_json(&parts.headers);
        let stream = wants_events(&parts.headers);
        let query = parts.uri.query();
        let request = match routes::from_http(method, path, query, &body, json_body, stream) {
            Ok(request) => request,
            Err(refused) => {
                return self.route_refused(&token.name, peer, &asked, refused, (method, path));
            }
        };
        if !auth::allows(&token.scopes, &request) {
            return self.forbidden(token, peer, &asked, &request);
        }
        let principal = commands::Peer {
            token: Some(token.name.clone()),
            source: Some(peer.address),
            ..Default::default()
        };
        let streamed = match &request {
            Request::Follow { .. } => true,
            Request::Flip { wait, .. }
            | Request::Rollback { wait, .. }
            | Request::Approve { wait, .. } => *wait,
            _ => false,
        };
        if streamed {
            return self.stream(asked.route, principal, request);
        }
        let (response, outcome) = answer(&self.context, &principal, &request).await;
        if auth::needed(&request) == "read" {
            let ok = outcome.is_none();
            let outcome = outcome.unwrap_or_else(|| "ok".into());
            self.audit_read(asked.route, &principal, &request, outcome, ok);
        }
        response
    }

    /// 429 when `source` failed to authenticate too often in the last minute.
    fn throttled(
        &self,
        source: std::net::IpAddr,
        now: u64,
        per_minute: u32,
    ) -> Option<Response<Body>> {
        let wait = self.throttle.check(source, now, per_minute).err()?;
        // Refused unread and not audited, so a flood cannot rotate the trail away.
        self.counters.throttled.fetch_add(1, Relaxed);
        let message = format!(
            "too many failed authentications from {source} in the last minute (api.auth_failures_per_minute = {per_minute}); try again in {wait} s"
        );
        let mut response = problem(429, &Error::new(ErrorKind::Throttled, message));
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        Some(response)
    }

    /// A request no route takes (or not with this method): audited, and a problem.
    fn route_refused(
        &self,
        token: &str,
        peer: &web::Peer,
        asked: &Asked,
        refused: routes::RouteError,
        (method, path): (&str, &str),
    ) -> Response<Body> {
        let (status, error) = refused.error(method, path);
        self.audit_refusal(Asker::Token(token), peer, asked, None, &error);
        let mut response = problem(status, &error);
        if let routes::RouteError::Method { allowed } = refused {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }

    /// A request the token's scopes do not cover: audited, and a 403 naming the scope.
    fn forbidden(
        &self,
        token: &ApiToken,
        peer: &web::Peer,
        asked: &Asked,
        request: &Request,
    ) -> Response<Body> {
        let scopes: Vec<String> = token.scopes.iter().map(ToString::to_string).collect();
        let error = Error::new(
            ErrorKind::Forbidden,
            format!(
                "token {:?} may not do this: it needs the scope {}, and has {}",
                token.name,
                auth::needed(request),
                scopes.join(", ")
            ),
        );
        self.audit_refusal(
            Asker::Token(&token.name),
            peer,
            asked,
            Some(request),
            &error,
        );
        problem(403, &error)
    }

    /// Streams the reply lines of `request` (progress, then `ok` or `error`) as
    /// Server-Sent Events. A client that goes away ends the stream, not the cutover.
    fn stream(
        &self,
        route: &'static str,
        principal: commands::Peer,
        request: Request,
    ) -> Response<Body> {
        let Ok(permit) = self.followers.clone().try_acquire_owned() else {
            let error = Error::new(
                ErrorKind::TooManyClients,
                "every event stream is taken (api.followers); try again, or ask without `Accept: text/event-stream`",
            );
            return problem(503, &error);
        };
        if let Request::Follow { .. } = request {
            self.audit_read(route, &principal, &request, "followed".into(), true);
        }
        let (mut sender, body) =
            http_body_util::channel::Channel::<Bytes, Infallible>::new(STREAM_BUFFER);
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let context = self.context.clone();
        tokio::spawn(async move {
            let _ = carry_out(&context, &principal, request, &mut writer).await;
        });
        let counters = self.counters.clone();
        counters.streams.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let event = format!("event: {}\ndata: {line}\n\n", routes::event_name(&line));
                if sender.send_data(Bytes::from(event)).await.is_err() {
                    break; // the client went away
                }
            }
            counters.streams.fetch_sub(1, Relaxed);
            drop(permit);
        });
        let mut response = Response::new(body.boxed());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// A 401: counted against the source's throttle, audited.
    fn unauthenticated(&self, peer: &web::Peer, asked: &Asked, why: String) -> Response<Body> {
        self.throttle
            .failed(peer.address.ip(), self.context.clock.now_ms());
        self.counters.auth_failures.fetch_add(1, Relaxed);
        let error = Error::new(ErrorKind::Unauthenticated, why);
        self.audit_refusal(Asker::Anonymous, peer, asked, None, &error);
        let mut response = problem(401, &error);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"flipdns\""),
        );
        response
    }

    fn audit_refusal(
        &self,
        asker: Asker<'_>,
        peer: &web::Peer,
        asked: &Asked,
        request: Option<&Request>,
        error: &Error,
    ) {
        let principal = match asker {
            Asker::Anonymous => "anonymous".to_string(),
            Asker::Token(name) => format!("token {name}"),
        };
        self.alike.record(
            asked.route,
            AuditEntry {
                at_ms: self.context.clock.now_ms(),
                change: None,
                event: "refused".into(),
                service: request.and_then(|r| r.service()).map(String::from),
                principal,
                source: Some(peer.address.to_string()),
                request: request.cloned(),
                outcome: format!("{}: {}", asked.line, error.message),
                ok: false,
                ..Default::default()
            },
        );
    }

    fn audit_read(
        &self,
        route: &'static str,
        principal: &commands::Peer,
        request: &Request,
        outcome: String,
        ok: bool,
    ) {
        self.alike.record(
            route,
            AuditEntry {
                at_ms: self.context.clock.now_ms(),
                change: None,
                event: READ.into(),
                service: request.service().map(String::from),
                principal: principal.principal(),
                source: principal.source.map(|s| s.to_string()),
                request: Some(request.clone()),
                outcome,
                ok,
                ..Default::default()
            },
        );
    }
}

/// Carries out `request` (one that replies once) for `principal`, and its reply as an HTTP
/// response; with the refusal's message when it was refused.
pub async fn answer(
    context: &Context,
    principal: &commands::Peer,
    request: &Request,
) -> (Response<Body>, Option<String>) {
    let mut out = Vec::new();
    let _ = carry_out(context, principal, request.clone(), &mut out).await;
    let last = out
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    // Most replies go out as the admin protocol wrote them, without a second encoding: the
    // value of `{"ok": VALUE}`. A cutover's is read for its status code.
    if let Some(value) = last
        .strip_prefix(b"{\"ok\":")
        .and_then(|v| v.strip_suffix(b"}"))
        .filter(|v| !v.starts_with(b"{\"cutover\""))
    {
        let mut body = Vec::with_capacity(value.len() + 1);
        body.extend_from_slice(value);
        body.push(b'\n');
        return (with_type(StatusCode::OK, "application/json", body), None);
    }
    match serde_json::from_slice::<Reply>(last) {
        Ok(Reply::Ok(response)) => {
            let status = routes::success_status(&response);
            let mut answer = with_type(
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                "application/json",
                serde_json::to_string(&response).expect("replies serialize") + "\n",
            );
            if status == 202
                && let Some(service) = request.service()
            {
                let events = routes::to_http(&Request::Follow {
                    service: service.into(),
                });
                if let Ok(location) = HeaderValue::from_str(&events.target) {
                    answer.headers_mut().insert(header::LOCATION, location);
                }
            }
            (answer, None)
        }
        Ok(Reply::Error(error)) => (
            problem(routes::status_of(error.kind), &error),
            Some(error.message),
        ),
        Ok(Reply::Progress(_)) | Err(_) => {
            let error = Error::new(
                ErrorKind::Io,
                "the command gave no reply; see the server's log",
            );
            (problem(500, &error), Some(error.message))
        }
    }
}

/// Why the connection's client certificate does not do, if `[api]` asks for one.
fn certificate_problem(api: &ApiConfig, certificate: &ClientCertificate) -> Option<String> {
    api.client_ca.as_ref()?;
    match certificate {
        ClientCertificate::Refused(why) => Some(format!("{why}; it must be issued by client_ca")),
        ClientCertificate::None if api.require_client_certificate => {
            Some("a client certificate issued by client_ca is required".into())
        }
        _ => None,
    }
}

/// A problem response (RFC 9457).
pub fn problem(status: u16, error: &Error) -> Response<Body> {
    let problem = Problem::new(status, error);
    let body = serde_json::to_string(&problem).expect("problems serialize") + "\n";
    with_type(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        PROBLEM_JSON,
        body,
    )
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(web::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
