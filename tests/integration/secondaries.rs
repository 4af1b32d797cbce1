//! flipdns as the hidden primary of stock secondaries: NSD, Knot and BIND follow every flip
//! by NOTIFY and IXFR (AXFR when the history does not reach), signed with TSIG; transfers
//! are refused to anyone else; a cutover waits for the whole fleet; a killed primary leaves
//! the secondaries serving the last complete zone.
//!
//! The zone's SOA refresh is a day, so a secondary that follows within seconds followed the
//! NOTIFY, not its refresh timer.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::secondaries::{KEY, SECRET, free_port, primary_dir};
use crate::common::{Kind, Secondary, Server, Setup, dig};

/// The zone with a refresh of a day: only NOTIFY can make a secondary follow quickly.
const ZONE: &str = "\
$ORIGIN svc.example.com.
$TTL 3600
@       IN SOA  ns1 hostmaster.example.com. 2026112601 86400 3600 1209600 60
        IN NS   ns1
        IN NS   ns2
ns1     IN A    192.0.2.53
ns2     IN A    192.0.2.54
";

/// How long a secondary may take to follow a change: NOTIFY, SOA check, transfer, load.
/// Measured in milliseconds; the bound leaves room for a loaded machine.
const FOLLOW: Duration = Duration::from_secs(10);

/// How long a zone of tens of thousands of records may take to load in a debug build.
const BIG_ZONE: Duration = Duration::from_secs(60);

/// A primary with the test key and `secondaries` (name, port), and `extra` config.
fn primary(secondaries: &[(&str, u16)], services: &str, extra: &str) -> Server {
    let setup = Setup {
        zone: ZONE.into(),
        services: services.into(),
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        ..Setup::default()
    };
    Server::start_in(primary_dir(setup, secondaries, extra))
}

fn service(ttl: u32, cutover_ttl: u32) -> String {
    format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = {ttl}\ncutover_ttl = {cutover_ttl}\nsettle = \"10m\"\n"
    )
}

fn serial(server: &Server) -> u32 {
    server
        .dig(&["svc.example.com", "SOA"])
        .soa_serial()
        .unwrap()
}

/// The address `app` has on `port`, and the TTL it carries.
fn app(port: u16) -> Option<(String, u32)> {
    let answer = dig(port, &["app.svc.example.com", "A"]);
    answer.answer.first().map(|r| (r.data.clone(), r.ttl))
}

/// Lines of the primary's log about transfers to `port`'s secondary... by kind.
fn transfers(server: &Server, kind: &str) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("zone transfer out") && l.contains(&format!("kind=\"{kind}\"")))
        .count()
}

