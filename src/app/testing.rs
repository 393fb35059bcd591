//! The hook tests use inside the writer, which needs its internals: a
//! record that fails to encode.

use crate::store::StoreError;

/// Failures tests inject into the writer, each at most once.
#[derive(Debug, Default)]
pub(crate) struct Failpoints {
    /// Encoding the record at this position fails (0: none).
    pub(crate) encode_at: std::sync::atomic::AtomicU64,
}

impl Failpoints {
    /// Fails once when a record at `position` is encoded, if asked to.
    pub(crate) fn encoding(&self, position: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        match self
            .encode_at
            .compare_exchange(position, 0, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Err(StoreError::failed(format!(
                "injected: the record at position {position} does not encode"
            ))),
            Err(_) => Ok(()),
        }
    }
}
