//! The idempotency records a start reads behind the server, as the decide
//! stage waits for them in nothing: what a start hands it, the store
//! answering for the tokens not yet read, and taking the records in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::Decider;
use crate::idempotency::{self, Tokens};
use crate::store::{Head, Store, StoreError};

/// The idempotency records a start hands the decide stage.
pub(in crate::app) enum StartTokens {
    /// In already.
    Loaded(Tokens),
    /// Still read on their own thread (a log only this process appends
    /// to), into a copy of the empty map given, up to the head given: the
    /// decide stage takes them in once read, and adds the records of the
    /// commands it runs meanwhile to the map (see `Decider::take_scan`).
    Reading(Scan, Tokens, Head),
}

/// How long after a failed read of the records the next one starts: a
/// store that keeps failing is not read whole every second.
#[cfg(not(test))]
const READ_AGAIN_AFTER: Duration = Duration::from_secs(30);
#[cfg(test)]
const READ_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// A start's read of the idempotency records on a thread of its own.
pub(in crate::app) type Scan = std::thread::JoinHandle<Result<idempotency::Scanned, StoreError>>;

/// Starts reading the records `store` holds up to `head` into `into` on
/// a thread of its own (`ledger-tokens`), removing those expired under
/// `retention` (microseconds) as of the read's start.
pub(in crate::app) fn spawn_scan(
    store: &Arc<dyn Store>,
    into: Tokens,
    head: Head,
    retention: i64,
) -> std::io::Result<Scan> {
    let store = Arc::clone(store);
    std::thread::Builder::new()
        .name("ledger-tokens".into())
        .spawn(move || {
            let now = idempotency::micros(OffsetDateTime::now_utc());
            let cutoff = Some(now.saturating_sub(retention));
            idempotency::scan(store.as_ref(), into, head.position, cutoff)
        })
}

impl StartTokens {
    /// The records in already (or none yet, with the digests the scan's
    /// will have). Only a shared log's epochs start from them, and a
    /// shared log's are in before the writer starts.
    pub(in crate::app::writer) fn loaded(&self) -> Tokens {
        match self {
            StartTokens::Loaded(tokens) | StartTokens::Reading(_, tokens, _) => tokens.clone(),
        }
    }
}

/// Idempotency records not yet in, and the head they were read up to.
pub(super) enum PendingTokens {
    Reading(Scan, Head),
    /// The read failed (when): it is started again at a turn after
    /// [`READ_AGAIN_AFTER`].
    Failed(Head, Instant),
}

impl PendingTokens {
    fn head(&self) -> Head {
        match self {
            PendingTokens::Reading(_, head) | PendingTokens::Failed(head, _) => *head,
        }
    }
}

impl Decider {
    /// Takes the records a start read in, once read: they join those of
    /// the commands run since (see [`idempotency::absorb`]), the expired
    /// ones leaving the store with later appends. Until then a command
    /// with a client token that the records made since do not answer asks
    /// the store for its key's record. A read that failed is started
    /// again at a turn [`READ_AGAIN_AFTER`] later.
    pub(super) fn take_scan(&mut self) {
        let (scan, head) = match self.pending.take() {
            None => return,
            Some(PendingTokens::Reading(scan, head)) if !scan.is_finished() => {
                self.pending = Some(PendingTokens::Reading(scan, head));
                return;
            }
            Some(PendingTokens::Reading(scan, head)) => (scan, head),
            Some(PendingTokens::Failed(head, at)) => {
                self.pending = Some(if at.elapsed() < READ_AGAIN_AFTER {
                    PendingTokens::Failed(head, at)
                } else {
                    self.scan_again(head)
                });
                return;
            }
        };
        let now = idempotency::micros(OffsetDateTime::now_utc());
        let retention = self.state.policy_or(&self.policy).token_retention_micros();
        let absorbed = scan
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .and_then(|scanned| {
                let store = self.store.as_ref();
                idempotency::absorb(
                    store,
                    &self.tokens,
                    scanned,
                    head.position,
                    (now, retention),
                )
            });
        match absorbed {
            Ok((tokens, expired)) => {
                self.tokens = tokens;
                self.expired.extend(expired);
                self.metrics
                    .tokens
                    .set(i64::try_from(self.tokens.len()).unwrap_or(i64::MAX));
            }
            Err(err) => {
                tracing::warn!(
                    err = %crate::store::Chain(&err),
                    again_in_secs = READ_AGAIN_AFTER.as_secs(),
                    "cannot read the idempotency records; the store answers for each token meanwhile"
                );
                self.pending = Some(PendingTokens::Failed(head, Instant::now()));
            }
        }
    }

    /// Starts reading the records stored up to `head` again.
    fn scan_again(&self, head: Head) -> PendingTokens {
        let retention = self.state.policy_or(&self.policy).token_retention_micros();
        match spawn_scan(&self.store, self.tokens.empty_like(), head, retention) {
            Ok(scan) => PendingTokens::Reading(scan, head),
            Err(err) => {
                tracing::warn!(%err, "cannot start a thread to read the idempotency records");
                PendingTokens::Failed(head, Instant::now())
            }
        }
    }

    /// What the store says of a command's client token while the records
    /// read at start are not in (see [`Self::take_scan`]): `None` when
    /// they are, or when it runs.
    pub(super) fn stored_answer(
        &self,
        key: &[u8],
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<idempotency::Answer>, StoreError> {
        let Some(pending) = &self.pending else {
            return Ok(None);
        };
        let retention = self.state.policy_or(&self.policy).token_retention_micros();
        idempotency::stored_answer(
            self.store.as_ref(),
            key,
            fingerprint,
            (now, retention),
            pending.head().position,
        )
    }
}
