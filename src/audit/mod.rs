//! Audit and replay tooling: verification of the whole log, export and
//! import (backup and restore), history and point-in-time access, and the
//! signed heads that pin history.

mod commands;
mod history;
mod import;
mod rules;
mod signing;
mod verify;

#[cfg(test)]
mod tests;

use thiserror::Error;

pub use history::{
    access_as_of, account_history, describe_event, image_history, Access, AccessEntry, AsOf,
    Record, Role,
};
pub use import::{export, import, import_into_database, ImportReport};
pub use rules::RuleChecker;
pub use signing::{LedgerKey, SignedHead, KEY_FILE};
#[cfg(test)]
pub(crate) use verify::first_key_off_the_writes;
pub use verify::{verify, VerifyOptions, VerifyReport};

use crate::store::StoreError;

/// Why an audit command failed. The first three variants are findings about
/// the data; the rest are failures to do the work.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The log is wrong at this position: a gap, a broken hash, an illegal event.
    #[error("position {position}: {what}")]
    Invalid {
        /// The first position found wrong.
        position: u64,
        /// What is wrong there.
        what: String,
    },
    /// An import file is wrong at this line (1-based).
    #[error("line {line}: {what}")]
    Line {
        /// The line.
        line: u64,
        /// What is wrong with it.
        what: String,
    },
    /// The stored read side does not equal a fresh replay of the log.
    #[error("projections: {0}")]
    Projections(String),
    /// A key or signature problem.
    #[error("signing key: {0}")]
    Key(String),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written: what was tried, and why not.
    #[error("{what}: {source}")]
    Io {
        /// What was tried (`cannot read /srv/ledger/ledger-signing.key`).
        what: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A thread of the audit tool itself failed (a reader panicked).
    #[error("{0}")]
    Task(String),
    /// The request itself is not usable (bad id, bad time, target not empty).
    #[error("{0}")]
    Usage(String),
}

impl AuditError {
    /// An [`AuditError::Io`]: `what` was tried and `source` said no.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        AuditError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn at(position: u64, what: impl Into<String>) -> Self {
        AuditError::Invalid {
            position,
            what: what.into(),
        }
    }
}
