//! The state of every aggregate plus the cross-aggregate indexes the rules
//! and queries need, built only by applying events.
//!
//! It uses persistent maps, so a clone is O(1): the command path decides
//! against a private copy and publishes it to readers once the batch is
//! durable, and can throw the copy away if the write fails.
//!
//! Images and accounts are in hash tries, the listings in a B-tree map
//! (see `listing`). `tests/state_memory.rs` measures the heap per
//! aggregate: 467 bytes (1,161 with listings as B-tree sets). B-tree maps
//! for the images and accounts too held 586, but at 10M events and a
//! million images they cost the calls more than the 64 bytes are worth:
//! server CPU per `AuthorizeImageUse` 18.7 µs against 16.0, per
//! `DescribeImages` 31.2 against 25.8 (`image-ledger-bench --data-dir
//! d10m --scenarios authorize,describe --rounds 3`, one run each).

use std::sync::Arc;

use imbl::shared_ptr::DefaultSharedPtr;
use imbl::GenericHashMap;

/// A persistent hash map with a fast, per-process randomly seeded hasher.
type Map<K, V> = GenericHashMap<K, V, foldhash::fast::RandomState, DefaultSharedPtr>;
use serde::{Deserialize, Serialize};

use super::{AccountId, AccountKind, Event, Image, ImageId, Policy, Region, TrustedOwners};

mod expiring;
mod listing;
mod numbers;

use listing::{Index, Key, Listing};
pub use listing::{Listed, Stamp};

/// The stamps of an account's two listings in one region (see [`Stamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingStamps {
    /// Its own images.
    pub owned: Option<Stamp>,
    /// The images shared with it.
    pub shared: Option<Stamp>,
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Root or collaborator.
    pub kind: AccountKind,
    /// Number of events in its stream.
    pub version: u64,
    /// The owners whose shared images it accepts, once it set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_owners: Option<Arc<TrustedOwners>>,
}

/// Images of a state being restored, each in the image map as it comes
/// and kept in a list the listings are built from.
#[derive(Debug, Default)]
pub struct GatheredImages {
    list: Vec<Arc<Image>>,
    map: Map<ImageId, Arc<Image>>,
}

impl GatheredImages {
    /// Adds one image.
    pub fn push(&mut self, image: Arc<Image>) {
        self.map.insert(image.image_id.clone(), Arc::clone(&image));
        self.list.push(image);
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Every aggregate's state and the indexes derived from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    accounts: Map<AccountId, Account>,
    // Images sit behind an Arc so that copying a map node shared with a
    // published snapshot copies pointers, not images.
    images: Map<ImageId, Arc<Image>>,
    /// Live images per owner and region; the set's size is the quota usage.
    owned: Index,
    /// Live shares per recipient and region.
    shared: Index,
    /// Shares that end by themselves, by their end: what the sweep
    /// records, and what a query checks for shares that ended before the
    /// sweep recorded them.
    expiring: expiring::Expiring,
    /// The limits the log last recorded, and how many times it did.
    limits: Option<Arc<Policy>>,
    limits_version: u64,
}

impl LedgerState {
    /// Rebuilds the state from saved aggregates (as written by the
    /// projections), deriving the indexes. Images may come shared already.
    pub fn restore(
        accounts: impl IntoIterator<Item = (AccountId, Account)>,
        images: impl IntoIterator<Item = impl Into<Arc<Image>>>,
    ) -> Self {
        let mut gathered = GatheredImages::default();
        for image in images {
            gathered.push(image.into());
        }
        Self::restore_gathered(accounts, gathered)
    }

    /// [`restore`](Self::restore) from images gathered already (a start
    /// gathers each as it decodes it, on the decoding thread, which the
    /// reading leaves mostly idle): the owners' listings and the
    /// recipients' (with the shares' ends) are built on two threads.
    pub fn restore_gathered(
        accounts: impl IntoIterator<Item = (AccountId, Account)>,
        images: GatheredImages,
    ) -> Self {
        let GatheredImages { list, map } = images;
        let (owned, (shared, expiring)) = std::thread::scope(|scope| {
            let owned = scope.spawn(|| Self::owned_of(&list));
            let shared = Self::shared_of(&list);
            // A panic on the other thread is one of this one.
            let owned = owned
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (owned, shared)
        });
        Self {
            accounts: accounts.into_iter().collect(),
            images: map,
            owned,
            shared,
            expiring,
            ..Self::default()
        }
    }

    /// The owners' listings of the live images in `images`.
    fn owned_of(images: &[Arc<Image>]) -> Index {
        let owned = images
            .iter()
            .filter(|image| !image.deleted)
            .map(|image| {
                let key = Key::numbered(&image.owner_account_id, &image.region);
                (key, Listed::of(image))
            })
            .collect();
        listing::build(owned)
    }

