//! Sockets, tasks and shutdown; no DNS semantics.
//!
//! [`run`] is the composition root: it binds every socket (DNS over UDP and TCP, the admin
//! socket, the metrics endpoint) and opens the state file, starts the change path (switch,
//! cutovers, reload) and the report path (ledger), spawns the query path and the control
//! plane under a [`Supervisor`], says `ready`, and serves until the shutdown token fires or
//! a loop fails. Then it stops accepting, lets queries in flight finish, and removes the
//! admin socket.

mod supervisor;
mod tcp;
pub mod transfers;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use supervisor::{LoopFailed, Supervisor};
pub use tcp::TcpLimits;
pub use udp::MAX_UDP_BATCH;

use crate::admin::commands::Context;
use crate::admin::server::{AdminLimits, AdminSocket, BindError};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::Config;
use crate::cutover::{Cutovers, Probe};
use crate::dns::Handler;
use crate::dns::rrl::Limiter;
use crate::dnstap::Collector;
use crate::fleet::Fleet;
use crate::metrics::{self, Exporter};
use crate::observed::counters::Counters;
use crate::reload::Reloader;
use crate::state::{StateError, Store};
use crate::stragglers::Ledger;
use crate::switch::Switch;

/// How long shutdown waits for queries, admin requests and reloads in flight; what is still
/// busy then is abandoned, and the process exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Admin(#[from] BindError),
    #[error("cannot bind {what} {addr}: {source}{}", bind_hint(source, addr))]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    Loop(#[from] LoopFailed),
    #[error("{0}")]
    Dnstap(io::Error),
}

/// How to bind a privileged port without running as root, when that is what failed.
fn bind_hint(source: &io::Error, addr: &SocketAddr) -> &'static str {
    if source.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        "; ports below 1024 need CAP_NET_BIND_SERVICE: run under the systemd unit in \
         contrib/systemd (AmbientCapabilities), or `sudo setcap cap_net_bind_service=+ep \
         $(command -v flipdns)`, rather than as root"
    } else {
        ""
    }
}

/// What the receive loops share: the handler, the counters, the ledger (when on), and
/// what zone transfers need.
pub struct QueryPath {
    pub handler: Handler,
    pub counters: Arc<Counters>,
    pub ledger: Option<Arc<Ledger>>,
    pub fleet: Arc<Fleet>,
    /// Slots for transfers served at once (`[limits] transfers`, `transfers_per_source`).
    pub transfers: transfers::TransferSlots,
    pub transfer_timeout: Duration,
    /// `[limits] transfer_min_rate`, bytes a second.
    pub transfer_min_rate: u64,
}

/// Every socket, bound before anything starts serving, so a bad address fails the start.
struct Bound {
    dns: Vec<Dns>,
    admin: AdminSocket,
    metrics: Option<TcpListener>,
    /// The HTTPS API's listeners (none when `[api] listen` is empty).
    api: Vec<TcpListener>,
    dnstap: Vec<crate::dnstap::Listener>,
    /// The dnstap socket files, removed at shutdown.
    dnstap_files: Option<crate::dnstap::SocketFiles>,
}

/// One DNS address: a UDP socket per worker, and the TCP listener.
struct Dns {
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
}

