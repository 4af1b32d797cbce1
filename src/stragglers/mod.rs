//! The straggler ledger: after a flip, which resolvers converged, which may still hold the
//! old color, and which keep asking for it.
//!
//! - **Intake**: the query path hands its service answers over in batches
//!   ([`crate::observed::answers`]): no lock, and no allocation once warm.
//! - **Ledger task**: every 10 ms applies the queued batches to the [`table::Table`]
//!   (bounded, sampled-LRU eviction) under a mutex that only it and reports take. Each
//!   answer is judged against the flip that was live when it was given (its tag names it;
//!   a flip the ledger has not seen yet is taken from the snapshot on the spot). Once a
//!   second it samples the timelines and logs a flip's first straggler and the moment its
//!   old color is drained.
//! - **Report**: [`report`] classifies a service's entries on demand for `stragglers`,
//!   `status` and metrics.

pub mod report;
pub mod table;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, format_utc};
use crate::config::AnswerMode;
use crate::observed::answers::{Intake, LOCAL, NameKind, Observation};
use crate::observed::batch::Batch;
use crate::records::Records;
use crate::state::FlipCount;
pub use report::{ClassCounts, Listing, Report, ResolverClass};
use table::Table;
pub use table::{Entry, Flip};

/// How the report names this server among those a resolver asked.
pub const THIS_SERVER: &str = "primary";
/// `via` ids a ledger gives out; the last one stands for every further secondary.
pub const MAX_SOURCES: usize = 64;

/// How often the ledger task refreshes flips and checks for drained colors.
const TICK: Duration = Duration::from_secs(1);
/// How often the ledger task applies the batches that have arrived. Observations reach the
/// table this much later; reports drain first, so they are never stale.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// The ledger shared by the query path, the ledger task and reports.
pub struct Ledger {
    table: Mutex<Table>,
    /// Where the query path's batches arrive; drained every [`DRAIN_EVERY`].
    intake: Arc<Intake>,
    /// The servers answers came through, by `via` id: 0 is this server, the others are
    /// secondaries named by their streams. Ids are never reused.
    sources: Mutex<Vec<String>>,
    /// Where each service's latest flip is read from.
    records: Arc<Records>,
    clock: Clock,
    /// When this ledger began (wall clock, and monotonic): answers before it are not in it.
    started_ms: u64,
    started_mono: u64,
}

/// The ledger's own figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerFigures {
    pub entries: u64,
    pub capacity: u64,
    pub evicted: u64,
    /// Observations dropped because the ledger's queue was full.
    pub dropped: u64,
}

