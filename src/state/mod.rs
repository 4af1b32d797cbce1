//! The live state that must survive a restart: each service's color, flip count, cutover
//! phase and address sets set at run time, and each zone's SOA serial; and the durable
//! store that holds it ([`store`]).
//!
//! This module owns the model and its rules of arithmetic (phases, TTLs, serials); deciding
//! which change to make is [`crate::cutover`]'s and [`crate::reload`]'s job, and making it
//! is [`crate::switch`]'s.

pub mod disk;
pub mod format;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::color::Color;
use crate::config::ServiceConfig;

pub use store::{StateError, Store};

/// Everything that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// By service name.
    pub services: BTreeMap<String, ServiceState>,
    /// By zone origin (`svc.example.com.`).
    pub zones: BTreeMap<String, ZoneState>,
}

/// How many times a service has flipped: 0 before its first flip. Answers and reports are
/// tagged with it so they can tell which flip an answer belongs to. Persisted, so it keeps
/// counting across restarts (unlike the snapshot generation, which counts publishes of
/// this process).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FlipCount(pub u64);

impl fmt::Display for FlipCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    pub live: Color,
    pub flips: FlipCount,
    /// Unix time of the last flip in milliseconds; `None` before the first.
    #[serde(default)]
    pub flipped_at_ms: Option<u64>,
    /// Where the service is in a cutover; deadlines are Unix milliseconds, so a restart
    /// resumes with the same ones.
    pub phase: Phase,
    /// The normal TTL in effect when this was written (0: not known, from an older file).
    /// After a restart the server assumes it handed out answers with the larger of this and
    /// the configured `ttl` until it started, so lowering `ttl` across a restart cannot make
    /// a drain too short.
    #[serde(default)]
    pub ttl: u32,
    /// Per color (blue, green), Unix milliseconds: when the last answer of the service name
    /// with that color, as far as this server in any process could have given it, expires
    /// in caches that obey TTLs; 0 when not known. Written for the color a flip leaves, so
    /// an exposure a `--now` flip left is remembered across later flips and restarts. The
    /// straggler report says a color "drained" only after it.
    #[serde(default)]
    pub expires_ms: [u64; 2],
    /// `expires_ms` on the monotonic clock of the boot that wrote them.
    #[serde(default, skip_serializing_if = "no_held")]
    pub expires_held: [Option<Held>; 2],
    /// A change of the service not yet seen served by every secondary: until it is, a
    /// prepare's drain is not proven and a flip's old color is not drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetWait>,
    /// The change in progress (from the command that began it until the service is steady
    /// again), so that every event of its life, after restarts too, is audited under one id
    /// with who asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeRef>,
    /// Address sets set at run time (`ctl set-addresses`), by color; a color without one
    /// answers the config's list. Boxed: most services never have one, and a service's
    /// state is kept for every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Box<RuntimeAddresses>>,
    /// A flip or prepare asked under the two-person rule, waiting for a second principal;
    /// kept across restarts until it is approved, cancelled or expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<Box<Awaiting>>,
}

/// A request waiting for approval: what, by whom, under which change id, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Awaiting {
    pub action: AwaitedAction,
    /// The requester as the audit trail names them.
    pub by: String,
    /// The requester's identity (`unix:1000`, `token:deploy`): who may not approve.
    pub who: String,
    /// The audit id the change takes when carried out.
    pub change: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub expires_ms: u64,
}

/// What waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum AwaitedAction {
    Prepare,
    Flip { to: Color, now: bool, force: bool },
    Rollback { force: bool },
}

impl fmt::Display for AwaitedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwaitedAction::Prepare => write!(f, "prepare"),
            AwaitedAction::Flip { to, now: true, .. } => write!(f, "flip to {to} now"),
            AwaitedAction::Flip { to, .. } => write!(f, "flip to {to}"),
            AwaitedAction::Rollback { .. } => write!(f, "rollback"),
        }
    }
}

/// The address sets of a service set at run time, by color.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeAddresses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<AddressSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<AddressSet>,
}

