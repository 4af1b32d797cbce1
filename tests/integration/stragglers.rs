//! The straggler ledger, with simulated resolvers on their own loopback addresses: after a
//! flip the report puts each in its class, in both answer modes, per client subnet.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Resolver, Server, Setup, every};

const APP: &str = "app.svc.example.com";
const OLD: &str = "blue.app.svc.example.com";
const SUBNET_A: Option<([u8; 4], u8)> = Some(([192, 0, 2, 0], 24));
const SUBNET_B: Option<([u8; 4], u8)> = Some(([198, 51, 100, 0], 24));

fn service(answer: &str) -> String {
    format!(
        "[[service]]\nname = \"app\"\nanswer = \"{answer}\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 1\ncutover_ttl = 1\nsettle = \"0s\"\n"
    )
}

/// Five kinds of resolver; the flip comes at 13 s, the report at 17 s: every moment a class
/// turns on is a second or more from the events around it.
fn classes_after_a_flip(answer: &str, net: u8) {
    let server = Server::start_with(&Setup {
        services: service(answer),
        ..Setup::default()
    });
    let addr = server.udp();
    let source = |host: u8| format!("127.0.{net}.{host}");
    let start = Instant::now() + Duration::from_millis(300);
    // Compliant: asks again whenever its 1 s TTL runs out.
    let compliant = Resolver::spawn(&source(11), addr, start, every(0, 18_000, 1000, APP, None));
    // Clamping: keeps answers 4 TTLs; its last refresh before the report is at 12 s.
    let clamping = Resolver::spawn(&source(12), addr, start, every(0, 12_001, 4000, APP, None));
    // Idle: asked once.
    let idle = Resolver::spawn(&source(13), addr, start, every(0, 1, 1000, APP, None));
    // Pinned: something behind it uses the old color's name after the flip.
    let mut pinned_schedule = every(0, 12_001, 1000, APP, None);
    pinned_schedule.extend(every(15_000, 18_000, 500, OLD, None));
    let pinned = Resolver::spawn(&source(14), addr, start, pinned_schedule);
    // One resolver, two client subnets: A pinned to the old color, B converging.
    let mut subnets = every(0, 1, 1000, APP, SUBNET_A);
    subnets.extend(every(0, 1, 1000, APP, SUBNET_B));
    subnets.extend(every(15_000, 18_000, 500, OLD, SUBNET_A));
    let subnets = Resolver::spawn(&source(15), addr, start, subnets);
    let converging_b = Resolver::spawn(
        &source(15),
        addr,
        start,
        every(14_500, 14_501, 1000, APP, SUBNET_B),
    );

    std::thread::sleep(
        (start + Duration::from_millis(13_000)).saturating_duration_since(Instant::now()),
    );
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    std::thread::sleep(
        (start + Duration::from_millis(17_000)).saturating_duration_since(Instant::now()),
    );

    let json = server.ctl_ok(&["stragglers", "app", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let counts = &report["counts"];
    assert_eq!(report["flip"]["from"], "blue", "{json}");
    assert_eq!(report["flip"]["to"], "green");
    assert_eq!(counts["converged"], 2, "compliant, and subnet B: {json}");
    assert_eq!(counts["overdue"], 1, "clamping: {json}");
    assert_eq!(counts["silent"], 1, "idle: {json}");
    assert_eq!(counts["straggler"], 2, "pinned, and subnet A: {json}");
    assert_eq!(counts["draining"], 0);
    assert_eq!(report["drained"], true);
    let listed = report["resolvers"].as_array().unwrap();
    let find = |ip: &str, subnet: Option<&str>| {
        listed
            .iter()
            .find(|r| r["resolver"] == ip && r["subnet"].as_str() == subnet)
            .unwrap_or_else(|| panic!("{ip} {subnet:?} not listed: {json}"))
    };
    let clamp = find(&source(12), None);
    assert_eq!(clamp["flips"], 0, "its last answer came before the flip");
    assert_eq!(clamp["class"], "overdue");
    let ratio = clamp["interval_ratio"]
        .as_f64()
        .expect("enough samples for a ratio");
    assert!(
        (3.0..5.0).contains(&ratio),
        "re-queries every ~4 TTLs: {ratio}"
    );
    let pin = find(&source(14), None);
    assert_eq!(pin["class"], "straggler");
    assert!(pin["straggler"]["count"].as_u64().unwrap() >= 3, "{pin}");
    assert!(pin["straggler"]["late_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        find(&source(15), Some("192.0.2.0/24"))["class"],
        "straggler"
    );
    let by_resolver: u64 = listed
        .iter()
        .filter_map(|r| r["straggler"]["count"].as_u64())
        .sum();
    assert_eq!(
        report["straggler_queries"].as_u64().unwrap(),
        by_resolver,
        "every straggling query is one of a listed straggler's: {json}"
    );

    // The same in words, in status, and in the log.
    let text = server.ctl_ok(&["stragglers", "app"]);
    assert!(text.contains("app: flipped blue -> green at "), "{text}");
    assert!(
        text.contains(&format!("  {} for 192.0.2.0/24", source(15))),
        "{text}"
    );
    assert!(text.contains("x its TTL"), "{text}");
    assert!(
        text.contains("blue held by ") && text.contains(" at the flip"),
        "{text}"
    );
    for (host, class) in [(14, "straggler"), (12, "overdue")] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&source(host))
                    && l.contains(&format!(" {class}: "))),
            "each line says its class: {text}"
        );
    }
    let status = common::service_status(&server, "app");
    assert_eq!(status["resolvers"]["straggler"], 2);
    assert!(
        server.wait_for_log("first straggler for app", Duration::from_secs(2)),
        "{}",
        server.log()
    );
    assert!(
        server.wait_for_log("blue drained for app at ", Duration::from_secs(3)),
        "{}",
        server.log()
    );
    for resolver in [compliant, clamping, idle, pinned, subnets, converging_b] {
        resolver.join();
    }
}

