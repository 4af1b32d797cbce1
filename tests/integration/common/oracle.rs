//! The differential oracle: a seeded generator of zones and queries, the reference servers
//! (NSD and Knot serving the same zone file as primaries, and hickory-server's file zone
//! handler in process), and the comparison of answers section by section. Self-contained
//! (std, the dev-dependencies), so the longer seeded run in `benches/oracle.rs` includes
//! this very file.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

/// The zone every case is in.
pub const ORIGIN: &str = "svc.example.com.";

/// A small deterministic generator (xorshift64*), so a seed names a zone and its queries.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One generated zone: the zone file flipdns serves (with its `[[service]]` tables), the
/// equivalent static zone file the references serve (the services at a fixed live color),
/// and the names worth asking.
pub struct Zone {
    pub seed: u64,
    pub flipdns_zone: String,
    pub services: String,
    pub reference_zone: String,
    /// Owner names (absolute), empty non-terminals among them, and names that do not exist.
    pub names: Vec<String>,
}

/// The record types asked.
pub const QTYPES: [(&str, u16); 12] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("CAA", 257),
    ("HINFO", 13),
    ("DS", 43),
];

/// Generates zone `seed`: the shipped example's shapes (services, a CNAME to a service, a
/// TXT, an empty non-terminal) plus MX and SRV with in- and out-of-zone targets, CNAME chains
/// inside the zone, leaving it and looping, delegations with in- and out-of-bailiwick name
/// servers and glue, names that differ only in case, a name near 255 octets, a large
/// RRset, and every type the zone file takes. Wildcards are not among them: flipdns
/// refuses them in a zone file (see [`unsupported_shapes_are_refused`](crate::oracle)).
pub fn zone(seed: u64) -> Zone {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut records: Vec<String> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut add = |owner: &str, ttl: Option<u32>, rest: &str| {
        let ttl = ttl.map(|t| format!("{t} ")).unwrap_or_default();
        records.push(format!("{owner} {ttl}IN {rest}"));
    };
    add(
        "@",
        None,
        "SOA ns1 hostmaster.example.com. 2026120601 7200 900 1209600 300",
    );
    add("@", None, "NS ns1");
    add("@", None, "NS ns2.example.net.");
    add("ns1", None, "A 192.0.2.53");
    add("ns1", None, "AAAA 2001:db8::53");
    add("@", None, "MX 10 mail");
    add("@", None, "MX 20 mx.example.net.");
    add("mail", Some(600), "A 192.0.2.25");
    add("@", None, "TXT \"v=spf1 mx -all\"");
    add("@", None, "CAA 0 issue \"letsencrypt.org\"");
    add("_sip._tcp", None, "SRV 10 5 5060 sip");
    add("_sip._tcp", None, "SRV 20 5 5060 sip.example.net.");
    add("sip", None, "A 192.0.2.60");
    add("sip", None, "AAAA 2001:db8::60");
    add("static", Some(120), "TXT \"as written\" \"two strings\"");
    add("deep.empty", None, "A 192.0.2.99");
    add("www", Some(300), "CNAME app");
    add("c1", None, "CNAME c2");
    add("c2", None, "CNAME host");
    add("host", None, "A 192.0.2.70");
    add("host", None, "HINFO \"PC\" \"Linux\"");
    add("out", None, "CNAME target.example.net.");
    add("loop1", None, "CNAME loop2");
    add("loop2", None, "CNAME loop1");
    add("ptr", None, "PTR host.svc.example.com.");
    // Delegations: glue below the cut (in bailiwick), a name server elsewhere in this zone
    // (sibling glue), one outside it (no glue), a cut below an empty non-terminal, a CNAME
    // and an MX into a child zone.
    add("child", None, "NS ns1.child");
    add("child", None, "NS ns2.child");
    add("child", None, "NS ns.example.net.");
    add("ns1.child", None, "A 192.0.2.150");
    add("ns1.child", None, "AAAA 2001:db8::150");
    add("ns2.child", None, "A 192.0.2.151");
    add("deep.deleg", Some(600), "NS ns1");
    add("deep.deleg", Some(600), "NS ns.deep.deleg");
    add("ns.deep.deleg", None, "A 192.0.2.152");
    add("outside", None, "NS ns.example.org.");
    // A delegation whose glue does not fit a 512-octet answer (RFC 9471).
    for i in 0..8 {
        add("big", None, &format!("NS name-server-{i}.big"));
        add(
            &format!("name-server-{i}.big"),
            None,
            &format!("A 192.0.2.{}", 160 + i),
        );
        add(
            &format!("name-server-{i}.big"),
            None,
            &format!("AAAA 2001:db8::{}", 160 + i),
        );
    }
    add("into-child", None, "CNAME www.child");
    add("mx-child", None, "MX 10 ns2.child");
    add("MiXeD", None, "A 192.0.2.80");
    add("mixed", None, "TXT \"the same name, in another case\"");
    for i in 0..(3 + rng.below(3)) {
        let labels = 1 + rng.below(3);
        let owner: Vec<String> = (0..labels).map(|_| format!("n{}", rng.below(50))).collect();
        let owner = owner.join(".");
        match rng.below(5) {
            0 => add(&owner, None, &format!("A 192.0.2.{}", 100 + i)),
            1 => add(&owner, None, &format!("AAAA 2001:db8::{:x}", 0x100 + i)),
            2 => add(&owner, None, &format!("TXT \"generated {i}\"")),
            3 => add(&owner, None, &format!("MX {} host", 5 + i)),
            _ => add(
                &owner,
                None,
                &format!(
                    "CNAME {}",
                    ["host", "app", "c1", "nowhere"][rng.below(4) as usize]
                ),
            ),
        }
    }
    // A large RRset: over 512 octets, so small buffers truncate.
    for i in 0..(20 + rng.below(20)) {
        add(
            "many",
            None,
            &format!("TXT \"record number {i:03} of a large set\""),
        );
    }
    // A name near 255 octets: labels of 63, then what fits.
    let long = format!(
        "{}.{}.{}.x{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(20 + rng.below(20) as usize)
    );
    add(&long, None, "A 192.0.2.90");
    for record in &records {
        let owner = record.split_whitespace().next().unwrap();
        if owner != "@" {
            names.insert(absolute(owner));
            // Empty non-terminals: every name between the owner and the apex.
            let mut rest = owner;
            while let Some((_, parent)) = rest.split_once('.') {
                names.insert(absolute(parent));
                rest = parent;
            }
        }
    }
    names.insert(ORIGIN.to_string());
    for service in [
        "app",
        "blue.app",
        "green.app",
        "api",
        "blue.api",
        "green.api",
    ] {
        names.insert(absolute(service));
    }
    for missing in [
        "nope",
        "nope.empty",
        "below.deep.empty",
        "x.c1",
        "x.www",
        "x.host",
        "x.app",
        "x.blue.app",
        "zz.many",
        "www.child",
        "a.b.child",
        "x.ns1.child",
        "nope.deleg",
        "x.outside",
        "www.big",
    ] {
        names.insert(absolute(missing));
    }
    let flipdns_zone = format!("$ORIGIN {ORIGIN}\n$TTL 3600\n{}\n", records.join("\n"));
    // The services, at their live color; the references serve these as static records.
    let services = "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\", \"192.0.2.11\", \"2001:db8::10\"]\ngreen = [\"198.51.100.10\", \"2001:db8::20\"]\nlive = \"blue\"\nttl = 300\ncutover_ttl = 5\nsettle = \"10m\"\n\n[[service]]\nname = \"api\"\nblue = [\"192.0.2.20\"]\ngreen = [\"198.51.100.20\"]\nlive = \"green\"\nttl = 60\ncutover_ttl = 5\nsettle = \"5m\"\n".to_string();
    let statics = [
        "app 300 IN A 192.0.2.10",
        "app 300 IN A 192.0.2.11",
        "app 300 IN AAAA 2001:db8::10",
        "blue.app 300 IN A 192.0.2.10",
        "blue.app 300 IN A 192.0.2.11",
        "blue.app 300 IN AAAA 2001:db8::10",
        "green.app 300 IN A 198.51.100.10",
        "green.app 300 IN AAAA 2001:db8::20",
        "api 60 IN A 198.51.100.20",
        "blue.api 60 IN A 192.0.2.20",
        "green.api 60 IN A 198.51.100.20",
    ];
    let reference_zone = format!("{flipdns_zone}{}\n", statics.join("\n"));
    Zone {
        seed,
        flipdns_zone,
        services,
        reference_zone,
        names: names.into_iter().collect(),
    }
}

