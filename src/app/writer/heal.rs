//! Healing after a failed write (a full disk, an I/O error): while the
//! decide stage refuses commands at once, the `ledger-heal` thread asks the
//! store, with backoff, whether it takes writes again
//! ([`EventLog::recover`](crate::store::EventLog::recover)), and wakes the
//! decide stage once it does, which reloads the state and takes commands.

use std::sync::Arc;
use std::time::Duration;

use super::control::Control;
use crate::store::{Chain, Store};

/// The first wait before asking the store again, doubled after each
/// refusal up to [`LONGEST_WAIT`]: short enough that writes resume well
/// within a second or two of the store taking them again, long enough
/// that a store that keeps failing costs nearly nothing.
const FIRST_WAIT: Duration = Duration::from_millis(50);
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// Starts asking `store` until it takes writes again or the ledger closes.
pub(super) fn start(store: Arc<dyn Store>, control: Arc<Control>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ledger-heal".into())
        .spawn(move || {
            let mut wait = FIRST_WAIT;
            let mut attempts = 0u64;
            while control.open() {
                std::thread::sleep(wait);
                attempts += 1;
                match store.recover() {
                    Ok(()) => {
                        tracing::info!(attempts, "the store takes writes again");
                        control.healed();
                        return;
                    }
                    Err(err) => {
                        // Said once by the health change; repeated only at debug.
                        tracing::debug!(err = %Chain(&err), attempts, "the store still does not take writes");
                        wait = (wait * 2).min(LONGEST_WAIT);
                    }
                }
            }
        })
        .map(drop)
}
