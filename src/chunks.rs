//! Items handed from one thread to another a chunk at a time: reading a
//! log or a read side on one thread while another decodes or checks what
//! was read. One message per item cost more than the work it carried.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Items sent in chunks of a fixed size, the last one shorter.
pub struct ChunkSender<T> {
    tx: SyncSender<Vec<T>>,
    chunk: Vec<T>,
    size: usize,
}

/// A channel of chunks of `size` items, at most `chunks` of them waiting.
pub fn chunked<T>(size: usize, chunks: usize) -> (ChunkSender<T>, Receiver<Vec<T>>) {
    let (tx, rx) = sync_channel(chunks);
    let sender = ChunkSender {
        tx,
        chunk: Vec::with_capacity(size),
        size,
    };
    (sender, rx)
}

impl<T> ChunkSender<T> {
    /// Adds one item, sending the chunk once it is full; `false` once the
    /// receiver is gone (it stopped early), when the sender should too.
    pub fn push(&mut self, item: T) -> bool {
        self.chunk.push(item);
        if self.chunk.len() < self.size {
            return true;
        }
        let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.size));
        self.tx.send(full).is_ok()
    }

    /// Sends what is left; `false` when the receiver is gone.
    pub fn finish(self) -> bool {
        self.chunk.is_empty() || self.tx.send(self.chunk).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_in_full_chunks_then_the_rest() {
        let (mut tx, rx) = chunked(3, 4);
        assert!((0..7).all(|i| tx.push(i)));
        assert!(tx.finish());
        let chunks: Vec<Vec<i32>> = rx.iter().collect();
        assert_eq!(chunks, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn a_gone_receiver_is_said_at_the_next_send() {
        let (mut tx, rx) = chunked(2, 4);
        drop(rx);
        assert!(tx.push(1));
        assert!(!tx.push(2));
        assert!(tx.push(3));
        assert!(!tx.finish());
    }
}
