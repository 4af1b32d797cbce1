//! What each admin request does, one file per command; here, the dispatch and the reply
//! lines. Domain modules return domain values; these files turn them into replies.

mod addresses;
mod cutover;
mod notify;
mod reload;
mod status;
mod stragglers;

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::clock::Clock;
use crate::cutover::Cutovers;
use crate::fleet::Fleet;
use crate::observed;
use crate::process::build_info;
use crate::protocol::{
    AddressHealth, AuditEntry, ColorHealth, Error, ErrorKind, PROTOCOL_VERSION, PhaseName,
    PhaseStatus, Reply, Request, Response, Version,
};
use crate::reload::Reloader;
use crate::state::Phase;
use crate::stragglers::Ledger;
use crate::switch::Switch;

/// What request handlers need.
pub struct Context {
    pub switch: Arc<Switch>,
    pub cutovers: Arc<Cutovers>,
    pub fleet: Arc<Fleet>,
    /// `None` when the ledger is off.
    pub ledger: Option<Arc<Ledger>>,
    /// The secondaries' dnstap streams; `None` when `[dnstap]` is off.
    pub dnstap: Option<Arc<crate::dnstap::Collector>>,
    pub reloader: Arc<Reloader>,
    pub clock: Clock,
    /// Fires at shutdown: a client following a cutover is told before the socket closes.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Time allowed to write one reply line (`admin_request_timeout`).
    pub write_timeout: std::time::Duration,
    /// Where every change asked is recorded.
    pub audit: Arc<crate::admin::audit::AuditLog>,
}

/// Who is on the other end of an admin connection (SO_PEERCRED), for the audit trail; or
/// the HTTPS API's principal (its token's name) and the client's address.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub user: Option<String>,
    /// Over the API: the token's name, and where the request came from.
    pub token: Option<String>,
    pub source: Option<std::net::SocketAddr>,
}

impl Context {
    /// Records that `peer` asked `request` (as part of `change`, when it began or joined
    /// one), and what the reply said.
    pub fn audit(
        &self,
        peer: &Peer,
        request: &Request,
        change: Option<u64>,
        outcome: String,
        ok: bool,
    ) {
        self.audit.record(AuditEntry {
            at_ms: self.clock.now_ms(),
            change,
            event: "asked".into(),
            service: request.service().map(String::from),
            principal: peer.principal(),
            uid: peer.uid,
            user: peer.user.clone(),
            gid: peer.gid,
            pid: peer.pid,
            source: peer.source.map(|s| s.to_string()),
            request: Some(request.clone()),
            outcome,
            ok,
        });
    }

    /// Records `event` of `change` of `service`, which `principal` asked for: what the
    /// server did on its own (or the fleet's outcome of a flip a client followed).
    pub fn audit_event(
        &self,
        service: &str,
        change: Option<u64>,
        principal: String,
        event: &str,
        outcome: String,
        ok: bool,
    ) {
        self.audit.record(AuditEntry {
            at_ms: self.clock.now_ms(),
            change,
            event: event.into(),
            service: Some(service.into()),
            principal,
            outcome,
            ok,
            ..Default::default()
        });
    }

    /// A new change id: Unix milliseconds and a counter, unique in this process and, by the
    /// clock, across restarts.
    pub fn new_change(&self) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        self.clock.now_ms() * 1000 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000
    }
}

impl Peer {
    /// The principal as the audit trail names it: `alice (uid 1000)`, `token deploy`.
    pub fn principal(&self) -> String {
        match (&self.token, &self.user) {
            (Some(token), _) => format!("token {token}"),
            (None, Some(user)) => format!("{user} (uid {})", self.uid),
            (None, None) => format!("uid {}", self.uid),
        }
    }

    /// The principal's identity, which the two-person rule compares: `unix:1000`,
    /// `token:deploy`.
    pub fn identity(&self) -> String {
        match &self.token {
            Some(token) => format!("token:{token}"),
            None => format!("unix:{}", self.uid),
        }
    }

    /// Who asked for a command, and the id its change takes.
    pub fn origin(&self, context: &Context) -> crate::cutover::Origin {
        crate::cutover::Origin {
            change: context.new_change(),
            by: self.principal(),
            who: self.identity(),
        }
    }
}

/// Runs one request line, writing its reply (and any progress) to `out`. An error is a
/// write error: the client is gone.
pub async fn dispatch<W: AsyncWrite + Unpin>(
    context: &Context,
    peer: &Peer,
    line: &[u8],
    out: &mut W,
) -> io::Result<()> {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => {
            let error = Error::new(ErrorKind::Invalid, format!("bad request: {e}"));
            return send(context, out, &Reply::Error(error)).await;
        }
    };
    carry_out(context, peer, request, out).await
}

