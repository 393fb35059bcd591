//! The command path against the in-memory store: group commit outcomes,
//! storage failures and recovery.

use std::sync::Arc;

use super::{AppError, CommandOptions, Ledger, WriterOptions};
use crate::app::replay_log;
use crate::audit::first_key_off_the_writes;
use crate::domain::{
    AccountId, AccountKind, ClientToken, Command, ImageState, NewImage, Policy, Region, Reply,
};
use crate::projection::persist;
use crate::store::{
    EventLog, EventLogExt, Faulty, MemoryStore, ProjectionStore, ProjectionStoreExt, Store,
    StoreError,
};

pub(super) fn account(id: &str) -> Command {
    Command::RegisterAccount {
        account_id: AccountId::parse(id).expect("account id"),
        kind: AccountKind::Root,
    }
}

pub(super) fn image(owner: &str, name: &str) -> Command {
    Command::RegisterImage(NewImage {
        owner_account_id: AccountId::parse(owner).expect("account id"),
        region: Region::new("ap-guangzhou"),
        attributes: crate::domain::tests::attributes(name),
        state: ImageState::Normal,
    })
}

fn open(store: &Arc<Faulty<MemoryStore>>) -> Ledger {
    let store: Arc<dyn Store> = store.clone();
    Ledger::open(store, Policy::default(), WriterOptions::default()).expect("ledger opens")
}

#[tokio::test]
async fn a_failed_append_refuses_the_batch_and_changes_nothing() -> Result<(), AppError> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = open(&store);
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    let before = ledger.state();

    store.fail_next_appends(1);
    let token = ClientToken::parse_optional("retry-me")?;
    let options = CommandOptions {
        client_token: token.clone(),
        dry_run: false,
        principal: None,
    };
    let failed = ledger.execute(image("1001", "web"), options.clone()).await;
    assert!(
        matches!(failed, Err(AppError::Storage(_))),
        "a storage failure reaches the caller: {failed:?}"
    );
    assert_eq!(
        *ledger.state(),
        *before,
        "readers never see the failed batch"
    );
    assert_eq!(store.head()?.position, 1);

    // The retry with the same token is applied exactly once.
    let reply = ledger
        .execute(image("1001", "web"), options.clone())
        .await?;
    let again = ledger.execute(image("1001", "web"), options).await?;
    assert!(matches!(reply, Reply::ImageRegistered { .. }));
    assert_eq!(reply, again);
    assert_eq!(store.head()?.position, 2);
    let (replayed, _) = replay_log(store.as_ref())?;
    assert_eq!(replayed, *ledger.state());
    // A clean stop brings the stored read side up to the head.
    ledger.shutdown();
    assert_eq!(store.projection_checkpoint()?, Some(2));
    assert_eq!(persist::load(store.as_ref())?, replayed);
    Ok(())
}

#[tokio::test]
async fn commands_queued_together_are_committed_together_in_order() -> Result<(), AppError> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = open(&store);
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    // Two commands for one name race inside one batch: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .execute(image("1001", "same-name"), CommandOptions::default())
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task
            .await
            .map_err(|e| AppError::Storage(crate::store::StoreError::failed(e.to_string())))?
        {
            Ok(_) => won += 1,
            Err(AppError::Domain(err)) => assert_eq!(err.reason(), "InvalidImageName.Duplicate"),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let (replayed, head) = replay_log(store.as_ref())?;
    assert_eq!(head.position, 2);
    assert_eq!(replayed, *ledger.state());
    ledger.shutdown();
    Ok(())
}

#[tokio::test]
async fn a_shut_down_ledger_refuses_commands() {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = open(&store);
    ledger.shutdown();
    let refused = ledger
        .execute(account("1001"), CommandOptions::default())
        .await;
    assert!(
        matches!(refused, Err(AppError::ShuttingDown)),
        "{refused:?}"
    );
}

/// What one round of racing registrations left behind.
struct Raced {
    /// Ids answered OK.
    answered_ok: Vec<String>,
    /// Ids refused with a storage failure.
    refused: Vec<String>,
    /// The state replayed from the log after the round.
    replayed: crate::domain::LedgerState,
    store: Arc<Faulty<MemoryStore>>,
}

