//! Where frames come from and go to. The worker loop is generic over [`Device`], so the
//! same loop runs over AF_XDP (`XskDevice`, with the `afxdp` feature) and over
//! [`MemDevice`] in tests.
//!
//! # Frame ownership
//!
//! A received frame is a move-only token ([`Device::Frame`]): neither `Copy` nor
//! `Clone`, built only by its device. [`Device::transmit`] and [`Device::release`] take
//! tokens by value (out of the caller's vector), so once a frame is handed to a ring, safe
//! code holds nothing that could read or write it while the kernel owns it. Using a token
//! with a device other than the one that received it panics (a programming error, checked
//! on every access). Dropping a token instead of giving it back is safe but loses the
//! buffer until the device is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::packet::Packet;

/// A source and sink of Ethernet frames, in batches, with frames rewritten in place.
pub trait Device {
    /// A received frame, owned by the caller until it hands it back with
    /// [`Device::transmit`] or [`Device::release`]. Implementations make it move-only.
    type Frame;

    /// Moves transmitted frames back to the receive side and does whatever keeps the
    /// receive side going. Called once per loop.
    fn housekeeping(&mut self);

    /// Has frames queued for transmission sent (a system call on AF_XDP). Called once per
    /// loop, after [`Device::housekeeping`]; the worker calls it after it has prefetched
    /// what the batch in hand needs, so that those loads complete meanwhile.
    fn kick(&mut self) {}

    /// Appends up to `max` received frames to `out` (whose capacity the caller keeps, so
    /// nothing is allocated).
    fn receive(&mut self, out: &mut Vec<Self::Frame>, max: usize);

    /// The bytes of a received frame.
    fn frame<'a>(&'a self, f: &'a Self::Frame) -> &'a [u8];

    /// A received frame, for rewriting in place, with the room its buffer has behind it
    /// (a tunnel's headers take some). The length it has when the borrow ends is the
    /// frame's: the token keeps it, and the device sends that many bytes.
    fn frame_mut<'a>(&'a mut self, f: &'a mut Self::Frame) -> Packet<'a>;

    /// Says which way a received frame is to leave, before it is given to
    /// [`Device::transmit`]. A device with one interface has one way and ignores it; a
    /// two-armed one ([`crate::arms::Arms`]) sends it by that side.
    #[inline]
    fn direct(&mut self, _f: &mut Self::Frame, _to: Egress) {}

    /// Queues frames for transmission, from the front of `frames`, as many as the ring
    /// takes, and removes them from `frames`. What is left (the ring was full) is still
    /// the caller's, to release or to try again.
    fn transmit(&mut self, frames: &mut Vec<Self::Frame>);

    /// Gives every frame of `frames` back to the receive side without sending it, leaving
    /// `frames` empty.
    fn release(&mut self, frames: &mut Vec<Self::Frame>);

    /// Sends a frame of our own (e.g. a gratuitous ARP). Returns false when no buffer or
    /// ring slot is free.
    fn send(&mut self, bytes: &[u8]) -> bool;

    /// Blocks up to `timeout_ms` until a frame may be ready (idle back-off). Returns
    /// whether something arrived.
    fn wait(&mut self, timeout_ms: i32) -> bool;

    /// The device's own counters, for devices that have them (a syscall: call it
    /// seldom, never per frame).
    fn stats(&self) -> Option<DeviceStats> {
        None
    }
}

/// Which way a frame leaves the director, from its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Back where it came from (an answer: ARP, echo, fragmentation needed).
    Back,
    /// To a real server.
    Servers,
    /// To a client (a NAT reply).
    Clients,
}

/// Counters of an AF_XDP socket: the kernel's (`XDP_STATISTICS`) and its wake-ups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Received frames the kernel dropped for other reasons.
    pub rx_dropped: u64,
    /// Received frames dropped for an invalid descriptor.
    pub rx_invalid_descs: u64,
    /// Received frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty: u64,
    /// Frames to send dropped for an invalid descriptor.
    pub tx_invalid_descs: u64,
    /// Times the kernel found the TX ring empty.
    pub tx_ring_empty: u64,
    /// Wake-up calls made to the kernel (TX kicks and fill-ring wake-ups).
    pub wakeups: u64,
}

/// A process-unique device number, stamped into every frame token a device hands out.
pub(crate) fn next_device_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A frame received from a [`MemDevice`]: a move-only token.
///
/// It cannot be copied or cloned, so a frame handed back cannot be touched again:
///
/// ```compile_fail
/// use xdpvs_dataplane::device::{Device, MemDevice};
/// let mut dev = MemDevice::new(1);
/// dev.inject(&[0; 60]);
/// let mut rx = Vec::new();
/// dev.receive(&mut rx, 1);
/// let kept = rx[0].clone(); // error: MemFrame is not Clone
/// dev.release(&mut rx);
/// dev.frame(&kept);
/// ```
#[derive(Debug)]
pub struct MemFrame {
    index: usize,
    owner: u32,
    len: usize,
}

