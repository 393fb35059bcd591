//! Traces over OTLP: the server run with the standard `OTEL_*` variables
//! pointed at a receiver this test starts exports a span per call, with
//! its method, account, principal and outcome, continuing the caller's
//! `traceparent`, and spans under it for the stages its command went
//! through. Without the variables it exports nothing; a protocol it does
//! not speak stops it before it starts.

mod common;

use std::time::{Duration, Instant};

use common::{binary, register, register_image, register_roots, FRIEND, GZ, OWNER};
use image_ledger::auth::digest_hex;
use image_ledger::grpc::pb;
use image_ledger_bench::cloud::{Call, Connection, Key};
use image_ledger_bench::otlp::{attribute as attr, Sink, Span, SpanKind, StatusCode};
use image_ledger_testkit::{StartError, Stderr};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

type TestResult = Result<(), image_ledger_bench::BoxError>;

const ADMIN: &str = "ilt_admin000000000000000000000000000000000000000000000000000000000";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn config(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join("ledger.toml");
    std::fs::write(
        &path,
        format!(
            "[auth.principals.ops]\nroles = [\"admin\"]\n\
             [[auth.tokens]]\nid = \"ops-1\"\nprincipal = \"ops\"\nsha256 = \"{}\"\n",
            digest_hex(ADMIN)
        ),
    )?;
    Ok(path)
}

fn as_admin<T>(message: T, traceparent: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    let token: MetadataValue<_> = format!("Bearer {ADMIN}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", token);
    if let Some(parent) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", parent.parse().expect("ascii"));
    }
    request
}

/// The spans whose parent is `parent`.
fn children<'a>(spans: &'a [(String, Span)], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

