//! Starting an epoch: the decide stage's state caught up with the records
//! another replica appended, checked against the chain (see [`super::super`]).

use std::sync::Arc;

use super::Decider;
use crate::app::writer::control::Restart;
use crate::app::writer::link::report_fork;
use crate::domain::LedgerState;
use crate::projection as replay;
use crate::store::{Chain, Envelope, Head, StoreError};

impl Decider {
    /// Starts an epoch: the state becomes the restart's base caught up with
    /// the records up to its target, which must continue its chain.
    pub(super) fn restart(&mut self, restart: Restart) {
        self.epoch = restart.epoch;
        self.restarted = true;
        // The database's log is shorter than this replica's: it lost
        // records this replica holds.
        if restart.target.position < restart.base.position {
            self.fork(&restart.state, restart.base, restart.target);
            return;
        }
        let mut tokens = restart.tokens;
        let retention = restart
            .state
            .policy_or(&self.policy)
            .token_retention_micros();
        let caught_up = replay::catch_up_to(
            self.store.as_ref(),
            (*restart.state).clone(),
            restart.base,
            restart.target,
            &mut |envelope, _| tokens.follow(self.store.as_ref(), envelope, retention),
        );
        match caught_up {
            Ok((state, head, touched)) => {
                tracing::debug!(
                    from = restart.base.position,
                    to = head.position,
                    "caught up with another replica's appends"
                );
                self.published = Arc::new(state.clone());
                self.state = state;
                self.head = head;
                self.tokens = tokens;
                self.caught_up.extend(touched);
            }
            Err(StoreError::Corrupt(_)) if self.forked_at(restart.base) => {
                self.fork(&restart.state, restart.base, restart.target);
            }
            Err(err @ StoreError::Corrupt(_)) => {
                tracing::error!(
                    err = %Chain(&err),
                    head = restart.base.position,
                    "the log does not continue this replica's chain; it stops serving"
                );
                self.health.broken();
                self.broken = Some(err);
                // The batch handed on next (with no job) ends the turn and
                // publishes nothing new.
                self.state = (*restart.state).clone();
                self.published = restart.state;
                self.head = restart.base;
            }
            Err(err) => {
                tracing::warn!(err = %Chain(&err), "cannot catch up with the log; reloading");
                self.control.failed();
            }
        }
    }

    /// Whether the database's record at `base` is not this replica's: its
    /// history forked there (a record lost in a failover, another written
    /// in its place), rather than the database's chain being damaged after
    /// it.
    fn forked_at(&self, base: Head) -> bool {
        if base.position == 0 {
            return false;
        }
        match self.store.read_at(base.position) {
            Ok(Some(bytes)) => Envelope::decode(&bytes)
                .and_then(|envelope| envelope.hash_bytes())
                .is_ok_and(|hash| hash != base.hash),
            Ok(None) => true,
            Err(err) => {
                tracing::warn!(err = %Chain(&err), "cannot read the record a catch-up started from");
                false
            }
        }
    }

    /// This replica's history forked from the database's: says so and
    /// reloads from the database now, before the jobs handed back with the
    /// restart are decided again (on failure they are refused until the
    /// healer finds the database well).
    fn fork(&mut self, base_state: &Arc<LedgerState>, base: Head, theirs: Head) {
        report_fork(&self.health, &self.metrics, base, theirs);
        self.state = (**base_state).clone();
        self.published = Arc::clone(base_state);
        self.head = base;
        self.heal(false);
    }
}
