//! `run --offload`: established flows forwarded by the XDP program itself, the workers
//! staying the authority (as the kernel's flowtable offload does for conntrack).
//!
//! The engine decides what the XDP program may forward alone and records it
//! ([`OffloadRec`]): an IPv4 direct-routing TCP connection once it is ESTABLISHED, a UDP
//! flow once it is scheduled; the end of either (FIN or RST seen, expiry, its real server
//! removed or moved). The worker hands the records to the director's offload thread,
//! which updates the program's map and reads its counters back: packets and
//! bytes into the statistics, and a [`Touch`] to the worker for every flow that had
//! traffic, so that expiry and `-c` see the flow as if its packets had crossed the
//! worker. Segments with SYN, FIN or RST, fragments, ICMP and everything else still go
//! to the workers.
//!
//! Pure: records are plain values in a buffer reserved once; nothing here does I/O.

use std::net::Ipv4Addr;

use xdpvs_sched::conn::ConnKey;
use xdpvs_sched::{Mac, Time};

/// A flow the XDP program may forward alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastFlow {
    /// The flow, as the client sends it.
    pub key: ConnKey<Ipv4Addr>,
    /// The real server's MAC (the frame's new destination).
    pub to: Mac,
    /// The director's MAC on the real servers' side (the frame's new source).
    pub from: Mac,
    /// The service's slot (its counters).
    pub service: u32,
    /// The real server's slot (its counters).
    pub dest: u32,
    /// The connection's timeout in its state: idle for longer, it is no longer forwarded
    /// by the XDP program (the worker expires it).
    pub idle: std::time::Duration,
}

/// What a worker tells the offload thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadRec {
    /// The XDP program may forward this flow (again: inserting is idempotent).
    Insert(FastFlow),
    /// The XDP program must leave this flow to the workers from now on.
    Remove(ConnKey<Ipv4Addr>),
    /// Every flow to the real server in this slot goes back to the workers: it was
    /// removed (and its connections are not to drain), or its MAC changed.
    Dest(u32),
}

/// Traffic the XDP program forwarded on a flow, for the worker that holds it: its
/// connection entry is seen at `at`, as if the packets had crossed the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch {
    /// The flow.
    pub key: ConnKey<Ipv4Addr>,
    /// When its latest packets were seen (the worker's clock).
    pub at: Time,
}

/// The records of a worker since the offload thread last took them, at most `cap`
/// between two drains (no allocation on the packet path: the buffer is reserved once).
#[derive(Debug)]
pub(crate) struct OffloadOut {
    pub(crate) recs: Vec<OffloadRec>,
    cap: usize,
    /// Records that did not fit.
    pub(crate) lost: u64,
}

impl OffloadOut {
    pub(crate) fn new(cap: usize) -> OffloadOut {
        OffloadOut {
            recs: Vec::with_capacity(cap),
            cap,
            lost: 0,
        }
    }

    /// Keeps `r` if there is room. A lost `Insert` only leaves a flow to the workers (for
    /// a refresh window); after a lost `Remove` the XDP program forwards the flow until
    /// it is idle for its timeout, or until its next traffic, touched at a worker that
    /// no longer holds it, removes it.
    #[inline]
    pub(crate) fn push(&mut self, r: OffloadRec) {
        if self.recs.len() < self.cap {
            self.recs.push(r);
        } else {
            self.lost += 1;
        }
    }
}
