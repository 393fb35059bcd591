//! `audit verify`: proves the log is whole, untampered and lawful, and that
//! the stored read side equals a fresh replay. It never writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::rules::{decode, Decoded, RuleChecker, Violation};
use super::signing::SignedHead;
use super::AuditError;
use crate::chunks::chunked;
use crate::domain::LedgerState;
use crate::domain::Policy;
use crate::idempotency::TokenRecord;
use crate::progress::Progress;
use crate::projection::persist;
use crate::store::{EventLog, Head, ProjectionStatus, Store};

/// What a successful verification saw.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub events: u64,
    /// Distinct aggregates (accounts and images) in the log.
    pub aggregates: u64,
    /// Position of the last record.
    pub head_position: u64,
    /// Hash of the last record (hex).
    pub head_hash: String,
    /// Time spent.
    #[serde(skip)]
    pub elapsed: Duration,
    /// Whether the projections were compared (they are, unless the caller skips them).
    pub projections_checked: bool,
    /// The position the stored projections describe (their checkpoint).
    pub projections_at: Option<u64>,
    /// The targets of writes of the projections that stopped part way,
    /// oldest first: one after a crash cut a write short, more when a write
    /// failed (a disk error) and its retries did too. Each left a prefix of
    /// its changes; the next start finishes the job. Empty when none did.
    pub projections_pending: Vec<u64>,
    /// The pinned head that was found to be a prefix of the log, if one was given.
    pub pinned_head: Option<u64>,
}

/// Options of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// A signed head saved earlier that must still be a prefix of the log.
    pub against_head: Option<SignedHead>,
    /// Moved by the records checked.
    pub progress: Progress,
}

/// Verifies everything in `store` against `policy`; on the first problem,
/// says where and what.
pub fn verify(
    store: &dyn Store,
    policy: &Policy,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    if let Some(head) = &options.against_head {
        head.check_signature()?;
    }
    let mut checker = RuleChecker::new(policy.clone());
    let ProjectionStatus {
        checkpoint,
        pending,
    } = store.projection_status()?;
    let positions: Vec<Option<u64>> = std::iter::once(checkpoint)
        .chain(pending.iter().copied().map(Some))
        .collect();
    let mut states = check_log(store, &mut checker, &positions, &options.progress)?;
    let pending_states = states.split_off(1);
    let projected = states.pop().flatten();
    let head = checker.head();
    let stored = store.head()?;
    if stored != head {
        return Err(AuditError::at(
            head.position + 1,
            format!(
                "the stored head names position {} ({}), but the log ends at {} ({})",
                stored.position,
                hex::encode(stored.hash),
                head.position,
                hex::encode(head.hash)
            ),
        ));
    }
    let pinned_head = match &options.against_head {
        Some(pinned) => Some(check_prefix(store, pinned)?),
        None => None,
    };
    check_projections(
        store,
        &checker,
        (checkpoint, projected),
        (&pending, pending_states),
        head,
    )?;
    let state = checker.state();
    Ok(VerifyReport {
        events: head.position,
        aggregates: (state.accounts().count() + state.images().count()) as u64,
        head_position: head.position,
        head_hash: hex::encode(head.hash),
        elapsed: started.elapsed(),
        projections_checked: true,
        projections_at: checkpoint,
        projections_pending: pending,
        pinned_head,
    })
}

/// Records decoded per message between the two verification threads.
const CHUNK: usize = 1024;

type Read = (u64, Result<Decoded, Violation>);

