//! Zone files: RFC 1035 master files turned into static records, with file:line problems.
//!
//! The `lexer` splits the file into entries (comments, quotes, parentheses), the
//! `reader` turns each into a record (`$ORIGIN`, `$TTL`, owner, TTL, class, type, and the
//! RDATA through hickory-proto), and `validate` checks the zone as a whole, so every
//! problem names its line. Pure: it reads one file and knows nothing of services or
//! sockets. Time and memory are linear in the file's size.

mod lexer;
mod reader;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::problem::{Problem, Problems};

/// One record of a zone file.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticRecord {
    /// Lowercase owner name.
    pub name: Name,
    pub ttl: u32,
    pub rdata: RData,
    /// Line where the record starts, for problems found later (collisions with services).
    pub line: usize,
}

impl StaticRecord {
    pub fn record_type(&self) -> RecordType {
        self.rdata.record_type()
    }
}

/// The static content of one zone, validated: one SOA and at least one NS at the apex, every
/// name inside the zone, no CNAME beside other data, uniform TTL per RRset, only NS and DS
/// at a delegation and only glue addresses below it.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, fully qualified.
    pub origin: Name,
    pub file: PathBuf,
    pub soa: SOA,
    pub soa_ttl: u32,
    /// Every record but the SOA, in file order, duplicates removed.
    pub records: Vec<StaticRecord>,
}

impl Zone {
    /// The names this zone delegates to child zones (NS below the apex), each once.
    pub fn delegations(&self) -> HashSet<&Name> {
        self.records
            .iter()
            .filter(|r| r.record_type() == RecordType::NS && r.name != self.origin)
            .map(|r| &r.name)
            .collect()
    }

    /// Reads and validates the zone file at `path` for `origin`.
    pub fn load(origin: &Name, path: &Path) -> Result<Zone, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem::in_file(
                path,
                format!("cannot read zone file: {e}"),
            )])
        })?;
        Zone::parse(origin, path, &text)
    }

    /// Validates `text` as the zone file `path` for `origin`.
    pub fn parse(origin: &Name, path: &Path, text: &str) -> Result<Zone, Problems> {
        let origin = origin.to_lowercase();
        let mut reader = reader::Reader::new(path, origin.clone());
        let mut records = Vec::new();
        for entry in lexer::entries(text) {
            match entry {
                Ok(entry) => {
                    if let Some(record) = reader.entry(&entry) {
                        records.push(record);
                    }
                }
                Err((line, message)) => reader.problems.push(Problem::at(path, line, message)),
            }
        }
        let mut problems = reader.problems;
        let complete = problems.is_empty();
        let zone = validate(&origin, path, records, complete, &mut problems);
        match zone {
            Some(zone) if problems.is_empty() => Ok(zone),
            _ => Err(Problems(problems)),
        }
    }
}

/// Checks the zone as a whole and builds it. Missing SOA and NS are only reported for a
/// `complete` zone: after a bad line they are more likely that line's fault.
fn validate(
    origin: &Name,
    path: &Path,
    records: Vec<StaticRecord>,
    complete: bool,
    problems: &mut Vec<Problem>,
) -> Option<Zone> {
    let mut soa: Option<(SOA, u32)> = None;
    let mut kept: Vec<StaticRecord> = Vec::new();
    // (owner, type) -> (TTL, line of the first record), and the RRsets' contents, so each
    // record is checked against what came before in constant time.
    let mut rrsets: HashMap<(Name, RecordType), (u32, usize)> = HashMap::new();
    let mut seen: HashSet<(Name, RData)> = HashSet::new();
    for record in records {
        let mut problem = |message: String| problems.push(Problem::at(path, record.line, message));
        if let Err(message) = placement(origin, &record) {
            problem(message);
            continue;
        }
        if let RData::SOA(s) = &record.rdata {
            match soa {
                Some(_) => problem("a second SOA record: a zone has exactly one".into()),
                None => soa = Some((s.clone(), record.ttl)),
            }
            continue;
        }
        let rtype = record.record_type();
        match rrsets.get(&(record.name.clone(), rtype)) {
            Some(&(ttl, first)) if ttl != record.ttl => {
                problem(format!(
                    "TTL {} differs from TTL {ttl} of the same {rtype} RRset at line {first}; RFC 2181 section 5.2 wants one TTL per RRset",
                    record.ttl
                ));
                continue;
            }
            Some(_) => {}
            None => {
                rrsets.insert((record.name.clone(), rtype), (record.ttl, record.line));
            }
        }
        if !seen.insert((record.name.clone(), record.rdata.clone())) {
            continue; // an RRset holds no duplicates (RFC 2181 section 5)
        }
        kept.push(record);
    }
    cname_alone(path, &kept, problems);
    delegations(origin, path, &kept, problems);
    if complete && !rrsets.contains_key(&(origin.clone(), RecordType::NS)) {
        problems.push(Problem::in_file(
            path,
            format!("no NS record at the apex {origin}: resolvers need the zone's name servers"),
        ));
    }
    let Some((soa, soa_ttl)) = soa else {
        if complete {
            problems.push(Problem::in_file(
                path,
                format!("no SOA record at the apex {origin}"),
            ));
        }
        return None;
    };
    Some(Zone {
        origin: origin.clone(),
        file: path.to_path_buf(),
        soa,
        soa_ttl,
        records: kept,
    })
}

