//! Export of the log as JSON lines, exactly as stored, and import of such a
//! file into a new data directory, checked record by record.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::rules::{decode, Decoded, RuleChecker};
use super::AuditError;
use crate::chunks::{chunked, ChunkSender};
use crate::domain::Policy;
use crate::idempotency::token_key;
use crate::projection::persist;
use crate::store::{
    try_scan, AppendBatch, EncodedRecord, EventLog, EventLogExt, PgStore, ProjectionStoreExt,
    SledStore, Store,
};

/// Writes records `from..=to` (bounded by the head) as JSON lines, one
/// envelope per line exactly as stored. Returns how many were written.
pub fn export(
    store: &dyn EventLog,
    from: u64,
    to: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let head = store.head()?.position;
    let last = to.unwrap_or(head).min(head);
    let mut written = 0u64;
    try_scan(
        store,
        from.max(1),
        |position, bytes| -> Result<bool, AuditError> {
            if position > last {
                return Ok(false);
            }
            out.write_all(bytes)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|err| AuditError::io("cannot write the export", err))?;
            written += 1;
            Ok(true)
        },
    )?;
    out.flush()
        .map_err(|e| AuditError::io("cannot write the export", e))?;
    Ok(written)
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Records imported.
    pub events: u64,
    /// Hash of the last record (hex).
    pub head_hash: String,
    /// Time spent.
    pub elapsed: Duration,
}

/// Records per atomic write while importing.
const IMPORT_BATCH: usize = 4096;

/// Restores an export into `data_dir`, which must not exist or be empty.
/// Every line is checked as `audit verify` would; on the first bad line
/// nothing is left behind and the error names the line.
pub fn import(
    input: &mut (dyn BufRead + Send),
    data_dir: &Path,
    policy: &Policy,
) -> Result<ImportReport, AuditError> {
    let started = Instant::now();
    check_target(data_dir)?;
    let staging = staging_dir(data_dir)?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| AuditError::io(format!("cannot clear {}", staging.display()), e))?;
    }
    let result = (|| {
        let store = SledStore::open(&staging, 64 * 1024 * 1024)?;
        let report = load_into(&store, input, policy, started)?;
        drop(store);
        Ok(report)
    })();
    match result {
        Ok(report) => {
            if data_dir.exists() {
                std::fs::remove_dir(data_dir).map_err(|e| {
                    AuditError::io(format!("cannot replace {}", data_dir.display()), e)
                })?;
            }
            std::fs::rename(&staging, data_dir).map_err(|e| {
                AuditError::io(
                    format!(
                        "cannot move {} to {}",
                        staging.display(),
                        data_dir.display()
                    ),
                    e,
                )
            })?;
            Ok(report)
        }
        Err(err) => {
            if let Err(cleanup) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(%cleanup, path = %staging.display(), "cannot remove the partial import");
            }
            Err(err)
        }
    }
}

/// Restores an export into the PostgreSQL database at `url`, which must
/// hold no ledger yet, with the same checks as [`import`]; on the first bad
/// line the database is emptied again and the error names the line.
pub fn import_into_database(
    input: &mut (dyn BufRead + Send),
    url: &str,
    policy: &Policy,
) -> Result<ImportReport, AuditError> {
    let started = Instant::now();
    let store = PgStore::open(url)?;
    let empty = store.head()?.position == 0
        && store.projection_checkpoint()?.is_none()
        && store.tokens()?.is_empty();
    if !empty {
        return Err(AuditError::Usage(
            "the database already holds a ledger; import only into an empty one".into(),
        ));
    }
    let result = load_into(&store, input, policy, started);
    if result.is_err() {
        store.clear()?;
    }
    result
}

fn check_target(data_dir: &Path) -> Result<(), AuditError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(AuditError::Usage(format!(
                    "{} is not empty; import only into a new data directory",
                    data_dir.display()
                )));
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(AuditError::io(
            format!("cannot read {}", data_dir.display()),
            err,
        )),
    }
}

fn staging_dir(data_dir: &Path) -> Result<PathBuf, AuditError> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| AuditError::Usage(format!("{} names no directory", data_dir.display())))?;
    let mut staging = name.to_os_string();
    staging.push(format!(".importing-{}", std::process::id()));
    Ok(data_dir.with_file_name(staging))
}

/// Lines decoded per message from the reading thread.
const LINES: usize = 1024;

/// A line of the import file: its number, its bytes and what decoding them
/// (which needs no state) gave.
type Line = (u64, Vec<u8>, Result<Decoded, String>);

