//! The config's keys: each read here, once, with its default and range, into the model of
//! [`super`]. A value that is missing, mistyped or out of range is noted with its line and
//! the reader goes on, so one pass finds every problem.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::Name;

use super::table::{Document, Located, Table};
use super::{
    AnswerMode, ApiBounds, ApiConfig, ApiToken, Approval, Config, DnstapConfig, DnstapListen,
    FleetConfig, HealthConfig, HealthKind, HealthTls, LedgerConfig, Limits, MAX_SOCKET_PATH,
    MAX_TTL, RrlConfig, Scope, SecondaryConfig, Server, ServiceConfig, Services, TsigKeyConfig,
    ZoneConfig, service_name,
};
use crate::color::Color;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
/// Longest settle, flip interval or health interval: a year.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The whole config.
pub fn config(top: &Table) -> Option<Config> {
    let doc = top.doc();
    let server_table = top.table("server");
    let server = if server_table.present() {
        server(&server_table)
    } else {
        doc.problem(0, "missing [server] table");
        None
    };
    server_table.finish();
    let limits = section(top, "limits", limits);
    let ledger = section(top, "ledger", ledger);
    let rrl = section(top, "rrl", rrl);
    let fleet = section(top, "fleet", fleet);
    let dnstap = section(top, "dnstap", dnstap);
    let zones = zones(top);
    let services = services(top, &zones);
    let api = section(top, "api", api);
    for token in &api.tokens {
        for scope in &token.scopes {
            let (Scope::Flip(Services::One(name))
            | Scope::Approve(Services::One(name))
            | Scope::Deploy(Services::One(name))) = scope
            else {
                continue;
            };
            if !services.iter().any(|s| &s.name == name) {
                doc.problem_at_line(
                    token.line,
                    format!(
                        "token {:?}: scope {scope} names no configured service",
                        token.name
                    ),
                );
            }
        }
    }
    let tsig_keys = tsig_keys(top);
    let secondaries = secondaries(top, &tsig_keys);
    Some(Config {
        path: doc.path.to_path_buf(),
        server: server?,
        limits,
        ledger,
        rrl,
        zones,
        by_name: services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect(),
        services,
        secondaries,
        tsig_keys,
        fleet,
        dnstap,
        api,
    })
}

/// `[api]` and its `[[api.token]]` entries.
pub fn api(t: &Table) -> ApiConfig {
    let doc = t.doc();
    let listen: Vec<SocketAddr> = parsed(
        t,
        "listen",
        "api listen",
        "IP:PORT such as \"127.0.0.1:8443\"",
    );
    let cert_file = t.path("cert_file").map(Located::into_inner);
    let key_file = t.path("key_file").map(Located::into_inner);
    let client_ca = t.path("client_ca").map(Located::into_inner);
    if cert_file.is_some() != key_file.is_some() {
        doc.problem(
            t.at,
            "[api] needs both cert_file and key_file, or neither (plain HTTP on loopback)",
        );
    }
    if cert_file.is_none() && listen.iter().any(|a| !a.ip().is_loopback()) {
        doc.problem(
            t.at,
            "[api] listens beyond loopback without TLS: set cert_file and key_file, or listen on 127.0.0.1 or ::1 only",
        );
    }
    let require_client_certificate = t.boolean("require_client_certificate", false);
    if require_client_certificate && client_ca.is_none() {
        doc.problem(
            t.at,
            "[api] require_client_certificate needs client_ca: the CAs whose certificates are accepted",
        );
    }
    if client_ca.is_some() && cert_file.is_none() {
        doc.problem(
            t.at,
            "[api] client_ca needs TLS: set cert_file and key_file",
        );
    }
    let tokens = api_tokens(t);
    let timeout = 100 * MS..=HOUR;
    ApiConfig {
        listen,
        cert_file,
        key_file,
        client_ca,
        require_client_certificate,
        tokens,
        bounds: ApiBounds {
            connections: t.count("connections", 64, 1..=100_000),
            connections_per_source: t.count("connections_per_source", 16, 1..=100_000),
            body_size: t.count("body_size", 64 << 10, 1024..=16 << 20),
            head_size: t.count("head_size", 16 << 10, 8192..=1 << 20),
            head_timeout: t.duration("head_timeout", 10 * SECOND, timeout.clone()),
            request_timeout: t.duration("request_timeout", 60 * SECOND, timeout),
            followers: t.count("followers", 32, 1..=10_000),
        },
        auth_failures_per_minute: t.count("auth_failures_per_minute", 20, 1..=100_000) as u32,
        line: t.line(),
    }
}

