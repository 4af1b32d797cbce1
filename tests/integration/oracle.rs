//! Differential tests: flipdns answers like the reference servers. A seeded generator makes
//! zones with the shapes operators put beside their services (CNAME chains inside the zone,
//! leaving it and looping, empty non-terminals, MX and SRV targets in and out of the zone,
//! names differing only in case, a name near 255 octets, a large RRset) and the services in
//! their static form; real NSD and Knot serve the same zone file; every name × type, in
//! mixed case, with and without EDNS (small buffers too), over UDP and TCP, is asked of all
//! three and compared section by section. Where the references disagree the case is
//! excluded with its reason; where flipdns differs from agreeing references the test fails,
//! unless the difference is a deliberate reading documented in README "What it answers"
//! (listed in [`deliberate`] with its RFC section).

use std::time::Instant;

use crate::common::BIN;
use crate::common::oracle::*;

#[test]
fn flipdns_answers_like_nsd_knot_and_hickory_on_generated_zones() {
    let started = Instant::now();
    let run = run(BIN, &[1, 2, 3], 100);
    eprintln!(
        "oracle: {} cases, {} agree, {} excluded (the references differ), {} failures in {:.1} s",
        run.total,
        run.agreed,
        run.excluded.len(),
        run.failures.len(),
        started.elapsed().as_secs_f64()
    );
    for line in &run.excluded {
        eprintln!("  excluded: {line}");
    }
    for (why, n) in run.dissent_kinds() {
        eprintln!("  {n} dissents: {why}");
    }
    if std::env::var("ORACLE_VERBOSE").is_ok() {
        for line in &run.dissents {
            eprintln!("  dissent: {line}");
        }
    }
    assert!(
        run.failures.is_empty(),
        "{} of {} cases differ from the references that agree:\n{}",
        run.failures.len(),
        run.total,
        run.failures.join("\n")
    );
    assert!(
        run.total >= 1000 && run.agreed * 10 >= run.total * 9,
        "{} of {}",
        run.agreed,
        run.total
    );
}

/// Wildcards and delegations are not supported; the generator leaves them out, and
/// `check` says so with the file and line.
#[test]
fn unsupported_shapes_are_refused_by_check() {
    for (record, says) in [
        ("*.any IN A 192.0.2.1", "wildcard"),
        (
            "sub IN NS ns.sub",
            "delegating part of the zone is not supported",
        ),
    ] {
        let mut zone = zone(1);
        zone.flipdns_zone.push_str(record);
        zone.flipdns_zone.push('\n');
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.zone"), &zone.flipdns_zone).unwrap();
        std::fs::write(
            dir.path().join("flipdns.toml"),
            format!("[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"s\"\nstate_file = \"state.json\"\n[[zone]]\norigin = \"{ORIGIN}\"\nfile = \"svc.zone\"\n{}", zone.services),
        )
        .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(dir.path().join("flipdns.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && text.contains(says) && text.contains("svc.zone:"),
            "{record}: {text}"
        );
    }
}
