//! TLS and client certificates: each kind of certificate against the
//! role table, bad ones refused with a reason of their own, tokens over
//! TLS, a failed handshake that stops nothing, and a reload on SIGHUP.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::pki::{in_days, Ca, Leaf};
use common::rpcs::{assert_role_decides, call, reason, AUDIT, HEALTH, LEDGER};
use common::scrape::{get, sample};
use common::InProcess;
use image_ledger::auth::{digest_hex, AuthConfig, Authenticator};
use image_ledger::server::RunningServer;
use image_ledger::tls::TlsConfig;
use image_ledger_testkit::{ServerCommand, Stderr};
use rcgen::{ExtendedKeyUsagePurpose, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const GATEWAY_URI: &str = "spiffe://test/gateway-1";
const ADMIN: &str = "ilt_admin000000000000000000000000000000000000000000000000000000000";
const AUDITOR: &str = "ilt_auditor0000000000000000000000000000000000000000000000000000000";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writes");
    path
}

fn tls_files(dir: &Path, ca: &Ca, server: &Leaf) -> TlsConfig {
    TlsConfig {
        cert: write(dir, "server.pem", &server.cert),
        key: write(dir, "server.key", &server.key),
        client_ca: Some(write(dir, "ca.pem", &ca.pem())),
    }
}

async fn serve_tls(dir: &Path, tls: TlsConfig) -> RunningServer {
    let table: AuthConfig = toml::from_str(&format!(
        "[principals.gateway-1]\nroles = [\"gateway\"]\nsans = [\"{GATEWAY_URI}\"]\n\
         [principals.ops]\nroles = [\"admin\"]\n\
         [[tokens]]\nid = \"ops-1\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n",
        digest_hex(ADMIN)
    ))
    .expect("the table parses");
    let auth = Arc::new(Authenticator::new(&table).expect("a valid table"));
    InProcess::new(dir.join("data"))
        .with(|config| {
            config.auth = Some(auth);
            config.tls = Some(tls);
        })
        .start()
        .await
        .expect("server starts")
}

async fn connect(server: &RunningServer, ca: &Ca, me: Option<&Leaf>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(me) = me {
        tls = tls.identity(Identity::from_pem(&me.cert, &me.key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", server.local_addr().port()))
        .expect("a URI")
        .tls_config(tls)
        .expect("a TLS config")
        .connect()
        .await
        .expect("the handshake succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_credential_gets_exactly_its_answer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("ledger test CA");
    let server = serve_tls(dir.path(), tls_files(dir.path(), &ca, &ca.server())).await;

    // A gateway's certificate: exactly the gateway's methods.
    let gateway = connect(&server, &ca, Some(&ca.client(GATEWAY_URI))).await;
    for &path in LEDGER.iter().chain(AUDIT) {
        assert_role_decides(&gateway, path, None, "gateway").await;
    }

    // Certificates that are not accepted, each with what is wrong.
    let other_ca = Ca::new("someone else's CA");
    let no_client_use = ca.leaf(
        &[SanType::URI(GATEWAY_URI.try_into()?)],
        &[ExtendedKeyUsagePurpose::ServerAuth],
        in_days(30),
    );
    let expired = ca.leaf(
        &[SanType::URI(GATEWAY_URI.try_into()?)],
        &[ExtendedKeyUsagePurpose::ClientAuth],
        in_days(-1),
    );
    let bad = [
        ("another CA", other_ca.client(GATEWAY_URI), "issuer"),
        ("expired", expired, "expired"),
        (
            "no client-auth usage",
            no_client_use,
            "extended key usage for client authentication",
        ),
    ];
    let path = "/imageledger.v1.ImageLedger/DescribeImages";
    for (what, leaf, says) in bad {
        let channel = connect(&server, &ca, Some(&leaf)).await;
        let status = call(&channel, path, None).await.expect_err("refused");
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::Unauthenticated, "AuthFailure.InvalidCertificate"),
            "{what}"
        );
        assert!(
            status.message().to_lowercase().contains(says),
            "{what}: {}",
            status.message()
        );
        // A bad certificate is not rescued by a good token.
        let status = call(&channel, path, Some(ADMIN))
            .await
            .expect_err("refused");
        assert_eq!(reason(&status), "AuthFailure.InvalidCertificate", "{what}");
        // Health stays open to it.
        call(&channel, HEALTH, None).await?;
    }
    // A good certificate whose names no principal has.
    let stranger = connect(&server, &ca, Some(&ca.client("spiffe://test/stranger"))).await;
    let status = call(&stranger, path, None).await.expect_err("refused");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unauthenticated, "AuthFailure.UnknownCertificate")
    );

    // No certificate: a bearer token over TLS, or nothing.
    let anonymous = connect(&server, &ca, None).await;
    let register = "/imageledger.v1.ImageLedger/RegisterAccount";
    let status = call(&anonymous, register, Some(ADMIN))
        .await
        .expect_err("an empty id");
    assert_eq!(
        reason(&status),
        "InvalidAccountId.Malformed",
        "past the check"
    );
    let status = call(&anonymous, path, Some(ADMIN))
        .await
        .expect_err("refused");
    assert_eq!(reason(&status), "AuthFailure.UnauthorizedOperation");
    let status = call(&anonymous, path, None).await.expect_err("refused");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unauthenticated, "AuthFailure.MissingCredentials")
    );

    // A client speaking plaintext to the TLS port gets nowhere, and the
    // server goes on serving the others.
    let plain = Channel::from_shared(format!("http://{}", server.local_addr()))?
        .connect()
        .await?;
    assert!(call(&plain, HEALTH, None).await.is_err());
    call(&gateway, HEALTH, None).await?;
    server.stop().await?;
    Ok(())
}

