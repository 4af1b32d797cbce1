//! The resolver table: one entry per (resolver, client subnet, service), bounded.
//!
//! Entries live in a slab of fixed-size slots; a `hashbrown::HashTable` maps key hashes to
//! slot numbers, so each entry is stored once. At capacity, a new resolver takes the slot of
//! the least recently seen of [`EVICTION_SAMPLE`] randomly chosen entries (sampled LRU, as in
//! Redis): active resolvers stay, idle ones go, and every eviction is counted. Keys come from
//! the network (source addresses can be spoofed), so they are hashed with SipHash under a
//! random key: a flood of chosen addresses cannot degrade the table.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::HashTable;

use crate::color::Color;
use crate::observed::answers::{NameKind, Observation};
use crate::state::FlipCount;
use crate::wire::subnet::ClientSubnet;

/// Entries compared when one must be evicted.
pub const EVICTION_SAMPLE: usize = 8;
/// Weight of a new interval in the running mean, as a shift: 1/4.
const EWMA_SHIFT: u32 = 2;

/// Which resolver, for which clients, asked about which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// IPv4 addresses are stored mapped (`::ffff:a.b.c.d`).
    resolver: [u8; 16],
    /// The EDNS Client Subnet, when the query carried one: family (0 none, 1, 2), prefix.
    subnet: [u8; 16],
    subnet_family: u8,
    subnet_prefix: u8,
    pub service: u32,
}

impl Key {
    pub fn new(resolver: IpAddr, subnet: Option<ClientSubnet>, service: u32) -> Key {
        let resolver = match resolver {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let (subnet_family, subnet_prefix, subnet) = match subnet {
            Some(s) => (s.family as u8, s.source_prefix, s.address),
            None => (0, 0, [0; 16]),
        };
        Key {
            resolver,
            subnet,
            subnet_family,
            subnet_prefix,
            service,
        }
    }

    pub fn resolver(&self) -> IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.resolver);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }

    /// The client subnet, when there was one.
    pub fn subnet(&self) -> Option<ClientSubnet> {
        (self.subnet_family != 0).then_some(ClientSubnet {
            family: self.subnet_family.into(),
            source_prefix: self.subnet_prefix,
            address: self.subnet,
        })
    }
}

/// What the ledger knows about one key. Times are Unix milliseconds (coarse clock).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub key: Key,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The last answer to the service name (0: never asked for it).
    pub answer_at_ms: u64,
    pub answer_ttl: u32,
    pub answer_color: Color,
    /// The service's flip count when the answer was given.
    pub answer_flips: FlipCount,
    /// TTL of the last answer of any of the service's names.
    pub last_ttl: u32,
    pub service_queries: u32,
    pub color_queries: u32,
    /// Running mean and mean deviation of the gaps between service-name queries.
    pub interval_ms: u32,
    pub deviation_ms: u32,
    pub samples: u16,
    /// Queries for the old color's name after every legitimate reason expired, for the
    /// flip that made the flip count `straggle_flips`.
    pub straggle_flips: FlipCount,
    pub straggle_count: u32,
    pub straggle_first_ms: u64,
    pub straggle_last_ms: u64,
    /// How far past expiry the last straggling query came.
    pub straggle_late_ms: u32,
    /// This resolver's record of the flip that made the flip count `record_flips`: when the
    /// old color it held at the flip expired by its TTL (0: it held the new color, or
    /// nothing), when it first got the new color (0: not yet), and whether that was later
    /// than its TTL allowed by more than [`late_tolerance_ms`].
    pub record_flips: FlipCount,
    pub old_expires_ms: u64,
    pub converged_at_ms: u64,
    pub late: bool,
}

/// Intervals needed before a resolver's rhythm counts: two regular intervals (three
/// queries) show a clamping resolver's rhythm two minutes after a 5 s TTL clamped to 60 s.
pub const MIN_SAMPLES: u16 = 2;
/// An interval this many times the TTL says the resolver keeps answers longer than their
/// TTL: it clamps TTLs (or serves stale).
pub const CLAMP_RATIO: f64 = 2.0;

/// How much later than its TTL allows a resolver may come back for the new color and still
/// be on time: clients ask when they like, so a resolver that obeys TTLs refetches a little
/// after expiry. Half the TTL, at least 5 s.
pub fn late_tolerance_ms(ttl: u32) -> u64 {
    (u64::from(ttl) * 500).max(5_000)
}

