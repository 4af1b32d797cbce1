//! The admin socket: bad requests get an error reply and change nothing; bounds hold.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{BLUE_V4, Server, Setup};

/// Sends raw bytes on a fresh connection and returns the reply line.
fn raw(server: &Server, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(server.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

fn assert_unchanged(server: &Server) {
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        BLUE_V4,
        "color unchanged, DNS answering"
    );
    let status: serde_json::Value =
        serde_json::from_str(&server.ctl_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["services"][0]["flips"], 0);
    assert_eq!(status["zones"][0]["serial"], 2026112601);
}

#[test]
fn bad_requests_get_an_error_and_change_nothing() {
    let server = Server::start();
    let cases: [(&[u8], &str, &str); 6] = [
        (b"this is not json\n", "invalid", "bad request"),
        (
            b"{\"cmd\": \"explode\"}\n",
            "invalid",
            "unknown variant `explode`",
        ),
        (
            b"{\"cmd\": \"flip\", \"service\": \"nope\", \"to\": \"green\"}\n",
            "unknown_service",
            "unknown service \"nope\"",
        ),
        (
            b"{\"cmd\": \"flip\", \"service\": \"app\", \"to\": \"purple\"}\n",
            "invalid",
            "unknown variant `purple`",
        ),
        (
            b"{\"cmd\": \"flip\", \"service\": \"app\"}\n",
            "invalid",
            "missing field `to`",
        ),
        (
            b"{\"cmd\": \"flip\", \"service\": \"app\", \"to\": \"green\", \"colour\": 1}\n",
            "invalid",
            "unknown field `colour`",
        ),
    ];
    for (request, kind, expected) in cases {
        let reply: serde_json::Value = serde_json::from_str(&raw(&server, request)).unwrap();
        assert_eq!(reply["error"]["kind"], kind, "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{reply} should say {expected}");
    }
    let line = vec![b'x'; 20_000];
    let reply = raw(&server, &line);
    assert!(reply.contains("request longer than 16384 bytes"), "{reply}");
    assert_unchanged(&server);

    // ctl reports the server's reason on one line and exits with the kind's code...
    let out = server.ctl(&["flip", "nope", "--to", "green"]);
    assert_eq!(out.status.code(), Some(11), "unknown_service");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "flipdns: unknown service \"nope\" (configured: app)\n"
    );
    // ...and with --json, the error is JSON on stdout.
    let out = server.ctl(&["flip", "nope", "--to", "green", "--json"]);
    assert_eq!(out.status.code(), Some(11));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "unknown_service", "{error}");
    let out = server.ctl(&["flip", "app", "--to", "purple"]);
    assert!(!out.status.success());
    assert_unchanged(&server);
}

#[test]
fn version_names_the_server_and_the_protocol() {
    let server = Server::start();
    let reply = raw(&server, b"{\"cmd\": \"version\"}\n");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["ok"]["version"]["protocol"], 1, "{reply}");
    assert_eq!(
        reply["ok"]["version"]["server"],
        env!("CARGO_PKG_VERSION"),
        "{reply}"
    );
    // The commit built from, as the build script found it for this test binary too; in a
    // git checkout that is HEAD (the binary is rebuilt whenever HEAD moves).
    let head = env!("FLIPDNS_REVISION");
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    let packaged = std::env::var_os("FLIPDNS_REVISION").is_some();
    if let Some(git) = git.ok().filter(|g| g.status.success() && !packaged) {
        assert_eq!(String::from_utf8_lossy(&git.stdout).trim(), head);
    }
    assert_eq!(reply["ok"]["version"]["revision"], head, "{reply}");
    // `1.95.0`, or `1.96.0-nightly`.
    let rustc = reply["ok"]["version"]["rustc"]
        .as_str()
        .unwrap()
        .to_string();
    let release = rustc.split('-').next().unwrap();
    assert!(
        release.split('.').count() == 3 && release.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{reply}"
    );
    let out = server.ctl_ok(&["version"]);
    let long = format!(
        "{} (commit {head}, rustc {rustc}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(out, format!("flipdns {long}, admin protocol 1)\n"));
    let out =
        crate::common::run_ok(std::process::Command::new(crate::common::BIN).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("flipdns {long})\n")
    );
    // And in /metrics, for dashboards that show which build runs where.
    let server = Server::start_with(&crate::common::Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..crate::common::Setup::default()
    });
    let line = format!(
        "flipdns_build_info{{version=\"{}\",revision=\"{head}\",rustc=\"{rustc}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        crate::common::scrape(&server, "/metrics").contains(&line),
        "{line}"
    );
}