/// An in-memory device for tests: frames injected on one side, transmitted frames
/// collected on the other. Buffers are recycled like UMEM frames, and have as much room
/// behind a frame as a UMEM frame does ([`MemDevice::BUFFER`] bytes in all).
#[derive(Debug)]
pub struct MemDevice {
    id: u32,
    buffers: Vec<Vec<u8>>,
    lens: Vec<usize>,
    free: Vec<usize>,
    rx: VecDeque<usize>,
    /// Frames transmitted, in order.
    pub transmitted: Vec<Vec<u8>>,
    /// How many frames [`MemDevice::transmit`] accepts per call (to test a full ring).
    pub tx_room: Option<usize>,
    /// Frames given back without being sent.
    pub released: usize,
}

impl MemDevice {
    /// The size of a buffer: an AF_XDP UMEM frame's room for a received frame.
    pub const BUFFER: usize = 2048 - 256;

    /// A device with `buffers` frame buffers.
    pub fn new(buffers: usize) -> MemDevice {
        MemDevice {
            id: next_device_id(),
            buffers: vec![Vec::new(); buffers],
            lens: vec![0; buffers],
            free: (0..buffers).rev().collect(),
            rx: VecDeque::new(),
            transmitted: Vec::new(),
            tx_room: None,
            released: 0,
        }
    }

    /// Queues a frame for reception; false when every buffer is in use.
    pub fn inject(&mut self, frame: &[u8]) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        let b = &mut self.buffers[i];
        b.clear();
        b.extend_from_slice(frame);
        b.resize(frame.len().max(Self::BUFFER), 0);
        self.lens[i] = frame.len();
        self.rx.push_back(i);
        true
    }

    /// Buffers neither free nor waiting: held by the caller (should be 0 between loops).
    pub fn outstanding(&self) -> usize {
        self.buffers.len() - self.free.len() - self.rx.len()
    }

    fn index(&self, f: &MemFrame) -> usize {
        assert_eq!(
            f.owner, self.id,
            "a frame used with a device that did not receive it"
        );
        f.index
    }
}

impl Device for MemDevice {
    type Frame = MemFrame;

    fn housekeeping(&mut self) {}

    fn receive(&mut self, out: &mut Vec<MemFrame>, max: usize) {
        let n = max.min(self.rx.len());
        let owner = self.id;
        let lens = &self.lens;
        out.extend(self.rx.drain(..n).map(|index| MemFrame {
            index,
            owner,
            len: lens[index],
        }));
    }

    fn frame<'a>(&'a self, f: &'a MemFrame) -> &'a [u8] {
        &self.buffers[self.index(f)][..f.len]
    }

    fn frame_mut<'a>(&'a mut self, f: &'a mut MemFrame) -> Packet<'a> {
        let i = self.index(f);
        Packet::new(&mut self.buffers[i], &mut f.len)
    }

    fn transmit(&mut self, frames: &mut Vec<MemFrame>) {
        let n = self.tx_room.map_or(frames.len(), |r| r.min(frames.len()));
        for f in frames.drain(..n) {
            let i = self.index(&f);
            self.transmitted.push(self.buffers[i][..f.len].to_vec());
            self.free.push(i);
        }
    }

    fn release(&mut self, frames: &mut Vec<MemFrame>) {
        self.released += frames.len();
        for f in frames.drain(..) {
            let i = self.index(&f);
            self.free.push(i);
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.transmitted.push(bytes.to_vec());
        true
    }

    fn wait(&mut self, _timeout_ms: i32) -> bool {
        !self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "did not receive it")]
    fn a_token_of_another_device_is_refused() {
        let mut a = MemDevice::new(2);
        let b = MemDevice::new(2);
        a.inject(&[1, 2, 3]);
        let mut got = Vec::new();
        a.receive(&mut got, 1);
        let _ = b.frame(&got[0]);
    }

    #[test]
    fn transmit_takes_what_fits_and_leaves_the_rest() {
        let mut d = MemDevice::new(4);
        for i in 0..3u8 {
            d.inject(&[i]);
        }
        let mut got = Vec::new();
        d.receive(&mut got, 8);
        d.tx_room = Some(2);
        d.transmit(&mut got);
        assert_eq!(got.len(), 1);
        assert_eq!(d.transmitted, vec![vec![0], vec![1]]);
        d.release(&mut got);
        assert!(got.is_empty());
        assert_eq!(d.outstanding(), 0);
    }
}
