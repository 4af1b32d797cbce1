//! The admin protocol: request and reply types shared by the server and `flipdns ctl`.
//!
//! Newline-delimited JSON over a Unix socket: the client writes one request per line and
//! reads its reply line, in order, on one connection for as long as it likes.
//!
//! ```text
//! -> {"cmd": "status"}
//! <- {"ok": {"generation": 3, "services": [...], "zones": [...]}}
//! -> {"cmd": "flip", "service": "app", "to": "green", "now": true}
//! <- {"ok": {"service": "app", "outcome": "flipped", "live": "green", ...}}
//! -> {"cmd": "flip", "service": "app", "to": "purple"}
//! <- {"error": "bad request: unknown variant `purple`, expected `blue` or `green`"}
//! ```
//!
//! A flip or rollback that waits for the drain (`"wait": true`, the default) streams
//! `{"progress": {...}}` lines, at least one a second, before its `ok` or `error` line. A
//! client that goes away stops the stream, not the cutover: the schedule lives in the server.
//!
//! A request line longer than [`MAX_REQUEST_BYTES`], or one not completed within the
//! server's `admin_request_timeout`, is answered with an error and the connection closed. A
//! request that fails changes nothing. This module depends on nothing of the daemon, so the
//! client and scripts can rely on it alone.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::color::Color;

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every service and zone as served now, or only `service`.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// Lower the TTL now: answers carry `cutover_ttl`; replies with the drain deadline.
    Prepare { service: String },
    /// Make `to` live: prepare, wait for the drain, check health, flip, settle.
    Flip {
        service: String,
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
    },
    /// Flip back to the other color: at once while settling, otherwise the whole sequence.
    Rollback {
        service: String,
        #[serde(default)]
        force: bool,
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Abandon a pending cutover (or end a settle early): back to steady, normal TTL.
    Cancel { service: String },
    /// Re-read the config and zone files; apply them only if all of it is valid.
    Reload,
    /// The straggler report of `service`: resolvers by class since its latest flip.
    Stragglers {
        service: String,
        /// Resolvers listed per interesting class (default 10).
        #[serde(default)]
        limit: Option<usize>,
    },
}

fn yes() -> bool {
    true
}

/// One reply line: `{"ok": T}`, `{"error": "why"}`, or `{"progress": ...}` before either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<T> {
    #[serde(rename = "ok")]
    Ok(T),
    #[serde(rename = "error")]
    Error(String),
    #[serde(rename = "progress")]
    Progress(Progress),
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Generation of the record set being served.
    pub generation: u64,
    pub services: Vec<ServiceStatus>,
    pub zones: Vec<ZoneStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// The name that follows the live color, e.g. `app.svc.example.com.`.
    pub fqdn: String,
    pub zone: String,
    pub live: Color,
    pub phase: PhaseStatus,
    /// TTL the service's answers carry now.
    pub ttl: u32,
    /// The configured normal and cutover TTLs.
    pub normal_ttl: u32,
    pub cutover_ttl: u32,
    /// Flips of this service so far.
    pub generation: u64,
    /// SOA serial of the service's zone.
    pub serial: u32,
    /// Unix time of the last flip in milliseconds.
    pub flipped_at_ms: Option<u64>,
    pub blue: Vec<IpAddr>,
    pub green: Vec<IpAddr>,
    /// Answers given since start, by color.
    pub answers: Answers,
    /// Latest background health checks, when the service has a health check.
    pub health: Vec<ColorHealth>,
    /// Resolvers by class since the latest flip, when the ledger is on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolvers: Option<ClassCounts>,
}

/// Where a service is in its cutover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseStatus {
    /// `steady`, `preparing` or `settling`.
    pub name: String,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    pub blue: u64,
    pub green: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneStatus {
    pub origin: String,
    pub serial: u32,
}

/// Health of every address of one color.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColorHealth {
    pub color: Color,
    pub checked_at_ms: u64,
    pub healthy: usize,
    pub total: usize,
    pub addresses: Vec<AddressHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressHealth {
    pub address: IpAddr,
    pub port: u16,
    pub healthy: bool,
    /// `HTTP 200`, `HTTP 503`, `connection refused`, `timeout after 2000 ms`, ...
    pub detail: String,
}

