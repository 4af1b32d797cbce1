//! The immutable snapshot a query is answered from, and the `ArcSwap` that holds it.
//!
//! A [`Snapshot`] holds every answer the server can give, already in wire format: for each
//! name and query type the answer, authority and additional records after the question,
//! with names compressed against the question. Answering is a hash lookup and a copy; the
//! SOA of a negative answer is written at query time, so a new serial changes no node. A
//! name below a delegation that is not in the data gets the delegation's referral, its
//! compression pointers moved behind the longer question. A
//! change (a flip, a TTL change) builds a new snapshot and swaps it in with one atomic
//! store, so a query sees either the old record set or the new one, never a mix. A new
//! snapshot shares everything the change did not touch: the static part ([`Base`]: the name
//! index, static records, empty non-terminals) is built once per catalog, each service's
//! nodes live behind their own `Arc`, and a flip renders only the flipped service (and the
//! few static names whose CNAME leads into it).
//!
//! This module knows DNS data, not sockets or requests: [`crate::dns`] parses requests and
//! writes responses around what it finds here.

mod build;
pub mod content;
mod render;
mod services;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use hickory_proto::rr::Name;

pub use build::{Change, Serving, ServingService};
pub use content::{Diff, Digest, History, ZoneRecord};
pub use render::Relocatable;
pub use render::uncompressed as render_rdata;
pub use services::Services;

use crate::catalog::Catalog;
use crate::color::Color;
use crate::config::AnswerMode;
use crate::observed::Observed;
use crate::observed::answers::NameKind;
use crate::state::ServiceState;

/// Holds the current snapshot. Readers never block; a publish is one atomic pointer swap.
pub struct Records {
    current: ArcSwap<Snapshot>,
    /// The generation of every publish, for those who act on changes (NOTIFY).
    published: tokio::sync::watch::Sender<u64>,
}

impl Records {
    pub fn new(snapshot: Snapshot) -> Records {
        let generation = snapshot.generation.0;
        Records {
            current: ArcSwap::from_pointee(snapshot),
            published: tokio::sync::watch::Sender::new(generation),
        }
    }

    /// Changes whenever a snapshot is published.
    pub fn published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The snapshot to answer one query from. Load once per query: two loads could straddle
    /// a flip.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot, held as long as the caller likes (reports, status).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `snapshot` the one every query received from now on is answered from.
    pub fn publish(&self, snapshot: Snapshot) {
        let generation = snapshot.generation.0;
        self.current.store(Arc::new(snapshot));
        self.published.send_replace(generation);
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Records(generation {})", self.load().generation.0)
    }
}

/// Which snapshot of this process: 1 at start, one more at every publish. Not persisted
/// (a service's persisted flip count is [`crate::state::FlipCount`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(pub u64);

impl Generation {
    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

/// Every answer of every configured zone and service at one moment.
pub struct Snapshot {
    /// What the snapshot was built from: zone transfers read the zones' content from it,
    /// and signed requests their keys.
    pub catalog: Arc<Catalog>,
    pub generation: Generation,
    /// The part no flip changes, shared by every snapshot of this catalog.
    base: Arc<Base>,
    /// Static nodes whose answers follow a CNAME into a service, rendered for this snapshot.
    dependents: Arc<Vec<Node>>,
    pub zones: Vec<ZoneView>,
    /// In catalog order; each with its own nodes.
    pub services: Services,
}

/// The part of a snapshot that depends on the catalog alone.
pub struct Base {
    /// Lowercase wire-format name -> its node.
    names: HashMap<Box<[u8]>, NodeRef, NameHash>,
    /// Static records and empty non-terminals.
    nodes: Vec<Node>,
    /// Lowercase wire-format zone apex -> index into `zones`.
    apexes: HashMap<Box<[u8]>, u16, NameHash>,
    /// Lowercase wire-format delegation -> its referral, for the names below it that are
    /// not in `names` (those have their own nodes).
    cuts: HashMap<Box<[u8]>, Relocatable, NameHash>,
    /// Service index by name.
    by_name: HashMap<String, u32>,
    /// The static names rendered again with every change, in [`NodeRef::Dependent`] order.
    dependents: Vec<Vec<u8>>,
    /// What renders service nodes and dependents again.
    model: build::StaticModel,
}

/// Where a name's answers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeRef {
    Static(u32),
    /// Index into [`Snapshot::dependents`].
    Dependent(u32),
    /// A service's name: 0 blue, 1 green, 2 the service name.
    Service(u32, u8),
}

