//! Audit tooling end to end: verification, tampering, export and import,
//! point-in-time access, the live subscription and signed heads.

mod common;

use std::collections::BTreeSet;
use std::io::Cursor;
use std::process::Command;

use common::*;
use image_ledger::audit::{self, AsOf, AuditError, LedgerKey, SignedHead, VerifyOptions};
use image_ledger::domain::{ImageId, Policy};
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger::store::{EncodedRecord, Envelope, EventLog, RecordMeta, SledStore};
use tonic::transport::Channel;
use tonic::Code;

async fn audit_client(server: &TestServer) -> AuditLogClient<Channel> {
    AuditLogClient::connect(format!("http://{}", server.server.local_addr()))
        .await
        .expect("audit client connects")
}

fn open(dir: &std::path::Path) -> SledStore {
    SledStore::open(dir, 8 * 1024 * 1024).expect("store opens")
}

/// A small history through the API: accounts, images, shares, a copy, a delete.
async fn history(c: &mut Client) -> String {
    register_roots(c, &[OWNER, FRIEND, OTHER]).await;
    let web = register_image(c, OWNER, GZ, "web").await;
    let mut share = share_request(OWNER, &web, &[FRIEND, OTHER]);
    share.client_token = "share-web".into();
    c.share_image(share).await.expect("share");
    c.cancel_image_sharing(cancel_request(OWNER, &web, &[OTHER]))
        .await
        .expect("cancel");
    c.copy_image(pb::CopyImageRequest {
        account_id: OWNER.into(),
        image_id: web.clone(),
        destination_regions: vec![SH.into(), "ap-beijing".into()],
        client_token: "copy-web".into(),
        ..Default::default()
    })
    .await
    .expect("copy");
    let gone = register_image(c, FRIEND, GZ, "gone").await;
    c.delete_image(pb::DeleteImageRequest {
        account_id: FRIEND.into(),
        image_id: gone,
        ..Default::default()
    })
    .await
    .expect("delete");
    web
}

// The ledger's limits, 3 accounts, image, share, cancel, 2 copies, image, delete.
const EVENTS: u64 = 11;

fn export_lines(store: &SledStore) -> Vec<String> {
    let mut out = Vec::new();
    audit::export(store, 1, None, &mut out).expect("export");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn verify_passes_on_a_log_written_through_the_api() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let dir = server.stop().await;
    let store = open(dir.path());
    let report = audit::verify(&store, &Policy::default(), &VerifyOptions::default())?;
    assert_eq!(report.events, EVENTS);
    assert_eq!(report.head_position, EVENTS);
    // 3 accounts and 4 images (web, two copies, the deleted one).
    assert_eq!(report.aggregates, 7);
    assert_eq!(report.head_hash, hex::encode(store.head()?.hash));
    Ok(())
}

#[tokio::test]
async fn a_record_altered_on_disk_fails_verify_at_its_position() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let dir = server.stop().await;
    let store = open(dir.path());
    let lines = export_lines(&store);

    // Changing a field without fixing the hash.
    let forged = lines[5].replace(FRIEND, "100000000777");
    store.tamper_record(6, forged.as_bytes())?;
    match audit::verify(&store, &Policy::default(), &VerifyOptions::default()) {
        Err(AuditError::Invalid { position, what }) => {
            assert_eq!(position, 6, "{what}");
            assert!(what.contains("hash"), "{what}");
        }
        other => panic!("expected a failure at position 6, got {other:?}"),
    }

    // A record that is self-consistent but breaks the chain.
    store.tamper_record(6, lines[5].as_bytes())?;
    audit::verify(&store, &Policy::default(), &VerifyOptions::default())?;
    let rechained = rehash(&lines[6], [7u8; 32]);
    store.tamper_record(7, rechained.as_bytes())?;
    match audit::verify(&store, &Policy::default(), &VerifyOptions::default()) {
        Err(AuditError::Invalid { position, what }) => {
            assert_eq!(position, 7, "{what}");
            assert!(what.contains("prev_hash"), "{what}");
        }
        other => panic!("expected a failure at position 7, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn verify_refuses_a_lawless_but_well_chained_history() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let dir = server.stop().await;
    let lines = export_lines(&open(dir.path()));
    // Re-sign the whole chain after making the share name an unregistered
    // account: hashes all match, but the rules were broken.
    let edited: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            if i == 5 {
                line.replace(OTHER, "100000000555")
            } else {
                line.clone()
            }
        })
        .collect();
    let forged = rechain(&edited);
    let target = tempfile::tempdir()?.path().join("restored");
    let err = audit::import(
        &mut Cursor::new(forged.join("\n")),
        &target,
        &Policy::default(),
    )
    .expect_err("a lawless history is refused");
    match err {
        AuditError::Line { line, what } => {
            assert_eq!(line, 6, "{what}");
            assert!(what.contains("InvalidAccountId.NotFound"), "{what}");
        }
        other => panic!("expected a line error, got {other:?}"),
    }
    assert!(!target.exists(), "nothing half-written is left behind");
    Ok(())
}