/// One color's addresses as set at run time, who set them and when, and the config's list
/// for that color then: the set stands until the config's list changes (a reload or a
/// restart with another list takes the config's, and says so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressSet {
    pub addresses: Vec<IpAddr>,
    /// The principal, as the audit trail names it.
    pub by: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The config's list for the color when the set was made.
    pub config: Vec<IpAddr>,
}

impl RuntimeAddresses {
    pub fn get(&self, color: Color) -> Option<&AddressSet> {
        match color {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }

    fn slot(&mut self, color: Color) -> &mut Option<AddressSet> {
        match color {
            Color::Blue => &mut self.blue,
            Color::Green => &mut self.green,
        }
    }
}

/// The addresses `color` of the service `config` answers with the runtime sets `runtime`.
pub fn addresses_of<'a>(
    config: &'a ServiceConfig,
    runtime: Option<&'a RuntimeAddresses>,
    color: Color,
) -> &'a [IpAddr] {
    match runtime.and_then(|r| r.get(color)) {
        Some(set) => &set.addresses,
        None => config.addresses(color),
    }
}

/// A change asked for: its id in the audit trail, and who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRef {
    pub id: u64,
    pub by: String,
}

/// Changes the secondaries must be seen to serve (see [`ServiceState::fleet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetWait {
    /// The zone serial that carries the latest change: a secondary serving it, or a later
    /// one, has them all.
    pub serial: u32,
    /// A prepare's normal TTL: its drain counts from when every secondary has the short
    /// TTL, since until then one of them handed out this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_ttl: Option<u32>,
    /// A flip's TTL before it: the old color drains from when every secondary has the flip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip_ttl: Option<u32>,
}

fn no_held(held: &[Option<Held>; 2]) -> bool {
    held.iter().all(Option::is_none)
}

impl ServiceState {
    /// A service first seen, live on `live`, never flipped, steady, with normal TTL `ttl`.
    pub fn new(live: Color, ttl: u32) -> ServiceState {
        ServiceState {
            live,
            flips: FlipCount(0),
            flipped_at_ms: None,
            phase: Phase::Steady,
            ttl,
            expires_ms: [0; 2],
            expires_held: [None; 2],
            fleet: None,
            change: None,
            addresses: None,
            awaiting: None,
        }
    }

    /// Notes what the secondaries must confirm after the change from `before` (answers
    /// with TTL `before_ttl`) to this state (with `after_ttl`), published in `serial`: a
    /// new color, or a lower TTL. A flip still unconfirmed stays noted under a later
    /// prepare; a prepare that ended without a flip has nothing left to prove.
    pub fn await_fleet(
        &mut self,
        before: &ServiceState,
        before_ttl: u32,
        after_ttl: u32,
        serial: u32,
    ) {
        let pending = self.fleet.filter(|w| w.flip_ttl.is_some());
        if self.live != before.live {
            self.fleet = Some(FleetWait {
                serial,
                prepare_ttl: None,
                flip_ttl: Some(before_ttl),
            });
        } else if after_ttl < before_ttl {
            self.fleet = Some(FleetWait {
                serial,
                prepare_ttl: Some(before_ttl),
                flip_ttl: pending.and_then(|w| w.flip_ttl),
            });
        } else if !matches!(self.phase, Phase::Preparing { .. }) {
            self.fleet = self.fleet.and_then(|w| {
                w.flip_ttl.map(|_| FleetWait {
                    prepare_ttl: None,
                    ..w
                })
            });
        }
    }

    /// Holds the phase's deadline and the colors' expiries on the monotonic clock of `boot`
    /// (see [`Phase::hold`]).
    pub fn hold(&mut self, boot: u64, mono_of: impl Fn(u64) -> u64) {
        self.phase.hold(boot, &mono_of);
        for (wall_ms, held) in self.expires_ms.iter().zip(&mut self.expires_held) {
            if *wall_ms > 0 && held.is_none_or(|h| h.wall_ms != *wall_ms || h.boot != boot) {
                *held = Some(Held {
                    boot,
                    wall_ms: *wall_ms,
                    mono_ms: mono_of(*wall_ms),
                });
            }
        }
    }

