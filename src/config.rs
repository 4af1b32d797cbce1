//! The TOML configuration: its model, defaults, and validation with file:line problems.
//!
//! Parsing is strict: unknown keys are problems, every value is checked, and every problem is
//! reported with its line, all in one pass, before any socket is bound. Paths are relative to
//! the directory of the config file. Zone files are read by [`crate::catalog`], not here.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;
use toml::Spanned;

use crate::color::Color;
use crate::problem::{Lines, Problem, Problems};

/// The config file `flipdns serve` and `flipdns check` read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "zones/flipdns.toml";

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Largest TTL RFC 2181 section 8 allows.
const MAX_TTL: u32 = i32::MAX as u32;

/// A validated configuration. Everything in it has been checked; zone files not yet read.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; problems found later (zone files) are reported beside it.
    pub path: PathBuf,
    pub server: Server,
    pub limits: Limits,
    pub ledger: LedgerConfig,
    pub rrl: RrlConfig,
    pub zones: Vec<ZoneConfig>,
    pub services: Vec<ServiceConfig>,
}

/// `[server]`: where the server listens and keeps its state.
#[derive(Debug, Clone)]
pub struct Server {
    /// DNS addresses; UDP and TCP are bound on each. Port 0 picks one free port for both.
    pub listen: Vec<SocketAddr>,
    pub admin_socket: PathBuf,
    /// File mode of the admin socket; the only access control besides the directory's.
    pub admin_socket_mode: u32,
    pub state_file: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    /// When not empty, only peers with one of these uids (checked with SO_PEERCRED), or
    /// one of `admin_allowed_gids`, may use the admin socket, on top of its file mode.
    pub admin_allowed_uids: Vec<u32>,
    pub admin_allowed_gids: Vec<u32>,
}

/// `[limits]`: every bound a peer can push on that an operator may want to tune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent DNS-over-TCP connections; more are accepted and closed at once.
    pub tcp_connections: usize,
    /// A TCP connection with no query for this long is closed (RFC 7766 section 6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Time allowed to receive one whole message once its first byte arrived, and to write
    /// one reply: a client that stalls mid-message or stops reading is dropped.
    pub tcp_message_timeout: Duration,
    /// Concurrent admin socket clients; more are answered with an error and closed.
    pub admin_clients: usize,
    /// Time allowed for one admin request line to arrive, and for an idle admin connection.
    pub admin_request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tcp_connections: 100,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_message_timeout: Duration::from_secs(2),
            admin_clients: 16,
            admin_request_timeout: Duration::from_secs(5),
        }
    }
}

/// One `[[zone]]`: an origin served from an RFC 1035 master file.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// Lowercase, fully qualified.
    pub origin: Name,
    pub file: PathBuf,
    /// Line of the `[[zone]]` table, for problems found later.
    pub line: usize,
}

/// One `[[service]]`: a name with a blue and a green address set.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Origin of the zone the service lives in (lowercase, fully qualified).
    pub zone: Name,
    pub blue: Vec<IpAddr>,
    pub green: Vec<IpAddr>,
    /// The color served when the state file has no entry for the service.
    pub live: Color,
    pub ttl: u32,
    pub cutover_ttl: u32,
    pub settle: Duration,
    /// A flip within this long of the previous one is refused unless forced (anti-flap).
    pub min_flip_interval: Duration,
    pub answer: AnswerMode,
    pub health: Option<HealthConfig>,
    /// Line of the `[[service]]` table.
    pub line: usize,
}

/// How a service name answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMode {
    /// A/AAAA records of the live color.
    A,
    /// A CNAME to `LIVE.SERVICE.ZONE`, followed by that name's A/AAAA records: a resolver that
    /// later asks for the old color's name after the CNAME expired is caught straggling.
    Cname,
}