fn absolute(relative: &str) -> String {
    format!("{relative}.{ORIGIN}")
}

/// One query: name (in the case to send), type, EDNS buffer (`None`: no EDNS), transport.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub qtype: (&'static str, u16),
    pub edns: Option<u16>,
    pub tcp: bool,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let edns = self
            .edns
            .map_or("no EDNS".to_string(), |b| format!("EDNS {b}"));
        let transport = if self.tcp { "TCP" } else { "UDP" };
        write!(f, "{} {} ({edns}, {transport})", self.name, self.qtype.0)
    }
}

/// The cases of `zone`: every name × every type, each in a random case, with or without
/// EDNS (a small buffer sometimes), over UDP or TCP; `sample` of 100 keeps that share.
pub fn cases(zone: &Zone, sample: u64) -> Vec<Case> {
    let mut rng = Rng(zone.seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let mut out = Vec::new();
    for name in &zone.names {
        for &qtype in &QTYPES {
            if !rng.chance(sample) {
                continue;
            }
            let name: String = name
                .chars()
                .map(|c| {
                    if rng.chance(30) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            let edns = match rng.below(4) {
                0 => None,
                1 => Some(512),
                _ => Some(1232),
            };
            out.push(Case {
                name,
                qtype,
                edns,
                tcp: rng.chance(25),
            });
        }
    }
    out
}

/// The query of `case`, with `id`.
pub fn query(case: &Case, id: u16) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(case.edns.is_some())]);
    for label in case.name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&case.qtype.1.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    if let Some(buffer) = case.edns {
        packet.extend_from_slice(&[0, 0, 41]);
        packet.extend_from_slice(&buffer.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    packet
}

/// Asks `server` the query of `case`; the raw reply.
pub fn ask(server: SocketAddr, case: &Case, id: u16) -> Result<Vec<u8>, String> {
    let packet = query(case, id);
    if case.tcp {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&packet);
        stream.write_all(&framed).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).map_err(|e| e.to_string())?;
        return Ok(reply);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .map_err(|e| e.to_string())?;
    for _ in 0..3 {
        socket.send_to(&packet, server).map_err(|e| e.to_string())?;
        let mut buffer = vec![0u8; 65535];
        if let Ok((n, _)) = socket.recv_from(&mut buffer) {
            buffer.truncate(n);
            return Ok(buffer);
        }
    }
    Err("no answer over UDP".into())
}

/// An answer reduced to what the comparison looks at: the rcode, AA and TC, and each
/// section as a set of records (owner lowercased, TTL, data in presentation form). The OPT
/// record is compared apart (whether there is one), not as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: String,
    pub aa: bool,
    pub tc: bool,
    pub opt: bool,
    pub answer: BTreeSet<String>,
    pub authority: BTreeSet<String>,
    pub additional: BTreeSet<String>,
}

