//! Real recursive resolvers in front of flipdns, each sending from its own loopback address
//! with a steady client: unbound and BIND with default caching, and unbound
//! (`cache-min-ttl: 60`), BIND (`min-cache-ttl 60`) and dnsmasq (`--min-cache-ttl=60`)
//! clamping a 5 s TTL to 60 s. After a flip the defaults converge on time; the clampers are
//! overdue while they hold the old color, then stragglers with how late they came back, and
//! a report two minutes after the flip still says so.
//!
//! It takes about four minutes, most of it waiting: a clamper's rhythm needs two of its
//! 60 s intervals before the flip, and the report is read 120 s after it.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Server, Setup, query};

/// A resolver in the foreground, killed on drop.
struct Resolver {
    name: &'static str,
    child: Child,
    /// Where clients ask it.
    addr: SocketAddr,
    /// The address it sends its queries to flipdns from.
    source: String,
    clamps: bool,
    _dir: tempfile::TempDir,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(ip: &str) -> u16 {
    UdpSocket::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(program: &str, package: &str) {
    if Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "`{program}` is not installed: this test runs real recursive resolvers. Install it with `apt-get install -y {package}` (or run .ci/run)."
        );
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Unbound,
    Bind,
    Dnsmasq,
}

/// Starts `kind` asking flipdns on `upstream` from `127.NET.0.HOST` (and answering clients
/// on `127.NET.0.HOST-10`); `clamp` is its minimum cache TTL (0: default caching).
fn start(
    name: &'static str,
    kind: Kind,
    (net, host): (u32, u32),
    upstream: u16,
    clamp: u32,
) -> Resolver {
    let source = format!("127.{net}.0.{host}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    // BIND listens on 127.0.0.1 only (it refuses other loopback addresses it does not see
    // on an interface); the others get an address of their own.
    let listen = match kind {
        Kind::Bind => "127.0.0.1".to_string(),
        _ => format!("127.{net}.0.{}", host - 10),
    };
    let port = free_port(&listen);
    let mut command = match kind {
        Kind::Unbound => {
            require("unbound", "unbound");
            let config = format!(
                "server:\n  interface: {listen}\n  port: {port}\n  outgoing-interface: {source}\n  do-ip6: no\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  username: \"\"\n  chroot: \"\"\n  directory: \"{path}\"\n  pidfile: \"\"\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  qname-minimisation: no\n  module-config: \"iterator\"\n  prefetch: no\n  serve-expired: no\n  cache-min-ttl: {clamp}\nstub-zone:\n  name: \"svc.example.com\"\n  stub-addr: 127.0.0.1@{upstream}\n"
            );
            std::fs::write(dir.path().join("unbound.conf"), config).unwrap();
            let mut c = Command::new("unbound");
            c.args(["-d", "-p", "-c"])
                .arg(dir.path().join("unbound.conf"));
            c
        }
        Kind::Bind => {
            require("named", "bind9");
            let config = format!(
                "options {{\n  directory \"{path}\";\n  pid-file none;\n  session-keyfile none;\n  managed-keys-directory \"{path}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  query-source address {source};\n  recursion yes;\n  allow-query {{ any; }};\n  allow-recursion {{ any; }};\n  dnssec-validation no;\n  prefetch 0;\n  stale-answer-enable no;\n  stale-cache-enable no;\n  qname-minimization off;\n  min-cache-ttl {clamp};\n}};\ncontrols {{ }};\nzone \"svc.example.com\" {{\n  type forward;\n  forward only;\n  forwarders {{ 127.0.0.1 port {upstream}; }};\n}};\n"
            );
            std::fs::write(dir.path().join("named.conf"), config).unwrap();
            let mut c = Command::new("named");
            c.args(["-g", "-4", "-c"])
                .arg(dir.path().join("named.conf"));
            c
        }
        Kind::Dnsmasq => {
            require("dnsmasq", "dnsmasq-base");
            let mut c = Command::new("dnsmasq");
            c.args(["-d", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
                .arg("--log-facility=-")
                .arg(format!("--listen-address={listen}"))
                .arg("--bind-interfaces")
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--server=/svc.example.com/127.0.0.1#{upstream}@{source}"
                ))
                .arg(format!("--min-cache-ttl={clamp}"));
            c
        }
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the resolver");
    let addr: SocketAddr = format!("{listen}:{port}").parse().unwrap();
    let resolver = Resolver {
        name,
        child,
        addr,
        source: source.clone(),
        clamps: clamp > 0,
        _dir: dir,
    };
    let answered = common::until(Duration::from_secs(10), || ready(addr).is_some());
    assert!(answered.is_some(), "{name} on {addr} did not answer");
    resolver
}

/// Whether the resolver answers at all (`version.bind CH TXT` touches no cache).
fn ready(resolver: SocketAddr) -> Option<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut packet = query(9, "version.bind", 16);
    let last = packet.len() - 1;
    packet[last] = 3; // class CH
    socket.send_to(&packet, resolver).ok()?;
    let mut buf = [0u8; 1500];
    socket.recv(&mut buf).ok().map(|_| ())
}

/// Asks `resolver` for the service with recursion desired.
fn ask(socket: &UdpSocket, resolver: SocketAddr) {
    let mut packet = query(7, "app.svc.example.com", 1);
    packet[2] = 0x01; // RD
    let _ = socket.send_to(&packet, resolver);
    let mut buf = [0u8; 1500];
    let _ = socket.recv(&mut buf);
}

/// `stragglers app --all` as JSON.
fn report(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.ctl_ok(&["stragglers", "app", "--all", "--json"])).unwrap()
}

fn class_of<'r>(report: &'r serde_json::Value, source: &str) -> &'r serde_json::Value {
    report["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resolver"] == source)
        .unwrap_or_else(|| panic!("{source} not in the report: {report}"))
}

