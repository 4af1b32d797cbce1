//! Real recursive resolvers: unbound, BIND and dnsmasq in the foreground, each asking from a
//! loopback address of its own, killed on drop.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::query;

/// A resolver in the foreground, killed on drop.
pub struct Resolver {
    pub name: &'static str,
    child: Child,
    /// Where clients ask it.
    pub addr: SocketAddr,
    /// The address it sends its queries to flipdns from.
    pub source: String,
    pub clamps: bool,
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
pub enum Kind {
    Unbound,
    Bind,
    Dnsmasq,
}

/// Starts `kind` asking the server on `upstream` (flipdns, or a secondary) from `127.NET.0.HOST` (and answering clients
/// on `127.NET.0.HOST-10`); `clamp` is its minimum cache TTL (0: default caching).
pub fn start(
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
    let answered = super::until(Duration::from_secs(10), || ready(addr).is_some());
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
pub fn ask(socket: &UdpSocket, resolver: SocketAddr) {
    let mut packet = query(7, "app.svc.example.com", 1);
    packet[2] = 0x01; // RD
    let _ = socket.send_to(&packet, resolver);
    let mut buf = [0u8; 1500];
    let _ = socket.recv(&mut buf);
}
