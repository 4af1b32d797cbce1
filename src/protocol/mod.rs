//! The admin protocol: the request and reply types of the admin socket, shared by the server
//! and `flipdns ctl`.
//!
//! This module is the wire contract and depends on nothing of the daemon (only on [`Color`]),
//! so clients and scripts can rely on it alone. Newline-delimited JSON over a Unix socket:
//! the client writes one request per line and reads its reply line, in order, on one
//! connection for as long as it likes.
//!
//! ```text
//! -> {"cmd": "version"}
//! <- {"ok": {"version": {"server": "0.1.0", "protocol": 1}}}
//! -> {"cmd": "flip", "service": "app", "to": "green", "now": true}
//! <- {"ok": {"cutover": {"service": "app", "outcome": "flipped", "live": "green", ...}}}
//! -> {"cmd": "flip", "service": "nope", "to": "green"}
//! <- {"error": {"kind": "unknown_service", "message": "unknown service \"nope\" (configured: app, api)"}}
//! ```
//!
//! Every reply line is one of `{"ok": RESPONSE}`, `{"error": {"kind", "message"}}` or
//! `{"progress": PROGRESS}`. A flip or rollback that waits for the drain (`"wait": true`, the
//! default) streams progress lines, at least one a second, before its `ok` or `error` line.
//! A client that goes away stops the stream, not the cutover: the schedule lives in the
//! server.
//!
//! A request line longer than [`MAX_REQUEST_BYTES`], or one not completed within the
//! server's `admin_request_timeout`, is answered with an error and the connection closed. A
//! request that fails changes nothing. [`PROTOCOL_VERSION`] changes when a change would
//! break an existing client.
#![warn(missing_docs)]

pub mod routes;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::color::Color;

/// The version of this protocol; `version` replies with it.
pub const PROTOCOL_VERSION: u32 = 1;

/// How [`ResolverView::via`] names this server (the primary) among those a resolver asked.
pub const VIA_PRIMARY: &str = "primary";

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The server's version and protocol version.
    Version,
    /// Every service and zone as served now, or only `service`.
    Status {
        /// Only this service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// Lower the TTL now: answers carry `cutover_ttl`; replies with the drain deadline.
    Prepare {
        /// The service, as named in the config.
        service: String,
    },
    /// Make `to` live: prepare, wait for the drain, check health, flip, settle.
    Flip {
        /// The service, as named in the config.
        service: String,
        /// The color to make live.
        to: Color,
        /// Flip at once, without waiting for the drain (still settles afterwards).
        #[serde(default)]
        now: bool,
        /// Skip the health gate and the flip interval.
        #[serde(default)]
        force: bool,
        /// Stream progress until the flip is done; `false` replies once it is scheduled.
        #[serde(default = "yes")]
        wait: bool,
        /// After the flip, wait (up to `[fleet] wait`) until every secondary serves it.
        #[serde(default = "yes")]
        wait_secondaries: bool,
    },
    /// Flip back to the other color: at once while settling, otherwise the whole sequence.
    Rollback {
        /// The service, as named in the config.
        service: String,
        /// Skip the health gate.
        #[serde(default)]
        force: bool,
        /// Stream progress until the rollback is done.
        #[serde(default = "yes")]
        wait: bool,
        /// After the flip, wait (up to `[fleet] wait`) until every secondary serves it.
        #[serde(default = "yes")]
        wait_secondaries: bool,
    },
    /// Abandon a pending cutover (or end a settle early): back to steady, normal TTL.
    Cancel {
        /// The service, as named in the config.
        service: String,
    },
    /// Replace the addresses of one color of a service (a release's new instances): the
    /// idle color only, unless `force`; never the color a cutover is heading to or settling
    /// on. Persisted before the reply, sent to the secondaries like a flip. The HTTPS API
    /// carries it under the scope `deploy:SERVICE` (a `flip:` token cannot change
    /// addresses).
    SetAddresses {
        /// The service, as named in the config.
        service: String,
        /// The color whose addresses are replaced.
        color: Color,
        /// The new set: 1 to 64 distinct IPv4 or IPv6 addresses.
        addresses: Vec<IpAddr>,
        /// Replace the live color's addresses (an emergency: its answers change at once).
        #[serde(default)]
        force: bool,
        /// Run the service's health check against the new addresses first; refuse if any
        /// fails.
        #[serde(default)]
        check: bool,
        /// Wait (up to `[fleet] wait`) until every secondary serves the new set.
        #[serde(default = "yes")]
        wait_secondaries: bool,
    },
    /// Approve the flip or prepare another principal asked for (a service with
    /// `approval = "two-person"`); the requester cannot approve their own.
    Approve {
        /// The service, as named in the config.
        service: String,
        /// Stream the approved cutover's progress until it is done.
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Follow the cutover in progress, changing nothing: its progress lines until it ends,
    /// then its outcome (`nothing_pending` at once when none is).
    Follow {
        /// The service, as named in the config.
        service: String,
    },
    /// Re-read the config and zone files; apply them only if all of it is valid.
    Reload {
        /// Remove services even if they have a cutover in progress (it is dropped).
        #[serde(default)]
        force: bool,
    },
    /// The straggler report of `service`: resolvers by class since its latest flip.
    Stragglers {
        /// The service, as named in the config.
        service: String,
        /// Most resolvers listed (default 20); the reply says how many were left out.
        #[serde(default)]
        limit: Option<usize>,
        /// List resolvers of these classes (default: straggler, overdue, draining).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        classes: Vec<ResolverClass>,
        /// List resolvers of every class.
        #[serde(default)]
        all: bool,
    },
    /// Change the server's log filter from now on (`info`, `debug`, `flipdns::fleet=debug`);
    /// a restart goes back to `FLIPDNS_LOG`.
    LogLevel {
        /// A tracing filter directive.
        filter: String,
    },
    /// The audit trail: the latest changes asked for, oldest first.
    History {
        /// Only requests about this service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// Most entries returned (default 50), the latest ones.
        #[serde(default)]
        limit: Option<usize>,
        /// Include the API's successful reads (left out by default: a polling pipeline would
        /// bury the changes).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reads: bool,
    },
    /// Send every zone's NOTIFY now to one secondary (by name or address) or to all, and
    /// say what each acknowledged and serves after it.
    Notify {
        /// Only this secondary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secondary: Option<String>,
    },
}

/// One event of the audit trail: a change asked (and what the reply said), or what a
/// change did later on its own (flipped at its deadline, refused, settled, the fleet caught
/// up). The events of one change share its `change` id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The change this event belongs to; absent for requests that change no service's
    /// cutover (reload, log level) and in entries from before changes had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<u64>,
    /// What happened: `asked` (a request, with the reply's outcome), `flipped`, `refused`,
    /// `settled`, `fleet` (every secondary serves it, or the flip was done here only),
    /// `drain_moved`; empty in entries from before events had names (read as `asked`).
    #[serde(default)]
    pub event: String,
    /// The service, when the event is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Who asked for the change: `alice (uid 1000)`; for what the server did later on its
    /// own, who asked for the change it belongs to.
    #[serde(default)]
    pub principal: String,
    /// Who is on the admin connection (SO_PEERCRED) for `asked`; 0 for the server's own.
    pub uid: u32,
    /// That uid's user name, when the password database has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The peer's primary group.
    pub gid: u32,
    /// The peer's process (`flipdns ctl`, a release tool).
    pub pid: u32,
    /// For a request over the HTTPS API: the client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request, as on the wire, for `asked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// Done: the outcome (`scheduled`, `flipped`, `reloaded`, ...) or what happened;
    /// refused: why.
    pub outcome: String,
    /// Whether it was carried out (a refusal is recorded too).
    pub ok: bool,
}

