//! `stragglers`: the ledger's report on one service, as a reply.

use super::{Context, unknown_service};
use crate::protocol::{
    self, Error, ErrorKind, FlipRecord, FlipView, LedgerView, ResolverView, StragglerView,
    StragglersReport, TimelinePoint,
};
use crate::stragglers::{self as ledger, Entry, Listing, ResolverClass, report};

/// Resolvers listed unless the request says otherwise.
const DEFAULT_LIMIT: usize = 20;
/// The classes listed unless the request names others: those worth a look.
const DEFAULT_CLASSES: [ResolverClass; 3] = [
    ResolverClass::Straggler,
    ResolverClass::Overdue,
    ResolverClass::Draining,
];

pub async fn run(
    context: &Context,
    service: &str,
    limit: Option<usize>,
    classes: &[protocol::ResolverClass],
    all: bool,
) -> Result<StragglersReport, Error> {
    if context.switch.catalog().config.service(service).is_none() {
        return Err(unknown_service(service));
    }
    let ledger = context.ledger.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::LedgerOff,
            "the straggler ledger is off ([ledger] enabled = false)",
        )
    })?;
    // Observations reach the ledger within HANDOVER_AFTER_MS of the answer: wait that long,
    // so the report includes the answers given just before it was asked for.
    tokio::time::sleep(std::time::Duration::from_millis(
        crate::observed::answers::HANDOVER_AFTER_MS + 5,
    ))
    .await;
    let classes: Vec<ResolverClass> = if all {
        ResolverClass::ALL.to_vec()
    } else if classes.is_empty() {
        DEFAULT_CLASSES.to_vec()
    } else {
        classes.iter().map(|&c| from_wire(c)).collect()
    };
    let listing = Listing {
        classes: classes.clone(),
        limit: limit.unwrap_or(DEFAULT_LIMIT),
    };
    let (report, figures) = ledger
        .report(service, &listing)
        .ok_or_else(|| unknown_service(service))?;
    Ok(StragglersReport {
        service: service.to_string(),
        flip: report.flip.map(|f| FlipView {
            flips: f.flips.0,
            from: f.from.unwrap_or(f.to.other()),
            to: f.to,
            at_ms: f.at_ms,
        }),
        drained_at_ms: report.drained_at_ms,
        drained: report.drained,
        complete: report.complete,
        ledger_started_ms: report.ledger_started_ms,
        counts: counts(&report.counts),
        straggler_queries: report.straggler_queries,
        resolvers: report
            .resolvers
            .iter()
            .map(|(class, entry)| resolver(*class, entry, report.flip.as_ref()))
            .collect(),
        left_out: report.left_out,
        classes: classes.into_iter().map(class).collect(),
        last_straggler_converged_ms: (report.last_late_converged_ms > 0)
            .then_some(report.last_late_converged_ms),
        timeline: report
            .timeline
            .iter()
            .map(|(at_ms, c)| TimelinePoint {
                at_ms: *at_ms,
                counts: counts(c),
            })
            .collect(),
        ledger: LedgerView {
            entries: figures.entries,
            capacity: figures.capacity,
            evicted: figures.evicted,
            dropped: figures.dropped,
        },
    })
}

/// Class counts as replies show them.
pub fn counts(counts: &ledger::ClassCounts) -> protocol::ClassCounts {
    protocol::ClassCounts {
        converged: counts.get(ResolverClass::Converged),
        draining: counts.get(ResolverClass::Draining),
        silent: counts.get(ResolverClass::Silent),
        overdue: counts.get(ResolverClass::Overdue),
        straggler: counts.get(ResolverClass::Straggler),
    }
}

fn class(class: ResolverClass) -> protocol::ResolverClass {
    match class {
        ResolverClass::Straggler => protocol::ResolverClass::Straggler,
        ResolverClass::Overdue => protocol::ResolverClass::Overdue,
        ResolverClass::Draining => protocol::ResolverClass::Draining,
        ResolverClass::Silent => protocol::ResolverClass::Silent,
        ResolverClass::Converged => protocol::ResolverClass::Converged,
    }
}

fn from_wire(class: protocol::ResolverClass) -> ResolverClass {
    match class {
        protocol::ResolverClass::Straggler => ResolverClass::Straggler,
        protocol::ResolverClass::Overdue => ResolverClass::Overdue,
        protocol::ResolverClass::Draining => ResolverClass::Draining,
        protocol::ResolverClass::Silent => ResolverClass::Silent,
        protocol::ResolverClass::Converged => ResolverClass::Converged,
    }
}

/// What the resolver did around `flip`: its record, or, when it has not asked since, what
/// it holds.
fn record(entry: &Entry, flip: Option<&ledger::Flip>) -> Option<FlipRecord> {
    let flip = flip?;
    if entry.record_flips == flip.flips {
        return Some(FlipRecord {
            held_old: entry.old_expires_ms > 0,
            old_expired_at_ms: (entry.old_expires_ms > 0).then_some(entry.old_expires_ms),
            converged_at_ms: (entry.converged_at_ms > 0).then_some(entry.converged_at_ms),
            late_by_ms: entry.late_by_ms(),
        });
    }
    let held_old = entry.answer_at_ms > 0 && Some(entry.answer_color) == flip.from;
    held_old.then(|| FlipRecord {
        held_old,
        old_expired_at_ms: Some(entry.expires_ms()),
        converged_at_ms: None,
        late_by_ms: 0,
    })
}

fn resolver(
    resolver_class: ResolverClass,
    entry: &Entry,
    flip: Option<&ledger::Flip>,
) -> ResolverView {
    ResolverView {
        resolver: entry.key.resolver(),
        subnet: entry.key.subnet().map(|s| s.display()),
        class: class(resolver_class),
        color: entry.answer_color,
        flips: entry.answer_flips.0,
        answered_at_ms: entry.answer_at_ms,
        ttl: entry.answer_ttl,
        expires_at_ms: entry.expires_ms(),
        queries: entry.service_queries,
        interval_ms: report::interval_ms(entry),
        interval_ratio: report::interval_ratio(entry),
        straggler: (resolver_class == ResolverClass::Straggler && entry.straggle_count > 0)
            .then_some(StragglerView {
                count: entry.straggle_count,
                first_ms: entry.straggle_first_ms,
                last_ms: entry.straggle_last_ms,
                late_ms: entry.straggle_late_ms,
            }),
        clamps: report::clamps(entry),
        record: record(entry, flip),
    }
}
