//! `dig`, run against the server and its output parsed.

use std::process::Command;

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// dig's output, parsed.
#[derive(Debug, Clone)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Data of the answer records of type `rtype`, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        sorted_data(&self.answer, rtype)
    }

    /// Data of the authority records of type `rtype`, sorted.
    pub fn authority_data(&self, rtype: &str) -> Vec<String> {
        sorted_data(&self.authority, rtype)
    }

    /// Data of the additional records of type `rtype`, sorted.
    pub fn additional_data(&self, rtype: &str) -> Vec<String> {
        sorted_data(&self.additional, rtype)
    }

    /// The SOA serial in the answer or authority section.
    pub fn soa_serial(&self) -> Option<u32> {
        self.answer
            .iter()
            .chain(&self.authority)
            .find(|r| r.rtype == "SOA")
            .and_then(|r| r.data.split_whitespace().nth(2)?.parse().ok())
    }
}

fn require_dig() {
    if Command::new("dig").arg("-v").output().is_err() {
        panic!(
            "`dig` is not installed: these tests query the server with it. Install it with `apt-get install -y dnsutils` (or run .ci/run)."
        );
    }
}

/// The data of the records of type `rtype` in `section`, sorted.
fn sorted_data(section: &[Rr], rtype: &str) -> Vec<String> {
    let mut data: Vec<String> = section
        .iter()
        .filter(|r| r.rtype == rtype)
        .map(|r| r.data.clone())
        .collect();
    data.sort();
    data
}

pub fn dig(port: u16, args: &[&str]) -> Dig {
    require_dig();
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+norec",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_dig(raw)
}

fn parse_dig(raw: String) -> Dig {
    let mut dig = Dig {
        status: String::new(),
        flags: vec![],
        question: vec![],
        answer: vec![],
        authority: vec![],
        additional: vec![],
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if line.starts_with(";; ") && line.ends_with(" SECTION:") {
            section = line.trim_start_matches(";; ").trim_end_matches(" SECTION:");
            continue;
        }
        if line.trim().is_empty() {
            section = "";
            continue;
        }
        match section {
            "QUESTION" => dig.question.push(line.trim_start_matches(';').to_string()),
            "ANSWER" | "AUTHORITY" | "ADDITIONAL" => {
                let parts: Vec<&str> = line.split_whitespace().collect();
                if parts.len() < 5 {
                    continue;
                }
                let rr = Rr {
                    name: parts[0].into(),
                    ttl: parts[1].parse().unwrap_or(0),
                    rtype: parts[3].into(),
                    data: parts[4..].join(" "),
                };
                match section {
                    "ANSWER" => dig.answer.push(rr),
                    "AUTHORITY" => dig.authority.push(rr),
                    _ => dig.additional.push(rr),
                }
            }
            _ => {}
        }
    }
    dig
}
