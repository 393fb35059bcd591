//! Where a ledger is kept (a PostgreSQL database, else a sled directory)
//! with its flags, and the one place that opens the store it names.

use std::path::PathBuf;
use std::sync::Arc;

use super::{PgStore, Released, SledStore, Store, StoreError};

/// `--data-dir`, `--database-url` and `--cache-mb`: where the ledger is.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Directory of the sled store (and of the signing key).
    #[arg(long, env = "IMAGE_LEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The ledger's PostgreSQL database, instead of the sled store in
    /// --data-dir (a libpq URL; several hosts with
    /// `target_session_attrs=read-write` follow a failover). A server's
    /// --data-dir then holds only its signing key.
    #[arg(long, env = "IMAGE_LEDGER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// sled page cache size in MiB. The state the commands and queries use
    /// lives outside it, so it only serves log reads (audit, history,
    /// subscriptions) and the pages a write touches.
    #[arg(long, env = "IMAGE_LEDGER_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
}

/// An opened store, and for sled the handle that tells when its directory
/// is released after the last reference is dropped.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// For sled: resolves once the directory's lock is given back.
    pub released: Option<Released>,
}

impl Location {
    /// The sled directory `data_dir` with the default cache.
    pub fn dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..crate::settings::defaults()
        }
    }

    /// The sled page cache in bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb.saturating_mul(1024 * 1024)
    }

    /// The store, for messages (never the URL, which may hold a password).
    pub fn describe(&self) -> String {
        match &self.database_url {
            Some(_) => "the PostgreSQL database".into(),
            None => format!("data directory {}", self.data_dir.display()),
        }
    }

    /// Opens the store: the database when a URL is given (its schema
    /// created or migrated when needed), else the sled store in the
    /// directory (created when missing).
    pub fn open(&self) -> Result<Opened, StoreError> {
        self.open_as(PgStore::open)
    }

    /// [`Self::open`], but a database's schema must be current already and
    /// is not changed: for tools that read (audit, on an auditor's role or
    /// a hot standby) or write only rows.
    pub fn open_existing(&self) -> Result<Opened, StoreError> {
        self.open_as(PgStore::open_existing)
    }

    fn open_as(
        &self,
        database: impl FnOnce(&str) -> Result<PgStore, StoreError>,
    ) -> Result<Opened, StoreError> {
        match &self.database_url {
            Some(url) => Ok(Opened {
                store: Arc::new(database(url)?),
                released: None,
            }),
            None => {
                let started = std::time::Instant::now();
                let store = SledStore::open(&self.data_dir, self.cache_bytes())?;
                tracing::debug!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "opened the sled store"
                );
                let released = Some(store.released());
                Ok(Opened {
                    store: Arc::new(store),
                    released,
                })
            }
        }
    }
}
