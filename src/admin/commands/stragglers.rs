//! `stragglers`: the ledger's report on one service, as a reply.

use super::{Context, unknown_service};
use crate::clock::format_utc;
use crate::protocol::{
    self, Error, ErrorKind, FlipRecord, FlipView, LedgerView, ResolverView, StragglerView,
    StragglersReport, StreamView, TimelinePoint,
};
use crate::stragglers::{self as ledger, Entry, Listing, Report, ResolverClass, report};

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
    let (streams, incomplete) = fleet_coverage(context, service, &report);
    Ok(StragglersReport {
        service: service.to_string(),
        flip: report.flip.map(|f| FlipView {
            flips: f.flips.into(),
            from: f.from.unwrap_or(f.to.other()),
            to: f.to,
            at_ms: report.wall(f.at_ms),
        }),
        drained_at_ms: report.drained_at_ms.map(|at| report.wall(at)),
        drained: report.drained,
        complete: incomplete.is_empty(),
        incomplete,
        streams,
        ledger_started_ms: report.ledger_started_ms,
        counts: counts(&report.counts),
        held_at_flip: report.held_at_flip,
        straggler_queries: report.straggler_queries,
        resolvers: report
            .resolvers
            .iter()
            .map(|(class, entry)| resolver(&report, ledger, *class, entry))
            .collect(),
        left_out: report.left_out,
        classes: classes.into_iter().map(class).collect(),
        last_straggler_converged_ms: (report.last_late_converged_ms > 0)
            .then(|| report.wall(report.last_late_converged_ms)),
        timeline: report
            .timeline
            .iter()
            .map(|(at_ms, c, old)| TimelinePoint {
                at_ms: report.wall(*at_ms),
                counts: counts(c),
                old_color_answers: old - report.timeline.first().map_or(0, |p| p.2),
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

/// What the resolver did around the report's flip: its record, or, when it has not asked
/// since, what it held then.
fn record(report: &Report, entry: &Entry) -> Option<FlipRecord> {
    let flip = report.flip.as_ref()?;
    let at = |ms: u64| (ms > 0).then(|| report.wall(ms));
    if entry.record_flips == flip.flips {
        return Some(FlipRecord {
            held_old: entry.held_old,
            old_expired_at_ms: at(entry.before_expires_ms),
            late_from_ms: entry.late_from_ms(flip).map(|ms| report.wall(ms)),
            converged_at_ms: at(entry.converged_at_ms),
            late_by_ms: entry.late_by_ms(flip),
        });
    }
    report::held_at_flip(entry, flip).then(|| FlipRecord {
        held_old: true,
        old_expired_at_ms: at(entry.expires_ms()),
        late_from_ms: Some(report.wall(entry.expires_ms().max(flip.at_ms))),
        converged_at_ms: None,
        late_by_ms: 0,
    })
}

fn resolver(
    report: &Report,
    ledger: &ledger::Ledger,
    resolver_class: ResolverClass,
    entry: &Entry,
) -> ResolverView {
    let wall = |ms| report.wall(ms);
    ResolverView {
        resolver: entry.key.resolver(),
        subnet: entry.key.subnet().map(|s| s.display()),
        class: class(resolver_class),
        color: entry.answer_color,
        flips: entry.answer_flips.into(),
        answered_at_ms: wall(entry.answer_at_ms),
        ttl: entry.answer_ttl,
        expires_at_ms: wall(entry.expires_ms()),
        queries: entry.service_queries,
        interval_ms: report::interval_ms(entry),
        interval_ratio: report::interval_ratio(entry),
        straggler: (resolver_class == ResolverClass::Straggler && entry.straggle_count > 0)
            .then_some(StragglerView {
                count: entry.straggle_count,
                first_ms: wall(entry.straggle_first_ms),
                last_ms: wall(entry.straggle_last_ms),
                late_ms: entry.straggle_late_ms,
            }),
        clamps: report::clamps(entry),
        record: record(report, entry),
        via: ledger.source_names(entry.via),
    }
}

/// The streams of the fleet, and every reason the report cannot have seen every resolver
/// that holds the old color: the ledger started too late, or a secondary whose resolvers
/// are invisible (it does not stream, or only since after the flip less a normal TTL).
fn fleet_coverage(
    context: &Context,
    service: &str,
    report: &Report,
) -> (Vec<StreamView>, Vec<String>) {
    let mut incomplete = Vec::new();
    let snapshot = context.switch.records().load();
    let ttl_ms = snapshot
        .service(service)
        .map_or(0, |v| u64::from(v.state.ttl) * 1000);
    let needed = report.flip.map(|f| f.at_ms.saturating_sub(ttl_ms));
    if let (Some(flip), false) = (&report.flip, report.complete) {
        incomplete.push(format!(
            "the ledger started at {}, less than a TTL before the flip at {}: resolvers that got {} before it are not counted",
            format_utc(report.ledger_started_ms),
            format_utc(report.wall(flip.at_ms)),
            flip.from.unwrap_or(flip.to.other())
        ));
    }
    let secondaries = &snapshot.catalog.config.secondaries;
    let streams = crate::dnstap::streams(context.dnstap.as_deref(), secondaries);
    for stream in streams.iter().filter(|s| s.secondary) {
        match stream.since {
            None if context.dnstap.is_none() => incomplete.push(format!(
                "secondary {} does not stream: [dnstap] is off, so the resolvers that ask it are not seen",
                stream.name
            )),
            None => incomplete.push(format!(
                "secondary {} does not stream (no dnstap frames with identity {:?} on an open stream): the resolvers that ask it are not seen",
                stream.name, stream.identity
            )),
            Some((since, mono)) if needed.is_some_and(|n| mono > n) => incomplete.push(format!(
                "secondary {} streams only since {}, less than a TTL before the flip: resolvers that asked it before are not counted",
                stream.name,
                format_utc(since)
            )),
            Some(_) => {}
        }
    }
    let views = streams
        .into_iter()
        .map(|s| StreamView {
            name: s.name,
            identity: s.identity,
            secondary: s.secondary,
            streaming: s.since.is_some(),
            since_ms: s.since.map(|(wall, _)| wall),
            frames: s.frames,
            observed: s.observed,
            dropped: s.dropped,
            skipped: s.skipped,
            errors: s.errors,
            last_frame_ms: (s.last_frame_ms > 0).then_some(s.last_frame_ms),
        })
        .collect();
    (views, incomplete)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ledger_names_this_server_as_the_protocol_says() {
        assert_eq!(crate::stragglers::THIS_SERVER, crate::protocol::VIA_PRIMARY);
    }
}
