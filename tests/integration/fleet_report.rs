//! The straggler report across the fleet (issue 23): flipdns as the hidden primary of real
//! NSD, Knot and BIND secondaries, each streaming what it answers (dnstap) to flipdns's
//! Unix socket; resolvers on their own loopback addresses ask only the secondaries (with
//! dig, and a real unbound in front of one of them). After a flip the report classifies
//! each as if it had asked flipdns, says which server it asked, and knows when a
//! secondary's stream is missing.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use crate::common;
use crate::common::Server;
use crate::common::resolvers::{Kind as ResolverKind, ask, start as start_resolver};
use crate::common::secondaries::{Kind, Secondary, free_port, streaming_primary};

const SERVICE: &str = "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 2\ncutover_ttl = 1\nsettle = \"0s\"\n";

fn report(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.ctl_ok(&["stragglers", "app", "--all", "--json"])).unwrap()
}

fn resolver<'r>(report: &'r serde_json::Value, ip: &str) -> Option<&'r serde_json::Value> {
    report["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resolver"] == ip)
}

fn streaming(report: &serde_json::Value, name: &str) -> bool {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == name && s["streaming"] == true)
}

/// `dig` of `name` at the secondary on `port`, from the loopback address `source`.
fn ask_from(port: u16, source: &str, name: &str) -> Vec<String> {
    common::dig(port, &["-b", source, name, "A"]).data("A")
}

fn serial(server: &Server) -> u32 {
    server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap()
}

#[test]
fn resolvers_that_ask_only_the_secondaries_are_in_the_report() {
    let ports = [free_port(), free_port(), free_port()];
    let server = streaming_primary(
        SERVICE,
        &[("nsd", ports[0]), ("knot", ports[1]), ("bind", ports[2])],
    );
    let socket = server.dir.path().join("run/dnstap.sock");
    let start = |kind: Kind, port: u16| {
        Secondary::start_streaming(kind, port, server.port, Some((&socket, kind.name())))
    };
    let nsd = start(Kind::Nsd, ports[0]);
    let knot = start(Kind::Knot, ports[1]);
    let mut bind = start(Kind::Bind, ports[2]);
    for secondary in [&nsd, &knot, &bind] {
        assert!(
            secondary
                .wait_serial(serial(&server), Duration::from_secs(20))
                .is_some(),
            "{} follows",
            secondary.kind.name()
        );
    }
    // Frames name their sender: each stream is known from its first frame.
    let in_streams = common::until(Duration::from_secs(20), || {
        for secondary in [&nsd, &knot, &bind] {
            secondary.dig(&["svc.example.com", "SOA"]);
        }
        let r = report(&server);
        ["nsd", "knot", "bind"].iter().all(|s| streaming(&r, s))
    });
    assert!(in_streams.is_some(), "{}", report(&server));
    // How long from a secondary's answer to the report seeing it (the sender flushes its
    // stream about once a second).
    let first_answers = [
        (&nsd, "127.0.0.26"),
        (&knot, "127.0.0.27"),
        (&bind, "127.0.0.28"),
    ];
    for (secondary, source) in first_answers {
        let asked = std::time::Instant::now();
        ask_from(secondary.port, source, "app.svc.example.com");
        let seen = common::until(Duration::from_secs(10), || {
            resolver(&report(&server), source).is_some()
        });
        assert!(
            seen.is_some(),
            "{} did not reach the report: {:#}",
            secondary.kind.name(),
            report(&server)
        );
        eprintln!(
            "{}: answer to report in {} ms",
            secondary.kind.name(),
            asked.elapsed().as_millis()
        );
    }
    std::thread::sleep(Duration::from_secs(3)); // a TTL of history before the flip

    let net = 40 + std::process::id() % 150;
    let unbound = start_resolver("unbound", ResolverKind::Unbound, (net, 24), knot.port, 0);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(
        ask_from(nsd.port, "127.0.0.21", "app.svc.example.com"),
        ["192.0.2.10"]
    );
    ask_from(knot.port, "127.0.0.22", "app.svc.example.com");
    ask_from(bind.port, "127.0.0.23", "app.svc.example.com");
    ask(&client, unbound.addr);

    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    std::thread::sleep(Duration::from_secs(3)); // past every 2 s TTL
    assert_eq!(
        ask_from(nsd.port, "127.0.0.21", "app.svc.example.com"),
        ["198.51.100.10"],
        "the secondary serves the flip"
    );
    ask_from(knot.port, "127.0.0.22", "blue.app.svc.example.com");
    ask(&client, unbound.addr);

    // The streams flush about once a second.
    let mut last = serde_json::Value::Null;
    let settled = common::until(Duration::from_secs(15), || {
        last = report(&server);
        let class = |ip: &str| resolver(&last, ip).map(|r| r["class"].clone());
        class("127.0.0.21") == Some("converged".into())
            && class("127.0.0.22") == Some("straggler".into())
            && class("127.0.0.23") == Some("silent".into())
            && class(&unbound.source) == Some("converged".into())
    });
    assert!(settled.is_some(), "{last:#}");
    let via = |ip: &str| resolver(&last, ip).unwrap()["via"].clone();
    assert_eq!(via("127.0.0.21"), serde_json::json!(["nsd"]));
    assert_eq!(via("127.0.0.22"), serde_json::json!(["knot"]));
    assert_eq!(via("127.0.0.23"), serde_json::json!(["bind"]));
    assert_eq!(via(&unbound.source), serde_json::json!(["knot"]));
    assert_eq!(last["complete"], true, "{last:#}");
    assert_eq!(last["straggler_queries"], 1, "{last:#}");
    let text = server.ctl_ok(&["stragglers", "app", "--all"]);
    eprintln!("{text}");
    assert!(text.contains("127.0.0.22"), "{text}");
    assert!(text.contains("(asked knot)"), "{text}");
    assert!(text.contains("secondary bind streams since"), "{text}");

    // A secondary whose stream stops: the report is incomplete and names it.
    bind.stop();
    let out = common::until(Duration::from_secs(10), || {
        let r = report(&server);
        r["complete"] == false && !streaming(&r, "bind")
    });
    assert!(out.is_some(), "{}", report(&server));
    let text = server.ctl_ok(&["stragglers", "app"]);
    assert!(
        text.contains("INCOMPLETE: secondary bind does not stream"),
        "{text}"
    );
    let metrics = common::scrape(&server, "/metrics");
    assert!(
        metrics.contains("flipdns_dnstap_streaming{secondary=\"bind\"} 0"),
        "{metrics}"
    );
    // Back: its stream is in again, since when it came back.
    bind.restart();
    let back = common::until(Duration::from_secs(20), || {
        bind.dig(&["svc.example.com", "SOA"]);
        streaming(&report(&server), "bind")
    });
    assert!(back.is_some(), "{}", report(&server));
    assert!(
        server.log().contains("dnstap stream out"),
        "{}",
        server.log()
    );
    drop(unbound);
    let _ = Path::new("");
}
