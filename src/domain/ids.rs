//! Identifier and value types that are valid by construction.
//!
//! Ids are kept inline ([`CompactString`]: up to 24 bytes without a heap
//! allocation), which every account id (at most 20 digits) and listed
//! region is; an image id is a number (see [`ImageId`]). Copying one is then a copy of 24
//! bytes: a share to an account that many images are shared with copies
//! the path to its entry in that account's index (the published snapshot
//! shares it), up to 64 image ids per node, and with heap-allocated ids
//! that took twice as long.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::DomainError;

/// Longest name an image may have, in characters.
pub const MAX_NAME_CHARS: usize = 60;
/// Longest description an image may have, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Longest platform or OS name, in characters.
pub const MAX_LABEL_CHARS: usize = 128;
/// Longest client token, in characters.
pub const MAX_CLIENT_TOKEN_CHARS: usize = 64;
/// Longest account id, in digits.
pub const MAX_ACCOUNT_ID_DIGITS: usize = 20;

/// A root or collaborator account id: 1 to 20 ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(CompactString);

impl AccountId {
    /// Parses an account id, rejecting anything that is not 1 to 20 digits.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError::AccountIdMalformed(
                "the account id is empty; it must be a string of digits".into(),
            ));
        }
        if raw.len() > MAX_ACCOUNT_ID_DIGITS || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::AccountIdMalformed(format!(
                "the account id {} is not a string of at most {MAX_ACCOUNT_ID_DIGITS} digits",
                quoted(raw)
            )));
        }
        Ok(Self(CompactString::new(raw)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image id: `img-` followed by 8 characters of `[a-z0-9]`.
///
/// Held as the number its 8 characters spell in base 36, digits before
/// letters as in ASCII, so ids order as their texts do: 8 bytes instead of
/// a 24-byte string. A million images are kept in memory at once, each id
/// in the image map, the image and every listing that holds it: the state
/// held 85 bytes less per aggregate (`tests/state_memory.rs`), and hashing
/// or comparing a number is cheaper than a text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId(u64);

impl ImageId {
    /// Length of the suffix.
    pub const SUFFIX_LEN: usize = 8;
    /// How many ids there are: 36 to the 8th.
    pub const COUNT: u64 = 36u64.pow(Self::SUFFIX_LEN as u32);

    /// Parses an image id of the form `img-xxxxxxxx`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let suffix = raw
            .strip_prefix("img-")
            .filter(|suffix| suffix.len() == Self::SUFFIX_LEN);
        let number = suffix.and_then(|suffix| {
            suffix.bytes().try_fold(0u64, |number, byte| {
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    b'a'..=b'z' => byte - b'a' + 10,
                    _ => return None,
                };
                Some(number * 36 + u64::from(digit))
            })
        });
        number.map(Self).ok_or_else(|| {
            DomainError::ImageIdMalformed(format!(
                "the image id {} is not of the form img- followed by 8 characters of [a-z0-9]",
                quoted(raw)
            ))
        })
    }

    /// The id numbered `number` (below [`Self::COUNT`]; larger numbers
    /// wrap): for id generators, which draw a number instead of 8 characters.
    pub fn from_number(number: u64) -> Self {
        Self(number % Self::COUNT)
    }

    /// The id as text, kept inline (no allocation).
    pub fn text(&self) -> CompactString {
        let mut text = [0u8; 4 + Self::SUFFIX_LEN];
        text[..4].copy_from_slice(b"img-");
        let mut number = self.0;
        for at in (4..text.len()).rev() {
            // Below 36 by the modulo, so the cast and the index hold.
            let digit = (number % 36) as u8;
            text[at] = if digit < 10 {
                b'0' + digit
            } else {
                b'a' + digit - 10
            };
            number /= 36;
        }
        // ASCII by construction.
        CompactString::from_utf8_lossy(&text)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ImageId").field(&self.text()).finish()
    }
}

impl Serialize for ImageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for ImageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ImageId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image id (img- followed by 8 characters of [a-z0-9])")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<ImageId, E> {
                ImageId::parse(raw).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A region name such as `ap-guangzhou`. Whether it is one of the configured
/// regions is checked against the [`Policy`](super::Policy).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Region(CompactString);

impl Region {
    /// Wraps a region name without checking it against the configured list.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(CompactString::new(name))
    }

    /// The region as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An idempotency key: 1 to 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientToken(String);

