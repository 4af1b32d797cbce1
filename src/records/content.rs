//! A zone's content as a list of records: what a zone transfer sends, what an IXFR's
//! differences are made of, and the digest that says whether the content changed (so a
//! secondary is never left with other data under the same serial).
//!
//! A service's records come from [`service_rrsets`], the one place that says what a
//! service serves: the snapshot's answers are rendered from it too.

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData};

use super::NameHasher;
use super::render::uncompressed;
use crate::catalog::{Catalog, service_names};
use crate::color::Color;
use crate::config::{AnswerMode, ServiceConfig};
use crate::observed::answers::NameKind;
use crate::state::{RuntimeAddresses, ServiceState, addresses_of};
use crate::zone::Zone;

/// One record of a zone (class IN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRecord {
    pub name: Name,
    pub ttl: u32,
    pub rdata: RData,
}

/// The names of a service and what each holds with `live` live and the address sets
/// `runtime` set at run time: each color name its color's addresses; the service name the
/// live color's addresses, or a CNAME to the live color's name. With the color each name
/// answers and how it is named.
pub fn service_rrsets(
    config: &ServiceConfig,
    live: Color,
    runtime: Option<&RuntimeAddresses>,
) -> [(Name, Color, NameKind, Vec<RData>); 3] {
    let of = |color| addresses_of(config, runtime, color);
    let [blue, green, service] = service_names(config);
    let live_name = if live == Color::Blue {
        blue.clone()
    } else {
        green.clone()
    };
    let service_data = match config.answer {
        AnswerMode::Cname => vec![RData::CNAME(CNAME(live_name))],
        AnswerMode::A => addresses(of(live)),
    };
    [
        (
            blue,
            Color::Blue,
            NameKind::Color,
            addresses(of(Color::Blue)),
        ),
        (
            green,
            Color::Green,
            NameKind::Color,
            addresses(of(Color::Green)),
        ),
        (service, live, NameKind::Service, service_data),
    ]
}

fn addresses(list: &[IpAddr]) -> Vec<RData> {
    list.iter()
        .map(|address| match *address {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        })
        .collect()
}

/// A service's records as `served` says.
pub fn service_records(config: &ServiceConfig, served: ServedAs<'_>) -> Vec<ZoneRecord> {
    let ttl = served.ttl;
    service_rrsets(config, served.live, served.runtime)
        .into_iter()
        .flat_map(|(name, _, _, rdatas)| {
            rdatas.into_iter().map(move |rdata| ZoneRecord {
                name: name.clone(),
                ttl,
                rdata,
            })
        })
        .collect()
}

/// How a zone serves one service at one moment: what its records are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedAs<'a> {
    /// The service's index in the catalog's config.
    pub index: usize,
    pub live: Color,
    /// The TTL its answers carry (normal or cutover).
    pub ttl: u32,
    /// Its address sets set at run time.
    pub runtime: Option<&'a RuntimeAddresses>,
}

impl<'a> ServedAs<'a> {
    /// Service `index` (of config `config`) as `state` serves it.
    pub fn of(index: usize, config: &ServiceConfig, state: &'a ServiceState) -> ServedAs<'a> {
        ServedAs {
            index,
            live: state.live,
            ttl: state.phase.ttl(config.ttl, config.cutover_ttl),
            runtime: state.addresses.as_deref(),
        }
    }
}

/// The records of zone `zone` of `catalog` but the SOA, with `services` served as they say
/// (those of other zones are skipped).
pub fn zone_records<'a>(
    catalog: &'a Catalog,
    zone: usize,
    services: impl Iterator<Item = ServedAs<'a>> + 'a,
) -> impl Iterator<Item = ZoneRecord> + 'a {
    let origin = &catalog.zones[zone].origin;
    let statics = catalog.zones[zone].records.iter().map(|r| ZoneRecord {
        name: r.name.clone(),
        ttl: r.ttl,
        rdata: r.rdata.clone(),
    });
    let services = services
        .filter(move |s| catalog.config.services[s.index].zone == *origin)
        .flat_map(move |s| service_records(&catalog.config.services[s.index], s));
    statics.chain(services)
}

