//! Frames handed from one worker to another.
//!
//! Each worker owns its connection table, and a NIC's RSS puts a flow's packets on one
//! queue. A NAT connection's packets come both ways, as two flows (client to VIP, real
//! server to client) that RSS may put on two queues. So on several queues the worker
//! that holds a NAT connection is chosen by its client's address and port
//! ([`crate::Tables::set_shard`]), and a packet that arrives elsewhere is answered
//! [`crate::Verdict::Handoff`]: its worker copies it into a free buffer of a pool shared
//! by all workers and queues it in the owner's inbox; the owner processes it there,
//! between two batches, and sends it with [`crate::device::Device::send`] (a copy into
//! its own UMEM). The pool and the inboxes are bounded lock-free queues filled once at
//! start: nothing is allocated or locked on the way. A packet that finds no free buffer
//! or a full inbox is lost (counted `handoff_lost`), as a full RX ring would lose it.

use crossbeam_channel::{bounded, Receiver, Sender};

/// The room of a hand-off buffer: a UMEM frame's room for a received frame.
pub const BUFFER: usize = 2048 - 256;

type Buf = Box<[u8; BUFFER]>;

/// A frame in a hand-off buffer.
pub(crate) struct Handed {
    pub(crate) len: usize,
    pub(crate) buf: Buf,
}

/// The inboxes of `n` workers and their shared pool of buffers.
pub struct Handoff {
    inbox_tx: Vec<Sender<Handed>>,
    inbox_rx: Vec<Receiver<Handed>>,
    pool_tx: Sender<Buf>,
    pool_rx: Receiver<Buf>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("workers", &self.inbox_tx.len())
            .field("free", &self.pool_rx.len())
            .finish()
    }
}

impl Handoff {
    /// Inboxes for `workers` workers, each holding up to `per_worker` frames, and as many
    /// buffers in all (allocated here, once).
    pub fn new(workers: usize, per_worker: usize) -> Handoff {
        let total = workers * per_worker;
        let (pool_tx, pool_rx) = bounded(total);
        for _ in 0..total {
            let _ = pool_tx.try_send(Box::new([0u8; BUFFER]));
        }
        let (inbox_tx, inbox_rx) = (0..workers).map(|_| bounded(per_worker)).unzip();
        Handoff {
            inbox_tx,
            inbox_rx,
            pool_tx,
            pool_rx,
        }
    }

    /// How many workers hand frames to each other.
    pub fn workers(&self) -> usize {
        self.inbox_tx.len()
    }

    /// Copies `frame` into a free buffer and queues it for worker `to`. False (nothing
    /// queued) when no buffer is free, `to`'s inbox is full, or the frame does not fit.
    pub fn give(&self, to: usize, frame: &[u8]) -> bool {
        let Some(inbox) = self.inbox_tx.get(to) else {
            return false;
        };
        if frame.len() > BUFFER {
            return false;
        }
        let Ok(mut buf) = self.pool_rx.try_recv() else {
            return false;
        };
        buf[..frame.len()].copy_from_slice(frame);
        match inbox.try_send(Handed {
            len: frame.len(),
            buf,
        }) {
            Ok(()) => true,
            Err(e) => {
                self.recycle(e.into_inner().buf);
                false
            }
        }
    }

    /// The next frame handed to worker `me`, if any.
    pub(crate) fn take(&self, me: usize) -> Option<Handed> {
        self.inbox_rx.get(me)?.try_recv().ok()
    }

    /// Gives a buffer back to the pool.
    pub(crate) fn recycle(&self, buf: Buf) {
        let _ = self.pool_tx.try_send(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reaches_its_worker_and_its_buffer_comes_back() {
        let h = Handoff::new(2, 1);
        assert!(h.give(1, &[7; 60]));
        assert!(h.take(0).is_none());
        let got = h.take(1).expect("handed");
        assert_eq!(&got.buf[..got.len], &[7; 60]);
        // One buffer per worker: two in all, one in use.
        assert!(h.give(0, &[1; 60]));
        assert!(!h.give(0, &[2; 60]), "no free buffer");
        h.recycle(got.buf);
        assert!(!h.give(0, &[3; 60]), "worker 0's inbox holds one");
        assert!(h.give(1, &[4; 60]));
        assert!(!h.give(2, &[5; 60]), "no such worker");
    }
}
