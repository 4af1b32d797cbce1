//! The TOML configuration: its validated model (here), each key with its default and range
//! (`read`), and the table reader that locates every problem (`table`).
//!
//! Parsing is strict: unknown keys are problems, every value is checked, and every problem is
//! reported with its line, all in one pass, before any socket is bound. Paths are relative to
//! the directory of the config file. Zone files are read by [`crate::catalog`], not here.

mod read;
mod table;

pub use read::{MAX_SERVICES, MAX_UDP_BATCH};
pub use table::show_duration;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;

use crate::color::Color;
use crate::problem::{Problem, Problems};

/// The shipped example, the config used in a checkout when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "zones/flipdns.toml";
/// The config of a system-wide install (`contrib/systemd/flipdns.service`).
pub const SYSTEM_CONFIG: &str = "/etc/flipdns/flipdns.toml";

/// The config used when none is named: the shipped example in a checkout, where there is
/// one, otherwise the system-wide one.
pub fn default_config() -> PathBuf {
    if Path::new(DEFAULT_CONFIG).exists() {
        PathBuf::from(DEFAULT_CONFIG)
    } else {
        PathBuf::from(SYSTEM_CONFIG)
    }
}

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
    /// Index into `services` by name.
    pub by_name: std::collections::HashMap<String, usize>,
    /// `[[secondary]]`: who may transfer the zones, and whom a change is NOTIFYed to.
    pub secondaries: Vec<SecondaryConfig>,
    /// `[[tsig_key]]`: the keys transfers, NOTIFY and signed queries may use.
    pub tsig_keys: Vec<TsigKeyConfig>,
    pub fleet: FleetConfig,
    pub dnstap: DnstapConfig,
    pub api: ApiConfig,
}

/// `[api]`: the HTTPS control API (off while `listen` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: Vec<SocketAddr>,
    /// The server's certificate chain and key (PEM); without them, plain HTTP, which only
    /// loopback addresses may serve.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CAs whose client certificates are accepted (mTLS), in addition to a token.
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate `client_ca` verified.
    pub require_client_certificate: bool,
    pub tokens: Vec<ApiToken>,
    /// The bounds a client can push on (bound at start).
    pub bounds: ApiBounds,
    /// Failed authentications a source may make per minute; more are refused unread (429).
    pub auth_failures_per_minute: u32,
    /// Line of `[api]`, for problems found later (the TLS files).
    pub line: usize,
}

/// The `[api]` bounds, each a named limit (README, "Limits"); a restart applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiBounds {
    /// Connections at once; more are closed at once.
    pub connections: usize,
    /// Connections from one address at once; more from it are closed at once.
    pub connections_per_source: usize,
    /// Largest request body, in bytes.
    pub body_size: usize,
    /// Largest request head, in bytes.
    pub head_size: usize,
    /// Time a client has to send the request head (and finish the TLS handshake).
    pub head_timeout: Duration,
    /// Time to send a request's body, and to answer it (a flip that waits for the fleet
    /// included; an event stream, once started, is bounded by `followers` instead).
    pub request_timeout: Duration,
    /// Event streams (Server-Sent Events) followed at once.
    pub followers: usize,
}

/// One `[[api.token]]`: a principal, the SHA-256 of its token, what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    pub line: usize,
}

/// What an API principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Status, stragglers, history, events, version.
    Read,
    /// Prepare, flip, rollback and cancel the services named (`*`: all).
    Flip(Services),
    /// Approve another principal's flip or prepare (two-person rule).
    Approve(Services),
    /// Set a color's addresses (`set-addresses`).
    Deploy(Services),
    /// Reload, log level, NOTIFY.
    Admin,
}

/// The services a scope covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Services {
    All,
    One(String),
}