/// Whether `record` may stand where it is: inside the zone, not a wildcard, SOA only at the
/// apex, no CNAME there. (NS below the apex delegates: see [`delegations`].)
fn placement(origin: &Name, record: &StaticRecord) -> Result<(), String> {
    if !origin.zone_of(&record.name) {
        return Err(format!("{} is outside the zone {origin}", record.name));
    }
    if record.name.is_wildcard() {
        return Err(format!(
            "wildcard {} is not supported: list each name",
            record.name
        ));
    }
    let at_apex = record.name == *origin;
    match &record.rdata {
        RData::SOA(_) if !at_apex => Err(format!(
            "SOA record at {}: the SOA belongs at the zone apex {origin}",
            record.name
        )),
        RData::CNAME(_) if at_apex => Err("CNAME at the zone apex: the apex holds SOA and NS, and a CNAME cannot live beside other data".into()),
        _ => Ok(()),
    }
}

/// An NS RRset below the apex delegates that name and everything below it to a child zone
/// (RFC 1034 section 4.2.1): at the cut only the NS RRset (and a DS) may stand, below it
/// only the glue addresses of the child's name servers. Anything else there would never
/// be answered (resolvers ask the child), so it is refused rather than silently hidden.
fn delegations(origin: &Name, path: &Path, kept: &[StaticRecord], problems: &mut Vec<Problem>) {
    let cuts: HashMap<&Name, usize> = kept
        .iter()
        .filter(|r| r.record_type() == RecordType::NS && r.name != *origin)
        .map(|r| (&r.name, r.line))
        .collect();
    if cuts.is_empty() {
        return;
    }
    for record in kept {
        let Some((cut, line)) = cut_above(origin, &record.name, |n| cuts.get(n).copied()) else {
            continue;
        };
        let rtype = record.record_type();
        let message = if record.name == cut {
            if matches!(rtype, RecordType::NS | RecordType::DS) {
                continue;
            }
            format!(
                "{rtype} at {cut}, which is delegated (NS at line {line}): at a delegation only NS and DS stand; the rest belongs in the child zone"
            )
        } else {
            if matches!(rtype, RecordType::A | RecordType::AAAA) {
                continue;
            }
            format!(
                "{rtype} at {} is below the delegation {cut} (NS at line {line}): only glue addresses (A, AAAA) of the child's name servers may stand there; the rest belongs in the child zone",
                record.name
            )
        };
        problems.push(Problem::at(path, record.line, message));
    }
}

/// The highest delegation at or above `name` in the zone at `origin`, with what `cut_at`
/// says of it (`None` for a name no delegation covers).
pub fn cut_above<T>(
    origin: &Name,
    name: &Name,
    cut_at: impl Fn(&Name) -> Option<T>,
) -> Option<(Name, T)> {
    let mut found = None;
    let mut ancestor = name.clone();
    while origin.zone_of(&ancestor) && ancestor != *origin {
        if let Some(value) = cut_at(&ancestor) {
            found = Some((ancestor.clone(), value));
        }
        ancestor = ancestor.base_name();
    }
    found
}

