//! The pure pipeline's cost per packet at a given connection-table occupancy: the loop
//! a worker runs (batches of 32, prefetch, then process), without a device.

use std::hint::black_box;
use std::time::Instant;

use xdpvs_dataplane::{
    prefetch, prefetch_frame, prefetch_landing, process_packet, Packet, Probe, Tables, Verdict,
};
use xdpvs_sched::Time;

use crate::established;

/// Established flows and their frames, replayed in batches as a worker sees them.
#[derive(Debug)]
pub struct Replay {
    tables: Tables,
    /// The frames, one after the other.
    frames: Vec<u8>,
    /// Bytes of each frame (all are the same length).
    len: usize,
    /// 32 buffers of a UMEM frame's room (a tunnel's headers go in front of a packet).
    batch: Vec<Vec<u8>>,
    /// Two-armed: the other side's buffers, which every forwarded frame is copied into
    /// (as `Arms` copies a frame that crosses into a UMEM frame of the other socket).
    other: Option<Vec<Vec<u8>>>,
    next: usize,
}

/// Frames processed together, as a worker's pass takes them (up to its batch).
const BATCH: usize = 32;
/// The room of a buffer: an AF_XDP UMEM frame's for a received frame.
const ROOM: usize = 2048 - 256;

impl Replay {
    /// Tables holding `flows` established TCP flows (capacity at least `flows`).
    pub fn new(flows: u32) -> Replay {
        let cap = (flows as usize).max(1024);
        let (tables, acks) = established(flows, cap);
        Replay::with(tables, &acks)
    }

    /// Replays `acks` (frames of flows established in `tables`, all of one length).
    pub fn with(tables: Tables, acks: &[Vec<u8>]) -> Replay {
        let len = acks.first().map_or(0, Vec::len);
        let mut frames = Vec::with_capacity(len * acks.len());
        for a in acks {
            assert_eq!(a.len(), len, "frames of one length");
            frames.extend_from_slice(a);
        }
        Replay {
            tables,
            frames,
            len,
            batch: vec![vec![0; ROOM]; BATCH],
            other: None,
            next: 0,
        }
    }

    /// As [`Replay::with`], for a two-armed director: every frame forwarded crosses to
    /// the other interface, copied into a buffer of its own.
    pub fn crossing(tables: Tables, acks: &[Vec<u8>]) -> Replay {
        Replay {
            other: Some(vec![vec![0; ROOM]; BATCH]),
            ..Replay::with(tables, acks)
        }
    }

    fn count(&self) -> usize {
        self.frames.len() / self.len.max(1)
    }

    /// The tables (to check counters).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Processes `packets` packets, flow after flow, in batches of 32: each batch is
    /// copied in (standing in for the NIC writing the frames), prefetched (headers, then
    /// connection slots), processed.
    /// Returns how many were transmitted.
    #[inline(never)]
    pub fn run(&mut self, packets: u64, now: Time) -> u64 {
        let mut left = packets;
        let mut tx = 0u64;
        while left > 0 {
            let n = left.min(BATCH as u64) as usize;
            let count = self.count();
            if self.next + n > count {
                self.next = 0;
            }
            let n = n.min(count);
            let len = self.len;
            let from = &self.frames[self.next * len..(self.next + n) * len];
            for (b, f) in self.batch[..n].iter_mut().zip(from.chunks_exact(len)) {
                b[..len].copy_from_slice(f);
            }
            for f in &self.batch[..n] {
                prefetch_frame(&f[..len]);
            }
            let mut probes = [Probe::None; BATCH];
            for (f, p) in self.batch[..n].iter().zip(&mut probes) {
                *p = prefetch(&f[..len], &self.tables);
            }
            for p in &probes[..n] {
                prefetch_landing(p, &self.tables);
            }
            for (i, f) in self.batch[..n].iter_mut().enumerate() {
                let mut l = len;
                let v = process_packet(&mut Packet::new(f, &mut l), &mut self.tables, now);
                let sent = matches!(black_box(v), Verdict::Tx | Verdict::ToClient);
                tx += u64::from(sent);
                if let (true, Some(other)) = (sent, self.other.as_mut()) {
                    other[i][..l].copy_from_slice(&f[..l]);
                    black_box(&other[i]);
                }
            }
            self.next += n;
            left -= n as u64;
        }
        tx
    }
}

/// The measured part, kept out of line so that callgrind can collect it alone
/// (`--toggle-collect=*xdpvs_bench_measure*`).
#[inline(never)]
pub fn xdpvs_bench_measure(r: &mut Replay, packets: u64, now: Time) -> u64 {
    r.run(packets, now)
}

/// Nanoseconds per packet over `packets` packets (after one warm pass over the flows).
pub fn ns_per_packet(r: &mut Replay, packets: u64) -> f64 {
    let now = Time::from_secs(2);
    r.run(r.count() as u64, now);
    let start = Instant::now();
    let tx = xdpvs_bench_measure(r, packets, now);
    let ns = start.elapsed().as_nanos() as f64 / packets as f64;
    assert_eq!(
        tx, packets,
        "every packet of an established flow is forwarded"
    );
    ns
}
