//! The value types of the sharing controls beyond Tencent's: deletion
//! protection, an account's trusted image owners, and an image's lineage.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{AccountId, ImageId, Region};

/// How long delete stays refused after deletion protection is turned off
/// with a cooldown: a day, as AWS's deregistration protection does.
pub const DELETION_PROTECTION_COOLDOWN: Duration = Duration::hours(24);

/// Most owner accounts an account's trusted list may name.
pub const MAX_TRUSTED_OWNERS: usize = 200;

/// Whether an image may be deleted, as its owner set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeletionProtection {
    /// Delete is refused while this is on.
    #[serde(default)]
    pub enabled: bool,
    /// When protection was turned off with a cooldown: delete stays refused
    /// until this instant.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub delete_allowed_after: Option<OffsetDateTime>,
}

impl DeletionProtection {
    /// Whether it is off with no cooldown recorded (how every image starts).
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

/// How an account applies its list of trusted image owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrustMode {
    /// The list is not applied: images shared by anyone may be used.
    #[default]
    Off,
    /// Images shared by an owner not on the list may be used, and the
    /// answer says that enforcing would have refused them.
    Audit,
    /// Images shared by an owner not on the list may not be used or copied.
    Enforce,
}

impl TrustMode {
    /// The contract's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            TrustMode::Off => "OFF",
            TrustMode::Audit => "AUDIT",
            TrustMode::Enforce => "ENFORCE",
        }
    }
}

/// The owner accounts whose shared images an account accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrustedOwners {
    /// How the list is applied.
    pub mode: TrustMode,
    /// The trusted owners, sorted, without duplicates.
    pub owner_account_ids: Vec<AccountId>,
}

impl TrustedOwners {
    /// Whether an image owned by `owner` passes this list, and if not,
    /// whether that refuses it (`Enforce`) or is only reported (`Audit`).
    pub fn judge(&self, owner: &AccountId) -> Option<TrustMode> {
        match self.mode {
            TrustMode::Off => None,
            _ if self.owner_account_ids.binary_search(owner).is_ok() => None,
            mode => Some(mode),
        }
    }
}

/// One image of a lineage: an image and where and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageLink {
    /// The image.
    pub image_id: ImageId,
    /// Its region.
    pub region: Region,
    /// Its owner.
    pub owner_account_id: AccountId,
    /// When it was registered or copied.
    pub created_time: OffsetDateTime,
    /// Whether it has since been deleted.
    pub deleted: bool,
}

/// An image's chain of copies back towards the first image, as far as the
/// caller may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The image asked about first, then the image it was copied from,
    /// and so on.
    pub links: Vec<LineageLink>,
    /// Whether the chain goes further back than the caller may see.
    pub truncated: bool,
}
