//! Test harness: starts the real `flipdns` binary on a free loopback port with a temporary
//! config, zone, state file and admin socket; queries it with `dig`; drives it with
//! `flipdns ctl`; kills it on drop.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_flipdns");

/// The zone every test serves unless it brings its own.
pub const ZONE: &str = "\
$ORIGIN svc.example.com.
$TTL 3600
@       IN SOA  ns1 hostmaster.example.com. 2026112601 7200 900 1209600 60
        IN NS   ns1
ns1     IN A    192.0.2.53
www 300 IN CNAME app
static  IN TXT  \"as written\"
deep.empty IN A 192.0.2.99
";

/// `[[service]]` tables every test serves unless it brings its own: `app` with two IPv4 and
/// one IPv6 address in blue, one of each in green.
pub const SERVICES: &str = r#"
[[service]]
name = "app"
blue = ["192.0.2.10", "192.0.2.11", "2001:db8::10"]
green = ["198.51.100.10", "2001:db8::20"]
live = "blue"
ttl = 300
cutover_ttl = 5
settle = "10m"
"#;

pub const BLUE_V4: [&str; 2] = ["192.0.2.10", "192.0.2.11"];
pub const GREEN_V4: [&str; 1] = ["198.51.100.10"];

/// What to write into the temporary directory before starting.
pub struct Setup {
    pub zone: String,
    pub services: String,
    /// Extra lines for the `[server]` table.
    pub server: String,
    /// Extra tables (e.g. `[limits]`).
    pub extra: String,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            zone: ZONE.into(),
            services: SERVICES.into(),
            server: String::new(),
            extra: String::new(),
        }
    }
}

impl Setup {
    pub fn config(&self) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"run/flipdns.sock\"\nstate_file = \"run/state.json\"\n{}\n{}\n[[zone]]\norigin = \"svc.example.com.\"\nfile = \"svc.zone\"\n{}",
            self.server, self.extra, self.services
        )
    }

    /// Writes config and zone into a new temporary directory.
    pub fn write(&self) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix("flipdns")
            .tempdir()
            .expect("temporary directory");
        std::fs::write(dir.path().join("flipdns.toml"), self.config()).unwrap();
        std::fs::write(dir.path().join("svc.zone"), &self.zone).unwrap();
        dir
    }
}

/// A running `flipdns serve`.
pub struct Server {
    pub dir: TempDir,
    pub port: u16,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&Setup::default())
    }

    pub fn start_with(setup: &Setup) -> Server {
        Server::start_in(setup.write())
    }

    /// Starts the server on the config in `dir`, waiting for `ready`.
    pub fn start_in(dir: TempDir) -> Server {
        match Server::try_start_in(dir) {
            Ok(server) => server,
            Err((_, log)) => panic!("flipdns did not become ready:\n{log}"),
        }
    }

    /// Starts the server; on failure returns the directory and everything it printed.
    pub fn try_start_in(dir: TempDir) -> Result<Server, (TempDir, String)> {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.path().join("flipdns.toml"))
            .env("FLIPDNS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flipdns");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if port.is_none() {
                    port = line
                        .split("listening on udp 127.0.0.1:")
                        .nth(1)
                        .and_then(|p| p.trim().parse::<u16>().ok());
                }
                if line.contains(" ready") {
                    let _ = ready_tx.send(port);
                }
                lines.lock().unwrap().push(line);
            }
            let _ = ready_tx.send(None);
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(port)) => Ok(Server {
                dir,
                port,
                child,
                log,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                let text = log.lock().unwrap().join("\n");
                Err((dir, text))
            }
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("flipdns.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/flipdns.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("run/state.json")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL: no cleanup, as after a crash or power loss.
    pub fn kill9(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::Builder::new().tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Sends `signal` and waits for the exit status.
    pub fn stop_with(mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "flipdns did not exit after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `dig @127.0.0.1 -p PORT +norec ARGS`.
    pub fn dig(&self, args: &[&str]) -> Dig {
        dig(self.port, args)
    }

    /// `flipdns ctl --socket SOCKET ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.socket(), args)
    }

    /// `ctl ARGS`, which must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "flipdns ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn udp(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run flipdns ctl")
}

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// dig's output, parsed.
#[derive(Debug, Clone)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Data of the answer records of type `rtype`, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut data: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        data.sort();
        data
    }

    /// The SOA serial in the answer or authority section.
    pub fn soa_serial(&self) -> Option<u32> {
        self.answer
            .iter()
            .chain(&self.authority)
            .find(|r| r.rtype == "SOA")
            .and_then(|r| r.data.split_whitespace().nth(2)?.parse().ok())
    }
}

fn require_dig() {
    if Command::new("dig").arg("-v").output().is_err() {
        panic!(
            "`dig` is not installed: these tests query the server with it. Install it with `apt-get install -y dnsutils` (or run .ci/run)."
        );
    }
}

pub fn dig(port: u16, args: &[&str]) -> Dig {
    require_dig();
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+norec",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_dig(raw)
}

