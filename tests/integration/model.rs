//! The cutover's promises (I1–I4 in `src/cutover/mod.rs`) against random sequences of
//! everything that can happen to a service: answers with the normal and the short TTL,
//! prepare, flip, flip --now, rollback, cancel, reload, restart, kill -9, time passing,
//! wall-clock steps, health going up and down.
//!
//! The real switch, state store (on tmpfs where there is one), cutover tasks, ledger and
//! query handler run in process on a fake clock (tokio's paused time), so minutes pass in
//! microseconds. A reference model keeps the ground truth no restart can forget: every
//! answer handed out, with its color, TTL and expiry. After every step it checks:
//! - I1: a flip from O (other than one asked for with `--now`, or one made while a `--now`
//!   flip's exposure lasts) comes after every normal-TTL answer of O has expired;
//! - I2: the straggler report says "drained" only after every answer of O has expired;
//! - I3: a rollback while settling flips at once (or is refused by health, never by the
//!   interval);
//! - I4: a reload keeps every live color and pending flip, and refuses to drop one;
//! - the state on disk, the snapshot and the answer served agree;
//! - liveness: with health up, a pending flip has happened once its deadline (as the model
//!   computes it, restarts included) is well past.
//!
//! Seeded and reproducible: a failure names its seed and step; `FLIPDNS_MODEL_SEED=N`
//! replays one sequence, `FLIPDNS_MODEL_SEQUENCES=N` runs more.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use flipdns::catalog::Catalog;
use flipdns::clock::{Clock, FakeTime};
use flipdns::color::Color;
use flipdns::config::{Config, HealthConfig, ServiceConfig};
use flipdns::cutover::{Action, Cutovers, Event, HealthGate, Origin, Outcome, RefusalKind};
use flipdns::dns::Handler;
use flipdns::fleet::Fleet;
use flipdns::observed::answers::Recorder;
use flipdns::observed::counters::Counters;
use flipdns::observed::{AddressHealth, ColorHealth};
use flipdns::reload::Reloader;
use flipdns::state::{Phase, Store};
use flipdns::stragglers::Ledger;
use flipdns::switch::Switch;
use flipdns::wire::Transport;
use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TTL: u32 = 60;
const CUTOVER_TTL: u32 = 5;
const ZONE: &str =
    "$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n";

fn config_text(ttl: u32, with_api: bool) -> String {
    let api = if with_api {
        "[[service]]\nname = \"api\"\nblue = [\"192.0.2.20\"]\ngreen = [\"198.51.100.20\"]\nlive = \"blue\"\nttl = 30\ncutover_ttl = 5\nsettle = \"30s\"\n"
    } else {
        ""
    };
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"s\"\nstate_file = \"state.json\"\n[ledger]\ncapacity = 1000\n[[zone]]\norigin = \"svc.example.com.\"\nfile = \"svc.zone\"\n[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = {ttl}\ncutover_ttl = {CUTOVER_TTL}\nsettle = \"30s\"\nmin_flip_interval = \"2m\"\n[service.health]\nkind = \"tcp\"\nport = 9\n{api}"
    )
}

/// A health gate whose answer the test sets: healthy or not, how many of the next checks
/// panic (a bug in the task that runs them), and how many have.
struct Scripted(AtomicBool, AtomicU32, AtomicU32);

impl HealthGate for Scripted {
    fn check<'a>(
        &'a self,
        _service: &'a ServiceConfig,
        health: &'a HealthConfig,
        color: Color,
        addresses: &'a [IpAddr],
    ) -> Pin<Box<dyn Future<Output = ColorHealth> + Send + 'a>> {
        let healthy = self.0.load(Relaxed);
        let panics = self
            .1
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            if panics {
                self.2.fetch_add(1, Relaxed);
                panic!("a scripted bug in a health check");
            }
            ColorHealth {
                color,
                checked_at_ms: 0,
                addresses: addresses
                    .iter()
                    .map(|&address| AddressHealth {
                        address,
                        port: health.port,
                        healthy,
                        detail: if healthy { "ok" } else { "down" }.into(),
                    })
                    .collect(),
            }
        })
    }
}

