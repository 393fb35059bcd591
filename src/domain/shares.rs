//! An image's shares: the accounts it is shared with, each with its share
//! (when it was made, and when it ends if it does).
//!
//! An image has at most a few dozen shares (the per-image limit), and a
//! million images are kept in memory at once, so they are one boxed slice
//! sorted by account: one share costs one allocation of its entry. A
//! `BTreeMap` allocated a node of eleven entries (about 630 bytes) for the
//! first share of every image; a `Vec` took 8 bytes of every image more
//! than a boxed slice, for a capacity that was always its length.

use std::ops::Index;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::AccountId;

/// One account's share of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// When the image was shared with the account.
    #[serde(with = "time::serde::rfc3339")]
    pub created_time: OffsetDateTime,
    /// When the share ends by itself, if it does: from that instant the
    /// account can no longer use or see the image.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

impl Share {
    /// Whether the share still holds at `now`.
    pub fn live_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|end| now < end)
    }
}

/// The shares of one image, by account, in account order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares(Box<[(AccountId, Share)]>);

impl Shares {
    fn find(&self, account: &AccountId) -> Result<usize, usize> {
        self.0.binary_search_by(|(held, _)| held.cmp(account))
    }

    /// The share of `account`, if it has one.
    pub fn get(&self, account: &AccountId) -> Option<&Share> {
        self.find(account).ok().map(|at| &self.0[at].1)
    }

    /// The share of `account` to change, if it has one.
    pub fn get_mut(&mut self, account: &AccountId) -> Option<&mut Share> {
        self.find(account).ok().map(|at| &mut self.0[at].1)
    }

    /// Whether `account` has a share.
    pub fn contains_key(&self, account: &AccountId) -> bool {
        self.find(account).is_ok()
    }

    /// Gives `account` `share`, replacing the one it had.
    pub fn insert(&mut self, account: AccountId, share: Share) {
        match self.find(&account) {
            Ok(at) => self.0[at].1 = share,
            Err(at) => {
                // Rebuilt one longer: most images hold one or two shares,
                // and inserting into a vector moves as many entries.
                let (before, after) = self.0.split_at(at);
                let mut grown = Vec::with_capacity(self.0.len() + 1);
                grown.extend_from_slice(before);
                grown.push((account, share));
                grown.extend_from_slice(after);
                self.0 = grown.into_boxed_slice();
            }
        }
    }

    /// Takes away the share of `account`, if it has one.
    pub fn remove(&mut self, account: &AccountId) {
        if let Ok(at) = self.find(account) {
            let (before, after) = self.0.split_at(at);
            self.0 = before.iter().chain(&after[1..]).cloned().collect();
        }
    }

    /// Takes away every share.
    pub fn clear(&mut self) {
        self.0 = Box::default();
    }

    /// How many shares there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The accounts, in order.
    pub fn keys(&self) -> impl Iterator<Item = &AccountId> {
        self.0.iter().map(|(account, _)| account)
    }

    /// The shares, in account order.
    pub fn values(&self) -> impl Iterator<Item = &Share> {
        self.0.iter().map(|(_, share)| share)
    }

    /// The accounts and their shares, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&AccountId, &Share)> {
        self.0.iter().map(|(account, share)| (account, share))
    }
}

impl Index<&AccountId> for Shares {
    type Output = Share;

    /// The share of an account that has one; panics otherwise, as a map does.
    fn index(&self, account: &AccountId) -> &Share {
        self.get(account).expect("the account has a share")
    }
}

/// Collected exactly sized, as [`Shares::insert`] one at a time would
/// leave them (a later share of an account replaces an earlier one),
/// without a reallocation per share.
impl FromIterator<(AccountId, Share)> for Shares {
    fn from_iter<I: IntoIterator<Item = (AccountId, Share)>>(shares: I) -> Self {
        let mut shares: Vec<(AccountId, Share)> = shares.into_iter().collect();
        // Stable: an account's shares stay in the order they came, and
        // reversed, the last comes first and is the one dedup keeps.
        shares.sort_by(|a, b| a.0.cmp(&b.0));
        shares.reverse();
        shares.dedup_by(|later, kept| later.0 == kept.0);
        shares.reverse();
        Self(shares.into_boxed_slice())
    }
}

impl<'a> IntoIterator for &'a Shares {
    type Item = (&'a AccountId, &'a Share);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (AccountId, Share)>,
        fn(&'a (AccountId, Share)) -> (&'a AccountId, &'a Share),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(account, share)| (account, share))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn acct(id: &str) -> AccountId {
        AccountId::parse(id).expect("valid in the test")
    }

    fn share(second: u8) -> Share {
        Share {
            created_time: datetime!(2026-01-01 0:00 UTC) + time::Duration::seconds(second.into()),
            expires_at: None,
        }
    }

    #[test]
    fn keeps_one_share_per_account_in_account_order() {
        let mut shares = Shares::default();
        shares.insert(acct("300"), share(1));
        shares.insert(acct("100"), share(2));
        shares.insert(acct("200"), share(3));
        shares.insert(acct("100"), share(4));
        assert_eq!(
            shares.iter().collect::<Vec<_>>(),
            vec![
                (&acct("100"), &share(4)),
                (&acct("200"), &share(3)),
                (&acct("300"), &share(1)),
            ]
        );
        assert_eq!(shares[&acct("200")], share(3));
        shares.remove(&acct("200"));
        shares.remove(&acct("999"));
        assert_eq!(
            shares.keys().collect::<Vec<_>>(),
            vec![&acct("100"), &acct("300")]
        );
        assert!(!shares.contains_key(&acct("200")));
        shares.clear();
        assert!(shares.is_empty() && shares.get(&acct("100")).is_none());
    }

    #[test]
    fn collected_shares_are_those_inserting_them_in_turn_leaves() {
        let given = [
            (acct("300"), share(1)),
            (acct("100"), share(2)),
            (acct("200"), share(3)),
            (acct("100"), share(4)),
            (acct("300"), share(5)),
        ];
        let mut inserted = Shares::default();
        for (account, share) in given.clone() {
            inserted.insert(account, share);
        }
        let collected: Shares = given.into_iter().collect();
        assert_eq!(
            collected.iter().collect::<Vec<_>>(),
            vec![
                (&acct("100"), &share(4)),
                (&acct("200"), &share(3)),
                (&acct("300"), &share(5)),
            ]
        );
        assert_eq!(collected, inserted);
        assert_eq!(collected.0.len(), 3);
    }
}
