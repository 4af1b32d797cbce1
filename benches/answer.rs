//! The query hot path without sockets: parse, look up, encode, count, observe.
//!
//! `cargo bench --bench answer` reports the time to answer one query from a snapshot, for a
//! service name (the blue-green answer), a static record, a name that does not exist, and a
//! service name with EDNS; the service answer again with the straggler ledger on, once with
//! its task idle (what recording costs the query path) and once with it draining on the
//! other core at full speed (which a real load never asks of it); and the ledger task's cost
//! of recording one observation into its table.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flipdns::clock::Clock;
use flipdns::color::Color;
use flipdns::dns::Handler;
use flipdns::observed::answers::{NameKind, Observation, Recorder};
use flipdns::observed::counters::Counters;
use flipdns::state::Store;
use flipdns::stragglers::table::Table;
use flipdns::stragglers::{Flip, Ledger};
use flipdns::switch::Switch;
use flipdns::wire::Transport;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shipped example, served from a real switch (with a state file in a temporary
/// directory), with two ledgers: one whose task runs on its own runtime thread, draining
/// batches as in the server, and one whose task never runs, which isolates what recording
/// costs the query path itself.
struct Setup {
    handler: Handler,
    ledger: Arc<Ledger>,
    quiet_ledger: Arc<Ledger>,
    _runtimes: [tokio::runtime::Runtime; 2],
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let catalog = flipdns::fixture::catalog();
    let dir = tempfile::tempdir().unwrap();
    let state = Store::open(&dir.path().join("state.json")).unwrap();
    let switch = Arc::new(Switch::start(catalog, state, Clock::System).unwrap());
    let running = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ledger = running.block_on(async {
        Ledger::start(
            1_000_000,
            switch.records().clone(),
            Clock::System,
            flipdns::stragglers::DRAIN_EVERY,
            &CancellationToken::new(),
            &TaskTracker::new(),
        )
    });
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let quiet_ledger = {
        let _entered = idle.enter();
        Ledger::start(
            1_000_000,
            switch.records().clone(),
            Clock::System,
            flipdns::stragglers::DRAIN_EVERY,
            &CancellationToken::new(),
            &TaskTracker::new(),
        )
    };
    let handler = Handler::new(
        switch.records().clone(),
        Arc::new(Counters::default()),
        Clock::System,
    );
    Setup {
        handler,
        ledger,
        quiet_ledger,
        _runtimes: [running, idle],
        _dir: dir,
    }
}

fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let packet = flipdns::fixture::query(name, qtype);
    if edns {
        flipdns::fixture::with_opt(packet, 0, &[])
    } else {
        packet
    }
}

fn answer(c: &mut Criterion) {
    let setup = setup();
    let handler = &setup.handler;
    let client: SocketAddr = "192.0.2.200:53000".parse().unwrap();
    let mut out = Vec::with_capacity(65535);
    let mut off = Recorder::off();
    let cases = [
        ("service_a", query("app.svc.example.com", 1, false)),
        ("service_a_edns", query("app.svc.example.com", 1, true)),
        ("static_txt", query("status.svc.example.com", 16, false)),
        ("nxdomain", query("nothing-here.svc.example.com", 1, false)),
    ];
    let mut group = c.benchmark_group("answer");
    for (name, packet) in &cases {
        assert!(handler.handle(packet, client, Transport::Udp, &mut out, &mut off));
        group.bench_function(*name, |b| {
            b.iter(|| {
                handler.handle(
                    black_box(packet),
                    client,
                    Transport::Udp,
                    &mut out,
                    &mut off,
                )
            })
        });
    }
    let packet = &cases[0].1;
    let mut quiet = setup.quiet_ledger.intake().recorder();
    group.bench_function("service_a_ledger_on_recording", |b| {
        b.iter(|| {
            handler.handle(
                black_box(packet),
                client,
                Transport::Udp,
                &mut out,
                &mut quiet,
            )
        })
    });
    let mut on = setup.ledger.intake().recorder();
    group.bench_function("service_a_ledger_on_draining", |b| {
        b.iter(|| handler.handle(black_box(packet), client, Transport::Udp, &mut out, &mut on))
    });
    group.finish();
}

fn observation(i: u32) -> Observation {
    Observation {
        at_ms: 1_800_000_000_000 + u64::from(i),
        resolver: IpAddr::from((0x0A00_0000 + i).to_be_bytes()),
        subnet: None,
        service: 0,
        color: Color::Blue,
        name: NameKind::Service,
        ttl: 300,
        flip_tag: 0,
        via: 0,
    }
}

fn ledger(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger");
    // 10,000 resolvers asking in turn, in a table with room for all of them.
    let mut table = Table::new(100_000);
    let mut i = 0u32;
    group.bench_function("record", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            table.record(black_box(&observation(i)), &Flip::default())
        })
    });
    // Every observation from a new resolver, in a full table: each one evicts.
    let mut full = Table::new(10_000);
    let mut j = 0u32;
    group.bench_function("record_evicting", |b| {
        b.iter(|| {
            j = j.wrapping_add(1);
            full.record(black_box(&observation(j)), &Flip::default())
        })
    });
    group.finish();
}

criterion_group!(benches, answer, ledger);
criterion_main!(benches);
