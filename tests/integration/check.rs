//! `flipdns check`: every problem with its file and line, and a non-zero exit.

use std::process::Command;

use crate::common;
use crate::common::{BIN, Setup};

/// Runs `flipdns check` on `setup`, written out and then changed by `tweak`: whether it
/// passed, what it printed, and the directory.
pub fn check(setup: &Setup, tweak: impl FnOnce(&std::path::Path)) -> (bool, String, String) {
    let dir = setup.write();
    tweak(dir.path());
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.path().join("flipdns.toml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, dir.path().display().to_string())
}

#[test]
fn a_good_config_passes() {
    let (ok, text, dir) = check(&Setup::default(), |_| {});
    assert!(ok, "{text}");
    assert_eq!(
        text,
        format!("{dir}/flipdns.toml: ok (1 zone(s), 1 service(s))\n")
    );
}

#[test]
fn the_shipped_example_passes() {
    let out =
        crate::common::run_ok(Command::new(BIN).args(["check", "--config", "zones/flipdns.toml"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("warning"),
        "the example is warning-free: {text}"
    );
}

/// Valid but probably not meant: said with the file and line, and the check still passes.
#[test]
fn likely_mistakes_are_warned_about_with_their_lines() {
    let setup = Setup {
        zone: common::ZONE.replace("ns1     IN A    192.0.2.53\n", ""),
        services: common::SERVICES
            .replace("ttl = 300", "ttl = 172800")
            .replace("cutover_ttl = 5", "cutover_ttl = 100000")
            .replace("\"198.51.100.10\"", "\"198.51.100.10\", \"192.0.2.10\"")
            + "[service.health]\nkind = \"https\"\nport = 443\ntls_verify = false\n",
        ..Setup::default()
    };
    let (ok, text, dir) = check(&setup, |_| {});
    assert!(ok, "warnings do not fail the check: {text}");
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no warning about {needle}:\n{text}"))
            .to_string()
    };
    assert!(line("is over a day").starts_with(&format!("warning: {dir}/flipdns.toml:")));
    line("cutover_ttl = 100000 is not well below ttl = 172800");
    line("192.0.2.10 is in both blue and green");
    line("health tls_verify = false accepts any certificate");
    assert_eq!(
        line("NS ns1.svc.example.com."),
        format!(
            "warning: {dir}/svc.zone:4: NS ns1.svc.example.com. is inside the zone but has no A or AAAA record in it: resolvers cannot find that name server"
        )
    );
}

#[test]
fn unknown_keys_and_bad_addresses_are_all_reported_with_lines() {
    let setup = Setup {
        server: "listn = [\"127.0.0.1:53\"]".into(),
        services: common::SERVICES.replace("\"198.51.100.10\"", "\"198.51.100.999\""),
        ..Setup::default()
    };
    let (ok, text, dir) = check(&setup, |_| {});
    assert!(!ok);
    let file = format!("{dir}/flipdns.toml");
    assert!(
        text.contains(&format!("{file}:5: unknown key `listn` in [server]")),
        "{text}"
    );
    let green_line = setup
        .config()
        .lines()
        .position(|l| l.starts_with("green"))
        .unwrap()
        + 1;
    assert!(
        text.contains(&format!(
            "{file}:{green_line}: bad address \"198.51.100.999\" in `green`"
        )),
        "{text}"
    );
}

#[test]
fn a_missing_zone_file_is_named() {
    let (ok, text, dir) = check(&Setup::default(), |dir| {
        std::fs::remove_file(dir.join("svc.zone")).unwrap()
    });
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "{dir}/svc.zone: cannot read zone file: No such file or directory"
        )),
        "{text}"
    );
}

#[test]
fn a_name_collision_names_both_places() {
    let setup = Setup {
        zone: format!("{}app IN A 192.0.2.77\n", common::ZONE),
        ..Setup::default()
    };
    let (ok, text, dir) = check(&setup, |_| {});
    assert!(!ok);
    let service_line = setup
        .config()
        .lines()
        .position(|l| l == "[[service]]")
        .unwrap()
        + 1;
    assert!(text.contains(&format!("{dir}/svc.zone:9: app.svc.example.com. collides with service `app` ({dir}/flipdns.toml:{service_line})")), "{text}");
}

