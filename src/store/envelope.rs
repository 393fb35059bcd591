//! The stored record: an event with its position, stream version, metadata
//! and its link in the SHA-256 hash chain.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::Event;

/// The version of the records written now: 2 adds `principal`, who made
/// the call as authenticated, after `actor`.
pub const RECORD_VERSION: u32 = 2;

/// The first version, without `principal`; logs written before version 2
/// keep their records so, and they still verify.
pub const FIRST_RECORD_VERSION: u32 = 1;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// One record of the log, exactly as stored (one compact JSON object).
///
/// `hash` is the SHA-256 of the stored bytes with the final
/// `,"hash":"…"` member removed; since `prev_hash` is inside those bytes,
/// the records form a chain and no record can change unnoticed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Place in the log, gap-free from 1.
    pub position: u64,
    /// The image or account the event belongs to.
    pub aggregate_id: String,
    /// The event's number in that aggregate's stream, from 1.
    pub aggregate_version: u64,
    /// The event's name, such as `ImageShared`.
    pub event_type: String,
    /// The record's version ([`FIRST_RECORD_VERSION`] or [`RECORD_VERSION`]).
    pub schema_version: u32,
    /// When the event was recorded (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// The acting account; `null` for system commands such as `UpdateImageState`.
    pub actor: Option<String>,
    /// The `principal` member (version 2): `Some(None)` when the server
    /// ran without authentication; `None` when the record has no such
    /// member (version 1).
    #[serde(
        default,
        deserialize_with = "member",
        skip_serializing_if = "Option::is_none"
    )]
    pub principal: Option<Option<String>>,
    /// The caller's idempotency key, if it gave one.
    pub client_token: Option<String>,
    /// With a client token: SHA-256 (hex) of the command's parameters, so a
    /// restored log still knows which retries are the same request.
    pub request_hash: Option<String>,
    /// The event's fields, as stored.
    pub payload: Box<RawValue>,
    /// The hash of the previous record (hex), zeros for the first.
    pub prev_hash: String,
    /// The hash of this record (hex).
    pub hash: String,
}

/// The envelope fields the hash covers that come before the payload, in
/// stored order. The payload and `prev_hash` follow them.
#[derive(Serialize)]
struct Leading<'a> {
    position: u64,
    aggregate_id: &'a str,
    aggregate_version: u64,
    event_type: &'a str,
    schema_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
    actor: Option<&'a str>,
    /// Left out of version 1 records.
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<Option<&'a str>>,
    client_token: Option<&'a str>,
    request_hash: Option<&'a str>,
}

/// A member that is present, whatever its value (`null` included).
fn member<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

/// An envelope ready to append: its stored bytes and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    /// Place in the log.
    pub position: u64,
    /// Stream it belongs to.
    pub aggregate_id: String,
    /// Version within the stream.
    pub aggregate_version: u64,
    /// The stored JSON.
    pub bytes: Vec<u8>,
    /// SHA-256 of the record.
    pub hash: [u8; 32],
}

/// Everything about an event that is not the event itself.
#[derive(Debug, Clone)]
pub struct RecordMeta<'a> {
    /// Place in the log.
    pub position: u64,
    /// Version within the stream.
    pub aggregate_version: u64,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
    /// Acting account.
    pub actor: Option<&'a str>,
    /// The authenticated caller, when the server authenticates.
    pub principal: Option<&'a str>,
    /// Idempotency key.
    pub client_token: Option<&'a str>,
    /// Hash of the command's parameters, given with a client token.
    pub request_hash: Option<&'a str>,
    /// Hash of the previous record.
    pub prev_hash: [u8; 32],
}

/// Length of the `,"hash":"<64 hex>"}` tail of a stored record.
const HASH_TAIL: usize = 75;

impl EncodedRecord {
    /// Serializes an event into its stored form and computes its hash.
    ///
    /// The stored form is what serde_json writes for the envelope's fields
    /// in order, compact; the payload is spliced in as the event serialized
    /// it, so it is serialized once and never parsed again.
    pub fn encode(event: &Event, meta: &RecordMeta<'_>) -> Result<Self, StoreError> {
        Self::encode_as(event, meta, RECORD_VERSION)
    }

