//! The state as kept in the store, so a start does not replay the whole log:
//! what a batch of events changes in it, a full rewrite for rebuilds, and
//! loading it back at start. The indexes the queries use (images per owner,
//! images shared with an account, quota usage) are derived from these
//! entries in memory when they load, so a share writes two small entries.
//!
//! Keys (inside the store's projection keyspace), each value in the binary
//! layout of [`super::codec`]:
//! - `a<account>` → the account with its version
//! - `i<image>` → the image with its shares and version, deleted ones included
//! - `l` → the limits the log last recorded and their version, once it records any
//!
//! The ledger writes this read side behind the log, every few seconds, in
//! key-ordered steps ([`ProjectionStore::save_projections`](crate::store::ProjectionStore::save_projections)), and a
//! crash can cut such a write short: the entries then hold the state at the
//! checkpoint with a key-ordered prefix of the changes up to a later
//! position applied. Loading that and replaying the log from the checkpoint
//! still gives the right state, because applying a record sets what it
//! changes (a share, a field, a flag, and the stream's version, taken from
//! the record) to a value of its own, whatever was there: replaying every
//! record after the checkpoint sets every entry a later record changed to
//! the value the last such record gives it, and the entries no later record
//! changed are as at the checkpoint.

use std::collections::HashSet;
use std::sync::Arc;

use super::codec;
use crate::chunks::chunked;
use crate::domain::{
    Account, AccountId, Event, GatheredImages, Image, ImageId, LedgerState, Limits,
};
use crate::store::{Entries, ProjectionOp, Store, StoreError};

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

/// The projection writes that bring a stored read side to `after`, given
/// the aggregates that changed since it was written, in key order: each
/// changed aggregate's entry, whole (an entry holds the aggregate's
/// version, which every event changes). So they do not depend on what the
/// stored entries hold, and cover a write that stopped part way too.
pub fn changes(after: &LedgerState, touched: &Touched) -> Result<Vec<ProjectionOp>, StoreError> {
    let mut ops = Vec::with_capacity(touched.accounts.len() + touched.images.len() + 1);
    let put = |(key, value)| ProjectionOp {
        key,
        value: Some(value),
    };
    if touched.limits {
        if let Some(entry) = limits_entry(after) {
            ops.push(put(entry?));
        }
    }
    for id in &touched.accounts {
        if let Some(account) = after.account(id) {
            ops.push(put(account_entry(id, account)?));
        }
    }
    for id in &touched.images {
        if let Some(image) = after.any_image(id) {
            ops.push(put(image_entry(image)?));
        }
    }
    ops.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(ops)
}

/// Every projection entry of `state`, in key order, for a rebuild. From
/// the state's own aggregates: as `changes` of every id, it cloned each id
/// and then looked each aggregate up again.
pub fn full(state: &LedgerState) -> Result<Vec<ProjectionOp>, StoreError> {
    entries_in_order(state)
        .map(|entry| {
            entry.map(|(key, value)| ProjectionOp {
                key,
                value: Some(value),
            })
        })
        .collect()
}

/// Every projection entry of `state`, in key order: what a read side
/// written whole at `state` holds.
pub fn entries(state: &LedgerState) -> Result<Entries, StoreError> {
    entries_in_order(state).collect()
}

/// Every projection entry of `state`, in key order, encoded as the
/// iterator reaches it: what [`entries`] holds, without holding it all.
pub fn entries_in_order(
    state: &LedgerState,
) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
    let mut accounts: Vec<(&AccountId, &Account)> = state.accounts().collect();
    accounts.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut images: Vec<&Image> = state.images().collect();
    images.sort_unstable_by(|a, b| a.image_id.cmp(&b.image_id));
    // Tags `a` < `i` < `l`: accounts, images, then the limits.
    accounts
        .into_iter()
        .map(|(id, account)| account_entry(id, account))
        .chain(images.into_iter().map(image_entry))
        .chain(limits_entry(state))
}

/// One projection entry: key and value.
type Entry = (Vec<u8>, Vec<u8>);

/// An account's entry.
fn account_entry(id: &AccountId, account: &Account) -> Result<Entry, StoreError> {
    Ok((key(b'a', id.as_str()), codec::encode_account(account)?))
}

