//! The rules of the cutover, as pure functions of the service's config, its persisted
//! state and the time: what a command does, where a drain deadline falls, the state a flip
//! leaves, and the words of every refusal. The driver carries them out; the model-based
//! test checks them against the invariants in the module docs.

use std::net::IpAddr;

use super::{Action, Outcome, Refusal, RefusalKind};
use crate::clock::format_utc;
use crate::color::Color;
use crate::config::ServiceConfig;
use crate::config::show_duration;
use crate::observed::ColorHealth;
use crate::state::{FleetWait, FlipCount, Held, Phase, ServiceState};

/// What the rules need to know about one service at one moment. Deadlines and expiries are
/// compared and computed on the monotonic clock (a wall-clock step would make a wall-clock
/// comparison lie) and written with both values ([`Held`]).
pub struct Facts<'a> {
    pub config: &'a ServiceConfig,
    pub state: &'a ServiceState,
    /// Wall-clock now, in Unix milliseconds.
    pub now_ms: u64,
    /// Monotonic now, in milliseconds since boot.
    pub now_mono: u64,
    /// Which boot the monotonic clock counts from.
    pub boot: u64,
    /// When every normal-TTL answer known of expires, monotonic (coarse resolution added);
    /// in the past when there was none.
    pub long_expiry_mono: u64,
}

impl Facts<'_> {
    /// The monotonic moment `mono` with its wall-clock value as the clocks stand now.
    pub fn at(&self, mono: u64) -> Held {
        Held {
            boot: self.boot,
            wall_ms: (self.now_ms + mono).saturating_sub(self.now_mono),
            mono_ms: mono,
        }
    }

    /// A persisted moment on the monotonic clock: as it was held in this boot, or its
    /// wall-clock value read with the clocks as they stand now.
    pub fn mono(&self, wall_ms: u64, held: Option<Held>) -> u64 {
        held.filter(|h| h.boot == self.boot && h.wall_ms == wall_ms)
            .map_or_else(
                || (self.now_mono + wall_ms).saturating_sub(self.now_ms),
                |h| h.mono_ms,
            )
    }
}

/// What a command comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing changes; the reply says this.
    Reply(Outcome),
    Refuse(Refusal),
    /// Lower the TTL (or keep it low), with a flip to `target` pending if there is one.
    Prepare {
        target: Option<Color>,
        force: bool,
    },
    /// Flip to `to` now.
    Flip {
        to: Color,
        force: bool,
        why: Why,
    },
    /// Back to the normal TTL, dropping a pending flip.
    Cancel,
    /// Replace `color`'s addresses, after their health check if `check`.
    SetAddresses {
        color: Color,
        addresses: Vec<IpAddr>,
        check: bool,
    },
}

/// Why a flip happens now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The operator said `--now`: the drain is skipped on purpose.
    Now,
    /// While settling every cached answer is short: going back needs no wait, and the
    /// anti-flap rule does not apply (it is the escape hatch).
    Rollback,
    /// The drain deadline of a scheduled flip has passed.
    Drained,
}

