//! Accepting TCP connections within bounds: at most a set number open at
//! once, and a share of them per peer address; at the cap, room made by
//! closing the connection idle longest (more wait in the kernel's backlog
//! while every connection has a call open); a backoff instead of a spin
//! when the process is out of descriptors (EMFILE, ENFILE), and the soft
//! descriptor limit raised to the hard one at start, with the cap kept
//! below it, so sockets never starve the store of descriptors.

mod connections;
mod held;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

pub use connections::{CallGuard, Calls, Connections, Counts, Place};
pub use held::{Held, FIRST_BYTES_TIMEOUT};

/// Descriptors kept for the store, logs and the rest, out of the limit.
const RESERVED: u64 = 256;
/// Longest wait between tries to accept while accepting fails.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// An accepted connection, counted against the cap until dropped.
pub struct Accepted {
    /// The connection.
    pub stream: TcpStream,
    /// Who is on the other end.
    pub remote: SocketAddr,
    /// Its place under the cap and in its peer's share.
    pub place: Place,
}

/// Raises the soft limit on open descriptors to the hard one, and returns
/// the cap on connections that leaves room for everything else: `wanted`,
/// or less when the limit is lower.
pub fn connection_cap(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    };
    let room = limit.saturating_sub(RESERVED.min(limit / 2)).max(1);
    let cap = wanted.min(usize::try_from(room).unwrap_or(usize::MAX));
    if cap < wanted {
        tracing::info!(
            limit,
            cap,
            "the open-file limit caps connections below --max-connections"
        );
    }
    cap
}

/// The places under the connection cap, shared by every port of a server
/// (the gRPC port and the cloud API door): the cap keeps all of them
/// together under the descriptor limit, and a peer's share counts both.
#[derive(Debug, Clone)]
pub struct Places {
    free: Arc<Semaphore>,
    connections: Arc<Connections>,
}

impl Places {
    /// [`connection_cap`]`(wanted)` places, at most `per_peer` of them
    /// held from one address, counted in `counts`.
    pub fn new(wanted: usize, per_peer: usize, counts: Counts) -> Self {
        let cap = connection_cap(wanted);
        counts.max.set(i64::try_from(cap).unwrap_or(i64::MAX));
        Self {
            free: Arc::new(Semaphore::new(cap)),
            connections: Arc::new(Connections::new(per_peer, counts)),
        }
    }

    /// A place for a connection from `remote`: at once when one is free;
    /// at the cap, once the connection idle longest (asked to close here)
    /// has gone, or any other; `None` when `remote` holds its share.
    async fn take(&self, remote: SocketAddr) -> Option<Place> {
        // Checked first too, so a refused connection never waits for a
        // place nor makes another close.
        if self.connections.peer_full(remote.ip()) {
            return self.connections.refuse(remote.ip());
        }
        let permit = match Arc::clone(&self.free).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !self.connections.close_longest_idle() {
                    tracing::debug!(
                        "at the connection cap, every connection busy; a new one waits"
                    );
                }
                Arc::clone(&self.free).acquire_owned().await.ok()?
            }
        };
        // Refused (and counted) there if another port took the peer's
        // last share meanwhile.
        self.connections.register(remote.ip(), permit)
    }
}

/// Accepts connections on `listener`, each holding a place while open,
/// until the receiver is dropped.
pub fn accept(listener: TcpListener, places: Places) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        let mut failing = false;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((stream, remote)) => {
                    if failing {
                        tracing::info!("accepting connections again");
                    }
                    (backoff, failing) = (Duration::from_millis(10), false);
                    // Without TCP_NODELAY, a response split over two segments
                    // waits for the client's delayed ACK: about 40 ms a call.
                    let _ = stream.set_nodelay(true);
                    let place = tokio::select! {
                        place = places.take(remote) => place,
                        () = tx.closed() => return,
                    };
                    // Refused: dropping the stream closes it.
                    let Some(place) = place else { continue };
                    let accepted = Accepted {
                        stream,
                        remote,
                        place,
                    };
                    if tx.send(accepted).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    // Out of descriptors, for one: wait for some to close
                    // rather than spin; say so once per episode.
                    if !failing {
                        tracing::warn!(%err, "cannot accept connections; backing off until it works");
                        failing = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    rx
}
