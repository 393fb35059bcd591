//! Replaying the log through the rules: each record must continue the chain
//! and its stream, and must be exactly what the rules decide for the command
//! it records, given everything before it.

use std::collections::HashMap;

use super::commands::command_for;
use crate::domain::{decide, Event, ImageId, LedgerState, Policy};
use crate::idempotency::{record_from_log, Retention, TokenRecord, TokenViolation};
use crate::store::{Envelope, Head, FIRST_RECORD_VERSION, RECORD_VERSION};

/// Why a record could not have been written where it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The bytes are not a record this ledger wrote: a hash that does not
    /// match, an unknown schema, a payload that does not decode.
    #[error("{0}")]
    Undecodable(String),
    /// The record is not at the next position.
    #[error("the record says position {found}, but position {expected} comes next")]
    Position {
        /// The position it names.
        found: u64,
        /// The position that comes next.
        expected: u64,
    },
    /// `prev_hash` is not the hash of the record before.
    #[error("prev_hash {found} is not the hash of the record before ({expected})")]
    Chain {
        /// The `prev_hash` it names.
        found: String,
        /// The hash of the record before.
        expected: String,
    },
    /// The record is filed under another aggregate than its event's.
    #[error("the record is filed under {filed} but its event belongs to {belongs}")]
    Stream {
        /// The aggregate it is filed under.
        filed: String,
        /// The aggregate its event belongs to.
        belongs: String,
    },
    /// The record's version does not follow its stream's last one.
    #[error("{aggregate} version {found} does not follow version {last} of that stream")]
    Version {
        /// The aggregate.
        aggregate: String,
        /// The version it names.
        found: u64,
        /// The stream's last version before it.
        last: u64,
    },
    /// Its client token does not fit the records before it.
    #[error(transparent)]
    Token(#[from] TokenViolation),
    /// Its actor or fields name no command the rules could have decided.
    #[error("{0}")]
    Command(String),
    /// The rules say its command changes nothing.
    #[error("{event_type} records a change that the rules say changes nothing")]
    NoChange {
        /// The event's type.
        event_type: String,
    },
    /// The rules record something else for its command.
    #[error("{event_type} is not what the rules record for its command (they record {decided:?})")]
    NotDecided {
        /// The event's type.
        event_type: String,
        /// The type of the event the rules record.
        decided: Option<&'static str>,
    },
    /// The rules refuse its command.
    #[error("{event_type} breaks a rule: {error} ({})", .error.reason())]
    Rule {
        /// The event's type.
        event_type: String,
        /// The rule's refusal.
        error: crate::domain::DomainError,
    },
}

/// Replays records one by one, refusing the first that could not have been written.
pub struct RuleChecker {
    /// The limits of a log that records none (until its first record of them).
    policy: Policy,
    state: LedgerState,
    head: Head,
    tokens: HashMap<Vec<u8>, TokenRecord>,
    spare_ids: u64,
    retentions: Retentions,
}

/// The token retentions in force over the log's history: from each
/// record of the limits (microseconds), the retention it set.
#[derive(Debug, Clone)]
struct Retentions(Vec<(i64, i64)>);

/// A record expired when any retention in force between it and the retry
/// had it expire: the writer drops expired records as it goes, so one
/// dropped under a shorter retention is not brought back by a longer one.
impl Retention for Retentions {
    fn expired(&self, record: &TokenRecord, now: i64) -> bool {
        self.0.iter().enumerate().any(|(i, &(from, retention))| {
            let until = self.0.get(i + 1).map_or(now, |&(next, _)| next.min(now));
            from <= now && until > record.recorded_at && record.expired(until, retention)
        })
    }
}

impl RuleChecker {
    /// A checker for a log that starts at position 1; `policy` stands for
    /// the limits until the log's first record of them (a log written
    /// before limits were recorded has none).
    pub fn new(policy: Policy) -> Self {
        let retentions = Retentions(vec![(i64::MIN, policy.token_retention_micros())]);
        Self {
            policy,
            state: LedgerState::default(),
            head: Head::default(),
            tokens: HashMap::new(),
            spare_ids: 0,
            retentions,
        }
    }

    /// The limits the next record is checked against: the log's last
    /// record of them, else those given.
    pub fn policy(&self) -> &Policy {
        self.state.policy_or(&self.policy)
    }

    /// The state after the records checked so far.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The last record checked.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The idempotency records the checked log implies.
    pub fn tokens(&self) -> &HashMap<Vec<u8>, TokenRecord> {
        &self.tokens
    }

    /// Checks the next record, given its stored bytes, and applies it.
    /// The error says what is wrong; the caller knows the position.
    pub fn check(&mut self, bytes: &[u8]) -> Result<(Envelope, Event), Violation> {
        let record = decode(bytes)?;
        self.check_decoded(&record)?;
        Ok((record.envelope, record.event))
    }

