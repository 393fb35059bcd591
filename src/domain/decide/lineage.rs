//! An image's lineage: the chain of copies back to the first image, cut
//! where the chain stops being the caller's to see.

use time::OffsetDateTime;

use super::checks::{live_image, not_owner, registered};
use crate::domain::{AccountId, DomainError, ImageId, LedgerState, Lineage, LineageLink, Relation};

/// The lineage of `image_id` as `caller` may see it.
///
/// The caller must own the image or have it shared with it. Going back, a
/// source is shown when the caller owns it, when it is shared with the
/// caller now, or when it is the source of an image the caller owns (the
/// caller copied it, so it saw it then): a recipient's copy reveals the
/// image it was copied from, its region, owner and time, and nothing
/// before that which is not the recipient's to see. Deleted images stay in
/// the chain, marked so.
pub fn lineage(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    now: OffsetDateTime,
) -> Result<Lineage, DomainError> {
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    if image.relation_at(caller, now) == Relation::Stranger {
        return Err(not_owner(image, caller));
    }
    let mut links = Vec::new();
    let mut current = image;
    let mut truncated = false;
    loop {
        links.push(LineageLink {
            image_id: current.image_id.clone(),
            region: current.region.clone(),
            owner_account_id: current.owner_account_id.clone(),
            created_time: current.created_time,
            deleted: current.deleted,
        });
        let Some(source) = current
            .copied_from
            .as_ref()
            .and_then(|from| state.any_image(&from.image_id))
        else {
            break;
        };
        let visible = source.relation_at(caller, now) != Relation::Stranger
            || &current.owner_account_id == caller;
        // Ids are never reused and a copy is always younger than its
        // source, so the chain cannot loop; the bound only guards a
        // state no log can produce.
        if !visible || links.len() > 10_000 {
            truncated = true;
            break;
        }
        current = source;
    }
    Ok(Lineage { links, truncated })
}
