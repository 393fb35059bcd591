//! Refused authentications: counted by reason
//! (`ledger_auth_failures_total{reason}`) and said at INFO with the peer's
//! address, at most [`LINES_PER_SECOND`] lines a second so a flood of bad
//! credentials cannot fill the disk; the next line says how many were
//! left unsaid.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Refusals logged a second at most.
pub const LINES_PER_SECOND: u32 = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The lines of the current second.
struct Window {
    started: Instant,
    lines: u32,
    unsaid: u64,
}

/// At most [`LINES_PER_SECOND`] refusal lines a second: what keeps a
/// flood of bad credentials, here or on the cloud API door, off the disk.
pub struct LineBudget {
    window: Mutex<Window>,
}

impl Default for LineBudget {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                started: Instant::now(),
                lines: 0,
                unsaid: 0,
            }),
        }
    }
}

impl LineBudget {
    /// Whether a line may be logged now, and how many were left unsaid
    /// since the last one.
    pub fn admit(&self) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.started.elapsed() >= Duration::from_secs(1) {
            window.started = Instant::now();
            window.lines = 0;
        }
        if window.lines >= LINES_PER_SECOND {
            window.unsaid += 1;
            return None;
        }
        window.lines += 1;
        Some(std::mem::take(&mut window.unsaid))
    }
}

/// Counts and logs refused authentications.
pub struct AuthFailures {
    counts: Family<ReasonLabel, Counter>,
    lines: LineBudget,
}

impl AuthFailures {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let failures = Self {
            counts: Family::default(),
            lines: LineBudget::default(),
        };
        registry.register(
            "ledger_auth_failures",
            "Calls refused by authentication or authorization, by reason",
            failures.counts.clone(),
        );
        failures
    }

    /// A call to `method` from `peer` was refused with `reason` (one of
    /// `crate::auth`'s `AuthFailure.*`): `detail` says why, for people.
    pub fn refused(
        &self,
        reason: &'static str,
        peer: Option<SocketAddr>,
        method: &str,
        detail: &str,
    ) {
        self.counts.get_or_create(&ReasonLabel { reason }).inc();
        if let Some(unsaid) = self.lines.admit() {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
            tracing::info!(reason, %peer, method, unsaid, "a call was refused: {detail}");
        }
    }

    /// How many refusals were counted with `reason`.
    pub fn count(&self, reason: &'static str) -> u64 {
        self.counts.get_or_create(&ReasonLabel { reason }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_counted_whole_and_logged_ten_lines_a_second() {
        let failures = AuthFailures::register(&mut Registry::default());
        let logged: Vec<Option<u64>> = (0..15).map(|_| failures.lines.admit()).collect();
        assert_eq!(logged[..10], [Some(0); 10]);
        assert_eq!(logged[10..], [None; 5]);
        std::thread::sleep(Duration::from_millis(1_050));
        // The next second's first line says how many were left unsaid.
        assert_eq!(failures.lines.admit(), Some(5));
        assert_eq!(failures.lines.admit(), Some(0));
        for _ in 0..3 {
            failures.refused("AuthFailure.InvalidToken", None, "/m", "bad");
        }
        assert_eq!(failures.count("AuthFailure.InvalidToken"), 3);
        assert_eq!(failures.count("AuthFailure.MissingCredentials"), 0);
    }
}
