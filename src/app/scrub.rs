//! The background scrub (`ledger-scrub`): reads the whole durable log over
//! and over at a bounded rate, checking each record's hash, position and
//! link in the chain, as KurrentDB verifies its chunks. A start checks only
//! the records it replays; this finds damage in the rest (a disk that rots,
//! a file changed behind the server's back) before a reader or an auditor
//! meets it. A damaged record is logged once, counted in
//! `ledger_damaged_records`, and turns health `NOT_SERVING` for the
//! `AuditLog` service until a restart (after restoring from a backup).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::health::Health;
use crate::metrics::LedgerMetrics;
use crate::projection::check_record;
use crate::store::{Chain, Head, Store, StoreError};

/// Records checked between two looks at the rate and at the stop flag.
const STEP: u64 = 256;
/// The wait between two passes over the log.
const BETWEEN_PASSES: Duration = Duration::from_secs(3_600);
/// The wait after the store failed to answer (the pass goes on after it).
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The running scrub; dropping it stops it.
pub(super) struct Scrub {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Scrub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the scrub thread panicked");
            }
        }
    }
}

/// Where a pass is, and what it found.
struct Pass {
    /// The next position to check.
    next: u64,
    /// The hash the record at `next` must link to; `None` right after a
    /// damaged record, whose hash cannot be trusted.
    link: Option<[u8; 32]>,
    /// The damaged records found so far.
    damaged: u64,
}

/// The scrub's surroundings.
pub(super) struct Scrubber {
    pub(super) store: Arc<dyn Store>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<LedgerMetrics>,
    /// How far the log is durable: only that is checked.
    pub(super) durable: watch::Receiver<Head>,
    /// Records checked per second, at most.
    pub(super) rate: u64,
}

/// The positions of damaged records already logged: each is logged once.
type Reported = std::collections::BTreeSet<u64>;

impl Scrubber {
    /// Starts the scrub thread.
    pub(super) fn start(self) -> std::io::Result<Scrub> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ledger-scrub".into())
            .spawn(move || self.run(&stopping))?;
        Ok(Scrub {
            stop,
            thread: Some(thread),
        })
    }

    fn run(self, stop: &AtomicBool) {
        let mut passes = 0u64;
        let mut reported = Reported::new();
        while !stop.load(Ordering::SeqCst) {
            let head = self.durable.borrow().position;
            let started = Instant::now();
            let (checked, damaged) = self.pass(head, stop, &mut reported);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            passes += 1;
            tracing::info!(
                passes,
                records = checked,
                damaged,
                seconds = started.elapsed().as_secs_f64(),
                "scrubbed the log"
            );
            if !pause(BETWEEN_PASSES, stop) {
                return;
            }
        }
    }

    /// Checks records 1 to `head`; returns how many were checked and how
    /// many of them were damaged.
    fn pass(&self, head: u64, stop: &AtomicBool, reported: &mut Reported) -> (u64, u64) {
        let started = Instant::now();
        let mut pass = Pass {
            next: 1,
            link: Some([0; 32]),
            damaged: 0,
        };
        let mut checked = 0u64;
        while pass.next <= head {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let to = head.min(pass.next + STEP - 1);
            match self.step(&mut pass, to, reported) {
                Ok(()) => {
                    checked = pass.next - 1;
                    let damaged = i64::try_from(pass.damaged).unwrap_or(i64::MAX);
                    if damaged > self.metrics.damaged_records.get() {
                        self.metrics.damaged_records.set(damaged);
                    }
                }
                Err(err) => {
                    tracing::warn!(err = %Chain(&err), position = pass.next, "the scrub cannot read the log; trying again");
                    if !pause(AFTER_FAILURE, stop) {
                        break;
                    }
                    continue;
                }
            }
            self.metrics
                .scrub_position
                .set(i64::try_from(checked).unwrap_or(i64::MAX));
            // Keep to the rate: `checked` records take at least this long.
            let due = Duration::from_secs_f64(checked as f64 / self.rate.max(1) as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                if !pause(ahead, stop) {
                    break;
                }
            }
        }
        (checked, pass.damaged)
    }

    /// Checks the records from `pass.next` to `to`. A record the store
    /// cannot decode at all (its chunk is damaged) counts as damaged and is
    /// stepped over.
    fn step(&self, pass: &mut Pass, to: u64, reported: &mut Reported) -> Result<(), StoreError> {
        let mut bad = |position: u64, what: String, pass: &mut Pass| {
            pass.damaged += 1;
            pass.link = None;
            pass.next = position + 1;
            self.health.damaged(position);
            if reported.insert(position) {
                tracing::error!(
                    position,
                    %what,
                    "the scrub found a damaged record: restore the log from a backup \
                     (audit verify names every damaged record)"
                );
            }
        };
        let start = pass.next;
        let mut failure = None;
        let scanned = self.store.scan(start, &mut |position, bytes| {
            if position != pass.next {
                bad(
                    pass.next,
                    format!("the log skips from {} to {position}", pass.next - 1),
                    pass,
                );
            }
            match check_record(position, bytes, pass.link) {
                Ok((_, hash)) => {
                    pass.link = Some(hash);
                    pass.next = position + 1;
                }
                Err(err) => bad(position, err.to_string(), pass),
            }
            position < to
        });
        match scanned {
            Ok(()) => {}
            Err(StoreError::Corrupt(what)) => failure = Some(what),
            Err(err) => return Err(err),
        }
        if let Some(what) = failure {
            bad(pass.next, what, pass);
        } else if pass.next <= to {
            // The log ended before its durable head: the records are gone.
            let position = pass.next;
            bad(
                position,
                format!("the log ends at {} before its head", position - 1),
                pass,
            );
            pass.next = to + 1;
        }
        Ok(())
    }
}

/// Sleeps for `wait` unless stopped meanwhile; `false` once stopped.
fn pause(wait: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    false
}
