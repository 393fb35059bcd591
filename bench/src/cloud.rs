//! A client of the cloud API door, signing as Tencent's SDKs do, over one
//! kept-alive HTTP/1.1 connection: what the `cloud-*` scenarios load the
//! server with, and what the door's tests call it with.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use image_ledger::cloud::signature::{sign, Request};
use serde_json::Value;

use crate::BoxError;

/// A key: SecretId and SecretKey.
#[derive(Debug, Clone)]
pub struct Key {
    /// The SecretId.
    pub id: String,
    /// The SecretKey.
    pub secret: String,
}

/// What one request is, before it is signed.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `cvm` or `lighthouse`.
    pub service: &'a str,
    /// `X-TC-Version`.
    pub version: &'a str,
    /// `X-TC-Action`.
    pub action: &'a str,
    /// `X-TC-Region`.
    pub region: &'a str,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl<'a> Call<'a> {
    /// A CVM 2017-03-12 action in `region`.
    pub fn cvm(action: &'a str, region: &'a str, body: &Value) -> Self {
        Self {
            service: "cvm",
            version: "2017-03-12",
            action,
            region,
            body: body.to_string().into_bytes(),
        }
    }

    /// A Lighthouse 2020-03-24 action in `region`.
    pub fn lighthouse(action: &'a str, region: &'a str, body: &Value) -> Self {
        Self {
            service: "lighthouse",
            version: "2020-03-24",
            action,
            region,
            body: body.to_string().into_bytes(),
        }
    }

    /// The headers a client signing with `key` at `timestamp` sends, as
    /// the SDKs send them, for a server reached as `host`.
    pub fn signed(&self, key: &Key, host: &str, timestamp: i64) -> Vec<(String, String)> {
        sign(
            &key.id,
            &key.secret,
            &Request {
                host,
                action: self.action,
                version: self.version,
                region: self.region,
                service: self.service,
                timestamp,
                body: &self.body,
            },
        )
    }
}

/// A reply: the HTTP status, the Content-Type, and the JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The Content-Type header, as sent.
    pub content_type: String,
    /// The body, parsed.
    pub body: Value,
}

impl Reply {
    /// `Response`.
    pub fn response(&self) -> &Value {
        &self.body["Response"]
    }

    /// `Response.Error.Code`, if it is an error.
    pub fn code(&self) -> Option<&str> {
        self.response()["Error"]["Code"].as_str()
    }
}

/// One kept-alive connection to the door.
pub struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects to the door at `addr` (plaintext).
    pub async fn open(addr: SocketAddr) -> Result<Self, BoxError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Self::over(addr, stream).await
    }

    /// Speaks HTTP/1.1 to the door at `addr` over `stream` (a TLS one, say).
    pub async fn over<S>(addr: SocketAddr, stream: S) -> Result<Self, BoxError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { addr, sender })
    }

    /// Signs `call` with `key` now and sends it.
    pub async fn call(&mut self, key: &Key, call: &Call<'_>) -> Result<Reply, BoxError> {
        let headers = call.signed(key, &self.addr.to_string(), now());
        self.send("POST", &headers, call.body.clone()).await
    }

    /// [`Self::call`], the answer's body left as bytes (the load
    /// generator does not spend its share of the machine parsing it).
    pub async fn call_raw(&mut self, key: &Key, call: &Call<'_>) -> Result<Bytes, BoxError> {
        let headers = call.signed(key, &self.addr.to_string(), now());
        Ok(self.exchange("POST", &headers, call.body.clone()).await?.2)
    }

    /// Sends a request with exactly these headers and body.
    pub async fn send(
        &mut self,
        method: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Reply, BoxError> {
        let (status, content_type, bytes) = self.exchange(method, headers, body).await?;
        let body = serde_json::from_slice(&bytes).map_err(|err| {
            format!(
                "the door answered {:?}: {err}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    async fn exchange(
        &mut self,
        method: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, String, Bytes), BoxError> {
        let mut request = http::Request::builder().method(method).uri("/");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, content_type, bytes))
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// The key the load generator signs as preloaded account `k` with.
pub fn bench_key(k: u64) -> Key {
    Key {
        id: format!("AKIDbench{k}"),
        secret: format!("bench-secret-{k}"),
    }
}

/// The config file giving each of the first `accounts` preloaded accounts
/// its [`bench_key`].
pub fn bench_keys(accounts: u64) -> String {
    let mut text = String::new();
    for k in 0..accounts {
        let key = bench_key(k);
        text.push_str(&format!(
            "[[cloud_api.keys]]\nsecret_id = \"{}\"\nsecret_key = \"{}\"\naccount_id = \"{}\"\n",
            key.id,
            key.secret,
            crate::account(k)
        ));
    }
    text
}
