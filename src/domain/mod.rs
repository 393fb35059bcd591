//! The pure domain: aggregates, commands, events and rules. No I/O, no
//! async, nothing of the storage or transport layers.

mod command;
mod controls;
mod decide;
mod error;
mod event;
pub(crate) mod ids;
mod image;
mod limits;
mod model;
mod shares;
mod state;

#[cfg(test)]
pub(crate) mod tests;

pub use command::{Command, NewImage, Reply};
pub use controls::{
    DeletionProtection, Lineage, LineageLink, TrustMode, TrustedOwners,
    DELETION_PROTECTION_COOLDOWN, MAX_TRUSTED_OWNERS,
};
pub use decide::{
    authorize, decide, lineage, registered, share_permission_view, Allowed, Decision,
};
pub use error::DomainError;
pub use event::{Event, ImageAttributes, ImageRef};
pub use ids::{
    name_from_request, normalized_name, rfc3339, same_name, validate_image_description,
    validate_image_name, AccountId, ClientToken, ImageId, Region, MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
};
pub use image::{Image, Relation};
pub use limits::{Limits, LEDGER_STREAM};
pub use model::{
    AccountKind, ImageSource, ImageState, ImageUse, LicenseType, LighthousePermission, Policy,
    DEFAULT_REGIONS, DEFAULT_TOKEN_RETENTION,
};
pub use shares::{Share, Shares};
pub use state::{Account, GatheredImages, LedgerState, Listed, ListingStamps, Stamp};
