//! The TTL-aware cutover of one service: lower the TTL, wait for the exact drain, check
//! health, flip, settle, and roll back.
//!
//! ```text
//!            prepare / flip                 drained_at reached,           flip_time + settle
//!  steady ------------------> preparing ---- healthy, interval ok ----> settling -----------> steady
//!  (ttl)                      (cutover_ttl)   flip                       (cutover_ttl)          (ttl)
//!    ^                          |   ^  health or interval refused:         |
//!    +--------- cancel ---------+   +- stays preparing, target dropped     +-- rollback: flip at once
//! ```
//!
//! `drained_at` is the last moment a normal-TTL answer was handed out, plus the normal TTL:
//! after it no cache that obeys TTLs holds one. The query path notes that moment
//! ([`crate::observed::Observed::long_answer`]); the phase and its deadlines live in the
//! state file, so a restart resumes the same schedule. This module holds the rules and the
//! values a command returns; the per-service task that applies them is in [`driver`].
//! Nothing here builds admin replies: the admin layer turns these values into them.

mod driver;

pub use driver::{Action, Cutovers};

use crate::clock::Clock;
use crate::color::Color;
use crate::config::ServiceConfig;
use crate::observed::{ColorHealth, Observed};
use crate::state::{Phase, ServiceState};

/// When the service's task must act next: a pending flip at its drain deadline, or the end
/// of a settle.
pub fn wake_at(phase: &Phase) -> Option<u64> {
    match *phase {
        Phase::Preparing {
            target: Some(_),
            drained_at_ms,
            ..
        } => Some(drained_at_ms),
        Phase::Settling { until_ms } => Some(until_ms),
        _ => None,
    }
}

/// The drain deadline from what the query path saw: the last normal-TTL answer, plus the
/// TTL, plus the coarse clock's resolution (the query path reads the coarse clock).
pub fn drain_deadline(config: &ServiceConfig, observed: &Observed, clock: &Clock) -> u64 {
    observed.last_long_answer_ms() + u64::from(config.ttl) * 1000 + clock.coarse_resolution_ms()
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
    /// The cutover being followed was cancelled.
    Cancelled,
    /// The server is stopping (or the service was removed).
    ShuttingDown,
}

impl Refusal {
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
    /// The health gate ran.
    Health(ColorHealth),
    /// The flip is done.
    Flipped(Box<Done>),
    /// The flip was refused.
    Refused(Refusal),
    /// The cutover was cancelled.
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_phase() {
        let preparing = Phase::Preparing {
            since_ms: 1,
            drained_at_ms: 301_001,
            target: Some(Color::Green),
            force: false,
        };
        assert_eq!(wake_at(&preparing), Some(301_001));
        assert_eq!(
            wake_at(&Phase::Preparing {
                since_ms: 1,
                drained_at_ms: 2,
                target: None,
                force: false
            }),
            None
        );
        assert_eq!(wake_at(&Phase::Settling { until_ms: 9 }), Some(9));
        let config = crate::fixture::catalog().config.services[0].clone();
        let observed = Observed::new(1_000_000);
        observed.long_answer(1_000_500);
        observed.long_answer(1_000_400); // never backwards
        let clock = Clock::System;
        assert_eq!(
            drain_deadline(&config, &observed, &clock),
            1_000_500 + u64::from(config.ttl) * 1000 + clock.coarse_resolution_ms()
        );
    }
}
