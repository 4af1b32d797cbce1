//! Classes and reports: what the ledger says about the resolvers of one service, relative
//! to its latest flip.

use super::table::{Entry, Flip, ServiceTrack, Table};
use crate::admin::protocol::{
    ClassCounts, FlipView, LedgerView, ResolverClass, ResolverView, StragglerView, StragglersReport,
};

/// A silent resolver is overdue when it stays away this many times longer than it would if
/// it obeyed its TTL (or kept its own rhythm, when that was faster).
pub const OVERDUE_FACTOR: u64 = 3;
/// Intervals needed before a resolver's rhythm counts.
pub const MIN_SAMPLES: u16 = 3;

/// The class of `entry` against `flip` at `now_ms`; `None` for keys that only ever asked for
/// a color name (they have no cached service answer to judge).
pub fn classify(entry: &Entry, flip: &Flip, now_ms: u64) -> Option<ResolverClass> {
    if flip.generation > 0
        && entry.straggle_generation == flip.generation as u32
        && entry.straggle_count > 0
    {
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

fn count(counts: &mut ClassCounts, class: ResolverClass) {
    let slot = match class {
        ResolverClass::Converged => &mut counts.converged,
        ResolverClass::Draining => &mut counts.draining,
        ResolverClass::Silent => &mut counts.silent,
        ResolverClass::Overdue => &mut counts.overdue,
        ResolverClass::Straggler => &mut counts.straggler,
    };
    *slot += 1;
}

/// Counts of every class for `service`.
pub fn counts(table: &Table, service: u16, now_ms: u64) -> ClassCounts {
    let flip = table.track_of(service).map(|t| t.flip).unwrap_or_default();
    let mut counts = ClassCounts::default();
    for entry in table.entries().filter(|e| e.key.service == service) {
        if let Some(class) = classify(entry, &flip, now_ms) {
            count(&mut counts, class);
        }
    }
    counts
}

/// The full report for `service`: counts, the drain deadline, and up to `limit` resolvers of
/// each interesting class (stragglers, overdue, draining), worst first.
pub fn report(
    table: &Table,
    service: u16,
    name: &str,
    now_ms: u64,
    limit: usize,
    ledger: LedgerView,
) -> StragglersReport {
    let fresh = ServiceTrack::default();
    let track = table.track_of(service).unwrap_or(&fresh);
    let flip = track.flip;
    let mut counts = ClassCounts::default();
    let mut interesting: Vec<(ResolverClass, u64, ResolverView)> = Vec::new();
    for entry in table.entries().filter(|e| e.key.service == service) {
        let Some(class) = classify(entry, &flip, now_ms) else {
            continue;
        };
        count(&mut counts, class);
        // Worst first: stragglers by queries, overdue by silence, draining by expiry.
        let rank = match class {
            ResolverClass::Straggler => u64::from(entry.straggle_count),
            ResolverClass::Overdue => now_ms.saturating_sub(entry.answer_at_ms),
            ResolverClass::Draining => entry.expires_ms(),
            _ => continue,
        };
        interesting.push((class, rank, view(entry, class)));
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
                .map(|(_, _, v)| v.clone()),
        );
    }
    let old = flip.from;
    let drained_at_ms = old.map(|o| track.expiry_ms[o.index()].max(flip.at_ms));
    StragglersReport {
        service: name.to_string(),
        flip: (flip.generation > 0).then(|| FlipView {
            generation: flip.generation,
            from: flip.from.unwrap_or(flip.to.other()),
            to: flip.to,
            at_ms: flip.at_ms,
        }),
        drained_at_ms,
        drained: drained_at_ms.is_none_or(|d| now_ms >= d),
        counts,
        straggler_queries: old.map_or(0, |o| track.straggler_queries[o.index()]),
        resolvers,
        ledger,
    }
}

fn view(entry: &Entry, class: ResolverClass) -> ResolverView {
    ResolverView {
        resolver: entry.key.resolver(),
        subnet: entry.key.subnet(),
        class,
        color: entry.answer_color,
        generation: u64::from(entry.answer_generation),
        answered_at_ms: entry.answer_at_ms,
        ttl: entry.answer_ttl,
        expires_at_ms: entry.expires_ms(),
        queries: entry.service_queries,
        interval_ms: (entry.samples >= MIN_SAMPLES).then_some(entry.interval_ms),
        interval_ratio: interval_ratio(entry),
        straggler: (class == ResolverClass::Straggler).then_some(StragglerView {
            count: entry.straggle_count,
            first_ms: entry.straggle_first_ms,
            last_ms: entry.straggle_last_ms,
            late_ms: entry.straggle_late_ms,
        }),
    }
}
