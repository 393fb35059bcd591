//! An image's life as its owner drives it: `DeleteImages`,
//! `ModifyImageAttribute`, `SyncImages` (copies), and the quota they count
//! against, `DescribeImageQuota`.

use serde::Serialize;

use crate::domain::ImageId;

use super::{image_ids, Call};
use crate::app::Ledger;
use crate::cloud::envelope::{ApiError, Fields};
use crate::domain::{self, Command, ImageRef, Region, Reply};

/// `DeleteImages`: every image or none, in one commit.
pub async fn delete_images(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    let params = call.params(&["ImageIds", "DeleteBindedSnap", "DryRun"])?;
    let ids = image_ids("ImageIds", &params.strings("ImageIds")?)?;
    // The ledger keeps no snapshots: there are none to delete with it.
    params.boolean("DeleteBindedSnap", false)?;
    let dry_run = params.boolean("DryRun", false)?;
    let state = ledger.state();
    for id in &ids {
        call.in_region(&state, id)?;
    }
    let commands = ids
        .into_iter()
        .map(|image_id| Command::DeleteImage {
            caller: call.key.account.clone(),
            image_id,
        })
        .collect();
    call.commit_all(ledger, commands, dry_run).await?;
    Ok(Fields::new())
}

/// `ModifyImageAttribute`: name, description and deprecation, as one
/// decision. Image families are not kept by the ledger: setting one is
/// refused, and the value every image has (no family) is accepted.
pub async fn modify_attribute(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    let params = call.params(&[
        "ImageId",
        "ImageName",
        "ImageDescription",
        "ImageFamily",
        "ImageDeprecated",
    ])?;
    let image_id = domain::ImageId::parse(&params.string("ImageId")?)?;
    let image_name = params
        .opt_string("ImageName")?
        .map(domain::name_from_request)
        .transpose()?;
    let image_description = params.opt_string("ImageDescription")?;
    let family = params.opt_string("ImageFamily")?;
    let deprecated = params.opt_boolean("ImageDeprecated")?;
    if family.is_some_and(|family| !family.is_empty()) {
        return Err(ApiError::new(
            "UnsupportedOperation",
            "this ledger keeps no image families: ImageFamily can only be left out (or empty)",
        ));
    }
    call.in_region(&ledger.state(), &image_id)?;
    let caller = call.key.account.clone();
    let mut commands = Vec::new();
    // Deprecation alone is a change of its own; with neither, the rules
    // name what is missing.
    if image_name.is_some() || image_description.is_some() || deprecated.is_none() {
        commands.push(Command::ModifyImageAttribute {
            caller: caller.clone(),
            image_id: image_id.clone(),
            image_name,
            image_description,
        });
    }
    if let Some(deprecated) = deprecated {
        commands.push(Command::SetImageDeprecated {
            caller,
            image_id,
            deprecated,
        });
    }
    call.commit_all(ledger, commands, false).await?;
    Ok(Fields::new())
}

/// `SyncImages`: copies of each image into each destination region (the
/// owner), or of a shared image into the caller's own account in its
/// region (a recipient), all or none. With `ImageSetRequired`, the new
/// images.
pub async fn sync_images(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    let params = call.params(&[
        "ImageIds",
        "DestinationRegions",
        "DryRun",
        "ImageName",
        "ImageSetRequired",
        "Encrypt",
        "KmsKeyId",
    ])?;
    let ids = image_ids("ImageIds", &params.strings("ImageIds")?)?;
    let regions = params.strings("DestinationRegions")?;
    let dry_run = params.boolean("DryRun", false)?;
    let image_name = params
        .opt_string("ImageName")?
        .map(domain::name_from_request)
        .transpose()?;
    let wants_set = params.boolean("ImageSetRequired", false)?;
    let encrypt = params.boolean("Encrypt", false)?;
    params.opt_string("KmsKeyId")?;
    if encrypt {
        return Err(ApiError::new(
            "UnsupportedOperation.EncryptedImagesNotSupported",
            "this ledger makes no encrypted copies: leave Encrypt out or false",
        ));
    }
    if regions.is_empty() {
        return Err(ApiError::new(
            "InvalidParameterValue",
            "`DestinationRegions` is empty; name at least one region",
        ));
    }
    let destination_regions: Vec<Region> = regions.iter().map(Region::new).collect();
    let state = ledger.state();
    for id in &ids {
        call.in_region(&state, id)?;
    }
    let commands = ids
        .into_iter()
        .map(|image_id| Command::CopyImage {
            caller: call.key.account.clone(),
            image_id,
            destination_regions: destination_regions.clone(),
            image_name: image_name.clone(),
        })
        .collect();
    let done = call.commit_all(ledger, commands, dry_run).await?;
    if !wants_set {
        return Ok(Fields::new());
    }
    let copies: Vec<ImageRef> = match done.reply {
        Reply::ImagesCopied { images } => images,
        _ => Vec::new(),
    };
    let set: Vec<SyncImage<'_>> = copies
        .iter()
        .map(|copy| SyncImage {
            image_id: &copy.image_id,
            region: copy.region.as_str(),
        })
        .collect();
    Ok(Fields::new().with("ImageSet", &set))
}

/// Tencent's `SyncImage`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SyncImage<'a> {
    image_id: &'a ImageId,
    region: &'a str,
}

/// `DescribeImageQuota`: how many custom images the account may own in
/// the region.
pub fn quota(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    call.params(&[])?;
    let state = ledger.state();
    domain::registered(&state, &call.key.account)?;
    Ok(Fields::new().with("ImageNumQuota", &ledger.policy().image_quota))
}
