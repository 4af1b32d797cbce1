//! The `status` report: every service's color, phase, TTL, deadlines, answers and health.

use crate::admin::protocol::{Answers, ServiceStatus, Status, ZoneStatus};
use crate::color::Color;
use crate::cutover::{phase_status, ttl};
use crate::stragglers::Ledger;
use crate::switch::Switch;

/// Status of every service, or of `only`.
pub async fn report(
    switch: &Switch,
    ledger: Option<&Ledger>,
    only: Option<&str>,
) -> Result<Status, String> {
    let state = switch.state().await;
    let catalog = switch.catalog();
    let snapshot = switch.records().load_full();
    if let Some(name) = only {
        catalog
            .config
            .service(name)
            .ok_or_else(|| format!("unknown service {name:?}"))?;
    }
    let services = catalog
        .config
        .services
        .iter()
        .filter(|config| only.is_none_or(|name| config.name == name))
        .filter_map(|config| {
            let service = state.services.get(&config.name)?;
            let view = snapshot.service(&config.name)?;
            let stats = &view.stats;
            Some(ServiceStatus {
                name: config.name.clone(),
                fqdn: config.fqdn().to_string(),
                zone: config.zone.to_string(),
                live: service.live,
                phase: phase_status(&service.phase),
                ttl: ttl(config, &service.phase),
                normal_ttl: config.ttl,
                cutover_ttl: config.cutover_ttl,
                generation: service.generation,
                serial: state
                    .zones
                    .get(&config.zone.to_string())
                    .map_or(0, |z| z.serial),
                flipped_at_ms: service.flipped_at_ms,
                blue: config.blue.clone(),
                green: config.green.clone(),
                answers: Answers {
                    blue: stats.answers(Color::Blue),
                    green: stats.answers(Color::Green),
                },
                health: Color::ALL
                    .iter()
                    .filter_map(|&c| stats.health.get(c))
                    .collect(),
                resolvers: ledger.map(|l| l.counts(view.id)),
            })
        })
        .collect();
    let zones = catalog
        .zones
        .iter()
        .map(|z| ZoneStatus {
            origin: z.origin.to_string(),
            serial: state
                .zones
                .get(&z.origin.to_string())
                .map_or(0, |s| s.serial),
        })
        .collect();
    Ok(Status {
        generation: snapshot.generation,
        services,
        zones,
    })
}
