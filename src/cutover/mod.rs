//! The TTL-aware cutover of one service: lower the TTL, wait for the exact drain, check
//! health, flip, settle, and roll back.
//!
//! ```text
//!            prepare / flip                 drained_at reached,           flip_time + settle
//!  steady ------------------> preparing ---- healthy, interval ok ----> settling -----------> steady
//!  (ttl)                      (cutover_ttl)   flip                       (cutover_ttl)          (ttl)
//!    ^                          |   ^  refused: stays preparing,           |
//!    +--------- cancel ---------+   +- no flip pending (and says so)       +-- rollback: flip at once
//! ```
//!
//! # The promises
//!
//! - **I1**: no answer with the new color is sent before `drained_at`, and `drained_at`
//!   never moves earlier than the latest normal-TTL answer plus the TTL it carried, whatever
//!   happens in between: restarts, kill -9, reloads, commands in any order, wall-clock steps.
//!   The query path notes when its last normal-TTL answer expires, on the monotonic clock
//!   ([`crate::observed::Observed::long_answer`]); a new deadline covers it and is only
//!   ever extended; within a process every deadline is also held on the monotonic clock.
//!   A deadline is written before the short TTL is published and confirmed by a second
//!   write after it; at start, the server assumes a steady service answered with the larger
//!   of its old and new TTL until that moment, and so does an unconfirmed deadline
//!   ([`crate::switch`]). Only `--now` skips the drain, on purpose. With secondaries, the
//!   short TTL must also be seen served by every one of them ([`crate::fleet`]): the change
//!   waits in the state ([`crate::state::FleetWait`]) until then, and the deadline is moved
//!   to that moment plus the normal TTL; a flip does not happen before (it waits up to
//!   `[fleet] wait`, then is refused), unless forced.
//! - **I2**: a flip records, for the color it leaves, when the last answer of that color
//!   any process of this server gave expires (`expires_ms`, kept across later flips, so the
//!   exposure a `--now` flip leaves is not forgotten); the straggler report says "drained"
//!   only after it, and, with secondaries, only after every one serves the flip plus the TTL
//!   the old answers carried.
//! - **I3**: a rollback while settling is immediate and the anti-flap rule never refuses
//!   it; a flip to the other color while settling is the same rollback. Every refusal names
//!   what overrides it and the state the service is left in.
//! - **I4**: a reload never drops a pending cutover (removing such a service is refused
//!   unless forced) and never changes a live color ([`crate::switch::Switch::reload`]).
//!
//! The rules are [`rules`], pure functions of config, state and time; the per-service task
//! that applies them is `driver`, started and supervised by `tasks` ([`Cutovers`]). Nothing here builds admin replies: the admin layer
//! turns these values into them.

mod driver;
pub mod rules;
mod tasks;

pub use tasks::{COMMAND_QUEUE, Cutovers, EVENT_QUEUE};

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::clock::Clock;
use crate::color::Color;
use crate::config::{HealthConfig, ServiceConfig};
use crate::health;
use crate::observed::ColorHealth;
use crate::state::{ChangeRef, ServiceState};

/// What an operator asks of a service's cutover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Prepare,
    Flip {
        to: Color,
        now: bool,
        force: bool,
    },
    Rollback {
        force: bool,
    },
    Cancel,
    /// Replace `color`'s addresses (a release's new instances): the idle color only unless
    /// `force`, never one a cutover is heading to; with `check`, only if every new address
    /// passes the service's health check.
    SetAddresses {
        color: Color,
        addresses: Vec<IpAddr>,
        force: bool,
        check: bool,
    },
    /// Carry out the request another principal made under the two-person rule.
    Approve,
    /// Change nothing: say what is in progress (to follow it).
    Follow,
}

/// Checks a color's addresses: the flip gate and the background checks. The server probes
/// for real ([`Probe`]); tests script the answers.
pub trait HealthGate: Send + Sync {
    /// Checks `addresses` (what `color` answers now: the config's or a runtime set).
    fn check<'a>(
        &'a self,
        service: &'a ServiceConfig,
        health: &'a HealthConfig,
        color: Color,
        addresses: &'a [IpAddr],
    ) -> Pin<Box<dyn Future<Output = ColorHealth> + Send + 'a>>;
}

/// Real health checks over the network.
pub struct Probe(pub Clock);

impl HealthGate for Probe {
    fn check<'a>(
        &'a self,
        _service: &'a ServiceConfig,
        health: &'a HealthConfig,
        color: Color,
        addresses: &'a [IpAddr],
    ) -> Pin<Box<dyn Future<Output = ColorHealth> + Send + 'a>> {
        Box::pin(health::check_color(addresses, health, color, &self.0))
    }
}

