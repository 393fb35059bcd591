//! SIGKILLs under write load: each round starts the server on the same
//! directory, lets writers register accounts (each with a client token)
//! for a random moment, and kills it mid-flight. Every account whose
//! registration was answered OK must be in the log afterwards, which
//! `audit verify` must pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image_ledger::grpc::pb;
use rand::Rng;

use super::process::{registered_accounts, BoxError, Process};
use super::SoakConfig;

/// Writers in flight during a round.
const WRITERS: usize = 64;

pub(super) async fn run(config: &SoakConfig) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for round in 0..config.kills {
        let server = Process::start(&config.binary, dir.path(), &[])?;
        let next = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            let mut client = server.ledger().await?;
            let (acked, refused, next) =
                (Arc::clone(&acked), Arc::clone(&refused), Arc::clone(&next));
            writers.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let id = format!("{}{:09}", round + 1, n);
                    let request = pb::RegisterAccountRequest {
                        account_id: id.clone(),
                        kind: pb::AccountKind::Root as i32,
                        client_token: format!("kill-{id}"),
                    };
                    match client.register_account(request).await {
                        Ok(_) => acked.lock().map(|mut a| a.push(id)).unwrap_or(()),
                        // The server died under the call: its outcome is unknown.
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }));
        }
        let wait = rand::rng().random_range(300..1_200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill()?;
        for writer in writers {
            let _ = writer.await;
        }
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    // One clean start and stop after the last crash, as an operator would.
    Process::start(&config.binary, dir.path(), &[])?.stop()?;
    let stored = registered_accounts(&config.binary, dir.path())?;
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    println!(
        "kills: {} SIGKILLs under {WRITERS} writers in {:.1} s: {} writes acknowledged, \
         {} cut off unanswered, {} in the log, {} acknowledged writes lost; audit verify passes",
        config.kills,
        started.elapsed().as_secs_f64(),
        acked.len(),
        refused.load(Ordering::SeqCst),
        stored.len(),
        lost.len()
    );
    if !lost.is_empty() {
        return Err(format!(
            "acknowledged writes lost, first {:?}",
            &lost[..lost.len().min(5)]
        )
        .into());
    }
    Ok(())
}
