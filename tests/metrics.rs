//! The Prometheus endpoint.

mod common;

use common::{Server, Setup, scrape};

#[test]
fn metrics_follow_queries_and_flips() {
    let server = Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..Setup::default()
    });
    server.dig(&["app.svc.example.com", "A"]);
    server.dig(&["+tcp", "nothing.svc.example.com", "A"]);
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    server.dig(&["app.svc.example.com", "A"]);
    let text = scrape(&server, "/metrics");
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    for line in [
        "flipdns_queries_total{protocol=\"udp\",rcode=\"NOERROR\"} 2",
        "flipdns_queries_total{protocol=\"tcp\",rcode=\"NXDOMAIN\"} 1",
        "flipdns_answers_total{service=\"app\",color=\"blue\"} 1",
        "flipdns_answers_total{service=\"app\",color=\"green\"} 1",
        "flipdns_flips_total{service=\"app\",result=\"done\"} 1",
        "flipdns_phase{service=\"app\",phase=\"settling\"} 1",
        "flipdns_service_ttl_seconds{service=\"app\"} 5",
        "flipdns_live{service=\"app\",color=\"blue\"} 0",
        "flipdns_live{service=\"app\",color=\"green\"} 1",
        "flipdns_zone_serial{zone=\"svc.example.com.\"} 2026112602",
        "flipdns_snapshot_generation 2",
        "flipdns_build_info{version=\"",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(scrape(&server, "/other").starts_with("HTTP/1.0 404"));
}

#[test]
fn cutover_metrics_show_the_phase_and_the_deadline() {
    let setup = Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        services: common::short_service(""),
        ..Setup::default()
    };
    let server = Server::start_with(&setup);
    server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait"]);
    let text = scrape(&server, "/metrics");
    for line in [
        "flipdns_phase{service=\"app\",phase=\"preparing\"} 1",
        "flipdns_phase{service=\"app\",phase=\"steady\"} 0",
        "flipdns_service_ttl_seconds{service=\"app\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let value = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let deadline = value("flipdns_drain_deadline_seconds{service=\"app\"}");
    assert!(
        deadline.abs_diff(common::unix_ms() / 1000 + 4) <= 1,
        "deadline {deadline}"
    );
    assert!(value("flipdns_seconds_to_drain{service=\"app\"}") <= 4);
    server.ctl_ok(&["cancel", "app"]);
    let text = scrape(&server, "/metrics");
    assert!(
        text.contains("flipdns_flips_total{service=\"app\",result=\"cancelled\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flipdns_drain_deadline_seconds{service=\"app\"} 0"),
        "{text}"
    );
}