/// What `action` comes to for the service in `facts`.
pub fn command(action: Action, facts: &Facts) -> Plan {
    let state = facts.state;
    let (live, pending, settling) = (
        state.live,
        state.pending(),
        matches!(state.phase, Phase::Settling { .. }),
    );
    match action {
        Action::Prepare => match state.phase {
            Phase::Preparing { .. } => Plan::Reply(Outcome::Prepared),
            _ => Plan::Prepare {
                target: None,
                force: false,
            },
        },
        Action::Flip { to, now, force } => match pending {
            Some(target) if target != to => Plan::Refuse(busy(facts, target)),
            Some(_) if now => Plan::Flip {
                to,
                force,
                why: Why::Now,
            },
            Some(_) => Plan::Reply(Outcome::Joined),
            None if to == live => Plan::Reply(Outcome::AlreadyLive),
            None if settling => Plan::Flip {
                to,
                force,
                why: Why::Rollback,
            },
            None if now => Plan::Flip {
                to,
                force,
                why: Why::Now,
            },
            None => Plan::Prepare {
                target: Some(to),
                force,
            },
        },
        Action::Rollback { force } => match pending {
            Some(target) => Plan::Refuse(busy(facts, target)),
            None if settling => Plan::Flip {
                to: live.other(),
                force,
                why: Why::Rollback,
            },
            None => Plan::Prepare {
                target: Some(live.other()),
                force,
            },
        },
        Action::Cancel => match state.phase {
            Phase::Steady => Plan::Reply(Outcome::NothingToCancel),
            _ => Plan::Cancel,
        },
        Action::SetAddresses {
            color,
            addresses,
            force,
            check,
        } => set_addresses(facts, color, addresses, force, check),
        Action::Follow => Plan::Reply(match (pending, &state.awaiting) {
            (Some(_), _) => Outcome::Joined,
            (None, Some(_)) => Outcome::AwaitingApproval,
            (None, None) => Outcome::NothingPending,
        }),
        // The task answers approvals itself: it knows who asks.
        Action::Approve => Plan::Reply(Outcome::NothingPending),
    }
}

/// A request that needs approval while another one already waits.
pub fn awaiting_other(facts: &Facts, waiting: &crate::state::Awaiting) -> Refusal {
    let name = &facts.config.name;
    Refusal::new(
        RefusalKind::Busy,
        format!(
            "{} of {name} asked by {} awaits approval until {}: approve it (`flipdns ctl approve {name}`, by another principal) or withdraw it (`flipdns ctl cancel {name}`) first; {}",
            waiting.action,
            waiting.by,
            format_utc(waiting.expires_ms),
            left_in(facts.config, facts.state)
        ),
    )
}

/// Whether `color`'s addresses may become `addresses`: a valid set; not the live color
/// unless `force` (an emergency: a dead host in the live set); never the color a cutover is
/// heading to or settling on (its answers are the point of the cutover in progress).
fn set_addresses(
    facts: &Facts,
    color: Color,
    addresses: Vec<IpAddr>,
    force: bool,
    check: bool,
) -> Plan {
    let (name, state) = (&facts.config.name, facts.state);
    if let Err(why) = crate::config::check_addresses(color, &addresses) {
        return Plan::Refuse(Refusal::new(
            RefusalKind::BadAddresses,
            format!(
                "addresses of {name} not set: {why}; {}",
                left_in(facts.config, state)
            ),
        ));
    }
    let heading = match state.phase {
        Phase::Preparing {
            target: Some(target),
            ..
        } => Some(("a cutover of", target, "is pending")),
        Phase::Settling { .. } => Some(("the flip of", state.live, "is settling")),
        _ => None,
    };
    if let Some((what, target, how)) = heading.filter(|(_, target, _)| *target == color) {
        return Plan::Refuse(Refusal::new(
            RefusalKind::Busy,
            format!(
                "addresses of {name} {color} not set: {what} {name} to {target} {how}; wait until it is steady (`flipdns ctl status {name}`), or `flipdns ctl cancel {name}`; {}",
                left_in(facts.config, state)
            ),
        ));
    }
    if color == state.live && !force {
        return Plan::Refuse(Refusal::new(
            RefusalKind::LiveColor,
            format!(
                "addresses of {name} {color} not set: {color} is live, and its answers would change at once; set the idle color and flip, or `--force` to replace a live address (an emergency; audited as such); {}",
                left_in(facts.config, state)
            ),
        ));
    }
    if addresses == state.addresses(facts.config, color) {
        return Plan::Reply(Outcome::AddressesUnchanged);
    }
    Plan::SetAddresses {
        color,
        addresses,
        check,
    }
}

/// `--check` on a service without a health check.
pub fn no_health_check(config: &ServiceConfig) -> Refusal {
    Refusal::new(
        RefusalKind::Unhealthy,
        format!(
            "addresses of {} not set: `--check` needs a [service.health] check, and {} has none; nothing changed",
            config.name, config.name
        ),
    )
}