/// What a zone contributes at query time besides its nodes.
pub struct ZoneView {
    pub origin: Name,
    pub serial: u32,
    /// Wire length of the origin: locates the apex inside any question name of the zone.
    apex_len: usize,
    /// The origin in lowercase wire format, for an SOA whose owner cannot be a pointer.
    apex: Box<[u8]>,
    /// The SOA record after its owner name, but for the TTL: type and class, then the
    /// RDATA length and data (serial included), uncompressed.
    soa_type_class: [u8; 4],
    soa_data: Box<[u8]>,
    /// The TTL of the SOA in NXDOMAIN answers (RFC 2308).
    negative_ttl: u32,
    /// The latest changes, up to `serial`, for IXFR.
    pub history: Arc<History>,
}

/// One service as this snapshot serves it.
pub struct ServiceView {
    /// Stable for the life of the process, unlike the position in the snapshot.
    pub id: u32,
    pub name: String,
    /// The persisted state this snapshot serves: live color, flips, phase.
    pub state: ServiceState,
    /// The TTL answers carry in this snapshot.
    pub ttl: u32,
    pub answer: AnswerMode,
    /// What the server has seen of the service, shared by every snapshot of it so a flip
    /// does not reset it.
    pub observed: Arc<Observed>,
    /// The answers at its blue, green and service names.
    nodes: [Node; 3],
}

impl ServiceView {
    pub fn live(&self) -> Color {
        self.state.live
    }
}

/// The answers at one name.
pub struct Node {
    /// By query type; few per node, so a scan beats a map.
    answers: Box<[(u16, Rendered)]>,
    /// For every other query type: NODATA, or the CNAME chain from this name.
    otherwise: Rendered,
}

impl Node {
    pub fn answer(&self, qtype: u16) -> &Rendered {
        self.answers
            .iter()
            .find(|(t, _)| *t == qtype)
            .map_or(&self.otherwise, |(_, r)| r)
    }
}

/// The sections after the question of one response, ready to copy.
pub struct Rendered {
    pub rcode: u8,
    /// AA: set on everything but a referral.
    pub authoritative: bool,
    /// Answer, authority and additional records, names compressed against a question that
    /// starts at offset 12 and has this node's name.
    pub records: Box<[u8]>,
    /// Record counts of the answer, authority and additional sections (the SOA below not
    /// included).
    pub counts: [u16; 3],
    /// A negative answer's SOA, written after `records` at query time with the zone's
    /// serial then (so a new serial re-renders nothing).
    pub soa: Option<SoaAt>,
    /// Where the additional section starts in `records`: it may be dropped to fit a small
    /// UDP payload without setting TC (RFC 2181 section 9), but for `required_glue`.
    pub additional_at: u32,
    /// The glue a referral must carry (RFC 9471 section 3: the addresses of name servers
    /// inside the delegated zone), first in the additional section: if it does not fit,
    /// the answer is truncated.
    pub required_glue: RequiredGlue,
    /// Set when the answer comes from a service, for stats and the answer ledger.
    pub hit: Option<Hit>,
}

/// The first records of an additional section that must not be dropped: their length in
/// octets and their count (both 0 for most answers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequiredGlue {
    pub len: u16,
    pub count: u16,
}

/// A service answer: which service, which color, through which name, with which TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The service's index into [`Snapshot::services`] (not its stable id).
    pub index: u32,
    pub color: Color,
    pub name: NameKind,
    pub ttl: u32,
    /// The answer carries the service's normal TTL: the query path notes when it last gave
    /// one, for the drain deadline.
    pub long: bool,
}

/// The SOA a negative answer ends with: which zone, with which TTL, and how its owner is
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoaAt {
    pub zone: u16,
    pub ttl: u32,
    /// Message offset of the apex inside the question name, or `None` when the apex is not
    /// a suffix of it (a CNAME into another zone): then it is written in full.
    pub pointer: Option<u16>,
}

