//! The event store: an append-only, hash-chained log with its idempotency
//! records ([`EventLog`]) and the persisted read side ([`ProjectionStore`]),
//! each a small trait, with two backends: the embedded sled store
//! ([`SledStore`], the default) and PostgreSQL ([`PgStore`]);
//! [`MemoryStore`] is the reference the tests hold the others to.

mod envelope;
mod error;
#[cfg(any(test, feature = "test-hooks"))]
mod faulty;
mod location;
mod log;
mod memory;
mod postgres;
mod projections;
mod sled;

pub use self::postgres::PgStore;
pub use self::sled::{Released, SledStore};
pub use envelope::{
    EncodedRecord, Envelope, RecordMeta, FIRST_RECORD_VERSION, GENESIS_HASH, RECORD_VERSION,
};
pub use error::{Cause, Chain, StoreError};
#[cfg(any(test, feature = "test-hooks"))]
pub use faulty::{CutShort, Faulty};
pub use location::{Location, Opened};
pub use log::{
    try_scan, try_scan_stream, AppendBatch, EventLog, EventLogExt, SharedLog, TokenSweeper,
    TokenVisitor, Watcher,
};
pub use memory::MemoryStore;
pub use projections::{
    ProjectionOp, ProjectionSave, ProjectionStatus, ProjectionStore, ProjectionStoreExt, SaveMode,
    Saved, VisitEntry,
};

/// Key/value pairs read from a side table, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A whole store: the log and the read side kept beside it.
pub trait Store: EventLog + ProjectionStore {}

impl<T: EventLog + ProjectionStore> Store for T {}

/// The last record of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its position; 0 for an empty log.
    pub position: u64,
    /// Its hash; [`GENESIS_HASH`] for an empty log.
    pub hash: [u8; 32],
}

impl Default for Head {
    fn default() -> Self {
        Self {
            position: 0,
            hash: GENESIS_HASH,
        }
    }
}

#[cfg(test)]
mod tests;
