//! Several replicas on one PostgreSQL database behave as one ledger: racing
//! replicas only ever give the rules' answers, a query on one sees every
//! write another acknowledged, a client token retried on another replica
//! gets the first reply, and a subscriber on one sees the other's writes
//! in order. Ignored where PostgreSQL's server is not installed.

mod common;

use std::sync::Arc;

use common::*;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger::server::RunningServer;
use image_ledger_testkit::Cluster;
use tonic::Code;

/// Replicas of one ledger: each its own server and directory, one database.
struct Replicas {
    url: String,
    servers: Vec<(tempfile::TempDir, RunningServer)>,
}

impl Replicas {
    /// `count` replicas on a fresh database.
    async fn start(count: usize) -> Self {
        let url = Cluster::shared()
            .fresh_database()
            .expect("a fresh database");
        let mut servers = Vec::new();
        for _ in 0..count {
            let dir = tempfile::tempdir().expect("temporary directory");
            let server = InProcess::new(dir.path())
                .with(|config| {
                    config.store.database_url = Some(url.clone());
                    config.signing_key_seed = Some(replica_seed());
                })
                .start()
                .await
                .expect("replica starts");
            servers.push((dir, server));
        }
        Self { url, servers }
    }

    async fn client(&self, replica: usize) -> Client {
        connect(&self.servers[replica].1).await
    }

    async fn audit(&self, replica: usize) -> AuditLogClient<tonic::transport::Channel> {
        AuditLogClient::connect(format!("http://{}", self.servers[replica].1.local_addr()))
            .await
            .expect("audit client connects")
    }

