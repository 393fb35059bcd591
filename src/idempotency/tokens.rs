//! The idempotency records the writer holds, compactly: for each live
//! token, a 64-bit digest of its key mapped to the log position of its
//! command's last record, and that entry's time in a queue in the order
//! made (about 53 bytes a token, against some 600 for the whole record).
//! A retry is answered from the log: the record at the position says whose
//! token it is, the request's fingerprint and time, and its events give the
//! reply back. Records decided but not yet written are held whole until
//! the log has them.
//!
//! Every part is a persistent structure, so the pipeline's stages keep a
//! copy per batch for the cost of a pointer.

use std::hash::BuildHasher;
use std::sync::Arc;

use super::{micros, reply_of, token_key, TokenRecord};
use crate::domain::{DomainError, Reply};
use crate::store::{Envelope, EventLog, StoreError};

/// One live record in the order made.
#[derive(Debug, Clone, Copy)]
struct Made {
    /// The command's time, microseconds since the Unix epoch.
    at: i64,
    digest: u64,
    position: u64,
}

/// A record decided whose batch the log may not hold yet.
#[derive(Debug)]
struct Unwritten {
    key: Vec<u8>,
    record: TokenRecord,
}

/// The idempotency records the writer holds (see the module's docs).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Random keys, so nobody can choose tokens whose digests collide.
    hasher: std::hash::RandomState,
    /// Digest of a record's key → its position.
    by_digest: imbl::OrdMap<u64, u64>,
    /// Records whose digest another live key holds (a 64-bit collision):
    /// by the whole key.
    collided: imbl::OrdMap<Vec<u8>, u64>,
    /// Oldest first. An entry whose record was replaced (a token used
    /// again after expiry, one command's several records) stays until it
    /// reaches the front and is passed over. Times follow the wall clock:
    /// one set back makes the entries after it wait for those before.
    by_time: imbl::Vector<Made>,
    /// Records not yet known to be in the log, by position.
    unwritten: imbl::OrdMap<u64, Arc<Unwritten>>,
    /// Every key gets the same digest, to try collisions.
    #[cfg(test)]
    collide: bool,
}

/// Where a new record for a key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Under its digest.
    Digest,
    /// Under its whole key: another live key has its digest.
    Collided,
}

/// A retry's answer: the first run's reply and last position, or a
/// refusal when its parameters differ.
pub type Answer = Result<(Reply, u64), DomainError>;

/// What a command with a client token gets.
#[derive(Debug)]
pub enum Lookup {
    /// No live record: it runs, and its record goes in the slot.
    Run(Slot),
    /// A retry: the first run's reply and last position, or a refusal when
    /// its parameters differ.
    Answer(Answer),
}

/// What the log (or the unwritten records) says of a record's command.
struct Found {
    key: Vec<u8>,
    fingerprint: String,
    recorded_at: i64,
}

