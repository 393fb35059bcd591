//! The door as an operator runs it: over TLS with the gRPC port's files,
//! and keys reloaded from the config file at SIGHUP.

use std::time::{Duration, Instant};

use super::*;
use common::pki::Ca;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_speaks_tls_with_the_grpc_ports_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("door test CA");
    let leaf = ca.server();
    let write = |name: &str, text: &str| -> std::io::Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let tls = image_ledger::tls::TlsConfig {
        cert: write("server.pem", &leaf.cert)?,
        key: write("server.key", &leaf.key)?,
        client_ca: None,
    };
    let owner = key("AKIDowner");
    let table = keys(&[(&owner, OWNER)]);
    let server = InProcess::new(dir.path().join("data"))
        .with(|config| {
            config.tls = Some(tls);
            config.server.cloud_api_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            config.cloud_keys = table;
        })
        .start()
        .await?;
    let addr = server.cloud_api_addr().ok_or("the door is served")?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der(&ca)?))?;
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await?;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut connection = Connection::over(addr, stream).await?;
    let reply = connection
        .call(&owner, &Call::cvm("DescribeImageQuota", GZ, &json!({})))
        .await?;
    // The account is not registered: the rules answered, over TLS.
    refused(&reply, "InvalidAccountId.NotFound");
    // A plaintext request on the TLS port gets no HTTP answer.
    let mut plain = Connection::open(addr).await?;
    assert!(plain
        .call(&owner, &Call::cvm("DescribeImageQuota", GZ, &json!({})))
        .await
        .is_err());
    server.stop().await?;
    Ok(())
}

/// The CA certificate's DER, from its PEM.
fn ca_der(ca: &Ca) -> Result<Vec<u8>, image_ledger_bench::BoxError> {
    use rustls::pki_types::pem::PemObject;
    Ok(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes())?.to_vec())
}

fn key_entry(key: &Key, account: &str) -> String {
    format!(
        "[[cloud_api.keys]]\nsecret_id = \"{}\"\nsecret_key = \"{}\"\naccount_id = \"{account}\"\n",
        key.id, key.secret
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_keys_and_a_bad_file_keeps_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (old, new) = (key("AKIDold"), key("AKIDnew"));
    let config = dir.path().join("ledger.toml");
    std::fs::write(&config, key_entry(&old, OWNER))?;
    let mut server = common::binary(&dir.path().join("data"))
        .global("--config")
        .global(config.as_os_str())
        .args(["--cloud-api-addr", "127.0.0.1:0"])
        .stderr(image_ledger_testkit::Stderr::Capture)
        .spawn()?;
    let addr = server.cloud_api_addr()?;
    let quota = || async {
        let mut connection = Connection::open(addr).await?;
        let old_reply = connection
            .call(&old, &Call::cvm("DescribeImageQuota", GZ, &json!({})))
            .await?;
        let new_reply = connection
            .call(&new, &Call::cvm("DescribeImageQuota", GZ, &json!({})))
            .await?;
        Ok::<_, image_ledger_bench::BoxError>((
            old_reply.code().map(str::to_owned),
            new_reply.code().map(str::to_owned),
        ))
    };
    let unknown = Some("AuthFailure.SecretIdNotFound".to_owned());
    let known = Some("InvalidAccountId.NotFound".to_owned());
    assert_eq!(quota().await?, (known.clone(), unknown.clone()));

    let hangup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
    };
    // Rotation: the new key in, the old one out.
    std::fs::write(&config, key_entry(&new, OWNER))?;
    assert!(hangup(server.pid())?.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while quota().await? != (unknown.clone(), known.clone()) {
        assert!(Instant::now() < deadline, "the keys were not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A file with a bad key: the keys in use stay.
    std::fs::write(
        &config,
        "[[cloud_api.keys]]\nsecret_id = \"AKIDx\"\naccount_id = \"1\"\n",
    )?;
    assert!(hangup(server.pid())?.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(quota().await?, (unknown, known));
    server.terminate(Duration::from_secs(10))?;
    let logs = server.logs();
    assert!(logs.contains("cannot reload the cloud API keys"), "{logs}");
    assert!(!logs.contains(&new.secret), "a key reached the log");
    Ok(())
}
