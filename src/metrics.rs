//! The Prometheus endpoint: every counter and gauge, assembled when `/metrics` is scraped.
//!
//! The query path only bumps relaxed atomics ([`crate::observed::counters`], [`crate::observed`]);
//! labels, text and the current snapshot's gauges are assembled here at scrape time by a
//! `prometheus-client` collector, one function per area. The endpoint is a deliberately
//! small HTTP/1.0 responder with its own bounds, so it needs no HTTP stack.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;

use ::http::{Method, StatusCode};
use bytes::Bytes;

use crate::clock::Clock;
use crate::color::Color;
use crate::dns::rrl::Limiter;
use crate::fleet::Fleet;
use crate::http;
use crate::observed::FlipResult;
use crate::observed::counters::{Counters, DURATION_BUCKETS_US};
use crate::process::build_info;
use crate::records::{Records, ServiceView, Services, Snapshot};
use crate::state::PhaseName;
use crate::stragglers::{Ledger, ResolverClass};
use crate::wire::Dropped;

/// Connections served at once (scrapers, and browsers on the watch page, which keep up
/// to six each); more are closed at once.
pub const METRICS_MAX_CLIENTS: usize = 32;
/// Of those, from one address: one browser or a runaway script cannot take them all.
pub const METRICS_MAX_PER_SOURCE: usize = 8;
/// Largest HTTP request head read from a scraper.
pub const METRICS_MAX_REQUEST: usize = 8192;
/// Time a scraper has to send its request and read the reply.
pub const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders all metrics at scrape time.
#[derive(Debug)]
pub struct Exporter {
    pub counters: Arc<Counters>,
    pub records: Arc<Records>,
    /// `None` when the ledger is off.
    pub ledger: Option<Arc<Ledger>>,
    /// `None` when rate limiting is off.
    pub rrl: Option<Arc<Limiter>>,
    pub fleet: Arc<Fleet>,
    pub clock: Clock,
    /// Set once every socket is bound and the state loaded, cleared at shutdown: `/ready`.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// How reloads went.
    pub reloads: Arc<crate::reload::Outcomes>,
    /// Unix milliseconds the process started.
    pub started_ms: u64,
    /// State writes that failed, and whether the state file is uncertain now.
    pub switch: Arc<crate::switch::Switch>,
    /// The secondaries' dnstap streams; `None` when `[dnstap]` is off.
    pub dnstap: Option<Arc<crate::dnstap::Collector>>,
    /// Audit entries not written (queue full or write failed).
    pub audit_lost: Arc<std::sync::atomic::AtomicU64>,
    /// Cutover events that could not be queued for the audit trail.
    pub events_lost: Arc<std::sync::atomic::AtomicU64>,
    /// The HTTPS API's counters; `None` when `[api]` is off.
    pub api: Option<Arc<crate::observed::api::ApiCounters>>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one metric family; nothing when it has no samples.
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

/// A histogram read at scrape time: per-bucket counts (upper bound, count; the encoder
/// makes them cumulative), their sum and count.
struct ConstHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

/// One gauge per service.
fn per_service<'s>(
    services: &'s Services,
    value: impl Fn(&ServiceView) -> i64,
) -> Vec<(Labels<'s>, ConstGauge<i64>)> {
    services
        .iter()
        .map(|s| (vec![("service", s.name.as_str())], gauge(value(s))))
        .collect()
}

/// One sample per service and color.
fn per_color<'s, M>(
    services: &'s Services,
    value: impl Fn(&ServiceView, Color) -> Option<M>,
) -> Vec<(Labels<'s>, M)> {
    services
        .iter()
        .flat_map(|s| Color::ALL.map(|c| (&**s, c)))
        .filter_map(|(s, c)| {
            value(s, c).map(|v| (vec![("service", s.name.as_str()), ("color", c.as_str())], v))
        })
        .collect()
}

