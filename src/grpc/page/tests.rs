//! The hand-written reply against the generated `Image` encoding.

use prost::Message;
use time::OffsetDateTime;

use super::DescribeImagesResponse;
use crate::domain::{
    AccountId, AccountKind, Event, ImageAttributes, ImageId, ImageRef, ImageSource, ImageState,
    LedgerState, LicenseType, Policy, Region,
};
use crate::grpc::convert::image_message;
use crate::grpc::pb;
use crate::projection::{describe_images, ImagePage, ImageQuery};

fn account(n: u64) -> AccountId {
    AccountId::parse(&n.to_string()).expect("account id")
}

fn image(n: u32) -> ImageId {
    ImageId::parse(&format!("img-{n:08}")).expect("image id")
}

fn attributes(n: u32) -> ImageAttributes {
    ImageAttributes {
        image_name: format!("image {n} ✓").into(),
        // Empty strings and false flags are left off the wire.
        image_description: if n.is_multiple_of(2) {
            "".into()
        } else {
            "d".repeat(200).into()
        },
        platform: "CentOS".into(),
        os_name: if n.is_multiple_of(3) {
            "".into()
        } else {
            "CentOS 7.9 64-bit".into()
        },
        image_source: if n.is_multiple_of(2) {
            ImageSource::CreateImage
        } else {
            ImageSource::ExternalImport
        },
        license_type: if n.is_multiple_of(3) {
            LicenseType::Byol
        } else {
            LicenseType::Tencentcloud
        },
        encrypted: n % 2 == 1,
        whole_instance: n % 3 == 1,
        supports_cloudinit: !n.is_multiple_of(4),
    }
}

const STATES: [ImageState; 6] = [
    ImageState::Creating,
    ImageState::Normal,
    ImageState::Createfailed,
    ImageState::Syncing,
    ImageState::Importing,
    ImageState::Importfailed,
];

/// Account 1 owns images 0..12 (some copies); account 2 owns 12..24 and
/// shares them with account 1. Times include zero and non-zero nanoseconds.
fn state() -> LedgerState {
    let mut state = LedgerState::default();
    for a in [1, 2] {
        state.apply(&Event::AccountRegistered {
            account_id: account(a),
            kind: AccountKind::Root,
        });
    }
    let region = Region::new("ap-guangzhou");
    for n in 0..24u32 {
        let owner = account(if n < 12 { 1 } else { 2 });
        let created_time = OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(n))
            .expect("time")
            + time::Duration::nanoseconds(i64::from(n % 2) * 123_456_789);
        let state_of = STATES[n as usize % STATES.len()];
        let event = if n % 5 == 4 {
            Event::ImageCopied {
                image_id: image(n),
                owner_account_id: owner,
                region: region.clone(),
                copied_from: ImageRef {
                    image_id: image(n - 1),
                    region: Region::new("ap-shanghai"),
                },
                attributes: attributes(n),
                state: state_of,
                created_time,
            }
        } else {
            Event::ImageRegistered {
                image_id: image(n),
                owner_account_id: owner,
                region: region.clone(),
                attributes: attributes(n),
                state: state_of,
                created_time,
            }
        };
        state.apply(&event);
        // Account 1's own images carry each control in turn.
        let control = match n % 4 {
            1 => Some(Event::ImageDisabled {
                image_id: image(n),
                cancelled_account_ids: vec![],
                lighthouse_cancelled: false,
            }),
            2 => Some(Event::ImageDeprecated { image_id: image(n) }),
            3 if n % 8 == 3 => Some(Event::DeletionProtectionEnabled { image_id: image(n) }),
            3 => Some(Event::DeletionProtectionDisabled {
                image_id: image(n),
                delete_allowed_after: Some(created_time + time::Duration::hours(24)),
            }),
            _ => None,
        };
        if let Some(control) = control.filter(|_| n < 12) {
            state.apply(&control);
        }
        if n >= 12 {
            state.apply(&Event::ImageShared {
                expires_at: None,
                image_id: image(n),
                account_ids: vec![account(1)],
                shared_time: created_time,
            });
        }
    }
    state
}

