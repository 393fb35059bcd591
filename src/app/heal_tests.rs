//! Writes that heal: a store that stops taking writes (a full disk) is
//! retried in the background, commands are refused at once meanwhile, and
//! writes resume by themselves once it takes them again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::account;
use super::{AppError, CommandOptions, Ledger, WriterOptions};
use crate::app::replay_log;
use crate::domain::{AccountId, ClientToken, Policy, Reply};
use crate::store::{EventLog, Faulty, MemoryStore, Store};

/// Waits up to `within` for the ledger's condition to say `failing`.
async fn until_failing(ledger: &Ledger, failing: bool, within: Duration) -> bool {
    let mut condition = ledger.condition();
    tokio::time::timeout(within, condition.wait_for(|c| c.failing == failing))
        .await
        .is_ok_and(|seen| seen.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_by_themselves_once_a_full_disk_has_room() -> Result<(), AppError> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let shared: Arc<dyn Store> = store.clone();
    let ledger = Ledger::open(shared, Policy::default(), WriterOptions::default())?;
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    assert!(ledger.condition().borrow().serving());

    store.fill_disk(true);
    let token = ClientToken::parse_optional("after-the-disk-filled")?;
    let options = CommandOptions {
        client_token: token,
        ..CommandOptions::default()
    };
    let failed = ledger.execute(account("1002"), options.clone()).await;
    assert!(
        matches!(failed, Err(AppError::Storage(_))),
        "the write that met the full disk: {failed:?}"
    );
    assert!(
        until_failing(&ledger, true, Duration::from_secs(2)).await,
        "health says the store takes no writes"
    );
    assert!(!ledger.condition().borrow().serving());

    // Meanwhile commands are refused at once, without touching the store,
    // and reads answer.
    let tries_before = store.refused_on_full_disk();
    let started = Instant::now();
    for i in 0..200 {
        let refused = ledger
            .execute(account(&format!("{}", 3000 + i)), CommandOptions::default())
            .await;
        assert!(
            matches!(refused, Err(AppError::Unwritable(_))),
            "refused while the disk is full: {refused:?}"
        );
    }
    let refusing = started.elapsed();
    assert!(
        refusing < Duration::from_secs(1),
        "200 refusals took {refusing:?}"
    );
    assert!(ledger.state().account(&AccountId::parse("1001")?).is_some());
    // The healer's backoff: 50 ms doubling to 1 s is at most a dozen
    // tries in the time the refusals took (plus the first one).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let tries = store.refused_on_full_disk() - tries_before;
    assert!(
        (1..=12).contains(&tries),
        "{tries} tries of the store in {:?}",
        refusing + Duration::from_millis(1_500)
    );
    assert_eq!(store.head()?.position, 1, "nothing was written meanwhile");

    // Room again: writes resume within the longest wait, with no restart.
    store.fill_disk(false);
    let freed = Instant::now();
    assert!(
        until_failing(&ledger, false, Duration::from_secs(3)).await,
        "health says serving again"
    );
    let resumed = freed.elapsed();
    assert!(
        resumed < Duration::from_millis(1_500),
        "resumed after {resumed:?}"
    );
    assert!(ledger.condition().borrow().serving());
    // The retry of the write whose outcome was unknown runs once.
    let reply = ledger.execute(account("1002"), options.clone()).await?;
    assert_eq!(reply, Reply::Done);
    assert_eq!(ledger.execute(account("1002"), options).await?, Reply::Done);
    assert_eq!(store.head()?.position, 2);
    let (replayed, _) = replay_log(store.as_ref())?;
    assert_eq!(replayed, *ledger.state());
    ledger.shutdown();
    Ok(())
}
