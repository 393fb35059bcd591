//! Settings of a server: the sections its parts own, put together.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::LedgerSettings;
use crate::domain::{Policy, Region, DEFAULT_REGIONS};
use crate::store::Location;

/// Everything a server needs to start: the sections each part owns (whose
/// flags `serve` takes as they are), and what only the config file or the
/// environment gives (a secret, the `[auth]` and `[tls]` tables).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens, its limits, how it stops, its signing key.
    pub server: ServerSettings,
    /// Where the ledger is kept.
    pub store: Location,
    /// The rules' limits and regions.
    pub policy: Policy,
    /// The writer's and the background work's settings.
    pub ledger: LedgerSettings,
    /// The signing key's secret seed itself (64 hex characters), in place
    /// of a key file: one key for every replica of a deployment.
    pub signing_key_seed: Option<Secret>,
    /// Who may call what; `None` serves every caller (loopback only,
    /// unless `insecure_no_auth`).
    pub auth: Option<std::sync::Arc<crate::auth::Authenticator>>,
    /// Speak TLS with these files; plaintext without.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The keys requests to the cloud API door are signed with
    /// (`[[cloud_api.keys]]`), swapped whole at a reload.
    pub cloud_keys: std::sync::Arc<crate::auth::CloudKeys>,
}

/// An address to listen on: ip:port, or host:port resolved now (the
/// first address the name has; `localhost` is loopback).
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} names no address")),
        Err(err) => Err(format!("{text:?} is not ip:port or host:port: {err}")),
    }
}

/// The server's own settings: `serve`'s flags that [`crate::server`] uses.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Address to listen on: ip:port or host:port (IMAGE_LEDGER_ADDR is
    /// the clients' variable, where they connect).
    #[arg(
        long,
        env = "IMAGE_LEDGER_LISTEN",
        default_value = "127.0.0.1:50051",
        value_parser = listen_addr
    )]
    pub addr: SocketAddr,
    /// Encoded DescribeImages replies kept for reuse while the listings
    /// they show are unchanged, MiB (about 8,000 pages of 20 images at the
    /// default); the cloud API door keeps as much again of its JSON pages;
    /// 0 turns the page caches off.
    #[arg(long, env = "IMAGE_LEDGER_PAGE_CACHE_MB", default_value_t = 32)]
    pub page_cache_mb: u64,
    /// Seconds a stopping server waits for clients to close their connections.
    #[arg(long, env = "IMAGE_LEDGER_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Milliseconds a stopping server keeps serving after its health turned
    /// NOT_SERVING, so load balancers drain it first (match their health
    /// check interval).
    #[arg(long, env = "IMAGE_LEDGER_SHUTDOWN_DRAIN_MS", default_value_t = 0)]
    pub shutdown_drain_ms: u64,
    /// Ed25519 key file (64 hex characters) that signs heads; default
    /// `ledger-signing.key` in the data directory, created on first start.
    /// IMAGE_LEDGER_SIGNING_KEY_SEED (the 64 hex characters themselves, never
    /// a flag) takes its place: one key for every replica of a deployment.
    #[arg(long, env = "IMAGE_LEDGER_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Serve the Tencent Cloud API (CVM 2017-03-12 and Lighthouse
    /// 2020-03-24 image-sharing actions, signed with the config file's
    /// [[cloud_api.keys]]) over HTTP/1.1 on this address; off unless set.
    #[arg(long, env = "IMAGE_LEDGER_CLOUD_API_ADDR", value_parser = listen_addr)]
    pub cloud_api_addr: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address (`GET /metrics`); off
    /// unless set.
    #[arg(long, env = "IMAGE_LEDGER_METRICS_ADDR", value_parser = listen_addr)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve a non-loopback address without authentication: anyone who
    /// reaches the port can act as any account. Logged at every start.
    #[arg(long, env = "IMAGE_LEDGER_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Most connections open at once, the gRPC port and the cloud API door
    /// together (lowered to fit the open-file limit); more wait in the
    /// kernel's backlog.
    #[arg(long, env = "IMAGE_LEDGER_MAX_CONNECTIONS", default_value_t = 4_096)]
    pub max_connections: usize,
    /// Most connections open at once from one peer address, of
    /// --max-connections; more from it are closed as they come.
    #[arg(
        long,
        env = "IMAGE_LEDGER_MAX_CONNECTIONS_PER_PEER",
        default_value_t = 1_024
    )]
    pub max_connections_per_peer: usize,
    /// Seconds a gRPC connection may stay without any call before it is
    /// closed (GOAWAY; clients reconnect when they next call). At the
    /// connection cap the one idle longest is closed sooner, to make room.
    #[arg(
        long,
        env = "IMAGE_LEDGER_MAX_CONNECTION_IDLE_SECS",
        default_value_t = 300
    )]
    pub max_connection_idle_secs: u64,
    /// Most Subscribe streams open at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "IMAGE_LEDGER_MAX_SUBSCRIPTIONS", default_value_t = 10_000)]
    pub max_subscriptions: usize,
    /// Most Subscribe streams open on one connection.
    #[arg(
        long,
        env = "IMAGE_LEDGER_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_subscriptions_per_connection: usize,
    /// Make a new signing key although the ledger has history and its key
    /// is missing (a lost key): heads are signed with the new one from now
    /// on. A one-time decision, so a flag only, with no environment
    /// variable.
    #[arg(long)]
    pub new_signing_key: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl ServerSettings {
    /// The page cache's size in bytes.
    pub fn page_cache_bytes(&self) -> u64 {
        self.page_cache_mb.saturating_mul(1024 * 1024)
    }

    /// How long a stopping server waits for clients to close their connections.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How long a gRPC connection may stay without any call.
    pub fn max_connection_idle(&self) -> Duration {
        Duration::from_secs(self.max_connection_idle_secs)
    }

    /// How long a stopping server keeps serving after health turned NOT_SERVING.
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_ms)
    }
}

/// A setting that must not reach a log: `Debug` shows only that it is set.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Config {
    /// Defaults with the given data directory, listening on a free loopback port.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            server: ServerSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..ServerSettings::default()
            },
            store: Location::dir(data_dir),
            policy: Policy::default(),
            ledger: LedgerSettings::default(),
            signing_key_seed: None,
            auth: None,
            tls: None,
            cloud_keys: std::sync::Arc::default(),
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
