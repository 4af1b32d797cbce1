//! `flipdns ctl --server`: a request over the HTTPS API instead of the admin socket, with
//! the same replies. The route comes from [`crate::protocol::routes`]; a followed cutover's
//! progress comes from its event stream, line for line what the socket sends; a problem
//! becomes the admin protocol's error again, so output and exit codes are the socket's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::client::{CLIENT_TIMEOUT, ClientError, read_reply};
use crate::protocol::routes::{self, EVENT_STREAM, PROBLEM_JSON, Problem};
use crate::protocol::{Progress, Request, Response};

/// Time a request that is not a stream may take: the server's own bound
/// (`api.request_timeout`, 60 s by default) and some.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Time to connect (and finish TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Server {
    /// `https://HOST:PORT` (or `http://` on loopback).
    pub url: String,
    /// The file holding the token (its first line).
    pub token_file: PathBuf,
    /// A private CA to verify the server against, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for a server that requires one (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A client of the HTTPS API.
pub struct Remote {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Remote {
    pub fn connect(server: &Server) -> Result<Remote, ClientError> {
        let setup = |e: String| ClientError::Setup(e);
        let token = std::fs::read_to_string(&server.token_file).map_err(|e| {
            setup(format!(
                "cannot read the token file {}: {e}",
                server.token_file.display()
            ))
        })?;
        let token = token.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            return Err(setup(format!(
                "the token file {} is empty: it holds the line `flipdns token new` printed first",
                server.token_file.display()
            )));
        }
        let base = server.url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") && !base.starts_with("http://") {
            return Err(setup(format!(
                "--server {base:?}: expected https://HOST:PORT"
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls(server).map_err(setup)?)
            .user_agent(concat!("flipdns-ctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(format!("HTTP client set-up: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(format!("runtime: {e}")))?;
        Ok(Remote {
            runtime,
            client,
            base,
            token,
        })
    }

    /// Sends `request` and reads its reply (following its event stream, handing each
    /// progress line to `progress`); a refusal is an `Err`, as over the socket.
    pub fn call_with_progress(
        &mut self,
        request: &Request,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Response, ClientError> {
        let http = routes::to_http(request);
        let url = format!("{}{}", self.base, http.target);
        let method = reqwest::Method::from_bytes(http.method.as_bytes()).expect("a method");
        let mut asked = self.client.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = http.body {
            asked = asked
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if http.stream {
            asked = asked.header(reqwest::header::ACCEPT, EVENT_STREAM);
        } else {
            asked = asked.timeout(REQUEST_TIMEOUT);
        }
        let base = self.base.clone();
        self.runtime.block_on(async move {
            let mut response = asked.send().await.map_err(|e| unreachable(&base, &e))?;
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let status = response.status();
            if content_type.starts_with(EVENT_STREAM) {
                let mut buffer: Vec<u8> = Vec::new();
                loop {
                    let chunk = tokio::time::timeout(CLIENT_TIMEOUT, response.chunk())
                        .await
                        .map_err(|_| ClientError::Io(std::io::ErrorKind::TimedOut.into()))?
                        .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
                    let Some(chunk) = chunk else {
                        return Err(ClientError::NoReply);
                    };
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                        let event: Vec<u8> = buffer.drain(..end + 2).collect();
                        let event = String::from_utf8_lossy(&event);
                        for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                            if let Some(done) = read_reply(data, &mut progress)? {
                                return Ok(done);
                            }
                        }
                    }
                }
            }
            let body = response.bytes().await.map_err(|e| unreachable(&base, &e))?;
            if content_type.starts_with(PROBLEM_JSON) {
                let problem: Problem =
                    serde_json::from_slice(&body).map_err(ClientError::BadReply)?;
                return Err(ClientError::Refused(problem.error()));
            }
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(ClientError::Setup(format!(
                    "{url}: HTTP {status}: {}",
                    text.lines().next().unwrap_or_default()
                )));
            }
            serde_json::from_slice(&body).map_err(ClientError::BadReply)
        })
    }
}

/// A request that reached no server: as over the socket, "no server" (exit 3), with the
/// innermost cause (a refused connection, a certificate problem) and what to do.
fn unreachable(base: &str, error: &reqwest::Error) -> ClientError {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let text = cause.to_string();
    let hint = if text.contains("certificate") || text.contains("UnknownIssuer") {
        "the server's certificate is not trusted: pass its CA with --ca-file (FLIPDNS_CA_FILE)"
    } else {
        "is `[api] listen` set on the server, and the address reachable from here?"
    };
    ClientError::Unreachable {
        url: base.to_string(),
        cause: text,
        hint: hint.into(),
    }
}

/// TLS to the API: the system's CAs and `ca_file`; a client certificate when given.
fn tls(server: &Server) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(file) = &server.ca_file {
        for certificate in crate::pem::read_ca_file(file)? {
            roots
                .add(certificate)
                .map_err(|e| format!("--ca-file {}: {e}", file.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up: {e}"))?
    .with_root_certificates(roots);
    let mut config = match &server.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--client-cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("--client-key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--client-cert and --client-key: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