/// The refusal of a set whose `--check` found unhealthy addresses, if it did.
pub fn unhealthy_addresses(facts: &Facts, color: Color, health: &ColorHealth) -> Option<Refusal> {
    let failing: Vec<String> = health
        .addresses
        .iter()
        .filter(|a| !a.healthy)
        .map(|a| format!("{} ({})", a.address, a.detail))
        .collect();
    (!failing.is_empty()).then(|| {
        Refusal::new(
            RefusalKind::Unhealthy,
            format!(
                "addresses of {} {color} not set: unhealthy {}; without `--check` they are set unchecked; {}",
                facts.config.name,
                failing.join(", "),
                left_in(facts.config, facts.state)
            ),
        )
    })
}

/// The preparing phase to write. A deadline already set never moves earlier; a new one
/// covers every normal-TTL answer seen, and, from steady, those that go out until the short
/// TTL is published (after this write): it is confirmed by a second write after that.
pub fn preparing(facts: &Facts, target: Option<Color>, force: bool) -> Phase {
    let (now, ttl_ms) = (facts.now_mono, u64::from(facts.config.ttl) * 1000);
    let (since_ms, drained, confirmed) = match facts.state.phase {
        Phase::Preparing {
            since_ms,
            drained_at_ms,
            confirmed,
            held,
            ..
        } => (
            since_ms,
            facts.mono(drained_at_ms, held).max(facts.long_expiry_mono),
            confirmed,
        ),
        Phase::Steady => (
            facts.now_ms,
            facts.long_expiry_mono.max(now + ttl_ms + 1),
            false,
        ),
        Phase::Settling { .. } => (facts.now_ms, facts.long_expiry_mono.max(now), true),
    };
    let held = facts.at(drained);
    Phase::Preparing {
        since_ms,
        drained_at_ms: held.wall_ms,
        target,
        force,
        confirmed,
        held: Some(held),
    }
}

/// The preparing phase after the short TTL is published: the deadline covers every
/// normal-TTL answer that went out before, and is confirmed.
pub fn confirmed(facts: &Facts) -> Phase {
    let mut phase = preparing(facts, facts.state.pending(), false);
    if let (
        Phase::Preparing {
            confirmed, force, ..
        },
        Phase::Preparing {
            force: was_forced, ..
        },
    ) = (&mut phase, facts.state.phase)
    {
        *confirmed = true;
        *force = was_forced;
    }
    phase
}

/// The preparing phase with its drain deadline moved to the monotonic moment `later` (a
/// normal-TTL answer that left after the deadline was set).
pub fn extended(facts: &Facts, later: u64) -> Phase {
    let mut phase = facts.state.phase;
    if let Phase::Preparing {
        drained_at_ms,
        held,
        ..
    } = &mut phase
    {
        let at = facts.at(facts.mono(*drained_at_ms, *held).max(later));
        *drained_at_ms = at.wall_ms;
        *held = Some(at);
    }
    phase
}

/// The state once every secondary serves the change `wait` waited for, now: a prepare's
/// drain counts from now (a secondary handed out the normal TTL until it had the short
/// one), and a flip's old color drains from now (it answered the old color until then).
pub fn fleet_confirmed(facts: &Facts, wait: FleetWait) -> ServiceState {
    let mut next = facts.state.clone();
    next.fleet = None;
    let until = |ttl: u32| facts.now_mono + u64::from(ttl) * 1000 + 1;
    if let (Some(ttl), Phase::Preparing { .. }) = (wait.prepare_ttl, next.phase) {
        next.phase = extended(facts, until(ttl));
    }
    if let Some(ttl) = wait.flip_ttl {
        let old = next.live.other();
        next.keep_expiry(old, until(ttl), facts.boot, facts.now_ms, facts.now_mono);
    }
    next
}

