//! The TTL-aware cutover, with small TTLs: ttl 4 s, cutover_ttl 1 s, settle 3 s.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    BIN, BLUE_V4, GREEN_V4, HttpStub, Server, Setup, service_status, short_service, unix_ms,
};

fn start(extra: &str) -> Server {
    Server::start_with(&Setup {
        services: short_service(extra),
        ..Setup::default()
    })
}

fn ttl(server: &Server) -> u32 {
    server.dig(&["app.svc.example.com", "A"]).answer[0].ttl
}

fn live(server: &Server) -> Vec<String> {
    server.dig(&["app.svc.example.com", "A"]).data("A")
}

/// Waits until `check` holds, polling, for at most `limit`.
fn eventually(limit: Duration, check: impl FnMut() -> bool) -> bool {
    common::until(limit, check).is_some()
}

#[test]
fn the_ttl_follows_the_phase() {
    let server = start("");
    assert_eq!(ttl(&server), 4, "steady: the normal TTL");
    let out = server.ctl_ok(&["prepare", "app"]);
    assert!(
        out.starts_with("app: preparing: TTL 1 s now; drained at "),
        "{out}"
    );
    assert_eq!(ttl(&server), 1, "preparing: the cutover TTL");
    assert_eq!(
        server.dig(&["blue.app.svc.example.com", "A"]).answer[0].ttl,
        1,
        "color names too"
    );
    let status = service_status(&server, "app");
    assert_eq!(status["phase"]["name"], "preparing");
    assert_eq!(status["ttl"], 1);

    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert_eq!(live(&server), GREEN_V4);
    assert_eq!(ttl(&server), 1, "settling: still the cutover TTL");
    let until = service_status(&server, "app")["phase"]["settle_until_ms"]
        .as_u64()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(6), || ttl(&server) == 4),
        "the normal TTL comes back after the settle"
    );
    assert!(unix_ms() >= until, "not before the settle ends");
    assert_eq!(service_status(&server, "app")["phase"]["name"], "steady");
    assert!(
        server.log().contains("settled: back to the normal TTL"),
        "{}",
        server.log()
    );
}

#[test]
fn cancel_restores_the_normal_ttl() {
    let server = start("");
    server.ctl_ok(&["prepare", "app"]);
    assert_eq!(ttl(&server), 1);
    let out = server.ctl_ok(&["cancel", "app"]);
    assert_eq!(out, "app: cancelled; steady, TTL 4 s, blue live\n");
    assert_eq!(ttl(&server), 4);
    assert_eq!(
        server.ctl_ok(&["cancel", "app"]),
        "app: nothing to cancel (steady, blue live)\n"
    );
}

#[test]
fn a_plain_flip_waits_for_the_drain_then_flips() {
    let server = start("");
    let long_sent = unix_ms();
    assert_eq!(ttl(&server), 4, "a normal-TTL answer, handed out now");
    let flip_sent = unix_ms();
    let ctl = Command::new(BIN)
        .args(["ctl", "--socket"])
        .arg(server.socket())
        .args(["flip", "app", "--to", "green"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watch the live color until it changes.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let sent = unix_ms();
        let answer = server.dig(&["app.svc.example.com", "A"]);
        seen.push((sent, answer.data("A"), answer.answer[0].ttl));
        if answer.data("A") == GREEN_V4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ctl.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("app: blue -> green (flip 1"), "{stdout}");
    assert!(
        stderr.contains("app: waiting for caches to drain before the flip to green"),
        "plain progress lines off a terminal: {stderr}"
    );

    let status = service_status(&server, "app");
    assert_eq!(status["live"], "green");
    let first_green = seen
        .iter()
        .find(|(_, a, _)| a == &GREEN_V4)
        .map(|(t, _, _)| *t)
        .expect("flipped within 10 s");
    let last_blue = seen
        .iter()
        .rev()
        .find(|(_, a, _)| a == &BLUE_V4)
        .map(|(t, _, _)| *t)
        .unwrap();
    // Every query sent before the long-TTL answer expired got blue...
    assert!(
        last_blue >= long_sent + 4000 - 200,
        "blue was still served until the drain: last blue query at +{} ms",
        last_blue - long_sent
    );
    // ...and green came by the deadline (plus polling and scheduling slack).
    assert!(
        first_green <= flip_sent + 4000 + 1500,
        "flipped {} ms after the flip command",
        first_green - flip_sent
    );
    assert!(
        seen.iter()
            .filter(|(t, _, _)| *t > flip_sent + 300)
            .all(|(_, _, ttl)| *ttl == 1),
        "the short TTL while waiting"
    );
    assert!(server.log().contains("flip scheduled"), "{}", server.log());
}

#[test]
fn the_drain_deadline_counts_from_the_last_long_answer() {
    let server = start("");
    let before = unix_ms();
    server.dig(&["app.svc.example.com", "A"]);
    let scheduled = server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait", "--json"]);
    let after = unix_ms();
    let reply: serde_json::Value = serde_json::from_str(&scheduled).unwrap();
    assert_eq!(reply["outcome"], "scheduled");
    assert_eq!(reply["phase"]["target"], "green");
    let drained_at = reply["phase"]["drained_at_ms"].as_u64().unwrap();
    assert!(
        drained_at >= before + 4000 && drained_at <= after + 4000 + 500 + 50,
        "drained_at {drained_at}, window {}..{}",
        before + 4000,
        after + 4000
    );
    // A second, different flip while one is pending is refused; the same one joins.
    let out = server.ctl(&["flip", "app", "--to", "blue", "--no-wait"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a cutover of app to green is pending"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let joined = server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait"]);
    assert!(joined.contains("was already scheduled"), "{joined}");
    assert!(eventually(Duration::from_secs(8), || live(&server) == GREEN_V4));
}

#[test]
fn flip_now_is_immediate_and_rollback_while_settling_too() {
    let server = start("");
    let started = Instant::now();
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert_eq!(live(&server), GREEN_V4);
    let out = server.ctl_ok(&["rollback", "app"]);
    assert!(out.starts_with("app: green -> blue (flip 2"), "{out}");
    assert_eq!(live(&server), BLUE_V4);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no drain wait: caches hold only 1 s answers"
    );
    assert_eq!(ttl(&server), 1, "settling again after the rollback");
}

