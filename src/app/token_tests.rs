//! Retries with a client token answered from the log: once the log holds
//! a command's records, the writer keeps only where they are, and a retry
//! gets the first reply rebuilt from them, across a restart too.

use std::sync::Arc;

use super::tests::{account, image};
use super::{AppError, CommandOptions, Committed, Ledger, WriterOptions};
use crate::domain::{AccountId, ClientToken, Command, DomainError, Policy, Region, Reply};
use crate::store::{EventLog, MemoryStore, Store};

fn with_token(token: &str) -> Result<CommandOptions, AppError> {
    Ok(CommandOptions {
        client_token: ClientToken::parse_optional(token)?,
        ..CommandOptions::default()
    })
}

fn open(store: &Arc<MemoryStore>) -> Result<Ledger, AppError> {
    let shared: Arc<dyn Store> = store.clone();
    Ledger::open(shared, Policy::default(), WriterOptions::default())
}

fn copy(image_id: &crate::domain::ImageId, regions: &[&str]) -> Result<Command, AppError> {
    Ok(Command::CopyImage {
        caller: AccountId::parse("1001")?,
        image_id: image_id.clone(),
        destination_regions: regions.iter().copied().map(Region::new).collect(),
        image_name: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gets_the_first_reply_rebuilt_from_the_log_across_a_restart() -> Result<(), AppError>
{
    let store = Arc::new(MemoryStore::new());
    let ledger = open(&store)?;
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    let registered = ledger
        .commit(image("1001", "web"), with_token("web-1")?)
        .await?;
    let Reply::ImageRegistered { image_id } = &registered.reply else {
        panic!("registering an image replies with its id: {registered:?}");
    };
    // One command, two records: the reply names both copies, in order.
    let regions = ["ap-shanghai", "ap-beijing"];
    let copied = ledger
        .commit(copy(image_id, &regions)?, with_token("copy-1")?)
        .await?;
    let Reply::ImagesCopied { images } = &copied.reply else {
        panic!("copies: {copied:?}");
    };
    assert_eq!(images.len(), 2);
    assert_eq!(copied.position, 4);
    // A command between them and their retries.
    ledger
        .execute(account("1002"), with_token("web-1")?)
        .await?;
    let head = store.head()?;
    assert_eq!(head.position, 5);

    for round in ["before a restart", "after a restart"] {
        let ledger = match round {
            "before a restart" => ledger.clone(),
            _ => {
                ledger.shutdown();
                open(&store)?
            }
        };
        let retried = ledger
            .commit(image("1001", "web"), with_token("web-1")?)
            .await?;
        assert_eq!(retried, registered, "{round}");
        let retried = ledger
            .commit(copy(image_id, &regions)?, with_token("copy-1")?)
            .await?;
        assert_eq!(retried, copied, "{round}");
        let changed = ledger
            .execute(copy(image_id, &["ap-beijing"])?, with_token("copy-1")?)
            .await;
        match changed {
            Err(AppError::Domain(DomainError::IdempotencyMismatch(_))) => {}
            other => panic!("{round}: other parameters were taken for a retry: {other:?}"),
        }
        assert_eq!(store.head()?, head, "{round}: a retry appends nothing");
        let unrecorded = Committed {
            reply: Reply::Done,
            position: 5,
        };
        assert_eq!(
            ledger.commit(account("1002"), with_token("web-1")?).await?,
            unrecorded,
            "{round}: the token of another account is its own"
        );
    }
    Ok(())
}

type FaultyStore = Arc<crate::store::Faulty<MemoryStore>>;

/// A store whose ledger registered account 1001 and its image "web" with
/// the client token web-1, and that image's reply.
async fn with_one_token() -> Result<(FaultyStore, Committed), AppError> {
    let store = Arc::new(crate::store::Faulty::new(MemoryStore::new()));
    let shared: Arc<dyn Store> = store.clone();
    let ledger = Ledger::open(shared, Policy::default(), WriterOptions::default())?;
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    let first = ledger
        .commit(image("1001", "web"), with_token("web-1")?)
        .await?;
    ledger.shutdown();
    Ok((store, first))
}

/// The ledger on `store` again, counting into metrics of its own.
fn reopen(store: &FaultyStore) -> Result<(Ledger, Arc<crate::metrics::LedgerMetrics>), AppError> {
    let metrics = Arc::new(crate::metrics::LedgerMetrics::default());
    let options = WriterOptions {
        metrics: Arc::clone(&metrics),
        ..WriterOptions::default()
    };
    let shared: Arc<dyn Store> = store.clone();
    Ok((Ledger::open(shared, Policy::default(), options)?, metrics))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_while_the_records_load_and_the_store_answers_for_earlier_tokens(
) -> Result<(), AppError> {
    let (store, first) = with_one_token().await?;

    let delay = std::time::Duration::from_millis(1_500);
    store.slow_token_reads(delay);
    let opening = std::time::Instant::now();
    let (ledger, metrics) = reopen(&store)?;
    assert!(ledger.state().account(&AccountId::parse("1001")?).is_some());
    // A retry is answered by the store's record of its token, not taken
    // for a new command (which the name already taken would refuse), and
    // another command with that token is refused as such.
    let retried = ledger
        .commit(image("1001", "web"), with_token("web-1")?)
        .await?;
    assert_eq!(retried, first);
    match ledger
        .commit(image("1001", "other"), with_token("web-1")?)
        .await
    {
        Err(AppError::Domain(DomainError::IdempotencyMismatch(_))) => {}
        other => panic!("a token reused with other parameters got {other:?}"),
    }
    // A new token runs, and its retry gets its reply.
    let second = ledger
        .commit(image("1001", "db"), with_token("db-1")?)
        .await?;
    assert_ne!(second.position, first.position);
    assert_eq!(
        ledger
            .commit(image("1001", "db"), with_token("db-1")?)
            .await?,
        second
    );
    assert!(
        opening.elapsed() < delay / 2,
        "commands waited for the records: {:?}",
        opening.elapsed()
    );
    assert_eq!(
        metrics.tokens.get(),
        1,
        "only the record made since is held"
    );

    // Once read, the records are taken in beside the one made since (at
    // the next turn: a tick with no command).
    let deadline = opening + delay + std::time::Duration::from_secs(5);
    while metrics.tokens.get() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the records read were not taken in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (name, token, reply) in [("web", "web-1", &first), ("db", "db-1", &second)] {
        assert_eq!(
            &ledger
                .commit(image("1001", name), with_token(token)?)
                .await?,
            reply,
            "{token} after the records were taken in"
        );
    }
    assert_eq!(store.tokens()?.len(), 2);
    ledger.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_of_the_records_refuses_nothing_and_is_tried_again() -> Result<(), AppError> {
    let (store, first) = with_one_token().await?;

    store.fail_next_token_reads(1);
    let (ledger, metrics) = reopen(&store)?;
    // The store answers meanwhile: the retry gets its first reply.
    assert_eq!(
        ledger
            .commit(image("1001", "web"), with_token("web-1")?)
            .await?,
        first
    );
    // The read is tried again a while later (200 ms under test) and the
    // record is taken in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while metrics.tokens.get() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the records were not read again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        ledger
            .commit(image("1001", "web"), with_token("web-1")?)
            .await?,
        first
    );
    ledger.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_after_an_append_cut_short_loads_the_records_before_it_serves(
) -> Result<(), AppError> {
    let store = Arc::new(crate::store::Faulty::new(MemoryStore::new()));
    store.say_cut_short(true);
    store.slow_token_reads(std::time::Duration::from_millis(300));
    let opening = std::time::Instant::now();
    let shared: Arc<dyn Store> = store.clone();
    let ledger = Ledger::open(shared, Policy::default(), WriterOptions::default())?;
    assert!(
        opening.elapsed() >= std::time::Duration::from_millis(300),
        "the records were not read before serving: {:?}",
        opening.elapsed()
    );
    ledger.shutdown();
    Ok(())
}
