//! The sled store answers every read exactly as the in-memory reference
//! does, whatever way appends were cut into chunks.

use time::OffsetDateTime;

use super::{
    AppendBatch, CutShort, EncodedRecord, EventLog, EventLogExt, Faulty, Head, MemoryStore,
    ProjectionOp, ProjectionStore, ProjectionStoreExt, RecordMeta, SledStore, Store, StoreError,
};
use crate::domain::{AccountId, AccountKind, Event};

/// The next `size` records after `head`, rotating over five streams whose
/// last versions are `versions` (both move on).
pub(crate) fn next_batch(
    head: &mut Head,
    versions: &mut [u64; 5],
    size: usize,
) -> Result<AppendBatch, Box<dyn std::error::Error>> {
    let mut batch = AppendBatch {
        expected_head: *head,
        ..AppendBatch::default()
    };
    for _ in 0..size {
        let stream = (head.position % 5) as usize;
        versions[stream] += 1;
        let event = Event::AccountRegistered {
            account_id: AccountId::parse(&format!("{}", 100 + stream))?,
            kind: AccountKind::Root,
        };
        let record = EncodedRecord::encode(
            &event,
            &RecordMeta {
                position: head.position + 1,
                aggregate_version: versions[stream],
                recorded_at: OffsetDateTime::UNIX_EPOCH,
                actor: None,
                principal: None,
                client_token: None,
                request_hash: None,
                prev_hash: head.hash,
            },
        )?;
        *head = Head {
            position: record.position,
            hash: record.hash,
        };
        batch.records.push(record);
    }
    Ok(batch)
}

/// Appends `sizes.len()` batches of those sizes; records rotate over five
/// streams, so each stream spans many chunks and several records of one
/// stream share a chunk.
/// Continues the log of `stores` (which must hold the same records).
pub(crate) fn fill(
    stores: &[&dyn Store],
    sizes: &[usize],
) -> Result<u64, Box<dyn std::error::Error>> {
    let reference = stores[0];
    let mut head = reference.head()?;
    let mut versions = [0u64; 5];
    for (stream, version) in versions.iter_mut().enumerate() {
        *version = reference.stream_version(&format!("{}", 100 + stream), u64::MAX)?;
    }
    for &size in sizes {
        let batch = next_batch(&mut head, &mut versions, size)?;
        for store in stores {
            store.append(&batch)?;
        }
    }
    Ok(head.position)
}

/// The sled store in `dir`, with a small cache.
fn open(dir: &tempfile::TempDir) -> Result<SledStore, StoreError> {
    SledStore::open(dir.path(), 8 * 1024 * 1024)
}

pub(crate) fn scan_all(store: &dyn Store, from: u64, limit: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    store
        .scan(from, &mut |position, bytes| {
            out.push((position, bytes.to_vec()));
            out.len() < limit
        })
        .expect("scan");
    out
}

#[test]
fn chunked_records_read_back_as_appended() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sled = open(&dir)?;
    let memory = MemoryStore::default();
    // One record, a full chunk, one over, two chunks and a bit, and small ones.
    let head = fill(&[&sled, &memory], &[1, 64, 65, 130, 3, 2])?;
    assert_eq!(head, 265);
    assert_eq!(sled.head()?, memory.head()?);

    let everything = scan_all(&memory, 1, usize::MAX);
    assert_eq!(everything.len(), 265);
    assert_eq!(scan_all(&sled, 0, usize::MAX), everything);
    for from in [1, 2, 65, 66, 130, 131, 200, 265] {
        assert_eq!(
            scan_all(&sled, from, usize::MAX),
            scan_all(&memory, from, usize::MAX),
            "scan from {from}"
        );
        assert_eq!(
            scan_all(&sled, from, 3),
            scan_all(&memory, from, 3),
            "a short scan from {from}"
        );
    }
    assert!(scan_all(&sled, 266, usize::MAX).is_empty());

    for position in 0..=270 {
        assert_eq!(
            sled.read_at(position)?,
            memory.read_at(position)?,
            "read at {position}"
        );
    }

    streams_match(&sled, &memory, 53)?;
    Ok(())
}

fn stream_of(store: &dyn Store, id: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    store.scan_stream(id, &mut |position, bytes| {
        out.push((position, bytes.to_vec()));
        true
    })?;
    Ok(out)
}

