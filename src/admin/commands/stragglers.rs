//! `stragglers`: the ledger's report on one service, as a reply.

use super::{Context, unknown_service};
use crate::protocol::{
    self, Error, ErrorKind, FlipView, LedgerView, ResolverView, StragglerView, StragglersReport,
};
use crate::stragglers::{self as ledger, Entry, ResolverClass, report};

/// Resolvers listed per class unless the request says otherwise.
const DEFAULT_LIMIT: usize = 10;

pub async fn run(
    context: &Context,
    service: &str,
    limit: Option<usize>,
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
        ledger::HANDOVER_AFTER_MS + 5,
    ))
    .await;
    let (report, figures) = ledger
        .report(service, limit.unwrap_or(DEFAULT_LIMIT))
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
            .map(|(class, entry)| resolver(*class, entry))
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

fn resolver(resolver_class: ResolverClass, entry: &Entry) -> ResolverView {
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
        straggler: (resolver_class == ResolverClass::Straggler).then_some(StragglerView {
            count: entry.straggle_count,
            first_ms: entry.straggle_first_ms,
            last_ms: entry.straggle_last_ms,
            late_ms: entry.straggle_late_ms,
        }),
    }
}