impl AuditEntry {
    /// The service the entry is about, from its request for older entries.
    pub fn service(&self) -> Option<&str> {
        self.service
            .as_deref()
            .or_else(|| self.request.as_ref().and_then(Request::service))
    }
}

fn yes() -> bool {
    true
}

impl Request {
    /// The service the request is about, if it is about one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Request::Prepare { service }
            | Request::Flip { service, .. }
            | Request::Rollback { service, .. }
            | Request::Cancel { service }
            | Request::SetAddresses { service, .. }
            | Request::Approve { service, .. }
            | Request::Follow { service }
            | Request::Stragglers { service, .. } => Some(service),
            Request::Status { service } | Request::History { service, .. } => service.as_deref(),
            Request::Version
            | Request::Reload { .. }
            | Request::LogLevel { .. }
            | Request::Notify { .. } => None,
        }
    }

    /// Whether the request changes something (a cutover command or a reload): a
    /// connection carrying one out never gives up its seat to a newcomer.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Prepare { .. }
                | Request::Flip { .. }
                | Request::Rollback { .. }
                | Request::Cancel { .. }
                | Request::SetAddresses { .. }
                | Request::Approve { .. }
                | Request::Reload { .. }
        )
    }
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The request succeeded.
    #[serde(rename = "ok")]
    Ok(Response),
    /// The request failed and changed nothing (unless the message says otherwise).
    #[serde(rename = "error")]
    Error(Error),
    /// A step of a cutover being waited for; the `ok` or `error` line follows.
    #[serde(rename = "progress")]
    Progress(Progress),
}

/// What a successful request returns, by request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Reply to `version`.
    Version(Version),
    /// Reply to `status`.
    Status(Status),
    /// Reply to `prepare`, `flip`, `rollback` and `cancel`.
    Cutover(Cutover),
    /// Reply to `reload`.
    Reloaded(Reloaded),
    /// Reply to `stragglers` (boxed: the largest reply by far).
    Stragglers(Box<StragglersReport>),
    /// Reply to `history`.
    History(Vec<AuditEntry>),
    /// Reply to `log_level`: the filter now in force.
    LogLevel(String),
    /// Reply to `notify`: what each secondary said.
    Notified(Vec<NotifiedSecondary>),
    /// Reply to `set_addresses`.
    Addresses(AddressesReply),
}

