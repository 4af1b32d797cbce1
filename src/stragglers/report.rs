//! Classes and reports: what the ledger says about the resolvers of one service, relative
//! to its latest flip. Domain values only; the admin layer turns them into replies.

pub use super::table::{CLAMP_RATIO, MIN_SAMPLES};
use super::table::{Entry, Flip, ServiceTrack, Table};
use crate::state::FlipCount;

/// A silent resolver is overdue when it stays away this many times longer than it would if
/// it obeyed its TTL (or kept its own rhythm, when that was faster).
pub const OVERDUE_FACTOR: u64 = 3;

/// The classes of a resolver after a flip from old color O to new color N at time F, in
/// the order reports list them (most interesting first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResolverClass {
    /// Kept O past its TTL: came back for N later than its TTL allowed (by more than
    /// [`super::table::late_tolerance_ms`]), or asked for O's color name after every
    /// legitimate reason had expired. It stays one for this flip after it converges.
    Straggler,
    /// Silent, though it re-queried on a regular rhythm before: likely a stale cache.
    Overdue,
    /// Its last answer was O and is still within its TTL.
    Draining,
    /// Its last answer was O, the TTL has passed, and it has not asked since.
    Silent,
    /// Asked after F and got N on time (or holds N within its TTL).
    Converged,
}

impl ResolverClass {
    pub const ALL: [ResolverClass; 5] = [
        ResolverClass::Straggler,
        ResolverClass::Overdue,
        ResolverClass::Draining,
        ResolverClass::Silent,
        ResolverClass::Converged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResolverClass::Straggler => "straggler",
            ResolverClass::Overdue => "overdue",
            ResolverClass::Draining => "draining",
            ResolverClass::Silent => "silent",
            ResolverClass::Converged => "converged",
        }
    }
}

/// Resolvers per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounts([u64; 5]);

impl ClassCounts {
    pub fn get(&self, class: ResolverClass) -> u64 {
        self.0[class as usize]
    }

    fn add(&mut self, class: ResolverClass) {
        self.0[class as usize] += 1;
    }

    /// The counts in [`ResolverClass::ALL`] order, as timelines keep them.
    pub fn raw(&self) -> [u32; 5] {
        self.0.map(|n| n.min(u64::from(u32::MAX)) as u32)
    }

    pub fn from_raw(raw: [u32; 5]) -> ClassCounts {
        ClassCounts(raw.map(u64::from))
    }
}

/// Which resolvers a report lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// These classes (every class when empty).
    pub classes: Vec<ResolverClass>,
    /// At most this many, most interesting first.
    pub limit: usize,
}

/// A service's report: counts, the drain moment, and the resolvers worth naming.
#[derive(Debug, Clone)]
pub struct Report {
    /// The latest flip the classes are relative to; `None` before the first.
    pub flip: Option<Flip>,
    /// When the last answer with the old color expires in caches that obey TTLs: the later
    /// of what the flip recorded (every answer any process could have given) and what the
    /// ledger saw.
    pub drained_at_ms: Option<u64>,
    /// Whether that moment has passed; never said without it.
    pub drained: bool,
    /// Whether the ledger saw every resolver that could hold the old color (it started at
    /// least a normal TTL before the flip).
    pub complete: bool,
    /// When the ledger started (wall clock).
    pub ledger_started_ms: u64,
    pub counts: ClassCounts,
    /// Straggling queries for the old color's name since the flip.
    pub straggler_queries: u64,
    /// The resolvers of the listed classes, most interesting first, up to the limit.
    pub resolvers: Vec<(ResolverClass, Entry)>,
    /// Resolvers of the listed classes left out by the limit.
    pub left_out: u64,
    /// When the last resolver that came back late converged (0: none).
    pub last_late_converged_ms: u64,
    /// Class counts over time since the flip: (Unix ms, counts).
    pub timeline: Vec<(u64, ClassCounts)>,
}

/// The class of `entry` against `flip` at `now_ms`; `None` for keys that only ever asked for
/// a color name (they have no cached service answer to judge).
pub fn classify(entry: &Entry, flip: &Flip, now_ms: u64) -> Option<ResolverClass> {
    let this_flip = flip.flips > FlipCount(0);
    if this_flip && entry.straggle_flips == flip.flips && entry.straggle_count > 0 {
        return Some(ResolverClass::Straggler);
    }
    if this_flip && entry.record_flips == flip.flips && entry.late {
        return Some(ResolverClass::Straggler);
    }
    if entry.answer_at_ms == 0 {
        return None;
    }
    let holds_new = entry.answer_color == flip.to;
    if holds_new && entry.answer_at_ms >= flip.at_ms {
        return Some(ResolverClass::Converged);
    }
    if now_ms < entry.expires_ms() {
        return Some(if holds_new {
            ResolverClass::Converged
        } else {
            ResolverClass::Draining
        });
    }
    if overdue(entry, now_ms) {
        Some(ResolverClass::Overdue)
    } else {
        Some(ResolverClass::Silent)
    }
}