/// The change and report paths, started.
struct Core {
    /// `[server]` and `[limits]` as at start, for what only a restart changes (sockets,
    /// workers, admin access, limits); not the whole config, whose services would then be
    /// held twice, and after a reload for nothing.
    server: crate::config::Server,
    limits: crate::config::Limits,
    clock: Clock,
    switch: Arc<Switch>,
    counters: Arc<Counters>,
    ledger: Option<Arc<Ledger>>,
    rrl: Option<Arc<Limiter>>,
    cutovers: Arc<Cutovers>,
    fleet: Arc<Fleet>,
    /// The secondaries' dnstap streams, when `[dnstap]` listens.
    dnstap: Option<Arc<Collector>>,
    /// Serving: `/ready` answers 200.
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Serves `catalog` until `shutdown` is cancelled, or until a loop fails.
pub async fn run(catalog: Catalog, shutdown: CancellationToken) -> Result<(), ServeError> {
    // A state write past RLIMIT_FSIZE must fail with EFBIG, and so refuse the flip, instead
    // of killing the process.
    // SAFETY: setting a signal's disposition to ignore; no handler code runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let clock = Clock::System;
    let store = Store::open(&catalog.config.server.state_file)?;
    let bound = bind(&catalog.config).await?;
    let tracker = TaskTracker::new();
    let core = Core::start(catalog, store, clock, &shutdown, &tracker)?;
    let mut loops = Supervisor::new(shutdown.clone());
    let dnstap_files = bound.dnstap_files;
    if let Some(collector) = &core.dnstap {
        for (what, run) in collector.serve(bound.dnstap, &shutdown, &tracker) {
            loops.spawn(what, run);
        }
    }
    spawn_query_path(&core, bound.dns, &mut loops, &shutdown, &tracker)?;
    let admin = spawn_control_plane(
        &core,
        bound.admin,
        bound.metrics,
        bound.api,
        &mut loops,
        &shutdown,
    );
    crate::process::memory::release_freed_memory();
    core.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("ready");
    crate::process::systemd::ready(&serving_status(&core));
    let outcome = loops.watch().await;
    if let Err(failed) = &outcome {
        tracing::error!("{failed}; shutting down");
    }
    core.ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    crate::process::systemd::stopping();
    // One deadline for all of shutdown: nothing in flight (a query, an admin request, a
    // reload whose read hangs on a FIFO or a dead mount) holds the exit beyond it.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loops.stop(deadline).await;
    drop(admin);
    drop(dnstap_files);
    finish(tracker, deadline).await;
    if tokio::time::timeout_at(deadline, core.switch.quiesce())
        .await
        .is_err()
    {
        tracing::warn!(
            "a state compaction was still running at the shutdown deadline; the journal holds every change"
        );
    }
    tracing::info!("stopped");
    outcome.map_err(ServeError::from)
}

/// The status line systemd shows (`systemctl status`).
fn serving_status(core: &Core) -> String {
    let catalog = core.switch.catalog();
    crate::process::systemd::serving(catalog.config.services.len(), catalog.zones.len())
}

/// Binds DNS, admin and metrics sockets, logging each.
async fn bind(config: &Config) -> Result<Bound, ServeError> {
    let mut dns = Vec::new();
    for &addr in &config.server.listen {
        let bound = bind_dns(addr, config.server.workers).await?;
        tracing::info!(
            "listening on udp {}",
            local(&bound.udp[0].local_addr(), addr)
        );
        tracing::info!("listening on tcp {}", local(&bound.tcp.local_addr(), addr));
        dns.push(bound);
    }
    tracing::info!(
        "udp: {} workers per address, up to {} datagrams per system call",
        config.server.workers,
        config.server.udp_batch
    );
    let admin = AdminSocket::bind(&config.server.admin_socket, config.server.admin_socket_mode)?;
    let metrics = match config.server.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "metrics",
                    addr,
                    source,
                })?;
            tracing::info!(
                "metrics on http://{}/metrics",
                local(&listener.local_addr(), addr)
            );
            Some(listener)
        }
        None => None,
    };
    let mut api = Vec::new();
    for &addr in &config.api.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                what: "api",
                addr,
                source,
            })?;
        let scheme = if config.api.cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            "api on {scheme}://{}/v1/",
            local(&listener.local_addr(), addr)
        );
        api.push(listener);
    }
    tracing::info!("admin socket {}", admin.path().display());
    let (dnstap, dnstap_files) = if config.dnstap.enabled() {
        let (listeners, files) = crate::dnstap::bind(&config.dnstap)
            .await
            .map_err(ServeError::Dnstap)?;
        (listeners, Some(files))
    } else {
        (Vec::new(), None)
    };
    Ok(Bound {
        dns,
        admin,
        metrics,
        api,
        dnstap,
        dnstap_files,
    })
}

