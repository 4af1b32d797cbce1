//! `status`: every service's color, phase, TTL, deadlines, answers and health, and every
//! zone's serial, from the snapshot being served.

use super::{Context, health, phase, unknown_service};
use crate::color::Color;
use crate::protocol::{Answers, Error, ServiceStatus, Status, ZoneStatus};

/// Status of every service, or of `only`.
pub async fn run(context: &Context, only: Option<&str>) -> Result<Status, Error> {
    let catalog = context.switch.catalog();
    let snapshot = context.switch.records().load_full();
    if let Some(name) = only
        && catalog.config.service(name).is_none()
    {
        return Err(unknown_service(name));
    }
    let services = catalog
        .config
        .services
        .iter()
        .filter(|config| only.is_none_or(|name| config.name == name))
        .filter_map(|config| {
            let view = snapshot.service(&config.name)?;
            let state = &view.state;
            let observed = &view.observed;
            Some(ServiceStatus {
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
                blue: config.blue.clone(),
                green: config.green.clone(),
                answers: Answers {
                    blue: observed.answers(Color::Blue),
                    green: observed.answers(Color::Green),
                },
                health: Color::ALL
                    .iter()
                    .filter_map(|&c| observed.health.get(c))
                    .map(|h| health(&h))
                    .collect(),
                resolvers: context
                    .ledger
                    .as_ref()
                    .map(|l| super::stragglers::counts(&l.counts(view.id))),
            })
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
    })
}
