//! Least privilege on PostgreSQL: the owner migrates, the application role
//! (rows only) serves, the auditor (SELECT only) runs the audit commands;
//! none of them runs DDL it does not need, and no audit command makes the
//! database send a notice. Ignored where PostgreSQL's server is not
//! installed.

mod common;

use std::process::Command;

use common::{connect, image_request, register_roots, InProcess, GZ, OWNER};
use image_ledger::store::PgStore;
use image_ledger_testkit::Cluster;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn url(cluster: &Cluster, role: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{}/ledger", cluster.port())
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(args)
        .env("RUST_LOG", "image_ledger=debug")
        .output()
        .expect("the CLI runs")
}

/// Runs an audit command, which must succeed without the database sending
/// a notice (as DDL such as `CREATE … IF NOT EXISTS` would).
fn audits_quietly(args: &[&str]) {
    let out = cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    assert!(!stderr.contains("postgres notice"), "{args:?}: {stderr}");
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_migrates_the_app_role_serves_the_auditor_audits() -> TestResult {
    let cluster = Cluster::start();
    common::sql(
        &cluster.url(),
        &[
            "CREATE ROLE ledger_owner LOGIN",
            "CREATE ROLE ledger_app LOGIN",
            "CREATE ROLE ledger_auditor LOGIN",
            "CREATE DATABASE ledger OWNER ledger_owner",
        ],
    )
    .await?;
    let (owner, app, auditor) = (
        url(&cluster, "ledger_owner"),
        url(&cluster, "ledger_app"),
        url(&cluster, "ledger_auditor"),
    );

    // The application role cannot make the schema, and is told who can.
    let dir = tempfile::tempdir()?;
    let refused = InProcess::new(dir.path())
        .with(|config| config.store.database_url = Some(app.clone()))
        .start()
        .await;
    let err = refused
        .err()
        .ok_or("served on a database without a schema")?;
    let text = format!("{:?}", anyhow::Error::new(err));
    assert!(text.contains("image-ledger migrate"), "{text}");

    // The owner migrates (once; again is nothing) and grants the rows.
    let out = cli(&["migrate", "--database-url", &owner]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "applied 3 migration(s); the schema is current"
    );
    let out = cli(&["migrate", "--database-url", &owner]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "the schema is current; nothing to do"
    );
    // The read side's table leaves room on its pages for updates in place.
    common::sql(
        &owner,
        &["DO $$ BEGIN IF (SELECT reloptions FROM pg_class \
              WHERE relname = 'ledger_projections') IS DISTINCT FROM '{fillfactor=50}' \
              THEN RAISE EXCEPTION 'ledger_projections has no fillfactor 50'; END IF; END $$"],
    )
    .await?;
    common::sql(
        &owner,
        &[
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ledger_app",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO ledger_auditor",
        ],
    )
    .await?;

    // The application role: no DDL, and the server runs on it.
    let ddl = common::sql(&app, &["CREATE TABLE sneaky (a int)"]).await;
    assert!(ddl.is_err(), "the application role could create a table");
    let server = InProcess::new(dir.path())
        .with(|config| config.store.database_url = Some(app.clone()))
        .start()
        .await?;
    let mut client = connect(&server).await;
    register_roots(&mut client, &[OWNER]).await;
    let image = client
        .register_image(image_request(OWNER, GZ, "web"))
        .await?
        .into_inner()
        .image_id;
    server.stop().await?;

    // The auditor: every audit command, no notice from the database.
    let export = dir.path().join("ledger.jsonl");
    for args in [
        vec!["audit", "verify", "--database-url", &auditor],
        vec![
            "audit",
            "export",
            "--database-url",
            &auditor,
            "--output",
            export.to_str().ok_or("a path")?,
        ],
        vec![
            "audit",
            "history",
            "--database-url",
            &auditor,
            "--image",
            &image,
        ],
        vec![
            "audit",
            "access",
            "--database-url",
            &auditor,
            "--image",
            &image,
            "--position",
            "2",
        ],
    ] {
        audits_quietly(&args);
    }
    let out = cli(&[
        "projections",
        "rebuild",
        "--check",
        "--database-url",
        &auditor,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("the stored projections equal a fresh replay up to their checkpoint 3"),
        "{stdout}"
    );
    // ... and nothing that writes.
    let store = tokio::task::spawn_blocking(move || PgStore::open_existing(&auditor)).await??;
    let written = tokio::task::spawn_blocking(move || {
        use image_ledger::store::EventLog;
        let head = store.head()?;
        store.write(&image_ledger::store::AppendBatch {
            expected_head: head,
            ..Default::default()
        })
    })
    .await?;
    assert!(written.is_err(), "the auditor role could write");
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_commands_run_on_a_hot_standby() -> TestResult {
    let (primary, standby) = Cluster::start_with_standby();
    let dir = tempfile::tempdir()?;
    let server = InProcess::new(dir.path())
        .with(|config| config.store.database_url = Some(primary.url()))
        .start()
        .await?;
    let mut client = connect(&server).await;
    register_roots(&mut client, &[OWNER]).await;
    let image = client
        .register_image(image_request(OWNER, GZ, "web"))
        .await?
        .into_inner()
        .image_id;
    server.stop().await?;
    // Synchronous: the standby holds every acknowledged record.
    let standby_url = standby.url();
    for args in [
        vec!["audit", "verify", "--database-url", &standby_url],
        vec![
            "audit",
            "history",
            "--database-url",
            &standby_url,
            "--image",
            &image,
        ],
        vec!["audit", "export", "--database-url", &standby_url],
    ] {
        audits_quietly(&args);
    }
    audits_quietly(&[
        "projections",
        "rebuild",
        "--check",
        "--database-url",
        &standby_url,
    ]);
    let out = cli(&["audit", "verify", "--database-url", &standby_url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("OK: 3 events"), "{stdout}");
    Ok(())
}
