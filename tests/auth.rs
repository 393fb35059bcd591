//! Who may call what: every RPC against every role, no credentials and a
//! bad token; the principal in every record; a server that will not listen
//! openly off loopback by mistake.

mod common;

use std::sync::Arc;

use common::rpcs::{assert_role_decides, call, reason, AUDIT, HEALTH, LEDGER};
use common::scrape::{get, sample};
use common::{InProcess, GZ, OWNER};
use image_ledger::auth::{digest_hex, AuthConfig, Authenticator};

use image_ledger::grpc::pb;
use image_ledger::server::RunningServer;
use image_ledger_testkit::{ServerCommand, StartError, Stderr};
use tonic::transport::Channel;
use tonic::Code;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const GATEWAY: &str = "ilt_gateway0000000000000000000000000000000000000000000000000000000";
const FACTORY: &str = "ilt_factory0000000000000000000000000000000000000000000000000000000";
const ADMIN: &str = "ilt_admin000000000000000000000000000000000000000000000000000000000";
const AUDITOR: &str = "ilt_auditor0000000000000000000000000000000000000000000000000000000";

fn auth_table() -> String {
    let token = |id: &str, principal: &str, token: &str| {
        format!(
            "[[tokens]]\nid = \"{id}\"\nprincipal = \"{principal}\"\nsha256 = \"{}\"\n",
            digest_hex(token)
        )
    };
    format!(
        "[principals.gateway-1]\nroles = [\"gateway\"]\n\
         [principals.factory]\nroles = [\"image-factory\"]\n\
         [principals.ops]\nroles = [\"admin\"]\n\
         [principals.audit]\nroles = [\"auditor\"]\n{}{}{}{}",
        token("gw-1", "gateway-1", GATEWAY),
        token("factory-1", "factory", FACTORY),
        token("ops-1", "ops", ADMIN),
        token("audit-1", "audit", AUDITOR),
    )
}

async fn serve_with_auth(dir: &std::path::Path) -> RunningServer {
    let table: AuthConfig = toml::from_str(&auth_table()).expect("the table parses");
    let auth = Arc::new(Authenticator::new(&table).expect("a valid table"));
    InProcess::new(dir)
        .with(|config| config.auth = Some(auth))
        .start()
        .await
        .expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_admits_exactly_its_roles() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = serve_with_auth(dir.path()).await;
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))?
        .connect()
        .await?;
    let roles = [
        ("gateway", GATEWAY),
        ("image-factory", FACTORY),
        ("admin", ADMIN),
        ("auditor", AUDITOR),
    ];
    let mut checked = 0;
    for &path in LEDGER.iter().chain(AUDIT) {
        // No credentials, and a token nobody configured.
        let none = call(&channel, path, None).await.expect_err("refused");
        assert_eq!(
            (none.code(), reason(&none).as_str()),
            (Code::Unauthenticated, "AuthFailure.MissingCredentials"),
            "{path}"
        );
        let bad = call(&channel, path, Some("ilt_not-a-token"))
            .await
            .expect_err("refused");
        assert_eq!(
            (bad.code(), reason(&bad).as_str()),
            (Code::Unauthenticated, "AuthFailure.InvalidToken"),
            "{path}"
        );
        for (role, token) in roles {
            assert_role_decides(&channel, path, Some(token), role).await;
            checked += 1;
        }
    }
    assert_eq!(checked, (LEDGER.len() + AUDIT.len()) * roles.len());
    // Health needs no credentials, whoever asks.
    for token in [None, Some("ilt_not-a-token"), Some(GATEWAY)] {
        call(&channel, HEALTH, token).await?;
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let table: AuthConfig = toml::from_str(&auth_table())?;
    let auth = Arc::new(Authenticator::new(&table)?);
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.auth = Some(auth);
            config.server.metrics_addr = "127.0.0.1:0".parse().ok();
        })
        .start()
        .await?;
    let metrics = server.metrics_addr().ok_or("metrics are served")?;
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))?
        .connect()
        .await?;
    for _ in 0..3 {
        call(&channel, LEDGER[0], None).await.expect_err("refused");
    }
    for _ in 0..2 {
        call(&channel, LEDGER[0], Some("ilt_not-a-token"))
            .await
            .expect_err("refused");
    }
    let denied = call(&channel, AUDIT[0], Some(GATEWAY))
        .await
        .expect_err("refused");
    assert_eq!(reason(&denied), "AuthFailure.UnauthorizedOperation");
    assert_eq!(
        denied.message(),
        format!(
            "principal gateway-1 (token gw-1) may not call {} (its roles: gateway)",
            AUDIT[0]
        )
    );
    // Health is open: not a refusal.
    call(&channel, HEALTH, Some("ilt_not-a-token")).await?;

    let (_, text) = get(metrics, "/metrics").await?;
    let count = |reason: &str| {
        sample(
            &text,
            &format!("ledger_auth_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("AuthFailure.MissingCredentials"), Some(3.0));
    assert_eq!(count("AuthFailure.InvalidToken"), Some(2.0));
    assert_eq!(count("AuthFailure.UnauthorizedOperation"), Some(1.0));
    assert_eq!(count("AuthFailure.UnknownCertificate"), None);
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_names_the_principal_that_caused_it() -> TestResult {
    use image_ledger::grpc::Bearer;
    let dir = tempfile::tempdir()?;
    let server = serve_with_auth(dir.path()).await;
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))?
        .connect()
        .await?;
    let as_who = |token: &str| Bearer::new(Some(token)).expect("a header value");
    let ledger = |token: &str| {
        pb::image_ledger_client::ImageLedgerClient::with_interceptor(channel.clone(), as_who(token))
    };
    for account in [OWNER, common::FRIEND] {
        ledger(ADMIN)
            .register_account(pb::RegisterAccountRequest {
                account_id: account.into(),
                kind: pb::AccountKind::Root as i32,
                client_token: String::new(),
            })
            .await?;
    }
    let image = ledger(FACTORY)
        .register_image(pb::RegisterImageRequest {
            account_id: OWNER.into(),
            region: GZ.into(),
            image_name: "web".into(),
            platform: "CentOS".into(),
            os_name: "CentOS 7.9 64-bit".into(),
            image_source: pb::ImageSource::CreateImage as i32,
            license_type: pb::LicenseType::Tencentcloud as i32,
            state: pb::ImageState::Normal as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .image_id;
    ledger(GATEWAY)
        .share_image(pb::ShareImageRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            account_ids: vec![common::FRIEND.into()],
            ..Default::default()
        })
        .await?;

    let mut audit =
        pb::audit_log_client::AuditLogClient::with_interceptor(channel.clone(), as_who(AUDITOR));
    let mut stream = audit
        .read_events(pb::ReadEventsRequest {
            from_position: 1,
            limit: 10,
        })
        .await?
        .into_inner();
    let mut principals = Vec::new();
    while let Some(record) = stream.message().await? {
        assert_eq!(record.schema_version, 2);
        let member = format!("\"principal\":\"{}\"", record.principal);
        assert!(record.raw.contains(&member), "{}", record.raw);
        principals.push(record.principal);
    }
    // The ledger's limits, recorded as the server started, then the calls.
    assert_eq!(
        principals,
        ["server-start", "ops", "ops", "factory", "gateway-1"]
    );

    // The CLI, as the auditor: the history says who acted, through whom.
    let addr = server.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_image-ledger"))
            .args(["audit", "history", "--image", &image, "--addr", &addr])
            .env("IMAGE_LEDGER_TOKEN", AUDITOR)
            .output()
    })
    .await??;
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        history.contains(&format!("by {OWNER} via gateway-1")),
        "{history}"
    );
    assert!(
        history.contains(&format!("by {OWNER} via factory")),
        "{history}"
    );
    server.stop().await?;
    Ok(())
}

