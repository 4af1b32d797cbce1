//! Building a snapshot: the catalog's static records and each service's live color, TTL and
//! serial, rendered into the answers of every name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, RecordType};

use super::content::{History, service_rrsets};
use super::render::{Section, Tail, negative_soa};
use super::{Generation, Hit, Node, Rendered, ServiceView, Snapshot, ZoneView, wire};
use crate::catalog::Catalog;
use crate::observed::Observed;
use crate::state::ServiceState;

/// How deep a CNAME chain inside our own zones is followed before the answer stops.
const MAX_CNAME_CHAIN: usize = 8;

const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// The live facts a snapshot is built from, besides the catalog.
pub struct Serving {
    pub generation: Generation,
    /// SOA serial of each catalog zone, in catalog order.
    pub serials: Vec<u32>,
    /// One per catalog service, in catalog order.
    pub services: Vec<ServingService>,
    /// The IXFR history of each catalog zone, in catalog order (empty when not given).
    pub histories: Vec<Arc<History>>,
}

pub struct ServingService {
    /// Stable for the life of the process (see [`crate::switch`]).
    pub id: u16,
    /// Live color, flips and phase: in steady phase the TTL is the normal one, which the
    /// drain deadline must outlast.
    pub state: ServiceState,
    pub observed: Arc<Observed>,
}

/// All data at one name, before rendering.
struct ModelNode {
    name: Name,
    zone: usize,
    rrsets: BTreeMap<u16, (u32, Vec<RData>)>,
    hit: Option<Hit>,
    /// TTL of the SOA in negative answers at this name (RFC 2308 section 5).
    negative_ttl: u32,
}

struct Model<'a> {
    catalog: &'a Catalog,
    serials: &'a [u32],
    nodes: HashMap<Vec<u8>, ModelNode>,
    apexes: HashMap<Vec<u8>, usize>,
}

impl Snapshot {
    /// Renders every answer of `catalog` as `serving` says.
    pub fn build(catalog: &Arc<Catalog>, serving: &Serving) -> Snapshot {
        let model = Model::new(catalog, serving);
        let mut names = HashMap::default();
        let mut nodes = Vec::with_capacity(model.nodes.len());
        for (key, node) in &model.nodes {
            names.insert(key.clone().into_boxed_slice(), nodes.len() as u32);
            nodes.push(model.render_node(key, node));
        }
        let zones = catalog
            .zones
            .iter()
            .zip(&serving.serials)
            .enumerate()
            .map(|(index, (zone, &serial))| ZoneView {
                origin: zone.origin.clone(),
                serial,
                apex_len: wire(&zone.origin).len(),
                negative_soa: negative_soa(&soa_rdata(zone, serial), negative_ttl(zone)),
                history: serving.histories.get(index).cloned().unwrap_or_default(),
            })
            .collect();
        let services = catalog
            .config
            .services
            .iter()
            .zip(&serving.services)
            .map(|(config, s)| ServiceView {
                name: config.name.clone(),
                ttl: s.state.phase.ttl(config.ttl, config.cutover_ttl),
                state: s.state.clone(),
                id: s.id,
                answer: config.answer,
                observed: s.observed.clone(),
            })
            .collect();
        let apexes = model
            .apexes
            .iter()
            .map(|(k, &v)| (k.clone().into_boxed_slice(), v as u16))
            .collect();
        Snapshot {
            catalog: catalog.clone(),
            generation: serving.generation,
            names,
            nodes,
            apexes,
            zones,
            services,
        }
    }
}

fn negative_ttl(zone: &crate::zone::Zone) -> u32 {
    zone.soa_ttl.min(zone.soa.minimum)
}

fn soa_rdata(zone: &crate::zone::Zone, serial: u32) -> RData {
    let mut soa = zone.soa.clone();
    soa.serial = serial;
    RData::SOA(soa)
}

