//! The list queries, answered from a published snapshot of the state.

use crate::domain::{
    registered, AccountId, DomainError, Image, ImageId, LedgerState, Policy, Region,
};

/// Default page size of `DescribeImages`.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size of `DescribeImages`.
pub const MAX_LIMIT: u32 = 100;

/// Which images `DescribeImages` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageTypeFilter {
    /// The caller's own and those shared with it.
    #[default]
    Both,
    /// Only the caller's own.
    Private,
    /// Only those shared with the caller.
    Shared,
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
    /// Entries to skip.
    pub offset: u32,
    /// Page size; 0 means [`DEFAULT_LIMIT`].
    pub limit: u32,
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
/// newest first (ties broken by id).
pub fn describe_images<'a>(
    state: &'a LedgerState,
    policy: &Policy,
    query: &ImageQuery,
) -> Result<ImagePage<'a>, DomainError> {
    let (Some(account), Some(region)) = (&query.account_id, &query.region) else {
        return Err(DomainError::InvalidParameter(
            "account_id and region are required".into(),
        ));
    };
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
    let mut matches: Vec<(&Image, bool)> = Vec::new();
    let wanted = |image: &Image| {
        (query.image_ids.is_empty() || query.image_ids.contains(&image.image_id))
            && image.attributes.image_name.contains(&query.image_name)
    };
    if query.image_type != ImageTypeFilter::Shared {
        matches.extend(
            state
                .owned_in_region(account, region)
                .filter(|image| wanted(image))
                .map(|image| (image, false)),
        );
    }
    if query.image_type != ImageTypeFilter::Private {
        matches.extend(
            state
                .shared_in_region(account, region)
                .filter(|image| wanted(image))
                .map(|image| (image, true)),
        );
    }
    matches.sort_by(|(a, _), (b, _)| {
        b.created_time
            .cmp(&a.created_time)
            .then_with(|| a.image_id.cmp(&b.image_id))
    });
    let total_count = u32::try_from(matches.len()).unwrap_or(u32::MAX);
    let images = matches
        .into_iter()
        .skip(query.offset as usize)
        .take(limit as usize)
        .map(|(image, shared)| ListedImage { image, shared })
        .collect();
    Ok(ImagePage {
        images,
        total_count,
    })
}