/// `[rrl]`: response rate limiting per source prefix, for UDP (off by default, as in Knot
/// and BIND; NSD's recommended values are the defaults here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    pub enabled: bool,
    /// Responses a source prefix gets per second before it is limited.
    pub responses_per_second: u32,
    /// Every `slip`th limited response is sent truncated (TC, no records) so that real
    /// clients retry over TCP; the others are dropped. 0 drops them all.
    pub slip: u32,
    /// Buckets in the fixed-size table; prefixes that hash alike share one.
    pub table_size: usize,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for RrlConfig {
    fn default() -> RrlConfig {
        RrlConfig {
            enabled: false,
            responses_per_second: 200,
            slip: 2,
            table_size: 65536,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }
}

/// `[ledger]`: the straggler ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    pub enabled: bool,
    /// Most (resolver, client subnet, service) entries kept; beyond it the least recently
    /// seen go.
    pub capacity: usize,
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            enabled: true,
            capacity: 1_000_000,
        }
    }
}

/// `[service.health]`: how to tell whether an address of a color can take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub port: u16,
    /// Time allowed for one check of one address.
    pub timeout: Duration,
    /// Time between background checks of both colors.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// `GET path` over HTTP/1.1; any 2xx status is healthy.
    Http { path: String },
    /// A TCP connection that opens is healthy.
    Tcp,
}

impl ServiceConfig {
    pub fn addresses(&self, color: Color) -> &[IpAddr] {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }

    /// `NAME.ZONE.`, lowercase.
    pub fn fqdn(&self) -> Name {
        service_name(&self.name, &self.zone).expect("validated when the config was parsed")
    }
}

fn service_name(name: &str, zone: &Name) -> Result<Name, String> {
    let relative = Name::from_ascii(name).map_err(|e| e.to_string())?;
    if relative.is_fqdn() {
        return Err("a service name is relative to its zone and has no trailing dot".into());
    }
    relative
        .append_domain(zone)
        .map(|n| n.to_lowercase())
        .map_err(|e| e.to_string())
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problems(vec![Problem::in_file(path, format!("cannot read: {e}"))]))?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (which only locates relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        let lines = Lines::new(text);
        let at = |offset: usize, message: String| Problem::at(path, lines.line_of(offset), message);
        let document = toml::de::DeTable::parse(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            Problems(vec![at(offset, e.message().trim().to_string())])
        })?;
        let mut problems = Vec::new();
        unknown_keys(document.get_ref(), "", &TOP, &mut |offset, message| {
            problems.push(at(offset, message))
        });
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                problems.push(at(offset, e.message().trim().to_string()));
                return Err(Problems(problems));
            }
        };
        let mut check = Checker {
            base: path.parent().unwrap_or(Path::new(".")),
            path,
            lines: &lines,
            problems,
        };
        let config = check.config(path, raw);
        match config {
            Some(config) if check.problems.is_empty() => Ok(config),
            _ => Err(Problems(check.problems)),
        }
    }

    /// The service called `name`, if configured.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// The admin socket named by the config at `path`, found even when the rest of the file is
/// broken, so that `flipdns ctl reload` can report what is wrong with it.
pub fn admin_socket_of(path: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    if let Ok(config) = Config::parse(path, &text) {
        return Ok(config.server.admin_socket);
    }
    // A line `admin_socket = "..."` inside [server], read without the rest of the TOML.
    let mut in_server = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_server = line == "[server]";
        } else if let Some(value) = line
            .strip_prefix("admin_socket")
            .map(str::trim_start)
            .and_then(|v| v.strip_prefix('='))
        {
            let value = value
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if in_server && !value.is_empty() {
                return Ok(base.join(value));
            }
        }
    }
    Err(format!(
        "{} names no admin_socket in [server]",
        path.display()
    ))
}

/// Parses `500ms`, `2s`, `10m`, `1h30m`, `1d`: whole numbers with a unit, summed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("bad duration {text:?}: expected a number with a unit such as 500ms, 2s, 10m, 1h")
    };
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = unit.checked_mul(u32::try_from(number).map_err(|_| bad())?);
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(bad)?;
    }
    Ok(total)
}

// ---- the raw TOML model: everything optional, so that every missing key is reported ----

