//! The rules: given the current state and a command, the events to record
//! or the reason to refuse. Nothing here changes state. The commands of
//! images and accounts are decided here, sharing in [`sharing`], the
//! questions that decide no command in [`queries`]; [`checks`] holds what
//! several of them check.

mod checks;
mod controls;
mod limits;
mod lineage;
mod queries;
mod sharing;

use std::collections::BTreeSet;

use time::OffsetDateTime;

pub use self::checks::registered;
use self::checks::{live_image, name_free, not_owner, quota_free, require_normal, share_summary};
use self::controls::{
    deletable, deletion_protection, leave, not_deprecated, not_disabled, set_deprecated,
    set_disabled, set_trusted_owners, trusted,
};
pub use self::lineage::lineage;
pub use self::queries::{authorize, share_permission_view, Allowed};
use self::sharing::{cancel, expire, lighthouse, modify_expiry, share};

use super::ids::{validate_image_description, validate_image_name, validate_label};
use super::{
    AccountId, AccountKind, Command, DomainError, Event, ImageId, ImageRef, ImageState,
    LedgerState, NewImage, Policy, Region, Relation, Reply,
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
    // The limits the log records win over the caller's (a server's flags
    // become the log's limits when it starts).
    let policy = state.policy_or(policy);
    let fresh_id = |taken: &BTreeSet<ImageId>| loop {
        let id = new_image_id();
        if state.any_image(&id).is_none() && !taken.contains(&id) {
            return id;
        }
    };
    match command {
        Command::RegisterAccount { account_id, kind } => register_account(state, account_id, *kind),
        Command::RegisterImage(new) => register_image(state, policy, new, now, fresh_id),
        Command::UpdateImageState {
            image_id,
            state: to,
        } => update_state(state, image_id, *to),
        Command::ShareImage {
            caller,
            image_id,
            account_ids,
            expires_at,
        } => share(
            state,
            policy,
            caller,
            image_id,
            account_ids,
            *expires_at,
            now,
        ),
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
        Command::DeleteImage { caller, image_id } => delete(state, caller, image_id, now),
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
        Command::LeaveImageShare { .. }
        | Command::SetImageDisabled { .. }
        | Command::ModifyDeletionProtection { .. }
        | Command::SetImageDeprecated { .. }
        | Command::SetTrustedImageOwners { .. }
        | Command::ModifyShareExpiry { .. }
        | Command::ExpireShares { .. } => decide_control(state, policy, command, now),
        Command::SetLedgerLimits { limits } => limits::set_limits(state, limits),
        Command::Together { commands } => together(state, policy, commands, now, new_image_id),
    }
}

/// [`decide`] of the controls beyond Tencent's (see [`controls`]) and of
/// shares' ends.
fn decide_control(
    state: &LedgerState,
    policy: &Policy,
    command: &Command,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    match command {
        Command::ModifyShareExpiry {
            caller,
            image_id,
            account_ids,
            expires_at,
        } => modify_expiry(
            state,
            policy,
            caller,
            image_id,
            account_ids,
            *expires_at,
            now,
        ),
        Command::ExpireShares {
            image_id,
            account_ids,
        } => expire(state, image_id, account_ids, now),
        Command::LeaveImageShare { caller, image_id } => leave(state, caller, image_id, now),
        Command::SetImageDisabled {
            caller,
            image_id,
            disabled,
        } => set_disabled(state, caller, image_id, *disabled),
        Command::ModifyDeletionProtection {
            caller,
            image_id,
            enabled,
            with_cooldown,
        } => deletion_protection(state, caller, image_id, *enabled, *with_cooldown, now),
        Command::SetImageDeprecated {
            caller,
            image_id,
            deprecated,
        } => set_deprecated(state, caller, image_id, *deprecated, now),
        Command::SetTrustedImageOwners {
            caller,
            mode,
            owner_account_ids,
        } => set_trusted_owners(state, caller, *mode, owner_account_ids),
        _ => Err(DomainError::InvalidParameter(
            "not a control's command".into(),
        )),
    }
}

/// Decides `commands` in order, each against the state the ones before it
/// leave (a quota two copies share, an id the first one took), as one
/// decision: the first refusal refuses them all.
fn together(
    state: &LedgerState,
    policy: &Policy,
    commands: &[Command],
    now: OffsetDateTime,
    new_image_id: &mut dyn FnMut() -> ImageId,
) -> Result<Decision, DomainError> {
    let actors: BTreeSet<Option<&AccountId>> = commands.iter().map(Command::actor).collect();
    if commands.is_empty() || actors.len() > 1 {
        return Err(DomainError::InvalidParameter(
            "commands decided together must be at least one, all of one caller".into(),
        ));
    }
    // Applying to a copy of a persistent state copies a few nodes per change.
    let mut scratch = state.clone();
    let mut events = Vec::new();
    let mut copies = Vec::new();
    for command in commands {
        if matches!(command, Command::Together { .. }) {
            return Err(DomainError::InvalidParameter(
                "commands decided together cannot nest".into(),
            ));
        }
        let decision = decide(&scratch, policy, command, now, new_image_id)?;
        for event in &decision.events {
            scratch.apply(event);
        }
        events.extend(decision.events);
        if let Reply::ImagesCopied { images } = decision.reply {
            copies.extend(images);
        }
    }
    Ok(Decision {
        events,
        reply: if copies.is_empty() {
            Reply::Done
        } else {
            Reply::ImagesCopied { images: copies }
        },
    })
}

fn register_account(
    state: &LedgerState,
    account_id: &AccountId,
    kind: AccountKind,
) -> Result<Decision, DomainError> {
    match state.account(account_id) {
        Some(existing) if existing.kind == kind => Ok(Decision::of(vec![])),
        Some(existing) => Err(DomainError::InvalidParameter(format!(
            "account {account_id} is already registered as {}",
            existing.kind.name()
        ))),
        None => Ok(Decision::of(vec![Event::AccountRegistered {
            account_id: account_id.clone(),
            kind,
        }])),
    }
}

fn update_state(
    state: &LedgerState,
    image_id: &ImageId,
    to: ImageState,
) -> Result<Decision, DomainError> {
    let image = live_image(state, image_id)?;
    if image.state == to {
        return Ok(Decision::of(vec![]));
    }
    Ok(Decision::of(vec![Event::ImageStateChanged {
        image_id: image_id.clone(),
        from: image.state,
        to,
    }]))
}

fn delete(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
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
    deletable(image, now)?;
    if image.is_shared_at(now) {
        return Err(DomainError::StillShared(format!(
            "image {image_id} is still shared with {}; cancel every share first",
            share_summary(image, now)
        )));
    }
    Ok(Decision::of(vec![Event::ImageDeleted {
        image_id: image_id.clone(),
    }]))
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
    let relation = image.relation_at(caller, now);
    if relation == Relation::Stranger {
        return Err(not_owner(image, caller));
    }
    not_disabled(image, "copied")?;
    not_deprecated(image, "copied")?;
    if relation == Relation::Recipient {
        trusted(state, caller, image)?;
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
        attributes.image_name = name.into();
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
    not_disabled(image, "changed")?;
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
