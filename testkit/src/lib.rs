//! What image-ledger's tests (and the bench's) start and tear down:
//! throwaway PostgreSQL clusters ([`postgres`]). A crate of its own, used
//! only as a dev-dependency, so none of it is in the service's binary.

pub mod postgres;

pub use postgres::Cluster;
