//! The TLS connections the gRPC port serves: a task accepts TCP connections and
//! runs each handshake on a task of its own, under a timeout, so a slow or
//! failed handshake never holds up the others or stops the server.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{check, PeerInfo};
use super::Tls;
use crate::listener::{Accepted, Held};

/// Longest a client may take over its handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection after its handshake.
pub type TlsConn = Held<tokio_rustls::server::TlsStream<TcpStream>, PeerInfo>;

/// The TLS connections made of those `accepted` hands over; it ends when
/// the server drops it.
pub fn incoming(mut accepted: mpsc::Receiver<Accepted>, tls: Arc<Tls>) -> ReceiverStream<TlsConn> {
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
                place,
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
                        let conn = TlsConn::new(stream, info, place);
                        let _ = tx.send(conn).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%remote, %err, "a TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "a TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
