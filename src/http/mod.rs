//! The one HTTP server of the binary (hyper's HTTP/1.1), under every HTTP endpoint: the
//! metrics listener (`/metrics`, `/healthz`, `/ready`, the page) and the HTTPS API. It owns
//! the transport and its bounds; what a request means is the caller's [`Handler`].
//!
//! Bounds, each named and documented: connections at once (more are closed at once, before
//! anything is read), the request head (size and the time to send it), the body (size and
//! time), and the time a handler may take to answer (a stream, once started, is bounded by
//! its own follower limit instead). TLS, when given, is taken per connection from a
//! function, so a reload's new certificate serves the next connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accept;

pub mod tls;

/// A response body: whole, or a stream (Server-Sent Events).
pub type Body = BoxBody<Bytes, Infallible>;

/// The bounds of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub connections: usize,
    /// Of those, connections from one address; more from it are closed at once, so no one
    /// client (a leaking agent, a flood of silent connections) can take every seat.
    pub per_source: usize,
    /// Largest request head (request line and headers); hyper's floor is 8 KiB.
    pub head_size: usize,
    /// Time a client has to send the whole head.
    pub head_timeout: Duration,
    /// Largest request body.
    pub body_size: usize,
    /// Time a client has to send the body, and a handler to answer.
    pub request_timeout: Duration,
}

/// Who is on a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    /// What the client's certificate proved (TLS with a client CA only).
    pub client_certificate: tls::ClientCertificate,
}

/// What a listener does with each request.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: http::Request<Bytes>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>>;

    /// The answer when the transport refuses a request (a body too large or too slow, no
    /// answer in time): plain text, unless the listener speaks another format.
    fn refuse(&self, status: StatusCode, text: &str) -> Response<Body> {
        plain(status, text)
    }
}

/// The TLS set-up of a listener, read for each new connection (`None`: plain HTTP).
pub type Tls = Arc<dyn Fn() -> Option<Arc<tls::Tls>> + Send + Sync>;

/// Serves `listener` with `handler` until `shutdown`.
pub async fn serve(
    what: &'static str,
    listener: TcpListener,
    tls: Option<Tls>,
    handler: Arc<dyn Handler>,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let sources = Arc::new(Sources::default());
    loop {
        let Some((stream, address)) = accept::next(what, &shutdown, || listener.accept()).await
        else {
            return Ok(());
        };
        let Some(seat) = Sources::take(&sources, address.ip(), limits.per_source) else {
            continue; // dropped: closed at once
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let (handler, tls, shutdown) = (handler.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = tls.and_then(|tls| tls());
            connection(stream, address, tls, handler, limits, shutdown).await;
            drop((permit, seat));
        });
    }
}

/// Connections open per source address.
#[derive(Default)]
struct Sources(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in its source's count, given back when dropped.
struct Seat(Arc<Sources>, std::net::IpAddr);

impl Sources {
    fn take(sources: &Arc<Sources>, source: std::net::IpAddr, most: usize) -> Option<Seat> {
        let mut open = sources.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Seat(sources.clone(), source))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves one connection: TLS first when set up, then HTTP/1.1 requests until the client
/// closes, a bound is crossed, or shutdown.
async fn connection(
    stream: TcpStream,
    address: SocketAddr,
    tls: Option<Arc<tls::Tls>>,
    handler: Arc<dyn Handler>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let peer = Peer {
                address,
                client_certificate: tls::ClientCertificate::None,
            };
            http1(TokioIo::new(stream), peer, handler, limits, shutdown).await
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            let Ok(Ok(stream)) =
                tokio::time::timeout(limits.head_timeout, acceptor.accept(stream)).await
            else {
                return; // no handshake in time, or a failed one: nothing to answer
            };
            let peer = Peer {
                address,
                client_certificate: tls.check(stream.get_ref().1.peer_certificates()),
            };
            http1(TokioIo::new(stream), peer, handler, limits, shutdown).await
        }
    }
}

async fn http1<I>(
    io: TokioIo<I>,
    peer: Peer,
    handler: Arc<dyn Handler>,
    limits: Limits,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let (handler, peer) = (handler.clone(), peer.clone());
        async move { Ok::<_, Infallible>(respond(&*handler, request, peer, limits).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.head_size.max(8192))
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.request_timeout, connection).await;
        }
    }
}

/// Reads the body within its bounds, then lets the handler answer within the time left.
async fn respond(
    handler: &dyn Handler,
    request: http::Request<Incoming>,
    peer: Peer,
    limits: Limits,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, limits.body_size).collect();
    let body = match tokio::time::timeout(limits.request_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return handler.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is over {} bytes", limits.body_size),
            );
        }
        Ok(Err(_)) => return handler.refuse(StatusCode::BAD_REQUEST, "the body could not be read"),
        Err(_) => {
            return handler.refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s",
                    limits.request_timeout.as_secs()
                ),
            );
        }
    };
    let request = http::Request::from_parts(parts, body);
    match tokio::time::timeout(limits.request_timeout, handler.handle(request, peer)).await {
        Ok(response) => response,
        Err(_) => handler.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "no answer within {} s; try again",
                limits.request_timeout.as_secs()
            ),
        ),
    }
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A `text/plain` response.
pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
