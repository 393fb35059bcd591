//! The TLS connections tonic serves: a task accepts TCP connections and
//! runs each handshake on a task of its own, under a timeout, so a slow or
//! failed handshake never holds up the others or stops the server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::client::{check, PeerInfo};
use super::Tls;
use crate::listener::Accepted;

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection after its handshake.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    _permit: OwnedSemaphorePermit,
}

/// The TLS connections made of those `accepted` hands over; it ends when
/// tonic drops it.
pub fn incoming(
    mut accepted: mpsc::Receiver<Accepted>,
    tls: Arc<Tls>,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = accepted.recv() => next,
                () = tx.closed() => return,
            };
            let Some(Accepted {
                stream: tcp,
                remote,
                permit,
            }) = next
            else {
                return;
            };
            let (acceptor, verifier) = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let client =
                            check(verifier.as_ref(), stream.get_ref().1.peer_certificates());
                        let info = PeerInfo {
                            remote: Some(remote),
                            client,
                        };
                        let conn = TlsConn {
                            stream,
                            info,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%remote, %err, "a TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "a TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
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

    // As for plaintext (grpc/transport.rs): h2 then gathers small frames
    // into one write, which here is one TLS record.
    fn is_write_vectored(&self) -> bool {
        false
    }
}
