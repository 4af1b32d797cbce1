//! The resolver table: one entry per (resolver, client subnet, service), bounded.
//!
//! Times here are milliseconds on the monotonic clock: a wall-clock step between a flip and
//! a resolver's return must not make it late or early. Reports turn them into wall time.
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

/// What the ledger knows about one key. Times are monotonic milliseconds (coarse clock).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub key: Key,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The latest answer to the service name (0: never asked for it).
    pub answer_at_ms: u64,
    pub answer_ttl: u32,
    pub answer_color: Color,
    /// The service's flip count when that answer was given.
    pub answer_flips: u32,
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
    pub straggle_flips: u32,
    pub straggle_count: u32,
    pub straggle_first_ms: u64,
    pub straggle_last_ms: u64,
    /// How far past expiry the last straggling query came.
    pub straggle_late_ms: u32,
    /// This resolver's record of the flip that made the flip count `record_flips`, begun at
    /// its first answer after that flip: the old-color answer it had from before the flip
    /// (when it expired by its TTL, 0 for none, and that TTL), whether it held it at the flip,
    /// when it first got the new color (0: not yet), and whether that was late.
    pub record_flips: u32,
    pub before_expires_ms: u64,
    pub before_ttl: u32,
    pub held_old: bool,
    pub converged_at_ms: u64,
    pub late: bool,
    /// The servers it asked, one bit per `via` id (bit 0: this server; the ledger names
    /// the others, the secondaries whose streams carried its answers).
    pub via: u64,
}

/// Intervals needed before a resolver's rhythm counts: two regular intervals (three
/// queries) show a clamping resolver's rhythm two minutes after a 5 s TTL clamped to 60 s.
pub const MIN_SAMPLES: u16 = 2;
/// An interval this many times the TTL says the resolver keeps answers longer than their
/// TTL: it clamps TTLs (or serves stale).
pub const CLAMP_RATIO: f64 = 2.0;
/// However late a resolver comes back by the tolerance, coming back within its TTL and
/// this much of the flip is never late: no cache that obeys TTLs could have done better.
pub const FLIP_GRACE_MS: u64 = 2_000;

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
            answer_flips: 0,
            last_ttl: 0,
            service_queries: 0,
            color_queries: 0,
            interval_ms: 0,
            deviation_ms: 0,
            samples: 0,
            straggle_flips: 0,
            straggle_count: 0,
            straggle_first_ms: 0,
            straggle_last_ms: 0,
            straggle_late_ms: 0,
            record_flips: 0,
            before_expires_ms: 0,
            before_ttl: 0,
            held_old: false,
            converged_at_ms: 0,
            late: false,
            via: 0,
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

    /// When keeping the old color starts to count as late, for `flip` (its record's): the
    /// later of the flip and the expiry of the old answer it held; `None` unless it held one.
    pub fn late_from_ms(&self, flip: &Flip) -> Option<u64> {
        (self.held_old && self.record_flips == flip.flips)
            .then(|| self.before_expires_ms.max(flip.at_ms))
    }

    /// How long after the flip (or after its old answer expired, whichever is later) it
    /// kept the old color: 0 when it did not hold it, and until it converges.
    pub fn late_by_ms(&self, flip: &Flip) -> u64 {
        match self.late_from_ms(flip) {
            Some(from) if self.converged_at_ms > 0 => self.converged_at_ms.saturating_sub(from),
            _ => 0,
        }
    }

    /// When the last service-name answer expires in a cache that obeys its TTL.
    pub fn expires_ms(&self) -> u64 {
        self.answer_at_ms + u64::from(self.answer_ttl) * 1000
    }
}

/// A flip of a service, as the ledger judges answers against it. Times are monotonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    /// The service's flip count after this flip; 0: never flipped.
    pub flips: u32,
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
            flips: 0,
            at_ms: 0,
            old_expires_ms: 0,
            from: None,
            to: Color::Blue,
            cname: false,
            secondaries_behind: false,
        }
    }
}

impl Flip {
    /// The tag answers given under this flip carry ([`Observation::flip_tag`]).
    pub fn tag(&self) -> u8 {
        crate::observed::answers::flip_tag(self.flips.into())
    }

    fn happened(&self) -> bool {
        self.flips > 0
    }
}

