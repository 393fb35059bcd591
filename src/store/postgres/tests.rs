//! The PostgreSQL store reads back exactly what the in-memory store does,
//! refuses a batch built on a head it does not have, keeps everything
//! across a reconnect, saves the read side whole, refuses a schema newer
//! than it knows, and lets several stores on one database take turns. Each test runs on a throwaway cluster of its own.

use super::PgStore;
use crate::store::tests::{fill, next_batch, scan_all, streams_match};
use crate::store::{
    AppendBatch, EventLog, EventLogExt, Head, MemoryStore, ProjectionOp, ProjectionStore,
    ProjectionStoreExt, Saved, StoreError,
};
use image_ledger_testkit::Cluster;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn the_postgres_store_reads_back_what_the_memory_store_does() -> TestResult {
    let cluster = Cluster::start();
    let pg = PgStore::open(&cluster.url())?;
    let memory = MemoryStore::default();
    // Batches of every size, a scan page (1,000) crossed more than once.
    let head = fill(&[&pg, &memory], &[1, 64, 65, 1_300, 3, 2, 1_000])?;
    assert_eq!(head, 2_435);
    assert_eq!(pg.head()?, memory.head()?);
    let everything = scan_all(&memory, 1, usize::MAX);
    assert_eq!(scan_all(&pg, 0, usize::MAX), everything);
    for from in [1, 2, 999, 1_000, 1_001, 2_000, 2_435] {
        assert_eq!(
            scan_all(&pg, from, usize::MAX),
            scan_all(&memory, from, usize::MAX),
            "scan from {from}"
        );
        assert_eq!(scan_all(&pg, from, 3), scan_all(&memory, from, 3));
    }
    assert!(scan_all(&pg, 2_436, usize::MAX).is_empty());
    for position in [0, 1, 64, 65, 1_000, 2_435, 2_436] {
        assert_eq!(pg.read_at(position)?, memory.read_at(position)?);
    }
    streams_match(&pg, &memory, 487)?;
    let ids = ["100", "101", "102", "103", "104", "nobody"];
    for as_of in [0, 1, 500, 2_435, u64::MAX] {
        assert_eq!(
            pg.stream_versions(&ids, as_of)?,
            memory.stream_versions(&ids, as_of)?,
            "as of {as_of}"
        );
    }

    // Reopened: the same log, the schema left as it was.
    drop(pg);
    let pg = PgStore::open(&cluster.url())?;
    assert_eq!(scan_all(&pg, 1, usize::MAX), everything);
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn an_append_on_a_stale_head_is_a_conflict_and_writes_nothing() -> TestResult {
    let cluster = Cluster::start();
    let pg = PgStore::open(&cluster.url())?;
    let (mut head, mut versions) = (Head::default(), [0; 5]);
    let mut first = next_batch(&mut head, &mut versions, 3)?;
    first.tokens = vec![(b"1001\0a".to_vec(), b"{}".to_vec())];
    pg.append(&first)?;
    // Built on the empty log again, as a second replica would.
    let (mut stale, mut stale_versions) = (Head::default(), [0; 5]);
    let mut late = next_batch(&mut stale, &mut stale_versions, 2)?;
    late.tokens = vec![(b"1001\0b".to_vec(), b"{}".to_vec())];
    match pg.append(&late) {
        Err(StoreError::Conflict { expected, found }) => {
            assert_eq!((expected, found), (0, 3));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(pg.head()?, head);
    assert_eq!(scan_all(&pg, 1, usize::MAX).len(), 3);
    assert_eq!(pg.tokens()?, vec![(b"1001\0a".to_vec(), b"{}".to_vec())]);
    // An append of no records only removes idempotency records.
    pg.append(&AppendBatch {
        expected_head: head,
        expired_tokens: vec![b"1001\0a".to_vec()],
        ..AppendBatch::default()
    })?;
    assert_eq!(pg.head()?, head);
    assert_eq!(pg.tokens()?, Vec::new());
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn the_read_side_is_saved_whole_and_scanned_by_prefix() -> TestResult {
    let cluster = Cluster::start();
    let pg = PgStore::open(&cluster.url())?;
    let put = |key: &[u8], value: &[u8]| ProjectionOp {
        key: key.to_vec(),
        value: Some(value.to_vec()),
    };
    assert_eq!(pg.projection_checkpoint()?, None);
    pg.update_projections(
        &[
            put(b"a1", b"x"),
            put(b"i1", b"y"),
            put(b"s1\0a", b"z"),
            put(b"\xff", b"w"),
        ],
        4,
    )?;
    assert_eq!(pg.projection_checkpoint()?, Some(4));
    assert_eq!(pg.projection_pending()?, Vec::<u64>::new());
    assert_eq!(
        pg.projection_scan(b"i")?,
        vec![(b"i1".to_vec(), b"y".to_vec())]
    );
    assert_eq!(pg.projection_scan(b"\xff")?.len(), 1);
    assert_eq!(pg.projection_scan(b"")?.len(), 4);
    pg.update_projections(
        &[ProjectionOp {
            key: b"i1".to_vec(),
            value: None,
        }],
        6,
    )?;
    assert_eq!(pg.projection_scan(b"i")?, Vec::new());
    assert_eq!(pg.projection_checkpoint()?, Some(6));
    pg.replace_projections(&[put(b"a2", b"v")], 9)?;
    assert_eq!(
        pg.projection_scan(b"")?,
        vec![(b"a2".to_vec(), b"v".to_vec())]
    );
    assert_eq!(pg.projection_checkpoint()?, Some(9));
    Ok(())
}

/// A visit streams every entry of its prefix in key order, across more
/// rows than one chunk, and stops at the first error the callback returns.
#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn a_visit_streams_the_entries_of_a_prefix_in_order_and_stops_at_an_error() -> TestResult {
    let cluster = Cluster::start();
    let pg = PgStore::open(&cluster.url())?;
    let ops: Vec<ProjectionOp> = (0..2_500u32)
        .map(|n| ProjectionOp {
            key: format!("i{n:05}").into_bytes(),
            value: Some(n.to_be_bytes().to_vec()),
        })
        .chain(std::iter::once(ProjectionOp {
            key: b"j0".to_vec(),
            value: Some(b"outside".to_vec()),
        }))
        .collect();
    pg.update_projections(&ops, 1)?;
    let mut seen = Vec::new();
    pg.projection_visit(b"i", &mut |key, value| {
        seen.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    let want: Vec<(Vec<u8>, Vec<u8>)> = ops[..2_500]
        .iter()
        .map(|op| (op.key.clone(), op.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(seen, want);
    let mut visited = 0;
    let stopped = pg.projection_visit(b"i", &mut |_, _| {
        visited += 1;
        if visited == 1_500 {
            return Err(StoreError::Corrupt("stop here".into()));
        }
        Ok(())
    });
    assert!(
        matches!(&stopped, Err(StoreError::Corrupt(what)) if what == "stop here"),
        "{stopped:?}"
    );
    assert_eq!(visited, 1_500);
    // The connection serves the next call after a visit that stopped.
    assert_eq!(pg.projection_scan(b"j")?.len(), 1);
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn a_schema_newer_than_this_build_is_refused_with_its_version() -> TestResult {
    let cluster = Cluster::start();
    drop(PgStore::open(&cluster.url())?);
    let mut client = postgres::Client::connect(&cluster.url(), postgres::NoTls)?;
    client.execute("UPDATE ledger_schema SET version = 99", &[])?;
    let refused = PgStore::open(&cluster.url())
        .err()
        .ok_or("a newer schema opens")?;
    let message = refused.to_string();
    assert!(
        message.contains("version 99, newer than this build"),
        "{message}"
    );
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn two_stores_on_one_database_take_turns_and_see_each_others_appends() -> TestResult {
    let cluster = Cluster::start();
    let (a, b) = (
        PgStore::open(&cluster.url())?,
        PgStore::open(&cluster.url())?,
    );
    let mut watcher = b
        .shared()
        .ok_or("a PostgreSQL store is shared")?
        .watcher()?;
    let (mut head, mut versions) = (Head::default(), [0u64; 5]);
    let first = next_batch(&mut head, &mut versions, 3)?;
    a.write(&first)?;
    // The notification wakes the watcher long before the timeout.
    let started = std::time::Instant::now();
    assert_eq!(
        watcher.wait(std::time::Duration::from_secs(10))?,
        head.position
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A batch decided on the old head meets the new one.
    let stale = next_batch(&mut Head::default(), &mut [0u64; 5], 1)?;
    match b.write(&stale) {
        Err(StoreError::Conflict { expected, found }) => assert_eq!((expected, found), (0, 3)),
        other => return Err(format!("a stale batch wrote: {other:?}").into()),
    }
    // B's turn holds A's next append until B's own append commits.
    assert_eq!(b.shared().ok_or("shared")?.take_turn()?, head);
    let mut after_b = head;
    let b_batch = next_batch(&mut after_b, &mut versions, 2)?;
    let a_batch = next_batch(&mut head, &mut [versions[0]; 5], 1)?;
    let racer = std::thread::spawn(move || a.write(&a_batch));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!racer.is_finished(), "A appended during B's turn");
    b.write(&b_batch)?;
    match racer.join().map_err(|_| "the racer panicked")? {
        Err(StoreError::Conflict { expected, found }) => assert_eq!((expected, found), (3, 5)),
        other => return Err(format!("A's append after B's turn: {other:?}").into()),
    }
    assert_eq!(b.head()?, after_b);
    // A turn given back without a write leaves the head as it was.
    b.shared().ok_or("shared")?.take_turn()?;
    b.shared().ok_or("shared")?.end_turn()?;
    assert_eq!(watcher.head()?, after_b);
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn one_store_at_a_time_keeps_the_read_side_and_only_from_the_stored_checkpoint() -> TestResult {
    let cluster = Cluster::start();
    let (a, b) = (
        PgStore::open(&cluster.url())?,
        PgStore::open(&cluster.url())?,
    );
    let op = |key: &[u8]| ProjectionOp {
        key: key.to_vec(),
        value: Some(b"v".to_vec()),
    };
    assert_eq!(a.save_projections_from(&[op(b"a")], 0, 4)?, Saved::Done);
    // A keeps the read side now: B's saves are left out.
    assert_eq!(b.save_projections_from(&[op(b"b")], 4, 6)?, Saved::Skipped);
    // A save computed from another checkpoint than the stored one is refused.
    assert_eq!(a.save_projections_from(&[op(b"c")], 2, 8)?, Saved::Stale);
    assert_eq!(a.projection_checkpoint()?, Some(4));
    assert_eq!(
        a.projection_scan(b"")?,
        vec![(b"a".to_vec(), b"v".to_vec())]
    );
    // Once A's session has ended (the server notices a moment after the
    // connection closed), B takes over.
    drop(a);
    let mut saved = Vec::new();
    for _ in 0..50 {
        saved.push(b.save_projections_from(&[op(b"b")], 4, 6)?);
        if saved.last() != Some(&Saved::Skipped) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(saved.last(), Some(&Saved::Done), "{saved:?}");
    assert_eq!(b.projection_checkpoint()?, Some(6));
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn a_turn_left_idle_is_ended_by_the_database_so_others_append_again() -> TestResult {
    let cluster = Cluster::start();
    let (holder, other) = (
        PgStore::open(&cluster.url())?,
        PgStore::open(&cluster.url())?,
    );
    let (mut head, mut versions) = (Head::default(), [0u64; 5]);
    let batch = next_batch(&mut head, &mut versions, 2)?;
    // A replica that takes the turn and then stops (say, frozen).
    holder.shared().ok_or("shared")?.take_turn()?;
    let started = std::time::Instant::now();
    other.write(&batch)?;
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(4) && waited < std::time::Duration::from_secs(15),
        "the append waited {waited:?}"
    );
    assert_eq!(other.head()?, head);
    // The holder's turn is gone; its next append reconnects and checks the head.
    let stale = next_batch(&mut Head::default(), &mut [0u64; 5], 1)?;
    assert!(holder.write(&stale).is_err());
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn injected_failures_work_on_postgres_as_on_the_other_stores() -> TestResult {
    let cluster = Cluster::start();
    let pg = crate::store::Faulty::new(PgStore::open(&cluster.url())?);
    // A save is one transaction: cut short, it leaves nothing pending.
    crate::store::tests::faults_behave_alike(&pg, false)?;
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn one_store_at_a_time_sweeps_and_another_takes_over_when_it_goes() -> TestResult {
    let cluster = Cluster::start();
    let (a, b) = (
        PgStore::open(&cluster.url())?,
        PgStore::open(&cluster.url())?,
    );
    let claim = |store: &PgStore| -> Result<bool, StoreError> {
        store
            .shared()
            .ok_or_else(|| StoreError::failed("a PostgreSQL store is shared"))?
            .claim_sweep()
    };
    assert!(claim(&a)?, "the first to ask sweeps");
    assert!(!claim(&b)?, "while it holds the claim, no other does");
    assert!(claim(&a)?, "and it keeps it");
    // Its connection ends (a stop, a crash): the claim goes with it.
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !claim(&b)? {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim was not taken over within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}
