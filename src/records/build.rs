//! Building a snapshot: the catalog's static records and each service's live color, TTL and
//! serial, rendered into the answers of every name; and a snapshot after a change, which
//! renders only what the change touched.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, RecordType};

use super::content::{History, service_rrsets};
use super::render::{Relocatable, Section, Tail, uncompressed};
use super::{
    Base, Generation, Hit, Node, NodeRef, Rendered, ServiceView, Snapshot, SoaAt, ZoneView,
};
use crate::catalog::{Catalog, service_names};
use crate::color::Color;
use crate::observed::Observed;
use crate::state::{RuntimeAddresses, ServiceState};
use crate::wire::name::lower as wire;
use crate::zone::Zone;

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
    pub id: u32,
    /// Live color, flips and phase: in steady phase the TTL is the normal one, which the
    /// drain deadline must outlast.
    pub state: ServiceState,
    pub observed: Arc<Observed>,
}

/// A change to serve: new serials and histories, and the new state of some services (by
/// catalog index).
pub struct Change {
    pub generation: Generation,
    pub serials: Vec<u32>,
    pub histories: Vec<Arc<History>>,
    pub services: Vec<(usize, ServingService)>,
}

/// All data at one name, before rendering.
#[derive(Clone)]
struct ModelNode {
    name: Name,
    zone: usize,
    rrsets: BTreeMap<u16, (u32, Vec<RData>)>,
    hit: Option<Hit>,
    /// TTL of the SOA in negative answers at this name (RFC 2308 section 5).
    negative_ttl: u32,
    /// The delegation at or above this name (its lowercase wire form): the name is the
    /// child zone's, answered with a referral.
    cut: Option<Vec<u8>>,
}

/// The names of a catalog: static records and empty non-terminals with their data, service
/// names by index (their data comes from the service's state when rendered), zone apexes.
pub struct StaticModel {
    nodes: HashMap<Vec<u8>, ModelNode>,
    services: HashMap<Vec<u8>, (u32, u8)>,
    apexes: HashMap<Vec<u8>, usize>,
    /// Delegations (NS below an apex), lowercase wire form.
    cuts: HashSet<Vec<u8>>,
}

/// How one service is served at one moment: what renders its names.
#[derive(Clone, Copy)]
struct Served<'a> {
    live: Color,
    ttl: u32,
    long: bool,
    runtime: Option<&'a RuntimeAddresses>,
}

fn served<'a>(config: &crate::config::ServiceConfig, state: &'a ServiceState) -> Served<'a> {
    Served {
        live: state.live,
        ttl: state.phase.ttl(config.ttl, config.cutover_ttl),
        long: state.phase.is_long(),
        runtime: state.addresses.as_deref(),
    }
}

fn negative_ttl(zone: &Zone) -> u32 {
    zone.soa_ttl.min(zone.soa.minimum)
}

fn soa_rdata(zone: &Zone, serial: u32) -> RData {
    let mut soa = zone.soa.clone();
    soa.serial = serial;
    RData::SOA(soa)
}

fn zone_view(zone: &Zone, serial: u32, history: Arc<History>) -> ZoneView {
    let data = uncompressed(&soa_rdata(zone, serial));
    let mut soa_data = Vec::with_capacity(2 + data.len());
    soa_data.extend_from_slice(&(data.len() as u16).to_be_bytes());
    soa_data.extend_from_slice(&data);
    let mut soa_type_class = [0u8; 4];
    soa_type_class[..2].copy_from_slice(&u16::from(RecordType::SOA).to_be_bytes());
    soa_type_class[2..].copy_from_slice(&1u16.to_be_bytes());
    let apex = wire(&zone.origin);
    ZoneView {
        origin: zone.origin.clone(),
        serial,
        apex_len: apex.len(),
        apex: apex.into_boxed_slice(),
        soa_type_class,
        soa_data: soa_data.into_boxed_slice(),
        negative_ttl: negative_ttl(zone),
        history,
    }
}