impl Answer {
    pub fn parse(reply: &[u8]) -> Result<Answer, String> {
        let message = Message::from_vec(reply).map_err(|e| format!("unparsable reply: {e}"))?;
        let set = |records: &[hickory_proto::rr::Record]| {
            records
                .iter()
                .map(|r| {
                    // Names compare without case (RFC 4343), in the RDATA too (a server
                    // may compress them against the question, in its case); text does not.
                    let data = r.data.to_string();
                    let data = match r.record_type().to_string().as_str() {
                        "TXT" | "CAA" | "HINFO" => data,
                        _ => data.to_ascii_lowercase(),
                    };
                    format!(
                        "{} {} {} {data}",
                        r.name.to_ascii().to_ascii_lowercase(),
                        r.ttl,
                        r.record_type(),
                    )
                })
                .collect::<BTreeSet<_>>()
        };
        Ok(Answer {
            rcode: format!("{:?}", message.metadata.response_code),
            aa: message.metadata.authoritative,
            tc: message.metadata.truncation,
            opt: message.edns.is_some(),
            answer: set(&message.answers),
            authority: set(&message.authorities),
            additional: set(&message.additionals),
        })
    }

    /// How `self` differs from `other`, section by section; empty when they agree. A
    /// truncated answer is compared by its rcode and flags only (what a server keeps in a
    /// truncated answer is its own choice, RFC 2181 section 9).
    pub fn differences(&self, other: &Answer) -> Vec<String> {
        let mut out = Vec::new();
        if self.rcode != other.rcode {
            out.push(format!("rcode {} vs {}", self.rcode, other.rcode));
        }
        if self.aa != other.aa {
            out.push(format!("AA {} vs {}", self.aa, other.aa));
        }
        if self.tc != other.tc {
            out.push(format!("TC {} vs {}", self.tc, other.tc));
        }
        if self.opt != other.opt {
            out.push(format!("OPT {} vs {}", self.opt, other.opt));
        }
        if self.tc || other.tc {
            return out;
        }
        for (section, a, b) in [
            ("answer", &self.answer, &other.answer),
            ("authority", &self.authority, &other.authority),
            ("additional", &self.additional, &other.additional),
        ] {
            let only_a: Vec<_> = a.difference(b).collect();
            let only_b: Vec<_> = b.difference(a).collect();
            if !only_a.is_empty() || !only_b.is_empty() {
                out.push(format!(
                    "{section}: only here {only_a:?}, only there {only_b:?}"
                ));
            }
        }
        out
    }
}

