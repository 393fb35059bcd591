//! Opening what a server serves: the store its settings name, the signing
//! key, and the ledger loaded from the store.

use std::path::PathBuf;
use std::sync::Arc;

use super::ServeError;
use crate::app::{Ledger, WriterOptions};
use crate::audit::LedgerKey;
use crate::config::{Config, Secret};
use crate::metrics::Metrics;
use crate::store::{Released, Store};

/// A loaded ledger, its key, and (for sled) when its directory is released.
pub(super) struct Opened {
    pub(super) ledger: Ledger,
    pub(super) key: LedgerKey,
    pub(super) released: Option<Released>,
}

/// Opens the store, the key and the ledger, off the async workers (opening
/// and loading read the disk).
pub(super) async fn open_ledger(config: &Config, metrics: &Metrics) -> Result<Opened, ServeError> {
    let writer = WriterOptions {
        settings: config.ledger.clone(),
        metrics: Arc::clone(&metrics.ledger),
        ..WriterOptions::default()
    };
    let location = config.store.clone();
    let policy = config.policy.clone();
    let key = KeySource {
        seed: config.signing_key_seed.clone(),
        path: config
            .server
            .signing_key
            .clone()
            .unwrap_or_else(|| LedgerKey::default_path(&location.data_dir)),
        new_key: config.server.new_signing_key,
    };
    tokio::task::spawn_blocking(move || {
        let opened = location.open()?;
        let key = key.load(opened.store.as_ref())?;
        Ok(Opened {
            ledger: Ledger::open(opened.store, policy, writer)?,
            key,
            released: opened.released,
        })
    })
    .await
    .map_err(|e| ServeError::Task(format!("the loading task failed: {e}")))?
}

/// Where the signing key comes from.
struct KeySource {
    seed: Option<Secret>,
    path: PathBuf,
    new_key: bool,
}

impl KeySource {
    /// The seed's key, else the key file's, made on the first start.
    fn load(self, store: &dyn Store) -> Result<LedgerKey, ServeError> {
        if let Some(seed) = &self.seed {
            return Ok(LedgerKey::from_seed_hex(&seed.0)?);
        }
        // A ledger with history has a key already: a missing one was lost,
        // and a new one would sign heads nobody pinned.
        if !self.path.exists() && store.head()?.position > 0 && !self.new_key {
            return Err(ServeError::KeyMissing(self.path));
        }
        Ok(LedgerKey::load_or_create(&self.path)?)
    }
}
