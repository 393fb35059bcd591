//! Starting an epoch: the decide stage's state caught up with the records
//! another replica appended, checked against the chain (see [`super::super`]).

use std::sync::Arc;

use super::Decider;
use crate::app::writer::control::Restart;
use crate::idempotency;
use crate::projection as replay;
use crate::store::{Chain, StoreError};

impl Decider {
    /// Starts an epoch: the state becomes the restart's base caught up with
    /// the records up to its target, which must continue its chain.
    pub(super) fn restart(&mut self, restart: Restart) {
        self.epoch = restart.epoch;
        self.restarted = true;
        let mut tokens = restart.tokens;
        let retention = self.policy.token_retention_micros();
        let caught_up = replay::catch_up_to(
            self.store.as_ref(),
            (*restart.state).clone(),
            restart.base,
            restart.target,
            &mut |envelope, event| {
                if let Err(violation) =
                    idempotency::record_from_log(&mut tokens, envelope, event, retention)
                {
                    tracing::warn!(%violation, position = envelope.position, "a record's token does not fit the log before it");
                }
            },
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
}