    /// [`Self::encode`] in the record format of `version` (1 drops the
    /// principal): how logs written before version 2 look, for tests.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn encode_version(
        event: &Event,
        meta: &RecordMeta<'_>,
        version: u32,
    ) -> Result<Self, StoreError> {
        Self::encode_as(event, meta, version)
    }

    fn encode_as(event: &Event, meta: &RecordMeta<'_>, version: u32) -> Result<Self, StoreError> {
        let tagged = serde_json::to_vec(event).map_err(StoreError::encode)?;
        let event_type = event.event_type();
        let payload = payload_of(&tagged, event_type)?;
        let aggregate_id = event.aggregate_id();
        let leading = Leading {
            position: meta.position,
            aggregate_id: &aggregate_id,
            aggregate_version: meta.aggregate_version,
            event_type,
            schema_version: version,
            recorded_at: meta.recorded_at,
            actor: meta.actor,
            principal: (version >= RECORD_VERSION).then_some(meta.principal),
            client_token: meta.client_token,
            request_hash: meta.request_hash,
        };
        let mut bytes = Vec::with_capacity(tagged.len() + 384);
        serde_json::to_writer(&mut bytes, &leading).map_err(StoreError::encode)?;
        bytes.pop(); // the closing brace
        bytes.extend_from_slice(b",\"payload\":");
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(b",\"prev_hash\":\"");
        bytes.extend_from_slice(&hex_digits(&meta.prev_hash));
        bytes.extend_from_slice(b"\"}");
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.pop(); // the closing brace
        bytes.extend_from_slice(b",\"hash\":\"");
        bytes.extend_from_slice(&hex_digits(&hash));
        bytes.extend_from_slice(b"\"}");
        Ok(Self {
            position: meta.position,
            aggregate_id: aggregate_id.to_string(),
            aggregate_version: meta.aggregate_version,
            bytes,
            hash,
        })
    }
}

/// A hash as 64 lowercase hex digits, as stored (without the `String`
/// that `hex::encode` builds a char at a time).
fn hex_digits(hash: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    // Cannot fail: the output is exactly twice the input's length.
    let _ = hex::encode_to_slice(hash, &mut out);
    out
}

impl Envelope {
    /// Parses stored bytes, checking that the hash matches them.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        Self::decode_hashed(bytes).map(|(envelope, _)| envelope)
    }

    /// [`Self::decode`], with the record's hash as bytes (computed, and
    /// equal to the stored one).
    pub fn decode_hashed(bytes: &[u8]) -> Result<(Self, [u8; 32]), StoreError> {
        let envelope: Envelope = serde_json::from_slice(bytes).map_err(StoreError::decode)?;
        let computed = body_hash(bytes)?;
        if hex_digits(&computed) != envelope.hash.as_bytes() {
            return Err(StoreError::Corrupt(format!(
                "record at position {} does not match its hash",
                envelope.position
            )));
        }
        Ok((envelope, computed))
    }

    /// The domain event this record carries.
    pub fn event(&self) -> Result<Event, StoreError> {
        let tag = serde_json::to_string(&self.event_type).map_err(StoreError::encode)?;
        let tagged = format!(
            "{{\"event_type\":{tag},\"payload\":{}}}",
            self.payload.get()
        );
        serde_json::from_str(&tagged).map_err(StoreError::decode)
    }

    /// The authenticated caller that caused it, if the record names one.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_ref().and_then(|p| p.as_deref())
    }

    /// The record's hash as bytes.
    pub fn hash_bytes(&self) -> Result<[u8; 32], StoreError> {
        parse_hash(&self.hash)
    }

    /// The previous record's hash as bytes.
    pub fn prev_hash_bytes(&self) -> Result<[u8; 32], StoreError> {
        parse_hash(&self.prev_hash)
    }
}

/// SHA-256 over a stored record without its `hash` member.
fn body_hash(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    let tail_ok = bytes.len() > HASH_TAIL
        && bytes[bytes.len() - HASH_TAIL..].starts_with(b",\"hash\":\"")
        && bytes.ends_with(b"\"}");
    if !tail_ok {
        return Err(StoreError::Corrupt(
            "record does not end with its hash member".into(),
        ));
    }
    let mut hasher = Sha256::new();
    hasher.update(&bytes[..bytes.len() - HASH_TAIL]);
    hasher.update(b"}");
    Ok(hasher.finalize().into())
}

fn parse_hash(text: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| StoreError::Corrupt(format!("{text:?} is not a SHA-256 hash")))?;
    Ok(out)
}

/// The payload inside an adjacently tagged event, serialized as
/// `{"event_type":"<type>","payload":<payload>}`.
fn payload_of<'a>(tagged: &'a [u8], event_type: &str) -> Result<&'a [u8], StoreError> {
    let rest = tagged
        .strip_prefix(b"{\"event_type\":\"")
        .and_then(|rest| rest.strip_prefix(event_type.as_bytes()))
        .and_then(|rest| rest.strip_prefix(b"\",\"payload\":"))
        .and_then(|rest| rest.strip_suffix(b"}"));
    match rest {
        Some(payload) if !payload.is_empty() => Ok(payload),
        _ => Err(StoreError::failed("an event did not serialize as expected")),
    }
}

#[cfg(test)]
mod tests;
