//! The read side as kept in the store: what a batch of events changes in it,
//! a full rewrite for rebuilds, and loading it back at start.
//!
//! Keys (inside the store's projection keyspace):
//! - `a<account>` → the account (JSON)
//! - `i<image>` → the image aggregate with its shares (JSON), deleted ones included
//! - `o<owner>\0<region>\0<image>` → empty: live images per owner and region
//! - `r<recipient>\0<region>\0<image>` → share time (RFC 3339): images shared with an account
//! - `q<owner>\0<region>` → image count (u32 big-endian): quota usage

use std::collections::BTreeSet;

use crate::domain::{AccountId, Event, Image, ImageId, LedgerState, Region};
use crate::store::{EventStore, ProjectionOp, StoreError};

/// The aggregates a batch changed.
#[derive(Debug, Default, Clone)]
pub struct Touched {
    /// Accounts registered or changed.
    pub accounts: BTreeSet<AccountId>,
    /// Images created or changed.
    pub images: BTreeSet<ImageId>,
}

impl Touched {
    /// Adds everything `other` touched.
    pub fn extend(&mut self, other: &Touched) {
        self.accounts.extend(other.accounts.iter().cloned());
        self.images.extend(other.images.iter().cloned());
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.images.is_empty()
    }

    /// Notes the aggregate an event changes.
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::AccountRegistered { account_id, .. } => {
                self.accounts.insert(account_id.clone());
            }
            _ => {
                if let Some(id) = event.image_id() {
                    self.images.insert(id.clone());
                }
            }
        }
    }
}

/// The projection writes that turn the read side of `before` into that of `after`,
/// given the aggregates that changed.
pub fn diff(
    before: &LedgerState,
    after: &LedgerState,
    touched: &Touched,
) -> Result<Vec<ProjectionOp>, StoreError> {
    let mut ops = Vec::new();
    let mut quota_keys = BTreeSet::new();
    for id in &touched.accounts {
        if let Some(account) = after.account(id) {
            ops.push(put(key(b'a', &[id.as_str()]), json(account)?));
        }
    }
    for id in &touched.images {
        let Some(new) = after.any_image(id) else {
            continue;
        };
        let old = before.any_image(id).filter(|image| !image.deleted);
        ops.push(put(key(b'i', &[id.as_str()]), json(new)?));
        let owned = owned_key(new);
        match (old.is_some(), new.deleted) {
            (false, false) => ops.push(put(owned, Vec::new())),
            (true, true) => ops.push(delete(owned)),
            _ => {}
        }
        if let Some(old) = old {
            for account in old.shares.keys() {
                if new.deleted || !new.shares.contains_key(account) {
                    ops.push(delete(shared_key(account, &new.region, id)));
                }
            }
        }
        if !new.deleted {
            for (account, share) in &new.shares {
                if old.is_none_or(|old| old.shares.get(account) != Some(share)) {
                    ops.push(put(
                        shared_key(account, &new.region, id),
                        rfc3339(share.created_time)?,
                    ));
                }
            }
        }
        quota_keys.insert((new.owner_account_id.clone(), new.region.clone()));
    }
    for (owner, region) in quota_keys {
        let used = after.images_used(&owner, &region);
        let k = key(b'q', &[owner.as_str(), region.as_str()]);
        ops.push(if used == 0 {
            delete(k)
        } else {
            put(k, used.to_be_bytes().to_vec())
        });
    }
    Ok(ops)
}

/// Every projection entry of `state`, for a rebuild.
pub fn full(state: &LedgerState) -> Result<Vec<ProjectionOp>, StoreError> {
    let touched = Touched {
        accounts: state.accounts().map(|(id, _)| id.clone()).collect(),
        images: state.images().map(|image| image.image_id.clone()).collect(),
    };
    diff(&LedgerState::default(), state, &touched)
}

/// Loads the state saved in the projections.
pub fn load(store: &dyn EventStore) -> Result<LedgerState, StoreError> {
    let mut accounts = Vec::new();
    for (key, value) in store.projection_scan(b"a")? {
        let id = AccountId::parse(&String::from_utf8_lossy(&key[1..]))
            .map_err(|e| StoreError::Corrupt(format!("projected account key: {e}")))?;
        let account = serde_json::from_slice(&value).map_err(StoreError::decode)?;
        accounts.push((id, account));
    }
    let mut images = Vec::new();
    for (_, value) in store.projection_scan(b"i")? {
        let image: Image = serde_json::from_slice(&value).map_err(StoreError::decode)?;
        images.push(image);
    }
    Ok(LedgerState::restore(accounts, images))
}

fn owned_key(image: &Image) -> Vec<u8> {
    key(
        b'o',
        &[
            image.owner_account_id.as_str(),
            image.region.as_str(),
            image.image_id.as_str(),
        ],
    )
}

fn shared_key(account: &AccountId, region: &Region, image: &ImageId) -> Vec<u8> {
    key(b'r', &[account.as_str(), region.as_str(), image.as_str()])
}

fn key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut out = vec![tag];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn put(key: Vec<u8>, value: Vec<u8>) -> ProjectionOp {
    ProjectionOp {
        key,
        value: Some(value),
    }
}

fn delete(key: Vec<u8>) -> ProjectionOp {
    ProjectionOp { key, value: None }
}

fn json(value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::encode)
}

fn rfc3339(time: time::OffsetDateTime) -> Result<Vec<u8>, StoreError> {
    time.format(&time::format_description::well_known::Rfc3339)
        .map(String::into_bytes)
        .map_err(|e| StoreError::Backend(format!("cannot format a time: {e}")))
}