impl Tokens {
    pub(super) fn digest(&self, key: &[u8]) -> u64 {
        #[cfg(test)]
        if self.collide {
            return 7;
        }
        self.hasher.hash_one(key)
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.by_digest.len() + self.collided.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// None held, with the same digests as this: what a start's scan
    /// fills (see [`super::scan`]) while commands add to this.
    pub fn empty_like(&self) -> Tokens {
        Tokens {
            hasher: self.hasher.clone(),
            #[cfg(test)]
            collide: self.collide,
            ..Tokens::default()
        }
    }

    /// The position of the record under `key`, and whether it is held by
    /// the whole key.
    fn position_of(&self, key: &[u8]) -> Option<(u64, Slot)> {
        if let Some(position) = self.collided.get(key) {
            return Some((*position, Slot::Collided));
        }
        self.by_digest
            .get(&self.digest(key))
            .map(|position| (*position, Slot::Digest))
    }

    /// What a command with `key` and `fingerprint` gets at `now` under
    /// `retention` (both in microseconds): the first run's reply while its
    /// record lives, else a slot to run in. Reads the log for a retry.
    pub fn lookup(
        &self,
        log: &dyn EventLog,
        key: &[u8],
        fingerprint: &str,
        now: i64,
        retention: i64,
    ) -> Result<Lookup, StoreError> {
        let Some((position, slot)) = self.position_of(key) else {
            return Ok(Lookup::Run(Slot::Digest));
        };
        let found = self.found_at(log, position)?;
        if found.key != key {
            return Ok(Lookup::Run(Slot::Collided));
        }
        if found.recorded_at <= now.saturating_sub(retention) {
            // An expired record is as good as none: the command runs anew.
            return Ok(Lookup::Run(slot));
        }
        if found.fingerprint != fingerprint {
            return Ok(Lookup::Answer(Err(mismatch())));
        }
        let reply = match self.unwritten.get(&position) {
            Some(unwritten) => unwritten.record.reply.clone(),
            None => reply_from_log(log, position)?,
        };
        Ok(Lookup::Answer(Ok((reply, position))))
    }

    /// Adds the record of a command just decided, under `key` in `slot`.
    pub fn insert(&mut self, key: Vec<u8>, slot: Slot, record: TokenRecord) {
        let (position, at) = (record.position, record.recorded_at);
        self.hold(&key, slot, position, at);
        self.unwritten
            .insert(position, Arc::new(Unwritten { key, record }));
    }

    /// Holds the record of `key` at `position`, made at `at`, in `slot`.
    fn hold(&mut self, key: &[u8], slot: Slot, position: u64, at: i64) {
        let digest = self.digest(key);
        match slot {
            Slot::Digest => {
                self.by_digest.insert(digest, position);
            }
            Slot::Collided => {
                self.collided.insert(key.to_vec(), position);
            }
        }
        self.by_time.push_back(Made {
            at,
            digest,
            position,
        });
    }

    /// Adds a live record read from the store, oldest first (see
    /// [`super::load`]), by the digest the scan computed.
    pub(super) fn restore(&mut self, digest: u64, position: u64, at: i64) {
        self.by_digest.insert(digest, position);
        self.by_time.push_back(Made {
            at,
            digest,
            position,
        });
    }

    /// Whether `digest` is held (a record restored with it collides).
    pub(super) fn holds(&self, digest: u64) -> bool {
        self.by_digest.contains_key(&digest)
    }

    /// Adds a record restored under its whole key (its digest collides).
    pub(super) fn restore_collided(&mut self, key: &[u8], position: u64, at: i64) {
        self.hold(key, Slot::Collided, position, at);
    }

    /// Takes in the records of `newer` (made since this was read from the
    /// store, with the same digests): each replaces what this holds under
    /// its key. A digest both hold for different keys (a 64-bit collision)
    /// keeps the newer record under its whole key; the log says whose
    /// record each is.
    pub(super) fn take_newer(
        &mut self,
        newer: &Tokens,
        log: &dyn EventLog,
    ) -> Result<(), StoreError> {
        for made in newer.by_time.iter().copied() {
            if newer.by_digest.get(&made.digest) == Some(&made.position) {
                let key = match self.by_digest.get(&made.digest) {
                    Some(held) if *held != made.position => {
                        let theirs = newer.found_at(log, made.position)?.key;
                        (self.found_at(log, *held)?.key != theirs).then_some(theirs)
                    }
                    _ => None,
                };
                match key {
                    Some(key) => self.hold(&key, Slot::Collided, made.position, made.at),
                    None => self.restore(made.digest, made.position, made.at),
                }
            } else if let Some(key) = newer.collided_at(made.position) {
                self.hold(&key, Slot::Collided, made.position, made.at);
            }
            // Otherwise the entry was replaced: its key names a newer record.
        }
        for (position, unwritten) in newer.unwritten.iter() {
            self.unwritten.insert(*position, Arc::clone(unwritten));
        }
        Ok(())
    }

    /// The log holds every record up to `position`: those are read from it
    /// from now on.
    pub fn written(&mut self, position: u64) {
        while let Some((first, _)) = self.unwritten.get_min() {
            if *first > position {
                break;
            }
            let first = *first;
            self.unwritten.remove(&first);
        }
    }

    /// Whether a record held has expired at `now` under `retention` (both
    /// in microseconds): what [`Self::expire`] would drop.
    pub fn any_expired(&self, now: i64, retention: i64) -> bool {
        self.by_time
            .front()
            .is_some_and(|made| made.at <= now.saturating_sub(retention))
    }

    /// Drops the records expired at `now` under `retention` (both in
    /// microseconds) and returns their positions, oldest first: what
    /// [`Self::keys_at`] turns into the store's keys.
    pub fn expire(&mut self, now: i64, retention: i64) -> Vec<u64> {
        let mut expired = Vec::new();
        while self.any_expired(now, retention) {
            let Some(made) = self.by_time.pop_front() else {
                break;
            };
            if self.by_digest.get(&made.digest) == Some(&made.position) {
                self.by_digest.remove(&made.digest);
                expired.push(made.position);
            } else if let Some(key) = self.collided_at(made.position) {
                self.collided.remove(&key);
                expired.push(made.position);
            }
            // Otherwise the entry was replaced: its key now names a newer record.
        }
        expired
    }

    fn collided_at(&self, position: u64) -> Option<Vec<u8>> {
        self.collided
            .iter()
            .find(|(_, at)| **at == position)
            .map(|(key, _)| key.clone())
    }

    /// The store's keys of the records at `positions` (as [`Self::expire`]
    /// returned them), from the records still unwritten and else from the
    /// log in one read.
    pub fn keys_at(
        &self,
        log: &dyn EventLog,
        positions: &[u64],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::with_capacity(positions.len());
        let mut from_log = Vec::new();
        for position in positions {
            match self.unwritten.get(position) {
                Some(unwritten) => keys.push(unwritten.key.clone()),
                None => from_log.push(*position),
            }
        }
        for (_, bytes) in log.read_many(&from_log)? {
            let envelope = Envelope::decode(&bytes)?;
            if let Some(token) = &envelope.client_token {
                keys.push(token_key(envelope.actor.as_deref(), token));
            }
        }
        // A key taken anew since its record expired names the new record
        // in the store now (or will, once its batch is written): kept.
        keys.retain(|key| self.position_of(key).is_none());
        Ok(keys)
    }

    /// Notes the token of a record another replica appended (when this one
    /// catches up with the log): its command's record now ends there.
    /// Warns of a token used again while its record lived.
    pub fn follow(&mut self, log: &dyn EventLog, envelope: &Envelope, retention: i64) {
        let (Some(token), Some(hash)) = (&envelope.client_token, &envelope.request_hash) else {
            return;
        };
        let key = token_key(envelope.actor.as_deref(), token);
        let at = micros(envelope.recorded_at);
        let slot = match self.position_of(&key) {
            None => Slot::Digest,
            Some((held, slot)) => match self.found_at(log, held) {
                Ok(found) if found.key != key => Slot::Collided,
                Ok(found) => {
                    let continues = held + 1 == envelope.position
                        && found.fingerprint == *hash
                        && found.recorded_at == at;
                    if !continues && found.recorded_at > at.saturating_sub(retention) {
                        tracing::warn!(
                            position = envelope.position,
                            first = held,
                            "a record's client token was already used while its first record lived"
                        );
                    }
                    slot
                }
                Err(err) => {
                    tracing::warn!(%err, position = held, "cannot read an idempotency record's command");
                    slot
                }
            },
        };
        self.hold(&key, slot, envelope.position, at);
    }

    /// Whose record is at `position`, with its fingerprint and time.
    fn found_at(&self, log: &dyn EventLog, position: u64) -> Result<Found, StoreError> {
        if let Some(unwritten) = self.unwritten.get(&position) {
            return Ok(Found {
                key: unwritten.key.clone(),
                fingerprint: unwritten.record.fingerprint.clone(),
                recorded_at: unwritten.record.recorded_at,
            });
        }
        let envelope = envelope_at(log, position)?;
        match (&envelope.client_token, envelope.request_hash) {
            (Some(token), Some(fingerprint)) => Ok(Found {
                key: token_key(envelope.actor.as_deref(), token),
                fingerprint,
                recorded_at: micros(envelope.recorded_at),
            }),
            _ => Err(StoreError::Corrupt(format!(
                "an idempotency record points at position {position}, whose record has no client token"
            ))),
        }
    }
}

/// A retry whose parameters differ from its token's first command's.
pub(super) fn mismatch() -> DomainError {
    DomainError::IdempotencyMismatch(
        "this client_token was already used by this account with other parameters".into(),
    )
}

/// The record at `position`, which an idempotency record points at.
pub(super) fn envelope_at(log: &dyn EventLog, position: u64) -> Result<Envelope, StoreError> {
    let bytes = log.read_at(position)?.ok_or_else(|| not_in_log(position))?;
    Envelope::decode(&bytes)
}

/// An idempotency record points at `position`, past the log.
pub(super) fn not_in_log(position: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "an idempotency record points at position {position}, which is not in the log"
    ))
}

/// The reply of the command whose last record is at `position`: its
/// records are those before it with the same token, actor, fingerprint and
/// time (a copy to several regions records one per region).
pub(super) fn reply_from_log(log: &dyn EventLog, position: u64) -> Result<Reply, StoreError> {
    let last = envelope_at(log, position)?;
    let mut records = vec![last.event()?];
    let mut at = position;
    while at > 1 {
        let earlier = envelope_at(log, at - 1)?;
        let same = earlier.client_token == last.client_token
            && earlier.actor == last.actor
            && earlier.request_hash == last.request_hash
            && earlier.recorded_at == last.recorded_at;
        if !same {
            break;
        }
        records.push(earlier.event()?);
        at -= 1;
    }
    Ok(records.iter().rev().fold(Reply::Done, reply_of))
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
