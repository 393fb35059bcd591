//! Open `Subscribe` streams, bounded: a cap on all of them and one per
//! connection, each answered with RESOURCE_EXHAUSTED and a reason of its
//! own, and a small bound on what any one of them holds, so a subscriber
//! that never reads costs little whatever it does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tonic::{Code, Status};

use crate::metrics::LedgerMetrics;

/// The reason of a subscription over a cap.
pub const TOO_MANY_SUBSCRIPTIONS: &str = "ResourceExhausted.TooManySubscriptions";

/// Catch-up reads of the store running at once for all subscribers (each
/// on a blocking thread), so many subscribers do not mean many threads.
const READERS: usize = 4;

/// The caps, and who holds what.
pub struct Subscriptions {
    max: usize,
    per_connection: usize,
    open: Mutex<Open>,
    readers: Semaphore,
    metrics: Arc<LedgerMetrics>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_connection: HashMap<SocketAddr, usize>,
}

impl Subscriptions {
    /// At most `max` streams in all and `per_connection` on one connection.
    pub fn new(max: usize, per_connection: usize, metrics: Arc<LedgerMetrics>) -> Arc<Self> {
        metrics
            .subscriptions_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        Arc::new(Self {
            max,
            per_connection,
            open: Mutex::new(Open::default()),
            readers: Semaphore::new(READERS),
            metrics,
        })
    }

    /// A place for one more stream from `peer`, or the refusal.
    pub fn admit(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Permit, Status> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.total >= self.max {
            return Err(super::refusal(
                Code::ResourceExhausted,
                format!(
                    "this server serves at most {} subscriptions; retry later",
                    self.max
                ),
                TOO_MANY_SUBSCRIPTIONS,
            ));
        }
        if let Some(peer) = peer {
            let on_it = open.by_connection.entry(peer).or_default();
            if *on_it >= self.per_connection {
                return Err(super::refusal(
                    Code::ResourceExhausted,
                    format!(
                        "a connection may hold at most {} subscriptions",
                        self.per_connection
                    ),
                    TOO_MANY_SUBSCRIPTIONS,
                ));
            }
            *on_it += 1;
        }
        open.total += 1;
        self.metrics.subscriptions.inc();
        Ok(Permit {
            subscriptions: Arc::clone(self),
            peer,
        })
    }

    /// Waits for a turn to read the store for a catch-up.
    pub async fn read_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.readers.acquire().await.ok()
    }
}

/// One open stream, counted until dropped.
pub struct Permit {
    subscriptions: Arc<Subscriptions>,
    peer: Option<SocketAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let subs = &self.subscriptions;
        let mut open = subs
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total -= 1;
        if let Some(peer) = self.peer {
            if let Some(on_it) = open.by_connection.get_mut(&peer) {
                *on_it -= 1;
                if *on_it == 0 {
                    open.by_connection.remove(&peer);
                }
            }
        }
        subs.metrics.subscriptions.dec();
    }
}

/// The address of the connection a request came on, plaintext or TLS.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    peer_in(request.extensions())
}

/// The address of the connection whose request carries `extensions`
/// (put there by `server::http2`): plaintext or TLS.
pub fn peer_in(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .or_else(|| {
            extensions
                .get::<crate::tls::PeerInfo>()
                .and_then(|peer| peer.remote)
        })
}
