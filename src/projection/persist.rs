//! The state as kept in the store, so a start does not replay the whole log:
//! what a batch of events changes in it, a full rewrite for rebuilds, and
//! loading it back at start. The indexes the queries use (images per owner,
//! images shared with an account, quota usage) are derived from these
//! entries in memory when they load, so a share writes two small entries.
//!
//! Keys (inside the store's projection keyspace):
//! - `a<account>` → the account (JSON)
//! - `i<image>` → the image without its shares and version (JSON), deleted ones included
//! - `l` → the limits the log last recorded (JSON), once it records any
//! - `s<image>\0<account>` → share time (RFC 3339), then a space and its
//!   end when it has one: the image's shares
//!
//! Versions are not read from here: the store's stream index has them.
//!
//! The ledger writes this read side behind the log, every few seconds, in
//! key-ordered steps ([`ProjectionStore::save_projections`](crate::store::ProjectionStore::save_projections)), and a
//! crash can cut such a write short: the entries then hold the state at the
//! checkpoint with a key-ordered prefix of the changes up to a later
//! position applied. Loading that and replaying the log from the checkpoint
//! still gives the right state, because
//! - applying an event sets what it changes (a share, a field, a flag) to a
//!   value of its own, whatever was there: replaying every event after the
//!   checkpoint sets every entry a later event changed to the value the last
//!   such event gives it, and the entries no later event changed are as at
//!   the checkpoint;
//! - versions, the one thing an event counts up, come from the stream index
//!   as of the checkpoint, not from the entries;
//! - `a` and `i` keys sort before `s` keys, and an image's entry is never
//!   deleted, so every stored share has its image.

use std::collections::{HashMap, HashSet};

use crate::domain::{
    Account, AccountId, Event, Image, ImageId, LedgerState, Limits, Share, LEDGER_STREAM,
};
use crate::store::{Entries, ProjectionOp, ProjectionStoreExt, Store, StoreError};

/// A hash set with a fast, per-process randomly seeded hasher.
type Set<T> = HashSet<T, foldhash::fast::RandomState>;

/// The aggregates a batch changed, in no particular order (the read side
/// sorts the writes they lead to).
#[derive(Debug, Default, Clone)]
pub struct Touched {
    /// Accounts registered or changed.
    pub accounts: Set<AccountId>,
    /// Images created or changed.
    pub images: Set<ImageId>,
    /// Whether the limits were recorded.
    pub limits: bool,
}

impl Touched {
    /// Adds everything `other` touched (moved, not copied).
    pub fn extend(&mut self, mut other: Touched) {
        // Merge the smaller set into the larger one.
        if other.images.len() > self.images.len() {
            std::mem::swap(&mut self.images, &mut other.images);
        }
        if other.accounts.len() > self.accounts.len() {
            std::mem::swap(&mut self.accounts, &mut other.accounts);
        }
        self.accounts.extend(other.accounts);
        self.images.extend(other.images);
        self.limits |= other.limits;
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.images.is_empty() && !self.limits
    }

    /// Notes the aggregate an event changes.
    pub fn record(&mut self, event: &Event) {
        if matches!(event, Event::LedgerLimitsSet { .. }) {
            self.limits = true;
        } else if let Some(id) = event.account_id() {
            self.accounts.insert(id.clone());
        } else if let Some(id) = event.image_id() {
            self.images.insert(id.clone());
        }
    }
}

/// The projection writes that turn the stored state `before` into `after`,
/// given the aggregates that changed.
pub fn diff(
    before: &LedgerState,
    after: &LedgerState,
    touched: &Touched,
) -> Result<Vec<ProjectionOp>, StoreError> {
    let mut ops = Vec::new();
    if touched.limits {
        if let Some(limits) = after.limits() {
            ops.push(put(vec![b'l'], json(&Limits::of(limits))?));
        }
    }
    for id in &touched.accounts {
        if let Some(account) = after.account(id) {
            ops.push(put(key(b'a', &[id.as_str()]), json(account)?));
        }
    }
    for id in &touched.images {
        let Some(new) = after.any_image(id) else {
            continue;
        };
        let old = before.any_image(id);
        // The image itself is written when it appears or a field other than
        // its shares and version changes; shares are entries of their own.
        if old.is_none_or(|old| !same_apart_from_shares(old, new)) {
            ops.push(put(key(b'i', &[id.as_str()]), json(new)?));
        }
        if let Some(old) = old {
            for account in old.shares.keys() {
                if !new.shares.contains_key(account) {
                    ops.push(delete(share_key(id, account)));
                }
            }
        }
        for (account, share) in &new.shares {
            if old.is_none_or(|old| old.shares.get(account) != Some(share)) {
                ops.push(put(share_key(id, account), share_value(share)?));
            }
        }
    }
    Ok(ops)
}

fn same_apart_from_shares(a: &Image, b: &Image) -> bool {
    a.image_id == b.image_id
        && a.owner_account_id == b.owner_account_id
        && a.region == b.region
        && a.attributes == b.attributes
        && a.state == b.state
        && a.created_time == b.created_time
        && a.copied_from == b.copied_from
        && a.lighthouse_shared == b.lighthouse_shared
        && a.deleted == b.deleted
        && a.disabled == b.disabled
        && a.deprecated == b.deprecated
        && a.deletion_protection == b.deletion_protection
}