/// Which reference implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Nsd,
    Knot,
}

/// A reference server serving a zone file as its primary, stopped on drop.
pub struct ReferenceServer {
    pub kind: Reference,
    pub address: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl ReferenceServer {
    /// Starts `kind` on `port` serving `zone` (the text of [`ORIGIN`]'s zone file).
    pub fn start(kind: Reference, port: u16, zone: &str) -> ReferenceServer {
        let dir = tempfile::Builder::new().prefix("oracle").tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("zone"), zone).unwrap();
        let origin = ORIGIN.trim_end_matches('.');
        let mut command = match kind {
            Reference::Nsd => {
                std::fs::write(
                    dir.path().join("nsd.conf"),
                    format!(
                        "server:\n  ip-address: 127.0.0.1@{port}\n  do-ip6: no\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  cookie-secret-file: \"{d}/cookies.txt\"\n  verbosity: 1\n  zonefiles-write: 0\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n  minimal-responses: yes\nremote-control:\n  control-enable: no\nzone:\n  name: \"{origin}\"\n  zonefile: \"zone\"\n"
                    ),
                )
                .unwrap();
                let mut c = Command::new("nsd");
                c.arg("-d").arg("-c").arg(dir.path().join("nsd.conf"));
                c
            }
            Reference::Knot => {
                std::fs::write(
                    dir.path().join("knot.conf"),
                    format!(
                        "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n  storage: \"{d}\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\n    semantic-checks: off\nzone:\n  - domain: {origin}\n    file: \"{d}/zone\"\n    zonefile-sync: -1\n    journal-content: none\n"
                    ),
                )
                .unwrap();
                let mut c = Command::new("knotd");
                c.arg("-c").arg(dir.path().join("knot.conf"));
                c
            }
        };
        use std::os::unix::process::CommandExt;
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("start {kind:?} ({e}): install nsd and knot (./tests/run does)")
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let server = ReferenceServer {
            kind,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
            log,
        };
        server.wait_ready();
        server
    }

