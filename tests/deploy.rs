//! The files in deploy/ against the server: every metric the alert rules
//! and the dashboard name is one a server exports, and every alert has a
//! promtool unit test (CI runs them: `promtool test rules`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::pki::Ca;
use common::rpcs::{call, LEDGER};
use common::scrape::{get, sample};
use common::InProcess;
use image_ledger::auth::{
    digest_hex, key_table, AuthConfig, Authenticator, CloudApiConfig, CloudKeyConfig, CloudKeys,
};
use image_ledger::tls::TlsConfig;
use image_ledger_bench::cloud::{Call, Connection, Key};
use serde_json::json;
use tonic::transport::Channel;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ADMIN: &str = "ilt_admin000000000000000000000000000000000000000000000000000000000";

fn deploy_file(path: &str) -> Result<String, std::io::Error> {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
}

/// The metric names `text` mentions: words starting `ledger_` or
/// `grpc_server_`.
fn named(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.split(|c: char| !word(c))
        .filter(|w| w.starts_with("ledger_") || w.starts_with("grpc_server_"))
        .map(str::to_owned)
        .collect()
}

/// The series names a scrape's `# TYPE` lines promise: a counter's with
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_name_only_metrics_the_server_exports() -> TestResult {
    let dir = tempfile::tempdir()?;
    let table: AuthConfig = toml::from_str(&format!(
        "[principals.ops]\nroles = [\"admin\"]\n\
         [[tokens]]\nid = \"ops-1\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n",
        digest_hex(ADMIN)
    ))?;
    let auth = Arc::new(Authenticator::new(&table)?);
    let forger = Key {
        id: "AKIDowner".into(),
        secret: "not-the-secret".into(),
    };
    let keys = CloudApiConfig {
        keys: vec![CloudKeyConfig {
            secret_id: forger.id.clone(),
            secret_key: Some("the-secret".into()),
            secret_key_file: None,
            account_id: "100000000001".into(),
        }],
    };
    let keys = Arc::new(CloudKeys::new(key_table(&keys, std::path::Path::new("."))?));
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.auth = Some(auth);
            config.server.metrics_addr = "127.0.0.1:0".parse().ok();
            config.server.max_subscriptions = 1_234;
            config.server.cloud_api_addr = "127.0.0.1:0".parse().ok();
            config.cloud_keys = keys;
        })
        .start()
        .await?;
    let metrics = server.metrics_addr().ok_or("metrics are served")?;
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))?
        .connect()
        .await?;
    // A call answered and one refused: the families with labels appear
    // with their first sample.
    call(&channel, LEDGER[0], Some(ADMIN))
        .await
        .expect_err("an empty request is invalid");
    call(&channel, LEDGER[0], None).await.expect_err("refused");
    // A cloud API request with a forged signature.
    let door = server.cloud_api_addr().ok_or("the door is served")?;
    let forged = Connection::open(door)
        .await
        .map_err(|e| e.to_string())?
        .call(
            &forger,
            &Call::cvm("DescribeImages", "ap-guangzhou", &json!({})),
        )
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(forged.code(), Some("AuthFailure.SignatureFailure"));
    let (_, text) = get(metrics, "/metrics").await?;
    let mut exported = exported(&text);
    // A server on TLS: its certificate's expiry.
    let ca = Ca::new("deploy test CA");
    let leaf = ca.server();
    let tls = TlsConfig {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: None,
    };
    std::fs::write(&tls.cert, &leaf.cert)?;
    std::fs::write(&tls.key, &leaf.key)?;
    let secured = InProcess::new(dir.path().join("tls"))
        .with(|config| {
            config.tls = Some(tls);
            config.server.metrics_addr = "127.0.0.1:0".parse().ok();
        })
        .start()
        .await?;
    let (_, secured_text) = get(secured.metrics_addr().ok_or("metrics")?, "/metrics").await?;
    exported.extend(self::exported(&secured_text));
    secured.stop().await?;
    assert_eq!(sample(&text, "ledger_serving"), Some(1.0));
    assert_eq!(sample(&text, "ledger_subscriptions_max"), Some(1_234.0));
    assert!(sample(&text, "ledger_connections_max").is_some_and(|max| max > 0.0));

    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/image-ledger.json",
    ] {
        let named = named(&deploy_file(file)?);
        assert!(named.len() >= 10, "{file} names {named:?}");
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the server does not export: {unknown:?}"
        );
    }
    server.stop().await?;
    Ok(())
}

#[test]
fn every_alert_has_a_unit_test() -> TestResult {
    let alerts = deploy_file("deploy/prometheus/alerts.yml")?;
    let tests = deploy_file("deploy/prometheus/alerts_test.yml")?;
    let names = |text: &str, key: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|line| line.trim().trim_start_matches("- ").strip_prefix(key))
            .map(|name| name.trim().to_owned())
            .collect()
    };
    let alerts = names(&alerts, "alert:");
    assert!(alerts.len() >= 12, "{alerts:?}");
    let tested = names(&tests, "alertname:");
    let untested: Vec<&String> = alerts.difference(&tested).collect();
    assert!(untested.is_empty(), "alerts without a test: {untested:?}");
    Ok(())
}
