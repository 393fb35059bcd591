//! Who may call what: principals with roles, recognised by a client
//! certificate's URI or DNS name (over TLS) or a bearer token
//! (`authorization: Bearer …`), and the per-method table of what each role
//! may call. The configuration comes from the config file's `[auth]`
//! table, never from flags; tokens are held only as SHA-256 digests.

mod cloud_keys;
mod roles;
mod token;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::domain::AccountId;
pub use cloud_keys::{
    key_table, new_cloud_key, CloudApiConfig, CloudKey, CloudKeyConfig, CloudKeyError, CloudKeys,
    KeyTable, SECRET_ID_PREFIX,
};
pub use roles::{allowed, is_open, Role};
pub use token::{digest_hex, new_token, TOKEN_PREFIX};

/// Who made a call, put in the request's extensions for the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's name.
    pub principal: Arc<str>,
    /// What it proved itself with: `token <id>` or `certificate <name>`.
    pub credential: Arc<str>,
    /// The only accounts it may act for; `None`: any (a gateway that
    /// authenticated its users itself).
    pub accounts: Option<Arc<BTreeSet<AccountId>>>,
}

impl Caller {
    /// Whether the caller may act for `account`.
    pub fn may_act_for(&self, account: &AccountId) -> bool {
        self.accounts
            .as_ref()
            .is_none_or(|accounts| accounts.contains(account))
    }
}

/// The reason of a call without credentials.
pub const MISSING_CREDENTIALS: &str = "AuthFailure.MissingCredentials";
/// The reason of a bearer token that names no principal.
pub const INVALID_TOKEN: &str = "AuthFailure.InvalidToken";
/// The reason of a client certificate that is not accepted.
pub const INVALID_CERTIFICATE: &str = "AuthFailure.InvalidCertificate";
/// The reason of a valid client certificate that names no principal.
pub const UNKNOWN_CERTIFICATE: &str = "AuthFailure.UnknownCertificate";
/// The reason of a principal whose roles may not call the method.
pub const UNAUTHORIZED_OPERATION: &str = "AuthFailure.UnauthorizedOperation";
/// The reason of a call that acts for an account its principal's
/// `accounts` does not list.
pub const ACCOUNT_NOT_ALLOWED: &str = "AuthFailure.AccountNotAllowed";

/// The `[auth]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Principals by name.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalConfig>,
    /// Bearer tokens, as digests.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One principal: its roles.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// What it may call.
    pub roles: Vec<Role>,
    /// Client certificate names (URI or DNS subject alternative names,
    /// never the CN) that are this principal.
    #[serde(default)]
    pub sans: Vec<String>,
    /// The only accounts it may act for; without it, any.
    #[serde(default)]
    pub accounts: Option<Vec<String>>,
}

/// One bearer token: its id (what logs name), its principal and the hex
/// SHA-256 of the token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The token's name in logs and in rotation.
    pub id: String,
    /// The principal it authenticates.
    pub principal: String,
    /// Lowercase hex SHA-256 of the whole token.
    pub sha256: String,
}

/// Why an `[auth]` table is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthConfigError {
    /// A token names a principal that is not listed.
    #[error("auth token {id:?} names the principal {principal:?}, which [auth.principals] does not list")]
    UnknownPrincipal {
        /// The token's id.
        id: String,
        /// The principal it names.
        principal: String,
    },
    /// A digest that is not 64 hex digits.
    #[error(
        "auth token {0:?}: sha256 must be 64 hex digits (image-ledger auth new-token prints it)"
    )]
    BadDigest(String),
    /// Two tokens with one id or one digest.
    #[error("auth token {0:?} is listed twice (by id or by digest)")]
    Duplicate(String),
    /// One certificate name for two principals.
    #[error("the certificate name {0:?} is listed for two principals")]
    SharedName(String),
    /// A principal without roles.
    #[error("principal {0:?} has no roles")]
    NoRoles(String),
    /// An entry of a principal's `accounts` that is not an account id.
    #[error("principal {principal:?}: accounts lists {account:?}, which is not a string of at most 20 digits")]
    BadAccount {
        /// The principal.
        principal: String,
        /// The entry.
        account: String,
    },
}

/// An authenticated caller: its name and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name the config gives it; recorded in every event it causes.
    pub name: Arc<str>,
    /// What it may call.
    pub roles: Vec<Role>,
    /// The only accounts it may act for; `None`: any.
    pub accounts: Option<Arc<BTreeSet<AccountId>>>,
}

/// The checked `[auth]` table: token digests to principals.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Vec<([u8; 32], Arc<str>, Principal)>,
    names: BTreeMap<String, Principal>,
}

impl Authenticator {
    /// Checks `config` and indexes its tokens.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let mut principals = BTreeMap::new();
        let mut names = BTreeMap::new();
        for (name, principal) in &config.principals {
            if principal.roles.is_empty() {
                return Err(AuthConfigError::NoRoles(name.clone()));
            }
            let accounts = match &principal.accounts {
                None => None,
                Some(listed) => Some(Arc::new(
                    listed
                        .iter()
                        .map(|account| {
                            AccountId::parse(account).map_err(|_| AuthConfigError::BadAccount {
                                principal: name.clone(),
                                account: account.clone(),
                            })
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?,
                )),
            };
            let checked = Principal {
                name: name.as_str().into(),
                roles: principal.roles.clone(),
                accounts,
            };
            for san in &principal.sans {
                if names.insert(san.clone(), checked.clone()).is_some() {
                    return Err(AuthConfigError::SharedName(san.clone()));
                }
            }
            principals.insert(name.as_str(), checked);
        }
        let mut tokens: Vec<([u8; 32], Arc<str>, Principal)> = Vec::new();
        for token in &config.tokens {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&token.sha256, &mut digest)
                .map_err(|_| AuthConfigError::BadDigest(token.id.clone()))?;
            let principal = principals.get(token.principal.as_str()).ok_or_else(|| {
                AuthConfigError::UnknownPrincipal {
                    id: token.id.clone(),
                    principal: token.principal.clone(),
                }
            })?;
            if tokens
                .iter()
                .any(|(d, id, _)| *d == digest || **id == *token.id)
            {
                return Err(AuthConfigError::Duplicate(token.id.clone()));
            }
            tokens.push((digest, token.id.as_str().into(), principal.clone()));
        }
        Ok(Self { tokens, names })
    }

    /// The principal one of a certificate's names is, and that name.
    pub fn by_certificate<'a>(&self, names: &'a [String]) -> Option<(&Principal, &'a str)> {
        names
            .iter()
            .find_map(|name| self.names.get(name).map(|p| (p, name.as_str())))
    }

    /// The principal and token id of a bearer token, comparing its digest
    /// with every configured one in constant time.
    pub fn by_token(&self, token: &str) -> Option<(&Principal, &Arc<str>)> {
        use subtle::ConstantTimeEq;
        let digest = token::digest(token);
        let mut found = None;
        // Every digest is compared, so the time does not tell which matched.
        for (stored, id, principal) in &self.tokens {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some((principal, id));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests;
