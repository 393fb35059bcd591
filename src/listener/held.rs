//! An accepted connection as the gRPC port serves it, plaintext or TLS: it
//! holds its place under the connection cap while open, tells h2 it does no
//! vectored writes (see `grpc/transport.rs`: h2 then gathers small frames
//! into one write, which over TLS is one record), and, for plaintext, is
//! closed when its client sends nothing within [`FIRST_BYTES_TIMEOUT`]
//! (HTTP/2 keepalive only starts once the connection is up, so a client
//! that never sends its preface would hold its place for good; TLS has
//! its handshake's timeout).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{Accepted, Calls, Connections, Place};

/// How long a plaintext connection may stay silent after it is accepted.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection `S` that tonic sees with `info`.
#[derive(Debug)]
pub struct Held<S, I> {
    stream: S,
    info: I,
    place: Place,
    /// Until the first bytes arrive: when the connection is closed.
    silent_until: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S, I> Held<S, I> {
    /// `stream`, holding `place` while open.
    pub fn new(stream: S, info: I, place: Place) -> Self {
        Self {
            stream,
            info,
            place,
            silent_until: None,
        }
    }

    /// The connection's calls, and its requests to close.
    pub fn calls(&self) -> Arc<Calls> {
        Arc::clone(self.place.calls())
    }

    /// Where the connection is counted.
    pub fn connections(&self) -> Arc<Connections> {
        Arc::clone(self.place.connections())
    }
}

impl Held<TcpStream, TcpConnectInfo> {
    /// A plaintext connection, closed unless its first bytes come within
    /// [`FIRST_BYTES_TIMEOUT`].
    pub fn plaintext(accepted: Accepted) -> Self {
        let info = accepted.stream.connect_info();
        Self {
            silent_until: Some(Box::pin(tokio::time::sleep(FIRST_BYTES_TIMEOUT))),
            ..Self::new(accepted.stream, info, accepted.place)
        }
    }
}

impl<S: AsyncRead + Unpin, I: Unpin> AsyncRead for Held<S, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.silent_until.is_some() {
            if buf.filled().len() > before || !matches!(read, Poll::Pending) {
                self.silent_until = None;
            } else if self
                .silent_until
                .as_mut()
                .is_some_and(|until| until.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing within the first-bytes timeout",
                )));
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin, I: Unpin> AsyncWrite for Held<S, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<S, I: Clone + Send + Sync + 'static> Connected for Held<S, I> {
    type ConnectInfo = I;

    fn connect_info(&self) -> I {
        self.info.clone()
    }
}
