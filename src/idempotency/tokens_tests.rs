//! The compact token map: collisions, reuse after expiry, reads from the log.

use super::*;
use crate::domain::{DomainError, ImageId};
use crate::store::MemoryStore;

const NOW: i64 = 1_800_000_000_000_000;
const RETENTION: i64 = 60_000_000;

fn record(position: u64, fingerprint: &str, reply: Reply, at: i64) -> TokenRecord {
    TokenRecord {
        fingerprint: fingerprint.into(),
        reply,
        position,
        recorded_at: at,
    }
}

fn answer(found: Lookup) -> Result<(Reply, u64), DomainError> {
    match found {
        Lookup::Answer(answer) => answer,
        Lookup::Run(slot) => panic!("a retry was taken for a new command ({slot:?})"),
    }
}

#[test]
fn keys_whose_digests_collide_keep_records_of_their_own() -> Result<(), StoreError> {
    let log = MemoryStore::new();
    let mut tokens = Tokens {
        collide: true,
        ..Tokens::default()
    };
    let (a, b) = (token_key(Some("1001"), "t"), token_key(Some("1002"), "t"));
    let image = Reply::ImageRegistered {
        image_id: ImageId::from_number(5),
    };
    assert!(matches!(
        tokens.lookup(&log, &a, "fa", NOW, RETENTION)?,
        Lookup::Run(Slot::Digest)
    ));
    tokens.insert(a.clone(), Slot::Digest, record(1, "fa", Reply::Done, NOW));
    assert!(matches!(
        tokens.lookup(&log, &b, "fb", NOW, RETENTION)?,
        Lookup::Run(Slot::Collided)
    ));
    tokens.insert(
        b.clone(),
        Slot::Collided,
        record(2, "fb", image.clone(), NOW),
    );
    assert_eq!(tokens.len(), 2);

    assert_eq!(
        answer(tokens.lookup(&log, &a, "fa", NOW, RETENTION)?),
        Ok((Reply::Done, 1))
    );
    assert_eq!(
        answer(tokens.lookup(&log, &b, "fb", NOW, RETENTION)?),
        Ok((image, 2))
    );
    assert!(matches!(
        answer(tokens.lookup(&log, &b, "fa", NOW, RETENTION)?),
        Err(DomainError::IdempotencyMismatch(_))
    ));

    assert!(!tokens.any_expired(NOW + RETENTION - 1, RETENTION));
    let expired = tokens.expire(NOW + RETENTION, RETENTION);
    assert_eq!(expired, vec![1, 2]);
    assert_eq!(tokens.keys_at(&log, &expired)?, vec![a, b]);
    assert!(tokens.is_empty());
    Ok(())
}

#[test]
fn a_token_used_again_after_expiry_keeps_only_its_new_record() -> Result<(), StoreError> {
    let log = MemoryStore::new();
    let mut tokens = Tokens::default();
    let key = token_key(Some("1001"), "t");
    tokens.insert(key.clone(), Slot::Digest, record(1, "f1", Reply::Done, NOW));
    let later = NOW + RETENTION;
    assert!(matches!(
        tokens.lookup(&log, &key, "f2", later, RETENTION)?,
        Lookup::Run(Slot::Digest)
    ));
    tokens.insert(
        key.clone(),
        Slot::Digest,
        record(3, "f2", Reply::Done, later),
    );
    // The first record's entry is passed over: its key names the new one.
    assert_eq!(tokens.expire(later + 1, RETENTION), Vec::<u64>::new());
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        answer(tokens.lookup(&log, &key, "f2", later + 1, RETENTION)?),
        Ok((Reply::Done, 3))
    );
    assert_eq!(tokens.expire(later + RETENTION, RETENTION), vec![3]);
    Ok(())
}

#[test]
fn an_expired_record_whose_key_was_taken_anew_keeps_the_store_key() -> Result<(), StoreError> {
    let log = MemoryStore::new();
    let mut tokens = Tokens::default();
    let key = token_key(Some("1001"), "t");
    tokens.insert(key.clone(), Slot::Digest, record(1, "f1", Reply::Done, NOW));
    let later = NOW + RETENTION;
    assert_eq!(tokens.expire(later, RETENTION), vec![1]);
    // Another batch takes the key before the expired one's leaves the
    // store: the store's record under it is the new one now.
    tokens.insert(
        key.clone(),
        Slot::Digest,
        record(2, "f2", Reply::Done, later),
    );
    assert_eq!(tokens.keys_at(&log, &[1])?, Vec::<Vec<u8>>::new());
    assert_eq!(tokens.expire(later + RETENTION, RETENTION), vec![2]);
    assert_eq!(tokens.keys_at(&log, &[2])?, vec![key]);
    Ok(())
}

#[test]
fn records_made_during_a_start_join_those_read_keeping_colliding_keys_apart(
) -> Result<(), StoreError> {
    let log = MemoryStore::new();
    let mut read = Tokens {
        collide: true,
        ..Tokens::default()
    };
    let (a, b, c) = (
        token_key(Some("1001"), "a"),
        token_key(Some("1001"), "b"),
        token_key(Some("1001"), "c"),
    );
    read.insert(a.clone(), Slot::Digest, record(1, "fa", Reply::Done, NOW));
    let mut newer = read.empty_like();
    // b's digest is a's (every digest is, here): a collision only the
    // log's keys tell; c is made and then replaced by a later record.
    newer.insert(
        b.clone(),
        Slot::Digest,
        record(5, "fb", Reply::Done, NOW + 1),
    );
    newer.insert(
        c.clone(),
        Slot::Collided,
        record(6, "fc", Reply::Done, NOW + 2),
    );
    read.take_newer(&newer, &log)?;
    assert_eq!(read.len(), 3);
    for (key, fingerprint, position) in [(&a, "fa", 1), (&b, "fb", 5), (&c, "fc", 6)] {
        assert_eq!(
            answer(read.lookup(&log, key, fingerprint, NOW + 3, RETENTION)?),
            Ok((Reply::Done, position))
        );
    }
    Ok(())
}

#[test]
fn records_the_log_holds_are_read_from_it() {
    let log = MemoryStore::new();
    let mut tokens = Tokens::default();
    let key = token_key(None, "t");
    tokens.insert(key.clone(), Slot::Digest, record(4, "f", Reply::Done, NOW));
    tokens.written(3);
    assert!(matches!(
        tokens.lookup(&log, &key, "f", NOW, RETENTION),
        Ok(Lookup::Answer(Ok(_)))
    ));
    // Once written, the record is the log's to give; this log lacks it.
    tokens.written(4);
    match tokens.lookup(&log, &key, "f", NOW, RETENTION) {
        Err(StoreError::Corrupt(message)) => assert_eq!(
            message,
            "an idempotency record points at position 4, which is not in the log"
        ),
        other => panic!("the record was not read from the log: {other:?}"),
    }
}