impl Snapshot {
    /// Renders every answer of `catalog` as `serving` says.
    pub fn build(catalog: &Arc<Catalog>, serving: &Serving) -> Snapshot {
        let model = StaticModel::new(catalog);
        let states: Vec<Served> = catalog
            .config
            .services
            .iter()
            .zip(&serving.services)
            .map(|(config, s)| served(config, &s.state))
            .collect();
        let state = |index: usize| states[index];
        let renderer = Renderer::new(catalog, &model, &state, &serving.serials);
        // Static nodes: those whose answers do not reach into a service are final; the
        // others (a CNAME to a service), and the apexes (their SOA has the serial), are
        // rendered again with every change.
        let mut names = HashMap::default();
        let mut nodes = Vec::new();
        let mut dependent_keys = Vec::new();
        let mut dependents = Vec::new();
        for (key, node) in &model.nodes {
            renderer.touched.set(false);
            let rendered = renderer.render_node(key, node);
            let at = if renderer.touched.get() || model.apexes.contains_key(key) {
                dependent_keys.push(key.clone());
                dependents.push(rendered);
                NodeRef::Dependent(dependents.len() as u32 - 1)
            } else {
                nodes.push(rendered);
                NodeRef::Static(nodes.len() as u32 - 1)
            };
            names.insert(key.clone().into_boxed_slice(), at);
        }
        for (key, &(service, which)) in &model.services {
            names.insert(
                key.clone().into_boxed_slice(),
                NodeRef::Service(service, which),
            );
        }
        let services = catalog
            .config
            .services
            .iter()
            .zip(&serving.services)
            .enumerate()
            .map(|(index, (config, s))| Arc::new(renderer.service(index, config, s)))
            .collect();
        let apexes = model
            .apexes
            .iter()
            .map(|(k, &v)| (k.clone().into_boxed_slice(), v as u16))
            .collect();
        let base = Base {
            names,
            nodes,
            apexes,
            cuts: renderer.referrals(),
            by_name: catalog
                .config
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i as u32))
                .collect(),
            dependents: dependent_keys,
            model,
        };
        Snapshot {
            catalog: catalog.clone(),
            generation: serving.generation,
            base: Arc::new(base),
            dependents: Arc::new(dependents),
            zones: zones(catalog, &serving.serials, &serving.histories),
            services,
        }
    }

    /// This snapshot with `change`: only the changed services (and the static names whose
    /// CNAME leads into a service) are rendered; the rest is shared.
    pub fn changed(&self, change: Change) -> Snapshot {
        let catalog = &self.catalog;
        let changed: Vec<(usize, Served)> = change
            .services
            .iter()
            .map(|(index, s)| (*index, served(&catalog.config.services[*index], &s.state)))
            .collect();
        // Only the changed services' states are worked out; the rest are read where a
        // rendering looks (the dependents look at a few).
        let state = |index: usize| {
            changed
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| {
                    served(&catalog.config.services[index], &self.services[index].state)
                })
        };
        let renderer = Renderer::new(catalog, &self.base.model, &state, &change.serials);
        let services = self.services.with(change.services.iter().map(|(index, s)| {
            let view = renderer.service(*index, &catalog.config.services[*index], s);
            (*index, Arc::new(view))
        }));
        let dependents = Arc::new(
            self.base
                .dependents
                .iter()
                .map(|key| renderer.render_node(key, &self.base.model.nodes[key]))
                .collect(),
        );
        Snapshot {
            catalog: catalog.clone(),
            generation: change.generation,
            base: self.base.clone(),
            dependents,
            zones: zones(catalog, &change.serials, &change.histories),
            services,
        }
    }
}

