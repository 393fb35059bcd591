//! Reading the idempotency records back from the store: whole, for the
//! audit tools, or as the writer holds them ([`Tokens`]) when the ledger
//! starts — a scan that decodes only each record's position and time (on
//! a thread of its own while the server already answers queries), then
//! the split at the head and the retention, with the removal of the
//! records past or expired.

use std::collections::HashSet;

use serde::Deserialize;

use super::tokens::{envelope_at, mismatch, not_in_log};
use super::{micros, token_key, Answer, TokenRecord, Tokens};
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

/// The stored records as the writer holds them, before the retention is
/// applied: the first half of a start's load.
pub struct Scanned {
    tokens: Tokens,
    /// Positions of records past the head the scan was given.
    past: Vec<u64>,
    /// (time, position) of records whose digest another holds.
    collided: Vec<(i64, u64)>,
    /// Positions of records without a time that the log does not reach.
    unknown: Vec<u64>,
    /// Positions of records expired at the cut-off the scan was given
    /// that the store did not remove.
    expired: Vec<u64>,
}

/// Reads every stored record's digest, position and time, and holds those
/// up to `head` as the writer does, in `into` (empty: its digests are the
/// ones the records go by). Given a `cutoff` (microseconds), records made
/// at or before it have expired: the store removes them as it reads them
/// when it can (see [`EventLog::sweep_tokens`]), else the scan says which.
pub fn scan(
    log: &dyn EventLog,
    into: Tokens,
    head: u64,
    cutoff: Option<i64>,
) -> Result<Scanned, StoreError> {
    let started = std::time::Instant::now();
    let mut tokens = into;
    let mut entries = Vec::new();
    let mut past = Vec::new();
    let mut unknown = Vec::new();
    let mut expired = Vec::new();
    let removed = log.sweep_tokens(&mut |key, value| {
        let stamp = Stamp::decode(value)?;
        if stamp.position > head {
            past.push(stamp.position);
            return Ok(false);
        }
        // A record stored without its command's time gets it from the
        // log, when the log reaches it (`settle` judges one that does not).
        let at = match stamp.recorded_at {
            0 => match log.read_at(stamp.position)? {
                Some(bytes) => micros(Envelope::decode(&bytes)?.recorded_at),
                None => {
                    unknown.push(stamp.position);
                    return Ok(false);
                }
            },
            at => at,
        };
        if cutoff.is_some_and(|cutoff| at <= cutoff) {
            expired.push(stamp.position);
            return Ok(true);
        }
        entries.push((at, tokens.digest(key), stamp.position));
        Ok(false)
    })?;
    if let Some(removed) = removed {
        if removed > 0 {
            tracing::info!(records = removed, "removed expired idempotency records");
        }
        expired.clear();
    }
    let read = started.elapsed();
    entries.sort_unstable();
    let mut collided = Vec::new();
    for (at, digest, position) in entries {
        if tokens.holds(digest) {
            collided.push((at, position));
        } else {
            tokens.restore(digest, position, at);
        }
    }
    tracing::debug!(
        records = tokens.len() + collided.len() + past.len(),
        read_ms = read.as_millis() as u64,
        held_ms = (started.elapsed() - read).as_millis() as u64,
        "read the idempotency records"
    );
    Ok(Scanned {
        tokens,
        past,
        collided,
        unknown,
        expired,
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
    let scanned = scan(log, Tokens::default(), head.position, None)?;
    settle(log, scanned, head, now, retention)
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
        past,
        collided,
        unknown,
        ..
    } = scanned;
    if let Some(position) = unknown.iter().find(|p| **p <= head.position) {
        return Err(not_in_log(*position));
    }
    let mut past: HashSet<u64> = past.into_iter().chain(unknown).collect();
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

/// What a command with `key` and `fingerprint` gets from the record the
/// store holds for it, while a start's scan is not in: asked when the
/// records made since the start hold none live. `None` when it runs: no
/// record, one expired at `now` under `retention` (microseconds), or one
/// past the start's `head` — made since (and so expired, or the records
/// made since would hold it), or left by an append a crash cut short
/// (which a start finds first: see [`EventLog::cut_short`]).
pub fn stored_answer(
    log: &dyn EventLog,
    key: &[u8],
    fingerprint: &str,
    (now, retention): (i64, i64),
    head: u64,
) -> Result<Option<Answer>, StoreError> {
    let Some(bytes) = log.token(key)? else {
        return Ok(None);
    };
    let mut record = TokenRecord::decode(&bytes)?;
    if record.position > head {
        return Ok(None);
    }
    if record.recorded_at == 0 {
        record.recorded_at = time_from_log(log, record.position)?;
    }
    if record.expired(now, retention) {
        return Ok(None);
    }
    if record.fingerprint != fingerprint {
        return Ok(Some(Err(mismatch())));
    }
    Ok(Some(Ok((record.reply, record.position))))
}

/// A start's scan taken in by the writer, which has run commands since
/// (their records in `newer`, made with the scan's digests): the records
/// up to the start's `head` that live at `now` under `retention`
/// (microseconds), with `newer`'s on top, and the positions of those
/// expired, whose keys leave the store with later appends. Records past
/// the head are `newer`'s own (a start after an append a crash cut short
/// loads before it serves).
pub fn absorb(
    log: &dyn EventLog,
    newer: &Tokens,
    scanned: Scanned,
    head: u64,
    (now, retention): (i64, i64),
) -> Result<(Tokens, Vec<u64>), StoreError> {
    let Scanned {
        mut tokens,
        collided,
        unknown,
        expired: mut left,
        ..
    } = scanned;
    if let Some(position) = unknown.iter().find(|p| **p <= head) {
        return Err(not_in_log(*position));
    }
    let mut expired = tokens.expire(now, retention);
    expired.append(&mut left);
    let cutoff = now.saturating_sub(retention);
    for (at, position) in collided {
        if at <= cutoff {
            expired.push(position);
        } else {
            let envelope = envelope_at(log, position)?;
            let token = envelope.client_token.as_deref().unwrap_or_default();
            tokens.restore_collided(&token_key(envelope.actor.as_deref(), token), position, at);
        }
    }
    tokens.take_newer(newer, log)?;
    Ok((tokens, expired))
}
