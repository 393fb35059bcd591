//! The open connections, each with its place under the cap: how many each
//! peer address holds, how many calls each has open and since when it has
//! none, and the choice of which to close to make room: the one idle
//! longest. A connection's task learns here when it is asked to close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// Why a connection was closed or refused: the label of [`Counts::ended`].
pub type Reason = Vec<(&'static str, &'static str)>;

/// What the connections count, for the metrics to register.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Connections open now.
    pub open: Gauge,
    /// The cap on connections open at once (after the descriptor limit).
    pub max: Gauge,
    /// Connections closed or refused by these bounds, by `reason`: `idle`
    /// (no call for the idle time), `room` (idle longest at the cap, closed
    /// for a new one), `peer_share` (refused: the address held its share).
    pub ended: Family<Reason, Counter>,
}

impl Counts {
    fn count(&self, reason: &'static str) {
        self.ended.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// How many were counted with `reason`.
    #[cfg(test)]
    pub fn ended_for(&self, reason: &'static str) -> u64 {
        self.ended.get_or_create(&vec![("reason", reason)]).get()
    }
}

/// Every open connection, by a number of its own.
#[derive(Debug)]
pub struct Connections {
    slots: Mutex<Slots>,
    per_peer: usize,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Slots {
    next: u64,
    by_id: HashMap<u64, Slot>,
    per_peer: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Slot {
    peer: IpAddr,
    calls: Arc<Calls>,
}

impl Connections {
    /// No connection yet; at most `per_peer` from one address.
    pub fn new(per_peer: usize, counts: Counts) -> Self {
        Self {
            slots: Mutex::default(),
            per_peer: per_peer.max(1),
            counts,
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding it leaves counts that are still counts.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a connection from `peer` holding `permit`, or `None`
    /// (counted) when that address already holds its share.
    pub fn register(self: &Arc<Self>, peer: IpAddr, permit: OwnedSemaphorePermit) -> Option<Place> {
        let mut slots = self.slots();
        let held = slots.per_peer.entry(peer).or_default();
        if *held >= self.per_peer {
            drop(slots);
            return self.refuse(peer);
        }
        *held += 1;
        let id = slots.next;
        slots.next += 1;
        let calls = Arc::new(Calls::new());
        let slot = Slot {
            peer,
            calls: Arc::clone(&calls),
        };
        slots.by_id.insert(id, slot);
        self.counts.open.inc();
        Some(Place {
            id,
            connections: Arc::clone(self),
            calls,
            _permit: permit,
        })
    }

    /// Refuses (and counts) a connection from `peer`, which holds its
    /// share: the caller drops it, which closes it. Accepting it at all is
    /// what lets the kernel's backlog move on.
    pub fn refuse(&self, peer: IpAddr) -> Option<Place> {
        tracing::debug!(%peer, "the peer holds its share of connections; closing the new one");
        self.counts.count("peer_share");
        None
    }

    /// Whether `peer` holds its share already.
    pub fn peer_full(&self, peer: IpAddr) -> bool {
        self.slots().per_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer
    }

    /// Asks the connection idle longest (of those whose task listens) to
    /// close; false when every connection has a call open.
    pub fn close_longest_idle(&self) -> bool {
        let slots = self.slots();
        let longest = slots
            .by_id
            .values()
            .filter_map(|slot| slot.calls.idle_since().map(|since| (since, slot)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, slot)) => {
                slot.calls.ask_to_close();
                self.counts.count("room");
                true
            }
            None => false,
        }
    }

    /// Counts a connection closed for being idle.
    pub fn closed_idle(&self) {
        self.counts.count("idle");
    }

    fn release(&self, id: u64) {
        let mut slots = self.slots();
        if let Some(slot) = slots.by_id.remove(&id) {
            if let Some(held) = slots.per_peer.get_mut(&slot.peer) {
                *held -= 1;
                if *held == 0 {
                    slots.per_peer.remove(&slot.peer);
                }
            }
            self.counts.open.dec();
        }
    }
}

/// A connection's hold on its place: under the cap, in its peer's share,
/// and known to [`Connections`] until dropped.
#[derive(Debug)]
pub struct Place {
    id: u64,
    connections: Arc<Connections>,
    calls: Arc<Calls>,
    _permit: OwnedSemaphorePermit,
}

impl Place {
    /// The connection's calls, and its requests to close.
    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    /// Where the connection is counted.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.connections.release(self.id);
    }
}

/// A connection's open calls, since when it has had none, and whether it
/// was asked to close.
#[derive(Debug)]
pub struct Calls {
    state: Mutex<CallState>,
    /// Wakes the connection's task: a call ended or a close was asked.
    changed: Notify,
}

#[derive(Debug)]
struct CallState {
    open: usize,
    idle_since: Instant,
    /// Whether a task closes this connection when asked: only such
    /// connections are chosen to make room.
    watched: bool,
    close_asked: bool,
}

impl Calls {
    fn new() -> Self {
        Self {
            state: Mutex::new(CallState {
                open: 0,
                idle_since: Instant::now(),
                watched: false,
                close_asked: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, CallState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the connection as one whose task watches [`Self::changed`]
    /// and closes it when asked.
    pub fn watch(&self) {
        self.state().watched = true;
    }

    /// Counts a call open until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> CallGuard {
        self.state().open += 1;
        CallGuard {
            calls: Arc::clone(self),
        }
    }

    /// Since when the connection has had no call open, if it has none and
    /// is watched.
    pub fn idle_since(&self) -> Option<Instant> {
        let state = self.state();
        (state.watched && state.open == 0 && !state.close_asked).then_some(state.idle_since)
    }

    /// Whether a close was asked for.
    pub fn close_asked(&self) -> bool {
        self.state().close_asked
    }

    fn ask_to_close(&self) {
        self.state().close_asked = true;
        self.changed.notify_one();
    }

    /// Resolves when a call ends or a close is asked for (or did since
    /// the last time it resolved).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// One open call; dropping it ends the call.
#[derive(Debug)]
pub struct CallGuard {
    calls: Arc<Calls>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self.calls.state();
        state.open -= 1;
        if state.open == 0 {
            state.idle_since = Instant::now();
            drop(state);
            self.calls.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn permit(places: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        Arc::clone(places)
            .try_acquire_owned()
            .expect("a place is free")
    }

    #[test]
    fn a_peer_gets_its_share_and_no_more_until_one_closes() {
        let places = Arc::new(Semaphore::new(10));
        let counts = Counts::default();
        let connections = Arc::new(Connections::new(2, counts.clone()));
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        let first = connections.register(a, permit(&places));
        let second = connections.register(a, permit(&places));
        assert!(first.is_some() && second.is_some());
        assert!(connections.peer_full(a));
        assert!(connections.register(a, permit(&places)).is_none());
        assert_eq!(counts.ended_for("peer_share"), 1);
        // The refused connection's place went back with it.
        assert_eq!(places.available_permits(), 8);
        let other = connections.register(b, permit(&places));
        assert!(other.is_some());
        drop(first);
        assert!(!connections.peer_full(a));
        let again = connections.register(a, permit(&places));
        assert!(again.is_some() && connections.peer_full(a));
        assert_eq!(counts.open.get(), 3);
        drop((second, other, again));
        assert_eq!(counts.open.get(), 0);
        assert_eq!(places.available_permits(), 10);
    }

    #[test]
    fn the_connection_idle_longest_is_asked_to_close_and_busy_ones_never() {
        let places = Arc::new(Semaphore::new(10));
        let connections = Arc::new(Connections::new(10, Counts::default()));
        let peer: IpAddr = [127, 0, 0, 2].into();
        // Idle since they were made, in this order, a moment apart.
        let mut made = Vec::new();
        for _ in 0..4 {
            made.push(connections.register(peer, permit(&places)).expect("room"));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let [unwatched, older, busy, newer] = <[Place; 4]>::try_from(made).expect("four");
        for place in [&older, &busy, &newer] {
            place.calls().watch();
        }
        let call = busy.calls().begin();
        assert!(connections.close_longest_idle());
        assert!(older.calls().close_asked());
        assert!(!unwatched.calls().close_asked() && !newer.calls().close_asked());
        // Asked once: the next choice is another one.
        assert!(connections.close_longest_idle());
        assert!(newer.calls().close_asked());
        assert!(!busy.calls().close_asked());
        assert!(!connections.close_longest_idle());
        drop(call);
        assert!(connections.close_longest_idle());
        assert!(busy.calls().close_asked());
    }
}