/// The SOA record of `zone` with `serial`.
pub fn soa_record(zone: &Zone, serial: u32) -> ZoneRecord {
    let mut soa = zone.soa.clone();
    soa.serial = serial;
    ZoneRecord {
        name: zone.origin.clone(),
        ttl: zone.soa_ttl,
        rdata: RData::SOA(soa),
    }
}

/// Roughly how many records zone `zone` of `catalog` holds (services counted with both
/// colors and the live one at its larger size): the bound of its IXFR history.
pub fn zone_size(catalog: &Catalog, zone: usize) -> usize {
    let sizes = catalog.zone_sizes.get_or_init(|| {
        let mut sizes: Vec<usize> = catalog.zones.iter().map(|z| z.records.len() + 1).collect();
        for service in &catalog.config.services {
            let records = service.blue.len()
                + service.green.len()
                + service.blue.len().max(service.green.len());
            sizes[catalog.zone_index(service)] += records;
        }
        sizes
    });
    sizes[zone]
}

/// The digest of zone `zone` of `catalog` with `services` served as they say: the SOA
/// without its serial, and every other record.
pub fn zone_digest<'a>(
    catalog: &'a Catalog,
    zone: usize,
    services: impl Iterator<Item = ServedAs<'a>> + 'a,
) -> Digest {
    let data = &catalog.zones[zone];
    soa_digest(&RData::SOA(data.soa.clone()), data.soa_ttl, &data.origin)
        .plus(Digest::of(zone_records(catalog, zone, services)))
}