/// On a fresh ledger, registers accounts 2000 to 2299 from concurrent
/// tasks against a store slowed down by `delay`, so batches are decided on
/// top of batches still being written; `inject` runs before the 41st
/// command is sent. Checks that the failure refused something, that the
/// ledger then takes commands again and that its state equals a replay of
/// the log, and shuts it down.
async fn race_registrations(
    delay: std::time::Duration,
    inject: impl Fn(&Faulty<MemoryStore>),
    round: usize,
) -> Result<Raced, AppError> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = open(&store);
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    store.slow_appends(delay);
    let mut tasks = Vec::new();
    for i in 0..300 {
        if i == 40 {
            inject(&store);
        }
        let ledger = ledger.clone();
        let id = format!("{}", 2000 + i);
        tasks.push(tokio::spawn(async move {
            let outcome = ledger
                .execute(account(&id), CommandOptions::default())
                .await;
            (id, outcome)
        }));
    }
    let (mut answered_ok, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        let (id, outcome) = task
            .await
            .map_err(|e| AppError::Storage(crate::store::StoreError::failed(e.to_string())))?;
        match outcome {
            Ok(Reply::Done) => answered_ok.push(id),
            Err(AppError::Storage(_)) => refused.push(id),
            other => panic!("round {round}: unexpected {other:?}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "round {round}: the injected failure refused nothing"
    );
    // After the failure the ledger reloads from the store and takes
    // commands again.
    ledger
        .execute(account("9999"), CommandOptions::default())
        .await?;
    let (replayed, _) = replay_log(store.as_ref())?;
    assert_eq!(replayed, *ledger.state(), "round {round}");
    ledger.shutdown();
    Ok(Raced {
        answered_ok,
        refused,
        replayed,
        store,
    })
}

fn stored(state: &crate::domain::LedgerState, id: &str) -> bool {
    state
        .account(&AccountId::parse(id).expect("account id"))
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_the_pipeline_refuses_exactly_what_is_not_stored() -> Result<(), AppError> {
    for round in 0..5 {
        let raced = race_registrations(
            std::time::Duration::from_millis(2),
            |store| store.fail_next_appends(1),
            round,
        )
        .await?;
        for id in &raced.answered_ok {
            assert!(
                stored(&raced.replayed, id),
                "round {round}: account {id} answered ok=true"
            );
        }
        for id in &raced.refused {
            assert!(
                !stored(&raced.replayed, id),
                "round {round}: account {id} answered ok=false"
            );
        }
        assert_eq!(
            persist::load(raced.store.as_ref())?,
            raced.replayed,
            "round {round}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_read_side_behind_the_head_is_caught_up_with_the_right_versions(
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = open(&store);
    for id in ["1001", "1002"] {
        ledger
            .execute(account(id), CommandOptions::default())
            .await?;
    }
    let Reply::ImageRegistered { image_id } = ledger
        .execute(image("1001", "web"), CommandOptions::default())
        .await?
    else {
        panic!("registering an image replies with its id");
    };
    ledger.shutdown();
    let checkpoint = store.projection_checkpoint()?;

    // Another tool appends a share without touching the read side.
    let head = store.head()?;
    let event = crate::domain::Event::ImageShared {
        expires_at: None,
        image_id: image_id.clone(),
        account_ids: vec![AccountId::parse("1002")?],
        shared_time: time::OffsetDateTime::UNIX_EPOCH,
    };
    let record = crate::store::EncodedRecord::encode(
        &event,
        &crate::store::RecordMeta {
            position: head.position + 1,
            aggregate_version: 2,
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
            actor: Some("1001"),
            principal: None,
            client_token: None,
            request_hash: None,
            prev_hash: head.hash,
        },
    )?;
    store.append(&crate::store::AppendBatch {
        expected_head: head,
        records: vec![record],
        ..Default::default()
    })?;
    assert_eq!(store.projection_checkpoint()?, checkpoint);

    // The next start loads the read side as of its checkpoint and replays the rest.
    let ledger = open(&store);
    let (replayed, _) = replay_log(store.as_ref())?;
    assert_eq!(*ledger.state(), replayed);
    assert_eq!(
        ledger.state().any_image(&image_id).map(|i| i.version),
        Some(2)
    );
    ledger.shutdown();
    assert_eq!(store.projection_checkpoint()?, Some(store.head()?.position));
    assert_eq!(persist::load(store.as_ref())?, replayed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_answers_nothing_ok_that_is_not_stored_and_the_ledger_recovers(
) -> Result<(), AppError> {
    failure_answers_nothing_ok_that_is_not_stored(|store| store.fail_next_flushes(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_answers_nothing_ok_that_is_not_stored_and_the_ledger_recovers(
) -> Result<(), AppError> {
    failure_answers_nothing_ok_that_is_not_stored(|store| store.fail_next_syncs(1)).await
}

/// Five rounds of racing registrations with `inject` run among them.
async fn failure_answers_nothing_ok_that_is_not_stored(
    inject: impl Fn(&Faulty<MemoryStore>),
) -> Result<(), AppError> {
    for round in 0..5 {
        // The store keeps the unflushed appends (their outcome was unknown),
        // so nothing is asserted about the refused commands.
        let raced = race_registrations(std::time::Duration::from_millis(1), &inject, round).await?;
        for id in raced.answered_ok {
            assert!(
                stored(&raced.replayed, &id),
                "round {round}: account {id} was answered OK but is not stored"
            );
        }
    }
    Ok(())
}

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("account id")
}

/// Runs `command` and returns the id of the image it registered, if any.
async fn run(
    ledger: &Ledger,
    command: Command,
) -> Result<Option<crate::domain::ImageId>, AppError> {
    Ok(
        match ledger.execute(command, CommandOptions::default()).await? {
            Reply::ImageRegistered { image_id } => Some(image_id),
            _ => None,
        },
    )
}

/// A history that touches every kind of projection entry, with accounts
/// registered late, an image changed and one deleted.
async fn varied_history(store: &Arc<Faulty<MemoryStore>>) -> Result<(), AppError> {
    let ledger = open(store);
    for account_id in ["1001", "1002"] {
        run(&ledger, account(account_id)).await?;
    }
    let a = run(&ledger, image("1001", "a"))
        .await?
        .expect("an image id");
    let share = |image_id: &crate::domain::ImageId, to: &str| Command::ShareImage {
        expires_at: None,
        caller: id("1001"),
        image_id: image_id.clone(),
        account_ids: vec![id(to)],
    };
    let cancel = |image_id: &crate::domain::ImageId, to: &str| Command::CancelImageSharing {
        caller: id("1001"),
        image_id: image_id.clone(),
        account_ids: vec![id(to)],
    };
    run(&ledger, share(&a, "1002")).await?;
    let b = run(&ledger, image("1001", "b"))
        .await?
        .expect("an image id");
    run(&ledger, account("1003")).await?;
    run(&ledger, share(&b, "1003")).await?;
    run(&ledger, cancel(&a, "1002")).await?;
    run(&ledger, share(&a, "1003")).await?;
    run(
        &ledger,
        Command::ModifyImageAttribute {
            caller: id("1001"),
            image_id: a.clone(),
            image_name: Some("a2".into()),
            image_description: Some("renamed".into()),
        },
    )
    .await?;
    run(&ledger, cancel(&b, "1003")).await?;
    run(
        &ledger,
        Command::DeleteImage {
            caller: id("1001"),
            image_id: b,
        },
    )
    .await?;
    run(&ledger, account("1004")).await?;
    run(&ledger, share(&a, "1004")).await?;
    ledger.shutdown();
    Ok(())
}

type Entries = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

fn to_vec(entries: &Entries) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The writes that bring entries holding any mix of `from` to `to`, in key
/// order, as the read side's writer makes them.
fn writes_towards(from: &[&Entries], to: &Entries) -> Vec<crate::store::ProjectionOp> {
    let keys: std::collections::BTreeSet<&Vec<u8>> = from
        .iter()
        .flat_map(|entries| entries.keys())
        .chain(to.keys())
        .collect();
    keys.into_iter()
        .filter(|key| from.iter().any(|entries| entries.get(*key) != to.get(*key)))
        .map(|key| crate::store::ProjectionOp {
            key: key.clone(),
            value: to.get(key).cloned(),
        })
        .collect()
}

/// Writes that set every entry to what `entries` holds.
fn whole(entries: &Entries) -> Vec<crate::store::ProjectionOp> {
    entries
        .iter()
        .map(|(key, value)| crate::store::ProjectionOp {
            key: key.clone(),
            value: Some(value.clone()),
        })
        .collect()
}

/// The projection entries of a read side written whole at `position`, by key.
fn entries_at(store: &Faulty<MemoryStore>, position: u64) -> Result<Entries, AppError> {
    let state = crate::app::state_at(store, position)?;
    Ok(persist::entries(&state)?.into_iter().collect())
}

#[tokio::test]
async fn a_read_side_write_cut_short_anywhere_loads_as_a_replay() -> Result<(), AppError> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    varied_history(&store).await?;
    let (replayed, head) = replay_log(store.as_ref())?;
    let mut cases = 0;
    for checkpoint in 0..head.position {
        let before = entries_at(&store, checkpoint)?;
        for target in checkpoint + 1..=head.position {
            let after = entries_at(&store, target)?;
            let changes = writes_towards(&[&before], &after);
            for written in 0..=changes.len() {
                // A crash after the first `written` changes.
                let mut stored = before.clone();
                for op in &changes[..written] {
                    match &op.value {
                        Some(value) => stored.insert(op.key.clone(), value.clone()),
                        None => stored.remove(&op.key),
                    };
                }
                store.replace_projections(&whole(&stored), checkpoint)?;
                let (loaded, loaded_head) = crate::projection::load_state(store.as_ref())?;
                let case = format!("checkpoint {checkpoint}, target {target}, {written} written");
                assert_eq!(loaded, replayed, "{case}");
                assert_eq!(loaded_head, head, "{case}");
                // The start caught the stored read side up to the head.
                assert_eq!(
                    store.projection_checkpoint()?,
                    Some(head.position),
                    "{case}"
                );
                assert_eq!(persist::load(store.as_ref())?, replayed, "{case}");
                cases += 1;
            }
        }
    }
    assert!(cases > 200, "only {cases} cases");
    Ok(())
}

#[tokio::test]
async fn a_read_side_write_and_its_retry_both_failing_part_way_verify_and_load_as_a_replay(
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    varied_history(&store).await?;
    let (replayed, head) = replay_log(store.as_ref())?;
    let policy = Policy::default();
    let at: Vec<Entries> = (0..=head.position)
        .map(|position| entries_at(&store, position))
        .collect::<Result<_, _>>()?;
    let (mut cases, mut not_one_prefix) = (0, 0);
    for checkpoint in 0..head.position {
        for first in checkpoint + 1..=head.position {
            // The retry aims at the head; what the first write changed is
            // rewritten too, since those entries may hold either state.
            let (from, to) = (&at[checkpoint as usize], &at[first as usize]);
            let first_ops = writes_towards(&[from], to);
            let retry_ops = writes_towards(&[from, to], &at[head.position as usize]);
            for first_written in 0..=first_ops.len() {
                for retry_written in 0..=retry_ops.len() {
                    let case = format!(
                        "checkpoint {checkpoint}, first write towards {first} failed after \
                         {first_written}, the retry after {retry_written}"
                    );
                    store.replace_projections(&whole(from), checkpoint)?;
                    store.fail_next_projection_save_after(first_written);
                    assert!(store.update_projections(&first_ops, first).is_err());
                    store.fail_next_projection_save_after(retry_written);
                    assert!(store.update_projections(&retry_ops, head.position).is_err());
                    let mut pending = vec![first, head.position];
                    pending.dedup();
                    assert_eq!(store.projection_pending()?, pending, "{case}");
                    // Whether the entries are also what the retry alone
                    // would leave, had the first write not touched them.
                    let stored = store.projection_scan(b"")?;
                    let retry_only = [to_vec(&at[head.position as usize])];
                    if first_key_off_the_writes(&stored, &to_vec(from), &retry_only).is_some() {
                        not_one_prefix += 1;
                    }
                    let report = crate::audit::verify(store.as_ref(), &policy, &Default::default())
                        .map_err(|e| format!("{case}: {e}"))?;
                    assert_eq!(report.projections_pending, pending, "{case}");
                    let (loaded, loaded_head) = crate::projection::load_state(store.as_ref())?;
                    assert_eq!(loaded, replayed, "{case}");
                    assert_eq!(loaded_head, head, "{case}");
                    assert_eq!(store.projection_pending()?, Vec::<u64>::new(), "{case}");
                    assert_eq!(persist::load(store.as_ref())?, replayed, "{case}");
                    cases += 1;
                }
            }
        }
    }
    // Many of these are no single write's prefix: what the check is for.
    assert!(cases > 1000, "only {cases} cases");
    assert!(
        not_one_prefix > 100,
        "only {not_one_prefix} of {cases} need two targets"
    );
    Ok(())
}

/// Waits up to 5 s for the stored read side to reach the log's head.
async fn read_side_reaches_the_head(store: &Faulty<MemoryStore>) -> Result<(), AppError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.projection_checkpoint()? != Some(store.head()?.position) {
        assert!(
            std::time::Instant::now() < deadline,
            "the read side stays at {:?}, the head is at {}",
            store.projection_checkpoint()?,
            store.head()?.position
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_side_is_written_while_running_and_recovers_from_a_write_cut_short(
) -> Result<(), AppError> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = {
        let store: Arc<dyn Store> = store.clone();
        Ledger::open(
            store,
            Policy::default(),
            WriterOptions {
                settings: crate::app::LedgerSettings {
                    read_side_delay_ms: 200,
                    ..Default::default()
                },
                ..WriterOptions::default()
            },
        )?
    };
    for account_id in ["1001", "1002"] {
        run(&ledger, account(account_id)).await?;
    }
    let a = run(&ledger, image("1001", "a"))
        .await?
        .expect("an image id");
    // Written by the background writer, with no stop.
    read_side_reaches_the_head(&store).await?;
    let before = store.projection_checkpoint()?;

    // The write of this share fails after storing the share's entry...
    store.fail_next_projection_save_after(1);
    run(
        &ledger,
        Command::ShareImage {
            expires_at: None,
            caller: id("1001"),
            image_id: a.clone(),
            account_ids: vec![id("1002")],
        },
    )
    .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.projection_save_failure_pending() {
        assert!(std::time::Instant::now() < deadline, "no write was tried");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(store.projection_checkpoint()?, before);
    // ...and the share is cancelled before the retry: the entry the failed
    // write left must go, though the stored state and the newest agree on it.
    run(
        &ledger,
        Command::CancelImageSharing {
            caller: id("1001"),
            image_id: a,
            account_ids: vec![id("1002")],
        },
    )
    .await?;
    read_side_reaches_the_head(&store).await?;
    let (replayed, _) = replay_log(store.as_ref())?;
    assert_eq!(persist::load(store.as_ref())?, replayed);
    assert_eq!(
        store.projection_scan(b"s")?,
        Vec::new(),
        "no share entry is left"
    );
    ledger.shutdown();
    Ok(())
}

#[tokio::test]
async fn a_command_whose_second_record_fails_to_encode_commits_none_of_its_records(
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let options = WriterOptions::default();
    let failpoints = Arc::clone(&options.failpoints);
    let ledger = Ledger::open(store.clone(), Policy::default(), options)?;
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    let Reply::ImageRegistered { image_id } = ledger
        .execute(image("1001", "web"), CommandOptions::default())
        .await?
    else {
        panic!("an image id");
    };
    let before = ledger.state();
    let copy = Command::CopyImage {
        caller: AccountId::parse("1001")?,
        image_id,
        destination_regions: vec![Region::new("ap-shanghai"), Region::new("ap-beijing")],
        image_name: None,
    };
    let token = CommandOptions {
        client_token: ClientToken::parse_optional("copy-once")?,
        dry_run: false,
        principal: None,
    };
    // The copy's records are at positions 3 and 4; the second fails.
    failpoints
        .encode_at
        .store(4, std::sync::atomic::Ordering::SeqCst);
    let failed = ledger.execute(copy.clone(), token.clone()).await;
    assert!(
        matches!(failed, Err(AppError::Storage(StoreError::Backend { .. }))),
        "{failed:?}"
    );
    assert_eq!(store.head()?.position, 2, "no record of the copy is stored");
    assert_eq!(*ledger.state(), *before, "no effect of the copy is seen");
    assert_eq!(store.tokens()?, Vec::new(), "nor its idempotency record");

    // A command after it continues the log at position 3, and the copy's
    // retry with the same token runs whole.
    ledger
        .execute(account("1002"), CommandOptions::default())
        .await?;
    let Reply::ImagesCopied { images } = ledger.execute(copy, token).await? else {
        panic!("copies");
    };
    assert_eq!(images.len(), 2);
    let (replayed, head) = replay_log(store.as_ref())?;
    assert_eq!(head.position, 5);
    assert_eq!(replayed, *ledger.state());
    ledger.shutdown();
    Ok(())
}

#[tokio::test]
async fn the_projections_check_finds_a_stored_entry_a_replay_would_not_write(
) -> Result<(), AppError> {
    use crate::projection::{check_projections, ProjectionCheck};
    use crate::store::{ProjectionOp, ProjectionStoreExt};
    let store = Arc::new(Faulty::new(MemoryStore::new()));
    let ledger = open(&store);
    ledger
        .execute(account("1001"), CommandOptions::default())
        .await?;
    ledger
        .execute(image("1001", "web"), CommandOptions::default())
        .await?;
    ledger.shutdown();
    let head = store.head()?.position;
    crate::projection::rebuild_projections(store.as_ref(), &crate::progress::Progress::hidden())?;
    assert_eq!(
        check_projections(store.as_ref(), &crate::progress::Progress::hidden())?,
        ProjectionCheck::Equal {
            checkpoint: head,
            head
        }
    );
    // An entry no replay writes, slipped in behind the ledger's back.
    let mut ops =
        crate::projection::persist::full(&crate::projection::replay_log(store.as_ref())?.0)?;
    ops.push(ProjectionOp {
        key: b"zz-forged".to_vec(),
        value: Some(b"{}".to_vec()),
    });
    store.replace_projections(&ops, head)?;
    assert_eq!(
        check_projections(store.as_ref(), &crate::progress::Progress::hidden())?,
        ProjectionCheck::Differs {
            key: b"zz-forged".to_vec()
        }
    );
    Ok(())
}