/// A CNAME owner holds nothing else (RFC 1034 section 3.6.2): each CNAME beside other data
/// is reported at the CNAME, naming a line of the other data.
fn cname_alone(path: &Path, kept: &[StaticRecord], problems: &mut Vec<Problem>) {
    let mut other_data: HashMap<&Name, usize> = HashMap::new();
    for record in kept.iter().filter(|r| r.record_type() != RecordType::CNAME) {
        other_data.entry(&record.name).or_insert(record.line);
    }
    for record in kept.iter().filter(|r| r.record_type() == RecordType::CNAME) {
        if let Some(line) = other_data.get(&record.name) {
            problems.push(Problem::at(path, record.line, format!(
                "CNAME at {} beside other data (line {line}): a CNAME owner holds nothing else (RFC 1034 section 3.6.2)",
                record.name
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "\
$ORIGIN svc.example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 2026112601 ; serial
            7200 900 1209600 60 )
    IN NS  ns1
ns1 IN A   192.0.2.53
www 300 IN CNAME app
txt IN TXT \"hello world\" \"two\"
Mixed.Case IN A 192.0.2.7
deep.under.svc.example.com. IN AAAA 2001:db8::7
";

    fn origin() -> Name {
        Name::from_ascii("svc.example.com.").unwrap()
    }

    fn problems(text: &str) -> Vec<String> {
        match Zone::parse(&origin(), Path::new("z.zone"), text) {
            Ok(_) => vec![],
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn loads_records_with_lines_and_lowercase_names() {
        let zone = Zone::parse(&origin(), Path::new("z.zone"), ZONE).unwrap();
        assert_eq!(zone.soa.serial, 2026112601);
        assert_eq!(zone.soa.minimum, 60);
        assert_eq!(zone.soa_ttl, 3600);
        let names: Vec<(String, usize, u32)> = zone
            .records
            .iter()
            .map(|r| (r.name.to_string(), r.line, r.ttl))
            .collect();
        assert_eq!(
            names,
            vec![
                ("svc.example.com.".into(), 5, 3600),
                ("ns1.svc.example.com.".into(), 6, 3600),
                ("www.svc.example.com.".into(), 7, 300),
                ("txt.svc.example.com.".into(), 8, 3600),
                ("mixed.case.svc.example.com.".into(), 9, 3600),
                ("deep.under.svc.example.com.".into(), 10, 3600),
            ]
        );
        let RData::CNAME(target) = &zone.records[2].rdata else {
            panic!()
        };
        assert_eq!(target.0.to_string(), "app.svc.example.com.");
    }

    #[test]
    fn reports_each_problem_with_its_line() {
        let bad = ZONE
            .replace("ns1 IN A   192.0.2.53", "ns1 IN A   192.0.2.530")
            .replace("www 300 IN CNAME app", "www 300 IN BOGUS app")
            + "other.example.org. IN A 192.0.2.1\n* IN A 192.0.2.2\nwww2 IN CNAME a\nwww2 IN A 192.0.2.3\nsub IN NS ns.elsewhere.\nsub IN TXT \"hidden\"\nx.sub IN MX 10 mx\nns.sub IN A 192.0.2.4\n";
        let found = problems(&bad);
        assert!(found[0].starts_with("z.zone:6: bad A record"), "{found:?}");
        assert_eq!(found[1], "z.zone:7: unknown record type \"BOGUS\"");
        assert!(
            found[2].starts_with("z.zone:11: other.example.org. is outside the zone"),
            "{found:?}"
        );
        assert!(found[3].starts_with("z.zone:12: wildcard"), "{found:?}");
        assert!(
            found[4].starts_with(
                "z.zone:13: CNAME at www2.svc.example.com. beside other data (line 14)"
            ),
            "{found:?}"
        );
        assert!(
            found[5].starts_with(
                "z.zone:16: TXT at sub.svc.example.com., which is delegated (NS at line 15)"
            ),
            "{found:?}"
        );
        assert!(
            found[6].starts_with(
                "z.zone:17: MX at x.sub.svc.example.com. is below the delegation sub.svc.example.com."
            ),
            "{found:?}"
        );
        assert_eq!(found.len(), 7, "{found:?}");
    }

    #[test]
    fn structural_problems() {
        assert!(
            problems("$TTL 60\n@ IN NS ns1\n")
                .iter()
                .any(|p| p.contains("no SOA"))
        );
        assert!(
            problems(&ZONE.replace("    IN NS  ns1\n", ""))
                .iter()
                .any(|p| p.contains("no NS record"))
        );
        assert_eq!(
            problems(&ZONE.replace("7200 900 1209600 60 )", "7200 900 1209600 60")),
            vec!["z.zone:3: `(` is never closed"]
        );
        assert!(
            problems(&ZONE.replace("$TTL 3600\n", ""))
                .iter()
                .any(|p| p.starts_with("z.zone:2: record has no TTL"))
        );
        assert!(
            problems(&(ZONE.to_string() + "a 60 IN A 192.0.2.1\na 61 IN A 192.0.2.2\n"))[0]
                .starts_with("z.zone:12: TTL 61 differs")
        );
        assert!(
            problems(&(ZONE.to_string() + "$INCLUDE other.zone\n"))[0]
                .starts_with("z.zone:11: $INCLUDE")
        );
        assert!(
            problems(&(ZONE.to_string() + "q IN TXT \"open\n"))[0]
                .starts_with("z.zone:11: unterminated")
        );
        assert!(problems(&(ZONE.to_string() + "c CH A 192.0.2.1\n"))[0].contains("class IN only"));
    }
}