/// A secondary's answers to `notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedSecondary {
    /// Its name in the config.
    pub name: String,
    /// Where the NOTIFY went.
    pub address: String,
    /// Per zone.
    pub zones: Vec<NotifiedZone>,
}

/// A secondary's answers to `notify` about one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedZone {
    /// The zone.
    pub origin: String,
    /// The serial announced: ours.
    pub serial: u32,
    /// Whether it acknowledged the NOTIFY.
    pub acknowledged: bool,
    /// The serial it serves after the NOTIFY (given a few seconds to catch up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serves: Option<u32>,
    /// What went wrong: no acknowledgement, or no answer to the SOA query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A failed request: a stable `kind` for scripts, a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// What kind of failure; stable across versions.
    pub kind: ErrorKind,
    /// What happened and what to do about it.
    pub message: String,
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kinds of failure, each with its own `flipdns ctl` exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was not understood (bad JSON, unknown command or field, bad value).
    Invalid,
    /// No service of that name is configured.
    UnknownService,
    /// The health gate found the target color unhealthy; `--force` overrides.
    RefusedUnhealthy,
    /// The flip came within `min_flip_interval` of the last one; `--force` overrides.
    RefusedInterval,
    /// Another cutover of the service is pending, or too many commands are queued.
    Busy,
    /// The change could not be written to the state file; nothing changed.
    Io,
    /// The pending cutover was cancelled while the client waited.
    Cancelled,
    /// The server is shutting down; a scheduled cutover resumes when it starts again.
    ShuttingDown,
    /// The config or a zone file has problems; the server keeps serving the previous one.
    InvalidConfig,
    /// The straggler ledger is off (`[ledger] enabled = false`).
    LedgerOff,
    /// This peer may not use the admin socket, or the API token lacks the scope.
    Forbidden,
    /// Too many admin clients are connected.
    TooManyClients,
    /// The request did not arrive in time, or was too long.
    RequestTimeout,
    /// A pending flip was refused: a secondary did not confirm the short TTL within
    /// `[fleet] wait`, so the drain is not proven; `--force` overrides.
    SecondariesBehind,
    /// The change could not be written to the state file, and the failed write could not be
    /// undone: the disk may hold it or not. The answers do not carry it; the server retries
    /// the undo every second, and `status` says the state is uncertain until it succeeds.
    Uncertain,
    /// No secondary of that name or address is configured.
    UnknownSecondary,
    /// The addresses of the live color were to be replaced; `--force` overrides.
    RefusedLive,
    /// An approval that cannot be given: nothing awaits one, or the approver asked for it.
    ApprovalRefused,
    /// The API request carried no valid token (or no client certificate where one is
    /// required).
    Unauthenticated,
    /// The API refused a request unread: too many failed authentications from its source.
    Throttled,
    /// Said by `flipdns ctl --json`, never by a server: there is no server to talk to (the
    /// socket is missing, refuses connections, or may not be opened).
    NoServer,
    /// Said by `flipdns ctl --json`, never by a server: the client itself failed (the
    /// connection was lost, or a reply could not be read).
    Client,
}

impl ErrorKind {
    /// Every kind, in exit-code order (new kinds go last: codes never change).
    pub const ALL: [ErrorKind; 20] = [
        ErrorKind::Invalid,
        ErrorKind::UnknownService,
        ErrorKind::RefusedUnhealthy,
        ErrorKind::RefusedInterval,
        ErrorKind::Busy,
        ErrorKind::Io,
        ErrorKind::Cancelled,
        ErrorKind::ShuttingDown,
        ErrorKind::InvalidConfig,
        ErrorKind::LedgerOff,
        ErrorKind::Forbidden,
        ErrorKind::TooManyClients,
        ErrorKind::RequestTimeout,
        ErrorKind::SecondariesBehind,
        ErrorKind::Uncertain,
        ErrorKind::UnknownSecondary,
        ErrorKind::RefusedLive,
        ErrorKind::ApprovalRefused,
        ErrorKind::Unauthenticated,
        ErrorKind::Throttled,
    ];

