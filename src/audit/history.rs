//! History of an image or an account, and who could use an image at a given
//! moment, computed from the log alone.

use serde::Serialize;
use time::OffsetDateTime;

use super::AuditError;
use crate::domain::{rfc3339, AccountId, Event, Image, ImageId, ImageState, TrustedOwners};
use crate::store::{try_scan, try_scan_stream, Envelope, EventLog};

/// A record as decoded, with its stored bytes.
#[derive(Debug, Clone)]
pub struct Record {
    /// The decoded envelope.
    pub envelope: Envelope,
    /// The bytes exactly as stored (what the hash covers).
    pub raw: Vec<u8>,
}

/// Every record of one image's stream, in order.
pub fn image_history(store: &dyn EventLog, image: &ImageId) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    try_scan_stream(store, &image.text(), |_, bytes| {
        out.push(Record {
            envelope: Envelope::decode(bytes)?,
            raw: bytes.to_vec(),
        });
        Ok::<_, AuditError>(true)
    })?;
    Ok(out)
}

/// Every record that touched an account: its registration, what it did, and
/// what was done to it (images it owns or that were shared with it).
pub fn account_history(
    store: &dyn EventLog,
    account: &AccountId,
) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    try_scan(store, 1, |_, bytes| {
        let envelope = Envelope::decode(bytes)?;
        let event = envelope.event()?;
        let involved = envelope.actor.as_deref() == Some(account.as_str())
            || match &event {
                Event::AccountRegistered { account_id, .. } => account_id == account,
                Event::ImageRegistered {
                    owner_account_id, ..
                }
                | Event::ImageCopied {
                    owner_account_id, ..
                } => owner_account_id == account,
                Event::ImageShared { account_ids, .. }
                | Event::ShareCancelled { account_ids, .. }
                | Event::ShareExpiryModified { account_ids, .. }
                | Event::ShareExpired { account_ids, .. }
                | Event::ImageDisabled {
                    cancelled_account_ids: account_ids,
                    ..
                } => account_ids.contains(account),
                Event::ShareLeft { account_id, .. }
                | Event::TrustedImageOwnersSet { account_id, .. } => account_id == account,
                _ => false,
            };
        if involved {
            out.push(Record {
                envelope,
                raw: bytes.to_vec(),
            });
        }
        Ok::<_, AuditError>(true)
    })?;
    Ok(out)
}

/// One line a person can read for a record.
pub fn describe_event(envelope: &Envelope) -> String {
    let at = rfc3339(envelope.recorded_at);
    let by = match (envelope.actor.as_deref(), envelope.principal()) {
        (Some(actor), Some(principal)) => format!("{actor} via {principal}"),
        (None, Some(principal)) => principal.to_owned(),
        (actor, None) => actor.unwrap_or("system").to_owned(),
    };
    let what = match envelope.event() {
        Ok(event) => summary(&event),
        Err(_) => "(payload does not decode)".into(),
    };
    format!(
        "#{:<8} {at}  {:<24} {} v{}  by {by}  {what}",
        envelope.position, envelope.event_type, envelope.aggregate_id, envelope.aggregate_version
    )
}

fn summary(event: &Event) -> String {
    match event {
        Event::AccountRegistered { kind, .. } => format!("kind {}", kind.name()),
        Event::ImageRegistered {
            owner_account_id,
            region,
            attributes,
            state,
            ..
        } => format!(
            "owner {owner_account_id} in {region}, name {:?}, {}",
            attributes.image_name,
            state.name()
        ),
        Event::ImageCopied {
            owner_account_id,
            region,
            copied_from,
            ..
        } => format!(
            "copy of {} ({}) for {owner_account_id} in {region}",
            copied_from.image_id, copied_from.region
        ),
        Event::ImageStateChanged { from, to, .. } => format!("{} -> {}", from.name(), to.name()),
        Event::ImageAttributesModified {
            image_name,
            image_description,
            ..
        } => {
            let changed: Vec<String> = [("name", image_name), ("description", image_description)]
                .into_iter()
                .filter_map(|(what, value)| Some(format!("{what} {:?}", value.as_deref()?)))
                .collect();
            match changed.is_empty() {
                true => "attributes unchanged".into(),
                false => changed.join(", "),
            }
        }
        Event::ImageShared {
            account_ids,
            expires_at: Some(end),
            ..
        } => format!(
            "shared with {} until {}",
            listed(account_ids),
            rfc3339(*end)
        ),
        Event::ImageShared { account_ids, .. } => format!("shared with {}", listed(account_ids)),
        Event::ShareCancelled { account_ids, .. } => {
            format!("share cancelled for {}", listed(account_ids))
        }
        Event::LighthouseShared { .. } => "shared with Lighthouse".into(),
        Event::LighthouseShareCancelled { .. } => "Lighthouse share cancelled".into(),
        Event::ImageDeleted { .. } => "deleted".into(),
        _ => control_summary(event),
    }
}