fn parse_dig(raw: String) -> Dig {
    let mut dig = Dig {
        status: String::new(),
        flags: vec![],
        question: vec![],
        answer: vec![],
        authority: vec![],
        additional: vec![],
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if line.starts_with(";; ") && line.ends_with(" SECTION:") {
            section = line.trim_start_matches(";; ").trim_end_matches(" SECTION:");
            continue;
        }
        if line.trim().is_empty() {
            section = "";
            continue;
        }
        match section {
            "QUESTION" => dig.question.push(line.trim_start_matches(';').to_string()),
            "ANSWER" | "AUTHORITY" | "ADDITIONAL" => {
                let parts: Vec<&str> = line.split_whitespace().collect();
                if parts.len() < 5 {
                    continue;
                }
                let rr = Rr {
                    name: parts[0].into(),
                    ttl: parts[1].parse().unwrap_or(0),
                    rtype: parts[3].into(),
                    data: parts[4..].join(" "),
                };
                match section {
                    "ANSWER" => dig.answer.push(rr),
                    "AUTHORITY" => dig.authority.push(rr),
                    _ => dig.additional.push(rr),
                }
            }
            _ => {}
        }
    }
    dig
}

/// A wire-format query: `name` (dotted), `qtype`, class IN, with the given ID and no flags.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = flipdns::fixture::query(name, qtype);
    packet[..2].copy_from_slice(&id.to_be_bytes());
    packet[2] = 0;
    packet
}

/// Sends `packet` over UDP and returns the reply, or `None` after `wait`.
pub fn exchange(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// The IPv4 addresses in the answer section of a wire-format response.
pub fn a_records(response: &[u8]) -> Vec<std::net::Ipv4Addr> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    let message = Message::from_vec(response).expect("a well-formed response");
    message
        .answers
        .iter()
        .filter_map(|r| {
            if let RData::A(a) = &r.data {
                Some(a.0)
            } else {
                None
            }
        })
        .collect()
}

/// `[[service]]` `app` with the small TTLs cutover tests use: ttl 4, cutover_ttl 1, settle 3 s.
pub fn short_service(extra: &str) -> String {
    format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\", \"192.0.2.11\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"3s\"\n{extra}\n"
    )
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A tiny HTTP server on `addr` that answers every request with its current status, for
/// health checks; status 0 holds connections open without ever answering.
pub struct HttpStub {
    pub addr: SocketAddr,
    status: Arc<std::sync::atomic::AtomicU16>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpStub {
    pub fn start(addr: &str, status: u16) -> HttpStub {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::Relaxed;
        let listener = std::net::TcpListener::bind(addr).expect("bind the HTTP stub");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let current = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let (stopped, answer) = (stop.clone(), current.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stopped.load(Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let status = answer.load(Relaxed);
                if status == 0 {
                    held.push(stream);
                    continue;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Stub\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        HttpStub {
            addr,
            status: current,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers `status` from now on.
    pub fn set(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The JSON `status` of one service.
pub fn service_status(server: &Server, service: &str) -> serde_json::Value {
    let text = server.ctl_ok(&["status", service, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text).expect("status --json is JSON");
    status["services"][0].clone()
}

/// A wire-format query with an EDNS Client Subnet option for an IPv4 `subnet`/`prefix`.
pub fn query_with_subnet(
    id: u16,
    name: &str,
    qtype: u16,
    subnet: Option<([u8; 4], u8)>,
) -> Vec<u8> {
    let mut packet = query(id, name, qtype);
    let Some((address, prefix)) = subnet else {
        return packet;
    };
    let bytes = &address[..(prefix as usize).div_ceil(8)];
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    packet.extend_from_slice(&(8 + bytes.len() as u16).to_be_bytes());
    packet.extend_from_slice(&8u16.to_be_bytes());
    packet.extend_from_slice(&(4 + bytes.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 1, prefix, 0]);
    packet.extend_from_slice(bytes);
    packet
}

/// A simulated resolver: a UDP socket on its own loopback address that sends each query of
/// its schedule at its offset from `start`, and waits for the answer.
pub struct Resolver {
    thread: std::thread::JoinHandle<usize>,
}

/// One scheduled query: offset from the start, name, client subnet.
pub type Ask = (Duration, &'static str, Option<([u8; 4], u8)>);

impl Resolver {
    pub fn spawn(source: &str, server: SocketAddr, start: Instant, schedule: Vec<Ask>) -> Resolver {
        let socket =
            UdpSocket::bind(format!("{source}:0")).expect("bind a loopback source address");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            let mut answered = 0;
            let mut buf = [0u8; 1500];
            for (i, (offset, name, subnet)) in schedule.into_iter().enumerate() {
                if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                socket
                    .send_to(&query_with_subnet(i as u16, name, 1, subnet), server)
                    .unwrap();
                if socket.recv(&mut buf).is_ok() {
                    answered += 1;
                }
            }
            answered
        });
        Resolver { thread }
    }

    /// Waits for the schedule to finish; returns how many queries were answered.
    pub fn join(self) -> usize {
        self.thread.join().unwrap()
    }
}

/// Queries every `every` from `from` (inclusive) to `to` (exclusive), in milliseconds.
pub fn every(
    from_ms: u64,
    to_ms: u64,
    every_ms: u64,
    name: &'static str,
    subnet: Option<([u8; 4], u8)>,
) -> Vec<Ask> {
    (from_ms..to_ms)
        .step_by(every_ms as usize)
        .map(|ms| (Duration::from_millis(ms), name, subnet))
        .collect()
}

/// `GET path` from the server's metrics endpoint (found in its log); the whole response.
pub fn scrape(server: &Server, path: &str) -> String {
    let log = server.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .expect("metrics address in the log");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    text
}

/// `packet` with the two-byte length prefix of DNS over TCP.
pub fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

/// Reads one length-prefixed DNS message from a TCP stream.
pub fn read_reply(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}
