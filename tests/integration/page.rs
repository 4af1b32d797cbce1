//! The watch page in a real browser (headless Chromium): the real binary as the hidden
//! primary of a real Knot secondary that streams its answers (dnstap), resolvers on their
//! own loopback addresses asking the secondary, a TTL-aware cutover and a flip; then the
//! page loaded, its DOM read after the script ran, and screenshots taken at desktop and
//! phone widths (in `target/test-artifacts/`). And the page's JSON is the admin protocol's,
//! nothing on it changes state, and a flood of loads leaves DNS answering.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::secondaries::{Kind, Secondary, free_port, streaming_primary};
use crate::common::{Server, Setup, chromium, request, request_with};

const SERVICE: &str = "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\", \"192.0.2.11\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"30s\"\n";

/// `http://ADDR` of the metrics listener, from the log.
fn site(server: &Server) -> String {
    let log = server.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .expect("the metrics address in the log");
    format!("http://{addr}")
}

/// Where the screenshots go: kept after the test, for a person to look at.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-artifacts"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn serial(server: &Server) -> u32 {
    server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap()
}

/// `data-points` of the first element with `marker` in `dom` (a chart's series).
fn points(dom: &str, chart: &str) -> Vec<usize> {
    let section = dom
        .split(&format!("id=\"{chart}\""))
        .nth(1)
        .and_then(|rest| rest.split("</figure>").next())
        .unwrap_or_default();
    section
        .split("data-points=\"")
        .skip(1)
        .filter_map(|p| p.split('"').next()?.parse().ok())
        .collect()
}

#[test]
fn the_page_draws_a_cutover_in_a_real_browser() {
    let port = free_port();
    let server = streaming_primary(SERVICE, &[("knot", port)]);
    let socket = server.dir.path().join("run/dnstap.sock");
    let knot = Secondary::start_streaming(Kind::Knot, port, server.port, Some((&socket, "knot")));
    assert!(
        knot.wait_serial(serial(&server), Duration::from_secs(20))
            .is_some(),
        "{}",
        knot.log()
    );
    let ask = |source: &str, name: &str| common::dig(port, &["-b", source, name, "A"]).data("A");
    // Resolvers ask the secondary, a while before the cutover.
    for i in 11..16 {
        ask(&format!("127.0.0.{i}"), "app.svc.example.com");
    }
    std::thread::sleep(Duration::from_secs(2));

    // A TTL-aware cutover to green, followed to the end; then a flip back at once.
    server.ctl_ok(&["flip", "app", "--to", "green"]);
    for i in 11..14 {
        ask(&format!("127.0.0.{i}"), "app.svc.example.com");
    }
    server.ctl_ok(&["flip", "app", "--to", "blue", "--now", "--force"]);
    let now = serial(&server);
    assert!(
        knot.wait_serial(now, Duration::from_secs(20)).is_some(),
        "{}",
        knot.log()
    );
    // After the flip: some resolvers come back, one keeps asking for the old color's name.
    for round in 0..4 {
        ask("127.0.0.11", "app.svc.example.com");
        ask("127.0.0.12", "green.app.svc.example.com");
        if round < 3 {
            std::thread::sleep(Duration::from_millis(1500));
        }
    }
    // The report has a timeline of a few points, and the stream is in.
    let streamed = common::until(Duration::from_secs(20), || {
        let report: Value =
            serde_json::from_str(&server.ctl_ok(&["stragglers", "app", "--all", "--json"]))
                .unwrap();
        report["timeline"].as_array().is_some_and(|t| t.len() >= 4)
            && report["streams"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == "knot" && s["streaming"] == true)
    });
    assert!(
        streamed.is_some(),
        "{}",
        server.ctl_ok(&["stragglers", "app", "--all"])
    );

    let url = format!("{}/#service=app", site(&server));
    let dom = chromium(&["--dump-dom", &url]);
    assert!(
        dom.contains("data-ready=\"true\""),
        "the script ran and fetched:\n{dom}"
    );
    assert!(
        dom.contains("data-service=\"app\" data-live=\"blue\" data-phase=\"settling\""),
        "the service row shows the new color and the phase:\n{dom}"
    );
    assert!(
        dom.contains(&format!("data-secondary=\"knot\" data-serial=\"{now}\"")),
        "the fleet panel shows the secondary's serial {now}:\n{dom}"
    );
    assert!(dom.contains(">in<"), "knot's dnstap stream is in:\n{dom}");
    let ttl = points(&dom, "ttl-chart");
    // Normal, short from the scheduled flip, still short now (settling).
    assert!(
        ttl.first().is_some_and(|&n| n >= 3),
        "the TTL steps: {ttl:?}\n{dom}"
    );
    let decay = points(&dom, "decay-chart");
    assert_eq!(decay.len(), 5, "a line per class: {decay:?}");
    assert!(decay.iter().all(|&n| n >= 4), "{decay:?}");
    let old = points(&dom, "old-chart");
    assert!(
        old.first().is_some_and(|&n| n >= 3),
        "old-color answers a second: {old:?}"
    );
    // The TTL chart marks when the secondary took the latest change.
    let served = format!("knot serves {now}");
    for mark in [
        "flip green \u{2192} blue",
        "old color drained",
        "settle ends",
        &served,
    ] {
        assert!(dom.contains(mark), "the mark {mark:?}:\n{dom}");
    }

    // Screenshots, desktop and phone, light and dark, for a person to look at.
    let shots = artifacts();
    for (name, size, extra) in [
        ("page-desktop.png", "1280,1700", None),
        ("page-phone.png", "390,2400", None),
        (
            "page-desktop-dark.png",
            "1280,1700",
            Some("--force-dark-mode"),
        ),
        ("page-phone-dark.png", "390,2400", Some("--force-dark-mode")),
    ] {
        let path = shots.join(name);
        let _ = std::fs::remove_file(&path);
        let mut args = vec![
            format!("--window-size={size}"),
            format!("--screenshot={}", path.display()),
        ];
        args.extend(extra.map(String::from));
        args.push(url.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chromium(&args);
        let png = std::fs::read(&path).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 20_000,
            "{name}: {} bytes",
            png.len()
        );
    }
}

