//! What the server answers for: the config with its zone files read and cross-checked.
//!
//! A catalog is complete and consistent or it is not built: zone files load, no static name
//! collides with a service's names, and no zone hides names of another. It holds no live
//! state (colors, serials); [`crate::records`] combines the two into a snapshot.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use hickory_proto::rr::{Name, RData};

use crate::config::{Config, HealthKind, HealthTls, ServiceConfig, TsigKeyConfig};
use crate::problem::{Problem, Problems};
use crate::wire;
use crate::wire::tsig::{self, Key};
use crate::zone::Zone;

/// A validated config and its zones, in config order.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub config: Config,
    /// `zones[i]` is the content of `config.zones[i]`.
    pub zones: Vec<Zone>,
    /// The TSIG keys of `config.tsig_keys`, with their secrets read.
    pub keys: Vec<Arc<Key>>,
    /// Records per zone, counted once on first use by [`crate::records::content`] (the IXFR
    /// history's bound), not with every change.
    pub zone_sizes: std::sync::OnceLock<Vec<usize>>,
    /// The HTTPS API's TLS set-up, from `[api]`'s files (`None`: plain HTTP on loopback).
    pub api_tls: Option<Arc<crate::http::tls::Tls>>,
}

/// The names a service answers: the service name and one per color.
pub fn service_names(service: &ServiceConfig) -> [Name; 3] {
    let fqdn = service.fqdn().clone();
    let color = |c: &str| {
        fqdn.prepend_label(c)
            .expect("a service name is short enough for its color names")
    };
    [color("blue"), color("green"), fqdn.clone()].map(|n| n.to_lowercase())
}

impl Catalog {
    /// Reads every zone file of `config` and cross-checks names; all problems at once.
    pub fn load(config: Config) -> Result<Catalog, Problems> {
        let mut problems = Vec::new();
        let mut zones = Vec::new();
        for zone in &config.zones {
            match Zone::load(&zone.origin, &zone.file) {
                Ok(z) => zones.push(z),
                Err(p) => problems.extend(p.0),
            }
        }
        let mut keys = Vec::new();
        for key in &config.tsig_keys {
            match load_key(&config, key) {
                Ok(k) => keys.push(Arc::new(k)),
                Err(p) => problems.push(p),
            }
        }
        for service in &config.services {
            let Some(HealthKind::Http {
                tls:
                    Some(HealthTls::Verify {
                        ca_file: Some(file),
                    }),
                ..
            }) = service.health.as_ref().map(|h| &h.kind)
            else {
                continue;
            };
            // Read again at each check; read here so a bad file is found before a flip.
            if let Err(e) = crate::pem::read_ca_file(file) {
                problems.push(Problem::at(
                    &config.path,
                    service.line,
                    format!("service `{}`: health {e}", service.name),
                ));
            }
        }
        let api = &config.api;
        let api_tls = match (&api.cert_file, &api.key_file) {
            (Some(cert), Some(key)) => {
                crate::http::tls::server_config(cert, key, api.client_ca.as_deref())
                    .map(Arc::new)
                    .map_err(|e| {
                        problems.push(Problem::at(&config.path, api.line, format!("[api] {e}")))
                    })
                    .ok()
            }
            _ => None,
        };
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        Catalog::check(&config, &zones, &mut problems);
        if problems.is_empty() {
            Ok(Catalog {
                config,
                zones,
                keys,
                zone_sizes: Default::default(),
                api_tls,
            })
        } else {
            Err(Problems(problems))
        }
    }

    fn check(config: &Config, zones: &[Zone], problems: &mut Vec<Problem>) {
        Catalog::check_nested_zones(zones, problems);
        Catalog::check_service_names(config, zones, problems);
        Catalog::check_delegated_services(config, zones, problems);
    }

    /// A service name at or below a delegation would be answered by the child's servers,
    /// never by us: refused.
    fn check_delegated_services(config: &Config, zones: &[Zone], problems: &mut Vec<Problem>) {
        for zone in zones {
            let cuts = zone.delegations();
            if cuts.is_empty() {
                continue;
            }
            for service in config.services.iter().filter(|s| s.zone == zone.origin) {
                let fqdn = service.fqdn().to_lowercase();
                let Some((cut, ())) =
                    crate::zone::cut_above(&zone.origin, &fqdn, |n| cuts.contains(n).then_some(()))
                else {
                    continue;
                };
                problems.push(Problem::at(&config.path, service.line, format!(
                    "service `{}` answers {fqdn}, which is delegated to another zone (NS at {cut} in {}): resolvers would ask the child's servers, never flipdns; move the service or the delegation",
                    service.name, zone.file.display()
                )));
            }
        }
    }

