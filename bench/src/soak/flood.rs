//! Idle HTTP/2 connections: a flood from five addresses of connections
//! that complete the handshake, answer pings and never call, past the
//! server's connection cap. A new client from another address must
//! connect and be answered within a second (the connection idle longest
//! makes room), and after the idle time the flood must be gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use image_ledger::grpc::pb;
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

use super::process::{BoxError, Process};
use super::SoakConfig;

/// The server's connection cap in this part.
const CAP: usize = 4_096;
/// Its idle time, seconds: short, so the run waits it out.
const IDLE_SECS: u64 = 10;
/// The promise: a new client answered within this.
const MAX_NEW_CLIENT: Duration = Duration::from_secs(1);

pub(super) async fn run(config: &SoakConfig) -> Result<(), BoxError> {
    // This process holds every connection of the flood.
    rlimit::increase_nofile_limit(u64::MAX)?;
    let dir = tempfile::tempdir()?;
    let server = Process::start(
        &config.binary,
        dir.path(),
        &[
            "--max-connections",
            &CAP.to_string(),
            "--max-connection-idle-secs",
            &IDLE_SECS.to_string(),
        ],
    )?;
    let before = server.rss_mib()?;
    let sources = 5u8;
    let per_source = config.idle_connections.div_ceil(usize::from(sources));
    let opening = Instant::now();
    let mut flood = Vec::with_capacity(config.idle_connections);
    for n in 0..config.idle_connections {
        let from = [127, 0, 0, 2 + (n / per_source) as u8];
        flood.push(idle_http2(server.addr, from).await?);
    }
    let opened = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = server.rss_mib()?;
    let open_before = flood.iter().filter(|task| !task.is_finished()).count();

    let asked = Instant::now();
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let addr = server.addr;
            async move {
                bind_connect(addr, [127, 0, 0, 9])
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await?;
    let mut client = pb::image_ledger_client::ImageLedgerClient::new(channel);
    client
        .register_account(pb::RegisterAccountRequest {
            account_id: "100000000001".into(),
            kind: pb::AccountKind::Root as i32,
            client_token: String::new(),
        })
        .await?;
    let answered = asked.elapsed();

    // The idle time, then a little for the GOAWAYs.
    tokio::time::sleep(Duration::from_secs(IDLE_SECS + 3)).await;
    let left = flood.iter().filter(|task| !task.is_finished()).count();
    let after = server.rss_mib()?;
    drop(client);
    server.stop()?;
    println!(
        "idle connections: {} HTTP/2 connections that never call, from {sources} addresses, \
         opened in {:.1} s, {open_before} held at once (cap {CAP}); server RSS {before:.0} -> \
         {during:.0} MiB; a new client from another address connected and was answered in \
         {:.0} ms; {left} of the flood still open {} s later (idle time {IDLE_SECS} s), \
         server RSS {after:.0} MiB",
        config.idle_connections,
        opened.as_secs_f64(),
        answered.as_secs_f64() * 1000.0,
        IDLE_SECS + 3,
    );
    if answered > MAX_NEW_CLIENT {
        return Err(format!("a new client waited {answered:?} behind idle connections").into());
    }
    if left > 0 {
        return Err(format!("{left} idle connections outlived the idle time").into());
    }
    Ok(())
}

/// A TCP connection to `server` from the loopback address `from`.
async fn bind_connect(server: SocketAddr, from: [u8; 4]) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let tcp = socket.connect(server).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// An HTTP/2 connection that answers pings and opens no stream; the task
/// ends when the server closes it (or refused it).
async fn idle_http2(server: SocketAddr, from: [u8; 4]) -> Result<JoinHandle<()>, BoxError> {
    let tcp = bind_connect(server, from).await?;
    Ok(tokio::spawn(async move {
        let Ok((send, connection)) = h2::client::handshake(tcp).await else {
            return;
        };
        let _send = send;
        let _ = connection.await;
    }))
}