    /// The recipients' listings of the live images in `images`, and the
    /// ends of their shares.
    fn shared_of(images: &[Arc<Image>]) -> (Index, expiring::Expiring) {
        // Sized first: grown by doubling, it held up to twice its 48 bytes
        // per share while it grew.
        let mut shared = Vec::with_capacity(
            images
                .iter()
                .filter(|image| !image.deleted)
                .map(|image| image.shares.len())
                .sum(),
        );
        let mut ends = expiring::Expiring::new();
        for image in images.iter().filter(|image| !image.deleted) {
            let listed = Listed::of(image);
            for (account, share) in &image.shares {
                shared.push((Key::numbered(account, &image.region), listed.clone()));
                if let Some(end) = share.expires_at {
                    ends.insert((end, image.image_id.clone(), account.clone()));
                }
            }
        }
        (listing::build(shared), ends)
    }

    /// Applies one event. Holds no rules and cannot fail; an event for an
    /// unknown image is ignored (the log never contains one).
    pub fn apply(&mut self, event: &Event) {
        self.apply_at(event, None);
    }

    /// Applies a record of the log: its event, with the version of its
    /// stream set to the record's. Replaying from a read side saved ahead
    /// of its checkpoint (a save a crash cut short) then still ends with
    /// every version as the log has it.
    pub fn apply_recorded(&mut self, event: &Event, version: u64) {
        self.apply_at(event, Some(version));
    }

    /// [`apply`](Self::apply), the stream's new version `recorded` when
    /// given, else one more than before.
    fn apply_at(&mut self, event: &Event, recorded: Option<u64>) {
        match event {
            Event::AccountRegistered { account_id, kind } => {
                let version = recorded
                    .unwrap_or_else(|| self.accounts.get(account_id).map_or(0, |a| a.version) + 1);
                self.accounts.insert(
                    account_id.clone(),
                    Account {
                        kind: *kind,
                        version,
                        trusted_owners: None,
                    },
                );
            }
            Event::TrustedImageOwnersSet {
                account_id,
                mode,
                owner_account_ids,
            } => {
                if let Some(account) = self.accounts.get_mut(account_id) {
                    account.trusted_owners = Some(Arc::new(TrustedOwners {
                        mode: *mode,
                        owner_account_ids: owner_account_ids.clone(),
                    }));
                    account.version = recorded.unwrap_or(account.version + 1);
                }
            }
            Event::LedgerLimitsSet { limits } => {
                self.limits = Some(Arc::new(limits.policy()));
                self.limits_version = recorded.unwrap_or(self.limits_version + 1);
            }
            Event::ImageRegistered { .. } | Event::ImageCopied { .. } => {
                if let Some(mut image) = Image::from_creation(event) {
                    image.version = recorded.unwrap_or(image.version);
                    listing::insert(
                        &mut self.owned,
                        &image.owner_account_id,
                        &image.region,
                        &Listed::of(&image),
                    );
                    self.images.insert(image.image_id.clone(), Arc::new(image));
                }
            }
            _ => self.apply_to_image(event, recorded),
        }
    }

    /// [`apply_at`](Self::apply_at) of an event that changes an existing image.
    fn apply_to_image(&mut self, event: &Event, recorded: Option<u64>) {
        let Some(image_id) = event.image_id() else {
            return;
        };
        let Some(image) = self.images.get_mut(image_id) else {
            return;
        };
        let image = Arc::make_mut(image);
        // The ends of the shares this event removes or replaces, read
        // before it does.
        let ended = expiring::ends_touched(image, event);
        // Disabling and deleting drop every share: the listings they were
        // in are those of the shares before.
        let cancelled: Vec<AccountId> = match event {
            Event::ImageDisabled { .. } | Event::ImageDeleted { .. } => {
                image.shares.keys().cloned().collect()
            }
            _ => Vec::new(),
        };
        image.apply(event);
        if let Some(version) = recorded {
            image.version = version;
        }
        expiring::reindex(&mut self.expiring, image, event, ended);
        let region = &image.region;
        let listed = Listed::of(image);
        match event {
            Event::ImageShared { account_ids, .. } => {
                for account in account_ids {
                    listing::insert(&mut self.shared, account, region, &listed);
                }
            }
            Event::ShareCancelled { account_ids, .. } | Event::ShareExpired { account_ids, .. } => {
                for account in account_ids {
                    listing::remove(&mut self.shared, account, region, &listed);
                }
            }
            // What a listing shows of a share is its image, not its end.
            Event::ShareExpiryModified { .. } => {}
            Event::ShareLeft { account_id, .. } => {
                listing::remove(&mut self.shared, account_id, region, &listed);
            }
            Event::ImageDisabled { .. } | Event::ImageDeleted { .. } => {
                for account in &cancelled {
                    listing::remove(&mut self.shared, account, region, &listed);
                }
                if matches!(event, Event::ImageDeleted { .. }) {
                    listing::remove(&mut self.owned, &image.owner_account_id, region, &listed);
                } else {
                    listing::restamp(&mut self.owned, &image.owner_account_id, region);
                }
            }
            // Neither the shares nor Lighthouse's access show in a listing.
            Event::LighthouseShared { .. } | Event::LighthouseShareCancelled { .. } => {}
            // Anything else may change what every listing of the image
            // shows (its state, its name).
            _ => {
                listing::restamp(&mut self.owned, &image.owner_account_id, region);
                for account in image.shares.keys() {
                    listing::restamp(&mut self.shared, account, region);
                }
            }
        }
    }