    /// A record of one zone that lies inside a deeper configured zone would never be served.
    fn check_nested_zones(zones: &[Zone], problems: &mut Vec<Problem>) {
        for zone in zones {
            for other in zones
                .iter()
                .filter(|o| o.origin != zone.origin && zone.origin.zone_of(&o.origin))
            {
                for record in zone
                    .records
                    .iter()
                    .filter(|r| other.origin.zone_of(&r.name))
                {
                    problems.push(Problem::at(&zone.file, record.line, format!(
                        "{} lies inside the zone {} (served from {}), so this record would never be served",
                        record.name, other.origin, other.file.display()
                    )));
                }
            }
        }
    }

    /// Each service owns its three names and everything below them: no other service, zone
    /// or static record may be there. Names are indexed once (lowercase wire form), and each
    /// name looks up its own ancestors: linear in the number of names, however many
    /// services there are.
    fn check_service_names(config: &Config, zones: &[Zone], problems: &mut Vec<Problem>) {
        let mut owners: HashMap<Vec<u8>, usize> = HashMap::with_capacity(config.services.len());
        for (i, service) in config.services.iter().enumerate() {
            owners.entry(wire::name::lower(service.fqdn())).or_insert(i);
        }
        // The service owning `name` or an ancestor of it, other than `skip`: each suffix of
        // its wire form looked up, without building names.
        let owner_of = |name: &Name, skip: Option<usize>| -> Option<usize> {
            if owners.is_empty() {
                return None;
            }
            let name = wire::name::lower(name);
            let mut at = 0;
            while at < name.len() && name[at] != 0 {
                if let Some(&owner) = owners.get(&name[at..])
                    && Some(owner) != skip
                {
                    return Some(owner);
                }
                at += 1 + name[at] as usize;
            }
            None
        };
        for (i, service) in config.services.iter().enumerate() {
            let fqdn = service.fqdn();
            if let Some(other) = owner_of(fqdn, Some(i)) {
                let (first, second) = if other < i { (other, i) } else { (i, other) };
                let (a, b) = (&config.services[first], &config.services[second]);
                problems.push(Problem::at(&config.path, b.line, format!(
                    "service `{}` ({}) overlaps service `{}` ({}, line {}): each service owns its name and the names below it",
                    b.name, b.fqdn(), a.name, a.fqdn(), a.line
                )));
            }
            for other in zones.iter().filter(|z| fqdn.zone_of(&z.origin)) {
                problems.push(Problem::at(
                    &config.path,
                    service.line,
                    format!(
                        "service `{}` answers {fqdn}, but the zone {} is configured at or below it",
                        service.name, other.origin
                    ),
                ));
            }
        }
        for zone in zones {
            for record in &zone.records {
                let Some(owner) = owner_of(&record.name, None) else {
                    continue;
                };
                let service = &config.services[owner];
                if service.zone != zone.origin {
                    continue;
                }
                problems.push(Problem::at(&zone.file, record.line, format!(
                    "{} collides with service `{}` ({}:{}), which answers {} and the names below it; remove the record or rename the service",
                    record.name, service.name, config.path.display(), service.line, service.fqdn()
                )));
            }
        }
    }

    /// The key called `name`.
    pub fn key(&self, name: &Name) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| &k.name == name)
    }

    /// Index of the zone a service lives in.
    /// What is valid but probably not meant: served as configured, and said at `check`, at
    /// start and at reload. Each names the config or zone file and line.
    pub fn warnings(&self) -> Vec<Problem> {
        let config = &self.config.path;
        let mut warnings = Vec::new();
        for service in &self.config.services {
            let at = |message: String| Problem::at(config, service.line, message);
            if service.ttl > MAX_SENSIBLE_TTL {
                warnings.push(at(format!(
                    "service `{}`: ttl = {} is over a day; a cutover waits that long for caches to drop the old color (60 to 3600 is usual)",
                    service.name, service.ttl
                )));
            }
            if service.ttl >= 2 && service.cutover_ttl > service.ttl / 2 {
                warnings.push(at(format!(
                    "service `{}`: cutover_ttl = {} is not well below ttl = {}; lowering the TTL before a flip gains little (5 to 30 is usual)",
                    service.name, service.cutover_ttl, service.ttl
                )));
            }
            if let Some(HealthKind::Http {
                tls: Some(HealthTls::Insecure),
                ..
            }) = service.health.as_ref().map(|h| &h.kind)
            {
                warnings.push(at(format!(
                    "service `{}`: health tls_verify = false accepts any certificate, so anyone on the path can pass the health gate; trust the issuing CA with `ca_file` instead",
                    service.name
                )));
            }
            for address in service.blue.iter().filter(|a| service.green.contains(a)) {
                warnings.push(at(format!(
                    "service `{}`: {address} is in both blue and green; a flip does not move its traffic",
                    service.name
                )));
            }
        }
        let services: HashSet<Name> = self
            .config
            .services
            .iter()
            .map(|s| s.fqdn.to_lowercase())
            .collect();
        for zone in &self.zones {
            // Indexed once: a zone may delegate to thousands of name servers.
            let addressed: HashSet<&Name> = zone
                .records
                .iter()
                .filter(|r| matches!(r.rdata, RData::A(_) | RData::AAAA(_)))
                .map(|r| &r.name)
                .collect();
            let has_address = |name: &Name| addressed.contains(name) || services.contains(name);
            for record in &zone.records {
                let RData::NS(target) = &record.rdata else {
                    continue;
                };
                let target = target.0.to_lowercase();
                if zone.origin.zone_of(&target) && !has_address(&target) {
                    warnings.push(Problem::at(
                        &zone.file,
                        record.line,
                        format!(
                            "NS {target} is inside the zone but has no A or AAAA record in it: resolvers cannot find that name server"
                        ),
                    ));
                }
            }
        }
        warnings
    }

    pub fn zone_index(&self, service: &ServiceConfig) -> usize {
        self.zones
            .iter()
            .position(|z| z.origin == service.zone)
            .expect("service zones are validated")
    }
}

