//! A real server on port 0 with a temporary data directory, and helpers to
//! call it and to check errors.
#![allow(dead_code)]

pub mod pki;
pub mod rpcs;
pub mod scrape;

use std::path::Path;

use image_ledger::config::Config;
use image_ledger::domain::Policy;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::image_ledger_client::ImageLedgerClient;
use image_ledger::server::{start, start_on, RunningServer};
use image_ledger_testkit::{Cluster, ServerCommand};
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub type Client = ImageLedgerClient<Channel>;
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const OWNER: &str = "100000000001";
pub const FRIEND: &str = "100000000002";
pub const OTHER: &str = "100000000003";
pub const HELPER: &str = "100000000009";
pub const GZ: &str = "ap-guangzhou";
pub const SH: &str = "ap-shanghai";

pub struct TestServer {
    pub dir: TempDir,
    pub server: RunningServer,
    pub client: Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Policy::default()).await
    }

    pub async fn start_with(policy: Policy) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::start_in(dir, policy).await
    }

    pub async fn start_in(dir: TempDir, policy: Policy) -> Self {
        let server = serve(dir.path(), policy).await;
        let client = connect(&server).await;
        Self {
            dir,
            server,
            client,
        }
    }

    /// Stops the server cleanly and hands back its data directory.
    pub async fn stop(self) -> TempDir {
        self.server.stop().await.expect("clean stop");
        self.dir
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

pub async fn serve(dir: &Path, policy: Policy) -> RunningServer {
    InProcess::new(dir)
        .policy(policy)
        .start()
        .await
        .expect("server starts")
}

/// A server in the test's own process: how every test that runs one
/// starts it. On the test's backend (a fresh database of the shared
/// cluster for the `postgres` half of [`on_every_backend!`]), with a small
/// cache, on a free loopback port.
#[derive(Clone)]
pub struct InProcess {
    config: Config,
}

impl InProcess {
    /// A server whose data directory is `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        let mut config = Config::for_data_dir(dir);
        config.store.cache_mb = 16;
        if Backend::current() == Backend::Postgres {
            let cluster = Cluster::shared();
            config.store.database_url = Some(cluster.fresh_database().expect("a fresh database"));
        }
        Self { config }
    }

    /// With these rules' limits.
    pub fn policy(self, policy: Policy) -> Self {
        self.with(|config| config.policy = policy)
    }

    /// With `change` made to its settings.
    pub fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Starts it on a listener bound here (unless the settings name
    /// another address), so the test knows its port without asking.
    pub async fn start(&self) -> Result<RunningServer, image_ledger::server::ServeError> {
        let config = self.config.clone();
        if config.server.addr != std::net::SocketAddr::from(([127, 0, 0, 1], 0)) {
            return start(config).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let bound = listener.local_addr().expect("the bound address");
        let server = start_on(config, Some(listener)).await?;
        assert_eq!(
            server.local_addr(),
            bound,
            "it serves on the listener given"
        );
        Ok(server)
    }
}

/// Where the servers a test starts keep their ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded sled store in the test's temporary directory.
    Sled,
    /// A fresh database of one PostgreSQL cluster shared by the test binary.
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

impl Backend {
    /// The backend of the running test: sled unless [`Backend::run`] chose.
    pub fn current() -> Backend {
        BACKEND
            .try_with(|backend| *backend)
            .unwrap_or(Backend::Sled)
    }

    /// Runs a test with every server it starts on this backend.
    pub async fn run(self, test: impl std::future::Future<Output = TestResult>) -> TestResult {
        BACKEND.scope(self, test).await
    }
}

/// Declares each listed test (an `async fn() -> TestResult`) once per
/// backend, as `sled::name` and `postgres::name`: one suite, run twice.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test]
                async fn $test() -> $crate::common::TestResult {
                    $crate::common::Backend::Sled.run(super::$test()).await
                }
            )*
        }
        mod postgres {
            $(
                #[cfg_attr(
                    not(postgres_installed),
                    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
                )]
                #[tokio::test]
                async fn $test() -> $crate::common::TestResult {
                    $crate::common::Backend::Postgres.run(super::$test()).await
                }
            )*
        }
    };
}

pub async fn connect(server: &RunningServer) -> Client {
    ImageLedgerClient::connect(format!("http://{}", server.local_addr()))
        .await
        .expect("client connects")
}

/// Asserts the status code and the ErrorInfo reason (and domain) of a failure.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} / {reason}, got Ok({value:?})"),
        Err(status) => {
            let info = status
                .get_details_error_info()
                .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
            assert_eq!(
                (status.code(), info.reason.as_str(), info.domain.as_str()),
                (code, reason, "imageledger"),
                "message: {}",
                status.message()
            );
            assert!(
                !status.message().is_empty(),
                "the message says what was wrong"
            );
        }
    }
}

pub async fn register(client: &mut Client, id: &str, kind: pb::AccountKind) {
    client
        .register_account(pb::RegisterAccountRequest {
            account_id: id.into(),
            kind: kind as i32,
            client_token: String::new(),
        })
        .await
        .expect("account registers");
}

pub async fn register_roots(client: &mut Client, ids: &[&str]) {
    for id in ids {
        register(client, id, pb::AccountKind::Root).await;
    }
}

