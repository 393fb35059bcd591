//! The stored record's bytes and hash, checked against serde's encoding.

use super::*;
use crate::domain::{
    AccountId, AccountKind, ImageAttributes, ImageId, ImageRef, ImageSource, ImageState,
    LicenseType, Region,
};

/// The whole envelope as serde writes it: what the stored bytes must
/// equal, byte for byte, whatever the encoder does to get there.
#[derive(Serialize)]
struct Reference<'a> {
    position: u64,
    aggregate_id: &'a str,
    aggregate_version: u64,
    event_type: &'a str,
    schema_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
    actor: Option<&'a str>,
    principal: Option<&'a str>,
    client_token: Option<&'a str>,
    request_hash: Option<&'a str>,
    payload: &'a RawValue,
    prev_hash: &'a str,
    hash: &'a str,
}

fn reference(event: &Event, meta: &RecordMeta<'_>) -> (Vec<u8>, [u8; 32]) {
    #[derive(Deserialize)]
    struct Tagged {
        payload: Box<RawValue>,
    }
    let tagged = serde_json::to_string(event).expect("serializes");
    let Tagged { payload } = serde_json::from_str(&tagged).expect("tagged");
    let prev_hash = hex::encode(meta.prev_hash);
    let aggregate_id = event.aggregate_id();
    let mut body = Reference {
        position: meta.position,
        aggregate_id: &aggregate_id,
        aggregate_version: meta.aggregate_version,
        event_type: event.event_type(),
        schema_version: RECORD_VERSION,
        recorded_at: meta.recorded_at,
        actor: meta.actor,
        principal: meta.principal,
        client_token: meta.client_token,
        request_hash: meta.request_hash,
        payload: &payload,
        prev_hash: &prev_hash,
        hash: "",
    };
    let mut unhashed = serde_json::to_vec(&body).expect("serializes");
    // Drop the `,"hash":""` member to get the hashed bytes.
    let tail = b",\"hash\":\"\"}";
    unhashed.truncate(unhashed.len() - tail.len());
    unhashed.push(b'}');
    let hash: [u8; 32] = Sha256::digest(&unhashed).into();
    let hex = hex::encode(hash);
    body.hash = &hex;
    (serde_json::to_vec(&body).expect("serializes"), hash)
}

fn attributes(name: &str) -> ImageAttributes {
    ImageAttributes {
        image_description: "line one\nline \"two\" \\ tab\t and \u{1} é 中文 🙂".into(),
        image_source: ImageSource::ExternalImport,
        license_type: LicenseType::Byol,
        encrypted: true,
        ..crate::domain::tests::attributes(name)
    }
}

