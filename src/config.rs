//! Settings of a server: where it listens, where its data lives, the limits.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::{Policy, Region, DEFAULT_REGIONS};

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Directory of the sled store (and of the signing key, unless
    /// `signing_key` says otherwise).
    pub data_dir: PathBuf,
    /// A PostgreSQL database to keep the ledger in instead of the sled
    /// store in `data_dir`.
    pub database_url: Option<String>,
    /// The rules' limits and regions.
    pub policy: Policy,
    /// Size of sled's page cache in bytes.
    pub cache_bytes: u64,
    /// Bytes of encoded `DescribeImages` replies kept for reuse; 0 turns
    /// the page cache off.
    pub page_cache_bytes: u64,
    /// How long a stopping server waits for clients to close their connections.
    pub shutdown_grace: Duration,
    /// How long a stopping server keeps serving after health turned
    /// NOT_SERVING, so load balancers stop sending to it first.
    pub shutdown_drain: Duration,
    /// The Ed25519 key that signs heads; `None` means `ledger-signing.key` in
    /// the data directory, created on first start.
    pub signing_key: Option<PathBuf>,
    /// The signing key's secret seed itself (64 hex characters), in place
    /// of a key file: one key for every replica of a deployment.
    pub signing_key_seed: Option<Secret>,
    /// The longest a durable change waits before the stored read side is
    /// written: what a start after a crash replays at most (with a cap of
    /// 131,072 events).
    pub read_side_delay: Duration,
    /// Where Prometheus metrics are served (`GET /metrics`); `None`: not at all.
    pub metrics_addr: Option<SocketAddr>,
    /// Who may call what; `None` serves every caller (loopback only,
    /// unless `insecure_no_auth`).
    pub auth: Option<std::sync::Arc<crate::auth::Authenticator>>,
    /// Serve a non-loopback address without authentication.
    pub insecure_no_auth: bool,
    /// Speak TLS with these files; plaintext without.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Make a signing key even though the ledger has history.
    pub new_signing_key: bool,
    /// Most connections open at once (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Most `Subscribe` streams open at once.
    pub max_subscriptions: usize,
    /// Most `Subscribe` streams open on one connection.
    pub max_subscriptions_per_connection: usize,
    /// Records the background scrub checks per second (0: no scrub).
    pub scrub_rate: u64,
}

/// A setting that must not reach a log: `Debug` shows only that it is set.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// sled's page cache when no size is given, MiB. The state the commands and
/// queries use lives outside it, so the cache only serves log reads (audit,
/// history, subscriptions) and the pages a write touches.
pub const DEFAULT_CACHE_MB: u64 = 32;

/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// Default cap on open `Subscribe` streams.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 10_000;

/// Default cap on open `Subscribe` streams per connection.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 100;

/// The `DescribeImages` page cache when no size is given, MiB: about
/// 8,000 pages of 20 images.
pub const DEFAULT_PAGE_CACHE_MB: u64 = 32;

/// Records the background scrub checks per second by default: a pass over
/// a million records takes under two minutes, at a few percent of a core.
pub const DEFAULT_SCRUB_RATE: u64 = 10_000;

pub use crate::app::DEFAULT_READ_SIDE_DELAY_MS;

impl Config {
    /// Defaults with the given data directory, listening on a free loopback port.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database_url: None,
            policy: Policy::default(),
            cache_bytes: DEFAULT_CACHE_MB * 1024 * 1024,
            page_cache_bytes: DEFAULT_PAGE_CACHE_MB * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            shutdown_drain: Duration::ZERO,
            signing_key: None,
            signing_key_seed: None,
            read_side_delay: Duration::from_millis(DEFAULT_READ_SIDE_DELAY_MS),
            metrics_addr: None,
            auth: None,
            insecure_no_auth: false,
            tls: None,
            new_signing_key: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            scrub_rate: DEFAULT_SCRUB_RATE,
        }
    }
}

/// Parses a comma-separated region list; empty means the default list.
pub fn parse_regions(raw: &str) -> Result<BTreeSet<Region>, String> {
    let names: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(DEFAULT_REGIONS.iter().map(|r| Region::new(*r)).collect());
    }
    for name in &names {
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "region {name:?} may hold only lowercase letters, digits and dashes"
            ));
        }
    }
    Ok(names.into_iter().map(Region::new).collect())
}