    /// Checks a record decoded by `decode` and applies it.
    pub fn check_decoded(&mut self, record: &Decoded) -> Result<(), Violation> {
        let Decoded {
            envelope,
            event,
            hash,
        } = record;
        let expected = self.head.position + 1;
        if envelope.position != expected {
            return Err(Violation::Position {
                found: envelope.position,
                expected,
            });
        }
        if !hex_equals(&envelope.prev_hash, &self.head.hash) {
            return Err(Violation::Chain {
                found: envelope.prev_hash.clone(),
                expected: hex::encode(self.head.hash),
            });
        }
        if event.aggregate_id() != envelope.aggregate_id {
            return Err(Violation::Stream {
                filed: envelope.aggregate_id.clone(),
                belongs: event.aggregate_id().to_string(),
            });
        }
        let last = self.state.stream_version(event);
        if envelope.aggregate_version != last + 1 {
            return Err(Violation::Version {
                aggregate: envelope.aggregate_id.clone(),
                found: envelope.aggregate_version,
                last,
            });
        }
        record_from_log(&mut self.tokens, envelope, event, &self.retentions)?;
        self.check_rules(envelope, event)?;
        self.state.apply(event);
        if let Event::LedgerLimitsSet { limits } = event {
            let retention = limits.policy().token_retention_micros();
            self.retentions
                .0
                .push((crate::idempotency::micros(envelope.recorded_at), retention));
        }
        self.head = Head {
            position: envelope.position,
            hash: *hash,
        };
        Ok(())
    }

    fn check_rules(&mut self, envelope: &Envelope, event: &Event) -> Result<(), Violation> {
        let (command, now) = command_for(envelope, event).map_err(Violation::Command)?;
        let mut wanted = match event {
            Event::ImageRegistered { image_id, .. } | Event::ImageCopied { image_id, .. } => {
                Some(image_id.clone())
            }
            _ => None,
        };
        let spare = &mut self.spare_ids;
        let mut ids = move || match wanted.take() {
            Some(id) => id,
            None => {
                // Only reached when the recorded id was taken already; any
                // other id makes the comparison below fail, as it should.
                *spare += 1;
                ImageId::from_number(*spare)
            }
        };
        match decide(&self.state, &self.policy, &command, now, &mut ids) {
            Ok(decision) if decision.events.len() == 1 && decision.events[0] == *event => Ok(()),
            Ok(decision) if decision.events.is_empty() => Err(Violation::NoChange {
                event_type: envelope.event_type.clone(),
            }),
            Ok(decision) => Err(Violation::NotDecided {
                event_type: envelope.event_type.clone(),
                decided: decision.events.first().map(Event::event_type),
            }),
            Err(error) => Err(Violation::Rule {
                event_type: envelope.event_type.clone(),
                error,
            }),
        }
    }
}

/// Whether `text` is the lowercase hex of `bytes`, without allocating.
fn hex_equals(text: &str, bytes: &[u8; 32]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    text.len() == 64
        && text
            .as_bytes()
            .chunks_exact(2)
            .zip(bytes)
            .all(|(pair, byte)| {
                pair[0] == DIGITS[usize::from(byte >> 4)]
                    && pair[1] == DIGITS[usize::from(byte & 0xf)]
            })
}

/// A stored record as [`decode`] returns it.
#[derive(Debug)]
pub struct Decoded {
    /// The envelope.
    pub envelope: Envelope,
    /// The event it carries.
    pub event: Event,
    /// Its hash: that of its bytes, which is also the one it names.
    pub hash: [u8; 32],
}

/// Decodes a stored record: its hash must match its bytes, its schema must be
/// known and its payload must decode. Needs no state, so it can run ahead on
/// another thread.
pub fn decode(bytes: &[u8]) -> Result<Decoded, Violation> {
    let (envelope, hash) =
        Envelope::decode_hashed(bytes).map_err(|e| Violation::Undecodable(e.to_string()))?;
    match (envelope.schema_version, &envelope.principal) {
        (FIRST_RECORD_VERSION, None) | (RECORD_VERSION, Some(_)) => {}
        (FIRST_RECORD_VERSION, Some(_)) => {
            return Err(Violation::Undecodable(
                "a version 1 record has a principal member, which only version 2 has".into(),
            ))
        }
        (RECORD_VERSION, None) => {
            return Err(Violation::Undecodable(
                "a version 2 record lacks its principal member".into(),
            ))
        }
        (version, _) => {
            return Err(Violation::Undecodable(format!(
                "schema version {version} is not one this ledger knows \
                 ({FIRST_RECORD_VERSION} or {RECORD_VERSION})"
            )))
        }
    }
    let event = envelope.event().map_err(|e| {
        Violation::Undecodable(format!(
            "the {} payload does not decode: {e}",
            envelope.event_type
        ))
    })?;
    Ok(Decoded {
        envelope,
        event,
        hash,
    })
}