impl Entry {
    fn new(key: Key, at_ms: u64) -> Entry {
        Entry {
            key,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
            answer_at_ms: 0,
            answer_ttl: 0,
            answer_color: Color::Blue,
            answer_flips: FlipCount(0),
            last_ttl: 0,
            service_queries: 0,
            color_queries: 0,
            interval_ms: 0,
            deviation_ms: 0,
            samples: 0,
            straggle_flips: FlipCount(0),
            straggle_count: 0,
            straggle_first_ms: 0,
            straggle_last_ms: 0,
            straggle_late_ms: 0,
            record_flips: FlipCount(0),
            old_expires_ms: 0,
            converged_at_ms: 0,
            late: false,
        }
    }

    /// Re-query interval over the TTL given: well above 1 means the resolver keeps answers
    /// longer than their TTL (clamping); `None` until the rhythm has enough samples.
    pub fn interval_ratio(&self) -> Option<f64> {
        (self.samples >= MIN_SAMPLES && self.answer_ttl > 0)
            .then(|| f64::from(self.interval_ms) / (f64::from(self.answer_ttl) * 1000.0))
    }

    /// Whether its rhythm says it keeps answers well past their TTL.
    pub fn clamps(&self) -> bool {
        self.interval_ratio().is_some_and(|r| r >= CLAMP_RATIO)
    }

    /// How late it converged after the latest flip it saw: 0 on time or not yet.
    pub fn late_by_ms(&self) -> u64 {
        if self.old_expires_ms > 0 && self.converged_at_ms > 0 {
            self.converged_at_ms.saturating_sub(self.old_expires_ms)
        } else {
            0
        }
    }

    /// When the last service-name answer expires in a cache that obeys its TTL.
    pub fn expires_ms(&self) -> u64 {
        self.answer_at_ms + u64::from(self.answer_ttl) * 1000
    }
}

/// The latest flip of a service, as the ledger judges answers against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    /// The service's flip count after this flip; 0: never flipped.
    pub flips: FlipCount,
    pub at_ms: u64,
    /// When the last answer of the old color this server (in any process) could have
    /// given expires, as the flip recorded it in the state.
    pub old_expires_ms: u64,
    pub from: Option<Color>,
    pub to: Color,
    /// The service answers a CNAME to the live color's name.
    pub cname: bool,
    /// Some secondary has not been seen serving the flip: it still answers the old color,
    /// so the old color is not drained.
    pub secondaries_behind: bool,
}

impl Default for Flip {
    fn default() -> Flip {
        Flip {
            flips: FlipCount(0),
            at_ms: 0,
            old_expires_ms: 0,
            from: None,
            to: Color::Blue,
            cname: false,
            secondaries_behind: false,
        }
    }
}

/// Per-service aggregates, kept beside the entries.
#[derive(Debug, Clone, Default)]
pub struct ServiceTrack {
    pub flip: Flip,
    /// Latest expiry of any service-name answer, by color: the moment the last cache that
    /// obeys TTLs drops that color.
    pub expiry_ms: [u64; 2],
    /// Straggling queries, by the color asked for.
    pub straggler_queries: [u64; 2],
    /// The service's name, for log lines; empty until the ledger task first sees it.
    pub name: String,
    /// [`Flip::old_expires_ms`] on the monotonic clock, fixed when the ledger first saw the
    /// flip, so a later wall-clock step cannot make "drained" come early.
    pub old_expires_mono: u64,
    /// The flip whose first straggler, and whose drain, has been logged.
    pub logged_first_straggler: FlipCount,
    pub logged_drained: FlipCount,
    /// When the last resolver that converged late (for the latest flip) converged.
    pub last_late_converged_ms: u64,
    /// Class counts over time since the latest flip.
    pub timeline: Timeline,
}

/// Points a timeline keeps; when full, every other one goes and the step doubles, so it
/// covers any span with the first minutes at one second.
pub const TIMELINE_POINTS: usize = 120;
/// A timeline stops taking points this long after its flip.
pub const TIMELINE_SPAN_MS: u64 = 24 * 3600 * 1000;

/// A flip's class counts over time: bounded, finer near the flip.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub flips: FlipCount,
    pub step_ms: u64,
    pub next_ms: u64,
    /// (Unix ms, counts in [`super::ResolverClass::ALL`] order).
    pub points: Vec<(u64, [u32; 5])>,
}

