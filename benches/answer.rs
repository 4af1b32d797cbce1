//! The query hot path without sockets: parse, look up, encode, count.
//!
//! `cargo bench --bench answer` reports the time to answer one query from a snapshot, for
//! the answers that matter: a service name (the blue-green answer), a static record, a
//! name that does not exist, and a service name with EDNS.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flipdns::catalog::Catalog;
use flipdns::config::Config;
use flipdns::dns::{Handler, Transport};
use flipdns::metrics::{Metrics, ServiceStats};
use flipdns::records::{Records, Serving, ServingService, Snapshot};
use flipdns::state::Phase;
use flipdns::zone::Zone;

const CONFIG: &str = include_str!("../zones/flipdns.toml");
const ZONE: &str = include_str!("../zones/svc.example.com.zone");

/// A handler over the shipped example, built in memory.
pub fn handler() -> Handler {
    let config = Config::parse(Path::new("zones/flipdns.toml"), CONFIG)
        .expect("the example config is valid");
    let zone = Zone::parse(
        &config.zones[0].origin,
        Path::new("svc.example.com.zone"),
        ZONE,
    )
    .expect("the example zone is valid");
    let serving = Serving {
        generation: 1,
        serials: vec![zone.soa.serial],
        services: config
            .services
            .iter()
            .map(|s| ServingService {
                live: s.live,
                generation: 0,
                ttl: s.ttl,
                long: true,
                phase: Phase::Steady,
                stats: Arc::new(ServiceStats::new(0)),
            })
            .collect(),
    };
    let catalog = Catalog {
        config,
        zones: vec![zone],
    };
    let records = Arc::new(Records::new(Snapshot::build(&catalog, &serving)));
    Handler::new(records, Arc::new(Metrics::default()))
}

fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns as u8];
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    packet
}

fn answer(c: &mut Criterion) {
    let handler = handler();
    let client: SocketAddr = "192.0.2.200:53000".parse().unwrap();
    let mut out = Vec::with_capacity(65535);
    let cases = [
        ("service_a", query("app.svc.example.com", 1, false)),
        ("service_a_edns", query("app.svc.example.com", 1, true)),
        ("static_txt", query("status.svc.example.com", 16, false)),
        ("nxdomain", query("nothing-here.svc.example.com", 1, false)),
    ];
    let mut group = c.benchmark_group("answer");
    for (name, packet) in &cases {
        assert!(handler.handle(packet, client, Transport::Udp, &mut out));
        group.bench_function(*name, |b| {
            b.iter(|| handler.handle(black_box(packet), client, Transport::Udp, &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, answer);
criterion_main!(benches);
