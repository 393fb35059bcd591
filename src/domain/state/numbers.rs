//! Numbers for the account ids and regions that listings are kept under,
//! one table for the whole process: a listing's key is then two `u32`s
//! (8 bytes, compared as integers) instead of two `CompactString`s (48
//! bytes, compared as text). At a million images there are millions of
//! listings, and their keys were the largest part of the listing index.
//!
//! Only applying an event numbers a new id ([`Numbers::number`]); a query
//! only looks one up ([`Numbers::find`]), so no request can grow the table.
//! Numbers are never reused and a table never shrinks: accounts and
//! regions that listed an image stay in the state for good anyway.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{LazyLock, RwLock};

use crate::domain::{AccountId, Region};

/// The account ids that listings are kept under.
pub(super) static ACCOUNTS: LazyLock<Numbers<AccountId>> = LazyLock::new(Numbers::default);
/// The regions that listings are kept under.
pub(super) static REGIONS: LazyLock<Numbers<Region>> = LazyLock::new(Numbers::default);

/// A table of values and their numbers, from 0 in the order they came.
#[derive(Debug)]
pub(super) struct Numbers<T> {
    table: RwLock<Table<T>>,
}

#[derive(Debug)]
struct Table<T> {
    numbers: HashMap<T, u32, foldhash::fast::RandomState>,
    values: Vec<T>,
}

impl<T> Default for Numbers<T> {
    fn default() -> Self {
        Self {
            table: RwLock::new(Table {
                numbers: HashMap::default(),
                values: Vec::new(),
            }),
        }
    }
}

impl<T: Clone + Eq + Hash> Numbers<T> {
    /// The number of `value`, if it has one.
    pub(super) fn find(&self, value: &T) -> Option<u32> {
        // A panic while the table was held for writing left it whole: the
        // value is pushed before its number is recorded.
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.numbers.get(value).copied()
    }

    /// The number of `value`, given it one if it had none.
    pub(super) fn number(&self, value: &T) -> u32 {
        if let Some(number) = self.find(value) {
            return number;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(number) = table.numbers.get(value) {
            return *number;
        }
        // Four billion ids would take hundreds of gigabytes of state first.
        let number = u32::try_from(table.values.len())
            .unwrap_or_else(|_| panic!("more than {} listing keys numbered", u32::MAX));
        table.values.push(value.clone());
        table.numbers.insert(value.clone(), number);
        number
    }

    /// The value numbered `number` (numbered by [`Self::number`]).
    pub(super) fn value(&self, number: u32) -> Option<T> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.values.get(number as usize).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_keeps_its_number_and_a_lookup_numbers_nothing() {
        let numbers: Numbers<String> = Numbers::default();
        assert_eq!(numbers.find(&"a".to_string()), None);
        assert_eq!(numbers.number(&"a".to_string()), 0);
        assert_eq!(numbers.number(&"b".to_string()), 1);
        assert_eq!(numbers.number(&"a".to_string()), 0);
        assert_eq!(numbers.find(&"b".to_string()), Some(1));
        assert_eq!(numbers.find(&"c".to_string()), None);
        assert_eq!(numbers.value(1), Some("b".to_string()));
        assert_eq!(numbers.value(2), None);
    }
}
