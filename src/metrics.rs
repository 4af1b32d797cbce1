//! Counters, and the Prometheus endpoint that exports them.
//!
//! The query path only bumps relaxed atomics; everything else (labels, text, the current
//! snapshot's gauges) is assembled when Prometheus scrapes `/metrics`, by a
//! `prometheus-client` collector. The endpoint is a deliberately small HTTP/1.0 responder
//! with its own bounds, so it needs no HTTP stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admin::protocol::ClassCounts;
use crate::clock;
use crate::color::Color;
use crate::dns::Transport;
use crate::dns::request::Dropped;
use crate::health::HealthBoard;
use crate::records::{Records, ServiceView};
use crate::rrl::Limiter;
use crate::state::Phase;
use crate::stragglers::Ledger;

/// Concurrent scrapes served; more are closed at once.
pub const METRICS_MAX_CLIENTS: usize = 8;
/// Largest HTTP request head read from a scraper.
pub const METRICS_MAX_REQUEST: usize = 8192;
/// Time a scraper has to send its request and read the reply.
pub const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// RCODEs counted separately; anything else is counted as OTHER.
const RCODES: [(u16, &str); 8] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (16, "BADVERS"),
    (u16::MAX, "OTHER"),
];

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses sent, by transport and RCODE (index into `RCODES`).
    queries: [[AtomicU64; RCODES.len()]; 2],
    /// Packets not answered: too short, or responses.
    dropped: [AtomicU64; 2],
    /// Open DNS-over-TCP connections.
    pub tcp_open: AtomicU64,
    /// TCP connections closed at once because `tcp_connections` were open.
    pub tcp_refused: AtomicU64,
    /// TCP connections closed for idling or stalling past their timeouts.
    pub tcp_timeouts: AtomicU64,
    /// Admin clients turned away because `admin_clients` were connected.
    pub admin_refused: AtomicU64,
}

impl Metrics {
    pub fn answered(&self, transport: Transport, rcode: u16) {
        let index = RCODES
            .iter()
            .position(|&(r, _)| r == rcode)
            .unwrap_or(RCODES.len() - 1);
        self.queries[transport as usize][index].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: Dropped) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }
}

/// Outcomes of flips, for `flipdns_flips_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipResult {
    Done = 0,
    RefusedUnhealthy = 1,
    RefusedInterval = 2,
    Cancelled = 3,
}

impl FlipResult {
    pub const ALL: [FlipResult; 4] = [
        FlipResult::Done,
        FlipResult::RefusedUnhealthy,
        FlipResult::RefusedInterval,
        FlipResult::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlipResult::Done => "done",
            FlipResult::RefusedUnhealthy => "refused_unhealthy",
            FlipResult::RefusedInterval => "refused_interval",
            FlipResult::Cancelled => "cancelled",
        }
    }
}

/// What the server observed about one service, shared by every snapshot so that flips do
/// not reset it.
#[derive(Debug)]
pub struct ServiceStats {
    /// Answers given, by color.
    answers: [AtomicU64; 2],
    /// Flips, by [`FlipResult`].
    flips: [AtomicU64; 4],
    /// Unix milliseconds (coarse clock) of the last answer given with the normal TTL: the
    /// drain deadline is this plus the TTL. Starts at the process start for a service that
    /// starts steady, because the previous process may have answered just before it
    /// stopped.
    last_long_answer_ms: AtomicU64,
    /// Latest background health checks.
    pub health: HealthBoard,
}

impl ServiceStats {
    pub fn new(last_long_answer_ms: u64) -> ServiceStats {
        ServiceStats {
            answers: Default::default(),
            flips: Default::default(),
            last_long_answer_ms: AtomicU64::new(last_long_answer_ms),
            health: HealthBoard::default(),
        }
    }

    pub fn answered(&self, color: Color) {
        self.answers[color.index()].fetch_add(1, Relaxed);
    }

    pub fn answers(&self, color: Color) -> u64 {
        self.answers[color.index()].load(Relaxed)
    }

    /// Notes a normal-TTL answer at `now_ms`. On the query path: the shared cache line is
    /// written at most once per clock tick, not once per query.
    pub fn long_answer(&self, now_ms: u64) {
        if now_ms > self.last_long_answer_ms.load(Relaxed) {
            self.last_long_answer_ms.fetch_max(now_ms, Relaxed);
        }
    }

    pub fn last_long_answer_ms(&self) -> u64 {
        self.last_long_answer_ms.load(Relaxed)
    }

    pub fn flipped(&self, result: FlipResult) {
        self.flips[result as usize].fetch_add(1, Relaxed);
    }

    pub fn flips(&self, result: FlipResult) -> u64 {
        self.flips[result as usize].load(Relaxed)
    }
}

