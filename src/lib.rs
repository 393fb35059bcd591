//! image-ledger: the rules of sharing custom machine images between cloud
//! accounts, kept as an append-only, hash-chained event log in sled.

pub mod app;
pub mod audit;
pub mod auth;
pub mod chunks;
pub mod cloud;
pub mod config;
pub mod deferred;
pub mod domain;
pub mod grpc;
pub mod idempotency;
pub mod listener;
pub mod metrics;
pub mod progress;
pub mod projection;
pub mod server;
pub mod settings;
pub mod store;
pub mod tls;
pub mod traces;
