//! The index of shares that end by themselves, by their end: what the
//! sweep records, and what a query checks for shares that ended before the
//! sweep recorded them.

use imbl::OrdSet;
use time::OffsetDateTime;

use super::LedgerState;
use crate::domain::{AccountId, Event, Image, ImageId, Region};

/// Ends of shares, with their image and account, in order.
pub(super) type Expiring = OrdSet<(OffsetDateTime, ImageId, AccountId)>;

/// The ends of the shares of `image` that `event` removes or replaces, with
/// their accounts (read before the event is applied).
pub(super) fn ends_touched(image: &Image, event: &Event) -> Vec<(OffsetDateTime, AccountId)> {
    let end_of = |account: &AccountId| {
        image
            .shares
            .get(account)
            .and_then(|share| share.expires_at)
            .map(|end| (end, account.clone()))
    };
    match event {
        Event::ImageShared { account_ids, .. }
        | Event::ShareCancelled { account_ids, .. }
        | Event::ShareExpiryModified { account_ids, .. }
        | Event::ShareExpired { account_ids, .. } => {
            account_ids.iter().filter_map(end_of).collect()
        }
        Event::ShareLeft { account_id, .. } => end_of(account_id).into_iter().collect(),
        Event::ImageDisabled { .. } | Event::ImageDeleted { .. } => {
            image.shares.keys().filter_map(end_of).collect()
        }
        _ => Vec::new(),
    }
}

/// Takes the `ended` ends out of `index` and puts in those `event` (now
/// applied to `image`) sets.
pub(super) fn reindex(
    index: &mut Expiring,
    image: &Image,
    event: &Event,
    ended: Vec<(OffsetDateTime, AccountId)>,
) {
    for (end, account) in ended {
        index.remove(&(end, image.image_id.clone(), account));
    }
    if let Event::ImageShared {
        account_ids,
        expires_at: Some(end),
        ..
    }
    | Event::ShareExpiryModified {
        account_ids,
        expires_at: Some(end),
        ..
    } = event
    {
        for account in account_ids {
            index.insert((*end, image.image_id.clone(), account.clone()));
        }
    }
}

impl LedgerState {
    /// The shares that had ended by `now`, by their end: those the sweep
    /// has yet to record (normally none, or the last second's).
    pub fn ended_shares(
        &self,
        now: OffsetDateTime,
    ) -> impl Iterator<Item = &(OffsetDateTime, ImageId, AccountId)> {
        // Looking at the first end walks down the tree and allocates
        // nothing; an iterator keeps a path stack. Queries ask on every
        // call, and normally nothing has ended.
        let any = self.next_share_end().is_some_and(|end| end <= now);
        any.then(|| {
            self.expiring
                .iter()
                .take_while(move |(end, _, _)| *end <= now)
        })
        .into_iter()
        .flatten()
    }

    /// When the next share ends, if any share does.
    pub fn next_share_end(&self) -> Option<OffsetDateTime> {
        self.expiring.get_min().map(|(end, _, _)| *end)
    }

    /// Whether a share of an image in `region` with `account` had ended
    /// by `now` but is still held: a listing of `account` there must then
    /// leave that image out itself.
    pub fn has_ended_share(
        &self,
        account: &AccountId,
        region: &Region,
        now: OffsetDateTime,
    ) -> bool {
        self.ended_shares(now).any(|(_, image, holder)| {
            holder == account
                && self
                    .any_image(image)
                    .is_some_and(|image| &image.region == region)
        })
    }
}