fn local(bound: &io::Result<SocketAddr>, asked: SocketAddr) -> SocketAddr {
    *bound.as_ref().unwrap_or(&asked)
}

impl Core {
    fn start(
        catalog: Catalog,
        store: Store,
        clock: Clock,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Core, ServeError> {
        let config = &catalog.config;
        let (server, limits) = (config.server.clone(), config.limits.clone());
        let ledger_config = config.ledger.clone();
        let dnstap_config = config.dnstap.clone();
        let rrl = config
            .rrl
            .enabled
            .then(|| Arc::new(Limiter::new(&config.rrl)));
        let switch = Arc::new(Switch::start(catalog, store, clock.clone())?);
        let fleet = Fleet::start(
            &switch.catalog(),
            switch.records().clone(),
            clock.clone(),
            shutdown,
            tracker,
        );
        let ledger = ledger_config.enabled.then(|| {
            Ledger::start(
                ledger_config.capacity,
                switch.records().clone(),
                clock.clone(),
                crate::stragglers::DRAIN_EVERY,
                shutdown,
                tracker,
            )
        });
        let cutovers = Arc::new(Cutovers::start(
            switch.clone(),
            fleet.clone(),
            clock.clone(),
            Arc::new(Probe(clock.clone())),
            shutdown,
            tracker,
        ));
        let counters = Arc::new(Counters::with_workers(server.listen.len() * server.workers));
        let dnstap = dnstap_config.enabled().then(|| {
            Collector::new(
                dnstap_config,
                switch.records().clone(),
                ledger.clone(),
                cutovers.clone(),
                clock.clone(),
            )
        });
        Ok(Core {
            server,
            limits,
            clock,
            switch,
            counters,
            ledger,
            rrl,
            cutovers,
            fleet,
            dnstap,
            ready: Default::default(),
        })
    }
}

/// The UDP workers (threads) and one TCP accept loop per DNS address.
fn spawn_query_path(
    core: &Core,
    dns: Vec<Dns>,
    loops: &mut Supervisor,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), ServeError> {
    let mut handler = Handler::new(
        core.switch.records().clone(),
        core.counters.clone(),
        core.clock.clone(),
    );
    if let Some(rrl) = &core.rrl {
        handler = handler.with_rrl(rrl.clone());
    }
    let path = Arc::new(QueryPath {
        handler,
        counters: core.counters.clone(),
        ledger: core.ledger.clone(),
        fleet: core.fleet.clone(),
        transfers: transfers::TransferSlots::new(
            core.limits.transfers,
            core.limits.transfers_per_source,
        ),
        transfer_timeout: core.limits.transfer_timeout,
        transfer_min_rate: core.limits.transfer_min_rate,
    });
    let limits = &core.limits;
    let tcp_limits = TcpLimits {
        connections: limits.tcp_connections,
        idle_timeout: limits.tcp_idle_timeout,
        message_timeout: limits.tcp_message_timeout,
    };
    let mut workers = 0;
    for Dns { udp, tcp } in dns {
        let name = |proto: &str, addr: io::Result<SocketAddr>| {
            format!("{proto} {}", addr.map_or("?".into(), |a| a.to_string()))
        };
        for (index, socket) in udp.into_iter().enumerate() {
            let what = format!("{} worker {index}", name("udp", socket.local_addr()));
            let (path, batch, shutdown) = (path.clone(), core.server.udp_batch, shutdown.clone());
            // Numbered across addresses: each owns its counter shard.
            let worker = workers;
            workers += 1;
            let (ended, end) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("flipdns-udp-{worker}"))
                .spawn(move || {
                    // A panic drops `ended` unsent, which the supervisor reports.
                    let _ = ended.send(udp::serve(socket, path, worker, batch, shutdown));
                })
                .map_err(|e| LoopFailed {
                    what: what.clone(),
                    reason: format!("cannot start its thread: {e}"),
                })?;
            loops.spawn(what, async move {
                end.await
                    .unwrap_or_else(|_| Err("its thread panicked".into()))
            });
        }
        loops.spawn(
            name("tcp", tcp.local_addr()),
            tcp::serve(
                tcp,
                path.clone(),
                tcp_limits,
                shutdown.clone(),
                tracker.clone(),
            ),
        );
    }
    Ok(())
}

