//! Proto messages to domain types (where field checks live) and back.

use prost_types::Timestamp;
use time::OffsetDateTime;

use super::pb;
use crate::app::{CommandOptions, LogRecord};
use crate::domain::{
    name_from_request, AccountId, AccountKind, ClientToken, Command, DomainError, ImageAttributes,
    ImageId, ImageRef, ImageSource, ImageState, ImageUse, LicenseType, LighthousePermission,
    NewImage, Region,
};
use crate::projection::{ImageQuery, ImageTypeFilter};
use crate::store::Envelope;

/// A command with its options, as decoded from a request.
#[derive(Debug, Clone)]
pub struct Commanded {
    /// The command.
    pub command: Command,
    /// Token and dry-run flag.
    pub options: CommandOptions,
}

pub(super) fn options(client_token: &str, dry_run: bool) -> Result<CommandOptions, DomainError> {
    Ok(CommandOptions {
        client_token: ClientToken::parse_optional(client_token)?,
        dry_run,
        principal: None,
    })
}

pub(super) fn accounts(raw: &[String]) -> Result<Vec<AccountId>, DomainError> {
    raw.iter().map(|id| AccountId::parse(id)).collect()
}

pub(super) fn bad_enum(field: &str, value: i32) -> DomainError {
    DomainError::InvalidParameter(match value {
        0 => format!("{field} is required"),
        _ => format!("{field} has no valid value (got {value})"),
    })
}

fn region(raw: &str) -> Result<Region, DomainError> {
    if raw.is_empty() {
        return Err(DomainError::InvalidParameter("region is required".into()));
    }
    Ok(Region::new(raw))
}

fn account_kind(value: i32) -> Result<AccountKind, DomainError> {
    match pb::AccountKind::try_from(value) {
        Ok(pb::AccountKind::Root) => Ok(AccountKind::Root),
        Ok(pb::AccountKind::Collaborator) => Ok(AccountKind::Collaborator),
        _ => Err(bad_enum("kind", value)),
    }
}

fn image_state(value: i32, unspecified: Option<ImageState>) -> Result<ImageState, DomainError> {
    match pb::ImageState::try_from(value).ok().map(state_of) {
        Some(Some(state)) => Ok(state),
        Some(None) => unspecified.ok_or_else(|| bad_enum("state", value)),
        None => Err(bad_enum("state", value)),
    }
}

/// The domain state of a proto state; `None` for `IMAGE_STATE_UNSPECIFIED`.
pub fn state_of(state: pb::ImageState) -> Option<ImageState> {
    Some(match state {
        pb::ImageState::Creating => ImageState::Creating,
        pb::ImageState::Normal => ImageState::Normal,
        pb::ImageState::Createfailed => ImageState::Createfailed,
        pb::ImageState::Syncing => ImageState::Syncing,
        pb::ImageState::Importing => ImageState::Importing,
        pb::ImageState::Importfailed => ImageState::Importfailed,
        pb::ImageState::Unspecified => return None,
    })
}

/// The proto state of a domain state.
pub fn state_message(state: ImageState) -> pb::ImageState {
    match state {
        ImageState::Creating => pb::ImageState::Creating,
        ImageState::Normal => pb::ImageState::Normal,
        ImageState::Createfailed => pb::ImageState::Createfailed,
        ImageState::Syncing => pb::ImageState::Syncing,
        ImageState::Importing => pb::ImageState::Importing,
        ImageState::Importfailed => pb::ImageState::Importfailed,
    }
}

impl TryFrom<pb::RegisterAccountRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::RegisterAccountRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::RegisterAccount {
                account_id: AccountId::parse(&req.account_id)?,
                kind: account_kind(req.kind)?,
            },
            options: options(&req.client_token, false)?,
        })
    }
}

impl TryFrom<pb::RegisterImageRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::RegisterImageRequest) -> Result<Self, Self::Error> {
        let image_source = match pb::ImageSource::try_from(req.image_source) {
            Ok(pb::ImageSource::CreateImage) => ImageSource::CreateImage,
            Ok(pb::ImageSource::ExternalImport) => ImageSource::ExternalImport,
            _ => return Err(bad_enum("image_source", req.image_source)),
        };
        let license_type = match pb::LicenseType::try_from(req.license_type) {
            Ok(pb::LicenseType::Tencentcloud) => LicenseType::Tencentcloud,
            Ok(pb::LicenseType::Byol) => LicenseType::Byol,
            _ => return Err(bad_enum("license_type", req.license_type)),
        };
        Ok(Self {
            command: Command::RegisterImage(NewImage {
                owner_account_id: AccountId::parse(&req.account_id)?,
                region: region(&req.region)?,
                attributes: ImageAttributes {
                    // One name, however its characters were composed.
                    image_name: name_from_request(req.image_name)?.into(),
                    image_description: req.image_description.into(),
                    platform: req.platform.into(),
                    os_name: req.os_name.into(),
                    image_source,
                    license_type,
                    encrypted: req.encrypted,
                    whole_instance: req.whole_instance,
                    supports_cloudinit: req.supports_cloudinit,
                },
                state: image_state(req.state, Some(ImageState::Normal))?,
            }),
            options: options(&req.client_token, false)?,
        })
    }
}

