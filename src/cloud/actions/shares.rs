//! Sharing: CVM's `ModifyImageSharePermission` and
//! `DescribeImageSharePermission`, and Lighthouse's
//! `ModifyImageSharePermission`.

use serde::Serialize;

use super::images::created_time;
use super::Call;
use crate::app::Ledger;
use crate::cloud::envelope::{ApiError, Fields};
use crate::domain::{self, AccountId, Command, ImageId, LighthousePermission};

/// SHARE or CANCEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permission {
    Share,
    Cancel,
}

fn permission(raw: &str) -> Result<Permission, ApiError> {
    match raw {
        "SHARE" => Ok(Permission::Share),
        "CANCEL" => Ok(Permission::Cancel),
        other => Err(ApiError::new(
            "InvalidParameterValue",
            format!("Permission {other:?} is not SHARE or CANCEL"),
        )),
    }
}

/// CVM `ModifyImageSharePermission`.
pub async fn modify(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    let params = call.params(&["ImageId", "AccountIds", "Permission"])?;
    let image_id = params.string("ImageId")?;
    let accounts = params.strings("AccountIds")?;
    let permission = permission(&params.string("Permission")?)?;
    let image_id = ImageId::parse(&image_id)?;
    let account_ids = accounts
        .iter()
        .map(|account| AccountId::parse(account))
        .collect::<Result<Vec<_>, _>>()?;
    call.in_region(&ledger.state(), &image_id)?;
    let caller = call.key.account.clone();
    let command = match permission {
        Permission::Share => Command::ShareImage {
            expires_at: None,
            caller,
            image_id,
            account_ids,
        },
        Permission::Cancel => Command::CancelImageSharing {
            caller,
            image_id,
            account_ids,
        },
    };
    call.commit(ledger, command, false).await?;
    Ok(Fields::new())
}

/// CVM `DescribeImageSharePermission`: the accounts, oldest share first.
pub fn describe(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    let params = call.params(&["ImageId"])?;
    let image_id = ImageId::parse(&params.string("ImageId")?)?;
    let state = ledger.state();
    call.in_region(&state, &image_id)?;
    let image = domain::share_permission_view(&state, &call.key.account, &image_id)?;
    let mut shares: Vec<_> = image.shares.iter().collect();
    shares.sort_by(|(a_id, a), (b_id, b)| {
        a.created_time
            .cmp(&b.created_time)
            .then_with(|| a_id.cmp(b_id))
    });
    let set: Vec<SharePermission<'_>> = shares
        .into_iter()
        .map(|(account, share)| SharePermission {
            created_time: created_time(share.created_time),
            account_id: account.as_str(),
        })
        .collect();
    Ok(Fields::new().with("SharePermissionSet", &set))
}

/// Tencent's `SharePermission`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SharePermission<'a> {
    created_time: String,
    account_id: &'a str,
}

/// Lighthouse `ModifyImageSharePermission`: share a CVM image with
/// Lighthouse in the same account and region, or withdraw it. The
/// blueprint a share makes is named after the image (`lhbp-` and the
/// image id's suffix), so a share, a cancel and a share again give the
/// same id.
pub async fn lighthouse(ledger: &Ledger, call: &Call<'_>) -> Result<Fields, ApiError> {
    let params = call.params(&["ImageId", "Permission"])?;
    let image_id = ImageId::parse(&params.string("ImageId")?)?;
    let permission = permission(&params.string("Permission")?)?;
    call.in_region(&ledger.state(), &image_id)?;
    let blueprint = match permission {
        Permission::Share => Some(blueprint_id(&image_id)),
        Permission::Cancel => None,
    };
    let command = Command::ModifyLighthouseSharePermission {
        caller: call.key.account.clone(),
        image_id,
        permission: match permission {
            Permission::Share => LighthousePermission::Share,
            Permission::Cancel => LighthousePermission::Cancel,
        },
    };
    call.commit(ledger, command, false).await?;
    Ok(Fields::new().with("BlueprintId", &blueprint))
}

/// The Lighthouse blueprint id of a shared image.
pub fn blueprint_id(image_id: &ImageId) -> String {
    let text = image_id.text();
    format!("lhbp-{}", text.trim_start_matches("img-"))
}