/// Runs `serve` with `args` and a config file holding `file`; the exit
/// status and stderr, or `None` once it says it is listening.
fn serve_outcome(args: &[&str], file: &str) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ledger.toml");
    std::fs::write(&config, file)?;
    let started = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .global("--config")
        .global(&config)
        .addr(None)
        .args(args)
        .data_dir(dir.path().join("data"))
        .stderr(Stderr::Capture)
        .spawn();
    match started {
        Ok(_listening) => Ok(None),
        Err(StartError::Refused { status, stderr, .. }) => {
            assert_eq!(status.and_then(|s| s.code()), Some(1), "a refusal exits 1");
            Ok(Some(stderr))
        }
        Err(err) => Err(err.into()),
    }
}

#[test]
fn off_loopback_it_needs_authentication_or_an_explicit_risk() -> TestResult {
    let open = serve_outcome(&["--addr", "0.0.0.0:0"], "")?.ok_or("it must refuse")?;
    assert!(
        open.contains("refusing to serve 0.0.0.0:0 without authentication"),
        "{open}"
    );
    assert!(
        open.contains("--insecure-no-auth") && open.contains("[auth]"),
        "{open}"
    );
    let open = serve_outcome(&["--addr", "[::]:0"], "")?.ok_or("it must refuse")?;
    assert!(open.contains("without authentication"), "{open}");

    // Accepting the risk serves, and says so.
    assert_eq!(
        serve_outcome(&["--addr", "0.0.0.0:0", "--insecure-no-auth"], "")?,
        None
    );
    // Loopback, both families and the mapped form, serves without [auth].
    for addr in ["127.0.0.1:0", "[::1]:0", "[::ffff:127.0.0.1]:0"] {
        assert_eq!(serve_outcome(&["--addr", addr], "")?, None, "{addr}");
    }
    // Bearer tokens stay off the network while they would be plaintext.
    let file = format!(
        "[auth]\n{}",
        auth_table()
            .replace("[principals", "[auth.principals")
            .replace("[[tokens]]", "[[auth.tokens]]")
    );
    let plain = serve_outcome(&["--addr", "0.0.0.0:0"], &file)?.ok_or("it must refuse")?;
    assert!(
        plain.contains("would cross the network in plaintext"),
        "{plain}"
    );
    assert_eq!(serve_outcome(&["--addr", "127.0.0.1:0"], &file)?, None);
    // A table that names an unknown principal is refused at start.
    let wrong = file.replace("principal = \"ops\"", "principal = \"nobody\"");
    let refused = serve_outcome(&["--addr", "127.0.0.1:0"], &wrong)?.ok_or("it must refuse")?;
    assert!(refused.contains("\"nobody\""), "{refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_with_accounts_acts_for_those_accounts_only() -> TestResult {
    use image_ledger::grpc::Bearer;
    const TENANT: &str = "ilt_tenant00000000000000000000000000000000000000000000000000000000";
    let table = format!(
        "{}[principals.tenant-a]\nroles = [\"gateway\"]\naccounts = [\"{OWNER}\"]\n\
         [[tokens]]\nid = \"tenant-1\"\nprincipal = \"tenant-a\"\nsha256 = \"{}\"\n",
        auth_table(),
        digest_hex(TENANT)
    );
    let table: AuthConfig = toml::from_str(&table)?;
    let auth = Arc::new(Authenticator::new(&table)?);
    let dir = tempfile::tempdir()?;
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.auth = Some(auth);
            config.server.metrics_addr = "127.0.0.1:0".parse().ok();
        })
        .start()
        .await?;
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))?
        .connect()
        .await?;
    let as_who = |token: &str| Bearer::new(Some(token)).expect("a header value");
    let ledger = |token: &str| {
        pb::image_ledger_client::ImageLedgerClient::with_interceptor(channel.clone(), as_who(token))
    };
    for account in [OWNER, common::FRIEND] {
        ledger(ADMIN)
            .register_account(pb::RegisterAccountRequest {
                account_id: account.into(),
                kind: pb::AccountKind::Root as i32,
                client_token: String::new(),
            })
            .await?;
    }
    let image = |owner: &str| {
        let mut factory = ledger(FACTORY);
        let request = common::image_request(owner, GZ, &format!("web-{owner}"));
        async move {
            factory
                .register_image(request)
                .await
                .map(|r| r.into_inner().image_id)
        }
    };
    let own = image(OWNER).await?;
    let theirs = image(common::FRIEND).await?;
    let mut tenant = ledger(TENANT);
    // Its own account: as a gateway.
    tenant
        .share_image(common::share_request(OWNER, &own, &[common::FRIEND]))
        .await?;
    tenant
        .describe_images(common::describe_request(OWNER, GZ))
        .await?;
    // Any other: refused before the rules, with a reason of its own.
    let denied = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::PermissionDenied, "AuthFailure.AccountNotAllowed"),
            "{what}: {status:?}"
        );
    };
    denied(
        tenant
            .share_image(common::share_request(common::FRIEND, &theirs, &[OWNER]))
            .await
            .map(drop),
        "share as another account",
    );
    denied(
        tenant
            .describe_images(common::describe_request(common::FRIEND, GZ))
            .await
            .map(drop),
        "list as another account",
    );
    denied(
        tenant
            .authorize_image_use(pb::AuthorizeImageUseRequest {
                account_id: common::FRIEND.into(),
                image_id: own.clone(),
                region: GZ.into(),
                r#use: pb::ImageUse::CreateInstance as i32,
                min_position: 0,
            })
            .await
            .map(drop),
        "authorize as another account",
    );
    denied(
        tenant
            .describe_image_quota(pb::DescribeImageQuotaRequest {
                account_id: common::FRIEND.into(),
                region: GZ.into(),
                min_position: 0,
            })
            .await
            .map(drop),
        "quota of another account",
    );
    // Counted and logged with authentication's refusals.
    let metrics = server.metrics_addr().ok_or("metrics are served")?;
    let (_, text) = get(metrics, "/metrics").await?;
    assert_eq!(
        sample(
            &text,
            "ledger_auth_failures_total{reason=\"AuthFailure.AccountNotAllowed\"}"
        ),
        Some(4.0)
    );
    // The unscoped gateway still acts for anyone.
    ledger(GATEWAY)
        .share_image(common::share_request(common::FRIEND, &theirs, &[OWNER]))
        .await?;
    // A bad account in the table is refused with the principal's name.
    let bad: AuthConfig =
        toml::from_str("[principals.x]\nroles = [\"gateway\"]\naccounts = [\"12a\"]\n")?;
    let err = Authenticator::new(&bad).expect_err("refused");
    assert!(err.to_string().contains("principal \"x\""), "{err}");
    server.stop().await?;
    Ok(())
}