/// Carries out one request (from the socket or the HTTPS API), writing its reply lines
/// (and any progress) to `out`. An error is a write error: the client is gone.
pub async fn carry_out<W: AsyncWrite + Unpin>(
    context: &Context,
    peer: &Peer,
    request: Request,
    out: &mut W,
) -> io::Result<()> {
    let reply = match request {
        Request::Version => Ok(Response::Version(Version {
            server: build_info::VERSION.into(),
            protocol: PROTOCOL_VERSION,
            revision: build_info::REVISION.into(),
            rustc: build_info::RUSTC.into(),
        })),
        Request::Status { service } => status::run(context, service.as_deref())
            .await
            .map(Response::Status),
        Request::Stragglers {
            service,
            limit,
            classes,
            all,
        } => stragglers::run(context, &service, limit, &classes, all)
            .await
            .map(|report| Response::Stragglers(Box::new(report))),
        Request::Reload { force } => {
            let reloaded = reload::run(context, force).await;
            match &reloaded {
                Ok(r) if r.addresses_from_config.is_empty() => {
                    context.audit(peer, &request, None, "reloaded".into(), true)
                }
                Ok(r) => {
                    let said = format!("reloaded; {}", r.addresses_from_config.join("; "));
                    context.audit(peer, &request, None, said, true)
                }
                Err(e) => context.audit(peer, &request, None, e.message.clone(), false),
            }
            reloaded.map(Response::Reloaded)
        }
        Request::LogLevel { ref filter } => {
            let set = crate::process::logging::set_filter(filter);
            match &set {
                Ok(()) => context.audit(peer, &request, None, format!("log filter {filter}"), true),
                Err(e) => context.audit(peer, &request, None, e.clone(), false),
            }
            set.map(|()| Response::LogLevel(filter.clone()))
                .map_err(|e| Error::new(ErrorKind::Invalid, e))
        }
        Request::History {
            ref service,
            limit,
            reads,
        } => history(context, service.clone(), limit, reads).await,
        Request::Notify { ref secondary } => {
            let notified = notify::run(context, secondary.as_deref()).await;
            context.audit(
                peer,
                &request,
                None,
                notify::outcome(&notified),
                notified.is_ok(),
            );
            notified.map(Response::Notified)
        }
        Request::SetAddresses { .. } => return addresses::run(context, peer, request, out).await,
        Request::Prepare { .. }
        | Request::Approve { .. }
        | Request::Follow { .. }
        | Request::Flip { .. }
        | Request::Rollback { .. }
        | Request::Cancel { .. } => return cutover::run(context, peer, request, out).await,
    };
    send(context, out, &reply.map_or_else(Reply::Error, Reply::Ok)).await
}

/// The audit trail's latest `limit` entries (of `service`, with reads when `reads`).
async fn history(
    context: &Context,
    service: Option<String>,
    limit: Option<usize>,
    reads: bool,
) -> Result<Response, Error> {
    // Up to twice `audit_file_size` is read: on a blocking thread, not the runtime's.
    let audit = context.audit.clone();
    let limit = limit.unwrap_or(DEFAULT_HISTORY);
    tokio::task::spawn_blocking(move || audit.read(service.as_deref(), limit, reads))
        .await
        .map(Response::History)
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading the audit trail failed: {e}"),
            )
        })
}

/// Entries `history` returns when no limit is given.
pub const DEFAULT_HISTORY: usize = 50;

/// One reply as the line that goes on the wire.
pub fn reply_line(reply: &Reply) -> String {
    let mut line = serde_json::to_string(reply).expect("replies serialize");
    line.push('\n');
    line
}

/// Writes one reply line, within the write timeout: a client that does not read its
/// replies loses its connection instead of holding its slot.
async fn send<W: AsyncWrite + Unpin>(
    context: &Context,
    out: &mut W,
    reply: &Reply,
) -> io::Result<()> {
    let line = reply_line(reply);
    match tokio::time::timeout(context.write_timeout, out.write_all(line.as_bytes())).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client does not read its replies",
        )),
    }
}

/// A request waiting for approval as replies show it.
fn awaiting(waiting: &crate::state::Awaiting) -> crate::protocol::AwaitingApproval {
    crate::protocol::AwaitingApproval {
        action: waiting.action.to_string(),
        by: waiting.by.clone(),
        at_ms: waiting.at_ms,
        expires_ms: waiting.expires_ms,
    }
}

/// A phase as replies show it.
fn phase(phase: &Phase) -> PhaseStatus {
    let name = match phase.name() {
        crate::state::PhaseName::Steady => PhaseName::Steady,
        crate::state::PhaseName::Preparing => PhaseName::Preparing,
        crate::state::PhaseName::Settling => PhaseName::Settling,
    };
    let (since_ms, settle_until_ms) = match *phase {
        Phase::Preparing { since_ms, .. } => (Some(since_ms), None),
        Phase::Settling { until_ms, .. } => (None, Some(until_ms)),
        Phase::Steady => (None, None),
    };
    PhaseStatus {
        name,
        since_ms,
        drained_at_ms: phase.drained_at_ms(),
        target: phase.target(),
        settle_until_ms,
    }
}

/// A health check as replies show it.
fn health(health: &observed::ColorHealth) -> ColorHealth {
    ColorHealth {
        color: health.color,
        checked_at_ms: health.checked_at_ms,
        healthy: health.healthy(),
        total: health.addresses.len(),
        addresses: health
            .addresses
            .iter()
            .map(|a| AddressHealth {
                address: a.address,
                port: a.port,
                healthy: a.healthy,
                detail: a.detail.clone(),
            })
            .collect(),
    }
}

fn unknown_service(service: &str) -> Error {
    Error::new(
        ErrorKind::UnknownService,
        format!("unknown service {service:?}"),
    )
}
