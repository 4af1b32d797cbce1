//! Zone files: RFC 1035 master files turned into static records, with file:line problems.
//!
//! The file is split into entries here (comments, quotes, parentheses, `$ORIGIN`, `$TTL`,
//! owner, TTL, class and type), so every problem names its line; the RDATA of each entry is
//! parsed by hickory-proto, which knows the presentation format of every record type. This
//! module is pure: it reads one file and knows nothing of services or sockets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};

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
/// name inside the zone, no CNAME beside other data, uniform TTL per RRset.
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
        let mut reader = Reader {
            path,
            origin: origin.clone(),
            default_ttl: None,
            last_ttl: None,
            last_owner: None,
            problems: Vec::new(),
        };
        let mut records = Vec::new();
        for entry in entries(text) {
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

/// One logical entry: the tokens of a line, joined across parentheses.
struct Entry {
    line: usize,
    /// The entry began with white space: its owner is the previous entry's.
    blank_owner: bool,
    /// Raw tokens, quotes and escapes kept, so hickory sees them as written.
    tokens: Vec<String>,
}

/// Splits a master file into entries, or reports the line of an unbalanced quote or
/// parenthesis.
fn entries(text: &str) -> Vec<Result<Entry, (usize, String)>> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut at_line_start = true;
    let mut current: Option<Entry> = None;
    let mut token = String::new();
    let mut depth = 0usize;
    let mut paren_line = 0;

    let flush = |token: &mut String, current: &mut Option<Entry>| {
        if !token.is_empty()
            && let Some(entry) = current.as_mut()
        {
            entry.tokens.push(std::mem::take(token));
        }
    };

    while let Some(c) = chars.next() {
        if current.is_none() {
            if at_line_start && (c == ' ' || c == '\t') {
                current = Some(Entry {
                    line,
                    blank_owner: true,
                    tokens: Vec::new(),
                });
            } else if c != '\n' && c != '\r' {
                current = Some(Entry {
                    line,
                    blank_owner: false,
                    tokens: Vec::new(),
                });
            }
        }
        at_line_start = false;
        match c {
            '\\' => {
                token.push(c);
                if let Some(next) = chars.next() {
                    if next == '\n' {
                        line += 1;
                    }
                    token.push(next);
                }
            }
            '"' => {
                let start = line;
                token.push(c);
                loop {
                    match chars.next() {
                        Some('"') => {
                            token.push('"');
                            break;
                        }
                        Some('\\') => {
                            token.push('\\');
                            if let Some(next) = chars.next() {
                                token.push(next);
                            }
                        }
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            token.push(ch);
                        }
                        None => {
                            out.push(Err((start, "unterminated quoted string".to_string())));
                            return out;
                        }
                    }
                }
            }
            ';' => {
                flush(&mut token, &mut current);
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '(' => {
                flush(&mut token, &mut current);
                if depth == 0 {
                    paren_line = line;
                }
                depth += 1;
            }
            ')' => {
                flush(&mut token, &mut current);
                if depth == 0 {
                    out.push(Err((line, "`)` without a matching `(`".to_string())));
                } else {
                    depth -= 1;
                }
            }
            '\n' => {
                flush(&mut token, &mut current);
                line += 1;
                at_line_start = true;
                if depth == 0
                    && let Some(entry) = current.take()
                    && !entry.tokens.is_empty()
                {
                    out.push(Ok(entry));
                }
            }
            c if c.is_whitespace() => flush(&mut token, &mut current),
            c => token.push(c),
        }
    }
    flush(&mut token, &mut current);
    if depth > 0 {
        out.push(Err((paren_line, "`(` is never closed".to_string())));
    } else if let Some(entry) = current.take()
        && !entry.tokens.is_empty()
    {
        out.push(Ok(entry));
    }
    out
}