    /// The exit code of `flipdns ctl` for this kind: 10 and up, one per kind of the
    /// server's; the client's own are 1 ([`ErrorKind::Client`]) and 3
    /// ([`ErrorKind::NoServer`]) (0 is success, 2 a usage error).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Client => return 1,
            ErrorKind::NoServer => return 3,
            _ => {}
        }
        10 + ErrorKind::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every kind is listed") as u8
    }

    /// What the kind means for the operator, in one sentence (manual pages).
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "The request was not understood.",
            ErrorKind::UnknownService => "No such service in the config.",
            ErrorKind::RefusedUnhealthy => "The health gate failed; --force overrides.",
            ErrorKind::RefusedInterval => {
                "Within min_flip_interval of the last flip; --force overrides."
            }
            ErrorKind::Busy => {
                "Another cutover of the service is pending, or too many commands are queued; try again."
            }
            ErrorKind::Io => {
                "The state file could not be written; the write was undone: nothing changed."
            }
            ErrorKind::Cancelled => "The cutover being followed was cancelled.",
            ErrorKind::ShuttingDown => {
                "The server is stopping; a scheduled cutover resumes when it starts again."
            }
            ErrorKind::InvalidConfig => {
                "A reload found problems; the previous config keeps being served."
            }
            ErrorKind::LedgerOff => "The straggler ledger is off.",
            ErrorKind::Forbidden => {
                "This peer may not use the admin socket, or the API token lacks the scope."
            }
            ErrorKind::TooManyClients => {
                "The admin client limit is reached, every seat carrying out a change."
            }
            ErrorKind::RequestTimeout => "The request line was too slow or too long.",
            ErrorKind::SecondariesBehind => {
                "A pending flip was refused: a secondary did not confirm the short TTL within [fleet] wait; --force overrides."
            }
            ErrorKind::Uncertain => {
                "The state file could not be written and the write could not be undone: status says STATE UNCERTAIN until the retried undo succeeds."
            }
            ErrorKind::UnknownSecondary => "No such secondary in the config.",
            ErrorKind::RefusedLive => {
                "The addresses of the live color were to be replaced; --force overrides."
            }
            ErrorKind::ApprovalRefused => {
                "Nothing awaits approval, or the approver is the one who asked."
            }
            ErrorKind::Unauthenticated => {
                "The API request carried no valid token (or no required client certificate)."
            }
            ErrorKind::Throttled => {
                "Too many failed authentications from this source; wait and try again."
            }
            ErrorKind::NoServer => "No server to talk to.",
            ErrorKind::Client => "The client itself failed.",
        }
    }

    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::RefusedUnhealthy => "refused_unhealthy",
            ErrorKind::RefusedInterval => "refused_interval",
            ErrorKind::Busy => "busy",
            ErrorKind::Io => "io",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::LedgerOff => "ledger_off",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooManyClients => "too_many_clients",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::SecondariesBehind => "secondaries_behind",
            ErrorKind::Uncertain => "uncertain",
            ErrorKind::UnknownSecondary => "unknown_secondary",
            ErrorKind::RefusedLive => "refused_live",
            ErrorKind::ApprovalRefused => "approval_refused",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Throttled => "throttled",
            ErrorKind::NoServer => "no_server",
            ErrorKind::Client => "client",
        }
    }
}

/// Reply to `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The server's version, `0.1.0`.
    pub server: String,
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// The commit the server was built from, or "unknown"; empty from a server that predates
    /// the field.
    #[serde(default)]
    pub revision: String,
    /// The compiler it was built with, `1.95.0`; empty likewise.
    #[serde(default)]
    pub rustc: String,
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Snapshots published by this server process so far (starts at 1 at every start).
    pub snapshot_generation: u64,
    /// The services asked for.
    pub services: Vec<ServiceStatus>,
    /// Every zone.
    pub zones: Vec<ZoneStatus>,
    /// Every configured secondary.
    #[serde(default)]
    pub secondaries: Vec<SecondaryStatus>,
    /// Set while the state file may hold a change that is not served (a failed write
    /// could not be undone): why, and since when. Absent when disk and answers agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_uncertain: Option<StateUncertain>,
}

/// The state file may hold a change the answers do not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateUncertain {
    /// What went wrong.
    pub reason: String,
    /// Since when (Unix milliseconds).
    pub since_ms: u64,
}

/// One secondary in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryStatus {
    /// Its name in the config (its address when not named).
    pub name: String,
    /// Where NOTIFY and SOA queries go.
    pub address: String,
    /// The TSIG key used with it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    /// Its copy of each zone.
    pub zones: Vec<SecondaryZone>,
}

/// A secondary's copy of one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryZone {
    /// The zone.
    pub origin: String,
    /// Our serial.
    pub serial: u32,
    /// The serial its SOA answer gave, and when (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub serves: Option<u32>,
    /// When `serves` was last asked (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checked_at_ms: Option<u64>,
    /// Serials it is behind ours (0 when current; absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lag: Option<u32>,
    /// Since when it has served an older serial than ours (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub behind_since_ms: Option<u64>,
    /// The last NOTIFY sent to it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notify: Option<NotifyStatus>,
    /// The last zone transfer it took: serial, when, and `axfr`, `ixfr`, `ixfr_full` or
    /// `up_to_date`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transferred: Option<TransferStatus>,
    /// The last error asking it, and when (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// When that error happened.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_at_ms: Option<u64>,
    /// Failed NOTIFYs and SOA queries since start.
    pub errors: u64,
    /// Whether it answers SOA queries: false once several in a row failed (see
    /// `UNREACHABLE_AFTER`); what it `serves` is then what it last said.
    #[serde(default = "yes")]
    pub reachable: bool,
    /// Since when it has not answered, while unreachable (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unreachable_since_ms: Option<u64>,
    /// Whether it answers with our serial (or a later one): reachable and not behind.
    #[serde(default)]
    pub current: bool,
}