#[tokio::test]
async fn export_import_verify_round_trip_keeps_the_head_and_the_tokens() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    let web = history(&mut c).await;
    let original = server.stop().await;
    let store = open(original.path());
    let original_head = store.head()?;
    let mut file = Vec::new();
    let written = audit::export(&store, 1, None, &mut file)?;
    assert_eq!(written, EVENTS);
    drop(store);

    let parent = tempfile::tempdir()?;
    let restored = parent.path().join("restored");
    let report = audit::import(&mut Cursor::new(&file), &restored, &Policy::default())?;
    assert_eq!(report.events, EVENTS);
    assert_eq!(report.head_hash, hex::encode(original_head.hash));
    let leftovers: Vec<_> = std::fs::read_dir(parent.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(leftovers, vec![std::ffi::OsString::from("restored")]);
    {
        let store = open(&restored);
        assert_eq!(store.head()?, original_head);
        let verified = audit::verify(&store, &Policy::default(), &VerifyOptions::default())?;
        assert_eq!(verified.head_hash, hex::encode(original_head.hash));
        let mut again = Vec::new();
        audit::export(&store, 1, None, &mut again)?;
        assert_eq!(
            again, file,
            "the export of the restore is byte for byte the same"
        );
    }

    // The restored ledger serves the same state and still knows the client tokens.
    let dir = tempfile::TempDir::new_in(parent.path())?;
    std::fs::remove_dir(dir.path())?;
    std::fs::rename(&restored, dir.path())?;
    // The key is not part of an export: the restore procedure copies it.
    std::fs::copy(
        LedgerKey::default_path(original.path()),
        LedgerKey::default_path(dir.path()),
    )?;
    let server = TestServer::start_in(dir, Policy::default()).await;
    let mut c = server.client();
    assert_eq!(shares_of(&mut c, OWNER, &web).await, vec![FRIEND]);
    let mut share = share_request(OWNER, &web, &[FRIEND, OTHER]);
    share.client_token = "share-web".into();
    c.share_image(share).await?;
    let copies = c
        .copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: web.clone(),
            destination_regions: vec![SH.into(), "ap-beijing".into()],
            client_token: "copy-web".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .images;
    assert_eq!(copies.len(), 2, "the retry gets the first reply");
    let dir = server.stop().await;
    assert_eq!(
        open(dir.path()).head()?.position,
        EVENTS,
        "and appends nothing"
    );
    Ok(())
}

