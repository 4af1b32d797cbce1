//! Build script (not a module of the crate): the commit and compiler a binary is built from,
//! for `flipdns --version`, `ctl version` and `flipdns_build_info`, so an operator can tell
//! which build a running server is.
//!
//! The commit is `FLIPDNS_REVISION` when a packager sets it, else HEAD of the git checkout
//! being built, else "unknown" (a source tarball). Uncommitted changes are not marked: that
//! would mean rebuilding on every edit.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/build_script.rs");
    println!("cargo:rerun-if-env-changed=FLIPDNS_REVISION");
    let revision = std::env::var("FLIPDNS_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.95.0 (59807616e 2026-04-14)" -> "1.95.0"
    let rustc = output(Command::new(rustc).arg("--version"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FLIPDNS_REVISION={revision}");
    println!("cargo:rustc-env=FLIPDNS_RUSTC={rustc}");
}

/// HEAD's short hash, rebuilt when HEAD moves: a commit, a checkout, a pull.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| output(Command::new("git").args(args));
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD's reflog is appended to whenever HEAD moves, whether the branch's ref is a loose
    // file (which `git pack-refs` removes, and the next commit creates again) or packed;
    // HEAD itself and the refs stand in where reflogs are off.
    let mut files = vec!["logs/HEAD".to_string(), "HEAD".into(), "packed-refs".into()];
    files.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for file in &files {
        watch(git(&["rev-parse", "--git-path", file]));
    }
    Some(head)
}

/// Only files that exist: cargo reruns a script whose watched file is missing on every build.
fn watch(path: Option<String>) {
    if let Some(path) = path.filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