    /// Waits until it answers the zone's SOA authoritatively.
    fn wait_ready(&self) {
        let case = Case {
            name: ORIGIN.into(),
            qtype: ("SOA", 6),
            edns: None,
            tcp: false,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(reply) = ask(self.address, &case, 1)
                && Answer::parse(&reply).is_ok_and(|a| a.aa && a.rcode == "NoError")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{:?} did not serve the zone:\n{}",
            self.kind,
            self.log.lock().unwrap().join("\n")
        );
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this harness started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// hickory-server serving a zone from a file in process, on its own runtime thread: the
/// third reference, an independent implementation. Stopped on drop.
pub struct Hickory {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Hickory {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts hickory-server on `zone` (the text of [`ORIGIN`]'s zone file).
pub fn start_hickory(zone: &str) -> Hickory {
    use hickory_server::proto::rr::{LowerName, Name};
    use hickory_server::store::file::{FileConfig, FileZoneHandler};
    use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
    let dir = tempfile::Builder::new()
        .prefix("oracle-hickory")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("zone"), zone).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let origin = Name::from_ascii(ORIGIN).unwrap();
            let config = FileConfig {
                zone_path: "zone".into(),
            };
            let handler = FileZoneHandler::try_from_config(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
                Some(dir.path()),
                &config,
            )
            .unwrap_or_else(|e| panic!("hickory-server refuses the zone: {e}"));
            let mut catalog = Catalog::new();
            catalog.upsert(LowerName::from(origin), vec![std::sync::Arc::new(handler)]);
            let mut server = hickory_server::Server::new(catalog);
            // A UDP port whose TCP twin is free too.
            let (udp, tcp) = loop {
                let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let port = udp.local_addr().unwrap().port();
                if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    break (udp, tcp);
                }
            };
            let address = udp.local_addr().unwrap();
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 65_535);
            tx.send(address).unwrap();
            let _ = stopped.await;
            let _ = server.shutdown_gracefully().await;
            drop(dir);
        });
    });
    let address = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("hickory-server starts");
    Hickory {
        address,
        stop: Some(stop),
    }
}

/// A free loopback port for UDP and TCP.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What one case came to.
#[derive(Debug)]
pub enum Verdict {
    /// flipdns answers as the references that agree (at least two); `dissent` names any
    /// reference that answered otherwise, and how.
    Agree { dissent: Option<String> },
    /// No two references agree (and flipdns answers as NSD or Knot), or flipdns answers as
    /// one reference against the others: excluded, with the differences.
    ReferencesDiffer(String),
    /// flipdns differs from references that agree.
    Differs(String),
}