impl Ledger {
    /// Starts the ledger task on `tracker`; the ledger holds at most `capacity` entries.
    /// The task applies arrived batches every `drain_every` ([`DRAIN_EVERY`] in the
    /// server; tests on a fake clock pass longer).
    pub fn start(
        capacity: usize,
        records: Arc<Records>,
        clock: Clock,
        drain_every: Duration,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger {
            table: Mutex::new(Table::new(capacity)),
            intake: Intake::new(),
            sources: Mutex::new(vec![THIS_SERVER.to_string()]),
            records,
            started_ms: clock.now_ms(),
            started_mono: clock.mono_ms(),
            clock,
        });
        tracker.spawn(ledger.clone().run(drain_every, shutdown.clone()));
        ledger
    }

    /// Where the query path hands its answers to this ledger.
    pub fn intake(&self) -> &Arc<Intake> {
        &self.intake
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self: Arc<Ledger>, drain_every: Duration, shutdown: CancellationToken) {
        self.refresh_flips();
        let mut drain = tokio::time::interval(drain_every);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = drain.tick() => {}
            }
            self.drain();
            if last_tick.elapsed() >= TICK {
                last_tick = std::time::Instant::now();
                self.refresh_flips();
                self.log_drained();
                self.sample_timelines();
            }
        }
    }

    /// Applies every batch that has arrived and hands the emptied batches back.
    fn drain(&self) {
        self.intake.drain(|batch| self.apply(batch));
    }

    fn apply(&self, batch: &Batch) {
        let mut first = None;
        {
            let mut table = self.table();
            for observation in batch.iter() {
                let flip = self.flip_of(&mut table, &observation);
                if let Some(straggled) = table
                    .record(&observation, &flip)
                    .filter(|s| s.first_of_flip)
                {
                    first = Some(straggled);
                }
            }
        }
        if let Some(s) = first {
            self.log_first_straggler(s);
        }
    }

    /// The id answers from the secondary `name` carry as `via` (registered on first use;
    /// beyond [`MAX_SOURCES`] they share the last id).
    pub fn source(&self, name: &str) -> u8 {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = sources.iter().position(|s| s == name) {
            return id as u8;
        }
        if sources.len() + 1 < MAX_SOURCES {
            sources.push(name.to_string());
            return (sources.len() - 1) as u8;
        }
        if sources.len() + 1 == MAX_SOURCES {
            sources.push("other secondaries".into());
        }
        (MAX_SOURCES - 1) as u8
    }

    /// The names of the servers in the `via` bits `via`.
    pub fn source_names(&self, via: u64) -> Vec<String> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources
            .iter()
            .enumerate()
            .filter(|(i, _)| via & (1 << i) != 0)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Records answers that secondaries gave, from their dnstap streams, at once (not
    /// through the query path's queue). Each is judged against the flip its color says it
    /// was given under: a secondary that still served the old color was lagging, and its
    /// answer counts as one given before the flip.
    pub fn observe(&self, observations: &[Observation]) {
        let mut first = None;
        {
            let mut table = self.table();
            let mut fresh: Vec<u32> = Vec::new();
            for o in observations {
                if !fresh.contains(&o.service) {
                    self.take_flip(&mut table, o.service);
                    fresh.push(o.service);
                }
                let flip = self.flip_of(&mut table, o);
                if let Some(s) = table.record(o, &flip).filter(|s| s.first_of_flip) {
                    first = Some(s);
                }
            }
        }
        if let Some(s) = first {
            self.log_first_straggler(s);
        }
    }

    /// The flip `o` was answered under. This server's answers carry a tag: the latest or
    /// the previous flip the ledger knows, else the service's latest in the snapshot (the
    /// answer came after a flip the ledger has not seen yet: it is taken now, not at the
    /// next tick). A secondary's answer to the service name is under the latest flip when
    /// it gave the latest color, else under the one before; to a color name, under the
    /// flip live at its time.
    fn flip_of(&self, table: &mut Table, o: &Observation) -> Flip {
        if o.via != LOCAL {
            let track = table.track(o.service);
            let latest = track.flip.at_ms <= o.at_ms;
            let current = match o.name {
                NameKind::Service => o.color == track.flip.to,
                NameKind::Color => latest,
            };
            return if current || track.flip.flips == 0 {
                track.flip
            } else {
                track.previous
            };
        }
        if let Some(flip) = table.track(o.service).flip_of(o.flip_tag) {
            return flip;
        }
        self.take_flip(table, o.service);
        let track = table.track(o.service);
        track.flip_of(o.flip_tag).unwrap_or(track.flip)
    }

    fn log_first_straggler(&self, s: table::Straggled) {
        let table = self.table();
        let Some(track) = table.track_of(s.key.service) else {
            return;
        };
        let service = track.name.clone();
        let flip = track.flip;
        drop(table);
        let subnet = s
            .key
            .subnet()
            .map(|n| format!(" for {}", n.display()))
            .unwrap_or_default();
        let late = s.late_ms as f64 / 1000.0;
        if s.converged {
            let old = flip.from.unwrap_or(s.color.other());
            tracing::info!(
                "first straggler for {service}: {}{subnet} kept {old} {late:.1} s past the flip or its old answer's expiry; it did not come back for {} until then",
                s.key.resolver(),
                s.color,
            );
        } else {
            tracing::info!(
                "first straggler for {service}: {}{subnet} still asks for {}, {late:.1} s after every reason to ask for it had expired",
                s.key.resolver(),
                s.color,
            );
        }
    }

    /// The latest flip of the service with id `id`, as the snapshot has it now, into the
    /// table. Its monotonic times are fixed the first time the ledger sees the flip's
    /// values, so a later wall-clock step cannot move them.
    fn take_flip(&self, table: &mut Table, id: u32) {
        let snapshot = self.records.load();
        let hint = table.track(id).index as usize;
        let index = match snapshot.services.get(hint) {
            Some(view) if view.id == id => hint,
            _ => match snapshot.services.iter().position(|v| v.id == id) {
                Some(index) => index,
                None => return, // removed by a reload
            },
        };
        let view = &snapshot.services[index];
        let track = table.track(id);
        track.index = index as u32;
        let first_seen = track.name.is_empty();
        if first_seen {
            // First seen: its flips so far happened before; none is logged.
            track.name = view.name.clone();
            track.logged_drained = view.state.flips.0 as u32;
            track.logged_first_straggler = view.state.flips.0 as u32;
        }
        let state = &view.state;
        let old = state.live.other();
        let seen = (
            state.flips.0,
            state.flipped_at_ms.unwrap_or(0),
            state.expires_ms[old.index()],
            state.fleet.is_some_and(|w| w.flip_ttl.is_some()),
        );
        if !first_seen && track.seen == seen && track.flip.flips == seen.0 as u32 {
            return;
        }
        track.seen = seen;
        let clock = &self.clock;
        let at_ms = clock.mono_of(seen.1);
        // Not known (a state from before the expiries were kept): a normal TTL from the flip.
        let old_expires_ms = state
            .expires_mono(old, clock.boot(), |w| clock.mono_of(w))
            .unwrap_or(at_ms + u64::from(state.ttl) * 1000);
        track.take_flip(Flip {
            flips: state.flips.0 as u32,
            at_ms,
            old_expires_ms,
            from: (state.flips > FlipCount(0)).then_some(old),
            to: state.live,
            cname: view.answer == AnswerMode::Cname,
            secondaries_behind: seen.3,
        });
    }

    /// Takes every service's latest flip from the snapshot (once a tick, for the drain log
    /// and the timelines of services nobody asks about).
    fn refresh_flips(&self) {
        let ids: Vec<u32> = self.records.load().services.iter().map(|v| v.id).collect();
        let mut table = self.table();
        for id in ids {
            self.take_flip(&mut table, id);
        }
    }

    /// Adds a point to the timeline of every service whose next point is due: one pass over
    /// the table for all of them.
    fn sample_timelines(&self) {
        let now = self.clock.coarse_mono_ms();
        let mut table = self.table();
        let due: Vec<u32> = (0..table.services.len())
            .filter(|&i| {
                let track = &mut table.services[i];
                let flip = track.flip;
                track.timeline.due(&flip, now)
            })
            .map(|i| i as u32)
            .collect();
        if due.is_empty() {
            return;
        }
        for (service, counts) in report::counts_of(&table, &due, now) {
            let track = &mut table.services[service as usize];
            let old = track.flip.from.map_or(0, |o| track.answers[o.index()]);
            track.timeline.push(now, counts.raw(), old);
        }
    }

    /// Logs, once per flip, when the old color has left every cache that obeys TTLs. The
    /// lines are gathered under the table lock and written after it is released.
    fn log_drained(&self) {
        let mono = self.clock.coarse_mono_ms();
        let mut lines = Vec::new();
        {
            let mut table = self.table();
            for index in 0..table.services.len() {
                let track = &table.services[index];
                let (flip, Some(old)) = (track.flip, track.flip.from) else {
                    continue;
                };
                if track.logged_drained == flip.flips || !report::drained(track, mono) {
                    continue;
                }
                let drained_at = self.clock.wall_of(report::drained_at(track, old));
                let name = track.name.clone();
                let counts = report::counts(&table, index as u32, mono);
                table.services[index].logged_drained = flip.flips;
                lines.push((old, name, drained_at, counts));
            }
        }
        for (old, name, drained_at, counts) in lines {
            tracing::info!(
                "{old} drained for {name} at {}: {} converged, {} silent, {} overdue, {} stragglers",
                format_utc(drained_at),
                counts.get(ResolverClass::Converged),
                counts.get(ResolverClass::Silent),
                counts.get(ResolverClass::Overdue),
                counts.get(ResolverClass::Straggler)
            );
        }
    }

    /// The report of `service` with at most `limit` resolvers per listed class, and the
    /// ledger's figures; `None` if the service is not served.
    pub fn report(
        &self,
        service: &str,
        listing: &report::Listing,
    ) -> Option<(Report, LedgerFigures)> {
        self.refresh_flips();
        self.drain();
        let snapshot = self.records.load();
        let view = snapshot.service(service)?;
        let figures = self.figures();
        let (wall, mono) = (self.clock.now_ms(), self.clock.coarse_mono_ms());
        let mut report = report::report(
            &self.table(),
            view.id,
            mono,
            wall as i64 - self.clock.mono_ms() as i64,
            listing,
        );
        // Resolvers that got the old color before the ledger started are not in it: a
        // ledger that started less than a normal TTL before the flip cannot be complete.
        let ttl_ms = u64::from(view.state.ttl) * 1000;
        report.complete = report
            .flip
            .is_none_or(|f| self.started_mono + ttl_ms <= f.at_ms);
        report.ledger_started_ms = self.started_ms;
        Some((report, figures))
    }

    /// Class counts of the service with id `service`.
    pub fn counts(&self, service: u32) -> ClassCounts {
        self.counts_of(&[service])[0]
    }

    /// Class counts of each of `services` (ids), in one pass over the ledger: a scrape or a
    /// `status` of many services does not walk it once per service.
    pub fn counts_of(&self, services: &[u32]) -> Vec<ClassCounts> {
        self.drain();
        report::counts_of(&self.table(), services, self.clock.coarse_mono_ms())
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    /// Straggling queries of the service with id `service` since start, by the color asked.
    pub fn straggler_queries(&self, service: u32) -> [u64; 2] {
        self.table()
            .track_of(service)
            .map_or([0; 2], |t| t.straggler_queries)
    }

    pub fn figures(&self) -> LedgerFigures {
        let table = self.table();
        LedgerFigures {
            entries: table.len() as u64,
            capacity: table.capacity() as u64,
            evicted: table.evicted,
            dropped: self.intake.dropped(),
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({:?})", self.figures())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::color::Color;
    use crate::observed::answers::{BATCH, NameKind, Observation, QUEUE_BATCHES};

    #[test]
    fn a_full_queue_drops_batches_and_counts_them() {
        let records = crate::fixture::records();
        // A runtime that is never driven: the ledger task never drains the queue.
        let idle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ledger = {
            let _entered = idle.enter();
            Ledger::start(
                1000,
                records,
                Clock::System,
                DRAIN_EVERY,
                &CancellationToken::new(),
                &TaskTracker::new(),
            )
        };
        let mut recorder = ledger.intake().recorder();
        let observation = |i: usize| Observation {
            at_ms: 1_000 + i as u64 / 100,
            resolver: IpAddr::from((0x0A00_0000 + i as u32).to_be_bytes()),
            subnet: None,
            service: 0,
            color: Color::Blue,
            name: NameKind::Service,
            ttl: 60,
            flip_tag: 0,
            via: 0,
        };
        for i in 0..(QUEUE_BATCHES + 2) * BATCH {
            recorder.record(observation(i));
        }
        recorder.flush();
        assert_eq!(
            ledger.figures().dropped,
            2 * BATCH as u64,
            "two batches did not fit the queue"
        );
        // Draining empties the queue and hands the batches back; recording goes on.
        ledger.drain();
        let view = ledger.figures();
        assert_eq!(
            (view.entries, view.evicted),
            (1000, (QUEUE_BATCHES * BATCH - 1000) as u64)
        );
        recorder.record(observation(0));
        recorder.flush();
        assert_eq!(ledger.figures().dropped, 2 * BATCH as u64);
    }
}