#[test]
fn the_page_json_is_the_admin_protocol_and_nothing_on_it_changes_state() {
    let setup = Setup {
        services: SERVICE.into(),
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        ..Setup::default()
    };
    let server = Server::start_with(&setup);
    server.ctl_ok(&["flip", "app", "--to", "green", "--now", "--force"]);
    server.dig(&["app.svc.example.com", "A"]);
    let body = |response: &str| {
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    };
    let json = |path: &str| -> Value {
        let response = request(&server, "GET", path);
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-security-policy: default-src 'self'"),
            "{response}"
        );
        serde_json::from_str(&body(&response)).unwrap_or_else(|e| panic!("{path}: {e}: {response}"))
    };
    // The same typed replies as the admin protocol, at the same moment.
    // (The dig's answer reaches the ledger a moment later: compare once it has.)
    let mut pair = (Value::Null, Value::Null);
    let same = common::until(Duration::from_secs(5), || {
        pair = (
            json("/v1/services")["status"].clone(),
            serde_json::from_str(&server.ctl_ok(&["--json", "status"])).unwrap(),
        );
        pair.0 == pair.1
    });
    assert!(same.is_some(), "{:#}\n{:#}", pair.0, pair.1);
    let history = json("/v1/history?service=app");
    let socket: Value =
        serde_json::from_str(&server.ctl_ok(&["--json", "history", "app"])).unwrap();
    assert_eq!(
        history["history"], socket,
        "the page's reads are not audited"
    );
    let report = json("/v1/services/app/stragglers?all=true");
    let socket: Value =
        serde_json::from_str(&server.ctl_ok(&["--json", "stragglers", "app", "--all"])).unwrap();
    // The report's times are its monotonic clock turned into wall-clock time at each
    // report, so two reports may differ by a millisecond in every `_ms` field.
    for key in ["service", "counts", "resolvers", "flip", "drained_at_ms"] {
        let (ours, theirs) = (
            serde_json::json!({ key: report["stragglers"][key] }),
            serde_json::json!({ key: socket[key] }),
        );
        assert!(
            alike(&ours, &theirs),
            "{key}: {} vs {}",
            report["stragglers"][key],
            socket[key]
        );
    }
    // The page and its assets under the policy; no inline script in it.
    let page = request(&server, "GET", "/");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<script src=\"/assets/page.js\""),
        "{page}"
    );
    assert!(!body(&page).contains("<script>"), "no inline script");
    let script = request(&server, "GET", "/assets/page.js");
    assert!(
        script.contains("content-type: text/javascript")
            && script.contains("content-security-policy"),
        "{script}"
    );

    // Nothing changes state here: other methods, and the API's changes, are refused.
    let before = std::fs::read(server.state_file()).unwrap();
    for (method, path) in [
        ("POST", "/"),
        ("PUT", "/v1/services/app"),
        ("DELETE", "/v1/services/app"),
        ("POST", "/v1/services/app/flip"),
        ("POST", "/v1/reload"),
    ] {
        let response = request_with(&server, method, path, "Content-Type: application/json\r\n");
        assert!(
            response.starts_with("HTTP/1.1 405"),
            "{method} {path}: {response}"
        );
        assert!(response.contains("allow: GET, HEAD"), "{response}");
    }
    for path in ["/v1/services/app/events", "/v1/services/app/flip?to=blue"] {
        let response = request(&server, "GET", path);
        assert!(response.starts_with("HTTP/1.1 40"), "{path}: {response}");
    }
    assert_eq!(std::fs::read(server.state_file()).unwrap(), before);
    assert_eq!(service_live(&server), "green");

    // A flood of page loads from many threads: bounded (each either served or closed at
    // once), and DNS answers throughout.
    let started = Instant::now();
    let served = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                for i in 0..100 {
                    let path = [
                        "/",
                        "/v1/services",
                        "/assets/page.js",
                        "/v1/services/app/stragglers",
                    ][i % 4];
                    let addr = site(&server).trim_start_matches("http://").to_string();
                    if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                        use std::io::{Read, Write};
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                        let _ = stream.write_all(
                            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        );
                        let mut text = String::new();
                        let _ = stream.read_to_string(&mut text);
                        if text.starts_with("HTTP/1.1 200") {
                            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        for _ in 0..20 {
            assert!(
                server
                    .dig(&["app.svc.example.com", "A", "+tries=1", "+time=2"])
                    .data("A")
                    .contains(&"198.51.100.10".to_string())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let served = served.into_inner();
    assert!(served > 100, "{served} of 1,600 served");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(request(&server, "GET", "/metrics").starts_with("HTTP/1.1 200"));
}

fn service_live(server: &Server) -> String {
    common::service_status(server, "app")["live"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Whether two JSON values are equal, but for times (`*_ms`) that may differ by 5 ms.
fn alike(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(key, x)| {
                    b.get(key).is_some_and(|y| match (x.as_u64(), y.as_u64()) {
                        (Some(x), Some(y)) if key.ends_with("_ms") => x.abs_diff(y) <= 5,
                        _ => alike(x, y),
                    })
                })
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| alike(x, y))
        }
        (Value::Number(x), Value::Number(y)) => x == y,
        _ => a == b,
    }
}
