//! The listings: each account's images in each region, and the images
//! shared with it, in the order `DescribeImages` lists them (newest first,
//! ties by id), each with the stamp of what it shows.
//!
//! Most listings are short (an account's images in one region, the few
//! shared with it), and a region holds hundreds of thousands of them, so a
//! listing of one holds its entry in place, a short listing is one exactly
//! sized sorted slice, copied whole when it changes, and only a long one is
//! a persistent B-tree. The index of listings is a persistent B-tree map
//! too, under keys of two numbers (see `numbers.rs`): its nodes are dense,
//! where a hash trie's were mostly empty slots at this many keys (about
//! 700 bytes per listing, measured with heaptrack at 110,000 aggregates).

use std::cmp::Reverse;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use time::OffsetDateTime;

use super::numbers::{ACCOUNTS, REGIONS};
use crate::domain::{AccountId, Image, ImageId, Region};

/// Listings by (account, region), numbered (see [`super::numbers`]).
pub(super) type Index = OrdMap<Key, Listing>;

/// The key of one account's listing in one region: their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Key {
    account: u32,
    region: u32,
}

impl Key {
    /// The key of (`account`, `region`), numbering either if it has no
    /// number yet: for changes.
    pub(super) fn numbered(account: &AccountId, region: &Region) -> Self {
        Self {
            account: ACCOUNTS.number(account),
            region: REGIONS.number(region),
        }
    }

    /// The key of (`account`, `region`) if both have numbers: no listing
    /// is kept under anything else. For lookups, which number nothing.
    pub(super) fn find(account: &AccountId, region: &Region) -> Option<Self> {
        Some(Self {
            account: ACCOUNTS.find(account)?,
            region: REGIONS.find(region)?,
        })
    }

    /// The account and region the key stands for.
    pub(super) fn ids(&self) -> Option<(AccountId, Region)> {
        Some((ACCOUNTS.value(self.account)?, REGIONS.value(self.region)?))
    }
}

/// The listing of (`account`, `region`) in `index`, if there is one.
pub(super) fn get<'a>(
    index: &'a Index,
    account: &AccountId,
    region: &Region,
) -> Option<&'a Listing> {
    index.get(&Key::find(account, region)?)
}

/// Listings longer than this are B-trees; shorter ones slices.
const SHORT: usize = 32;

/// Names what one listing shows at one moment: its entries and every field
/// of their images that a page carries.
///
/// A listing gets a new stamp whenever that changes. Stamps come from one
/// counter for the whole process and it never repeats one, so no two
/// contents ever share a stamp, whichever copy of the state (published
/// snapshot, the writer's private copy, a state reloaded from the store)
/// they belong to. Two listings with the same stamp show the same images:
/// a cached page of one is a page of the other. (A stamp was an `Arc<()>`
/// compared by address: an allocation per listing, about 2 million of
/// them at a million images.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(u64);

/// The last stamp handed out.
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

