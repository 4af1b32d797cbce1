//! The admin socket: the change and report interface for operators and release tooling.
//!
//! - [`protocol`]: the request and reply types (the wire contract, shared with the client);
//! - [`server`]: binds the socket, reads bounded request lines;
//! - [`commands`]: runs each request (status report, cutover commands, progress);
//! - [`client`]: what `flipdns ctl` runs.

pub mod client;
pub mod commands;
pub mod protocol;
pub mod server;
