//! Serving the door over HTTP/1.1 with keep-alive, plaintext or TLS: one
//! connection cap with the gRPC port and the same descriptor backoff, a bound
//! on how long a client may take over its headers and its handshake, a
//! bound on the body, and a graceful stop (connections finish the request
//! they are on, then close).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::envelope::ApiError;
use super::Door;
use crate::listener::Accepted;
use crate::tls::Tls;

/// The largest body accepted, as Tencent's gateway: 10 MB.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Longest a client may take to send a request's headers (and, on a
/// kept-alive connection, to start its next request).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the door serves with.
pub struct Serving {
    /// The bound port.
    pub listener: TcpListener,
    /// The door.
    pub door: Arc<Door>,
    /// TLS, when the server speaks it.
    pub tls: Option<Arc<Tls>>,
    /// The server's places under its connection cap.
    pub places: crate::listener::Places,
    /// How long connections get to finish once stopping.
    pub grace: Duration,
}

/// Serves until `stopping` resolves, then lets the open connections end
/// their request within the grace period.
pub async fn serve(serving: Serving, stopping: impl std::future::Future<Output = ()>) {
    let Serving {
        listener,
        door,
        tls,
        places,
        grace,
    } = serving;
    let (stop, stopped) = watch::channel(false);
    let mut accepted = crate::listener::accept(listener, places);
    let mut connections = JoinSet::new();
    tokio::pin!(stopping);
    loop {
        let next = tokio::select! {
            next = accepted.recv() => next,
            () = &mut stopping => break,
        };
        let Some(next) = next else { break };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            next,
            Arc::clone(&door),
            tls.clone(),
            stopped.clone(),
        ));
    }
    drop(accepted);
    let _ = stop.send(true);
    let ended = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        tracing::warn!(
            ?grace,
            "cloud API connections still open after the grace period; closing them"
        );
        connections.abort_all();
    }
}

/// One connection, after its TLS handshake if any.
async fn connection(
    accepted: Accepted,
    door: Arc<Door>,
    tls: Option<Arc<Tls>>,
    stopped: watch::Receiver<bool>,
) {
    let Accepted {
        stream,
        remote,
        place,
    } = accepted;
    match tls {
        None => http(stream, remote, door, stopped).await,
        Some(tls) => match tls.accept_http1(stream).await {
            Ok(stream) => http(stream, remote, door, stopped).await,
            Err(err) => tracing::debug!(%remote, %err, "a cloud API TLS handshake failed"),
        },
    }
    drop(place);
}

async fn http<S>(stream: S, remote: SocketAddr, door: Arc<Door>, mut stopped: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let door = Arc::clone(&door);
        async move { Ok::<_, Infallible>(respond(&door, request, remote).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = async move {
        // A dropped sender is a stop too.
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = served {
        tracing::debug!(%remote, %err, "a cloud API connection ended with an error");
    }
}

/// Reads the body (within [`MAX_BODY_BYTES`]) and answers: always 200 and
/// `application/json`, as Tencent's clients expect.
async fn respond(
    door: &Door,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> http::Response<Full<Bytes>> {
    let (head, body) = request.into_parts();
    let answer = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(body) => door.answer(&head, &body.to_bytes(), Some(remote)).await,
        Err(err) if err.is::<http_body_util::LengthLimitError>() => door.refuse(&ApiError::new(
            "RequestSizeLimitExceeded",
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        )),
        Err(err) => door.refuse(&ApiError::new(
            "InvalidParameter",
            format!("the request body could not be read: {err}"),
        )),
    };
    let mut response = http::Response::new(Full::new(answer));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