pub fn image_request(owner: &str, region: &str, name: &str) -> pb::RegisterImageRequest {
    pb::RegisterImageRequest {
        account_id: owner.into(),
        region: region.into(),
        image_name: name.into(),
        image_description: "web tier".into(),
        platform: "CentOS".into(),
        os_name: "CentOS 7.9 64-bit".into(),
        image_source: pb::ImageSource::CreateImage as i32,
        license_type: pb::LicenseType::Tencentcloud as i32,
        encrypted: false,
        whole_instance: false,
        supports_cloudinit: true,
        state: pb::ImageState::Normal as i32,
        client_token: String::new(),
    }
}

pub async fn register_image(client: &mut Client, owner: &str, region: &str, name: &str) -> String {
    client
        .register_image(image_request(owner, region, name))
        .await
        .expect("image registers")
        .into_inner()
        .image_id
}

pub fn share_request(owner: &str, image: &str, with: &[&str]) -> pb::ShareImageRequest {
    pb::ShareImageRequest {
        account_id: owner.into(),
        image_id: image.into(),
        account_ids: with.iter().map(|s| s.to_string()).collect(),
        client_token: String::new(),
        dry_run: false,
        expires_at: None,
    }
}

pub fn cancel_request(owner: &str, image: &str, with: &[&str]) -> pb::CancelImageSharingRequest {
    pb::CancelImageSharingRequest {
        account_id: owner.into(),
        image_id: image.into(),
        account_ids: with.iter().map(|s| s.to_string()).collect(),
        client_token: String::new(),
        dry_run: false,
    }
}

pub fn describe_request(account: &str, region: &str) -> pb::DescribeImagesRequest {
    pb::DescribeImagesRequest {
        account_id: account.into(),
        region: region.into(),
        ..Default::default()
    }
}

/// The ids DescribeImages lists for an account in a region, in order.
pub async fn visible(client: &mut Client, account: &str, region: &str) -> Vec<String> {
    client
        .describe_images(describe_request(account, region))
        .await
        .expect("describe works")
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.image_id)
        .collect()
}

/// The accounts an image is shared with, as its owner sees them.
pub async fn shares_of(client: &mut Client, owner: &str, image: &str) -> Vec<String> {
    let mut accounts: Vec<String> = client
        .describe_image_share_permission(pb::DescribeImageSharePermissionRequest {
            account_id: owner.into(),
            image_id: image.into(),
            min_position: 0,
        })
        .await
        .expect("describe share permission works")
        .into_inner()
        .shares
        .into_iter()
        .map(|s| s.account_id)
        .collect();
    accounts.sort();
    accounts
}

pub async fn quota_used(client: &mut Client, account: &str, region: &str) -> u32 {
    client
        .describe_image_quota(pb::DescribeImageQuotaRequest {
            account_id: account.into(),
            region: region.into(),
            min_position: 0,
        })
        .await
        .expect("quota works")
        .into_inner()
        .used
}

pub async fn authorize(
    client: &mut Client,
    account: &str,
    image: &str,
    region: &str,
    usage: pb::ImageUse,
) -> (bool, String) {
    let reply = client
        .authorize_image_use(pb::AuthorizeImageUseRequest {
            account_id: account.into(),
            image_id: image.into(),
            region: region.into(),
            r#use: usage as i32,
            min_position: 0,
        })
        .await
        .expect("authorize works")
        .into_inner();
    (reply.allowed, reply.reason)
}

/// The signing key seed replicas of one deployment share (each would
/// otherwise make a key of its own, and a ledger with history refuses a
/// replica whose key is missing).
pub fn replica_seed() -> image_ledger::config::Secret {
    image_ledger::config::Secret("5e".repeat(32))
}

/// The server binary on `dir`, as the process tests run it: a free
/// loopback port, a quota that never gets in the way, warnings only.
pub fn binary(dir: &Path) -> ServerCommand {
    ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .data_dir(dir)
        .args(["--image-quota", "1000000"])
        .env("RUST_LOG", "warn")
}

/// Every image `account` lists in `region`, page by page.
pub async fn listed_images(
    client: &mut Client,
    account: &str,
    region: &str,
) -> Result<std::collections::BTreeSet<String>, Status> {
    let mut present = std::collections::BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = client
            .describe_images(pb::DescribeImagesRequest {
                offset,
                limit: 100,
                ..describe_request(account, region)
            })
            .await?
            .into_inner();
        if page.images.is_empty() {
            return Ok(present);
        }
        offset += page.images.len() as u32;
        present.extend(page.images.into_iter().map(|image| image.image_id));
    }
}

/// The metrics page of a server's `--metrics-addr`, by hand over HTTP/1.1.
pub async fn metrics_page(
    addr: std::net::SocketAddr,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// Gives the server in `to` the signing key of the one in `from`: replicas
/// of a deployment sign with one key.
pub fn share_signing_key(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(
        from.join(image_ledger::audit::KEY_FILE),
        to.join(image_ledger::audit::KEY_FILE),
    )
    .map(drop)
}

/// Runs each of `statements` on its own (CREATE DATABASE cannot share the
/// implicit transaction of several) against `url`, off the async runtime.
pub async fn sql(url: &str, statements: &[&str]) -> Result<(), String> {
    let url = url.to_owned();
    let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|e| format!("{e:?}"))?;
        for statement in &statements {
            client
                .batch_execute(statement)
                .map_err(|e| format!("{statement}: {e:?}"))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}