impl TryFrom<pb::UpdateImageStateRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::UpdateImageStateRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::UpdateImageState {
                image_id: ImageId::parse(&req.image_id)?,
                state: image_state(req.state, None)?,
            },
            options: options(&req.client_token, false)?,
        })
    }
}

impl TryFrom<pb::ShareImageRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::ShareImageRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::ShareImage {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                account_ids: accounts(&req.account_ids)?,
                expires_at: expiry(req.expires_at.as_ref())?,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

/// A share's end as given; `None` when absent.
pub(super) fn expiry(at: Option<&Timestamp>) -> Result<Option<OffsetDateTime>, DomainError> {
    at.map(|at| {
        time_of(at)
            .ok_or_else(|| DomainError::InvalidParameter("expires_at is out of range".into()))
    })
    .transpose()
}

impl TryFrom<pb::CancelImageSharingRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::CancelImageSharingRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::CancelImageSharing {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                account_ids: accounts(&req.account_ids)?,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

impl TryFrom<pb::CopyImageRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::CopyImageRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::CopyImage {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                destination_regions: req
                    .destination_regions
                    .iter()
                    .map(|r| region(r))
                    .collect::<Result<_, _>>()?,
                image_name: req.image_name.map(name_from_request).transpose()?,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

impl TryFrom<pb::DeleteImageRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::DeleteImageRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::DeleteImage {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

impl TryFrom<pb::ModifyImageAttributeRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::ModifyImageAttributeRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::ModifyImageAttribute {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                image_name: req.image_name.map(name_from_request).transpose()?,
                image_description: req.image_description,
            },
            options: options(&req.client_token, false)?,
        })
    }
}

impl TryFrom<pb::ModifyLighthouseSharePermissionRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::ModifyLighthouseSharePermissionRequest) -> Result<Self, Self::Error> {
        let permission = match pb::LighthousePermission::try_from(req.permission) {
            Ok(pb::LighthousePermission::Share) => LighthousePermission::Share,
            Ok(pb::LighthousePermission::Cancel) => LighthousePermission::Cancel,
            _ => return Err(bad_enum("permission", req.permission)),
        };
        Ok(Self {
            command: Command::ModifyLighthouseSharePermission {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                permission,
            },
            options: options(&req.client_token, false)?,
        })
    }
}

/// The decoded fields of `AuthorizeImageUse`.
#[derive(Debug, Clone)]
pub struct AuthorizeQuery {
    /// Who wants to use the image.
    pub account_id: AccountId,
    /// The image.
    pub image_id: ImageId,
    /// Where.
    pub region: Region,
    /// For what.
    pub usage: ImageUse,
}

