//! The image aggregate: one custom image, its shares and its lifecycle.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    AccountId, DeletionProtection, Event, ImageAttributes, ImageId, ImageRef, ImageState, Region,
    Share, Shares,
};

/// The state of one image, rebuilt from its stream of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Its id.
    pub image_id: ImageId,
    /// The owning account.
    pub owner_account_id: AccountId,
    /// The one region it lives in.
    pub region: Region,
    /// Name, description and the fixed properties. Behind an `Arc` since
    /// they rarely change: copying the image (as the state does when it
    /// changes one a published snapshot still holds) then copies no text.
    #[serde(flatten)]
    pub attributes: Arc<ImageAttributes>,
    /// Lifecycle state.
    pub state: ImageState,
    /// When it was registered or copied.
    #[serde(with = "time::serde::rfc3339")]
    pub created_time: OffsetDateTime,
    /// The source image when this is a copy. Boxed: most images are not
    /// copies, and in place it took 48 bytes of every image.
    pub copied_from: Option<Box<ImageRef>>,
    /// The accounts it is shared with and since when (persisted as entries
    /// of their own, so a share does not rewrite the image).
    #[serde(skip)]
    pub shares: Shares,
    /// Whether Lighthouse of the same account and region may use it.
    pub lighthouse_shared: bool,
    /// Whether it was deleted (kept so the id is never reused).
    pub deleted: bool,
    /// Whether its owner disabled it: nobody may use it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Whether its owner deprecated it: it cannot be shared or copied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    /// Whether delete is refused.
    #[serde(default, skip_serializing_if = "DeletionProtection::is_off")]
    pub deletion_protection: DeletionProtection,
    /// Number of events in its stream (persisted on its own).
    #[serde(skip)]
    pub version: u64,
}

/// How an account stands towards an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// It owns the image.
    Owner,
    /// The image is shared with it.
    Recipient,
    /// Neither.
    Stranger,
}

impl Image {
    /// Builds an image from the first event of its stream; `None` for any other event.
    pub fn from_creation(event: &Event) -> Option<Self> {
        let (image_id, owner, region, attributes, state, created_time, copied_from) = match event {
            Event::ImageRegistered {
                image_id,
                owner_account_id,
                region,
                attributes,
                state,
                created_time,
            } => (
                image_id,
                owner_account_id,
                region,
                attributes,
                state,
                created_time,
                None,
            ),
            Event::ImageCopied {
                image_id,
                owner_account_id,
                region,
                copied_from,
                attributes,
                state,
                created_time,
            } => (
                image_id,
                owner_account_id,
                region,
                attributes,
                state,
                created_time,
                Some(Box::new(copied_from.clone())),
            ),
            _ => return None,
        };
        Some(Self {
            image_id: image_id.clone(),
            owner_account_id: owner.clone(),
            region: region.clone(),
            attributes: Arc::new(attributes.clone()),
            state: *state,
            created_time: *created_time,
            copied_from,
            shares: Shares::default(),
            lighthouse_shared: false,
            deleted: false,
            disabled: false,
            deprecated: false,
            deletion_protection: DeletionProtection::default(),
            version: 1,
        })
    }

    /// Applies a later event of this image's stream. Holds no rules and cannot fail.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ImageStateChanged { to, .. } => self.state = *to,
            Event::ImageAttributesModified {
                image_name,
                image_description,
                ..
            } => {
                if let Some(name) = image_name {
                    Arc::make_mut(&mut self.attributes).image_name = name.as_str().into();
                }
                if let Some(description) = image_description {
                    Arc::make_mut(&mut self.attributes).image_description =
                        description.as_str().into();
                }
            }
            Event::ImageShared {
                account_ids,
                shared_time,
                expires_at,
                ..
            } => {
                for account in account_ids {
                    self.shares.insert(
                        account.clone(),
                        Share {
                            created_time: *shared_time,
                            expires_at: *expires_at,
                        },
                    );
                }
            }
            Event::ShareCancelled { account_ids, .. } | Event::ShareExpired { account_ids, .. } => {
                for account in account_ids {
                    self.shares.remove(account);
                }
            }
            Event::ShareExpiryModified {
                account_ids,
                expires_at,
                ..
            } => {
                for account in account_ids {
                    if let Some(share) = self.shares.get_mut(account) {
                        share.expires_at = *expires_at;
                    }
                }
            }
            Event::LighthouseShared { .. } => self.lighthouse_shared = true,
            Event::LighthouseShareCancelled { .. } => self.lighthouse_shared = false,
            Event::ImageDeleted { .. } => {
                // Only shares that had expired can be left (see `is_shared_at`).
                self.deleted = true;
                self.shares.clear();
            }
            Event::ShareLeft { account_id, .. } => {
                self.shares.remove(account_id);
            }
            Event::ImageDisabled { .. } => {
                self.disabled = true;
                self.shares.clear();
                self.lighthouse_shared = false;
            }
            Event::ImageEnabled { .. } => self.disabled = false,
            Event::DeletionProtectionEnabled { .. } => {
                self.deletion_protection = DeletionProtection {
                    enabled: true,
                    delete_allowed_after: None,
                }
            }
            Event::DeletionProtectionDisabled {
                delete_allowed_after,
                ..
            } => {
                self.deletion_protection = DeletionProtection {
                    enabled: false,
                    delete_allowed_after: *delete_allowed_after,
                }
            }
            Event::ImageDeprecated { .. } => self.deprecated = true,
            Event::ImageUndeprecated { .. } => self.deprecated = false,
            Event::AccountRegistered { .. }
            | Event::TrustedImageOwnersSet { .. }
            | Event::LedgerLimitsSet { .. }
            | Event::ImageRegistered { .. }
            | Event::ImageCopied { .. } => {}
        }
        self.version += 1;
    }

    /// How `account` stands towards this image.
    pub fn relation(&self, account: &AccountId) -> Relation {
        if &self.owner_account_id == account {
            Relation::Owner
        } else if self.shares.contains_key(account) {
            Relation::Recipient
        } else {
            Relation::Stranger
        }
    }

    /// How `account` stands towards this image at `now`: a share that
    /// expired by then no longer makes it a recipient.
    pub fn relation_at(&self, account: &AccountId, now: OffsetDateTime) -> Relation {
        match self.relation(account) {
            Relation::Recipient if !self.shares[account].live_at(now) => Relation::Stranger,
            relation => relation,
        }
    }

    /// Whether it is shared with anyone (accounts or Lighthouse) at `now`: a
    /// share that has ended counts no more, recorded as ended or not.
    pub fn is_shared_at(&self, now: OffsetDateTime) -> bool {
        self.lighthouse_shared || self.shares.values().any(|share| share.live_at(now))
    }

    /// How many accounts it is shared with at `now`.
    pub fn live_shares(&self, now: OffsetDateTime) -> usize {
        self.shares
            .values()
            .filter(|share| share.live_at(now))
            .count()
    }

    /// This image's id and region.
    pub fn image_ref(&self) -> ImageRef {
        ImageRef {
            image_id: self.image_id.clone(),
            region: self.region.clone(),
        }
    }
}
