//! TC3-HMAC-SHA256, the signature of Tencent Cloud API 3.0: parsing the
//! `Authorization` header, rebuilding the canonical request from what was
//! received, and checking it in constant time. [`sign`] makes the same
//! signature, for the tests and the load generator.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::envelope::ApiError;

/// The one algorithm accepted.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// How far a request's timestamp may be from the server's clock, seconds.
pub const MAX_SKEW_SECS: i64 = 300;
/// The payload hash a client sends with `X-TC-Content-SHA256` to leave
/// the body out of the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The key's SecretId.
    pub secret_id: &'a str,
    /// `YYYY-MM-DD` of the credential scope.
    pub date: &'a str,
    /// The service of the scope (`cvm`, `lighthouse`).
    pub service: &'a str,
    /// The header names signed, lower case, `;`-separated.
    pub signed_headers: &'a str,
    /// The hex signature.
    pub signature: &'a str,
}

/// Parses `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request,
/// SignedHeaders=a;b, Signature=HEX`.
pub fn parse_authorization(header: &str) -> Result<Authorization<'_>, ApiError> {
    let bad = |what: &str| {
        ApiError::new(
            "AuthFailure.InvalidAuthorization",
            format!("the Authorization header is not valid: {what}"),
        )
    };
    let rest = header
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| bad("it must start with `TC3-HMAC-SHA256 `"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| bad("each part is Name=Value"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(bad(&format!("unknown part `{name}`"))),
        };
        if slot.replace(value).is_some() {
            return Err(bad(&format!("`{name}` is given twice")));
        }
    }
    let credential = credential.ok_or_else(|| bad("Credential is missing"))?;
    let mut scope = credential.split('/');
    let (Some(secret_id), Some(date), Some(service), Some(terminator), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(bad(
            "Credential must be SecretId/YYYY-MM-DD/service/tc3_request",
        ));
    };
    if terminator != "tc3_request" || secret_id.is_empty() || service.is_empty() {
        return Err(bad(
            "Credential must be SecretId/YYYY-MM-DD/service/tc3_request",
        ));
    }
    let signed_headers = signed_headers.ok_or_else(|| bad("SignedHeaders is missing"))?;
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"content-type") || !names.contains(&"host") {
        return Err(bad("SignedHeaders must include content-type and host"));
    }
    if names
        .iter()
        .any(|name| name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(bad("SignedHeaders holds lower-case header names"));
    }
    let signature = signature.ok_or_else(|| bad("Signature is missing"))?;
    Ok(Authorization {
        secret_id,
        date,
        service,
        signed_headers,
        signature,
    })
}

/// Checks that `timestamp` is within [`MAX_SKEW_SECS`] of `now` and that
/// `date` is its UTC date.
pub fn check_time(date: &str, timestamp: i64, now: i64) -> Result<(), ApiError> {
    if (now - timestamp).abs() > MAX_SKEW_SECS {
        return Err(ApiError::new(
            "AuthFailure.SignatureExpire",
            format!(
                "the signature expired: X-TC-Timestamp {timestamp} is more than {MAX_SKEW_SECS} s \
                 from the server's time {now}; check the client's clock"
            ),
        ));
    }
    if utc_date(timestamp).as_deref() != Some(date) {
        return Err(ApiError::new(
            "AuthFailure.SignatureExpire",
            format!(
                "the credential's date {date} is not the UTC date of X-TC-Timestamp {timestamp}"
            ),
        ));
    }
    Ok(())
}

/// `YYYY-MM-DD` of a Unix time, in UTC.
pub fn utc_date(timestamp: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(timestamp).ok()?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    at.format(&format).ok()
}

/// The parts of a request the signature covers.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path (`/`).
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// `name:value` for each signed header, in SignedHeaders' order.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The body, or `None` for `UNSIGNED-PAYLOAD`.
    pub body: Option<&'a [u8]>,
}

/// The canonical request of TC3: method, path, query, the signed headers
/// (`name:value`, values trimmed), their names, and the payload's hash.
pub fn canonical_request(request: &Signed<'_>) -> String {
    let payload_hash = match request.body {
        Some(body) => hex::encode(Sha256::digest(body)),
        None => hex::encode(Sha256::digest(UNSIGNED_PAYLOAD)),
    };
    let mut canonical_headers = String::new();
    let mut signed_headers = Vec::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value.trim());
        canonical_headers.push('\n');
        signed_headers.push(*name);
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.path,
        request.query,
        canonical_headers,
        signed_headers.join(";"),
        payload_hash
    )
}

/// The signature of `request` with `secret_key`, in hex.
pub fn signature(
    secret_key: &[u8],
    date: &str,
    service: &str,
    timestamp: i64,
    request: &Signed<'_>,
) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical_request(request).as_bytes()))
    );
    let mut key = Vec::with_capacity(secret_key.len() + 3);
    key.extend_from_slice(b"TC3");
    key.extend_from_slice(secret_key);
    let k_date = hmac(&key, date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Whether `given` (hex, as received) is `expected`, compared in constant time.
pub fn matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The headers a client signs and sends for a JSON `POST /`: what the
/// Tencent SDKs do, for the tests and the load generator.
pub struct Request<'a> {
    /// `Host` as sent.
    pub host: &'a str,
    /// `X-TC-Action`.
    pub action: &'a str,
    /// `X-TC-Version`.
    pub version: &'a str,
    /// `X-TC-Region`.
    pub region: &'a str,
    /// The service of the credential scope.
    pub service: &'a str,
    /// `X-TC-Timestamp`.
    pub timestamp: i64,
    /// The JSON body.
    pub body: &'a [u8],
}

/// Signs `request` with a key as the SDKs do, and returns the headers to
/// send (`Authorization` among them).
pub fn sign(secret_id: &str, secret_key: &str, request: &Request<'_>) -> Vec<(String, String)> {
    let date = utc_date(request.timestamp).unwrap_or_default();
    let signed = Signed {
        method: "POST",
        path: "/",
        query: "",
        headers: vec![("content-type", "application/json"), ("host", request.host)],
        body: Some(request.body),
    };
    let signature = signature(
        secret_key.as_bytes(),
        &date,
        request.service,
        request.timestamp,
        &signed,
    );
    vec![
        ("Host".into(), request.host.into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-TC-Action".into(), request.action.into()),
        ("X-TC-Version".into(), request.version.into()),
        ("X-TC-Region".into(), request.region.into()),
        ("X-TC-Timestamp".into(), request.timestamp.to_string()),
        (
            "Authorization".into(),
            format!(
                "{ALGORITHM} Credential={secret_id}/{date}/{}/tc3_request, \
                 SignedHeaders=content-type;host, Signature={signature}",
                request.service
            ),
        ),
    ]
}

#[cfg(test)]
mod tests;
