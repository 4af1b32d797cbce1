//! A real recursive resolver in front of flipdns: two unbound instances on loopback, one
//! with default caching and one that clamps TTLs up (`cache-min-ttl`), each sending its
//! queries from its own address. After a flip the report shows the first converged and the
//! second overdue, with an interval ratio well above 1.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Server, Setup, query};

/// An unbound in the foreground, killed on drop.
struct Unbound {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port(ip: &str) -> u16 {
    UdpSocket::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unbound(listen: &str, outgoing: &str, upstream: u16, cache_min_ttl: u32) -> Unbound {
    if Command::new("unbound").arg("-V").output().is_err() {
        panic!(
            "`unbound` is not installed: this test runs real recursive resolvers. Install it with `apt-get install -y unbound` (or run .ci/run)."
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port(listen);
    let config = format!(
        "server:\n  interface: {listen}\n  port: {port}\n  outgoing-interface: {outgoing}\n  do-ip6: no\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  qname-minimisation: no\n  prefetch: no\n  module-config: \"iterator\"\n  cache-min-ttl: {cache_min_ttl}\nstub-zone:\n  name: \"svc.example.com\"\n  stub-addr: 127.0.0.1@{upstream}\n",
        dir = dir.path().display()
    );
    let path = dir.path().join("unbound.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("unbound")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start unbound");
    let addr: SocketAddr = format!("{listen}:{port}").parse().unwrap();
    let unbound = Unbound {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask(addr).is_none() {
        assert!(
            Instant::now() < deadline,
            "unbound on {addr} did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unbound
}

/// Asks `resolver` for the service with recursion desired; returns the answer's TTL.
fn ask(resolver: SocketAddr) -> Option<u32> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut packet = query(7, "app.svc.example.com", 1);
    packet[2] = 0x01; // RD
    socket.send_to(&packet, resolver).ok()?;
    let mut buf = [0u8; 1500];
    let len = socket.recv(&mut buf).ok()?;
    let message = hickory_proto::op::Message::from_vec(&buf[..len]).ok()?;
    message.answers.first().map(|r| r.ttl)
}

#[test]
fn a_clamping_resolver_is_overdue_and_a_default_one_converges() {
    let services = "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 1\ncutover_ttl = 1\nsettle = \"0s\"\n";
    let server = Server::start_with(&Setup {
        services: services.into(),
        ..Setup::default()
    });
    let plain = unbound("127.0.0.31", "127.0.0.41", server.port, 0);
    let clamping = unbound("127.0.0.32", "127.0.0.42", server.port, 6);

    // Clients ask both resolvers four times a second; note when the clamping one refreshes
    // (its answer's TTL jumps back to 6).
    let stop = Arc::new(AtomicBool::new(false));
    let refreshed = Arc::new(AtomicU32::new(0));
    let clients = {
        let (stop, refreshed, plain, clamping) =
            (stop.clone(), refreshed.clone(), plain.addr, clamping.addr);
        std::thread::spawn(move || {
            let mut previous = 0;
            while !stop.load(Ordering::Relaxed) {
                ask(plain);
                if let Some(ttl) = ask(clamping) {
                    if ttl > previous {
                        refreshed.fetch_add(1, Ordering::Relaxed);
                    }
                    previous = ttl;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    // Four refreshes of the clamping resolver give its rhythm three intervals; flip right
    // after the next one, and report before the one after that (6 s later).
    let deadline = Instant::now() + Duration::from_secs(60);
    while refreshed.load(Ordering::Relaxed) < 5 {
        assert!(
            Instant::now() < deadline,
            "the clamping resolver refreshed only {} times",
            refreshed.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    std::thread::sleep(Duration::from_millis(3500));
    let json = server.ctl_ok(&["stragglers", "app", "--json"]);
    stop.store(true, Ordering::Relaxed);
    clients.join().unwrap();

    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let listed = report["resolvers"].as_array().unwrap();
    let overdue: Vec<&serde_json::Value> =
        listed.iter().filter(|r| r["class"] == "overdue").collect();
    assert_eq!(overdue.len(), 1, "{json}");
    assert_eq!(overdue[0]["resolver"], "127.0.0.42", "{json}");
    let ratio = overdue[0]["interval_ratio"].as_f64().unwrap();
    assert!(
        ratio > 4.0,
        "the clamping resolver re-queries every ~6 TTLs: ratio {ratio}"
    );
    assert!(
        report["counts"]["converged"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert!(
        !listed.iter().any(|r| r["resolver"] == "127.0.0.41"),
        "the default resolver converged: {json}"
    );
    assert_eq!(report["counts"]["straggler"], 0, "{json}");
}
