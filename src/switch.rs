//! The one place a change happens: changes are serialized, persisted, then published.
//!
//! Every change (a flip, a TTL change of a cutover, a reload) takes the same path under one
//! lock: compute the new state, write it to the state file (fsynced), build the new snapshot
//! and swap it in, and only then return. If the write fails nothing else happens and the old
//! record set keeps being served; if the process dies after the write, the restart serves
//! the new one. A reply therefore never claims a change that a crash could undo. Deciding
//! *which* change to make is [`crate::cutover`]'s and [`crate::reload`]'s job.
//!
//! Services are named, never indexed, across calls: a reload may add, remove and reorder
//! them. Each name gets a small id that stays the same for the life of the process, for the
//! ledger, and counters that survive flips and reloads.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::catalog::Catalog;
use crate::config::ServiceConfig;
use crate::observed::Observed;
use crate::records::{Generation, Records, Serving, ServingService, Snapshot};
use crate::state::{ServiceState, State, StateError, StateFile, ZoneState, serial_after};

/// Owns the live state and the state file; publishes snapshots to [`Records`].
pub struct Switch {
    /// The catalog being served; replaced whole by a reload, under the lock.
    catalog: ArcSwap<Catalog>,
    state_file: Arc<StateFile>,
    records: Arc<Records>,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Generation of the last published snapshot.
    generation: Generation,
    /// By service name: kept across snapshots and reloads.
    observed: HashMap<String, Arc<Observed>>,
    /// Stable ids by service name, never reused in this process.
    ids: HashMap<String, u16>,
    started_ms: u64,
}

/// A service's state and its zone's serial, as of one moment.
#[derive(Debug, Clone)]
pub struct Current {
    pub service: ServiceState,
    pub serial: u32,
}

/// Why a change was not made. Nothing changed in either case.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("service {0:?} is no longer configured")]
    Gone(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Zones whose serial moved, with the new serial.
    pub serials: Vec<(String, u32)>,
}

impl Switch {
    /// Loads the state file (the state file wins over `live` in the config), writes it back
    /// so an unwritable state directory shows at start rather than at the first flip, and
    /// builds the first snapshot. `started_ms` is the process start time.
    pub fn start(
        catalog: Catalog,
        state_file: StateFile,
        started_ms: u64,
    ) -> Result<Switch, StateError> {
        let loaded = state_file.load()?.unwrap_or_default();
        let state = initial_state(&catalog, loaded);
        state_file.save(&state)?;
        let mut inner = Inner {
            state,
            generation: Generation(1),
            observed: HashMap::new(),
            ids: HashMap::new(),
            started_ms,
        };
        let records = Arc::new(Records::new(snapshot(&catalog, &mut inner)));
        Ok(Switch {
            catalog: ArcSwap::from_pointee(catalog),
            state_file: Arc::new(state_file),
            records,
            inner: Mutex::new(inner),
        })
    }

    /// The catalog being served now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    /// What the server has seen of `service`, if it is served.
    pub fn observed(&self, service: &str) -> Option<Arc<Observed>> {
        self.records
            .load()
            .service(service)
            .map(|s| s.observed.clone())
    }

    /// The config and state of `service`, if it is still configured.
    pub async fn service(&self, name: &str) -> Option<(ServiceConfig, Current)> {
        let inner = self.inner.lock().await;
        let catalog = self.catalog.load();
        let config = catalog.config.service(name)?.clone();
        let current = current(&config, &inner.state);
        Some((config, current))
    }

    /// The whole state, for reports.
    pub async fn state(&self) -> State {
        self.inner.lock().await.state.clone()
    }

    /// Applies `change` to the state of `service`, raises its zone's serial when what the
    /// zone serves changes (color or TTL), persists, and publishes. On a write error nothing
    /// changes.
    pub async fn apply(
        &self,
        service: &str,
        change: impl FnOnce(&mut ServiceState),
    ) -> Result<Current, ChangeError> {
        let mut inner = self.inner.lock().await;
        let catalog = self.catalog.load_full();
        let config = catalog
            .config
            .service(service)
            .ok_or_else(|| ChangeError::Gone(service.to_string()))?;
        let mut next = inner.state.clone();
        let entry = next
            .services
            .get_mut(&config.name)
            .expect("every configured service has state");
        let served = |s: &ServiceState| (s.live, s.phase.ttl(config.ttl, config.cutover_ttl));
        let before = entry.clone();
        change(entry);
        if *entry == before {
            return Ok(current(config, &inner.state)); // nothing to write
        }
        if served(entry) != served(&before) {
            let zone = next
                .zones
                .get_mut(&config.zone.to_string())
                .expect("every configured zone has state");
            zone.serial = zone.serial.wrapping_add(1);
        }
        self.persist(&next).await?;
        inner.state = next;
        inner.generation = inner.generation.next();
        self.records.publish(snapshot(&catalog, &mut inner));
        Ok(current(config, &inner.state))
    }

