//! What a start loads before the writer runs: the state, and the
//! idempotency records, read behind the server where nothing needs them
//! first.

use std::sync::Arc;

use super::writer::StartTokens;
use super::AppError;
use crate::domain::{LedgerState, Policy};
use crate::store::{Head, Store};

/// Loads the state, then starts reading the idempotency records on a
/// thread of their own. On a log only this process appends to, the server
/// serves meanwhile: the decide stage takes the records in once read, and
/// until then asks the store for the record of each client token it has
/// not seen since (see `Decider::take_scan`). Read beside the state
/// instead, they slowed its load about as much as they saved. On a shared
/// log they are in before the writer starts, since another replica's
/// appends can start an epoch from them at once; and after an append a
/// crash cut short, since its records past the head must leave the store
/// before anything is written there.
pub(super) fn load(
    store: &Arc<dyn Store>,
    policy: &Policy,
) -> Result<(LedgerState, Head, StartTokens), AppError> {
    let (state, head) = crate::projection::load_state(store.as_ref())?;
    if store.shared().is_none() && !store.cut_short() {
        let tokens = crate::idempotency::Tokens::default();
        let retention = state.policy_or(policy).token_retention_micros();
        let scan = super::writer::spawn_scan(store, tokens.empty_like(), head, retention);
        // No thread to spare: read them now.
        if let Ok(scan) = scan {
            return Ok((state, head, StartTokens::Reading(scan, tokens, head)));
        }
    }
    let tokens = crate::idempotency::load(
        store.as_ref(),
        head,
        crate::idempotency::micros(time::OffsetDateTime::now_utc()),
        state.policy_or(policy).token_retention_micros(),
    )?;
    Ok((state, head, StartTokens::Loaded(tokens)))
}