#[tokio::test]
async fn import_names_the_line_of_a_changed_field_and_leaves_nothing() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let dir = server.stop().await;
    let lines = export_lines(&open(dir.path()));
    let mut changed = lines.clone();
    changed[7] = changed[7].replace("ap-shanghai", "ap-tokyo");
    assert_ne!(changed[7], lines[7]);
    let parent = tempfile::tempdir()?;
    let target = parent.path().join("restored");
    let err = audit::import(
        &mut Cursor::new(changed.join("\n")),
        &target,
        &Policy::default(),
    )
    .expect_err("a changed record is refused");
    assert!(matches!(err, AuditError::Line { line: 8, .. }), "{err}");
    assert_eq!(std::fs::read_dir(parent.path())?.count(), 0);

    // Through the binary: a non-zero exit and the line in the message.
    let file = parent.path().join("changed.jsonl");
    std::fs::write(&file, changed.join("\n"))?;
    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["audit", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&target)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 8"), "{stderr}");
    assert!(!target.exists());

    // A target that already holds data is refused.
    let err = audit::import(
        &mut Cursor::new(lines.join("\n")),
        dir.path(),
        &Policy::default(),
    )
    .expect_err("a used directory is refused");
    assert!(matches!(err, AuditError::Usage(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn access_answers_match_the_api_at_every_point_of_a_history() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    let mut audit_c = audit_client(&server).await;
    register_roots(&mut c, &[OWNER, FRIEND, OTHER]).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;

    async fn allowed(c: &mut Client, image: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for who in [OWNER, FRIEND, OTHER] {
            if authorize(c, who, image, GZ, pb::ImageUse::CreateInstance)
                .await
                .0
            {
                out.insert(who.to_string());
            }
        }
        out
    }
    async fn head(a: &mut AuditLogClient<Channel>) -> (u64, String) {
        let head = a
            .get_ledger_head(pb::GetLedgerHeadRequest {})
            .await
            .expect("head")
            .into_inner();
        (head.position, head.recorded_at)
    }

    let mut checkpoints = Vec::new();
    checkpoints.push((head(&mut audit_c).await, allowed(&mut c, &image).await));
    c.share_image(share_request(OWNER, &image, &[FRIEND, OTHER]))
        .await?;
    checkpoints.push((head(&mut audit_c).await, allowed(&mut c, &image).await));
    c.cancel_image_sharing(cancel_request(OWNER, &image, &[FRIEND]))
        .await?;
    checkpoints.push((head(&mut audit_c).await, allowed(&mut c, &image).await));
    c.share_image(share_request(OWNER, &image, &[FRIEND]))
        .await?;
    checkpoints.push((head(&mut audit_c).await, allowed(&mut c, &image).await));
    c.cancel_image_sharing(cancel_request(OWNER, &image, &[FRIEND, OTHER]))
        .await?;
    c.delete_image(pb::DeleteImageRequest {
        account_id: OWNER.into(),
        image_id: image.clone(),
        ..Default::default()
    })
    .await?;
    checkpoints.push((head(&mut audit_c).await, allowed(&mut c, &image).await));
    assert_eq!(
        checkpoints.iter().map(|(_, a)| a.len()).collect::<Vec<_>>(),
        vec![1, 3, 2, 3, 0],
        "the script moves through owner only, all, owner+other, all, nobody"
    );

    // Over gRPC, by position and by time.
    for ((position, recorded_at), expected) in &checkpoints {
        let by_position = audit_c
            .get_image_access_as_of(pb::GetImageAccessAsOfRequest {
                image_id: image.clone(),
                as_of: Some(pb::get_image_access_as_of_request::AsOf::AsOfPosition(
                    *position,
                )),
            })
            .await?
            .into_inner();
        let got: BTreeSet<String> = by_position
            .accounts
            .into_iter()
            .map(|a| a.account_id)
            .collect();
        assert_eq!(&got, expected, "at position {position}");
        let at = time::OffsetDateTime::parse(
            recorded_at,
            &time::format_description::well_known::Rfc3339,
        )?;
        let by_time = audit_c
            .get_image_access_as_of(pb::GetImageAccessAsOfRequest {
                image_id: image.clone(),
                as_of: Some(pb::get_image_access_as_of_request::AsOf::AsOfTime(
                    prost_types::Timestamp {
                        seconds: at.unix_timestamp(),
                        nanos: at.nanosecond() as i32,
                    },
                )),
            })
            .await?
            .into_inner();
        let got: BTreeSet<String> = by_time.accounts.into_iter().map(|a| a.account_id).collect();
        assert_eq!(&got, expected, "at {recorded_at}");
    }

    // From the data directory of the stopped server.
    let dir = server.stop().await;
    let store = open(dir.path());
    let image_id = ImageId::parse(&image)?;
    for ((position, _), expected) in &checkpoints {
        let access = audit::access_as_of(&store, &image_id, AsOf::Position(*position), u64::MAX)?;
        let got: BTreeSet<String> = access.accounts.into_iter().map(|a| a.account_id).collect();
        assert_eq!(&got, expected, "from the directory at position {position}");
    }
    let last = audit::access_as_of(&store, &image_id, AsOf::Position(u64::MAX), u64::MAX)?;
    assert!(last.deleted);
    assert_eq!(last.reason.as_deref(), Some("the image was deleted"));
    Ok(())
}

#[tokio::test]
async fn a_subscriber_sees_every_event_once_in_order_and_resumes_exactly() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    let mut audit_c = audit_client(&server).await;
    let mut stream = audit_c
        .subscribe(pb::SubscribeRequest { from_position: 0 })
        .await?
        .into_inner();

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = server.client();
            tokio::spawn(async move {
                for i in 0..50 {
                    client
                        .register_image(image_request(OWNER, GZ, &format!("w{w}-{i}")))
                        .await
                        .expect("register");
                }
            })
        })
        .collect();
    let total = 1 + 4 * 50;
    let mut seen = Vec::new();
    let mut prev_hash = hex::encode([0u8; 32]);
    while seen.len() < total {
        let record = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await??
            .ok_or("the stream ended early")?;
        assert_eq!(
            record.prev_hash, prev_hash,
            "no gap before {}",
            record.position
        );
        let envelope = Envelope::decode(record.raw.as_bytes())?;
        assert_eq!(envelope.hash, record.hash);
        prev_hash = record.hash.clone();
        seen.push(record.position);
    }
    for writer in writers {
        writer.await?;
    }
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());

    // Reconnect from a middle position: exactly the rest, then live events.
    let middle = 120;
    let mut resumed = audit_c
        .subscribe(pb::SubscribeRequest {
            from_position: middle,
        })
        .await?
        .into_inner();
    register_image(&mut c, OWNER, GZ, "after").await;
    let mut positions = Vec::new();
    while positions.len() < total - middle as usize + 2 {
        let record = tokio::time::timeout(std::time::Duration::from_secs(20), resumed.message())
            .await??
            .ok_or("the stream ended early")?;
        positions.push(record.position);
    }
    assert_eq!(positions, (middle..=total as u64 + 1).collect::<Vec<_>>());

    // ReadEvents is the bounded catch-up read.
    let mut read = audit_c
        .read_events(pb::ReadEventsRequest {
            from_position: 10,
            limit: 5,
        })
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(record) = read.message().await? {
        got.push(record.position);
    }
    assert_eq!(got, vec![10, 11, 12, 13, 14]);
    drop(stream);
    drop(resumed);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_pinned_head_is_accepted_and_then_refused_after_a_rewrite() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let mut audit_c = audit_client(&server).await;
    let head = audit_c
        .get_ledger_head(pb::GetLedgerHeadRequest {})
        .await?
        .into_inner();
    let key = audit_c
        .get_ledger_public_key(pb::GetLedgerPublicKeyRequest {})
        .await?
        .into_inner()
        .public_key;
    let pinned: SignedHead = serde_json::from_str(&head.signed_head_json)?;
    assert_eq!(pinned.position, EVENTS);
    assert_eq!(pinned.public_key, key);
    pinned.check_signature()?;
    // More history after the pin keeps it a prefix.
    register_image(&mut c, OWNER, SH, "later").await;
    let dir = server.stop().await;

    let store = open(dir.path());
    let ledger_key = LedgerKey::load(&LedgerKey::default_path(dir.path()))?;
    pinned.check_signed_by(&ledger_key.public_hex())?;
    let options = VerifyOptions {
        against_head: Some(pinned.clone()),
        progress: Default::default(),
    };
    let report = audit::verify(&store, &Policy::default(), &options)?;
    assert_eq!(report.pinned_head, Some(EVENTS));

    // A forged signature is refused before anything else.
    let mut forged = pinned.clone();
    forged.position += 1;
    assert!(matches!(forged.check_signature(), Err(AuditError::Key(_))));

    // Rewrite history consistently (every hash recomputed) from record 5 on:
    // the log verifies on its own, but no longer extends the pinned head.
    let mut lines = export_lines(&store);
    drop(store);
    let original = lines[4].clone();
    lines[4] = lines[4].replace("\"web\"", "\"web-renamed\"");
    assert_ne!(lines[4], original, "record 5 registers the image named web");
    let rewritten = rechain(&lines);
    let parent = tempfile::tempdir()?;
    let target = parent.path().join("rewritten");
    audit::import(
        &mut Cursor::new(rewritten.join("\n")),
        &target,
        &Policy::default(),
    )?;
    let store = open(&target);
    audit::verify(&store, &Policy::default(), &VerifyOptions::default())?;
    match audit::verify(&store, &Policy::default(), &options) {
        Err(AuditError::Invalid { position, what }) => {
            assert_eq!(position, EVENTS);
            assert!(what.contains("rewritten"), "{what}");
        }
        other => panic!("expected the pinned head to be refused, got {other:?}"),
    }
    drop(store);

    // The same through the binary.
    let head_file = parent.path().join("head.json");
    std::fs::write(&head_file, serde_json::to_string(&pinned)?)?;
    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&target)
        .arg("--against-head")
        .arg(&head_file)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("position {EVENTS}")), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .arg("--against-head")
        .arg(&head_file)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK: 12 events"), "{stdout}");
    Ok(())
}