impl Exporter {
    /// The reload outcome, and the process's own figures under the names every Prometheus
    /// client library uses (`process_*`), read from /proc at scrape time.
    fn process(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reloads = &self.reloads;
        family(
            e,
            "flipdns_config_last_reload_successful",
            "1 if the latest reload (SIGHUP or ctl reload) was applied, 0 if it was refused; 1 before any.",
            [(vec![], gauge(reloads.last_ok() as i64))],
        )?;
        if let Some(ms) = reloads.last_success_ms() {
            family(
                e,
                "flipdns_config_last_reload_success_timestamp_seconds",
                "Unix time the config now served was applied: at start, then at each reload applied.",
                [(vec![], gauge((ms / 1000) as i64))],
            )?;
        }
        family(
            e,
            "flipdns_state_write_errors",
            "State file writes that failed: a change refused (nothing applied), or a compaction to retry.",
            [(vec![], counter(self.switch.write_errors().load(Relaxed)))],
        )?;
        family(
            e,
            "flipdns_audit_entries_lost",
            "Audit trail entries not written: the writer fell behind or the file could not be written (each is also logged).",
            [(
                vec![],
                counter(self.audit_lost.load(Relaxed) + self.events_lost.load(Relaxed)),
            )],
        )?;
        family(
            e,
            "flipdns_state_uncertain",
            "1 while the state file may hold a change the answers do not carry (a failed write could not be undone; retried every second), else 0.",
            [(vec![], gauge(self.switch.uncertain().is_some() as i64))],
        )?;
        family(
            e,
            "process_start_time_seconds",
            "Unix time the process started.",
            [(vec![], gauge((self.started_ms / 1000) as i64))],
        )?;
        if let Some(bytes) = resident_bytes() {
            family(
                e,
                "process_resident_memory_bytes",
                "Resident memory.",
                [(vec![], gauge(bytes as i64))],
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            family(
                e,
                "process_open_fds",
                "Open file descriptors.",
                [(vec![], gauge(fds.count() as i64))],
            )?;
        }
        Ok(())
    }

    fn queries(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        family(
            e,
            "flipdns_responses",
            "DNS responses sent, by protocol (udp, tcp) and rcode (NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH, BADVERS; OTHER: any other).",
            c.responses().map(|(t, rcode, n)| {
                (vec![("protocol", t.as_str()), ("rcode", rcode)], counter(n))
            }),
        )?;
        family(
            e,
            "flipdns_requests",
            "Well-formed requests, by qtype (A, NS, CNAME, SOA, MX, TXT, AAAA, SRV, HTTPS, ANY, IXFR, AXFR; OTHER: every type not listed).",
            c.requests()
                .map(|(qtype, n)| (vec![("qtype", qtype)], counter(n))),
        )?;
        family(
            e,
            "flipdns_dropped",
            "Packets not answered, by reason: short (shorter than a DNS header), response (QR set).",
            Dropped::ALL.map(|d| (vec![("reason", d.as_str())], counter(c.dropped_by(d)))),
        )?;
        let (buckets, sum_ns) = c.durations();
        let bounds = DURATION_BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY]);
        family(
            e,
            "flipdns_query_duration_seconds",
            "Time an answer spent in the server: from the read of its datagram batch to the send of the batch's answers (UDP), from its message read to its reply written (TCP). Queueing in the kernel is not included.",
            [(
                vec![],
                ConstHistogram {
                    sum: sum_ns as f64 / 1e9,
                    count: buckets.iter().sum(),
                    buckets: bounds.zip(buckets).collect(),
                },
            )],
        )
    }

    fn services(
        &self,
        e: &mut DescriptorEncoder,
        services: &Services,
    ) -> Result<(), std::fmt::Error> {
        family(
            e,
            "flipdns_answers",
            "Answers from a service's names, by service and color (blue, green).",
            per_color(services, |s, c| Some(counter(s.observed.answers(c)))),
        )?;
        family(
            e,
            "flipdns_flips",
            "Flips by service and result: done, refused_unhealthy, refused_interval, refused_secondaries (the drain not proven by the fleet), cancelled.",
            services.iter().flat_map(|s| {
                FlipResult::ALL.map(|r| {
                    (
                        vec![("service", s.name.as_str()), ("result", r.as_str())],
                        counter(s.observed.flips(r)),
                    )
                })
            }),
        )?;
        family(
            e,
            "flipdns_live",
            "1 for the live color (blue, green) of each service, 0 for the other.",
            per_color(services, |s, c| Some(gauge((s.live() == c) as i64))),
        )?;
        family(
            e,
            "flipdns_awaiting_approval",
            "1 while a flip or prepare of the service waits for a second principal's approval (two-person rule), else 0.",
            per_service(services, |s| s.state.awaiting.is_some() as i64),
        )?;
        family(
            e,
            "flipdns_addresses_runtime",
            "1 when a color's addresses were set at run time (ctl set-addresses), 0 when they are the config's; by service and color (blue, green).",
            per_color(services, |s, c| {
                Some(gauge(s.state.runtime_set(c).is_some() as i64))
            }),
        )?;
        family(
            e,
            "flipdns_addresses_set_timestamp_seconds",
            "Unix time a color's runtime address set was made; absent for the config's; by service and color (blue, green).",
            per_color(services, |s, c| {
                s.state
                    .runtime_set(c)
                    .map(|set| gauge((set.at_ms / 1000) as i64))
            }),
        )?;
        self.health(e, services)
    }

    /// The latest background health check of each service: per color and per address.
    fn health(
        &self,
        e: &mut DescriptorEncoder,
        services: &Services,
    ) -> Result<(), std::fmt::Error> {
        family(
            e,
            "flipdns_health_healthy",
            "Addresses that passed the latest background health check, by service and color (blue, green).",
            per_color(services, |s, c| {
                s.observed.health.get(c).map(|h| gauge(h.healthy() as i64))
            }),
        )?;
        family(
            e,
            "flipdns_health_addresses",
            "Addresses checked by the latest background health check, by service and color (blue, green).",
            per_color(services, |s, c| {
                s.observed
                    .health
                    .get(c)
                    .map(|h| gauge(h.addresses.len() as i64))
            }),
        )?;
        let checks: Vec<(&str, Color, String, bool)> = services
            .iter()
            .flat_map(|s| {
                Color::ALL.into_iter().flat_map(move |c| {
                    let checked = s.observed.health.get(c).map(|h| h.addresses);
                    checked
                        .into_iter()
                        .flatten()
                        .map(move |a| (s.name.as_str(), c, a.address.to_string(), a.healthy))
                })
            })
            .collect();
        family(
            e,
            "flipdns_health_address_healthy",
            "1 if the address passed the latest background health check, 0 if not; by service, color (blue, green) and address.",
            checks.iter().map(|(service, color, address, healthy)| {
                (
                    vec![
                        ("service", *service),
                        ("color", color.as_str()),
                        ("address", address.as_str()),
                    ],
                    gauge(*healthy as i64),
                )
            }),
        )
    }

    /// Each service's cutover: phase, TTL, pending flip, and its deadlines.
    fn cutovers(
        &self,
        e: &mut DescriptorEncoder,
        services: &Services,
    ) -> Result<(), std::fmt::Error> {
        family(
            e,
            "flipdns_phase",
            "1 for the cutover phase each service is in (steady, preparing, settling).",
            services.iter().flat_map(|s| {
                let now = s.state.phase.name();
                PhaseName::ALL.map(|p| {
                    (
                        vec![("service", s.name.as_str()), ("phase", p.as_str())],
                        gauge((now == p) as i64),
                    )
                })
            }),
        )?;
        family(
            e,
            "flipdns_service_ttl_seconds",
            "TTL the service's answers carry now.",
            per_service(services, |s| s.ttl.into()),
        )?;
        family(
            e,
            "flipdns_flip_pending",
            "1 while a flip is scheduled (preparing with a target), 0 otherwise: preparing with 0 here is a cutover that waits for nobody.",
            per_service(services, |s| s.state.pending().is_some() as i64),
        )?;
        family(
            e,
            "flipdns_preparing_since_timestamp_seconds",
            "Unix time the service entered preparing; absent when it is not preparing.",
            services.iter().filter_map(|s| match s.state.phase {
                crate::state::Phase::Preparing { since_ms, .. } => Some((
                    vec![("service", s.name.as_str())],
                    gauge((since_ms / 1000) as i64),
                )),
                _ => None,
            }),
        )?;
        self.deadlines(e, services)
    }

    /// The moments of each service's cutover: drain deadline, settle end, latest flip.
    fn deadlines<'s>(
        &self,
        e: &mut DescriptorEncoder,
        services: &'s Services,
    ) -> Result<(), std::fmt::Error> {
        // Times that do not apply are absent, not 0: an alert on "deadline in the past"
        // must not fire for every steady service.
        let at = |service: &'s ServiceView, ms: Option<u64>| {
            ms.map(|ms| {
                (
                    vec![("service", service.name.as_str())],
                    gauge((ms / 1000) as i64),
                )
            })
        };
        family(
            e,
            "flipdns_drain_deadline_timestamp_seconds",
            "Unix time when caches have drained the normal-TTL answers; only while preparing.",
            services
                .iter()
                .filter_map(|s| at(s, s.state.phase.drained_at_ms())),
        )?;
        family(
            e,
            "flipdns_drain_remaining_seconds",
            "Seconds until the drain deadline; only while preparing.",
            services.iter().filter_map(|s| {
                s.state.phase.drained_at_ms().map(|d| {
                    (
                        vec![("service", s.name.as_str())],
                        gauge(self.clock.until(d).as_secs() as i64),
                    )
                })
            }),
        )?;
        family(
            e,
            "flipdns_settle_end_timestamp_seconds",
            "Unix time the settle ends and the normal TTL comes back; only while settling.",
            services.iter().filter_map(|s| match s.state.phase {
                crate::state::Phase::Settling { until_ms, .. } => at(s, Some(until_ms)),
                _ => None,
            }),
        )?;
        family(
            e,
            "flipdns_last_flip_timestamp_seconds",
            "Unix time of the service's latest flip; absent before its first.",
            services.iter().filter_map(|s| at(s, s.state.flipped_at_ms)),
        )
    }

    fn zones(&self, e: &mut DescriptorEncoder, snapshot: &Snapshot) -> Result<(), std::fmt::Error> {
        let origins: Vec<String> = snapshot
            .zones
            .iter()
            .map(|z| z.origin.to_string())
            .collect();
        family(
            e,
            "flipdns_zone_serial",
            "SOA serial served, by zone.",
            snapshot
                .zones
                .iter()
                .zip(&origins)
                .map(|(z, o)| (vec![("zone", o.as_str())], gauge(z.serial.into()))),
        )?;
        family(
            e,
            "flipdns_snapshot_generation",
            "Generation of the record set being served; increases with every change.",
            [(vec![], gauge(snapshot.generation.0 as i64))],
        )
    }

    fn connections(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        family(
            e,
            "flipdns_tcp_connections",
            "Open DNS-over-TCP connections.",
            [(vec![], gauge(c.tcp_open.load(Relaxed) as i64))],
        )?;
        for (name, help, value) in [
            (
                "flipdns_tcp_refused",
                "TCP connections closed at once because the connection limit was reached.",
                &c.tcp_refused,
            ),
            (
                "flipdns_tcp_timeouts",
                "TCP connections closed for idling or stalling.",
                &c.tcp_timeouts,
            ),
            (
                "flipdns_admin_refused",
                "Admin clients turned away at the client limit.",
                &c.admin_refused,
            ),
        ] {
            family(e, name, help, [(vec![], counter(value.load(Relaxed)))])?;
        }
        let (queue_full, write_failed) = crate::process::logging::dropped();
        family(
            e,
            "flipdns_log_lines_dropped",
            "Log lines dropped, by reason: queue_full (stderr slow or not read), write_failed.",
            [
                (vec![("reason", "queue_full")], counter(queue_full)),
                (vec![("reason", "write_failed")], counter(write_failed)),
            ],
        )
    }

    /// The HTTPS API: requests by route and status, failed authentications, throttled
    /// requests, event streams.
    fn api(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(api) = &self.api else {
            return Ok(());
        };
        let requests = api.requests();
        family(
            e,
            "flipdns_api_requests",
            "HTTPS API requests, by method, route (the path template; none for no route) and HTTP status.",
            requests.iter().map(|(method, route, status, n)| {
                let labels = vec![
                    ("method", *method),
                    ("route", *route),
                    ("status", status.as_str()),
                ];
                (labels, counter(*n))
            }),
        )?;
        for (name, help, value) in [
            (
                "flipdns_api_auth_failures",
                "HTTPS API requests refused for a missing or wrong token or client certificate (401).",
                &api.auth_failures,
            ),
            (
                "flipdns_api_throttled",
                "HTTPS API requests refused unread: their source failed authentication too often in the last minute (429).",
                &api.throttled,
            ),
        ] {
            family(e, name, help, [(vec![], counter(value.load(Relaxed)))])?;
        }
        family(
            e,
            "flipdns_api_streams",
            "HTTPS API event streams (Server-Sent Events) being followed now.",
            [(vec![], gauge(api.streams.load(Relaxed) as i64))],
        )
    }

    /// Zone transfers and the TSIG checks of signed requests.
    fn transfers(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        family(
            e,
            "flipdns_transfers",
            "Outgoing zone transfers, by result: axfr, ixfr, ixfr_full (the whole zone for an IXFR), up_to_date, refused, busy, failed.",
            c.transfers()
                .map(|(r, n)| (vec![("result", r.as_str())], counter(n))),
        )?;
        family(
            e,
            "flipdns_tsig_requests",
            "Signed requests, by the TSIG check's result: none (valid), badkey, badsig, badtime, badtrunc, malformed.",
            c.tsig_results()
                .map(|(r, n)| (vec![("error", r)], counter(n))),
        )
    }

    /// Each secondary's copy of each zone: serial, lag, reachability, NOTIFYs, errors.
    fn fleet(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.fleet.status();
        let now = self.clock.now_ms();
        // (secondary, zone) names, and the link and our serial, per row.
        let rows: Vec<([String; 2], &crate::fleet::Link, u32)> = status
            .iter()
            .flat_map(|s| {
                s.zones
                    .iter()
                    .map(|z| ([s.name.clone(), z.origin.to_string()], &z.link, z.serial))
            })
            .collect();
        fn labels(names: &[String; 2]) -> Labels<'_> {
            vec![
                ("secondary", names[0].as_str()),
                ("zone", names[1].as_str()),
            ]
        }
        family(
            e,
            "flipdns_secondary_serial",
            "SOA serial a secondary answered with, by secondary and zone (absent until it answered).",
            rows.iter().filter_map(|(names, link, _)| {
                link.serves.map(|s| (labels(names), gauge(s.serial.into())))
            }),
        )?;
        family(
            e,
            "flipdns_secondary_behind_seconds",
            "How long a secondary has served an older serial than ours (0 when current).",
            rows.iter().map(|(names, link, _)| {
                let behind = link
                    .behind_since_ms
                    .map_or(0, |since| now.saturating_sub(since) / 1000);
                (labels(names), gauge(behind as i64))
            }),
        )?;
        family(
            e,
            "flipdns_secondary_current",
            "1 when a secondary answers with our serial of the zone, else 0 (behind, or unreachable).",
            rows.iter()
                .map(|(names, link, serial)| (labels(names), gauge(link.current(*serial) as i64))),
        )?;
        family(
            e,
            "flipdns_secondary_reachable",
            "1 while a secondary answers SOA queries; 0 once 3 in a row failed (within check_interval + 3.03 s of its last answer).",
            rows.iter()
                .map(|(names, link, _)| (labels(names), gauge(link.reachable() as i64))),
        )?;
        family(
            e,
            "flipdns_secondary_last_answer_timestamp_seconds",
            "Unix time of a secondary's last SOA answer (absent until it answered).",
            rows.iter().filter_map(|(names, link, _)| {
                link.serves
                    .map(|s| (labels(names), gauge((s.at_ms / 1000) as i64)))
            }),
        )?;
        family(
            e,
            "flipdns_secondary_notifies",
            "NOTIFY messages sent to a secondary.",
            rows.iter()
                .map(|(names, link, _)| (labels(names), counter(link.notifies))),
        )?;
        family(
            e,
            "flipdns_secondary_errors",
            "Failed NOTIFYs and SOA queries to a secondary.",
            rows.iter()
                .map(|(names, link, _)| (labels(names), counter(link.errors))),
        )
    }

    /// The secondaries' dnstap streams: who streams, and what came in and was lost.
    fn dnstap(
        &self,
        e: &mut DescriptorEncoder,
        snapshot: &Snapshot,
    ) -> Result<(), std::fmt::Error> {
        let secondaries = &snapshot.catalog.config.secondaries;
        let streams = crate::dnstap::streams(self.dnstap.as_deref(), secondaries);
        family(
            e,
            "flipdns_dnstap_streaming",
            "1 while a configured secondary streams its answers (dnstap), else 0: while any is 0, straggler reports are incomplete.",
            streams.iter().filter(|s| s.secondary).map(|s| {
                (
                    vec![("secondary", s.name.as_str())],
                    gauge(s.since.is_some() as i64),
                )
            }),
        )?;
        for (name, help, value) in [
            (
                "flipdns_dnstap_frames",
                "dnstap data frames received, by sender (a secondary's name, or the identity of another sender).",
                (|s: &crate::dnstap::StreamState| s.frames)
                    as fn(&crate::dnstap::StreamState) -> u64,
            ),
            (
                "flipdns_dnstap_answers",
                "dnstap frames that became answers in the straggler ledger, by sender.",
                |s| s.observed,
            ),
            (
                "flipdns_dnstap_dropped",
                "dnstap frames dropped over [dnstap] frames_per_second, by sender.",
                |s| s.dropped,
            ),
            (
                "flipdns_dnstap_skipped",
                "dnstap frames that were no service answer (queries, other names, unreadable), by sender.",
                |s| s.skipped,
            ),
            (
                "flipdns_dnstap_stream_errors",
                "dnstap streams of a sender closed for bad input.",
                |s| s.errors,
            ),
        ] {
            family(
                e,
                name,
                help,
                streams
                    .iter()
                    .filter(|s| s.frames > 0 || s.secondary)
                    .map(|s| (vec![("sender", s.name.as_str())], counter(value(s)))),
            )?;
        }
        if let Some(collector) = &self.dnstap {
            family(
                e,
                "flipdns_dnstap_streams_closed",
                "dnstap streams refused or closed, by why: too_many, not_allowed, garbage, content_type, too_long, stalled, cut_short.",
                crate::dnstap::Closed::ALL
                    .map(|why| (vec![("why", why.as_str())], counter(collector.closed(why)))),
            )?;
            family(
                e,
                "flipdns_dnstap_streams_open",
                "dnstap streams connected now.",
                [(vec![], gauge(collector.open() as i64))],
            )?;
        }
        Ok(())
    }

    fn ledger(
        &self,
        e: &mut DescriptorEncoder,
        ledger: &Ledger,
        services: &Services,
    ) -> Result<(), std::fmt::Error> {
        let ids: Vec<u32> = services.iter().map(|s| s.id).collect();
        let counts = ledger.counts_of(&ids);
        family(
            e,
            "flipdns_resolvers",
            "Resolvers by service and class since the latest flip: converged, draining, silent, overdue, straggler.",
            services.iter().zip(&counts).flat_map(|(s, c)| {
                ResolverClass::ALL.map(|class| {
                    (
                        vec![("service", s.name.as_str()), ("class", class.as_str())],
                        gauge(c.get(class) as i64),
                    )
                })
            }),
        )?;
        family(
            e,
            "flipdns_straggler_queries",
            "Queries for a service's old color name after every legitimate reason expired, by service and color asked (blue, green).",
            per_color(services, |s, c| {
                Some(counter(ledger.straggler_queries(s.id)[c.index()]))
            }),
        )?;
        let figures = ledger.figures();
        for (name, help, value) in [
            (
                "flipdns_ledger_entries",
                "Entries in the straggler ledger.",
                figures.entries,
            ),
            (
                "flipdns_ledger_capacity",
                "Most entries the straggler ledger keeps.",
                figures.capacity,
            ),
        ] {
            family(e, name, help, [(vec![], gauge(value as i64))])?;
        }
        for (name, help, value) in [
            (
                "flipdns_ledger_evictions",
                "Ledger entries evicted to make room (least recently seen first).",
                figures.evicted,
            ),
            (
                "flipdns_ledger_dropped",
                "Observations dropped because the ledger's queue was full.",
                figures.dropped,
            ),
        ] {
            family(e, name, help, [(vec![], counter(value))])?;
        }
        Ok(())
    }

    fn rrl(&self, e: &mut DescriptorEncoder, rrl: &Limiter) -> Result<(), std::fmt::Error> {
        family(
            e,
            "flipdns_rrl",
            "UDP responses over the rate limit, by action: slipped (sent truncated), dropped.",
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
            e,
            "flipdns_rrl_limited",
            "UDP responses over the rate limit of their source prefix.",
            [(vec![], counter(rrl.limited.load(Relaxed)))],
        )
    }
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.records.load_full();
        let services = &snapshot.services;
        self.queries(&mut e)?;
        self.services(&mut e, services)?;
        self.cutovers(&mut e, services)?;
        self.zones(&mut e, &snapshot)?;
        self.connections(&mut e)?;
        self.transfers(&mut e)?;
        self.fleet(&mut e)?;
        self.api(&mut e)?;
        if let Some(ledger) = &self.ledger {
            self.ledger(&mut e, ledger, services)?;
        }
        self.dnstap(&mut e, &snapshot)?;
        if let Some(rrl) = &self.rrl {
            self.rrl(&mut e, rrl)?;
        }
        self.process(&mut e)?;
        family(
            &mut e,
            "flipdns_build_info",
            "Build information.",
            [(
                vec![
                    ("version", build_info::VERSION),
                    ("revision", build_info::REVISION),
                    ("rustc", build_info::RUSTC),
                ],
                gauge(1),
            )],
        )
    }
}