/// Reply to `prepare`, `flip`, `rollback` and `cancel`: what happened, and the service after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutover {
    pub service: String,
    pub outcome: Outcome,
    pub live: Color,
    /// For a flip: the color that was live before.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<Color>,
    pub phase: PhaseStatus,
    /// TTL the service's answers carry now.
    pub ttl: u32,
    pub generation: u64,
    pub serial: u32,
    /// Identifies a scheduled cutover in progress lines.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cutover: Option<u64>,
    /// The health gate's results, when it ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub health: Option<ColorHealth>,
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
    /// The color asked for was already live: nothing changed, no generation used.
    AlreadyLive,
    /// A pending cutover was abandoned, or a settle ended early.
    Cancelled,
    /// Nothing was pending.
    NothingToCancel,
}

/// One progress line of a cutover being waited for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub service: String,
    pub cutover: u64,
    #[serde(flatten)]
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Waiting for caches to drain the normal-TTL answers.
    Draining {
        target: Color,
        drained_at_ms: u64,
        seconds_left: u64,
        ttl: u32,
    },
    /// The health gate ran.
    Health { health: ColorHealth },
    /// The flip is done; `result` is also the final reply.
    Flipped { result: Box<Cutover> },
    /// The flip was refused; the final reply (an error) follows.
    Refused { reason: String },
    /// The cutover was cancelled; the final reply (an error) follows.
    Cancelled,
}

/// Reply to `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Services whose configuration changed; their color and cutover are kept.
    pub changed: Vec<String>,
    /// Zones whose serial moved because what they serve changed.
    pub serials: Vec<ZoneStatus>,
    /// Settings that changed but only take effect at the next restart.
    pub restart_needed: Vec<String>,
}

/// Reply to `stragglers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StragglersReport {
    pub service: String,
    /// The latest flip the classes are relative to; `None` before the first.
    pub flip: Option<FlipView>,
    /// When the last answer with the old color expires in caches that obey TTLs.
    pub drained_at_ms: Option<u64>,
    pub drained: bool,
    pub counts: ClassCounts,
    /// Straggling queries for the old color's name since the flip.
    pub straggler_queries: u64,
    /// The worst resolvers of the interesting classes: stragglers, overdue, draining.
    pub resolvers: Vec<ResolverView>,
    pub ledger: LedgerView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlipView {
    pub generation: u64,
    pub from: Color,
    pub to: Color,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    pub converged: u64,
    pub draining: u64,
    pub silent: u64,
    pub overdue: u64,
    pub straggler: u64,
}

/// The classes of a resolver after a flip from old color O to new color N at time F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolverClass {
    /// Asked for O's color name after every legitimate reason had expired.
    Straggler,
    /// Silent, though it re-queried on a regular rhythm before: likely a stale cache.
    Overdue,
    /// Its last answer was O and is still within its TTL.
    Draining,
    /// Its last answer was O, the TTL has passed, and it has not asked since.
    Silent,
    /// Asked after F and got N (or holds N within its TTL).
    Converged,
}

impl ResolverClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolverClass::Straggler => "straggler",
            ResolverClass::Overdue => "overdue",
            ResolverClass::Draining => "draining",
            ResolverClass::Silent => "silent",
            ResolverClass::Converged => "converged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolverView {
    pub resolver: IpAddr,
    /// EDNS Client Subnet of its queries, e.g. `192.0.2.0/24`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subnet: Option<String>,
    pub class: ResolverClass,
    /// Color, generation, time and TTL of its last answer to the service name.
    pub color: Color,
    pub generation: u64,
    pub answered_at_ms: u64,
    pub ttl: u32,
    pub expires_at_ms: u64,
    /// Queries for the service name.
    pub queries: u32,
    /// Observed re-query interval, once there are enough samples.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_ms: Option<u32>,
    /// Interval over TTL: well above 1 exposes TTL clamping.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub straggler: Option<StragglerView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StragglerView {
    pub count: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    /// How far past expiry its last straggling query came.
    pub late_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerView {
    pub entries: u64,
    pub capacity: u64,
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
                wait: true
            }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status { service: None }
        );
        let cancel: Request = serde_json::from_str(r#"{"cmd":"cancel","service":"app"}"#).unwrap();
        assert_eq!(
            cancel,
            Request::Cancel {
                service: "app".into()
            }
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
        assert_eq!(
            serde_json::to_string(&Reply::<u8>::Ok(1)).unwrap(),
            r#"{"ok":1}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::<u8>::Error("no".into())).unwrap(),
            r#"{"error":"no"}"#
        );
        let progress = Progress {
            service: "app".into(),
            cutover: 1,
            step: Step::Cancelled,
        };
        assert_eq!(
            serde_json::to_string(&Reply::<u8>::Progress(progress)).unwrap(),
            r#"{"progress":{"service":"app","cutover":1,"step":"cancelled"}}"#
        );
    }
}
