//! The Tencent Cloud API door over HTTP: every action's answer and
//! refusals (`actions`), each signature failure, each malformed request,
//! the principal in the records and the door's own settings
//! (`requests`). Bad input is shown to change nothing.

mod actions;
#[path = "../common/mod.rs"]
mod common;
mod replicas;
mod requests;
mod settings;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{
    register_image, register_roots, shares_of, Client, InProcess, FRIEND, GZ, OTHER, OWNER, SH,
};
use image_ledger::auth::{key_table, CloudApiConfig, CloudKeyConfig, CloudKeys};
use image_ledger::grpc::pb;
use image_ledger::server::RunningServer;
use image_ledger_bench::cloud::{now, Call, Connection, Key, Reply};
use serde_json::{json, Value};
use tempfile::TempDir;

type TestResult = Result<(), image_ledger_bench::BoxError>;

/// A server with the door, the owner's and the friend's keys, and two
/// images of the owner in Guangzhou.
pub(crate) struct Door {
    dir: TempDir,
    server: RunningServer,
    grpc: Client,
    addr: SocketAddr,
    owner: Key,
    friend: Key,
    image: String,
    other_image: String,
}

pub(crate) fn key(id: &str) -> Key {
    Key {
        id: id.into(),
        secret: format!("secret-of-{id}"),
    }
}

pub(crate) fn keys(entries: &[(&Key, &str)]) -> Arc<CloudKeys> {
    let config = CloudApiConfig {
        keys: entries
            .iter()
            .map(|(key, account)| CloudKeyConfig {
                secret_id: key.id.clone(),
                secret_key: Some(key.secret.clone()),
                secret_key_file: None,
                account_id: (*account).into(),
            })
            .collect(),
    };
    Arc::new(CloudKeys::new(
        key_table(&config, Path::new(".")).expect("valid keys"),
    ))
}

pub(crate) async fn door() -> Door {
    door_with(|_| {}).await
}

pub(crate) async fn door_with(change: impl FnOnce(&mut image_ledger::config::Config)) -> Door {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (owner, friend) = (key("AKIDowner"), key("AKIDfriend"));
    let table = keys(&[(&owner, OWNER), (&friend, FRIEND)]);
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.server.cloud_api_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            config.cloud_keys = table;
            change(config);
        })
        .start()
        .await
        .expect("server starts");
    let addr = server.cloud_api_addr().expect("the door is served");
    let mut grpc = common::connect(&server).await;
    register_roots(&mut grpc, &[OWNER, FRIEND, OTHER]).await;
    let image = register_image(&mut grpc, OWNER, GZ, "web").await;
    let other_image = register_image(&mut grpc, OWNER, GZ, "api").await;
    Door {
        dir,
        server,
        grpc,
        addr,
        owner,
        friend,
        image,
        other_image,
    }
}

impl Door {
    async fn call(&self, key: &Key, call: Call<'_>) -> Reply {
        let mut connection = Connection::open(self.addr).await.expect("connects");
        connection.call(key, &call).await.expect("an answer")
    }

    async fn cvm(&self, key: &Key, action: &str, body: Value) -> Reply {
        self.call(key, Call::cvm(action, GZ, &body)).await
    }

    async fn share(&self, key: &Key, image: &str, with: &[&str], permission: &str) -> Reply {
        self.cvm(
            key,
            "ModifyImageSharePermission",
            json!({"ImageId": image, "AccountIds": with, "Permission": permission}),
        )
        .await
    }

    /// Sends `headers` and `body` as they are.
    async fn raw(&self, method: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
        let mut connection = Connection::open(self.addr).await.expect("connects");
        connection
            .send(method, headers, body.to_vec())
            .await
            .expect("an answer")
    }

    /// The log's durable head, over gRPC.
    async fn server_head(&self) -> Result<u64, image_ledger_bench::BoxError> {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", self.server.local_addr()))?
                .connect()
                .await?;
        Ok(pb::audit_log_client::AuditLogClient::new(channel)
            .get_ledger_head(pb::GetLedgerHeadRequest {})
            .await?
            .into_inner()
            .position)
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// Asserts the envelope of a refusal: HTTP 200, exactly
/// `application/json`, the code, a message and a RequestId.
pub(crate) fn refused(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.code(), Some(code), "{}", reply.body);
    assert!(
        !reply.response()["Error"]["Message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{}",
        reply.body
    );
    assert_request_id(reply);
}

/// Asserts a success: no error, a RequestId.
pub(crate) fn answered(reply: &Reply) -> &Value {
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.code(), None, "{}", reply.body);
    assert_request_id(reply);
    reply.response()
}

/// The `ImageName`s of a `DescribeImages` answer, in order.
pub(crate) fn image_names(reply: &Reply) -> Vec<String> {
    answered(reply)["ImageSet"]
        .as_array()
        .map(|set| {
            set.iter()
                .map(|image| image["ImageName"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn assert_request_id(reply: &Reply) {
    let id = reply.response()["RequestId"].as_str().unwrap_or_default();
    assert!(
        id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4,
        "RequestId {id:?}"
    );
}

pub(crate) fn is_tencent_time(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() == 20
        && text.ends_with('Z')
        && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}