/// The last NOTIFY to a secondary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyStatus {
    /// The serial it announced.
    pub serial: u32,
    /// When it was last sent (Unix milliseconds).
    pub at_ms: u64,
    /// Tries so far.
    pub tries: u32,
    /// Whether the secondary acknowledged it.
    pub acked: bool,
}

/// The last zone transfer a secondary took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// The serial it brought.
    pub serial: u32,
    /// When it finished (Unix milliseconds).
    pub at_ms: u64,
    /// `axfr`, `ixfr`, `ixfr_full` or `up_to_date`.
    pub kind: String,
}

/// One service in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's name in the config.
    pub name: String,
    /// The name that follows the live color, e.g. `app.svc.example.com.`.
    pub fqdn: String,
    /// The zone the service lives in.
    pub zone: String,
    /// The color answered now.
    pub live: Color,
    /// Where the service is in its cutover.
    pub phase: PhaseStatus,
    /// TTL the service's answers carry now.
    pub ttl: u32,
    /// The configured normal TTL.
    pub normal_ttl: u32,
    /// The configured cutover TTL.
    pub cutover_ttl: u32,
    /// Flips of this service so far (persisted; counts across restarts).
    pub flips: u64,
    /// SOA serial of the service's zone.
    pub serial: u32,
    /// Unix time of the last flip in milliseconds.
    pub flipped_at_ms: Option<u64>,
    /// The blue addresses (the config's, or a runtime set: see `sources`).
    pub blue: Vec<IpAddr>,
    /// The green addresses.
    pub green: Vec<IpAddr>,
    /// Where each color's addresses come from: blue, then green.
    #[serde(default)]
    pub sources: Vec<AddressSource>,
    /// Answers given since start, by color.
    pub answers: Answers,
    /// Latest background health checks, when the service has a health check.
    pub health: Vec<ColorHealth>,
    /// Resolvers by class since the latest flip, when the ledger is on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolvers: Option<ClassCounts>,
    /// A change not yet seen served by every secondary.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fleet: Option<FleetWaitStatus>,
    /// While a pending flip, drained here, waits for secondaries to serve the short TTL:
    /// when the wait runs out and the flip is refused (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fleet_wait_until_ms: Option<u64>,
    /// A flip or prepare waiting for a second principal's approval.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub awaiting: Option<AwaitingApproval>,
}

/// A change of a service the secondaries have not all been seen to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetWaitStatus {
    /// The serial that carries it.
    pub serial: u32,
    /// `prepare` (the short TTL: the drain is not proven yet), `flip` (the new color: the
    /// old one is not drained yet), or `prepare and flip`.
    pub change: String,
    /// The secondaries not serving it, and why.
    pub behind: Vec<String>,
}

/// The phases of a cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    /// Answers carry the normal TTL.
    Steady,
    /// Answers carry the cutover TTL, before a flip.
    Preparing,
    /// Answers keep the cutover TTL after a flip, so a rollback is immediate.
    Settling,
}

/// Where a service is in its cutover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseStatus {
    /// The phase.
    pub name: PhaseName,
    /// Preparing: since when (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since_ms: Option<u64>,
    /// Preparing: when every cache that obeys TTLs has dropped the normal-TTL answers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drained_at_ms: Option<u64>,
    /// Preparing: the color a pending flip will make live.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<Color>,
    /// Settling: when the normal TTL comes back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub settle_until_ms: Option<u64>,
}

/// Answers given since start, by color.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    /// With the blue addresses.
    pub blue: u64,
    /// With the green addresses.
    pub green: u64,
}

/// One zone in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneStatus {
    /// The zone's origin, fully qualified.
    pub origin: String,
    /// The SOA serial served.
    pub serial: u32,
}

/// Health of every address of one color.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColorHealth {
    /// The color checked.
    pub color: Color,
    /// When (Unix milliseconds).
    pub checked_at_ms: u64,
    /// Addresses that passed.
    pub healthy: usize,
    /// Addresses checked.
    pub total: usize,
    /// Each address's result.
    pub addresses: Vec<AddressHealth>,
}

/// One address's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressHealth {
    /// The address checked.
    pub address: IpAddr,
    /// The port checked.
    pub port: u16,
    /// Whether it passed.
    pub healthy: bool,
    /// `HTTP 200`, `HTTP 503`, `connection refused`, `timeout after 2000 ms`, ...
    pub detail: String,
}

/// Reply to `prepare`, `flip`, `rollback` and `cancel`: what happened, and the service after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutover {
    /// The service.
    pub service: String,
    /// What the command did.
    pub outcome: Outcome,
    /// The color live now.
    pub live: Color,
    /// For a flip: the color that was live before.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<Color>,
    /// The phase now.
    pub phase: PhaseStatus,
    /// A flip or prepare waiting for a second principal's approval.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub awaiting: Option<AwaitingApproval>,
    /// TTL the service's answers carry now.
    pub ttl: u32,
    /// Flips of this service so far.
    pub flips: u64,
    /// SOA serial of the service's zone now.
    pub serial: u32,
    /// Identifies a scheduled cutover in progress lines.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cutover: Option<u64>,
    /// The health gate's results, when it ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub health: Option<ColorHealth>,
    /// After a flip: which secondaries serve it. With any `behind`, the flip is done here
    /// and `flipdns ctl` exits 5.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fleet: Option<FleetConvergence>,
}

