//! The server under load: started from the `image-ledger` binary on a
//! data directory, and read from `/proc` (CPU time by thread, memory).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use image_ledger_testkit::{ServerCommand, ServerProcess, Stderr};

use super::{BenchConfig, BoxError};

/// A started server and its cloud API door's address, if it serves one;
/// asked to stop (SIGTERM, then SIGKILL after 15 s) when dropped.
pub(super) struct Server(
    pub(super) ServerProcess,
    pub(super) Option<std::net::SocketAddr>,
);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.terminate(Duration::from_secs(15));
    }
}

/// The CA file of a TLS run, in the first server's directory.
pub(super) const TLS_CA: &str = "bench-ca.pem";

/// A CA (in `TLS_CA`) and a server certificate for localhost signed by
/// it, made for the run in `dir`.
fn tls_files(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), BoxError> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join(TLS_CA), ca.pem())?;
    let (cert_path, key_path) = (dir.join("bench-server.pem"), dir.join("bench-server.key"));
    std::fs::write(&cert_path, cert.pem())?;
    // Readable by its owner only, as the server asks of a key file.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options.open(&key_path)?,
        key.serialize_pem().as_bytes(),
    )?;
    Ok((cert_path, key_path))
}

pub(super) fn spawn_server(
    config: &BenchConfig,
    dir: &Path,
    key_seed: &str,
) -> Result<(Server, Duration), BoxError> {
    let mut command = ServerCommand::new(&config.binary)
        .env("IMAGE_LEDGER_SIGNING_KEY_SEED", key_seed)
        .args(["--image-quota", "1000000"])
        .args(config.cache_mb.map(|mb| format!("--cache-mb={mb}")))
        .args(
            config
                .page_cache_mb
                .map(|mb| format!("--page-cache-mb={mb}")),
        )
        .data_dir(dir)
        .args(
            config
                .database_url
                .iter()
                .flat_map(|url| ["--database-url", url.as_str()]),
        )
        .env(
            "RUST_LOG",
            std::env::var("IMAGE_LEDGER_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(Stderr::Inherit);
    if config.tls {
        let (cert, key) = tls_files(dir)?;
        command = command
            .env("IMAGE_LEDGER_TLS_CERT", cert)
            .env("IMAGE_LEDGER_TLS_KEY", key);
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        command = command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    let cloud = config.scenarios.iter().any(|s| s.is_cloud());
    if cloud {
        let keys = dir.join("bench-cloud-keys.toml");
        std::fs::write(&keys, crate::cloud::bench_keys(config.accounts))?;
        command = command
            .global("--config")
            .global(keys.as_os_str())
            .args(["--cloud-api-addr", "127.0.0.1:0"]);
    }
    let mut server = command.spawn()?;
    let startup = server.startup();
    let cloud_addr = if cloud {
        Some(server.cloud_api_addr()?)
    } else {
        None
    };
    Ok((Server(server, cloud_addr), startup))
}

/// CPU time by kind of thread.
pub(super) type Threads = BTreeMap<String, Duration>;

/// CPU time (nanoseconds on the CPU, from the kernel's per-thread scheduler
/// statistics) of a process's threads, summed by kind of thread; `None`
/// when the process cannot be read. Threads that ended are not counted
/// (sled starts and ends I/O threads as it needs them).
pub(super) fn cpu_by_thread(pid: u32) -> Option<Threads> {
    let mut by_kind = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let Some(Ok(nanos)) = stat.split_whitespace().next().map(str::parse::<u64>) else {
            continue;
        };
        *by_kind.entry(thread_kind(name.trim())).or_default() += Duration::from_nanos(nanos);
    }
    Some(by_kind)
}

/// A thread's name without a trailing `-<number>` (`sled-io-3` is `sled-io`).
pub(super) fn thread_kind(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((kind, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            kind.to_owned()
        }
        _ => name.to_owned(),
    }
}

/// The resident memory of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(super) fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
