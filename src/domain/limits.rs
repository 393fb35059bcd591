//! The ledger's own limits as its log records them: what the rules depend
//! on, so that an audit re-decides history with the limits it was decided
//! under, not with flags given by hand.

use serde::{Deserialize, Serialize};

use super::{Policy, Region};

/// The stream the limits' records are filed under.
pub const LEDGER_STREAM: &str = "ledger";

/// The limits of a [`Policy`], in the form the log keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most accounts one image may be shared with.
    pub max_shares_per_image: u64,
    /// Most accounts one call may name.
    pub max_accounts_per_call: u64,
    /// Most custom images one account may own in one region.
    pub image_quota: u32,
    /// The regions images may live in, sorted.
    pub regions: Vec<Region>,
    /// How long a client token is remembered, in milliseconds.
    pub token_retention_ms: u64,
}

impl Limits {
    /// The limits of `policy`.
    pub fn of(policy: &Policy) -> Self {
        Self {
            max_shares_per_image: policy.max_shares_per_image as u64,
            max_accounts_per_call: policy.max_accounts_per_call as u64,
            image_quota: policy.image_quota,
            regions: policy.regions.iter().cloned().collect(),
            token_retention_ms: u64::try_from(policy.token_retention.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// The policy these limits make.
    pub fn policy(&self) -> Policy {
        Policy {
            max_shares_per_image: usize::try_from(self.max_shares_per_image).unwrap_or(usize::MAX),
            max_accounts_per_call: usize::try_from(self.max_accounts_per_call)
                .unwrap_or(usize::MAX),
            image_quota: self.image_quota,
            regions: self.regions.iter().cloned().collect(),
            token_retention: std::time::Duration::from_millis(self.token_retention_ms),
        }
    }
}