/// [`summary`] of the controls' events.
fn control_summary(event: &Event) -> String {
    match event {
        Event::ShareLeft { account_id, .. } => format!("account {account_id} left its share"),
        Event::ShareExpiryModified {
            account_ids,
            expires_at,
            ..
        } => match expires_at {
            Some(end) => format!("shares of {} end at {}", listed(account_ids), rfc3339(*end)),
            None => format!("shares of {} no longer end", listed(account_ids)),
        },
        Event::ShareExpired { account_ids, .. } => {
            format!("shares of {} ended", listed(account_ids))
        }
        Event::ImageDisabled {
            cancelled_account_ids,
            lighthouse_cancelled,
            ..
        } => {
            let mut cancelled = listed(cancelled_account_ids);
            if *lighthouse_cancelled {
                cancelled = match cancelled.is_empty() {
                    true => "Lighthouse".into(),
                    false => format!("{cancelled}, Lighthouse"),
                };
            }
            match cancelled.is_empty() {
                true => "disabled".into(),
                false => format!("disabled; shares cancelled for {cancelled}"),
            }
        }
        Event::ImageEnabled { .. } => "enabled".into(),
        Event::DeletionProtectionEnabled { .. } => "deletion protection on".into(),
        Event::DeletionProtectionDisabled {
            delete_allowed_after,
            ..
        } => match delete_allowed_after {
            Some(after) => format!(
                "deletion protection off; delete refused until {}",
                rfc3339(*after)
            ),
            None => "deletion protection off".into(),
        },
        Event::ImageDeprecated { .. } => "deprecated".into(),
        Event::ImageUndeprecated { .. } => "undeprecated".into(),
        Event::TrustedImageOwnersSet {
            mode,
            owner_account_ids,
            ..
        } => format!(
            "trusted image owners {}: [{}]",
            mode.name(),
            listed(owner_account_ids)
        ),
        Event::LedgerLimitsSet { limits } => format!(
            "limits: {} shares per image, {} accounts per call, quota {}, token retention {} s, regions {}",
            limits.max_shares_per_image,
            limits.max_accounts_per_call,
            limits.image_quota,
            limits.token_retention_ms as f64 / 1000.0,
            limits
                .regions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => event.event_type().to_owned(),
    }
}

/// The accounts, as a list a person reads.
fn listed(ids: &[AccountId]) -> String {
    ids.iter()
        .map(AccountId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The moment an access question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Right after the record at this position.
    Position(u64),
    /// At this instant: every record made at or before it counts.
    Time(OffsetDateTime),
}

/// How an account may use an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// The owner: create, reinstall and export.
    Owner,
    /// A recipient: create and reinstall.
    Recipient,
}

/// One account that could use the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessEntry {
    /// The account.
    pub account_id: String,
    /// Owner or recipient.
    pub role: Role,
    /// Since when (registration for the owner, the share for a recipient).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// When the share ends by itself, if it does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub until: Option<OffsetDateTime>,
}

/// Who could create or reinstall instances from an image at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// The image.
    pub image_id: String,
    /// The last record of the image's stream that counted (0 if none did).
    pub position: u64,
    /// The image's region, if it existed.
    pub region: Option<String>,
    /// Its state then, if it existed.
    pub state: Option<ImageState>,
    /// Whether it had been deleted.
    pub deleted: bool,
    /// Whether Lighthouse of the owner's account could use it.
    pub lighthouse_shared: bool,
    /// Whether its owner had disabled it (then nobody could use it).
    pub disabled: bool,
    /// Whether its owner had deprecated it.
    pub deprecated: bool,
    /// The accounts that could use it (empty when nobody could).
    pub accounts: Vec<AccessEntry>,
    /// Recipients that could not, because they enforced a list of trusted
    /// owners without the image's owner.
    pub untrusted_recipients: Vec<String>,
    /// Why nobody could, when `accounts` is empty.
    pub reason: Option<String>,
}

