//! Idempotency retention: a record lives for the policy's retention, a
//! retry after it runs as a new command, and expired records leave memory
//! and the store.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{account, image};
use super::{AppError, CommandOptions, Ledger, WriterOptions};
use crate::audit::{verify, VerifyOptions};
use crate::domain::{ClientToken, Policy, Reply};
use crate::metrics::LedgerMetrics;
use crate::store::{EventLog, MemoryStore, Store};

const RETENTION: Duration = Duration::from_secs(1);

fn with_token(token: &str) -> Result<CommandOptions, AppError> {
    Ok(CommandOptions {
        client_token: ClientToken::parse_optional(token)?,
        ..CommandOptions::default()
    })
}

/// Registers accounts 2000, 2001, … with tokens a-0, a-1, …
async fn register_with_tokens(ledger: &Ledger, count: u32) -> Result<(), AppError> {
    for i in 0..count {
        let id = format!("{}", 2000 + i);
        ledger
            .execute(account(&id), with_token(&format!("a-{i}"))?)
            .await?;
    }
    Ok(())
}

fn policy() -> Policy {
    Policy {
        token_retention: RETENTION,
        ..Policy::default()
    }
}

fn open(store: &Arc<MemoryStore>, metrics: &Arc<LedgerMetrics>) -> Result<Ledger, AppError> {
    let shared: Arc<dyn Store> = store.clone();
    let options = WriterOptions {
        metrics: Arc::clone(metrics),
        ..WriterOptions::default()
    };
    Ledger::open(shared, policy(), options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_retention_runs_anew_and_expired_records_leave_memory_and_store(
) -> Result<(), AppError> {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(LedgerMetrics::default());
    let ledger = open(&store, &metrics)?;
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    let first = ledger
        .execute(image("1001", "web"), with_token("web-1")?)
        .await?;
    let Reply::ImageRegistered { .. } = &first else {
        panic!("registering an image replies with its id: {first:?}");
    };
    // Within the retention a retry gets the first reply and appends nothing.
    assert_eq!(
        ledger
            .execute(image("1001", "web"), with_token("web-1")?)
            .await?,
        first
    );
    register_with_tokens(&ledger, 100).await?;
    assert_eq!(store.head()?.position, 102);
    assert_eq!(store.tokens()?.len(), 101);
    assert_eq!(metrics.tokens.get(), 101);

    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;
    // After it, the retry is a new command: the name is taken by the first.
    let again = ledger
        .execute(image("1001", "web"), with_token("web-1")?)
        .await;
    match again {
        Err(AppError::Domain(err)) => assert_eq!(err.reason(), "InvalidImageName.Duplicate"),
        other => panic!("the expired retry ran as a new command: {other:?}"),
    }
    // The token now belongs to whatever command uses it next.
    let other = ledger
        .execute(image("1001", "db"), with_token("web-1")?)
        .await?;
    assert_ne!(other, first);
    assert_eq!(
        ledger
            .execute(image("1001", "db"), with_token("web-1")?)
            .await?,
        other
    );
    assert_eq!(store.head()?.position, 103);
    // Memory and the store hold only the record made since.
    assert_eq!(metrics.tokens.get(), 1);
    assert_eq!(store.tokens()?.len(), 1);
    ledger.shutdown();

    // The log still holds every token; verify accepts the reuse after expiry.
    let report = verify(store.as_ref(), &policy(), &VerifyOptions::default())
        .map_err(|err| AppError::Storage(crate::store::StoreError::failed(err.to_string())))?;
    assert_eq!(report.head_position, 103);
    // Under a longer retention the reuse would have been a retry: verify
    // names it.
    let longer = Policy {
        token_retention: Duration::from_secs(3_600),
        ..Policy::default()
    };
    assert!(
        verify(store.as_ref(), &longer, &VerifyOptions::default()).is_err(),
        "a token used twice within the retention is refused"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_expired_while_the_ledger_was_stopped_are_not_loaded() -> Result<(), AppError>
{
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(LedgerMetrics::default());
    let ledger = open(&store, &metrics)?;
    register_with_tokens(&ledger, 50).await?;
    ledger.shutdown();
    assert_eq!(store.tokens()?.len(), 50);

    let earlier = |store: &MemoryStore| -> Result<usize, AppError> {
        Ok(store
            .tokens()?
            .iter()
            .filter(|(key, _)| key.windows(3).any(|w| w == b"\0a-"))
            .count())
    };
    assert_eq!(earlier(&store)?, 50);

    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;
    let metrics = Arc::new(LedgerMetrics::default());
    let ledger = open(&store, &metrics)?;
    ledger
        .execute(account("3000"), with_token("fresh")?)
        .await?;
    // The records read at start are taken in at the next turn (a tick at
    // most); the expired ones leave the store with the appends after.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut other: u64 = 3001;
    while earlier(&store)? > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} expired records still stored",
            earlier(&store)?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        ledger
            .execute(account(&other.to_string()), CommandOptions::default())
            .await?;
        other += 1;
    }
    assert!(
        metrics.tokens.get() <= 1,
        "only the record made since may be held: {}",
        metrics.tokens.get()
    );
    // An expired retry runs anew: registering an account again changes nothing.
    assert_eq!(
        ledger.execute(account("2000"), with_token("a-0")?).await?,
        Reply::Done
    );
    assert_eq!(store.head()?.position, 50 + other - 3000);
    ledger.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_leave_memory_as_they_expire_without_another_command() -> Result<(), AppError> {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(LedgerMetrics::default());
    let ledger = open(&store, &metrics)?;
    register_with_tokens(&ledger, 40).await?;
    assert_eq!(metrics.tokens.get(), 40);
    // No command after these: the records go by time alone, within the
    // retention and a tick or two.
    let deadline = std::time::Instant::now() + RETENTION + Duration::from_secs(4);
    while metrics.tokens.get() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} records still held after their retention",
            metrics.tokens.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing was appended for it; the store drops them with the next append.
    assert_eq!(store.head()?.position, 40);
    assert_eq!(store.tokens()?.len(), 40);
    ledger
        .execute(account("3000"), CommandOptions::default())
        .await?;
    assert_eq!(store.tokens()?.len(), 0);
    assert_eq!(metrics.tokens.get(), 0);
    ledger.shutdown();
    Ok(())
}
