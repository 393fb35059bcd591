//! Damage is found and named: by the start, in the records it replays, and
//! by the background scrub in the rest.

use std::sync::Arc;
use std::time::Duration;

use super::tests::account;
use super::{AppError, CommandOptions, Ledger, WriterOptions};
use crate::domain::Policy;
use crate::metrics::LedgerMetrics;
use crate::store::{EventLog, ProjectionStoreExt, SledStore, Store, StoreError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A sled store in `dir` holding 300 accounts, its read side current.
async fn filled(dir: &std::path::Path) -> Result<(), AppError> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir, 8 << 20)?);
    let ledger = Ledger::open(store, Policy::default(), WriterOptions::default())?;
    for i in 0..300 {
        ledger
            .execute(account(&format!("{}", 1000 + i)), CommandOptions::default())
            .await?;
    }
    ledger.shutdown();
    Ok(())
}

/// Stores record 6's bytes at position 5: well formed, but not the record
/// that belongs there.
fn damage(store: &SledStore) -> Result<(), StoreError> {
    let sixth = store
        .read_at(6)?
        .ok_or_else(|| StoreError::failed("no record 6"))?;
    store.tamper_record(5, &sixth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_a_damaged_record_and_only_the_audit_log_stops_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    filled(dir.path()).await?;
    let store = Arc::new(SledStore::open(dir.path(), 8 << 20)?);
    damage(&store)?;
    let metrics = Arc::new(LedgerMetrics::default());
    let shared: Arc<dyn Store> = store.clone();
    let options = WriterOptions {
        settings: crate::app::LedgerSettings {
            scrub_rate: 100_000,
            ..Default::default()
        },
        metrics: Arc::clone(&metrics),
        ..WriterOptions::default()
    };
    // The read side is current: the start replays nothing and serves.
    let ledger = Ledger::open(shared, Policy::default(), options)?;
    let mut condition = ledger.condition();
    let seen = tokio::time::timeout(
        Duration::from_secs(5),
        condition.wait_for(|c| c.damaged.is_some()),
    )
    .await?
    .map(|c| *c)?;
    assert_eq!(seen.damaged, Some(5));
    assert!(seen.serving(), "commands still serve");
    assert!(!seen.audit_serving(), "the log's readers do not");
    // The pass over 300 records ends at once at this rate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metrics.damaged_records.get(), 1, "only the record at 5");
    assert_eq!(metrics.scrub_position.get(), 300);
    ledger
        .execute(account("5000"), CommandOptions::default())
        .await?;
    assert_eq!(store.head()?.position, 301);
    ledger.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_in_what_the_start_replays_refuses_the_start_naming_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    filled(dir.path()).await?;
    {
        let store = SledStore::open(dir.path(), 8 << 20)?;
        damage(&store)?;
        // No read side: the start replays the whole log.
        store.replace_projections(&[], 0)?;
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20)?);
    match Ledger::open(store, Policy::default(), WriterOptions::default()) {
        Err(AppError::Storage(StoreError::Corrupt(what))) => {
            assert!(what.contains("position 5"), "{what}")
        }
        Err(other) => panic!("a start over a damaged record: {other:?}"),
        Ok(_) => panic!("a start over a damaged record was not refused"),
    }
    Ok(())
}