#[derive(Deserialize)]
struct RawConfig {
    server: Option<Spanned<RawServer>>,
    limits: Option<RawLimits>,
    ledger: Option<RawLedger>,
    rrl: Option<RawRrl>,
    #[serde(default)]
    zone: Vec<Spanned<RawZone>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
struct RawServer {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    admin_socket: Option<Spanned<String>>,
    admin_socket_mode: Option<Spanned<String>>,
    state_file: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    admin_allowed_uids: Option<Vec<u32>>,
    admin_allowed_gids: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct RawRrl {
    enabled: Option<bool>,
    responses_per_second: Option<Spanned<i64>>,
    slip: Option<Spanned<i64>>,
    table_size: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
struct RawLedger {
    enabled: Option<bool>,
    capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
struct RawLimits {
    tcp_connections: Option<Spanned<i64>>,
    tcp_idle_timeout: Option<Spanned<String>>,
    tcp_message_timeout: Option<Spanned<String>>,
    admin_clients: Option<Spanned<i64>>,
    admin_request_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawZone {
    origin: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawService {
    name: Option<Spanned<String>>,
    zone: Option<Spanned<String>>,
    blue: Option<Spanned<Vec<Spanned<String>>>>,
    green: Option<Spanned<Vec<Spanned<String>>>>,
    live: Option<Spanned<String>>,
    ttl: Option<Spanned<i64>>,
    cutover_ttl: Option<Spanned<i64>>,
    settle: Option<Spanned<String>>,
    min_flip_interval: Option<Spanned<String>>,
    answer: Option<Spanned<String>>,
    health: Option<Spanned<RawHealth>>,
}

#[derive(Deserialize)]
struct RawHealth {
    kind: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    path: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
}

/// The keys a table accepts, and which of them are tables (or arrays of tables) themselves;
/// anything else is reported as unknown.
struct Schema {
    keys: &'static [&'static str],
    tables: &'static [(&'static str, &'static Schema)],
}

const TOP: Schema = Schema {
    keys: &["server", "limits", "ledger", "rrl", "zone", "service"],
    tables: &[
        ("server", &SERVER),
        ("limits", &LIMITS),
        ("ledger", &LEDGER),
        ("rrl", &RRL),
        ("zone", &ZONE),
        ("service", &SERVICE),
    ],
};
const SERVER: Schema = Schema {
    keys: &[
        "listen",
        "admin_socket",
        "admin_socket_mode",
        "state_file",
        "metrics_listen",
        "admin_allowed_uids",
        "admin_allowed_gids",
    ],
    tables: &[],
};
const LIMITS: Schema = Schema {
    keys: &[
        "tcp_connections",
        "tcp_idle_timeout",
        "tcp_message_timeout",
        "admin_clients",
        "admin_request_timeout",
    ],
    tables: &[],
};
const LEDGER: Schema = Schema {
    keys: &["enabled", "capacity"],
    tables: &[],
};
const RRL: Schema = Schema {
    keys: &[
        "enabled",
        "responses_per_second",
        "slip",
        "table_size",
        "ipv4_prefix",
        "ipv6_prefix",
    ],
    tables: &[],
};
const ZONE: Schema = Schema {
    keys: &["origin", "file"],
    tables: &[],
};
const SERVICE: Schema = Schema {
    keys: &[
        "name",
        "zone",
        "blue",
        "green",
        "live",
        "ttl",
        "cutover_ttl",
        "settle",
        "min_flip_interval",
        "answer",
        "health",
    ],
    tables: &[("health", &HEALTH)],
};
const HEALTH: Schema = Schema {
    keys: &["kind", "port", "path", "timeout", "interval"],
    tables: &[],
};

/// Reports every key `schema` does not know, with the offset of the key, in `table` and the
/// tables below it. `name` is the dotted path of `table`, empty at the top.
fn unknown_keys(
    table: &toml::de::DeTable<'_>,
    name: &str,
    schema: &Schema,
    report: &mut dyn FnMut(usize, String),
) {
    for (key, value) in table.iter() {
        let key_name = key.get_ref().as_ref();
        if !schema.keys.contains(&key_name) {
            let place = if name.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{name}]")
            };
            report(
                key.span().start,
                format!(
                    "unknown key `{key_name}` {place}; expected one of: {}",
                    schema.keys.join(", ")
                ),
            );
            continue;
        }
        let Some((_, inner)) = schema.tables.iter().find(|(t, _)| *t == key_name) else {
            continue;
        };
        let path = if name.is_empty() {
            key_name.to_string()
        } else {
            format!("{name}.{key_name}")
        };
        match value.get_ref() {
            toml::de::DeValue::Table(t) => unknown_keys(t, &path, inner, report),
            toml::de::DeValue::Array(items) => {
                for item in items.iter() {
                    if let toml::de::DeValue::Table(t) = item.get_ref() {
                        unknown_keys(t, &path, inner, report);
                    }
                }
            }
            _ => {}
        }
    }
}

// ---- validation ----

struct Checker<'a> {
    /// Directory relative paths are resolved against.
    base: &'a Path,
    path: &'a Path,
    lines: &'a Lines,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, offset: usize, message: impl Into<String>) {
        let line = self.lines.line_of(offset);
        self.problems.push(Problem::at(self.path, line, message));
    }