/// The admin socket, the metrics endpoint and SIGHUP reloads. Returns the admin socket,
/// whose file goes when it is dropped.
fn spawn_control_plane(
    core: &Core,
    admin: AdminSocket,
    metrics: Option<TcpListener>,
    api_listeners: Vec<TcpListener>,
    loops: &mut Supervisor,
    shutdown: &CancellationToken,
) -> Arc<AdminSocket> {
    let reloader = Arc::new(Reloader::new(
        core.switch.clone(),
        core.cutovers.clone(),
        core.fleet.clone(),
        core.clock.clone(),
    ));
    let audit = Arc::new(crate::admin::audit::AuditLog::start(
        core.server.audit_file.clone(),
        core.limits.audit_file_size,
    ));
    if let Some(events) = core.cutovers.events() {
        loops.spawn(
            "the audit of cutover events",
            crate::admin::audit::record_events(events, audit.clone(), shutdown.clone()),
        );
    }
    let limits = &core.limits;
    let admin_limits = AdminLimits {
        clients: limits.admin_clients,
        request_timeout: limits.admin_request_timeout,
        allowed_uids: core.server.admin_allowed_uids.clone(),
        allowed_gids: core.server.admin_allowed_gids.clone(),
    };
    let context = Arc::new(Context {
        switch: core.switch.clone(),
        cutovers: core.cutovers.clone(),
        fleet: core.fleet.clone(),
        ledger: core.ledger.clone(),
        dnstap: core.dnstap.clone(),
        reloader: reloader.clone(),
        clock: core.clock.clone(),
        shutdown: shutdown.clone(),
        write_timeout: limits.admin_request_timeout,
        audit: audit.clone(),
    });
    let api = spawn_api(core, &context, api_listeners, loops, shutdown);
    if let Some(listener) = metrics {
        let exporter = exporter(core, &reloader, &audit, api.as_deref());
        spawn_metrics(exporter, &context, listener, loops, shutdown);
    }
    // Installed before `ready` is said: a SIGHUP right after it must reload, not kill.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    loops.spawn(
        "the SIGHUP handler",
        reload_on_hangup(hangups, reloader.clone(), shutdown.clone()),
    );
    let admin = Arc::new(admin);
    loops.spawn(
        "the admin socket",
        crate::admin::server::serve(
            admin.clone(),
            context,
            core.counters.clone(),
            admin_limits,
            shutdown.clone(),
        ),
    );
    admin
}

/// The HTTPS API on each of `listeners`, with the watch page beside it. Returns its handler
/// (for its counters), when there is a listener.
fn spawn_api(
    core: &Core,
    context: &Arc<Context>,
    listeners: Vec<TcpListener>,
    loops: &mut Supervisor,
    shutdown: &CancellationToken,
) -> Option<Arc<crate::api::Api>> {
    if listeners.is_empty() {
        return None;
    }
    let bounds = core.switch.catalog().config.api.bounds;
    let limits = crate::http::Limits {
        connections: bounds.connections,
        per_source: bounds.connections_per_source,
        head_size: bounds.head_size,
        head_timeout: bounds.head_timeout,
        body_size: bounds.body_size,
        request_timeout: bounds.request_timeout,
    };
    let handler = Arc::new(crate::api::Api::new(context.clone(), bounds.followers));
    let switch = core.switch.clone();
    let tls: crate::http::Tls = Arc::new(move || switch.catalog().api_tls.clone());
    // The watch page on the API listener too; its data is the API's, behind `read`.
    let site = Arc::new(crate::page::Site::before_api(handler.clone()));
    for listener in listeners {
        loops.spawn(
            "the HTTPS API",
            crate::http::serve(
                "api",
                listener,
                Some(tls.clone()),
                site.clone(),
                limits,
                shutdown.clone(),
            ),
        );
    }
    Some(handler)
}