/// Compares flipdns at `ours` with `references` on `case`: the references that give the
/// same answer form a group; flipdns must answer as a group of two or more.
pub fn judge(ours: SocketAddr, references: &[(&str, SocketAddr)], case: &Case, id: u16) -> Verdict {
    let get = |server: SocketAddr| ask(server, case, id).and_then(|r| Answer::parse(&r));
    let answers: Vec<(&str, Result<Answer, String>)> =
        references.iter().map(|(n, a)| (*n, get(*a))).collect();
    let same = |a: &Result<Answer, String>, b: &Result<Answer, String>| match (a, b) {
        (Ok(a), Ok(b)) => a.differences(b).is_empty(),
        (a, b) => a == b,
    };
    let describe = |a: &Result<Answer, String>, b: &Result<Answer, String>| match (a, b) {
        (Ok(a), Ok(b)) => a.differences(b).join("; "),
        (a, b) => format!("{a:?} vs {b:?}"),
    };
    // The largest group of references that agree, and those outside it.
    let mut best: Vec<usize> = Vec::new();
    for i in 0..answers.len() {
        let group: Vec<usize> = (0..answers.len())
            .filter(|&j| same(&answers[i].1, &answers[j].1))
            .collect();
        if group.len() > best.len() {
            best = group;
        }
    }
    let outside: Vec<usize> = (0..answers.len()).filter(|i| !best.contains(i)).collect();
    let names = |members: &[usize]| {
        members
            .iter()
            .map(|&i| answers[i].0)
            .collect::<Vec<_>>()
            .join("+")
    };
    let ours = get(ours);
    if best.len() < 2 {
        // Which reference flipdns answers like: none is a failure, even here.
        let like: Vec<&str> = answers
            .iter()
            .filter(|(_, a)| same(&ours, a))
            .map(|(n, _)| *n)
            .collect();
        if !like.iter().any(|n| *n == "nsd" || *n == "knot") {
            let theirs: Vec<String> = answers
                .iter()
                .map(|(n, a)| format!("{n}: {}", describe(&ours, a)))
                .collect();
            return Verdict::Differs(format!(
                "the references differ, and flipdns answers like neither NSD nor Knot: {}",
                theirs.join(" | ")
            ));
        }
        let pairs: Vec<String> = (1..answers.len())
            .map(|i| {
                format!(
                    "{} vs {}: {}",
                    answers[0].0,
                    answers[i].0,
                    describe(&answers[0].1, &answers[i].1)
                )
            })
            .collect();
        return Verdict::ReferencesDiffer(format!(
            "flipdns answers as {}; {}",
            like.join("+"),
            pairs.join(" | ")
        ));
    }
    let majority = &answers[best[0]].1;
    if same(&ours, majority) {
        let dissent = (!outside.is_empty()).then(|| {
            let i = outside[0];
            format!(
                "{} differs from {}: {}",
                names(&outside),
                names(&best),
                describe(&answers[i].1, majority)
            )
        });
        return Verdict::Agree { dissent };
    }
    if let Some(&i) = outside.iter().find(|&&i| same(&ours, &answers[i].1)) {
        return Verdict::ReferencesDiffer(format!(
            "flipdns answers as {}, {} otherwise: {}",
            answers[i].0,
            names(&best),
            describe(&answers[i].1, majority)
        ));
    }
    match (&ours, majority) {
        (Ok(answer), Ok(expected)) => Verdict::Differs(answer.differences(expected).join("; ")),
        (ours, expected) => Verdict::Differs(format!("{ours:?} vs {expected:?}")),
    }
}

/// Starts flipdns (the binary at `bin`) in `dir` on `port` serving `zone`.
pub fn start_flipdns(bin: &str, dir: &Path, port: u16, zone: &Zone) -> Child {
    start_flipdns_with(bin, dir, port, zone, "")
}

