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
                let region = image.region.clone();
                state.owned.insert((
                    image.owner_account_id.clone(),
                    region.clone(),
                    image.image_id.clone(),
                ));
                *state
                    .quota_used
                    .entry((image.owner_account_id.clone(), region.clone()))
                    .or_insert(0) += 1;
                for account in image.shares.keys() {
                    state
                        .shared
                        .insert((account.clone(), region.clone(), image.image_id.clone()));
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
                    self.owned.insert((
                        image.owner_account_id.clone(),
                        image.region.clone(),
                        image.image_id.clone(),
                    ));
                    *self
                        .quota_used
                        .entry((image.owner_account_id.clone(), image.region.clone()))
                        .or_insert(0) += 1;
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
                let before = image.shares.keys().cloned().collect::<Vec<_>>();
                let was_deleted = image.deleted;
                image.apply(event);
                let image = image.clone();
                for account in before {
                    if !image.shares.contains_key(&account) || image.deleted {
                        self.shared
                            .remove(&(account, image.region.clone(), image_id.clone()));
                    }
                }
                if !image.deleted {
                    for account in image.shares.keys() {
                        self.shared.insert((
                            account.clone(),
                            image.region.clone(),
                            image_id.clone(),
                        ));
                    }
                }
                if image.deleted && !was_deleted {
                    let owner = image.owner_account_id.clone();
                    self.owned
                        .remove(&(owner.clone(), image.region.clone(), image_id.clone()));
                    let key = (owner, image.region.clone());
                    match self.quota_used.get(&key).copied() {
                        Some(used) if used > 1 => {
                            self.quota_used.insert(key, used - 1);
                        }
                        _ => {
                            self.quota_used.remove(&key);
                        }
                    }
                }
            }
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
