//! Running under systemd: the shipped unit passes `systemd-analyze verify`, the server tells
//! systemd when it is ready, reloading and stopping, and `ctl` finds the server from any
//! directory through FLIPDNS_SOCKET or FLIPDNS_CONFIG.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, BIN, Server, Setup, short_service};

const UNIT: &str = include_str!("../../contrib/systemd/flipdns.service");

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "`systemd-analyze` is not installed: this test verifies the shipped unit with it. Install it with `apt-get install -y systemd` (or run ./tests/run)."
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("flipdns.service");
    // verify checks that the binary exists: point the unit at the one under test.
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/flipdns", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    // verify exits 0 on keys it does not know or values it cannot parse, and only says so:
    // any line about our unit is a finding.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("flipdns.service"))
        .collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    for key in [
        "Type=notify",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ExecStartPre=",
        "ExecReload=",
        "ProtectSystem=strict",
        "RuntimeDirectory=flipdns",
        "StateDirectory=flipdns",
    ] {
        assert!(UNIT.contains(key), "the unit sets {key}");
    }
}

/// The next datagram on `socket`, as text.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let dir = Setup::default().write();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = Server::start_in_with_env(dir, &[("NOTIFY_SOCKET", path.as_os_str())]);
    let ready = next(&socket);
    assert!(ready.contains("READY=1\n"), "{ready}");
    assert!(
        ready.contains("STATUS=serving 1 service in 1 zone\n"),
        "{ready}"
    );

    server.ctl_ok(&["reload"]);
    let reloading = next(&socket);
    assert!(reloading.contains("RELOADING=1\n"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let reloaded = next(&socket);
    assert!(reloaded.contains("READY=1\n"), "{reloaded}");
    assert!(
        reloaded.contains("STATUS=serving 1 service in 1 zone; reloaded\n"),
        "{reloaded}"
    );

    let status = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(next(&socket).contains("STOPPING=1\n"));
}

#[test]
fn ctl_finds_the_server_from_any_directory_through_the_environment() {
    let server = Server::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let ctl = |envs: &[(&str, &std::path::Path)]| {
        Command::new(BIN)
            .args(["ctl", "status", "--json"])
            .current_dir(elsewhere.path())
            .env_remove("FLIPDNS_SOCKET")
            .env_remove("FLIPDNS_CONFIG")
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    };
    let lost = ctl(&[]);
    assert!(!lost.status.success(), "no config in this directory");
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("/etc/flipdns/flipdns.toml"),
        "outside a checkout the system-wide config is the default: {}",
        String::from_utf8_lossy(&lost.stderr)
    );
    for envs in [
        [("FLIPDNS_SOCKET", server.socket().as_path())],
        [("FLIPDNS_CONFIG", server.config().as_path())],
    ] {
        let out = ctl(&envs);
        assert!(
            out.status.success(),
            "{envs:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"services\""));
    }
}

fn state(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .arg("state")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("FLIPDNS_CONFIG")
        .output()
        .unwrap()
}

/// A backup taken while serving restores the colors it recorded, only into a stopped
/// server, and never moves a zone's serial back.
#[test]
fn a_state_backup_restores_colors_into_a_stopped_server_with_serials_forward() {
    use crate::common::{BLUE_V4, GREEN_V4};
    let server = Server::start();
    let config = server.config();
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let exported = state(&["export"], &config);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let backup = server.dir.path().join("backup.json");
    std::fs::write(&backup, &exported.stdout).unwrap();

    server.ctl_ok(&["flip", "app", "--to", "blue", "--now"]);
    let serial = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    let refused = state(&["import", backup.to_str().unwrap()], &config);
    assert!(
        !refused.status.success(),
        "a running server holds the state"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).data("A"), BLUE_V4);

    let dir = server.sigterm();
    let imported = state(
        &["import", backup.to_str().unwrap()],
        &dir.path().join("flipdns.toml"),
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        String::from_utf8_lossy(&imported.stdout).starts_with("imported 1 services and 1 zones")
    );
    let server = Server::start_in(dir);
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        GREEN_V4
    );
    let restored = server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap();
    assert!(
        restored.wrapping_sub(serial) as i32 > 0,
        "the serial moved forward: {serial} -> {restored}"
    );
}