/// The reply the generated types would have produced for `page`.
fn generated_bytes(page: &ImagePage<'_>) -> (Vec<pb::Image>, Vec<u8>) {
    let images: Vec<pb::Image> = page
        .images
        .iter()
        .map(|listed| image_message(listed.image, listed.shared))
        .collect();
    let mut bytes = Vec::new();
    for image in &images {
        prost::encoding::message::encode(1, image, &mut bytes);
    }
    if page.total_count != 0 {
        prost::encoding::uint32::encode(2, &page.total_count, &mut bytes);
    }
    (images, bytes)
}

/// Account 1's page of both types at `offset`, `limit` (0: the default).
fn page_of(state: &LedgerState, offset: u32, limit: u32) -> ImagePage<'_> {
    let query = ImageQuery {
        account_id: Some(account(1)),
        region: Some(Region::new("ap-guangzhou")),
        offset,
        limit,
        ..ImageQuery::default()
    };
    describe_images(
        state,
        &Policy::default(),
        &query,
        time::OffsetDateTime::now_utc(),
    )
    .expect("lists")
}

#[test]
fn a_page_is_encoded_as_the_generated_types_would_encode_it() {
    let state = state();
    for (offset, limit) in [(0, 100), (0, 20), (5, 7), (23, 20), (40, 20)] {
        let page = page_of(&state, offset, limit);
        let (images, expected) = generated_bytes(&page);
        let reply = DescribeImagesResponse::from_page(&page);
        let bytes = reply.encode_to_vec();
        assert_eq!(bytes.len(), reply.encoded_len());
        assert_eq!(bytes, expected, "offset {offset}, limit {limit}");

        // And a client decodes it into the same messages.
        let decoded = DescribeImagesResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.images, images);
        assert_eq!(decoded.total_count, 24);
    }
}

#[test]
fn the_page_covers_every_field_value_the_check_relies_on() {
    // Guards the test above: the state really has copies, shared and owned
    // images, every state, empty and non-empty strings, both values of each flag.
    let state = state();
    let (images, _) = generated_bytes(&page_of(&state, 0, 100));
    assert_eq!(images.len(), 24);
    assert!(images.iter().any(|i| i.copied_from.is_some()));
    assert!(images
        .iter()
        .any(|i| i.image_type == pb::ImageType::SharedImage as i32));
    assert!(images
        .iter()
        .any(|i| i.image_type == pb::ImageType::PrivateImage as i32));
    for state in STATES {
        let value = crate::grpc::state_message(state) as i32;
        assert!(images.iter().any(|i| i.state == value), "{state:?}");
    }
    assert!(images.iter().any(|i| i.image_description.is_empty()));
    assert!(images.iter().any(|i| i.os_name.is_empty()));
    assert!(images.iter().any(|i| i.encrypted) && images.iter().any(|i| !i.encrypted));
    assert!(images
        .iter()
        .any(|i| i.created_time.is_some_and(|t| t.nanos != 0)));
    assert!(images.iter().any(|i| i.disabled) && images.iter().any(|i| !i.disabled));
    assert!(images.iter().any(|i| i.deprecated) && images.iter().any(|i| !i.deprecated));
    assert!(images.iter().any(|i| i.deletion_protection));
    assert!(images.iter().any(|i| i.delete_allowed_after.is_some()));
}

#[test]
fn a_decoded_reply_encodes_back_to_the_same_bytes() {
    let state = state();
    let bytes = DescribeImagesResponse::from_page(&page_of(&state, 0, 0)).encode_to_vec();
    let decoded = DescribeImagesResponse::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded.encode_to_vec(), bytes);
    assert_eq!(decoded.encoded_len(), bytes.len());
}
