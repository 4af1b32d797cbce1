//! A release's addresses registered at run time (`ctl set-addresses`): the pipeline's
//! sequence, what survives restarts and reloads, every refusal changing nothing, and a real
//! secondary serving the new set.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::common::secondaries::{free_port, primary_config};
use crate::common::{self, BLUE_V4, Kind, Secondary, Server, Setup, scrape};

const NEW_GREEN: [&str; 2] = ["198.51.100.77", "198.51.100.78"];

fn a(server: &Server, name: &str) -> Vec<String> {
    let mut answer = server.dig(&[name, "A"]).data("A");
    answer.sort();
    answer
}

/// The state file and its journal, as bytes: what a refusal must leave untouched.
fn disk(server: &Server) -> (Vec<u8>, Vec<u8>) {
    let state = server.state_file();
    let mut journal = state.as_os_str().to_owned();
    journal.push(".journal");
    (
        std::fs::read(&state).unwrap_or_default(),
        std::fs::read(journal).unwrap_or_default(),
    )
}

fn set_green(server: &Server, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["set-addresses", "app", "green"];
    args.extend(NEW_GREEN);
    args.extend(extra);
    server.ctl(&args)
}

/// The pipeline: set green's new addresses while blue is live, smoke-test the color name,
/// restart (kill -9 and SIGTERM) in between, flip, and the service name answers them.
#[test]
fn the_release_pipeline_registers_green_then_flips_to_it() {
    let server = Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..Setup::default()
    });
    let serial_before = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    let out = set_green(&server, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(
            "app: green addresses set: 198.51.100.10 2001:db8::20 -> 198.51.100.77 198.51.100.78 (serial "
        ),
        "{stdout}"
    );
    assert_eq!(
        a(&server, "green.app.svc.example.com"),
        NEW_GREEN,
        "at once"
    );
    assert_eq!(
        a(&server, "app.svc.example.com"),
        BLUE_V4,
        "the service name: blue"
    );
    let serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    assert!(serial > serial_before, "the zone's serial rose: {serial}");

    let status = server.ctl_ok(&["status", "app"]);
    assert!(
        status.contains("  green 198.51.100.77 198.51.100.78 (set at runtime by ")
            && status.contains("  blue 192.0.2.10 192.0.2.11 2001:db8::10 (from config)"),
        "{status}"
    );
    let metrics = scrape(&server, "/metrics");
    assert!(
        metrics.contains("flipdns_addresses_runtime{service=\"app\",color=\"green\"} 1")
            && metrics.contains("flipdns_addresses_runtime{service=\"app\",color=\"blue\"} 0")
            && metrics.contains(
                "flipdns_addresses_set_timestamp_seconds{service=\"app\",color=\"green\"}"
            ),
        "{metrics}"
    );
    let history = server.ctl_ok(&["history", "app"]);
    assert!(
        history.contains(
            "-> done: addresses_set: green 198.51.100.10 2001:db8::20 -> 198.51.100.77 198.51.100.78"
        ),
        "{history}"
    );

    // Setting the same set again changes nothing.
    let again = set_green(&server, &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    let server = Server::start_in(server.kill9());
    assert_eq!(
        a(&server, "green.app.svc.example.com"),
        NEW_GREEN,
        "after kill -9"
    );
    let server = Server::start_in(server.sigterm());
    assert_eq!(
        a(&server, "green.app.svc.example.com"),
        NEW_GREEN,
        "after SIGTERM"
    );
    let export = common::run_ok(
        std::process::Command::new(common::BIN)
            .args(["state", "export", "--config"])
            .arg(server.config()),
    );
    assert!(
        String::from_utf8_lossy(&export.stdout).contains("198.51.100.77"),
        "state export carries the set"
    );

    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert_eq!(
        a(&server, "app.svc.example.com"),
        NEW_GREEN,
        "flipped to the new set"
    );
    assert_eq!(
        a(&server, "blue.app.svc.example.com"),
        BLUE_V4,
        "blue: the fallback"
    );
}

