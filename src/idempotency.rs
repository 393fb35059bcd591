//! Idempotency records: what the ledger keeps of a command run with a
//! `client_token`, so a retry gets the first reply and appends nothing.
//! One module for the key, the stored record, the request's fingerprint,
//! loading them from the log's store, checking a retry, expiring them, and
//! deriving them from the log itself (what `audit verify` and `audit
//! import` compare against and write).
//!
//! A record lives for the policy's
//! [`token_retention`](crate::domain::Policy::token_retention) from its
//! command's time: a retry after that runs as a new command, the token then
//! belonging to it. Expired records are dropped from memory as they expire
//! and from the store with the next append (or when the ledger loads), so
//! both hold the rate of tokens times the retention, not the history. The
//! log keeps every token in its envelope for good.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Command, DomainError, Event, ImageRef, Reply};
use crate::store::{AppendBatch, Envelope, EventLog, EventLogExt, Head, StoreError};

/// What the ledger keeps of a command run with a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the command's parameters.
    pub fingerprint: String,
    /// The reply the first run got.
    pub reply: Reply,
    /// The log position of the command's last event.
    pub position: u64,
    /// The command's time (its records' `recorded_at`), in microseconds
    /// since the Unix epoch: the record expires a retention later. 0 in
    /// records stored before records had it; loading takes it from the log.
    #[serde(default)]
    pub recorded_at: i64,
}

/// A record time in microseconds since the Unix epoch.
pub fn micros(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// When a record stops answering retries.
pub trait Retention {
    /// Whether `record` had expired by `now` (microseconds).
    fn expired(&self, record: &TokenRecord, now: i64) -> bool;
}

/// One retention, in microseconds, all along.
impl Retention for i64 {
    fn expired(&self, record: &TokenRecord, now: i64) -> bool {
        record.expired(now, *self)
    }
}

impl TokenRecord {
    /// Whether the record has expired at `now` (both in microseconds)
    /// under a retention of `retention` microseconds.
    pub fn expired(&self, now: i64, retention: i64) -> bool {
        self.recorded_at <= now.saturating_sub(retention)
    }
}

impl TokenRecord {
    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(StoreError::encode)
    }

    /// A stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(StoreError::decode)
    }

    /// What a retry of the command with `fingerprint` gets: the first reply,
    /// or a refusal when the parameters differ.
    pub fn answer(&self, fingerprint: &str) -> Result<Reply, DomainError> {
        if self.fingerprint == fingerprint {
            Ok(self.reply.clone())
        } else {
            Err(DomainError::IdempotencyMismatch(
                "this client_token was already used by this account with other parameters".into(),
            ))
        }
    }
}

/// The key of an idempotency record: the acting account (empty for the
/// system) and the token, separated by a zero byte.
pub fn token_key(actor: Option<&str>, token: &str) -> Vec<u8> {
    let mut key = actor.unwrap_or_default().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(token.as_bytes());
    key
}

/// SHA-256 (hex) of a command's parameters: what tells a retry from a new request.
pub fn fingerprint(command: &Command) -> Result<String, StoreError> {
    let bytes = serde_json::to_vec(command).map_err(StoreError::encode)?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The idempotency records the writer holds: by key, and by time, so the
/// expired ones are found without looking at the others. Persistent maps:
/// a copy per batch costs nothing.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_key: imbl::HashMap<Vec<u8>, TokenRecord>,
    by_time: imbl::OrdSet<(i64, Vec<u8>)>,
}

impl Tokens {
    /// The record under `key`, expired or not.
    pub fn get(&self, key: &[u8]) -> Option<&TokenRecord> {
        self.by_key.get(key)
    }

    /// Adds a record, replacing the one under its key.
    pub fn insert(&mut self, key: Vec<u8>, record: TokenRecord) {
        let at = record.recorded_at;
        if let Some(old) = self.by_key.insert(key.clone(), record) {
            self.by_time.remove(&(old.recorded_at, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether a record held has expired at `now` under `retention` (both
    /// in microseconds): what [`Self::expire`] would drop.
    pub fn any_expired(&self, now: i64, retention: i64) -> bool {
        self.by_time
            .get_min()
            .is_some_and(|(at, _)| *at <= now.saturating_sub(retention))
    }

    /// Drops the records expired at `now` under `retention` (both in
    /// microseconds) and returns their keys, oldest first.
    pub fn expire(&mut self, now: i64, retention: i64) -> Vec<Vec<u8>> {
        let mut expired = Vec::new();
        while self.any_expired(now, retention) {
            if let Some((_, key)) = self.by_time.remove_min() {
                self.by_key.remove(&key);
                expired.push(key);
            }
        }
        expired
    }
}

impl FromIterator<(Vec<u8>, TokenRecord)> for Tokens {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, TokenRecord)>>(records: I) -> Self {
        let mut tokens = Tokens::default();
        for (key, record) in records {
            tokens.insert(key, record);
        }
        tokens
    }
}

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
            let bytes = log.read_at(record.position)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "an idempotency record points at position {}, which is not in the log",
                    record.position
                ))
            })?;
            record.recorded_at = micros(Envelope::decode(&bytes)?.recorded_at);
        }
        kept.push((key, record));
    }
    Ok(Stored { kept, past })
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
    let Stored { kept, mut past } = stored(log, head.position)?;
    let stale = past.len();
    let (live, expired): (Vec<_>, Vec<_>) = kept
        .into_iter()
        .partition(|(_, record)| !record.expired(now, retention));
    // On a shared log those past the head were committed by another
    // replica since the head was read: the ledger takes them from the log
    // when it follows it. Expired ones are left to the appends there,
    // which are checked against the head: a removal here could meet a
    // record another replica just wrote for the same token.
    if log.shared().is_none() && (!past.is_empty() || !expired.is_empty()) {
        let expired_count = expired.len();
        past.extend(expired.into_iter().map(|(key, _)| key));
        // An append of no records, so the removal is checked against the
        // head and made durable like any other.
        log.append(&AppendBatch {
            expected_head: head,
            expired_tokens: past,
            ..AppendBatch::default()
        })?;
        if stale > 0 {
            tracing::warn!(
                records = stale,
                head = head.position,
                "removed idempotency records past the head: an append a crash cut short"
            );
        }
        if expired_count > 0 {
            tracing::info!(
                records = expired_count,
                "removed expired idempotency records"
            );
        }
    }
    Ok(live.into_iter().collect())
}

