//! The restart rules: the state a start serves, assuming the worst about what the previous
//! process did and cannot say. A service that was steady handed out normal-TTL answers until
//! this start, with the larger of the TTL it had then and the one configured now; a drain
//! deadline written before the short TTL was confirmed is moved to cover the same; a zone
//! whose content differs from what its serial served gets a higher serial.

use std::collections::HashMap;
use std::sync::Arc;

use super::{hold, served};
use crate::catalog::Catalog;
use crate::clock::{Clock, format_utc};
use crate::observed::Observed;
use crate::records::content;
use crate::state::{Phase, ServiceState, State, ZoneState, serial_after};

/// The state to serve `catalog` with after a start: the loaded state for what it knows,
/// the config for the rest, and the restart rules for what the previous process could
/// have done. Fills `observed` with each service's drain input.
pub(super) fn restart(
    catalog: &Catalog,
    mut state: State,
    clock: &Clock,
    observed: &mut HashMap<String, Arc<Observed>>,
) -> State {
    let loaded = state.clone();
    let (now, mono) = (clock.now_ms(), clock.mono_ms());
    let margin = clock.coarse_resolution_ms();
    for name in state.services.keys() {
        if catalog.config.service(name).is_none() {
            tracing::warn!(service = %name, "the state file knows a service the config does not; ignoring it (kept in the file)");
        }
    }
    for config in &catalog.config.services {
        let service = state
            .services
            .entry(config.name.clone())
            .or_insert_with(|| ServiceState::new(config.live, config.ttl));
        for (color, set) in service.yield_to_config(config) {
            let said = super::config_won(&config.name, color, &set, config);
            tracing::warn!(service = %config.name, "at start: {said}");
        }
        // Normal-TTL answers the previous process may have given up to now, and those of the
        // live color that an earlier `--now` flip left in caches.
        let worst_ttl_ms = u64::from(service.ttl.max(config.ttl)) * 1000;
        let left = service
            .expires_mono(service.live, clock.boot(), |w| clock.mono_of(w))
            .unwrap_or(0);
        let long_expiry = match &mut service.phase {
            Phase::Steady => mono + worst_ttl_ms + margin,
            Phase::Preparing {
                drained_at_ms,
                confirmed,
                ..
            } => {
                if !*confirmed {
                    *drained_at_ms = (*drained_at_ms).max(now + worst_ttl_ms + margin);
                    *confirmed = true;
                }
                0
            }
            Phase::Settling { .. } => 0,
        }
        .max(left);
        service.ttl = config.ttl;
        hold(service, clock);
        observed.insert(config.name.clone(), Arc::new(Observed::new(long_expiry)));
    }
    settle_zones(catalog, &mut state, &loaded);
    state
}

/// Sets each zone's serial and digest for serving `catalog` with `state`: at least the
/// zone file's serial, and one more than in `previous` when the content differs from what
/// was served under the serial there (a change made while the server was down, or by a
/// reload), so a secondary never keeps other content under the same serial. Returns the
/// zones, known in `previous`, whose serial moved.
pub(super) fn settle_zones(
    catalog: &Catalog,
    state: &mut State,
    previous: &State,
) -> Vec<(String, u32)> {
    let mut moved = Vec::new();
    for (index, zone) in catalog.zones.iter().enumerate() {
        let origin = zone.origin.to_string();
        let digest = content::zone_digest(catalog, index, served(catalog, state)).0;
        let file = zone.soa.serial;
        let known = previous.zones.get(&origin);
        let mut serial = known.map_or(file, |z| z.serial);
        if known.is_some_and(|z| z.digest != 0 && z.digest != digest) {
            serial = serial.wrapping_add(1);
        }
        if serial_after(file, serial) {
            serial = file;
        }
        if known.is_some_and(|z| z.serial != serial) {
            moved.push((origin.clone(), serial));
        }
        state.zones.insert(origin, ZoneState { serial, digest });
    }
    moved
}

/// Logs every service that resumes in the middle of a cutover.
pub(super) fn log_resumed(catalog: &Catalog, state: &State, clock: &Clock) {
    let now = clock.now_ms();
    for config in &catalog.config.services {
        let service = &state.services[&config.name];
        if let Some(what) = describe_cutover(&service.phase) {
            let left = |at: u64| at.saturating_sub(now).div_ceil(1000);
            let when = match service.phase {
                Phase::Preparing { drained_at_ms, .. } => format!(
                    "drained at {} (in {} s)",
                    format_utc(drained_at_ms),
                    left(drained_at_ms)
                ),
                Phase::Settling { until_ms, .. } => {
                    format!(
                        "normal TTL at {} (in {} s)",
                        format_utc(until_ms),
                        left(until_ms)
                    )
                }
                Phase::Steady => String::new(),
            };
            tracing::info!(service = %config.name, live = %service.live, "resumed: {what}, {when}");
        }
    }
}

/// `flip to green pending` / `preparing, no flip pending` / `settling`; `None` when steady.
fn describe_cutover(phase: &Phase) -> Option<String> {
    match phase {
        Phase::Steady => None,
        Phase::Preparing {
            target: Some(t), ..
        } => Some(format!("preparing, flip to {t} pending")),
        Phase::Preparing { target: None, .. } => Some("preparing, no flip pending".into()),
        Phase::Settling { .. } => Some("settling after a flip".into()),
    }
}