/// The `[[api.token]]` entries of `[api]`: each with a name, a SHA-256 hash and scopes, no
/// name or hash twice.
fn api_tokens(t: &Table) -> Vec<ApiToken> {
    let doc = t.doc();
    let mut tokens: Vec<ApiToken> = Vec::new();
    for token in t.tables("token") {
        let name = token.required_string("name");
        let sha256 = token.required_string("sha256").and_then(|h| {
            let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(h.get_ref().as_bytes());
            match bytes.ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                Some(hash) => Some(hash),
                None => {
                    doc.problem(
                        h.span().start,
                        "sha256 is not 64 hexadecimal digits: `flipdns token new NAME --scope ...` prints the line to paste (the config holds the token's hash, never the token)",
                    );
                    None
                }
            }
        });
        let mut scopes = Vec::new();
        for scope in token
            .strings("scopes")
            .map(|l| l.into_inner())
            .unwrap_or_default()
        {
            match scope.get_ref().parse::<Scope>() {
                Ok(parsed) => scopes.push(parsed),
                Err(e) => doc.problem(scope.span().start, e),
            }
        }
        if scopes.is_empty() {
            doc.problem_at_line(
                token.line(),
                "a token needs at least one scope (`scopes = [\"read\"]`)",
            );
        }
        if let (Some(name), Some(sha256)) = (name, sha256) {
            if tokens.iter().any(|t| t.name == *name.get_ref()) {
                doc.problem(
                    name.span().start,
                    format!("token name {:?} is used twice", name.get_ref()),
                );
            }
            if tokens.iter().any(|t| t.sha256 == sha256) {
                doc.problem_at_line(
                    token.line(),
                    "two tokens have the same hash: one token would be two principals",
                );
            }
            tokens.push(ApiToken {
                name: name.into_inner(),
                sha256,
                scopes,
                line: token.line(),
            });
        }
        token.finish();
    }
    tokens
}

/// The strings of `key`, each parsed; one that does not parse is a problem naming `what`
/// and an `example` of what is expected.
fn parsed<T: std::str::FromStr>(t: &Table, key: &'static str, what: &str, example: &str) -> Vec<T> {
    let mut out = Vec::new();
    for entry in t.strings(key).map(|l| l.into_inner()).unwrap_or_default() {
        match entry.get_ref().parse::<T>() {
            Ok(value) => out.push(value),
            Err(_) => t.doc().problem(
                entry.span().start,
                format!("bad {what} {:?}: expected {example}", entry.get_ref()),
            ),
        }
    }
    out
}

/// Reads the table `[key]` (empty when absent) with `read`, then reports unknown keys.
fn section<T>(top: &Table, key: &'static str, read: fn(&Table) -> T) -> T {
    let table = top.table(key);
    let value = read(&table);
    table.finish();
    value
}

/// The value `read` gives for an absent table: the defaults.
pub fn defaults<T>(read: fn(&Table) -> T) -> T {
    let doc = Document::new(std::path::Path::new("defaults"), "");
    let empty = toml::de::DeTable::default();
    let top = Table::top(&doc, &empty);
    read(&top.table("none"))
}