impl Services {
    pub fn covers(&self, service: &str) -> bool {
        match self {
            Services::All => true,
            Services::One(name) => name == service,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = |s: &Services| match s {
            Services::All => "*".to_string(),
            Services::One(name) => name.clone(),
        };
        match self {
            Scope::Read => write!(f, "read"),
            Scope::Admin => write!(f, "admin"),
            Scope::Flip(s) => write!(f, "flip:{}", services(s)),
            Scope::Approve(s) => write!(f, "approve:{}", services(s)),
            Scope::Deploy(s) => write!(f, "deploy:{}", services(s)),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        let services = |name: &str| match name {
            "*" => Some(Services::All),
            "" => None,
            name => Some(Services::One(name.to_ascii_lowercase())),
        };
        let scope = match text.split_once(':') {
            None if text == "read" => Some(Scope::Read),
            None if text == "admin" => Some(Scope::Admin),
            Some(("flip", s)) => services(s).map(Scope::Flip),
            Some(("approve", s)) => services(s).map(Scope::Approve),
            Some(("deploy", s)) => services(s).map(Scope::Deploy),
            _ => None,
        };
        scope.ok_or_else(|| {
            format!(
                "unknown scope {text:?}: expected read, admin, flip:SERVICE, approve:SERVICE or deploy:SERVICE (SERVICE may be *)"
            )
        })
    }
}

/// Whether a service's flips and prepares wait for a second principal's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    None,
    /// Asked by one principal, carried out when a different one approves.
    TwoPerson,
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
    /// This server's name in NSID (RFC 5001) and `id.server`/`hostname.bind` CH TXT
    /// answers, so that ns1 and ns2 can be told apart; off when `None`.
    pub identity: Option<String>,
    /// UDP worker threads per DNS address, each with its own `SO_REUSEPORT` socket; the
    /// number of cores the process may run on when not given.
    pub workers: usize,
    /// Most datagrams a UDP worker receives or sends per system call.
    pub udp_batch: usize,
    /// The audit trail of changes asked on the admin socket (JSON lines); by default
    /// `audit.jsonl` beside the state file.
    pub audit_file: PathBuf,
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
    /// Time allowed for one admin request line to arrive, for an idle admin connection, and
    /// to write one reply line.
    pub admin_request_timeout: Duration,
    /// Time allowed for a reload to read the config and zone files; beyond it the reload is
    /// abandoned and the server keeps serving what it had.
    pub reload_timeout: Duration,
    /// Zone transfers served at once; more are answered SERVFAIL (the secondary retries).
    pub transfers: usize,
    /// A source address's share of the transfer slots: beyond it, a source gets a slot only
    /// while a share stays free for the others, so one slow or misbehaving secondary cannot
    /// hold every slot.
    pub transfers_per_source: usize,
    /// Time allowed for one whole outgoing zone transfer; a secondary that reads slower is
    /// cut off (and retries).
    pub transfer_timeout: Duration,
    /// Bytes a second a transfer must average after its first 10 s; a slower reader is cut
    /// off, so slow readers free their slots long before `transfer_timeout`.
    pub transfer_min_rate: u64,
    /// Changes kept per zone for IXFR (RFC 1995); an older serial gets the whole zone. The
    /// history also never holds more records than the zone, when a whole zone is as cheap.
    pub ixfr_history: usize,
    /// Bytes the audit file may grow to before it is rotated (one older file is kept).
    pub audit_file_size: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        read::defaults(read::limits)
    }
}

/// One `[[secondary]]`: a name server that serves copies of the zones by zone transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryConfig {
    /// How status, replies and logs name it (its address when not given).
    pub name: String,
    /// Where NOTIFY and SOA checks go; transfers are allowed from its IP, any port.
    pub address: SocketAddr,
    /// The TSIG key its transfers must be signed with, and ours to it are signed with.
    pub key: Option<Name>,
    /// The identity its dnstap stream carries (`dnstap-identity`, Knot's `identity`); its
    /// name when not given.
    pub dnstap_identity: String,
    pub line: usize,
}

/// One `[[tsig_key]]`. The secret is in its own file, never in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsigKeyConfig {
    /// Lowercase, fully qualified, as on the wire.
    pub name: Name,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// Base64 of the secret; the file must not be readable by others.
    pub secret_file: PathBuf,
    pub line: usize,
}

/// `[fleet]`: how the primary keeps its secondaries current, and how long a cutover waits
/// for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// How long a cutover waits for every secondary: a flip's reply for them to serve the
    /// new color, a pending flip for them to confirm the short TTL (then it is refused).
    pub wait: Duration,
    /// NOTIFYs sent again when a secondary does not answer, the first `notify_retry` after,
    /// doubling each time.
    pub notify_retries: u32,
    pub notify_retry: Duration,
    /// How often each secondary's SOA serial is checked between changes.
    pub check_interval: Duration,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        read::defaults(read::fleet)
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
    /// `NAME.ZONE.`, lowercase: the name that follows the live color.
    pub fqdn: Name,
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
    /// Boxed: most services have none, and this is kept once per service (100 bytes each
    /// at 100,000 services).
    pub health: Option<Box<HealthConfig>>,
    /// Whether flips and prepares wait for a second principal (off by default).
    pub approval: Approval,
    /// How long an unapproved request waits before it is dropped.
    pub approval_timeout: Duration,
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
        read::defaults(read::rrl)
    }
}