/// Per-service aggregates, kept beside the entries.
#[derive(Debug, Clone, Default)]
pub struct ServiceTrack {
    /// The latest flip the ledger knows, and the one before it: an answer given just
    /// before a flip may reach the ledger after the flip is known.
    pub flip: Flip,
    pub previous: Flip,
    /// Where the service was last found in the snapshot (an index, checked against its id).
    pub index: u32,
    /// What the state said of the latest flip when the ledger took it (wall-clock values),
    /// so its monotonic times are fixed once: a later wall-clock step cannot move them.
    pub seen: (u64, u64, u64, bool),
    /// Latest expiry of any service-name answer, by color: the moment the last cache that
    /// obeys TTLs drops that color.
    pub expiry_ms: [u64; 2],
    /// Straggling queries since start, by the color asked for (for `/metrics`).
    pub straggler_queries: [u64; 2],
    /// Straggling queries for the old color's name since the latest flip.
    pub flip_straggler_queries: u64,
    /// The service's name, for log lines; empty until the ledger first sees it.
    pub name: String,
    /// The flip whose first straggler, and whose drain, has been logged.
    pub logged_first_straggler: u32,
    pub logged_drained: u32,
    /// When the last resolver that converged late (for the latest flip) converged.
    pub last_late_converged_ms: u64,
    /// Class counts over time since the latest flip.
    pub timeline: Timeline,
    /// Answers recorded since start, by the color they carried (the timeline's old-color
    /// answers a second are differences of these).
    pub answers: [u64; 2],
}

impl ServiceTrack {
    /// The flip an answer with `tag` was given under, if the ledger knows it.
    pub fn flip_of(&self, tag: u8) -> Option<Flip> {
        if self.flip.tag() == tag {
            Some(self.flip)
        } else if self.previous.tag() == tag && self.previous.flips + 1 == self.flip.flips {
            Some(self.previous)
        } else {
            None
        }
    }

    /// Takes `flip` as the latest; the one it replaces becomes the previous (or, when the
    /// ledger missed flips in between, one like it: its color and count, at the new
    /// flip's time).
    pub fn take_flip(&mut self, flip: Flip) {
        if flip.flips == self.flip.flips {
            self.flip = flip;
            return;
        }
        self.previous = if flip.flips == self.flip.flips + 1 {
            self.flip
        } else {
            Flip {
                flips: flip.flips.saturating_sub(1),
                at_ms: flip.at_ms,
                old_expires_ms: flip.at_ms,
                from: flip.from.map(|_| flip.to),
                to: flip.from.unwrap_or(flip.to),
                cname: flip.cname,
                secondaries_behind: false,
            }
        };
        self.flip = flip;
        self.last_late_converged_ms = 0;
        self.flip_straggler_queries = 0;
    }
}

/// Points a timeline keeps; when full, every other one goes and the step doubles, so it
/// covers any span with the first minutes at one second.
pub const TIMELINE_POINTS: usize = 120;
/// A timeline stops taking points this long after its flip.
pub const TIMELINE_SPAN_MS: u64 = 24 * 3600 * 1000;

/// A flip's class counts over time: bounded, finer near the flip.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub flips: u32,
    pub step_ms: u64,
    pub next_ms: u64,
    /// (monotonic ms, counts in [`super::ResolverClass::ALL`] order, answers with the old
    /// color recorded since start).
    pub points: Vec<(u64, [u32; 5], u64)>,
}