fn server(t: &Table) -> Option<Server> {
    let doc = t.doc();
    let listen = listen(t);
    let admin_socket = t
        .require("admin_socket")
        .then(|| t.path("admin_socket"))
        .flatten();
    if let Some(path) = &admin_socket
        && path.get_ref().as_os_str().len() > MAX_SOCKET_PATH
    {
        doc.problem(
            path.span().start,
            format!(
                "admin_socket path {} is {} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}",
                path.get_ref().display(),
                path.get_ref().as_os_str().len()
            ),
        );
    }
    let admin_socket_mode = socket_mode(t);
    let state_file = t
        .require("state_file")
        .then(|| t.path("state_file"))
        .flatten();
    let metrics_listen = t.string("metrics_listen").and_then(|m| {
        m.get_ref().parse::<SocketAddr>().ok().or_else(|| {
            doc.problem(
                m.span().start,
                format!(
                    "bad metrics_listen {:?}: expected IP:PORT such as \"127.0.0.1:9153\"",
                    m.get_ref()
                ),
            );
            None
        })
    });
    let ids = 0..=u64::from(u32::MAX);
    let admin_allowed_uids = t.numbers("admin_allowed_uids", ids.clone());
    let admin_allowed_gids = t.numbers("admin_allowed_gids", ids);
    let identity = t.string("identity").and_then(|i| {
        let text = i.get_ref();
        if text.is_empty() || text.len() > 255 || !text.is_ascii() {
            doc.problem(
                i.span().start,
                "`identity` must be 1 to 255 ASCII characters, such as \"ns1.example.net\"",
            );
            return None;
        }
        Some(i.into_inner())
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = t.count("workers", cores, 1..=MAX_WORKERS);
    let udp_batch = t.count("udp_batch", DEFAULT_UDP_BATCH, 1..=MAX_UDP_BATCH);
    let audit_file = t.path("audit_file").map(|p| p.into_inner());
    let state_file = state_file?.into_inner();
    let audit_file = audit_file.unwrap_or_else(|| {
        state_file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("audit.jsonl")
    });
    Some(Server {
        listen: listen?,
        admin_socket: admin_socket?.into_inner(),
        admin_socket_mode,
        state_file,
        metrics_listen,
        admin_allowed_uids: admin_allowed_uids.into_iter().map(|n| n as u32).collect(),
        admin_allowed_gids: admin_allowed_gids.into_iter().map(|n| n as u32).collect(),
        identity,
        workers,
        udp_batch,
        audit_file,
    })
}

/// Most datagrams a UDP worker moves per system call (`udp_batch`). gdnsd uses 16; beyond
/// 64 a batch only adds latency to its first query.
pub const MAX_UDP_BATCH: usize = 64;
/// Most UDP workers per address: far beyond any core count that helps.
pub const MAX_WORKERS: usize = 256;
/// Datagrams per system call when `udp_batch` is not given: as gdnsd, enough to make the
/// calls cheap per query without holding the first query of a batch long.
pub const DEFAULT_UDP_BATCH: usize = 32;

fn listen(t: &Table) -> Option<Vec<SocketAddr>> {
    let doc = t.doc();
    if !t.require("listen") {
        return None;
    }
    let list = t.strings("listen")?;
    if list.get_ref().is_empty() {
        doc.problem(
            list.span().start,
            "`listen` is empty: give at least one address such as \"127.0.0.1:8053\"",
        );
    }
    let mut listen = Vec::new();
    for item in list.into_inner() {
        match item.get_ref().parse::<SocketAddr>() {
            Ok(addr) if listen.contains(&addr) => doc.problem(
                item.span().start,
                format!("listen address {addr} is given twice"),
            ),
            Ok(addr) => listen.push(addr),
            Err(_) => doc.problem(
                item.span().start,
                format!(
                    "bad listen address {:?}: expected IP:PORT such as \"127.0.0.1:8053\" or \"[::1]:8053\"",
                    item.get_ref()
                ),
            ),
        }
    }
    Some(listen)
}

fn socket_mode(t: &Table) -> u32 {
    mode(t, "admin_socket_mode", 0o600)
}

/// A socket's file mode under `key`, octal, giving the owner read and write.
fn mode(t: &Table, key: &'static str, default: u32) -> u32 {
    let Some(mode) = t.string(key) else {
        return default;
    };
    match u32::from_str_radix(mode.get_ref(), 8) {
        Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => m,
        Ok(_) => {
            t.doc().problem(
                mode.span().start,
                format!("{key} must give the owner read and write (0600 to 0777)"),
            );
            default
        }
        Err(_) => {
            t.doc().problem(
                mode.span().start,
                format!(
                    "bad {key} {:?}: expected an octal mode such as \"0600\"",
                    mode.get_ref()
                ),
            );
            default
        }
    }
}

pub fn limits(t: &Table) -> Limits {
    let timeout = 100 * MS..=HOUR;
    Limits {
        tcp_connections: t.count("tcp_connections", 100, 1..=100_000),
        tcp_idle_timeout: t.duration("tcp_idle_timeout", 10 * SECOND, timeout.clone()),
        tcp_message_timeout: t.duration("tcp_message_timeout", 2 * SECOND, timeout.clone()),
        admin_clients: t.count("admin_clients", 16, 1..=1024),
        admin_request_timeout: t.duration("admin_request_timeout", 5 * SECOND, timeout.clone()),
        reload_timeout: t.duration("reload_timeout", 10 * SECOND, timeout.clone()),
        transfers: t.count("transfers", 8, 1..=1024),
        transfers_per_source: t.count("transfers_per_source", 2, 1..=1024),
        transfer_timeout: t.duration("transfer_timeout", 120 * SECOND, timeout),
        transfer_min_rate: t.count("transfer_min_rate", 16 * 1024, 1..=1 << 30) as u64,
        ixfr_history: t.count("ixfr_history", 100, 0..=100_000),
        audit_file_size: t.count("audit_file_size", 16 << 20, 4096..=1 << 30) as u64,
    }
}

pub fn fleet(t: &Table) -> FleetConfig {
    FleetConfig {
        wait: t.duration("wait", 30 * SECOND, SECOND..=HOUR),
        notify_retries: t.count("notify_retries", 5, 0..=20) as u32,
        notify_retry: t.duration("notify_retry", SECOND, 10 * MS..=HOUR),
        check_interval: t.duration("check_interval", 10 * SECOND, 100 * MS..=HOUR),
    }
}

fn tsig_keys(top: &Table) -> Vec<TsigKeyConfig> {
    let doc = top.doc();
    let mut keys: Vec<TsigKeyConfig> = Vec::new();
    for t in top.tables("tsig_key") {
        let name = t
            .required_string("name")
            .and_then(|n| match Name::from_ascii(n.get_ref()) {
                Ok(name) if !name.is_root() => Some(fqdn(name)),
                _ => {
                    doc.problem(
                        n.span().start,
                        format!(
                            "bad key name {:?}: expected a domain name such as \"xfr-key\"",
                            n.get_ref()
                        ),
                    );
                    None
                }
            });
        let algorithm = t.required_string("algorithm").and_then(|a| {
            let known = crate::wire::tsig::ALGORITHMS.iter().any(|(n, _)| n == a.get_ref());
            if !known {
                doc.problem(a.span().start, format!("unknown TSIG algorithm {:?}: expected hmac-sha256, hmac-sha384 or hmac-sha512", a.get_ref()));
            }
            known.then(|| a.into_inner())
        });
        if t.has("secret") {
            t.string("secret");
            doc.problem(t.at, "a TSIG secret is never written in the config: put its base64 in a file readable only by flipdns and name it with `secret_file`");
        }
        let secret_file = t
            .require("secret_file")
            .then(|| t.path("secret_file"))
            .flatten();
        if let (Some(name), Some(algorithm), Some(secret_file)) = (name, algorithm, secret_file) {
            if keys.iter().any(|k| k.name == name) {
                doc.problem_at_line(t.line(), format!("TSIG key {name} is configured twice"));
            }
            keys.push(TsigKeyConfig {
                name,
                algorithm,
                secret_file: secret_file.into_inner(),
                line: t.line(),
            });
        }
        t.finish();
    }
    keys
}

/// A key name as it arrives on the wire: lowercase, fully qualified.
fn fqdn(name: Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

fn secondaries(top: &Table, keys: &[TsigKeyConfig]) -> Vec<SecondaryConfig> {
    let doc = top.doc();
    let mut secondaries: Vec<SecondaryConfig> = Vec::new();
    for t in top.tables("secondary") {
        let address = t.required_string("address").and_then(|a| {
            let text = a.get_ref();
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
            });
            if parsed.is_none() {
                doc.problem(a.span().start, format!("bad secondary address {text:?}: expected an IP address with an optional port, such as \"192.0.2.53\" or \"192.0.2.53:5353\""));
            }
            parsed
        });
        let key = t.string("key").and_then(|k| {
            let name = Name::from_ascii(k.get_ref()).ok().map(fqdn);
            let known = name
                .as_ref()
                .is_some_and(|n| keys.iter().any(|key| &key.name == n));
            if !known {
                let names: Vec<String> = keys.iter().map(|k| k.name.to_string()).collect();
                doc.problem(
                    k.span().start,
                    format!(
                        "secondary key {:?} is not a configured [[tsig_key]] (configured: {})",
                        k.get_ref(),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                );
            }
            name.filter(|_| known)
        });
        let name = t.string("name").map(|n| n.into_inner());
        let identity = t.string("dnstap_identity").map(|n| n.into_inner());
        if let Some(address) = address {
            if secondaries.iter().any(|s| s.address == address) {
                doc.problem_at_line(t.line(), format!("secondary {address} is configured twice"));
            }
            let name = name.unwrap_or_else(|| address.to_string());
            let dnstap_identity = identity.unwrap_or_else(|| name.clone());
            if let Some(other) = secondaries
                .iter()
                .find(|s| s.dnstap_identity == dnstap_identity)
            {
                doc.problem_at_line(
                    t.line(),
                    format!(
                        "secondary {name}: dnstap identity {dnstap_identity:?} is also secondary {}'s (line {}); each stream must say whose it is",
                        other.name, other.line
                    ),
                );
            }
            secondaries.push(SecondaryConfig {
                name,
                address,
                key,
                dnstap_identity,
                line: t.line(),
            });
        }
        t.finish();
    }
    secondaries
}

pub fn dnstap(t: &Table) -> DnstapConfig {
    let doc = t.doc();
    let mut listen = Vec::new();
    for entry in t
        .strings("listen")
        .map(|l| l.into_inner())
        .unwrap_or_default()
    {
        let text = entry.get_ref();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            listen.push(DnstapListen::Tcp(addr));
        } else if text.contains('/') || !text.contains(':') {
            let path = doc.base.join(text);
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                doc.problem(
                    entry.span().start,
                    format!(
                        "dnstap socket path {} is {} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}",
                        path.display(),
                        path.as_os_str().len()
                    ),
                );
            }
            listen.push(DnstapListen::Unix(path));
        } else {
            doc.problem(
                entry.span().start,
                format!("bad dnstap listen {text:?}: expected a Unix socket path such as \"run/dnstap.sock\" or IP:PORT such as \"127.0.0.1:6000\""),
            );
        }
    }
    let allow: Vec<IpAddr> = parsed(
        t,
        "allow",
        "dnstap allow",
        "an IP address such as \"192.0.2.53\"",
    );
    if listen.iter().any(|l| matches!(l, DnstapListen::Tcp(_))) && allow.is_empty() {
        doc.problem(
            t.at,
            "[dnstap] listens on TCP but `allow` lists no sender address: every sender would be refused",
        );
    }
    let socket_group = t.string("socket_group").and_then(|g| {
        let gid = group_id(g.get_ref());
        if gid.is_none() {
            doc.problem(
                g.span().start,
                format!(
                    "dnstap socket_group {:?} is no group of this system",
                    g.get_ref()
                ),
            );
        }
        gid
    });
    DnstapConfig {
        listen,
        allow,
        socket_mode: mode(t, "socket_mode", 0o660),
        socket_group,
        connections: t.count("connections", 64, 1..=4096),
        max_frame: t.count("max_frame", 128 * 1024, 512..=1 << 20),
        frames_per_second: t.count("frames_per_second", 2_000_000, 1..=100_000_000) as u64,
        senders: t.count("senders", 256, 1..=65_536),
        handshake_timeout: t.duration("handshake_timeout", 10 * SECOND, 100 * MS..=HOUR),
        frame_timeout: t.duration("frame_timeout", 30 * SECOND, 100 * MS..=HOUR),
    }
}

