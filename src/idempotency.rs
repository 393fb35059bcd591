//! Idempotency records: what the ledger keeps of a command run with a
//! `client_token`, so a retry gets the first reply and appends nothing.
//! One module for the key, the stored record, the request's fingerprint,
//! loading them from the log's store, checking a retry, and deriving them
//! from the log itself (what `audit verify` and `audit import` compare
//! against and write).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Command, DomainError, Event, ImageRef, Reply};
use crate::store::{Envelope, EventLog, StoreError};

/// What the ledger keeps of a command run with a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the command's parameters.
    pub fingerprint: String,
    /// The reply the first run got.
    pub reply: Reply,
    /// The log position of the command's last event.
    pub position: u64,
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

/// The idempotency records the writer holds, by key.
pub type Tokens = imbl::HashMap<Vec<u8>, TokenRecord>;

/// What the store holds of the idempotency records.
#[derive(Debug, Default)]
pub struct Stored {
    /// The records of the log up to the head, in key order.
    pub kept: Vec<(Vec<u8>, TokenRecord)>,
    /// The keys of those past it: written by an append that a crash stopped
    /// before its head (which commits it), so their commands did not happen.
    pub past: Vec<Vec<u8>>,
}

/// The stored idempotency records, split at `head`.
pub fn stored(log: &dyn EventLog, head: u64) -> Result<Stored, StoreError> {
    let mut kept = Vec::new();
    let mut past = Vec::new();
    for (key, value) in log.tokens()? {
        let record = TokenRecord::decode(&value)?;
        if record.position > head {
            past.push(key);
        } else {
            kept.push((key, record));
        }
    }
    Ok(Stored { kept, past })
}

/// Loads the idempotency records of the log up to `head`, removing those
/// past it, so a retry of their commands runs them.
pub fn load(log: &dyn EventLog, head: u64) -> Result<Tokens, StoreError> {
    let Stored { kept, past } = stored(log, head)?;
    // On a shared log those past the head were committed by another
    // replica since the head was read: the ledger takes them from the log
    // when it follows it.
    if !past.is_empty() && !log.shared() {
        log.remove_tokens(&past)?;
        tracing::warn!(
            records = past.len(),
            head,
            "removed idempotency records past the head: an append a crash cut short"
        );
    }
    Ok(kept.into_iter().collect())
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
        self.get_mut(key)
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
/// `audit import` derive them from the log.
pub fn record_from_log(
    records: &mut impl TokenMap,
    envelope: &Envelope,
    event: &Event,
) -> Result<(), TokenViolation> {
    let (token, request_hash) = match (&envelope.client_token, &envelope.request_hash) {
        (None, None) => return Ok(()),
        (Some(token), Some(hash)) => (token, hash),
        _ => return Err(TokenViolation::Unpaired),
    };
    let key = token_key(envelope.actor.as_deref(), token);
    match records.record_mut(&key) {
        None => {
            records.add(
                key,
                TokenRecord {
                    fingerprint: request_hash.clone(),
                    reply: reply_of(Reply::Done, event),
                    position: envelope.position,
                },
            );
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
