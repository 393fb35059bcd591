//! The log as readers outside the writer see it: never past the durable
//! head, each read off the async workers, and a damaged record named as
//! such ([`AppError::Damaged`]) wherever a read meets it.

use std::sync::Arc;

use tokio::sync::watch;

use super::AppError;
use crate::audit::{self, Access, AsOf, AuditError, LedgerKey, SignedHead};
use crate::domain::ImageId;
use crate::store::{try_scan, Envelope, Head, Store, StoreError};

/// A record read from the log: its envelope and its stored bytes.
pub type LogRecord = (Envelope, Vec<u8>);

/// Reads the durable log. Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    store: Arc<dyn Store>,
    durable: watch::Receiver<Head>,
}

impl LogReader {
    pub(super) fn new(store: Arc<dyn Store>, durable: watch::Receiver<Head>) -> Self {
        Self { store, durable }
    }

    /// The durable head now.
    pub fn durable_head(&self) -> Head {
        *self.durable.borrow()
    }

    /// The records `from..=to`, cut at the durable head.
    pub async fn read_range(&self, from: u64, to: u64) -> Result<Vec<LogRecord>, AppError> {
        let to = to.min(self.durable_head().position);
        self.blocking(move |store| {
            let mut out = Vec::new();
            try_scan(store, from, |position, bytes| -> Result<bool, StoreError> {
                if position > to {
                    return Ok(false);
                }
                let envelope = Envelope::decode(bytes).map_err(|err| {
                    StoreError::Corrupt(format!("the record at position {position}: {err}"))
                })?;
                out.push((envelope, bytes.to_vec()));
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }

    /// Every durable record of `image`'s stream, in order.
    pub async fn image_history(&self, image: ImageId) -> Result<Vec<audit::Record>, AppError> {
        let limit = self.durable_head().position;
        let mut records = self
            .blocking(move |store| audit::image_history(store, &image))
            .await?;
        records.retain(|record| record.envelope.position <= limit);
        Ok(records)
    }

    /// Who could use `image` at `as_of`, from the durable log.
    pub async fn access_as_of(&self, image: ImageId, as_of: AsOf) -> Result<Access, AppError> {
        let durable = self.durable_head().position;
        self.blocking(move |store| audit::access_as_of(store, &image, as_of, durable))
            .await
    }

    /// The durable head, signed with `key`.
    pub async fn signed_head(&self, key: Arc<LedgerKey>) -> Result<SignedHead, AppError> {
        let head = self.durable_head();
        self.blocking(move |store| key.sign_head_of(store, head))
            .await
    }

    /// Runs `read` on a blocking thread, naming damage as such.
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Store) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AppError> {
        let store = Arc::clone(&self.store);
        let read = tokio::task::spawn_blocking(move || read(store.as_ref()))
            .await
            .map_err(|err| AppError::Start {
                what: "a reader task",
                source: std::io::Error::other(err.to_string()),
            })?;
        read.map_err(|err| match err {
            AuditError::Store(StoreError::Corrupt(what)) => AppError::Damaged(what),
            AuditError::Store(err) => AppError::Storage(err),
            err => AppError::Audit(err),
        })
    }
}
