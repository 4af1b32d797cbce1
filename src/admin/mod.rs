//! The admin socket: the change and report interface for operators and release tooling.
//!
//! - [`protocol`]: the request and reply types (the wire contract, shared with the client);
//! - [`server`]: binds the socket and turns request lines into [`crate::switch::Switch`] calls;
//! - [`client`]: what `flipdns ctl` runs.

pub mod client;
pub mod protocol;
pub mod server;
