//! Health checks of a color's addresses: the gate before a flip, and background checks.
//!
//! A check is an HTTP GET (any 2xx is healthy) or a TCP connect to each address of a color,
//! at most [`MAX_CONCURRENT_CHECKS`] at a time, each bounded by the service's timeout. Checks
//! run on their own tasks and never touch the query path; the latest background results go
//! to the service's [`Observed`] for `status` and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::color::Color;
use crate::config::{HealthConfig, HealthKind, ServiceConfig};
use crate::observed::{AddressHealth, ColorHealth};

/// Addresses checked at once by one check of one color.
pub const MAX_CONCURRENT_CHECKS: usize = 16;

/// Checks every address of `color` now.
pub async fn check_color(
    service: &ServiceConfig,
    health: &HealthConfig,
    color: Color,
    clock: &Clock,
) -> ColorHealth {
    let client = client(health);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS));
    let mut checks = JoinSet::new();
    for (order, &address) in service.addresses(color).iter().enumerate() {
        let (health, client, permits) = (health.clone(), client.clone(), permits.clone());
        checks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (order, check_address(&health, &client, address).await)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = checks.join_next().await {
        results.push(done.expect("a health check does not panic"));
    }
    results.sort_by_key(|(order, _)| *order);
    ColorHealth {
        color,
        checked_at_ms: clock.now_ms(),
        addresses: results.into_iter().map(|(_, r)| r).collect(),
    }
}

fn client(health: &HealthConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(health.timeout)
        .connect_timeout(health.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!(
            "flipdns/",
            env!("CARGO_PKG_VERSION"),
            " health check"
        ))
        .build()
        .expect("a client without TLS always builds")
}

async fn check_address(
    health: &HealthConfig,
    client: &reqwest::Client,
    address: IpAddr,
) -> AddressHealth {
    let target = SocketAddr::new(address, health.port);
    let outcome = match &health.kind {
        HealthKind::Tcp => {
            match tokio::time::timeout(health.timeout, TcpStream::connect(target)).await {
                Ok(Ok(_)) => Ok("connected".to_string()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Err("connection refused".to_string())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(timed_out(health.timeout)),
            }
        }
        HealthKind::Http { path, host, status } => {
            let mut request = client.get(format!("http://{target}{path}"));
            if let Some(host) = host {
                request = request.header(reqwest::header::HOST, host);
            }
            match request.send().await {
                Ok(response) if status.contains(&response.status().as_u16()) => {
                    Ok(format!("HTTP {}", response.status().as_u16()))
                }
                Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
                Err(e) if e.is_timeout() => Err(timed_out(health.timeout)),
                Err(e) if e.is_connect() && refused(&e) => Err("connection refused".to_string()),
                Err(e) => Err(describe(&e)),
            }
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

fn timed_out(timeout: Duration) -> String {
    format!("timeout after {} ms", timeout.as_millis())
}

fn refused(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

/// The innermost cause of a request error: reqwest's own message is generic.
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        message = e.to_string();
        source = e.source();
    }
    message
}