/// [`start_flipdns`] with `extra` tables in its config (secondaries, keys).
pub fn start_flipdns_with(bin: &str, dir: &Path, port: u16, zone: &Zone, extra: &str) -> Child {
    std::fs::write(dir.join("svc.zone"), &zone.flipdns_zone).unwrap();
    std::fs::write(
        dir.join("flipdns.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin_socket = \"s\"\nstate_file = \"state.json\"\n[[zone]]\norigin = \"{ORIGIN}\"\nfile = \"svc.zone\"\n{}\n{extra}",
            zone.services
        ),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("flipdns.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let case = Case {
        name: ORIGIN.into(),
        qtype: ("SOA", 6),
        edns: None,
        tcp: false,
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if ask(SocketAddr::from(([127, 0, 0, 1], port)), &case, 1).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("flipdns did not start on the generated zone {}", zone.seed);
}

/// Differences that are flipdns's deliberate reading of the RFCs (README, "What it
/// answers"), each with the section that allows it.
fn deliberate(case: &Case, difference: &str) -> Option<&'static str> {
    // A negative answer at or below a service name carries the SOA with the smaller of the
    // RFC 2308 negative TTL and the service's TTL: a NODATA for AAAA cached past a flip
    // would hide the new color's AAAA records (RFC 2308 section 5 sets an upper bound; a
    // server may hand out less).
    let name = case.name.to_ascii_lowercase();
    let service = ["app.", "api."]
        .iter()
        .any(|s| name.starts_with(s) || name.contains(&format!(".{s}")));
    let (here, there) = difference
        .strip_prefix("authority: only here [")?
        .split_once("], only there [")?;
    let there = there.strip_suffix(']')?;
    let without_ttl = |record: &str| {
        let mut words: Vec<&str> = record.split(' ').collect();
        let ttl: u32 = words.get(1)?.parse().ok()?;
        words.remove(1);
        Some((words.join(" "), ttl))
    };
    let (ours, theirs) = (without_ttl(here)?, without_ttl(there)?);
    (service && here.contains(" SOA ") && ours.0 == theirs.0 && ours.1 < theirs.1).then_some(
        "RFC 2308 section 5: the negative TTL of a service name is capped by the service's TTL",
    )
}

/// Runs the cases of `seeds` (`sample` per cent of each zone's) against flipdns (`bin`),
/// NSD, Knot and hickory-server. Returns the cases, how many agreed, the excluded
/// ones and the cases where one reference dissented from the others (with why).
pub fn run(bin: &str, seeds: &[u64], sample: u64) -> Run {
    let (mut total, mut agreed, mut excluded, mut failures) = (0, 0, Vec::new(), Vec::new());
    let mut dissents = Vec::new();
    for &seed in seeds {
        let zone = zone(seed);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut flipdns = start_flipdns(bin, dir.path(), port, &zone);
        let nsd = ReferenceServer::start(Reference::Nsd, free_port(), &zone.reference_zone);
        let knot = ReferenceServer::start(Reference::Knot, free_port(), &zone.reference_zone);
        let hickory = start_hickory(&zone.reference_zone);
        let references = [
            ("nsd", nsd.address),
            ("knot", knot.address),
            ("hickory", hickory.address),
        ];
        let ours = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for (i, case) in cases(&zone, sample).iter().enumerate() {
            total += 1;
            match judge(ours, &references, case, i as u16) {
                Verdict::Agree { dissent: None } => agreed += 1,
                Verdict::Agree { dissent: Some(why) } => {
                    agreed += 1;
                    dissents.push(format!("seed {seed}: {case}: {why}"));
                }
                Verdict::ReferencesDiffer(why) => {
                    excluded.push(format!("seed {seed}: {case}: {why}"))
                }
                Verdict::Differs(why) => match deliberate(case, &why) {
                    Some(_) => agreed += 1,
                    None => failures.push(format!("seed {seed}: {case}: {why}")),
                },
            }
        }
        let _ = flipdns.kill();
        let _ = flipdns.wait();
    }
    Run {
        total,
        agreed,
        excluded,
        dissents,
        failures,
    }
}

/// What a run came to.
pub struct Run {
    pub total: usize,
    /// Cases where flipdns answered as the agreeing references (or differed deliberately).
    pub agreed: usize,
    /// Cases excluded because the references differ, with why.
    pub excluded: Vec<String>,
    /// Cases where one reference dissented from the others, with how.
    pub dissents: Vec<String>,
    /// Cases where flipdns differs from agreeing references, not deliberately.
    pub failures: Vec<String>,
}

impl Run {
    /// The references' dissents by kind (the first difference, without the case), counted.
    pub fn dissent_kinds(&self) -> std::collections::BTreeMap<String, usize> {
        let mut kinds = std::collections::BTreeMap::new();
        for line in &self.dissents {
            let why = line.split(": ").skip(2).collect::<Vec<_>>().join(": ");
            *kinds.entry(why.chars().take(160).collect()).or_default() += 1;
        }
        kinds
    }
}