fn events() -> Vec<Event> {
    let image_id = ImageId::parse("img-3k9x0q2m").expect("id");
    let owner = AccountId::parse("100000000001").expect("id");
    let other = AccountId::parse("100000000002").expect("id");
    let when = time::macros::datetime!(2026-11-27 18:29:59.123456 UTC);
    vec![
        Event::AccountRegistered {
            account_id: owner.clone(),
            kind: AccountKind::Root,
        },
        Event::ImageRegistered {
            image_id: image_id.clone(),
            owner_account_id: owner.clone(),
            region: Region::new("ap-guangzhou"),
            attributes: attributes("web \"base\""),
            state: ImageState::Normal,
            created_time: when,
        },
        Event::ImageCopied {
            image_id: image_id.clone(),
            owner_account_id: owner.clone(),
            region: Region::new("ap-bangkok"),
            copied_from: ImageRef {
                image_id: image_id.clone(),
                region: Region::new("ap-guangzhou"),
            },
            attributes: attributes(""),
            state: ImageState::Syncing,
            created_time: when,
        },
        Event::ImageStateChanged {
            image_id: image_id.clone(),
            from: ImageState::Creating,
            to: ImageState::Createfailed,
        },
        Event::ImageAttributesModified {
            image_id: image_id.clone(),
            image_name: Some("</script>\u{7f}".into()),
            image_description: None,
        },
        Event::ImageAttributesModified {
            image_id: image_id.clone(),
            image_name: None,
            image_description: None,
        },
        Event::ImageShared {
            image_id: image_id.clone(),
            account_ids: vec![owner.clone(), other.clone()],
            shared_time: when,
            expires_at: None,
        },
        Event::ImageShared {
            image_id: image_id.clone(),
            account_ids: vec![other.clone()],
            shared_time: when,
            expires_at: Some(when),
        },
        Event::ShareExpiryModified {
            image_id: image_id.clone(),
            account_ids: vec![other.clone()],
            expires_at: None,
        },
        Event::ShareExpired {
            image_id: image_id.clone(),
            account_ids: vec![other.clone()],
        },
        Event::ShareCancelled {
            image_id: image_id.clone(),
            account_ids: vec![other],
        },
        Event::LighthouseShared {
            image_id: image_id.clone(),
        },
        Event::LighthouseShareCancelled {
            image_id: image_id.clone(),
        },
        Event::ShareLeft {
            image_id: image_id.clone(),
            account_id: owner.clone(),
        },
        Event::ImageDisabled {
            image_id: image_id.clone(),
            cancelled_account_ids: vec![owner.clone()],
            lighthouse_cancelled: true,
        },
        Event::ImageDisabled {
            image_id: image_id.clone(),
            cancelled_account_ids: vec![],
            lighthouse_cancelled: false,
        },
        Event::ImageEnabled {
            image_id: image_id.clone(),
        },
        Event::DeletionProtectionEnabled {
            image_id: image_id.clone(),
        },
        Event::DeletionProtectionDisabled {
            image_id: image_id.clone(),
            delete_allowed_after: Some(when),
        },
        Event::DeletionProtectionDisabled {
            image_id: image_id.clone(),
            delete_allowed_after: None,
        },
        Event::ImageDeprecated {
            image_id: image_id.clone(),
        },
        Event::ImageUndeprecated {
            image_id: image_id.clone(),
        },
        Event::TrustedImageOwnersSet {
            account_id: owner.clone(),
            mode: crate::domain::TrustMode::Enforce,
            owner_account_ids: vec![owner.clone()],
        },
        Event::ImageDeleted { image_id },
    ]
}

#[test]
fn stored_bytes_are_the_envelope_as_serde_writes_it() {
    let metas = [
        (None, None, None),
        (Some("100000000001"), None, None),
        (
            Some("100000000001"),
            Some("retry \"1\" \\ ~"),
            Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        ),
    ];
    let mut checked = 0;
    for (i, event) in events().iter().enumerate() {
        for (actor, client_token, request_hash) in metas {
            let position = u64::try_from(i).expect("small") + 1;
            let meta = RecordMeta {
                position,
                aggregate_version: position * 7,
                recorded_at: time::macros::datetime!(2026-11-28 09:00:00.5 UTC),
                actor,
                principal: actor.map(|_| "gateway-1"),
                client_token,
                request_hash,
                prev_hash: [u8::try_from(i).expect("small"); 32],
            };
            let record = EncodedRecord::encode(event, &meta).expect("encodes");
            let (bytes, hash) = reference(event, &meta);
            assert_eq!(
                String::from_utf8_lossy(&record.bytes),
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(record.hash, hash);
            let decoded = Envelope::decode(&record.bytes).expect("decodes");
            assert_eq!(decoded.event().expect("event"), *event);
            assert_eq!(decoded.hash_bytes().expect("hash"), hash);
            assert_eq!(decoded.prev_hash_bytes().expect("hash"), meta.prev_hash);
            checked += 1;
        }
    }
    assert_eq!(checked, 72);
}

#[test]
fn a_record_whose_hash_does_not_match_is_refused() {
    let meta = RecordMeta {
        position: 1,
        aggregate_version: 1,
        recorded_at: time::macros::datetime!(2026-11-28 09:00:00 UTC),
        actor: None,
        principal: None,
        client_token: None,
        request_hash: None,
        prev_hash: GENESIS_HASH,
    };
    let event = &events()[0];
    let mut bytes = EncodedRecord::encode(event, &meta).expect("encodes").bytes;
    let at = bytes.len() - 3;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    assert!(matches!(
        Envelope::decode(&bytes),
        Err(StoreError::Corrupt(message)) if message.contains("does not match its hash")
    ));
}