/// The lines `serve` logs up to `ready`, with `envs` set; the server is killed after.
fn log_until_ready(envs: &[(&str, &str)]) -> Vec<String> {
    use std::io::BufRead;
    let dir = Setup::default().write();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("flipdns.toml"))
        .env_remove("JOURNAL_STREAM")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let ready = line.contains("ready");
        lines.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_come_as_json_lines_or_without_timestamps_under_journald() {
    let json = log_until_ready(&[("FLIPDNS_LOG_FORMAT", "json")]);
    assert!(json.len() > 2, "{json:?}");
    for line in &json {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
    assert!(json.last().unwrap().contains(r#""message":"ready""#));

    // journald stamps each line itself.
    let journal = log_until_ready(&[("JOURNAL_STREAM", "8:1234")]);
    for line in &journal {
        assert!(
            line.trim_start().starts_with("INFO") || line.trim_start().starts_with("WARN"),
            "{line}"
        );
    }
    let text = log_until_ready(&[]);
    assert!(text[0].starts_with("20"), "a timestamp first: {}", text[0]);

    let bad = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent.toml"])
        .env("FLIPDNS_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FLIPDNS_LOG_FORMAT=\"yaml\""));
}

/// Every change asked, refused ones too, is in the audit file with who asked it, survives
/// kill -9, and `ctl history` shows it; past its size the file rotates.
#[test]
fn the_audit_trail_records_who_asked_what_and_survives_kill_9() {
    let server = Server::start_with(&Setup {
        extra: "[limits]\naudit_file_size = 4096\n".into(),
        ..Setup::default()
    });
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let refused = server.ctl(&["flip", "nosuch", "--to", "green", "--now"]);
    assert!(!refused.status.success());
    server.ctl_ok(&["reload"]);
    server.ctl_ok(&["status"]); // not a change: not audited

    // The writer runs after the reply: give it a moment.
    let uid = unsafe { libc::getuid() };
    let history = |server: &Server| -> Vec<serde_json::Value> {
        let text = server.ctl_ok(&["history", "--json"]);
        serde_json::from_str(&text).unwrap()
    };
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = history(&server);
        if entries.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[0]["request"]["cmd"], "flip");
    assert_eq!(entries[0]["request"]["service"], "app");
    assert_eq!(entries[0]["outcome"], "flipped");
    assert_eq!(entries[0]["ok"], true);
    assert_eq!(entries[0]["uid"], uid);
    assert!(entries[0]["pid"].as_u64().unwrap() > 0);
    assert_eq!(entries[1]["ok"], false);
    assert!(
        entries[1]["outcome"]
            .as_str()
            .unwrap()
            .contains("unknown service")
    );
    assert_eq!(entries[2]["request"]["cmd"], "reload");
    let text = server.ctl_ok(&["history", "app"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("-> done: flipped"), "{text}");

    let dir = server.kill9();
    let audit = std::fs::read_to_string(dir.path().join("run/audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 3, "{audit}");
    let server = Server::start_in(dir);
    assert_eq!(history(&server).len(), 3, "kept across kill -9");

    // Bounded: 4 KiB per file, one older file kept.
    for i in 0..40 {
        let to = if i % 2 == 0 { "blue" } else { "green" };
        server.ctl_ok(&["flip", "app", "--to", to, "--now"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let current = std::fs::metadata(server.dir.path().join("run/audit.jsonl")).unwrap();
    let older = std::fs::metadata(server.dir.path().join("run/audit.jsonl.1")).unwrap();
    assert!(current.len() <= 4096 && older.len() <= 4096);
    let kept = history(&server);
    assert!(kept.len() > 10 && kept.len() < 43, "{}", kept.len());
    assert_eq!(kept.last().unwrap()["request"]["to"], "green");
}

#[test]
fn the_log_level_changes_at_run_time_through_ctl() {
    let dir = Setup::default().write();
    let missing = dir.path().join("no-such-notify.sock");
    let server = Server::start_in_with_env(dir, &[("NOTIFY_SOCKET", missing.as_os_str())]);
    // A notification that cannot be sent is logged at debug: not shown at info.
    server.ctl_ok(&["reload"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!server.log().contains("sd_notify to"), "{}", server.log());

    assert!(
        server
            .ctl_ok(&["log-level", "debug"])
            .contains("log filter now debug")
    );
    server.ctl_ok(&["reload"]);
    assert!(
        server.wait_for_log("sd_notify to", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let bad = server.ctl(&["log-level", "flipdns=[[["]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad log filter"));
}

/// Port 53 without root: the refused bind says how to get the capability instead of
/// running as root. Runs the server as another user, so it needs root.
#[test]
fn a_privileged_port_refused_says_how_to_bind_it_without_root() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: running serve as another user needs root (CI runs as root)");
        return;
    }
    // Containers often let every user bind every port; then there is nothing to refuse.
    let unprivileged_from: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_from <= 53 {
        eprintln!(
            "skipped: this kernel lets any user bind port 53 (ip_unprivileged_port_start = {unprivileged_from})"
        );
        return;
    }
    let setup = Setup::default();
    let dir = setup.write();
    let config = setup
        .config()
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:53\"]");
    std::fs::write(dir.path().join("flipdns.toml"), config).unwrap();
    // The user may read the config and write its state; only the port is in its way.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("flipdns.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    // It must fail at once; should it bind after all, it is killed rather than waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("cannot bind udp 127.0.0.1:53: Permission denied (os error 13); ports below 1024 need CAP_NET_BIND_SERVICE: run under the systemd unit in contrib/systemd (AmbientCapabilities), or `sudo setcap cap_net_bind_service=+ep $(command -v flipdns)`, rather than as root"),
        "{err}"
    );
}

/// Every event of a change is in the trail under one id with who asked for it: the flip
/// asked, the flip at its deadline (after a kill -9 in between), the settle; and a flip
/// refused at its deadline, then the cancel that ended that change.
#[test]
fn a_changes_whole_life_is_audited_under_one_id_across_kill_9() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gated = format!(
        "[[service]]\nname = \"gated\"\nblue = [\"192.0.2.20\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 2\ncutover_ttl = 1\nsettle = \"3s\"\n[service.health]\nkind = \"tcp\"\nport = {port}\ntimeout = \"300ms\"\n"
    );
    let server = Server::start_with(&Setup {
        services: format!("{}{gated}", short_service("")),
        ..Setup::default()
    });
    let scheduled = server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait"]);
    assert!(scheduled.contains("flip to green"), "{scheduled}");
    let refused = server.ctl(&["flip", "gated", "--to", "green"]);
    assert!(!refused.status.success(), "green's health port is closed");
    // The trail is written after the reply, by a thread of its own (README, "Audit
    // trail"): let the refusal reach it before the kill -9, which would lose it.
    let written = common::until(Duration::from_secs(10), || {
        server.ctl_ok(&["history", "gated"]).contains("refused")
    });
    assert!(
        written.is_some(),
        "{}",
        server.ctl_ok(&["history", "gated"])
    );
    let server = Server::start_in(server.kill9());

    let history = |service: &str| -> Vec<serde_json::Value> {
        let text = server.ctl_ok(&["history", service, "--json"]);
        serde_json::from_str(&text).unwrap()
    };
    let events = |entries: &[serde_json::Value]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    };
    let mut settled = Vec::new();
    common::until(Duration::from_secs(20), || {
        settled = history("app");
        settled.len() >= 3
    })
    .expect("the flip and the settle are recorded");
    assert_eq!(
        events(&settled),
        ["asked", "flipped", "settled"],
        "{settled:#?}"
    );
    let id = &settled[0]["change"];
    assert!(id.as_u64().is_some(), "{settled:#?}");
    let uid = unsafe { libc::getuid() };
    for entry in &settled {
        assert_eq!(&entry["change"], id, "one change: {settled:#?}");
        let principal = entry["principal"].as_str().unwrap();
        assert!(
            principal.ends_with(&format!("(uid {uid})")) || principal == format!("uid {uid}"),
            "{principal}"
        );
    }
    assert!(
        settled[1]["outcome"]
            .as_str()
            .unwrap()
            .contains("blue -> green at the drain deadline"),
        "{settled:#?}"
    );

    server.ctl_ok(&["cancel", "gated"]);
    let mut gated = Vec::new();
    common::until(Duration::from_secs(10), || {
        gated = history("gated");
        gated.len() >= 3
    })
    .expect("the refusal and the cancel are recorded");
    assert_eq!(events(&gated), ["asked", "refused", "asked"], "{gated:#?}");
    assert_eq!(gated[1]["ok"], false);
    assert!(
        gated[1]["outcome"]
            .as_str()
            .unwrap()
            .contains("unhealthy 127.0.0.1"),
        "{gated:#?}"
    );
    assert_eq!(gated[2]["request"]["cmd"], "cancel");
    assert!(
        gated.iter().all(|e| e["change"] == gated[0]["change"]),
        "one change: {gated:#?}"
    );
    assert_ne!(gated[0]["change"], *id, "two changes, two ids");

    let text = server.ctl_ok(&["history", "app"]);
    assert!(text.contains("flipped (asked by "), "{text}");
    assert!(text.contains(&format!("#{id}")), "{text}");
}

/// JSON log fields keep their types: counts are numbers, and a reload names each service it
/// added, removed or changed on a line of its own (a field is never a list in a string).
#[test]
fn json_log_fields_are_typed() {
    let dir = Setup::default().write();
    let server = Server::start_in_with_env(dir, &[("FLIPDNS_LOG_FORMAT", "json".as_ref())]);
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let config = server.config();
    let text = std::fs::read_to_string(&config).unwrap();
    let added = short_service("").replace("\"app\"", "\"extra\"");
    std::fs::write(&config, format!("{text}\n{added}")).unwrap();
    server.ctl_ok(&["reload"]);
    let mut lines = Vec::new();
    common::until(Duration::from_secs(5), || {
        lines = server
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        lines.iter().any(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload: added"))
        })
    })
    .expect("the reload's lines");
    let with = |message: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))["fields"]
            .clone()
    };
    let flipped = with("flipped");
    assert_eq!(flipped["flips"], 1, "{flipped}");
    assert!(flipped["serial"].is_u64(), "{flipped}");
    let reloaded = with("reloaded");
    assert_eq!(reloaded["added"], 1, "{reloaded}");
    assert_eq!(reloaded["removed"], 0, "{reloaded}");
    assert_eq!(with("reload: added")["service"], "extra");
}
