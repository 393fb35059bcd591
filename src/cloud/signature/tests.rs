use super::*;

/// The worked example of Tencent's "Signature v3" page: CVM
/// DescribeInstances at 1551113065, with `x-tc-action` signed too.
fn documented_example() -> (String, Signed<'static>) {
    let body =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    let signed = Signed {
        method: "POST",
        path: "/",
        query: "",
        headers: vec![
            ("content-type", "application/json; charset=utf-8"),
            ("host", "cvm.tencentcloudapi.com"),
            ("x-tc-action", "describeinstances"),
        ],
        body: Some(body.as_bytes()),
    };
    (body.to_owned(), signed)
}

#[test]
fn the_documented_example_gives_the_documented_hashes() {
    let (body, signed) = documented_example();
    assert_eq!(
        hex::encode(Sha256::digest(body.as_bytes())),
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    );
    assert_eq!(
        hex::encode(Sha256::digest(canonical_request(&signed).as_bytes())),
        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    );
    // The page masks its key; this signature of the masked key as written
    // was computed by the Python SDK's `Sign.sign_tc3` (3.1.195).
    assert_eq!(
        signature(
            b"Gu5t9xGARNpq86cd98joQYCN3*******",
            "2019-02-25",
            "cvm",
            1_551_113_065,
            &signed
        ),
        "be4f67d323c78ab9acb7395e43c0dbcf822a9cfac32fea2449a7bc7726b770a3"
    );
}

#[test]
fn the_authorization_header_is_parsed_and_every_malformation_named() {
    let header = "TC3-HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00ff";
    assert_eq!(
        parse_authorization(header).map_err(|e| e.code),
        Ok(Authorization {
            secret_id: "AKIDabc",
            date: "2026-12-07",
            service: "cvm",
            signed_headers: "content-type;host",
            signature: "00ff",
        })
    );
    for bad in [
        "HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00",
        "TC3-HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm/tc4_request, SignedHeaders=content-type;host, Signature=00",
        "TC3-HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm, SignedHeaders=content-type;host, Signature=00",
        "TC3-HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm/tc3_request, SignedHeaders=host, Signature=00",
        "TC3-HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm/tc3_request, SignedHeaders=content-type;host",
        "TC3-HMAC-SHA256 Credential=AKIDabc/2026-12-07/cvm/tc3_request, SignedHeaders=Content-Type;host, Signature=00",
        "TC3-HMAC-SHA256 Credential=a/2026-12-07/cvm/tc3_request, Credential=b/2026-12-07/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00",
        "",
    ] {
        assert_eq!(
            parse_authorization(bad).map_err(|e| e.code),
            Err("AuthFailure.InvalidAuthorization"),
            "{bad}"
        );
    }
}

#[test]
fn a_timestamp_off_by_more_than_five_minutes_or_a_wrong_date_is_expired() {
    let now = 1_796_613_460; // 2026-12-07T03:17:40Z
    assert_eq!(utc_date(now).as_deref(), Some("2026-12-07"));
    assert_eq!(check_time("2026-12-07", now - 300, now), Ok(()));
    assert_eq!(check_time("2026-12-07", now + 300, now), Ok(()));
    for (date, at) in [
        ("2026-12-07", now - 301),
        ("2026-12-07", now + 301),
        ("2026-12-06", now),
    ] {
        assert_eq!(
            check_time(date, at, now).map_err(|e| e.code),
            Err("AuthFailure.SignatureExpire"),
            "{date} {at}"
        );
    }
}

#[test]
fn what_sign_makes_verifies_and_any_change_does_not() {
    let body = br#"{"ImageId":"img-aaaaaaaa"}"#;
    let request = Request {
        host: "127.0.0.1:9000",
        action: "DescribeImages",
        version: "2017-03-12",
        region: "ap-guangzhou",
        service: "cvm",
        timestamp: 1_796_613_460,
        body,
    };
    let headers = sign("AKIDabc", "secret", &request);
    let authorization = headers
        .iter()
        .find(|(name, _)| name == "Authorization")
        .map(|(_, value)| value.clone())
        .expect("an Authorization header");
    let parsed = parse_authorization(&authorization).expect("it parses");
    let expected = |key: &[u8], host: &str, body: &[u8]| {
        signature(
            key,
            "2026-12-07",
            "cvm",
            1_796_613_460,
            &Signed {
                method: "POST",
                path: "/",
                query: "",
                headers: vec![("content-type", "application/json"), ("host", host)],
                body: Some(body),
            },
        )
    };
    assert!(matches(
        &expected(b"secret", "127.0.0.1:9000", body),
        parsed.signature
    ));
    assert!(!matches(
        &expected(b"secreT", "127.0.0.1:9000", body),
        parsed.signature
    ));
    assert!(!matches(
        &expected(b"secret", "127.0.0.1:9001", body),
        parsed.signature
    ));
    assert!(!matches(
        &expected(
            b"secret",
            "127.0.0.1:9000",
            br#"{"ImageId":"img-bbbbbbbb"}"#
        ),
        parsed.signature
    ));
    assert!(!matches("", parsed.signature));
}
