//! rankd's integration suite: one binary, real Redis (standalone and cluster), no mocks.

mod helpers;

mod engine;
mod http;
mod server;
