//! Half a million unique client tokens: what they cost while kept, and
//! that once expired they cost nothing. Two logs of the same commands, one
//! without tokens and one with a unique token each; the second's server
//! is restarted while the tokens live, then after their retention (twice:
//! the first start after expiry removes them from the store). Each start
//! is timed to `listening on` and to its first write with a client token
//! answered: a sled server serves, writes included, while it reads the
//! records behind it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use image_ledger::grpc::pb;

use super::process::{register_accounts, BoxError, Process};
use super::SoakConfig;

/// The first account registered.
const FIRST_ACCOUNT: u64 = 10_000_000;

/// The accounts each start's first write registers, one each.
const PROBES: u64 = 90_000_000;
static PROBED: AtomicU64 = AtomicU64::new(0);

/// How long after its first write a start's RSS is read: the records are
/// read behind the server, and taken in within a second of that.
const SETTLE: Duration = Duration::from_secs(3);

/// A start's cost: seconds to `listening on` and to its first write
/// answered, and RSS once settled.
struct Start {
    seconds: f64,
    first_write: f64,
    rss_mib: f64,
}

pub(super) async fn run(config: &SoakConfig) -> Result<(), BoxError> {
    let retention = config.token_retention_secs.to_string();
    let args = ["--idempotency-retention-secs", retention.as_str()];

    let plain = tempfile::tempdir()?;
    let server = Process::start(&config.binary, plain.path(), &args)?;
    register_accounts(&server, FIRST_ACCOUNT, config.tokens, false).await?;
    server.stop()?;

    let tokened = tempfile::tempdir()?;
    let server = Process::start(&config.binary, tokened.path(), &args)?;
    let writing = Instant::now();
    register_accounts(&server, FIRST_ACCOUNT, config.tokens, true).await?;
    let written = writing.elapsed();
    let written_at = Instant::now();
    server.stop()?;
    // Alternating, so both see the machine's load alike.
    let (mut nones, mut lives) = (Vec::new(), Vec::new());
    for _ in 0..config.token_starts {
        nones.push(start(config, plain.path(), &args).await?);
        lives.push(start(config, tokened.path(), &args).await?);
    }
    // The first token was written a whole write's time before the last.
    if written_at.elapsed() + written > Duration::from_secs(config.token_retention_secs) {
        return Err("the starts with live tokens outlasted the retention: raise it".into());
    }
    let (none, live) = (Start::median(nones), Start::median(lives));
    let expiry = Duration::from_secs(config.token_retention_secs + 1);
    if let Some(left) = expiry.checked_sub(written_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let first = start(config, tokened.path(), &args).await?;
    let second = start(config, tokened.path(), &args).await?;

    println!(
        "tokens: {} commands in {:.1} s ({:.0}/s), retention {} s; start (listening, first \
         write) and RSS, medians of {}: without tokens {}; tokens live {} (ratios {:.2}, {:.2}, \
         {:.2}); expired, first start {}, second start {}",
        config.tokens,
        written.as_secs_f64(),
        config.tokens as f64 / written.as_secs_f64(),
        config.token_retention_secs,
        config.token_starts,
        none,
        live,
        live.seconds / none.seconds,
        live.first_write / none.first_write,
        live.rss_mib / none.rss_mib,
        first,
        second,
    );
    // Equal within the noise of a shared machine.
    if second.rss_mib > none.rss_mib * 1.15 + 10.0 || second.seconds > none.seconds * 1.5 + 0.1 {
        return Err("after expiry, a start costs more than with no tokens".into());
    }
    Ok(())
}

/// Starts the server on `dir` once, measures, stops it.
async fn start(config: &SoakConfig, dir: &Path, args: &[&str]) -> Result<Start, BoxError> {
    let server = Process::start(&config.binary, dir, args)?;
    let asked = Instant::now();
    let probe = PROBES + PROBED.fetch_add(1, Ordering::SeqCst);
    server
        .ledger()
        .await?
        .register_account(pb::RegisterAccountRequest {
            account_id: probe.to_string(),
            kind: pb::AccountKind::Root as i32,
            client_token: format!("probe-{probe}"),
        })
        .await?;
    let first_write = (server.startup + asked.elapsed()).as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let measured = Start {
        seconds: server.startup.as_secs_f64(),
        first_write,
        rss_mib: server.rss_mib()?,
    };
    server.stop()?;
    Ok(measured)
}

impl Start {
    /// Each figure's median over `starts` (the upper one of an even count).
    fn median(starts: Vec<Start>) -> Start {
        let middle = |figure: fn(&Start) -> f64| {
            let mut figures: Vec<f64> = starts.iter().map(figure).collect();
            figures.sort_by(f64::total_cmp);
            figures[figures.len() / 2]
        };
        Start {
            seconds: middle(|s| s.seconds),
            first_write: middle(|s| s.first_write),
            rss_mib: middle(|s| s.rss_mib),
        }
    }
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s, {:.2} s / {:.0} MiB",
            self.seconds, self.first_write, self.rss_mib
        )
    }
}