/// Replays the whole log through `checker`. Hashing and decoding (which need
/// no state) run on a second thread, ahead of the rules. Returns the state
/// as of each of `positions` that the log reaches (the projections'
/// checkpoint and the targets of unfinished writes of them).
fn check_log(
    store: &dyn EventLog,
    checker: &mut RuleChecker,
    positions: &[Option<u64>],
    progress: &Progress,
) -> Result<Vec<Option<LedgerState>>, AuditError> {
    let mut states: Vec<Option<LedgerState>> = positions
        .iter()
        .map(|p| (*p == Some(0)).then(LedgerState::default))
        .collect();
    let (mut tx, rx) = chunked::<Read>(CHUNK, 16);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<(), AuditError> {
            // A push refused (the checker stopped) stops the scan.
            store.scan(1, &mut |position, bytes| tx.push((position, decode(bytes))))?;
            tx.finish();
            Ok(())
        });
        let mut expected = 1u64;
        let checked = (|| {
            for chunk in rx.iter() {
                for (position, decoded) in chunk {
                    if position != expected {
                        return Err(AuditError::at(
                            expected,
                            format!("the record is missing (the next stored one is at {position})"),
                        ));
                    }
                    expected += 1;
                    let record =
                        decoded.map_err(|what| AuditError::at(position, what.to_string()))?;
                    checker
                        .check_decoded(&record)
                        .map_err(|what| AuditError::at(position, what.to_string()))?;
                    for (at, state) in positions.iter().zip(states.iter_mut()) {
                        if *at == Some(position) {
                            *state = Some(checker.state().clone());
                        }
                    }
                    if position % 1024 == 0 {
                        progress.set(position);
                    }
                }
            }
            Ok(())
        })();
        // Dropping the receiver stops the reader early after a failure.
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| AuditError::Task("the reader thread panicked".into()))?;
        checked?;
        read
    })?;
    Ok(states)
}

/// Checks that the record at the pinned position still has the pinned hash:
/// since every hash covers the one before, the whole prefix is unchanged.
fn check_prefix(store: &dyn EventLog, pinned: &SignedHead) -> Result<u64, AuditError> {
    if pinned.position == 0 {
        return Ok(0);
    }
    let bytes = store.read_at(pinned.position)?.ok_or_else(|| {
        AuditError::at(
            pinned.position,
            "the pinned head is past the end of the log: history was cut short".to_string(),
        )
    })?;
    let envelope = crate::store::Envelope::decode(&bytes)?;
    if envelope.hash != pinned.hash {
        return Err(AuditError::at(
            pinned.position,
            format!(
                "the pinned head has hash {} but the log now has {}: history was rewritten",
                pinned.hash, envelope.hash
            ),
        ));
    }
    Ok(pinned.position)
}

/// The stored projections must equal a fresh replay up to their checkpoint
/// (a server that stopped cleanly leaves it at the head; after a crash it may
/// lag, and the next start catches up) or, when stepwise writes of them
/// stopped part way, what those writes leave on top of it (see
/// [`first_key_off_the_writes`]). The checkpoint and each write's target
/// (`pending`) come with the replayed state there (`None` when the log does
/// not reach it). The idempotency records must equal those the whole log
/// implies.
fn check_projections(
    store: &dyn Store,
    checker: &RuleChecker,
    (checkpoint, projected): (Option<u64>, Option<LedgerState>),
    (pending, pending_states): (&[u64], Vec<Option<LedgerState>>),
    head: Head,
) -> Result<(), AuditError> {
    let Some(projected) = projected else {
        return Err(AuditError::Projections(format!(
            "the projections' checkpoint {checkpoint:?} is not a position of the log (head {}); \
             run `projections rebuild`",
            head.position
        )));
    };
    let mut targets = Vec::with_capacity(pending.len());
    for (position, state) in pending.iter().zip(pending_states) {
        let Some(state) = state else {
            return Err(AuditError::Projections(format!(
                "an unfinished write of the projections names position {position}, \
                 which is not a position of the log (head {}); run `projections rebuild`",
                head.position
            )));
        };
        targets.push(state);
    }
    if targets.is_empty() {
        if let Some(key) = persist::first_difference(store, &projected)? {
            return Err(AuditError::Projections(format!(
                "the stored read side differs from a fresh replay at key {:?}",
                String::from_utf8_lossy(&key)
            )));
        }
    } else {
        // Both sides in key order, built side by side, then walked together.
        let (stored, fresh) = std::thread::scope(|scope| {
            let stored = scope.spawn(|| store.projection_scan(b""));
            let fresh = persist::entries(&projected);
            let stored = stored
                .join()
                .map_err(|_| AuditError::Task("the projection reader panicked".into()));
            (stored, fresh)
        });
        let (stored, fresh) = (stored??, fresh?);
        let targets = targets
            .iter()
            .map(persist::entries)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(key) = first_key_off_the_writes(&stored, &fresh, &targets) {
            return Err(AuditError::Projections(format!(
                "the stored read side is neither as at its checkpoint nor as unfinished writes \
                 towards {pending:?} leave it, at key {:?}",
                String::from_utf8_lossy(&key)
            )));
        }
    }
    // The store lists tokens in key order; the checker's need sorting.
    // Records past the head belong to an append a crash stopped before its
    // head: not part of the log (the next start removes them).
    let stored_tokens = crate::idempotency::stored(store, head.position)?.kept;
    let now = crate::idempotency::micros(time::OffsetDateTime::now_utc());
    if let Some(key) = first_token_off_the_log(
        &stored_tokens,
        checker.tokens(),
        now,
        checker.policy().token_retention_micros(),
    ) {
        return Err(AuditError::Projections(format!(
            "the idempotency record {:?} differs from the one the log implies",
            String::from_utf8_lossy(&key).replace('\0', "/")
        )));
    }
    Ok(())
}

