//! flipdns: an authoritative DNS server that is the traffic switch for blue-green releases.
//!
//! Each service has a blue and a green address set. The server answers the service's name
//! with the live color from a record set that is swapped atomically, so no answer ever mixes
//! colors; an admin Unix socket flips the color, and every flip is on disk before it is
//! acknowledged.
//!
//! # Layout
//!
//! ```text
//! config.rs     the TOML model and its validation, every problem with file:line
//! zone.rs       zone files -> static records (pure)
//! catalog.rs    config + zone files, cross-checked: what the server answers for
//! records/      the immutable snapshot a query is answered from, pre-rendered to wire
//!               format, and the ArcSwap that holds it
//! dns/          the request handler: bytes in, bytes out, one snapshot load per query
//! server/       sockets, tasks, shutdown; no DNS semantics
//! switch.rs     the change path: serialize, persist, publish, reply
//! cutover/      the per-service TTL/flip state machine and the task that runs it
//! health.rs     health checks of a color's addresses (the flip gate, background checks)
//! reload.rs     SIGHUP and `ctl reload`: validate everything, then swap zones and services
//! rrl.rs        response rate limiting of UDP answers per source prefix
//! status.rs     the status report
//! stragglers/   the bounded resolver ledger and its report (classes since a flip)
//! clock.rs      wall-clock milliseconds; the coarse clock for the query path
//! fixture.rs    the shipped example served in memory, for benches, fuzzing, property tests
//! state.rs      the durable, versioned state file
//! admin/        the admin protocol, socket server and `flipdns ctl` client
//! metrics.rs    counters and the Prometheus endpoint
//! color.rs      Color; problem.rs: located problems in operator files
//! ```
//!
//! # Data flows
//!
//! 1. **Query**: socket (`server::udp`, `server::tcp`) -> [`dns::Handler`] -> snapshot
//!    lookup ([`records::Snapshot`]) -> response bytes; counters are relaxed atomics.
//! 2. **Change**: admin socket ([`admin::server`]) -> [`cutover::Cutovers`] (one task per
//!    service: commands, deadlines, health gate) -> [`switch::Switch`] -> new state -> state
//!    file ([`state::StateFile::save`]) -> new snapshot -> swap -> reply.
//! 3. **Report**: observations (handed over in batches by each receive loop) ->
//!    [`stragglers::Ledger`] -> classes -> `stragglers` and `status` on the admin socket,
//!    `/metrics`; snapshot and counters -> `status`, `/metrics`.

pub mod admin;
pub mod catalog;
pub mod clock;
pub mod color;
pub mod config;
pub mod counters;
pub mod cutover;
pub mod dns;
pub mod fixture;
pub mod health;
pub mod metrics;
pub mod observed;
pub mod problem;
pub mod protocol;
pub mod records;
pub mod reload;
pub mod rrl;
pub mod server;
pub mod state;
pub mod stragglers;
pub mod subnet;
pub mod switch;
pub mod wire;
pub mod zone;
