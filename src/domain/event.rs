//! The events of the ledger: facts in the past tense, the only thing stored.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    AccountId, AccountKind, ImageId, ImageSource, ImageState, LicenseType, Region, TrustMode,
};

/// An image id together with its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The image.
    pub image_id: ImageId,
    /// Its region.
    pub region: Region,
}

/// The descriptive attributes every image carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
///
/// The texts are `CompactString`s: up to 24 bytes sit in place of the
/// pointer, and most names, platforms and OS names are that short, so a
/// million images do not hold four million small allocations.
pub struct ImageAttributes {
    /// Display name, unique per owner and region.
    pub image_name: CompactString,
    /// Free text.
    pub image_description: CompactString,
    /// Platform, such as `CentOS`.
    pub platform: CompactString,
    /// OS name, such as `CentOS 7.9 64-bit`.
    pub os_name: CompactString,
    /// How the image was made.
    pub image_source: ImageSource,
    /// Its licence.
    pub license_type: LicenseType,
    /// Whether its disks are encrypted.
    pub encrypted: bool,
    /// Whether it images a whole instance (system and data disks).
    pub whole_instance: bool,
    /// Whether it supports cloud-init.
    pub supports_cloudinit: bool,
}

/// Everything that can happen in the ledger. Serialized adjacently tagged:
/// `event_type` is the variant name and `payload` its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum Event {
    /// An account became known to the ledger.
    AccountRegistered {
        /// The account.
        account_id: AccountId,
        /// Root or collaborator.
        kind: AccountKind,
    },
    /// An owner registered a custom image.
    ImageRegistered {
        /// The new image.
        image_id: ImageId,
        /// Its owner.
        owner_account_id: AccountId,
        /// Its region.
        region: Region,
        /// Its attributes.
        #[serde(flatten)]
        attributes: ImageAttributes,
        /// Its initial state.
        state: ImageState,
        /// When it was registered.
        #[serde(with = "time::serde::rfc3339")]
        created_time: OffsetDateTime,
    },
    /// An image was copied; this is the first event of the copy's stream.
    ImageCopied {
        /// The new image (the copy).
        image_id: ImageId,
        /// The copy's owner (the source owner, or a recipient copying into its account).
        owner_account_id: AccountId,
        /// The copy's region.
        region: Region,
        /// The image it was copied from.
        copied_from: ImageRef,
        /// Its attributes.
        #[serde(flatten)]
        attributes: ImageAttributes,
        /// Its initial state (`SYNCING`).
        state: ImageState,
        /// When the copy was made.
        #[serde(with = "time::serde::rfc3339")]
        created_time: OffsetDateTime,
    },
    /// An image moved to another lifecycle state.
    ImageStateChanged {
        /// The image.
        image_id: ImageId,
        /// The state before.
        from: ImageState,
        /// The state after.
        to: ImageState,
    },
    /// The owner changed the name or description.
    ImageAttributesModified {
        /// The image.
        image_id: ImageId,
        /// The new name, if changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_name: Option<String>,
        /// The new description, if changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_description: Option<String>,
    },
    /// The owner shared the image with accounts.
    ImageShared {
        /// The image.
        image_id: ImageId,
        /// The accounts it is now shared with.
        account_ids: Vec<AccountId>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        shared_time: OffsetDateTime,
        /// When the shares end by themselves, if they do.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        expires_at: Option<OffsetDateTime>,
    },
    /// The owner cancelled shares.
    ShareCancelled {
        /// The image.
        image_id: ImageId,
        /// The accounts it is no longer shared with.
        account_ids: Vec<AccountId>,
    },
    /// The owner shared the image with Lighthouse.
    LighthouseShared {
        /// The image.
        image_id: ImageId,
    },
    /// The owner withdrew the image from Lighthouse.
    LighthouseShareCancelled {
        /// The image.
        image_id: ImageId,
    },
    /// The owner deleted the image.
    ImageDeleted {
        /// The image.
        image_id: ImageId,
    },
    /// The owner moved or removed the end of some shares.
    ShareExpiryModified {
        /// The image.
        image_id: ImageId,
        /// The accounts whose shares changed.
        account_ids: Vec<AccountId>,
        /// The new end; `None`: the shares no longer end by themselves.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        expires_at: Option<OffsetDateTime>,
    },
    /// The ledger recorded that shares reached their end (they stopped
    /// counting at that instant; this frees them in the record).
    ShareExpired {
        /// The image.
        image_id: ImageId,
        /// The accounts whose shares ended.
        account_ids: Vec<AccountId>,
    },
    /// A recipient gave up its share of the image.
    ShareLeft {
        /// The image.
        image_id: ImageId,
        /// The recipient that left.
        account_id: AccountId,
    },
    /// The owner disabled the image: nobody may use it, and every share
    /// was cancelled in the same decision.
    ImageDisabled {
        /// The image.
        image_id: ImageId,
        /// The accounts whose shares this cancelled, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cancelled_account_ids: Vec<AccountId>,
        /// Whether this withdrew it from Lighthouse.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lighthouse_cancelled: bool,
    },
    /// The owner enabled a disabled image again (for itself; shares are not restored).
    ImageEnabled {
        /// The image.
        image_id: ImageId,
    },
    /// The owner turned deletion protection on.
    DeletionProtectionEnabled {
        /// The image.
        image_id: ImageId,
    },
    /// The owner turned deletion protection off.
    DeletionProtectionDisabled {
        /// The image.
        image_id: ImageId,
        /// With a cooldown: delete stays refused until then.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        delete_allowed_after: Option<OffsetDateTime>,
    },
    /// The owner deprecated the image: it can no longer be shared or copied.
    ImageDeprecated {
        /// The image.
        image_id: ImageId,
    },
    /// The owner undid the image's deprecation.
    ImageUndeprecated {
        /// The image.
        image_id: ImageId,
    },
    /// The limits the rules are decided under from here on: recorded when a
    /// ledger is created and when a server starts with other ones.
    LedgerLimitsSet {
        /// The limits.
        #[serde(flatten)]
        limits: super::Limits,
    },
    /// An account set whose shared images it accepts.
    TrustedImageOwnersSet {
        /// The account.
        account_id: AccountId,
        /// How the list applies.
        mode: TrustMode,
        /// The trusted owners, sorted.
        owner_account_ids: Vec<AccountId>,
    },
}