/// A request waiting for a second principal (`approval = "two-person"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitingApproval {
    /// What was asked: `prepare`, `flip to green`, `flip to green now`, `rollback`.
    pub action: String,
    /// Who asked.
    pub by: String,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// When it is dropped unless approved (Unix milliseconds).
    pub expires_ms: u64,
}

/// Which secondaries serve a flip's serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetConvergence {
    /// The flip's serial.
    pub serial: u32,
    /// Secondaries that serve it, with how long after the flip they were seen to.
    pub converged: Vec<Converged>,
    /// Secondaries that did not within the wait, and why.
    pub behind: Vec<String>,
    /// Whether the reply waited for them (`false` with `--no-wait-secondaries`).
    pub waited: bool,
}

/// A secondary seen serving a flip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Converged {
    /// The secondary's name.
    pub name: String,
    /// Milliseconds from the flip to when it was seen serving it.
    pub after_ms: u64,
}

/// What a cutover command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The TTL is lowered (or already was).
    Prepared,
    /// The flip is scheduled for the drain deadline.
    Scheduled,
    /// The same flip was already scheduled; this request follows it.
    Joined,
    /// The color changed.
    Flipped,
    /// The color asked for was already live: nothing changed, no flip counted.
    AlreadyLive,
    /// A pending cutover was abandoned, or a settle ended early.
    Cancelled,
    /// Nothing was pending.
    NothingToCancel,
    /// The request waits for a second principal's approval (`approve`).
    AwaitingApproval,
    /// `follow`: no cutover is in progress.
    NothingPending,
    /// A color's addresses were replaced (`set_addresses`).
    AddressesSet,
    /// The color already had exactly those addresses: nothing changed.
    AddressesUnchanged,
}

/// Where a color's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSource {
    /// The color.
    pub color: Color,
    /// `config` or `runtime` (`set_addresses`).
    pub source: String,
    /// For a runtime set: who set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For a runtime set: when (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// Reply to `set_addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressesReply {
    /// The service.
    pub service: String,
    /// `addresses_set` or `addresses_unchanged`.
    pub outcome: Outcome,
    /// The color whose addresses were set.
    pub color: Color,
    /// The name that always answers that color (`green.app.svc.example.com.`): where to
    /// smoke-test the set before a flip.
    pub color_name: String,
    /// Its addresses now.
    pub addresses: Vec<IpAddr>,
    /// Its addresses before.
    pub previous: Vec<IpAddr>,
    /// The color answering the service name.
    pub live: Color,
    /// The zone's serial that carries the change.
    pub serial: u32,
    /// The health check of the new addresses (`check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ColorHealth>,
    /// With secondaries: which serve the new set (as for a flip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetConvergence>,
    /// What to know (the set is also in the other color, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One progress line of a cutover being waited for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The service.
    pub service: String,
    /// Which cutover (the `cutover` of the `scheduled` reply).
    pub cutover: u64,
    /// The step reached.
    #[serde(flatten)]
    pub step: Step,
}

/// The steps of a cutover, as progress lines report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Waiting for caches to drain the normal-TTL answers.
    Draining {
        /// The color the flip will make live.
        target: Color,
        /// When the drain is complete (Unix milliseconds).
        drained_at_ms: u64,
        /// Seconds until then.
        seconds_left: u64,
        /// The TTL answers carry meanwhile.
        ttl: u32,
        /// Whether this client joined a flip scheduled before (by an earlier request).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        joined: bool,
    },
    /// Waiting for these secondaries: before the flip (the drain is over here, but they
    /// have not been seen serving the short TTL: the flip is refused when the wait runs
    /// out), or after it (`flipped`: they do not serve the flip yet; when the wait runs out
    /// the reply says the flip is done here only).
    Secondaries {
        /// The serial waited for.
        serial: u32,
        /// The secondaries behind, and why.
        behind: Vec<String>,
        /// When the wait runs out (Unix milliseconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
        /// Seconds until then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds_left: Option<u64>,
        /// Whether the flip is done already.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flipped: bool,
    },
    /// After the flip: a secondary serves it now.
    Secondary {
        /// The flip's serial.
        serial: u32,
        /// The secondary's name.
        name: String,
        /// Milliseconds from the flip.
        after_ms: u64,
    },
    /// The health gate ran.
    Health {
        /// Its results.
        health: ColorHealth,
    },
    /// The flip is done; `result` is also the final reply.
    Flipped {
        /// The final reply.
        result: Box<Cutover>,
    },
    /// The flip was refused; the final reply (an error) follows.
    Refused {
        /// Why, and what overrides it.
        reason: String,
    },
    /// The cutover was cancelled; the final reply (an error) follows.
    Cancelled,
}

