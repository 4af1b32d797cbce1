//! Classes and reports: what the ledger says about the resolvers of one service, relative
//! to its latest flip. Domain values only; the admin layer turns them into replies. Times
//! are monotonic, as in the table; [`Report::wall`] turns one into wall-clock time.

pub use super::table::{CLAMP_RATIO, FLIP_GRACE_MS, MIN_SAMPLES};
use super::table::{Entry, Flip, ServiceTrack, Table};

/// A silent resolver is overdue when it stays away this many times longer than it would if
/// it obeyed its TTL (or kept its own rhythm, when that was faster).
pub const OVERDUE_FACTOR: u64 = 3;

/// The classes of a resolver after a flip from old color O to new color N at time F, in
/// the order reports list them (most interesting first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResolverClass {
    /// Kept O past the flip (or past its O answer's expiry, whichever is later) by more than
    /// [`super::table::late_tolerance_ms`] and more than its TTL and [`FLIP_GRACE_MS`] after
    /// the flip, or asked for O's color name after every legitimate reason had expired. It
    /// stays one for this flip after it converges.
    Straggler,
    /// Silent, though it re-queried on a regular rhythm before: likely a stale cache.
    Overdue,
    /// Its last answer was O and is still within its TTL.
    Draining,
    /// Its last answer was O, the TTL has passed, and it has not asked since.
    Silent,
    /// Asked after F and got N on time (or holds N within its TTL, or last got N before an
    /// earlier flip and has not asked since: it never held O).
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

/// A service's report: counts, the drain moment, and the resolvers worth naming. Times are
/// monotonic but for `ledger_started_ms`.
#[derive(Debug, Clone)]
pub struct Report {
    /// The latest flip the classes are relative to; `None` before the first.
    pub flip: Option<Flip>,
    /// Wall clock minus monotonic clock when the report was made.
    pub wall_offset_ms: i64,
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
    /// Resolvers that held the old color at the moment of the flip: an unexpired answer of
    /// it, or one their rhythm says they kept past its TTL.
    pub held_at_flip: u64,
    /// Straggling queries for the old color's name since the flip.
    pub straggler_queries: u64,
    /// The resolvers of the listed classes, most interesting first, up to the limit.
    pub resolvers: Vec<(ResolverClass, Entry)>,
    /// Resolvers not listed: of the classes not asked for, or beyond the limit.
    pub left_out: u64,
    /// When the last resolver that came back late converged (0: none).
    pub last_late_converged_ms: u64,
    /// Class counts over time since the flip: (Unix ms, counts).
    pub timeline: Vec<(u64, ClassCounts, u64)>,
}

