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
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
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
    assert!(scrape(&server, "/other").starts_with("HTTP/1.1 404"));
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
        assert!(get.starts_with("HTTP/1.1 200 OK"), "{get}");
        let head = request(&server, "HEAD", path);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    }
    let head = request(&server, "HEAD", "/metrics");
    assert!(
        head.to_lowercase().contains("content-length: ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(request(&server, "POST", "/ready").starts_with("HTTP/1.1 405"));
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
    // A request head over 8 KiB: refused (431) and closed, never read on.
    let mut long = TcpStream::connect(&addr).unwrap();
    let _ = long
        .write_all(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(9000)).as_bytes());
    long.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    let mut reply = String::new();
    let _ = long.read_to_string(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "an over-long request is refused: {reply}"
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
    assert!(scrape(&server, "/metrics").starts_with("HTTP/1.1 200 OK"));
}

const ALERTS: &str = "contrib/prometheus/flipdns-alerts.yml";
const DASHBOARD: &str = "contrib/grafana/flipdns-dashboard.json";

/// The metric names in PromQL `text`: words starting `flipdns_` or `process_`.
fn metric_names(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("flipdns_") || w.starts_with("process_"))
        .collect()
}

/// The shipped alert rules pass promtool and name only metrics a real server exports (a
/// pending flip and a secondary that never answers make the drain and fleet metrics
/// appear). The dashboard's queries run in a real Prometheus (below).
#[test]
fn the_shipped_alert_rules_name_real_metrics() {
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
}

/// Labels whose values are a fixed set: each family's HELP names every value it takes.
const ENUMERATED: [&str; 11] = [
    "protocol", "rcode", "qtype", "reason", "result", "phase", "color", "class", "error", "why",
    "action",
];

/// A scrape without `Accept: application/openmetrics-text` gets the classic text format,
/// which `promtool check metrics` passes; with it, OpenMetrics. Every family's HELP names
/// every value of its enumerated labels; the query-duration histogram and the config's
/// load time are there from the start.
#[test]
fn metrics_pass_promtool_and_say_what_their_labels_mean() {
    let server = Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        extra:
            "[[secondary]]\nname = \"ns-dead\"\naddress = \"127.0.0.1:9\"\n[rrl]\nenabled = true\n"
                .into(),
        ..Setup::default()
    });
    server.dig(&["app.svc.example.com", "A"]);
    server.dig(&["+tcp", "nothing.svc.example.com", "TXT"]);
    server.ctl_ok(&[
        "flip",
        "app",
        "--to",
        "green",
        "--now",
        "--no-wait-secondaries",
    ]);
    let response = scrape(&server, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        !body.contains("# EOF"),
        "no OpenMetrics end marker in the classic format"
    );

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install -y prometheus, or ./tests/run)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    for line in [
        "# TYPE flipdns_query_duration_seconds histogram",
        "flipdns_query_duration_seconds_bucket{le=\"+Inf\"} ",
        "flipdns_query_duration_seconds_count ",
        "flipdns_config_last_reload_success_timestamp_seconds ",
    ] {
        assert!(body.contains(line), "missing {line} in\n{body}");
    }
    let count: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("flipdns_query_duration_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= 2, "each answer is timed: {count}");

    // Every enumerated label value appears in its family's HELP.
    let mut help: std::collections::HashMap<&str, &str> = Default::default();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap();
            help.insert(name, text);
            continue;
        }
        let Some((name, labels)) = line.split_once('{') else {
            continue;
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| help.contains_key(f)))
            .unwrap_or(name);
        let text = help
            .get(family)
            .unwrap_or_else(|| panic!("{name} has no HELP"));
        let labels = labels.split('}').next().unwrap();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (label, value) = pair.split_once("=\"").unwrap();
            let value = value.trim_end_matches('"');
            if ENUMERATED.contains(&label) {
                assert!(
                    text.contains(value),
                    "the HELP of {family} does not name {label}={value}: {text}"
                );
            }
        }
    }

    let om = common::request_with(
        &server,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    );
    assert!(
        om.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{om}"
    );
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert!(om.contains("# TYPE flipdns_responses counter"), "{om}");
}

