//! Requests the door refuses before any rule: signatures, malformed
//! bodies and headers; the records it writes; when it will not start.

use super::*;

/// An `Authorization` for a CVM request signed at `at` with `key` over this
/// content type and body (`None`: UNSIGNED-PAYLOAD), built from the parts.
fn by_hand(
    key: &Key,
    host: &str,
    content_type: &str,
    body: Option<&[u8]>,
    at: i64,
) -> Result<String, image_ledger_bench::BoxError> {
    use image_ledger::cloud::signature::{signature, utc_date, Signed};
    let date = utc_date(at).ok_or("a date")?;
    let signed = Signed {
        method: "POST",
        path: "/",
        query: "",
        headers: vec![("content-type", content_type), ("host", host)],
        body,
    };
    let signature = signature(key.secret.as_bytes(), &date, "cvm", at, &signed);
    Ok(format!(
        "TC3-HMAC-SHA256 Credential={}/{date}/cvm/tc3_request, SignedHeaders=content-type;host, Signature={signature}",
        key.id
    ))
}

/// The `X-TC-Timestamp` that `headers` carry: a signature made by hand to
/// go with them must cover that instant, not a later second.
fn timestamp_of(headers: &[(String, String)]) -> Result<i64, image_ledger_bench::BoxError> {
    let (_, value) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-tc-timestamp"))
        .ok_or("a timestamp header")?;
    Ok(value.parse()?)
}

/// Sends a SHARE of the image with the friend signed as `headers` say,
/// and expects `code`.
async fn expect_refusal(door: &Door, headers: Vec<(String, String)>, body: &[u8], code: &str) {
    let reply = door.raw("POST", &headers, body).await;
    refused(&reply, code);
}

