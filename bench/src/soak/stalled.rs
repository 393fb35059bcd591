//! Subscribers that never read: thousands of `Subscribe` streams from
//! position 1 whose client never opens its HTTP/2 window past 1 KiB. The
//! server must hold them in bounded memory (at most 300 MiB more) and
//! keep answering everyone else (p99 under 100 ms).

use std::time::{Duration, Instant};

use image_ledger::grpc::pb;
use tonic::transport::Channel;

use super::process::{quantile_ms, register_accounts, BoxError, Process};
use super::SoakConfig;

/// Events in the log the subscribers start from.
const LOG_EVENTS: u64 = 20_000;
/// Streams per connection: the server's default cap.
const PER_CONNECTION: usize = 100;
/// The bounds promised.
const MAX_ADDED_MIB: f64 = 300.0;
const MAX_P99_MS: f64 = 100.0;

pub(super) async fn run(config: &SoakConfig) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let cap = (config.subscribers + 100).to_string();
    let server = Process::start(
        &config.binary,
        dir.path(),
        &["--max-subscriptions", &cap, "--max-connections", "4096"],
    )?;
    register_accounts(&server, 1_000_000, LOG_EVENTS, false).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = server.rss_mib()?;
    let threads_before = server.threads()?;

    let mut held = Vec::with_capacity(config.subscribers);
    let mut channels = Vec::new();
    let opening = Instant::now();
    while held.len() < config.subscribers {
        if held.len() % PER_CONNECTION == 0 {
            channels.push(
                Channel::from_shared(format!("http://{}", server.addr))?
                    .initial_stream_window_size(Some(1_024))
                    .connect()
                    .await?,
            );
        }
        let channel = channels.last().cloned().ok_or("no connection")?;
        let stream = Process::audit(channel)
            .subscribe(pb::SubscribeRequest {
                from_position: std::env::var("SOAK_FROM")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .await?;
        held.push(stream);
    }
    let opened = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = server.rss_mib()?;
    let threads_during = server.threads()?;
    let (write_p99, read_p99) = others(&server).await?;

    drop(held);
    drop(channels);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = server.rss_mib()?;
    server.stop()?;
    let added = during - before;
    println!(
        "stalled: {} subscribers from position 1 on a {LOG_EVENTS}-event log, never reading, \
         opened in {:.1} s over {} connections: server RSS {before:.0} -> {during:.0} MiB \
         (+{added:.0}), threads {threads_before} -> {threads_during}; meanwhile writes p99 \
         {write_p99:.1} ms, queries p99 {read_p99:.1} ms; {after:.0} MiB after they closed",
        config.subscribers,
        opened.as_secs_f64(),
        config.subscribers.div_ceil(PER_CONNECTION),
    );
    if added > MAX_ADDED_MIB {
        return Err(
            format!("stalled subscribers added {added:.0} MiB (bound {MAX_ADDED_MIB})").into(),
        );
    }
    if write_p99 > MAX_P99_MS || read_p99 > MAX_P99_MS {
        return Err(format!("other calls slowed: p99 {write_p99:.1} / {read_p99:.1} ms").into());
    }
    Ok(())
}

/// p99 of 1,000 writes and of 1,000 queries, eight callers at a time, on
/// connections of their own.
async fn others(server: &Process) -> Result<(f64, f64), BoxError> {
    let mut callers = Vec::new();
    for c in 0..8u64 {
        let mut client = server.ledger().await?;
        callers.push(tokio::spawn(async move {
            let (mut writes, mut reads) = (Vec::new(), Vec::new());
            for n in 0..125u64 {
                let started = Instant::now();
                client
                    .register_account(pb::RegisterAccountRequest {
                        account_id: format!("{}", 2_000_000 + c * 1_000 + n),
                        kind: pb::AccountKind::Root as i32,
                        client_token: String::new(),
                    })
                    .await?;
                writes.push(started.elapsed());
                let started = Instant::now();
                client
                    .describe_image_quota(pb::DescribeImageQuotaRequest {
                        account_id: format!("{}", 1_000_000 + n),
                        region: "ap-guangzhou".into(),
                        min_position: 0,
                    })
                    .await?;
                reads.push(started.elapsed());
            }
            Ok::<_, tonic::Status>((writes, reads))
        }));
    }
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for caller in callers {
        let (w, r) = caller.await??;
        writes.extend(w);
        reads.extend(r);
    }
    Ok((
        quantile_ms(&mut writes, 0.99),
        quantile_ms(&mut reads, 0.99),
    ))
}