/// What `/metrics` reads from.
fn exporter(
    core: &Core,
    reloader: &Reloader,
    audit: &crate::admin::audit::AuditLog,
    api: Option<&crate::api::Api>,
) -> Exporter {
    Exporter {
        counters: core.counters.clone(),
        records: core.switch.records().clone(),
        ledger: core.ledger.clone(),
        rrl: core.rrl.clone(),
        fleet: core.fleet.clone(),
        clock: core.clock.clone(),
        ready: core.ready.clone(),
        reloads: reloader.outcomes.clone(),
        started_ms: core.clock.now_ms(),
        switch: core.switch.clone(),
        dnstap: core.dnstap.clone(),
        audit_lost: audit.lost.clone(),
        events_lost: core.cutovers.events_lost(),
        api: api.map(crate::api::Api::counters),
    }
}

/// `/metrics`, the health endpoints and the read-only watch page on `listener`.
fn spawn_metrics(
    exporter: Exporter,
    context: &Arc<Context>,
    listener: TcpListener,
    loops: &mut Supervisor,
    shutdown: &CancellationToken,
) {
    let endpoint = Arc::new(metrics::Endpoint(Arc::new(exporter)));
    let site = Arc::new(crate::page::Site::new(context.clone(), endpoint));
    loops.spawn(
        "the metrics endpoint",
        crate::http::serve(
            "metrics endpoint",
            listener,
            None,
            site,
            metrics::limits(),
            shutdown.clone(),
        ),
    );
}

/// Lets the work in flight finish, until `deadline`.
async fn finish(tracker: TaskTracker, deadline: tokio::time::Instant) {
    tracing::info!(
        "shutting down: waiting up to {} s for queries in flight",
        SHUTDOWN_GRACE.as_secs()
    );
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still busy after {} s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Reloads on SIGHUP until `shutdown`; the outcome is logged either way. At shutdown a
/// reload in progress is abandoned (its blocked read, if any, with it).
async fn reload_on_hangup(
    hangups: io::Result<tokio::signal::unix::Signal>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut hangups = hangups.map_err(|e| format!("cannot install a SIGHUP handler: {e}"))?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = hangups.recv() => {
                tracing::info!("SIGHUP received: reloading");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = reloader.reload(false) => {}
                }
            }
        }
    }
}

/// Socket buffers asked for on each UDP socket, so a burst of queries waits in the kernel
/// instead of being dropped; the kernel caps it at `net.core.rmem_max` / `wmem_max`.
pub const UDP_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds `workers` UDP sockets and one TCP listener on `addr`. Port 0 picks a port free
/// for both, so one `dig -p` reaches the server over either transport.
async fn bind_dns(addr: SocketAddr, workers: usize) -> Result<Dns, ServeError> {
    const ATTEMPTS: usize = 20;
    let failed = |what, addr| move |source| ServeError::Bind { what, addr, source };
    let mut attempt = 0;
    loop {
        let first = udp::worker_socket(addr, UDP_SOCKET_BUFFER).map_err(failed("udp", addr))?;
        let bound = first.local_addr().map_err(failed("udp", addr))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..workers {
                    udp.push(
                        udp::worker_socket(bound, UDP_SOCKET_BUFFER)
                            .map_err(failed("udp", bound))?,
                    );
                }
                return Ok(Dns { udp, tcp });
            }
            Err(e)
                if addr.port() == 0
                    && e.kind() == io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS =>
            {
                attempt += 1
            }
            Err(source) => return Err(failed("tcp", bound)(source)),
        }
    }
}
