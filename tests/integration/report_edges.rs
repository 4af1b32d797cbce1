//! The straggler report at its edges, through the real query path on a fake clock: the
//! switch, the cutover tasks, the request handler and the ledger run in process; scripted
//! resolvers on chosen 127.0.0.x sources ask at exact moments around flips. Each case is
//! one an operator would act on wrongly if the report got it wrong (issue 21).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flipdns::catalog::Catalog;
use flipdns::clock::{Clock, FakeTime};
use flipdns::color::Color;
use flipdns::config::Config;
use flipdns::cutover::{Action, Cutovers, Probe};
use flipdns::dns::Handler;
use flipdns::fleet::Fleet;
use flipdns::observed::answers::Recorder;
use flipdns::observed::counters::Counters;
use flipdns::state::Store;
use flipdns::stragglers::{Ledger, Listing, Report, ResolverClass};
use flipdns::switch::Switch;
use flipdns::wire::Transport;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ZONE: &str =
    "$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n";
/// `app` answers with a 5 s TTL; flips are immediate and settle at once.
const CONFIG: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"s\"\nstate_file = \"state.json\"\n[[zone]]\norigin = \"svc.example.com.\"\nfile = \"svc.zone\"\n[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 5\ncutover_ttl = 5\nsettle = \"0s\"\n";

