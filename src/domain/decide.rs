//! The rules: given the current state and a command, the events to record
//! or the reason to refuse. Nothing here changes state.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::ids::{quoted, validate_image_description, validate_image_name, validate_label};
use super::{
    Account, AccountId, AccountKind, Command, DomainError, Event, Image, ImageId, ImageRef,
    ImageSource, ImageState, ImageUse, LedgerState, LicenseType, LighthousePermission, NewImage,
    Policy, Region, Relation, Reply,
};

/// The outcome of an accepted command: the events to append (possibly none,
/// when the command changes nothing) and the reply for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Events to append, in order.
    pub events: Vec<Event>,
    /// What the caller gets back.
    pub reply: Reply,
}

impl Decision {
    fn of(events: Vec<Event>) -> Self {
        Self {
            events,
            reply: Reply::Done,
        }
    }
}

/// Decides a command against `state`. `new_image_id` supplies fresh random
/// ids; one already in use is skipped.
pub fn decide(
    state: &LedgerState,
    policy: &Policy,
    command: &Command,
    now: OffsetDateTime,
    new_image_id: &mut dyn FnMut() -> ImageId,
) -> Result<Decision, DomainError> {
    let fresh_id = |taken: &BTreeSet<ImageId>| loop {
        let id = new_image_id();
        if state.any_image(&id).is_none() && !taken.contains(&id) {
            return id;
        }
    };
    match command {
        Command::RegisterAccount { account_id, kind } => match state.account(account_id) {
            Some(existing) if existing.kind == *kind => Ok(Decision::of(vec![])),
            Some(existing) => Err(DomainError::InvalidParameter(format!(
                "account {account_id} is already registered as {}",
                kind_name(existing.kind)
            ))),
            None => Ok(Decision::of(vec![Event::AccountRegistered {
                account_id: account_id.clone(),
                kind: *kind,
            }])),
        },
        Command::RegisterImage(new) => register_image(state, policy, new, now, fresh_id),
        Command::UpdateImageState {
            image_id,
            state: to,
        } => {
            let image = live_image(state, image_id)?;
            if image.state == *to {
                return Ok(Decision::of(vec![]));
            }
            Ok(Decision::of(vec![Event::ImageStateChanged {
                image_id: image_id.clone(),
                from: image.state,
                to: *to,
            }]))
        }
        Command::ShareImage {
            caller,
            image_id,
            account_ids,
        } => share(state, policy, caller, image_id, account_ids, now),
        Command::CancelImageSharing {
            caller,
            image_id,
            account_ids,
        } => cancel(state, policy, caller, image_id, account_ids),
        Command::CopyImage {
            caller,
            image_id,
            destination_regions,
            image_name,
        } => copy(
            state,
            policy,
            caller,
            image_id,
            destination_regions,
            image_name.as_deref(),
            now,
            fresh_id,
        ),
        Command::DeleteImage { caller, image_id } => {
            registered(state, caller)?;
            let image = live_image(state, image_id)?;
            match image.relation(caller) {
                Relation::Owner => {}
                Relation::Recipient => {
                    return Err(DomainError::DeleteSharedImage(format!(
                        "image {image_id} is shared with account {caller} by account {}; only its owner can delete it",
                        image.owner_account_id
                    )))
                }
                Relation::Stranger => return Err(not_owner(image, caller)),
            }
            if image.state.is_transient() {
                return Err(DomainError::DeleteInTransientState(format!(
                    "image {image_id} is {} and cannot be deleted until that finishes",
                    image.state.name()
                )));
            }
            if image.is_shared() {
                return Err(DomainError::StillShared(format!(
                    "image {image_id} is still shared with {}; cancel every share first",
                    share_summary(image)
                )));
            }
            Ok(Decision::of(vec![Event::ImageDeleted {
                image_id: image_id.clone(),
            }]))
        }
        Command::ModifyImageAttribute {
            caller,
            image_id,
            image_name,
            image_description,
        } => modify(
            state,
            caller,
            image_id,
            image_name.as_deref(),
            image_description.as_deref(),
        ),
        Command::ModifyLighthouseSharePermission {
            caller,
            image_id,
            permission,
        } => lighthouse(state, caller, image_id, *permission),
    }
}

