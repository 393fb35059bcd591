//! Resource bounds: caps on open subscriptions, and a subscriber that
//! never reads holding up nobody.

mod common;

use std::time::{Duration, Instant};

use common::*;
use image_ledger::config::Config;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger::server::start;
use tonic::transport::Channel;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_capped_in_all_and_per_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_data_dir(dir.path());
    config.cache_bytes = 16 * 1024 * 1024;
    config.max_subscriptions = 3;
    config.max_subscriptions_per_connection = 2;
    let server = start(config).await?;
    let connect = || async {
        Channel::from_shared(format!("http://{}", server.local_addr()))
            .expect("a URI")
            .connect()
            .await
            .expect("connects")
    };
    let subscribe = |channel: Channel| async move {
        AuditLogClient::new(channel)
            .subscribe(pb::SubscribeRequest { from_position: 1 })
            .await
    };
    let (a, b) = (connect().await, connect().await);
    let first = subscribe(a.clone()).await?;
    let _second = subscribe(a.clone()).await?;
    assert_status(
        subscribe(a.clone()).await,
        Code::ResourceExhausted,
        "ResourceExhausted.TooManySubscriptions",
    );
    let _third = subscribe(b.clone()).await?;
    assert_status(
        subscribe(b.clone()).await,
        Code::ResourceExhausted,
        "ResourceExhausted.TooManySubscriptions",
    );
    // A closed subscription gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match subscribe(b.clone()).await {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the place was not given back: {status:?}"),
        }
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_holds_up_nobody() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER, FRIEND]).await;
    for i in 0..300 {
        register_image(&mut c, OWNER, GZ, &format!("image-{i}")).await;
    }
    // Subscribers from position 1 that never read a message.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let channel = Channel::from_shared(format!("http://{}", server.server.local_addr()))?
            .initial_stream_window_size(Some(65_535))
            .connect()
            .await?;
        stalled.push(
            AuditLogClient::new(channel)
                .subscribe(pb::SubscribeRequest { from_position: 1 })
                .await?,
        );
    }
    // Writes and queries go on as usual.
    let started = Instant::now();
    for i in 0..50 {
        register_image(&mut c, FRIEND, GZ, &format!("after-{i}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "writes slowed by stalled subscribers: {:?}",
        started.elapsed()
    );
    // And a reading subscriber still gets everything, in order.
    let mut reader = AuditLogClient::new(
        Channel::from_shared(format!("http://{}", server.server.local_addr()))?
            .connect()
            .await?,
    )
    .subscribe(pb::SubscribeRequest { from_position: 1 })
    .await?
    .into_inner();
    for expected in 1..=352u64 {
        let record = reader.message().await?.ok_or("the stream ended")?;
        assert_eq!(record.position, expected);
    }
    drop(stalled);
    server.stop().await;
    Ok(())
}