impl Event {
    /// The variant name, stored as the envelope's `event_type`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::AccountRegistered { .. } => "AccountRegistered",
            Event::ImageRegistered { .. } => "ImageRegistered",
            Event::ImageCopied { .. } => "ImageCopied",
            Event::ImageStateChanged { .. } => "ImageStateChanged",
            Event::ImageAttributesModified { .. } => "ImageAttributesModified",
            Event::ImageShared { .. } => "ImageShared",
            Event::ShareCancelled { .. } => "ShareCancelled",
            Event::LighthouseShared { .. } => "LighthouseShared",
            Event::LighthouseShareCancelled { .. } => "LighthouseShareCancelled",
            Event::ImageDeleted { .. } => "ImageDeleted",
            Event::ShareLeft { .. } => "ShareLeft",
            Event::ShareExpiryModified { .. } => "ShareExpiryModified",
            Event::ShareExpired { .. } => "ShareExpired",
            Event::ImageDisabled { .. } => "ImageDisabled",
            Event::ImageEnabled { .. } => "ImageEnabled",
            Event::DeletionProtectionEnabled { .. } => "DeletionProtectionEnabled",
            Event::DeletionProtectionDisabled { .. } => "DeletionProtectionDisabled",
            Event::ImageDeprecated { .. } => "ImageDeprecated",
            Event::ImageUndeprecated { .. } => "ImageUndeprecated",
            Event::TrustedImageOwnersSet { .. } => "TrustedImageOwnersSet",
            Event::LedgerLimitsSet { .. } => "LedgerLimitsSet",
        }
    }

    /// The account whose stream the event belongs to; `None` for image events.
    pub fn account_id(&self) -> Option<&AccountId> {
        match self {
            Event::AccountRegistered { account_id, .. }
            | Event::TrustedImageOwnersSet { account_id, .. } => Some(account_id),
            _ => None,
        }
    }

    /// The image the event belongs to; `None` for account events.
    pub fn image_id(&self) -> Option<&ImageId> {
        match self {
            Event::AccountRegistered { .. }
            | Event::TrustedImageOwnersSet { .. }
            | Event::LedgerLimitsSet { .. } => None,
            Event::ImageRegistered { image_id, .. }
            | Event::ImageCopied { image_id, .. }
            | Event::ImageStateChanged { image_id, .. }
            | Event::ImageAttributesModified { image_id, .. }
            | Event::ImageShared { image_id, .. }
            | Event::ShareCancelled { image_id, .. }
            | Event::LighthouseShared { image_id }
            | Event::LighthouseShareCancelled { image_id }
            | Event::ImageDeleted { image_id }
            | Event::ShareLeft { image_id, .. }
            | Event::ShareExpiryModified { image_id, .. }
            | Event::ShareExpired { image_id, .. }
            | Event::ImageDisabled { image_id, .. }
            | Event::ImageEnabled { image_id }
            | Event::DeletionProtectionEnabled { image_id }
            | Event::DeletionProtectionDisabled { image_id, .. }
            | Event::ImageDeprecated { image_id }
            | Event::ImageUndeprecated { image_id } => Some(image_id),
        }
    }

    /// The id of the aggregate (stream) the event belongs to: an account
    /// id, an image id, or [`LEDGER_STREAM`](super::LEDGER_STREAM). Inline:
    /// no id is longer than 24 bytes.
    pub fn aggregate_id(&self) -> CompactString {
        match (self, self.image_id()) {
            (Event::LedgerLimitsSet { .. }, _) => CompactString::const_new(super::LEDGER_STREAM),
            (Event::AccountRegistered { account_id, .. }, _)
            | (Event::TrustedImageOwnersSet { account_id, .. }, _) => {
                CompactString::new(account_id.as_str())
            }
            (_, Some(image_id)) => image_id.text(),
            (_, None) => CompactString::default(),
        }
    }
}