/// Reply to `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Services the new config adds.
    pub added: Vec<String>,
    /// Services the new config no longer has.
    pub removed: Vec<String>,
    /// Services whose configuration changed; their color and cutover are kept.
    pub changed: Vec<String>,
    /// Zones whose serial moved because what they serve changed.
    pub serials: Vec<ZoneStatus>,
    /// Settings that changed but only take effect at the next restart.
    pub restart_needed: Vec<String>,
    /// Colors whose runtime address set gave way to the config's, because the config's
    /// list for that color changed since the set was made: which, whose set, and the list
    /// now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses_from_config: Vec<String>,
}

/// Reply to `stragglers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StragglersReport {
    /// The service.
    pub service: String,
    /// The latest flip the classes are relative to; `None` before the first.
    pub flip: Option<FlipView>,
    /// When the last answer with the old color expires in caches that obey TTLs.
    pub drained_at_ms: Option<u64>,
    /// Whether that moment has passed: every old-color answer the server could have given
    /// has expired. Never true before.
    pub drained: bool,
    /// Whether the report can have seen every resolver that holds the old color: the ledger
    /// started at least a normal TTL before the flip, and every configured secondary has
    /// streamed its answers (dnstap) since then without a gap. `incomplete` says why not.
    pub complete: bool,
    /// Why the report is not complete, one reason a line (empty when it is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// The secondaries' dnstap streams: every configured secondary, and any other sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamView>,
    /// When the ledger started (Unix milliseconds).
    pub ledger_started_ms: u64,
    /// Resolvers by class.
    pub counts: ClassCounts,
    /// Resolvers that held the old color at the moment of the flip (an unexpired answer of
    /// it, or one their rhythm says they kept past its TTL).
    #[serde(default)]
    pub held_at_flip: u64,
    /// Queries for the old color's name, after every reason to ask for it had expired,
    /// since this flip.
    pub straggler_queries: u64,
    /// The resolvers of the classes asked for, most interesting first.
    pub resolvers: Vec<ResolverView>,
    /// Resolvers not listed: of the classes not asked for, or beyond the limit.
    #[serde(default)]
    pub left_out: u64,
    /// The classes listed.
    #[serde(default)]
    pub classes: Vec<ResolverClass>,
    /// When the last resolver that kept the old color past its TTL converged (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_straggler_converged_ms: Option<u64>,
    /// Class counts over time since the flip: a point a second at first, coarser later.
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
    /// The ledger's own figures.
    pub ledger: LedgerView,
}

/// One dnstap stream, as the report covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamView {
    /// The secondary's name, or the identity of a sender no secondary is configured with.
    pub name: String,
    /// The identity its frames carry.
    pub identity: String,
    /// Whether it is a configured `[[secondary]]`.
    pub secondary: bool,
    /// Whether its stream is in now.
    pub streaming: bool,
    /// Since when it has streamed without a gap (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Data frames received since start.
    pub frames: u64,
    /// Frames that became answers in the ledger.
    pub observed: u64,
    /// Frames dropped over `[dnstap] frames_per_second`.
    pub dropped: u64,
    /// Frames that were no service answer (queries, other names, unreadable).
    pub skipped: u64,
    /// Its streams closed for bad input.
    pub errors: u64,
    /// When its latest frame came (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_frame_ms: Option<u64>,
}

/// Class counts at one moment after a flip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Resolvers by class then.
    pub counts: ClassCounts,
    /// Answers that carried the old color (from this server, and from the secondaries'
    /// dnstap streams) between the first point and this one: differences between points
    /// give the old color's answers a second.
    #[serde(default)]
    pub old_color_answers: u64,
}

/// A flip, as reports refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlipView {
    /// The service's flip count after this flip.
    pub flips: u64,
    /// The color live before.
    pub from: Color,
    /// The color live after.
    pub to: Color,
    /// When (Unix milliseconds).
    pub at_ms: u64,
}

/// Resolvers per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    /// See [`ResolverClass::Converged`].
    pub converged: u64,
    /// See [`ResolverClass::Draining`].
    pub draining: u64,
    /// See [`ResolverClass::Silent`].
    pub silent: u64,
    /// See [`ResolverClass::Overdue`].
    pub overdue: u64,
    /// See [`ResolverClass::Straggler`].
    pub straggler: u64,
}

/// The classes of a resolver after a flip from old color O to new color N at time F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolverClass {
    /// Kept O past F (or past its O answer's expiry, whichever is later) by more than half
    /// its TTL (at least 5 s) and more than its TTL and 2 s after F, or asked for O's color
    /// name after every legitimate reason had expired. It stays one for this flip after it
    /// converges.
    Straggler,
    /// Silent, though it re-queried on a regular rhythm before: likely a stale cache.
    Overdue,
    /// Its last answer was O and is still within its TTL.
    Draining,
    /// Its last answer was O, the TTL has passed, and it has not asked since.
    Silent,
    /// Asked after F and got N on time (or holds N within its TTL).
    Converged,
}