/// A map of idempotency records by key, which [`record_from_log`] adds to:
/// the writer's persistent one, or a plain one for the audit tools.
pub trait TokenMap {
    /// The record under `key`, to change.
    fn record_mut(&mut self, key: &[u8]) -> Option<&mut TokenRecord>;
    /// Adds a record.
    fn add(&mut self, key: Vec<u8>, record: TokenRecord);
}

impl TokenMap for std::collections::HashMap<Vec<u8>, TokenRecord> {
    fn record_mut(&mut self, key: &[u8]) -> Option<&mut TokenRecord> {
        self.get_mut(key)
    }
    fn add(&mut self, key: Vec<u8>, record: TokenRecord) {
        self.insert(key, record);
    }
}

impl TokenMap for Tokens {
    fn record_mut(&mut self, key: &[u8]) -> Option<&mut TokenRecord> {
        // The record's time stays: `record_from_log` changes only its
        // reply and position.
        self.by_key.get_mut(key)
    }
    fn add(&mut self, key: Vec<u8>, record: TokenRecord) {
        self.insert(key, record);
    }
}

/// Why a record's token does not fit the log before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenViolation {
    /// The envelope has one of `client_token` and `request_hash` without the other.
    #[error("client_token and request_hash must come together")]
    Unpaired,
    /// The token was used by an earlier command of the same actor.
    #[error("client token {token:?} of {actor} was already used at position {first}; a retry appends nothing")]
    Reused {
        /// The token.
        token: String,
        /// Who used it ("the system" for the image factory).
        actor: String,
        /// The last position of the command that used it first.
        first: u64,
    },
}

/// Adds what a stored record says of its token to `records`, the
/// idempotency records of the log before it: how `audit verify` and
/// `audit import` derive them from the log. A token used again after its
/// first command's record expired (`retention` microseconds later) starts
/// a record of its own.
pub fn record_from_log(
    records: &mut impl TokenMap,
    envelope: &Envelope,
    event: &Event,
    retention: &impl Retention,
) -> Result<(), TokenViolation> {
    let (token, request_hash) = match (&envelope.client_token, &envelope.request_hash) {
        (None, None) => return Ok(()),
        (Some(token), Some(hash)) => (token, hash),
        _ => return Err(TokenViolation::Unpaired),
    };
    let key = token_key(envelope.actor.as_deref(), token);
    let at = micros(envelope.recorded_at);
    let fresh = TokenRecord {
        fingerprint: request_hash.clone(),
        reply: reply_of(Reply::Done, event),
        position: envelope.position,
        recorded_at: at,
    };
    match records.record_mut(&key) {
        None => {
            records.add(key, fresh);
            Ok(())
        }
        // One command that recorded several events (a copy to several regions).
        Some(record)
            if record.position + 1 == envelope.position
                && record.fingerprint == *request_hash
                && matches!(event, Event::ImageCopied { .. }) =>
        {
            record.reply = reply_of(record.reply.clone(), event);
            record.position = envelope.position;
            Ok(())
        }
        Some(record) if retention.expired(record, at) => {
            records.add(key, fresh);
            Ok(())
        }
        Some(record) => Err(TokenViolation::Reused {
            token: token.clone(),
            actor: envelope
                .actor
                .clone()
                .unwrap_or_else(|| "the system".into()),
            first: record.position,
        }),
    }
}

/// The reply a command gets, given the reply of its events before `event`.
fn reply_of(reply: Reply, event: &Event) -> Reply {
    match (reply, event) {
        (_, Event::ImageRegistered { image_id, .. }) => Reply::ImageRegistered {
            image_id: image_id.clone(),
        },
        (
            Reply::ImagesCopied { mut images },
            Event::ImageCopied {
                image_id, region, ..
            },
        ) => {
            images.push(ImageRef {
                image_id: image_id.clone(),
                region: region.clone(),
            });
            Reply::ImagesCopied { images }
        }
        (
            _,
            Event::ImageCopied {
                image_id, region, ..
            },
        ) => Reply::ImagesCopied {
            images: vec![ImageRef {
                image_id: image_id.clone(),
                region: region.clone(),
            }],
        },
        (reply, _) => reply,
    }
}
