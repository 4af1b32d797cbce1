//! Health checks of a color's addresses: the gate before a flip, and background checks.
//!
//! A check is an HTTP or HTTPS GET (a status in the configured range is healthy) or a TCP
//! connect to each address of a color, at most [`MAX_CONCURRENT_CHECKS`] at a time, each
//! bounded by the service's timeout. Checks run on their own tasks and never touch the query
//! path; the latest background results go to the service's [`Observed`](crate::observed::Observed) for `status` and
//! metrics.

mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::color::Color;
use crate::config::{HealthConfig, HealthKind};
use crate::observed::{AddressHealth, ColorHealth};

/// Addresses checked at once by one check of one color.
pub const MAX_CONCURRENT_CHECKS: usize = 16;

/// Checks every address of `color` (`addresses`) now.
pub async fn check_color(
    addresses: &[IpAddr],
    health: &HealthConfig,
    color: Color,
    clock: &Clock,
) -> ColorHealth {
    let results = match Probe::new(health).await {
        Ok(probe) => {
            let probe = Arc::new(probe);
            let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS));
            let mut checks = JoinSet::new();
            for (order, &address) in addresses.iter().enumerate() {
                let (health, probe, permits) = (health.clone(), probe.clone(), permits.clone());
                checks.spawn(async move {
                    let _permit = permits
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    (order, probe.check(&health, address).await)
                });
            }
            let mut results = Vec::new();
            while let Some(done) = checks.join_next().await {
                results.push(done.expect("a health check does not panic"));
            }
            results.sort_by_key(|(order, _)| *order);
            results.into_iter().map(|(_, r)| r).collect()
        }
        // No address can be checked (an unreadable ca_file, no CAs at all): each says why.
        Err(why) => addresses
            .iter()
            .map(|&address| AddressHealth {
                address,
                port: health.port,
                healthy: false,
                detail: why.clone(),
            })
            .collect(),
    };
    ColorHealth {
        color,
        checked_at_ms: clock.now_ms(),
        addresses: results,
    }
}

/// What the checks of one color share.
enum Probe {
    Tcp,
    /// One client for every address: the URL names the address.
    Http(reqwest::Client),
    /// A client per address, because the URL names the host (for SNI and the certificate)
    /// and each address must be reached under that one name; they share the TLS set-up.
    Https(Box<rustls::ClientConfig>),
}

impl Probe {
    async fn new(health: &HealthConfig) -> Result<Probe, String> {
        match &health.kind {
            HealthKind::Tcp => Ok(Probe::Tcp),
            HealthKind::Http { tls: None, .. } => {
                client(health, tls::unused_client_config(), None).map(Probe::Http)
            }
            HealthKind::Http { tls: Some(t), .. } => {
                let t = t.clone();
                tokio::task::spawn_blocking(move || tls::client_config(&t))
                    .await
                    .map_err(|e| format!("TLS set-up: {e}"))?
                    .map(|config| Probe::Https(Box::new(config)))
            }
        }
    }

    async fn check(&self, health: &HealthConfig, address: IpAddr) -> AddressHealth {
        let target = SocketAddr::new(address, health.port);
        let outcome = match (self, &health.kind) {
            (Probe::Tcp, _) => connect(target, health.timeout).await,
            (
                Probe::Http(client),
                HealthKind::Http {
                    path, host, status, ..
                },
            ) => {
                let mut request = client.get(format!("http://{target}{path}"));
                if let Some(host) = host {
                    request = request.header(reqwest::header::HOST, host);
                }
                get(request, status, health.timeout).await
            }
            (
                Probe::Https(config),
                HealthKind::Http {
                    path, host, status, ..
                },
            ) => {
                // Reached as `host` when there is one: its name goes in SNI and the Host
                // header and is what the certificate must be valid for; else the address.
                let (url, pin) = match host {
                    Some(host) => (
                        format!("https://{host}:{}{path}", health.port),
                        Some((host.as_str(), target)),
                    ),
                    None => (format!("https://{target}{path}"), None),
                };
                match client(health, (**config).clone(), pin) {
                    // `host` exactly, as over plain HTTP (reqwest would add a port
                    // other than 443).
                    Ok(client) => {
                        let mut request = client.get(url);
                        if let Some(host) = host {
                            request = request.header(reqwest::header::HOST, host);
                        }
                        get(request, status, health.timeout).await
                    }
                    Err(e) => Err(e),
                }
            }
            (Probe::Http(_) | Probe::Https(_), HealthKind::Tcp) => {
                unreachable!("a probe is made for its health kind")
            }
        };
        let healthy = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|e| e);
        AddressHealth {
            address,
            port: health.port,
            healthy,
            detail,
        }
    }
}

