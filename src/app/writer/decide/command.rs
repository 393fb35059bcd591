//! Deciding one command: its idempotency record looked up, the rules
//! asked, and its records and idempotency record encoded on top of
//! everything decided before it, all or nothing.

use rand::Rng;
use time::OffsetDateTime;

use super::Decider;
use crate::app::writer::Pending;
use crate::app::{AppError, Committed, Job};
use crate::domain::{decide, Event, ImageId, Reply};
use crate::idempotency::{self, fingerprint, token_key, Lookup, Slot, TokenRecord};
use crate::projection::Touched;
use crate::store::{AppendBatch, EncodedRecord, Head, RecordMeta, StoreError};

/// A command's records and idempotency record, built whole before any of
/// it joins the batch.
struct Built {
    records: Vec<EncodedRecord>,
    token: Option<(Vec<u8>, TokenRecord, Vec<u8>)>,
}

impl Decider {
    /// Decides one command on top of everything decided before it, adding
    /// its records and idempotency record to `batch`: all of them, or, when
    /// any fails to build, none.
    pub(super) fn decide_one(
        &mut self,
        job: &Job,
        batch: &mut AppendBatch,
        touched: &mut Touched,
    ) -> Pending {
        let actor = job.command.actor().map(|a| a.as_str().to_owned());
        // The key and the request's fingerprint, only for commands that
        // carry a client token.
        let token = match &job.options.client_token {
            Some(token) => match fingerprint(&job.command) {
                Ok(fp) => Some((token_key(actor.as_deref(), token.as_str()), fp)),
                Err(err) => return Pending::Answer(Err(err.into())),
            },
            None => None,
        };
        let now = now_micros();
        let mut slot = Slot::Digest;
        if let Some((key, fingerprint)) = &token {
            let retention = self.state.policy_or(&self.policy).token_retention_micros();
            let at = idempotency::micros(now);
            let store = self.store.as_ref();
            let looked = match self.tokens.lookup(store, key, fingerprint, at, retention) {
                // While the records read at start are not in, the store
                // answers for those made before.
                Ok(Lookup::Run(free)) => match self.stored_answer(key, fingerprint, at) {
                    Ok(Some(answer)) => Ok(Lookup::Answer(answer)),
                    Ok(None) => Ok(Lookup::Run(free)),
                    Err(err) => Err(err),
                },
                looked => looked,
            };
            match looked {
                Ok(Lookup::Run(free)) => slot = free,
                Ok(Lookup::Answer(Ok((reply, position)))) => {
                    return Pending::Confirmed(Committed { reply, position })
                }
                Ok(Lookup::Answer(Err(err))) => return Pending::Answer(Err(AppError::from(err))),
                // The retry's outcome is unknown to its caller, who may try again.
                Err(err) => return Pending::Answer(Err(err.into())),
            }
        }
        let decision = match decide(
            &self.state,
            &self.policy,
            &job.command,
            now,
            &mut random_image_id,
        ) {
            Ok(decision) => decision,
            Err(err) => return Pending::Answer(Err(err.into())),
        };
        if job.options.dry_run {
            let reply = match decision.reply {
                Reply::ImagesCopied { .. } => Reply::ImagesCopied { images: vec![] },
                Reply::ImageRegistered { .. } | Reply::Done => Reply::Done,
            };
            return Pending::Answer(Ok(Committed::unrecorded(reply)));
        }
        if decision.events.is_empty() {
            return Pending::Confirmed(Committed::unrecorded(decision.reply));
        }
        let built = match self.build(
            job,
            actor.as_deref(),
            token,
            &decision.events,
            &decision.reply,
            now,
        ) {
            Ok(built) => built,
            Err(err) => return Pending::Answer(Err(err.into())),
        };
        for event in &decision.events {
            touched.record(event);
            self.state.apply(event);
        }
        if let Some(last) = built.records.last() {
            self.head = Head {
                position: last.position,
                hash: last.hash,
            };
        }
        batch.records.extend(built.records);
        if let Some((key, record, bytes)) = built.token {
            batch.tokens.push((key.clone(), bytes));
            self.tokens.insert(key, slot, record);
        }
        Pending::Durable(Committed {
            reply: decision.reply,
            position: self.head.position,
        })
    }

    /// Encodes a decision's records, continuing the head, and its
    /// idempotency record, changing nothing.
    fn build(
        &self,
        job: &Job,
        actor: Option<&str>,
        token: Option<(Vec<u8>, String)>,
        events: &[Event],
        reply: &Reply,
        now: OffsetDateTime,
    ) -> Result<Built, StoreError> {
        let mut records: Vec<EncodedRecord> = Vec::with_capacity(events.len());
        let mut head = self.head;
        for (i, event) in events.iter().enumerate() {
            // Events of one command may continue one stream: count those
            // before this one, since the state has not applied them yet.
            let earlier = events[..i]
                .iter()
                .filter(|e| e.aggregate_id() == event.aggregate_id())
                .count() as u64;
            let meta = RecordMeta {
                position: head.position + 1,
                aggregate_version: self.state.stream_version(event) + earlier + 1,
                recorded_at: now,
                actor,
                principal: job.options.principal.as_deref(),
                client_token: job.options.client_token.as_ref().map(|t| t.as_str()),
                request_hash: token.as_ref().map(|(_, fp)| fp.as_str()),
                prev_hash: head.hash,
            };
            #[cfg(test)]
            self.failpoints.encoding(meta.position)?;
            let record = EncodedRecord::encode(event, &meta)?;
            head = Head {
                position: record.position,
                hash: record.hash,
            };
            records.push(record);
        }
        let token = match token {
            Some((key, fingerprint)) => {
                let record = TokenRecord {
                    fingerprint,
                    reply: reply.clone(),
                    position: head.position,
                    recorded_at: idempotency::micros(now),
                };
                let bytes = record.encode()?;
                Some((key, record, bytes))
            }
            None => None,
        };
        Ok(Built { records, token })
    }
}
/// The current time, cut to microseconds so it survives RFC 3339 and protobuf round trips.
fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

fn random_image_id() -> ImageId {
    ImageId::from_number(rand::rng().random_range(0..ImageId::COUNT))
}
