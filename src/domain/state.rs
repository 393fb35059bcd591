//! The state of every aggregate plus the cross-aggregate indexes the rules
//! and queries need, built only by applying events.
//!
//! It uses persistent maps, so a clone is O(1): the command path decides
//! against a private copy and publishes it to readers once the batch is
//! durable, and can throw the copy away if the write fails.

use imbl::{HashMap, OrdSet};
use serde::{Deserialize, Serialize};

use super::{AccountId, AccountKind, Event, Image, ImageId, Region};

/// A registered account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Root or collaborator.
    pub kind: AccountKind,
    /// Number of events in its stream.
    pub version: u64,
}

/// Key of the per-account, per-region indexes.
type AccountRegionImage = (AccountId, Region, ImageId);

/// Every aggregate's state and the indexes derived from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    accounts: HashMap<AccountId, Account>,
    images: HashMap<ImageId, Image>,
    owned: OrdSet<AccountRegionImage>,
    shared: OrdSet<AccountRegionImage>,
    quota_used: HashMap<(AccountId, Region), u32>,
}

impl LedgerState {
    /// Rebuilds the state from saved aggregates (as written by the
    /// projections), deriving the indexes.
    pub fn restore(
        accounts: impl IntoIterator<Item = (AccountId, Account)>,
        images: impl IntoIterator<Item = Image>,
    ) -> Self {
        let mut state = Self {
            accounts: accounts.into_iter().collect(),
            ..Self::default()
        };
        for image in images {
            if !image.deleted {
                state.count_owned(&image, true);
                for account in image.shares.keys() {
                    state.shared.insert(share_key(account, &image));
                }
            }
            state.images.insert(image.image_id.clone(), image);
        }
        state
    }

    /// Applies one event. Holds no rules and cannot fail; an event for an
    /// unknown image is ignored (the log never contains one).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::AccountRegistered { account_id, kind } => {
                let version = self.accounts.get(account_id).map_or(0, |a| a.version) + 1;
                self.accounts.insert(
                    account_id.clone(),
                    Account {
                        kind: *kind,
                        version,
                    },
                );
            }
            Event::ImageRegistered { .. } | Event::ImageCopied { .. } => {
                if let Some(image) = Image::from_creation(event) {
                    self.count_owned(&image, true);
                    self.images.insert(image.image_id.clone(), image);
                }
            }
            _ => {
                let Ok(image_id) = ImageId::parse(event.aggregate_id()) else {
                    return;
                };
                let Some(image) = self.images.get_mut(&image_id) else {
                    return;
                };
                let before = image.clone();
                image.apply(event);
                let after = image.clone();
                for account in before.shares.keys() {
                    if after.deleted || !after.shares.contains_key(account) {
                        self.shared.remove(&share_key(account, &after));
                    }
                }
                if !after.deleted {
                    for account in after.shares.keys() {
                        if !before.shares.contains_key(account) {
                            self.shared.insert(share_key(account, &after));
                        }
                    }
                }
                if after.deleted && !before.deleted {
                    self.count_owned(&after, false);
                }
            }
        }
    }

    /// Adds a live image to, or removes it from, its owner's index and quota count.
    fn count_owned(&mut self, image: &Image, add: bool) {
        let owner = image.owner_account_id.clone();
        let region = image.region.clone();
        let key = (owner.clone(), region.clone(), image.image_id.clone());
        let count_key = (owner, region);
        let count = self.quota_used.get(&count_key).copied().unwrap_or(0);
        if add {
            self.owned.insert(key);
            self.quota_used.insert(count_key, count + 1);
        } else {
            self.owned.remove(&key);
            if count > 1 {
                self.quota_used.insert(count_key, count - 1);
            } else {
                self.quota_used.remove(&count_key);
            }
        }
    }

    /// The version of the stream `event` belongs to, before the event.
    pub fn stream_version(&self, event: &Event) -> u64 {
        match event {
            Event::AccountRegistered { account_id, .. } => {
                self.account(account_id).map_or(0, |a| a.version)
            }
            _ => ImageId::parse(event.aggregate_id())
                .ok()
                .and_then(|id| self.any_image(&id).map(|image| image.version))
                .unwrap_or(0),
        }
    }

    /// A registered account.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// An image that exists and is not deleted.
    pub fn live_image(&self, id: &ImageId) -> Option<&Image> {
        self.images.get(id).filter(|image| !image.deleted)
    }

    /// An image, deleted or not.
    pub fn any_image(&self, id: &ImageId) -> Option<&Image> {
        self.images.get(id)
    }

    /// How many custom images `owner` has in `region`.
    pub fn images_used(&self, owner: &AccountId, region: &Region) -> u32 {
        self.quota_used
            .get(&(owner.clone(), region.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// The live images `owner` has in `region`, in id order.
    pub fn owned_in_region<'a>(
        &'a self,
        owner: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Image> + 'a {
        range_in(&self.owned, owner, region).filter_map(|id| self.live_image(id))
    }

    /// The live images shared with `account` in `region`, in id order.
    pub fn shared_in_region<'a>(
        &'a self,
        account: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Image> + 'a {
        range_in(&self.shared, account, region).filter_map(|id| self.live_image(id))
    }

    /// The live image of `owner` in `region` called `name`, if any.
    pub fn image_named(&self, owner: &AccountId, region: &Region, name: &str) -> Option<&Image> {
        self.owned_in_region(owner, region)
            .find(|image| image.attributes.image_name == name)
    }

    /// Every registered account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    /// Every image, deleted ones included, in no particular order.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.images.values()
    }

    /// Every (owner, region) pair with its image count, in no particular order.
    pub fn quota_usage(&self) -> impl Iterator<Item = (&(AccountId, Region), &u32)> {
        self.quota_used.iter()
    }
}

fn share_key(account: &AccountId, image: &Image) -> AccountRegionImage {
    (
        account.clone(),
        image.region.clone(),
        image.image_id.clone(),
    )
}

fn range_in<'a>(
    set: &'a OrdSet<AccountRegionImage>,
    account: &AccountId,
    region: &Region,
) -> impl Iterator<Item = &'a ImageId> + 'a {
    // Image ids sort after the empty string, so this is the first key of the prefix.
    let start = (account.clone(), region.clone(), ImageId::min());
    let account = account.clone();
    let region = region.clone();
    set.range(start..)
        .take_while(move |(a, r, _)| *a == account && *r == region)
        .map(|(_, _, id)| id)
}