impl Timeline {
    /// Whether a point is due at `now_ms` for `flip`; starts afresh for a new flip.
    pub fn due(&mut self, flip: &Flip, now_ms: u64) -> bool {
        if flip.flips.0 == 0 {
            return false;
        }
        if self.flips != flip.flips {
            *self = Timeline {
                flips: flip.flips,
                step_ms: 1000,
                next_ms: flip.at_ms,
                points: Vec::new(),
            };
        }
        now_ms >= self.next_ms && now_ms < flip.at_ms + TIMELINE_SPAN_MS
    }

    pub fn push(&mut self, now_ms: u64, counts: [u32; 5]) {
        if self.points.len() == TIMELINE_POINTS {
            let kept: Vec<_> = self.points.iter().copied().step_by(2).collect();
            self.points = kept;
            self.step_ms *= 2;
        }
        self.points.push((now_ms, counts));
        self.next_ms = now_ms + self.step_ms;
    }
}

/// A straggler found while recording, for the log line of a flip's first one.
#[derive(Debug, Clone, Copy)]
pub struct Straggled {
    pub key: Key,
    pub color: Color,
    pub late_ms: u64,
    pub first_of_flip: bool,
    /// It came back for the new color late, rather than asking for the old color's name.
    pub converged: bool,
}

/// The bounded table.
pub struct Table {
    capacity: usize,
    slots: Vec<Entry>,
    index: HashTable<u32>,
    hasher: RandomState,
    pub services: Vec<ServiceTrack>,
    pub evicted: u64,
    /// State of the xorshift generator that picks eviction candidates.
    random: u64,
    /// The slot found last. A resolver's queries come in runs (a cache refreshing several
    /// names, retries, a busy forwarder), and a run after the first costs a compare instead
    /// of a keyed hash: the hash was half of the ledger's time under load.
    last: usize,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            capacity,
            slots: Vec::new(),
            // Twice the capacity: with at most half the buckets full, the tombstones that
            // evictions leave are cleared by rehashing in place, never by growing.
            index: HashTable::with_capacity(capacity.saturating_mul(2)),
            hasher: RandomState::new(),
            services: Vec::new(),
            evicted: 0,
            random: 0x9E37_79B9_7F4A_7C15,
            last: 0,
        }
    }

    /// The aggregates of the service with id `id`, created on first use.
    pub fn track(&mut self, id: u32) -> &mut ServiceTrack {
        let id = id as usize;
        if self.services.len() <= id {
            self.services.resize(id + 1, ServiceTrack::default());
        }
        &mut self.services[id]
    }

    pub fn track_of(&self, id: u32) -> Option<&ServiceTrack> {
        self.services.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the table holds now (slots and index), for the memory-is-flat check.
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Entry>() + self.index.allocation_size()
    }

    /// Bytes one entry costs at capacity: its slot, plus two index buckets (a slot number and
    /// a control byte each) at the hash table's 7/8 load.
    pub fn bytes_per_entry() -> usize {
        std::mem::size_of::<Entry>() + 2 * (std::mem::size_of::<u32>() + 1) * 8 / 7
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter()
    }

    /// Records one observation; returns a straggler it revealed.
    pub fn record(&mut self, o: &Observation) -> Option<Straggled> {
        let key = Key::new(o.resolver, o.subnet, o.service);
        let flip = self.track(o.service).flip;
        let slot = self.slot(key, o.at_ms);
        let entry = &mut self.slots[slot];
        entry.last_seen_ms = entry.last_seen_ms.max(o.at_ms);
        let mut straggled = match o.name {
            NameKind::Service => entry.answered_service(o, &flip),
            NameKind::Color => entry.answered_color(o, &flip),
        };
        entry.last_ttl = o.ttl;
        let track = &mut self.services[o.service as usize];
        if o.name == NameKind::Service {
            let expiry = &mut track.expiry_ms[o.color.index()];
            *expiry = (*expiry).max(o.at_ms + u64::from(o.ttl) * 1000);
        }
        if let Some(s) = straggled.as_mut() {
            if s.converged {
                track.last_late_converged_ms = track.last_late_converged_ms.max(o.at_ms);
            } else {
                track.straggler_queries[s.color.index()] += 1;
            }
            if track.logged_first_straggler != flip.flips {
                track.logged_first_straggler = flip.flips;
                s.first_of_flip = true;
            }
        }
        straggled
    }

    /// The slot of `key`, created (evicting if full) when new.
    fn slot(&mut self, key: Key, at_ms: u64) -> usize {
        // A slot holds one key and a key one slot, so a slot holding `key` is its slot.
        if self.slots.get(self.last).is_some_and(|e| e.key == key) {
            return self.last;
        }
        self.last = self.find_or_insert(key, at_ms);
        self.last
    }

    fn find_or_insert(&mut self, key: Key, at_ms: u64) -> usize {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        if let Some(&slot) = self.index.find(hash, |&s| slots[s as usize].key == key) {
            return slot as usize;
        }
        let slot = if self.slots.len() < self.capacity {
            self.slots.push(Entry::new(key, at_ms));
            self.slots.len() - 1
        } else {
            let victim = self.victim();
            let old = self.hasher.hash_one(self.slots[victim].key);
            if let Ok(found) = self.index.find_entry(old, |&s| s as usize == victim) {
                found.remove();
            }
            self.slots[victim] = Entry::new(key, at_ms);
            self.evicted += 1;
            victim
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, slot as u32, |&s| {
            hasher.hash_one(slots[s as usize].key)
        });
        slot
    }

    /// The least recently seen of a few random slots.
    fn victim(&mut self) -> usize {
        let mut best = self.next_random() % self.slots.len();
        for _ in 1..EVICTION_SAMPLE {
            let candidate = self.next_random() % self.slots.len();
            if self.slots[candidate].last_seen_ms < self.slots[best].last_seen_ms {
                best = candidate;
            }
        }
        best
    }

    fn next_random(&mut self) -> usize {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random as usize
    }
}