/// One server process, in process.
struct Running {
    switch: Arc<Switch>,
    cutovers: Arc<Cutovers>,
    reloader: Reloader,
    handler: Handler,
    ledger: Arc<Ledger>,
    /// The cutovers' lifecycle events, for the audit trail.
    events: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Event>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

struct World {
    dir: PathBuf,
    clock: Clock,
    time: Arc<FakeTime>,
    gate: Arc<Scripted>,
    running: Option<Running>,
    config_ttl: u32,
    with_api: bool,
}

impl World {
    /// A world in `dir` on a fake clock, health up, not started; with the second service
    /// `api` when `with_api`.
    fn new(dir: &Path, with_api: bool) -> World {
        let (clock, time) = Clock::fake(1_800_000_000_000);
        World {
            dir: dir.to_path_buf(),
            clock,
            time,
            gate: Arc::new(Scripted(
                AtomicBool::new(true),
                AtomicU32::new(0),
                AtomicU32::new(0),
            )),
            running: None,
            config_ttl: TTL,
            with_api,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("flipdns.toml")
    }

    fn write_config(&self) {
        std::fs::write(
            self.config_path(),
            config_text(self.config_ttl, self.with_api),
        )
        .unwrap();
    }

    fn start(&mut self) {
        let catalog = Config::load(&self.config_path())
            .and_then(Catalog::load)
            .unwrap();
        // Another test's `Command::spawn` can hold a copy of the lock file's descriptor
        // between its fork and its exec (a few milliseconds): wait for it.
        let path = self.dir.join("state.json");
        let mut tries = 0;
        let store = loop {
            match Store::open(&path) {
                Ok(store) => break store,
                Err(flipdns::state::StateError::Locked { .. }) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        };
        let switch = Arc::new(Switch::start(catalog, store, self.clock.clone()).unwrap());
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        let gate: Arc<dyn HealthGate> = self.gate.clone();
        // No secondaries in the model: the fleet has no workers.
        let fleet = Fleet::start(
            &switch.catalog(),
            switch.records().clone(),
            self.clock.clone(),
            &shutdown,
            &tracker,
        );
        let cutovers = Arc::new(Cutovers::start(
            switch.clone(),
            fleet.clone(),
            self.clock.clone(),
            gate,
            &shutdown,
            &tracker,
        ));
        let ledger = Ledger::start(
            1000,
            switch.records().clone(),
            self.clock.clone(),
            Duration::from_secs(3600), // reports drain the queue themselves
            &shutdown,
            &tracker,
        );
        let handler = Handler::new(
            switch.records().clone(),
            Arc::new(Counters::default()),
            self.clock.clone(),
        );
        let events = cutovers.events().expect("taken once");
        self.running = Some(Running {
            events: tokio::sync::Mutex::new(events),
            reloader: Reloader::new(switch.clone(), cutovers.clone(), fleet, self.clock.clone()),
            switch,
            cutovers,
            handler,
            ledger,
            shutdown,
            tracker,
        });
    }

    /// Stops the process: its tasks end, its memory is gone; only the disk remains.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.cancel();
            running.tracker.close();
            running.tracker.wait().await;
            running.switch.quiesce().await;
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("started")
    }
}

/// What one answer said.
#[derive(Debug, Clone, Copy)]
struct Answer {
    color: Color,
    ttl: u32,
}

fn ask(running: &Running, resolver: u8) -> Answer {
    let packet = flipdns::fixture::query("app.svc.example.com", 1);
    let client = SocketAddr::new(IpAddr::from([10, 0, 0, resolver]), 5353);
    let mut out = Vec::new();
    let mut recorder = Recorder::new(Some(running.ledger.intake()));
    assert!(
        running
            .handler
            .handle(&packet, client, Transport::Udp, &mut out, &mut recorder)
    );
    recorder.flush();
    let message = Message::from_vec(&out).unwrap();
    let record = &message.answers[0];
    let color = match &record.data {
        RData::A(a) if a.0.octets()[0] == 192 => Color::Blue,
        RData::A(_) => Color::Green,
        other => panic!("unexpected answer {other:?}"),
    };
    Answer {
        color,
        ttl: record.ttl,
    }
}

/// Every address the service name answers with now.
fn answered_addresses(running: &Running) -> Vec<IpAddr> {
    let packet = flipdns::fixture::query("app.svc.example.com", 1);
    let client = SocketAddr::new(IpAddr::from([10, 0, 0, 99]), 5353);
    let mut out = Vec::new();
    let mut recorder = Recorder::new(None);
    assert!(
        running
            .handler
            .handle(&packet, client, Transport::Udp, &mut out, &mut recorder)
    );
    let message = Message::from_vec(&out).unwrap();
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// A secondary's answer to resolver 10.0.0.20, through the dnstap path: the frame as its
/// stream carries it, decoded and handed to the ledger (and the drain input) as the
/// collector does. A secondary that lags behind a prepare still gives the live color with
/// the normal TTL; after a flip (settling) none does: the color it gave with that TTL is
/// the old one, already counted when it was live here.
fn secondary_answer(world: &World) -> Option<Answer> {
    use prost::Message as _;
    let running = world.running();
    let snapshot = running.switch.records().load_full();
    let view = snapshot.service("app").unwrap();
    if matches!(view.state.phase, Phase::Settling { .. }) {
        return None;
    }
    let live = view.live();
    let address = match live {
        Color::Blue => [192, 0, 2, 10],
        Color::Green => [198, 51, 100, 10],
    };
    let payload = crate::common::dnstap::answer(
        "ns2",
        [10, 0, 0, 20],
        "app.svc.example.com.",
        address,
        world.config_ttl,
        world.clock.now_ms(),
    );
    let frame = flipdns::dnstap::message::Dnstap::decode(payload.as_slice()).unwrap();
    let told = flipdns::dnstap::answer::observation(&frame, &snapshot, &world.clock, 1).unwrap();
    if let Some(service) = &told.moves_drain {
        running.cutovers.answered_long(service);
    }
    running.ledger.observe(&[told.observation]);
    Some(Answer {
        color: live,
        ttl: world.config_ttl,
    })
}

/// The ground truth: every answer handed out, in monotonic milliseconds.
#[derive(Debug, Default)]
struct Truth {
    /// Per color: when the last normal-TTL answer expires.
    long_expiry: [u64; 2],
    /// Per color: when the last answer of any TTL expires.
    expiry: [u64; 2],
    /// Per color: a `--now` flip from it left its normal-TTL answers in caches, on the
    /// operator's say-so, until this moment; a rollback while settling (immediate by I3)
    /// before then is exempt from I1.
    exposed_until: [u64; 2],
    /// A task panicked during this step: its command may have failed (`Busy`).
    faulted: bool,
    /// Every answer each resolver got: (monotonic ms, color, TTL, the service's flip count
    /// then), by its last octet.
    answers: std::collections::HashMap<u8, Vec<(u64, Color, u32, u64)>>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Ask,
    /// A secondary answers the service name with the normal TTL and the live color, as its
    /// dnstap stream says (it lags, or a resolver asked it just before a prepare).
    SecondaryAnswer,
    Prepare,
    Flip {
        now: bool,
    },
    Rollback,
    Cancel,
    Reload,
    Restart,
    Kill9,
    Wait(u64),
    WallClockJump(i64),
    Health(bool),
    /// The next health check panics: the task running it must be replaced, and what it
    /// was waiting for still happen.
    Panic,
    /// A release registers new addresses for a color: the idle one (or the live one,
    /// `force` or not), `count` of them (0: an empty set, refused) from a pool of the
    /// color's own (so an answer still says its color), starting at `offset`.
    SetAddresses {
        live: bool,
        force: bool,
        count: u8,
        offset: u8,
    },
}

fn step(rng: &mut Rng) -> Step {
    match rng.below(100) {
        0..=20 => Step::Ask,
        21..=24 => Step::SecondaryAnswer,
        25..=31 => Step::Prepare,
        32..=41 => Step::Flip {
            now: rng.below(3) == 0,
        },
        42..=48 => Step::Rollback,
        49..=53 => Step::Cancel,
        54..=58 => Step::Reload,
        59..=62 => Step::Restart,
        63..=66 => Step::Kill9,
        67..=90 => Step::Wait([500, 3_000, 20_000, 61_000, 200_000][rng.below(5) as usize]),
        91..=94 => Step::WallClockJump([-90_000, -5_000, 5_000, 90_000][rng.below(4) as usize]),
        95..=96 => Step::Health(rng.below(3) != 0),
        97..=98 => Step::SetAddresses {
            live: rng.below(3) == 0,
            force: rng.below(2) == 0,
            count: rng.below(4) as u8,
            offset: rng.below(3) as u8,
        },
        _ => Step::Panic,
    }
}

fn tmp_root() -> Option<&'static Path> {
    let shm = Path::new("/dev/shm");
    shm.is_dir().then_some(shm)
}

#[test]
fn the_cutover_keeps_its_promises_in_random_sequences() {
    let sequences: u64 = std::env::var("FLIPDNS_MODEL_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seeds: Vec<u64> = match std::env::var("FLIPDNS_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => (1..=sequences).collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (mut steps, mut panics) = (0, 0);
    for seed in seeds {
        let (s, p) = runtime.block_on(sequence(seed));
        (steps, panics) = (steps + s, panics + p);
    }
    eprintln!("model: {steps} steps checked, {panics} tasks panicked and were replaced");
    assert!(
        panics > 0 || sequences < 100,
        "the sequences exercised no panic"
    );
}

/// Runs one sequence: the steps checked, and how many tasks panicked.
async fn sequence(seed: u64) -> (usize, u32) {
    let mut builder = tempfile::Builder::new();
    builder.prefix("flipdns-model");
    let dir = match tmp_root() {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .unwrap();
    std::fs::write(dir.path().join("svc.zone"), ZONE).unwrap();
    let mut world = World::new(dir.path(), true);
    world.write_config();
    // The clocks move only while the model waits: waiting for the disk takes no time.
    world.time.freeze();
    world.start();
    let mut truth = Truth::default();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut live = Color::Blue;
    let count = 20 + rng.below(30) as usize;
    for index in 0..count {
        let step = step(&mut rng);
        let context = format!("seed {seed}, step {index} ({step:?})");
        let before = world
            .running()
            .switch
            .service("app")
            .await
            .unwrap()
            .1
            .service;
        let fired = world.gate.2.load(Relaxed);
        let outcome = apply(&mut world, &mut truth, step).await;
        truth.faulted = world.gate.2.load(Relaxed) > fired;
        let after = world
            .running()
            .switch
            .service("app")
            .await
            .unwrap()
            .1
            .service;
        if std::env::var("FLIPDNS_MODEL_SEED").is_ok() {
            eprintln!(
                "{index:3} t={:>8} {step:?} -> {outcome:?}\n    {:?}\n    truth {truth:?}",
                world.clock.mono_ms(),
                after
            );
        }
        check(
            &world, &mut truth, &mut live, step, &before, &after, outcome, &context,
        )
        .await;
    }
    // Liveness: health up, no more bugs, and long enough for every deadline to pass.
    world.gate.0.store(true, Relaxed);
    world.gate.1.store(0, Relaxed);
    world.time.thaw();
    tokio::time::sleep(Duration::from_secs(400)).await;
    world.time.freeze();
    let last = world
        .running()
        .switch
        .service("app")
        .await
        .unwrap()
        .1
        .service;
    assert_eq!(
        last.pending(),
        None,
        "seed {seed}: a pending flip with health up has happened 400 s on ({last:?})"
    );
    let panics = world.gate.2.load(Relaxed);
    world.stop().await;
    (count, panics)
}

/// What a command step returned: `Ok(outcome)` or `Err(kind)`; `None` for other steps.
type StepOutcome = Option<Result<Outcome, RefusalKind>>;

/// Whether `step` may begin a new change: a command (a flip or rollback while settling
/// begins one of its own), or a kill that a command in flight beat.
fn steady_step_begins(step: Step) -> bool {
    matches!(
        step,
        Step::Prepare | Step::Flip { .. } | Step::Rollback | Step::Kill9
    )
}

/// `count` addresses of `color`'s own pool from `offset`: blue's in 192.0.2.0/24, green's in
/// 198.51.100.0/24, as the config's (an answer's first octet says its color).
fn pool(color: Color, count: u8, offset: u8) -> Vec<IpAddr> {
    let net = match color {
        Color::Blue => [192, 0, 2],
        Color::Green => [198, 51, 100],
    };
    (0..count)
        .map(|i| IpAddr::from([net[0], net[1], net[2], 20 + offset + i]))
        .collect()
}

/// A command's origin: a new change id each time.
fn origin() -> Origin {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Origin {
        change: NEXT.fetch_add(1, Relaxed),
        by: "model".into(),
        who: "model".into(),
    }
}

async fn command(world: &World, action: Action) -> StepOutcome {
    Some(
        world
            .running()
            .cutovers
            .command("app", action, origin())
            .await
            .map(|d| d.outcome)
            .map_err(|r| r.kind),
    )
}

async fn apply(world: &mut World, truth: &mut Truth, step: Step) -> StepOutcome {
    match step {
        Step::Ask => {
            let resolver = 1 + (world.clock.mono_ms() % 3) as u8;
            let answer = ask(world.running(), resolver);
            note(truth, world, resolver, answer);
            None
        }
        Step::SecondaryAnswer => {
            if let Some(answer) = secondary_answer(world) {
                note(truth, world, 20, answer);
                // The service's task writes the later deadline (the disk write on a thread
                // of its own); a restart within those milliseconds is not this step's.
                let expiry = world.clock.mono_ms() + u64::from(answer.ttl) * 1000;
                for round in 0..5000 {
                    let (_, current) = world.running().switch.service("app").await.unwrap();
                    let preparing = matches!(current.service.phase, Phase::Preparing { .. });
                    if !preparing || current.deadline_mono.is_some_and(|d| d >= expiry) {
                        break;
                    }
                    if round % 10 == 9 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    tokio::task::yield_now().await;
                }
            }
            None
        }
        Step::Prepare => command(world, Action::Prepare).await,
        Step::Flip { now } => {
            let current = world.running().switch.service("app").await.unwrap().1;
            let to = current
                .service
                .pending()
                .unwrap_or(current.service.live.other());
            command(
                world,
                Action::Flip {
                    to,
                    now,
                    force: false,
                },
            )
            .await
        }
        Step::Rollback => command(world, Action::Rollback { force: false }).await,
        Step::Cancel => command(world, Action::Cancel).await,
        Step::SetAddresses {
            live,
            force,
            count,
            offset,
        } => {
            let state = world
                .running()
                .switch
                .service("app")
                .await
                .unwrap()
                .1
                .service;
            let color = if live { state.live } else { state.live.other() };
            let addresses = pool(color, count, offset);
            let action = Action::SetAddresses {
                color,
                addresses,
                force,
                check: false,
            };
            command(world, action).await
        }
        Step::Reload => {
            let api_pending = world
                .running()
                .switch
                .service("api")
                .await
                .and_then(|(_, c)| c.service.pending());
            world.config_ttl = if world.config_ttl == TTL { 30 } else { TTL };
            if api_pending.is_none() {
                world.with_api = !world.with_api;
            }
            world.write_config();
            let reloaded = world.running().reloader.reload(false).await;
            assert!(reloaded.is_ok(), "{reloaded:?}");
            None
        }
        Step::Restart | Step::Kill9 => {
            if let Step::Kill9 = step {
                // A command in flight when the process dies.
                let cutovers = world.running().cutovers.clone();
                let in_flight = tokio::spawn(async move {
                    let _ = cutovers
                        .command(
                            "app",
                            Action::Flip {
                                to: Color::Green,
                                now: false,
                                force: false,
                            },
                            origin(),
                        )
                        .await;
                });
                tokio::task::yield_now().await;
                world.stop().await;
                in_flight.abort();
                let _ = in_flight.await;
            }
            world.stop().await;
            world.start();
            None
        }
        Step::Wait(ms) => {
            world.time.thaw();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            world.time.freeze();
            None
        }
        Step::WallClockJump(ms) => {
            world.time.step(ms);
            None
        }
        Step::Health(up) => {
            world.gate.0.store(up, Relaxed);
            None
        }
        Step::Panic => {
            world.gate.1.store(1, Relaxed);
            None
        }
    }
}

fn note(truth: &mut Truth, world: &World, resolver: u8, answer: Answer) {
    let now = world.clock.mono_ms();
    let flips = world
        .running()
        .switch
        .records()
        .load()
        .service("app")
        .unwrap()
        .state
        .flips
        .0;
    truth
        .answers
        .entry(resolver)
        .or_default()
        .push((now, answer.color, answer.ttl, flips));
    let expiry = now + u64::from(answer.ttl) * 1000;
    let c = answer.color.index();
    truth.expiry[c] = truth.expiry[c].max(expiry);
    if answer.ttl != CUTOVER_TTL {
        truth.long_expiry[c] = truth.long_expiry[c].max(expiry);
    }
}

fn never_late_within_a_ttl_of_the_flip(running: &Running, truth: &Truth, context: &str) {
    let listing = flipdns::stragglers::Listing {
        classes: vec![flipdns::stragglers::ResolverClass::Straggler],
        limit: 100,
    };
    let Some((report, _)) = running.ledger.report("app", &listing) else {
        return;
    };
    let Some(flip) = report.flip else { return };
    for (_, entry) in &report.resolvers {
        let IpAddr::V4(v4) = entry.key.resolver() else {
            continue;
        };
        let answers = &truth.answers[&v4.octets()[3]];
        let flips = u64::from(flip.flips);
        let held_ttl = answers
            .iter()
            .rev()
            .find(|a| a.3 < flips && Some(a.1) == flip.from)
            .map_or(0, |a| a.2);
        let first_new = answers.iter().find(|a| a.3 == flips && a.1 == flip.to);
        if let Some((at, _, _, _)) = first_new {
            assert!(
                *at > flip.at_ms + u64::from(held_ttl) * 1000 + 2000,
                "{context}: {} is a straggler, but got {} {} ms after the flip, within its TTL of {held_ttl} s and 2 s: {entry:?}",
                v4,
                flip.to,
                at - flip.at_ms
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn check(
    world: &World,
    truth: &mut Truth,
    live: &mut Color,
    step: Step,
    before: &flipdns::state::ServiceState,
    after: &flipdns::state::ServiceState,
    outcome: StepOutcome,
    context: &str,
) {
    let running = world.running();
    let now = world.clock.mono_ms();
    // State on disk, snapshot and answer agree.
    let disk = flipdns::state::store::read_state(&world.dir.join("state.json"))
        .unwrap()
        .unwrap();
    let snapshot = running.switch.records().load_full();
    let view = snapshot.service("app").unwrap();
    assert_eq!(&disk.services["app"], after, "{context}: disk and state");
    assert_eq!(view.state, *after, "{context}: snapshot and state");
    let answer = ask(running, 9);
    note(truth, world, 9, answer);
    assert_eq!(answer.color, after.live, "{context}: the answer's color");
    let ttl = after.phase.ttl(world.config_ttl, CUTOVER_TTL);
    assert_eq!(answer.ttl, ttl, "{context}: the answer's TTL");

    // I1: a flip from `old` comes after every normal-TTL answer of `old` expired.
    if after.live != *live {
        let old = *live;
        let at = world
            .clock
            .mono_of(after.flipped_at_ms.expect("a flip has a time"));
        let asked_now = matches!(step, Step::Flip { now: true });
        let rollback = matches!(before.phase, Phase::Settling { .. });
        if asked_now {
            let exposed = &mut truth.exposed_until[old.index()];
            *exposed = (*exposed).max(truth.long_expiry[old.index()]);
        } else if !(rollback && at < truth.exposed_until[old.index()]) {
            assert!(
                at + 1 >= truth.long_expiry[old.index()],
                "{context}: I1: flipped from {old} at {at} before its last normal-TTL answer expired at {}",
                truth.long_expiry[old.index()]
            );
        }
        *live = after.live;
    }

    // Every change is audited under one id from the command that began it until the service
    // is steady again, restarts included; each thing it did on its own says which.
    let steady = matches!(after.phase, Phase::Steady) && after.fleet.is_none();
    assert_eq!(
        after.change.is_none(),
        steady,
        "{context}: a change in progress has an id, a steady service none: {after:?}"
    );
    if let (Some(b), Some(a)) = (&before.change, &after.change)
        && !steady_step_begins(step)
    {
        assert_eq!(b, a, "{context}: a change kept its id");
    }
    while let Ok(event) = running.events.lock().await.try_recv() {
        assert!(
            event.change.is_some(),
            "{context}: a lifecycle event without its change: {event:?}"
        );
    }

    // I2: "drained" only once every answer of the old color has expired.
    if let Some((report, _)) = running.ledger.report(
        "app",
        &flipdns::stragglers::Listing {
            classes: Vec::new(),
            limit: 10,
        },
    ) && let Some(flip) = report.flip
        && report.drained
    {
        let old = flip.from.unwrap_or(flip.to.other());
        if old != after.live {
            assert!(
                now + 1 >= truth.expiry[old.index()],
                "{context}: I2: the report says {old} drained at {now}, but an answer of it expires at {}",
                truth.expiry[old.index()]
            );
        }
    }

    // The report's edge: a resolver whose clients saw the new color within its TTL and 2 s
    // of the flip is never a straggler (it did no worse than a cache that obeys TTLs).
    never_late_within_a_ttl_of_the_flip(running, truth, context);

    // I3: a rollback while settling flips at once, or is refused by health only.
    if let (Step::Rollback, Phase::Settling { .. }) = (step, before.phase) {
        match outcome {
            Some(Ok(Outcome::Flipped)) => {}
            Some(Err(RefusalKind::Unhealthy)) if !world.gate.0.load(Relaxed) => {}
            Some(Err(RefusalKind::Busy)) if truth.faulted => {}
            other => panic!("{context}: I3: a rollback while settling gave {other:?}"),
        }
    }
    if let Some(Err(RefusalKind::Interval)) = outcome {
        assert!(
            !matches!(before.phase, Phase::Settling { .. }),
            "{context}: I3: the anti-flap rule refused a rollback while settling"
        );
    }

    // Runtime address sets: the service name answers the live color's set, a refused set
    // changes nothing, a set is never made on the color a cutover heads to or settles on,
    // nor on the live color without force; a reload of an unchanged list keeps them.
    let config = running
        .switch
        .catalog()
        .config
        .service("app")
        .unwrap()
        .clone();
    assert_eq!(
        answered_addresses(running),
        after.addresses(&config, after.live),
        "{context}: the service name answers the live color's set"
    );
    if let Step::SetAddresses { live, force, .. } = step {
        let color = if live {
            before.live
        } else {
            before.live.other()
        };
        let heading = match before.phase {
            Phase::Preparing {
                target: Some(t), ..
            } => Some(t),
            Phase::Settling { .. } => Some(before.live),
            _ => None,
        };
        match outcome {
            Some(Ok(Outcome::AddressesSet)) => {
                assert!(
                    !live || force,
                    "{context}: the live color set without force"
                );
                assert_ne!(
                    heading,
                    Some(color),
                    "{context}: set during a cutover to it"
                );
                assert_ne!(
                    after.addresses(&config, color),
                    before.addresses(&config, color),
                    "{context}: set, and changed"
                );
            }
            Some(Err(_)) | Some(Ok(Outcome::AddressesUnchanged)) if !truth.faulted => {
                assert_eq!(
                    after.addresses, before.addresses,
                    "{context}: a refused set changes nothing"
                );
            }
            _ => {}
        }
    }
    if let Step::Reload = step {
        assert_eq!(
            after.addresses, before.addresses,
            "{context}: a reload of unchanged lists keeps the runtime sets"
        );
    }

    // I4: a reload changes no color and keeps a pending flip. A flip that was due (its
    // drain long past, resumed after a restart) may be carried out or refused whenever its
    // task first runs, a reload step included.
    let due = before.pending().is_some() && before.phase.held().is_some_and(|h| h.mono_ms <= now);
    if let (Step::Reload, false) = (step, due) {
        assert_eq!(after.live, before.live, "{context}: I4: color");
        assert_eq!(
            after.pending(),
            before.pending(),
            "{context}: I4: pending flip"
        );
    }
}

/// The two-person rule on a fake clock, across restarts: a flip asked by one principal
/// waits; its asker cannot approve it; the wait survives a restart (it is in the state
/// file); a second principal's approval carries it out; a rollback while settling needs no
/// approval (I3); an approval never given expires after `approval_timeout`, changing
/// nothing, and says so in the events.
#[test]
fn the_two_person_rule_holds_on_a_fake_clock() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("flipdns-two-person")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("svc.zone"), ZONE).unwrap();
        let mut world = World::new(dir.path(), false);
        let text = config_text(TTL, false).replace(
            "min_flip_interval = \"2m\"\n",
            "min_flip_interval = \"2m\"\napproval = \"two-person\"\napproval_timeout = \"1h\"\n",
        );
        std::fs::write(world.config_path(), text).unwrap();
        world.start();
        let by = |who: &str| Origin {
            change: origin().change,
            by: who.into(),
            who: who.into(),
        };
        let ask = |world: &World, action: Action, who: &str| {
            let cutovers = world.running().cutovers.clone();
            let origin = by(who);
            async move { cutovers.command("app", action, origin).await }
        };
        let state = |world: &World| {
            let switch = world.running().switch.clone();
            async move { switch.service("app").await.unwrap().1.service }
        };
        let pass = |world: &World, ms: u64| {
            let time = world.time.clone();
            async move {
                time.thaw();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                time.freeze();
            }
        };
        world.time.freeze();
        let flip = Action::Flip {
            to: Color::Green,
            now: false,
            force: false,
        };

        let asked = ask(&world, flip.clone(), "alice").await.unwrap();
        assert_eq!(asked.outcome, Outcome::AwaitingApproval);
        let own = ask(&world, Action::Approve, "alice").await.unwrap_err();
        assert_eq!(own.kind, RefusalKind::Approval, "{}", own.message);
        // Nothing moved: no prepare, no flip.
        let now = state(&world).await;
        assert_eq!((now.live, now.phase), (Color::Blue, Phase::Steady));

        // A restart (the process gone, only the disk left) keeps the request waiting.
        world.stop().await;
        world.start();
        let waiting = state(&world)
            .await
            .awaiting
            .expect("still awaiting after a restart");
        assert_eq!(waiting.by, "alice");

        let approved = ask(&world, Action::Approve, "bob").await.unwrap();
        assert_eq!(approved.outcome, Outcome::Scheduled);
        assert!(state(&world).await.awaiting.is_none());
        pass(&world, u64::from(TTL) * 1000 + 5_000).await;
        assert_eq!(
            state(&world).await.live,
            Color::Green,
            "the approved flip happened"
        );

        // Settling: the escape hatch is instant and asks nobody.
        let back = ask(&world, Action::Rollback { force: false }, "alice")
            .await
            .unwrap();
        assert_eq!(back.outcome, Outcome::Flipped);
        assert_eq!(state(&world).await.live, Color::Blue);
        // Let the settle end and the flip interval pass.
        pass(&world, 180_000).await;

        // A request nobody approves expires, changing nothing, and the events say so.
        let mut events = world.running().events.lock().await;
        while events.try_recv().is_ok() {}
        drop(events);
        let asked = ask(&world, flip.clone(), "alice").await.unwrap();
        assert_eq!(asked.outcome, Outcome::AwaitingApproval);
        pass(&world, 3_599_000).await;
        assert!(
            state(&world).await.awaiting.is_some(),
            "not before its hour"
        );
        // ... and across a restart, its deadline is the one on disk.
        world.stop().await;
        world.start();
        pass(&world, 2_000).await;
        let after = state(&world).await;
        assert!(after.awaiting.is_none(), "expired after approval_timeout");
        assert_eq!((after.live, after.phase), (Color::Blue, Phase::Steady));
        let mut events = world.running().events.lock().await;
        let mut expired = false;
        while let Ok(event) = events.try_recv() {
            expired |= event.kind == flipdns::cutover::EventKind::Expired;
        }
        assert!(expired, "the expiry is an event of the change (audited)");
        drop(events);
        let late = ask(&world, Action::Approve, "bob").await.unwrap_err();
        assert_eq!(late.kind, RefusalKind::Approval, "nothing awaits approval");
        world.stop().await;
    });
}