/// Each of the five streams reads the same from both stores, whole and as
/// of a range of positions, and has `length` records.
pub(crate) fn streams_match(
    sled: &dyn Store,
    memory: &MemoryStore,
    length: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let head = memory.head()?.position;
    for stream in 100..105 {
        let id = stream.to_string();
        let from_sled = stream_of(sled, &id)?;
        assert_eq!(from_sled.len() as u64, length, "stream {id}");
        assert_eq!(from_sled, stream_of(memory, &id)?, "stream {id}");
        for as_of in (0..=head + 2).step_by(7).chain([head, u64::MAX]) {
            assert_eq!(
                sled.stream_version(&id, as_of)?,
                memory.stream_version(&id, as_of)?,
                "stream {id} as of {as_of}"
            );
        }
        assert_eq!(sled.stream_version(&id, u64::MAX)?, length, "stream {id}");
    }
    Ok(())
}

#[test]
fn the_stream_index_answers_alike_queued_stored_and_rebuilt_after_a_crash(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let memory = MemoryStore::default();
    {
        let sled = open(&dir)?;
        fill(&[&memory, &sled], &[1, 64, 65, 130, 3, 2])?;
        // Just appended: answered from the queue in memory.
        streams_match(&sled, &memory, 53)?;
    }
    {
        // Stored in bulk when the store closed, one key per stream.
        let sled = open(&dir)?;
        streams_match(&sled, &memory, 53)?;
        fill(&[&memory, &sled], &[40, 10])?;
        // Stored and queued entries of one stream, read together.
        streams_match(&sled, &memory, 63)?;
        // A crash before the queue was stored: the entries are gone.
        sled.lose_queued_index();
    }
    {
        // Opening indexes the records after the stored part again: read
        // and queued for the worker.
        let sled = open(&dir)?;
        streams_match(&sled, &memory, 63)?;
    }
    // The worker stored them when the store closed: losing the queue now
    // loses nothing.
    let sled = open(&dir)?;
    sled.lose_queued_index();
    streams_match(&sled, &memory, 63)?;
    Ok(())
}

#[test]
fn chunks_survive_a_reopen_and_a_tampered_record_is_replaced_alone(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let memory = MemoryStore::default();
    {
        let sled = open(&dir)?;
        fill(&[&sled, &memory], &[100])?;
    }
    let sled = open(&dir)?;
    assert_eq!(
        scan_all(&sled, 1, usize::MAX),
        scan_all(&memory, 1, usize::MAX)
    );

    sled.tamper_record(70, b"{\"forged\":true}")?;
    assert_eq!(sled.read_at(70)?, Some(b"{\"forged\":true}".to_vec()));
    for position in (1..=100).filter(|p| *p != 70) {
        assert_eq!(
            sled.read_at(position)?,
            memory.read_at(position)?,
            "position {position}"
        );
    }
    Ok(())
}

#[test]
fn a_damaged_record_left_to_index_does_not_stop_the_store_from_opening(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let memory = MemoryStore::default();
    {
        let sled = open(&dir)?;
        fill(&[&memory, &sled], &[100])?;
        sled.lose_queued_index();
        sled.tamper_record(70, b"{\"forged\":true}")?;
    }
    let sled = open(&dir)?;
    // Position 70 is the 14th record of stream 104; every other record is indexed.
    let mut expected = stream_of(&memory, "104")?;
    expected.retain(|(position, _)| *position != 70);
    assert_eq!(stream_of(&sled, "104")?, expected);
    for id in ["100", "101", "102", "103"] {
        assert_eq!(
            stream_of(&sled, id)?,
            stream_of(&memory, id)?,
            "stream {id}"
        );
    }
    Ok(())
}

/// Text of `chars` random characters outside the Basic Multilingual Plane:
/// four bytes each in UTF-8, and next to incompressible.
fn worst_text(rng: &mut impl rand::Rng, chars: usize) -> String {
    (0..chars)
        .map(|_| char::from_u32(rng.random_range(0x1_0000..0x2_0000)).unwrap_or('x'))
        .collect()
}

