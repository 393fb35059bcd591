//! `DescribeImages`: the caller's own images and those shared with it in
//! the call's region, with Tencent's filters and paging, each image in
//! Tencent's `Image` shape.

use serde_json::{json, Map, Value};

use super::{image_ids, Call};
use crate::app::Ledger;
use crate::cloud::envelope::ApiError;
use crate::cloud::params::Filter;
use crate::domain::{Image, ImageSource, LicenseType};
use crate::projection::{describe_images as list, Condition, ImageQuery, ImageTypeFilter};

/// Most filters in one call, and values in one filter.
const MAX_FILTERS: usize = 10;
const MAX_FILTER_VALUES: usize = 5;
/// Page size when `Limit` is left out, and the largest.
const DEFAULT_LIMIT: u64 = 20;
const MAX_LIMIT: u64 = 100;

/// `DescribeImages`.
pub fn describe_images(ledger: &Ledger, call: &Call<'_>) -> Result<Map<String, Value>, ApiError> {
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
    let page = list(&state, ledger.policy(), &query)?;
    let images: Vec<Value> = page
        .images
        .iter()
        .map(|listed| image(listed.image, listed.shared))
        .collect();
    let mut fields = Map::new();
    fields.insert("ImageSet".into(), Value::Array(images));
    fields.insert("TotalCount".into(), json!(page.total_count));
    Ok(fields)
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

/// An image as Tencent's `Image` structure. The ledger does not keep an
/// image's size, architecture, snapshots, tags or family: those are
/// given as for an image without them (0, "", [], [], "").
pub fn image(image: &Image, shared: bool) -> Value {
    let a = &image.attributes;
    json!({
        "ImageId": image.image_id.as_str(),
        "OsName": a.os_name,
        "ImageType": if shared { "SHARED_IMAGE" } else { "PRIVATE_IMAGE" },
        "CreatedTime": created_time(image.created_time),
        "ImageName": a.image_name,
        "ImageDescription": a.image_description,
        "ImageSize": 0,
        "Architecture": "",
        "ImageState": image.state.name(),
        "Platform": a.platform,
        "ImageCreator": image.owner_account_id.as_str(),
        "ImageSource": match a.image_source {
            ImageSource::CreateImage => "CREATE_IMAGE",
            ImageSource::ExternalImport => "EXTERNAL_IMPORT",
        },
        "SyncPercent": Value::Null,
        "IsSupportCloudinit": a.supports_cloudinit,
        "SnapshotSet": [],
        "Tags": [],
        "LicenseType": match a.license_type {
            LicenseType::Tencentcloud => "TencentCloud",
            LicenseType::Byol => "BYOL",
        },
        "ImageFamily": "",
        "ImageDeprecated": false,
    })
}

/// `YYYY-MM-DDThh:mm:ssZ`, in UTC, as Tencent writes times.
pub fn created_time(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}