fn find<'a>(spans: &'a [(String, Span)], name: &str) -> Result<&'a Span, String> {
    spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.name == name)
        .ok_or_else(|| {
            let names: Vec<_> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
            format!("no span {name} among {names:?}")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_a_trace_with_its_stages() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (endpoint, receiver) = Sink::start(true).await?;
    let mut server = binary(&dir.path().join("data"))
        .global("--config")
        .global(config(dir.path())?)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env("RUST_LOG", "info")
        .stderr(Stderr::Capture)
        .spawn()?;
    let mut client = pb::image_ledger_client::ImageLedgerClient::connect(server.url()).await?;
    let register = |id: &str| pb::RegisterAccountRequest {
        account_id: id.into(),
        kind: pb::AccountKind::Root as i32,
        client_token: String::new(),
    };
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    client
        .register_account(as_admin(register(OWNER), Some(&traceparent)))
        .await?;
    // A refusal: the account is there already, as another kind.
    let refused = client
        .register_account(as_admin(
            pb::RegisterAccountRequest {
                account_id: OWNER.into(),
                kind: pb::AccountKind::Collaborator as i32,
                client_token: String::new(),
            },
            None,
        ))
        .await
        .expect_err("an account's kind cannot change");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    client
        .register_account(as_admin(register(FRIEND), None))
        .await?;
    drop(client);
    // The last spans leave at the stop.
    assert!(server.terminate(Duration::from_secs(30))?.success());
    let logs = server.logs();
    assert!(logs.contains("exporting traces over OTLP/gRPC"), "{logs}");
    let spans = receiver.spans();
    assert!(spans.iter().all(|(service, _)| service == "image-ledger"));

    let calls: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "imageledger.v1.ImageLedger/RegisterAccount")
        .collect();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    // The first continues the caller's trace.
    let first = calls
        .iter()
        .find(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .ok_or("no call span in the caller's trace")?;
    assert_eq!(hex::encode(&first.parent_span_id), PARENT_ID);
    assert_eq!(first.kind, SpanKind::Server as i32);
    assert_eq!(attr(first, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(first, "rpc.service").as_deref(),
        Some("imageledger.v1.ImageLedger")
    );
    assert_eq!(
        attr(first, "rpc.method").as_deref(),
        Some("RegisterAccount")
    );
    assert_eq!(attr(first, "account").as_deref(), Some(OWNER));
    assert_eq!(attr(first, "principal").as_deref(), Some("ops"));
    assert_eq!(attr(first, "outcome").as_deref(), Some("OK"));
    assert_eq!(attr(first, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr(first, "reason"), None);

    // Its command's stages, each under it, in the order they ran.
    let under = children(&spans, first);
    let names: Vec<&str> = under.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for name in ["decide", "append", "flush", "sync"] {
        find(&spans, name)?;
        assert!(
            names.contains(&name),
            "{name} not under the call: {names:?}"
        );
    }
    let by_name = |name: &str| *under.iter().find(|s| s.name == name).expect("listed");
    let ordered = ["decide", "append", "flush", "sync"].map(by_name);
    for pair in ordered.windows(2) {
        assert!(
            pair[0].end_time_unix_nano <= pair[1].start_time_unix_nano,
            "{} ends after {} starts",
            pair[0].name,
            pair[1].name
        );
    }
    assert!(first.start_time_unix_nano <= ordered[0].start_time_unix_nano);
    assert!(ordered[3].end_time_unix_nano <= first.end_time_unix_nano);
    let append = ordered[1];
    assert_eq!(attr(append, "batch.commands").as_deref(), Some("1"));
    assert_eq!(attr(append, "batch.records").as_deref(), Some("1"));

    // The refusal: the caller's fault, so no error status; its reason.
    let refusal = calls
        .iter()
        .find(|s| attr(s, "outcome").as_deref() == Some("InvalidArgument"))
        .ok_or("no span for the refusal")?;
    assert_eq!(
        attr(refusal, "reason").as_deref(),
        Some("InvalidParameterValue")
    );
    assert_eq!(attr(refusal, "rpc.grpc.status_code").as_deref(), Some("3"));
    let status = refusal.status.clone().unwrap_or_default();
    assert_ne!(status.code, StatusCode::Error as i32);
    // A call without a traceparent starts a trace of its own.
    assert_eq!(
        calls.iter().filter(|s| s.parent_span_id.is_empty()).count(),
        2
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_api_request_is_a_trace_too() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (endpoint, receiver) = Sink::start(true).await?;
    let owner = Key {
        id: "AKIDowner".into(),
        secret: "secret-of-AKIDowner".into(),
    };
    let config = dir.path().join("ledger.toml");
    std::fs::write(
        &config,
        format!(
            "[[cloud_api.keys]]\nsecret_id = \"{}\"\nsecret_key = \"{}\"\naccount_id = \"{OWNER}\"\n",
            owner.id, owner.secret
        ),
    )?;
    let mut server = binary(&dir.path().join("data"))
        .global("--config")
        .global(&config)
        .args(["--cloud-api-addr", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()?;
    let door = server.cloud_api_addr()?;
    let mut grpc = pb::image_ledger_client::ImageLedgerClient::connect(server.url()).await?;
    register_roots(&mut grpc, &[OWNER, FRIEND]).await;
    let image = register_image(&mut grpc, OWNER, GZ, "web").await;
    drop(grpc);
    let body = serde_json::json!({"ImageId": image, "AccountIds": [FRIEND], "Permission": "SHARE"});
    let share = Call::cvm("ModifyImageSharePermission", GZ, &body);
    let mut connection = Connection::open(door).await?;
    let reply = connection.call(&owner, &share).await?;
    assert_eq!(reply.code(), None, "{:?}", reply.response());
    let forger = Key {
        id: owner.id.clone(),
        secret: "not-the-secret".into(),
    };
    let refused = connection.call(&forger, &share).await?;
    assert_eq!(refused.code(), Some("AuthFailure.SignatureFailure"));
    drop(connection);
    assert!(server.terminate(Duration::from_secs(30))?.success());

    let spans = receiver.spans();
    let shared = find(&spans, "cvm/ModifyImageSharePermission")?;
    assert_eq!(shared.kind, SpanKind::Server as i32);
    assert_eq!(attr(shared, "account").as_deref(), Some(OWNER));
    assert_eq!(
        attr(shared, "principal").as_deref(),
        Some("cloud key AKIDowner")
    );
    assert_eq!(attr(shared, "outcome").as_deref(), Some("OK"));
    let mut under: Vec<&str> = children(&spans, shared)
        .into_iter()
        .map(|s| s.name.as_str())
        .collect();
    under.sort_unstable();
    assert_eq!(under, ["append", "decide", "flush", "sync"]);
    // Refused before its action was read: no account, the refusal's code.
    let forged = find(&spans, "cloud API request")?;
    assert_eq!(
        attr(forged, "outcome").as_deref(),
        Some("AuthFailure.SignatureFailure")
    );
    assert_eq!(attr(forged, "account"), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_it_exports_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (endpoint, receiver) = Sink::start(true).await?;
    let mut server = binary(&dir.path().join("data"))
        // Pointed at the receiver, but switched off.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SDK_DISABLED", "true")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()?;
    let mut client = pb::image_ledger_client::ImageLedgerClient::connect(server.url()).await?;
    register(&mut client, OWNER, pb::AccountKind::Root).await;
    drop(client);
    let stopped = Instant::now();
    assert!(server.terminate(Duration::from_secs(30))?.success());
    assert!(stopped.elapsed() < Duration::from_secs(10));
    assert_eq!(receiver.received(), 0);
    Ok(())
}

#[test]
fn a_protocol_it_does_not_speak_stops_it_and_an_http_port_is_warned_of() -> TestResult {
    let dir = tempfile::tempdir()?;
    let started = binary(&dir.path().join("data"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .stderr(Stderr::Capture)
        .spawn();
    let Err(StartError::Refused { status, stderr, .. }) = started else {
        return Err("the server started".into());
    };
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf: traces are exported over OTLP/gRPC only"
        ),
        "{stderr}"
    );
    // Refused before the data directory was made.
    assert!(!dir.path().join("data").exists());
    // Pointed at a collector's HTTP port, it starts and warns.
    let mut server = binary(&dir.path().join("data"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env("RUST_LOG", "warn")
        .stderr(Stderr::Capture)
        .spawn()?;
    assert!(server.terminate(Duration::from_secs(30))?.success());
    let logs = server.logs();
    assert!(
        logs.contains("port 4318 is a collector's OTLP/HTTP port; traces are exported over OTLP/gRPC (usually 4317)"),
        "{logs}"
    );
    Ok(())
}