/// The wire form of a record without compression, lowercase owner: what digests and
/// differences compare.
fn canonical(record: &ZoneRecord) -> Vec<u8> {
    let mut out = crate::wire::name::lower(&record.name);
    out.extend_from_slice(&u16::from(record.rdata.record_type()).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    out.extend_from_slice(&uncompressed(&record.rdata));
    out
}

/// A hash of one record that is the same in every process (persisted in digests).
fn record_hash(record: &ZoneRecord) -> u64 {
    let mut hasher = NameHasher::default();
    hasher.write(&canonical(record));
    // splitmix64's finalizer: spreads the bits, so sums of hashes rarely collide.
    let mut z = hasher.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a set of records holds, in 64 bits, whatever their order: the wrapping sum of each
/// record's hash, so one service's change updates it without the rest of the zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest(pub u64);

impl Digest {
    pub fn of<R: std::borrow::Borrow<ZoneRecord>>(records: impl IntoIterator<Item = R>) -> Digest {
        let mut digest = Digest::default();
        for record in records {
            digest.0 = digest.0.wrapping_add(record_hash(record.borrow()));
        }
        digest
    }

    /// The digest of both sets together.
    pub fn plus(self, other: Digest) -> Digest {
        Digest(self.0.wrapping_add(other.0))
    }

    /// This digest with `removed` taken out and `added` put in.
    pub fn replace(self, removed: Digest, added: Digest) -> Digest {
        Digest(self.0.wrapping_sub(removed.0).wrapping_add(added.0))
    }
}

/// The digest of a zone's SOA without its serial: its other fields are content too.
fn soa_digest(soa: &RData, ttl: u32, origin: &Name) -> Digest {
    let mut soa = soa.clone();
    if let RData::SOA(s) = &mut soa {
        s.serial = 0;
    }
    Digest::of([&ZoneRecord {
        name: origin.clone(),
        ttl,
        rdata: soa,
    }])
}

/// One change of a zone, from serial `from` to `to`, as IXFR sends it (RFC 1995).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The SOA before and after (each with its serial).
    pub from: RData,
    pub to: RData,
    pub deleted: Vec<ZoneRecord>,
    pub added: Vec<ZoneRecord>,
}

impl Diff {
    /// The change from `before` to `after`: what one has and the other has not.
    pub fn between(
        from: RData,
        to: RData,
        before: Vec<ZoneRecord>,
        after: Vec<ZoneRecord>,
    ) -> Diff {
        let old: HashSet<Vec<u8>> = before.iter().map(canonical).collect();
        let new: HashSet<Vec<u8>> = after.iter().map(canonical).collect();
        Diff {
            from,
            to,
            deleted: before
                .into_iter()
                .filter(|r| !new.contains(&canonical(r)))
                .collect(),
            added: after
                .into_iter()
                .filter(|r| !old.contains(&canonical(r)))
                .collect(),
        }
    }

    pub fn from_serial(&self) -> u32 {
        serial_of(&self.from)
    }

    pub fn to_serial(&self) -> u32 {
        serial_of(&self.to)
    }

    fn len(&self) -> usize {
        self.deleted.len() + self.added.len() + 2
    }
}

pub fn serial_of(soa: &RData) -> u32 {
    match soa {
        RData::SOA(soa) => soa.serial,
        _ => 0,
    }
}

/// The latest changes of a zone, oldest first, each from the serial the one before went
/// to: what IXFR answers from. Bounded by count and by records.
#[derive(Debug, Clone, Default)]
pub struct History {
    diffs: VecDeque<Arc<Diff>>,
    records: usize,
}

impl History {
    /// Adds `diff`, then drops the oldest changes beyond `max_diffs`, or beyond
    /// `max_records` records in all (when the whole zone is as small, AXFR is as cheap). A
    /// diff that does not start where the history ends starts it afresh.
    pub fn push(&mut self, diff: Diff, max_diffs: usize, max_records: usize) {
        if self
            .diffs
            .back()
            .is_some_and(|last| last.to_serial() != diff.from_serial())
        {
            self.clear();
        }
        self.records += diff.len();
        self.diffs.push_back(Arc::new(diff));
        while self.diffs.len() > max_diffs || (self.records > max_records && !self.diffs.is_empty())
        {
            let dropped = self.diffs.pop_front().expect("not empty");
            self.records -= dropped.len();
        }
    }

    pub fn clear(&mut self) {
        self.diffs.clear();
        self.records = 0;
    }

    /// The changes from serial `from` to the latest, if the history reaches back to it.
    pub fn since(&self, from: u32) -> Option<impl Iterator<Item = &Arc<Diff>>> {
        let start = self.diffs.iter().position(|d| d.from_serial() == from)?;
        Some(self.diffs.iter().skip(start))
    }

    pub fn len(&self) -> usize {
        self.diffs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soa(serial: u32) -> RData {
        let mut soa = crate::fixture::catalog().zones[0].soa.clone();
        soa.serial = serial;
        RData::SOA(soa)
    }

    fn app(live: Color, ttl: u32) -> Vec<ZoneRecord> {
        let catalog = crate::fixture::catalog();
        let served = ServedAs {
            index: 0,
            live,
            ttl,
            runtime: None,
        };
        service_records(&catalog.config.services[0], served)
    }

    #[test]
    fn a_flip_changes_only_the_service_name() {
        let diff = Diff::between(soa(1), soa(2), app(Color::Blue, 5), app(Color::Green, 5));
        assert!(!diff.deleted.is_empty() && !diff.added.is_empty());
        assert!(
            diff.deleted
                .iter()
                .chain(&diff.added)
                .all(|r| r.name.to_string() == "app.svc.example.com."),
            "{diff:?}"
        );
    }

    #[test]
    fn digests_do_not_depend_on_order_and_update_per_service() {
        let mut records = app(Color::Blue, 60);
        let forward = Digest::of(&records);
        records.reverse();
        assert_eq!(Digest::of(&records), forward);
        let flipped = forward.replace(
            Digest::of(app(Color::Blue, 60)),
            Digest::of(app(Color::Green, 60)),
        );
        assert_eq!(flipped, Digest::of(app(Color::Green, 60)));
        assert_ne!(flipped, forward);
        assert_ne!(Digest::of(app(Color::Blue, 5)), forward, "a TTL is content");
    }

    #[test]
    fn the_history_is_bounded_and_chained() {
        let mut history = History::default();
        for serial in 1..=5 {
            let diff = Diff::between(
                soa(serial),
                soa(serial + 1),
                app(Color::Blue, 5),
                app(Color::Green, 5),
            );
            history.push(diff, 3, 1000);
        }
        assert_eq!(history.len(), 3);
        assert!(history.since(2).is_none(), "dropped");
        assert_eq!(history.since(4).unwrap().count(), 2);
        // A gap (a restart, a jump of the file's serial) starts afresh.
        history.push(Diff::between(soa(9), soa(10), vec![], vec![]), 3, 1000);
        assert_eq!(history.len(), 1);
        // Never more records than allowed.
        let big = Diff::between(soa(10), soa(11), app(Color::Blue, 5), app(Color::Green, 60));
        history.push(big, 3, 3);
        assert!(history.is_empty());
    }
}
