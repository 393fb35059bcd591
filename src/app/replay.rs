//! Rebuilding the state from the log, which stays the truth.

use crate::domain::LedgerState;
use crate::projection::persist;
use crate::store::{Envelope, EventStore, Head, StoreError};

/// Replays the whole log into a fresh state, checking that positions are
/// gap-free, every record matches its hash and the chain is unbroken.
pub fn replay_log(store: &dyn EventStore) -> Result<(LedgerState, Head), StoreError> {
    let mut state = LedgerState::default();
    let mut head = Head::default();
    let mut failure = None;
    store.scan(1, &mut |position, bytes| {
        let step = (|| {
            if position != head.position + 1 {
                return Err(StoreError::Corrupt(format!(
                    "position {} follows position {}",
                    position, head.position
                )));
            }
            let envelope = Envelope::decode(bytes)?;
            if envelope.position != position || envelope.prev_hash_bytes()? != head.hash {
                return Err(StoreError::Corrupt(format!(
                    "record at position {position} does not continue the hash chain"
                )));
            }
            state.apply(&envelope.event()?);
            head = Head {
                position,
                hash: envelope.hash_bytes()?,
            };
            Ok(())
        })();
        match step {
            Ok(()) => true,
            Err(err) => {
                failure = Some(err);
                false
            }
        }
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    let stored = store.head()?;
    if stored != head {
        return Err(StoreError::Corrupt(format!(
            "the stored head is position {} but the log ends at {}",
            stored.position, head.position
        )));
    }
    Ok((state, head))
}

/// Replays the log and rewrites the persisted projections from it.
pub fn rebuild_projections(store: &dyn EventStore) -> Result<(LedgerState, Head), StoreError> {
    let (state, head) = replay_log(store)?;
    store.replace_projections(&persist::full(&state)?, head.position)?;
    Ok((state, head))
}
