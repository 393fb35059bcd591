//! Idempotency records: what the ledger keeps of a command run with a
//! `client_token`, so a retry gets the first reply and appends nothing.
//! This module owns the key, the stored record, the request's fingerprint
//! and deriving the records from the log itself (what `audit verify` and
//! `audit import` compare against and write); [`tokens`] what the writer
//! holds of them, and [`load`] reading them back from the store.
//!
//! A record lives for the policy's
//! [`token_retention`](crate::domain::Policy::token_retention) from its
//! command's time: a retry after that runs as a new command, the token then
//! belonging to it. Expired records are dropped from memory as they expire
//! and from the store with the next append (or when the ledger loads), so
//! both hold the rate of tokens times the retention, not the history. The
//! log keeps every token in its envelope for good.

mod load;
mod tokens;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Command, Event, ImageRef, Reply};
use crate::store::{Envelope, StoreError};

pub use load::{absorb, load, scan, settle, stored, stored_answer, Scanned, Stored};
pub use tokens::{Answer, Lookup, Slot, Tokens};

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

impl TokenRecord {
    /// Whether the record has expired at `now` (both in microseconds)
    /// under a retention of `retention` microseconds.
    pub fn expired(&self, now: i64, retention: i64) -> bool {
        self.recorded_at <= now.saturating_sub(retention)
    }

    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(StoreError::encode)
    }

    /// A stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(StoreError::decode)
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
/// idempotency records of the log before it by key: how `audit verify`
/// and `audit import` derive them from the log. A token used again after its
/// first command's record expired (`retention` microseconds later) starts
/// a record of its own.
pub fn record_from_log(
    records: &mut HashMap<Vec<u8>, TokenRecord>,
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
    match records.get_mut(&key) {
        None => {
            records.insert(key, fresh);
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
            records.insert(key, fresh);
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
pub(crate) fn reply_of(reply: Reply, event: &Event) -> Reply {
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