/// Where a question name falls.
pub enum Lookup<'a> {
    /// The name exists (possibly as an empty non-terminal).
    Node(&'a Node),
    /// The name is inside the zone with this index but does not exist.
    NxDomain(&'a ZoneView),
    /// The name is below a delegation and not in our data: the delegation's referral,
    /// its compression pointers to be moved `shift` octets further.
    Referral {
        referral: &'a Relocatable,
        shift: u16,
    },
    /// The name is in none of our zones.
    NotOurs,
}

impl Snapshot {
    /// Finds `name`, given in lowercase wire format.
    pub fn lookup(&self, name: &[u8]) -> Lookup<'_> {
        if let Some(&node) = self.base.names.get(name) {
            return Lookup::Node(match node {
                NodeRef::Static(i) => &self.base.nodes[i as usize],
                NodeRef::Dependent(i) => &self.dependents[i as usize],
                NodeRef::Service(service, which) => {
                    &self.services[service as usize].nodes[which as usize]
                }
            });
        }
        // Walk the suffixes from the longest: the first delegation or apex found is the
        // closest enclosing one.
        let mut at = 0;
        while at < name.len() && name[at] != 0 {
            at += 1 + name[at] as usize;
            let Some(suffix) = name.get(at..) else { break };
            if !self.base.cuts.is_empty()
                && let Some(referral) = self.base.cuts.get(suffix)
            {
                return Lookup::Referral {
                    referral,
                    shift: at as u16,
                };
            }
            if let Some(&zone) = self.base.apexes.get(suffix) {
                return Lookup::NxDomain(&self.zones[zone as usize]);
            }
        }
        Lookup::NotOurs
    }

    pub fn service(&self, name: &str) -> Option<&ServiceView> {
        let index = *self.base.by_name.get(name)?;
        self.services.get(index as usize).map(|s| &**s)
    }

    /// The zone whose apex is `name` (lowercase wire format).
    pub fn zone_at(&self, name: &[u8]) -> Option<usize> {
        self.base.apexes.get(name).map(|&z| z as usize)
    }

    /// The SOA record of zone `zone` with the serial this snapshot serves.
    pub fn soa(&self, zone: usize) -> ZoneRecord {
        content::soa_record(&self.catalog.zones[zone], self.zones[zone].serial)
    }

    /// Every record of zone `zone` but the SOA, as this snapshot answers them.
    pub fn zone_records(&self, zone: usize) -> impl Iterator<Item = ZoneRecord> + '_ {
        content::zone_records(
            &self.catalog,
            zone,
            self.services
                .iter()
                .enumerate()
                .map(|(index, s)| content::ServedAs {
                    index,
                    live: s.live(),
                    ttl: s.ttl,
                    runtime: s.state.addresses.as_deref(),
                }),
        )
    }
}

impl ZoneView {
    /// Writes the SOA for an NXDOMAIN answer to a question name of `qname_len` wire bytes:
    /// the owner is a pointer to where the apex sits inside the question name.
    pub fn write_negative_soa(&self, qname_len: usize, out: &mut Vec<u8>) {
        let apex_at = 12 + qname_len - self.apex_len;
        self.write_soa(Some(apex_at as u16), self.negative_ttl, out);
    }

    /// Writes the SOA record with `ttl`, its owner a pointer to `pointer` or the apex in full.
    pub fn write_soa(&self, pointer: Option<u16>, ttl: u32, out: &mut Vec<u8>) {
        match pointer {
            Some(at) => out.extend_from_slice(&(0xC000 | at).to_be_bytes()),
            None => out.extend_from_slice(&self.apex),
        }
        out.extend_from_slice(&self.soa_type_class);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&self.soa_data);
    }

    /// Bytes [`ZoneView::write_soa`] writes.
    pub fn soa_len(&self, pointer: Option<u16>) -> usize {
        pointer.map_or(self.apex.len(), |_| 2) + 8 + self.soa_data.len()
    }
}

/// FxHash over name bytes. A fast non-cryptographic hash is safe here: the tables hold only
/// our own names, which a peer cannot add to; a query can only probe them.
#[derive(Default)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ byte as u64).wrapping_mul(K);
        }
    }
}

type NameHash = BuildHasherDefault<NameHasher>;