fn register_image(
    state: &LedgerState,
    policy: &Policy,
    new: &NewImage,
    now: OffsetDateTime,
    mut fresh_id: impl FnMut(&BTreeSet<ImageId>) -> ImageId,
) -> Result<Decision, DomainError> {
    let owner = &new.owner_account_id;
    registered(state, owner)?;
    policy.check_region(&new.region)?;
    let attributes = &new.attributes;
    validate_image_name(&attributes.image_name)?;
    validate_image_description(&attributes.image_description)?;
    validate_label("platform", &attributes.platform)?;
    validate_label("os_name", &attributes.os_name)?;
    name_free(state, owner, &new.region, &attributes.image_name, None)?;
    quota_free(state, policy, owner, &new.region, 1)?;
    let image_id = fresh_id(&BTreeSet::new());
    Ok(Decision {
        events: vec![Event::ImageRegistered {
            image_id: image_id.clone(),
            owner_account_id: owner.clone(),
            region: new.region.clone(),
            attributes: attributes.clone(),
            state: new.state,
            created_time: now,
        }],
        reply: Reply::ImageRegistered { image_id },
    })
}

fn share(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    account_ids: &[AccountId],
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    check_account_list(policy, account_ids)?;
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    if image.relation(caller) != Relation::Owner {
        return Err(not_owner(image, caller));
    }
    require_normal(image, "shared")?;
    if image.attributes.encrypted {
        return Err(DomainError::EncryptedNotSupported(format!(
            "image {image_id} is encrypted; encrypted images cannot be shared"
        )));
    }
    if image.attributes.license_type == LicenseType::Byol {
        return Err(DomainError::ByolNotShareable(format!(
            "image {image_id} carries a BYOL licence; BYOL images cannot be shared"
        )));
    }
    if image.attributes.whole_instance {
        return Err(DomainError::WholeInstanceNotSupported(format!(
            "image {image_id} is a whole-instance image; only system-disk images can be shared"
        )));
    }
    for account in account_ids {
        if account == caller {
            return Err(DomainError::ShareWithSelf(format!(
                "account {account} owns image {image_id}; an image cannot be shared with its owner"
            )));
        }
        let target = registered(state, account)?;
        if target.kind != AccountKind::Root {
            return Err(DomainError::NotMasterAccount(format!(
                "account {account} is a collaborator account; images can be shared only with root accounts"
            )));
        }
        if image.shares.contains_key(account) {
            return Err(DomainError::AlreadyShared(format!(
                "image {image_id} is already shared with account {account}"
            )));
        }
    }
    let after = image.shares.len() + account_ids.len();
    if after > policy.max_shares_per_image {
        return Err(DomainError::ShareLimitExceeded(format!(
            "image {image_id} is shared with {} accounts; sharing with {} more would pass the limit of {}",
            image.shares.len(),
            account_ids.len(),
            policy.max_shares_per_image
        )));
    }
    Ok(Decision::of(vec![Event::ImageShared {
        image_id: image_id.clone(),
        account_ids: account_ids.to_vec(),
        shared_time: now,
    }]))
}

fn cancel(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    account_ids: &[AccountId],
) -> Result<Decision, DomainError> {
    check_account_list(policy, account_ids)?;
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    if image.relation(caller) != Relation::Owner {
        return Err(not_owner(image, caller));
    }
    for account in account_ids {
        registered(state, account)?;
        if !image.shares.contains_key(account) {
            return Err(DomainError::NotShared(format!(
                "image {image_id} is not shared with account {account}"
            )));
        }
    }
    Ok(Decision::of(vec![Event::ShareCancelled {
        image_id: image_id.clone(),
        account_ids: account_ids.to_vec(),
    }]))
}

