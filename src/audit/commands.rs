//! The command each kind of record answers: what `audit verify` re-decides
//! a record's event from, with the time it was decided at.

use time::OffsetDateTime;

use crate::domain::{AccountId, Command, Event, LighthousePermission, NewImage};
use crate::store::Envelope;

fn actor(envelope: &Envelope) -> Result<AccountId, String> {
    let raw = envelope
        .actor
        .as_deref()
        .ok_or_else(|| format!("{} needs an acting account", envelope.event_type))?;
    AccountId::parse(raw).map_err(|e| e.to_string())
}

/// The command a record's event answers, and the time it was decided at.
pub(super) fn command_for(
    envelope: &Envelope,
    event: &Event,
) -> Result<(Command, OffsetDateTime), String> {
    match creation_for(envelope, event)? {
        Some(found) => Ok(found),
        None => change_for(envelope, event),
    }
}

/// [`command_for`] of an event that creates an account or an image, whose
/// time is the one it records; `None` for any other event.
fn creation_for(
    envelope: &Envelope,
    event: &Event,
) -> Result<Option<(Command, OffsetDateTime)>, String> {
    let at = envelope.recorded_at;
    Ok(Some(match event {
        Event::AccountRegistered { account_id, kind } => {
            same_actor(envelope, account_id)?;
            (
                Command::RegisterAccount {
                    account_id: account_id.clone(),
                    kind: *kind,
                },
                at,
            )
        }
        Event::ImageRegistered {
            owner_account_id,
            region,
            attributes,
            state,
            created_time,
            ..
        } => {
            same_actor(envelope, owner_account_id)?;
            (
                Command::RegisterImage(NewImage {
                    owner_account_id: owner_account_id.clone(),
                    region: region.clone(),
                    attributes: attributes.clone(),
                    state: *state,
                }),
                *created_time,
            )
        }
        Event::ImageCopied {
            owner_account_id,
            region,
            copied_from,
            attributes,
            created_time,
            ..
        } => {
            same_actor(envelope, owner_account_id)?;
            (
                Command::CopyImage {
                    caller: owner_account_id.clone(),
                    image_id: copied_from.image_id.clone(),
                    destination_regions: vec![region.clone()],
                    image_name: Some(attributes.image_name.to_string()),
                },
                *created_time,
            )
        }
        _ => return Ok(None),
    }))
}

/// [`command_for`] of an event that changes an image.
fn change_for(envelope: &Envelope, event: &Event) -> Result<(Command, OffsetDateTime), String> {
    let at = envelope.recorded_at;
    Ok(match event {
        Event::ImageStateChanged { image_id, to, .. } => {
            if envelope.actor.is_some() {
                return Err("ImageStateChanged comes from the system, not an account".into());
            }
            (
                Command::UpdateImageState {
                    image_id: image_id.clone(),
                    state: *to,
                },
                at,
            )
        }
        Event::ImageAttributesModified {
            image_id,
            image_name,
            image_description,
        } => (
            Command::ModifyImageAttribute {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                image_name: image_name.clone(),
                image_description: image_description.clone(),
            },
            at,
        ),
        Event::ImageShared {
            image_id,
            account_ids,
            shared_time,
            expires_at,
        } => (
            Command::ShareImage {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                account_ids: account_ids.clone(),
                expires_at: *expires_at,
            },
            *shared_time,
        ),
        Event::ShareCancelled {
            image_id,
            account_ids,
        } => (
            Command::CancelImageSharing {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                account_ids: account_ids.clone(),
            },
            at,
        ),
        Event::LighthouseShared { image_id } | Event::LighthouseShareCancelled { image_id } => (
            Command::ModifyLighthouseSharePermission {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
                permission: if matches!(event, Event::LighthouseShared { .. }) {
                    LighthousePermission::Share
                } else {
                    LighthousePermission::Cancel
                },
            },
            at,
        ),
        Event::ImageDeleted { image_id } => (
            Command::DeleteImage {
                caller: actor(envelope)?,
                image_id: image_id.clone(),
            },
            at,
        ),
        Event::AccountRegistered { .. }
        | Event::ImageRegistered { .. }
        | Event::ImageCopied { .. } => {
            return Err(format!(
                "{} creates; it changes nothing",
                envelope.event_type
            ))
        }
        Event::LedgerLimitsSet { .. } | Event::ShareExpired { .. } => system_for(envelope, event)?,
        _ => (control_for(envelope, event)?, at),
    })
}

