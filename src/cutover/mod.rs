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
//! ([`crate::metrics::ServiceStats::long_answer`]); the phase and its deadlines live in the
//! state file, so a restart resumes the same schedule. This module holds the rules; the
//! per-service task that applies them is in [`driver`].

mod driver;

pub use driver::{Action, Cutovers};

use crate::admin::protocol::PhaseStatus;
use crate::clock;
use crate::config::ServiceConfig;
use crate::metrics::ServiceStats;
use crate::state::Phase;

/// The TTL answers carry in `phase`.
pub fn ttl(config: &ServiceConfig, phase: &Phase) -> u32 {
    match phase {
        Phase::Steady => config.ttl,
        Phase::Preparing { .. } | Phase::Settling { .. } => config.cutover_ttl,
    }
}

/// Whether answers in `phase` carry the normal TTL, which the drain deadline must outlast.
pub fn is_long(phase: &Phase) -> bool {
    matches!(phase, Phase::Steady)
}

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
pub fn drain_deadline(config: &ServiceConfig, stats: &ServiceStats) -> u64 {
    stats.last_long_answer_ms() + u64::from(config.ttl) * 1000 + clock::coarse_resolution_ms()
}

/// `phase` for status and replies.
pub fn phase_status(phase: &Phase) -> PhaseStatus {
    let status = |name: &str| PhaseStatus {
        name: name.into(),
        drained_at_ms: None,
        target: None,
        settle_until_ms: None,
    };
    match *phase {
        Phase::Steady => status("steady"),
        Phase::Preparing {
            drained_at_ms,
            target,
            ..
        } => PhaseStatus {
            drained_at_ms: Some(drained_at_ms),
            target,
            ..status("preparing")
        },
        Phase::Settling { until_ms } => PhaseStatus {
            settle_until_ms: Some(until_ms),
            ..status("settling")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::color::Color;

    #[test]
    fn ttl_and_deadlines_follow_the_phase() {
        let config = crate::config::Config::parse(
            std::path::Path::new("f.toml"),
            "[server]\nlisten=[\"127.0.0.1:0\"]\nadmin_socket=\"s\"\nstate_file=\"t\"\n[[zone]]\norigin=\"z.\"\nfile=\"z\"\n[[service]]\nname=\"a\"\nblue=[\"192.0.2.1\"]\ngreen=[\"192.0.2.2\"]\nlive=\"blue\"\nttl=300\ncutover_ttl=5\nsettle=\"1m\"\n",
        )
        .unwrap();
        let service = &config.services[0];
        let preparing = Phase::Preparing {
            since_ms: 1,
            drained_at_ms: 301_001,
            target: Some(Color::Green),
            force: false,
        };
        assert_eq!(ttl(service, &Phase::Steady), 300);
        assert_eq!(ttl(service, &preparing), 5);
        assert_eq!(ttl(service, &Phase::Settling { until_ms: 9 }), 5);
        assert!(is_long(&Phase::Steady) && !is_long(&preparing));
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
        let stats = ServiceStats::new(1_000_000);
        stats.long_answer(1_000_500);
        stats.long_answer(1_000_400); // never backwards
        assert_eq!(
            drain_deadline(service, &stats),
            1_300_500 + clock::coarse_resolution_ms()
        );
    }
}
