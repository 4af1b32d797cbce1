//! The secondaries: NOTIFY on every serial change (RFC 1996, with retries and backoff), the
//! serial each one serves (asked by SOA query), and the answer a cutover waits for: does
//! every secondary serve this serial yet?
//!
//! One task per `[[secondary]]` (`worker`) keeps its status here; zone transfers it took
//! are noted by the TCP connection that served them. Reading the status takes a short lock;
//! every change of a served serial bumps [`Fleet::changes`], which cutovers and waiting
//! admin requests watch.

mod client;
pub mod follow;
pub mod renotify;
mod worker;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use hickory_proto::rr::Name;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::{FleetConfig, SecondaryConfig};
use crate::records::Records;
use crate::state::serial_after;
use crate::wire::tsig::Key;

/// The secondaries of this primary and what each is known to serve.
pub struct Fleet {
    clock: Clock,
    records: Arc<Records>,
    secondaries: Mutex<Vec<Arc<Secondary>>>,
    changes: watch::Sender<u64>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// One secondary, its settings and status.
pub struct Secondary {
    pub config: SecondaryConfig,
    key: Option<Arc<Key>>,
    fleet: FleetConfig,
    /// By zone origin.
    links: Mutex<BTreeMap<Name, Link>>,
    /// Wakes the worker: a transfer finished, so the serial is worth asking again soon.
    poke: Notify,
    stop: CancellationToken,
}

/// What is known of one secondary's copy of one zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// The last NOTIFY sent: serial, Unix ms, tries so far, acknowledged.
    pub notify: Option<NotifyState>,
    /// The last transfer it took from us.
    pub transferred: Option<Transferred>,
    /// The serial its latest SOA answer gave.
    pub serves: Option<Serves>,
    /// Since when (Unix ms) it serves an older serial than ours.
    pub behind_since_ms: Option<u64>,
    /// The last thing that went wrong asking it.
    pub error: Option<LinkError>,
    /// Failed NOTIFYs and SOA queries so far.
    pub errors: u64,
    pub notifies: u64,
    /// SOA queries failed in a row since its last answer, and when the first of them was.
    pub failures: u32,
    pub failing_since_ms: Option<u64>,
}

/// SOA queries that must fail in a row before a secondary is called unreachable: one lost
/// datagram is not an outage. Its first failed query comes at most `check_interval` after
/// its last answer, and the retries follow within `UNREACHABLE_AFTER` answer timeouts, so
/// a secondary that stops answering is called unreachable within `check_interval` +
/// [`UNREACHABLE_BOUND`].
pub const UNREACHABLE_AFTER: u32 = 3;

/// How long after the first failed SOA query a secondary is called unreachable, at most:
/// each of the [`UNREACHABLE_AFTER`] queries waits up to the answer timeout (1 s), and the
/// pauses between them are 10 and 20 ms (3.03 s).
pub const UNREACHABLE_BOUND: std::time::Duration = std::time::Duration::from_millis(
    worker::ASK_TIMEOUT.as_millis() as u64 * UNREACHABLE_AFTER as u64 + 30,
);

impl Link {
    /// Whether it answers: fewer than [`UNREACHABLE_AFTER`] SOA queries failed in a row.
    pub fn reachable(&self) -> bool {
        self.failures < UNREACHABLE_AFTER
    }

    /// Since when it has not answered, while it is unreachable.
    pub fn unreachable_since_ms(&self) -> Option<u64> {
        self.failing_since_ms.filter(|_| !self.reachable())
    }

    /// Whether it answers, with `serial` (or a later one) of the zone.
    pub fn current(&self, serial: u32) -> bool {
        self.reachable()
            && self
                .serves
                .is_some_and(|s| s.serial == serial || serial_after(s.serial, serial))
    }
}

/// A zone transfer a secondary took from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// The serial it was brought up to.
    pub serial: u32,
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// `axfr`, `ixfr`, `ixfr_full` or `up_to_date`.
    pub kind: &'static str,
}

/// The serial a secondary's SOA answer gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serves {
    pub serial: u32,
    /// When it answered (Unix ms).
    pub at_ms: u64,
}

/// Something that went wrong asking a secondary (a NOTIFY or an SOA query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError {
    pub message: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyState {
    pub serial: u32,
    pub at_ms: u64,
    pub tries: u32,
    pub acked: bool,
}

/// A secondary that does not serve a serial yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub name: String,
    pub address: SocketAddr,
    /// The serial it serves, when known.
    pub serves: Option<u32>,
    pub error: Option<String>,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.address)?;
        match self.serves {
            Some(serial) => write!(f, " serves {serial}")?,
            None => write!(f, " has not answered")?,
        }
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

/// A secondary's status, for `status` and `/metrics`.
#[derive(Debug, Clone)]
pub struct SecondaryStatus {
    pub name: String,
    pub address: SocketAddr,
    pub key: Option<String>,
    /// Its copy of each zone.
    pub zones: Vec<ZoneLink>,
}