#[test]
fn resolvers_are_classified_after_a_flip_in_a_mode() {
    classes_after_a_flip("a", 1);
}

#[test]
fn resolvers_are_classified_after_a_flip_in_cname_mode() {
    classes_after_a_flip("cname", 2);
}

#[test]
fn cname_mode_answers_a_cname_and_the_live_addresses() {
    let server = Server::start_with(&Setup {
        services: service("cname"),
        ..Setup::default()
    });
    let answer = server.dig(&["app.svc.example.com", "A"]);
    assert_eq!(answer.data("CNAME"), ["blue.app.svc.example.com."]);
    assert_eq!(answer.data("A"), ["192.0.2.10"]);
    assert!(
        answer.answer.iter().all(|r| r.ttl == 1),
        "the addresses never outlive the CNAME: {}",
        answer.raw
    );
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    let answer = server.dig(&["app.svc.example.com", "A"]);
    assert_eq!(answer.data("CNAME"), ["green.app.svc.example.com."]);
    assert_eq!(answer.data("A"), ["198.51.100.10"]);
}

#[test]
fn client_subnets_are_echoed_with_scope_zero() {
    let server = Server::start();
    let answer = server.dig(&["+subnet=192.0.2.0/24", "app.svc.example.com", "A"]);
    assert!(
        answer.raw.contains("CLIENT-SUBNET: 192.0.2.0/24/0"),
        "{}",
        answer.raw
    );
}

#[test]
fn without_the_ledger_the_report_says_so() {
    let server = Server::start_with(&Setup {
        extra: "[ledger]\nenabled = false\n".into(),
        ..Setup::default()
    });
    let out = server.ctl(&["stragglers", "app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the straggler ledger is off"));
}