#[test]
fn a_missing_server_is_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::ctl(&dir.path().join("nothing.sock"), &["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to admin socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `--json`, a missing server is the kind `no_server` (exit 3), not a server's kind.
#[test]
fn a_missing_server_has_its_own_json_kind() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::ctl(
        &dir.path().join("nothing.sock"),
        &["--json", "flip", "app", "--to", "green"],
    );
    assert_eq!(out.status.code(), Some(3));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["kind"], "no_server", "{reply}");
}

/// `status --watch` shows the service (and its straggler report) again every round, and
/// rides out a kill -9 and restart of the server, saying so meanwhile.
#[test]
fn status_watch_repeats_and_rides_out_a_restart() {
    let server = Server::start();
    let socket = server.socket();
    let mut watch = std::process::Command::new(crate::common::BIN)
        .args(["ctl", "--socket"])
        .arg(&socket)
        .args(["status", "app", "--watch", "--every", "200ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stdout) = (lines.clone(), watch.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let count = |needle: &str| {
        let lines = lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(needle)).count()
    };
    let rounds = |n: usize| common::until(Duration::from_secs(10), || count("app: blue live") >= n);
    assert!(
        rounds(3).is_some(),
        "three rounds: {:?}",
        lines.lock().unwrap()
    );
    assert!(
        count("app: never flipped") >= 3,
        "the straggler report each round"
    );

    let dir = server.kill9();
    assert!(
        common::until(Duration::from_secs(10), || count(
            "cannot connect to admin socket"
        ) >= 1)
        .is_some(),
        "a server gone is said: {:?}",
        lines.lock().unwrap()
    );
    let before = count("app: blue live");
    let server = Server::start_in(dir);
    assert_eq!(server.socket(), socket);
    assert!(
        common::until(Duration::from_secs(10), || count("app: blue live") > before).is_some(),
        "the watch goes on once the server is back"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    reader.join().unwrap();
}

#[test]
fn one_connection_carries_many_requests() {
    let server = Server::start();
    let stream = UnixStream::connect(server.socket()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for to in ["green", "blue", "green"] {
        writeln!(
            writer,
            "{{\"cmd\":\"flip\",\"service\":\"app\",\"to\":\"{to}\",\"now\":true}}"
        )
        .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains(&format!("\"live\":\"{to}\"")), "{line}");
    }
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        ["198.51.100.10"]
    );
}