    fn config(&mut self, path: &Path, raw: RawConfig) -> Option<Config> {
        let server = match raw.server {
            Some(server) => self.server(server),
            None => {
                self.problem(0, "missing [server] table");
                None
            }
        };
        let limits = self.limits(raw.limits);
        let ledger = self.ledger(raw.ledger);
        let rrl = self.rrl(raw.rrl);
        let zones: Vec<ZoneConfig> = raw.zone.into_iter().filter_map(|z| self.zone(z)).collect();
        let mut origins = HashSet::new();
        for zone in &zones {
            if !origins.insert(zone.origin.clone()) {
                let message = format!("zone {} is configured twice", zone.origin);
                self.problems.push(Problem::at(path, zone.line, message));
            }
        }
        if zones.is_empty() && self.problems.is_empty() {
            self.problem(
                0,
                "no [[zone]] configured: flipdns needs at least one zone to serve",
            );
        }
        let services: Vec<ServiceConfig> = raw
            .service
            .into_iter()
            .filter_map(|s| self.service(s, &zones))
            .collect();
        let mut names = HashSet::new();
        for service in &services {
            if !names.insert(service.name.as_str()) {
                let message = format!(
                    "service `{}` is configured twice; service names identify a service in `flipdns ctl` and the state file, so they are unique across zones",
                    service.name
                );
                self.problems.push(Problem::at(path, service.line, message));
            }
        }
        Some(Config {
            path: path.to_path_buf(),
            server: server?,
            limits: limits?,
            ledger: ledger?,
            rrl: rrl?,
            zones,
            services,
        })
    }

    fn required<T>(
        &mut self,
        value: Option<Spanned<T>>,
        table_at: usize,
        key: &str,
        table: &str,
    ) -> Option<Spanned<T>> {
        if value.is_none() {
            self.problem(table_at, format!("missing `{key}` in [{table}]"));
        }
        value
    }

    fn path(&mut self, value: Spanned<String>) -> PathBuf {
        self.base.join(value.get_ref())
    }

