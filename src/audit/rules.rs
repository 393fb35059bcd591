//! Replaying the log through the rules: each record must continue the chain
//! and its stream, and must be exactly what the rules decide for the command
//! it records, given everything before it.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::app::{token_key, TokenRecord};
use crate::domain::{
    decide, AccountId, Command, Event, ImageId, LedgerState, LighthousePermission, NewImage,
    Policy, Reply, EVENT_SCHEMA_VERSION,
};
use crate::store::{Envelope, Head};

/// Replays records one by one, refusing the first that could not have been written.
pub struct RuleChecker {
    policy: Policy,
    state: LedgerState,
    head: Head,
    tokens: HashMap<Vec<u8>, TokenRecord>,
    spare_ids: u64,
}

impl RuleChecker {
    /// A checker for a log that starts at position 1.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            state: LedgerState::default(),
            head: Head::default(),
            tokens: HashMap::new(),
            spare_ids: 0,
        }
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
    pub fn check(&mut self, bytes: &[u8]) -> Result<(Envelope, Event), String> {
        let (envelope, event) = decode(bytes)?;
        self.check_decoded(&envelope, &event)?;
        Ok((envelope, event))
    }

    /// Checks a record decoded by `decode` and applies it.
    pub fn check_decoded(&mut self, envelope: &Envelope, event: &Event) -> Result<(), String> {
        let expected = self.head.position + 1;
        if envelope.position != expected {
            return Err(format!(
                "the record says position {}, but position {expected} comes next",
                envelope.position
            ));
        }
        if !hex_equals(&envelope.prev_hash, &self.head.hash) {
            return Err(format!(
                "prev_hash {} is not the hash of the record before ({})",
                envelope.prev_hash,
                hex::encode(self.head.hash)
            ));
        }
        if event.aggregate_id() != envelope.aggregate_id {
            return Err(format!(
                "the record is filed under {} but its event belongs to {}",
                envelope.aggregate_id,
                event.aggregate_id()
            ));
        }
        let version = self.state.stream_version(event) + 1;
        if envelope.aggregate_version != version {
            return Err(format!(
                "{} version {} does not follow version {} of that stream",
                envelope.aggregate_id,
                envelope.aggregate_version,
                version - 1
            ));
        }
        self.check_token(envelope, event)?;
        self.check_rules(envelope, event)?;
        self.state.apply(event);
        self.head = Head {
            position: envelope.position,
            hash: envelope.hash_bytes().map_err(|e| e.to_string())?,
        };
        Ok(())
    }

    fn check_rules(&mut self, envelope: &Envelope, event: &Event) -> Result<(), String> {
        let (command, now) = command_for(envelope, event)?;
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
                ImageId::from_suffix(&format!("{:0>8}", spare_suffix(*spare)))
                    .unwrap_or_else(|_| ImageId::min())
            }
        };
        match decide(&self.state, &self.policy, &command, now, &mut ids) {
            Ok(decision) if decision.events.len() == 1 && decision.events[0] == *event => Ok(()),
            Ok(decision) if decision.events.is_empty() => Err(format!(
                "{} records a change that the rules say changes nothing",
                envelope.event_type
            )),
            Ok(decision) => Err(format!(
                "{} is not what the rules record for its command (they record {:?})",
                envelope.event_type,
                decision.events.first().map(Event::event_type)
            )),
            Err(err) => Err(format!(
                "{} breaks a rule: {} ({})",
                envelope.event_type,
                err,
                err.reason()
            )),
        }
    }

    fn check_token(&mut self, envelope: &Envelope, event: &Event) -> Result<(), String> {
        let (token, request_hash) = match (&envelope.client_token, &envelope.request_hash) {
            (None, None) => return Ok(()),
            (Some(token), Some(hash)) => (token, hash),
            _ => {
                return Err("client_token and request_hash must come together".into());
            }
        };
        let key = token_key(envelope.actor.as_deref(), token);
        match self.tokens.get_mut(&key) {
            None => {
                self.tokens.insert(
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
            Some(record) => Err(format!(
                "client token {token:?} of {} was already used at position {}; a retry appends nothing",
                envelope.actor.as_deref().unwrap_or("the system"),
                record.position
            )),
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

/// Decodes a stored record: its hash must match its bytes, its schema must be
/// known and its payload must decode. Needs no state, so it can run ahead on
/// another thread.
pub fn decode(bytes: &[u8]) -> Result<(Envelope, Event), String> {
    let envelope = Envelope::decode(bytes).map_err(|e| e.to_string())?;
    if envelope.schema_version != EVENT_SCHEMA_VERSION {
        return Err(format!(
            "schema version {} is not one this ledger knows ({EVENT_SCHEMA_VERSION})",
            envelope.schema_version
        ));
    }
    let event = envelope
        .event()
        .map_err(|e| format!("the {} payload does not decode: {e}", envelope.event_type))?;
    Ok((envelope, event))
}

/// The reply a command gets, extended by one of its events.
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
            images.push(crate::domain::ImageRef {
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
            images: vec![crate::domain::ImageRef {
                image_id: image_id.clone(),
                region: region.clone(),
            }],
        },
        (reply, _) => reply,
    }
}

fn spare_suffix(n: u64) -> String {
    let mut out = String::new();
    let mut n = n;
    while n > 0 {
        out.insert(0, ImageId::ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    out
}

fn actor(envelope: &Envelope) -> Result<AccountId, String> {
    let raw = envelope
        .actor
        .as_deref()
        .ok_or_else(|| format!("{} needs an acting account", envelope.event_type))?;
    AccountId::parse(raw).map_err(|e| e.to_string())
}

/// The command a record's event answers, and the time it was decided at.
fn command_for(envelope: &Envelope, event: &Event) -> Result<(Command, OffsetDateTime), String> {
    let at = envelope.recorded_at;
    Ok(match event {
        Event::AccountRegistered { account_id, kind } => {
            same_actor(envelope, account_id)?;
            (
                Command::RegisterAccount {
                    account_id: account_id.clone(),
                    kind: *kind,
                },
                at,
            )
        }
        Event::ImageRegistered {
            owner_account_id,
            region,
            attributes,
            state,
            created_time,
            ..
        } => {
            same_actor(envelope, owner_account_id)?;
            (
                Command::RegisterImage(NewImage {
                    owner_account_id: owner_account_id.clone(),
                    region: region.clone(),
                    attributes: attributes.clone(),
                    state: *state,
                }),
                *created_time,
            )
        }
        Event::ImageCopied {
            owner_account_id,
            region,
            copied_from,
            attributes,
            created_time,
            ..
        } => {
            same_actor(envelope, owner_account_id)?;
            (
                Command::CopyImage {
                    caller: owner_account_id.clone(),
                    image_id: copied_from.image_id.clone(),
                    destination_regions: vec![region.clone()],
                    image_name: Some(attributes.image_name.clone()),
                },
                *created_time,
            )
        }
        Event::ImageStateChanged { image_id, to, .. } => {
            if envelope.actor.is_some() {
                return Err("ImageStateChanged comes from the system, not an account".into());
            }
            (
                Command::UpdateImageState {
                    image_id: image_id.clone(),
                    state: *to,
                },
                at,
            )
        }
        Event::ImageAttributesModified {
            image_id,
            image_name,
            image_description,
        } => (
            Command::ModifyImageAttribute {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                image_name: image_name.clone(),
                image_description: image_description.clone(),
            },
            at,
        ),
        Event::ImageShared {
            image_id,
            account_ids,
            shared_time,
        } => (
            Command::ShareImage {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                account_ids: account_ids.clone(),
            },
            *shared_time,
        ),
        Event::ShareCancelled {
            image_id,
            account_ids,
        } => (
            Command::CancelImageSharing {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                account_ids: account_ids.clone(),
            },
            at,
        ),
        Event::LighthouseShared { image_id } | Event::LighthouseShareCancelled { image_id } => (
            Command::ModifyLighthouseSharePermission {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                permission: if matches!(event, Event::LighthouseShared { .. }) {
                    LighthousePermission::Share
                } else {
                    LighthousePermission::Cancel
                },
            },
            at,
        ),
        Event::ImageDeleted { image_id } => (
            Command::DeleteImage {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
            },
            at,
        ),
    })
}

fn same_actor(envelope: &Envelope, account: &AccountId) -> Result<(), String> {
    let acting = actor(envelope)?;
    if &acting != account {
        return Err(format!(
            "{} was recorded for account {acting} but names account {account}",
            envelope.event_type
        ));
    }
    Ok(())
}
