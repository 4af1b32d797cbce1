//! `status`: every service's color, phase, TTL, deadlines, answers and health, every zone's
//! serial, from the snapshot being served; and every secondary's copy of each zone.

use super::{Context, health, phase, unknown_service};
use crate::color::Color;
use crate::config::ServiceConfig;
use crate::fleet;
use crate::protocol::{
    AddressSource, Answers, ClassCounts as ResolverCounts, Error, FleetWaitStatus, NotifyStatus,
    SecondaryStatus, SecondaryZone, ServiceStatus, Status, TransferStatus, ZoneStatus,
};
use crate::records::{ServiceView, Snapshot};
use crate::state::serial_after;

/// Status of every service, or of `only`.
pub async fn run(context: &Context, only: Option<&str>) -> Result<Status, Error> {
    let catalog = context.switch.catalog();
    let snapshot = context.switch.records().load_full();
    if let Some(name) = only
        && catalog.config.service(name).is_none()
    {
        return Err(unknown_service(name));
    }
    let listed: Vec<_> = catalog
        .config
        .services
        .iter()
        .filter(|config| only.is_none_or(|name| config.name == name))
        .filter_map(|config| Some((config, snapshot.service(&config.name)?)))
        .collect();
    // The ledger's classes for all of them in one pass.
    let ids: Vec<u32> = listed.iter().map(|(_, view)| view.id).collect();
    let classes = context.ledger.as_ref().map(|l| l.counts_of(&ids));
    let services = listed
        .iter()
        .enumerate()
        .map(|(i, (config, view))| {
            let resolvers = classes.as_ref().map(|c| super::stragglers::counts(&c[i]));
            service(context, &snapshot, config, view, resolvers)
        })
        .collect();
    let zones = snapshot
        .zones
        .iter()
        .map(|z| ZoneStatus {
            origin: z.origin.to_string(),
            serial: z.serial,
        })
        .collect();
    Ok(Status {
        snapshot_generation: snapshot.generation.0,
        services,
        zones,
        secondaries: context.fleet.status().iter().map(secondary).collect(),
        state_uncertain: context
            .switch
            .uncertain()
            .map(|u| crate::protocol::StateUncertain {
                reason: u.reason,
                since_ms: u.since_ms,
            }),
    })
}

/// One service as `snapshot` serves it.
fn service(
    context: &Context,
    snapshot: &Snapshot,
    config: &ServiceConfig,
    view: &ServiceView,
    resolvers: Option<ResolverCounts>,
) -> ServiceStatus {
    let state = &view.state;
    let observed = &view.observed;
    ServiceStatus {
        name: config.name.clone(),
        fqdn: config.fqdn().to_string(),
        zone: config.zone.to_string(),
        live: state.live,
        phase: phase(&state.phase),
        ttl: view.ttl,
        normal_ttl: config.ttl,
        cutover_ttl: config.cutover_ttl,
        flips: state.flips.0,
        serial: snapshot
            .zones
            .iter()
            .find(|z| z.origin == config.zone)
            .map_or(0, |z| z.serial),
        flipped_at_ms: state.flipped_at_ms,
        blue: state.addresses(config, Color::Blue).to_vec(),
        green: state.addresses(config, Color::Green).to_vec(),
        sources: Color::ALL
            .iter()
            .map(|&color| match state.runtime_set(color) {
                Some(set) => AddressSource {
                    color,
                    source: "runtime".into(),
                    by: Some(set.by.clone()),
                    at_ms: Some(set.at_ms),
                },
                None => AddressSource {
                    color,
                    source: "config".into(),
                    by: None,
                    at_ms: None,
                },
            })
            .collect(),
        answers: Answers {
            blue: observed.answers(Color::Blue),
            green: observed.answers(Color::Green),
        },
        health: Color::ALL
            .iter()
            .filter_map(|&c| observed.health.get(c))
            .map(|h| health(&h))
            .collect(),
        resolvers,
        fleet: state.fleet.map(|wait| FleetWaitStatus {
            serial: wait.serial,
            change: match (wait.prepare_ttl, wait.flip_ttl) {
                (Some(_), Some(_)) => "prepare and flip",
                (Some(_), None) => "prepare",
                _ => "flip",
            }
            .into(),
            behind: context
                .fleet
                .behind(&config.zone, wait.serial)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }),
        fleet_wait_until_ms: context.cutovers.fleet_wait_until_ms(&config.name),
        awaiting: state.awaiting.as_deref().map(super::awaiting),
    }
}

fn secondary(status: &fleet::SecondaryStatus) -> SecondaryStatus {
    SecondaryStatus {
        name: status.name.clone(),
        address: status.address.to_string(),
        key: status.key.clone(),
        zones: status
            .zones
            .iter()
            .map(
                |fleet::ZoneLink {
                     origin,
                     link,
                     serial,
                 }| SecondaryZone {
                    origin: origin.to_string(),
                    serial: *serial,
                    serves: link.serves.map(|s| s.serial),
                    checked_at_ms: link.serves.map(|s| s.at_ms),
                    lag: link.serves.map(|s| {
                        if serial_after(*serial, s.serial) {
                            serial.wrapping_sub(s.serial)
                        } else {
                            0
                        }
                    }),
                    behind_since_ms: link.behind_since_ms,
                    notify: link.notify.map(|n| NotifyStatus {
                        serial: n.serial,
                        at_ms: n.at_ms,
                        tries: n.tries,
                        acked: n.acked,
                    }),
                    transferred: link.transferred.map(|t| TransferStatus {
                        serial: t.serial,
                        at_ms: t.at_ms,
                        kind: t.kind.into(),
                    }),
                    error: link.error.as_ref().map(|e| e.message.clone()),
                    error_at_ms: link.error.as_ref().map(|e| e.at_ms),
                    errors: link.errors,
                    reachable: link.reachable(),
                    unreachable_since_ms: link.unreachable_since_ms(),
                    current: link.current(*serial),
                },
            )
            .collect(),
    }
}
