//! Reading the idempotency records back from the store: whole, for the
//! audit tools, or as the writer holds them ([`Tokens`]) when the ledger
//! starts — a scan that decodes only each record's position and time (on
//! a thread of its own while the server already answers queries), then
//! the split at the head and the retention, with the removal of the
//! records past or expired.

use std::collections::HashSet;

use serde::Deserialize;

use super::tokens::{envelope_at, not_in_log};
use super::{micros, TokenRecord, Tokens};
use crate::store::{AppendBatch, Envelope, EventLog, EventLogExt, Head, StoreError};

/// What the store holds of the idempotency records.
#[derive(Debug, Default)]
pub struct Stored {
    /// The records of the log up to the head, in key order.
    pub kept: Vec<(Vec<u8>, TokenRecord)>,
    /// The keys of those past it: written by an append that a crash stopped
    /// before its head (which commits it), so their commands did not happen.
    pub past: Vec<Vec<u8>>,
}

/// The stored idempotency records, split at `head`. A record stored
/// without its command's time gets it from the log.
pub fn stored(log: &dyn EventLog, head: u64) -> Result<Stored, StoreError> {
    let mut kept = Vec::new();
    let mut past = Vec::new();
    for (key, value) in log.tokens()? {
        let mut record = TokenRecord::decode(&value)?;
        if record.position > head {
            past.push(key);
            continue;
        }
        if record.recorded_at == 0 {
            record.recorded_at = time_from_log(log, record.position)?;
        }
        kept.push((key, record));
    }
    Ok(Stored { kept, past })
}

/// The time of the record at `position`, for a stored record without it.
fn time_from_log(log: &dyn EventLog, position: u64) -> Result<i64, StoreError> {
    Ok(micros(envelope_at(log, position)?.recorded_at))
}

/// The part of a stored record a start reads; serde skips the rest.
#[derive(Deserialize)]
struct Stamp {
    position: u64,
    #[serde(default)]
    recorded_at: i64,
}

impl Stamp {
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(StoreError::decode)
    }
}

/// The stored records as the writer holds them, before the head and the
/// retention are applied: the first half of a start's load.
pub struct Scanned {
    tokens: Tokens,
    /// The last position a record names.
    last: u64,
    /// (time, position) of records whose digest another holds.
    collided: Vec<(i64, u64)>,
    /// Positions of records without a time that the log does not reach.
    unknown: Vec<u64>,
}

/// Reads every stored record's digest, position and time, and holds them
/// as the writer does.
pub fn scan(log: &dyn EventLog) -> Result<Scanned, StoreError> {
    let started = std::time::Instant::now();
    let mut tokens = Tokens::default();
    let mut entries = Vec::new();
    let mut unknown = Vec::new();
    log.visit_tokens(&mut |key, value| {
        let stamp = Stamp::decode(value)?;
        // A record stored without its command's time gets it from the
        // log, when the log reaches it (`settle` judges one that does not).
        let at = match stamp.recorded_at {
            0 => match log.read_at(stamp.position)? {
                Some(bytes) => micros(Envelope::decode(&bytes)?.recorded_at),
                None => {
                    unknown.push(stamp.position);
                    return Ok(());
                }
            },
            at => at,
        };
        entries.push((at, tokens.digest(key), stamp.position));
        Ok(())
    })?;
    let read = started.elapsed();
    entries.sort_unstable();
    let mut collided = Vec::new();
    let mut last = unknown.iter().copied().max().unwrap_or(0);
    for (at, digest, position) in entries {
        last = last.max(position);
        if tokens.holds(digest) {
            collided.push((at, position));
        } else {
            tokens.restore(digest, position, at);
        }
    }
    tracing::debug!(
        records = tokens.len() + collided.len(),
        read_ms = read.as_millis() as u64,
        held_ms = (started.elapsed() - read).as_millis() as u64,
        "read the idempotency records"
    );
    Ok(Scanned {
        tokens,
        last,
        collided,
        unknown,
    })
}

/// Loads the idempotency records of the log up to `head` that have not
/// expired at `now` under `retention` (both in microseconds), removing
/// those past the head, so a retry of their commands runs them, and the
/// expired ones.
pub fn load(
    log: &dyn EventLog,
    head: Head,
    now: i64,
    retention: i64,
) -> Result<Tokens, StoreError> {
    settle(log, scan(log)?, head, now, retention)
}

/// [`load`]'s second half, given the scan.
pub fn settle(
    log: &dyn EventLog,
    scanned: Scanned,
    head: Head,
    now: i64,
    retention: i64,
) -> Result<Tokens, StoreError> {
    let Scanned {
        mut tokens,
        last,
        collided,
        unknown,
    } = scanned;
    if let Some(position) = unknown.iter().find(|p| **p <= head.position) {
        return Err(not_in_log(*position));
    }
    let mut past: HashSet<u64> = unknown.into_iter().collect();
    if last > head.position {
        past.extend(tokens.forget_past(head.position));
    }
    let mut expired: HashSet<u64> = tokens.expire(now, retention).into_iter().collect();
    let cutoff = now.saturating_sub(retention);
    let collided: Vec<(i64, u64)> = collided
        .into_iter()
        .filter(|(at, position)| {
            if *position > head.position {
                past.insert(*position);
            } else if *at <= cutoff {
                expired.insert(*position);
            }
            *position <= head.position && *at > cutoff
        })
        .collect();
    // On a shared log those past the head were committed by another
    // replica since the head was read: the ledger takes them from the log
    // when it follows it. Expired ones are left to the appends there,
    // which are checked against the head: a removal here could meet a
    // record another replica just wrote for the same token.
    let remove = log.shared().is_none() && (!past.is_empty() || !expired.is_empty());
    if !remove && collided.is_empty() {
        return Ok(tokens);
    }
    // Only these need their keys: a second scan.
    let wanted: HashSet<u64> = collided.iter().map(|(_, position)| *position).collect();
    let mut removed = Vec::new();
    let mut collided_keys = Vec::new();
    log.visit_tokens(&mut |key, value| {
        let position = Stamp::decode(value)?.position;
        if remove && (past.contains(&position) || expired.contains(&position)) {
            removed.push(key.to_vec());
        } else if wanted.contains(&position) {
            collided_keys.push((position, key.to_vec()));
        }
        Ok(())
    })?;
    for (position, key) in collided_keys {
        if let Some((at, _)) = collided.iter().find(|(_, p)| *p == position) {
            tokens.restore_collided(&key, position, *at);
        }
    }
    if remove {
        // An append of no records, so the removal is checked against the
        // head and made durable like any other.
        log.append(&AppendBatch {
            expected_head: head,
            expired_tokens: removed,
            ..AppendBatch::default()
        })?;
        if !past.is_empty() {
            tracing::warn!(
                records = past.len(),
                head = head.position,
                "removed idempotency records past the head: an append a crash cut short"
            );
        }
        if !expired.is_empty() {
            tracing::info!(
                records = expired.len(),
                "removed expired idempotency records"
            );
        }
    }
    Ok(tokens)
}
