//! The one place a change happens: flips are serialized, persisted, then published.
//!
//! Every change takes the same path under one lock: compute the new state, write it to the
//! state file (fsynced), build the new snapshot and swap it in, and only then reply. If the
//! write fails nothing else happens and the old color keeps being served; if the process dies
//! after the write, the restart serves the new color. A reply therefore never claims a flip
//! that a crash could undo.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::admin::protocol::{Answers, Flipped, ServiceStatus, Status, ZoneStatus};
use crate::catalog::Catalog;
use crate::color::Color;
use crate::metrics::ServiceCounters;
use crate::records::{Records, Serving, ServingService, Snapshot};
use crate::state::{ServiceState, State, StateError, StateFile, ZoneState, serial_after};

/// Why a change was refused. Nothing changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("unknown service {name:?} (configured: {known})")]
    UnknownService { name: String, known: String },
    #[error("flip not done, still serving {color}: {source}")]
    Persist { color: Color, source: StateError },
}

/// Owns the live state and the state file; publishes snapshots to [`Records`].
pub struct Switch {
    catalog: Catalog,
    state_file: Arc<StateFile>,
    records: Arc<Records>,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Generation of the last published snapshot.
    generation: u64,
    /// Per catalog service, kept across snapshots.
    counters: Vec<Arc<ServiceCounters>>,
}

impl Switch {
    /// Loads the state file (the state file wins over `live` in the config), writes it back
    /// so an unwritable state directory shows at start rather than at the first flip, and
    /// builds the first snapshot.
    pub fn start(catalog: Catalog, state_file: StateFile) -> Result<Switch, StateError> {
        let loaded = state_file.load()?.unwrap_or_default();
        let state = initial_state(&catalog, loaded);
        state_file.save(&state)?;
        let counters = catalog
            .config
            .services
            .iter()
            .map(|_| Arc::default())
            .collect();
        let inner = Inner {
            state,
            generation: 1,
            counters,
        };
        let records = Arc::new(Records::new(snapshot(&catalog, &inner)));
        Ok(Switch {
            catalog,
            state_file: Arc::new(state_file),
            records,
            inner: Mutex::new(inner),
        })
    }

    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    /// Makes `to` the live color of `service`. A flip to the live color changes nothing.
    pub async fn flip(&self, service: &str, to: Color) -> Result<Flipped, ChangeError> {
        let mut inner = self.inner.lock().await;
        let index = self.service_index(service)?;
        let config = &self.catalog.config.services[index];
        let zone = config.zone.to_string();
        let current = &inner.state.services[&config.name];
        let from = current.live;
        if from == to {
            return Ok(Flipped {
                service: config.name.clone(),
                from,
                to,
                changed: false,
                generation: current.generation,
                serial: inner.state.zones[&zone].serial,
            });
        }
        let mut next = inner.state.clone();
        let entry = next
            .services
            .get_mut(&config.name)
            .expect("every configured service has state");
        entry.live = to;
        entry.generation += 1;
        entry.flipped_at_ms = Some(now_ms());
        let generation = entry.generation;
        let serial = next
            .zones
            .get_mut(&zone)
            .expect("every configured zone has state");
        serial.serial = serial.serial.wrapping_add(1);
        let serial = serial.serial;

        let file = self.state_file.clone();
        let saved = tokio::task::spawn_blocking({
            let next = next.clone();
            move || file.save(&next)
        })
        .await
        .expect("the state writer does not panic");
        saved.map_err(|source| ChangeError::Persist {
            color: from,
            source,
        })?;

        inner.state = next;
        inner.generation += 1;
        self.records.publish(snapshot(&self.catalog, &inner));
        inner.counters[index]
            .flips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(service = %config.name, %from, %to, generation, serial, "flipped");
        Ok(Flipped {
            service: config.name.clone(),
            from,
            to,
            changed: true,
            generation,
            serial,
        })
    }

    /// Every service and zone as served now; only `service` when given.
    pub async fn status(&self, service: Option<&str>) -> Result<Status, ChangeError> {
        if let Some(name) = service {
            self.service_index(name)?;
        }
        let inner = self.inner.lock().await;
        let snapshot = self.records.load_full();
        let services = self
            .catalog
            .config
            .services
            .iter()
            .zip(&snapshot.services)
            .filter(|(config, _)| service.is_none_or(|name| config.name == name))
            .map(|(config, served)| {
                let state = &inner.state.services[&config.name];
                ServiceStatus {
                    name: config.name.clone(),
                    fqdn: served.fqdn.to_string(),
                    zone: config.zone.to_string(),
                    live: served.live,
                    generation: served.generation,
                    flipped_at_ms: state.flipped_at_ms,
                    ttl: served.ttl,
                    blue: config.blue.clone(),
                    green: config.green.clone(),
                    answers: Answers {
                        blue: served.counters.answers(Color::Blue),
                        green: served.counters.answers(Color::Green),
                    },
                }
            })
            .collect();
        let zones = snapshot
            .zones
            .iter()
            .map(|z| ZoneStatus {
                origin: z.origin.to_string(),
                serial: z.serial,
            })
            .collect();
        Ok(Status {
            generation: snapshot.generation,
            services,
            zones,
        })
    }

    fn service_index(&self, name: &str) -> Result<usize, ChangeError> {
        let services = &self.catalog.config.services;
        services
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| ChangeError::UnknownService {
                name: name.to_string(),
                known: services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
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

fn snapshot(catalog: &Catalog, inner: &Inner) -> Snapshot {
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
            .zip(&inner.counters)
            .map(|(config, counters)| {
                let state = &inner.state.services[&config.name];
                ServingService {
                    live: state.live,
                    generation: state.generation,
                    ttl: config.ttl,
                    counters: counters.clone(),
                }
            })
            .collect(),
    };
    Snapshot::build(catalog, &serving)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
