//! Sockets, tasks and shutdown; no DNS semantics.
//!
//! [`run`] opens the state file, binds every socket (DNS over UDP and TCP, the admin socket,
//! the metrics endpoint), logs each, says `ready`, serves until the shutdown token fires, and
//! then stops accepting, lets queries in flight finish, and removes the admin socket.

mod tcp;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use tcp::TcpLimits;

use crate::admin::commands::Context;
use crate::admin::server::{AdminLimits, AdminSocket, BindError};
use crate::catalog::Catalog;
use crate::clock;
use crate::cutover::Cutovers;
use crate::dns::Handler;
use crate::metrics::{self, Metrics};
use crate::state::{StateError, StateFile};
use crate::switch::Switch;

/// How long shutdown waits for queries and admin requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Admin(#[from] BindError),
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// Serves `catalog` until `shutdown` is cancelled.
pub async fn run(catalog: Catalog, shutdown: CancellationToken) -> Result<(), ServeError> {
    let config = catalog.config.clone();
    let state_file = StateFile::open(&config.server.state_file)?;
    let switch = Arc::new(Switch::start(catalog, state_file, clock::now_ms())?);
    let metrics = Arc::new(Metrics::default());
    let handler = Arc::new(Handler::new(switch.records().clone(), metrics.clone()));

    let mut dns = Vec::new();
    for &addr in &config.server.listen {
        dns.push(bind_dns(addr).await?);
    }
    let admin = AdminSocket::bind(&config.server.admin_socket, config.server.admin_socket_mode)?;
    let metrics_listener = match config.server.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "metrics",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };

    let tracker = TaskTracker::new();
    let cutovers = Arc::new(Cutovers::start(switch.clone(), &shutdown, &tracker));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limits = config.limits.clone();
    let tcp_limits = TcpLimits {
        connections: limits.tcp_connections,
        idle_timeout: limits.tcp_idle_timeout,
        message_timeout: limits.tcp_message_timeout,
    };
    for (udp, tcp) in dns {
        tracing::info!("listening on udp {}", udp.local_addr().expect("bound"));
        tracing::info!("listening on tcp {}", tcp.local_addr().expect("bound"));
        let udp = Arc::new(udp);
        for _ in 0..workers {
            tracker.spawn(udp::serve(udp.clone(), handler.clone(), shutdown.clone()));
        }
        tracker.spawn(tcp::serve(
            tcp,
            handler.clone(),
            metrics.clone(),
            tcp_limits,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    if let Some(listener) = metrics_listener {
        tracing::info!(
            "metrics on http://{}/metrics",
            listener.local_addr().expect("bound")
        );
        tracker.spawn(metrics::serve(
            listener,
            metrics.clone(),
            switch.records().clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!("admin socket {}", admin.path().display());
    let admin_limits = AdminLimits {
        clients: limits.admin_clients,
        request_timeout: limits.admin_request_timeout,
    };
    let admin_task = {
        let context = Arc::new(Context {
            switch: switch.clone(),
            cutovers,
        });
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        async move {
            crate::admin::server::serve(&admin, context, metrics, admin_limits, shutdown).await
        }
    };
    tracing::info!("ready");
    let ((), ()) = tokio::join!(admin_task, shutdown.cancelled());

    tracing::info!(
        "shutting down: waiting up to {} s for queries in flight",
        SHUTDOWN_GRACE.as_secs()
    );
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still busy after {} s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds UDP and TCP on `addr`. Port 0 picks a port free for both, so one `dig -p` reaches
/// the server over either transport.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), ServeError> {
    const ATTEMPTS: usize = 20;
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                what: "udp",
                addr,
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| ServeError::Bind {
            what: "udp",
            addr,
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS =>
            {
                attempt += 1
            }
            Err(source) => {
                return Err(ServeError::Bind {
                    what: "tcp",
                    addr: bound,
                    source,
                });
            }
        }
    }
}