#[tokio::test]
async fn history_lists_what_touched_an_image_or_an_account() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    let web = history(&mut c).await;
    let mut audit_c = audit_client(&server).await;
    let remote = audit_c
        .get_image_history(pb::GetImageHistoryRequest {
            image_id: web.clone(),
        })
        .await?
        .into_inner()
        .events;
    let types: Vec<&str> = remote.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec!["ImageRegistered", "ImageShared", "ShareCancelled"]
    );
    let dir = server.stop().await;
    let store = open(dir.path());
    let local = audit::image_history(&store, &ImageId::parse(&web)?)?;
    assert_eq!(
        local
            .iter()
            .map(|r| r.envelope.position)
            .collect::<Vec<_>>(),
        remote.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    // OTHER: registered, shared with, share cancelled.
    let other = audit::account_history(&store, &image_ledger::domain::AccountId::parse(OTHER)?)?;
    let types: Vec<String> = other
        .iter()
        .map(|r| r.envelope.event_type.clone())
        .collect();
    assert_eq!(
        types,
        vec!["AccountRegistered", "ImageShared", "ShareCancelled"]
    );
    drop(store);

    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["audit", "history", "--image", &web, "--data-dir"])
        .arg(dir.path())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("ImageShared") && lines[1].contains(FRIEND),
        "{text}"
    );
    // Kinds as the API names them.
    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["audit", "history", "--account", OTHER, "--data-dir"])
        .arg(dir.path())
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("AccountRegistered") && first.ends_with("kind ROOT"),
        "{text}"
    );
    Ok(())
}