/// A service below a delegation would be answered by the child's servers, never by us.
#[test]
fn a_service_below_a_delegation_is_refused_with_both_places() {
    let setup = Setup {
        zone: format!(
            "{}prod IN NS ns.prod\nns.prod IN A 192.0.2.77\n",
            common::ZONE
        ),
        services: common::SERVICES.replace("name = \"app\"", "name = \"app.prod\""),
        ..Setup::default()
    };
    let (ok, text, dir) = check(&setup, |_| {});
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("{dir}/flipdns.toml:"))
            && text.contains("service `app.prod` answers app.prod.svc.example.com., which is delegated to another zone (NS at prod.svc.example.com.")
            && text.contains("svc.zone"),
        "{text}"
    );
    // Without the service the same zone passes: the delegation itself is fine.
    let setup = Setup {
        services: common::SERVICES.into(),
        ..setup
    };
    let (ok, text, _) = check(&setup, |_| {});
    assert!(ok, "{text}");
}

#[test]
fn a_bad_zone_line_is_named() {
    let setup = Setup {
        zone: common::ZONE.replace("ns1     IN A    192.0.2.53", "ns1     IN A    192.0.2"),
        ..Setup::default()
    };
    let (ok, text, dir) = check(&setup, |_| {});
    assert!(!ok);
    assert!(
        text.contains(&format!("{dir}/svc.zone:5: bad A record")),
        "{text}"
    );
}

#[test]
fn serve_refuses_a_bad_config_before_binding_anything() {
    let setup = Setup {
        server: "metrics_listen = \"nowhere\"".into(),
        ..Setup::default()
    };
    let dir = setup.write();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("flipdns.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad metrics_listen \"nowhere\""), "{text}");
    assert!(
        !dir.path().join("run").exists(),
        "nothing created before validation passed"
    );
}

#[test]
fn the_readme_names_every_package_the_tests_install() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let list = std::fs::read_to_string(format!("{root}/tests/packages.txt")).unwrap();
    let packages: Vec<&str> = list
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(packages.len() >= 6, "{packages:?}");
    for package in packages {
        assert!(
            readme.contains(&format!("`{package}`")),
            "README.md does not name the package `{package}` of tests/packages.txt"
        );
    }
}

/// The README's second command is the test command, and `.ci/run` ends by running exactly it.
#[test]
fn ci_runs_the_readme_test_command() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let two = readme
        .split("## Two commands")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("the Two commands section with its sh block");
    let commands: Vec<&str> = two
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(
        last, commands[1],
        ".ci/run must end with the README's test command, the very line"
    );
}

/// The manual pages and completions come from the clap definitions, one page per command.
#[test]
fn man_pages_and_completions_are_generated_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::run_ok(
        Command::new(BIN)
            .args(["generate", "man"])
            .arg(dir.path().join("man1")),
    );
    for page in [
        "flipdns.1",
        "flipdns-serve.1",
        "flipdns-check.1",
        "flipdns-state-show.1",
        "flipdns-ctl.1",
        "flipdns-ctl-flip.1",
        "flipdns-ctl-stragglers.1",
        "flipdns-ctl-rollback.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join("man1").join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let flip = std::fs::read_to_string(dir.path().join("man1/flipdns-ctl-flip.1")).unwrap();
    assert!(flip.contains("The color to make live"), "{flip}");
    // The sections clap does not write: every ctl kind's exit code, the environment, the files.
    for kind in flipdns::protocol::ErrorKind::ALL {
        let item = format!(".TP\n{} ({})\n", kind.exit_code(), kind.as_str());
        assert!(flip.contains(&item), "flipdns-ctl-flip.1 lacks {item:?}");
    }
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        "FLIPDNS_SOCKET",
        "130\n",
    ] {
        assert!(
            flip.contains(section),
            "flipdns-ctl-flip.1 lacks {section:?}"
        );
    }
    let serve = std::fs::read_to_string(dir.path().join("man1/flipdns-serve.1")).unwrap();
    for needle in [
        "FLIPDNS_LOG_FORMAT",
        "NOTIFY_SOCKET",
        "/etc/flipdns/flipdns.toml",
        "state_file",
    ] {
        assert!(serve.contains(needle), "flipdns-serve.1 lacks {needle:?}");
    }
    // groff reads every page without a warning.
    for entry in std::fs::read_dir(dir.path().join("man1")).unwrap() {
        let page = entry.unwrap().path();
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z", "-Tutf8"])
            .arg(&page)
            .output()
            .expect("groff (man-db's dependency)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(crate::common::BIN)
            .args(["generate", "completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains("stragglers") && script.contains("no-wait"),
            "{shell}: {script}"
        );
    }
}
