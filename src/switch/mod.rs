//! The one place a change happens: changes are serialized, persisted, then published.
//!
//! Every change (a flip, a TTL change of a cutover, a reload) takes the same path under one
//! lock: compute the new state, append it to the state journal (fsynced), build the new
//! snapshot and swap it in, and only then return. If the write fails nothing else happens
//! and the old record set keeps being served; if the process dies after the write, the
//! restart serves the new one. A reply therefore never claims a change that a crash could
//! undo. Deciding *which* change to make is [`crate::cutover`]'s and [`crate::reload`]'s job.
//!
//! At start the switch assumes the worst about what the previous process did and cannot
//! say: those rules are `restart`.
//!
//! Services are named, never indexed, across calls: a reload may add, remove and reorder
//! them. Each name gets a small id that stays the same for the life of the process, for the
//! ledger, and run-time observations that survive flips and reloads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::observed::Observed;
use crate::records::content::{self, ServedAs, service_records};
use crate::records::{
    Change, Diff, Digest, Generation, History, Records, Serving, ServingService, Snapshot,
};
use crate::state::format::Delta;
use crate::state::{ServiceState, State, StateError, Store, ZoneState};

mod restart;

use restart::{log_resumed, restart, settle_zones};

/// Owns the live state and its store; publishes snapshots to [`Records`].
pub struct Switch {
    /// The catalog being served; replaced whole by a reload, under the lock.
    catalog: ArcSwap<Catalog>,
    store: Arc<Store>,
    records: Arc<Records>,
    clock: Clock,
    inner: Mutex<Inner>,
    /// Snapshot rewrites running in the background, so shutdown can wait for them.
    background: tokio_util::task::TaskTracker,
    /// State writes that failed (the change refused) and compactions that failed.
    write_errors: Arc<std::sync::atomic::AtomicU64>,
    /// Set while a failed write could not be undone: the disk may hold a change that is not
    /// served. Cleared by the repair loop once the undo succeeds.
    uncertain: Arc<std::sync::Mutex<Option<Uncertain>>>,
}

/// The state file may hold a change the server does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncertain {
    /// What went wrong, as the refusal said it.
    pub reason: String,
    /// Since when (Unix ms).
    pub since_ms: u64,
}

/// How often a write that could not be undone is tried again.
pub const REPAIR_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

struct Inner {
    state: State,
    /// Generation of the last published snapshot.
    generation: Generation,
    /// By service name: kept across snapshots and reloads.
    observed: HashMap<String, Arc<Observed>>,
    /// Stable ids by service name, never reused in this process.
    ids: HashMap<String, u32>,
    /// The IXFR history of each zone, by origin: the changes this process made.
    histories: HashMap<String, History>,
}

/// A service's state and its zone's serial, as of one moment.
#[derive(Debug, Clone)]
pub struct Current {
    pub service: ServiceState,
    pub serial: u32,
    /// The phase's deadline (drain or settle end) on the monotonic clock.
    pub deadline_mono: Option<u64>,
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
    /// New services, each with the color it starts on and where that came from.
    pub added: Vec<String>,
    /// Services no longer configured; their state stays in the state file.
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Zones whose serial moved, with the new serial.
    pub serials: Vec<(String, u32)>,
    /// Runtime address sets that gave way to a changed config list (see
    /// [`ServiceState::yield_to_config`]), in words.
    pub addresses_from_config: Vec<String>,
}

/// Why a reload was not applied. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    #[error(
        "{} has a cutover in progress ({}); removing it from the config would drop it: finish or cancel it first (`flipdns ctl cancel SERVICE`), or reload with --force",
        .0.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
        .0.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join("; ")
    )]
    PendingCutover(Vec<(String, String)>),
    #[error(transparent)]
    State(#[from] StateError),
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Switch(generation {:?})", self.records.load().generation)
    }
}