fn zones(catalog: &Catalog, serials: &[u32], histories: &[Arc<History>]) -> Vec<ZoneView> {
    catalog
        .zones
        .iter()
        .zip(serials)
        .enumerate()
        .map(|(index, (zone, &serial))| {
            zone_view(
                zone,
                serial,
                histories.get(index).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

impl StaticModel {
    fn new(catalog: &Catalog) -> StaticModel {
        let mut model = StaticModel {
            nodes: HashMap::new(),
            services: HashMap::new(),
            apexes: HashMap::new(),
            cuts: HashSet::new(),
        };
        for (index, config) in catalog.config.services.iter().enumerate() {
            for (which, name) in service_names(config).iter().enumerate() {
                model
                    .services
                    .insert(wire(name), (index as u32, which as u8));
            }
        }
        for (index, zone) in catalog.zones.iter().enumerate() {
            model.apexes.insert(wire(&zone.origin), index);
            let apex = model.node(catalog, &zone.origin, index);
            apex.rrsets.insert(
                RecordType::SOA.into(),
                (zone.soa_ttl, vec![soa_rdata(zone, zone.soa.serial)]),
            );
            for record in &zone.records {
                let node = model.node(catalog, &record.name, index);
                let rrset = node
                    .rrsets
                    .entry(record.record_type().into())
                    .or_insert((record.ttl, Vec::new()));
                rrset.1.push(record.rdata.clone());
            }
        }
        // The empty non-terminals above the service names.
        for config in &catalog.config.services {
            let zone = catalog.zone_index(config);
            model.ancestors(catalog, config.fqdn(), zone);
        }
        model.delegate(catalog);
        model
    }

    /// Marks every name at or below a delegation with it.
    fn delegate(&mut self, catalog: &Catalog) {
        for (index, zone) in catalog.zones.iter().enumerate() {
            let cuts: HashSet<Vec<u8>> = zone.delegations().into_iter().map(wire).collect();
            if cuts.is_empty() {
                continue;
            }
            for node in self.nodes.values_mut().filter(|n| n.zone == index) {
                node.cut = crate::zone::cut_above(&zone.origin, &node.name, |n| {
                    let key = wire(n);
                    cuts.contains(&key).then_some(key)
                })
                .map(|(_, key)| key);
            }
            self.cuts.extend(cuts);
        }
    }

    /// The node at `name`, created with its empty non-terminal ancestors up to the apex.
    fn node(&mut self, catalog: &Catalog, name: &Name, zone: usize) -> &mut ModelNode {
        self.ancestors(catalog, name, zone);
        let negative = negative_ttl(&catalog.zones[zone]);
        self.nodes.entry(wire(name)).or_insert_with(|| ModelNode {
            name: name.clone(),
            zone,
            rrsets: BTreeMap::new(),
            hit: None,
            negative_ttl: negative,
            cut: None,
        })
    }

    /// Creates the empty non-terminals between `name` and its zone's apex (not service
    /// names: those are the services').
    fn ancestors(&mut self, catalog: &Catalog, name: &Name, zone: usize) {
        let origin = &catalog.zones[zone].origin;
        let negative = negative_ttl(&catalog.zones[zone]);
        let mut ancestor = name.base_name();
        while origin.zone_of(&ancestor) && ancestor != *origin {
            let key = wire(&ancestor);
            if !self.services.contains_key(&key) {
                self.nodes.entry(key).or_insert_with(|| ModelNode {
                    name: ancestor.clone(),
                    zone,
                    rrsets: BTreeMap::new(),
                    hit: None,
                    negative_ttl: negative,
                    cut: None,
                });
            }
            ancestor = ancestor.base_name();
        }
    }
}

/// Renders nodes against a static model and the state of every service.
struct Renderer<'a> {
    catalog: &'a Catalog,
    model: &'a StaticModel,
    /// The state of the service at a catalog index.
    states: &'a dyn Fn(usize) -> Served<'a>,
    /// Each zone's serial, for the SOA at its apex.
    serials: &'a [u32],
    /// Set when a rendering looked at a service's name: its answer depends on the service.
    touched: Cell<bool>,
}

impl<'a> Renderer<'a> {
    fn new(
        catalog: &'a Catalog,
        model: &'a StaticModel,
        states: &'a dyn Fn(usize) -> Served<'a>,
        serials: &'a [u32],
    ) -> Renderer<'a> {
        Renderer {
            catalog,
            model,
            states,
            serials,
            touched: Cell::new(false),
        }
    }

    /// `node` with its SOA (at an apex) carrying the zone's serial now.
    fn with_serial<'n>(&self, node: Cow<'n, ModelNode>) -> Cow<'n, ModelNode> {
        let soa = u16::from(RecordType::SOA);
        if !node.rrsets.contains_key(&soa) {
            return node;
        }
        let mut node = node.into_owned();
        if let Some((_, rdatas)) = node.rrsets.get_mut(&soa)
            && let Some(RData::SOA(s)) = rdatas.first_mut()
        {
            s.serial = self.serials[node.zone];
        }
        Cow::Owned(node)
    }

    /// A service's view, with its three names rendered.
    fn service(
        &self,
        index: usize,
        config: &crate::config::ServiceConfig,
        s: &ServingService,
    ) -> ServiceView {
        let state = (self.states)(index);
        let names = service_names(config);
        let nodes = [0, 1, 2].map(|which| {
            let key = wire(&names[which]);
            let node = self.service_node(index as u32, which as u8);
            self.render_node(&key, &node)
        });
        ServiceView {
            id: s.id,
            name: config.name.clone(),
            state: s.state.clone(),
            ttl: state.ttl,
            answer: config.answer,
            observed: s.observed.clone(),
            nodes,
        }
    }

    /// The data at one of a service's names (0 blue, 1 green, 2 the service name).
    fn service_node(&self, index: u32, which: u8) -> ModelNode {
        let config = &self.catalog.config.services[index as usize];
        let state = (self.states)(index as usize);
        let zone = self.catalog.zone_index(config);
        let negative = negative_ttl(&self.catalog.zones[zone]).min(state.ttl);
        let (name, color, kind, rdatas) = service_rrsets(config, state.live, state.runtime)
            .into_iter()
            .nth(which as usize)
            .expect("three names");
        let mut rrsets: BTreeMap<u16, (u32, Vec<RData>)> = BTreeMap::new();
        for rdata in rdatas {
            // A CNAME and the addresses that follow it carry the same TTL, so no cache
            // keeps the addresses longer than the name that led to them.
            rrsets
                .entry(rdata.record_type().into())
                .or_insert((state.ttl, Vec::new()))
                .1
                .push(rdata);
        }
        ModelNode {
            name,
            zone,
            rrsets,
            hit: Some(Hit {
                index,
                color,
                name: kind,
                ttl: state.ttl,
                long: state.long,
            }),
            // The service name's NODATA answers carry at most the service's TTL too, or a
            // cache would hold "no AAAA" past a flip that adds one.
            negative_ttl: negative,
            cut: None,
        }
    }

    /// The data at `key`: a static node, or a service's name as its state says.
    fn get(&self, key: &[u8]) -> Option<Cow<'a, ModelNode>> {
        if let Some(&(index, which)) = self.model.services.get(key) {
            self.touched.set(true);
            return Some(Cow::Owned(self.service_node(index, which)));
        }
        self.model
            .nodes
            .get(key)
            .map(|n| self.with_serial(Cow::Borrowed(n)))
    }

    fn render_node(&self, key: &[u8], node: &ModelNode) -> Node {
        if let Some(cut) = &node.cut {
            return self.render_delegated(key, node, cut);
        }
        let node = &*self.with_serial(Cow::Borrowed(node));
        let mut types: Vec<u16> = node.rrsets.keys().copied().collect();
        types.push(RecordType::ANY.into());
        // A CNAME answers for every type, so render each type found along its chain.
        let mut target = self.cname_target(node);
        let mut seen = 0;
        while let Some(next) = target.filter(|_| seen < MAX_CNAME_CHAIN) {
            types.extend(next.rrsets.keys().copied());
            target = self.cname_target(&next);
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

    /// A name the child zone answers: a referral for every type, but DS at the delegation
    /// itself, which the parent answers (RFC 4035 section 3.1.4.1).
    fn render_delegated(&self, key: &[u8], node: &ModelNode, cut: &[u8]) -> Node {
        let mut tail = Tail::new(key);
        self.referral(&mut tail, cut);
        tail.not_authoritative();
        let otherwise = tail.finish(NOERROR, None);
        let answers = if key == cut {
            let ds = RecordType::DS.into();
            Box::new([(ds, self.render(key, node, Some(ds)))]) as Box<[_]>
        } else {
            Box::default()
        };
        Node { answers, otherwise }
    }

    /// The referral of every delegation, for the names below it not in the data.
    fn referrals(&self) -> HashMap<Box<[u8]>, Relocatable, super::NameHash> {
        let cuts = self.model.cuts.iter();
        cuts.map(|cut| {
            (
                cut.clone().into_boxed_slice(),
                self.relocatable_referral(cut),
            )
        })
        .collect()
    }

    /// The referral to the child zone at `cut`, for names below it not in the data.
    fn relocatable_referral(&self, cut: &[u8]) -> Relocatable {
        let mut tail = Tail::relocatable(cut);
        self.referral(&mut tail, cut);
        tail.not_authoritative();
        tail.finish_relocatable(NOERROR)
    }

    /// Writes the delegation at `cut` into `tail`: its NS RRset in the authority section,
    /// the addresses of its name servers that we hold (the glue) in the additional one
    /// (RFC 1034 section 4.3.2, step 3b). A referral alone clears AA; after a CNAME of
    /// ours it stays.
    fn referral(&self, tail: &mut Tail, cut: &[u8]) {
        let node = &self.model.nodes[cut];
        let ns = RecordType::NS.into();
        let (ttl, rdatas) = &node.rrsets[&ns];
        for rdata in rdatas {
            tail.record(Section::Authority, &node.name, *ttl, rdata);
        }
        // The addresses of name servers inside the child zone first: without them a
        // resolver cannot reach it, so they go whole or the answer is truncated (RFC 9471
        // section 3); those of servers elsewhere in our zones may be left out.
        let (inside, elsewhere): (Vec<&RData>, Vec<&RData>) = rdatas
            .iter()
            .partition(|r| matches!(r, RData::NS(ns) if node.name.zone_of(&ns.0)));
        self.glue(tail, ns, inside);
        tail.require_glue_so_far();
        self.glue(tail, ns, elsewhere);
    }

    /// The delegation covering `name`, which has no node of its own (not in the data).
    fn cut_covering(&self, name: &Name) -> Option<&'a [u8]> {
        if self.model.cuts.is_empty() {
            return None;
        }
        let mut ancestor = name.clone();
        while !ancestor.is_root() {
            if let Some(cut) = self.model.cuts.get(&wire(&ancestor)) {
                return Some(cut);
            }
            ancestor = ancestor.base_name();
        }
        None
    }

    fn cname_target(&self, node: &ModelNode) -> Option<Cow<'a, ModelNode>> {
        let (_, rdatas) = node.rrsets.get(&RecordType::CNAME.into())?;
        let RData::CNAME(target) = &rdatas[0] else {
            return None;
        };
        self.get(&wire(&target.0))
    }

    /// The answer at `node` for `qtype`; `None` renders the answer for a type nothing has.
    fn render(&self, key: &[u8], node: &ModelNode, qtype: Option<u16>) -> Rendered {
        let mut tail = Tail::new(key);
        let mut current = Cow::Borrowed(node);
        let mut hit = node.hit;
        for _ in 0..=MAX_CNAME_CHAIN {
            hit = hit.or(current.hit);
            if let Some((rtype, (ttl, rdatas))) = direct(&current, qtype) {
                for rdata in rdatas {
                    tail.record(Section::Answer, &current.name, *ttl, rdata);
                }
                self.glue(&mut tail, rtype, rdatas);
                return tail.finish(NOERROR, hit);
            }
            let Some((ttl, rdatas)) = current.rrsets.get(&RecordType::CNAME.into()) else {
                // NODATA: the name exists without this type.
                self.soa(&mut tail, key, current.zone, current.negative_ttl);
                return tail.finish(NOERROR, hit);
            };
            tail.record(Section::Answer, &current.name, *ttl, &rdatas[0]);
            let RData::CNAME(target) = &rdatas[0] else {
                unreachable!("a CNAME RRset holds CNAME data")
            };
            let target = target.0.clone();
            let next = self.get(&wire(&target));
            let delegated = match &next {
                Some(next) => next.cut.clone(),
                None => self.cut_covering(&target).map(<[u8]>::to_vec),
            };
            if let Some(cut) = delegated {
                // The chain leaves our authority: the CNAMEs so far (ours, so AA stays
                // set), and the referral to the zone that holds the rest (RFC 1034 section
                // 4.3.2, step 3b).
                self.referral(&mut tail, &cut);
                return tail.finish(NOERROR, hit);
            }
            match next {
                Some(next) => current = Cow::Owned(next.into_owned()),
                None => {
                    // Outside our zones the resolver follows the CNAME itself; inside, the
                    // target does not exist (RFC 6604: the RCODE describes the last name).
                    return match self.zone_of(&target) {
                        Some(zone) => {
                            let ttl = negative_ttl(&self.catalog.zones[zone]);
                            self.soa(&mut tail, key, zone, ttl);
                            tail.finish(NXDOMAIN, hit)
                        }
                        None => tail.finish(NOERROR, hit),
                    };
                }
            }
        }
        tail.finish(NOERROR, hit) // a loop or an over-long chain: stop where we are
    }

    /// Addresses of in-zone targets of NS, MX and SRV records, so resolvers need not ask.
    fn glue<'r>(&self, tail: &mut Tail, rtype: u16, rdatas: impl IntoIterator<Item = &'r RData>) {
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
            let Some(node) = self.model.nodes.get(&wire(target)) else {
                continue;
            };
            // Addresses below a delegation are the child's: only a referral carries them
            // (as glue), never an answer of ours.
            if node.cut.is_some() && rtype != u16::from(RecordType::NS) {
                continue;
            }
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

    /// The negative answer's SOA, written at query time: by pointer when the apex is a
    /// suffix of the question name `key`.
    fn soa(&self, tail: &mut Tail, key: &[u8], zone: usize, ttl: u32) {
        let apex = wire(&self.catalog.zones[zone].origin);
        let pointer = key
            .ends_with(&apex)
            .then(|| (12 + key.len() - apex.len()) as u16);
        tail.soa(SoaAt {
            zone: zone as u16,
            ttl,
            pointer,
        });
    }

    /// The closest enclosing zone of `name`, if any.
    fn zone_of(&self, name: &Name) -> Option<usize> {
        let mut candidate = name.clone();
        loop {
            if let Some(&zone) = self.model.apexes.get(&wire(&candidate)) {
                return Some(zone);
            }
            if candidate.is_root() {
                return None;
            }
            candidate = candidate.base_name();
        }
    }
}