/// Reads entries in order, keeping the state RFC 1035 carries from line to line.
struct Reader<'a> {
    path: &'a Path,
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem::at(self.path, line, message));
    }

    fn entry(&mut self, entry: &Entry) -> Option<StaticRecord> {
        let line = entry.line;
        let mut tokens = entry.tokens.iter().map(String::as_str);
        if !entry.blank_owner && entry.tokens[0].starts_with('$') {
            let directive = tokens.next()?;
            let argument = tokens.next();
            match (directive.to_ascii_uppercase().as_str(), argument) {
                ("$ORIGIN", Some(name)) => match Name::parse(name, Some(&self.origin)) {
                    Ok(name) => self.origin = name.to_lowercase(),
                    Err(e) => self.problem(line, format!("bad $ORIGIN {name:?}: {e}")),
                },
                ("$TTL", Some(ttl)) => match parse_ttl(ttl) {
                    Ok(ttl) => self.default_ttl = Some(ttl),
                    Err(e) => self.problem(line, format!("bad $TTL {ttl:?}: {e}")),
                },
                ("$INCLUDE", _) => {
                    self.problem(line, "$INCLUDE is not supported: keep the zone in one file")
                }
                ("$ORIGIN" | "$TTL", None) => {
                    self.problem(line, format!("{directive} needs a value"))
                }
                _ => self.problem(line, format!("unknown directive {directive}")),
            }
            return None;
        }

        let owner = if entry.blank_owner {
            match &self.last_owner {
                Some(owner) => owner.clone(),
                None => {
                    self.problem(line, "the first record has no owner name");
                    return None;
                }
            }
        } else {
            let token = tokens.next()?;
            let parsed = if token == "@" {
                Ok(self.origin.clone())
            } else {
                Name::parse(token, Some(&self.origin))
            };
            match parsed {
                Ok(name) => name.to_lowercase(),
                Err(e) => {
                    self.problem(line, format!("bad owner name {token:?}: {e}"));
                    return None;
                }
            }
        };
        self.last_owner = Some(owner.clone());

        // [TTL] [CLASS] TYPE, TTL and class in either order (RFC 1035 section 5.1).
        let mut ttl = None;
        let mut class = DNSClass::IN;
        let rtype = loop {
            let Some(token) = tokens.next() else {
                self.problem(line, "record has no type");
                return None;
            };
            if ttl.is_none() && token.starts_with(|c: char| c.is_ascii_digit()) {
                match parse_ttl(token) {
                    Ok(value) => ttl = Some(value),
                    Err(e) => {
                        self.problem(line, format!("bad TTL {token:?}: {e}"));
                        return None;
                    }
                }
                continue;
            }
            let upper = token.to_ascii_uppercase();
            if let Ok(c) = DNSClass::from_str(&upper) {
                class = c;
                continue;
            }
            match RecordType::from_str(&upper) {
                Ok(t) => break t,
                Err(_) => {
                    self.problem(line, format!("unknown record type {token:?}"));
                    return None;
                }
            }
        };
        if class != DNSClass::IN {
            self.problem(
                line,
                format!("class {class} is not served: flipdns serves class IN only"),
            );
            return None;
        }
        let ttl = match ttl.or(self.default_ttl).or(self.last_ttl) {
            Some(ttl) => ttl,
            None => {
                self.problem(
                    line,
                    "record has no TTL: give one, or put $TTL at the top of the file",
                );
                return None;
            }
        };
        if ttl > i32::MAX as u32 {
            self.problem(
                line,
                format!("TTL {ttl} is above the RFC 2181 maximum {}", i32::MAX),
            );
            return None;
        }
        self.last_ttl = Some(ttl);

        let rdata: Vec<&str> = tokens.collect();
        let rdata = self.rdata(line, &owner, ttl, rtype, &rdata)?;
        Some(StaticRecord {
            name: owner,
            ttl,
            rdata,
            line,
        })
    }

    /// Parses the RDATA with hickory-proto, relative names resolved against `$ORIGIN`.
    fn rdata(
        &mut self,
        line: usize,
        owner: &Name,
        ttl: u32,
        rtype: RecordType,
        rdata: &[&str],
    ) -> Option<RData> {
        if rdata.is_empty() {
            self.problem(line, format!("{rtype} record has no data"));
            return None;
        }
        let text = format!(
            "$ORIGIN {}\n{} {} IN {} {}\n",
            self.origin,
            owner,
            ttl,
            rtype,
            rdata.join(" ")
        );
        let parsed = Parser::new(text, None, Some(self.origin.clone())).parse();
        let records = match parsed {
            Ok((_, records)) => records,
            Err(e) => {
                self.problem(line, format!("bad {rtype} record: {e}"));
                return None;
            }
        };
        let record = records
            .into_values()
            .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>())
            .next();
        match record {
            Some(record) => Some(record.data),
            None => {
                self.problem(line, format!("bad {rtype} record"));
                None
            }
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
    let mut rrset_ttl: BTreeMap<(Name, RecordType), (u32, usize)> = BTreeMap::new();
    for record in records {
        let line = record.line;
        let rtype = record.record_type();
        let mut problem = |message: String| problems.push(Problem::at(path, line, message));
        if !origin.zone_of(&record.name) {
            problem(format!("{} is outside the zone {origin}", record.name));
            continue;
        }
        if record.name.is_wildcard() {
            problem(format!(
                "wildcard {} is not supported: list each name",
                record.name
            ));
            continue;
        }
        let at_apex = record.name == *origin;
        match &record.rdata {
            RData::SOA(s) if at_apex => {
                if soa.is_some() {
                    problem("a second SOA record: a zone has exactly one".into());
                } else {
                    soa = Some((s.clone(), record.ttl));
                }
                continue;
            }
            RData::SOA(_) => {
                problem(format!(
                    "SOA record at {}: the SOA belongs at the zone apex {origin}",
                    record.name
                ));
                continue;
            }
            RData::NS(_) if !at_apex => {
                problem(format!(
                    "NS record at {}: delegating part of the zone is not supported",
                    record.name
                ));
                continue;
            }
            RData::CNAME(_) if at_apex => {
                problem("CNAME at the zone apex: the apex holds SOA and NS, and a CNAME cannot live beside other data".into());
                continue;
            }
            _ => {}
        }
        match rrset_ttl.get(&(record.name.clone(), rtype)) {
            Some(&(ttl, first)) if ttl != record.ttl => {
                problem(format!(
                    "TTL {} differs from TTL {ttl} of the same {rtype} RRset at line {first}; RFC 2181 section 5.2 wants one TTL per RRset",
                    record.ttl
                ));
                continue;
            }
            Some(_) => {}
            None => {
                rrset_ttl.insert((record.name.clone(), rtype), (record.ttl, line));
            }
        }
        if kept
            .iter()
            .any(|k| k.name == record.name && k.rdata == record.rdata)
        {
            continue; // an RRset holds no duplicates (RFC 2181 section 5)
        }
        kept.push(record);
    }
    for record in &kept {
        let cname = record.record_type() == RecordType::CNAME;
        if let Some(other) = kept
            .iter()
            .find(|o| o.name == record.name && (o.record_type() == RecordType::CNAME) != cname)
            && cname
        {
            problems.push(Problem::at(path, record.line, format!(
                    "CNAME at {} beside other data (line {}): a CNAME owner holds nothing else (RFC 1034 section 3.6.2)",
                    record.name, other.line
                )));
        }
    }
    if complete
        && !kept
            .iter()
            .any(|r| r.name == *origin && r.record_type() == RecordType::NS)
    {
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
            + "other.example.org. IN A 192.0.2.1\n* IN A 192.0.2.2\nwww2 IN CNAME a\nwww2 IN A 192.0.2.3\nsub IN NS ns.elsewhere.\n";
        let found = problems(&bad);
        assert!(found[0].starts_with("z.zone:6: bad A record"), "{found:?}");
        assert_eq!(found[1], "z.zone:7: unknown record type \"BOGUS\"");
        assert!(
            found[2].starts_with("z.zone:11: other.example.org. is outside the zone"),
            "{found:?}"
        );
        assert!(found[3].starts_with("z.zone:12: wildcard"), "{found:?}");
        assert!(
            found[4].starts_with("z.zone:15: NS record at sub"),
            "{found:?}"
        );
        assert!(
            found[5].starts_with(
                "z.zone:13: CNAME at www2.svc.example.com. beside other data (line 14)"
            ),
            "{found:?}"
        );
        assert_eq!(found.len(), 6, "{found:?}");
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
