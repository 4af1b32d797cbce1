//! The admin socket: the change and report interface for operators and release tooling.
//!
//! - [`server`]: binds the socket, checks peers, reads bounded request lines;
//! - [`audit`]: the trail of changes asked, who asked and what came of them;
//! - [`commands`]: runs each request (one file per command) and turns domain values into
//!   replies;
//! - [`ctl`], [`client`], [`remote`] and [`format`](mod@format): what `flipdns ctl` runs,
//!   sends (over the socket, or the HTTPS API with `--server`) and prints;
//! - [`manual`]: the manual pages' sections clap does not write.
//!
//! The request and reply types are [`crate::protocol`], which depends on nothing here.

pub mod admission;
pub mod audit;
pub mod client;
pub mod commands;
pub mod ctl;
pub mod format;
pub mod manual;
pub mod remote;
pub mod server;
