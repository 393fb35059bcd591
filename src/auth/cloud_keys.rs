//! The Tencent Cloud API keys of the config file's `[[cloud_api.keys]]`:
//! each SecretId with its SecretKey and the one root account it acts for.
//! HMAC signatures are symmetric, so the server holds the keys themselves:
//! read from files only their owner may read (or from the config file),
//! never logged, swapped whole at a reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::Rng;
use serde::Deserialize;
use thiserror::Error;

use crate::domain::AccountId;

/// What every SecretId this server makes starts with, as Tencent's do.
pub const SECRET_ID_PREFIX: &str = "AKID";
/// Characters of a made SecretId after the prefix, and of a SecretKey.
const SECRET_ID_CHARS: usize = 32;
const SECRET_KEY_CHARS: usize = 32;

/// The `[cloud_api]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CloudApiConfig {
    /// The keys, one `[[cloud_api.keys]]` table each.
    #[serde(default)]
    pub keys: Vec<CloudKeyConfig>,
}

/// One `[[cloud_api.keys]]` table.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CloudKeyConfig {
    /// What clients send in the `Credential` of their signature; logged.
    pub secret_id: String,
    /// The SecretKey itself. Prefer `secret_key_file`.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// A file holding the SecretKey (surrounding whitespace ignored),
    /// readable by its owner only; relative to the config file's folder.
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// The root account the key acts for.
    pub account_id: String,
}

impl std::fmt::Debug for CloudKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudKeyConfig")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &self.secret_key.as_ref().map(|_| ".."))
            .field("secret_key_file", &self.secret_key_file)
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// Why a `[cloud_api]` table is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CloudKeyError {
    /// Neither or both of `secret_key` and `secret_key_file`.
    #[error("cloud API key {0:?}: give exactly one of secret_key and secret_key_file")]
    KeySource(String),
    /// The key file cannot be read.
    #[error("cloud API key {id:?}: cannot read {path}: {why}")]
    Unreadable {
        /// The SecretId.
        id: String,
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The key file may be read by others than its owner.
    #[error(
        "cloud API key {id:?}: {path} may be read by group or others (mode {mode:o}); chmod 600 it"
    )]
    Exposed {
        /// The SecretId.
        id: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An empty key, or a SecretId with characters a header cannot carry.
    #[error("cloud API key {0:?}: the SecretId must be 1 to 128 letters, digits, '-' or '_', and the SecretKey not empty")]
    Malformed(String),
    /// The account is not an account id.
    #[error("cloud API key {id:?}: account_id {account:?} is not a string of at most 20 digits")]
    Account {
        /// The SecretId.
        id: String,
        /// What was given.
        account: String,
    },
    /// One SecretId listed twice.
    #[error("cloud API key {0:?} is listed twice")]
    Duplicate(String),
}

/// A checked key: the secret and the account it acts for.
#[derive(Clone)]
pub struct CloudKey {
    /// The SecretId.
    pub secret_id: Arc<str>,
    /// The account every request signed with it acts for.
    pub account: AccountId,
    /// The principal its records name: `cloud key <SecretId>`.
    pub principal: Arc<str>,
    secret: Arc<[u8]>,
}

impl CloudKey {
    /// The SecretKey's bytes, for the HMAC.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl std::fmt::Debug for CloudKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudKey")
            .field("secret_id", &self.secret_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The keys by SecretId.
pub type KeyTable = HashMap<Arc<str>, CloudKey>;

/// Checks `config`, reading key files relative to `base` (the config
/// file's folder).
pub fn key_table(config: &CloudApiConfig, base: &Path) -> Result<KeyTable, CloudKeyError> {
    let mut table = KeyTable::new();
    for entry in &config.keys {
        let id = entry.secret_id.clone();
        let secret = match (&entry.secret_key, &entry.secret_key_file) {
            (Some(key), None) => key.trim().to_owned(),
            (None, Some(file)) => read_key_file(&id, &base.join(file))?,
            _ => return Err(CloudKeyError::KeySource(id)),
        };
        let id_ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok || secret.is_empty() {
            return Err(CloudKeyError::Malformed(id));
        }
        let account = AccountId::parse(&entry.account_id).map_err(|_| CloudKeyError::Account {
            id: id.clone(),
            account: entry.account_id.clone(),
        })?;
        let secret_id: Arc<str> = id.as_str().into();
        let key = CloudKey {
            principal: format!("cloud key {id}").into(),
            secret_id: Arc::clone(&secret_id),
            account,
            secret: secret.into_bytes().into(),
        };
        if table.insert(secret_id, key).is_some() {
            return Err(CloudKeyError::Duplicate(id));
        }
    }
    Ok(table)
}

fn read_key_file(id: &str, path: &Path) -> Result<String, CloudKeyError> {
    let unreadable = |why: String| CloudKeyError::Unreadable {
        id: id.to_owned(),
        path: path.to_owned(),
        why,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CloudKeyError::Exposed {
                id: id.to_owned(),
                path: path.to_owned(),
                mode,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    Ok(text.trim().to_owned())
}

/// The keys a running server checks signatures with; [`CloudKeys::replace`]
/// swaps them whole (a SIGHUP), and requests in flight finish with the
/// table they started with.
#[derive(Default)]
pub struct CloudKeys {
    current: ArcSwap<KeyTable>,
}

impl CloudKeys {
    /// Holds `table`.
    pub fn new(table: KeyTable) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The key with this SecretId.
    pub fn get(&self, secret_id: &str) -> Option<CloudKey> {
        self.current.load().get(secret_id).cloned()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Uses `table` from now on.
    pub fn replace(&self, table: KeyTable) {
        self.current.store(Arc::new(table));
    }
}

impl std::fmt::Debug for CloudKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloudKeys({} keys)", self.len())
    }
}

/// A new SecretId and SecretKey, random, in Tencent's alphabet and lengths.
pub fn new_cloud_key() -> (String, String) {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())]))
            .collect()
    };
    let id = format!("{SECRET_ID_PREFIX}{}", pick(SECRET_ID_CHARS));
    let key = pick(SECRET_KEY_CHARS);
    (id, key)
}