/// A TTL above this is warned about: a day.
pub const MAX_SENSIBLE_TTL: u32 = 86_400;

/// Reads a key's secret file: base64, not readable by others (a secret anyone on the
/// machine can read is no secret).
fn load_key(config: &Config, key: &TsigKeyConfig) -> Result<Key, Problem> {
    let at = |message: String| Problem::at(&config.path, key.line, message);
    let file = key.secret_file.display();
    let metadata = std::fs::metadata(&key.secret_file).map_err(|e| {
        at(format!(
            "TSIG key {}: cannot read secret_file {file}: {e}",
            key.name
        ))
    })?;
    if metadata.permissions().mode() & 0o004 != 0 {
        return Err(at(format!(
            "TSIG key {}: secret_file {file} is readable by everyone (mode {:o}); `chmod o-rwx {file}`",
            key.name,
            metadata.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(&key.secret_file).map_err(|e| {
        at(format!(
            "TSIG key {}: cannot read secret_file {file}: {e}",
            key.name
        ))
    })?;
    let secret = data_encoding::BASE64
        .decode(text.trim().as_bytes())
        .map_err(|e| {
            at(format!(
                "TSIG key {}: secret_file {file} is not base64: {e}",
                key.name
            ))
        })?;
    if secret.is_empty() {
        return Err(at(format!(
            "TSIG key {}: secret_file {file} is empty",
            key.name
        )));
    }
    let algorithm = tsig::ALGORITHMS
        .iter()
        .find(|(name, _)| *name == key.algorithm)
        .map(|(_, a)| a.clone())
        .expect("the config reader checked the algorithm");
    Ok(Key::new(key.name.clone(), algorithm, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const ZONE: &str = "$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n";
    const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
admin_socket = "s"
state_file = "state.json"
[[zone]]
origin = "svc.example.com."
file = "svc.zone"
[[service]]
name = "app"
blue = ["192.0.2.10"]
green = ["192.0.2.20"]
live = "blue"
ttl = 60
cutover_ttl = 5
settle = "1m"
"#;

    fn load(zone: &str, config: &str) -> Result<Catalog, Problems> {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "svc.zone", zone);
        write(dir.path(), "f.toml", config);
        Catalog::load(Config::load(&dir.path().join("f.toml"))?)
    }

    #[test]
    fn loads_a_consistent_catalog() {
        let catalog = load(ZONE, CONFIG).unwrap();
        assert_eq!(catalog.zones.len(), 1);
        let names: Vec<String> = service_names(&catalog.config.services[0])
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "blue.app.svc.example.com.",
                "green.app.svc.example.com.",
                "app.svc.example.com."
            ]
        );
    }

    #[test]
    fn a_static_name_colliding_with_a_service_is_reported_at_the_record() {
        let err = load(&format!("{ZONE}green.app IN TXT \"x\"\n"), CONFIG).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("svc.zone:5: green.app.svc.example.com. collides with service `app`"),
            "{text}"
        );
        assert!(text.contains("f.toml:9)"), "{text}");
    }

    #[test]
    fn a_missing_zone_file_names_the_file() {
        let err = load(ZONE, &CONFIG.replace("svc.zone", "missing.zone")).unwrap_err();
        assert!(
            err.to_string()
                .contains("missing.zone: cannot read zone file"),
            "{err}"
        );
    }

    #[test]
    fn services_cannot_shadow_each_other() {
        let config = format!(
            "{CONFIG}\n[[service]]\nname = \"blue.app\"\nblue = [\"192.0.2.1\"]\ngreen = [\"192.0.2.2\"]\nlive = \"blue\"\nttl = 60\ncutover_ttl = 5\nsettle = \"1m\"\n"
        );
        let err = load(ZONE, &config).unwrap_err();
        assert!(
            err.to_string()
                .contains("service `blue.app` (blue.app.svc.example.com.) overlaps service `app`"),
            "{err}"
        );
    }
}