/// A flush syncs sled's log file and every file sled put under `blobs/`
/// (see [`super::durable`]). The largest records the rules allow (every
/// text field at its longest, in characters of four bytes that do not
/// compress), 64 to a chunk, make sled write such files: every one of them
/// was synced, the log file is the one that grew, and the records read back
/// after a reopen.
#[test]
fn a_flush_syncs_the_log_file_and_every_blob_file() -> Result<(), Box<dyn std::error::Error>> {
    use crate::domain::ids::MAX_LABEL_CHARS;
    use crate::domain::{
        ImageAttributes, ImageId, ImageState, Region, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS,
    };
    use rand::SeedableRng;

    let dir = tempfile::tempdir()?;
    let store = open(&dir)?;
    let log = dir.path().join(super::sled::LOG_FILE);
    let empty_log = std::fs::metadata(&log)?.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut head = store.head()?;
    let mut largest = 0;
    for batch_number in 0..40u64 {
        let mut batch = AppendBatch {
            expected_head: head,
            ..AppendBatch::default()
        };
        for i in 0..super::sled::CHUNK_RECORDS as u64 {
            let n = batch_number * 64 + i;
            let event = Event::ImageRegistered {
                image_id: ImageId::parse(&format!("img-{n:08}"))?,
                owner_account_id: AccountId::parse(&format!(
                    "{}",
                    10_000_000_000_000_000_000u64 + n
                ))?,
                region: Region::new("ap-guangzhou"),
                attributes: ImageAttributes {
                    image_name: worst_text(&mut rng, MAX_NAME_CHARS).into(),
                    image_description: worst_text(&mut rng, MAX_DESCRIPTION_CHARS).into(),
                    platform: worst_text(&mut rng, MAX_LABEL_CHARS).into(),
                    os_name: worst_text(&mut rng, MAX_LABEL_CHARS).into(),
                    ..crate::domain::tests::attributes("")
                },
                state: ImageState::Normal,
                created_time: OffsetDateTime::UNIX_EPOCH,
            };
            let record = EncodedRecord::encode(
                &event,
                &RecordMeta {
                    position: head.position + 1,
                    aggregate_version: 1,
                    recorded_at: OffsetDateTime::UNIX_EPOCH,
                    actor: Some("10000000000000000000"),
                    principal: None,
                    client_token: Some(&"t".repeat(64)),
                    request_hash: Some(&"f".repeat(64)),
                    prev_hash: head.hash,
                },
            )?;
            largest = largest.max(record.bytes.len());
            head = Head {
                position: record.position,
                hash: record.hash,
            };
            batch.records.push(record);
        }
        store.append(&batch)?;
    }
    assert!(
        largest > 2_500,
        "records of {largest} bytes are not the largest"
    );
    assert_eq!(store.head()?, head);
    let blobs = std::fs::read_dir(dir.path().join(super::sled::BLOB_DIR))?.count();
    assert!(
        blobs > 0,
        "sled wrote no blob file: this test no longer covers them"
    );
    assert_eq!(store.synced_blob_files(), blobs);
    assert!(
        std::fs::metadata(&log)?.len() > empty_log + 1_000_000,
        "the log file did not grow with the records"
    );
    let written = scan_all(&store, 1, usize::MAX);
    assert_eq!(written.len(), 40 * 64);
    drop(store);
    let reopened = open(&dir)?;
    assert_eq!(reopened.head()?, head);
    assert_eq!(scan_all(&reopened, 1, usize::MAX), written);
    Ok(())
}

/// One scenario of injected failures on any backend behind [`Faulty`]:
/// a failed append writes nothing, a full disk refuses flushes and heals,
/// and a projection save cut short leaves its target pending (`pending`
/// says whether the backend saves in steps).
pub(crate) fn faults_behave_alike<S: Store + CutShort>(
    store: &Faulty<S>,
    pending: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    fill(&[store], &[3])?;
    let head = store.head()?;
    let mut versions = [1, 1, 1, 0, 0];
    let batch = next_batch(&mut head.clone(), &mut versions, 2)?;
    store.fail_next_appends(1);
    assert!(matches!(
        store.append(&batch),
        Err(StoreError::Backend { .. })
    ));
    assert_eq!(store.head()?, head, "a failed append writes nothing");
    store.append(&batch)?;
    assert_eq!(store.head()?.position, 5);

    store.fill_disk(true);
    assert!(store.flush().is_err());
    assert!(store.recover().is_err());
    assert_eq!(store.refused_on_full_disk(), 2);
    store.fill_disk(false);
    store.recover()?;

    let op = |key: &[u8]| ProjectionOp {
        key: key.to_vec(),
        value: Some(b"v".to_vec()),
    };
    store.fail_next_projection_save_after(1);
    assert!(store.update_projections(&[op(b"a"), op(b"b")], 5).is_err());
    assert!(!store.projection_save_failure_pending());
    let status = store.projection_status()?;
    assert_eq!(status.checkpoint, None);
    assert_eq!(status.pending, if pending { vec![5] } else { vec![] });
    store.update_projections(&[op(b"a"), op(b"b")], 5)?;
    assert_eq!(store.projection_checkpoint()?, Some(5));
    assert_eq!(store.projection_scan(b"")?.len(), 2);
    Ok(())
}

#[test]
fn injected_failures_work_alike_on_the_memory_and_the_sled_store(
) -> Result<(), Box<dyn std::error::Error>> {
    faults_behave_alike(&Faulty::new(MemoryStore::new()), true)?;
    let dir = tempfile::tempdir()?;
    faults_behave_alike(&Faulty::new(open(&dir)?), true)?;
    Ok(())
}
