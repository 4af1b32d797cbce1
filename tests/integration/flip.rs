//! Flipping a service: dig shows the new color and serial, and the flip survives kill -9.

use crate::common::{BLUE_V4, GREEN_V4, Server};

#[test]
fn a_flip_changes_the_answer_and_raises_the_serial() {
    let server = Server::start();
    let serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    assert_eq!(serial, 2026112601, "the zone file's serial at first start");

    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert!(
        out.starts_with("app: blue -> green (flip 1, serial 2026112602); TTL 5 s until "),
        "{out}"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "AAAA"]).data("AAAA"),
        ["2001:db8::20"]
    );
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(serial + 1)
    );
    // The color names do not move.
    assert_eq!(
        server.dig(&["blue.app.svc.example.com", "A"]).data("A"),
        BLUE_V4
    );
    assert!(
        server
            .log()
            .contains("flipped service=app from=blue to=green flips=1 serial=2026112602"),
        "{}",
        server.log()
    );

    server.ctl_ok(&["flip", "app", "--to", "blue", "--now"]);
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).data("A"), BLUE_V4);
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(serial + 2)
    );
}

#[test]
fn a_flip_to_the_live_color_changes_nothing() {
    let server = Server::start();
    let out = server.ctl_ok(&["flip", "app", "--to", "blue", "--now"]);
    assert_eq!(out, "app: already blue, nothing changed (0 flips so far)\n");
    let out = server.ctl_ok(&["flip", "app", "--to", "blue"]);
    assert_eq!(out, "app: already blue, nothing changed (0 flips so far)\n");
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(2026112601)
    );
}

#[test]
fn an_acknowledged_flip_survives_kill_9() {
    let server = Server::start();
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let dir = server.kill9();
    // The stale socket file is still there; the restart must find it dead and replace it.
    assert!(dir.path().join("run/flipdns.sock").exists());
    let server = Server::start_in(dir);
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(2026112602)
    );
    assert!(
        server.log().contains("removing stale admin socket"),
        "{}",
        server.log()
    );
    let status = server.ctl_ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["services"][0]["live"], "green");
    assert_eq!(status["services"][0]["flips"], 1);
}

#[test]
fn the_state_file_wins_over_the_config() {
    let server = Server::start();
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let dir = server.kill9();
    // The config still says blue; the state file says green, and green it stays.
    let config = std::fs::read_to_string(dir.path().join("flipdns.toml")).unwrap();
    assert!(config.contains("live = \"blue\""));
    let server = Server::start_in(dir);
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
}

#[test]
fn a_corrupt_state_file_stops_the_start_and_names_the_file() {
    let server = Server::start();
    let dir = server.kill9();
    let state = dir.path().join("run/state.json");
    std::fs::write(
        &state,
        "{\"version\": 1, \"services\": {\"app\": {\"live\": \"gre",
    )
    .unwrap();
    let Err((_, log)) = Server::try_start_in(dir) else {
        panic!("started on a corrupt state file")
    };
    assert!(
        log.contains(&format!("state file {}: line 1:", state.display())),
        "{log}"
    );
    assert!(log.contains("will not guess the live colors"), "{log}");
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let server = Server::start();
    let socket = server.socket();
    assert!(socket.exists());
    let status = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert!(!socket.exists(), "the admin socket is removed on shutdown");
}
