//! `DescribeImages`: the caller's own images and those shared with it in
//! the call's region, with Tencent's filters and paging, each image in
//! Tencent's `Image` shape.

use std::sync::Arc;

use serde::Serialize;

use super::{image_ids, Call};
use crate::app::Ledger;
use crate::cloud::envelope::{ApiError, Fields};
use crate::cloud::params::Filter;
use crate::domain::{Image, ImageId, ImageSource, LicenseType};
use crate::projection::{
    describe_images as list, Condition, EncodedPage, ImageQuery, ImageTypeFilter, PageCache,
};

/// Most filters in one call, and values in one filter.
const MAX_FILTERS: usize = 10;
const MAX_FILTER_VALUES: usize = 5;
/// Page size when `Limit` is left out, and the largest.
const DEFAULT_LIMIT: u64 = 20;
const MAX_LIMIT: u64 = 100;

/// A page of `DescribeImages` as the door sends it: the `ImageSet` as JSON
/// text, and the `TotalCount`. Kept in the door's page cache.
#[derive(Debug, Clone)]
pub struct JsonPage {
    set: Arc<str>,
    total: u32,
}

impl EncodedPage for JsonPage {
    fn encoded_bytes(&self) -> u64 {
        self.set.len() as u64
    }
}

/// `DescribeImages`.
pub fn describe_images(
    ledger: &Ledger,
    pages: &PageCache<JsonPage>,
    call: &Call<'_>,
) -> Result<Fields, ApiError> {
    let params = call.params(&["ImageIds", "Filters", "Offset", "Limit", "InstanceType"])?;
    let ids = params.opt_strings("ImageIds")?;
    let filters = params.opt_filters()?;
    // InstanceType narrows the list to images an instance type can run;
    // the ledger does not know which those are, so it narrows nothing.
    params.opt_string("InstanceType")?;
    let offset = params.integer("Offset", 0)?;
    let limit = params.integer("Limit", DEFAULT_LIMIT)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            "InvalidParameterValue.Range",
            format!("Limit is {limit}; it must be 1 to {MAX_LIMIT}"),
        ));
    }
    let mut query = ImageQuery {
        account_id: Some(call.key.account.clone()),
        region: Some(call.region.clone()),
        offset: u32::try_from(offset).unwrap_or(u32::MAX),
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        ..ImageQuery::default()
    };
    match (ids, filters) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                "InvalidParameter.InvalidParameterCoexistImageIdsFilters",
                "ImageIds and Filters cannot be given together",
            ))
        }
        (Some(ids), None) => query.image_ids = image_ids("ImageIds", &ids)?,
        (None, Some(filters)) => apply_filters(&mut query, &filters)?,
        (None, None) => {}
    }
    let state = ledger.state();
    let now = time::OffsetDateTime::now_utc();
    let page = pages.reply(&state, &query, now, || {
        let page = list(&state, ledger.configured_policy(), &query, now)?;
        let images: Vec<ImageView<'_>> = page
            .images
            .iter()
            .map(|listed| ImageView::of(listed.image, listed.shared))
            .collect();
        let set = serde_json::to_string(&images).map_err(|err| {
            crate::domain::DomainError::InvalidParameter(format!(
                "the page cannot be written: {err}"
            ))
        })?;
        Ok(JsonPage {
            set: set.into(),
            total: page.total_count,
        })
    })?;
    Ok(Fields::new()
        .with_json("ImageSet", page.set)
        .with("TotalCount", &page.total))
}

