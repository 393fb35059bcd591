//! What image-ledger's tests and its bench start and tear down: server
//! processes ([`process`]) and throwaway PostgreSQL clusters
//! ([`postgres`]). A crate of its own, so none of it is in the service's
//! binary.

pub mod postgres;
pub mod process;

pub use postgres::Cluster;
pub use process::{ServerCommand, ServerProcess, StartError, Stderr};