impl Entry {
    /// An answer to the service name: the resolver's record of the flip (what it held, when
    /// it converged, whether late), its rhythm, and its latest answer.
    fn answered_service(&mut self, o: &Observation, flip: &Flip) -> Option<Straggled> {
        let mut straggled = None;
        if flip.flips.0 > 0 && o.at_ms >= flip.at_ms && self.record_flips != flip.flips {
            // The first answer since the flip: what it held before is its record. An
            // answer that had expired by its TTL before the flip was not held, unless
            // the resolver's rhythm says it keeps answers past their TTL; one that had
            // expired because nobody asked is not lateness.
            let held_old = self.answer_at_ms > 0
                && self.answer_at_ms < flip.at_ms
                && Some(self.answer_color) == flip.from
                && (self.expires_ms() > flip.at_ms || self.clamps());
            self.record_flips = flip.flips;
            self.old_expires_ms = if held_old { self.expires_ms() } else { 0 };
            self.converged_at_ms = 0;
            self.late = false;
        }
        if self.record_flips == flip.flips
            && self.converged_at_ms == 0
            && o.color == flip.to
            && flip.flips.0 > 0
        {
            self.converged_at_ms = o.at_ms;
            let late_ms = self.late_by_ms();
            if late_ms > late_tolerance_ms(self.answer_ttl) {
                self.late = true;
                straggled = Some(Straggled {
                    key: self.key,
                    color: o.color,
                    late_ms,
                    first_of_flip: false,
                    converged: true,
                });
            }
        }
        if self.answer_at_ms > 0 {
            // Queries closer than half a TTL are retries or other types, not a
            // cache refreshing: they are not intervals.
            let gap = o.at_ms.saturating_sub(self.answer_at_ms);
            if gap * 2 >= u64::from(self.answer_ttl) * 1000 && gap > 0 {
                self.note_interval(gap.min(u64::from(u32::MAX)) as u32);
            }
        }
        self.answer_at_ms = o.at_ms;
        self.answer_ttl = o.ttl;
        self.answer_color = o.color;
        // Observations carry no flip count (16 bytes each, see `batch`): an answer
        // after the latest flip belongs to it, one before it to the flip before.
        self.answer_flips = if o.at_ms >= flip.at_ms {
            flip.flips
        } else {
            FlipCount(flip.flips.0.saturating_sub(1))
        };
        self.service_queries = self.service_queries.saturating_add(1);
        straggled
    }