impl TryFrom<pb::AuthorizeImageUseRequest> for AuthorizeQuery {
    type Error = DomainError;
    fn try_from(req: pb::AuthorizeImageUseRequest) -> Result<Self, Self::Error> {
        let usage = match pb::ImageUse::try_from(req.r#use) {
            Ok(pb::ImageUse::CreateInstance) => ImageUse::CreateInstance,
            Ok(pb::ImageUse::ReinstallInstance) => ImageUse::ReinstallInstance,
            Ok(pb::ImageUse::Export) => ImageUse::Export,
            _ => return Err(bad_enum("use", req.r#use)),
        };
        Ok(Self {
            account_id: AccountId::parse(&req.account_id)?,
            image_id: ImageId::parse(&req.image_id)?,
            region: region(&req.region)?,
            usage,
        })
    }
}

impl TryFrom<pb::DescribeImagesRequest> for ImageQuery {
    type Error = DomainError;
    fn try_from(req: pb::DescribeImagesRequest) -> Result<Self, Self::Error> {
        let image_type = match pb::ImageType::try_from(req.image_type) {
            Ok(pb::ImageType::Unspecified) => ImageTypeFilter::Both,
            Ok(pb::ImageType::PrivateImage) => ImageTypeFilter::Private,
            Ok(pb::ImageType::SharedImage) => ImageTypeFilter::Shared,
            Err(_) => return Err(bad_enum("image_type", req.image_type)),
        };
        if req.image_ids.len() > 100 {
            return Err(DomainError::InvalidParameter(
                "image_ids may name at most 100 images".into(),
            ));
        }
        Ok(Self {
            account_id: Some(AccountId::parse(&req.account_id)?),
            region: Some(region(&req.region)?),
            image_type,
            image_ids: req
                .image_ids
                .iter()
                .map(|id| ImageId::parse(id))
                .collect::<Result<_, _>>()?,
            image_name: req.image_name,
            conditions: Vec::new(),
            offset: req.offset,
            limit: req.limit,
        })
    }
}

/// A protobuf timestamp as a time; `None` when out of range.
pub fn time_of(timestamp: &Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// The time as a protobuf timestamp.
pub fn timestamp(time: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: time.unix_timestamp(),
        nanos: i32::try_from(time.nanosecond()).unwrap_or(0),
    }
}

pub(super) fn image_ref(r: &ImageRef) -> pb::ImageRef {
    pb::ImageRef {
        image_id: r.image_id.to_string(),
        region: r.region.as_str().to_owned(),
    }
}

/// The domain image as the `Image` message, seen by an owner or a recipient.
///
/// Replies encode pages straight from the state (see `page.rs`); this is the
/// reference they are checked against.
#[cfg(test)]
pub fn image_message(image: &crate::domain::Image, shared: bool) -> pb::Image {
    let a = &image.attributes;
    pb::Image {
        image_id: image.image_id.to_string(),
        owner_account_id: image.owner_account_id.as_str().to_owned(),
        region: image.region.as_str().to_owned(),
        image_name: a.image_name.to_string(),
        image_description: a.image_description.to_string(),
        platform: a.platform.to_string(),
        os_name: a.os_name.to_string(),
        image_type: image_type_value(shared),
        state: state_message(image.state) as i32,
        image_source: source_value(a.image_source),
        license_type: license_value(a.license_type),
        encrypted: a.encrypted,
        whole_instance: a.whole_instance,
        supports_cloudinit: a.supports_cloudinit,
        created_time: Some(timestamp(image.created_time)),
        copied_from: image.copied_from.as_deref().map(image_ref),
        disabled: image.disabled,
        deprecated: image.deprecated,
        deletion_protection: image.deletion_protection.enabled,
        delete_allowed_after: image
            .deletion_protection
            .delete_allowed_after
            .map(timestamp),
    }
}

/// `ImageType` of an image as the caller sees it.
pub(super) fn image_type_value(shared: bool) -> i32 {
    if shared {
        pb::ImageType::SharedImage as i32
    } else {
        pb::ImageType::PrivateImage as i32
    }
}

pub(super) fn source_value(source: ImageSource) -> i32 {
    match source {
        ImageSource::CreateImage => pb::ImageSource::CreateImage as i32,
        ImageSource::ExternalImport => pb::ImageSource::ExternalImport as i32,
    }
}

pub(super) fn license_value(license: LicenseType) -> i32 {
    match license {
        LicenseType::Tencentcloud => pb::LicenseType::Tencentcloud as i32,
        LicenseType::Byol => pb::LicenseType::Byol as i32,
    }
}

/// The copies of a `CopyImage` reply.
pub fn image_refs(refs: &[ImageRef]) -> Vec<pb::ImageRef> {
    refs.iter().map(image_ref).collect()
}

/// The stored record as the `EventEnvelope` message.
pub fn envelope_message(envelope: Envelope, raw: &[u8]) -> pb::EventEnvelope {
    pb::EventEnvelope {
        position: envelope.position,
        aggregate_id: envelope.aggregate_id,
        aggregate_version: envelope.aggregate_version,
        event_type: envelope.event_type,
        schema_version: envelope.schema_version,
        recorded_at: Some(timestamp(envelope.recorded_at)),
        actor: envelope.actor.unwrap_or_default(),
        client_token: envelope.client_token.unwrap_or_default(),
        request_hash: envelope.request_hash.unwrap_or_default(),
        payload_json: envelope.payload.get().to_owned(),
        prev_hash: envelope.prev_hash,
        hash: envelope.hash,
        raw: String::from_utf8_lossy(raw).into_owned(),
        principal: envelope.principal.flatten().unwrap_or_default(),
    }
}

/// Records read from the log as `EventEnvelope` messages.
pub fn envelope_messages(records: Vec<LogRecord>) -> Vec<pb::EventEnvelope> {
    records
        .into_iter()
        .map(|(envelope, raw)| pb::EventEnvelope {
            // The record's bytes become the field without another copy.
            raw: String::from_utf8(raw)
                .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()),
            ..envelope_message(envelope, &[])
        })
        .collect()
}
