//! Crashes and disk errors: a flip that cannot be written is refused and nothing changes;
//! kill -9 at any moment of a flip leaves the acknowledged or the persisted color; SIGTERM
//! finishes the queries in flight.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{BIN, BLUE_V4, GREEN_V4, Server, a_records, query};

fn set_file_size_limit(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our own child with a limit we own; the old limit is not read.
    let done = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn a_flip_that_cannot_be_written_is_refused_and_changes_nothing() {
    let server = Server::start();
    let before = std::fs::read_to_string(server.state_file()).unwrap();
    set_file_size_limit(server.pid(), 0);
    let out = server.ctl(&["flip", "app", "--to", "green", "--now"]);
    assert!(!out.status.success(), "the flip must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not done") && err.contains("still blue") && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        BLUE_V4,
        "the old color is served"
    );
    assert_eq!(
        std::fs::read_to_string(server.state_file()).unwrap(),
        before,
        "the state file is untouched"
    );
    assert!(
        !server.dir.path().join("run/state.json.tmp").exists(),
        "no half-written file is left"
    );
    let status = common::service_status(&server, "app");
    assert_eq!(
        (status["live"].as_str(), status["flips"].as_u64()),
        (Some("blue"), Some(0))
    );

    set_file_size_limit(server.pid(), libc::RLIM_INFINITY);
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
}

/// Issue 22: with fsync and ftruncate failing (EIO, injected by strace into the running
/// server), a rollback's write fails and so does its undo. The reply must not say "nothing
/// changed" (exit 15): it is `uncertain` (exit 24), said once; status and `/metrics` say
/// the state is uncertain until the server's retries succeed, and then disk and answers
/// agree again.
#[test]
fn a_write_whose_undo_fails_is_uncertain_until_it_is_repaired() {
    let server = Server::start_with(&crate::common::Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..crate::common::Setup::default()
    });
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-p"])
        .arg(server.pid().to_string())
        .args([
            "-e",
            "trace=fsync,fdatasync,ftruncate",
            "-e",
            "inject=fsync,fdatasync,ftruncate:error=EIO",
            "-o",
            "/dev/null",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (package strace)");
    std::thread::sleep(Duration::from_secs(2)); // attached to every thread
    let out = server.ctl(&["rollback", "app", "--force", "--json"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    // While the disk still fails: said by status and /metrics, and green is still served.
    let status: serde_json::Value =
        serde_json::from_str(&server.ctl_ok(&["status", "--json"])).unwrap();
    let text = server.ctl_ok(&["status"]);
    let metrics = common::scrape(&server, "/metrics");
    let served = server.dig(&["app.svc.example.com", "A"]).data("A");
    let _ = strace.kill();
    let _ = strace.wait();
    assert_eq!(out.status.code(), Some(24), "uncertain: {reply}");
    assert_eq!(reply["error"]["kind"], "uncertain", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("could not be undone"), "{message}");
    assert!(!message.contains("not done: not done"), "{message}");
    assert!(status["state_uncertain"]["reason"].is_string(), "{status}");
    assert!(text.starts_with("STATE UNCERTAIN since"), "{text}");
    assert!(metrics.contains("flipdns_state_uncertain 1"), "{metrics}");
    assert_eq!(
        served, GREEN_V4,
        "the answers do not carry the uncertain change"
    );
    // Once the disk lets it, the undo is retried and succeeds: disk and answers agree.
    let repaired = common::until(Duration::from_secs(10), || {
        let status: serde_json::Value =
            serde_json::from_str(&server.ctl_ok(&["status", "--json"])).unwrap();
        status["state_uncertain"].is_null()
    });
    assert!(repaired.is_some(), "{}", server.log());
    assert!(
        server.log().contains("state file repaired"),
        "{}",
        server.log()
    );
    assert_eq!(persisted(server.dir.path()), "green");
    let metrics = common::scrape(&server, "/metrics");
    assert!(metrics.contains("flipdns_state_uncertain 0"), "{metrics}");
    // And changes go through again.
    server.ctl_ok(&["rollback", "app", "--force"]);
    assert_eq!(persisted(server.dir.path()), "blue");
}

/// The live color the state file holds, if it is readable.
fn persisted(dir: &std::path::Path) -> String {
    let state = flipdns::state::store::read_state(&dir.join("run/state.json"))
        .expect("the state is never half-written")
        .expect("the state is never missing after the first start");
    state.services["app"].live.to_string()
}

/// When a round's kill lands. Every tenth round kills after the reply and every tenth
/// before the request, so both ends are always covered; the rest land at random moments
/// of the flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    AfterReply,
    BeforeRequest,
    After(Duration),
}

#[test]
fn kill_9_at_random_moments_never_serves_an_unacknowledged_unpersisted_color() {
    let mut server = Server::start();
    let mut acknowledged = "blue".to_string();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let (mut acks, mut flipped_unacked) = (0, 0);
    for round in 0..50 {
        let to = if round % 2 == 0 { "green" } else { "blue" };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill = match round % 10 {
            0 => Kill::AfterReply,
            5 => Kill::BeforeRequest,
            _ => Kill::After(Duration::from_micros(seed % 8000)),
        };
        let flip = |socket: &std::path::Path| {
            Command::new(BIN)
                .args(["ctl", "--socket"])
                .arg(socket)
                .args(["flip", "app", "--to", to, "--now"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let socket = server.socket();
        let (dir, acked) = match kill {
            Kill::AfterReply => {
                let acked = flip(&socket).wait().unwrap().success();
                assert!(
                    acked,
                    "round {round}: a flip on a running server is acknowledged"
                );
                (server.kill9(), acked)
            }
            Kill::BeforeRequest => {
                let dir = server.kill9();
                let acked = flip(&socket).wait().unwrap().success();
                assert!(!acked, "round {round}: no server, no acknowledgement");
                (dir, acked)
            }
            Kill::After(pause) => {
                let ctl = flip(&socket);
                std::thread::sleep(pause);
                let dir = server.kill9();
                (dir, ctl.wait_with_output().unwrap().status.success())
            }
        };
        if acked {
            acknowledged = to.to_string();
        }
        let on_disk = persisted(dir.path());
        assert!(
            on_disk == acknowledged || on_disk == to,
            "round {round}: state file says {on_disk}"
        );
        if acked {
            assert_eq!(
                on_disk, to,
                "round {round}: an acknowledged flip is on disk"
            );
            acks += 1;
        } else if on_disk == to {
            flipped_unacked += 1; // persisted, killed before the reply
        }
        server = Server::start_in(dir);
        let served = server.dig(&["app.svc.example.com", "A"]).data("A");
        let expected = if on_disk == "green" {
            GREEN_V4.to_vec()
        } else {
            BLUE_V4.to_vec()
        };
        assert_eq!(
            served, expected,
            "round {round}: serves what the state file says"
        );
        acknowledged = on_disk;
    }
    eprintln!(
        "{acks} acknowledged, {flipped_unacked} persisted but not acknowledged, {} not done",
        50 - acks - flipped_unacked
    );
}

#[test]
fn sigterm_finishes_queries_in_flight() {
    let server = Server::start();
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let packet = query(1, "app.svc.example.com", 1);
    let framed = common::framed(&packet);
    stream.write_all(&framed[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = server.pid();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        server.wait_for_log("shutting down", Duration::from_secs(2)),
        "{}",
        server.log()
    );
    stream.write_all(&framed[10..]).unwrap();
    let reply = common::read_reply(&mut stream).expect("the query in flight is answered");
    assert_eq!(a_records(&reply).len(), 2);
    let started = Instant::now();
    let status = server.stop_with(0);
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(6));
}