/// Renders all metrics at scrape time.
#[derive(Debug)]
pub struct Exporter {
    pub metrics: Arc<Metrics>,
    pub records: Arc<Records>,
    /// `None` when the ledger is off.
    pub ledger: Option<Arc<Ledger>>,
    /// `None` when rate limiting is off.
    pub rrl: Option<Arc<Limiter>>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn family<'l, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'l>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let snapshot = self.records.load_full();
        let services = &snapshot.services;
        let per_service = |value: &dyn Fn(&ServiceView) -> ConstGauge<i64>| -> Vec<(Labels<'_>, ConstGauge<i64>)> {
            services.iter().map(|s| (vec![("service", s.name.as_str())], value(s))).collect()
        };
        let transports = [(Transport::Udp, "udp"), (Transport::Tcp, "tcp")];
        family(
            &mut e,
            "flipdns_queries",
            "DNS responses sent, by transport and RCODE.",
            transports.iter().flat_map(|&(t, proto)| {
                RCODES.iter().enumerate().map(move |(i, &(_, rcode))| {
                    (
                        vec![("protocol", proto), ("rcode", rcode)],
                        counter(m.queries[t as usize][i].load(Relaxed)),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "flipdns_dropped",
            "Packets not answered: shorter than a DNS header, or responses (QR set).",
            [
                (
                    vec![("reason", "short")],
                    counter(m.dropped[Dropped::Short as usize].load(Relaxed)),
                ),
                (
                    vec![("reason", "response")],
                    counter(m.dropped[Dropped::Response as usize].load(Relaxed)),
                ),
            ],
        )?;
        family(
            &mut e,
            "flipdns_answers",
            "Answers from a service's names, by service and color.",
            services.iter().flat_map(|s| {
                Color::ALL.map(|c| {
                    (
                        vec![("service", s.name.as_str()), ("color", c.as_str())],
                        counter(s.stats.answers(c)),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "flipdns_flips",
            "Flips by service and result (done, refused_unhealthy, refused_interval, cancelled).",
            services.iter().flat_map(|s| {
                FlipResult::ALL.map(|r| {
                    (
                        vec![("service", s.name.as_str()), ("result", r.as_str())],
                        counter(s.stats.flips(r)),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "flipdns_live",
            "1 for the live color of each service, 0 for the other.",
            services.iter().flat_map(|s| {
                Color::ALL.map(|c| {
                    (
                        vec![("service", s.name.as_str()), ("color", c.as_str())],
                        gauge((s.live == c) as i64),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "flipdns_phase",
            "1 for the cutover phase each service is in (steady, preparing, settling).",
            services.iter().flat_map(|s| {
                let now = crate::cutover::phase_status(&s.phase).name;
                ["steady", "preparing", "settling"].map(|p| {
                    (
                        vec![("service", s.name.as_str()), ("phase", p)],
                        gauge((now == p) as i64),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "flipdns_service_ttl_seconds",
            "TTL the service's answers carry now.",
            per_service(&|s| gauge(s.ttl.into())),
        )?;
        let deadline = |s: &ServiceView| match s.phase {
            Phase::Preparing { drained_at_ms, .. } => Some(drained_at_ms),
            _ => None,
        };
        family(
            &mut e,
            "flipdns_drain_deadline_seconds",
            "Unix time when caches have drained the normal-TTL answers (preparing only; 0 otherwise).",
            per_service(&|s| gauge(deadline(s).map_or(0, |d| (d / 1000) as i64))),
        )?;
        family(
            &mut e,
            "flipdns_seconds_to_drain",
            "Seconds until the drain deadline (preparing only; 0 otherwise).",
            per_service(&|s| gauge(deadline(s).map_or(0, |d| clock::until(d).as_secs() as i64))),
        )?;
        family(
            &mut e,
            "flipdns_health_healthy",
            "Addresses that passed the latest background health check, by service and color.",
            services.iter().flat_map(|s| {
                Color::ALL.into_iter().filter_map(|c| {
                    s.stats.health.get(c).map(|h| {
                        (
                            vec![("service", s.name.as_str()), ("color", c.as_str())],
                            gauge(h.healthy as i64),
                        )
                    })
                })
            }),
        )?;
        family(
            &mut e,
            "flipdns_health_addresses",
            "Addresses checked by the latest background health check, by service and color.",
            services.iter().flat_map(|s| {
                Color::ALL.into_iter().filter_map(|c| {
                    s.stats.health.get(c).map(|h| {
                        (
                            vec![("service", s.name.as_str()), ("color", c.as_str())],
                            gauge(h.total as i64),
                        )
                    })
                })
            }),
        )?;
        let origins: Vec<String> = snapshot
            .zones
            .iter()
            .map(|z| z.origin.to_string())
            .collect();
        family(
            &mut e,
            "flipdns_zone_serial",
            "SOA serial served, by zone.",
            snapshot
                .zones
                .iter()
                .zip(&origins)
                .map(|(z, o)| (vec![("zone", o.as_str())], gauge(z.serial.into()))),
        )?;
        family(
            &mut e,
            "flipdns_snapshot_generation",
            "Generation of the record set being served; increases with every change.",
            [(vec![], gauge(snapshot.generation as i64))],
        )?;
        family(
            &mut e,
            "flipdns_tcp_connections",
            "Open DNS-over-TCP connections.",
            [(vec![], gauge(m.tcp_open.load(Relaxed) as i64))],
        )?;
        family(
            &mut e,
            "flipdns_tcp_refused",
            "TCP connections closed at once because the connection limit was reached.",
            [(vec![], counter(m.tcp_refused.load(Relaxed)))],
        )?;
        family(
            &mut e,
            "flipdns_tcp_timeouts",
            "TCP connections closed for idling or stalling.",
            [(vec![], counter(m.tcp_timeouts.load(Relaxed)))],
        )?;
        family(
            &mut e,
            "flipdns_admin_refused",
            "Admin clients turned away at the client limit.",
            [(vec![], counter(m.admin_refused.load(Relaxed)))],
        )?;
        if let Some(ledger) = &self.ledger {
            let counts: Vec<ClassCounts> = services.iter().map(|s| ledger.counts(s.id)).collect();
            family(
                &mut e,
                "flipdns_resolvers",
                "Resolvers by service and class since the latest flip (converged, draining, silent, overdue, straggler).",
                services.iter().zip(&counts).flat_map(|(s, c)| {
                    [
                        ("converged", c.converged),
                        ("draining", c.draining),
                        ("silent", c.silent),
                        ("overdue", c.overdue),
                        ("straggler", c.straggler),
                    ]
                    .map(|(class, n)| {
                        (
                            vec![("service", s.name.as_str()), ("class", class)],
                            gauge(n as i64),
                        )
                    })
                }),
            )?;
            family(
                &mut e,
                "flipdns_straggler_queries",
                "Queries for a service's old color name after every legitimate reason expired, by service and color asked.",
                services.iter().flat_map(|s| {
                    let queries = ledger.straggler_queries(s.id);
                    Color::ALL.map(|c| {
                        (
                            vec![("service", s.name.as_str()), ("color", c.as_str())],
                            counter(queries[c.index()]),
                        )
                    })
                }),
            )?;
            let view = ledger.view();
            family(
                &mut e,
                "flipdns_ledger_entries",
                "Entries in the straggler ledger.",
                [(vec![], gauge(view.entries as i64))],
            )?;
            family(
                &mut e,
                "flipdns_ledger_capacity",
                "Most entries the straggler ledger keeps.",
                [(vec![], gauge(view.capacity as i64))],
            )?;
            family(
                &mut e,
                "flipdns_ledger_evictions",
                "Ledger entries evicted to make room (least recently seen first).",
                [(vec![], counter(view.evicted))],
            )?;
            family(
                &mut e,
                "flipdns_ledger_dropped",
                "Observations dropped because the ledger's queue was full.",
                [(vec![], counter(view.dropped))],
            )?;
        }
        if let Some(rrl) = &self.rrl {
            family(
                &mut e,
                "flipdns_rrl",
                "UDP responses over the rate limit, by what happened to them (slipped: sent truncated; dropped).",
                [
                    (
                        vec![("action", "slipped")],
                        counter(rrl.slipped.load(Relaxed)),
                    ),
                    (
                        vec![("action", "dropped")],
                        counter(rrl.dropped.load(Relaxed)),
                    ),
                ],
            )?;
            family(
                &mut e,
                "flipdns_rrl_limited",
                "UDP responses over the rate limit of their source prefix.",
                [(vec![], counter(rrl.limited.load(Relaxed)))],
            )?;
        }
        family(
            &mut e,
            "flipdns_build_info",
            "Build information.",
            [(vec![("version", env!("CARGO_PKG_VERSION"))], gauge(1))],
        )?;
        Ok(())
    }
}

/// The text Prometheus gets from `/metrics`.
pub fn render(exporter: &Arc<Exporter>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exporter.clone()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(METRICS_MAX_CLIENTS));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(METRICS_TIMEOUT, scrape(stream, &exporter)).await;
            drop(permit);
        });
    }
}

async fn scrape(mut stream: TcpStream, exporter: &Arc<Exporter>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > METRICS_MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        let body = render(exporter);
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.0 404 Not Found\r\nContent-Length: 23\r\nConnection: close\r\n\r\nonly /metrics is here.\n".to_string()
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
