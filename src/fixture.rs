//! The shipped example (`zones/`) served in memory, without sockets or a state file: the
//! request path as benchmarks, the property test and the fuzz target drive it.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::color::Color;
use crate::config::Config;
use crate::dns::Handler;
use crate::observed::Observed;
use crate::observed::counters::Counters;
use crate::records::{Generation, Records, Serving, ServingService, Snapshot};
use crate::state::ServiceState;
use crate::zone::Zone;

const CONFIG: &str = include_str!("../zones/flipdns.toml");
const ZONE: &str = include_str!("../zones/svc.example.com.zone");

/// The example config and zone, parsed.
pub fn catalog() -> Catalog {
    catalog_with_zone_lines("")
}

/// The example, its zone file ending with `lines` (delegations, say).
pub fn catalog_with_zone_lines(lines: &str) -> Catalog {
    let config = Config::parse(Path::new("zones/flipdns.toml"), CONFIG)
        .expect("the example config is valid");
    let zone = Zone::parse(
        &config.zones[0].origin,
        Path::new("zones/svc.example.com.zone"),
        &format!("{ZONE}{lines}"),
    )
    .expect("the example zone is valid");
    Catalog {
        config,
        zones: vec![zone],
        keys: Vec::new(),
        zone_sizes: Default::default(),
        api_tls: None,
    }
}

/// The example's records, every service steady on its configured color.
pub fn records() -> Arc<Records> {
    records_of(catalog())
}

/// The records of `catalog`, every service steady on its configured color.
fn records_of(catalog: Catalog) -> Arc<Records> {
    let catalog = Arc::new(catalog);
    let serial = catalog.zones[0].soa.serial;
    let serving = serving(&catalog, serial, |_, configured| configured);
    Arc::new(Records::new(Snapshot::build(&catalog, &serving)))
}

/// Every service of `catalog` steady on the color `live(index, configured color)`, every
/// zone at `serial`.
pub fn serving(catalog: &Catalog, serial: u32, live: impl Fn(usize, Color) -> Color) -> Serving {
    Serving {
        generation: Generation(1),
        serials: vec![serial; catalog.zones.len()],
        services: catalog
            .config
            .services
            .iter()
            .enumerate()
            .map(|(id, s)| ServingService {
                id: id as u32,
                state: ServiceState::new(live(id, s.live), s.ttl),
                observed: Arc::new(Observed::new(0)),
            })
            .collect(),
        histories: Vec::new(),
    }
}

/// A handler answering from the example, every service steady on its configured color.
pub fn handler() -> Handler {
    Handler::new(records(), Arc::new(Counters::default()), Clock::System)
}

/// [`handler`], the zone file ending with `lines`.
pub fn handler_with_zone_lines(lines: &str) -> Handler {
    let records = records_of(catalog_with_zone_lines(lines));
    Handler::new(records, Arc::new(Counters::default()), Clock::System)
}

/// A query for `name` (dotted, no trailing dot) of `qtype`, class IN, ID 0x1234, RD set.
pub fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

/// `packet` with an OPT record appended: payload size 1232, the OPT TTL field `ttl`
/// (extended RCODE, version, flags), and `options` as its data.
pub fn with_opt(mut packet: Vec<u8>, ttl: u32, options: &[u8]) -> Vec<u8> {
    packet[11] += 1;
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0]);
    packet.extend_from_slice(&ttl.to_be_bytes());
    packet.extend_from_slice(&(options.len() as u16).to_be_bytes());
    packet.extend_from_slice(options);
    packet
}