#[test]
fn a_pending_flip_survives_kill_9_and_keeps_its_deadline() {
    let server = start("");
    server.dig(&["app.svc.example.com", "A"]);
    let reply: serde_json::Value = serde_json::from_str(&server.ctl_ok(&[
        "flip",
        "app",
        "--to",
        "green",
        "--no-wait",
        "--json",
    ]))
    .unwrap();
    let drained_at = reply["phase"]["drained_at_ms"].as_u64().unwrap();
    let dir = server.kill9();
    std::thread::sleep(Duration::from_secs(2)); // a restart long after the last answer
    let server = Server::start_in(dir);
    assert_eq!(ttl(&server), 1, "a restart never lengthens the TTL early");
    assert_eq!(
        service_status(&server, "app")["phase"]["drained_at_ms"],
        drained_at
    );
    while unix_ms() + 1000 < drained_at {
        assert_eq!(
            live(&server),
            BLUE_V4,
            "no flip before the original deadline"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        eventually(Duration::from_secs(3), || live(&server) == GREEN_V4),
        "the flip happens at the original deadline"
    );
    let flipped_at = service_status(&server, "app")["flipped_at_ms"]
        .as_u64()
        .unwrap();
    assert!(
        flipped_at >= drained_at && flipped_at < drained_at + 500,
        "flipped {} ms after the deadline",
        flipped_at as i64 - drained_at as i64
    );
}

#[test]
fn a_settle_survives_kill_9_and_ends_on_time() {
    let server = start("");
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let until = service_status(&server, "app")["phase"]["settle_until_ms"]
        .as_u64()
        .unwrap();
    let server = Server::start_in(server.kill9());
    assert_eq!(ttl(&server), 1);
    assert_eq!(live(&server), GREEN_V4);
    assert!(eventually(Duration::from_secs(6), || ttl(&server) == 4));
    assert!(unix_ms() >= until);
    assert!(unix_ms() < until + 2000, "the settle ended on time");
}

#[test]
fn the_flip_interval_refuses_a_second_flip_unless_forced() {
    let server = start("min_flip_interval = \"1h\"");
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert!(
        eventually(Duration::from_secs(6), || ttl(&server) == 4),
        "the settle ends"
    );
    let out = server.ctl(&["flip", "app", "--to", "blue", "--now"]);
    assert_eq!(out.status.code(), Some(13), "refused_interval");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused: the last flip was 3 s ago and min_flip_interval is 1h")
            || err.contains("refused: the last flip was 4 s ago and min_flip_interval is 1h"),
        "{err}"
    );
    assert!(
        err.contains("`--force` overrides; still green, steady with TTL 4 s"),
        "{err}"
    );
    assert_eq!(live(&server), GREEN_V4);
    server.ctl_ok(&["flip", "app", "--to", "blue", "--now", "--force"]);
    assert_eq!(live(&server), BLUE_V4);
}

