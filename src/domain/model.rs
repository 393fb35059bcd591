//! Value types shared by the aggregates: enums of the contract and the policy.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{DomainError, Region};

/// Whether an account is a root (master) account or a collaborator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountKind {
    /// A root account: images can be shared with it.
    Root,
    /// A collaborator (sub) account: images cannot be shared with it.
    Collaborator,
}

impl AccountKind {
    /// Its name in the API (`ROOT`, `COLLABORATOR`).
    pub fn name(self) -> &'static str {
        match self {
            AccountKind::Root => "ROOT",
            AccountKind::Collaborator => "COLLABORATOR",
        }
    }
}

/// How an image came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageSource {
    /// Made from an instance.
    CreateImage,
    /// Imported from outside.
    ExternalImport,
}

/// The licence an image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseType {
    /// Licence provided by the cloud.
    Tencentcloud,
    /// Bring your own licence: such images cannot be shared.
    Byol,
}

/// The lifecycle state of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageState {
    /// Being made from an instance.
    Creating,
    /// Usable.
    Normal,
    /// Making it failed.
    Createfailed,
    /// Being copied into its region.
    Syncing,
    /// Being imported.
    Importing,
    /// Importing it failed.
    Importfailed,
}

impl ImageState {
    /// States in which the image is still being produced and cannot be deleted.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ImageState::Creating | ImageState::Syncing | ImageState::Importing
        )
    }

    /// The contract's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            ImageState::Creating => "CREATING",
            ImageState::Normal => "NORMAL",
            ImageState::Createfailed => "CREATEFAILED",
            ImageState::Syncing => "SYNCING",
            ImageState::Importing => "IMPORTING",
            ImageState::Importfailed => "IMPORTFAILED",
        }
    }
}

/// What an account wants to do with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageUse {
    /// Create an instance from the image.
    CreateInstance,
    /// Reinstall an instance with the image.
    ReinstallInstance,
    /// Export the image out of the cloud.
    Export,
}

/// Share with, or withdraw from, Lighthouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LighthousePermission {
    /// Make the image usable by Lighthouse in the same account and region.
    Share,
    /// Withdraw it from Lighthouse.
    Cancel,
}

/// The limits and the region list the rules are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Most accounts one image may be shared with.
    pub max_shares_per_image: usize,
    /// Most accounts one Share or Cancel call may name.
    pub max_accounts_per_call: usize,
    /// Most custom images one account may own in one region.
    pub image_quota: u32,
    /// The regions images may live in.
    pub regions: BTreeSet<Region>,
    /// How long a command's `client_token` is remembered (its idempotency
    /// record kept): a retry within it gets the first reply; one after it
    /// runs as a new command. At least one second.
    pub token_retention: std::time::Duration,
}

/// The default of [`Policy::token_retention`]: a day, as payment APIs keep
/// idempotency keys.
pub const DEFAULT_TOKEN_RETENTION: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The public regions accepted when no list is configured.
pub const DEFAULT_REGIONS: &[&str] = &[
    "ap-guangzhou",
    "ap-shanghai",
    "ap-nanjing",
    "ap-beijing",
    "ap-chengdu",
    "ap-chongqing",
    "ap-hongkong",
    "ap-singapore",
    "ap-jakarta",
    "ap-seoul",
    "ap-tokyo",
    "ap-bangkok",
    "na-siliconvalley",
    "na-ashburn",
    "sa-saopaulo",
    "eu-frankfurt",
];

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_shares_per_image: 50,
            max_accounts_per_call: 50,
            image_quota: 500,
            regions: DEFAULT_REGIONS.iter().map(|r| Region::new(*r)).collect(),
            token_retention: DEFAULT_TOKEN_RETENTION,
        }
    }
}

impl Policy {
    /// The retention in microseconds, as record times are kept.
    pub fn token_retention_micros(&self) -> i64 {
        i64::try_from(self.token_retention.as_micros()).unwrap_or(i64::MAX)
    }

    /// Checks that a region is one of the configured ones.
    pub fn check_region(&self, region: &Region) -> Result<(), DomainError> {
        if self.regions.contains(region) {
            Ok(())
        } else {
            let supported: Vec<&str> = self.regions.iter().map(Region::as_str).collect();
            Err(DomainError::RegionNotFound(format!(
                "the region {} is not one of the supported regions: {}",
                super::ids::quoted(region.as_str()),
                supported.join(", ")
            )))
        }
    }
}