/// The refusal of a pending flip whose short TTL the secondaries `behind` have not been
/// seen to serve within `waited`.
pub fn fleet_refusal(
    facts: &Facts,
    to: Color,
    serial: u32,
    behind: &[String],
    waited: std::time::Duration,
) -> Refusal {
    let count = behind.len();
    Refusal::new(
        RefusalKind::SecondariesBehind,
        format!(
            "flip of {} to {to} refused: the drain is not proven: {count} secondar{} did not serve serial {serial} (the short TTL) within {}: {}; `--force` flips without them",
            facts.config.name,
            if count == 1 { "y" } else { "ies" },
            show_duration(waited),
            behind.join("; ")
        ),
    )
}

/// The health gate and the anti-flap rule, unless `force`; a rollback while settling is
/// never refused by the anti-flap rule.
pub fn gate(
    facts: &Facts,
    to: Color,
    force: bool,
    why: Why,
    health: Option<&ColorHealth>,
) -> Result<(), Refusal> {
    let name = &facts.config.name;
    if let Some(health) = health.filter(|h| !force && !h.all_healthy()) {
        return Err(Refusal::new(
            RefusalKind::Unhealthy,
            format!(
                "flip of {name} to {to} refused: unhealthy {}; `--force` skips the health gate",
                health.failing()
            ),
        ));
    }
    let interval = facts.config.min_flip_interval.as_millis() as u64;
    if let (false, false, Some(last)) = (force, why == Why::Rollback, facts.state.flipped_at_ms) {
        let allowed = last + interval;
        if facts.now_ms < allowed {
            return Err(Refusal::new(
                RefusalKind::Interval,
                format!(
                    "flip of {name} to {to} refused: the last flip was {} s ago and min_flip_interval is {} (allowed from {}); `--force` overrides",
                    facts.now_ms.saturating_sub(last) / 1000,
                    show_duration(facts.config.min_flip_interval),
                    format_utc(allowed)
                ),
            ));
        }
    }
    Ok(())
}

/// The state a flip to `to` leaves: one more flip, settling with the short TTL, and the
/// moment the old color's last answer expires (its answers carried the TTL in effect until
/// now; normal-TTL ones expire at `long_expiry_ms`; and an earlier exposure of the same color
/// is kept).
pub fn flipped(facts: &Facts, to: Color) -> ServiceState {
    let config = facts.config;
    let state = facts.state;
    let current_ttl_ms = u64::from(state.phase.ttl(config.ttl, config.cutover_ttl)) * 1000;
    let from = state.live.index();
    let (mut expires_ms, mut expires_held) = (state.expires_ms, state.expires_held);
    let earlier = if expires_ms[from] > 0 {
        facts.mono(expires_ms[from], expires_held[from])
    } else {
        0
    };
    let expiry = facts.at(earlier
        .max(facts.now_mono + current_ttl_ms + 1)
        .max(facts.long_expiry_mono));
    expires_ms[from] = expiry.wall_ms;
    expires_held[from] = Some(expiry);
    let until = facts.at(facts.now_mono + config.settle.as_millis() as u64);
    ServiceState {
        live: to,
        flips: FlipCount(state.flips.0 + 1),
        flipped_at_ms: Some(facts.now_ms),
        phase: Phase::Settling {
            until_ms: until.wall_ms,
            held: Some(until),
        },
        ttl: config.ttl,
        expires_ms,
        expires_held,
        fleet: state.fleet,
        change: state.change.clone(),
        addresses: state.addresses.clone(),
        awaiting: None,
    }
}

/// After a refused flip: a pending target is dropped; the phase and its short TTL stay, so
/// a retry is as fast (and the reply says how to get the normal TTL back).
pub fn refused(phase: Phase) -> Phase {
    match phase {
        Phase::Preparing {
            since_ms,
            drained_at_ms,
            confirmed,
            held,
            ..
        } => Phase::Preparing {
            since_ms,
            drained_at_ms,
            target: None,
            force: false,
            confirmed,
            held,
        },
        other => other,
    }
}