/// The class of `entry` against `flip` at `now_ms`; `None` for keys that only ever asked for
/// a color name (they have no cached service answer to judge).
pub fn classify(entry: &Entry, flip: &Flip, now_ms: u64) -> Option<ResolverClass> {
    let this_flip = flip.flips > 0;
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
    if holds_new && entry.answer_flips == flip.flips {
        return Some(ResolverClass::Converged);
    }
    if now_ms < entry.expires_ms() {
        return Some(if holds_new {
            ResolverClass::Converged
        } else {
            ResolverClass::Draining
        });
    }
    if holds_new {
        // Its last answer was N, from before an earlier flip, and it has not asked since:
        // whatever its cache holds, it is not O.
        return Some(ResolverClass::Converged);
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
/// the ledger saw (answers given after the flip by a secondary still serving the old
/// color), whichever is later.
pub fn drained_at(track: &ServiceTrack, old: crate::color::Color) -> u64 {
    track.expiry_ms[old.index()]
        .max(track.flip.at_ms)
        .max(track.flip.old_expires_ms)
}

/// Whether every answer of the old color has expired at `mono_ms`: never while a
/// secondary has not been seen serving the flip (it still answers the old color).
pub fn drained(track: &ServiceTrack, mono_ms: u64) -> bool {
    match track.flip.from {
        None => true,
        Some(old) => !track.flip.secondaries_behind && mono_ms >= drained_at(track, old),
    }
}

/// Whether `entry` held the old color of `flip` at the moment of the flip: its record says
/// so, or (not seen since) its last answer before the flip was of the old color and either
/// unexpired then or kept past its TTL by its rhythm.
pub fn held_at_flip(entry: &Entry, flip: &Flip) -> bool {
    if entry.record_flips == flip.flips {
        return entry.held_old;
    }
    entry.answer_at_ms > 0
        && entry.answer_flips < flip.flips
        && Some(entry.answer_color) == flip.from
        && (entry.expires_ms() > flip.at_ms || entry.clamps())
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

/// The full report for `service` at `now_ms` (monotonic): counts, the drain deadline, the
/// resolvers `listing` asks for (most interesting first), and the timeline of the latest
/// flip. `wall_offset_ms` turns its times into wall-clock time.
pub fn report(
    table: &Table,
    service: u32,
    now_ms: u64,
    wall_offset_ms: i64,
    listing: &Listing,
) -> Report {
    let fresh = ServiceTrack::default();
    let track = table.track_of(service).unwrap_or(&fresh);
    let flip = track.flip;
    let mut counts = ClassCounts::default();
    let mut held = 0;
    let mut listed: Vec<(ResolverClass, u64, &Entry)> = Vec::new();
    for entry in table.entries().filter(|e| e.key.service == service) {
        if flip.flips > 0 && held_at_flip(entry, &flip) {
            held += 1;
        }
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
            ResolverClass::Straggler => {
                entry.late_by_ms(&flip) + u64::from(entry.straggle_count) * 1000
            }
            ResolverClass::Overdue | ResolverClass::Silent => {
                now_ms.saturating_sub(entry.answer_at_ms)
            }
            ResolverClass::Draining => entry.expires_ms(),
            ResolverClass::Converged => entry.converged_at_ms.max(entry.answer_at_ms),
        };
        listed.push((class, rank, entry));
    }
    listed.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let shown = listed.len().min(listing.limit);
    let total: u64 = ResolverClass::ALL.iter().map(|&c| counts.get(c)).sum();
    let resolvers = listed
        .iter()
        .take(listing.limit)
        .map(|(c, _, e)| (*c, **e))
        .collect();
    let old = flip.from;
    let timeline = if track.timeline.flips == flip.flips {
        track
            .timeline
            .points
            .iter()
            .map(|&(at, raw, old)| (at, ClassCounts::from_raw(raw), old))
            .collect()
    } else {
        Vec::new()
    };
    Report {
        flip: (flip.flips > 0).then_some(flip),
        wall_offset_ms,
        drained_at_ms: old.map(|o| drained_at(track, o)),
        drained: drained(track, now_ms),
        complete: true,
        ledger_started_ms: 0,
        counts,
        held_at_flip: held,
        straggler_queries: track.flip_straggler_queries,
        resolvers,
        left_out: total - shown as u64,
        last_late_converged_ms: track.last_late_converged_ms,
        timeline,
    }
}

impl Report {
    /// The wall-clock time of the monotonic moment `mono_ms` (0 stays 0: "never").
    pub fn wall(&self, mono_ms: u64) -> u64 {
        if mono_ms == 0 {
            return 0;
        }
        (mono_ms as i64 + self.wall_offset_ms).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    //! The report's edges, exactly: scripted resolvers on chosen sources and times (in
    //! monotonic milliseconds), answers recorded as the query path hands them over, each
    //! with the flip live when it was given.

    use std::net::IpAddr;

    use super::*;
    use crate::color::Color;
    use crate::observed::answers::{NameKind, Observation};

    const S: u64 = 1000;
    const TTL: u32 = 5;

    /// A service with its flips, and a table to record into.
    struct Service {
        table: Table,
        flips: Vec<Flip>,
    }

    impl Service {
        fn new() -> Service {
            Service {
                table: Table::new(100),
                flips: vec![Flip::default()],
            }
        }

        /// Flips at `at_ms` (the colors alternate, blue first live).
        fn flip(&mut self, at_ms: u64) {
            let latest = *self.flips.last().unwrap();
            let flip = Flip {
                flips: latest.flips + 1,
                at_ms,
                old_expires_ms: at_ms,
                from: Some(latest.to),
                to: latest.to.other(),
                cname: false,
                secondaries_behind: false,
            };
            self.flips.push(flip);
            self.table.track(0).take_flip(flip);
        }

        /// The flip live at `at_ms`.
        fn live_at(&self, at_ms: u64) -> Flip {
            *self
                .flips
                .iter()
                .rev()
                .find(|f| f.flips == 0 || f.at_ms <= at_ms)
                .unwrap()
        }

        /// Resolver 127.0.0.`host` asks for `name` at `at_ms` and gets what was live then.
        fn ask(&mut self, host: u8, at_ms: u64, name: NameKind) {
            let flip = self.live_at(at_ms);
            let color = match (name, host) {
                (NameKind::Service, _) => flip.to,
                (NameKind::Color, _) => flip.from.unwrap_or(flip.to),
            };
            self.answer(host, at_ms, name, color, flip);
        }

        fn answer(&mut self, host: u8, at_ms: u64, name: NameKind, color: Color, flip: Flip) {
            let observation = Observation {
                at_ms,
                resolver: IpAddr::from([127, 0, 0, host]),
                subnet: None,
                service: 0,
                color,
                name,
                ttl: TTL,
                flip_tag: flip.tag(),
                via: 0,
            };
            let flip = self.table.track(0).flip_of(flip.tag()).unwrap();
            self.table.record(&observation, &flip);
        }

        fn report(&self, now_ms: u64) -> Report {
            let listing = Listing {
                classes: Vec::new(),
                limit: 100,
            };
            report(&self.table, 0, now_ms, 0, &listing)
        }

        fn class_of(&self, host: u8, now_ms: u64) -> (ResolverClass, Entry) {
            let resolver = IpAddr::from([127, 0, 0, host]);
            *self
                .report(now_ms)
                .resolvers
                .iter()
                .find(|(_, e)| e.key.resolver() == resolver)
                .unwrap_or_else(|| panic!("127.0.0.{host} is not in the report"))
        }
    }

    /// A resolver that clamps the 5 s TTL to 60 s, asking at `phase` and every 60 s after.
    fn clamper(service: &mut Service, host: u8, phase: u64, until: u64) {
        let mut at = phase;
        while at <= until {
            service.ask(host, at, NameKind::Service);
            at += 60 * S;
        }
    }

    #[test]
    fn a_clamper_whose_clients_got_the_new_color_soon_after_the_flip_is_on_time() {
        let mut service = Service::new();
        let flip_at = 1_000 * S;
        // Its refreshes: ..., flip - 58.5 s, flip + 1.5 s.
        clamper(&mut service, 1, flip_at - 178_500, flip_at - 58_500);
        service.flip(flip_at);
        clamper(&mut service, 1, flip_at + 1_500, flip_at + 1_500);
        let (class, entry) = service.class_of(1, flip_at + 10 * S);
        let flip = service.table.track_of(0).unwrap().flip;
        assert_eq!(class, ResolverClass::Converged);
        assert!(entry.held_old, "it clamps: it held blue at the flip");
        assert_eq!(
            entry.late_by_ms(&flip),
            1_500,
            "late by the time its clients kept blue after the flip, not 55 s"
        );
        assert!(entry.clamps(), "the clamping is still shown, apart");
    }

    /// A resolver that last got blue before a flip to green, and did not ask while green
    /// was live, does not hold green when blue comes back: it is not silent on green.
    #[test]
    fn a_resolver_last_seen_with_the_new_color_before_an_earlier_flip_is_converged() {
        let mut service = Service::new();
        service.ask(4, S, NameKind::Service); // blue, long before
        service.flip(100 * S); // blue -> green: it does not ask
        service.flip(200 * S); // green -> blue
        let (class, entry) = service.class_of(4, 300 * S);
        assert_eq!(class, ResolverClass::Converged, "{entry:?}");
    }

    #[test]
    fn clamping_proven_after_the_flip_makes_a_late_return_late() {
        let mut service = Service::new();
        let flip_at = 1_000 * S;
        // One query before the flip, 10 s before it: no rhythm yet.
        service.ask(2, flip_at - 10 * S, NameKind::Service);
        service.flip(flip_at);
        // Back 50 s after the flip, then every 60 s: a 12x rhythm, proven only now.
        service.ask(2, flip_at + 50 * S, NameKind::Service);
        let (class, entry) = service.class_of(2, flip_at + 51 * S);
        assert_eq!(class, ResolverClass::Converged, "no rhythm yet: {entry:?}");
        service.ask(2, flip_at + 110 * S, NameKind::Service);
        service.ask(2, flip_at + 170 * S, NameKind::Service);
        let (class, entry) = service.class_of(2, flip_at + 171 * S);
        let flip = service.table.track_of(0).unwrap().flip;
        assert!(entry.clamps());
        assert_eq!(class, ResolverClass::Straggler, "{entry:?}");
        assert!(entry.held_old);
        assert_eq!(
            entry.late_by_ms(&flip),
            50 * S,
            "kept blue 50 s past the flip"
        );
    }

    #[test]
    fn a_query_just_after_a_second_flip_is_judged_against_that_flip() {
        let mut service = Service::new();
        service.ask(3, S, NameKind::Service);
        service.flip(100 * S); // blue -> green
        service.ask(3, 106 * S, NameKind::Service);
        service.flip(200 * S); // green -> blue
        // 3 ms after blue went live again: the answer for `blue.app` is not a straggler's,
        // even if it reaches the ledger before the ledger learned of the second flip.
        let second = service.flips[2];
        service.table.track(0).flip = service.flips[1];
        service.table.track(0).previous = service.flips[0];
        assert_eq!(service.table.track(0).flip_of(second.tag()), None);
        service.table.track(0).take_flip(second);
        service.answer(3, 200 * S + 3, NameKind::Color, Color::Blue, second);
        let (class, entry) = service.class_of(3, 201 * S);
        assert_ne!(class, ResolverClass::Straggler, "{entry:?}");
        assert_eq!(service.report(201 * S).straggler_queries, 0);
    }

    #[test]
    fn straggling_queries_are_counted_per_flip() {
        let mut service = Service::new();
        service.ask(4, S, NameKind::Service);
        service.flip(100 * S);
        service.ask(4, 130 * S, NameKind::Color); // blue.app long after every TTL
        assert_eq!(service.report(131 * S).straggler_queries, 1);
        service.flip(200 * S);
        service.flip(300 * S);
        assert_eq!(
            service.report(301 * S).straggler_queries,
            0,
            "flip 3 has none of flip 1's"
        );
    }

    #[test]
    fn an_answer_from_before_the_flip_that_arrives_late_is_what_was_held() {
        let mut service = Service::new();
        service.ask(5, S, NameKind::Service);
        service.flip(100 * S);
        // At the flip it held an answer given 1 s before it, which reaches the ledger after
        // its first answer after the flip (another receive loop's batch).
        service.ask(5, 106 * S, NameKind::Service);
        let before = service.flips[0];
        service.answer(5, 99 * S, NameKind::Service, Color::Blue, before);
        let (_, entry) = service.class_of(5, 107 * S);
        assert!(entry.held_old, "{entry:?}");
        assert_eq!(entry.before_expires_ms, 104 * S);
        assert_eq!(
            entry.answer_at_ms,
            106 * S,
            "the latest answer stays the latest"
        );
    }

    #[test]
    fn held_at_the_flip_counts_the_moment_of_the_flip() {
        let mut service = Service::new();
        service.ask(6, 97 * S, NameKind::Service); // unexpired at the flip
        service.ask(7, 10 * S, NameKind::Service); // long expired, no rhythm
        service.flip(100 * S);
        service.ask(6, 102 * S, NameKind::Service);
        assert_eq!(service.report(103 * S).held_at_flip, 1);
    }

    #[test]
    fn left_out_counts_every_resolver_not_listed() {
        let mut service = Service::new();
        for host in 10..16 {
            service.ask(host, S, NameKind::Service);
        }
        service.flip(100 * S);
        let listing = Listing {
            classes: vec![ResolverClass::Straggler],
            limit: 20,
        };
        let report = report(&service.table, 0, 200 * S, 0, &listing);
        assert!(report.resolvers.is_empty());
        assert_eq!(report.left_out, 6, "six silent resolvers, none listed");
    }
}
