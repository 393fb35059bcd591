//! Verifying a store whose read side a crash left part way through a write,
//! or that differs from what the log implies.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{verify, AuditError, VerifyOptions};
use crate::app::{replay_log, CommandOptions, Ledger, WriterOptions};
use crate::domain::{AccountId, AccountKind, Command, Policy};
use crate::projection::persist;
use crate::store::{
    CutShort, EventLog, EventLogExt, ProjectionOp, ProjectionStoreExt, SledStore, Store,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Projection entries by key.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// The projection entries of a read side written whole at `position`, by key.
fn entries_at(
    store: &dyn Store,
    position: u64,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Box<dyn std::error::Error>> {
    let state = crate::app::state_at(store, position)?;
    Ok(persist::entries(&state)?.into_iter().collect())
}

/// Registers accounts 1000 to 1399 on a ledger over `store`, then stops it.
async fn register_accounts(store: Arc<SledStore>) -> TestResult {
    let store: Arc<dyn Store> = store;
    let ledger = Ledger::open(store, Policy::default(), WriterOptions::default())?;
    for n in 1000..1400 {
        ledger
            .execute(
                Command::RegisterAccount {
                    account_id: AccountId::parse(&n.to_string())?,
                    kind: AccountKind::Root,
                },
                CommandOptions::default(),
            )
            .await?;
    }
    ledger.shutdown();
    Ok(())
}

/// A sled store in `dir` holding accounts 1000 to 1399, and its head.
async fn store_with_accounts(
    dir: &tempfile::TempDir,
) -> Result<(Arc<SledStore>, u64), Box<dyn std::error::Error>> {
    let store = Arc::new(SledStore::open(dir.path(), 8 << 20)?);
    register_accounts(Arc::clone(&store)).await?;
    let head = store.head()?.position;
    Ok((store, head))
}

/// Writes one entry as the first of a write towards `pending` that stops
/// there, leaving the checkpoint alone.
fn overwrite(store: &SledStore, op: ProjectionOp, pending: u64) -> TestResult {
    store.save_cut_short(&[op.clone(), op], pending, 1)?;
    Ok(())
}

#[tokio::test]
async fn a_read_side_write_cut_short_verifies_and_the_next_start_finishes_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, head) = store_with_accounts(&dir).await?;

    // The read side as at position 50, then a write towards the head that a
    // crash stopped part way.
    let checkpoint = 50;
    let at_checkpoint = entries_at(store.as_ref(), checkpoint)?;
    let at_head = entries_at(store.as_ref(), head)?;
    let put = |(key, value): (&Vec<u8>, &Vec<u8>)| ProjectionOp {
        key: key.clone(),
        value: Some(value.clone()),
    };
    // Only registrations follow the checkpoint: every change is a new entry.
    let changes: Vec<ProjectionOp> = at_head
        .iter()
        .filter(|(key, value)| at_checkpoint.get(*key) != Some(*value))
        .map(put)
        .collect();
    assert!(changes.len() > 300, "{} changes", changes.len());
    let whole: Vec<ProjectionOp> = at_checkpoint.iter().map(put).collect();
    store.replace_projections(&whole, checkpoint)?;
    store.save_cut_short(&changes, head, 256)?;
    assert_eq!(store.projection_pending()?, vec![head]);
    assert_eq!(store.projection_checkpoint()?, Some(checkpoint));

    let policy = Policy::default();
    let report = verify(store.as_ref(), &policy, &VerifyOptions::default())?;
    assert_eq!(report.projections_at, Some(checkpoint));
    assert_eq!(report.projections_pending, vec![head]);

    // An entry written out of order is not what a cut-short write leaves.
    let last = changes.last().ok_or("a change")?;
    overwrite(&store, last.clone(), head)?;
    let refused = verify(store.as_ref(), &policy, &VerifyOptions::default());
    assert!(
        matches!(&refused, Err(AuditError::Projections(what)) if what.contains("as unfinished writes towards")),
        "{refused:?}"
    );
    // Put it back as the crash left it.
    overwrite(
        &store,
        ProjectionOp {
            key: last.key.clone(),
            value: at_checkpoint.get(&last.key).cloned(),
        },
        head,
    )?;
    verify(store.as_ref(), &policy, &VerifyOptions::default())?;

    // The next start replays from the checkpoint and finishes the write.
    let (replayed, _) = replay_log(store.as_ref())?;
    let ledger = Ledger::open(
        Arc::clone(&store) as Arc<dyn Store>,
        policy.clone(),
        WriterOptions::default(),
    )?;
    assert_eq!(*ledger.state(), replayed);
    ledger.shutdown();
    assert_eq!(store.projection_pending()?, Vec::<u64>::new());
    assert_eq!(store.projection_checkpoint()?, Some(head));
    assert_eq!(persist::load(store.as_ref())?, replayed);
    let report = verify(store.as_ref(), &policy, &VerifyOptions::default())?;
    assert_eq!(report.projections_at, Some(head));
    assert_eq!(report.projections_pending, Vec::<u64>::new());
    Ok(())
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
        .collect()
}