/// Issue 9: with `min_flip_interval` set, `rollback` right after a flip was refused. The
/// settle exists so that a rollback is immediate: it is never refused by the interval.
#[test]
fn a_rollback_while_settling_is_never_refused_by_the_flip_interval() {
    let server = start("min_flip_interval = \"30m\"");
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let out = server.ctl_ok(&["rollback", "app"]);
    assert!(out.starts_with("app: green -> blue (flip 2"), "{out}");
    assert_eq!(live(&server), BLUE_V4);
    // A flip to the other color while settling is the same rollback.
    let out = server.ctl_ok(&["flip", "app", "--to", "green"]);
    assert!(out.starts_with("app: blue -> green (flip 3"), "{out}");
}

#[test]
fn concurrent_flips_are_serialized() {
    let server = start("");
    let colors = ["green", "blue", "green", "blue", "green", "blue"];
    let children: Vec<_> = colors
        .iter()
        .map(|to| {
            Command::new(BIN)
                .args(["ctl", "--socket"])
                .arg(server.socket())
                .args(["flip", "app", "--to", to, "--now", "--json"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let replies: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| serde_json::from_slice(&c.wait_with_output().unwrap().stdout).unwrap())
        .collect();
    let mut flipped: Vec<(u64, String)> = replies
        .iter()
        .filter(|r| r["outcome"] == "flipped")
        .map(|r| {
            (
                r["flips"].as_u64().unwrap(),
                r["live"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    flipped.sort();
    let generations: Vec<u64> = flipped.iter().map(|(g, _)| *g).collect();
    assert_eq!(
        generations,
        (1..=flipped.len() as u64).collect::<Vec<_>>(),
        "one generation per flip, none skipped or shared: {replies:?}"
    );
    let (_, last) = flipped.last().expect("at least one flip");
    let expected = if last == "green" {
        GREEN_V4.to_vec()
    } else {
        BLUE_V4.to_vec()
    };
    assert_eq!(live(&server), expected, "the last acknowledged flip wins");
}

/// A virtual host's check: the Host header configured, and a status range that accepts a
/// redirect.
#[test]
fn the_health_check_sends_the_host_and_accepts_the_status_range() {
    let stub = HttpStub::start("127.0.0.4:0", 302);
    let port = stub.addr.port();
    let service = format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.4\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"3s\"\n[service.health]\nport = {port}\nhost = \"app.example.com\"\nstatus = \"200-399\"\ntimeout = \"1s\"\ninterval = \"1h\"\n"
    );
    let server = Server::start_with(&Setup {
        services: service,
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..Setup::default()
    });
    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert!(
        out.starts_with("app: health of green: 1/1 healthy\napp: blue -> green"),
        "the gate's result, then the flip it let through: {out}"
    );
    assert_eq!(*stub.host.lock().unwrap(), "app.example.com");
    // The background check's result per address, in /metrics.
    let line =
        "flipdns_health_address_healthy{service=\"app\",color=\"green\",address=\"127.0.0.4\"} 1";
    assert!(
        eventually(Duration::from_secs(5), || crate::common::scrape(
            &server, "/metrics"
        )
        .contains(line)),
        "{line}"
    );
    stub.set(404);
    server.ctl_ok(&["flip", "app", "--to", "blue", "--now", "--force"]);
    let out = server.ctl(&["flip", "app", "--to", "green", "--now"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unhealthy 127.0.0.4 (HTTP 404)"), "{err}");
}

#[test]
fn the_health_gate_names_each_failing_address() {
    // Green is 127.0.0.2 and 127.0.0.3 on one port; the stubs decide their health.
    let first = HttpStub::start("127.0.0.2:0", 200);
    let port = first.addr.port();
    let health = format!(
        "[service.health]\nkind = \"http\"\nport = {port}\npath = \"/healthz\"\ntimeout = \"500ms\"\ninterval = \"200ms\"\n"
    );
    let service = format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.2\", \"127.0.0.3\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"3s\"\n{health}"
    );
    let server = Server::start_with(&Setup {
        services: service,
        ..Setup::default()
    });

    // 127.0.0.3 does not listen.
    let out = server.ctl(&["flip", "app", "--to", "green", "--now"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "flip of app to green refused: unhealthy 127.0.0.3 (connection refused); `--force` skips the health gate; still blue, steady with TTL 4 s"
        ),
        "{err}"
    );
    assert_eq!(live(&server), ["192.0.2.10"]);

    // 127.0.0.3 answers 503.
    let second = HttpStub::start(&format!("127.0.0.3:{port}"), 503);
    let out = server.ctl(&["flip", "app", "--to", "green", "--now"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unhealthy 127.0.0.3 (HTTP 503)"), "{err}");
    assert_eq!(live(&server), ["192.0.2.10"]);
    // The background checks see it too, in status.
    assert!(eventually(Duration::from_secs(3), || {
        let status = service_status(&server, "app");
        status["health"].as_array().is_some_and(|h| {
            h.iter()
                .any(|c| c["color"] == "green" && c["healthy"] == 1 && c["total"] == 2)
        })
    }));

    // --force overrides.
    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--now", "--force"]);
    assert!(out.starts_with("app: blue -> green"), "{out}");
    assert_eq!(live(&server), ["127.0.0.2", "127.0.0.3"]);

    // Healthy: the gate passes and says so.
    server.ctl_ok(&["flip", "app", "--to", "blue", "--now", "--force"]);
    second.set(200);
    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert!(out.contains("health of green: 2/2 healthy"), "{out}");
    assert_eq!(live(&server), ["127.0.0.2", "127.0.0.3"]);
    let status = service_status(&server, "app");
    assert_eq!(status["flips"], 3);
    drop(first);
}

#[test]
fn a_scheduled_flip_refused_by_health_stays_preparing() {
    // Green's TCP health port is closed: the gate refuses after the drain.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let service = format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 2\ncutover_ttl = 1\nsettle = \"3s\"\n[service.health]\nkind = \"tcp\"\nport = {port}\ntimeout = \"300ms\"\n"
    );
    let server = Server::start_with(&Setup {
        services: service,
        ..Setup::default()
    });
    let out = server.ctl(&["flip", "app", "--to", "green"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app: health of green: 0/1 healthy; 127.0.0.1 connection refused"),
        "the gate's result as progress: {err}"
    );
    assert!(
        err.contains(
            "flip of app to green refused: unhealthy 127.0.0.1 (connection refused); `--force` skips the health gate; still blue; the TTL stays 1 s with no flip pending: `flipdns ctl cancel app` restores 2 s"
        ),
        "{err}"
    );
    let status = service_status(&server, "app");
    assert_eq!(status["live"], "blue");
    assert_eq!(
        status["phase"]["name"], "preparing",
        "stays preparing, with the short TTL"
    );
    assert_eq!(
        status["phase"].get("target"),
        None,
        "the refused target is dropped"
    );
    assert_eq!(ttl(&server), 1);
}

#[test]
fn commands_beyond_the_queue_are_turned_away() {
    // Green's health check hangs, so the first flip holds the service's task for 2 s while
    // more commands arrive: 16 wait their turn, the rest are refused at once.
    let stub = HttpStub::start("127.0.0.1:0", 0);
    let service = format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"3s\"\n[service.health]\nport = {}\ntimeout = \"2s\"\ninterval = \"1h\"\n",
        stub.addr.port()
    );
    let server = Server::start_with(&Setup {
        services: service,
        extra: "[limits]\nadmin_clients = 64\n".into(),
        ..Setup::default()
    });
    let request = b"{\"cmd\":\"flip\",\"service\":\"app\",\"to\":\"green\",\"now\":true}\n";
    let send = || {
        let mut stream = std::os::unix::net::UnixStream::connect(server.socket()).unwrap();
        std::io::Write::write_all(&mut stream, request).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream
    };
    let first = send();
    std::thread::sleep(Duration::from_secs(1)); // the first is taken and blocks on its check
    let waiting: Vec<_> = (0..20).map(|_| send()).collect();
    // A refusal comes at once; a queued command gets no reply before its read timeout.
    let readers: Vec<_> = waiting
        .into_iter()
        .map(|stream| {
            std::thread::spawn(move || {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line)
                    .ok()?;
                line.contains("too many commands queued for app (limit 16)")
                    .then_some(())
            })
        })
        .collect();
    let refused = readers
        .into_iter()
        .filter_map(|reader| reader.join().unwrap())
        .count();
    assert_eq!(
        refused, 4,
        "20 commands behind a busy one: 16 queue, 4 are refused"
    );
    drop((first, stub)); // the queued flips now fail their health checks quickly
    assert_eq!(live(&server), ["192.0.2.10"]);
}