/// The id of group `name` (or a number), from the system's group database.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(name).ok()?;
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `group` and `buf`, which we own and size; only the gid
    // is read afterwards.
    let done = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (done == 0 && !found.is_null()).then_some(group.gr_gid)
}

pub fn ledger(t: &Table) -> LedgerConfig {
    LedgerConfig {
        enabled: t.boolean("enabled", true),
        capacity: t.count("capacity", 1_000_000, 1..=100_000_000),
    }
}

pub fn rrl(t: &Table) -> RrlConfig {
    RrlConfig {
        enabled: t.boolean("enabled", false),
        responses_per_second: t.count("responses_per_second", 200, 1..=1_000_000) as u32,
        slip: t.count("slip", 2, 0..=10) as u32,
        table_size: t.count("table_size", 65536, 16..=1 << 24),
        ipv4_prefix: t.count("ipv4_prefix", 24, 8..=32) as u8,
        ipv6_prefix: t.count("ipv6_prefix", 56, 16..=128) as u8,
    }
}

fn zones(top: &Table) -> Vec<ZoneConfig> {
    let doc = top.doc();
    let mut zones: Vec<ZoneConfig> = Vec::new();
    let mut origins = HashSet::new();
    for t in top.tables("zone") {
        if let Some(zone) = zone(&t) {
            if !origins.insert(zone.origin.clone()) {
                let message = format!("zone {} is configured twice", zone.origin);
                doc.problem_at_line(zone.line, message);
            }
            zones.push(zone);
        }
        t.finish();
    }
    if zones.is_empty() && !doc.has_problems() {
        doc.problem(
            0,
            "no [[zone]] configured: flipdns needs at least one zone to serve",
        );
    }
    zones
}