#[test]
fn entries_left_by_writes_that_stopped_part_way_are_told_from_any_other_mix() {
    use super::first_key_off_the_writes as check;
    let from = entries(&[("a", "0"), ("b", "0"), ("c", "0")]);
    let targets = [
        entries(&[("a", "1"), ("b", "1"), ("c", "1")]),
        entries(&[("a", "2"), ("b", "2"), ("c", "2")]),
    ];
    let key = |k: &str| Some(k.as_bytes().to_vec());
    // The retry reached a, the first write b: fine, as are the plain cases.
    for fine in [
        &[("a", "2"), ("b", "1"), ("c", "0")][..],
        &[("a", "2"), ("b", "2"), ("c", "2")],
        &[("a", "1"), ("b", "1"), ("c", "0")],
        &[("a", "0"), ("b", "0"), ("c", "0")],
        &[("a", "2"), ("b", "1"), ("c", "1")],
    ] {
        assert_eq!(check(&entries(fine), &from, &targets), None, "{fine:?}");
    }
    // A later write's value after an earlier one's, or after the old one.
    assert_eq!(
        check(
            &entries(&[("a", "1"), ("b", "2"), ("c", "0")]),
            &from,
            &targets
        ),
        key("b")
    );
    assert_eq!(
        check(
            &entries(&[("a", "0"), ("b", "1"), ("c", "0")]),
            &from,
            &targets
        ),
        key("b")
    );
    // A value no state has, or an entry missing.
    assert_eq!(
        check(
            &entries(&[("a", "9"), ("b", "0"), ("c", "0")]),
            &from,
            &targets
        ),
        key("a")
    );
    assert_eq!(
        check(&entries(&[("a", "2"), ("b", "1")]), &from, &targets),
        key("c")
    );
    // An entry both targets agree on counts as the later one's, or b
    // (which only the later write could have set to 2) would not fit.
    let agreeing = [
        entries(&[("a", "1"), ("b", "1")]),
        entries(&[("a", "1"), ("b", "2")]),
    ];
    let from = entries(&[("a", "0"), ("b", "0")]);
    assert_eq!(
        check(&entries(&[("a", "1"), ("b", "2")]), &from, &agreeing),
        None
    );
}