    /// An answer to a color name: a query for the old color's name after every legitimate
    /// reason to ask for it has expired is a straggler's.
    fn answered_color(&mut self, o: &Observation, flip: &Flip) -> Option<Straggled> {
        let mut straggled = None;
        self.color_queries = self.color_queries.saturating_add(1);
        if flip.flips.0 > 0 && Some(o.color) == flip.from && o.at_ms > flip.at_ms {
            // Every legitimate reason to ask for the old color's name has expired:
            // in CNAME mode the CNAME to it, otherwise the TTL last given, from the flip.
            let expiry = if flip.cname && self.answer_at_ms > 0 {
                self.expires_ms()
            } else {
                flip.at_ms + u64::from(self.last_ttl.max(o.ttl)) * 1000
            };
            if o.at_ms > expiry {
                if self.straggle_flips != flip.flips {
                    self.straggle_flips = flip.flips;
                    self.straggle_count = 0;
                    self.straggle_first_ms = o.at_ms;
                }
                self.straggle_count = self.straggle_count.saturating_add(1);
                self.straggle_last_ms = o.at_ms;
                let late_ms = o.at_ms - expiry;
                self.straggle_late_ms = late_ms.min(u64::from(u32::MAX)) as u32;
                straggled = Some(Straggled {
                    key: self.key,
                    color: o.color,
                    late_ms,
                    first_of_flip: false,
                    converged: false,
                });
            }
        }
        straggled
    }

    fn note_interval(&mut self, gap: u32) {
        if self.samples == 0 {
            self.interval_ms = gap;
            self.deviation_ms = 0;
        } else {
            let deviation = gap.abs_diff(self.interval_ms);
            self.interval_ms = ewma(self.interval_ms, gap);
            self.deviation_ms = ewma(self.deviation_ms, deviation);
        }
        self.samples = self.samples.saturating_add(1);
    }
}

fn ewma(mean: u32, sample: u32) -> u32 {
    let (mean, sample) = (i64::from(mean), i64::from(sample));
    (mean + ((sample - mean) >> EWMA_SHIFT)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(resolver: [u8; 4], at_ms: u64, name: NameKind, color: Color) -> Observation {
        Observation {
            at_ms,
            resolver: IpAddr::from(resolver),
            subnet: None,
            service: 0,
            color,
            name,
            ttl: 5,
        }
    }

    #[test]
    fn the_entry_count_stays_at_capacity_and_memory_stays_flat() {
        let mut table = Table::new(1000);
        for i in 0..1000u32 {
            table.record(&observation(
                i.to_be_bytes(),
                u64::from(i),
                NameKind::Service,
                Color::Blue,
            ));
        }
        assert_eq!(table.len(), 1000);
        let bytes = table.allocated_bytes();
        for i in 1000..5000u32 {
            table.record(&observation(
                i.to_be_bytes(),
                u64::from(i),
                NameKind::Service,
                Color::Blue,
            ));
        }
        assert_eq!(
            table.len(),
            1000,
            "several times the capacity of distinct keys"
        );
        assert_eq!(table.evicted, 4000);
        assert_eq!(table.allocated_bytes(), bytes, "no growth past capacity");
        assert!(
            Table::bytes_per_entry() <= 180,
            "{} bytes per entry",
            Table::bytes_per_entry()
        );
        // Every key still indexed finds its own slot.
        for entry in table.entries() {
            let hash = table.hasher.hash_one(entry.key);
            assert!(
                table
                    .index
                    .find(hash, |&s| table.slots[s as usize].key == entry.key)
                    .is_some()
            );
        }
    }

    #[test]
    fn eviction_keeps_active_resolvers() {
        let mut table = Table::new(100);
        // Resolver 1 keeps asking; thousands of one-off resolvers come and go.
        for i in 0..5000u32 {
            let at = u64::from(i) * 10;
            table.record(&observation(
                [10, 0, 0, 1],
                at,
                NameKind::Service,
                Color::Blue,
            ));
            table.record(&observation(
                (0x0B00_0000 + i).to_be_bytes(),
                at + 1,
                NameKind::Service,
                Color::Blue,
            ));
        }
        let active = Key::new(IpAddr::from([10, 0, 0, 1]), None, 0);
        let entry = table
            .entries()
            .find(|e| e.key == active)
            .expect("the active resolver is kept");
        assert_eq!(entry.service_queries, 5000);
    }

    #[test]
    fn intervals_ignore_retries_and_track_the_rhythm() {
        let mut table = Table::new(10);
        for (i, at) in [0u64, 100, 20_000, 40_000, 60_100, 80_000]
            .iter()
            .enumerate()
        {
            let _ = i;
            table.record(&observation(
                [10, 0, 0, 2],
                *at,
                NameKind::Service,
                Color::Blue,
            ));
        }
        let entry = table.entries().next().unwrap();
        assert_eq!(entry.samples, 4, "the 100 ms retry is not an interval");
        assert!(
            entry.interval_ms.abs_diff(20_000) < 200,
            "{}",
            entry.interval_ms
        );
        assert!(entry.deviation_ms < 1000, "{}", entry.deviation_ms);
    }
}
