//! The state at start: the stored projections caught up with the log
//! after their checkpoint, or the whole log replayed when they are missing
//! or do not load.

use super::persist;
use super::replay::{catch_up, head_at, rebuild_projections};
use crate::domain::LedgerState;
use crate::progress::Progress;
use crate::store::{Head, ProjectionStoreExt, Store, StoreError};

/// Loads the state: from the persisted projections, caught up with the
/// records written after their checkpoint (and then saved again, so they are
/// current), or, when they are missing or unreadable, by replaying the whole
/// log and rewriting them.
pub fn load_state(store: &dyn Store) -> Result<(LedgerState, Head), StoreError> {
    let head = store.head()?;
    let status = store.projection_status()?;
    match status.checkpoint {
        Some(checkpoint) if checkpoint <= head.position => {
            let loaded = persist::load(store).and_then(|state| {
                let from = head_at(store, checkpoint)?;
                let (caught_up, now, touched) = catch_up(store, state.clone(), from)?;
                // This also ends a save a crash cut short.
                if !touched.is_empty() || !status.pending.is_empty() {
                    let ops = persist::changes(&caught_up, &touched)?;
                    // On a shared store another replica may keep the read
                    // side (or just have saved it): then this one leaves it.
                    store.save_projections_from(&ops, checkpoint, now.position)?;
                }
                Ok((caught_up, now, head.position - checkpoint))
            });
            match loaded {
                Ok((state, head, replayed)) => {
                    tracing::info!(
                        position = head.position,
                        replayed,
                        "loaded the state from the projections"
                    );
                    return Ok((state, head));
                }
                Err(err) => {
                    tracing::warn!(%err, "the projections do not load; rebuilding them from the log")
                }
            }
        }
        checkpoint => tracing::info!(
            position = head.position,
            ?checkpoint,
            "no usable projections; rebuilding them from the log"
        ),
    }
    rebuild_projections(store, &Progress::hidden())
}