/// Every refusal names its reason and override and leaves the state file byte-identical.
#[test]
fn every_refused_set_changes_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let services = format!(
        "{}[service.health]\nkind = \"tcp\"\nport = {port}\ntimeout = \"300ms\"\n",
        common::short_service("")
    );
    let server = Server::start_with(&Setup {
        services,
        ..Setup::default()
    });
    let refused = |args: &[&str], code: i32, needle: &str| {
        let before = disk(&server);
        let out = server.ctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(disk(&server), before, "{args:?} changed the state file");
    };
    refused(
        &["set-addresses", "app", "blue", "192.0.2.99"],
        26,
        "blue is live, and its answers would change at once; set the idle color and flip, or `--force`",
    );
    refused(
        &[
            "set-addresses",
            "app",
            "green",
            "198.51.100.5",
            "198.51.100.5",
        ],
        10,
        "address 198.51.100.5 is listed twice for green",
    );
    refused(
        &["set-addresses", "app", "green", "198.51.100.5", "--check"],
        12,
        "unhealthy 198.51.100.5",
    );
    let many: Vec<String> = (1..=65).map(|i| format!("198.51.100.{i}")).collect();
    let mut args = vec!["set-addresses", "app", "green"];
    args.extend(many.iter().map(String::as_str));
    refused(&args, 10, "at most 64 fit in one UDP answer");

    // Over the admin socket: an empty set, an address that is none.
    for (request, needle) in [
        (
            r#"{"cmd":"set_addresses","service":"app","color":"green","addresses":[]}"#,
            "green has no addresses",
        ),
        (
            r#"{"cmd":"set_addresses","service":"app","color":"green","addresses":["198.51.100.300"]}"#,
            "invalid IP address syntax",
        ),
    ] {
        let before = disk(&server);
        let mut stream = UnixStream::connect(server.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        assert!(
            line.contains("\"kind\":\"invalid\"") && line.contains(needle),
            "{line}"
        );
        assert_eq!(disk(&server), before, "{request} changed the state file");
    }

    // A flip to green pending (its health gate fails at the deadline, later): green's set is
    // what the cutover is about.
    server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait", "--force"]);
    refused(
        &["set-addresses", "app", "green", "198.51.100.5"],
        14,
        "a cutover of app to green is pending",
    );
    // Settling on green: still the cutover's color.
    server.ctl_ok(&["flip", "app", "--to", "green", "--now", "--force"]);
    refused(
        &["set-addresses", "app", "green", "198.51.100.5", "--force"],
        14,
        "the flip of app to green is settling",
    );
    assert_eq!(
        a(&server, "app.svc.example.com"),
        ["198.51.100.10"],
        "nothing refused reached an answer"
    );
}

/// A reload of an unchanged config keeps a runtime set; a config whose list for the color
/// changed wins, and the reload says so.
#[test]
fn the_config_wins_only_when_its_list_changes() {
    let server = Server::start();
    assert!(set_green(&server, &[]).status.success());
    let reloaded = server.ctl_ok(&["reload"]);
    assert!(!reloaded.contains("addresses:"), "{reloaded}");
    assert_eq!(a(&server, "green.app.svc.example.com"), NEW_GREEN, "kept");

    let config = std::fs::read_to_string(server.config()).unwrap();
    std::fs::write(
        server.config(),
        config.replace(
            "green = [\"198.51.100.10\", \"2001:db8::20\"]",
            "green = [\"198.51.100.20\"]",
        ),
    )
    .unwrap();
    let reloaded = server.ctl_ok(&["reload"]);
    assert!(
        reloaded
            .contains("addresses: app green: the config's list changed since the runtime set by ")
            && reloaded.contains("green answers the config's now: 198.51.100.20"),
        "{reloaded}"
    );
    assert_eq!(a(&server, "green.app.svc.example.com"), ["198.51.100.20"]);
    let status = server.ctl_ok(&["status", "app"]);
    assert!(
        status.contains("  green 198.51.100.20 (from config)"),
        "{status}"
    );
}

/// A real Knot secondary serves the new set: the reply waits for it, as for a flip.
#[test]
fn a_secondary_serves_the_new_set() {
    let port = free_port();
    let dir = Setup::default().write();
    let config = dir.path().join("flipdns.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{}\"]", free_port()),
    );
    let tables = primary_config(dir.path(), &[("knot", port)]);
    std::fs::write(&config, format!("{text}\n{tables}\n")).unwrap();
    let server = Server::start_in(dir);
    let knot = Secondary::start(Kind::Knot, port, server.port);
    let serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    assert!(
        knot.wait_serial(serial, Duration::from_secs(20)).is_some(),
        "{}",
        knot.log()
    );
    let out = set_green(&server, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("app: secondary knot serves serial"),
        "{stdout}"
    );
    let mut served = knot.dig(&["green.app.svc.example.com", "A"]).data("A");
    served.sort();
    assert_eq!(served, NEW_GREEN, "knot serves the new set");
}
