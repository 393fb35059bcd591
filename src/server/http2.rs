//! The gRPC port's connections, each served by hyper's HTTP/2 in a task of
//! its own (tonic's server gives no handle on one connection): every call
//! counted on its connection, and a connection closed with a GOAWAY when it
//! has had no call for `--max-connection-idle-secs`, when it is the one idle
//! longest and a new connection needs its place, or at a stop. What tonic's
//! server did besides is here too: the connection's address in each
//! request's extensions, and the call cut off at its `grpc-timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tower::ServiceExt;

use crate::grpc::SmallFrames;
use crate::listener::{CallGuard, Calls, Held};

/// How often an idle connection is pinged, and how long an answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls open at once on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;
/// The request metadata (HTTP/2 header list) the server reads. A call over
/// it is refused on its own (HTTP 431, the stream reset); only a header
/// list over four times it, which h2 takes as abuse, ends the connection.
/// hyper's 16 KiB made 100 KB of metadata end the sender's connection with
/// every call on it; at 64 KiB that takes over 256 KB, while one
/// connection still buffers at most one header list at a time.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// How long an idle connection told to go (GOAWAY) may take to close before
/// it is dropped: its place is wanted, and it has no call to finish.
const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(250);

/// The response body of the layered routes.
pub(super) type ResponseBody = SmallFrames<tonic::body::Body>;
/// The layered routes, as every connection calls them.
pub(super) type Routed = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<ResponseBody>,
    tower::BoxError,
>;

/// Serves each connection `incoming` yields until `until` resolves, then
/// asks each to go (GOAWAY, calls in flight finish) and returns once all
/// have closed.
pub(super) async fn serve<S, I>(
    incoming: impl Stream<Item = Held<S, I>>,
    routes: Routed,
    idle: Duration,
    until: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Clone + Send + Sync + Unpin + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // A peer that stops answering pings is closed, whatever it holds.
        .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    let builder = Arc::new(builder);
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(incoming);
    tokio::pin!(until);
    loop {
        let held = tokio::select! {
            held = incoming.next() => held,
            () = &mut until => break,
        };
        let Some(held) = held else { break };
        tokio::spawn(connection(
            held,
            routes.clone(),
            Arc::clone(&builder),
            idle,
            stopping.clone(),
        ));
    }
    drop(stopping);
    let _ = stop.send(true);
    // Every connection's task holds a receiver until it ends.
    stop.closed().await;
}

/// Why a connection is asked to go.
enum Go {
    Idle,
    Room,
    Stop,
}

/// One connection, until it closes.
async fn connection<S, I>(
    held: Held<S, I>,
    routes: Routed,
    builder: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
    idle: Duration,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Clone + Send + Sync + Unpin + 'static,
{
    let calls = held.calls();
    calls.watch();
    let counted = Counted {
        routes,
        info: held.connect_info(),
        calls: Arc::clone(&calls),
    };
    let connections = held.connections();
    let conn = builder.serve_connection(TokioIo::new(held), counted);
    tokio::pin!(conn);
    let go = loop {
        let idle_at = calls
            .idle_since()
            .map(|since| tokio::time::Instant::from_std(since + idle));
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%err, "a gRPC connection ended with an error");
                }
                return;
            }
            () = calls.changed() => {
                if calls.close_asked() {
                    break Go::Room;
                }
            }
            () = tokio::time::sleep_until(idle_at.unwrap_or(far)), if idle_at.is_some() => {
                if calls.idle_since().is_some_and(|since| since.elapsed() >= idle) {
                    break Go::Idle;
                }
            }
            _ = stopping.wait_for(|stop| *stop) => break Go::Stop,
        }
    };
    conn.as_mut().graceful_shutdown();
    match go {
        Go::Stop => {
            let _ = conn.await;
        }
        Go::Idle | Go::Room => {
            if matches!(go, Go::Idle) {
                connections.closed_idle();
            }
            // Dropped after the grace if the peer does not close.
            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await;
        }
    }
}

/// The routes as one connection calls them: each call counted open on the
/// connection until its response body is done or dropped.
#[derive(Clone)]
struct Counted<I> {
    routes: Routed,
    info: I,
    calls: Arc<Calls>,
}

impl<I: Clone + Send + Sync + 'static> hyper::service::Service<http::Request<Incoming>>
    for Counted<I>
{
    type Response = http::Response<CountedBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send + 'static>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let guard = self.calls.begin();
        let mut request = request.map(tonic::body::Body::new);
        // Where the call came from, as tonic's server put it.
        request.extensions_mut().insert(self.info.clone());
        let deadline = crate::grpc::deadline_of(request.headers());
        let call = self.routes.clone().oneshot(request);
        Box::pin(async move {
            let answered = match deadline {
                Some(deadline) => match tokio::time::timeout(deadline, call).await {
                    Ok(answered) => answered,
                    Err(_) => Err(tonic::Status::deadline_exceeded(
                        "the call's deadline (grpc-timeout) passed before it was answered",
                    )
                    .into()),
                },
                None => call.await,
            };
            let response = answered.unwrap_or_else(|err| {
                tonic::Status::from_error(err)
                    .into_http::<tonic::body::Body>()
                    .map(SmallFrames::new)
            });
            Ok(response.map(|body| CountedBody { body, _call: guard }))
        })
    }
}

/// A response body that keeps its call counted open while it lasts.
pub(super) struct CountedBody {
    body: ResponseBody,
    _call: CallGuard,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