/// A regular rhythm before, and now away for several of the intervals it should show.
fn overdue(entry: &Entry, now_ms: u64) -> bool {
    let regular = entry.samples >= MIN_SAMPLES && entry.deviation_ms * 2 <= entry.interval_ms;
    let expected = u64::from(entry.interval_ms)
        .min(u64::from(entry.answer_ttl) * 1000)
        .max(1);
    regular && now_ms.saturating_sub(entry.answer_at_ms) > OVERDUE_FACTOR * expected
}

/// Re-query interval over the TTL given: well above 1 means the resolver keeps answers
/// longer than their TTL (clamping); `None` until the rhythm has enough samples.
pub fn interval_ratio(entry: &Entry) -> Option<f64> {
    entry.interval_ratio()
}

/// The observed re-query interval, once there are enough samples.
pub fn interval_ms(entry: &Entry) -> Option<u32> {
    (entry.samples >= MIN_SAMPLES).then_some(entry.interval_ms)
}

/// When the last answer of `old` expires for caches that obey TTLs: what the flip recorded
/// (it covers answers no ledger saw, such as those of a process before a restart) or what
/// the ledger saw, whichever is later.
pub fn drained_at(track: &ServiceTrack, old: crate::color::Color) -> u64 {
    track.expiry_ms[old.index()]
        .max(track.flip.at_ms)
        .max(track.flip.old_expires_ms)
}

/// Counts of every class for `service`.
pub fn counts(table: &Table, service: u32, now_ms: u64) -> ClassCounts {
    counts_of(table, &[service], now_ms)
        .pop()
        .map_or_else(ClassCounts::default, |(_, c)| c)
}

/// Counts of every class for each of `services`, in one pass over the table.
pub fn counts_of(table: &Table, services: &[u32], now_ms: u64) -> Vec<(u32, ClassCounts)> {
    let mut counts: Vec<(u32, ClassCounts)> = services
        .iter()
        .map(|&s| (s, ClassCounts::default()))
        .collect();
    let flips: Vec<Flip> = services
        .iter()
        .map(|&s| table.track_of(s).map(|t| t.flip).unwrap_or_default())
        .collect();
    // Service id -> position in `services`: one lookup per entry, however many services.
    let top = services.iter().max().map_or(0, |&m| m as usize + 1);
    let mut position = vec![usize::MAX; top];
    for (i, &s) in services.iter().enumerate() {
        position[s as usize] = i;
    }
    for entry in table.entries() {
        let Some(&i) = position
            .get(entry.key.service as usize)
            .filter(|&&i| i != usize::MAX)
        else {
            continue;
        };
        if let Some(class) = classify(entry, &flips[i], now_ms) {
            counts[i].1.add(class);
        }
    }
    counts
}

/// Whether the resolver's rhythm says it keeps answers well past their TTL.
pub fn clamps(entry: &Entry) -> bool {
    entry.clamps()
}

/// The full report for `service`: counts, the drain deadline, the resolvers `listing`
/// asks for (most interesting first), and the timeline of the latest flip.
pub fn report(table: &Table, service: u32, now_ms: u64, mono_ms: u64, listing: &Listing) -> Report {
    let fresh = ServiceTrack::default();
    let track = table.track_of(service).unwrap_or(&fresh);
    let flip = track.flip;
    let mut counts = ClassCounts::default();
    let mut listed: Vec<(ResolverClass, u64, &Entry)> = Vec::new();
    for entry in table.entries().filter(|e| e.key.service == service) {
        let Some(class) = classify(entry, &flip, now_ms) else {
            continue;
        };
        counts.add(class);
        if !listing.classes.is_empty() && !listing.classes.contains(&class) {
            continue;
        }
        // Worst first: stragglers by lateness and queries, overdue and silent by silence,
        // draining by expiry, converged by how recently.
        let rank = match class {
            ResolverClass::Straggler => entry.late_by_ms() + u64::from(entry.straggle_count) * 1000,
            ResolverClass::Overdue | ResolverClass::Silent => {
                now_ms.saturating_sub(entry.answer_at_ms)
            }
            ResolverClass::Draining => entry.expires_ms(),
            ResolverClass::Converged => entry.converged_at_ms.max(entry.answer_at_ms),
        };
        listed.push((class, rank, entry));
    }
    listed.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let left_out = listed.len().saturating_sub(listing.limit) as u64;
    let resolvers = listed
        .iter()
        .take(listing.limit)
        .map(|(c, _, e)| (*c, **e))
        .collect();
    let old = flip.from;
    let drained_at_ms = old.map(|o| drained_at(track, o));
    let timeline = if track.timeline.flips == flip.flips {
        track
            .timeline
            .points
            .iter()
            .map(|&(at, raw)| (at, ClassCounts::from_raw(raw)))
            .collect()
    } else {
        Vec::new()
    };
    Report {
        flip: (flip.flips > FlipCount(0)).then_some(flip),
        drained_at_ms,
        drained: old.is_none() || mono_ms >= track.old_expires_mono,
        complete: true,
        ledger_started_ms: 0,
        counts,
        straggler_queries: old.map_or(0, |o| track.straggler_queries[o.index()]),
        resolvers,
        left_out,
        last_late_converged_ms: track.last_late_converged_ms,
        timeline,
    }
}
