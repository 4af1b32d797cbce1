//! The one place a change happens: changes are serialized, persisted, then published.
//!
//! Every change to a service (a flip, a TTL change of its cutover) takes the same path under
//! one lock: compute the new state, write it to the state file (fsynced), build the new
//! snapshot and swap it in, and only then return. If the write fails nothing else happens
//! and the old record set keeps being served; if the process dies after the write, the
//! restart serves the new one. A reply therefore never claims a change that a crash could
//! undo. Deciding *which* change to make is [`crate::cutover`]'s job.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::catalog::Catalog;
use crate::cutover;
use crate::metrics::ServiceStats;
use crate::records::{Records, Serving, ServingService, Snapshot};
use crate::state::{ServiceState, State, StateError, StateFile, ZoneState, serial_after};

/// Owns the live state and the state file; publishes snapshots to [`Records`].
pub struct Switch {
    catalog: Catalog,
    state_file: Arc<StateFile>,
    records: Arc<Records>,
    /// Per catalog service, kept across snapshots.
    stats: Vec<Arc<ServiceStats>>,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Generation of the last published snapshot.
    generation: u64,
}

/// A service's state and its zone's serial, as of one moment.
#[derive(Debug, Clone)]
pub struct Current {
    pub service: ServiceState,
    pub serial: u32,
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
        let stats: Vec<_> = catalog
            .config
            .services
            .iter()
            .map(|_| Arc::new(ServiceStats::new(started_ms)))
            .collect();
        let inner = Inner {
            state,
            generation: 1,
        };
        let records = Arc::new(Records::new(snapshot(&catalog, &inner, &stats)));
        Ok(Switch {
            catalog,
            state_file: Arc::new(state_file),
            records,
            stats,
            inner: Mutex::new(inner),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    pub fn stats(&self, service: usize) -> &Arc<ServiceStats> {
        &self.stats[service]
    }

    /// The state of the service with catalog index `service`.
    pub async fn current(&self, service: usize) -> Current {
        let inner = self.inner.lock().await;
        current(&self.catalog, &inner.state, service)
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
        service: usize,
        change: impl FnOnce(&mut ServiceState),
    ) -> Result<Current, StateError> {
        let mut inner = self.inner.lock().await;
        let config = &self.catalog.config.services[service];
        let mut next = inner.state.clone();
        let entry = next
            .services
            .get_mut(&config.name)
            .expect("every configured service has state");
        let served = |s: &ServiceState| (s.live, cutover::ttl(config, &s.phase));
        let before = entry.clone();
        change(entry);
        if *entry == before {
            return Ok(current(&self.catalog, &inner.state, service)); // nothing to write
        }
        if served(entry) != served(&before) {
            let zone = next
                .zones
                .get_mut(&config.zone.to_string())
                .expect("every configured zone has state");
            zone.serial = zone.serial.wrapping_add(1);
        }

        let file = self.state_file.clone();
        let saved = tokio::task::spawn_blocking({
            let next = next.clone();
            move || file.save(&next)
        })
        .await
        .expect("the state writer does not panic");
        saved?;

        inner.state = next;
        inner.generation += 1;
        self.records
            .publish(snapshot(&self.catalog, &inner, &self.stats));
        Ok(current(&self.catalog, &inner.state, service))
    }

    /// Catalog index of the service called `name`.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.catalog
            .config
            .services
            .iter()
            .position(|s| s.name == name)
    }
}

fn current(catalog: &Catalog, state: &State, service: usize) -> Current {
    let config = &catalog.config.services[service];
    Current {
        service: state.services[&config.name].clone(),
        serial: state.zones[&config.zone.to_string()].serial,
    }
}

/// The state to serve at start: the loaded state for what it knows, the config for the rest.
/// Zone serials start at the higher of the zone file's and the state file's.
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
            .or_insert(ServiceState {
                live: service.live,
                generation: 0,
                flipped_at_ms: None,
                phase: Default::default(),
            });
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

fn snapshot(catalog: &Catalog, inner: &Inner, stats: &[Arc<ServiceStats>]) -> Snapshot {
    let serving = Serving {
        generation: inner.generation,
        serials: catalog
            .zones
            .iter()
            .map(|z| inner.state.zones[&z.origin.to_string()].serial)
            .collect(),
        services: catalog
            .config
            .services
            .iter()
            .zip(stats)
            .map(|(config, stats)| {
                let state = &inner.state.services[&config.name];
                ServingService {
                    live: state.live,
                    generation: state.generation,
                    ttl: cutover::ttl(config, &state.phase),
                    long: cutover::is_long(&state.phase),
                    phase: state.phase,
                    stats: stats.clone(),
                }
            })
            .collect(),
    };
    Snapshot::build(catalog, &serving)
}