/// Resident memory from /proc/self/statm (pages), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition: what a
/// scraper that does not ask for OpenMetrics gets (`curl`, `promtool check metrics`, older
/// Prometheus). The two differ only where this server's families touch them: a counter's
/// family is named with its `_total` suffix, and there is no `# EOF` or `# UNIT` line.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let help = line.strip_prefix("# HELP ");
        let name = help.and_then(|h| h.split(' ').next());
        let counter = name
            .is_some_and(|name| lines.peek() == Some(&format!("# TYPE {name} counter").as_str()));
        match (help, name) {
            (Some(help), Some(name)) if counter => {
                out.push_str(&format!("# HELP {name}_total{}\n", &help[name.len()..]));
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                lines.next();
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The OpenMetrics text of every metric.
pub fn render(exporter: &Arc<Exporter>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exporter.clone()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

/// The metrics listener's bounds (it also serves the watch page and its JSON).
pub fn limits() -> http::Limits {
    http::Limits {
        connections: METRICS_MAX_CLIENTS,
        per_source: METRICS_MAX_PER_SOURCE,
        head_size: METRICS_MAX_REQUEST,
        head_timeout: METRICS_TIMEOUT,
        body_size: 0,
        request_timeout: METRICS_TIMEOUT,
    }
}

/// The metrics listener's requests.
pub struct Endpoint(pub Arc<Exporter>);

impl http::Handler for Endpoint {
    fn handle(
        &self,
        request: ::http::Request<Bytes>,
        _peer: http::Peer,
    ) -> Pin<Box<dyn Future<Output = ::http::Response<http::Body>> + Send + '_>> {
        let exporter = &self.0;
        let (status, content_type, body) =
            route(&request, exporter.ready.load(Relaxed), || render(exporter));
        let mut response = ::http::Response::new(http::full(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            ::http::header::CONTENT_TYPE,
            ::http::HeaderValue::from_static(content_type),
        );
        Box::pin(std::future::ready(response))
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// What a request asks for: status, content type, body. `GET` and `HEAD` (hyper leaves a
/// HEAD's body out) of `/metrics`, `/healthz` (the process serves: liveness) and `/ready`
/// (started and not shutting down: readiness), as CoreDNS offers them; `metrics` renders
/// only when asked.
fn route<B>(
    request: &::http::Request<B>,
    ready: bool,
    metrics: impl FnOnce() -> String,
) -> (StatusCode, &'static str, String) {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "GET or HEAD only.\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" if wants_openmetrics(request.headers()) => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            classic(&metrics()),
        ),
        "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/ready" if ready => (StatusCode::OK, TEXT, "ready\n".into()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "not ready: starting or shutting down\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "/metrics, /healthz and /ready are here.\n".into(),
        ),
    }
}

/// Whether the request's `Accept` header names OpenMetrics (Prometheus sends it first).
fn wants_openmetrics(headers: &::http::HeaderMap) -> bool {
    headers.get_all(::http::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    })
}

#[cfg(test)]
mod tests {
    use super::route;
    use ::http::{Request, StatusCode};

    fn request(method: &str, target: &str, accept: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(target)
            .header("accept", accept)
            .body(())
            .unwrap()
    }

    /// A load balancer's readiness probe: 503 while starting or shutting down (too brief to
    /// catch from outside; the integration tests see the 200), and HEAD alike.
    #[test]
    fn ready_is_503_until_the_server_serves() {
        let no_metrics = || unreachable!("only /metrics renders");
        for method in ["GET", "HEAD"] {
            let ready = request(method, "/ready", "*/*");
            let (status, _, body) = route(&ready, false, no_metrics);
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body, "not ready: starting or shutting down\n");
            assert_eq!(route(&ready, true, no_metrics).0, StatusCode::OK);
        }
        assert_eq!(
            route(&request("GET", "/healthz", "*/*"), false, no_metrics).0,
            StatusCode::OK,
            "liveness is not readiness"
        );
        let metrics = request("GET", "/metrics?x=1", "application/openmetrics-text");
        assert_eq!(route(&metrics, false, || "m".into()).2, "m");
        let post = request("POST", "/ready", "*/*");
        assert_eq!(
            route(&post, true, no_metrics).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// The classic format names a counter's family with its `_total`, and has no `# EOF`.
    #[test]
    fn the_classic_format_differs_from_openmetrics_only_where_it_must() {
        let openmetrics = "# HELP flipdns_flips Flips.\n# TYPE flipdns_flips counter\nflipdns_flips_total{service=\"app\"} 1\n# HELP flipdns_live Live.\n# TYPE flipdns_live gauge\nflipdns_live 1\n# EOF\n";
        assert_eq!(
            super::classic(openmetrics),
            "# HELP flipdns_flips_total Flips.\n# TYPE flipdns_flips_total counter\nflipdns_flips_total{service=\"app\"} 1\n# HELP flipdns_live Live.\n# TYPE flipdns_live gauge\nflipdns_live 1\n"
        );
        let (_, content_type, body) = route(&request("GET", "/metrics", "*/*"), true, || {
            openmetrics.into()
        });
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!body.contains("# EOF"));
    }
}
