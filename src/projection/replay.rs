//! Rebuilding the state from the log, which stays the truth.

use super::{persist, Touched};
use crate::domain::{Event, LedgerState};
use crate::progress::Progress;
use crate::store::{try_scan, Envelope, EventLog, Head, ProjectionStoreExt, Store, StoreError};

/// Replays the whole log into a fresh state, checking that positions are
/// gap-free, every record matches its hash and the chain is unbroken.
pub fn replay_log(store: &dyn EventLog) -> Result<(LedgerState, Head), StoreError> {
    let (state, head, _) = catch_up(store, LedgerState::default(), Head::default())?;
    Ok((state, head))
}

/// Applies the records after `from` up to the head (read first: records
/// other replicas append meanwhile are left for later) to `state`, which
/// must be the state at `from`, with the same checks as [`replay_log`];
/// returns the new state, the head and the aggregates the records touched.
pub fn catch_up(
    store: &dyn EventLog,
    state: LedgerState,
    from: Head,
) -> Result<(LedgerState, Head, Touched), StoreError> {
    let to = store.head()?;
    catch_up_to(store, state, from, to, &mut |_, _| {})
}

/// [`catch_up`] to the head `to`, calling `each` with every record applied.
pub(crate) fn catch_up_to(
    store: &dyn EventLog,
    mut state: LedgerState,
    from: Head,
    to: Head,
    each: &mut dyn FnMut(&Envelope, &Event),
) -> Result<(LedgerState, Head, Touched), StoreError> {
    let mut head = from;
    let mut touched = Touched::default();
    if to.position > from.position {
        try_scan(store, from.position + 1, |position, bytes| {
            if position != head.position + 1 {
                return Err(StoreError::Corrupt(format!(
                    "position {} follows position {}",
                    position, head.position
                )));
            }
            let (envelope, hash) = check_record(position, bytes, Some(head.hash))?;
            let event = envelope.event()?;
            touched.record(&event);
            state.apply_recorded(&event, envelope.aggregate_version);
            each(&envelope, &event);
            head = Head { position, hash };
            Ok(position < to.position)
        })?;
    }
    if to != head {
        return Err(StoreError::Corrupt(format!(
            "the stored head is position {} but the log ends at {}",
            to.position, head.position
        )));
    }
    Ok((state, head, touched))
}

/// Checks a record stored at `position`: it decodes and matches its hash,
/// says it is at `position`, and links to `prev`, the hash of the record
/// before it (unless that is unknown: `None`). Returns it and its hash.
pub(crate) fn check_record(
    position: u64,
    bytes: &[u8],
    prev: Option<[u8; 32]>,
) -> Result<(Envelope, [u8; 32]), StoreError> {
    let envelope = Envelope::decode(bytes)?;
    let linked = match prev {
        Some(prev) => envelope.prev_hash_bytes()? == prev,
        None => true,
    };
    if envelope.position != position || !linked {
        return Err(StoreError::Corrupt(format!(
            "record at position {position} does not continue the hash chain"
        )));
    }
    let hash = envelope.hash_bytes()?;
    Ok((envelope, hash))
}

/// The state after the records up to `position`, without the checks of
/// [`catch_up`]: what tests compare stored read sides with.
#[cfg(test)]
pub(crate) fn state_at(store: &dyn EventLog, position: u64) -> Result<LedgerState, StoreError> {
    let mut state = LedgerState::default();
    try_scan(store, 1, |at, bytes| -> Result<bool, StoreError> {
        if at > position {
            return Ok(false);
        }
        state.apply(&Envelope::decode(bytes)?.event()?);
        Ok(true)
    })?;
    Ok(state)
}

/// The head as of position `position`: its hash read from the log.
pub fn head_at(store: &dyn EventLog, position: u64) -> Result<Head, StoreError> {
    if position == 0 {
        return Ok(Head::default());
    }
    let bytes = store.read_at(position)?.ok_or_else(|| {
        StoreError::Corrupt(format!("the log has no record at position {position}"))
    })?;
    Ok(Head {
        position,
        hash: Envelope::decode(&bytes)?.hash_bytes()?,
    })
}

/// Replays the log and rewrites the persisted projections from it,
/// moving `progress` by the records replayed.
pub fn rebuild_projections(
    store: &dyn Store,
    progress: &Progress,
) -> Result<(LedgerState, Head), StoreError> {
    let (state, head) = replay_to(store, store.head()?, progress)?;
    store.replace_projections(&persist::full(&state)?, head.position)?;
    Ok((state, head))
}

/// A fresh state replayed from the log up to `to`, moving `progress`.
fn replay_to(
    store: &dyn Store,
    to: Head,
    progress: &Progress,
) -> Result<(LedgerState, Head), StoreError> {
    let (state, head, _) = catch_up_to(
        store,
        LedgerState::default(),
        Head::default(),
        to,
        &mut |envelope, _| {
            if envelope.position % 1024 == 0 {
                progress.set(envelope.position);
            }
        },
    )?;
    Ok((state, head))
}

/// What `projections rebuild --check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectionCheck {
    /// The stored read side is exactly a fresh replay up to its
    /// checkpoint (the head may be past it: the next start catches up).
    Equal {
        /// The stored read side's position.
        checkpoint: u64,
        /// The log's head.
        head: u64,
    },
    /// It differs from a fresh replay, first at this key.
    Differs {
        /// The first key that differs.
        key: Vec<u8>,
    },
    /// A stepwise write of it was cut short, towards these positions: the
    /// next start finishes it (`audit verify` checks what it left).
    Unfinished {
        /// Where the writes were going.
        pending: Vec<u64>,
    },
    /// There is none stored: the next start builds it.
    Missing,
}

/// Compares the stored read side with a fresh replay of the log up to its
/// checkpoint, reading only: what an auditor's role or a hot standby can
/// run. `progress` moves by the records replayed.
pub fn check_projections(
    store: &dyn Store,
    progress: &Progress,
) -> Result<ProjectionCheck, StoreError> {
    let pending = store.projection_pending()?;
    if !pending.is_empty() {
        return Ok(ProjectionCheck::Unfinished { pending });
    }
    let Some(checkpoint) = store.projection_checkpoint()? else {
        return Ok(ProjectionCheck::Missing);
    };
    let head = store.head()?.position;
    let (state, _) = replay_to(store, head_at(store, checkpoint)?, progress)?;
    Ok(match super::persist::first_difference(store, &state)? {
        Some(key) => ProjectionCheck::Differs { key },
        None => ProjectionCheck::Equal { checkpoint, head },
    })
}