/// The RRset answering `qtype` at `node` itself; for ANY one RRset, as RFC 8482 allows.
fn direct(node: &ModelNode, qtype: Option<u16>) -> Option<(u16, &(u32, Vec<RData>))> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Lookup;

    fn serving(catalog: &Catalog, live: Color, serial: u32) -> Serving {
        crate::fixture::serving(
            catalog,
            serial,
            |id, configured| {
                if id == 0 { live } else { configured }
            },
        )
    }

    /// One answer: the name, the query type, the records, the SOA written at query time.
    type Answer = (Vec<u8>, u16, Vec<u8>, Option<SoaAt>);

    /// Every answer of `snapshot` at every name, as bytes.
    fn answers(snapshot: &Snapshot) -> Vec<Answer> {
        let mut out = Vec::new();
        let mut names: Vec<&Box<[u8]>> = snapshot.base.names.keys().collect();
        names.sort();
        for name in names {
            let Lookup::Node(node) = snapshot.lookup(name) else {
                panic!("a known name")
            };
            for qtype in [1u16, 28, 5, 6, 2, 16, 15, 255, 99] {
                let r = node.answer(qtype);
                out.push((name.to_vec(), qtype, r.records.to_vec(), r.soa));
            }
        }
        out
    }

    #[test]
    fn a_snapshot_after_a_change_answers_exactly_like_one_built_whole() {
        let catalog = Arc::new(crate::fixture::catalog());
        let before = Snapshot::build(&catalog, &serving(&catalog, Color::Blue, 7));
        let mut after = serving(&catalog, Color::Green, 8);
        let flipped = after.services.remove(0);
        let changed = before.changed(Change {
            generation: Generation(2),
            serials: vec![8],
            histories: Vec::new(),
            services: vec![(0, flipped)],
        });
        let whole = Snapshot::build(&catalog, &serving(&catalog, Color::Green, 8));
        assert_eq!(answers(&changed), answers(&whole));
        assert_ne!(answers(&changed), answers(&before), "the flip shows");
        assert!(
            Arc::ptr_eq(&changed.base, &before.base),
            "the static part is shared"
        );
        assert!(
            Arc::ptr_eq(&changed.services[1], &before.services[1]),
            "an unchanged service is shared"
        );
        assert!(
            !changed.base.dependents.is_empty(),
            "www CNAME app, and the apex"
        );
    }
}