    /// Stops the replicas one by one, the last started first, verifying
    /// the database after each stop: the whole chain, the idempotency
    /// records and the stored read side (which the stopped replica may have
    /// kept until then, after following the others) against the log.
    async fn stop(self) {
        for (_, server) in self.servers.into_iter().rev() {
            server.stop().await.expect("clean stop");
            let url = self.url.clone();
            tokio::task::spawn_blocking(move || {
                let store = image_ledger::store::PgStore::open(&url).expect("the database opens");
                image_ledger::audit::verify(
                    &store,
                    &image_ledger::domain::Policy::default(),
                    &image_ledger::audit::VerifyOptions::default(),
                )
                .expect("the shared database verifies");
            })
            .await
            .expect("verification ran");
        }
    }
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn fifty_racers_over_two_replicas_for_three_free_slots_leave_exactly_three_winners(
) -> TestResult {
    let replicas = Replicas::start(2).await;
    let (mut a, mut b) = (replicas.client(0).await, replicas.client(1).await);
    register_roots(&mut a, &[OWNER]).await;
    let first: Vec<String> = (0..47).map(|i| format!("3000000{i:05}")).collect();
    let racers: Vec<String> = (0..50).map(|i| format!("4000000{i:05}")).collect();
    for account in first.iter().chain(&racers) {
        register(&mut a, account, pb::AccountKind::Root).await;
    }
    for round in 0..5 {
        let image = register_image(&mut a, OWNER, GZ, &format!("contested-{round}")).await;
        let first_refs: Vec<&str> = first.iter().map(String::as_str).collect();
        a.share_image(share_request(OWNER, &image, &first_refs))
            .await?;
        let image = Arc::new(image);
        let mut tasks = Vec::new();
        for (i, racer) in racers.iter().enumerate() {
            // Every other racer calls the other replica.
            let mut client = if i % 2 == 0 { a.clone() } else { b.clone() };
            let image = Arc::clone(&image);
            let racer = racer.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .share_image(share_request(OWNER, &image, &[&racer]))
                    .await
                    .map_err(|status| status.code())
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await? {
                Ok(_) => won += 1,
                Err(code) => assert_eq!(code, Code::ResourceExhausted, "round {round}"),
            }
        }
        assert_eq!(won, 3, "exactly three racers win round {round}");
        assert_eq!(shares_of(&mut a, OWNER, &image).await.len(), 50);
        assert_eq!(shares_of(&mut b, OWNER, &image).await.len(), 50);
    }
    replicas.stop().await;
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn a_cancel_on_one_replica_is_seen_at_once_by_an_authorize_on_the_other() -> TestResult {
    let replicas = Replicas::start(2).await;
    let (mut a, mut b) = (replicas.client(0).await, replicas.client(1).await);
    register_roots(&mut a, &[OWNER, FRIEND]).await;
    let image = register_image(&mut a, OWNER, GZ, "web").await;
    for round in 0..20 {
        a.share_image(share_request(OWNER, &image, &[FRIEND]))
            .await?;
        assert_eq!(
            authorize(&mut b, FRIEND, &image, GZ, pb::ImageUse::CreateInstance).await,
            (true, String::new()),
            "round {round}: the share is seen on the other replica"
        );
        let cancelled = a
            .cancel_image_sharing(cancel_request(OWNER, &image, &[FRIEND]))
            .await?
            .into_inner()
            .position;
        // The position the other replica's reply gave is answered here,
        // and one past the database's head is refused at once.
        let asked = |min_position| pb::DescribeImageSharePermissionRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            min_position,
        };
        let shares = b.describe_image_share_permission(asked(cancelled)).await?;
        assert!(shares.into_inner().shares.is_empty(), "round {round}");
        assert_status(
            b.describe_image_share_permission(asked(cancelled + 1))
                .await,
            Code::OutOfRange,
            "InvalidParameterValue.PositionNotWritten",
        );
        // No min_position: the query is linearizable all the same.
        let (allowed, reason) =
            authorize(&mut b, FRIEND, &image, GZ, pb::ImageUse::CreateInstance).await;
        assert!(!allowed, "round {round}: authorized after the cancel");
        assert_eq!(
            reason, "UnauthorizedOperation.ImageNotBelongToAccount",
            "round {round}"
        );
    }
    replicas.stop().await;
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn a_client_token_retried_on_another_replica_gets_the_first_reply_and_appends_nothing(
) -> TestResult {
    let replicas = Replicas::start(2).await;
    let (mut a, mut b) = (replicas.client(0).await, replicas.client(1).await);
    register_roots(&mut a, &[OWNER, FRIEND, OTHER]).await;
    let image = register_image(&mut a, OWNER, GZ, "web").await;
    let request = pb::ShareImageRequest {
        client_token: "share-once".into(),
        ..share_request(OWNER, &image, &[FRIEND])
    };
    let first = a.share_image(request.clone()).await?.into_inner();
    assert!(first.position > 0);
    let retried = b.share_image(request).await?.into_inner();
    assert_eq!(retried, first);
    // The next write on either replica comes right after the first one.
    let next = b
        .share_image(share_request(OWNER, &image, &[OTHER]))
        .await?
        .into_inner();
    assert_eq!(next.position, first.position + 1);
    // The same token with other parameters is refused on either replica.
    let changed = pb::ShareImageRequest {
        client_token: "share-once".into(),
        ..share_request(OWNER, &image, &[OTHER])
    };
    for client in [&mut a, &mut b] {
        assert_status(
            client.share_image(changed.clone()).await,
            Code::AlreadyExists,
            "IdempotentParameterMismatch",
        );
    }
    replicas.stop().await;
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn a_subscriber_on_one_replica_sees_the_others_writes_in_order() -> TestResult {
    let replicas = Replicas::start(2).await;
    let mut a = replicas.client(0).await;
    let mut stream = replicas
        .audit(1)
        .await
        .subscribe(pb::SubscribeRequest { from_position: 0 })
        .await?
        .into_inner();
    register_roots(&mut a, &[OWNER]).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = a.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    client
                        .register_image(image_request(OWNER, GZ, &format!("w{w}-{i}")))
                        .await
                        .expect("register");
                }
            })
        })
        .collect();
    let total = 1 + 4 * 25;
    let (mut seen, mut prev_hash) = (Vec::new(), hex::encode([0u8; 32]));
    while seen.len() < total {
        let record = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await??
            .ok_or("the stream ended early")?;
        assert_eq!(
            record.prev_hash, prev_hash,
            "no gap before {}",
            record.position
        );
        prev_hash = record.hash.clone();
        seen.push(record.position);
    }
    for writer in writers {
        writer.await?;
    }
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
    replicas.stop().await;
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn a_replica_killed_under_write_load_loses_nothing_the_other_does_not_have() -> TestResult {
    let cluster = Cluster::shared();
    let url = cluster.fresh_database()?;
    let (dirs, mut processes, mut clients) = (
        [tempfile::tempdir()?, tempfile::tempdir()?],
        Vec::new(),
        Vec::new(),
    );
    for dir in &dirs {
        let process = binary(dir.path())
            .args(["--database-url", &url])
            .env("IMAGE_LEDGER_SIGNING_KEY_SEED", replica_seed().0)
            .spawn()?;
        clients.push(pb::image_ledger_client::ImageLedgerClient::connect(process.url()).await?);
        processes.push(process);
    }
    register_roots(&mut clients[0], &[OWNER]).await;
    // Four writers on each replica; the one on the killed replica stop at
    // the kill, the others keep going.
    let mut tasks = Vec::new();
    for (replica, client) in clients.iter().enumerate() {
        for writer in 0..4 {
            let mut client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..150 {
                    let name = format!("r{replica}-w{writer}-{i}");
                    match client.register_image(image_request(OWNER, GZ, &name)).await {
                        Ok(reply) => acked.push(reply.into_inner().image_id),
                        Err(status) => {
                            assert_eq!(replica, 0, "the surviving replica refused: {status:?}");
                            assert!(
                                matches!(
                                    status.code(),
                                    Code::Unavailable | Code::Unknown | Code::Cancelled
                                ),
                                "{status:?}"
                            );
                            break;
                        }
                    }
                }
                acked
            }));
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    processes[0].kill()?;
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await?);
    }
    assert!(acked.len() < 8 * 150, "the kill fell after every write");
    // The survivor has every image either acknowledged.
    let survivor = &mut clients[1];
    let present = listed_images(survivor, OWNER, GZ).await?;
    let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged images lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{} writes acknowledged, {} images on the survivor",
        acked.len(),
        present.len()
    );
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn a_replica_whose_log_no_longer_continues_its_chain_stops_serving() -> TestResult {
    use image_ledger::domain::{AccountId, AccountKind, Event};
    use image_ledger::store::{AppendBatch, EncodedRecord, EventLog, PgStore, RecordMeta};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let replicas = Replicas::start(1).await;
    let mut c = replicas.client(0).await;
    register_roots(&mut c, &[OWNER]).await;
    // Another writer appends a record whose prev_hash is not the head's:
    // the head row moves (its own check passes), the chain does not continue.
    let url = replicas.url.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let store = PgStore::open(&url).map_err(|e| e.to_string())?;
        let head = store.head().map_err(|e| e.to_string())?;
        let event = Event::AccountRegistered {
            account_id: AccountId::parse(FRIEND).map_err(|e| e.to_string())?,
            kind: AccountKind::Root,
        };
        let record = EncodedRecord::encode(
            &event,
            &RecordMeta {
                position: head.position + 1,
                aggregate_version: 1,
                recorded_at: time::OffsetDateTime::now_utc(),
                actor: None,
                principal: None,
                client_token: None,
                request_hash: None,
                prev_hash: [7; 32],
            },
        )
        .map_err(|e| e.to_string())?;
        store
            .write(&AppendBatch {
                expected_head: head,
                records: vec![record],
                ..AppendBatch::default()
            })
            .map_err(|e| e.to_string())
    })
    .await??;
    // The replica follows, finds the break, and stops serving.
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        replicas.servers[0].1.local_addr()
    ))?
    .connect()
    .await?;
    let mut health = HealthClient::new(channel);
    let mut seen = Vec::new();
    for _ in 0..50 {
        let status = health
            .check(HealthCheckRequest {
                service: "imageledger.v1.ImageLedger".into(),
            })
            .await?
            .into_inner()
            .status();
        seen.push(status);
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), Some(&ServingStatus::NotServing), "{seen:?}");
    // Every command is refused, without internals, and nothing is written.
    assert_status(
        c.register_image(image_request(OWNER, GZ, "after-the-break"))
            .await,
        Code::Internal,
        "InternalError",
    );
    for (_, server) in replicas.servers {
        server.stop().await?;
    }
    Ok(())
}
