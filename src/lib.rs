//! flipdns: an authoritative DNS server that is the traffic switch for blue-green releases.
//!
//! Each service has a blue and a green address set. The server answers the service's name
//! with the live color from a record set that is swapped atomically, so no answer ever mixes
//! colors; an admin Unix socket flips the color, and every flip is on disk before it is
//! acknowledged.
//!
//! # Layout
//!
//! From the ground up: each module imports only modules above it in this list, and
//! `tests/integration/layering.rs` reads this list and fails on an import that points down
//! it. A new module gets its line here in the floor it belongs to.
//!
//! ```text
//! foundation   clock.rs     wall and monotonic time; the seam tests drive
//!              accept.rs    taking connections off a listener until shutdown, with backoff
//!              color.rs     Color
//!              problem.rs   located problems in operator files
//!              pem.rs       PEM files an operator names: a private CA's certificates
//!              http/        the one HTTP server (hyper): TLS, connection and request bounds
//!              process/     the process: its build, log sink, service manager, memory
//!              wire/        DNS messages as bytes: numbers and sizes, names, client subnet,
//!                           TSIG keys, checking signed requests, signing responses
//!              protocol/    the admin wire protocol (depends on nothing of the daemon), and
//!                           its routes over HTTP
//! input        config/      the TOML model; each key read once, every problem with file:line
//!              zone/        zone files -> static records (lexer, reader, checks; pure)
//!              catalog.rs   config + zone files, cross-checked: what the server answers for
//! live state   state/       the persisted state (colors, flips, phases, serials) and its file
//!              observed/    what the running server saw: answers per color, drain input,
//!                           health, answers on their way to the ledger, counters; never
//!                           persisted
//! query        records/     the immutable snapshot a query is answered from, pre-rendered,
//!                           and each zone's content, digest and IXFR history
//!              dns/         the request handler: bytes in, bytes out, one snapshot load;
//!                           response rate limiting; outgoing AXFR/IXFR streams
//! change       health/      health checks of a color's addresses (TCP, HTTP, HTTPS)
//!              switch/      the one place a change happens: serialize, persist, publish;
//!                           the restart rules
//!              fleet/       the secondaries: NOTIFY, the serial each serves, who is behind
//!              cutover/     the per-service TTL/flip rules and the task that runs them
//!              reload.rs    SIGHUP and `ctl reload`: validate everything, then swap
//! report       stragglers/  the bounded resolver ledger and its report
//!              dnstap/      the secondaries' dnstap streams, into the ledger: the fleet's
//!                           answers, who streams, what was lost
//!              metrics.rs   the Prometheus endpoint, assembled at scrape time
//! edges        admin/       the admin socket server, one file per command, `ctl` client
//!              api/         the HTTPS control API: tokens, scopes, throttle; the admin
//!                           commands over HTTP, event streams
//!              page/        the watch page on the metrics listener: assets, read-only JSON
//!              server/      sockets, supervised loops, shutdown; the composition root
//!              fixture.rs   the shipped example served in memory (benches, fuzzing)
//! ```
//!
//! # Data flows
//!
//! 1. **Query**: socket (`server::udp`, `server::tcp`) -> [`dns::Handler`] -> snapshot
//!    lookup ([`records::Snapshot`]) -> response bytes; counters are relaxed atomics, and
//!    service answers become observations for the ledger.
//! 2. **Change**: admin socket ([`admin::server`]) -> command ([`admin::commands`]) ->
//!    [`cutover::Cutovers`] (one task per service: commands, deadlines, health gate) ->
//!    [`switch::Switch`] -> new state -> state file -> new snapshot -> swap -> reply.
//! 3. **Transfer**: a publish -> [`fleet`] NOTIFYs every secondary -> it asks IXFR over TCP
//!    -> [`dns::Handler::serve`] checks its address and TSIG key -> [`dns::transfer::Transfer`]
//!    streams the changes from the snapshot's history (or the whole zone) -> the fleet asks
//!    its SOA serial until it serves the change -> the cutover waiting on it goes on.
//! 4. **Report**: observations (handed over in batches by each receive loop through
//!    [`observed::answers::Intake`]) -> [`stragglers::Ledger`] -> classes -> `stragglers`
//!    and `status` on the admin socket, `/metrics`; snapshot and counters -> `status`,
//!    `/metrics`.
//! 5. **Fleet report**: a secondary's dnstap stream -> [`dnstap::Collector`] (Frame Streams,
//!    protobuf, the response read like a query's) -> observations tagged with the secondary
//!    -> [`stragglers::Ledger::observe`]; a normal-TTL answer while preparing -> the drain
//!    input and [`cutover::Cutovers::answered_long`], which writes the later deadline.

pub mod accept;
pub mod admin;
pub mod api;
pub mod catalog;
pub mod clock;
pub mod color;
pub mod config;
pub mod cutover;
pub mod dns;
pub mod dnstap;
pub mod fixture;
pub mod fleet;
pub mod health;
pub mod http;
pub mod metrics;
pub mod observed;
pub mod page;
pub mod pem;
pub mod problem;
pub mod process;
pub mod protocol;
pub mod records;
pub mod reload;
pub mod server;
pub mod state;
pub mod stragglers;
pub mod switch;
pub mod wire;
pub mod zone;