/// How far the clock of the server that expired the records may be ahead
/// of this one's: a record this close to its expiry may be gone already.
const CLOCK_SKEW_MICROS: i64 = 60_000_000;

/// The first key (in key order) whose stored idempotency record is not the
/// one the log implies, or whose record the log implies and that should
/// still be stored at `now` under `retention` (both in microseconds) is
/// missing; `None` when there is none. Expired records may be stored
/// still: they leave the store with the next append.
fn first_token_off_the_log(
    stored: &[(Vec<u8>, TokenRecord)],
    implied: &HashMap<Vec<u8>, TokenRecord>,
    now: i64,
    retention: i64,
) -> Option<Vec<u8>> {
    let wrong = stored
        .iter()
        .find(|(key, record)| implied.get(key) != Some(record))
        .map(|(key, _)| key.clone());
    let kept: HashSet<&[u8]> = stored.iter().map(|(key, _)| key.as_slice()).collect();
    let missing = implied
        .iter()
        .filter(|(key, record)| {
            !kept.contains(key.as_slice())
                && !record.expired(now.saturating_add(CLOCK_SKEW_MICROS), retention)
        })
        .map(|(key, _)| key)
        .min()
        .cloned();
    wrong.into_iter().chain(missing).min()
}

/// The first key at which `stored` is not what stepwise writes towards
/// `targets` (oldest first) leave on top of `from`, each stopped after a
/// key-ordered prefix of its changes; `None` when it is.
///
/// A write sets every entry up to where it stopped to its target's value,
/// so an entry holds the value of the last write that reached it, or
/// `from`'s when none did. The keys a later write reached all come before
/// the first key that earlier writes reached and it did not; so, going up
/// the keys, the write whose value an entry holds is never a later one
/// than the entry before's. That is what is checked: each entry must
/// hold the value of `from` or of some target, no later than the one
/// before it did. Taking the latest that fits, entry by entry, finds such
/// an assignment whenever one exists.
pub(crate) fn first_key_off_the_writes(
    stored: &[(Vec<u8>, Vec<u8>)],
    from: &[(Vec<u8>, Vec<u8>)],
    targets: &[Vec<(Vec<u8>, Vec<u8>)>],
) -> Option<Vec<u8>> {
    fn map(entries: &[(Vec<u8>, Vec<u8>)]) -> BTreeMap<&[u8], &[u8]> {
        entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect()
    }
    let stored = map(stored);
    let states: Vec<BTreeMap<&[u8], &[u8]>> = std::iter::once(from)
        .chain(targets.iter().map(Vec::as_slice))
        .map(map)
        .collect();
    let keys: BTreeSet<&[u8]> = stored
        .keys()
        .chain(states.iter().flat_map(BTreeMap::keys))
        .copied()
        .collect();
    // The latest state (0 is `from`) the current entry may hold.
    let mut latest = states.len() - 1;
    for key in keys {
        let now = stored.get(key);
        match (0..=latest).rev().find(|&i| states[i].get(key) == now) {
            Some(i) => latest = i,
            None => return Some(key.to_vec()),
        }
    }
    None
}