/// `GET path` from `addr` over HTTP/1.0 (the server closes after the body); the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Percent-encodes `text` for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus scrapes a real server (as it does: asking for OpenMetrics), evaluates
/// the shipped alert rules without an error, and answers every query of the shipped
/// dashboard (panels and the flips annotation) with data: a flip, a pending flip, a health
/// check that fails and a secondary that never answers make every panel's series appear.
#[test]
fn the_shipped_dashboard_and_alert_rules_run_in_a_real_prometheus() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_port = closed.local_addr().unwrap().port();
    drop(closed);
    let services = format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 300\ncutover_ttl = 5\nsettle = \"10m\"\n[service.health]\nkind = \"tcp\"\nport = {health_port}\ninterval = \"1s\"\n{}",
        common::short_service("").replace("\"app\"", "\"api\"")
    );
    let server = Server::start_with(&Setup {
        services,
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        extra: "[[secondary]]\nname = \"ns-dead\"\naddress = \"127.0.0.1:9\"\n".into(),
        ..Setup::default()
    });
    server.dig(&["app.svc.example.com", "A"]);
    server.ctl_ok(&[
        "flip",
        "api",
        "--to",
        "green",
        "--now",
        "--no-wait-secondaries",
    ]);
    server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait", "--force"]);
    let log = server.log();
    let target = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let port = common::secondaries::free_port();
    let alerts = std::fs::canonicalize(ALERTS).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: flipdns\n    static_configs:\n      - targets: [\"{target}\"]\n",
            alerts.display()
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prometheus (apt-get install -y prometheus, or ./tests/run)");
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = |expr: &str| -> serde_json::Value {
        let body = http_get(api, &format!("/api/v1/query?query={}", encode(expr)));
        // Not JSON while Prometheus starts ("Service Unavailable"): Null, asked again.
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    };
    // Three scrapes at least, so that rate() has samples.
    let scraped = common::until(std::time::Duration::from_secs(30), || {
        std::net::TcpStream::connect(api).is_ok()
            && query("count_over_time(flipdns_build_info[1m])")["data"]["result"][0]["value"][1]
                .as_str()
                .is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 3)
    });
    if scraped.is_none() {
        let _ = prometheus.kill();
        let out = prometheus.wait_with_output().unwrap();
        panic!(
            "prometheus did not scrape: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push((
                panel["title"].as_str().unwrap().into(),
                target["expr"].as_str().unwrap().into(),
            ));
        }
    }
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    let flips = annotations
        .iter()
        .find(|a| a["name"] == "Flips")
        .expect("a flips annotation");
    // A flip Prometheus sees happen (the ones above came before its first scrape).
    server.ctl_ok(&[
        "flip",
        "api",
        "--to",
        "blue",
        "--now",
        "--force",
        "--no-wait-secondaries",
    ]);
    let annotation = flips["expr"].as_str().unwrap().replace("$instance", ".*");
    let marked = common::until(std::time::Duration::from_secs(15), || {
        query(&annotation)["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    assert!(
        marked.is_some(),
        "the flips annotation marks the flip: {annotation}"
    );
    let kinds: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.iter().filter(|&&k| k == "state-timeline").count() >= 2,
        "color and phase as state timelines: {kinds:?}"
    );
    for (title, expr) in &exprs {
        let expr = expr.replace("$instance", ".*");
        let answer = query(&expr);
        assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
        assert!(
            answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{title}: {expr} has no data: {answer}"
        );
    }

    // Every alert rule evaluates without an error.
    let rules: serde_json::Value = serde_json::from_str(&http_get(api, "/api/v1/rules")).unwrap();
    let mut evaluated = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            evaluated += 1;
        }
    }
    assert!(evaluated >= 10, "{rules}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