/// `still blue, preparing with TTL 2 s and no flip pending; `flipdns ctl cancel app`
/// restores TTL 60 s`: the state a refusal leaves, and how to leave it.
pub fn left_in(config: &ServiceConfig, state: &ServiceState) -> String {
    let name = &config.name;
    let live = state.live;
    match state.phase {
        Phase::Steady => format!("still {live}, steady with TTL {} s", config.ttl),
        Phase::Preparing { target: None, .. } => format!(
            "still {live}; the TTL stays {} s with no flip pending: `flipdns ctl cancel {name}` restores {} s",
            config.cutover_ttl, config.ttl
        ),
        Phase::Preparing {
            target: Some(t), ..
        } => format!(
            "still {live}, preparing with TTL {} s and a flip to {t} pending",
            config.cutover_ttl
        ),
        Phase::Settling { until_ms, .. } => format!(
            "still {live}, settling with TTL {} s until {}",
            config.cutover_ttl,
            format_utc(until_ms)
        ),
    }
}

fn busy(facts: &Facts, target: Color) -> Refusal {
    let name = &facts.config.name;
    let when = facts
        .state
        .phase
        .drained_at_ms()
        .map_or("-".into(), format_utc);
    Refusal::new(
        RefusalKind::Busy,
        format!(
            "a cutover of {name} to {target} is pending (drains at {when}); cancel it first with `flipdns ctl cancel {name}`; {}",
            left_in(facts.config, facts.state)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> ServiceConfig {
        let mut config = crate::fixture::catalog().config.services[1].clone(); // api: ttl 60
        config.min_flip_interval = Duration::from_secs(1800);
        config
    }

    fn facts<'a>(config: &'a ServiceConfig, state: &'a ServiceState, now: u64) -> Facts<'a> {
        Facts {
            config,
            state,
            now_ms: now,
            now_mono: now,
            boot: 1,
            long_expiry_mono: 0,
        }
    }

    #[test]
    fn a_deadline_never_moves_earlier() {
        let config = config();
        let mut state = ServiceState::new(Color::Blue, 60);
        state.phase = Phase::Preparing {
            since_ms: 0,
            drained_at_ms: 120_000,
            target: None,
            force: false,
            confirmed: true,
            held: None,
        };
        let f = facts(&config, &state, 70_000);
        let again = preparing(&f, Some(Color::Green), false);
        assert_eq!(again.drained_at_ms(), Some(120_000), "prepare, then flip");
    }

    #[test]
    fn a_rollback_while_settling_is_immediate_and_not_refused_by_the_interval() {
        let config = config();
        let mut state = ServiceState::new(Color::Green, 60);
        state.flipped_at_ms = Some(1_000);
        state.phase = Phase::Settling {
            until_ms: 600_000,
            held: None,
        };
        let f = facts(&config, &state, 2_000);
        let plan = command(Action::Rollback { force: false }, &f);
        assert_eq!(
            plan,
            Plan::Flip {
                to: Color::Blue,
                force: false,
                why: Why::Rollback
            }
        );
        assert!(gate(&f, Color::Blue, false, Why::Rollback, None).is_ok());
        // A flip to the other color while settling is the same rollback.
        let plan = command(
            Action::Flip {
                to: Color::Blue,
                now: false,
                force: false,
            },
            &f,
        );
        assert!(
            matches!(
                plan,
                Plan::Flip {
                    why: Why::Rollback,
                    ..
                }
            ),
            "{plan:?}"
        );
        // Outside the settle the anti-flap rule holds, and says what overrides it.
        let refused = gate(&f, Color::Blue, false, Why::Now, None).unwrap_err();
        assert!(refused.message.contains("`--force` overrides"), "{refused}");
    }

    #[test]
    fn every_refusal_says_what_state_it_leaves() {
        let config = config();
        let state = ServiceState {
            phase: Phase::Preparing {
                since_ms: 0,
                drained_at_ms: 1,
                target: None,
                force: false,
                confirmed: true,
                held: None,
            },
            ..ServiceState::new(Color::Blue, 60)
        };
        assert_eq!(
            left_in(&config, &state),
            "still blue; the TTL stays 5 s with no flip pending: `flipdns ctl cancel api` restores 60 s"
        );
    }
}