/// Recomputes one record's hash with another `prev_hash`.
fn rehash(line: &str, prev_hash: [u8; 32]) -> String {
    let envelope = Envelope::decode(line.as_bytes()).expect("decodes");
    encode_like(&envelope, prev_hash).0
}

/// The metadata of `envelope` (its principal left out), chained to
/// `prev_hash`.
fn meta_of(envelope: &Envelope, prev_hash: [u8; 32]) -> RecordMeta<'_> {
    RecordMeta {
        position: envelope.position,
        aggregate_version: envelope.aggregate_version,
        recorded_at: envelope.recorded_at,
        actor: envelope.actor.as_deref(),
        principal: None,
        client_token: envelope.client_token.as_deref(),
        request_hash: envelope.request_hash.as_deref(),
        prev_hash,
    }
}

fn encode_like(envelope: &Envelope, prev_hash: [u8; 32]) -> (String, [u8; 32]) {
    let event = envelope.event().expect("event");
    let record = EncodedRecord::encode(&event, &meta_of(envelope, prev_hash)).expect("encodes");
    (String::from_utf8(record.bytes).expect("utf-8"), record.hash)
}

/// Parses possibly edited lines (hashes unchecked) and chains them afresh,
/// as a forger who controls the whole file would.
fn rechain(lines: &[String]) -> Vec<String> {
    let mut prev = [0u8; 32];
    lines
        .iter()
        .map(|line| {
            let envelope: Envelope = serde_json::from_str(line).expect("parses");
            let (text, hash) = encode_like(&envelope, prev);
            prev = hash;
            text
        })
        .collect()
}

