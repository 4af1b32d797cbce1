//! The watch page: a read-only page at `/` on the metrics listener that draws the cutover
//! (services, fleet, the TTL over time, the old color's decay). Its assets are compiled
//! into the binary and served under a strict Content-Security-Policy; its JSON is the admin
//! protocol's read replies at the API's own paths (`/v1/services`, `/v1/services/{name}`,
//! `…/stragglers`, `/v1/history`, `/v1/version`), carried out by the admin commands: no
//! second model of the truth. Anything else goes on to `/metrics`, `/healthz`, `/ready`.
//!
//! Nothing here changes state: any method but GET and HEAD is refused, and so is every
//! route of the API that is not a read. On the HTTPS API's listener the page is served
//! too; there its JSON is the API's, behind the `read` scope, with the token the page asks
//! for (kept in the tab's session storage). The page polls only while it is visible, so it
//! costs nothing when nobody looks; the listener's connection bounds hold for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, header};

use crate::admin::commands::{self, Context};
use crate::api;
use crate::http::{self as web, Body};
use crate::protocol::routes;
use crate::protocol::{Error, ErrorKind, Request};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/page.js");
const STYLE: &str = include_str!("assets/page.css");

/// Only this server's own files, no inline script or style, no frames, no forms.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A listener's requests: the page here; its JSON here on the metrics listener (no token,
/// reads only), or from the API behind the `read` scope; the rest to the inner handler.
pub struct Site {
    /// The metrics listener's reads; `None` on the API listener, whose JSON is the API's.
    context: Option<Arc<Context>>,
    inner: Arc<dyn web::Handler>,
}

impl Site {
    /// The metrics listener: the page, its JSON, then `/metrics`, `/healthz`, `/ready`.
    pub fn new(context: Arc<Context>, metrics: Arc<dyn web::Handler>) -> Site {
        Site {
            context: Some(context),
            inner: metrics,
        }
    }

    /// The API listener: the page's files (no data in them: served without a token), then
    /// the API, where the page's requests carry the token it asks for.
    pub fn before_api(api: Arc<dyn web::Handler>) -> Site {
        Site {
            context: None,
            inner: api,
        }
    }
}

impl web::Handler for Site {
    fn handle(
        &self,
        request: http::Request<Bytes>,
        peer: web::Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        let path = request.uri().path();
        let page = match path {
            "/" | "/index.html" => Some((INDEX, "text/html; charset=utf-8")),
            "/assets/page.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
            "/assets/page.css" => Some((STYLE, "text/css; charset=utf-8")),
            _ => None,
        };
        // The page's JSON is served here on the metrics listener only.
        let reads = self.context.as_ref().filter(|_| path.starts_with("/v1/"));
        let read_only = matches!(request.method().as_str(), "GET" | "HEAD");
        match (page, reads) {
            (None, None) => self.inner.handle(request, peer),
            _ if !read_only => {
                let error = Error::new(
                    ErrorKind::Forbidden,
                    "the watch page is read-only: changes go through `flipdns ctl` or the HTTPS API",
                );
                let mut response = api::problem(405, &error);
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                Box::pin(std::future::ready(guarded(response)))
            }
            (Some((text, content_type)), _) => {
                let mut response = Response::new(web::full(text));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                Box::pin(std::future::ready(guarded(response)))
            }
            (None, Some(context)) => {
                let context = context.clone();
                Box::pin(async move { guarded(json(&context, &request).await) })
            }
        }
    }

    fn refuse(&self, status: http::StatusCode, text: &str) -> Response<Body> {
        self.inner.refuse(status, text)
    }
}

/// A read of the admin protocol at its API path.
async fn json(context: &Context, request: &http::Request<Bytes>) -> Response<Body> {
    let uri = request.uri();
    let read = routes::from_http("GET", uri.path(), uri.query(), b"", false, false);
    let request = match read {
        Ok(
            r @ (Request::Status { .. }
            | Request::Stragglers { .. }
            | Request::History { .. }
            | Request::Version),
        ) => r,
        Ok(_) => {
            let error = Error::new(
                ErrorKind::Forbidden,
                "not on this listener: the watch page reads status, reports and history only",
            );
            return api::problem(404, &error);
        }
        Err(refused) => {
            let (status, error) = refused.error("GET", uri.path());
            return api::problem(status, &error);
        }
    };
    // The page is no principal: it reads, and reads are not audited here (they are on
    // the API, where a token says who read).
    let reader = commands::Peer {
        user: Some("watch page".into()),
        ..Default::default()
    };
    api::answer(context, &reader, &request).await.0
}

/// Every response of the page: its policy, no sniffing, no referrer, no caching.
fn guarded(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