#[test]
fn nsd_knot_and_bind_follow_every_flip_and_prepare_by_notify_and_ixfr() {
    let ports = [free_port(), free_port(), free_port()];
    let server = primary(
        &[("nsd", ports[0]), ("knot", ports[1]), ("bind", ports[2])],
        &service(300, 5),
        "",
    );
    let fleet: Vec<Secondary> = [Kind::Nsd, Kind::Knot, Kind::Bind]
        .into_iter()
        .zip(ports)
        .map(|(kind, port)| Secondary::start(kind, port, server.port))
        .collect();
    let first = serial(&server);
    for secondary in &fleet {
        assert!(
            secondary.wait_serial(first, FOLLOW).is_some(),
            "{} never loaded the zone",
            secondary.kind.name()
        );
    }
    assert_eq!(transfers(&server, "axfr"), 3, "{}", server.log());

    // A flip: every secondary serves the new color, and the reply says so.
    let started = Instant::now();
    let out = server.ctl(&["--json", "flip", "app", "--to", "green", "--now"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let converged = reply["fleet"]["converged"].as_array().unwrap();
    assert_eq!(converged.len(), 3, "{reply}");
    assert!(reply["fleet"]["behind"].as_array().unwrap().is_empty());
    let took = started.elapsed();
    for secondary in &fleet {
        let serves = common::until(FOLLOW, || {
            app(secondary.port).is_some_and(|(a, _)| a == "198.51.100.10")
        });
        assert!(serves.is_some(), "{} kept blue", secondary.kind.name());
    }
    // The figure for the record: from the flip to each secondary seen serving it.
    for c in converged {
        eprintln!(
            "{} serves the flip {} ms after it",
            c["name"], c["after_ms"]
        );
    }
    eprintln!(
        "`flip --now` returned, every secondary serving green, after {} ms",
        took.as_millis()
    );
    assert_eq!(
        transfers(&server, "ixfr"),
        3,
        "IXFR for each:\n{}",
        server.log()
    );
    let knot = &fleet[1];
    assert!(knot.log().contains("IXFR, incoming"), "{}", knot.log());
    let bind = &fleet[2];
    assert!(
        bind.log().contains("got incremental response"),
        "{}",
        bind.log()
    );

    // Back to steady (the normal TTL), then a prepare: every secondary hands out the short
    // TTL, and the service's status stops waiting for them.
    server.ctl_ok(&["cancel", "app"]);
    server.ctl_ok(&["prepare", "app"]);
    for secondary in &fleet {
        assert!(
            common::until(FOLLOW, || app(secondary.port)
                .is_some_and(|(_, ttl)| ttl == 5))
            .is_some(),
            "{} kept the long TTL",
            secondary.kind.name()
        );
    }
    let confirmed = common::until(FOLLOW, || {
        let status = crate::common::service_status(&server, "app");
        status.get("fleet").is_none()
    });
    assert!(confirmed.is_some(), "{}", server.ctl_ok(&["status"]));
    assert!(server.log().contains("every secondary serves the change"));
    let status = server.ctl_ok(&["status"]);
    for name in ["nsd", "knot", "bind"] {
        assert!(
            status.contains(&format!("secondary {name} (127.0.0.1:")),
            "{status}"
        );
    }
    assert!(status.contains("(current)"), "{status}");
    let metrics = crate::common::scrape(&server, "/metrics");
    let ixfrs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flipdns_transfers_total{result=\"ixfr\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ixfrs >= 3, "{metrics}");
    let current = "flipdns_secondary_current{secondary=\"knot\",zone=\"svc.example.com.\"} 1";
    assert!(metrics.contains(current), "{metrics}");
}

#[test]
fn an_ixfr_from_a_serial_the_history_does_not_reach_gets_the_whole_zone() {
    let port = free_port();
    let server = primary(&[("bind", port)], &service(300, 5), "");
    let mut bind = Secondary::start(Kind::Bind, port, server.port);
    let first = serial(&server);
    assert!(bind.wait_serial(first, FOLLOW).is_some(), "{}", bind.log());
    // BIND keeps its copy on disk; a change while it is down, then a restart of the primary
    // (the history starts empty in a new process).
    bind.stop();
    let out = server.ctl(&[
        "flip",
        "app",
        "--to",
        "green",
        "--now",
        "--no-wait-secondaries",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_in(server.sigterm());
    bind.restart();
    assert!(
        bind.wait_serial(first + 1, FOLLOW).is_some(),
        "{}\n{}",
        bind.log(),
        server.log()
    );
    assert_eq!(app(port).unwrap().0, "198.51.100.10");
    assert_eq!(transfers(&server, "ixfr_full"), 1, "{}", server.log());
    assert!(
        bind.log().contains("got nonincremental response"),
        "{}",
        bind.log()
    );
}

#[test]
fn transfers_are_refused_to_strangers_wrong_keys_and_missing_keys() {
    // A secondary is configured (nothing listens there), so the ACL holds 127.0.0.1 + key.
    let server = primary(&[("ns2", free_port())], &service(300, 5), "");
    let axfr = |args: &[&str]| {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &server.port.to_string(),
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .args(["svc.example.com", "AXFR"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let good = format!("hmac-sha256:{KEY}:{SECRET}");
    let signed = axfr(&["-y", &good]);
    assert!(signed.contains("app.svc.example.com."), "{signed}");
    // No key where one is required: refused, nothing leaked.
    let unsigned = axfr(&[]);
    assert!(unsigned.contains("Transfer failed"), "{unsigned}");
    assert!(!unsigned.contains("app.svc.example.com."), "{unsigned}");
    // A wrong secret: NOTAUTH with BADSIG.
    let wrong = axfr(&[
        "-y",
        &format!("hmac-sha256:{KEY}:d3JvbmcgYnV0IGxvbmcgZW5vdWdoIHRvIHBhc3M="),
    ]);
    assert!(!wrong.contains("app.svc.example.com."), "{wrong}");
    // From an address not listed, even with the key: refused.
    let stranger = axfr(&["-b", "127.0.0.2", "-y", &good]);
    assert!(stranger.contains("Transfer failed"), "{stranger}");
    assert!(!stranger.contains("app.svc.example.com."), "{stranger}");
    // Any query signed with an unknown key: NOTAUTH and BADKEY, unsigned.
    let unknown = server.dig(&[
        "-y",
        &format!("hmac-sha256:nokey:{SECRET}"),
        "app.svc.example.com",
        "A",
    ]);
    assert_eq!(unknown.status, "NOTAUTH", "{}", unknown.raw);
    assert!(unknown.raw.contains("BADKEY"), "{}", unknown.raw);
    assert!(unknown.answer.is_empty());
    // Signed with a wrong secret: NOTAUTH and BADSIG.
    let badsig = server.dig(&[
        "-y",
        &format!("hmac-sha256:{KEY}:d3JvbmcgYnV0IGxvbmcgZW5vdWdoIHRvIHBhc3M="),
        "app.svc.example.com",
        "A",
    ]);
    assert_eq!(badsig.status, "NOTAUTH", "{}", badsig.raw);
    assert!(badsig.raw.contains("BADSIG"), "{}", badsig.raw);
    // Signed well: answered, and the answer verifies (dig says nothing of a bad TSIG).
    let good_query = server.dig(&["-y", &good, "app.svc.example.com", "A"]);
    assert_eq!(good_query.status, "NOERROR", "{}", good_query.raw);
    assert!(
        !good_query.raw.contains("Couldn't verify"),
        "{}",
        good_query.raw
    );
}

#[test]
fn a_flip_waits_for_a_secondary_that_was_down_and_proceeds_when_it_is_back() {
    let port = free_port();
    let server = primary(
        &[("nsd", port)],
        &service(2, 1),
        "[fleet]\nwait = \"60s\"\n",
    );
    let mut nsd = Secondary::start(Kind::Nsd, port, server.port);
    assert!(nsd.wait_serial(serial(&server), FOLLOW).is_some());
    nsd.stop();
    let ctl = Command::new(crate::common::BIN)
        .args(["ctl", "--socket"])
        .arg(server.socket())
        .args(["flip", "app", "--to", "green"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The drain here is 2 s; then the flip waits for nsd and says so.
    let waiting = common::until(Duration::from_secs(20), || {
        let status = server.ctl_ok(&["status", "app"]);
        status.contains("secondaries behind serial") && status.contains("nsd (127.0.0.1:")
    });
    assert!(waiting.is_some(), "{}", server.ctl_ok(&["status", "app"]));
    std::thread::sleep(Duration::from_secs(3)); // well past the 2 s drain
    let text = server.ctl_ok(&["status", "app"]);
    assert!(
        text.contains("the flip to green waits for the secondaries below until")
            && text.contains(
                "then is refused (`flipdns ctl flip app --to green --force` goes without them)"
            ),
        "a flip past its drain says what it waits for, not that it was due seconds ago: {text}"
    );
    let status = crate::common::service_status(&server, "app");
    assert_eq!(
        status["live"], "blue",
        "no flip while nsd is not proven: {status}"
    );
    nsd.restart();
    let out = ctl.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", server.log());
    assert!(
        stderr.contains("waiting for 1 secondary to serve serial"),
        "{stderr}"
    );
    assert!(
        common::until(FOLLOW, || app(port)
            .is_some_and(|(a, _)| a == "198.51.100.10"))
        .is_some(),
        "nsd follows the flip"
    );
}

#[test]
fn a_flip_whose_secondary_never_confirms_is_refused_and_names_it() {
    // Nothing listens at the secondary's address.
    let server = primary(
        &[("ns2", free_port())],
        &service(2, 1),
        "[fleet]\nwait = \"2s\"\n",
    );
    let out = server.ctl(&["flip", "app", "--to", "green"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(23), "{stderr}");
    assert!(stderr.contains("the drain is not proven"), "{stderr}");
    assert!(stderr.contains("ns2 (127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("`--force`"), "{stderr}");
    assert_eq!(
        crate::common::service_status(&server, "app")["live"],
        "blue"
    );
    // --force flips without them, and says the flip is done here only (exit 5).
    let forced = server.ctl(&["flip", "app", "--to", "green", "--force"]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert_eq!(forced.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("FLIPPED HERE ONLY"), "{stdout}");

    // The trail has each event: the refusal at the deadline and the fleet's outcome too.
    let mut trail = Vec::new();
    common::until(Duration::from_secs(5), || {
        let text = server.ctl_ok(&["history", "app", "--json"]);
        trail = serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap();
        trail.len() >= 5
    });
    let events: Vec<_> = trail
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("asked", true),
            ("refused", false),
            ("asked", true),
            ("flipped", true),
            ("fleet", false)
        ],
        "{trail:#?}"
    );
    assert!(
        trail[1]["outcome"]
            .as_str()
            .unwrap()
            .contains("ns2 (127.0.0.1:"),
        "the refusal names the secondary: {trail:#?}"
    );
    assert!(
        trail[4]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("flipped here only"),
        "{trail:#?}"
    );
    // The forced flip joined the cutover the refusal left preparing: one change.
    assert!(
        trail.iter().all(|e| e["change"] == trail[0]["change"]),
        "{trail:#?}"
    );
}

#[test]
fn a_zone_of_thousands_of_services_transfers_in_many_messages_completely() {
    let mut services = String::new();
    for i in 0..2000 {
        services.push_str(&format!(
            "[[service]]\nname = \"s{i}\"\nblue = [\"10.1.{}.{}\"]\ngreen = [\"10.2.{}.{}\"]\nlive = \"blue\"\nttl = 300\ncutover_ttl = 5\nsettle = \"1m\"\n",
            i / 250,
            i % 250 + 1,
            i / 250,
            i % 250 + 1
        ));
    }
    let port = free_port();
    let server = primary(&[("bind", port)], &services, "");
    let bind = Secondary::start(Kind::Bind, port, server.port);
    assert!(
        bind.wait_serial(serial(&server), Duration::from_secs(30))
            .is_some(),
        "{}",
        bind.log()
    );
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("zone transfer out"))
        .unwrap()
        .to_string();
    let messages: usize = line
        .split("messages=")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| m.parse().ok())
        .unwrap();
    assert!(messages > 5, "{line}");
    // BIND lets anyone transfer from it: its copy is ours, record for record.
    let records = |port: u16, key: bool| {
        let mut command = Command::new("dig");
        command.args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+nocmd",
            "+nostats",
            "+noall",
            "+answer",
        ]);
        if key {
            command.args(["-y", &format!("hmac-sha256:{KEY}:{SECRET}")]);
        }
        let out = command.args(["svc.example.com", "AXFR"]).output().unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("TSIG") && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        lines.sort();
        lines.dedup();
        lines
    };
    let ours = records(server.port, true);
    let theirs = records(port, false);
    assert!(ours.len() > 6000, "{}", ours.len());
    assert_eq!(ours, theirs);
    assert!(dig(port, &["s1999.svc.example.com", "A"]).data("A") == ["10.1.7.250"]);
}

#[test]
fn a_primary_killed_during_a_transfer_leaves_the_secondary_serving_the_last_complete_zone() {
    // Static records make the zone large (megabytes), so the transfer takes a while.
    let mut zone = ZONE.to_string();
    for i in 0..60000 {
        zone.push_str(&format!(
            "h{i} IN A 10.{}.{}.{}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let port = free_port();
    let setup = Setup {
        zone,
        services: service(300, 5),
        ..Setup::default()
    };
    let server = Server::start_within(primary_dir(setup, &[("knot", port)], ""), BIG_ZONE);
    let mut knot = Secondary::start(Kind::Knot, port, server.port);
    let complete = serial(&server);
    assert!(
        knot.wait_serial(complete, Duration::from_secs(60))
            .is_some(),
        "{}",
        knot.log()
    );
    // Knot keeps its copy in its journal. A change while it is down and a restart of the
    // primary (an empty history) make its next transfer the whole zone.
    knot.stop();
    let out = server.ctl(&[
        "flip",
        "app",
        "--to",
        "green",
        "--now",
        "--no-wait-secondaries",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_within(server.sigterm(), BIG_ZONE);
    let before = knot.log().matches("AXFR, incoming").count();
    knot.restart();
    assert!(
        common::until(Duration::from_secs(30), || knot
            .log()
            .matches("AXFR, incoming")
            .count()
            > before)
        .is_some(),
        "{}",
        knot.log()
    );
    let server_dir = server.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let log = knot.log();
    let new = complete + 1;
    assert!(
        !log.contains(&format!("-> {new}")),
        "the transfer finished before the kill; make the zone larger:\n{log}"
    );
    assert_eq!(knot.serial(), Some(complete), "{log}");
    assert_eq!(app(port).unwrap().0, "192.0.2.10", "the last complete zone");
    assert_eq!(
        dig(port, &["h59999.svc.example.com", "A"]).data("A"),
        ["10.0.234.95"]
    );
    drop(server_dir);
}

/// A secondary entry for 127.0.0.1 without a key, so that plain `dig` may transfer.
fn open_to_dig(ixfr_history: usize, extra: &str) -> String {
    format!(
        "[[secondary]]\nname = \"dig\"\naddress = \"127.0.0.1:{}\"\n[limits]\nixfr_history = {ixfr_history}\n{extra}",
        free_port()
    )
}

/// `dig` with an IXFR from `serial` (over TCP unless `udp`), its answer records.
fn ixfr(server: &Server, serial: u32, udp: bool) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &server.port.to_string(),
            "+time=2",
            "+tries=1",
        ])
        .args(["+noall", "+answer"])
        .args(if udp { vec!["+notcp"] } else { vec![] })
        .arg("svc.example.com")
        .arg(format!("IXFR={serial}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(String::from)
        .collect()
}

#[test]
fn ixfr_answers_from_a_history_of_ixfr_history_changes() {
    let server = Server::start_with(&Setup {
        zone: ZONE.into(),
        services: service(300, 5),
        extra: open_to_dig(2, ""),
        ..Setup::default()
    });
    let first = serial(&server);
    for to in ["green", "blue", "green"] {
        server.ctl_ok(&[
            "flip",
            "app",
            "--to",
            to,
            "--now",
            "--force",
            "--no-wait-secondaries",
        ]);
    }
    assert_eq!(serial(&server), first + 3);
    // Up to date: the SOA alone.
    assert_eq!(ixfr(&server, first + 3, false).len(), 1);
    // Within the history (the last two changes): SOA, then per change its old SOA, what
    // went, its new SOA, what came, then the SOA again.
    let changes = ixfr(&server, first + 1, false);
    let soas = changes.iter().filter(|l| l.contains("\tSOA\t")).count();
    assert_eq!(soas, 2 + 2 * 2, "{changes:#?}");
    assert!(
        changes.iter().any(|l| l.contains("198.51.100.10")),
        "{changes:#?}"
    );
    assert!(
        !changes
            .iter()
            .any(|l| l.contains("ns1.svc.example.com.\t3600\tIN\tA")),
        "only changes: {changes:#?}"
    );
    // Beyond the history: the whole zone, with its static records.
    let whole = ixfr(&server, first, false);
    assert!(
        whole.iter().any(|l| l.starts_with("ns1.svc.example.com.")),
        "{whole:#?}"
    );
    assert_eq!(
        whole.iter().filter(|l| l.contains("\tSOA\t")).count(),
        2,
        "{whole:#?}"
    );
    // Over UDP: the SOA, to come back over TCP.
    let udp = ixfr(&server, first + 1, true);
    assert!(
        udp.len() <= 1 || udp.iter().all(|l| l.contains("SOA")),
        "{udp:#?}"
    );
}

#[test]
fn transfers_are_bounded_in_number_and_in_time() {
    // A zone of megabytes, one transfer at a time, two seconds for each.
    let mut zone = ZONE.to_string();
    for i in 0..60000 {
        zone.push_str(&format!(
            "h{i} IN A 10.{}.{}.{}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let setup = Setup {
        zone,
        services: service(300, 5),
        extra: open_to_dig(100, "transfers = 1\ntransfer_timeout = \"2s\"\n"),
        ..Setup::default()
    };
    let server = Server::start_within(setup.write(), BIG_ZONE);
    // A reader that asks and never reads (with a small receive buffer, so the kernel does
    // not take the whole zone for it) holds the only transfer.
    let mut stalled = small_window_connect(server.port);
    let query = crate::common::query(7, "svc.example.com", 252);
    std::io::Write::write_all(&mut stalled, &crate::common::framed(&query)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let axfr = || {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &server.port.to_string(),
                "+time=5",
                "+tries=1",
            ])
            .args(["svc.example.com", "AXFR"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let busy = axfr();
    assert!(
        busy.contains("SERVFAIL") || busy.contains("Transfer failed"),
        "{}\n{}",
        &busy[..busy.len().min(600)],
        server.log()
    );
    // The stalled transfer is cut off after transfer_timeout; then the next one goes.
    assert!(
        server.wait_for_log("cut off after transfer_timeout", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let done = axfr();
    assert!(
        done.contains("h59999.svc.example.com."),
        "{}",
        &done[done.len().saturating_sub(500)..]
    );
    drop(stalled);
}

/// A TCP connection to `port` on 127.0.0.1 with a 4 KiB receive buffer, set before the
/// handshake so the window stays small.
fn small_window_connect(port: u16) -> std::net::TcpStream {
    small_window_connect_from(port, [127, 0, 0, 1])
}

/// [`small_window_connect`] from the loopback address `source`.
fn small_window_connect_from(port: u16, source: [u8; 4]) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: a socket we create, configure and hand to TcpStream, which then owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes(source).to_be(),
            },
            sin_zero: [0; 8],
        };
        let bound = libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let done = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(done, 0, "connect: {}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// Issue 22: eight transfers read at a crawl from one secondary's address held every slot,
/// and every other secondary got SERVFAIL for as long as `transfer_timeout`, renewably. One
/// source now holds at most `transfers_per_source` slots, and a reader slower than
/// `transfer_min_rate` is cut off after the grace.
#[test]
fn a_slow_secondary_cannot_hold_every_transfer_slot() {
    let mut zone = ZONE.to_string();
    for i in 0..60000 {
        zone.push_str(&format!(
            "h{i} IN A 10.{}.{}.{}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let slow = free_port();
    let setup = Setup {
        zone,
        services: service(300, 5),
        extra: format!(
            "[[secondary]]\nname = \"slow\"\naddress = \"127.0.0.2:{slow}\"\n{}",
            open_to_dig(100, "transfers = 4\ntransfers_per_source = 2\n")
        ),
        ..Setup::default()
    };
    let server = Server::start_within(setup.write(), BIG_ZONE);
    let query = crate::common::query(7, "svc.example.com", 252);
    let framed = crate::common::framed(&query);
    // The slow secondary asks for eight and reads none of them.
    let mut crawling: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut stream = small_window_connect_from(server.port, [127, 0, 0, 2]);
            std::io::Write::write_all(&mut stream, &framed).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Its third and later get SERVFAIL at once: beyond its share, no share would stay free.
    let mut refused = 0;
    for stream in crawling.iter_mut() {
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if crate::common::read_reply(stream).is_ok_and(|r| r[3] & 0x0F == 2) {
            refused += 1;
        }
    }
    assert_eq!(refused, 6, "two transfers go, six are SERVFAIL");
    // Another secondary still gets the whole zone.
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &server.port.to_string(),
            "+time=5",
            "+tries=1",
        ])
        .args(["svc.example.com", "AXFR"])
        .output()
        .unwrap();
    let done = String::from_utf8_lossy(&out.stdout);
    assert!(
        done.contains("h59999.svc.example.com."),
        "{}",
        &done[done.len().saturating_sub(500)..]
    );
    // The two it holds are cut off for their rate, long before transfer_timeout.
    assert!(
        server.wait_for_log("slower than transfer_min_rate", Duration::from_secs(30)),
        "{}",
        server.log()
    );
    drop(crawling);
}

#[test]
fn a_flip_waiting_for_the_fleet_still_waits_after_kill_9_and_goes_on_when_it_is_back() {
    let port = free_port();
    let server = primary(
        &[("nsd", port)],
        &service(2, 1),
        "[fleet]\nwait = \"60s\"\n",
    );
    let mut nsd = Secondary::start(Kind::Nsd, port, server.port);
    assert!(nsd.wait_serial(serial(&server), FOLLOW).is_some());
    nsd.stop();
    server.ctl_ok(&["flip", "app", "--to", "green", "--no-wait"]);
    let behind = |server: &Server| {
        let status = crate::common::service_status(server, "app");
        status["fleet"]["behind"].as_array().is_some_and(|b| {
            b.iter()
                .any(|s| s.as_str().unwrap_or("").starts_with("nsd ("))
        })
    };
    assert!(common::until(Duration::from_secs(10), || behind(&server)).is_some());
    let server = Server::start_in(server.kill9());
    // The wait is in the state: after the restart the flip still waits, well past the drain.
    std::thread::sleep(Duration::from_secs(4));
    let status = crate::common::service_status(&server, "app");
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["phase"]["target"], "green", "{status}");
    assert!(behind(&server), "{status}");
    nsd.restart();
    let flipped = common::until(Duration::from_secs(30), || {
        crate::common::service_status(&server, "app")["live"] == "green"
    });
    assert!(flipped.is_some(), "{}\n{}", server.log(), nsd.log());
    assert!(
        common::until(FOLLOW, || app(port)
            .is_some_and(|(a, _)| a == "198.51.100.10"))
        .is_some()
    );
}

/// A secondary that stops answering is called unreachable within `check_interval` +
/// `UNREACHABLE_BOUND` (3.03 s), not after one lost answer; it is then not current, even
/// though the serial it last served is ours; when it answers again it is current again.
#[test]
fn a_hung_secondary_is_seen_unreachable_within_the_bound() {
    let port = free_port();
    let server = primary(
        &[("nsd", port)],
        &service(300, 5),
        "[fleet]\ncheck_interval = \"1s\"\n",
    );
    let nsd = Secondary::start(Kind::Nsd, port, server.port);
    assert!(
        nsd.wait_serial(serial(&server), FOLLOW).is_some(),
        "{}",
        nsd.log()
    );
    let current = |server: &Server| server.ctl_ok(&["status"]).contains(" (current)");
    assert!(common::until(Duration::from_secs(5), || current(&server)).is_some());
    let metrics = |server: &Server| common::scrape(server, "/metrics");
    let reachable = "flipdns_secondary_reachable{secondary=\"nsd\",zone=\"svc.example.com.\"}";
    assert!(metrics(&server).contains(&format!("{reachable} 1")));

    nsd.pause();
    let stopped = Instant::now();
    let seen = common::until(Duration::from_secs(15), || {
        server.ctl_ok(&["status"]).contains("UNREACHABLE since")
    })
    .expect("the hung secondary is seen");
    let bound = Duration::from_secs(1) + flipdns::fleet::UNREACHABLE_BOUND;
    assert!(
        seen <= bound + Duration::from_secs(2),
        "seen after {seen:?}, bound {bound:?}"
    );
    // Three unanswered queries of 1 s each; the first may have been sent just before the
    // pause, so at least two whole timeouts.
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "three unanswered queries, not one: seen after {seen:?}"
    );
    let status = server.ctl_ok(&["status"]);
    assert!(
        status.contains(&format!("last answered serial {}", serial(&server))),
        "{status}"
    );
    assert!(!status.contains(" (current)"), "{status}");
    let text = metrics(&server);
    assert!(text.contains(&format!("{reachable} 0")), "{text}");
    assert!(
        text.contains("flipdns_secondary_current{secondary=\"nsd\",zone=\"svc.example.com.\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "flipdns_secondary_behind_seconds{secondary=\"nsd\",zone=\"svc.example.com.\"} 0"
        ),
        "unreachable is not behind: {text}"
    );
    assert!(
        server
            .log()
            .contains("unreachable: 3 SOA queries in a row failed")
    );

    nsd.resume();
    assert!(
        common::until(Duration::from_secs(10), || current(&server)).is_some(),
        "{}",
        server.ctl_ok(&["status"])
    );
    assert!(metrics(&server).contains(&format!("{reachable} 1")));
    assert!(server.log().contains("reachable again"));
}

/// On a terminal, a flip followed to the end reads as one story, each step once and in the
/// order it happened: scheduled (or joined), the drain counted down in place, the health
/// gate, the flip with how long a rollback stays instant, each secondary serving it; the
/// reply after the progress repeats none of it.
#[test]
fn a_followed_flip_reads_in_order_on_a_terminal() {
    let stub = common::HttpStub::start("127.0.0.1:0", 200);
    let services = format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 2\ncutover_ttl = 1\nsettle = \"10m\"\n[service.health]\nport = {}\ninterval = \"1h\"\n{}",
        stub.addr.port(),
        service(2, 1).replace("\"app\"", "\"api\"")
    );
    let port = free_port();
    let server = primary(&[("nsd", port)], &services, "");
    let nsd = Secondary::start(Kind::Nsd, port, server.port);
    assert!(
        nsd.wait_serial(serial(&server), FOLLOW).is_some(),
        "{}",
        nsd.log()
    );
    let ctl = |args: &[&str]| {
        let mut command = Command::new(common::BIN);
        command
            .args(["ctl", "--socket"])
            .arg(server.socket())
            .args(args);
        command
    };

    let screen = common::pty::run(ctl(&["flip", "app", "--to", "green"]));
    let lines = screen.lines().join("\n");
    assert!(screen.status.success(), "{lines}\n{}", server.log());
    let scheduled = screen.line_of("app: flip to green scheduled for");
    let drain = screen.line_of("app -> green [");
    let health = screen.line_of("app: health of green: 1/1 healthy");
    let flip = screen.line_of("app: blue -> green (flip 1, serial");
    let secondary = screen.line_of("app: secondary nsd serves serial");
    assert!(
        scheduled < drain && drain < health && health < flip && flip < secondary,
        "in the order it happened:\n{lines}"
    );
    assert!(
        screen.lines()[flip].contains("`flipdns ctl rollback app` is instant"),
        "{lines}"
    );
    assert!(
        screen.raw.matches("\rapp -> green [").count() >= 2,
        "the drain counted down in place, one line redrawn: {:?}",
        screen.raw
    );

    // A second client joins a flip scheduled before, and says so.
    server.ctl_ok(&["flip", "api", "--to", "green", "--no-wait"]);
    let screen = common::pty::run(ctl(&["flip", "api", "--to", "green"]));
    let lines = screen.lines().join("\n");
    assert!(screen.status.success(), "{lines}");
    let joined = screen.line_of("api: joining the flip to green scheduled before, for");
    let flip = screen.line_of("api: blue -> green (flip 1, serial");
    screen.line_of("api: secondary nsd serves serial");
    assert!(joined < flip, "{lines}");
}

/// `ctl notify` sends the NOTIFY now and says what each secondary serves after it (one that
/// missed a change while it was down serves it by then); an unknown name is its own error; a
/// secondary that does not answer makes the exit code 5, and the trail has each notify.
#[test]
fn ctl_notify_renotifies_and_shows_what_each_serves() {
    let port = free_port();
    let server = primary(
        &[("knot", port), ("ns-dead", free_port())],
        &service(300, 5),
        "[fleet]\nnotify_retries = 0\n",
    );
    let mut knot = Secondary::start(Kind::Knot, port, server.port);
    assert!(
        knot.wait_serial(serial(&server), FOLLOW).is_some(),
        "{}",
        knot.log()
    );
    knot.stop();
    server.ctl_ok(&[
        "flip",
        "app",
        "--to",
        "green",
        "--now",
        "--no-wait-secondaries",
    ]);
    let ours = serial(&server);
    knot.restart();
    assert!(
        common::until(FOLLOW, || knot.serial().is_some()).is_some(),
        "knot is back"
    );

    let out = server.ctl(&["notify", "knot"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "knot (127.0.0.1:{port}) svc.example.com. serial {ours}: acknowledged, serves {ours} (current)"
        )),
        "{stdout}"
    );
    assert_eq!(knot.serial(), Some(ours), "it transferred the change");

    let all = server.ctl(&["notify"]);
    let stdout = String::from_utf8_lossy(&all.stdout);
    assert_eq!(
        all.status.code(),
        Some(5),
        "ns-dead does not answer: {stdout}"
    );
    assert!(stdout.contains("ns-dead (127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("NOT acknowledged"), "{stdout}");

    let unknown = server.ctl(&["notify", "ns9"]);
    assert_eq!(unknown.status.code(), Some(25));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no secondary \"ns9\" (configured: knot, ns-dead)"),
        "{err}"
    );

    let history = server.ctl_ok(&["history"]);
    assert!(history.contains("\"cmd\":\"notify\""), "{history}");
    assert!(history.contains("knot: 1/1 acknowledged"), "{history}");
}