/// Runs the binary; returns stdout, or the failure's stderr.
fn ledger_cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn moving_between_a_directory_and_a_database_keeps_the_head_both_ways() -> TestResult {
    let cluster = image_ledger_testkit::Cluster::shared();
    let server = TestServer::start().await;
    let mut c = server.client();
    let web = history(&mut c).await;
    let dir = server.stop().await;
    let head = hex::encode(open(dir.path()).head()?.hash);
    let work = tempfile::tempdir()?;
    let path = |name: &str| work.path().join(name).display().to_string();
    let data = dir.path().display().to_string();
    ledger_cli(&[
        "audit",
        "export",
        "--data-dir",
        &data,
        "-o",
        &path("sled.jsonl"),
    ])?;

    // Directory to database: verify there names the same head, and its
    // export is byte for byte the directory's.
    let url = cluster.fresh_database()?;
    let imported = ledger_cli(&[
        "audit",
        "import",
        &path("sled.jsonl"),
        "--database-url",
        &url,
    ])?;
    assert!(imported.contains(&head), "{imported}");
    let verified = ledger_cli(&["audit", "verify", "--database-url", &url])?;
    assert!(
        verified.starts_with(&format!("OK: {EVENTS} events")),
        "{verified}"
    );
    assert!(verified.contains(&head), "{verified}");
    ledger_cli(&[
        "audit",
        "export",
        "--database-url",
        &url,
        "-o",
        &path("pg.jsonl"),
    ])?;
    assert_eq!(
        std::fs::read(path("pg.jsonl"))?,
        std::fs::read(path("sled.jsonl"))?
    );
    assert_eq!(
        ledger_cli(&["audit", "history", "--database-url", &url, "--image", &web])?,
        ledger_cli(&["audit", "history", "--data-dir", &data, "--image", &web])?
    );
    ledger_cli(&["projections", "rebuild", "--database-url", &url])?;

    // Database to directory, and back to the same head.
    let restored = path("restored");
    ledger_cli(&[
        "audit",
        "import",
        &path("pg.jsonl"),
        "--data-dir",
        &restored,
    ])?;
    let verified = ledger_cli(&["audit", "verify", "--data-dir", &restored])?;
    assert!(verified.contains(&head), "{verified}");

    // A changed line is refused and leaves the database empty; a database
    // that holds a ledger is refused.
    let lines = std::fs::read_to_string(path("sled.jsonl"))?;
    std::fs::write(
        path("changed.jsonl"),
        lines.replacen("ap-shanghai", "ap-tokyo", 1),
    )?;
    let empty = cluster.fresh_database()?;
    let refused = ledger_cli(&[
        "audit",
        "import",
        &path("changed.jsonl"),
        "--database-url",
        &empty,
    ])
    .expect_err("a changed record is refused");
    assert!(refused.contains("nothing was written: line"), "{refused}");
    assert_eq!(
        image_ledger::store::PgStore::open(&empty)?.head()?.position,
        0
    );
    let used = ledger_cli(&[
        "audit",
        "import",
        &path("sled.jsonl"),
        "--database-url",
        &url,
    ])
    .expect_err("a database with a ledger is refused");
    assert!(used.contains("already holds a ledger"), "{used}");
    Ok(())
}

#[tokio::test]
async fn servers_given_one_key_seed_sign_heads_that_verify_with_one_public_key() -> TestResult {
    let seed = "7".repeat(64);
    let public = LedgerKey::from_seed_hex(&seed)?.public_hex();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let secret = image_ledger::config::Secret(seed.clone());
        let server = InProcess::new(dir.path())
            .with(|config| config.signing_key_seed = Some(secret))
            .start()
            .await?;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
                .connect()
                .await?;
        let mut client = pb::image_ledger_client::ImageLedgerClient::new(channel.clone());
        register_roots(&mut client, &[OWNER]).await;
        let mut audit = AuditLogClient::new(channel);
        let head = audit
            .get_ledger_head(pb::GetLedgerHeadRequest {})
            .await?
            .into_inner();
        assert_eq!(head.public_key, public);
        let signed: SignedHead = serde_json::from_str(&head.signed_head_json)?;
        signed.check_signed_by(&public)?;
        assert!(
            !LedgerKey::default_path(dir.path()).exists(),
            "no key file is made when the seed is given"
        );
        server.stop().await?;
    }
    assert!(LedgerKey::from_seed_hex("not hex").is_err());
    Ok(())
}

/// `lines` as a log written before the limits were recorded holds them,
/// its records of schema `version` (1: before principals, no `principal`
/// member): no `LedgerLimitsSet` (the positions after it move up),
/// chained afresh.
fn before_limits(lines: &[String], version: u32) -> Vec<String> {
    let mut prev = [0u8; 32];
    lines
        .iter()
        .filter(|line| !line.contains("\"event_type\":\"LedgerLimitsSet\""))
        .map(|line| {
            let mut envelope = Envelope::decode(line.as_bytes()).expect("decodes");
            envelope.position -= 1;
            let event = envelope.event().expect("event");
            let record = EncodedRecord::encode_version(&event, &meta_of(&envelope, prev), version)
                .expect("encodes");
            prev = record.hash;
            String::from_utf8(record.bytes).expect("utf-8")
        })
        .collect()
}

/// Starts a server on `dir` (a log restored from `original`'s, with its
/// key copied, as the restore procedure does), registers one account and
/// stops it: the log it leaves, which verifies, as lines.
async fn grown(
    original: &std::path::Path,
    dir: tempfile::TempDir,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    std::fs::copy(
        LedgerKey::default_path(original),
        LedgerKey::default_path(dir.path()),
    )?;
    let server = TestServer::start_in(dir, Policy::default()).await;
    let mut c = server.client();
    register_roots(&mut c, &[HELPER]).await;
    let dir = server.stop().await;
    let store = open(dir.path());
    // Its first start records the limits after the old records, then the
    // registration.
    let report = audit::verify(&store, &Policy::default(), &VerifyOptions::default())?;
    assert_eq!(report.events, EVENTS + 1);
    Ok(export_lines(&store))
}