/// An image's entry.
fn image_entry(image: &Image) -> Result<Entry, StoreError> {
    Ok((
        key(b'i', &image.image_id.text()),
        codec::encode_image(image)?,
    ))
}

/// The limits' entry, once the log records limits.
fn limits_entry(state: &LedgerState) -> Option<Result<Entry, StoreError>> {
    let limits = state.limits()?;
    Some(
        codec::encode_limits(Limits::of(limits), state.limits_version())
            .map(|value| (vec![b'l'], value)),
    )
}

/// The first key at which the stored read side differs from the one
/// `state` implies (written whole), both walked in key order one entry at
/// a time (holding both whole took some 600 MB at a million images);
/// `None` when none does.
pub fn first_difference(
    store: &dyn Store,
    state: &LedgerState,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut fresh = entries_in_order(state);
    let mut difference: Option<Vec<u8>> = None;
    store.projection_visit(b"", &mut |key, value| {
        if difference.is_none() {
            difference = match fresh.next().transpose()? {
                None => Some(key.to_vec()),
                Some((k, v)) if k == key && v == value => None,
                Some((k, _)) => Some(k.min(key.to_vec())),
            };
        }
        Ok(())
    })?;
    if difference.is_none() {
        difference = fresh.next().transpose()?.map(|(key, _)| key);
    }
    Ok(difference)
}

/// Loads the state saved in the projections.
pub fn load(store: &dyn Store) -> Result<LedgerState, StoreError> {
    // Share entries of their own were the layout before aggregates were
    // saved whole.
    if !store.projection_scan(b"s")?.is_empty() {
        return Err(StoreError::Corrupt(
            "the read side is in the layout of an earlier version; it is rebuilt from the log"
                .into(),
        ));
    }
    let started = std::time::Instant::now();
    let mut accounts = Vec::new();
    for (key, value) in store.projection_scan(b"a")? {
        let id = AccountId::parse(&key_text(&key[1..])?)
            .map_err(|e| StoreError::Corrupt(format!("projected account key: {e}")))?;
        accounts.push((id, codec::decode_account(&value)?));
    }
    let images = decode_images(store)?;
    let (limits, limits_version) = match store.projection_scan(b"l")?.into_iter().next() {
        Some((_, value)) => {
            let (limits, version) = codec::decode_limits(&value)?;
            (Some(limits.policy()), version)
        }
        None => (None, 0),
    };
    let read = started.elapsed();
    let (accounts_read, images_read) = (accounts.len(), images.len());
    let state = LedgerState::restore_gathered(accounts, images).with_limits(limits, limits_version);
    tracing::debug!(
        accounts = accounts_read,
        images = images_read,
        read_ms = read.as_millis() as u64,
        restore_ms = (started.elapsed() - read).as_millis() as u64,
        "read the read side and restored the state from it"
    );
    Ok(state)
}

/// Image entries read at a time and handed to the decoding thread.
const CHUNK: usize = 1024;

/// The stored images: read on this thread and decoded on another, a chunk
/// at a time, so the entries are never all held at once; each goes
/// straight into the `Arc` the state keeps it in, and into the image map
/// (the reading keeps the decoding thread mostly idle: building the map
/// there took 0.65 s off the restore at a million images).
fn decode_images(store: &dyn Store) -> Result<GatheredImages, StoreError> {
    let (mut tx, rx) = chunked::<Vec<u8>>(CHUNK, 8);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            let mut images = GatheredImages::default();
            for chunk in rx {
                for value in chunk {
                    images.push(Arc::new(codec::decode_image(&value)?));
                }
            }
            Ok::<_, StoreError>(images)
        });
        let read = store.projection_visit(b"i", &mut |_, value| {
            // Refused only when the decoder stopped at an error, which its
            // result reports.
            tx.push(value.to_vec())
                .then_some(())
                .ok_or_else(|| StoreError::Corrupt("an image entry does not decode".into()))
        });
        if read.is_ok() {
            tx.finish();
        } else {
            drop(tx);
        }
        // A panic on the other thread is one of this one.
        let decoded = decoder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // The decoder's error says what was wrong when both failed.
        let images = decoded?;
        read.map(|()| images)
    })
}

fn key_text(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt("a projection entry is not UTF-8".into()))
}

fn key(tag: u8, id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + id.len());
    out.push(tag);
    out.extend_from_slice(id.as_bytes());
    out
}
