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
use crate::metrics::{self, Exporter, Metrics};
use crate::reload::Reloader;
use crate::rrl::Limiter;
use crate::state::{StateError, StateFile};
use crate::stragglers::Ledger;
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

/// What the receive loops share: the handler, the counters, and the ledger (when on).
pub struct QueryPath {
    pub handler: Handler,
    pub metrics: Arc<Metrics>,
    pub ledger: Option<Arc<Ledger>>,
}

/// Serves `catalog` until `shutdown` is cancelled.
pub async fn run(catalog: Catalog, shutdown: CancellationToken) -> Result<(), ServeError> {
    // A state write past RLIMIT_FSIZE must fail with EFBIG, and so refuse the flip, instead
    // of killing the process.
    // SAFETY: setting a signal's disposition to ignore; no handler code runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let config = catalog.config.clone();
    let state_file = StateFile::open(&config.server.state_file)?;
    let switch = Arc::new(Switch::start(catalog, state_file, clock::now_ms())?);
    let metrics = Arc::new(Metrics::default());

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
    let ledger = config
        .ledger
        .enabled
        .then(|| Ledger::start(config.ledger.capacity, switch.clone(), &shutdown, &tracker));
    let cutovers = Arc::new(Cutovers::start(switch.clone(), &shutdown, &tracker));
    let mut handler = Handler::new(switch.records().clone(), metrics.clone());
    let rrl = config
        .rrl
        .enabled
        .then(|| Arc::new(Limiter::new(&config.rrl)));
    if let Some(rrl) = &rrl {
        handler = handler.with_rrl(rrl.clone());
    }
    let path = Arc::new(QueryPath {
        handler,
        metrics: metrics.clone(),
        ledger: ledger.clone(),
    });
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
            tracker.spawn(udp::serve(udp.clone(), path.clone(), shutdown.clone()));
        }
        tracker.spawn(tcp::serve(
            tcp,
            path.clone(),
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
        let exporter = Exporter {
            metrics: metrics.clone(),
            records: switch.records().clone(),
            ledger: ledger.clone(),
            rrl: rrl.clone(),
        };
        tracker.spawn(metrics::serve(
            listener,
            Arc::new(exporter),
            shutdown.clone(),
        ));
    }
    tracing::info!("admin socket {}", admin.path().display());
    let admin_limits = AdminLimits {
        clients: limits.admin_clients,
        request_timeout: limits.admin_request_timeout,
        allowed_uids: config.server.admin_allowed_uids.clone(),
        allowed_gids: config.server.admin_allowed_gids.clone(),
    };
    let reloader = Arc::new(Reloader::new(switch.clone(), cutovers.clone()));
    tracker.spawn(reload_on_hangup(reloader.clone(), shutdown.clone()));
    let context = Arc::new(Context {
        switch: switch.clone(),
        cutovers,
        ledger,
        reloader,
    });
    tracing::info!("ready");
    let ((), ()) = tokio::join!(
        crate::admin::server::serve(
            &admin,
            context,
            metrics.clone(),
            admin_limits,
            shutdown.clone()
        ),
        shutdown.cancelled()
    );
    drop(admin);

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

/// Reloads on SIGHUP until `shutdown`; the outcome is logged either way.
async fn reload_on_hangup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install a SIGHUP handler; reload with `flipdns ctl reload`");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangups.recv() => {
                tracing::info!("SIGHUP received: reloading");
                let _ = reloader.reload().await;
            }
        }
    }
}

/// Socket buffers asked for on each UDP socket, so a burst of queries waits in the kernel
/// instead of being dropped; the kernel caps it at `net.core.rmem_max` / `wmem_max`.
pub const UDP_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

fn size_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = UDP_SOCKET_BUFFER as libc::c_int;
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with a c_int value on a socket we own.
        let done = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done != 0 {
            tracing::warn!(
                "cannot size a UDP socket buffer: {}",
                io::Error::last_os_error()
            );
        }
    }
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
            Ok(tcp) => {
                size_buffers(&udp);
                return Ok((udp, tcp));
            }
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
