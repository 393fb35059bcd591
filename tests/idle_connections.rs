//! Connections that hold a place without calling: closed (GOAWAY) after
//! the idle time, the one idle longest closed to make room at the cap,
//! and a peer address held to its share, so a flood of idle HTTP/2
//! connections cannot lock new clients out.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// An HTTP/2 connection from `from` that completes its handshake, answers
/// pings and opens no stream; the task ends when the server closes it.
async fn idle_http2(server: SocketAddr, from: [u8; 4]) -> JoinHandle<()> {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("a loopback address");
    let tcp = socket.connect(server).await.expect("connects");
    tokio::spawn(async move {
        let Ok((send, connection)) = h2::client::handshake(tcp).await else {
            return;
        };
        // Held so the connection is not closed from this end.
        let _send = send;
        let _ = connection.await;
    })
}

/// A channel whose connections come from `from`.
async fn channel_from(
    server: SocketAddr,
    from: [u8; 4],
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{server}"))
        .expect("a URI")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((from, 0)))?;
            let tcp = socket.connect(server).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
        }))
        .await
}

/// The count of connections the bounds ended for `reason`.
async fn ended(metrics: SocketAddr, reason: &str) -> f64 {
    let page = metrics_page(metrics).await.expect("a metrics page");
    let name = format!("ledger_connections_ended_total{{reason=\"{reason}\"}}");
    page.lines()
        .find_map(|line| line.strip_prefix(name.as_str()))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Whether `task` ends within `wait`.
async fn ends_within(task: &mut JoinHandle<()>, wait: Duration) -> bool {
    tokio::time::timeout(wait, task).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_calls_is_closed_after_the_idle_time_and_a_busy_one_is_not(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.server.max_connection_idle_secs = 1;
            config.server.metrics_addr = Some("127.0.0.1:0".parse().expect("an address"));
        })
        .start()
        .await?;
    let (addr, metrics) = (server.local_addr(), server.metrics_addr().ok_or("metrics")?);
    let started = Instant::now();
    let mut idle = idle_http2(addr, [127, 0, 0, 2]).await;
    // A connection whose only call is a subscription stays open.
    let busy = channel_from(addr, [127, 0, 0, 3]).await?;
    let mut feed = AuditLogClient::new(busy)
        .subscribe(pb::SubscribeRequest { from_position: 1 })
        .await?
        .into_inner();
    assert!(
        feed.message().await?.is_some(),
        "the limits record comes first"
    );

    assert!(
        ends_within(&mut idle, Duration::from_secs(4)).await,
        "the idle connection is still open"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after only {waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(ended(metrics, "idle").await, 1.0);

    // The subscriber's connection still carries its stream.
    let mut c = connect(&server).await;
    register_roots(&mut c, &[OWNER]).await;
    let next = tokio::time::timeout(Duration::from_secs(5), feed.message()).await??;
    assert!(next.is_some(), "the subscription ended");
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_cannot_lock_a_new_client_out() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.server.max_connections = 64;
            config.server.max_connections_per_peer = 32;
            config.server.metrics_addr = Some("127.0.0.1:0".parse().expect("an address"));
        })
        .start()
        .await?;
    let (addr, metrics) = (server.local_addr(), server.metrics_addr().ok_or("metrics")?);
    // Every place taken by idle connections from two addresses; the first
    // one made is the one idle longest.
    let mut flood = Vec::new();
    for from in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for _ in 0..32 {
            flood.push(idle_http2(addr, from).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        flood.iter().all(|task| !task.is_finished()),
        "a flood connection was closed"
    );

    // One more from an address that holds its share is closed at once.
    let mut over = idle_http2(addr, [127, 0, 0, 2]).await;
    assert!(
        ends_within(&mut over, Duration::from_secs(2)).await,
        "over the share, still open"
    );
    assert_eq!(ended(metrics, "peer_share").await, 1.0);

    // A new client from elsewhere connects and is answered within a second.
    let asked = Instant::now();
    let channel = channel_from(addr, [127, 0, 0, 4]).await?;
    let mut client = pb::image_ledger_client::ImageLedgerClient::new(channel);
    register_roots(&mut client, &[OWNER]).await;
    let answered = asked.elapsed();
    assert!(
        answered < Duration::from_secs(1),
        "answered after {answered:?}"
    );
    // The connection idle longest made room, and only it.
    assert!(
        ends_within(&mut flood[0], Duration::from_secs(1)).await,
        "the oldest is open"
    );
    assert!(
        flood[1..].iter().all(|task| !task.is_finished()),
        "another was closed"
    );
    assert_eq!(ended(metrics, "room").await, 1.0);
    assert_eq!(ended(metrics, "idle").await, 0.0);
    server.stop().await?;
    Ok(())
}
