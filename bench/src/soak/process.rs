//! A server process of the soak: started on a data directory, its address
//! read from its first line, its memory read from `/proc`, and its end, by
//! SIGTERM or SIGKILL.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger::grpc::pb::image_ledger_client::ImageLedgerClient;
use image_ledger_testkit::{ServerCommand, ServerProcess, Stderr};
use tonic::transport::Channel;

pub use crate::load::BoxError;

/// A running server; killed when dropped.
pub(super) struct Process {
    server: ServerProcess,
    pub(super) addr: SocketAddr,
    /// From the spawn to its `listening on` line.
    pub(super) startup: Duration,
}

impl Process {
    /// Starts `binary serve` on `dir` with `args` besides.
    pub(super) fn start(binary: &Path, dir: &Path, args: &[&str]) -> Result<Self, BoxError> {
        let server = ServerCommand::new(binary)
            .args(["--insecure-no-auth", "--image-quota", "1000000"])
            .data_dir(dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stderr(Stderr::Inherit)
            .spawn()?;
        Ok(Self {
            addr: server.addr(),
            startup: server.startup(),
            server,
        })
    }

    /// Its resident memory, MiB.
    pub(super) fn rss_mib(&self) -> Result<f64, BoxError> {
        let bytes = crate::rss_of(self.server.pid()).ok_or("cannot read the server's memory")?;
        Ok(bytes as f64 / (1024.0 * 1024.0))
    }

    /// Its threads.
    pub(super) fn threads(&self) -> Result<usize, BoxError> {
        Ok(std::fs::read_dir(format!("/proc/{}/task", self.server.pid()))?.count())
    }

    /// A client of its `ImageLedger` on a connection of its own.
    pub(super) async fn ledger(&self) -> Result<ImageLedgerClient<Channel>, BoxError> {
        Ok(ImageLedgerClient::new(self.channel().await?))
    }

    /// A connection of its own.
    pub(super) async fn channel(&self) -> Result<Channel, BoxError> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    /// A client of its `AuditLog` on `channel`.
    pub(super) fn audit(channel: Channel) -> AuditLogClient<Channel> {
        AuditLogClient::new(channel)
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub(super) fn kill(mut self) -> Result<(), BoxError> {
        Ok(self.server.kill()?)
    }

    /// SIGTERM, and the wait for a clean exit.
    pub(super) fn stop(mut self) -> Result<(), BoxError> {
        let status = self.server.terminate(STOP_PATIENCE)?;
        if !status.success() {
            return Err(format!("the server stopped with {status}").into());
        }
        Ok(())
    }
}

/// How long a clean stop may take before the server is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(120);

/// Registers accounts `first` to `first + count - 1`, 64 callers at a
/// time, each with a token of its own when `tokens`.
pub(super) async fn register_accounts(
    server: &Process,
    first: u64,
    count: u64,
    tokens: bool,
) -> Result<(), BoxError> {
    const CALLERS: u64 = 64;
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let mut client = server.ledger().await?;
        callers.push(tokio::spawn(async move {
            for n in (c..count).step_by(CALLERS as usize) {
                client
                    .register_account(pb::RegisterAccountRequest {
                        account_id: (first + n).to_string(),
                        kind: pb::AccountKind::Root as i32,
                        client_token: if tokens {
                            format!("unique-{n}")
                        } else {
                            String::new()
                        },
                    })
                    .await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for caller in callers {
        caller.await??;
    }
    Ok(())
}

/// The account ids the log of a stopped server's `dir` registered, read
/// from `audit export`, after `audit verify` passed on it.
pub(super) fn registered_accounts(
    binary: &Path,
    dir: &Path,
) -> Result<std::collections::HashSet<String>, BoxError> {
    let verify = Command::new(binary)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()?;
    if !verify.status.success() {
        return Err(format!(
            "audit verify failed: {}",
            String::from_utf8_lossy(&verify.stderr)
        )
        .into());
    }
    let export = Command::new(binary)
        .args(["audit", "export", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::null())
        .output()?;
    if !export.status.success() {
        return Err("audit export failed".into());
    }
    let mut accounts = std::collections::HashSet::new();
    for line in String::from_utf8_lossy(&export.stdout).lines() {
        if !line.contains("\"AccountRegistered\"") {
            continue;
        }
        if let Some(rest) = line.split("\"account_id\":\"").nth(1) {
            if let Some(id) = rest.split('"').next() {
                accounts.insert(id.to_owned());
            }
        }
    }
    Ok(accounts)
}

/// The `q`-quantile of `samples` (sorted here), in milliseconds.
pub(super) fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let at = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[at].as_secs_f64() * 1_000.0
}