impl<'a> Model<'a> {
    fn new(catalog: &'a Catalog, serving: &'a Serving) -> Model<'a> {
        let mut model = Model {
            catalog,
            serials: &serving.serials,
            nodes: HashMap::new(),
            apexes: HashMap::new(),
        };
        for (index, zone) in catalog.zones.iter().enumerate() {
            model.apexes.insert(wire(&zone.origin), index);
            let apex = model.node(&zone.origin, index, negative_ttl(zone));
            apex.rrsets.insert(
                RecordType::SOA.into(),
                (zone.soa_ttl, vec![soa_rdata(zone, serving.serials[index])]),
            );
            for record in &zone.records {
                let node = model.node(&record.name, index, negative_ttl(zone));
                let rrset = node
                    .rrsets
                    .entry(record.record_type().into())
                    .or_insert((record.ttl, Vec::new()));
                rrset.1.push(record.rdata.clone());
            }
        }
        for (index, (config, live)) in catalog
            .config
            .services
            .iter()
            .zip(&serving.services)
            .enumerate()
        {
            let zone_index = catalog.zone_index(config);
            let ttl = live.state.phase.ttl(config.ttl, config.cutover_ttl);
            let negative = negative_ttl(&catalog.zones[zone_index]).min(ttl);
            for (name, color, kind, rdatas) in service_rrsets(config, live.state.live) {
                let hit = Hit {
                    service: index as u16,
                    color,
                    name: kind,
                    ttl,
                    long: live.state.phase.is_long(),
                };
                let node = model.node(&name, zone_index, negative);
                // The service name may exist already as the parent of `blue.SERVICE`, with
                // the zone's negative TTL: its NODATA answers too carry at most the
                // service's TTL, or a cache would hold "no AAAA" past a flip that adds one.
                // A CNAME and the addresses that follow it carry the same TTL, so no cache
                // keeps the addresses longer than the name that led to them.
                node.negative_ttl = negative;
                node.hit = Some(hit);
                for rdata in rdatas {
                    node.rrsets
                        .entry(rdata.record_type().into())
                        .or_insert((ttl, Vec::new()))
                        .1
                        .push(rdata);
                }
            }
        }
        model
    }

    /// The node at `name`, created with its empty non-terminal ancestors up to the apex.
    fn node(&mut self, name: &Name, zone: usize, name_negative_ttl: u32) -> &mut ModelNode {
        let origin = &self.catalog.zones[zone].origin;
        // Empty non-terminals answer NODATA with the zone's negative TTL.
        let zone_negative_ttl = negative_ttl(&self.catalog.zones[zone]);
        let mut ancestor = name.base_name();
        while origin.zone_of(&ancestor) && ancestor != *origin {
            self.nodes
                .entry(wire(&ancestor))
                .or_insert_with(|| ModelNode {
                    name: ancestor.clone(),
                    zone,
                    rrsets: BTreeMap::new(),
                    hit: None,
                    negative_ttl: zone_negative_ttl,
                });
            ancestor = ancestor.base_name();
        }
        self.nodes.entry(wire(name)).or_insert_with(|| ModelNode {
            name: name.clone(),
            zone,
            rrsets: BTreeMap::new(),
            hit: None,
            negative_ttl: name_negative_ttl,
        })
    }

    fn render_node(&self, key: &[u8], node: &ModelNode) -> Node {
        let mut types: Vec<u16> = node.rrsets.keys().copied().collect();
        types.push(RecordType::ANY.into());
        // A CNAME answers for every type, so render each type found along its chain.
        let mut target = self.cname_target(node);
        let mut seen = 0;
        while let Some(next) = target.filter(|_| seen < MAX_CNAME_CHAIN) {
            types.extend(next.rrsets.keys().copied());
            target = self.cname_target(next);
            seen += 1;
        }
        types.sort_unstable();
        types.dedup();
        let answers = types
            .iter()
            .map(|&t| (t, self.render(key, node, Some(t))))
            .collect();
        Node {
            answers,
            otherwise: self.render(key, node, None),
        }
    }

    fn cname_target(&self, node: &ModelNode) -> Option<&ModelNode> {
        let (_, rdatas) = node.rrsets.get(&RecordType::CNAME.into())?;
        let RData::CNAME(target) = &rdatas[0] else {
            return None;
        };
        self.nodes.get(&wire(&target.0))
    }

    /// The answer at `node` for `qtype`; `None` renders the answer for a type nothing has.
    fn render(&self, key: &[u8], node: &ModelNode, qtype: Option<u16>) -> Rendered {
        let mut tail = Tail::new(key);
        let mut current = node;
        let mut hit = node.hit;
        for _ in 0..=MAX_CNAME_CHAIN {
            hit = hit.or(current.hit);
            if let Some((rtype, (ttl, rdatas))) = self.direct(current, qtype) {
                for rdata in rdatas {
                    tail.record(Section::Answer, &current.name, *ttl, rdata);
                }
                self.glue(&mut tail, rtype, rdatas);
                return tail.finish(NOERROR, hit);
            }
            let Some((ttl, rdatas)) = current.rrsets.get(&RecordType::CNAME.into()) else {
                // NODATA: the name exists without this type.
                self.soa(&mut tail, current.zone, current.negative_ttl);
                return tail.finish(NOERROR, hit);
            };
            tail.record(Section::Answer, &current.name, *ttl, &rdatas[0]);
            let RData::CNAME(target) = &rdatas[0] else {
                unreachable!("a CNAME RRset holds CNAME data")
            };
            match self.nodes.get(&wire(&target.0)) {
                Some(next) => current = next,
                None => {
                    // Outside our zones the resolver follows the CNAME itself; inside, the
                    // target does not exist (RFC 6604: the RCODE describes the last name).
                    return match self.zone_of(&target.0) {
                        Some(zone) => {
                            self.soa(&mut tail, zone, negative_ttl(&self.catalog.zones[zone]));
                            tail.finish(NXDOMAIN, hit)
                        }
                        None => tail.finish(NOERROR, hit),
                    };
                }
            }
        }
        tail.finish(NOERROR, hit) // a loop or an over-long chain: stop where we are
    }

    /// The RRset answering `qtype` at `node` itself; for ANY one RRset, as RFC 8482 allows.
    fn direct<'n>(
        &self,
        node: &'n ModelNode,
        qtype: Option<u16>,
    ) -> Option<(u16, &'n (u32, Vec<RData>))> {
        let qtype = qtype?;
        if qtype == u16::from(RecordType::ANY) {
            let preferred = [RecordType::CNAME, RecordType::A, RecordType::AAAA].map(u16::from);
            let chosen = preferred
                .iter()
                .find(|t| node.rrsets.contains_key(t))
                .or_else(|| node.rrsets.keys().next())?;
            return node.rrsets.get(chosen).map(|r| (*chosen, r));
        }
        node.rrsets.get(&qtype).map(|r| (qtype, r))
    }

    /// Addresses of in-zone targets of NS, MX and SRV records, so resolvers need not ask.
    fn glue(&self, tail: &mut Tail, rtype: u16, rdatas: &[RData]) {
        if ![RecordType::NS, RecordType::MX, RecordType::SRV]
            .map(u16::from)
            .contains(&rtype)
        {
            return;
        }
        let mut done: Vec<&Name> = Vec::new();
        for rdata in rdatas {
            let target = match rdata {
                RData::NS(ns) => &ns.0,
                RData::MX(mx) => &mx.exchange,
                RData::SRV(srv) => &srv.target,
                _ => continue,
            };
            // Service names are left out: their answers belong to the service and its TTL.
            let Some(node) = self.nodes.get(&wire(target)).filter(|n| n.hit.is_none()) else {
                continue;
            };
            if done.contains(&target) {
                continue;
            }
            done.push(target);
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some((ttl, rdatas)) = node.rrsets.get(&rtype.into()) {
                    for rdata in rdatas {
                        tail.record(Section::Additional, &node.name, *ttl, rdata);
                    }
                }
            }
        }
    }

    fn soa(&self, tail: &mut Tail, zone: usize, ttl: u32) {
        let zone_data = &self.catalog.zones[zone];
        tail.record(
            Section::Authority,
            &zone_data.origin,
            ttl,
            &soa_rdata(zone_data, self.serials[zone]),
        );
    }

    /// The closest enclosing zone of `name`, if any.
    fn zone_of(&self, name: &Name) -> Option<usize> {
        let mut candidate = name.clone();
        loop {
            if let Some(&zone) = self.apexes.get(&wire(&candidate)) {
                return Some(zone);
            }
            if candidate.is_root() {
                return None;
            }
            candidate = candidate.base_name();
        }
    }
}
