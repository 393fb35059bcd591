//! The share-expiry sweep: records, as `ShareExpired` events decided by the
//! rules like any command, the end of shares that have reached it.
//!
//! A share stops counting at its end whether or not this has run: queries
//! and decisions compare the end with their own time. The record frees the
//! share in the log (audit history, the share list, the listings' indexes),
//! normally within a second of the end. It is a system command, as the
//! image factory's state reports are: no account acts, the records name the
//! principal [`SWEEP_PRINCIPAL`]. It runs in the server, on one replica at a
//! time on PostgreSQL (the one holding the sweep's advisory lock); a second
//! sweeper could only be refused by the rules, as the share is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::{AppError, CommandOptions, Ledger};
use crate::domain::{AccountId, Command, DomainError, ImageId};

/// The principal the sweep's records name.
pub const SWEEP_PRINCIPAL: &str = "share-expiry";
/// The longest wait between two looks (a share made meanwhile may end sooner).
const TICK: Duration = Duration::from_secs(1);
/// Most images one look records the end of: the rest wait for the next.
const PER_LOOK: usize = 1_000;

impl Ledger {
    /// Whether this replica is the one that sweeps ended shares: always on
    /// a store of its own, on a shared one the holder of its claim.
    pub fn claims_sweep(&self) -> Result<bool, AppError> {
        match self.inner.store.shared() {
            None => Ok(true),
            Some(shared) => Ok(shared.claim_sweep()?),
        }
    }
}

/// How often a sweep that keeps failing says so again.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Runs the sweep until `stopped` turns true.
pub async fn sweep_ended_shares(ledger: Ledger, mut stopped: watch::Receiver<bool>) {
    // The first failure is logged, then one a minute while they last (the
    // store may refuse writes for as long as a disk stays full).
    let mut failing_since: Option<std::time::Instant> = None;
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let wait = match look(&ledger).await {
            Ok(recorded) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(failed_for = ?since.elapsed(), "the share-expiry sweep records ended shares again");
                }
                warned = None;
                if recorded >= PER_LOOK {
                    Duration::ZERO
                } else {
                    until_next_end(&ledger)
                }
            }
            Err(err) => {
                failing_since.get_or_insert_with(std::time::Instant::now);
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(std::time::Instant::now());
                    tracing::warn!(error = %err, "the share-expiry sweep could not record ended shares; it tries again each second");
                }
                TICK
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// How long until the next share ends, at most [`TICK`].
fn until_next_end(ledger: &Ledger) -> Duration {
    let now = OffsetDateTime::now_utc();
    match ledger.state().next_share_end() {
        Some(end) if end > now => Duration::try_from(end - now).map_or(TICK, |d| d.min(TICK)),
        Some(_) => Duration::ZERO,
        None => TICK,
    }
}

/// Records the end of the shares that have ended, one command per image;
/// returns how many images it recorded.
async fn look(ledger: &Ledger) -> Result<usize, AppError> {
    let now = OffsetDateTime::now_utc();
    let mut ended: BTreeMap<ImageId, Vec<AccountId>> = BTreeMap::new();
    {
        let state = ledger.state();
        for (_, image, account) in state.ended_shares(now) {
            if ended.len() == PER_LOOK && !ended.contains_key(image) {
                break;
            }
            ended
                .entry(image.clone())
                .or_default()
                .push(account.clone());
        }
    }
    let unrecorded = ended.values().map(Vec::len).sum::<usize>();
    ledger
        .metrics()
        .shares_ended_unrecorded
        .set(i64::try_from(unrecorded).unwrap_or(i64::MAX));
    if ended.is_empty() {
        return Ok(0);
    }
    let claimed = {
        let ledger = ledger.clone();
        tokio::task::spawn_blocking(move || ledger.claims_sweep())
            .await
            .map_err(|_| AppError::ShuttingDown)??
    };
    if !claimed {
        return Ok(0);
    }
    let principal: Arc<str> = Arc::from(SWEEP_PRINCIPAL);
    let mut running = tokio::task::JoinSet::new();
    let images = ended.len();
    for (image_id, mut account_ids) in ended {
        account_ids.sort();
        let (ledger, principal) = (ledger.clone(), Arc::clone(&principal));
        running.spawn(async move {
            let options = CommandOptions {
                client_token: None,
                dry_run: false,
                principal: Some(principal),
            };
            let ended = account_ids.len() as u64;
            let command = Command::ExpireShares {
                image_id,
                account_ids,
            };
            let committed = ledger.commit(command, options).await;
            if committed.is_ok() {
                ledger.metrics().shares_ended.inc_by(ended);
            }
            (ended, committed)
        });
    }
    let mut failure = None;
    let mut left = unrecorded as u64;
    while let Some(done) = running.join_next().await {
        let (ended, committed) = done.map_err(|_| AppError::ShuttingDown)?;
        match committed {
            Ok(_) => left = left.saturating_sub(ended),
            // Another replica, or the owner, got there first.
            Err(AppError::Domain(DomainError::NotShared(why))) => {
                left = left.saturating_sub(ended);
                tracing::debug!(%why, "an ended share was already gone");
            }
            Err(err) => failure = Some(err),
        }
    }
    ledger
        .metrics()
        .shares_ended_unrecorded
        .set(i64::try_from(left).unwrap_or(i64::MAX));
    match failure {
        Some(err) => Err(err),
        None => Ok(images),
    }
}
