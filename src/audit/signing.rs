//! The ledger's Ed25519 key and signed heads: a head an auditor saves today
//! proves later whether the history up to it was rewritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::store::{Envelope, EventLog, Head};

/// File name of the key inside a data directory.
pub const KEY_FILE: &str = "ledger-signing.key";

/// What a signature covers, prefixed so it can never be mistaken for another message.
const DOMAIN: &str = "imageledger-head-v1";

/// The ledger's signing key.
pub struct LedgerKey {
    key: SigningKey,
}

impl LedgerKey {
    /// The default key path for a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// Loads the key (64 hex characters: the secret seed) from `path`, or
    /// creates one there, readable by its owner only, if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(text.trim())
                .map_err(|what| AuditError::Key(format!("{}: {what}", path.display()))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::fill(&mut seed);
                write_private(path, hex::encode(seed).as_bytes()).map_err(|e| {
                    AuditError::io(
                        format!("cannot write the signing key to {}", path.display()),
                        e,
                    )
                })?;
                tracing::info!(path = %path.display(), "generated the ledger signing key");
                Ok(Self {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(err) => Err(AuditError::io(
                format!("cannot read {}", path.display()),
                err,
            )),
        }
    }

    /// Loads an existing key, failing if there is none.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuditError::io(format!("cannot read {}", path.display()), e))?;
        Self::parse(text.trim())
            .map_err(|what| AuditError::Key(format!("{}: {what}", path.display())))
    }

    /// The key whose secret seed is `seed` (64 hex characters): what every
    /// replica of one deployment is given, so any of them signs heads that
    /// verify with the same public key.
    pub fn from_seed_hex(seed: &str) -> Result<Self, AuditError> {
        Self::parse(seed.trim())
            .map_err(|_| AuditError::Key("the signing key seed must be 64 hex characters".into()))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text, &mut seed)
            .map_err(|_| "the key file must hold 64 hex characters".to_string())?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Signs a head.
    pub fn sign(&self, head: Head, recorded_at: Option<String>) -> SignedHead {
        let mut signed = SignedHead {
            position: head.position,
            hash: hex::encode(head.hash),
            recorded_at,
            public_key: self.public_hex(),
            signature: String::new(),
        };
        signed.signature = hex::encode(self.key.sign(&signed.message()).to_bytes());
        signed
    }

    /// Signs the current head of `store`.
    pub fn sign_store_head(&self, store: &dyn EventLog) -> Result<SignedHead, AuditError> {
        let head = store.head()?;
        self.sign_head_of(store, head)
    }

    /// Signs `head`, reading its time from the log.
    pub fn sign_head_of(&self, store: &dyn EventLog, head: Head) -> Result<SignedHead, AuditError> {
        let recorded_at = match store.read_at(head.position)? {
            Some(bytes) if head.position > 0 => Some(rfc3339(&Envelope::decode(&bytes)?)),
            _ => None,
        };
        Ok(self.sign(head, recorded_at))
    }
}

fn rfc3339(envelope: &Envelope) -> String {
    envelope
        .recorded_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A head with the ledger's signature over it. Saved as JSON by auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// Position of the last record (0 for an empty log).
    pub position: u64,
    /// Its hash, hex.
    pub hash: String,
    /// When it was recorded (RFC 3339), absent for an empty log.
    pub recorded_at: Option<String>,
    /// The signer's Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature over [`SignedHead::message`], hex.
    pub signature: String,
}

impl SignedHead {
    /// The signed bytes: `imageledger-head-v1\n<position>\n<hash>\n<recorded_at or empty>`.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{DOMAIN}\n{}\n{}\n{}",
            self.position,
            self.hash,
            self.recorded_at.as_deref().unwrap_or("")
        )
        .into_bytes()
    }

    /// Checks the signature against the head's own public key.
    pub fn check_signature(&self) -> Result<(), AuditError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(&self.public_key, &mut key)
            .map_err(|_| AuditError::Key("the head's public key is not 32 bytes of hex".into()))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| {
            AuditError::Key("the head's public key is not a valid Ed25519 key".into())
        })?;
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut signature)
            .map_err(|_| AuditError::Key("the head's signature is not 64 bytes of hex".into()))?;
        key.verify_strict(&self.message(), &Signature::from_bytes(&signature))
            .map_err(|_| AuditError::Key("the head's signature does not match it".into()))
    }

    /// Checks the signature and that it was made by `public_key` (hex).
    pub fn check_signed_by(&self, public_key: &str) -> Result<(), AuditError> {
        if !self.public_key.eq_ignore_ascii_case(public_key) {
            return Err(AuditError::Key(format!(
                "the head was signed by {} but the ledger's key is {public_key}",
                self.public_key
            )));
        }
        self.check_signature()
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