#[tokio::test]
async fn a_log_without_recorded_limits_imports_verifies_and_grows_with_them() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let original = server.stop().await;
    let lines = before_limits(&export_lines(&open(original.path())), 2);
    assert!(lines.iter().all(|l| l.contains("\"schema_version\":2,")));
    let parent = tempfile::tempdir()?;
    let dir = tempfile::TempDir::new_in(parent.path())?;
    std::fs::remove_dir(dir.path())?;
    audit::import(
        &mut Cursor::new(lines.join("\n")),
        dir.path(),
        &Policy::default(),
    )?;
    let grown = grown(original.path(), dir).await?;
    let old_end = EVENTS as usize - 1;
    assert_eq!(grown[..old_end], lines[..]);
    assert!(grown[old_end].contains("\"event_type\":\"LedgerLimitsSet\""));
    Ok(())
}

#[tokio::test]
async fn a_log_written_before_record_version_2_still_verifies_and_grows() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let original = server.stop().await;
    let lines = export_lines(&open(original.path()));
    assert!(lines[1..]
        .iter()
        .all(|l| l.contains("\"schema_version\":2,") && l.contains("\"principal\":null,")));
    let old = before_limits(&lines, 1);
    assert!(old
        .iter()
        .all(|l| l.contains("\"schema_version\":1,") && !l.contains("principal")));

    let parent = tempfile::tempdir()?;
    let restored = parent.path().join("restored");
    audit::import(
        &mut Cursor::new(old.join("\n")),
        &restored,
        &Policy::default(),
    )?;
    {
        let store = open(&restored);
        let report = audit::verify(&store, &Policy::default(), &VerifyOptions::default())?;
        // A log of before the limits were recorded: verified with the flags' limits.
        assert_eq!(report.events, EVENTS - 1);
    }
    // The server appends version 2 records after the old ones; the mixed
    // log verifies.
    let dir = tempfile::TempDir::new_in(parent.path())?;
    std::fs::remove_dir(dir.path())?;
    std::fs::rename(&restored, dir.path())?;
    // The records it appends, the limits and the registration, are version 2.
    let mixed = grown(original.path(), dir).await?;
    let old_end = EVENTS as usize - 1;
    assert!(mixed[..old_end]
        .iter()
        .all(|l| l.contains("\"schema_version\":1,")));
    assert!(mixed[old_end].contains("\"event_type\":\"LedgerLimitsSet\""));
    assert!(mixed[old_end..]
        .iter()
        .all(|l| l.contains("\"schema_version\":2,")));

    // A version 1 record with a principal member is refused by its line.
    let mut forged = old.clone();
    forged[2] = forged[2].replace(
        "\"client_token\"",
        "\"principal\":\"gateway-1\",\"client_token\"",
    );
    let forged = rechain_raw(&forged);
    let target = parent.path().join("forged");
    let err = audit::import(
        &mut Cursor::new(forged.join("\n")),
        &target,
        &Policy::default(),
    )
    .expect_err("refused");
    match err {
        AuditError::Line { line, what } => {
            assert_eq!(line, 3, "{what}");
            assert!(
                what.contains("version 1 record has a principal member"),
                "{what}"
            );
        }
        other => panic!("expected a line error, got {other:?}"),
    }
    Ok(())
}

/// Re-hashes edited lines byte for byte (only `prev_hash` and `hash`
/// change), as a forger who controls the whole file would.
fn rechain_raw(lines: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut prev = [0u8; 32];
    lines
        .iter()
        .map(|line| {
            let at = line.find(",\"prev_hash\":\"").expect("a prev_hash member");
            let body = format!("{},\"prev_hash\":\"{}\"}}", &line[..at], hex::encode(prev));
            let hash: [u8; 32] = Sha256::digest(body.as_bytes()).into();
            prev = hash;
            format!(
                "{},\"hash\":\"{}\"}}",
                &body[..body.len() - 1],
                hex::encode(hash)
            )
        })
        .collect()
}

