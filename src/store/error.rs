//! What can go wrong in a store, kept by kind so callers can tell a retry
//! from a reason to stop.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// The cause of a backend failure, shared so one failure can be handed to
/// every caller of a batch.
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// A failure of the storage layer. None of these is the caller's fault.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The log moved under the writer: another writer appended first.
    /// Reload (or catch up) and decide again.
    #[error("append conflict: the log head is at position {found}, the batch expected {expected}")]
    Conflict {
        /// The head position the batch was built on.
        expected: u64,
        /// The head position the store has.
        found: u64,
    },
    /// The backend failed (I/O, a full disk, a lost connection). Nothing of
    /// the failed call can be relied on; retry later.
    #[error("storage failure{}{what}", if what.is_empty() { "" } else { ": " })]
    Backend {
        /// What was being done; empty when the cause says it all.
        what: String,
        /// Why it failed, when a lower layer said.
        #[source]
        cause: Option<Cause>,
    },
    /// Stored data does not decode or does not match its hash: the store was
    /// damaged or tampered with. Do not write; run an audit.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A backend failure with the lower layer's error as its cause.
    pub fn backend(what: impl Into<String>, cause: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Backend {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A backend failure that has no lower-layer error.
    pub fn failed(what: impl Into<String>) -> Self {
        StoreError::Backend {
            what: what.into(),
            cause: None,
        }
    }

    /// A record that cannot be serialized.
    pub(crate) fn encode(err: serde_json::Error) -> Self {
        StoreError::backend("cannot encode a record", err)
    }

    /// Stored bytes that do not parse.
    pub(crate) fn decode(err: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("cannot decode a record: {err}"))
    }
}

/// Displays an error with every cause below it, `: `-separated: what logs
/// print, since `Display` of an error with a source shows only itself.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_failure_reads_as_before_with_its_cause_behind_it() {
        let cause = || std::io::Error::other("No space left on device");
        let described = StoreError::backend("cannot sync sled's log file", cause());
        assert_eq!(
            described.to_string(),
            "storage failure: cannot sync sled's log file"
        );
        assert_eq!(
            Chain(&described).to_string(),
            "storage failure: cannot sync sled's log file: No space left on device"
        );
        // A lower layer's error that says it all is not described twice.
        let bare = StoreError::backend("", cause());
        assert_eq!(
            Chain(&bare).to_string(),
            "storage failure: No space left on device"
        );
    }
}