    /// Notes that answers of `color` may be cached until the monotonic moment `mono` (of
    /// `boot`; `now_ms` and `now_mono` say how the clocks stand), unless a later expiry is
    /// already noted.
    pub fn keep_expiry(&mut self, color: Color, mono: u64, boot: u64, now_ms: u64, now_mono: u64) {
        let mono_of = |wall: u64| (now_mono + wall).saturating_sub(now_ms);
        let known = self.expires_mono(color, boot, mono_of).unwrap_or(0);
        if mono > known {
            let wall_ms = (now_ms + mono).saturating_sub(now_mono);
            self.expires_ms[color.index()] = wall_ms;
            self.expires_held[color.index()] = Some(Held {
                boot,
                wall_ms,
                mono_ms: mono,
            });
        }
    }

    /// When the last answer of `color` expires, on the monotonic clock of `boot` (taken
    /// from the wall-clock value with `mono_of` when it was held in another boot); `None`
    /// when not known.
    pub fn expires_mono(
        &self,
        color: Color,
        boot: u64,
        mono_of: impl Fn(u64) -> u64,
    ) -> Option<u64> {
        let wall_ms = self.expires_ms[color.index()];
        (wall_ms > 0).then(|| {
            self.expires_held[color.index()]
                .filter(|h| h.boot == boot && h.wall_ms == wall_ms)
                .map_or_else(|| mono_of(wall_ms), |h| h.mono_ms)
        })
    }

    /// Whether a flip is scheduled.
    pub fn pending(&self) -> Option<Color> {
        self.phase.target()
    }

    /// The addresses `color` answers: its runtime set, or else the config's list.
    pub fn addresses<'a>(&'a self, config: &'a ServiceConfig, color: Color) -> &'a [IpAddr] {
        addresses_of(config, self.addresses.as_deref(), color)
    }

    /// `color`'s runtime set, if it has one.
    pub fn runtime_set(&self, color: Color) -> Option<&AddressSet> {
        self.addresses.as_ref().and_then(|a| a.get(color))
    }

    /// Sets (or, with `None`, clears) `color`'s runtime set.
    pub fn set_runtime(&mut self, color: Color, set: Option<AddressSet>) {
        let mut all = self.addresses.take().unwrap_or_default();
        *all.slot(color) = set;
        if all.blue.is_some() || all.green.is_some() {
            self.addresses = Some(all);
        }
    }

    /// Drops the runtime sets whose color's list in `config` is no longer the one they
    /// were made against (the config changed under them: it wins); returns the colors
    /// dropped, with the set each had.
    pub fn yield_to_config(&mut self, config: &ServiceConfig) -> Vec<(Color, AddressSet)> {
        let mut dropped = Vec::new();
        for color in Color::ALL {
            if let Some(set) = self.runtime_set(color)
                && set.config != config.addresses(color)
            {
                dropped.push((color, set.clone()));
                self.set_runtime(color, None);
            }
        }
        dropped
    }
}

/// The cutover phase of a service (see [`crate::cutover`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Phase {
    /// Answers carry the normal TTL.
    #[default]
    Steady,
    /// Answers carry the cutover TTL; every cache that obeys TTLs has dropped the last
    /// normal-TTL answer at `drained_at_ms`. With a `target`, a flip to it is pending.
    Preparing {
        since_ms: u64,
        drained_at_ms: u64,
        target: Option<Color>,
        /// The pending flip skips the health gate and the flip interval.
        #[serde(default)]
        force: bool,
        /// `drained_at_ms` was written after the short TTL was published, so it covers every
        /// normal-TTL answer. While `false` (a crash between the two writes), a restart
        /// assumes normal-TTL answers were given until it started.
        #[serde(default)]
        confirmed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held: Option<Held>,
    },
    /// After a flip: answers keep the cutover TTL until `until_ms`, so a rollback is fast.
    Settling {
        until_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held: Option<Held>,
    },
}

/// A phase's deadline on the monotonic clock of the boot that wrote it, beside its
/// wall-clock value: a restart in the same boot waits on the monotonic clock, so a step of
/// the wall clock (even while the server was down) cannot bring a deadline closer. After a
/// reboot only the wall-clock value is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    /// Which boot ([`crate::clock::Clock::boot`]).
    pub boot: u64,
    /// The wall-clock deadline this was taken from.
    pub wall_ms: u64,
    /// The same moment on the monotonic clock (milliseconds since boot).
    pub mono_ms: u64,
}

