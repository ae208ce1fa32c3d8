//! rankd's integration suite: one binary, real Redis (standalone and cluster), no mocks.

#![allow(clippy::unwrap_used)]

mod cleanup;
mod helpers;

mod admin;
mod admin_server;
mod bulk;
mod caches;
mod differential;
mod durability;
mod engine;
mod fuzz;
mod http;
mod limits;
mod model;
mod private;
mod promtool;
mod readme;
mod refusals;
mod server;
mod tls;
mod trouble;