    /// How many times the log recorded limits.
    pub fn limits_version(&self) -> u64 {
        self.limits_version
    }

    /// The version of the stream `event` belongs to, before the event.
    pub fn stream_version(&self, event: &Event) -> u64 {
        match event {
            Event::LedgerLimitsSet { .. } => self.limits_version,
            Event::AccountRegistered { account_id, .. }
            | Event::TrustedImageOwnersSet { account_id, .. } => {
                self.account(account_id).map_or(0, |a| a.version)
            }
            _ => event
                .image_id()
                .and_then(|id| self.any_image(id))
                .map_or(0, |image| image.version),
        }
    }

    /// The limits the log last recorded, if it recorded any.
    pub fn limits(&self) -> Option<&Arc<Policy>> {
        self.limits.as_ref()
    }

    /// The limits the rules are decided under: the log's, else `fallback`
    /// (for a log that records none, as logs written before they were
    /// recorded).
    pub fn policy_or<'a>(&'a self, fallback: &'a Policy) -> &'a Policy {
        self.limits.as_deref().unwrap_or(fallback)
    }

    /// The same state with the limits a read side saved, recorded
    /// `version` times.
    pub fn with_limits(mut self, limits: Option<Policy>, version: u64) -> Self {
        self.limits = limits.map(Arc::new);
        self.limits_version = version;
        self
    }

    /// A registered account.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// An image that exists and is not deleted.
    pub fn live_image(&self, id: &ImageId) -> Option<&Image> {
        self.any_image(id).filter(|image| !image.deleted)
    }

    /// An image, deleted or not.
    pub fn any_image(&self, id: &ImageId) -> Option<&Image> {
        self.images.get(id).map(Arc::as_ref)
    }

    /// How many custom images `owner` has in `region`.
    pub fn images_used(&self, owner: &AccountId, region: &Region) -> u32 {
        listing::get(&self.owned, owner, region).map_or(0, Listing::len)
    }

    /// How many images are shared with `account` in `region`.
    pub fn shared_count(&self, account: &AccountId, region: &Region) -> u32 {
        listing::get(&self.shared, account, region).map_or(0, Listing::len)
    }

    /// The stamps of the two listings `DescribeImages` reads for `account`
    /// in `region`: its own images and those shared with it (`None` for an
    /// empty listing). While both are unchanged, so is every page of them.
    pub fn listing_stamps(&self, account: &AccountId, region: &Region) -> ListingStamps {
        let stamp = |index| listing::get(index, account, region).map(|l| l.stamp().clone());
        ListingStamps {
            owned: stamp(&self.owned),
            shared: stamp(&self.shared),
        }
    }

    /// The live images `owner` has in `region`, newest first (ties by id).
    pub fn owned_in_region<'a>(
        &'a self,
        owner: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Image> + 'a {
        self.live_in(self.owned_listing(owner, region))
    }

    /// The live images shared with `account` in `region`, newest first (ties by id).
    pub fn shared_in_region<'a>(
        &'a self,
        account: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Image> + 'a {
        self.live_in(self.shared_listing(account, region))
    }

    /// The live images of a listing's entries, in its order.
    fn live_in<'a>(
        &'a self,
        entries: impl Iterator<Item = &'a Listed> + 'a,
    ) -> impl Iterator<Item = &'a Image> + 'a {
        entries.filter_map(|listed| self.live_image(listed.image_id()))
    }

    /// The entries of the live images `owner` has in `region`, in listing
    /// order. Reading entries looks up no image, so a page can be cut from
    /// a listing before its images are fetched.
    pub fn owned_listing<'a>(
        &'a self,
        owner: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Listed> + 'a {
        Self::listing(&self.owned, owner, region)
    }

    /// The entries of the live images shared with `account` in `region`, in listing order.
    pub fn shared_listing<'a>(
        &'a self,
        account: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Listed> + 'a {
        Self::listing(&self.shared, account, region)
    }

    fn listing<'a>(
        index: &'a Index,
        account: &AccountId,
        region: &Region,
    ) -> impl Iterator<Item = &'a Listed> + 'a {
        listing::get(index, account, region)
            .into_iter()
            .flat_map(Listing::iter)
    }

    /// The live image of `owner` in `region` called `name`, if any.
    pub fn image_named(&self, owner: &AccountId, region: &Region, name: &str) -> Option<&Image> {
        self.owned_in_region(owner, region)
            .find(|image| super::ids::same_name(&image.attributes.image_name, name))
    }

    /// Every registered account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    /// Every image, deleted ones included, in no particular order.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.images.values().map(Arc::as_ref)
    }

    /// Every (owner, region) pair with its image count, in their order.
    pub fn quota_usage(&self) -> Vec<((AccountId, Region), u32)> {
        let mut usage: Vec<_> = self
            .owned
            .iter()
            .filter_map(|(key, listing)| Some((key.ids()?, listing.len())))
            .collect();
        // In the ids' order, whatever order they were numbered in, so a
        // refusal that names the first account over a quota names the
        // same one on every replica.
        usage.sort_unstable();
        usage
    }
}
