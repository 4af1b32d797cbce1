//! Classes and reports: what the ledger says about the resolvers of one service, relative
//! to its latest flip. Domain values only; the admin layer turns them into replies.

use super::table::{Entry, Flip, ServiceTrack, Table};
use crate::state::FlipCount;

/// A silent resolver is overdue when it stays away this many times longer than it would if
/// it obeyed its TTL (or kept its own rhythm, when that was faster).
pub const OVERDUE_FACTOR: u64 = 3;
/// Intervals needed before a resolver's rhythm counts.
pub const MIN_SAMPLES: u16 = 3;

/// The classes of a resolver after a flip from old color O to new color N at time F, in
/// the order reports list them (most interesting first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResolverClass {
    /// Asked for O's color name after every legitimate reason had expired.
    Straggler,
    /// Silent, though it re-queried on a regular rhythm before: likely a stale cache.
    Overdue,
    /// Its last answer was O and is still within its TTL.
    Draining,
    /// Its last answer was O, the TTL has passed, and it has not asked since.
    Silent,
    /// Asked after F and got N (or holds N within its TTL).
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
    /// Up to `limit` resolvers of each interesting class, worst first.
    pub resolvers: Vec<(ResolverClass, Entry)>,
}

/// The class of `entry` against `flip` at `now_ms`; `None` for keys that only ever asked for
/// a color name (they have no cached service answer to judge).
pub fn classify(entry: &Entry, flip: &Flip, now_ms: u64) -> Option<ResolverClass> {
    if flip.flips > FlipCount(0) && entry.straggle_flips == flip.flips && entry.straggle_count > 0 {
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
    (entry.samples >= MIN_SAMPLES && entry.answer_ttl > 0)
        .then(|| f64::from(entry.interval_ms) / (f64::from(entry.answer_ttl) * 1000.0))
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
pub fn counts(table: &Table, service: u16, now_ms: u64) -> ClassCounts {
    let flip = table.track_of(service).map(|t| t.flip).unwrap_or_default();
    let mut counts = ClassCounts::default();
    for entry in table.entries().filter(|e| e.key.service == service) {
        if let Some(class) = classify(entry, &flip, now_ms) {
            counts.add(class);
        }
    }
    counts
}

/// The full report for `service`: counts, the drain deadline, and up to `limit` resolvers of
/// each interesting class (stragglers, overdue, draining), worst first.
pub fn report(table: &Table, service: u16, now_ms: u64, mono_ms: u64, limit: usize) -> Report {
    let fresh = ServiceTrack::default();
    let track = table.track_of(service).unwrap_or(&fresh);
    let flip = track.flip;
    let mut counts = ClassCounts::default();
    let mut interesting: Vec<(ResolverClass, u64, &Entry)> = Vec::new();
    for entry in table.entries().filter(|e| e.key.service == service) {
        let Some(class) = classify(entry, &flip, now_ms) else {
            continue;
        };
        counts.add(class);
        // Worst first: stragglers by queries, overdue by silence, draining by expiry.
        let rank = match class {
            ResolverClass::Straggler => u64::from(entry.straggle_count),
            ResolverClass::Overdue => now_ms.saturating_sub(entry.answer_at_ms),
            ResolverClass::Draining => entry.expires_ms(),
            _ => continue,
        };
        interesting.push((class, rank, entry));
    }
    interesting.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut resolvers = Vec::new();
    for class in [
        ResolverClass::Straggler,
        ResolverClass::Overdue,
        ResolverClass::Draining,
    ] {
        resolvers.extend(
            interesting
                .iter()
                .filter(|(c, _, _)| *c == class)
                .take(limit)
                .map(|(c, _, e)| (*c, **e)),
        );
    }
    let old = flip.from;
    let drained_at_ms = old.map(|o| drained_at(track, o));
    Report {
        flip: (flip.flips > FlipCount(0)).then_some(flip),
        drained_at_ms,
        drained: old.is_none() || mono_ms >= track.old_expires_mono,
        complete: true,
        ledger_started_ms: 0,
        counts,
        straggler_queries: old.map_or(0, |o| track.straggler_queries[o.index()]),
        resolvers,
    }
}
