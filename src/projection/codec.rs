//! The binary layout of the read side's entries.
//!
//! Every entry starts with [`FORMAT`], then the postcard encoding of a
//! struct of this module. Each aggregate is one entry holding everything
//! the state keeps of it, its version and (for an image) its shares, so a
//! start reads one entry per aggregate and looks nothing up in the stream
//! index. JSON entries with versions read from the stream index took about
//! ten microseconds per image to load; these take well under two (see
//! docs/PERFORMANCE.md, "Region scale").
//!
//! postcard is compact and fast, and not self-describing: a field skipped
//! when empty would shift every field after it, so these structs have no
//! optional serde attributes and hold times as Unix nanoseconds.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{
    Account, AccountId, AccountKind, DeletionProtection, Image, ImageAttributes, ImageId, ImageRef,
    ImageState, Limits, Region, Share, Shares, TrustedOwners,
};
use crate::store::StoreError;

/// The first byte of every entry in this layout. Entries of earlier
/// versions (JSON, beginning with `{` or a digit) have none: a read side
/// holding one is rebuilt from the log.
pub const FORMAT: u8 = 2;

#[derive(Serialize, Deserialize)]
struct StoredImage<'a> {
    image_id: ImageId,
    owner_account_id: AccountId,
    region: Region,
    // Borrowed when written: the read side's writer encodes every image a
    // save touches, and cloning would copy its four strings each time.
    attributes: Cow<'a, ImageAttributes>,
    state: ImageState,
    created_time: i128,
    copied_from: Option<ImageRef>,
    shares: Vec<(AccountId, i128, Option<i128>)>,
    lighthouse_shared: bool,
    deleted: bool,
    disabled: bool,
    deprecated: bool,
    protected: bool,
    delete_allowed_after: Option<i128>,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    kind: AccountKind,
    version: u64,
    trusted_owners: Option<TrustedOwners>,
}

#[derive(Serialize, Deserialize)]
struct StoredLimits {
    limits: Limits,
    version: u64,
}

fn nanos(time: OffsetDateTime) -> i128 {
    time.unix_timestamp_nanos()
}

fn time(nanos: i128) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|e| StoreError::Corrupt(format!("a stored time is out of range: {e}")))
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT])
        .map_err(|e| StoreError::backend("cannot encode a read side entry", e))
}

fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body)
            .map_err(|e| StoreError::Corrupt(format!("a stored {what} does not decode: {e}"))),
        _ => Err(StoreError::Corrupt(format!(
            "a stored {what} is in the layout of an earlier version; the read side is rebuilt \
             from the log"
        ))),
    }
}

/// The entry of `image`.
pub fn encode_image(image: &Image) -> Result<Vec<u8>, StoreError> {
    encode(&StoredImage {
        image_id: image.image_id.clone(),
        owner_account_id: image.owner_account_id.clone(),
        region: image.region.clone(),
        attributes: Cow::Borrowed(&image.attributes),
        state: image.state,
        created_time: nanos(image.created_time),
        copied_from: image.copied_from.as_deref().cloned(),
        shares: image
            .shares
            .iter()
            .map(|(account, share)| {
                (
                    account.clone(),
                    nanos(share.created_time),
                    share.expires_at.map(nanos),
                )
            })
            .collect(),
        lighthouse_shared: image.lighthouse_shared,
        deleted: image.deleted,
        disabled: image.disabled,
        deprecated: image.deprecated,
        protected: image.deletion_protection.enabled,
        delete_allowed_after: image.deletion_protection.delete_allowed_after.map(nanos),
        version: image.version,
    })
}

/// The image an [`encode_image`] entry holds.
pub fn decode_image(bytes: &[u8]) -> Result<Image, StoreError> {
    let stored: StoredImage = decode("image", bytes)?;
    let shares = stored
        .shares
        .into_iter()
        .map(|(account, created, end)| {
            let share = Share {
                created_time: time(created)?,
                expires_at: end.map(time).transpose()?,
            };
            Ok((account, share))
        })
        .collect::<Result<Shares, StoreError>>()?;
    Ok(Image {
        image_id: stored.image_id,
        owner_account_id: stored.owner_account_id,
        region: stored.region,
        attributes: stored.attributes.into_owned().into(),
        state: stored.state,
        created_time: time(stored.created_time)?,
        copied_from: stored.copied_from.map(Box::new),
        shares,
        lighthouse_shared: stored.lighthouse_shared,
        deleted: stored.deleted,
        disabled: stored.disabled,
        deprecated: stored.deprecated,
        deletion_protection: DeletionProtection {
            enabled: stored.protected,
            delete_allowed_after: stored.delete_allowed_after.map(time).transpose()?,
        },
        version: stored.version,
    })
}