/// Computes who could use `image` at `as_of`, from the image's stream alone.
/// Records after position `durable` never count (a running server passes its
/// durable head; a stopped one has nothing beyond its head).
pub fn access_as_of(
    store: &dyn EventLog,
    image: &ImageId,
    as_of: AsOf,
    durable: u64,
) -> Result<Access, AuditError> {
    let mut state: Option<Image> = None;
    let mut position = 0;
    for Record { envelope, .. } in image_history(store, image)? {
        if !counts(&envelope, as_of, durable) {
            break;
        }
        let event = envelope.event()?;
        match state.as_mut() {
            Some(image) => image.apply(&event),
            None => state = Image::from_creation(&event),
        }
        position = envelope.position;
    }
    let mut access = Access {
        image_id: image.to_string(),
        position,
        region: state.as_ref().map(|i| i.region.to_string()),
        state: state.as_ref().map(|i| i.state),
        deleted: state.as_ref().is_some_and(|i| i.deleted),
        lighthouse_shared: state
            .as_ref()
            .is_some_and(|i| i.lighthouse_shared && !i.deleted),
        disabled: state.as_ref().is_some_and(|i| i.disabled),
        deprecated: state.as_ref().is_some_and(|i| i.deprecated),
        accounts: Vec::new(),
        untrusted_recipients: Vec::new(),
        reason: None,
    };
    match &state {
        None => access.reason = Some("the image did not exist yet".into()),
        Some(image) if image.deleted => access.reason = Some("the image was deleted".into()),
        Some(image) if image.disabled => {
            access.reason = Some("the image was disabled by its owner".into())
        }
        Some(image) if image.state != ImageState::Normal => {
            access.reason = Some(format!("the image was {}", image.state.name()))
        }
        Some(image) => {
            access.accounts.push(AccessEntry {
                account_id: image.owner_account_id.to_string(),
                role: Role::Owner,
                since: image.created_time,
                until: None,
            });
            // A share that had ended by then no longer counts, recorded or not.
            let moment = moment_of(store, as_of, durable)?;
            let mut shares: Vec<_> = image
                .shares
                .iter()
                .filter(|(_, share)| moment.is_none_or(|at| share.live_at(at)))
                .collect();
            shares.sort_by_key(|(id, share)| (share.created_time, (*id).clone()));
            for (account, share) in shares {
                let refused = trust_as_of(store, account, as_of, durable)?.is_some_and(|list| {
                    list.judge(&image.owner_account_id) == Some(crate::domain::TrustMode::Enforce)
                });
                if refused {
                    access.untrusted_recipients.push(account.to_string());
                    continue;
                }
                access.accounts.push(AccessEntry {
                    account_id: account.to_string(),
                    role: Role::Recipient,
                    since: share.created_time,
                    until: share.expires_at,
                });
            }
        }
    }
    Ok(access)
}

/// The instant `as_of` stands for: the time asked, or when the record at
/// the position asked was made (`None` past the durable log).
fn moment_of(
    store: &dyn EventLog,
    as_of: AsOf,
    durable: u64,
) -> Result<Option<OffsetDateTime>, AuditError> {
    let position = match as_of {
        AsOf::Time(at) => return Ok(Some(at)),
        AsOf::Position(position) => position.min(durable),
    };
    let mut moment = None;
    if position > 0 {
        try_scan(store, position, |_, bytes| {
            moment = Some(Envelope::decode(bytes)?.recorded_at);
            Ok::<_, AuditError>(false)
        })?;
    }
    Ok(moment)
}

/// Whether a record counts for a moment: made by then and durable.
fn counts(envelope: &Envelope, as_of: AsOf, durable: u64) -> bool {
    envelope.position <= durable
        && match as_of {
            AsOf::Position(limit) => envelope.position <= limit,
            AsOf::Time(at) => envelope.recorded_at <= at,
        }
}

/// The trusted owners `account` had set at `as_of`, from its stream.
fn trust_as_of(
    store: &dyn EventLog,
    account: &AccountId,
    as_of: AsOf,
    durable: u64,
) -> Result<Option<TrustedOwners>, AuditError> {
    let mut found = None;
    try_scan_stream(store, account.as_str(), |_, bytes| {
        let envelope = Envelope::decode(bytes)?;
        if !counts(&envelope, as_of, durable) {
            return Ok::<_, AuditError>(false);
        }
        if let Event::TrustedImageOwnersSet {
            mode,
            owner_account_ids,
            ..
        } = envelope.event()?
        {
            found = Some(TrustedOwners {
                mode,
                owner_account_ids,
            });
        }
        Ok(true)
    })?;
    Ok(found)
}