#[test]
fn clamping_resolvers_are_overdue_then_stragglers_and_the_report_remembers() {
    let services = "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 5\ncutover_ttl = 5\nsettle = \"0s\"\n";
    let server = Server::start_with(&Setup {
        services: services.into(),
        ..Setup::default()
    });
    // A /24 of loopback per run (by process id), so that runs side by side do not meet.
    let net = 10 + std::process::id() % 200;
    let resolvers = [
        start("unbound", Kind::Unbound, (net, 21), server.port, 0),
        start("unbound-clamp", Kind::Unbound, (net, 22), server.port, 60),
        start("bind", Kind::Bind, (net, 23), server.port, 0),
        start("bind-clamp", Kind::Bind, (net, 24), server.port, 60),
        start("dnsmasq-clamp", Kind::Dnsmasq, (net, 25), server.port, 60),
    ];

    // One steady client per resolver, a query a second.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let stop = stop.clone();
        let targets: Vec<SocketAddr> = resolvers.iter().map(|r| r.addr).collect();
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let round = Instant::now();
                for &target in &targets {
                    ask(&socket, target);
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
            }
        })
    };

    // The clampers fetch at 0, 60 (61 for unbound) and 120 (122) s: two intervals. Flip
    // just after the third fetch, so each holds the old color for most of a minute.
    std::thread::sleep(Duration::from_secs(125));
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let flipped = Instant::now();

    // While they hold the old color: overdue; the defaults converged.
    std::thread::sleep(Duration::from_secs(30));
    let holding = report(&server);
    for r in &resolvers {
        let entry = class_of(&holding, &r.source);
        let expected = if r.clamps { "overdue" } else { "converged" };
        assert_eq!(
            entry["class"], expected,
            "{} 30 s after the flip: {entry}",
            r.name
        );
        if r.clamps {
            assert_eq!(entry["clamps"], true, "{}: {entry}", r.name);
        }
    }

    // Two minutes after the flip: the clampers converged late and are stragglers, with how
    // late; the defaults converged on time.
    std::thread::sleep(Duration::from_secs(120).saturating_sub(flipped.elapsed()));
    let later = report(&server);
    stop.store(true, Ordering::Relaxed);
    clients.join().unwrap();
    for r in &resolvers {
        let entry = class_of(&later, &r.source);
        let late_by = entry["record"]["late_by_ms"].as_u64().unwrap_or(0);
        if r.clamps {
            assert_eq!(entry["class"], "straggler", "{}: {entry}", r.name);
            assert!(
                (30_000..=60_000).contains(&late_by),
                "{} came back {late_by} ms late: {entry}",
                r.name
            );
            let ratio = entry["interval_ratio"].as_f64().unwrap_or(0.0);
            assert!(ratio > 8.0, "{}: ratio {ratio}", r.name);
        } else {
            assert_eq!(entry["class"], "converged", "{}: {entry}", r.name);
            assert!(late_by < 5_000, "{}: {entry}", r.name);
        }
    }
    assert_eq!(later["counts"]["straggler"], 3, "{later}");
    assert!(
        later["last_straggler_converged_ms"].as_u64().is_some(),
        "{later}"
    );
    let text = server.ctl_ok(&["stragglers", "app", "--all"]);
    eprintln!("{text}");
    assert!(text.contains("kept the old color"), "{text}");
}