    /// Serves `catalog` instead of the current one, in one step: unchanged services keep
    /// their color and cutover, new ones start from the state file or the config, removed
    /// ones are kept in the state file. A zone whose content changed gets a higher serial,
    /// and no serial goes backwards.
    pub async fn reload(&self, catalog: Catalog) -> Result<Reloaded, StateError> {
        let mut inner = self.inner.lock().await;
        let old = self.catalog.load_full();
        let mut next = initial_state(&catalog, inner.state.clone());
        let mut report = Reloaded::default();
        for service in &catalog.config.services {
            match old.config.service(&service.name) {
                None => report.added.push(service.name.clone()),
                Some(before) if !same_service(before, service) => {
                    report.changed.push(service.name.clone())
                }
                Some(_) => {}
            }
        }
        report.removed = old
            .config
            .services
            .iter()
            .filter(|s| catalog.config.service(&s.name).is_none())
            .map(|s| s.name.clone())
            .collect();
        for (index, zone) in catalog.zones.iter().enumerate() {
            let origin = zone.origin.to_string();
            let Some(old_index) = old.zones.iter().position(|z| z.origin == zone.origin) else {
                continue;
            };
            if zone_unchanged(&old, old_index, &catalog, index) {
                continue;
            }
            let entry = next
                .zones
                .get_mut(&origin)
                .expect("initial_state fills every zone");
            let bumped = inner
                .state
                .zones
                .get(&origin)
                .map_or(entry.serial, |z| z.serial.wrapping_add(1));
            if serial_after(bumped, entry.serial) {
                entry.serial = bumped;
            }
            report.serials.push((origin, entry.serial));
        }
        self.persist(&next).await?;
        inner.state = next;
        inner.generation = inner.generation.next();
        let snapshot = snapshot(&catalog, &mut inner);
        self.catalog.store(Arc::new(catalog));
        self.records.publish(snapshot);
        Ok(report)
    }

    async fn persist(&self, state: &State) -> Result<(), StateError> {
        let file = self.state_file.clone();
        let state = state.clone();
        tokio::task::spawn_blocking(move || file.save(&state))
            .await
            .expect("the state writer does not panic")
    }
}

fn current(config: &ServiceConfig, state: &State) -> Current {
    Current {
        service: state.services[&config.name].clone(),
        serial: state.zones[&config.zone.to_string()].serial,
    }
}

/// The same service but for where it is written.
fn same_service(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    ServiceConfig {
        line: 0,
        ..a.clone()
    } == ServiceConfig {
        line: 0,
        ..b.clone()
    }
}

/// Whether zone `a` of `old` and zone `b` of `new` serve the same data: same zone file
/// content and the same services.
fn zone_unchanged(old: &Catalog, a: usize, new: &Catalog, b: usize) -> bool {
    let (za, zb) = (&old.zones[a], &new.zones[b]);
    let services = |catalog: &Catalog, origin| -> Vec<ServiceConfig> {
        catalog
            .config
            .services
            .iter()
            .filter(|s| &s.zone == origin)
            .map(|s| ServiceConfig {
                line: 0,
                ..s.clone()
            })
            .collect()
    };
    let records = |zone: &crate::zone::Zone| {
        zone.records
            .iter()
            .map(|r| (r.name.clone(), r.ttl, r.rdata.clone()))
            .collect::<Vec<_>>()
    };
    za.soa == zb.soa
        && za.soa_ttl == zb.soa_ttl
        && records(za) == records(zb)
        && services(old, &za.origin) == services(new, &zb.origin)
}

/// The state to serve `catalog` with: `state` for what it knows, the config for the rest.
/// Zone serials are at least the zone file's.
fn initial_state(catalog: &Catalog, mut state: State) -> State {
    for name in state.services.keys() {
        if catalog.config.service(name).is_none() {
            tracing::warn!(service = %name, "the state file knows a service the config does not; ignoring it (kept in the file)");
        }
    }
    for service in &catalog.config.services {
        state
            .services
            .entry(service.name.clone())
            .or_insert_with(|| ServiceState::new(service.live));
    }
    for zone in &catalog.zones {
        let file_serial = zone.soa.serial;
        let entry = state
            .zones
            .entry(zone.origin.to_string())
            .or_insert(ZoneState {
                serial: file_serial,
            });
        if serial_after(file_serial, entry.serial) {
            entry.serial = file_serial;
        }
    }
    state
}

fn snapshot(catalog: &Catalog, inner: &mut Inner) -> Snapshot {
    let mut services = Vec::new();
    for config in &catalog.config.services {
        let next_id = inner.ids.len() as u16;
        let id = *inner.ids.entry(config.name.clone()).or_insert(next_id);
        let state = &inner.state.services[&config.name];
        // A service first served in steady phase may have given normal-TTL answers from
        // the previous process up to this start; one in a cutover has a persisted deadline
        // that already covers them.
        let last_long_ms = if state.phase.is_long() {
            inner.started_ms
        } else {
            0
        };
        let observed = inner
            .observed
            .entry(config.name.clone())
            .or_insert_with(|| Arc::new(Observed::new(last_long_ms)))
            .clone();
        services.push(ServingService {
            id,
            state: state.clone(),
            observed,
        });
    }
    let serving = Serving {
        generation: inner.generation,
        serials: catalog
            .zones
            .iter()
            .map(|z| inner.state.zones[&z.origin.to_string()].serial)
            .collect(),
        services,
    };
    Snapshot::build(catalog, &serving)
}
