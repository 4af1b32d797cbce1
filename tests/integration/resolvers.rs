//! Real recursive resolvers in front of flipdns, each sending from its own loopback address
//! with a steady client: unbound and BIND with default caching, and unbound
//! (`cache-min-ttl: 60`), BIND (`min-cache-ttl 60`) and dnsmasq (`--min-cache-ttl=60`)
//! clamping a 5 s TTL to 60 s. After a flip the defaults converge on time; the clampers are
//! overdue while they hold the old color, then stragglers with how late they came back, and
//! a report two minutes after the flip still says so.
//!
//! It takes about four minutes, most of it waiting: a clamper's rhythm needs two of its
//! 60 s intervals before the flip, and the report is read 120 s after it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::resolvers::{Kind, ask, start};
use crate::common::{Server, Setup};

/// `stragglers app --all` as JSON.
fn report(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.ctl_ok(&["stragglers", "app", "--all", "--json"])).unwrap()
}

fn class_of<'r>(report: &'r serde_json::Value, source: &str) -> &'r serde_json::Value {
    report["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resolver"] == source)
        .unwrap_or_else(|| panic!("{source} not in the report: {report}"))
}

#[test]
fn clamping_resolvers_are_overdue_then_stragglers_and_the_report_remembers() {
    let services = "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 5\ncutover_ttl = 5\nsettle = \"0s\"\n";
    let server = Server::start_with(&Setup {
        services: services.into(),
        ..Setup::default()
    });
    // A /24 of loopback per run (by process id), so that runs side by side do not meet.
    let net = 10 + std::process::id() % 200;
    let resolvers = [
        start("unbound", Kind::Unbound, (net, 21), server.port, 0),
        start("unbound-clamp", Kind::Unbound, (net, 22), server.port, 60),
        start("bind", Kind::Bind, (net, 23), server.port, 0),
        start("bind-clamp", Kind::Bind, (net, 24), server.port, 60),
        start("dnsmasq-clamp", Kind::Dnsmasq, (net, 25), server.port, 60),
    ];

    // One steady client per resolver, a query a second.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let stop = stop.clone();
        let targets: Vec<SocketAddr> = resolvers.iter().map(|r| r.addr).collect();
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let round = Instant::now();
                for &target in &targets {
                    ask(&socket, target);
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
            }
        })
    };

    // The clampers fetch at 0, 60 (61 for unbound) and 120 (122) s: two intervals. Flip
    // just after the third fetch, so each holds the old color for most of a minute.
    std::thread::sleep(Duration::from_secs(125));
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let flipped = Instant::now();

    // While they hold the old color: overdue; the defaults converged.
    std::thread::sleep(Duration::from_secs(30));
    let holding = report(&server);
    for r in &resolvers {
        let entry = class_of(&holding, &r.source);
        let expected = if r.clamps { "overdue" } else { "converged" };
        assert_eq!(
            entry["class"], expected,
            "{} 30 s after the flip: {entry}",
            r.name
        );
        if r.clamps {
            assert_eq!(entry["clamps"], true, "{}: {entry}", r.name);
        }
    }

    // Two minutes after the flip: the clampers converged late and are stragglers, with how
    // late; the defaults converged on time.
    std::thread::sleep(Duration::from_secs(120).saturating_sub(flipped.elapsed()));
    let later = report(&server);
    stop.store(true, Ordering::Relaxed);
    clients.join().unwrap();
    for r in &resolvers {
        let entry = class_of(&later, &r.source);
        let late_by = entry["record"]["late_by_ms"].as_u64().unwrap_or(0);
        if r.clamps {
            assert_eq!(entry["class"], "straggler", "{}: {entry}", r.name);
            assert!(
                (30_000..=60_000).contains(&late_by),
                "{} came back {late_by} ms late: {entry}",
                r.name
            );
            let ratio = entry["interval_ratio"].as_f64().unwrap_or(0.0);
            assert!(ratio > 8.0, "{}: ratio {ratio}", r.name);
        } else {
            assert_eq!(entry["class"], "converged", "{}: {entry}", r.name);
            assert!(late_by < 5_000, "{}: {entry}", r.name);
        }
    }
    assert_eq!(later["counts"]["straggler"], 3, "{later}");
    assert!(
        later["last_straggler_converged_ms"].as_u64().is_some(),
        "{later}"
    );
    let text = server.ctl_ok(&["stragglers", "app", "--all"]);
    eprintln!("{text}");
    assert!(text.contains("kept the old color"), "{text}");
}