#[test]
fn a_stalled_request_times_out_and_the_server_keeps_serving() {
    let setup = Setup {
        extra: "[limits]\nadmin_request_timeout = \"300ms\"\n".into(),
        ..Setup::default()
    };
    let server = Server::start_with(&setup);
    let started = Instant::now();
    let reply = raw(&server, b"{\"cmd\": \"fli");
    assert!(
        reply.contains("request not completed within 0.3 s"),
        "{reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_unchanged(&server);
}

#[test]
fn a_newcomer_takes_the_seat_of_a_silent_client_and_only_changes_fill_the_socket() {
    let setup = Setup {
        extra: "[limits]\nadmin_clients = 2\n".into(),
        ..Setup::default()
    };
    let server = Server::start_with(&setup);
    // Two silent clients hold both seats; a third client takes the older one's.
    let first = UnixStream::connect(server.socket()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let second = UnixStream::connect(server.socket()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(raw(&server, b"{\"cmd\": \"version\"}\n").contains("\"ok\""));
    let mut reply = String::new();
    let mut first_read = &first;
    first_read
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    first_read.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("closed to make room for another admin client"),
        "{reply}"
    );
    drop((first, second));

    // Two flips that follow a drain carry out changes: a third client finds no seat.
    let follow = || {
        let mut stream = UnixStream::connect(server.socket()).unwrap();
        stream
            .write_all(b"{\"cmd\": \"flip\", \"service\": \"app\", \"to\": \"green\"}\n")
            .unwrap();
        stream
    };
    let following = [follow(), follow()];
    std::thread::sleep(Duration::from_secs(1)); // both read and following
    let reply = raw(&server, b"{\"cmd\": \"status\"}\n");
    assert!(
        reply.contains("too many admin clients: all 2 carry out a change"),
        "{reply}"
    );
    drop(following);
    assert!(
        common::until(Duration::from_secs(10), || server
            .ctl(&["cancel", "app"])
            .status
            .success())
        .is_some()
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        BLUE_V4,
        "the cancelled flips changed no color"
    );
}

/// Issue 22: 17 connections that say nothing, each opened again as soon as it is closed (a
/// leaking monitoring agent), made every flip fail with "too many admin clients".
#[test]
fn silent_clients_cannot_lock_out_a_flip() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = Server::start();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (socket, stop) = (server.socket(), stop.clone());
        std::thread::spawn(move || {
            let open = || {
                let stream = UnixStream::connect(&socket).ok()?;
                stream.set_nonblocking(true).ok()?;
                Some(stream)
            };
            let mut held: Vec<Option<UnixStream>> = (0..17).map(|_| open()).collect();
            let mut reopened = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for slot in held.iter_mut() {
                    let closed = match slot {
                        Some(stream) => {
                            let mut byte = [0u8; 256];
                            !matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                        }
                        None => true,
                    };
                    if closed {
                        *slot = open();
                        reopened += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            reopened
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..7 {
        let to = if round % 2 == 0 { "green" } else { "blue" };
        let out = server.ctl(&["flip", "app", "--to", to, "--now", "--force"]);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = flood.join().unwrap();
    assert!(
        reopened >= 7,
        "the flood was pushed out and came back: {reopened}"
    );
}

/// Issue 15: clients that send requests and never read the replies held every slot for
/// good, and `flip` got "too many admin clients". Replies now have a write timeout, and a
/// change takes the seat of a client that is not carrying one out.
#[test]
fn clients_that_never_read_cannot_lock_out_a_flip() {
    let setup = Setup {
        extra: "[limits]\nadmin_clients = 2\nadmin_request_timeout = \"1s\"\n".into(),
        ..Setup::default()
    };
    let server = Server::start_with(&setup);
    let greedy: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = UnixStream::connect(server.socket()).unwrap();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    if stream.write_all(b"{\"cmd\": \"status\"}\n").is_err() {
                        break;
                    }
                }
                stream // held open, never read
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1)); // both slots held
    let started = Instant::now();
    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert!(out.starts_with("app: blue -> green"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, in a greedy client's seat"
    );
    // The greedy clients lose their connections to the write timeout.
    assert!(
        common::until(Duration::from_secs(10), || server
            .ctl(&["status"])
            .status
            .success())
        .is_some(),
        "status works again once they are dropped"
    );
    for thread in greedy {
        drop(thread.join().unwrap());
    }
}

#[test]
fn the_socket_is_private_and_not_shared() {
    let server = Server::start();
    let mode = std::fs::metadata(server.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // A second server with another state file but the same socket must not steal it.
    let config = std::fs::read_to_string(server.config())
        .unwrap()
        .replace("run/state.json", "other/state.json");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flipdns.toml"),
        config.replace("run/flipdns.sock", &server.socket().display().to_string()),
    )
    .unwrap();
    std::fs::copy(
        server.dir.path().join("svc.zone"),
        dir.path().join("svc.zone"),
    )
    .unwrap();
    let Err((_, log)) = Server::try_start_in(dir) else {
        panic!("a second server took a live socket")
    };
    assert!(
        log.contains("a flipdns server is already answering on it"),
        "{log}"
    );
    assert_unchanged(&server);
}

#[test]
fn status_reports_every_service_and_zone() {
    let server = Server::start();
    let table = server.ctl_ok(&["status"]);
    assert!(table.starts_with("app: blue live (192.0.2.10 192.0.2.11 2001:db8::10)\n  blue 192.0.2.10 192.0.2.11 2001:db8::10 (from config)\n  green 198.51.100.10 2001:db8::20 (from config)\n  phase steady\n  ttl 300 s now (normal 300, cutover 5)\n  flips 0, serial 2026112601, last flip never\n"), "{table}");
    assert!(
        table.contains("zone svc.example.com. serial 2026112601"),
        "{table}"
    );
    server.dig(&["app.svc.example.com", "A"]);
    let json: serde_json::Value =
        serde_json::from_str(&server.ctl_ok(&["status", "app", "--json"])).unwrap();
    let app = &json["services"][0];
    assert_eq!(app["fqdn"], "app.svc.example.com.");
    assert_eq!(app["live"], "blue");
    assert_eq!(app["ttl"], 300);
    assert_eq!(app["answers"]["blue"], 1);
    assert_eq!(
        app["green"],
        serde_json::json!(["198.51.100.10", "2001:db8::20"])
    );
    let out = server.ctl(&["status", "nope"]);
    assert!(!out.status.success());
}

#[test]
fn only_allowed_uids_may_use_the_socket() {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let others = Setup {
        server: format!(
            "admin_allowed_uids = [{}]\nadmin_allowed_gids = [{}]",
            uid + 1,
            u32::MAX - 1
        ),
        ..Setup::default()
    };
    let server = Server::start_with(&others);
    let out = server.ctl(&["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("uid {uid} gid")) && err.contains("may not use this admin socket"),
        "{err}"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        BLUE_V4,
        "DNS unaffected"
    );

    let us = Setup {
        server: format!("admin_allowed_uids = [{uid}]"),
        ..Setup::default()
    };
    let server = Server::start_with(&us);
    server.ctl_ok(&["status"]);
}

#[test]
fn the_readme_lists_every_error_kind_with_its_exit_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for kind in flipdns::protocol::ErrorKind::ALL {
        let row = format!("| {} | `{}` |", kind.exit_code(), kind.as_str());
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}

/// `flipdns ctl status` as uid/gid 65534 with `groups` as supplementary groups (setpriv).
fn ctl_as_nobody(server: &crate::common::Server, groups: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534"])
        .arg(groups)
        .arg(crate::common::BIN)
        .args(["ctl", "--socket"])
        .arg(server.socket())
        .arg("status")
        .output()
        .expect("setpriv (util-linux)")
}

/// A user allowed by a supplementary group may use the socket (SO_PEERCRED carries only the
/// primary gid); one without it is refused; and a socket the user cannot open says who owns
/// it and what grants access. Runs other users' processes, so it needs root.
#[test]
fn supplementary_groups_grant_the_socket_and_a_denied_open_says_why() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: running ctl as another user needs root (CI runs as root)");
        return;
    }
    let open = |server: &crate::common::Server| {
        for dir in [
            server.dir.path().to_path_buf(),
            server.dir.path().join("run"),
        ] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    };
    let server = crate::common::Server::start_with(&Setup {
        server: "admin_socket_mode = \"0666\"\nadmin_allowed_gids = [4242]".into(),
        ..Setup::default()
    });
    open(&server);
    let allowed = ctl_as_nobody(&server, "--groups=4242");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let refused = ctl_as_nobody(&server, "--clear-groups");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uid 65534 gid 65534 may not use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let private = crate::common::Server::start();
    open(&private);
    let denied = ctl_as_nobody(&private, "--clear-groups");
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("owned by uid 0 gid 0 with mode 0600")
            && stderr.contains("admin_socket_mode"),
        "{stderr}"
    );
}
