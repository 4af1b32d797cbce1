//! The Prometheus endpoint.

use crate::common;
use crate::common::{Server, Setup, scrape};

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
        "flipdns_responses_total{protocol=\"udp\",rcode=\"NOERROR\"} 2",
        "flipdns_responses_total{protocol=\"tcp\",rcode=\"NXDOMAIN\"} 1",
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
        "flipdns_config_last_reload_successful 1",
        "flipdns_requests_total{qtype=\"A\"} 3",
        "process_start_time_seconds ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(scrape(&server, "/other").starts_with("HTTP/1.0 404"));
}

#[test]
fn healthz_and_ready_answer_get_and_head_as_load_balancers_expect() {
    use crate::common::request;
    let server = Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..Setup::default()
    });
    for path in ["/healthz", "/ready"] {
        let get = request(&server, "GET", path);
        assert!(get.starts_with("HTTP/1.0 200 OK"), "{get}");
        let head = request(&server, "HEAD", path);
        assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    }
    let head = request(&server, "HEAD", "/metrics");
    assert!(
        head.contains("Content-Length: ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(request(&server, "POST", "/ready").starts_with("HTTP/1.0 405"));
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
    let deadline = value("flipdns_drain_deadline_timestamp_seconds{service=\"app\"}");
    assert!(
        deadline.abs_diff(common::unix_ms() / 1000 + 4) <= 1,
        "deadline {deadline}"
    );
    assert!(value("flipdns_drain_remaining_seconds{service=\"app\"}") <= 4);
    assert!(
        !text.contains("flipdns_last_flip_timestamp_seconds"),
        "no flip yet"
    );
    server.ctl_ok(&["cancel", "app"]);
    let text = scrape(&server, "/metrics");
    assert!(
        text.contains("flipdns_flips_total{service=\"app\",result=\"cancelled\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("flipdns_drain_deadline_timestamp_seconds{"),
        "absent unless preparing: {text}"
    );
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let text = scrape(&server, "/metrics");
    for name in [
        "flipdns_last_flip_timestamp_seconds{service=\"app\"} ",
        "flipdns_settle_end_timestamp_seconds{service=\"app\"} ",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    std::fs::write(server.config(), "not toml [").unwrap();
    assert!(!server.ctl(&["reload"]).status.success());
    let text = scrape(&server, "/metrics");
    assert!(
        text.contains("flipdns_config_last_reload_successful 0"),
        "{text}"
    );
}

#[test]
fn the_metrics_endpoint_bounds_requests_and_scrapers() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let server = Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..Setup::default()
    });
    let log = server.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap()
        .to_string();
    let closed_without_reply = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(7)))
            .unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        reply.is_empty()
    };
    // A request head over 8 KiB.
    let mut long = TcpStream::connect(&addr).unwrap();
    let _ = long.write_all(&vec![b'x'; 9000]);
    assert!(
        closed_without_reply(&mut long),
        "an over-long request is not answered"
    );
    // Eight scrapers that never finish their request hold every place; a ninth is closed.
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut ninth = TcpStream::connect(&addr).unwrap();
    let _ = ninth.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        closed_without_reply(&mut ninth),
        "no place for a ninth scraper"
    );
    // The stalled ones are dropped after the 5 s timeout, and scraping works again.
    let started = std::time::Instant::now();
    let mut stalled = held.into_iter().next().unwrap();
    assert!(closed_without_reply(&mut stalled));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "closed by the timeout, not at once"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(scrape(&server, "/metrics").starts_with("HTTP/1.0 200 OK"));
}

const ALERTS: &str = "contrib/prometheus/flipdns-alerts.yml";
const DASHBOARD: &str = "contrib/grafana/flipdns-dashboard.json";

/// The metric names in PromQL `text`: words starting `flipdns_` or `process_`.
fn metric_names(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("flipdns_") || w.starts_with("process_"))
        .collect()
}

/// The shipped alert rules pass promtool, the shipped Grafana dashboard is valid JSON, and
/// both name only metrics a real server exports (a pending flip and a secondary that never
/// answers make the drain and fleet metrics appear).
#[test]
fn the_shipped_alert_rules_and_dashboard_name_real_metrics() {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", ALERTS])
        .output()
        .unwrap_or_else(|e| {
            panic!("`promtool` is not runnable ({e}): install it with `apt-get install -y prometheus` (or run ./tests/run)")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        extra: "[[secondary]]\nname = \"ns-dead\"\naddress = \"127.0.0.1:9\"\n".into(),
        ..Setup::default()
    });
    server.dig(&["app.svc.example.com", "A"]);
    // A flip waiting for its drain: the deadline metrics appear only then.
    server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait", "--force"]);
    let text = scrape(&server, "/metrics");
    let exported = |name: &str| {
        text.lines().any(|l| {
            l.starts_with(&format!("# TYPE {name} "))
                || l.starts_with(&format!("{name}{{"))
                || l.starts_with(&format!("{name} "))
        })
    };

    let rules = std::fs::read_to_string(ALERTS).unwrap();
    let named = metric_names(&rules);
    assert!(named.len() >= 8, "{named:?}");
    for name in named {
        assert!(
            exported(name),
            "{ALERTS} names {name}, which /metrics does not export:\n{text}"
        );
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let named = metric_names(expr);
            assert!(!named.is_empty(), "{expr}");
            for name in named {
                assert!(
                    exported(name),
                    "{DASHBOARD}: {expr} names {name}, which /metrics does not export:\n{text}"
                );
            }
        }
    }
}