#[tokio::test]
async fn a_lost_signing_key_is_refused_until_a_new_one_is_asked_for() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    history(&mut c).await;
    let mut audit = audit_client(&server).await;
    let pinned = audit
        .get_ledger_head(pb::GetLedgerHeadRequest {})
        .await?
        .into_inner();
    let dir = server.stop().await;
    let head_file = dir.path().join("head.json");
    std::fs::write(&head_file, &pinned.signed_head_json)?;
    std::fs::remove_file(LedgerKey::default_path(dir.path()))?;

    let server = InProcess::new(dir.path());
    let refused = server.start().await;
    match refused {
        Err(err @ image_ledger::server::ServeError::KeyMissing(_)) => {
            let said = err.to_string();
            assert!(
                said.contains("--new-signing-key") && said.contains("--head-key"),
                "{said}"
            );
        }
        Err(other) => panic!("expected KeyMissing, got {other}"),
        Ok(_) => panic!("a ledger with history started without its key"),
    }
    assert!(
        !LedgerKey::default_path(dir.path()).exists(),
        "no key was made"
    );

    let server = server
        .with(|config| config.server.new_signing_key = true)
        .start()
        .await?;
    server.stop().await?;
    let new_key = LedgerKey::load(&LedgerKey::default_path(dir.path()))?;
    assert_ne!(new_key.public_hex(), pinned.public_key);

    // The old head is checked against the key that signed it.
    let data = dir.path().to_str().ok_or("a UTF-8 path")?;
    let head = head_file.to_str().ok_or("a UTF-8 path")?;
    let err = ledger_cli(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--against-head",
        head,
    ])
    .expect_err("signed by another key than the ledger's");
    let expected = format!(
        "the head was signed by {} but the ledger's key is {}",
        pinned.public_key,
        new_key.public_hex()
    );
    assert!(err.contains(&expected), "{err}");
    let out = ledger_cli(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--against-head",
        head,
        "--head-key",
        &pinned.public_key,
    ])?;
    assert!(out.contains("is a prefix of the log"), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_damaged_record_is_found_by_the_scrub_and_reading_it_answers_data_loss() -> TestResult {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = TestServer::start().await;
    let mut c = server.client();
    let web = history(&mut c).await;
    let dir = server.stop().await;
    {
        let store = open(dir.path());
        let lines = export_lines(&store);
        store.tamper_record(6, lines[5].replace(FRIEND, "100000000777").as_bytes())?;
    }
    // The start replays nothing (the read side is current): the scrub,
    // running at the default rate, finds the record.
    let server = TestServer::start_in(dir, Policy::default()).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.server.local_addr()))?
            .connect()
            .await?;
    let mut health = HealthClient::new(channel);
    let mut status = async move |service: &str| -> Result<ServingStatus, tonic::Status> {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        Ok(reply.into_inner().status())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status("imageledger.v1.AuditLog").await? != ServingStatus::NotServing {
        assert!(
            std::time::Instant::now() < deadline,
            "the scrub did not report the damaged record within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Commands and queries still serve: the damage is in old history.
    assert_eq!(
        status("imageledger.v1.ImageLedger").await?,
        ServingStatus::Serving
    );
    assert_eq!(status("").await?, ServingStatus::Serving);
    let mut c = server.client();
    register(&mut c, "100000000888", pb::AccountKind::Root).await;
    let mut audit = audit_client(&server).await;
    let mut stream = audit
        .read_events(pb::ReadEventsRequest {
            from_position: 1,
            limit: 100,
        })
        .await?
        .into_inner();
    let mut positions = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(record)) => positions.push(record.position),
            Ok(None) => panic!("the stream ended without naming the damage"),
            Err(status) => break status,
        }
    };
    assert!(
        positions.is_empty() || positions.iter().all(|p| *p < 6),
        "{positions:?}"
    );
    assert_status::<()>(
        Err(status.clone()),
        Code::DataLoss,
        "DataLoss.DamagedRecord",
    );
    assert!(
        status.message().contains("position 6"),
        "{}",
        status.message()
    );
    // A subscriber meets the same answer.
    let mut stream = audit
        .subscribe(pb::SubscribeRequest { from_position: 6 })
        .await?
        .into_inner();
    let status = stream.message().await.expect_err("the damage is named");
    assert_status::<()>(Err(status), Code::DataLoss, "DataLoss.DamagedRecord");
    // So do the reads of the image's stream, which holds the record.
    let history = audit
        .get_image_history(pb::GetImageHistoryRequest {
            image_id: web.clone(),
        })
        .await;
    assert_status(history, Code::DataLoss, "DataLoss.DamagedRecord");
    let access = audit
        .get_image_access_as_of(pb::GetImageAccessAsOfRequest {
            image_id: web,
            as_of: Some(pb::get_image_access_as_of_request::AsOf::AsOfPosition(10)),
        })
        .await;
    assert_status(access, Code::DataLoss, "DataLoss.DamagedRecord");
    server.stop().await;
    Ok(())
}