/// `[dnstap]`: where the secondaries stream what they answer (off when `listen` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnstapConfig {
    pub listen: Vec<DnstapListen>,
    /// Addresses a TCP sender may connect from; others are refused and counted.
    pub allow: Vec<IpAddr>,
    /// File mode of the Unix sockets: the senders (nsd, knot, bind) must be able to write.
    pub socket_mode: u32,
    /// Group of the Unix sockets, so that a sender in that group may connect.
    pub socket_group: Option<u32>,
    /// Streams connected at once; more are closed at once and counted.
    pub connections: usize,
    /// Longest data frame; a longer one closes its stream.
    pub max_frame: usize,
    /// Frames decoded a second across all streams; beyond it frames are dropped, counted
    /// per sender.
    pub frames_per_second: u64,
    /// Distinct sender identities tracked; frames of further ones are counted as `other`.
    pub senders: usize,
    /// Time a stream has to finish its handshake (READY and START, or START).
    pub handshake_timeout: Duration,
    /// Time a frame may take to arrive once its first byte did; an idle stream between
    /// frames is never timed out (a quiet secondary sends nothing).
    pub frame_timeout: Duration,
}

/// One address a dnstap collector listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnstapListen {
    /// A Unix socket, as NSD, Knot and BIND write to.
    Unix(PathBuf),
    /// A TCP address, as NSD 4.7+, Knot 3.4+ and the `dnstap` relay connect to.
    Tcp(SocketAddr),
}

impl DnstapConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

impl Default for DnstapConfig {
    fn default() -> DnstapConfig {
        read::defaults(read::dnstap)
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
        read::defaults(read::ledger)
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
    /// `GET path` over HTTP/1.1, or over TLS with `tls`; a status in `status` is healthy.
    Http {
        path: String,
        /// The Host header to send, for a virtual host; the address when `None`. Over TLS also
        /// the server name sent (SNI) and the name the certificate must be valid for.
        host: Option<String>,
        /// Healthy statuses, 200-299 unless configured.
        status: std::ops::RangeInclusive<u16>,
        /// `kind = "https"`: how the server's certificate is checked.
        tls: Option<HealthTls>,
    },
    /// A TCP connection that opens is healthy.
    Tcp,
}

/// The certificate check of an HTTPS health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTls {
    /// Verified against the system's CAs and, if given, those in a PEM file of our own (an
    /// internal CA); the file is read again at each check, so a renewed CA needs no reload.
    Verify { ca_file: Option<PathBuf> },
    /// `tls_verify = false`: any certificate is accepted. The connection is still encrypted,
    /// but anyone on the path can answer "healthy".
    Insecure,
}

/// Most addresses a color may have (in the config, or set at run time): 64 A records make
/// a 1,100-byte answer, within the 1,232 bytes of a UDP response with EDNS.
pub const MAX_ADDRESSES: usize = 64;

/// Why `list` cannot be `color`'s address set: empty, too long, or with a duplicate.
pub fn check_addresses(color: Color, list: &[IpAddr]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!(
            "{color} has no addresses: a color needs at least one, or flipping to it would take the service off the air"
        ));
    }
    if list.len() > MAX_ADDRESSES {
        return Err(format!(
            "{color} has {} addresses; at most {MAX_ADDRESSES} fit in one UDP answer",
            list.len()
        ));
    }
    if let Some(twice) = list
        .iter()
        .enumerate()
        .find_map(|(i, a)| list[..i].contains(a).then_some(a))
    {
        return Err(format!("address {twice} is listed twice for {color}"));
    }
    Ok(())
}

impl ServiceConfig {
    pub fn addresses(&self, color: Color) -> &[IpAddr] {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }

    /// `NAME.ZONE.`, lowercase.
    pub fn fqdn(&self) -> &Name {
        &self.fqdn
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
        let doc = table::Document::new(path, text);
        let document = match toml::de::DeTable::parse(text) {
            Ok(document) => document,
            Err(e) => {
                doc.problem(e.span().map_or(0, |s| s.start), e.message().trim());
                return Err(Problems(doc.into_problems()));
            }
        };
        let top = table::Table::top(&doc, document.get_ref());
        let config = read::config(&top);
        top.finish();
        match config {
            Some(config) if !doc.has_problems() => Ok(config),
            _ => Err(Problems(doc.into_problems())),
        }
    }

