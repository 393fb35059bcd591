//! Recording the limits a ledger is opened with in its log, so the rules'
//! history carries the limits it was decided under.

use std::sync::Arc;

use super::{AppError, CommandOptions, Ledger};
use crate::domain::{Command, Limits};

/// The principal the records of limits name.
pub const LIMITS_PRINCIPAL: &str = "server-start";

impl Ledger {
    /// Records the limits the ledger was opened with, unless the log's last
    /// record of them says the same; the position recorded at and the
    /// limits, if it recorded them. The
    /// rules refuse limits that would make recorded history unlawful (a
    /// per-image limit below an image's share count, a quota below an
    /// account's images, a region left out that holds images).
    pub async fn record_limits(&self) -> Result<Option<(u64, Limits)>, AppError> {
        let limits = Limits::of(self.configured_policy());
        let command = Command::SetLedgerLimits {
            limits: limits.clone(),
        };
        let options = CommandOptions {
            client_token: None,
            dry_run: false,
            principal: Some(Arc::from(LIMITS_PRINCIPAL)),
        };
        let committed = self.commit(command, options).await?;
        Ok((committed.position > 0).then_some((committed.position, limits)))
    }
}