/// Checks every line of `input` and appends it to `store`, on three
/// threads as `audit verify` does on two: one reads, hashes and parses the
/// lines, this one re-decides them in order, and one appends each batch
/// while the next is checked. On the first bad line (or failed append)
/// the others stop, and the caller leaves nothing behind.
fn load_into(
    store: &dyn Store,
    input: &mut (dyn BufRead + Send),
    policy: &Policy,
    started: Instant,
) -> Result<ImportReport, AuditError> {
    let mut checker = RuleChecker::new(policy.clone());
    let (lines, read) = chunked::<Line>(LINES, 16);
    let (batches, to_append) = mpsc::sync_channel::<AppendBatch>(2);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_lines(input, lines));
        let appender = scope.spawn(move || -> Result<(), AuditError> {
            for batch in to_append {
                store.append(&batch)?;
            }
            Ok(())
        });
        let checked = check_lines(&read, &mut checker, &batches);
        // Dropping the ends stops the other two early after a failure.
        drop((read, batches));
        let read = reader
            .join()
            .map_err(|_| AuditError::Task("the import's reader panicked".into()))?;
        let appended = appender
            .join()
            .map_err(|_| AuditError::Task("the import's appender panicked".into()))?;
        // A failed append closes its channel, which stops the check.
        appended.and(checked).and(read)
    })?;
    let head = checker.head();
    // The read side is written once, whole, at the end: the import goes to
    // a staging directory, so nothing reads it before then.
    store.replace_projections(&persist::full(checker.state())?, head.position)?;
    Ok(ImportReport {
        events: head.position,
        head_hash: hex::encode(head.hash),
        elapsed: started.elapsed(),
    })
}

/// Reads, hashes and parses the lines of `input`, a chunk at a time.
fn read_lines(
    input: &mut (dyn BufRead + Send),
    mut lines: ChunkSender<Line>,
) -> Result<(), AuditError> {
    let mut number = 0u64;
    loop {
        let mut line = Vec::new();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| AuditError::io("cannot read the import file", e))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let decoded = if line.is_empty() {
            Err("empty line; an export has one record per line".to_owned())
        } else {
            decode(&line).map_err(|violation| violation.to_string())
        };
        if !lines.push((number, line, decoded)) {
            // The check stopped at an error of its own.
            return Ok(());
        }
    }
    lines.finish();
    Ok(())
}

/// Re-decides the decoded lines in order and hands each full batch to the
/// appender.
fn check_lines(
    read: &Receiver<Vec<Line>>,
    checker: &mut RuleChecker,
    batches: &mpsc::SyncSender<AppendBatch>,
) -> Result<(), AuditError> {
    let mut pending = Pending::start(checker);
    for chunk in read.iter() {
        for (line, bytes, decoded) in chunk {
            let record = decoded
                .and_then(|record| {
                    checker
                        .check_decoded(&record)
                        .map(|()| record)
                        .map_err(|violation| violation.to_string())
                })
                .map_err(|what| AuditError::Line { line, what })?;
            let envelope = record.envelope;
            if let Some(token) = &envelope.client_token {
                pending
                    .tokens
                    .insert(token_key(envelope.actor.as_deref(), token));
            }
            pending.records.push(EncodedRecord {
                position: envelope.position,
                aggregate_id: envelope.aggregate_id,
                aggregate_version: envelope.aggregate_version,
                bytes,
                hash: record.hash,
            });
            if pending.records.len() >= IMPORT_BATCH {
                let full = std::mem::replace(&mut pending, Pending::start(checker));
                if let Some(batch) = full.batch(checker)? {
                    if batches.send(batch).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    if let Some(batch) = pending.batch(checker)? {
        let _ = batches.send(batch);
    }
    Ok(())
}

/// One atomic write's worth of imported records.
struct Pending {
    head: crate::store::Head,
    records: Vec<EncodedRecord>,
    tokens: BTreeSet<Vec<u8>>,
}

impl Pending {
    fn start(checker: &RuleChecker) -> Self {
        Self {
            head: checker.head(),
            records: Vec::new(),
            tokens: BTreeSet::new(),
        }
    }

    /// The append of these records and of the idempotency records the
    /// log implies for their tokens; `None` when there are no records.
    fn batch(self, checker: &RuleChecker) -> Result<Option<AppendBatch>, AuditError> {
        if self.records.is_empty() {
            return Ok(None);
        }
        let mut tokens = Vec::with_capacity(self.tokens.len());
        for key in self.tokens {
            if let Some(record) = checker.tokens().get(&key) {
                tokens.push((key, record.encode()?));
            }
        }
        Ok(Some(AppendBatch {
            expected_head: self.head,
            records: self.records,
            tokens,
            // The ledger drops those expired when it loads.
            expired_tokens: Vec::new(),
        }))
    }
}