    /// The service called `name`, if configured.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.by_name.get(name).map(|&i| &self.services[i])
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
        assert!(found.contains(&"/etc/flipdns/f.toml:5: unknown key `stat_file` in [server]; expected one of: listen, admin_socket, admin_socket_mode, state_file, metrics_listen, admin_allowed_uids, admin_allowed_gids, identity, workers, udp_batch, audit_file".to_string()), "{found:?}");
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
    fn mistyped_values_say_what_is_expected_without_serde_words() {
        let found = problems(&GOOD.replace("ttl = 300", "ttl = \"300\""));
        assert_eq!(
            found,
            vec![
                "/etc/flipdns/f.toml:16: `ttl` in [[service]] must be a whole number (without quotes), not the string \"300\""
            ]
        );
        let found = problems(&format!(
            "{GOOD}\n[limits]\ntcp_connections = 0\nadmin_clients = true\n"
        ));
        assert_eq!(
            found,
            vec![
                "/etc/flipdns/f.toml:21: `tcp_connections` in [limits] must be between 1 and 100000",
                "/etc/flipdns/f.toml:22: `admin_clients` in [limits] must be a whole number (without quotes), not true",
            ]
        );
        let found = problems(&GOOD.replace("settle = \"10m\"", "settle = 600"));
        assert!(
            found[0]
                .contains("`settle` in [[service]] must be a string in quotes, not the number 600"),
            "{found:?}"
        );
    }

    #[test]
    fn health_statuses_and_hosts_are_checked() {
        let with = |lines: &str| format!("{GOOD}\n[service.health]\nport = 80\n{lines}\n");
        let found = problems(&with("status = \"200-99\"\nhost = \"a b\""));
        assert!(
            found.iter().any(|p| p.contains("health status \"200-99\"")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("health host \"a b\"")),
            "{found:?}"
        );
        let config = Config::parse(Path::new("/f.toml"), &with("status = \"200-399\"")).unwrap();
        let kind = &config.services[0].health.as_ref().unwrap().kind;
        assert_eq!(
            *kind,
            HealthKind::Http {
                path: "/".into(),
                host: None,
                status: 200..=399,
                tls: None,
            }
        );
        assert!(
            problems(&with("kind = \"tcp\"\nstatus = \"200\""))[0]
                .contains("for kind = \"http\" or \"https\" only")
        );
    }

    #[test]
    fn https_health_checks_verify_unless_told_not_to() {
        let with = |lines: &str| format!("{GOOD}\n[service.health]\nport = 443\n{lines}\n");
        let kind = |lines: &str| {
            Config::parse(Path::new("/etc/flipdns/f.toml"), &with(lines))
                .unwrap()
                .services[0]
                .health
                .clone()
                .unwrap()
                .kind
        };
        let tls = |lines: &str| match kind(lines) {
            HealthKind::Http { tls, .. } => tls,
            HealthKind::Tcp => panic!("an https check is http over tls"),
        };
        assert_eq!(
            tls("kind = \"https\""),
            Some(HealthTls::Verify { ca_file: None })
        );
        assert_eq!(
            tls("kind = \"https\"\nca_file = \"ca.pem\""),
            Some(HealthTls::Verify {
                ca_file: Some("/etc/flipdns/ca.pem".into())
            })
        );
        assert_eq!(
            tls("kind = \"https\"\ntls_verify = false"),
            Some(HealthTls::Insecure)
        );
        assert_eq!(tls("kind = \"http\""), None);
        assert!(
            problems(&with("kind = \"http\"\nca_file = \"ca.pem\""))[0]
                .contains("for kind = \"https\" only")
        );
        assert!(
            problems(&with("kind = \"tcp\"\ntls_verify = true"))[0]
                .contains("for kind = \"https\" only")
        );
        assert!(
            problems(&with(
                "kind = \"https\"\ntls_verify = false\nca_file = \"ca.pem\""
            ))[0]
                .contains("nothing would be verified")
        );
        for host in [
            "app.example.com:8443",
            "192.0.2.1",
            "[2001:db8::1]",
            "[foo]",
            "10.1",
            "0x7f.1",
            "2130706433",
        ] {
            assert!(
                problems(&with(&format!("kind = \"https\"\nhost = \"{host}\"")))[0]
                    .contains("for https give the name the certificate is for"),
                "{host}"
            );
        }
        assert_eq!(
            problems(&with("kind = \"https\"\nhost = \"app.example.com.\"")),
            Vec::<String>::new()
        );
        assert!(
            problems(&with("kind = \"ftp\""))[0]
                .contains("expected \"http\", \"https\" or \"tcp\"")
        );
    }

    #[test]
    fn udp_workers_and_batches_are_bounded() {
        let with = |lines: &str| {
            GOOD.replace(
                "state_file = \"run/state.json\"",
                &format!("state_file = \"run/state.json\"\n{lines}"),
            )
        };
        assert_eq!(
            problems(&with("workers = 0\nudp_batch = 65")),
            vec![
                "/etc/flipdns/f.toml:6: `workers` in [server] must be between 1 and 256",
                "/etc/flipdns/f.toml:7: `udp_batch` in [server] must be between 1 and 64",
            ]
        );
        let config = Config::parse(
            Path::new("/etc/flipdns/f.toml"),
            &with("workers = 3\nudp_batch = 64"),
        )
        .unwrap();
        assert_eq!((config.server.workers, config.server.udp_batch), (3, 64));
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
