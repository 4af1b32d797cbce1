//! Test harness: starts the real `flipdns` binary on a free loopback port with a temporary
//! config, zone, state file and admin socket; queries it with `dig`; drives it with
//! `flipdns ctl`; kills it on drop.

mod dig;
pub mod dnstap;
pub mod oracle;
pub mod pki;
mod poll;
pub mod pty;
pub mod resolvers;

pub mod secondaries;
mod server;
mod stubs;
mod wire;

pub use dig::dig;
pub use poll::until;
pub use secondaries::{Kind, Secondary};
pub use server::*;
pub use stubs::*;
pub use wire::*;
