//! Bearer tokens: random, with a prefix that secret scanners and people
//! recognise, stored only as SHA-256 digests.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "ilt_";

/// A new token: the prefix and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The digest as the config file holds it.
pub fn digest_hex(token: &str) -> String {
    hex::encode(digest(token))
}