/// A secondary's copy of one zone, beside ours.
#[derive(Debug, Clone)]
pub struct ZoneLink {
    pub origin: Name,
    pub link: Link,
    /// The serial we serve.
    pub serial: u32,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet({} secondaries)", self.secondaries().len())
    }
}

impl Fleet {
    /// Starts a worker per secondary of `catalog` on `tracker`.
    pub fn start(
        catalog: &Catalog,
        records: Arc<Records>,
        clock: Clock,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            clock,
            records,
            secondaries: Mutex::new(Vec::new()),
            changes: watch::Sender::new(0),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        fleet.sync(catalog);
        fleet
    }

    /// Matches the workers to `catalog`'s secondaries (after a reload): unchanged ones keep
    /// their status, removed or changed ones stop, new ones start.
    pub fn sync(self: &Arc<Fleet>, catalog: &Catalog) {
        let mut secondaries = self.secondaries();
        let wanted = &catalog.config.secondaries;
        let key_of =
            |config: &SecondaryConfig| config.key.as_ref().and_then(|k| catalog.key(k)).cloned();
        secondaries.retain(|s| {
            let keep = wanted.iter().any(|w| {
                w.address == s.config.address
                    && w.key == s.config.key
                    && w.name == s.config.name
                    && s.fleet == catalog.config.fleet
                    && same_key(key_of(w).as_deref(), s.key.as_deref())
            });
            if !keep {
                s.stop.cancel();
            }
            keep
        });
        for config in wanted {
            if secondaries
                .iter()
                .any(|s| s.config.address == config.address)
            {
                continue;
            }
            let secondary = Arc::new(Secondary {
                config: config.clone(),
                key: key_of(config),
                fleet: catalog.config.fleet.clone(),
                links: Mutex::new(BTreeMap::new()),
                poke: Notify::new(),
                stop: self.shutdown.child_token(),
            });
            secondaries.push(secondary.clone());
            self.tracker.spawn(worker::run(self.clone(), secondary));
        }
        secondaries.sort_by_key(|s| wanted.iter().position(|w| w.address == s.config.address));
        drop(secondaries);
        self.changed();
    }

    pub fn is_empty(&self) -> bool {
        self.secondaries().is_empty()
    }

    /// Bumped whenever what a secondary serves (or its error) changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The secondaries that do not serve `serial` (or a later one) of `zone` yet.
    pub fn behind(&self, zone: &Name, serial: u32) -> Vec<Behind> {
        let secondaries = self.secondaries().clone();
        secondaries
            .iter()
            .filter_map(|s| {
                let link = s.link(zone);
                let serves = link.serves.map(|s| s.serial);
                let caught_up = serves.is_some_and(|s| s == serial || serial_after(s, serial));
                (!caught_up).then(|| Behind {
                    name: s.config.name.clone(),
                    address: s.config.address,
                    serves,
                    error: link.error.map(|e| e.message),
                })
            })
            .collect()
    }

    /// Notes that `peer` took a transfer of `zone` up to `serial`; its worker asks for the
    /// serial it serves at once.
    pub fn transferred(&self, peer: IpAddr, zone: &Name, serial: u32, sent: &'static str) {
        let now = self.clock.now_ms();
        for secondary in self
            .secondaries()
            .iter()
            .filter(|s| s.config.address.ip() == peer)
        {
            let transferred = Transferred {
                serial,
                at_ms: now,
                kind: sent,
            };
            secondary.update(zone, |link| link.transferred = Some(transferred));
            secondary.poke.notify_one();
        }
    }

    /// Every secondary's status.
    pub fn status(&self) -> Vec<SecondaryStatus> {
        let snapshot = self.records.load_full();
        self.secondaries()
            .iter()
            .map(|s| SecondaryStatus {
                name: s.config.name.clone(),
                address: s.config.address,
                key: s.config.key.as_ref().map(|k| k.to_string()),
                zones: snapshot
                    .zones
                    .iter()
                    .map(|z| ZoneLink {
                        origin: z.origin.clone(),
                        link: s.link(&z.origin),
                        serial: z.serial,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The registry, even if a holder panicked: it only holds handles.
    fn secondaries(&self) -> MutexGuard<'_, Vec<Arc<Secondary>>> {
        self.secondaries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn same_key(a: Option<&Key>, b: Option<&Key>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(b),
        _ => false,
    }
}

impl Secondary {
    fn link(&self, zone: &Name) -> Link {
        self.links().get(zone).cloned().unwrap_or_default()
    }

    fn update(&self, zone: &Name, change: impl FnOnce(&mut Link)) {
        change(self.links().entry(zone.clone()).or_default());
    }

    fn links(&self) -> MutexGuard<'_, BTreeMap<Name, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}
