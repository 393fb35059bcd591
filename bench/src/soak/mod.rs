//! `image-ledger-bench soak`: the server tried as an adversary and an
//! unlucky operator would, with its numbers: SIGKILLs under write load
//! with every acknowledged write checked afterwards ([`kills`]), thousands
//! of subscribers that never read ([`stalled`]), a flood of HTTP/2
//! connections that never call ([`flood`]), and half a million unique
//! client tokens before and after they expire ([`tokens`]). Not a test
//! suite: each part prints what it measured and fails only when a promise
//! is broken (an acknowledged write lost, a bound exceeded).

mod flood;
mod kills;
mod process;
mod stalled;
mod tokens;

use std::path::PathBuf;

pub use process::BoxError;

/// What to run, and how much of it.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The `image-ledger` binary.
    pub binary: PathBuf,
    /// SIGKILLs under load (0: skip).
    pub kills: usize,
    /// Subscribers that never read (0: skip).
    pub subscribers: usize,
    /// Idle HTTP/2 connections (0: skip).
    pub idle_connections: usize,
    /// Unique client tokens (0: skip).
    pub tokens: u64,
    /// Their retention, seconds: the tokens part waits it out.
    pub token_retention_secs: u64,
    /// Starts timed with the tokens live and without, alternating.
    pub token_starts: usize,
}

/// Runs the parts asked for, printing each one's figures as it ends.
pub fn soak(config: &SoakConfig) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        if config.kills > 0 {
            kills::run(config).await?;
        }
        if config.subscribers > 0 {
            stalled::run(config).await?;
        }
        if config.idle_connections > 0 {
            flood::run(config).await?;
        }
        if config.tokens > 0 {
            tokens::run(config).await?;
        }
        Ok(())
    })
}