impl Timeline {
    /// Whether a point is due at `now_ms` for `flip`; starts afresh for a new flip.
    pub fn due(&mut self, flip: &Flip, now_ms: u64) -> bool {
        if !flip.happened() {
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

    pub fn push(&mut self, now_ms: u64, counts: [u32; 5], old_answers: u64) {
        if self.points.len() == TIMELINE_POINTS {
            let kept: Vec<_> = self.points.iter().copied().step_by(2).collect();
            self.points = kept;
            self.step_ms *= 2;
        }
        self.points.push((now_ms, counts, old_answers));
        self.next_ms = now_ms + self.step_ms;
    }
}

/// A straggler found while recording, for the log line of a flip's first one.
#[derive(Debug, Clone, Copy)]
pub struct Straggled {
    pub key: Key,
    pub color: Color,
    /// How late: past the flip or its old answer's expiry (a late return), or past every
    /// reason to ask for the old color's name (a query for it).
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

    /// Records one observation, given under `flip` (the one live when it was answered, as
    /// its tag says); returns a straggler it revealed.
    pub fn record(&mut self, o: &Observation, flip: &Flip) -> Option<Straggled> {
        let key = Key::new(o.resolver, o.subnet, o.service);
        let latest_flip = self.track(o.service).flip;
        let latest = latest_flip.flips;
        let slot = self.slot(key, o.at_ms);
        let entry = &mut self.slots[slot];
        entry.last_seen_ms = entry.last_seen_ms.max(o.at_ms);
        entry.via |= 1 << o.via.min(63);
        let mut straggled = match o.name {
            NameKind::Service => entry.answered_service(o, flip, &latest_flip),
            NameKind::Color => entry.answered_color(o, flip),
        };
        entry.last_ttl = o.ttl;
        let track = &mut self.services[o.service as usize];
        track.answers[o.color.index()] += 1;
        if o.name == NameKind::Service {
            let expiry = &mut track.expiry_ms[o.color.index()];
            *expiry = (*expiry).max(o.at_ms + u64::from(o.ttl) * 1000);
        }
        if let Some(s) = straggled.as_mut() {
            if s.converged {
                if flip.flips == latest {
                    track.last_late_converged_ms = track.last_late_converged_ms.max(o.at_ms);
                }
            } else {
                track.straggler_queries[s.color.index()] += 1;
                if flip.flips == latest {
                    track.flip_straggler_queries += 1;
                }
            }
            if track.logged_first_straggler != flip.flips && flip.flips == latest {
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
    /// An answer to the service name, given under `flip`: the resolver's record of the flip
    /// (what it held at the flip, when it converged, whether late), its rhythm, and its
    /// latest answer. Answers can arrive out of order (from different receive loops, or a
    /// secondary's stream): an older one than the latest counts, but does not replace it.
    fn answered_service(
        &mut self,
        o: &Observation,
        flip: &Flip,
        latest: &Flip,
    ) -> Option<Straggled> {
        self.service_queries = self.service_queries.saturating_add(1);
        if flip.happened() && self.record_flips != flip.flips && self.answer_flips < flip.flips {
            self.begin_record(flip);
        }
        if flip.flips + 1 == latest.flips && self.record_flips == latest.flips {
            self.arrived_late(o, latest);
        }
        let newest = o.at_ms >= self.answer_at_ms;
        if newest {
            if self.answer_at_ms > 0 {
                // Queries closer than half a TTL are retries or other types, not a cache
                // refreshing: they are not intervals.
                let gap = o.at_ms - self.answer_at_ms;
                if gap * 2 >= u64::from(self.answer_ttl) * 1000 && gap > 0 {
                    self.note_interval(gap.min(u64::from(u32::MAX)) as u32);
                }
            }
            self.answer_at_ms = o.at_ms;
            self.answer_ttl = o.ttl;
            self.answer_color = o.color;
            self.answer_flips = flip.flips;
        }
        if !flip.happened() || self.record_flips != flip.flips {
            return None;
        }
        let was_late = self.late;
        if o.color == flip.to && (self.converged_at_ms == 0 || o.at_ms < self.converged_at_ms) {
            self.converged_at_ms = o.at_ms;
        }
        // A rhythm proven only now (after the flip) still says what it did at the flip.
        if !self.held_old && self.before_expires_ms > 0 && self.clamps() {
            self.held_old = true;
        }
        self.late = self.judged_late(flip);
        (self.late && !was_late).then(|| Straggled {
            key: self.key,
            color: flip.to,
            late_ms: self.late_by_ms(flip),
            first_of_flip: false,
            converged: true,
        })
    }

    /// Begins the record of `flip` at the resolver's first answer under it: the old-color
    /// answer it had from before is what it may have held. It held it if that answer had
    /// not expired by its TTL at the flip, or if its rhythm says it keeps answers past their
    /// TTL (also judged again later, once the rhythm is proven); one that had expired
    /// because nobody asked is not lateness.
    fn begin_record(&mut self, flip: &Flip) {
        let before = self.answer_at_ms > 0
            && self.answer_at_ms <= flip.at_ms
            && Some(self.answer_color) == flip.from;
        self.record_flips = flip.flips;
        self.before_expires_ms = if before { self.expires_ms() } else { 0 };
        self.before_ttl = if before { self.answer_ttl } else { 0 };
        self.held_old = before && (self.expires_ms() > flip.at_ms || self.clamps());
        self.converged_at_ms = 0;
        self.late = false;
    }

    /// An answer given before `latest` (the flip of the record) that arrived after the
    /// record began: if it is later than the answer the record took as the one held at the
    /// flip, it is that answer.
    fn arrived_late(&mut self, o: &Observation, latest: &Flip) {
        let before_at = self
            .before_expires_ms
            .saturating_sub(u64::from(self.before_ttl) * 1000);
        if Some(o.color) != latest.from || (self.before_expires_ms > 0 && o.at_ms <= before_at) {
            return;
        }
        self.before_expires_ms = o.at_ms + u64::from(o.ttl) * 1000;
        self.before_ttl = o.ttl;
        self.held_old = self.before_expires_ms > latest.at_ms || self.clamps();
        self.late = self.judged_late(latest);
    }

    /// Late: it got the new color later than its TTL allows by more than the tolerance,
    /// and later than one TTL and [`FLIP_GRACE_MS`] after the flip (a cache that obeys
    /// TTLs and got its answer just before the flip comes back that late).
    fn judged_late(&self, flip: &Flip) -> bool {
        let Some(from) = self.late_from_ms(flip) else {
            return false;
        };
        let grace = flip.at_ms + u64::from(self.before_ttl) * 1000 + FLIP_GRACE_MS;
        let deadline = (from + late_tolerance_ms(self.before_ttl)).max(grace);
        self.converged_at_ms > deadline
    }

    /// An answer to a color name: a query for the old color's name after every legitimate
    /// reason to ask for it has expired is a straggler's.
    fn answered_color(&mut self, o: &Observation, flip: &Flip) -> Option<Straggled> {
        self.color_queries = self.color_queries.saturating_add(1);
        if !flip.happened() || Some(o.color) != flip.from || o.at_ms <= flip.at_ms {
            return None;
        }
        // Every legitimate reason to ask for the old color's name has expired: in CNAME
        // mode the CNAME to it, otherwise the TTL last given, from the flip.
        let expiry = if flip.cname && self.answer_at_ms > 0 {
            self.expires_ms()
        } else {
            flip.at_ms + u64::from(self.last_ttl.max(o.ttl)) * 1000
        };
        if o.at_ms <= expiry {
            return None;
        }
        if self.straggle_flips != flip.flips {
            self.straggle_flips = flip.flips;
            self.straggle_count = 0;
            self.straggle_first_ms = o.at_ms;
        }
        self.straggle_count = self.straggle_count.saturating_add(1);
        self.straggle_first_ms = self.straggle_first_ms.min(o.at_ms);
        self.straggle_last_ms = self.straggle_last_ms.max(o.at_ms);
        let late_ms = o.at_ms - expiry;
        self.straggle_late_ms = late_ms.min(u64::from(u32::MAX)) as u32;
        Some(Straggled {
            key: self.key,
            color: o.color,
            late_ms,
            first_of_flip: false,
            converged: false,
        })
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
            flip_tag: 0,
            via: 0,
        }
    }

    #[test]
    fn the_entry_count_stays_at_capacity_and_memory_stays_flat() {
        let mut table = Table::new(1000);
        for i in 0..1000u32 {
            table.record(
                &observation(
                    i.to_be_bytes(),
                    u64::from(i),
                    NameKind::Service,
                    Color::Blue,
                ),
                &Flip::default(),
            );
        }
        assert_eq!(table.len(), 1000);
        let bytes = table.allocated_bytes();
        for i in 1000..5000u32 {
            table.record(
                &observation(
                    i.to_be_bytes(),
                    u64::from(i),
                    NameKind::Service,
                    Color::Blue,
                ),
                &Flip::default(),
            );
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
            table.record(
                &observation([10, 0, 0, 1], at, NameKind::Service, Color::Blue),
                &Flip::default(),
            );
            table.record(
                &observation(
                    (0x0B00_0000 + i).to_be_bytes(),
                    at + 1,
                    NameKind::Service,
                    Color::Blue,
                ),
                &Flip::default(),
            );
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
            table.record(
                &observation([10, 0, 0, 2], *at, NameKind::Service, Color::Blue),
                &Flip::default(),
            );
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
