//! What this binary is: its version, the commit and the compiler it was built from (set by
//! `src/build_script.rs`), for `--version`, `ctl version` and `flipdns_build_info`.

/// The crate's version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit built from (at least 12 hex digits, more where 12 are ambiguous), or "unknown"
/// outside a git checkout.
pub const REVISION: &str = env!("FLIPDNS_REVISION");

/// The compiler's version, `1.95.0`.
pub const RUSTC: &str = env!("FLIPDNS_RUSTC");

/// `0.1.0 (commit 0123456789ab, rustc 1.95.0)`: what `--version` says.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLIPDNS_REVISION"),
    ", rustc ",
    env!("FLIPDNS_RUSTC"),
    ")"
);