/// Every projection entry of `state`, for a rebuild.
pub fn full(state: &LedgerState) -> Result<Vec<ProjectionOp>, StoreError> {
    let touched = Touched {
        accounts: state.accounts().map(|(id, _)| id.clone()).collect(),
        images: state.images().map(|image| image.image_id.clone()).collect(),
        limits: state.limits().is_some(),
    };
    diff(&LedgerState::default(), state, &touched)
}

/// Every projection entry of `state`, in key order: what a read side
/// written whole at `state` holds.
pub fn entries(state: &LedgerState) -> Result<Entries, StoreError> {
    let mut entries: Entries = full(state)?
        .into_iter()
        .filter_map(|op| op.value.map(|value| (op.key, value)))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Loads the state saved in the projections.
pub fn load(store: &dyn Store) -> Result<LedgerState, StoreError> {
    // Versions as of the position the read side describes.
    let checkpoint = store.projection_checkpoint()?.unwrap_or(u64::MAX);
    let mut accounts = Vec::new();
    for (key, value) in store.projection_scan(b"a")? {
        let id = AccountId::parse(&key_text(&key[1..])?)
            .map_err(|e| StoreError::Corrupt(format!("projected account key: {e}")))?;
        let account: Account = serde_json::from_slice(&value).map_err(StoreError::decode)?;
        accounts.push((id, account));
    }
    let versions = {
        let ids: Vec<&str> = accounts.iter().map(|(id, _)| id.as_str()).collect();
        store.stream_versions(&ids, checkpoint)?
    };
    for ((_, account), version) in accounts.iter_mut().zip(versions) {
        account.version = version;
    }
    let mut listed = Vec::new();
    for (_, value) in store.projection_scan(b"i")? {
        let image: Image = serde_json::from_slice(&value).map_err(StoreError::decode)?;
        listed.push(image);
    }
    let versions = {
        let ids: Vec<&str> = listed.iter().map(|image| image.image_id.as_str()).collect();
        store.stream_versions(&ids, checkpoint)?
    };
    let mut images = HashMap::with_capacity(listed.len());
    for (mut image, version) in listed.into_iter().zip(versions) {
        image.version = version;
        images.insert(image.image_id.clone(), image);
    }
    for (key, value) in store.projection_scan(b"s")? {
        let text = key_text(&key[1..])?;
        let (image, account) = text
            .split_once('\0')
            .ok_or_else(|| StoreError::Corrupt(format!("projected share key {text:?}")))?;
        let image = image_key(image.as_bytes())?;
        let account = AccountId::parse(account)
            .map_err(|e| StoreError::Corrupt(format!("projected share key: {e}")))?;
        let share = share_of(&value)?;
        images
            .get_mut(&image)
            .ok_or_else(|| StoreError::Corrupt(format!("a share of unknown image {image}")))?
            .shares
            .insert(account, share);
    }
    let limits = match store.projection_scan(b"l")?.into_iter().next() {
        Some((_, value)) => Some(
            serde_json::from_slice::<Limits>(&value)
                .map_err(StoreError::decode)?
                .policy(),
        ),
        None => None,
    };
    let limits_version = store
        .stream_versions(&[LEDGER_STREAM], checkpoint)?
        .first()
        .copied()
        .unwrap_or(0);
    Ok(LedgerState::restore(accounts, images.into_values()).with_limits(limits, limits_version))
}

fn key_text(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt("a projection entry is not UTF-8".into()))
}

fn image_key(bytes: &[u8]) -> Result<ImageId, StoreError> {
    ImageId::parse(&key_text(bytes)?)
        .map_err(|e| StoreError::Corrupt(format!("projected image key: {e}")))
}

fn share_key(image: &ImageId, account: &AccountId) -> Vec<u8> {
    key(b's', &[image.as_str(), account.as_str()])
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

fn rfc3339(time: time::OffsetDateTime) -> Result<String, StoreError> {
    time.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::backend("cannot format a time", e))
}

/// A share's entry: its time, then a space and its end if it has one.
fn share_value(share: &Share) -> Result<Vec<u8>, StoreError> {
    let mut value = rfc3339(share.created_time)?;
    if let Some(end) = share.expires_at {
        value.push(' ');
        value.push_str(&rfc3339(end)?);
    }
    Ok(value.into_bytes())
}

/// The share a [`share_value`] entry holds.
fn share_of(value: &[u8]) -> Result<Share, StoreError> {
    let text = key_text(value)?;
    let parse = |raw: &str| {
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(format!("projected share time: {e}")))
    };
    let (created, end) = match text.split_once(' ') {
        Some((created, end)) => (created, Some(end)),
        None => (text.as_str(), None),
    };
    Ok(Share {
        created_time: parse(created)?,
        expires_at: end.map(parse).transpose()?,
    })
}

/// The first key at which two key-sorted entry lists differ.
pub fn first_difference_sorted<V: PartialEq>(
    a: &[(Vec<u8>, V)],
    b: &[(Vec<u8>, V)],
) -> Option<Vec<u8>> {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return Some(x.0.clone().min(y.0.clone()));
        }
    }
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Less => Some(b[a.len()].0.clone()),
        std::cmp::Ordering::Greater => Some(a[b.len()].0.clone()),
        std::cmp::Ordering::Equal => None,
    }
}