impl Switch {
    /// Loads the state (the state file wins over `live` in the config), applies the restart
    /// rules, writes it back so an unwritable state directory shows at start rather than at
    /// the first flip, and builds the first snapshot.
    pub fn start(catalog: Catalog, store: Store, clock: Clock) -> Result<Switch, StateError> {
        let loaded = store.load()?.unwrap_or_default();
        let mut inner = Inner {
            state: State::default(),
            generation: Generation(1),
            observed: HashMap::new(),
            ids: HashMap::new(),
            histories: HashMap::new(),
        };
        inner.state = restart(&catalog, loaded, &clock, &mut inner.observed);
        store.rewrite(&inner.state)?;
        log_resumed(&catalog, &inner.state, &clock);
        let catalog = Arc::new(catalog);
        let records = Arc::new(Records::new(snapshot(&catalog, &mut inner)));
        Ok(Switch {
            catalog: ArcSwap::new(catalog),
            store: Arc::new(store),
            records,
            clock,
            inner: Mutex::new(inner),
            background: tokio_util::task::TaskTracker::new(),
            write_errors: Default::default(),
            uncertain: Default::default(),
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
        let current = inner.current(&config);
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
        let before = inner.state.services[&config.name].clone();
        let mut after = before.clone();
        change(&mut after);
        hold(&mut after, &self.clock);
        if after == before {
            return Ok(inner.current(config)); // nothing to write
        }
        let mut delta = Delta::default();
        let ttl = |s: &ServiceState| s.phase.ttl(config.ttl, config.cutover_ttl);
        let mut diff = None;
        let index = catalog.config.by_name[&config.name];
        let old = service_records(config, ServedAs::of(index, config, &before));
        let new = service_records(config, ServedAs::of(index, config, &after));
        if old != new {
            let origin = config.zone.to_string();
            let zone = &inner.state.zones[&origin];
            let serial = zone.serial.wrapping_add(1);
            let digest = Digest(zone.digest).replace(Digest::of(&old), Digest::of(&new));
            delta.zones.insert(
                origin.clone(),
                ZoneState {
                    serial,
                    digest: digest.0,
                },
            );
            if !catalog.config.secondaries.is_empty() {
                after.await_fleet(&before, ttl(&before), ttl(&after), serial);
            }
            let data = &catalog.zones[catalog.zone_index(config)];
            let soa = |serial| content::soa_record(data, serial).rdata;
            diff = Some((
                origin,
                Diff::between(soa(zone.serial), soa(serial), old, new),
            ));
        }
        delta.services.insert(config.name.clone(), after);
        self.persist(delta.clone()).await?;
        delta_into(&mut inner.state, delta);
        if let Some((origin, diff)) = diff {
            inner.remember(&catalog, &origin, diff);
        }
        inner.generation = inner.generation.next();
        let next = changed_snapshot(&catalog, &mut inner, &self.records.load_full(), index);
        self.records.publish(next);
        self.compact_if_due(&inner);
        Ok(inner.current(config))
    }

    /// Serves `catalog` instead of the current one, in one step: unchanged services keep
    /// their color and cutover, new ones start from the state file or the config, removed
    /// ones are kept in the state file. A zone whose content changed gets a higher serial,
    /// and no serial goes backwards. A removed service with a cutover in progress refuses
    /// the reload unless `force`.
    pub async fn reload(&self, catalog: Catalog, force: bool) -> Result<Reloaded, ReloadRefused> {
        let mut inner = self.inner.lock().await;
        let old = self.catalog.load_full();
        let pending: Vec<(String, String)> = old
            .config
            .services
            .iter()
            .filter(|s| catalog.config.service(&s.name).is_none())
            .filter_map(|s| {
                let target = inner.state.services.get(&s.name)?.pending()?;
                Some((s.name.clone(), format!("a flip to {target} is pending")))
            })
            .collect();
        if !pending.is_empty() && !force {
            return Err(ReloadRefused::PendingCutover(pending));
        }
        let (next, report) = reload_plan(&old, &catalog, &inner.state, &self.clock);
        let delta = Delta {
            services: changed(&inner.state.services, &next.services),
            zones: changed(&inner.state.zones, &next.zones),
        };
        if delta != Delta::default() {
            self.persist(delta).await?;
        }
        let catalog = Arc::new(catalog);
        // What changed in each zone whose serial moved, for IXFR.
        let mut diffs = Vec::new();
        for (origin, _) in &report.serials {
            let index = |c: &Catalog| c.zones.iter().position(|z| z.origin.to_string() == *origin);
            let (Some(a), Some(b)) = (index(&old), index(&catalog)) else {
                continue;
            };
            let soa = |c: &Catalog, i: usize, state: &State| {
                content::soa_record(&c.zones[i], state.zones[origin].serial).rdata
            };
            let records = |c: &Catalog, i: usize, state: &State| {
                content::zone_records(c, i, served(c, state)).collect()
            };
            let diff = Diff::between(
                soa(&old, a, &inner.state),
                soa(&catalog, b, &next),
                records(&old, a, &inner.state),
                records(&catalog, b, &next),
            );
            diffs.push((origin.clone(), diff));
        }
        inner.state = next;
        inner.generation = inner.generation.next();
        inner.histories.retain(|origin, _| {
            catalog
                .zones
                .iter()
                .any(|z| z.origin.to_string() == *origin)
        });
        for (origin, diff) in diffs {
            inner.remember(&catalog, &origin, diff);
        }
        let snapshot = snapshot(&catalog, &mut inner);
        self.catalog.store(catalog);
        self.records.publish(snapshot);
        Ok(report)
    }

    /// Waits for background snapshot rewrites to finish (at shutdown).
    pub async fn quiesce(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }

    async fn persist(&self, delta: Delta) -> Result<(), StateError> {
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || store.record(&delta))
            .await
            .expect("the state writer does not panic");
        if written.is_err() {
            self.write_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e @ StateError::Uncertain { .. }) = &written {
            self.became_uncertain(e.to_string());
        }
        written
    }

    /// Whether the state file may hold a change that is not served, and why.
    pub fn uncertain(&self) -> Option<Uncertain> {
        self.uncertain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes the uncertainty and, unless one runs already, starts the loop that undoes the
    /// failed write as soon as the disk lets it, so disk and answers agree again.
    fn became_uncertain(&self, reason: String) {
        let mut uncertain = self.uncertain.lock().unwrap_or_else(|e| e.into_inner());
        let running = uncertain.is_some();
        *uncertain = Some(Uncertain {
            reason,
            since_ms: self.clock.now_ms(),
        });
        if running {
            return;
        }
        let (store, flag) = (self.store.clone(), self.uncertain.clone());
        self.background.spawn(async move {
            loop {
                tokio::time::sleep(REPAIR_EVERY).await;
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.repair()).await {
                    Ok(Ok(_)) => {
                        *flag.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        tracing::info!(
                            "state file repaired: the failed write is undone, and the disk holds what is served"
                        );
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!("state file still cannot be repaired: {e}"),
                    Err(_) => return,
                }
            }
        });
    }

    /// State writes and compactions that failed since start, for `/metrics`.
    pub fn write_errors(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.write_errors.clone()
    }

    /// Rewrites the snapshot in the background once the journal is long enough; the state
    /// copy is taken under the lock, the writing happens outside it. A compaction that cannot
    /// start loses nothing; it is tried again after the next change (and logged by the
    /// background task, never under the lock).
    fn compact_if_due(&self, inner: &Inner) {
        if !self.store.wants_compaction() {
            return;
        }
        let Ok(seq) = self.store.begin_compaction() else {
            self.background.spawn(async {
                tracing::warn!("state compaction not started; it is retried after the next change");
            });
            return;
        };
        let (store, state) = (self.store.clone(), inner.state.clone());
        let errors = self.write_errors.clone();
        self.background.spawn_blocking(move || {
            if let Err(e) = store.finish_compaction(&state, seq) {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("state compaction failed (nothing is lost; it is retried): {e}");
            }
        });
    }
}

/// Each service of `catalog` as `state` serves it.
pub(super) fn served<'a>(
    catalog: &'a Catalog,
    state: &'a State,
) -> impl Iterator<Item = ServedAs<'a>> + 'a {
    catalog
        .config
        .services
        .iter()
        .enumerate()
        .map(|(index, config)| ServedAs::of(index, config, &state.services[&config.name]))
}

/// What a runtime set that gave way to the config's changed list is said as.
pub(super) fn config_won(
    name: &str,
    color: crate::color::Color,
    set: &crate::state::AddressSet,
    config: &crate::config::ServiceConfig,
) -> String {
    let list = |all: &[std::net::IpAddr]| {
        all.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{name} {color}: the config's list changed since the runtime set by {} at {} ({}); {color} answers the config's now: {}",
        set.by,
        crate::clock::format_utc(set.at_ms),
        list(&set.addresses),
        list(config.addresses(color))
    )
}

/// The state after a reload from `old` to `new`, and what changed: the current state for
/// what it knows (colors and cutovers are kept by name), the config for new services, a
/// higher serial for each zone whose content changed, never a lower one.
fn reload_plan(old: &Catalog, new: &Catalog, state: &State, clock: &Clock) -> (State, Reloaded) {
    let mut next = state.clone();
    let mut report = Reloaded::default();
    for service in &new.config.services {
        let from = if state.services.contains_key(&service.name) {
            "the state file"
        } else {
            "the config"
        };
        let entry = next
            .services
            .entry(service.name.clone())
            .or_insert_with(|| ServiceState::new(service.live, service.ttl));
        if service.ttl < entry.ttl {
            // Answers with the longer TTL may be cached for that long still: a restart
            // must not forget them.
            let expiry =
                clock.mono_ms() + u64::from(entry.ttl) * 1000 + clock.coarse_resolution_ms();
            entry.keep_expiry(
                entry.live,
                expiry,
                clock.boot(),
                clock.now_ms(),
                clock.mono_ms(),
            );
        }
        entry.ttl = service.ttl;
        for (color, set) in entry.yield_to_config(service) {
            report
                .addresses_from_config
                .push(config_won(&service.name, color, &set, service));
        }
        match old.config.service(&service.name) {
            None => report.added.push(format!(
                "{} ({} live, from {from})",
                service.name, entry.live
            )),
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
        .filter(|s| new.config.service(&s.name).is_none())
        .map(|s| s.name.clone())
        .collect();
    report.serials = settle_zones(new, &mut next, state);
    (next, report)
}

/// The entries of `next` that differ from `before`.
fn changed<V: Clone + PartialEq>(
    before: &BTreeMap<String, V>,
    next: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    next.iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn delta_into(state: &mut State, delta: Delta) {
    state.services.extend(delta.services);
    state.zones.extend(delta.zones);
}

impl Inner {
    /// Adds `diff` to the IXFR history of zone `origin`, within the zone's bounds.
    fn remember(&mut self, catalog: &Catalog, origin: &str, diff: Diff) {
        let Some(zone) = catalog
            .zones
            .iter()
            .position(|z| z.origin.to_string() == origin)
        else {
            return;
        };
        let limit = catalog.config.limits.ixfr_history;
        self.histories.entry(origin.to_string()).or_default().push(
            diff,
            limit,
            content::zone_size(catalog, zone),
        );
    }

    fn current(&self, config: &ServiceConfig) -> Current {
        let service = self.state.services[&config.name].clone();
        Current {
            deadline_mono: service.phase.held().map(|h| h.mono_ms),
            service,
            serial: self.state.zones[&config.zone.to_string()].serial,
        }
    }
}

/// Holds the deadline of `service`'s phase on the monotonic clock: the moment it is written
/// (or loaded after a restart in another boot) is when its wall-clock value is taken to
/// mean a monotonic one; later wall-clock steps do not move it.
pub(super) fn hold(service: &mut ServiceState, clock: &Clock) {
    service.hold(clock.boot(), |wall| clock.mono_of(wall));
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

fn snapshot(catalog: &Arc<Catalog>, inner: &mut Inner) -> Snapshot {
    let services = catalog
        .config
        .services
        .iter()
        .map(|config| serving_service(inner, &config.name))
        .collect();
    let serving = Serving {
        generation: inner.generation,
        serials: serials(catalog, inner),
        services,
        histories: histories(catalog, inner),
    };
    Snapshot::build(catalog, &serving)
}

/// `current` (a snapshot of `catalog`) with the service at catalog index `index` as the
/// state says now: only that service is rendered again.
fn changed_snapshot(
    catalog: &Arc<Catalog>,
    inner: &mut Inner,
    current: &Snapshot,
    index: usize,
) -> Snapshot {
    if !Arc::ptr_eq(&current.catalog, catalog) {
        return snapshot(catalog, inner); // not expected: changes and reloads take one lock
    }
    let service = serving_service(inner, &catalog.config.services[index].name);
    current.changed(Change {
        generation: inner.generation,
        serials: serials(catalog, inner),
        histories: histories(catalog, inner),
        services: vec![(index, service)],
    })
}

fn serving_service(inner: &mut Inner, name: &str) -> ServingService {
    // Ids are never reused, so that the ledger never confuses a removed service with a new
    // one; they fit the ledger's 24 bits for the first 16.7 million names a process sees.
    let next_id = inner.ids.len() as u32;
    let id = *inner.ids.entry(name.to_string()).or_insert(next_id);
    // A service added by a reload has given no answers yet.
    let observed = inner
        .observed
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(Observed::new(0)))
        .clone();
    ServingService {
        id,
        state: inner.state.services[name].clone(),
        observed,
    }
}

fn serials(catalog: &Catalog, inner: &Inner) -> Vec<u32> {
    catalog
        .zones
        .iter()
        .map(|z| inner.state.zones[&z.origin.to_string()].serial)
        .collect()
}

fn histories(catalog: &Catalog, inner: &Inner) -> Vec<Arc<History>> {
    catalog
        .zones
        .iter()
        .map(|z| {
            let history = inner.histories.get(&z.origin.to_string());
            Arc::new(history.cloned().unwrap_or_default())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::color::Color;
    use crate::state::disk::{FaultyDisk, Op};
    use crate::state::store::read_state;

    /// A flip whose write fails at any call of the write protocol is refused, the old color
    /// keeps being served, and the disk says the old color too: a restart serves what the
    /// reply said.
    #[tokio::test]
    async fn a_flip_that_cannot_be_written_leaves_disk_and_answers_as_the_reply_says() {
        for op in [Op::Append, Op::SyncFile] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let disk = Arc::new(FaultyDisk::default());
            let store = Store::open_on(&path, disk.clone()).unwrap();
            let switch = Switch::start(crate::fixture::catalog(), store, Clock::System).unwrap();
            disk.fail(op, 0);
            let flipped = switch.apply("app", |s| s.live = Color::Green).await;
            assert!(flipped.is_err(), "{op:?}: refused");
            assert_eq!(
                switch
                    .write_errors()
                    .load(std::sync::atomic::Ordering::Relaxed),
                1,
                "{op:?}: counted for /metrics"
            );
            let served = switch.records().load().service("app").unwrap().live();
            assert_eq!(served, Color::Blue, "{op:?}: still served");
            assert_eq!(
                read_state(&path).unwrap().unwrap().services["app"].live,
                Color::Blue,
                "{op:?}: on disk"
            );
            drop(switch);
            let restarted = Switch::start(
                crate::fixture::catalog(),
                Store::open(&path).unwrap(),
                Clock::System,
            )
            .unwrap();
            assert_eq!(
                restarted.records().load().service("app").unwrap().live(),
                Color::Blue,
                "{op:?}: after a restart"
            );
        }
    }
}
