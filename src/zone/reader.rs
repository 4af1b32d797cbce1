//! The reader of a master file's entries: directives, owners, TTLs, classes and types, in
//! order, with the state RFC 1035 carries from line to line; RDATA is parsed by
//! hickory-proto, which knows the presentation format of every record type.

use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};

use super::StaticRecord;
use super::lexer::Entry;
use crate::problem::Problem;

/// Reads entries in order, keeping the state RFC 1035 carries from line to line.
pub struct Reader<'a> {
    path: &'a Path,
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
    pub problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    pub fn new(path: &'a Path, origin: Name) -> Reader<'a> {
        Reader {
            path,
            origin,
            default_ttl: None,
            last_ttl: None,
            last_owner: None,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem::at(self.path, line, message));
    }

    /// The record of `entry`; `None` for a directive or a problem (noted).
    pub fn entry(&mut self, entry: &Entry) -> Option<StaticRecord> {
        let line = entry.line;
        let mut tokens = entry.tokens.iter().map(String::as_str);
        if !entry.blank_owner && entry.tokens[0].starts_with('$') {
            self.directive(line, &mut tokens);
            return None;
        }
        let owner = self.owner(entry, &mut tokens)?;
        let (ttl, rtype) = self.ttl_and_type(line, &mut tokens)?;
        let rdata: Vec<&str> = tokens.collect();
        let rdata = self.rdata(line, &owner, ttl, rtype, &rdata)?;
        Some(StaticRecord {
            name: owner,
            ttl,
            rdata,
            line,
        })
    }

    fn directive<'t>(&mut self, line: usize, tokens: &mut impl Iterator<Item = &'t str>) {
        let Some(directive) = tokens.next() else {
            return;
        };
        match (directive.to_ascii_uppercase().as_str(), tokens.next()) {
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
            ("$ORIGIN" | "$TTL", None) => self.problem(line, format!("{directive} needs a value")),
            _ => self.problem(line, format!("unknown directive {directive}")),
        }
    }

    /// The owner: the previous one for a line that starts blank, `@` for the origin.
    fn owner<'t>(
        &mut self,
        entry: &Entry,
        tokens: &mut impl Iterator<Item = &'t str>,
    ) -> Option<Name> {
        let owner = if entry.blank_owner {
            let Some(owner) = self.last_owner.clone() else {
                self.problem(entry.line, "the first record has no owner name");
                return None;
            };
            owner
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
                    self.problem(entry.line, format!("bad owner name {token:?}: {e}"));
                    return None;
                }
            }
        };
        self.last_owner = Some(owner.clone());
        Some(owner)
    }

    /// `[TTL] [CLASS] TYPE`, TTL and class in either order (RFC 1035 section 5.1); the TTL
    /// defaults to `$TTL`, then to the last one given.
    fn ttl_and_type<'t>(
        &mut self,
        line: usize,
        tokens: &mut impl Iterator<Item = &'t str>,
    ) -> Option<(u32, RecordType)> {
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
            let message = format!("class {class} is not served: flipdns serves class IN only");
            self.problem(line, message);
            return None;
        }
        let Some(ttl) = ttl.or(self.default_ttl).or(self.last_ttl) else {
            let message = "record has no TTL: give one, or put $TTL at the top of the file";
            self.problem(line, message);
            return None;
        };
        if ttl > i32::MAX as u32 {
            let message = format!("TTL {ttl} is above the RFC 2181 maximum {}", i32::MAX);
            self.problem(line, message);
            return None;
        }
        self.last_ttl = Some(ttl);
        Some((ttl, rtype))
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