/// The entry of an account.
pub fn encode_account(account: &Account) -> Result<Vec<u8>, StoreError> {
    encode(&StoredAccount {
        kind: account.kind,
        version: account.version,
        trusted_owners: account.trusted_owners.as_deref().cloned(),
    })
}

/// The account an [`encode_account`] entry holds.
pub fn decode_account(bytes: &[u8]) -> Result<Account, StoreError> {
    let stored: StoredAccount = decode("account", bytes)?;
    Ok(Account {
        kind: stored.kind,
        version: stored.version,
        trusted_owners: stored.trusted_owners.map(Into::into),
    })
}

/// The entry of the limits the log last recorded, recorded `version` times.
pub fn encode_limits(limits: Limits, version: u64) -> Result<Vec<u8>, StoreError> {
    encode(&StoredLimits { limits, version })
}

/// The limits and their version an [`encode_limits`] entry holds.
pub fn decode_limits(bytes: &[u8]) -> Result<(Limits, u64), StoreError> {
    let stored: StoredLimits = decode("limits", bytes)?;
    Ok((stored.limits, stored.version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ImageSource, LicenseType};
    use time::macros::datetime;

    fn image() -> Image {
        let mut shares = Shares::default();
        shares.insert(
            AccountId::parse("200").expect("valid in the test"),
            Share {
                created_time: datetime!(2026-01-02 3:04:05.123456789 UTC),
                expires_at: Some(datetime!(2027-01-01 0:00 UTC)),
            },
        );
        shares.insert(
            AccountId::parse("300").expect("valid in the test"),
            Share {
                created_time: datetime!(2026-01-02 3:04:06 UTC),
                expires_at: None,
            },
        );
        Image {
            image_id: ImageId::parse("img-abcd1234").expect("valid in the test"),
            owner_account_id: AccountId::parse("100").expect("valid in the test"),
            region: Region::new("ap-guangzhou"),
            attributes: ImageAttributes {
                image_name: "web".into(),
                image_description: "the web tier".into(),
                platform: "Ubuntu".into(),
                os_name: "Ubuntu Server 24.04 LTS 64-bit".into(),
                image_source: ImageSource::CreateImage,
                license_type: LicenseType::Tencentcloud,
                encrypted: true,
                whole_instance: false,
                supports_cloudinit: true,
            }
            .into(),
            state: ImageState::Normal,
            created_time: datetime!(2026-01-01 0:00 UTC),
            copied_from: Some(Box::new(ImageRef {
                image_id: ImageId::parse("img-00000001").expect("valid in the test"),
                region: Region::new("ap-beijing"),
            })),
            shares,
            lighthouse_shared: true,
            deleted: false,
            disabled: false,
            deprecated: true,
            deletion_protection: DeletionProtection {
                enabled: false,
                delete_allowed_after: Some(datetime!(2026-01-03 0:00 UTC)),
            },
            version: 7,
        }
    }

    #[test]
    fn an_image_reads_back_as_written() {
        let image = image();
        assert_eq!(
            decode_image(&encode_image(&image).expect("valid in the test"))
                .expect("valid in the test"),
            image
        );
    }

    #[test]
    fn an_account_and_the_limits_read_back_as_written() {
        let account = Account {
            kind: AccountKind::Root,
            version: 3,
            trusted_owners: Some(
                TrustedOwners {
                    mode: crate::domain::TrustMode::Enforce,
                    owner_account_ids: vec![AccountId::parse("100").expect("valid in the test")],
                }
                .into(),
            ),
        };
        assert_eq!(
            decode_account(&encode_account(&account).expect("valid in the test"))
                .expect("valid in the test"),
            account
        );
        let limits = Limits::of(&crate::domain::Policy::default());
        assert_eq!(
            decode_limits(&encode_limits(limits.clone(), 2).expect("valid in the test"))
                .expect("valid in the test"),
            (limits, 2)
        );
    }

    /// An entry an earlier version wrote (JSON) is refused with a message
    /// that says so, which makes the start rebuild the read side.
    #[test]
    fn an_entry_of_an_earlier_layout_is_refused() {
        let json = br#"{"kind":"ROOT","version":1}"#;
        let err = decode_account(json)
            .expect_err("refused in the test")
            .to_string();
        assert!(err.contains("layout of an earlier version"), "{err}");
        let mut damaged = encode_image(&image()).expect("valid in the test");
        damaged.truncate(10);
        let err = decode_image(&damaged)
            .expect_err("refused in the test")
            .to_string();
        assert!(err.contains("does not decode"), "{err}");
    }
}