fn replace(headers: &mut [(String, String)], name: &str, value: String) {
    for (n, v) in headers.iter_mut() {
        if n.eq_ignore_ascii_case(name) {
            *v = value.clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signature_failure_is_refused_with_its_code_and_changes_nothing() -> TestResult {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut door = door_with(|config| config.server.metrics_addr = Some(metrics)).await;
    let body = json!({"ImageId": door.image, "AccountIds": [FRIEND], "Permission": "SHARE"});
    let call = Call::cvm("ModifyImageSharePermission", GZ, &body);
    let host = door.host();
    let signed = |key: &Key, at: i64| call.signed(key, &host, at);
    let good = signed(&door.owner, now());

    let wrong_key = Key {
        id: door.owner.id.clone(),
        secret: "not-the-secret".into(),
    };
    expect_refusal(
        &door,
        signed(&wrong_key, now()),
        &call.body,
        "AuthFailure.SignatureFailure",
    )
    .await;
    expect_refusal(
        &door,
        signed(&key("AKIDnobody"), now()),
        &call.body,
        "AuthFailure.SecretIdNotFound",
    )
    .await;
    expect_refusal(
        &door,
        signed(&door.owner, now() - 301),
        &call.body,
        "AuthFailure.SignatureExpire",
    )
    .await;
    expect_refusal(
        &door,
        signed(&door.owner, now() + 301),
        &call.body,
        "AuthFailure.SignatureExpire",
    )
    .await;
    // A body changed after signing, or sent to another Host than signed.
    let mut altered = call.body.clone();
    altered.extend_from_slice(b" ");
    expect_refusal(
        &door,
        good.clone(),
        &altered,
        "AuthFailure.SignatureFailure",
    )
    .await;
    let mut other_host = good.clone();
    replace(&mut other_host, "host", "localhost:1".into());
    expect_refusal(
        &door,
        other_host,
        &call.body,
        "AuthFailure.SignatureFailure",
    )
    .await;
    // The scope's service must be one served.
    let mut cbs = call.clone();
    cbs.service = "cbs";
    expect_refusal(
        &door,
        cbs.signed(&door.owner, &host, now()),
        &call.body,
        "AuthFailure.InvalidAuthorization",
    )
    .await;
    // Broken or missing parts of the header.
    let authorization = good
        .iter()
        .find(|(name, _)| name == "Authorization")
        .map(|(_, value)| value.clone())
        .ok_or("signed")?;
    for broken in [
        authorization.replace("TC3-HMAC-SHA256", "HMAC-SHA256"),
        authorization.replace("tc3_request", "tc4_request"),
        authorization.replace("content-type;host", "content-type"),
        String::new(),
    ] {
        let mut headers = good.clone();
        replace(&mut headers, "authorization", broken);
        expect_refusal(
            &door,
            headers,
            &call.body,
            "AuthFailure.InvalidAuthorization",
        )
        .await;
    }
    let without = |name: &str| -> Vec<(String, String)> {
        good.iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .cloned()
            .collect()
    };
    expect_refusal(
        &door,
        without("authorization"),
        &call.body,
        "AuthFailure.InvalidAuthorization",
    )
    .await;
    expect_refusal(
        &door,
        without("x-tc-timestamp"),
        &call.body,
        "MissingParameter",
    )
    .await;
    let mut token = good.clone();
    token.push(("X-TC-Token".into(), "sts-token".into()));
    expect_refusal(&door, token, &call.body, "AuthFailure.TokenFailure").await;
    // The credential's date must be the timestamp's.
    let mut yesterday = good.clone();
    let today = image_ledger::cloud::signature::utc_date(now()).ok_or("a date")?;
    let before = image_ledger::cloud::signature::utc_date(now() - 86_400).ok_or("a date")?;
    replace(
        &mut yesterday,
        "authorization",
        authorization.replace(&today, &before),
    );
    expect_refusal(&door, yesterday, &call.body, "AuthFailure.SignatureExpire").await;

    // With X-TC-Content-SHA256: UNSIGNED-PAYLOAD the body is not signed
    // (the SDKs' option); the header itself must then be sent.
    let unsigned = {
        let mut headers = good.clone();
        let at = timestamp_of(&headers)?;
        let signed = by_hand(&door.owner, &host, "application/json", None, at)?;
        replace(&mut headers, "authorization", signed);
        headers
    };
    expect_refusal(
        &door,
        unsigned.clone(),
        &call.body,
        "AuthFailure.SignatureFailure",
    )
    .await;
    let mut quota = unsigned;
    quota.push(("X-TC-Content-SHA256".into(), "UNSIGNED-PAYLOAD".into()));
    replace(&mut quota, "x-tc-action", "DescribeImageQuota".into());
    assert_eq!(
        answered(&door.raw("POST", &quota, b"{}").await)["ImageNumQuota"],
        json!(500)
    );
    assert!(shares_of(&mut door.grpc, OWNER, &door.image)
        .await
        .is_empty());
    // The same request, signed right, goes through; then the metric.
    answered(&door.raw("POST", &good, &call.body).await);
    assert_eq!(
        shares_of(&mut door.grpc, OWNER, &door.image).await,
        [FRIEND]
    );
    let text = common::metrics_page(metrics).await?;
    for (code, count) in [
        ("AuthFailure.SignatureFailure", 4),
        ("AuthFailure.SecretIdNotFound", 1),
        ("AuthFailure.SignatureExpire", 3),
        ("AuthFailure.InvalidAuthorization", 6),
        ("AuthFailure.TokenFailure", 1),
    ] {
        let line = format!("ledger_cloud_api_auth_failures_total{{code=\"{code}\"}} {count}");
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    assert!(
        text.lines().any(|l| l
            == "ledger_cloud_api_requests_total{service=\"cvm\",action=\"ModifyImageSharePermission\",code=\"OK\"} 1"),
        "{text}"
    );
    door.server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_codes_and_change_nothing() -> TestResult {
    let mut door = door().await;
    let host = door.host();
    let image = door.image.clone();
    let share = |body: &[u8]| -> (Vec<(String, String)>, Vec<u8>) {
        let call = Call {
            body: body.to_vec(),
            ..Call::cvm("ModifyImageSharePermission", GZ, &json!({}))
        };
        (call.signed(&door.owner, &host, now()), body.to_vec())
    };
    let shared =
        format!(r#"{{"ImageId":"{image}","AccountIds":["{FRIEND}"],"Permission":"SHARE"}}"#);
    for (body, code) in [
        ("{\"ImageId\": ".to_owned(), "InvalidParameter"),
        ("[1, 2]".to_owned(), "InvalidParameter"),
        (
            format!(r#"{{"ImageId":"{image}","AccountIds":"{FRIEND}","Permission":"SHARE"}}"#),
            "InvalidParameter",
        ),
        (
            format!(r#"{{"ImageId":7,"AccountIds":["{FRIEND}"],"Permission":"SHARE"}}"#),
            "InvalidParameter",
        ),
        (
            format!(
                r#"{{"ImageId":"{image}","AccountIds":["{FRIEND}"],"Permission":"SHARE","Force":true}}"#
            ),
            "UnknownParameter",
        ),
        (
            format!(r#"{{"ImageId":"{image}","AccountIds":["{FRIEND}"]}}"#),
            "MissingParameter",
        ),
        (String::new(), "MissingParameter"),
    ] {
        let (headers, body) = share(body.as_bytes());
        expect_refusal(&door, headers, &body, code).await;
    }
    // Actions and versions not served; regions; methods; content types.
    let (good, body) = share(shared.as_bytes());
    let with = |name: &str, value: &str| {
        let mut headers = good.clone();
        replace(&mut headers, name, value.into());
        headers
    };
    expect_refusal(
        &door,
        with("X-TC-Action", "DescribeInstances"),
        &body,
        "InvalidAction",
    )
    .await;
    expect_refusal(
        &door,
        with("X-TC-Version", "2018-01-01"),
        &body,
        "NoSuchVersion",
    )
    .await;
    expect_refusal(
        &door,
        with("X-TC-Region", "mars-north-1"),
        &body,
        "UnsupportedRegion",
    )
    .await;
    expect_refusal(&door, with("X-TC-Region", ""), &body, "MissingParameter").await;
    refused(&door.raw("GET", &good, &body).await, "InvalidParameter");
    let text = {
        let call = Call {
            body: body.clone(),
            ..Call::cvm("ModifyImageSharePermission", GZ, &json!({}))
        };
        // Signed as text/plain, so only the type is wrong.
        let mut headers = with("Content-Type", "text/plain");
        let at = timestamp_of(&headers)?;
        let signed = by_hand(&door.owner, &host, "text/plain", Some(&call.body), at)?;
        replace(&mut headers, "authorization", signed);
        headers
    };
    expect_refusal(&door, text, &body, "InvalidParameter").await;
    // Over 10 MB.
    let huge = vec![b' '; image_ledger::cloud::MAX_BODY_BYTES + 1];
    expect_refusal(&door, good.clone(), &huge, "RequestSizeLimitExceeded").await;
    assert!(shares_of(&mut door.grpc, OWNER, &door.image)
        .await
        .is_empty());
    // Two requests on one kept-alive connection.
    let mut connection = Connection::open(door.addr).await?;
    for _ in 0..2 {
        let reply = connection
            .call(
                &door.owner,
                &Call::cvm("DescribeImageQuota", GZ, &json!({})),
            )
            .await?;
        assert_eq!(answered(&reply)["ImageNumQuota"], json!(500));
    }
    door.server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_through_the_door_name_the_key() -> TestResult {
    let door = door().await;
    answered(
        &door
            .share(&door.owner, &door.image, &[FRIEND], "SHARE")
            .await,
    );
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", door.server.local_addr()))?
            .connect()
            .await?;
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
    let history = audit
        .get_image_history(pb::GetImageHistoryRequest {
            image_id: door.image.clone(),
        })
        .await?
        .into_inner();
    let principals: Vec<&str> = history
        .events
        .iter()
        .map(|e| e.principal.as_str())
        .collect();
    assert_eq!(principals, ["", "cloud key AKIDowner"], "{history:?}");
    door.server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_is_refused_off_loopback_without_tls_or_without_keys() -> TestResult {
    let dir = tempfile::tempdir()?;
    let open = InProcess::new(dir.path()).with(|config| {
        config.server.cloud_api_addr = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
        config.cloud_keys = keys(&[(&key("AKIDa"), OWNER)]);
        config.server.insecure_no_auth = true;
    });
    match open.start().await {
        Err(image_ledger::server::ServeError::PlaintextCloudApi(_)) => {}
        Err(other) => return Err(format!("refused otherwise: {other}").into()),
        Ok(_) => return Err("served the cloud API in plaintext off loopback".into()),
    }
    let keyless = InProcess::new(dir.path()).with(|config| {
        config.server.cloud_api_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    });
    match keyless.start().await {
        Err(image_ledger::server::ServeError::NoCloudKeys) => Ok(()),
        Err(other) => Err(format!("refused otherwise: {other}").into()),
        Ok(_) => Err("served the cloud API without keys".into()),
    }
}
