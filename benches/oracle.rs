//! The differential oracle's longer seeded run: `ORACLE_SEEDS` generated zones (default
//! 50, from `ORACLE_FIRST`, default 1000), every case of each, against NSD, Knot and
//! hickory-server (README, "What it answers"). Prints what it found: cases, agreement, the
//! references' own dissents by kind, and every case where flipdns differs from references
//! that agree (it exits non-zero on any). `cargo bench --bench oracle`.

#[path = "../tests/integration/common/oracle.rs"]
#[allow(dead_code)]
mod oracle;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (first, count) = (setting("ORACLE_FIRST", 1000), setting("ORACLE_SEEDS", 50));
    let seeds: Vec<u64> = (first..first + count).collect();
    let started = std::time::Instant::now();
    let run = oracle::run(env!("CARGO_BIN_EXE_flipdns"), &seeds, 100);
    println!(
        "oracle: {} zones, {} cases, {} agree, {} excluded (the references differ), {} differ, in {:.0} s",
        seeds.len(),
        run.total,
        run.agreed,
        run.excluded.len(),
        run.failures.len(),
        started.elapsed().as_secs_f64()
    );
    for (why, n) in run.dissent_kinds() {
        println!("  {n:6} dissents: {why}");
    }
    for line in run.excluded.iter().take(50) {
        println!("  excluded: {line}");
    }
    for line in &run.failures {
        println!("  DIFFERS: {line}");
    }
    if !run.failures.is_empty() {
        std::process::exit(1);
    }
}
