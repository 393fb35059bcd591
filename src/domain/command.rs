//! The commands of the ledger (imperative) and what a successful one returns.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    AccountId, AccountKind, ImageId, ImageRef, ImageState, LighthousePermission, Region, TrustMode,
};

/// A request to change the ledger. Field formats (ids, lengths, enums) are
/// already checked when one is built; the rules are checked by [`decide`](super::decide).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command")]
pub enum Command {
    /// Register a root or collaborator account.
    RegisterAccount {
        /// The account.
        account_id: AccountId,
        /// Its kind.
        kind: AccountKind,
    },
    /// Register a custom image owned by the caller.
    RegisterImage(NewImage),
    /// Report a lifecycle state (from the image factory, not an account).
    UpdateImageState {
        /// The image.
        image_id: ImageId,
        /// The new state.
        state: ImageState,
    },
    /// Share an image with accounts.
    ShareImage {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// The accounts to share with.
        account_ids: Vec<AccountId>,
        /// When the shares end by themselves; never when absent.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        expires_at: Option<OffsetDateTime>,
    },
    /// Move or remove the end of some shares.
    ModifyShareExpiry {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// The accounts whose shares change.
        account_ids: Vec<AccountId>,
        /// The new end; `None` removes it.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        expires_at: Option<OffsetDateTime>,
    },
    /// Record that shares reached their end (from the ledger's own sweep,
    /// not an account).
    ExpireShares {
        /// The image.
        image_id: ImageId,
        /// The accounts whose shares ended.
        account_ids: Vec<AccountId>,
    },
    /// Cancel shares of an image.
    CancelImageSharing {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// The accounts to stop sharing with.
        account_ids: Vec<AccountId>,
    },
    /// Copy an image to other regions, or into the caller's own account.
    CopyImage {
        /// The owner or a recipient.
        caller: AccountId,
        /// The source image.
        image_id: ImageId,
        /// Where the copies go, one new image each.
        destination_regions: Vec<Region>,
        /// The copies' name; the source's name when absent.
        image_name: Option<String>,
    },
    /// Delete an image.
    DeleteImage {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
    },
    /// Change an image's name or description.
    ModifyImageAttribute {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// New name.
        image_name: Option<String>,
        /// New description.
        image_description: Option<String>,
    },
    /// Share with, or withdraw from, Lighthouse.
    ModifyLighthouseSharePermission {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// Share or cancel.
        permission: LighthousePermission,
    },
    /// A recipient gives up its share of an image.
    LeaveImageShare {
        /// The recipient.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
    },
    /// Disable an image (cancelling every share) or enable it again.
    SetImageDisabled {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// Disable (`true`) or enable.
        disabled: bool,
    },
    /// Turn deletion protection on or off.
    ModifyDeletionProtection {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// On (`true`) or off.
        enabled: bool,
        /// When turning it off: keep refusing delete for
        /// [`DELETION_PROTECTION_COOLDOWN`](super::DELETION_PROTECTION_COOLDOWN).
        with_cooldown: bool,
    },
    /// Deprecate an image or undo its deprecation.
    SetImageDeprecated {
        /// The caller, who must own the image.
        caller: AccountId,
        /// The image.
        image_id: ImageId,
        /// Deprecate (`true`) or undeprecate.
        deprecated: bool,
    },
    /// Set the owners whose shared images the caller accepts.
    SetTrustedImageOwners {
        /// The account setting its list.
        caller: AccountId,
        /// How the list applies.
        mode: TrustMode,
        /// The trusted owner accounts.
        owner_account_ids: Vec<AccountId>,
    },
    /// Record the limits the rules are decided under (a server starting).
    SetLedgerLimits {
        /// The limits.
        limits: super::Limits,
    },
    /// Several commands of one caller decided as one: each against the
    /// state the ones before it leave, all applied or none (a request for
    /// several images, such as Tencent's `DeleteImages`). Not nested.
    Together {
        /// The commands, in order.
        commands: Vec<Command>,
    },
}

impl Command {
    /// The account acting, if any (`UpdateImageState` comes from the system).
    pub fn actor(&self) -> Option<&AccountId> {
        match self {
            Command::RegisterAccount { account_id, .. } => Some(account_id),
            Command::RegisterImage(new) => Some(&new.owner_account_id),
            Command::UpdateImageState { .. }
            | Command::ExpireShares { .. }
            | Command::SetLedgerLimits { .. } => None,
            Command::ShareImage { caller, .. }
            | Command::CancelImageSharing { caller, .. }
            | Command::CopyImage { caller, .. }
            | Command::DeleteImage { caller, .. }
            | Command::ModifyImageAttribute { caller, .. }
            | Command::ModifyLighthouseSharePermission { caller, .. }
            | Command::LeaveImageShare { caller, .. }
            | Command::ModifyShareExpiry { caller, .. }
            | Command::SetImageDisabled { caller, .. }
            | Command::ModifyDeletionProtection { caller, .. }
            | Command::SetImageDeprecated { caller, .. }
            | Command::SetTrustedImageOwners { caller, .. } => Some(caller),
            Command::Together { commands } => commands.first().and_then(Command::actor),
        }
    }
}

/// The fields of a new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewImage {
    /// The caller, who becomes the owner.
    pub owner_account_id: AccountId,
    /// Its region.
    pub region: Region,
    /// Name, description and fixed properties.
    #[serde(flatten)]
    pub attributes: super::ImageAttributes,
    /// Initial state.
    pub state: ImageState,
}

/// What a successful command returns to its caller.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "reply")]
pub enum Reply {
    /// Nothing beyond success.
    #[default]
    Done,
    /// The id of a registered image.
    ImageRegistered {
        /// The new image.
        image_id: ImageId,
    },
    /// The copies made, in the order of the destination regions.
    ImagesCopied {
        /// The new images.
        images: Vec<ImageRef>,
    },
}
