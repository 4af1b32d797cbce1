//! The cutover across restarts and refusals, each test one scenario a new user hit (issue 9):
//! the drain kept after a restart, "drained" never claimed without proof, a refused flip
//! that says what it leaves, a reload that will not drop a pending flip, and the client and
//! log telling what goes on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    BIN, BLUE_V4, GREEN_V4, Server, Setup, framed, query, scrape, service_status, unix_ms,
};

fn service(ttl: u32, extra: &str) -> String {
    format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\", \"192.0.2.11\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = {ttl}\ncutover_ttl = 1\nsettle = \"3s\"\n{extra}\n"
    )
}

fn start(ttl: u32, extra: &str) -> Server {
    Server::start_with(&Setup {
        services: service(ttl, extra),
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        ..Setup::default()
    })
}

fn live(server: &Server) -> Vec<String> {
    server.dig(&["app.svc.example.com", "A"]).data("A")
}

fn drained_at(server: &Server) -> u64 {
    service_status(server, "app")["phase"]["drained_at_ms"]
        .as_u64()
        .expect("preparing, with a deadline")
}

/// Sleeps until `at` (Unix milliseconds).
fn sleep_until(at: u64) {
    let now = unix_ms();
    if at > now {
        std::thread::sleep(Duration::from_millis(at - now));
    }
}

#[test]
fn the_drain_is_kept_across_a_restart_in_preparing() {
    let server = start(6, "");
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).answer[0].ttl, 6);
    let out = server.ctl_ok(&["prepare", "app"]);
    assert!(out.contains("drained at "), "{out}");
    let deadline = drained_at(&server);
    let server = Server::start_in(server.sigterm());
    assert_eq!(drained_at(&server), deadline, "status keeps the deadline");
    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait"]);
    assert!(
        out.starts_with("app: flip to green scheduled for "),
        "{out}"
    );
    assert!(!out.contains("1970"), "{out}");
    // Blue until the caches have drained (1.5 s of margin either way), green after.
    sleep_until(deadline - 1500);
    assert_eq!(live(&server), BLUE_V4, "not before the drain");
    sleep_until(deadline + 1500);
    assert_eq!(live(&server), GREEN_V4, "at the drain");
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("resumed: preparing, no flip pending")),
        "the restart logs what it resumes: {}",
        server.log()
    );
}

#[test]
fn drained_is_never_claimed_without_proof_after_a_restart() {
    let server = start(300, "");
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).answer[0].ttl, 300);
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let before = server.ctl_ok(&["stragglers", "app"]);
    assert!(
        before.contains("blue drains for caches that obey TTLs at "),
        "{before}"
    );
    let server = Server::start_in(server.sigterm());
    let after = server.ctl_ok(&["stragglers", "app"]);
    assert!(
        after.contains("blue drains for caches that obey TTLs at ")
            && (after.contains("(in 29") || after.contains("(in 300 s)")),
        "still draining, about 300 s from the flip: {after}"
    );
    assert!(
        after.contains("INCOMPLETE: the ledger started at "),
        "the ledger says it cannot have seen everything: {after}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&server.ctl_ok(&["stragglers", "app", "--json"])).unwrap();
    assert_eq!(json["drained"], false, "{json}");
    assert_eq!(json["complete"], false, "{json}");
    std::thread::sleep(Duration::from_millis(1500)); // a ledger tick
    assert!(
        !server.log().contains("drained for app"),
        "the log claims nothing either: {}",
        server.log()
    );
}

