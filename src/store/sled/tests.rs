//! The sled store's own guarantees: an append cut short is never part of
//! the log and is cleaned up, and a stepwise save of the projections cut
//! short leaves a prefix and names its target.

use super::*;
use crate::store::tests::next_batch;
use crate::store::{CutShort, EventLogExt, ProjectionOp, ProjectionStore, ProjectionStoreExt};

fn all_records(store: &SledStore) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut records = Vec::new();
    store.scan(1, &mut |position, record| {
        records.push((position, record.to_vec()));
        true
    })?;
    Ok(records)
}

fn chunks_past(store: &SledStore, position: u64) -> usize {
    store
        .handles()
        .expect("the store is open")
        .tree
        .range(log_key(position + 1)..=log_key(u64::MAX))
        .count()
}

#[test]
fn an_append_cut_short_before_its_head_is_not_in_the_log_and_is_removed(
) -> Result<(), Box<dyn std::error::Error>> {
    // Two chunks (70 records), two idempotency records, then the head.
    const WRITES: usize = 5;
    for written in 0..WRITES {
        let dir = tempfile::tempdir()?;
        let (mut head, mut versions) = (Head::default(), [0; 5]);
        let before = {
            let store = SledStore::open(dir.path(), 1 << 20)?;
            store.append(&next_batch(&mut head, &mut versions, 3)?)?;
            let before = all_records(&store)?;
            let mut cut = next_batch(&mut head.clone(), &mut versions.clone(), 70)?;
            cut.tokens = vec![
                (b"1001\0a".to_vec(), b"{}".to_vec()),
                (b"1001\0b".to_vec(), b"{}".to_vec()),
            ];
            store.cut_next_append_short(written);
            assert!(store.append(&cut).is_err());
            // What it wrote is past the head: no reader sees it.
            assert_eq!(store.head()?, head, "{written} written");
            assert_eq!(all_records(&store)?, before, "{written} written");
            assert_eq!(store.read_at(head.position + 1)?, None);
            // Made durable by some later flush, then a crash.
            store.flush()?;
            before
        };
        let store = SledStore::open(dir.path(), 1 << 20)?;
        assert_eq!(store.head()?, head, "{written} written");
        assert_eq!(all_records(&store)?, before, "{written} written");
        // Its first write is a chunk: an idempotency record stored past
        // the head comes with one, which opening finds.
        assert_eq!(store.cut_short(), written > 0, "{written} written");
        // Its chunks are gone; its idempotency records are the ledger's
        // to remove (it knows their positions).
        assert_eq!(chunks_past(&store, head.position), 0, "{written} written");
        assert_eq!(store.tokens()?.len(), written.saturating_sub(2).min(2));
        // A shorter append in its place reads back whole.
        let next = next_batch(&mut head, &mut versions, 5)?;
        store.append(&next)?;
        let mut expected = before.clone();
        expected.extend(next.records.iter().map(|r| (r.position, r.bytes.clone())));
        assert_eq!(all_records(&store)?, expected, "{written} written");
    }
    Ok(())
}

#[test]
fn the_append_after_one_that_failed_part_way_removes_what_it_left(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 1 << 20)?;
    let (mut head, mut versions) = (Head::default(), [0; 5]);
    store.append(&next_batch(&mut head, &mut versions, 3)?)?;
    // Both chunks written, not the head.
    store.cut_next_append_short(2);
    let failed = next_batch(&mut head.clone(), &mut versions.clone(), 70)?;
    assert!(store.append(&failed).is_err());
    assert_eq!(chunks_past(&store, head.position), 2);
    // Five records in its place: the failed append's second chunk (at
    // 68) would otherwise sit in the middle of the next ones.
    store.append(&next_batch(&mut head, &mut versions, 5)?)?;
    assert_eq!(chunks_past(&store, head.position), 0);
    store.append(&next_batch(&mut head, &mut versions, 70)?)?;
    let positions: Vec<u64> = all_records(&store)?.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=78).collect::<Vec<u64>>());
    Ok(())
}

fn ops(n: usize) -> Vec<ProjectionOp> {
    (0..n)
        .map(|i| ProjectionOp {
            key: format!("s{i:04}").into_bytes(),
            value: Some(b"v".to_vec()),
        })
        .collect()
}

#[test]
fn a_stepwise_projection_write_cut_short_leaves_a_prefix_and_names_its_target(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let ops = ops(600);
    {
        let store = SledStore::open(dir.path(), 1 << 20)?;
        store.update_projections(&[], 3)?;
        store.save_cut_short(&ops, 9, 512)?;
    }
    // As a crash leaves it: 512 writes in, the old checkpoint, the target named.
    let store = SledStore::open(dir.path(), 1 << 20)?;
    assert_eq!(store.projection_checkpoint()?, Some(3));
    assert_eq!(store.projection_pending()?, vec![9]);
    let stored: Vec<Vec<u8>> = store
        .projection_scan(b"")?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let prefix: Vec<Vec<u8>> = ops[..512].iter().map(|op| op.key.clone()).collect();
    assert_eq!(stored, prefix);

    // A later write that stops part way too is named after it, once
    // however often it is retried.
    store.save_cut_short(&ops, 11, 3)?;
    store.save_cut_short(&ops, 11, 2)?;
    assert_eq!(store.projection_pending()?, vec![9, 11]);
    assert_eq!(store.projection_checkpoint()?, Some(3));

    // A whole stepwise write moves the checkpoint and clears the target.
    store.update_projections(&ops, 9)?;
    assert_eq!(store.projection_checkpoint()?, Some(9));
    assert_eq!(store.projection_pending()?, Vec::<u64>::new());
    assert_eq!(store.projection_scan(b"")?.len(), ops.len());

    // So does a save with no changes after a cut-short one, and a rebuild.
    store.save_cut_short(&ops, 12, 1)?;
    assert_eq!(store.projection_pending()?, vec![12]);
    store.update_projections(&[], 12)?;
    assert_eq!(store.projection_pending()?, Vec::<u64>::new());
    store.save_cut_short(&ops, 15, 1)?;
    store.replace_projections(&[], 15)?;
    assert_eq!(store.projection_pending()?, Vec::<u64>::new());
    assert_eq!(store.projection_checkpoint()?, Some(15));
    Ok(())
}

#[test]
fn sled_files_damaged_in_the_middle_refuse_the_open_not_an_empty_log(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path(), 1 << 20)?;
        let (mut head, mut versions) = (Head::default(), [0; 5]);
        for _ in 0..200 {
            store.append(&next_batch(&mut head, &mut versions, 100)?)?;
        }
        // What the read side's save leaves: the mark of its checkpoint.
        store.update_projections(&[], head.position)?;
        assert!(dir.path().join(MARK_FILE).exists());
    }
    // 64 KiB of zeros in the middle of sled's log file.
    let path = dir.path().join(LOG_FILE);
    let len = std::fs::metadata(&path)?.len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
    std::io::Seek::seek(
        &mut file,
        std::io::SeekFrom::Start(len / 2 / 65_536 * 65_536),
    )?;
    std::io::Write::write_all(&mut file, &[0; 65_536])?;
    file.sync_all()?;
    drop(file);
    match SledStore::open(dir.path(), 1 << 20) {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("damaged"), "{what}"),
        Err(other) => panic!("damaged files opened with another error: {other:?}"),
        Ok(store) => panic!("damaged files opened, the log ending at {:?}", store.head()),
    }
    Ok(())
}
