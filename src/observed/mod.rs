//! What the running server saw: answers, flips and health per service, each service
//! answer on its way to the straggler ledger, and server-wide counters. Written where things happen (the query path, the cutover, the health checks),
//! read by `status`, `/metrics` and the cutover's drain input; never persisted, so a
//! restart starts afresh and the cutover assumes the worst about what it cannot remember.

pub mod answers;
pub mod api;
pub mod batch;
pub mod counters;
mod service;

pub use service::{AddressHealth, ColorHealth, FlipResult, HealthBoard, Observed};
