//! Reload: SIGHUP and `flipdns ctl reload` apply a valid config in one step, and a broken one
//! changes nothing.

use std::time::Duration;

use crate::common;
use crate::common::{GREEN_V4, SERVICES, Server, Setup, ZONE};

const API: &str = "[[service]]\nname = \"api\"\nblue = [\"192.0.2.20\"]\ngreen = [\"198.51.100.20\"]\nlive = \"green\"\nttl = 60\ncutover_ttl = 5\nsettle = \"1m\"\n";

fn write(server: &Server, file: &str, text: &str) {
    std::fs::write(server.dir.path().join(file), text).unwrap();
}

fn config(server: &Server, services: &str) -> String {
    Setup {
        services: services.into(),
        ..Setup::default()
    }
    .config()
    .replace("[server]\n", &format!("[server]\n# {}\n", server.port))
}

#[test]
fn a_reload_adds_removes_and_changes_services_and_keeps_colors() {
    let server = Server::start_with(&Setup {
        services: format!("{SERVICES}{API}"),
        ..Setup::default()
    });
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    server.ctl_ok(&["prepare", "api"]);
    let serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();

    // api goes; web arrives; app's green set changes.
    let web = API
        .replace("\"api\"", "\"web\"")
        .replace("192.0.2.20", "192.0.2.30");
    let app = SERVICES.replace(
        "[\"198.51.100.10\", \"2001:db8::20\"]",
        "[\"198.51.100.11\", \"2001:db8::21\"]",
    );
    write(
        &server,
        "flipdns.toml",
        &config(&server, &format!("{app}{web}")),
    );
    let out = server.ctl_ok(&["reload"]);
    assert_eq!(
        out.lines().next().unwrap(),
        "reloaded: added web (green live, from the config); removed api; changed app",
        "{out}"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        ["198.51.100.11"],
        "still green, with green's new address"
    );
    assert_eq!(
        server.dig(&["web.svc.example.com", "A"]).data("A"),
        ["198.51.100.20"],
        "a new service starts on its configured color"
    );
    assert_eq!(server.dig(&["api.svc.example.com", "A"]).status, "NXDOMAIN");
    let new_serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    assert_eq!(new_serial, serial + 1, "what the zone serves changed");
    let status = common::service_status(&server, "app");
    assert_eq!(status["live"], "green");
    assert_eq!(
        status["phase"]["name"], "settling",
        "the cutover of an unchanged or changed service goes on"
    );
    assert!(server.log().contains("reloaded "), "{}", server.log());

    // api comes back with the state it had: preparing.
    write(
        &server,
        "flipdns.toml",
        &config(&server, &format!("{app}{web}{API}")),
    );
    server.ctl_ok(&["reload"]);
    assert_eq!(
        common::service_status(&server, "api")["phase"]["name"],
        "preparing"
    );
    let out = server.ctl_ok(&["flip", "api", "--to", "blue", "--now"]);
    assert!(
        out.starts_with("api: green -> blue"),
        "the re-added service has a working cutover task: {out}"
    );
}

#[test]
fn a_broken_config_changes_nothing_and_names_each_problem() {
    let server = Server::start();
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let before = server.dig(&["svc.example.com", "SOA"]).soa_serial();
    let broken = config(&server, &SERVICES.replace("ttl = 300", "ttl = \"long\""))
        .replace("state_file", "stat_file");
    write(&server, "flipdns.toml", &broken);
    let out = server.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = server.config().display().to_string();
    assert!(
        err.contains("reload refused, still serving the previous configuration"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:")),
        "problems name the file and line: {err}"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
    assert_eq!(server.dig(&["svc.example.com", "SOA"]).soa_serial(), before);

    // A bad zone file, through SIGHUP: the log names the file and line.
    write(&server, "flipdns.toml", &config(&server, SERVICES));
    write(
        &server,
        "svc.zone",
        &ZONE.replace("ns1     IN A    192.0.2.53", "ns1     IN A    192.0.2"),
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let zone = server.dir.path().join("svc.zone").display().to_string();
    assert!(
        server.wait_for_log(
            &format!("reload refused: {zone}:5: bad A record"),
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
    assert_eq!(
        server.dig(&["ns1.svc.example.com", "A"]).data("A"),
        ["192.0.2.53"],
        "the old zone is still served"
    );
}

#[test]
fn serials_never_go_backwards_and_server_changes_wait_for_a_restart() {
    let server = Server::start();
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    // A new static record and a lower serial in the zone file: the serial still goes up.
    write(
        &server,
        "svc.zone",
        &format!("{}new IN TXT \"x\"\n", ZONE.replace("2026112601", "5")),
    );
    let out = server.ctl_ok(&["reload"]);
    assert!(
        out.contains(&format!("zone svc.example.com. serial {}", serial + 1)),
        "{out}"
    );
    assert_eq!(
        server.dig(&["new.svc.example.com", "TXT"]).data("TXT"),
        ["\"x\""]
    );
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(serial + 1)
    );
    // Nothing changed: no new serial.
    server.ctl_ok(&["reload"]);
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(serial + 1)
    );
    // A listen change needs a restart; the running sockets stay.
    let moved = config(&server, SERVICES).replace("127.0.0.1:0", "127.0.0.1:1");
    write(&server, "flipdns.toml", &moved);
    let out = server.ctl_ok(&["reload"]);
    assert!(
        out.contains("server.listen changed: it takes effect at the next restart"),
        "{out}"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
}