#[allow(clippy::too_many_arguments)]
fn copy(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    destination_regions: &[Region],
    image_name: Option<&str>,
    now: OffsetDateTime,
    mut fresh_id: impl FnMut(&BTreeSet<ImageId>) -> ImageId,
) -> Result<Decision, DomainError> {
    if destination_regions.is_empty() {
        return Err(DomainError::InvalidParameter(
            "destination_regions must name at least one region".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for region in destination_regions {
        policy.check_region(region)?;
        if !seen.insert(region) {
            return Err(DomainError::InvalidParameter(format!(
                "destination_regions names {region} more than once"
            )));
        }
    }
    if let Some(name) = image_name {
        validate_image_name(name)?;
    }
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    let relation = image.relation(caller);
    if relation == Relation::Stranger {
        return Err(not_owner(image, caller));
    }
    require_normal(image, "copied")?;
    if image.attributes.encrypted {
        return Err(DomainError::EncryptedNotSupported(format!(
            "image {image_id} is encrypted; encrypted images cannot be copied"
        )));
    }
    for region in destination_regions {
        match relation {
            Relation::Owner if *region == image.region => {
                return Err(DomainError::InvalidCopyRegion(format!(
                    "image {image_id} already lives in {region}; copy it to another region"
                )))
            }
            Relation::Recipient if *region != image.region => {
                return Err(DomainError::InvalidCopyRegion(format!(
                    "image {image_id} was shared with you in {}; a shared image can be copied only within its own region, not to {region}",
                    image.region
                )))
            }
            _ => {}
        }
    }
    let name = image_name.unwrap_or(&image.attributes.image_name);
    for region in destination_regions {
        name_free(state, caller, region, name, None)?;
        quota_free(state, policy, caller, region, 1)?;
    }
    let mut taken = BTreeSet::new();
    let mut events = Vec::with_capacity(destination_regions.len());
    let mut copies = Vec::with_capacity(destination_regions.len());
    for region in destination_regions {
        let new_id = fresh_id(&taken);
        taken.insert(new_id.clone());
        let mut attributes = super::ImageAttributes::clone(&image.attributes);
        attributes.image_name = name.to_owned();
        events.push(Event::ImageCopied {
            image_id: new_id.clone(),
            owner_account_id: caller.clone(),
            region: region.clone(),
            copied_from: image.image_ref(),
            attributes,
            state: ImageState::Syncing,
            created_time: now,
        });
        copies.push(ImageRef {
            image_id: new_id,
            region: region.clone(),
        });
    }
    Ok(Decision {
        events,
        reply: Reply::ImagesCopied { images: copies },
    })
}

fn modify(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    image_name: Option<&str>,
    image_description: Option<&str>,
) -> Result<Decision, DomainError> {
    if image_name.is_none() && image_description.is_none() {
        return Err(DomainError::InvalidParameter(
            "give image_name, image_description or both".into(),
        ));
    }
    if let Some(name) = image_name {
        validate_image_name(name)?;
    }
    if let Some(description) = image_description {
        validate_image_description(description)?;
    }
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    match image.relation(caller) {
        Relation::Owner => {}
        Relation::Recipient => {
            return Err(DomainError::ModifySharedImage(format!(
                "image {image_id} is shared with account {caller}; only its owner can change its name or description"
            )))
        }
        Relation::Stranger => return Err(not_owner(image, caller)),
    }
    let new_name = image_name.filter(|name| *name != image.attributes.image_name);
    let new_description =
        image_description.filter(|text| *text != image.attributes.image_description);
    if let Some(name) = new_name {
        name_free(state, caller, &image.region, name, Some(image_id))?;
    }
    if new_name.is_none() && new_description.is_none() {
        return Ok(Decision::of(vec![]));
    }
    Ok(Decision::of(vec![Event::ImageAttributesModified {
        image_id: image_id.clone(),
        image_name: new_name.map(str::to_owned),
        image_description: new_description.map(str::to_owned),
    }]))
}

fn lighthouse(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    permission: LighthousePermission,
) -> Result<Decision, DomainError> {
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    if image.relation(caller) != Relation::Owner {
        return Err(not_owner(image, caller));
    }
    let image_id = image_id.clone();
    match permission {
        LighthousePermission::Share => {
            if image.lighthouse_shared {
                return Err(DomainError::LighthouseAlreadyShared(format!(
                    "image {image_id} is already shared with Lighthouse"
                )));
            }
            require_normal(image, "shared with Lighthouse")?;
            let attributes = &image.attributes;
            let unable = if attributes.image_source == ImageSource::ExternalImport {
                Some("it was imported")
            } else if attributes.whole_instance {
                Some("it is a whole-instance image")
            } else if !attributes.supports_cloudinit {
                Some("it does not support cloud-init")
            } else {
                None
            };
            if let Some(why) = unable {
                return Err(DomainError::LighthouseUnableToShare(format!(
                    "image {image_id} cannot be shared with Lighthouse: {why}"
                )));
            }
            Ok(Decision::of(vec![Event::LighthouseShared { image_id }]))
        }
        LighthousePermission::Cancel => {
            if !image.lighthouse_shared {
                return Err(DomainError::NotShared(format!(
                    "image {image_id} is not shared with Lighthouse"
                )));
            }
            Ok(Decision::of(vec![Event::LighthouseShareCancelled {
                image_id,
            }]))
        }
    }
}

/// Decides whether `account` may use `image_id` in `region` for `usage`.
/// `Ok(())` allows it; the error names why not.
pub fn authorize(
    state: &LedgerState,
    policy: &Policy,
    account: &AccountId,
    image_id: &ImageId,
    region: &Region,
    usage: ImageUse,
) -> Result<(), DomainError> {
    policy.check_region(region)?;
    registered(state, account)?;
    let image = live_image(state, image_id)?;
    let relation = image.relation(account);
    if relation == Relation::Stranger {
        return Err(not_owner(image, account));
    }
    if *region != image.region {
        return Err(DomainError::InvalidCopyRegion(format!(
            "image {image_id} lives in {}, not in {region}",
            image.region
        )));
    }
    require_normal(image, "used")?;
    if relation == Relation::Recipient && usage == ImageUse::Export {
        return Err(DomainError::ExportSharedImage(format!(
            "image {image_id} is shared with account {account}; shared images cannot be exported"
        )));
    }
    Ok(())
}

/// Checks that `caller` may see the share list of `image_id` and returns the image.
pub fn share_permission_view<'a>(
    state: &'a LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
) -> Result<&'a Image, DomainError> {
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    if image.relation(caller) != Relation::Owner {
        return Err(not_owner(image, caller));
    }
    Ok(image)
}

/// Checks that an account is registered and returns it.
pub fn registered<'a>(
    state: &'a LedgerState,
    account: &AccountId,
) -> Result<&'a Account, DomainError> {
    state
        .account(account)
        .ok_or_else(|| DomainError::AccountNotFound(format!("account {account} is not registered")))
}

