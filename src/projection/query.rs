//! The list queries, answered from a published snapshot of the state.

use time::OffsetDateTime;

use crate::domain::{
    registered, AccountId, DomainError, Image, ImageId, LedgerState, Listed, Policy, Region,
};

/// Default page size of `DescribeImages`.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size of `DescribeImages`.
pub const MAX_LIMIT: u32 = 100;

/// Which images `DescribeImages` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageTypeFilter {
    /// The caller's own and those shared with it.
    #[default]
    Both,
    /// Only the caller's own.
    Private,
    /// Only those shared with the caller.
    Shared,
}

impl ImageTypeFilter {
    /// Whether the caller's own images are listed.
    pub fn lists_owned(self) -> bool {
        self != Self::Shared
    }

    /// Whether the images shared with the caller are listed.
    pub fn lists_shared(self) -> bool {
        self != Self::Private
    }
}

/// The filters of `DescribeImages`.
#[derive(Debug, Clone, Default)]
pub struct ImageQuery {
    /// The calling account.
    pub account_id: Option<AccountId>,
    /// The region listed.
    pub region: Option<Region>,
    /// Own, shared or both.
    pub image_type: ImageTypeFilter,
    /// Only these ids, when not empty.
    pub image_ids: Vec<ImageId>,
    /// Only names containing this, when not empty.
    pub image_name: String,
    /// Further conditions, all of which an image must meet (the cloud
    /// API's filters).
    pub conditions: Vec<Condition>,
    /// Entries to skip.
    pub offset: u32,
    /// Page size; 0 means [`DEFAULT_LIMIT`].
    pub limit: u32,
}

/// A condition on a listed image beyond the id and name filters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Its name contains one of these.
    NameContainsAny(Vec<String>),
    /// Its platform contains one of these.
    PlatformContainsAny(Vec<String>),
    /// Nothing matches (a filter on what the ledger does not keep, such
    /// as tags, or public images).
    Nothing,
}

impl Condition {
    fn holds(&self, image: &Image) -> bool {
        let any =
            |field: &str, wanted: &[String]| wanted.iter().any(|w| field.contains(w.as_str()));
        match self {
            Condition::NameContainsAny(names) => any(&image.attributes.image_name, names),
            Condition::PlatformContainsAny(platforms) => any(&image.attributes.platform, platforms),
            Condition::Nothing => false,
        }
    }
}

impl ImageQuery {
    /// Whether it filters beyond type and region (such pages are not cached).
    pub fn is_filtered(&self) -> bool {
        !self.image_ids.is_empty() || !self.image_name.is_empty() || !self.conditions.is_empty()
    }
}

/// One listed image (borrowed from the state snapshot) and whether the caller owns it.
#[derive(Debug, Clone, Copy)]
pub struct ListedImage<'a> {
    /// The image.
    pub image: &'a Image,
    /// `true` when it is shared with the caller rather than owned.
    pub shared: bool,
}

/// A page of `DescribeImages`.
#[derive(Debug, Clone)]
pub struct ImagePage<'a> {
    /// The images of the page, newest first.
    pub images: Vec<ListedImage<'a>>,
    /// How many images match in all.
    pub total_count: u32,
}

/// Lists the images an account owns or that are shared with it in one region,
/// newest first (ties broken by id), as at `now`: a share that has ended by
/// then is left out even before the ledger records its end.
pub fn describe_images<'a>(
    state: &'a LedgerState,
    policy: &Policy,
    query: &ImageQuery,
    now: OffsetDateTime,
) -> Result<ImagePage<'a>, DomainError> {
    let (Some(account), Some(region)) = (&query.account_id, &query.region) else {
        return Err(DomainError::InvalidParameter(
            "account_id and region are required".into(),
        ));
    };
    let policy = state.policy_or(policy);
    policy.check_region(region)?;
    let limit = match query.limit {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => {
            return Err(DomainError::InvalidParameter(format!(
                "limit is {n}; it must be at most {MAX_LIMIT}"
            )))
        }
        n => n,
    };
    registered(state, account)?;
    let with_owned = query.image_type.lists_owned();
    let with_shared = query.image_type.lists_shared();
    // Both indexes are kept in listing order, so the listing is their merge
    // and a page is read off its front: nothing is sorted per call.
    let owned = with_owned
        .then(|| state.owned_listing(account, region))
        .into_iter()
        .flatten()
        .map(|listed| (listed, false));
    let shared = with_shared
        .then(|| state.shared_listing(account, region))
        .into_iter()
        .flatten()
        .map(|listed| (listed, true));
    let listing = merge_in_order(owned, shared);
    // Looks an entry's image up without reading it, so that one lookup
    // never waits on the previous image's memory; deleted images are
    // dropped after.
    let lookup = |(listed, shared): (&Listed, bool)| {
        state
            .any_image(listed.image_id())
            .map(|image| ListedImage { image, shared })
    };
    // Normally no share has ended unrecorded (the sweep records them within
    // a second or so); while one has, the listing is read the slow way.
    let ended = with_shared && state.has_ended_share(account, region, now);
    let (images, total_count) = if query.is_filtered() || ended {
        let holds = |listed: &ListedImage<'_>| {
            !listed.shared
                || listed
                    .image
                    .shares
                    .get(account)
                    .is_some_and(|share| share.live_at(now))
        };
        let wanted = |listed: &ListedImage<'_>| {
            holds(listed)
                && (query.image_ids.is_empty() || query.image_ids.contains(&listed.image.image_id))
                && listed
                    .image
                    .attributes
                    .image_name
                    .contains(&query.image_name)
                && query.conditions.iter().all(|c| c.holds(listed.image))
        };
        let mut total = 0u32;
        let mut matches = listing
            .filter_map(lookup)
            .filter(|listed| !listed.image.deleted && wanted(listed))
            .inspect(|_| total = total.saturating_add(1));
        let images = matches
            .by_ref()
            .skip(query.offset as usize)
            .take(limit as usize)
            .collect();
        // Count the rest of the matches too.
        matches.for_each(drop);
        (images, total)
    } else {
        let total = (u32::from(with_owned) * state.images_used(account, region))
            .saturating_add(u32::from(with_shared) * state.shared_count(account, region));
        // Cut the page from the entries first, then fetch its images in one
        // pass: skipped entries cost no lookup, and the page's lookups run
        // back to back, so their cache misses overlap.
        let entries: Vec<(&Listed, bool)> = listing
            .skip(query.offset as usize)
            .take(limit as usize)
            .collect();
        let mut images: Vec<ListedImage<'a>> = entries.into_iter().filter_map(lookup).collect();
        images.retain(|listed| !listed.image.deleted);
        (images, total)
    };
    Ok(ImagePage {
        images,
        total_count,
    })
}

/// Merges two listings that are each in listing order into one.
fn merge_in_order<'a>(
    a: impl Iterator<Item = (&'a Listed, bool)>,
    b: impl Iterator<Item = (&'a Listed, bool)>,
) -> impl Iterator<Item = (&'a Listed, bool)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((x, _)), Some((y, _))) => {
            if x <= y {
                a.next()
            } else {
                b.next()
            }
        }
        (Some(_), None) => a.next(),
        _ => b.next(),
    })
}
