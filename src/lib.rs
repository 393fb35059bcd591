//! image-ledger: the rules of sharing custom machine images between cloud
//! accounts, kept as an append-only, hash-chained event log in sled.

pub mod domain;
pub mod store;
pub mod projection;
pub mod app;
pub mod grpc;
pub mod config;
pub mod server;