/// Turns Tencent's filters into the query's: filters are ANDed, the
/// values of one filter ORed.
fn apply_filters(query: &mut ImageQuery, filters: &[Filter]) -> Result<(), ApiError> {
    if filters.len() > MAX_FILTERS {
        return Err(ApiError::new(
            "InvalidParameterValue.LimitExceeded",
            format!(
                "{} filters were given; at most {MAX_FILTERS}",
                filters.len()
            ),
        ));
    }
    let mut types: Option<(bool, bool)> = None;
    for filter in filters {
        if filter.values.len() > MAX_FILTER_VALUES {
            return Err(ApiError::new(
                "InvalidFilterValue.LimitExceeded",
                format!(
                    "the filter {} has {} values; at most {MAX_FILTER_VALUES}",
                    filter.name,
                    filter.values.len()
                ),
            ));
        }
        match filter.name.as_str() {
            "image-id" => {
                let ids = image_ids("Filters.image-id", &filter.values)?;
                if query.image_ids.is_empty() {
                    query.image_ids = ids;
                } else {
                    // Two image-id filters: the ids in both.
                    query.image_ids.retain(|id| ids.contains(id));
                    if query.image_ids.is_empty() {
                        query.conditions.push(Condition::Nothing);
                    }
                }
            }
            "image-type" => {
                let (mut private, mut shared) = (false, false);
                for value in &filter.values {
                    match value.as_str() {
                        "PRIVATE_IMAGE" => private = true,
                        "SHARED_IMAGE" => shared = true,
                        // The ledger keeps custom images only.
                        "PUBLIC_IMAGE" => {}
                        other => {
                            return Err(ApiError::new(
                                "InvalidFilter",
                                format!("image-type {other:?} is not PRIVATE_IMAGE, PUBLIC_IMAGE or SHARED_IMAGE"),
                            ))
                        }
                    }
                }
                let (was_private, was_shared) = types.unwrap_or((true, true));
                types = Some((was_private && private, was_shared && shared));
            }
            "image-name" => query
                .conditions
                .push(Condition::NameContainsAny(filter.values.clone())),
            "platform" => query
                .conditions
                .push(Condition::PlatformContainsAny(filter.values.clone())),
            // No image here carries tags.
            "tag-key" | "tag-value" => query.conditions.push(Condition::Nothing),
            name if name.starts_with("tag:") => query.conditions.push(Condition::Nothing),
            other => {
                return Err(ApiError::new(
                    "InvalidFilter",
                    format!(
                    "the filter {other:?} is not one DescribeImages takes (image-id, image-type, \
                         image-name, platform, tag-key, tag-value, tag:<key>)"
                ),
                ))
            }
        }
    }
    query.image_type = match types.unwrap_or((true, true)) {
        (true, true) => ImageTypeFilter::Both,
        (true, false) => ImageTypeFilter::Private,
        (false, true) => ImageTypeFilter::Shared,
        (false, false) => {
            query.conditions.push(Condition::Nothing);
            ImageTypeFilter::Both
        }
    };
    Ok(())
}

/// An image as Tencent's `Image` structure, borrowed from the state. The
/// ledger does not keep an image's size, architecture, snapshots, tags or
/// family: those are given as for an image without them (0, "", [], [],
/// ""), and its sync progress as null (not syncing). Tencent has no field
/// for a disabled image: its owner sees it as it is otherwise.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageView<'a> {
    image_id: &'a ImageId,
    os_name: &'a str,
    image_type: &'static str,
    created_time: String,
    image_name: &'a str,
    image_description: &'a str,
    image_size: u64,
    architecture: &'static str,
    image_state: &'static str,
    platform: &'a str,
    image_creator: &'a str,
    image_source: &'static str,
    sync_percent: Option<u32>,
    is_support_cloudinit: bool,
    snapshot_set: [(); 0],
    tags: [(); 0],
    license_type: &'static str,
    image_family: &'static str,
    image_deprecated: bool,
}

impl<'a> ImageView<'a> {
    /// `image` as the caller sees it: its own, or `shared` with it.
    pub fn of(image: &'a Image, shared: bool) -> Self {
        let a = &image.attributes;
        Self {
            image_id: &image.image_id,
            os_name: &a.os_name,
            image_type: if shared {
                "SHARED_IMAGE"
            } else {
                "PRIVATE_IMAGE"
            },
            created_time: created_time(image.created_time),
            image_name: &a.image_name,
            image_description: &a.image_description,
            image_size: 0,
            architecture: "",
            image_state: image.state.name(),
            platform: &a.platform,
            image_creator: image.owner_account_id.as_str(),
            image_source: match a.image_source {
                ImageSource::CreateImage => "CREATE_IMAGE",
                ImageSource::ExternalImport => "EXTERNAL_IMPORT",
            },
            sync_percent: None,
            is_support_cloudinit: a.supports_cloudinit,
            snapshot_set: [],
            tags: [],
            license_type: match a.license_type {
                LicenseType::Tencentcloud => "TencentCloud",
                LicenseType::Byol => "BYOL",
            },
            image_family: "",
            image_deprecated: image.deprecated,
        }
    }
}

/// `YYYY-MM-DDThh:mm:ssZ`, in UTC, as Tencent writes times.
pub fn created_time(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}