fn client(
    health: &HealthConfig,
    tls: rustls::ClientConfig,
    pin: Option<(&str, SocketAddr)>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(health.timeout)
        .connect_timeout(health.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Never through an HTTP(S)_PROXY of the environment: a proxy would look the host
        // up itself and check whatever its name points at (the live color), not the
        // address of the color being checked.
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tls_backend_preconfigured(tls)
        .user_agent(concat!(
            "flipdns/",
            env!("CARGO_PKG_VERSION"),
            " health check"
        ));
    if let Some((host, address)) = pin {
        builder = builder.resolve(host, address);
    }
    builder.build().map_err(|e| describe(&e))
}

async fn connect(target: SocketAddr, timeout: Duration) -> Result<String, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok("connected".to_string()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("connection refused".to_string())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(timed_out(timeout)),
    }
}

async fn get(
    request: reqwest::RequestBuilder,
    healthy: &std::ops::RangeInclusive<u16>,
    timeout: Duration,
) -> Result<String, String> {
    match request.send().await {
        Ok(response) if healthy.contains(&response.status().as_u16()) => {
            Ok(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
        Err(e) if e.is_timeout() => Err(timed_out(timeout)),
        Err(e) if e.is_connect() && refused(&e) => Err("connection refused".to_string()),
        Err(e) => Err(describe(&e)),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timeout after {} ms", timeout.as_millis())
}

fn refused(error: &reqwest::Error) -> bool {
    causes(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// The innermost cause of a request error (reqwest's own message is generic), and for a
/// certificate that does not verify, what to change.
fn describe(error: &reqwest::Error) -> String {
    for cause in causes(error) {
        if let Some(rustls::Error::InvalidCertificate(certificate)) = tls_error(cause) {
            return certificate_problem(certificate);
        }
    }
    causes(error)
        .last()
        .map_or_else(|| error.to_string(), |e| e.to_string())
}

/// A certificate that did not verify, in words: what is wrong and what to change.
fn certificate_problem(certificate: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    let time = |t: &rustls::pki_types::UnixTime| crate::clock::format_utc(t.as_secs() * 1000);
    match certificate {
        C::UnknownIssuer => "certificate from an unknown CA: set `ca_file` to the CA that issued it, and check that the server sends its intermediate certificates".into(),
        C::NotValidForName => {
            "certificate not valid for the name checked: set `host` to a name it is for".into()
        }
        C::NotValidForNameContext { presented, .. } => {
            // rustls writes each name as `DnsName("a.example")` or `IpAddress(192.0.2.1)`.
            let names: Vec<&str> = presented
                .iter()
                .map(|n| {
                    n.split_once('(')
                        .map_or(n.as_str(), |(_, rest)| rest.trim_end_matches(')'))
                        .trim_matches('"')
                })
                .collect();
            let which = if names.is_empty() {
                "it names none".to_string()
            } else {
                format!("it is for {}", names.join(", "))
            };
            format!("certificate not valid for the name checked: set `host` to a name it is for ({which})")
        }
        C::Expired => "certificate expired: renew it on the server".into(),
        C::ExpiredContext { time: now, not_after } => format!(
            "certificate expired at {} (checked at {}): renew it on the server",
            time(not_after),
            time(now)
        ),
        C::NotValidYet => "certificate not valid yet: check the clocks of the server and of this host".into(),
        C::NotValidYetContext { time: now, not_before } => format!(
            "certificate not valid before {} (checked at {}): check the clocks of the server and of this host",
            time(not_before),
            time(now)
        ),
        C::Revoked => "certificate revoked by its CA: issue the server a new one".into(),
        C::BadEncoding => "certificate cannot be parsed: the server sends a damaged certificate; install it again".into(),
        C::BadSignature => "certificate's signature does not verify against its issuer: check the chain the server sends (the intermediate certificates, in order)".into(),
        C::UnhandledCriticalExtension => "certificate has a critical extension that cannot be checked: issue one without it".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "certificate is not for TLS servers (its extended key usage lacks serverAuth): issue one that is".into(),
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => "certificate signed with an algorithm that is not accepted: issue one signed with ECDSA P-256/P-384, Ed25519 or RSA (SHA-256 or better)".into(),
        C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => "the server presents a CA certificate (CA:TRUE) as its own: give it a certificate issued by that CA, and set `ca_file` to the CA".into(),
            Some(webpki::Error::EndEntityUsedAsCa) => "the chain the server sends has a server certificate where a CA should be: send the intermediate CA certificates instead".into(),
            Some(webpki::Error::NameConstraintViolation) => "certificate names a host its CA may not issue for (name constraints): issue it from a CA that may".into(),
            Some(webpki::Error::PathLenConstraintViolated) => "the chain is longer than its CA allows (path length): shorten the chain the server sends".into(),
            _ => format!("certificate not accepted: {other}"),
        },
        other => format!("certificate not accepted ({other}): check the certificate and the chain the server sends"),
    }
}

/// rustls's error, which the TLS stream wraps in an io::Error (in another one, by the time
/// it reaches us), and whose `source` skips what it wraps.
fn tls_error<'e>(mut cause: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    loop {
        if let Some(tls) = cause.downcast_ref() {
            return Some(tls);
        }
        cause = cause.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

fn causes(error: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(error), |e| e.source())
}