fn zone(t: &Table) -> Option<ZoneConfig> {
    let doc = t.doc();
    let origin = t.required_string("origin").and_then(|o| {
        match Name::from_ascii(o.get_ref()) {
            Ok(name) if name.is_fqdn() && !name.is_root() => Some(name.to_lowercase()),
            Ok(_) => {
                doc.problem(o.span().start, format!("zone origin {:?} must be fully qualified, with a trailing dot, and not the root", o.get_ref()));
                None
            }
            Err(e) => {
                doc.problem(o.span().start, format!("bad zone origin {:?}: {e}", o.get_ref()));
                None
            }
        }
    });
    let file = t.require("file").then(|| t.path("file")).flatten();
    Some(ZoneConfig {
        origin: origin?,
        file: file?.into_inner(),
        line: t.line(),
    })
}

fn services(top: &Table, zones: &[ZoneConfig]) -> Vec<ServiceConfig> {
    let doc = top.doc();
    let tables = top.tables("service");
    // Exactly as many as written: the list is kept for the server's life.
    let mut services = Vec::with_capacity(tables.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for t in tables {
        if let Some(service) = service(&t, zones) {
            if names.insert(service.name.clone(), service.line).is_some() {
                let message = format!(
                    "service `{}` is configured twice; service names identify a service in `flipdns ctl` and the state file, so they are unique across zones",
                    service.name
                );
                doc.problem_at_line(service.line, message);
            }
            if services.len() == MAX_SERVICES {
                doc.problem_at_line(
                    service.line,
                    format!("more than {MAX_SERVICES} services; split them over more servers"),
                );
            }
            services.push(service);
        }
        t.finish();
    }
    services
}

/// Most services one config may hold. The straggler ledger packs a service's id into 24
/// bits (see `stragglers::batch`), so this stays well below 2^24.
pub const MAX_SERVICES: usize = 1_000_000;

fn service(t: &Table, zones: &[ZoneConfig]) -> Option<ServiceConfig> {
    let name = t.required_string("name");
    let zone = service_zone(t, zones);
    let (name, fqdn) = match name {
        Some(n) if n.get_ref().is_empty() => {
            t.doc().problem(n.span().start, "service name is empty");
            (None, None)
        }
        Some(n) => match zone.as_ref().map(|z| service_name(n.get_ref(), z)) {
            Some(Err(e)) => {
                let message = format!("bad service name {:?}: {e}", n.get_ref());
                t.doc().problem(n.span().start, message);
                (None, None)
            }
            fqdn => (
                Some(n.get_ref().to_ascii_lowercase()),
                fqdn.and_then(Result::ok),
            ),
        },
        None => (None, None),
    };
    let blue = addresses(t, "blue");
    let green = addresses(t, "green");
    let live = t.required_string("live").and_then(|l| {
        l.get_ref()
            .parse::<Color>()
            .map_err(|e| t.doc().problem(l.span().start, e.to_string()))
            .ok()
    });
    let (ttl, cutover_ttl) = ttls(t);
    let settle = t
        .require("settle")
        .then(|| t.ranged_duration("settle", Duration::ZERO..=YEAR))
        .flatten();
    let min_flip_interval = t.duration("min_flip_interval", Duration::ZERO, Duration::ZERO..=YEAR);
    let answer = answer_mode(t);
    let health_table = t.table("health");
    let health = health(&health_table);
    health_table.finish();
    let approval = match t.string("approval") {
        None => Some(Approval::None),
        Some(a) => match a.get_ref().as_str() {
            "none" => Some(Approval::None),
            "two-person" => Some(Approval::TwoPerson),
            other => {
                t.doc().problem(
                    a.span().start,
                    format!("unknown approval {other:?}: expected \"none\" or \"two-person\""),
                );
                None
            }
        },
    };
    let approval_timeout = t.duration("approval_timeout", HOUR, 60 * SECOND..=7 * 24 * HOUR);
    Some(ServiceConfig {
        name: name?,
        fqdn: fqdn?,
        zone: zone?,
        blue: blue?,
        green: green?,
        live: live?,
        ttl: ttl?,
        cutover_ttl: cutover_ttl?,
        settle: settle?,
        min_flip_interval,
        answer: answer?,
        health: health?.map(Box::new),
        approval: approval?,
        approval_timeout,
        line: t.line(),
    })
}

/// The zone a service names, or the only zone there is.
fn service_zone(t: &Table, zones: &[ZoneConfig]) -> Option<Name> {
    let list = || {
        let names: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    };
    match t.string("zone") {
        Some(z) => {
            let name = Name::from_ascii(z.get_ref()).map(|n| n.to_lowercase());
            match name {
                Ok(name) if name.is_fqdn() && zones.iter().any(|zone| zone.origin == name) => {
                    Some(name)
                }
                _ => {
                    t.doc().problem(
                        z.span().start,
                        format!(
                            "service zone {:?} is not a configured [[zone]] origin (configured: {})",
                            z.get_ref(),
                            list()
                        ),
                    );
                    None
                }
            }
        }
        None if zones.len() == 1 => Some(zones[0].origin.clone()),
        None if zones.is_empty() => None,
        None => {
            t.doc().problem(
                t.at,
                format!(
                    "missing `zone` in [[service]]: with several zones each service names its zone ({})",
                    list()
                ),
            );
            None
        }
    }
}

/// `ttl` and `cutover_ttl`, the second no longer than the first.
fn ttls(t: &Table) -> (Option<u32>, Option<u32>) {
    let ttl = ttl(t, "ttl");
    let cutover_ttl = ttl_value(t, "cutover_ttl");
    let cutover = match (ttl, cutover_ttl) {
        (Some(ttl), Some((value, at))) if value > ttl => {
            t.doc().problem(
                at,
                format!(
                    "cutover_ttl {value} is longer than ttl {ttl}: the cutover TTL is the short one"
                ),
            );
            None
        }
        (_, value) => value.map(|(v, _)| v),
    };
    (ttl, cutover)
}

fn ttl(t: &Table, key: &'static str) -> Option<u32> {
    ttl_value(t, key).map(|(v, _)| v)
}

/// A required TTL in seconds, and where it stands.
fn ttl_value(t: &Table, key: &'static str) -> Option<(u32, usize)> {
    if !t.require(key) {
        return None;
    }
    let value = t.integer(key)?;
    match u32::try_from(*value.get_ref()) {
        Ok(v) if (1..=MAX_TTL).contains(&v) => Some((v, value.span().start)),
        _ => {
            t.doc().problem(
                value.span().start,
                format!("{key} must be between 1 and {MAX_TTL} seconds"),
            );
            None
        }
    }
}

fn answer_mode(t: &Table) -> Option<AnswerMode> {
    let Some(answer) = t.string("answer") else {
        return Some(AnswerMode::A);
    };
    match answer.get_ref().as_str() {
        "a" => Some(AnswerMode::A),
        "cname" => Some(AnswerMode::Cname),
        other => {
            t.doc().problem(
                answer.span().start,
                format!("unknown answer mode {other:?}: expected \"a\" or \"cname\""),
            );
            None
        }
    }
}

fn addresses(t: &Table, color: &'static str) -> Option<Vec<IpAddr>> {
    let doc = t.doc();
    if !t.require(color) {
        return None;
    }
    let list = t.strings(color)?;
    if list.get_ref().is_empty() {
        doc.problem(list.span().start, format!("`{color}` has no addresses: a color needs at least one, or flipping to it would take the service off the air"));
        return None;
    }
    let list_start = list.span().start;
    let mut addresses = Vec::new();
    let mut ok = true;
    for item in list.into_inner() {
        match item.get_ref().parse::<IpAddr>() {
            Ok(addr) if addresses.contains(&addr) => {
                doc.problem(
                    item.span().start,
                    format!("address {addr} is listed twice in `{color}`"),
                );
                ok = false;
            }
            Ok(addr) => addresses.push(addr),
            Err(_) => {
                doc.problem(
                    item.span().start,
                    format!(
                        "bad address {:?} in `{color}`: expected an IPv4 or IPv6 address",
                        item.get_ref()
                    ),
                );
                ok = false;
            }
        }
    }
    if ok && addresses.len() > super::MAX_ADDRESSES {
        doc.problem(
            list_start,
            format!(
                "`{color}` has {} addresses; at most {} fit in one UDP answer",
                addresses.len(),
                super::MAX_ADDRESSES
            ),
        );
        return None;
    }
    ok.then_some(addresses)
}

/// `"200"` or `"200-399"`: the HTTP statuses a health check accepts.
fn parse_status(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then_some(low..=high)
}

/// The keys of `[service.health]` that only HTTP and HTTPS checks take.
struct HttpKeys {
    path: Option<Located<String>>,
    host: Option<Located<String>>,
    status: Option<Located<String>>,
    ca_file: Option<Located<PathBuf>>,
    tls_verify: Option<bool>,
}

/// `[service.health]`: `Some(None)` when absent, `None` when it has problems.
fn health(t: &Table) -> Option<Option<HealthConfig>> {
    let port = t.ranged("port", 1..=65535);
    let kind = t.string("kind");
    let keys = HttpKeys {
        path: t.string("path"),
        host: t.string("host"),
        status: t.string("status"),
        ca_file: t.path("ca_file"),
        tls_verify: t.has("tls_verify").then(|| t.boolean("tls_verify", true)),
    };
    let timeout = t.duration("timeout", 2 * SECOND, 10 * MS..=HOUR);
    let interval = t.duration("interval", 5 * SECOND, 100 * MS..=YEAR);
    if !t.present() {
        return Some(None);
    }
    if !t.require("port") {
        return None;
    }
    let name = kind.as_ref().map_or("http", |k| k.get_ref().as_str());
    if name != "https" {
        let tls_keys = [keys.ca_file.as_ref().map(|f| f.span().start)]
            .into_iter()
            .flatten()
            .chain(keys.tls_verify.is_some().then_some(t.at));
        for at in tls_keys {
            t.doc().problem(
                at,
                "`ca_file` and `tls_verify` are for kind = \"https\" only",
            );
        }
    }
    let kind = match name {
        "http" | "https" => health_http(t, keys, name == "https"),
        "tcp" => {
            for key in [&keys.path, &keys.host, &keys.status].into_iter().flatten() {
                t.doc().problem(
                    key.span().start,
                    "`path`, `host` and `status` are for kind = \"http\" or \"https\" only",
                );
            }
            Some(HealthKind::Tcp)
        }
        other => {
            let at = kind.as_ref().map_or(t.at, |k| k.span().start);
            t.doc().problem(
                at,
                format!("unknown health kind {other:?}: expected \"http\", \"https\" or \"tcp\""),
            );
            None
        }
    };
    Some(Some(HealthConfig {
        kind: kind?,
        port: port? as u16,
        timeout,
        interval,
    }))
}

/// An HTTP or HTTPS check: path, host, accepted statuses and, for HTTPS, the trust.
fn health_http(t: &Table, keys: HttpKeys, https: bool) -> Option<HealthKind> {
    let path = keys
        .path
        .map_or_else(|| "/".to_string(), |p| p.into_inner());
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        t.doc().problem(
            t.at,
            format!("health path {path:?} must start with / and hold no spaces"),
        );
        return None;
    }
    let host = keys.host.and_then(|h| health_host(t, h, https));
    let status = match keys.status {
        None => Some(200..=299),
        Some(s) => health_status(t, s),
    };
    let tls = https.then(|| health_tls(t, keys.tls_verify, keys.ca_file));
    status.map(|status| HealthKind::Http {
        path,
        host,
        status,
        tls,
    })
}

