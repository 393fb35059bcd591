//! An import longer than one append batch (4,096 records): the reading,
//! checking and appending threads hand batches over in order, and a bad
//! line past the first batches is still the error, with nothing left.

use std::io::Cursor;
use std::sync::Arc;

use image_ledger::audit::{self, AuditError};
use image_ledger::domain::Policy;
use image_ledger::store::{EventLog, SledStore, Store};
use image_ledger_bench::{fill_store, FillPlan};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const EVENTS: u64 = 10_000;

/// The export of a generated log of [`EVENTS`] events.
fn exported_log() -> Result<(Vec<u8>, image_ledger::store::Head), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path(), 8 << 20)?);
    let plan = FillPlan {
        events: EVENTS,
        accounts: 50,
        images: 500,
        concurrency: 64,
        regions: 2,
    };
    fill_store(
        Arc::clone(&store) as Arc<dyn Store>,
        &plan,
        Policy::default(),
    )?;
    let head = store.head()?;
    let mut file = Vec::new();
    audit::export(store.as_ref(), 1, None, &mut file)?;
    Ok((file, head))
}

#[test]
fn an_import_of_several_batches_restores_the_log_and_names_a_late_bad_line() -> TestResult {
    let (file, head) = exported_log()?;
    assert!(head.position >= EVENTS, "head {}", head.position);

    let parent = tempfile::tempdir()?;
    let restored = parent.path().join("restored");
    let report = audit::import(&mut Cursor::new(&file), &restored, &Policy::default())?;
    assert_eq!(report.events, head.position);
    assert_eq!(report.head_hash, hex::encode(head.hash));
    {
        let store = SledStore::open(&restored, 8 << 20)?;
        assert_eq!(store.head()?, head);
        let mut again = Vec::new();
        audit::export(&store, 1, None, &mut again)?;
        assert!(again == file, "the restore exports byte for byte the same");
    }

    // One byte of line 9,000 (in the third batch) changed: its hash no
    // longer matches.
    let mut lines: Vec<Vec<u8>> = file
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let late = 9_000;
    let at = lines[late - 1]
        .windows(12)
        .position(|w| w == b"\"recorded_at")
        .ok_or("a recorded_at member")?;
    lines[late - 1][at + 16] ^= 1;
    let changed = lines.join(&b'\n');
    let other = parent.path().join("other");
    let err = audit::import(&mut Cursor::new(&changed), &other, &Policy::default())
        .expect_err("a changed line is refused");
    match err {
        AuditError::Line { line, what } => {
            assert_eq!(line, late as u64, "{what}");
            assert!(what.contains("hash"), "{what}");
        }
        other => panic!("expected a line error, got {other:?}"),
    }
    assert!(!other.exists(), "nothing half-written is left behind");
    let leftovers: Vec<_> = std::fs::read_dir(parent.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(leftovers, vec![std::ffi::OsString::from("restored")]);
    Ok(())
}