impl ClientToken {
    /// Parses a client token; an empty string means "no token".
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, DomainError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_CLIENT_TOKEN_CHARS || !raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(DomainError::InvalidParameter(format!(
                "client_token must be at most {MAX_CLIENT_TOKEN_CHARS} printable ASCII characters"
            )));
        }
        Ok(Some(Self(raw.to_owned())))
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks an image name: 1 to 60 characters, at least one of them
/// visible, no control characters.
pub fn validate_image_name(name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::InvalidParameter(
            "image_name must not be empty".into(),
        ));
    }
    if name.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(DomainError::InvalidParameter(format!(
            "image_name {} has no visible character",
            quoted(name)
        )));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(DomainError::TooLarge(format!(
            "image_name is {} characters long; the limit is {MAX_NAME_CHARS}",
            name.chars().count()
        )));
    }
    reject_control_chars("image_name", name)
}

/// Checks an image description: at most 256 characters, no control characters
/// other than newlines and tabs.
pub fn validate_image_description(description: &str) -> Result<(), DomainError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(DomainError::TooLarge(format!(
            "image_description is {} characters long; the limit is {MAX_DESCRIPTION_CHARS}",
            description.chars().count()
        )));
    }
    if description
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::InvalidParameter(
            "image_description must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// Checks a required short label such as a platform or OS name.
pub fn validate_label(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(DomainError::InvalidParameter(format!(
            "{field} must not be empty"
        )));
    }
    if value.chars().count() > MAX_LABEL_CHARS {
        return Err(DomainError::InvalidParameter(format!(
            "{field} must be at most {MAX_LABEL_CHARS} characters"
        )));
    }
    reject_control_chars(field, value)
}

/// Characters that show nothing: Unicode's default-ignorable code points
/// (zero-width spaces and joiners, direction marks, variation selectors,
/// fillers, tags) and the blank braille pattern.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether two image names are the same name: equal after Unicode NFC, so
/// "é" written as one code point or as "e" and a combining accent is one name.
pub fn same_name(a: &str, b: &str) -> bool {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    if a == b {
        return true;
    }
    // ASCII is its own NFC, and most names are ASCII.
    let quick = |s: &str| s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes;
    if quick(a) && quick(b) {
        return false;
    }
    a.nfc().eq(b.nfc())
}

/// A name as a request gives it, made the form the ledger records: format
/// characters that change how text reads without showing (bidirectional
/// controls, such as U+202E that makes `ab\u{202e}cd` read "abdc", and the
/// other invisible format characters) are refused; the rest is put in NFC.
/// Zero-width joiners and non-joiners (U+200C, U+200D) stay: scripts such
/// as Persian need them. Checked where requests enter, not by the rules,
/// so records written before it still verify.
pub fn name_from_request(name: String) -> Result<String, DomainError> {
    if let Some(c) = name.chars().find(|&c| is_format_control(c)) {
        return Err(DomainError::InvalidParameter(format!(
            "image_name {} holds U+{:04X}, a format character that changes how a name reads \
             without showing; names may not hold bidirectional controls or other invisible format characters",
            quoted(&name),
            u32::from(c)
        )));
    }
    Ok(normalized_name(name))
}

/// Unicode's format characters (general category Cf) but the joiners.
fn is_format_control(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.general_category() == GeneralCategory::Format && !matches!(c, '\u{200C}' | '\u{200D}')
}

/// A name in NFC, the form the ledger records.
pub fn normalized_name(name: String) -> String {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    if is_nfc_quick(name.chars()) == IsNormalized::Yes {
        name
    } else {
        name.nfc().collect()
    }
}

fn reject_control_chars(field: &str, value: &str) -> Result<(), DomainError> {
    if value.chars().any(char::is_control) {
        return Err(DomainError::InvalidParameter(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// An instant as RFC 3339, as messages and records write times ("" for one
/// out of the format's range).
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Quotes user input for an error message, cutting it short and escaping
/// anything unprintable so messages stay one readable line.
pub(crate) fn quoted(raw: &str) -> String {
    const SHOWN: usize = 40;
    let mut out: String = raw.chars().take(SHOWN).collect::<String>();
    if raw.chars().count() > SHOWN {
        out.push('…');
    }
    format!("{out:?}")
}
