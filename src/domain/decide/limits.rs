//! The rule of the ledger's own limits: new limits are recorded only when
//! the history recorded so far stays lawful under them.

use std::collections::BTreeMap;

use super::Decision;
use crate::domain::{DomainError, Event, LedgerState, Limits, Region};

pub(super) fn set_limits(state: &LedgerState, limits: &Limits) -> Result<Decision, DomainError> {
    well_formed(limits)?;
    if state.limits().map(|current| Limits::of(current)).as_ref() == Some(limits) {
        return Ok(Decision::of(vec![]));
    }
    let policy = limits.policy();
    let mut by_region: BTreeMap<&Region, u32> = BTreeMap::new();
    for image in state.images().filter(|image| !image.deleted) {
        *by_region.entry(&image.region).or_default() += 1;
        if image.shares.len() > policy.max_shares_per_image {
            return Err(DomainError::ShareLimitExceeded(format!(
                "image {} is shared with {} accounts: a limit of {} per image would make that \
                 unlawful. Keep --max-shares-per-image at {} or more, or cancel shares first",
                image.image_id,
                image.shares.len(),
                policy.max_shares_per_image,
                image.shares.len()
            )));
        }
    }
    for ((owner, region), used) in state.quota_usage() {
        if used > policy.image_quota {
            return Err(DomainError::ImageQuotaExceeded(format!(
                "account {owner} has {used} custom images in {region}: a quota of {} would make \
                 that unlawful. Keep --image-quota at {used} or more, or delete images first",
                policy.image_quota
            )));
        }
    }
    if let Some((region, count)) = by_region
        .into_iter()
        .find(|(region, _)| !policy.regions.contains(*region))
    {
        return Err(DomainError::RegionNotFound(format!(
            "region {region} holds {count} live image(s): it must stay in --regions"
        )));
    }
    Ok(Decision::of(vec![Event::LedgerLimitsSet {
        limits: limits.clone(),
    }]))
}

fn well_formed(limits: &Limits) -> Result<(), DomainError> {
    let bad = |what: &str| Err(DomainError::InvalidParameter(what.to_owned()));
    if limits.max_shares_per_image == 0 || limits.max_accounts_per_call == 0 {
        return bad("the share limits must be at least 1");
    }
    if limits.token_retention_ms < 1_000 {
        return bad("the token retention must be at least one second");
    }
    if limits.regions.is_empty() {
        return bad("the regions must name at least one region");
    }
    if limits.regions.windows(2).any(|pair| pair[0] >= pair[1]) {
        return bad("the regions must be sorted, each once");
    }
    Ok(())
}