    fn server(&mut self, raw: Spanned<RawServer>) -> Option<Server> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let mut listen = Vec::new();
        if let Some(list) = self.required(raw.listen, at, "listen", "server") {
            if list.get_ref().is_empty() {
                self.problem(
                    list.span().start,
                    "`listen` is empty: give at least one address such as \"127.0.0.1:8053\"",
                );
            }
            for item in list.into_inner() {
                match item.get_ref().parse::<SocketAddr>() {
                    Ok(addr) if listen.contains(&addr) => {
                        self.problem(item.span().start, format!("listen address {addr} is given twice"))
                    }
                    Ok(addr) => listen.push(addr),
                    Err(_) => self.problem(
                        item.span().start,
                        format!("bad listen address {:?}: expected IP:PORT such as \"127.0.0.1:8053\" or \"[::1]:8053\"", item.get_ref()),
                    ),
                }
            }
        }
        let admin_socket = self.required(raw.admin_socket, at, "admin_socket", "server").map(|s| {
            let offset = s.span().start;
            let path = self.path(s);
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                self.problem(offset, format!(
                    "admin_socket path {} is {} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}",
                    path.display(), path.as_os_str().len()
                ));
            }
            path
        });
        let admin_socket_mode = match raw.admin_socket_mode {
            None => 0o600,
            Some(mode) => {
                match u32::from_str_radix(mode.get_ref(), 8) {
                    Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => m,
                    Ok(_) => {
                        self.problem(
                            mode.span().start,
                            "admin_socket_mode must give the owner read and write (0600 to 0777)",
                        );
                        0o600
                    }
                    Err(_) => {
                        self.problem(mode.span().start, format!("bad admin_socket_mode {:?}: expected an octal mode such as \"0600\"", mode.get_ref()));
                        0o600
                    }
                }
            }
        };
        let state_file = self
            .required(raw.state_file, at, "state_file", "server")
            .map(|s| self.path(s));
        let metrics_listen =
            raw.metrics_listen
                .and_then(|m| match m.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.problem(
                        m.span().start,
                        format!(
                            "bad metrics_listen {:?}: expected IP:PORT such as \"127.0.0.1:9153\"",
                            m.get_ref()
                        ),
                    );
                        None
                    }
                });
        Some(Server {
            listen,
            admin_socket: admin_socket?,
            admin_socket_mode,
            state_file: state_file?,
            metrics_listen,
            admin_allowed_uids: raw.admin_allowed_uids.unwrap_or_default(),
            admin_allowed_gids: raw.admin_allowed_gids.unwrap_or_default(),
        })
    }

    fn limits(&mut self, raw: Option<RawLimits>) -> Option<Limits> {
        let mut limits = Limits::default();
        let Some(raw) = raw else { return Some(limits) };
        if let Some(v) = raw.tcp_connections {
            limits.tcp_connections = self.count(v, "tcp_connections", 1, 100_000)?;
        }
        if let Some(v) = raw.admin_clients {
            limits.admin_clients = self.count(v, "admin_clients", 1, 1024)?;
        }
        let durations = [
            (
                raw.tcp_idle_timeout,
                "tcp_idle_timeout",
                &mut limits.tcp_idle_timeout,
            ),
            (
                raw.tcp_message_timeout,
                "tcp_message_timeout",
                &mut limits.tcp_message_timeout,
            ),
            (
                raw.admin_request_timeout,
                "admin_request_timeout",
                &mut limits.admin_request_timeout,
            ),
        ];
        for (value, key, slot) in durations {
            if let Some(v) = value {
                match parse_duration(v.get_ref()) {
                    Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => {
                        *slot = d
                    }
                    Ok(_) => self.problem(
                        v.span().start,
                        format!("{key} must be between 100ms and 1h"),
                    ),
                    Err(e) => self.problem(v.span().start, format!("{key}: {e}")),
                }
            }
        }
        Some(limits)
    }

    fn rrl(&mut self, raw: Option<RawRrl>) -> Option<RrlConfig> {
        let mut rrl = RrlConfig::default();
        let Some(raw) = raw else { return Some(rrl) };
        rrl.enabled = raw.enabled.unwrap_or(false);
        if let Some(v) = raw.responses_per_second {
            rrl.responses_per_second =
                self.count(v, "rrl responses_per_second", 1, 1_000_000)? as u32;
        }
        if let Some(v) = raw.slip {
            rrl.slip = self.count(v, "rrl slip", 0, 10)? as u32;
        }
        if let Some(v) = raw.table_size {
            rrl.table_size = self.count(v, "rrl table_size", 16, 1 << 24)?;
        }
        if let Some(v) = raw.ipv4_prefix {
            rrl.ipv4_prefix = self.count(v, "rrl ipv4_prefix", 8, 32)? as u8;
        }
        if let Some(v) = raw.ipv6_prefix {
            rrl.ipv6_prefix = self.count(v, "rrl ipv6_prefix", 16, 128)? as u8;
        }
        Some(rrl)
    }

    fn ledger(&mut self, raw: Option<RawLedger>) -> Option<LedgerConfig> {
        let mut ledger = LedgerConfig::default();
        let Some(raw) = raw else { return Some(ledger) };
        ledger.enabled = raw.enabled.unwrap_or(true);
        if let Some(v) = raw.capacity {
            ledger.capacity = self.count(v, "ledger capacity", 1, 100_000_000)?;
        }
        Some(ledger)
    }

    fn count(&mut self, v: Spanned<i64>, key: &str, min: usize, max: usize) -> Option<usize> {
        match usize::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    v.span().start,
                    format!("{key} must be between {min} and {max}"),
                );
                None
            }
        }
    }

    fn zone(&mut self, raw: Spanned<RawZone>) -> Option<ZoneConfig> {
        let at = raw.span().start;
        let line_at = self.lines.line_of(at);
        let raw = raw.into_inner();
        let origin = self.required(raw.origin, at, "origin", "[zone]").and_then(|o| {
            match Name::from_ascii(o.get_ref()) {
                Ok(name) if name.is_fqdn() && !name.is_root() => Some(name.to_lowercase()),
                Ok(_) => {
                    self.problem(o.span().start, format!("zone origin {:?} must be fully qualified, with a trailing dot, and not the root", o.get_ref()));
                    None
                }
                Err(e) => {
                    self.problem(o.span().start, format!("bad zone origin {:?}: {e}", o.get_ref()));
                    None
                }
            }
        });
        let file = self
            .required(raw.file, at, "file", "[zone]")
            .map(|f| self.path(f));
        Some(ZoneConfig {
            origin: origin?,
            file: file?,
            line: line_at,
        })
    }

    fn service(&mut self, raw: Spanned<RawService>, zones: &[ZoneConfig]) -> Option<ServiceConfig> {
        let at = raw.span().start;
        let line = self.lines.line_of(at);
        let raw = raw.into_inner();
        let zone = match raw.zone {
            Some(z) => match Name::from_ascii(z.get_ref()).map(|n| n.to_lowercase()) {
                Ok(name)
                    if zones
                        .iter()
                        .any(|zone| zone.origin == name && name.is_fqdn()) =>
                {
                    Some(name)
                }
                _ => {
                    self.problem(z.span().start, format!(
                        "service zone {:?} is not a configured [[zone]] origin (configured: {})",
                        z.get_ref(), zone_list(zones)
                    ));
                    None
                }
            },
            None if zones.len() == 1 => Some(zones[0].origin.clone()),
            None if zones.is_empty() => None,
            None => {
                self.problem(at, format!("missing `zone` in [[service]]: with several zones each service names its zone ({})", zone_list(zones)));
                None
            }
        };
        let name = self
            .required(raw.name, at, "name", "[service]")
            .and_then(|n| {
                let checked = zone.as_ref().map(|z| service_name(n.get_ref(), z));
                match checked {
                    Some(Err(e)) => {
                        self.problem(
                            n.span().start,
                            format!("bad service name {:?}: {e}", n.get_ref()),
                        );
                        None
                    }
                    _ if n.get_ref().is_empty() => {
                        self.problem(n.span().start, "service name is empty");
                        None
                    }
                    _ => Some(n.into_inner().to_ascii_lowercase()),
                }
            });
        let blue = self.addresses(raw.blue, at, "blue");
        let green = self.addresses(raw.green, at, "green");
        let live = self
            .required(raw.live, at, "live", "[service]")
            .and_then(|l| match l.get_ref().parse::<Color>() {
                Ok(color) => Some(color),
                Err(e) => {
                    self.problem(l.span().start, e.to_string());
                    None
                }
            });
        let ttl = self
            .required(raw.ttl, at, "ttl", "[service]")
            .and_then(|t| self.ttl(t, "ttl", 1));
        let cutover_ttl = self.required(raw.cutover_ttl, at, "cutover_ttl", "[service]").and_then(|t| {
            let offset = t.span().start;
            let value = self.ttl(t, "cutover_ttl", 1)?;
            if ttl.is_some_and(|ttl| value > ttl) {
                self.problem(offset, format!("cutover_ttl {value} is longer than ttl {}: the cutover TTL is the short one", ttl.unwrap_or(0)));
                return None;
            }
            Some(value)
        });
        let settle = self
            .required(raw.settle, at, "settle", "[service]")
            .and_then(|s| self.duration(s, "settle", Duration::ZERO));
        let min_flip_interval = match raw.min_flip_interval {
            Some(d) => self.duration(d, "min_flip_interval", Duration::ZERO),
            None => Some(Duration::ZERO),
        };
        let answer = match raw.answer.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("a") => Some(AnswerMode::A),
            Some("cname") => Some(AnswerMode::Cname),
            Some(other) => {
                let offset = raw.answer.as_ref().map_or(at, |a| a.span().start);
                self.problem(
                    offset,
                    format!("unknown answer mode {other:?}: expected \"a\" or \"cname\""),
                );
                None
            }
        };
        let health = match raw.health {
            Some(h) => self.health(h).map(Some),
            None => Some(None),
        };
        Some(ServiceConfig {
            name: name?,
            zone: zone?,
            blue: blue?,
            green: green?,
            live: live?,
            ttl: ttl?,
            cutover_ttl: cutover_ttl?,
            settle: settle?,
            min_flip_interval: min_flip_interval?,
            answer: answer?,
            health: health?,
            line,
        })
    }

    /// A duration value of at least `min`.
    fn duration(&mut self, value: Spanned<String>, key: &str, min: Duration) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) if d >= min => Some(d),
            Ok(_) => {
                self.problem(
                    value.span().start,
                    format!("{key} must be at least {min:?}"),
                );
                None
            }
            Err(e) => {
                self.problem(value.span().start, format!("{key}: {e}"));
                None
            }
        }
    }

    fn health(&mut self, raw: Spanned<RawHealth>) -> Option<HealthConfig> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let table = "[service.health]";
        let port = self.required(raw.port, at, "port", table).and_then(|p| {
            match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    self.problem(p.span().start, "health port must be between 1 and 65535");
                    None
                }
            }
        });
        let kind = match raw.kind.as_ref().map(|k| k.get_ref().as_str()) {
            Some("http") | None => {
                let path = raw
                    .path
                    .map_or_else(|| "/".to_string(), Spanned::into_inner);
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    self.problem(
                        at,
                        format!("health path {path:?} must start with / and hold no spaces"),
                    );
                    None
                } else {
                    Some(HealthKind::Http { path })
                }
            }
            Some("tcp") => {
                if let Some(p) = &raw.path {
                    self.problem(p.span().start, "`path` is for kind = \"http\" only");
                }
                Some(HealthKind::Tcp)
            }
            Some(other) => {
                let offset = raw.kind.as_ref().map_or(at, |k| k.span().start);
                self.problem(
                    offset,
                    format!("unknown health kind {other:?}: expected \"http\" or \"tcp\""),
                );
                None
            }
        };
        let timeout = match raw.timeout {
            Some(t) => self.duration(t, "health timeout", Duration::from_millis(10)),
            None => Some(Duration::from_secs(2)),
        };
        let interval = match raw.interval {
            Some(i) => self.duration(i, "health interval", Duration::from_millis(100)),
            None => Some(Duration::from_secs(5)),
        };
        Some(HealthConfig {
            kind: kind?,
            port: port?,
            timeout: timeout?,
            interval: interval?,
        })
    }

    fn addresses(
        &mut self,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
        at: usize,
        color: &str,
    ) -> Option<Vec<IpAddr>> {
        let list = self.required(raw, at, color, "[service]")?;
        if list.get_ref().is_empty() {
            self.problem(list.span().start, format!("`{color}` has no addresses: a color needs at least one, or flipping to it would take the service off the air"));
            return None;
        }
        let mut addresses = Vec::new();
        let mut ok = true;
        for item in list.into_inner() {
            match item.get_ref().parse::<IpAddr>() {
                Ok(addr) if addresses.contains(&addr) => {
                    self.problem(
                        item.span().start,
                        format!("address {addr} is listed twice in `{color}`"),
                    );
                    ok = false;
                }
                Ok(addr) => addresses.push(addr),
                Err(_) => {
                    self.problem(
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
        ok.then_some(addresses)
    }

    fn ttl(&mut self, t: Spanned<i64>, key: &str, min: u32) -> Option<u32> {
        match u32::try_from(*t.get_ref()) {
            Ok(v) if v >= min && v <= MAX_TTL => Some(v),
            _ => {
                self.problem(
                    t.span().start,
                    format!("{key} must be between {min} and {MAX_TTL} seconds"),
                );
                None
            }
        }
    }
}

fn zone_list(zones: &[ZoneConfig]) -> String {
    let names: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8053"]
admin_socket = "run/flipdns.sock"
state_file = "run/state.json"

[[zone]]
origin = "svc.example.com."
file = "svc.example.com.zone"

[[service]]
name = "app"
blue = ["192.0.2.10", "2001:db8::10"]
green = ["198.51.100.10"]
live = "blue"
ttl = 300
cutover_ttl = 5
settle = "10m"
"#;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(Path::new("/etc/flipdns/f.toml"), text) {
            Ok(_) => vec![],
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn good_config_parses_with_paths_relative_to_the_file() {
        let config = Config::parse(Path::new("/etc/flipdns/f.toml"), GOOD).unwrap();
        assert_eq!(
            config.server.admin_socket,
            Path::new("/etc/flipdns/run/flipdns.sock")
        );
        assert_eq!(config.server.admin_socket_mode, 0o600);
        assert_eq!(
            config.zones[0].file,
            Path::new("/etc/flipdns/svc.example.com.zone")
        );
        let app = &config.services[0];
        assert_eq!(app.zone.to_string(), "svc.example.com.");
        assert_eq!(app.fqdn().to_string(), "app.svc.example.com.");
        assert_eq!(app.settle, Duration::from_secs(600));
        assert_eq!(app.line, 11);
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = GOOD
            .replace("state_file", "stat_file")
            .replace("\"198.51.100.10\"", "\"198.51.100.300\"")
            .replace("ttl = 300", "ttl = 300\ncolour = \"red\"");
        let found = problems(&text);
        assert!(found.contains(&"/etc/flipdns/f.toml:5: unknown key `stat_file` in [server]; expected one of: listen, admin_socket, admin_socket_mode, state_file, metrics_listen, admin_allowed_uids, admin_allowed_gids".to_string()), "{found:?}");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("/etc/flipdns/f.toml:14: bad address \"198.51.100.300\"")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("/etc/flipdns/f.toml:17: unknown key `colour`")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("missing `state_file`")),
            "{found:?}"
        );
    }

    #[test]
    fn values_are_checked() {
        assert!(
            problems(&GOOD.replace("cutover_ttl = 5", "cutover_ttl = 500"))[0]
                .contains("longer than ttl")
        );
        assert!(
            problems(&GOOD.replace("live = \"blue\"", "live = \"purple\""))[0]
                .contains("unknown color \"purple\"")
        );
        assert!(problems(&GOOD.replace("\"10m\"", "\"ten minutes\""))[0].contains("bad duration"));
        assert!(
            problems(&GOOD.replace("[\"198.51.100.10\"]", "[]"))[0].contains("has no addresses")
        );
        assert!(
            problems(&GOOD.replace("127.0.0.1:8053", "localhost"))[0]
                .contains("bad listen address")
        );
        assert!(
            problems(&GOOD.replace("svc.example.com.\"", "svc.example.com\""))[0]
                .contains("fully qualified")
        );
        let twice = format!(
            "{GOOD}\n[[service]]\nname = \"app\"\nblue = [\"192.0.2.1\"]\ngreen = [\"192.0.2.2\"]\nlive = \"blue\"\nttl = 60\ncutover_ttl = 5\nsettle = \"1m\"\n"
        );
        assert!(problems(&twice)[0].contains("configured twice"));
        assert!(problems("[server\n")[0].starts_with("/etc/flipdns/f.toml:1:"));
    }

    #[test]
    fn the_admin_socket_is_found_in_a_broken_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, GOOD.replace("ttl = 300", "ttl = 300\nttl = 5")).unwrap();
        assert!(
            Config::load(&path).is_err(),
            "a duplicate key is a TOML error"
        );
        assert_eq!(
            admin_socket_of(&path),
            Ok(dir.path().join("run/flipdns.sock"))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("").is_err());
    }
}