#[tokio::test]
async fn an_append_a_crash_stopped_before_its_head_verifies_and_its_retry_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let command = Command::RegisterAccount {
        account_id: AccountId::parse("2000")?,
        kind: AccountKind::Root,
    };
    let token = crate::domain::ClientToken::parse_optional("retry-me")?.ok_or("a token")?;
    let key = crate::idempotency::token_key(Some("2000"), token.as_str());
    let head = {
        let store = Arc::new(SledStore::open(dir.path(), 8 << 20)?);
        register_accounts(Arc::clone(&store)).await?;
        let head = store.head()?;
        // The command's append, stopped after its chunk and idempotency
        // record, before its head; then a flush and a crash.
        let (state, _) = replay_log(store.as_ref())?;
        let decision = crate::domain::decide(
            &state,
            &Policy::default(),
            &command,
            time::OffsetDateTime::UNIX_EPOCH,
            &mut || crate::domain::ImageId::from_number(0),
        )?;
        let record = crate::store::EncodedRecord::encode(
            &decision.events[0],
            &crate::store::RecordMeta {
                position: head.position + 1,
                aggregate_version: 1,
                recorded_at: time::OffsetDateTime::UNIX_EPOCH,
                actor: Some("2000"),
                principal: None,
                client_token: Some(token.as_str()),
                request_hash: None,
                prev_hash: head.hash,
            },
        )?;
        let answer = crate::idempotency::TokenRecord {
            fingerprint: crate::idempotency::fingerprint(&command)?,
            reply: decision.reply,
            position: head.position + 1,
            recorded_at: 0,
        };
        let batch = crate::store::AppendBatch {
            expected_head: head,
            records: vec![record],
            tokens: vec![(key.clone(), serde_json::to_vec(&answer)?)],
            expired_tokens: Vec::new(),
        };
        store.cut_next_append_short(2);
        assert!(store.append(&batch).is_err());
        store.flush()?;
        head
    };

    let store = Arc::new(SledStore::open(dir.path(), 8 << 20)?);
    assert_eq!(store.head()?, head);
    assert_eq!(
        store.tokens()?.len(),
        1,
        "the record past the head is there"
    );
    let policy = Policy::default();
    let report = verify(store.as_ref(), &policy, &VerifyOptions::default())?;
    assert_eq!(report.head_position, head.position);

    // The ledger drops the record (once a command needs the records), so
    // the retry runs the command.
    let ledger = Ledger::open(
        Arc::clone(&store) as Arc<dyn Store>,
        policy.clone(),
        WriterOptions::default(),
    )?;
    let options = CommandOptions {
        client_token: Some(token),
        ..CommandOptions::default()
    };
    ledger.execute(command.clone(), options.clone()).await?;
    assert!(ledger.state().account(&AccountId::parse("2000")?).is_some());
    assert_eq!(ledger.durable_head().position, head.position + 1);
    // Its record took the key: the one left by the crash (without a time) is gone.
    let stored = store.tokens()?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, key);
    let record = crate::idempotency::TokenRecord::decode(&stored[0].1)?;
    assert_eq!(record.position, head.position + 1);
    assert_ne!(record.recorded_at, 0);
    // And a second retry is answered from its record, appending nothing.
    ledger.execute(command, options).await?;
    assert_eq!(ledger.durable_head().position, head.position + 1);
    ledger.shutdown();
    verify(store.as_ref(), &policy, &VerifyOptions::default())?;
    Ok(())
}

#[tokio::test]
async fn a_read_side_off_the_log_is_named_at_its_first_differing_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, head) = store_with_accounts(&dir).await?;
    let policy = Policy::default();

    // The entries walked one at a time are those listed whole.
    let state = crate::app::state_at(store.as_ref(), head)?;
    let walked = persist::entries_in_order(&state).collect::<Result<Vec<_>, _>>()?;
    assert_eq!(walked, persist::entries(&state)?);

    let whole = entries_at(store.as_ref(), head)?;
    let keys: Vec<Vec<u8>> = whole.keys().cloned().collect();
    let last = keys.last().ok_or("an entry")?.clone();
    let with = |change: &dyn Fn(&mut Entries)| {
        let mut entries = whole.clone();
        change(&mut entries);
        entries
    };
    let cases = [
        (
            "a changed entry",
            with(&|e| {
                e.insert(keys[10].clone(), b"changed".to_vec());
            }),
            keys[10].clone(),
        ),
        (
            "the last entry missing",
            with(&|e| {
                e.remove(&last);
            }),
            last.clone(),
        ),
        (
            "an entry before the first",
            with(&|e| {
                e.insert(b"a0999".to_vec(), b"extra".to_vec());
            }),
            b"a0999".to_vec(),
        ),
        (
            "an entry after the last",
            with(&|e| {
                e.insert(b"zz".to_vec(), b"extra".to_vec());
            }),
            b"zz".to_vec(),
        ),
    ];
    let ops = |entries: &Entries| -> Vec<ProjectionOp> {
        entries
            .iter()
            .map(|(key, value)| ProjectionOp {
                key: key.clone(),
                value: Some(value.clone()),
            })
            .collect()
    };
    for (what, entries, key) in cases {
        store.replace_projections(&ops(&entries), head)?;
        let refused = verify(store.as_ref(), &policy, &VerifyOptions::default());
        let wanted = format!(
            "the stored read side differs from a fresh replay at key {:?}",
            String::from_utf8_lossy(&key)
        );
        assert!(
            matches!(&refused, Err(AuditError::Projections(message)) if *message == wanted),
            "{what}: {refused:?}"
        );
    }
    store.replace_projections(&ops(&whole), head)?;
    let report = verify(store.as_ref(), &policy, &VerifyOptions::default())?;
    assert_eq!(report.projections_at, Some(head));
    Ok(())
}