/// The certificate the server at `port` shows in a handshake.
async fn served_certificate(port: u16, ca: &Ca) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(
        ca.pem().as_bytes(),
    )?)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into()?, tcp)
        .await?;
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?;
    Ok(certs[0].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_broken_file_keeps_the_old() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("ledger test CA");
    let first = ca.server();
    let files = tls_files(dir.path(), &ca, &first);
    let config = write(
        dir.path(),
        "ledger.toml",
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            files.cert.display().to_string(),
            files.key.display().to_string()
        ),
    );
    // A port free a moment ago, for the metrics.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut server = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .global("--config")
        .global(&config)
        .args(["--metrics-addr", &metrics.to_string()])
        .data_dir(dir.path().join("data"))
        .stderr(Stderr::Capture)
        .spawn()?;
    let port = server.addr().port();
    assert_eq!(served_certificate(port, &ca).await?, first.der);
    // The served certificate's expiry, exported for the alerts.
    let expiry = || async {
        let (_, text) = get(metrics, "/metrics").await.expect("a scrape");
        let name = format!(
            "ledger_tls_certificate_expiry_timestamp_seconds{{cert=\"{}\"}}",
            files.cert.display()
        );
        sample(&text, &name).expect("the expiry is exported") as i64
    };
    let days_left = |at: i64| (at - in_days(0).unix_timestamp()) as f64 / 86_400.0;
    let left = days_left(expiry().await);
    assert!((29.99..=30.01).contains(&left), "{left} days");
    // A connection opened before the reload outlives it.
    let before = Channel::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.pem()))
                .domain_name("localhost"),
        )?
        .connect()
        .await?;

    let hangup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
    };
    let second = ca.leaf(
        &[SanType::DnsName("localhost".try_into()?)],
        &[ExtendedKeyUsagePurpose::ServerAuth],
        in_days(60),
    );
    std::fs::write(&files.cert, &second.cert)?;
    std::fs::write(&files.key, &second.key)?;
    assert!(hangup(server.pid())?.success());
    let mut shown = Vec::new();
    for _ in 0..50 {
        shown = served_certificate(port, &ca).await?;
        if shown == second.der {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(shown, second.der, "new connections see the new certificate");
    call(&before, HEALTH, None).await?;
    let left = days_left(expiry().await);
    assert!((59.99..=60.01).contains(&left), "{left} days");

    // A broken file: the reload fails and the second certificate stays.
    std::fs::write(&files.cert, "not a certificate")?;
    assert!(hangup(server.pid())?.success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(served_certificate(port, &ca).await?, second.der);
    let left = days_left(expiry().await);
    assert!((59.99..=60.01).contains(&left), "{left} days");

    server.kill()?;
    let logs = server.logs();
    assert!(
        logs.contains("reloaded the TLS certificates and key"),
        "{logs}"
    );
    assert!(logs.contains("keeping the certificates in use"), "{logs}");
    Ok(())
}

#[test]
fn off_loopback_it_serves_with_authentication_over_tls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("ledger test CA");
    let files = tls_files(dir.path(), &ca, &ca.server());
    let config = write(
        dir.path(),
        "ledger.toml",
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n\
             [auth.principals.ops]\nroles = [\"admin\"]\n\
             [auth.principals.audit]\nroles = [\"auditor\"]\n\
             [[auth.tokens]]\nid = \"ops-1\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n\
             [[auth.tokens]]\nid = \"audit-1\"\nprincipal = \"audit\"\nsha256 = \"{}\"\n",
            files.cert.display().to_string(),
            files.key.display().to_string(),
            digest_hex(ADMIN),
            digest_hex(AUDITOR)
        ),
    );
    let mut server = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .global("--config")
        .global(&config)
        .addr(Some("0.0.0.0:0"))
        .data_dir(dir.path().join("data"))
        .env("RUST_LOG", "info,image_ledger::metrics=debug")
        .stderr(Stderr::Capture)
        .spawn()?;
    assert!(server.addr().ip().is_unspecified(), "{}", server.addr());
    let port = server.addr().port();
    // A call with the token, so the logs have something to leave out.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["account", "register", "100000000001", "--tls-ca"])
        .arg(dir.path().join("ca.pem"))
        .args(["--addr", &format!("localhost:{port}")])
        .env("IMAGE_LEDGER_TOKEN", ADMIN)
        .output()?;
    assert!(out.status.success(), "{out:?}");
    // The audit reads reach it the same way.
    let ca_file = dir.path().join("ca.pem");
    let audit = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_image-ledger"))
            .arg("audit")
            .args(args)
            .args(["--addr", &format!("localhost:{port}"), "--tls-ca"])
            .arg(&ca_file)
            .env("IMAGE_LEDGER_TOKEN", AUDITOR)
            .output()
    };
    let head = audit(&["head"])?;
    assert!(head.status.success(), "{head:?}");
    let head: serde_json::Value = serde_json::from_slice(&head.stdout)?;
    assert_eq!(head["position"], 2, "{head}");
    let export = audit(&["export"])?;
    assert!(export.status.success(), "{export:?}");
    assert_eq!(String::from_utf8(export.stdout)?.lines().count(), 2);
    // Without --tls-ca the client is told what the port wants.
    let plain = std::process::Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(["account", "register", "100000000002"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .env("IMAGE_LEDGER_TOKEN", ADMIN)
        .env_remove("IMAGE_LEDGER_TLS_CA")
        .output()?;
    assert_eq!(plain.status.code(), Some(4), "{plain:?}");
    let said = String::from_utf8(plain.stderr)?;
    assert!(
        said.contains(&format!(
            "127.0.0.1:{port} speaks TLS: pass --tls-ca (or IMAGE_LEDGER_TLS_CA)"
        )),
        "{said}"
    );
    server.kill()?;
    let logs = server.logs();
    assert!(logs.contains("token ops-1"), "the token's id: {logs}");
    assert!(!logs.contains(ADMIN), "never the token: {logs}");
    // The start says what a client must bring.
    let said = logs
        .lines()
        .find(|line| line.contains("serving gRPC"))
        .ok_or("no start line")?;
    assert!(
        said.contains(r#"transport="TLS""#)
            && said.contains(r#"authentication="tokens and roles ([auth])""#),
        "{said}"
    );
    Ok(())
}