impl ResolverClass {
    /// Every class, most interesting first.
    pub const ALL: [ResolverClass; 5] = [
        ResolverClass::Straggler,
        ResolverClass::Overdue,
        ResolverClass::Draining,
        ResolverClass::Silent,
        ResolverClass::Converged,
    ];
}

/// One resolver in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolverView {
    /// Its source address.
    pub resolver: IpAddr,
    /// EDNS Client Subnet of its queries, e.g. `192.0.2.0/24`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subnet: Option<String>,
    /// Its class.
    pub class: ResolverClass,
    /// Color of its last answer to the service name.
    pub color: Color,
    /// The service's flip count when that answer was given.
    pub flips: u64,
    /// When that answer was given (Unix milliseconds).
    pub answered_at_ms: u64,
    /// The TTL it carried.
    pub ttl: u32,
    /// When it expires in a cache that obeys TTLs.
    pub expires_at_ms: u64,
    /// Queries for the service name.
    pub queries: u32,
    /// Observed re-query interval, once there are enough samples.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_ms: Option<u32>,
    /// Interval over TTL: well above 1 exposes TTL clamping.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_ratio: Option<f64>,
    /// Its queries for the old color's name, when it asked for it after every reason had
    /// expired.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub straggler: Option<StragglerView>,
    /// Its interval is well above the TTL: it keeps answers longer than their TTL.
    #[serde(default)]
    pub clamps: bool,
    /// Its record of the flip, once it asked after it or when it held the old color.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub record: Option<FlipRecord>,
    /// The servers it asked: `primary` (this one) and the secondaries whose streams carried
    /// its answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
}

/// What a resolver did around a flip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlipRecord {
    /// It held the old color at the moment of the flip: an unexpired answer of it, or one
    /// its rhythm says it kept past the TTL (judged again once the rhythm is proven, also
    /// after the flip).
    pub held_old: bool,
    /// When the old answer it had from before the flip expired by its TTL (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub old_expired_at_ms: Option<u64>,
    /// When keeping the old color starts to count as late: the later of the flip and
    /// `old_expired_at_ms` (Unix ms); only when it held the old color.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub late_from_ms: Option<u64>,
    /// When it first got the new color (Unix ms); absent while it has not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub converged_at_ms: Option<u64>,
    /// How long it kept the old color past `late_from_ms`: `converged_at - late_from`; 0
    /// when it did not hold the old color or has not converged.
    pub late_by_ms: u64,
}

/// A straggler's queries for the old color's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StragglerView {
    /// How many.
    pub count: u32,
    /// The first (Unix milliseconds).
    pub first_ms: u64,
    /// The last (Unix milliseconds).
    pub last_ms: u64,
    /// How far past expiry its last straggling query came.
    pub late_ms: u32,
}

/// The ledger's own figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerView {
    /// Entries held.
    pub entries: u64,
    /// Most entries held.
    pub capacity: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Observations dropped because the ledger's queue was full.
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let flip: Request =
            serde_json::from_str(r#"{"cmd":"flip","service":"app","to":"green"}"#).unwrap();
        assert_eq!(
            flip,
            Request::Flip {
                service: "app".into(),
                to: Color::Green,
                now: false,
                force: false,
                wait: true,
                wait_secondaries: true
            }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status { service: None }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"version"}"#).unwrap(),
            Request::Version
        );
        for bad in [
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"flip","service":"app","to":"purple"}"#,
            r#"{"cmd":"status","x":1}"#,
            r#"{"cmd":"prepare"}"#,
            "garbage",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_are_ok_error_or_progress() {
        let version = Response::Version(Version {
            server: "1.2.3".into(),
            protocol: PROTOCOL_VERSION,
            revision: "0123456789ab".into(),
            rustc: "1.95.0".into(),
        });
        assert_eq!(
            serde_json::to_string(&Reply::Ok(version)).unwrap(),
            r#"{"ok":{"version":{"server":"1.2.3","protocol":1,"revision":"0123456789ab","rustc":"1.95.0"}}}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Error(Error::new(ErrorKind::UnknownService, "no")))
                .unwrap(),
            r#"{"error":{"kind":"unknown_service","message":"no"}}"#
        );
        let progress = Progress {
            service: "app".into(),
            cutover: 1,
            step: Step::Cancelled,
        };
        assert_eq!(
            serde_json::to_string(&Reply::Progress(progress)).unwrap(),
            r#"{"progress":{"service":"app","cutover":1,"step":"cancelled"}}"#
        );
    }

    #[test]
    fn each_error_kind_has_its_own_exit_code_and_wire_name() {
        let mut codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "one exit code per kind");
        assert!(codes.iter().all(|&c| c >= 10));
        for kind in ErrorKind::ALL
            .into_iter()
            .chain([ErrorKind::NoServer, ErrorKind::Client])
        {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        assert_eq!(ErrorKind::NoServer.exit_code(), 3);
        assert_eq!(ErrorKind::Client.exit_code(), 1);
    }
}
