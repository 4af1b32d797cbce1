//! Integration tests: each module starts the real `flipdns` binary (or drives the library in
//! process) and checks what an operator would see. One test binary, so the harness in
//! `common` is compiled once.

mod common;

mod addresses;
mod admin;
mod answers;
mod api;
mod check;
mod consistency;
mod crash;
mod cutover;
mod dns_protocol;
mod dnstap;
mod faults;
mod fleet_report;
mod flip;
mod health;
mod layering;
mod metrics;
mod model;
mod oracle;
mod page;
mod property;
mod reload;
mod report_edges;
mod resolvers;
mod restart;
mod secondaries;
mod service_manager;
mod stragglers;
mod tcp;