#[test]
fn a_refused_flip_says_the_short_ttl_stays_and_status_and_metrics_show_it() {
    // Green's TCP health port is closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let health = format!("[service.health]\nkind = \"tcp\"\nport = {port}\ntimeout = \"300ms\"\n");
    let server = Server::start_with(&Setup {
        services: format!(
            "[[service]]\nname = \"app\"\nblue = [\"127.0.0.1\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 2\ncutover_ttl = 1\nsettle = \"30s\"\n{health}"
        ),
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        ..Setup::default()
    });
    let out = server.ctl(&["flip", "app", "--to", "green"]);
    assert_eq!(out.status.code(), Some(12), "refused_unhealthy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "the TTL stays 1 s with no flip pending: `flipdns ctl cancel app` restores 2 s"
        ),
        "{err}"
    );
    let status = server.ctl_ok(&["status", "app"]);
    assert!(
        status.contains("phase preparing since ") && status.contains("no flip pending"),
        "{status}"
    );
    let metrics = scrape(&server, "/metrics");
    assert!(
        metrics.contains("flipdns_flip_pending{service=\"app\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flipdns_preparing_since_timestamp_seconds{service=\"app\"} "),
        "{metrics}"
    );
    // A flip --to during a settle is a rollback; refused, it leaves the settle as it was.
    server.ctl_ok(&["flip", "app", "--to", "green", "--now", "--force"]);
    let out = server.ctl(&["flip", "app", "--to", "blue"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("still green, settling with TTL 1 s until"),
        "{err}"
    );
    assert_eq!(service_status(&server, "app")["phase"]["name"], "settling");
}

#[test]
fn a_reload_will_not_drop_a_pending_flip_unless_forced() {
    let server = start(60, "");
    server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait"]);
    let config = std::fs::read_to_string(server.config()).unwrap();
    let renamed = config.replace("name = \"app\"", "name = \"web\"");
    std::fs::write(server.config(), &renamed).unwrap();
    let out = server.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(14), "busy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app has a cutover in progress (a flip to green is pending)"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        service_status(&server, "app")["phase"]["target"],
        "green",
        "nothing changed"
    );
    let out = server.ctl_ok(&["reload", "--force"]);
    assert_eq!(
        out.lines().next().unwrap(),
        "reloaded: added web (blue live, from the config); removed app; changed none",
        "a rename is a remove and an add, and says where the new color comes from"
    );
}

#[test]
fn ctl_tells_a_follower_what_happens_when_it_detaches_or_the_server_stops() {
    let server = start(30, "");
    server.dig(&["app.svc.example.com", "A"]);
    // Ctrl-C while following.
    let follower = Command::new(BIN)
        .args(["ctl", "--socket"])
        .arg(server.socket())
        .args(["flip", "app", "--to", "green"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(follower.id() as i32, libc::SIGINT) };
    let out = follower.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "app: detached; the cutover goes on in the server: `flipdns ctl status app` follows it"
        ),
        "{err}"
    );
    assert_eq!(service_status(&server, "app")["phase"]["target"], "green");
    // The server stops while a follower waits.
    let follower = Command::new(BIN)
        .args(["ctl", "--socket"])
        .arg(server.socket())
        .args(["flip", "app", "--to", "green"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _dir = server.sigterm();
    let out = follower.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(17), "shutting_down: {err}");
    assert!(
        err.contains("the server is shutting down; the flip of app to green is persisted and resumes when it starts again"),
        "{err}"
    );
}

#[test]
fn output_to_a_closed_pipe_or_a_full_disk_is_an_error_not_a_panic() {
    let server = start(30, "");
    // `ctl status --json | head -1`: the reader goes away after one line.
    for _ in 0..20 {
        let mut child = Command::new(BIN)
            .args(["ctl", "--socket"])
            .arg(server.socket())
            .args(["status", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_ne!(out.status.code(), Some(101), "{err}");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(server.config())
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write to stdout"), "{err}");
}

#[test]
fn a_zero_length_tcp_message_closes_the_connection_at_once() {
    let server = start(30, "");
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(&[0, 0]).unwrap();
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed without a reply: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after the idle timeout"
    );
    // Normal queries still work.
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    stream
        .write_all(&framed(&query(7, "app.svc.example.com", 1)))
        .unwrap();
    assert!(crate::common::read_reply(&mut stream).is_ok());
}

#[test]
fn state_show_prints_the_snapshot_and_the_journal_merged() {
    let server = start(30, "");
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let out = crate::common::run_ok(
        Command::new(BIN)
            .args(["state", "show", "--config"])
            .arg(server.config()),
    );
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["services"]["app"]["live"], "green", "{state}");
    assert_eq!(state["services"]["app"]["flips"], 1, "{state}");
    assert_eq!(
        state["services"]["app"]["phase"]["name"], "settling",
        "{state}"
    );
}