/// The name of a phase, for status, metrics and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    Steady,
    Preparing,
    Settling,
}

impl PhaseName {
    pub const ALL: [PhaseName; 3] = [PhaseName::Steady, PhaseName::Preparing, PhaseName::Settling];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Steady => "steady",
            PhaseName::Preparing => "preparing",
            PhaseName::Settling => "settling",
        }
    }
}

impl Phase {
    pub fn name(&self) -> PhaseName {
        match self {
            Phase::Steady => PhaseName::Steady,
            Phase::Preparing { .. } => PhaseName::Preparing,
            Phase::Settling { .. } => PhaseName::Settling,
        }
    }

    /// The TTL answers carry in this phase, given the service's normal and cutover TTLs.
    pub fn ttl(&self, normal: u32, cutover: u32) -> u32 {
        if self.is_long() { normal } else { cutover }
    }

    /// Whether answers in this phase carry the normal TTL, which a drain must outlast.
    pub fn is_long(&self) -> bool {
        matches!(self, Phase::Steady)
    }

    /// The drain deadline while preparing.
    pub fn drained_at_ms(&self) -> Option<u64> {
        match *self {
            Phase::Preparing { drained_at_ms, .. } => Some(drained_at_ms),
            _ => None,
        }
    }

    /// The wall-clock deadline of the phase: the drain, or the end of the settle.
    pub fn deadline_ms(&self) -> Option<u64> {
        match *self {
            Phase::Preparing { drained_at_ms, .. } => Some(drained_at_ms),
            Phase::Settling { until_ms, .. } => Some(until_ms),
            Phase::Steady => None,
        }
    }

    /// The deadline held on the monotonic clock, when it was held for the current value.
    pub fn held(&self) -> Option<Held> {
        let held = match *self {
            Phase::Preparing { held, .. } | Phase::Settling { held, .. } => held,
            Phase::Steady => None,
        };
        held.filter(|h| Some(h.wall_ms) == self.deadline_ms())
    }

    /// Holds the deadline on the monotonic clock: keeps what was held for it in `boot`, or
    /// takes it now with `mono_of`.
    pub fn hold(&mut self, boot: u64, mono_of: &impl Fn(u64) -> u64) {
        let Some(wall_ms) = self.deadline_ms() else {
            return;
        };
        if self.held().is_some_and(|h| h.boot == boot) {
            return;
        }
        let fresh = Some(Held {
            boot,
            wall_ms,
            mono_ms: mono_of(wall_ms),
        });
        if let Phase::Preparing { held, .. } | Phase::Settling { held, .. } = self {
            *held = fresh;
        }
    }

    /// The color a pending flip will make live.
    pub fn target(&self) -> Option<Color> {
        match *self {
            Phase::Preparing { target, .. } => target,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneState {
    /// The SOA serial last served; it only moves forward (RFC 1982 arithmetic).
    pub serial: u32,
    /// What the zone served under that serial ([`crate::records::Digest`]); 0 when not
    /// known. Content that changed while the server was down gets a new serial at start,
    /// or a secondary would keep the old content under the same serial.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub digest: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `a` is after `b` in RFC 1982 serial number arithmetic.
pub fn serial_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_follows_the_phase() {
        let preparing = Phase::Preparing {
            since_ms: 1,
            drained_at_ms: 301_001,
            target: Some(Color::Green),
            force: false,
            confirmed: true,
            held: None,
        };
        assert_eq!(Phase::Steady.ttl(300, 5), 300);
        assert_eq!(preparing.ttl(300, 5), 5);
        assert_eq!(
            Phase::Settling {
                until_ms: 9,
                held: None
            }
            .ttl(300, 5),
            5
        );
        assert!(Phase::Steady.is_long() && !preparing.is_long());
        assert_eq!(preparing.name().as_str(), "preparing");
        assert_eq!(preparing.target(), Some(Color::Green));
    }

    #[test]
    fn serials_compare_in_rfc_1982_arithmetic() {
        assert!(serial_after(2, 1));
        assert!(!serial_after(1, 2));
        assert!(serial_after(0, u32::MAX));
        assert!(!serial_after(5, 5));
    }
}