/// One server, in process, on a fake clock.
struct Server {
    _dir: tempfile::TempDir,
    /// The fake clock's handle: it must live as long as the clock.
    _time: Arc<FakeTime>,
    cutovers: Arc<Cutovers>,
    handler: Handler,
    ledger: Arc<Ledger>,
    shutdown: CancellationToken,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.zone"), ZONE).unwrap();
        std::fs::write(dir.path().join("flipdns.toml"), CONFIG).unwrap();
        let catalog = Config::load(&dir.path().join("flipdns.toml"))
            .and_then(Catalog::load)
            .unwrap();
        let (clock, time) = Clock::fake(1_800_000_000_000);
        let store = Store::open(&dir.path().join("state.json")).unwrap();
        let switch = Arc::new(Switch::start(catalog, store, clock.clone()).unwrap());
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        let fleet = Fleet::start(
            &switch.catalog(),
            switch.records().clone(),
            clock.clone(),
            &shutdown,
            &tracker,
        );
        let cutovers = Arc::new(Cutovers::start(
            switch.clone(),
            fleet,
            clock.clone(),
            Arc::new(Probe(clock.clone())),
            &shutdown,
            &tracker,
        ));
        // The ledger task never ticks on its own here: what it knows of flips comes from
        // the answers' tags and from reports, as in the worst case of a real server.
        let ledger = Ledger::start(
            1000,
            switch.records().clone(),
            clock.clone(),
            Duration::from_secs(365 * 86_400),
            &shutdown,
            &tracker,
        );
        let handler = Handler::new(
            switch.records().clone(),
            Arc::new(Counters::default()),
            clock.clone(),
        );
        Server {
            _dir: dir,
            _time: time,
            cutovers,
            handler,
            ledger,
            shutdown,
        }
    }

    /// Lets `ms` pass on both clocks.
    async fn wait(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Resolver 127.0.0.`host` asks for `name` now.
    fn ask(&self, host: u8, name: &str) {
        let packet = flipdns::fixture::query(name, 1);
        let client = SocketAddr::new(IpAddr::from([127, 0, 0, host]), 5353);
        let mut out = Vec::new();
        let mut recorder = Recorder::new(Some(self.ledger.intake()));
        assert!(
            self.handler
                .handle(&packet, client, Transport::Udp, &mut out, &mut recorder)
        );
    }

    async fn flip(&self, to: Color) {
        let done = self
            .cutovers
            .command(
                "app",
                Action::Flip {
                    to,
                    now: true,
                    force: true,
                },
                flipdns::cutover::Origin {
                    change: 1,
                    by: "test".into(),
                    who: "test".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(done.state.live, to);
    }

    /// The ledger applies what has arrived, without taking the flips from the snapshot
    /// first (a report would): the answers alone must say which flip they belong to.
    fn settle(&self) {
        let _ = self.ledger.counts_of(&[0]);
    }

    fn report(&self) -> Report {
        self.settle();
        let listing = Listing {
            classes: Vec::new(),
            limit: 100,
        };
        self.ledger.report("app", &listing).unwrap().0
    }

    fn resolver(&self, report: &Report, host: u8) -> (ResolverClass, flipdns::stragglers::Entry) {
        let ip = IpAddr::from([127, 0, 0, host]);
        *report
            .resolvers
            .iter()
            .find(|(_, e)| e.key.resolver() == ip)
            .unwrap_or_else(|| panic!("127.0.0.{host} not in the report: {report:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const APP: &str = "app.svc.example.com";
const BLUE: &str = "blue.app.svc.example.com";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A resolver that clamps the 5 s TTL to 60 s and whose clients got green 1 s after the
/// flip is on time: lateness counts from the flip, not from its old answer's expiry 55 s
/// before; the clamping is still shown, apart.
#[test]
fn a_clamper_converging_a_second_after_the_flip_is_not_a_straggler() {
    runtime().block_on(async {
        let server = Server::start();
        for _ in 0..3 {
            server.ask(1, APP);
            server.wait(60_000).await;
        }
        server.ask(1, APP); // the refresh at 180 s
        server.wait(59_000).await;
        server.flip(Color::Green).await;
        server.wait(1_000).await;
        server.ask(1, APP); // 1 s after the flip
        let report = server.report();
        let flip = report.flip.unwrap();
        let (class, entry) = server.resolver(&report, 1);
        assert_eq!(class, ResolverClass::Converged, "{entry:?}");
        assert!(entry.held_old && entry.clamps(), "{entry:?}");
        assert_eq!(entry.late_by_ms(&flip), 1_000);
        assert_eq!(report.held_at_flip, 1);
    });
}

/// A resolver that asked once before the flip and came back 50 s after it, then every
/// 60 s: once its rhythm is proven (after the flip), the flip's record is judged again and
/// it kept the old color 50 s.
#[test]
fn clamping_proven_after_the_flip_still_counts() {
    runtime().block_on(async {
        let server = Server::start();
        server.ask(2, APP);
        server.wait(10_000).await;
        server.flip(Color::Green).await;
        server.wait(50_000).await;
        server.ask(2, APP);
        let (class, _) = server.resolver(&server.report(), 2);
        assert_eq!(class, ResolverClass::Converged, "no rhythm yet");
        for _ in 0..2 {
            server.wait(60_000).await;
            server.ask(2, APP);
        }
        let report = server.report();
        let (class, entry) = server.resolver(&report, 2);
        assert!(entry.clamps(), "{entry:?}");
        assert_eq!(class, ResolverClass::Straggler, "{entry:?}");
        assert_eq!(entry.late_by_ms(&report.flip.unwrap()), 50_000);
    });
}

/// After blue -> green and green -> blue, a query for `blue.app` 3 ms after blue went live
/// again is no straggler's, though the ledger learns of the second flip only from it.
#[test]
fn a_query_three_ms_after_a_second_flip_is_judged_against_it() {
    runtime().block_on(async {
        let server = Server::start();
        server.ask(3, APP);
        server.wait(10_000).await;
        server.flip(Color::Green).await;
        server.wait(6_000).await;
        server.ask(3, APP);
        server.settle(); // the ledger knows flip 1 from the answers
        server.wait(30_000).await;
        server.flip(Color::Blue).await;
        server.wait(3).await;
        server.ask(3, BLUE);
        server.ask(3, APP);
        let report = server.report();
        let (class, entry) = server.resolver(&report, 3);
        assert_eq!(report.flip.unwrap().flips, 2);
        assert_ne!(class, ResolverClass::Straggler, "{entry:?}");
        assert_eq!(report.straggler_queries, 0);
        assert_eq!(entry.answer_flips, 2, "the answer belongs to flip 2");
    });
}

/// Straggling queries are counted per flip: flip 3's report has none of flip 1's.
#[test]
fn a_third_flip_without_old_color_queries_reports_none() {
    runtime().block_on(async {
        let server = Server::start();
        server.ask(4, APP);
        server.wait(10_000).await;
        server.flip(Color::Green).await;
        server.wait(30_000).await;
        server.ask(4, BLUE); // long after every reason to ask for blue expired
        let report = server.report();
        assert_eq!(report.straggler_queries, 1);
        assert_eq!(report.counts.get(ResolverClass::Straggler), 1);
        server.flip(Color::Blue).await;
        server.wait(30_000).await;
        server.flip(Color::Green).await;
        server.wait(30_000).await;
        let report = server.report();
        assert_eq!(report.flip.unwrap().flips, 3);
        assert_eq!(report.straggler_queries, 0);
        assert_eq!(report.counts.get(ResolverClass::Straggler), 0);
    });
}