#[test]
fn a_thousand_resolvers_fit_and_more_evict() {
    let server = Server::start_with(&Setup {
        extra: "[ledger]\ncapacity = 500\n".into(),
        ..Setup::default()
    });
    // One query from each of 1000 loopback addresses, a hundred in flight at a time.
    let sockets: Vec<std::net::UdpSocket> = (0..1000u32)
        .map(|i| std::net::UdpSocket::bind(format!("127.3.{}.{}:0", i / 250, i % 250 + 1)).unwrap())
        .collect();
    let mut buf = [0u8; 512];
    for wave in sockets.chunks(100) {
        for (i, socket) in wave.iter().enumerate() {
            socket
                .send_to(&common::query(i as u16, APP, 1), server.udp())
                .unwrap();
        }
        for socket in wave {
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            socket.recv(&mut buf).expect("every resolver is answered");
        }
    }
    let json = server.ctl_ok(&["stragglers", "app", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["ledger"]["entries"], 500, "{json}");
    assert_eq!(report["ledger"]["capacity"], 500);
    assert_eq!(report["ledger"]["evicted"], 500);
    assert_eq!(report["ledger"]["dropped"], 0);
}

/// A resolver that keeps answers 8 TTLs (a clamper) comes back late after each of two
/// flips: a straggler with its record (when its old answer expired, when it converged, how
/// late), and the report lists every resolver on request, with the limit counted.
fn late_convergence_across_two_flips(answer: &str, net: u8) {
    let server = Server::start_with(&Setup {
        services: service(answer),
        ..Setup::default()
    });
    let addr = server.udp();
    let source = |host: u8| format!("127.0.{net}.{host}");
    let start = Instant::now() + Duration::from_millis(300);
    let clamper = Resolver::spawn(&source(12), addr, start, every(0, 32_001, 8000, APP, None));
    // Resolvers that obey the 1 s TTL.
    let compliant: Vec<Resolver> = (20..32)
        .map(|host| {
            Resolver::spawn(
                &source(host),
                addr,
                start,
                every(0, 33_000, 1000, APP, None),
            )
        })
        .collect();
    let at = |ms: u64| {
        std::thread::sleep(
            (start + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
        )
    };
    let report = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["stragglers", "app", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&server.ctl_ok(&all)).unwrap()
    };
    let find = |report: &serde_json::Value, ip: &str| -> serde_json::Value {
        report["resolvers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resolver"] == ip)
            .cloned()
            .unwrap_or_else(|| panic!("{ip} not listed: {report}"))
    };

    // Two regular 8 s intervals (ratio 8) before the first flip at 17 s, a second after its
    // refresh of 16 s expired.
    at(17_000);
    server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    at(20_000);
    let holding = find(&report(&[]), &source(12));
    assert_eq!(
        holding["class"], "overdue",
        "clamped, silent past its TTL: {holding}"
    );
    assert_eq!(holding["clamps"], true, "{holding}");
    assert_eq!(holding["record"]["held_old"], true, "{holding}");
    at(25_000); // it came back at 24 s: 7 s after the flip (and its answer's expiry)
    let first = report(&[]);
    let late = find(&first, &source(12));
    assert_eq!(late["class"], "straggler", "{first}");
    let late_by = late["record"]["late_by_ms"].as_u64().unwrap();
    assert!((6_000..=8_000).contains(&late_by), "{late}");
    assert!(
        late["record"]["converged_at_ms"].as_u64().is_some(),
        "{late}"
    );
    assert!(
        first["last_straggler_converged_ms"].as_u64().is_some(),
        "{first}"
    );
    assert_eq!(
        first["counts"]["converged"], 12,
        "the compliant ones, on time: {first}"
    );

    // The second flip: the record is this flip's, and it is late again.
    at(25_500);
    server.ctl_ok(&["flip", "app", "--to", "blue", "--now"]);
    at(28_000);
    let holding = find(&report(&[]), &source(12));
    assert_ne!(
        holding["class"], "straggler",
        "a new flip, a new record: {holding}"
    );
    assert!(holding["record"]["converged_at_ms"].is_null(), "{holding}");
    at(33_000);
    let second = report(&[]);
    let late = find(&second, &source(12));
    assert_eq!(late["class"], "straggler", "{second}");
    assert_eq!(second["flip"]["flips"], 2);
    let late_by = late["record"]["late_by_ms"].as_u64().unwrap();
    assert!(
        (5_500..=7_500).contains(&late_by),
        "6.5 s past the second flip: {late}"
    );

    // Every resolver on request; the limit counted; one class alone.
    let all = report(&["--all", "--limit", "100"]);
    assert_eq!(all["resolvers"].as_array().unwrap().len(), 13, "{all}");
    assert_eq!(all["left_out"], 0);
    assert_eq!(
        all["resolvers"][0]["class"], "straggler",
        "most interesting first"
    );
    let capped = report(&["--all", "--limit", "5"]);
    assert_eq!(capped["resolvers"].as_array().unwrap().len(), 5);
    assert_eq!(capped["left_out"], 8);
    let by_default = report(&[]);
    assert_eq!(
        by_default["left_out"].as_u64().unwrap()
            + by_default["resolvers"].as_array().unwrap().len() as u64,
        13,
        "every resolver not shown is counted: {by_default}"
    );
    let converged = report(&["--class", "converged"]);
    assert!(
        converged["resolvers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["class"] == "converged" && r["clamps"] == false),
        "{converged}"
    );
    assert!(
        !second["timeline"].as_array().unwrap().is_empty(),
        "{second}"
    );
    let text = server.ctl_ok(&["stragglers", "app", "--all"]);
    assert!(text.contains("kept the old color"), "{text}");
    assert!(text.contains("(clamps TTLs)"), "{text}");
    assert!(text.contains("the last straggler converged at"), "{text}");
    clamper.join();
    for resolver in compliant {
        resolver.join();
    }
}

#[test]
fn a_resolver_that_comes_back_late_is_a_straggler_after_each_flip_in_a_mode() {
    late_convergence_across_two_flips("a", 3);
}

#[test]
fn a_resolver_that_comes_back_late_is_a_straggler_after_each_flip_in_cname_mode() {
    late_convergence_across_two_flips("cname", 4);
}