/// [`command_for`] of the records the ledger makes itself (no account acts).
fn system_for(envelope: &Envelope, event: &Event) -> Result<(Command, OffsetDateTime), String> {
    let at = envelope.recorded_at;
    Ok(match event {
        Event::LedgerLimitsSet { limits } => {
            if envelope.actor.is_some() {
                return Err("LedgerLimitsSet comes from a server starting, not an account".into());
            }
            (
                Command::SetLedgerLimits {
                    limits: limits.clone(),
                },
                at,
            )
        }
        Event::ShareExpired {
            image_id,
            account_ids,
        } => {
            if envelope.actor.is_some() {
                return Err("ShareExpired comes from the ledger's sweep, not an account".into());
            }
            (
                Command::ExpireShares {
                    image_id: image_id.clone(),
                    account_ids: account_ids.clone(),
                },
                at,
            )
        }
        _ => {
            return Err(format!(
                "{} is not the ledger's own record",
                envelope.event_type
            ))
        }
    })
}

/// [`command_for`] of an event of the controls beyond Tencent's.
fn control_for(envelope: &Envelope, event: &Event) -> Result<Command, String> {
    let caller = actor(envelope)?;
    Ok(match event {
        Event::ShareExpiryModified {
            image_id,
            account_ids,
            expires_at,
        } => Command::ModifyShareExpiry {
            caller,
            image_id: image_id.clone(),
            account_ids: account_ids.clone(),
            expires_at: *expires_at,
        },
        Event::ShareLeft {
            image_id,
            account_id,
        } => {
            same_actor(envelope, account_id)?;
            Command::LeaveImageShare {
                caller,
                image_id: image_id.clone(),
            }
        }
        Event::ImageDisabled { image_id, .. } | Event::ImageEnabled { image_id } => {
            Command::SetImageDisabled {
                caller,
                image_id: image_id.clone(),
                disabled: matches!(event, Event::ImageDisabled { .. }),
            }
        }
        Event::DeletionProtectionEnabled { image_id } => Command::ModifyDeletionProtection {
            caller,
            image_id: image_id.clone(),
            enabled: true,
            with_cooldown: false,
        },
        Event::DeletionProtectionDisabled {
            image_id,
            delete_allowed_after,
        } => Command::ModifyDeletionProtection {
            caller,
            image_id: image_id.clone(),
            enabled: false,
            with_cooldown: delete_allowed_after.is_some(),
        },
        Event::ImageDeprecated { image_id } | Event::ImageUndeprecated { image_id } => {
            Command::SetImageDeprecated {
                caller,
                image_id: image_id.clone(),
                deprecated: matches!(event, Event::ImageDeprecated { .. }),
            }
        }
        Event::TrustedImageOwnersSet {
            account_id,
            mode,
            owner_account_ids,
        } => {
            same_actor(envelope, account_id)?;
            Command::SetTrustedImageOwners {
                caller,
                mode: *mode,
                owner_account_ids: owner_account_ids.clone(),
            }
        }
        _ => return Err(format!("{} is not a control's event", envelope.event_type)),
    })
}

fn same_actor(envelope: &Envelope, account: &AccountId) -> Result<(), String> {
    let acting = actor(envelope)?;
    if &acting != account {
        return Err(format!(
            "{} was recorded for account {acting} but names account {account}",
            envelope.event_type
        ));
    }
    Ok(())
}