fn live_image<'a>(state: &'a LedgerState, image_id: &ImageId) -> Result<&'a Image, DomainError> {
    state.live_image(image_id).ok_or_else(|| {
        let detail = if state.any_image(image_id).is_some() {
            " (it was deleted)"
        } else {
            ""
        };
        DomainError::ImageNotFound(format!("image {image_id} does not exist{detail}"))
    })
}

fn not_owner(image: &Image, caller: &AccountId) -> DomainError {
    DomainError::NotOwner(format!(
        "image {} does not belong to account {caller}",
        image.image_id
    ))
}

fn require_normal(image: &Image, action: &str) -> Result<(), DomainError> {
    if image.state == ImageState::Normal {
        Ok(())
    } else {
        Err(DomainError::ImageNotNormal(format!(
            "image {} is {}; only a NORMAL image can be {action}",
            image.image_id,
            image.state.name()
        )))
    }
}

fn check_account_list(policy: &Policy, account_ids: &[AccountId]) -> Result<(), DomainError> {
    if account_ids.is_empty() {
        return Err(DomainError::InvalidParameter(
            "account_ids must name at least one account".into(),
        ));
    }
    if account_ids.len() > policy.max_accounts_per_call {
        return Err(DomainError::LimitExceeded(format!(
            "account_ids names {} accounts; one call may name at most {}",
            account_ids.len(),
            policy.max_accounts_per_call
        )));
    }
    let mut seen = BTreeSet::new();
    for account in account_ids {
        if !seen.insert(account) {
            return Err(DomainError::InvalidParameter(format!(
                "account_ids names account {account} more than once"
            )));
        }
    }
    Ok(())
}

fn name_free(
    state: &LedgerState,
    owner: &AccountId,
    region: &Region,
    name: &str,
    except: Option<&ImageId>,
) -> Result<(), DomainError> {
    match state.image_named(owner, region, name) {
        Some(other) if Some(&other.image_id) != except => Err(DomainError::DuplicateName(format!(
            "account {owner} already has image {} named {} in {region}",
            other.image_id,
            quoted(name)
        ))),
        _ => Ok(()),
    }
}

fn quota_free(
    state: &LedgerState,
    policy: &Policy,
    owner: &AccountId,
    region: &Region,
    more: u32,
) -> Result<(), DomainError> {
    let used = state.images_used(owner, region);
    if used.saturating_add(more) > policy.image_quota {
        return Err(DomainError::ImageQuotaExceeded(format!(
            "account {owner} has {used} custom images in {region}; the quota is {}",
            policy.image_quota
        )));
    }
    Ok(())
}

fn share_summary(image: &Image) -> String {
    let accounts = image.shares.len();
    match (accounts, image.lighthouse_shared) {
        (0, _) => "Lighthouse".to_owned(),
        (n, false) => format!("{n} account(s)"),
        (n, true) => format!("{n} account(s) and Lighthouse"),
    }
}

fn kind_name(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Root => "ROOT",
        AccountKind::Collaborator => "COLLABORATOR",
    }
}
