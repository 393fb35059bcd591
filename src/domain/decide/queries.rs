//! The rules that answer questions without deciding a command: who may use
//! an image, who may see its shares, whether an account is registered.

use time::OffsetDateTime;

use super::checks::{live_image, not_owner, owned_image, registered, require_normal};
use super::controls::{not_disabled, trusted};
use crate::domain::{
    AccountId, DomainError, Image, ImageId, ImageUse, LedgerState, Policy, Region, Relation,
};

/// A use that is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// When the account audits its trusted owners: the refusal enforcing
    /// them would give.
    pub would_refuse: Option<DomainError>,
}

/// Decides whether `account` may use `image_id` in `region` for `usage`
/// at `now` (a share that has ended by then no longer counts). The error
/// names why not.
pub fn authorize(
    state: &LedgerState,
    policy: &Policy,
    account: &AccountId,
    image_id: &ImageId,
    region: &Region,
    usage: ImageUse,
    now: OffsetDateTime,
) -> Result<Allowed, DomainError> {
    let policy = state.policy_or(policy);
    policy.check_region(region)?;
    registered(state, account)?;
    let image = live_image(state, image_id)?;
    let relation = image.relation_at(account, now);
    if relation == Relation::Stranger {
        return Err(not_owner(image, account));
    }
    if *region != image.region {
        return Err(DomainError::InvalidCopyRegion(format!(
            "image {image_id} lives in {}, not in {region}",
            image.region
        )));
    }
    not_disabled(image, "used")?;
    require_normal(image, "used")?;
    if relation == Relation::Owner {
        return Ok(Allowed { would_refuse: None });
    }
    if usage == ImageUse::Export {
        return Err(DomainError::ExportSharedImage(format!(
            "image {image_id} is shared with account {account}; shared images cannot be exported"
        )));
    }
    Ok(Allowed {
        would_refuse: trusted(state, account, image)?,
    })
}

/// Checks that `caller` may see the share list of `image_id` and returns the image.
pub fn share_permission_view<'a>(
    state: &'a LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
) -> Result<&'a Image, DomainError> {
    owned_image(state, caller, image_id)
}