/// The `host` a check sends; over TLS also the certificate's name (SNI), so a DNS name.
fn health_host(t: &Table, h: Located<String>, https: bool) -> Option<String> {
    let text = h.get_ref();
    let valid = !text.is_empty()
        && text.len() <= 255
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if !valid {
        t.doc().problem(
            h.span().start,
            format!("health host {text:?} is not a host name such as \"app.example.com\""),
        );
    }
    // URL parsers read a name whose last label is a number (`10.1`, `0x7f.1`, `2130706433`)
    // as an IPv4 address, and would connect there.
    let last = text.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let hex = last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
        && last[2..].chars().all(|c| c.is_ascii_hexdigit());
    let number = last.chars().all(|c| c.is_ascii_digit()) || hex;
    let named = !text.contains([':', '[', ']']) && !number;
    if valid && https && !named {
        t.doc().problem(
            h.span().start,
            format!("health host {text:?}: for https give the name the certificate is for, without a port; leave `host` out to check the certificate against the address"),
        );
    }
    (valid && (!https || named)).then(|| h.into_inner())
}

/// The statuses a check accepts, `"200"` or `"200-399"`.
fn health_status(t: &Table, s: Located<String>) -> Option<std::ops::RangeInclusive<u16>> {
    let parsed = parse_status(s.get_ref());
    if parsed.is_none() {
        t.doc().problem(
            s.span().start,
            format!(
                "health status {:?}: expected a status or a range from 100 to 599, such as \"200\" or \"200-399\"",
                s.get_ref()
            ),
        );
    }
    parsed
}

/// Which certificates an HTTPS check accepts.
fn health_tls(t: &Table, tls_verify: Option<bool>, ca_file: Option<Located<PathBuf>>) -> HealthTls {
    match tls_verify {
        Some(false) => {
            if let Some(file) = &ca_file {
                t.doc().problem(
                    file.span().start,
                    "`ca_file` with `tls_verify = false`: nothing would be verified against it; drop one of the two",
                );
            }
            HealthTls::Insecure
        }
        _ => HealthTls::Verify {
            ca_file: ca_file.map(|f| f.into_inner()),
        },
    }
}