impl Stamp {
    fn fresh() -> Self {
        // Relaxed: only uniqueness matters, and fetch_add gives it.
        Self(LAST_STAMP.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// An image's entry in a listing. Entries order as listings run: newest
/// first, ties by id. An image's creation time never changes, so its entry
/// never moves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    newest_first: Reverse<OffsetDateTime>,
    image_id: ImageId,
}

impl Listed {
    /// The entry of `image`.
    pub(super) fn of(image: &Image) -> Self {
        Self {
            newest_first: Reverse(image.created_time),
            image_id: image.image_id.clone(),
        }
    }

    /// The listed image.
    pub fn image_id(&self) -> &ImageId {
        &self.image_id
    }
}

/// A listing's entries, in order.
#[derive(Debug, Clone)]
enum Entries {
    /// Exactly one: most listings at a million images, where a slice of
    /// one took an allocation of 56 bytes besides its pointer.
    One(Listed),
    /// None (only while a listing is emptied, before the index drops
    /// it), or two to
    /// [`SHORT`], sorted; shared between copies of the state until
    /// one changes it.
    Short(Arc<[Listed]>),
    /// More.
    Long(OrdSet<Listed>),
}

/// One account's images in one region, and the stamp of what they show.
#[derive(Debug, Clone)]
pub(super) struct Listing {
    entries: Entries,
    stamp: Stamp,
}

/// Listings are equal when their entries are: the stamp names a content
/// within this process and is not part of the state's value.
impl PartialEq for Listing {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Listing {}

impl Listing {
    /// How many images it lists.
    pub(super) fn len(&self) -> u32 {
        let len = match &self.entries {
            Entries::One(_) => 1,
            Entries::Short(entries) => entries.len(),
            Entries::Long(entries) => entries.len(),
        };
        u32::try_from(len).unwrap_or(u32::MAX)
    }

    /// Its entries, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Listed> {
        let (short, long) = match &self.entries {
            Entries::One(entry) => (Some(std::slice::from_ref(entry).iter()), None),
            Entries::Short(entries) => (Some(entries.iter()), None),
            Entries::Long(entries) => (None, Some(entries.iter())),
        };
        short
            .into_iter()
            .flatten()
            .chain(long.into_iter().flatten())
    }

    /// The stamp of what it shows.
    pub(super) fn stamp(&self) -> &Stamp {
        &self.stamp
    }

    fn insert(&mut self, entry: &Listed) {
        match &mut self.entries {
            Entries::One(only) => {
                if only != entry {
                    let mut both = [only.clone(), entry.clone()];
                    both.sort();
                    self.entries = Entries::Short(Arc::from(both));
                }
            }
            Entries::Short(entries) => {
                let Err(at) = entries.binary_search(entry) else {
                    return;
                };
                if entries.len() < SHORT {
                    let (before, after) = entries.split_at(at);
                    *entries = before
                        .iter()
                        .chain(std::iter::once(entry))
                        .chain(after)
                        .cloned()
                        .collect();
                } else {
                    let mut long: OrdSet<Listed> = entries.iter().cloned().collect();
                    long.insert(entry.clone());
                    self.entries = Entries::Long(long);
                }
            }
            Entries::Long(entries) => {
                entries.insert(entry.clone());
            }
        }
    }

    fn remove(&mut self, entry: &Listed) {
        match &mut self.entries {
            Entries::One(only) => {
                if only == entry {
                    self.entries = Entries::Short(Arc::from([]));
                }
            }
            Entries::Short(entries) => {
                if let Ok(at) = entries.binary_search(entry) {
                    let (before, after) = entries.split_at(at);
                    self.entries = match (before, &after[1..]) {
                        ([one], []) | ([], [one]) => Entries::One(one.clone()),
                        (before, after) => {
                            Entries::Short(before.iter().chain(after).cloned().collect())
                        }
                    };
                }
            }
            Entries::Long(entries) => {
                entries.remove(entry);
                // Back to a slice only well below the bound, so a listing
                // at the bound does not switch at every change.
                if entries.len() <= SHORT / 2 {
                    self.entries = Entries::Short(entries.iter().cloned().collect());
                }
            }
        }
    }
}

/// The index of every listing `entries` names, built at once (faster than
/// adding them one by one: each listing is built once, in order).
pub(super) fn build(mut entries: Vec<(Key, Listed)>) -> Index {
    entries.sort_unstable();
    entries.dedup();
    let mut index = Index::new();
    let mut entries = entries.into_iter().peekable();
    while let Some((key, first)) = entries.next() {
        let mut listed = vec![first];
        while let Some((_, entry)) = entries.next_if(|(next, _)| *next == key) {
            listed.push(entry);
        }
        let entries = if listed.len() == 1 {
            Entries::One(listed.swap_remove(0))
        } else if listed.len() <= SHORT {
            Entries::Short(listed.into())
        } else {
            Entries::Long(listed.into_iter().collect())
        };
        index.insert(
            key,
            Listing {
                entries,
                stamp: Stamp::fresh(),
            },
        );
    }
    index
}

/// Adds `image` to the listing of (`account`, `region`).
pub(super) fn insert(index: &mut Index, account: &AccountId, region: &Region, image: &Listed) {
    let key = Key::numbered(account, region);
    let stamp = Stamp::fresh();
    // Not `entry`: imbl's looks the key up, then again to change it, and
    // most inserts change a listing there is (one walk down the tree
    // instead of two; `audit verify` spent a tenth of its rules thread in
    // them at 10M events).
    match index.get_mut(&key) {
        Some(listing) => {
            listing.insert(image);
            listing.stamp = stamp;
        }
        None => {
            index.insert(
                key,
                Listing {
                    entries: Entries::One(image.clone()),
                    stamp,
                },
            );
        }
    }
}

/// Takes `image` out of the listing of (`account`, `region`).
pub(super) fn remove(index: &mut Index, account: &AccountId, region: &Region, image: &Listed) {
    let Some(key) = Key::find(account, region) else {
        return;
    };
    let now_empty = match index.get_mut(&key) {
        Some(listing) => {
            listing.remove(image);
            listing.stamp = Stamp::fresh();
            listing.len() == 0
        }
        None => false,
    };
    // Empty listings are dropped so that equal histories give equal states.
    if now_empty {
        index.remove(&key);
    }
}

/// Marks a listing's content as changed (one of its images changed).
pub(super) fn restamp(index: &mut Index, account: &AccountId, region: &Region) {
    if let Some(listing) = Key::find(account, region).and_then(|key| index.get_mut(&key)) {
        listing.stamp = Stamp::fresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(second: i64, id: &str) -> Listed {
        Listed {
            newest_first: Reverse(
                OffsetDateTime::from_unix_timestamp(second).expect("valid in the test"),
            ),
            image_id: ImageId::parse(id).expect("valid in the test"),
        }
    }

    fn ids(index: &Index, key: &Key) -> Vec<String> {
        index.get(key).map_or_else(Vec::new, |listing| {
            listing.iter().map(|e| e.image_id.to_string()).collect()
        })
    }

    /// A listing keeps its order and content across the switches from one
    /// entry to a slice to a B-tree and back, and a change always gives a
    /// new stamp.
    #[test]
    fn keeps_order_across_its_two_forms() {
        let account = AccountId::parse("100").expect("valid in the test");
        let region = Region::new("ap-guangzhou");
        let key = Key::numbered(&account, &region);
        let mut index = Index::new();
        let entries: Vec<Listed> = (0..SHORT as i64 * 2)
            .map(|i| entry(1_000 + (i * 7919) % 97, &format!("img-{:08}", i)))
            .collect();
        let mut stamps = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            insert(&mut index, &account, &region, e);
            stamps.push(index[&key].stamp().clone());
            match i {
                0 => assert!(matches!(index[&key].entries, Entries::One(_))),
                1 => assert!(matches!(index[&key].entries, Entries::Short(_))),
                _ => {}
            }
        }
        let mut sorted = entries.clone();
        sorted.sort();
        let want: Vec<String> = sorted.iter().map(|e| e.image_id.to_string()).collect();
        assert_eq!(ids(&index, &key), want);
        assert!(matches!(index[&key].entries, Entries::Long(_)));
        for e in &entries[..SHORT * 3 / 2 + 1] {
            remove(&mut index, &account, &region, e);
            stamps.push(index[&key].stamp().clone());
        }
        assert!(matches!(index[&key].entries, Entries::Short(_)));
        let mut left: Vec<Listed> = entries[SHORT * 3 / 2 + 1..].to_vec();
        left.sort();
        let want: Vec<String> = left.iter().map(|e| e.image_id.to_string()).collect();
        assert_eq!(ids(&index, &key), want);
        for (i, a) in stamps.iter().enumerate() {
            assert!(stamps[i + 1..].iter().all(|b| a != b), "stamp {i} reused");
        }
        for (i, e) in left.iter().enumerate() {
            remove(&mut index, &account, &region, e);
            if i + 2 == left.len() {
                assert!(matches!(index[&key].entries, Entries::One(_)));
                assert_eq!(ids(&index, &key), [left[i + 1].image_id.to_string()]);
            }
        }
        assert!(index.get(&key).is_none());
    }
}