/// What a cutover command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The request waits for a second principal's approval.
    AwaitingApproval,
    /// Nothing is in progress (`Follow`).
    NothingPending,
    /// A color's addresses were replaced.
    AddressesSet,
    /// The color already had exactly those addresses: nothing changed.
    AddressesUnchanged,
}

/// A command that was carried out, and the service after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub service: String,
    pub outcome: Outcome,
    /// The service's state after the command.
    pub state: ServiceState,
    /// The TTL its answers carry now.
    pub ttl: u32,
    /// Its zone's SOA serial now.
    pub serial: u32,
    /// For a flip: the color that was live before.
    pub from: Option<Color>,
    /// Identifies a scheduled cutover in progress events.
    pub cutover: Option<u64>,
    /// The health gate's results, when it ran.
    pub health: Option<ColorHealth>,
    /// For a set of addresses: the color's addresses before.
    pub replaced: Option<Vec<IpAddr>>,
}

/// Who asked for a command, and the id its change takes in the audit trail if it begins
/// one (a command that joins a cutover in progress takes that one's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub change: u64,
    /// The principal, as the audit trail names it (`alice (uid 1000)`).
    pub by: String,
    /// The principal's identity (`unix:1000`, `token:deploy`): the two-person rule compares
    /// these.
    pub who: String,
}

/// Something a cutover did on its own, after the command that began it: at a deadline, or
/// when the fleet caught up. The audit trail records each under the change's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub service: String,
    pub change: Option<ChangeRef>,
    pub at_ms: u64,
    pub kind: EventKind,
    /// In words: what, and the numbers (`blue -> green, serial 7`).
    pub detail: String,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A scheduled flip happened at its drain deadline.
    Flipped,
    /// A scheduled flip was refused at its deadline (health, interval, secondaries).
    Refused,
    /// The settle ended: back to the normal TTL, the change is over.
    Settled,
    /// Every secondary serves the change.
    FleetServes,
    /// A secondary's normal-TTL answer moved the drain deadline.
    DrainMoved,
    /// A request waiting for approval expired unapproved.
    Expired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Flipped => "flipped",
            EventKind::Refused => "refused",
            EventKind::Settled => "settled",
            EventKind::FleetServes => "fleet",
            EventKind::DrainMoved => "drain_moved",
            EventKind::Expired => "expired",
        }
    }
}

/// Why a command was not carried out. The message names what overrides it, if anything,
/// and the state the service is left in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

/// The kinds of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    UnknownService,
    /// The health gate failed; `--force` overrides.
    Unhealthy,
    /// Within `min_flip_interval` of the last flip; `--force` overrides.
    Interval,
    /// Another cutover is pending, or too many commands are queued.
    Busy,
    /// The state file could not be written; nothing changed.
    NotWritten,
    /// The state file could not be written, nor the failed write undone: the disk may hold
    /// the change or not, while the answers do not carry it.
    Uncertain,
    /// A secondary did not confirm the short TTL in time; `--force` overrides.
    SecondariesBehind,
    /// The cutover being followed was cancelled.
    Cancelled,
    /// The server is stopping (or the service was removed).
    ShuttingDown,
    /// The addresses of the live color were to be replaced; `--force` overrides.
    LiveColor,
    /// The addresses given cannot be a color's set (none, too many, a duplicate).
    BadAddresses,
    /// An approval that cannot be given (nothing awaits one; the approver asked for it).
    Approval,
}

impl Refusal {
    /// The state file could not be written (whether or not the failed write was undone).
    pub fn is_write_failure(&self) -> bool {
        matches!(self.kind, RefusalKind::NotWritten | RefusalKind::Uncertain)
    }

    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One step of a scheduled cutover, for those following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub service: String,
    pub cutover: u64,
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Waiting for caches to drain the normal-TTL answers.
    Draining {
        target: Color,
        drained_at_ms: u64,
        ttl: u32,
    },
    /// The drain is over here; waiting for these secondaries to serve the short TTL, until
    /// `until_ms` (Unix ms), when the flip is refused.
    Secondaries {
        serial: u32,
        behind: Vec<String>,
        until_ms: u64,
    },
    /// The health gate ran.
    Health(ColorHealth),
    /// The flip is done.
    Flipped(Box<Done>),
    /// The flip was refused.
    Refused(Refusal),
    /// The cutover was cancelled.
    Cancelled,
}
