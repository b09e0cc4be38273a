//! Where frames come from and go to. The worker loop is generic over [`Device`], so the
//! same loop runs over AF_XDP ([`crate::sys::xsk::XskDevice`]) and over [`MemDevice`] in
//! tests.

use std::collections::VecDeque;

/// A source and sink of Ethernet frames, in batches, with frames rewritten in place.
///
/// A received frame is owned by the caller until it hands it back with
/// [`Device::transmit`] or [`Device::release`] (exactly one of them).
pub trait Device {
    /// A handle on one frame buffer.
    type Desc: Copy;

    /// Moves transmitted frames back to the receive side and does whatever keeps the
    /// device going (kicking transmission). Called once per loop.
    fn housekeeping(&mut self);

    /// Appends up to `max` received frames to `out` (whose capacity the caller keeps, so
    /// nothing is allocated).
    fn receive(&mut self, out: &mut Vec<Self::Desc>, max: usize);

    /// The bytes of a received frame.
    fn frame(&self, d: &Self::Desc) -> &[u8];

    /// The bytes of a received frame, for rewriting in place (length unchanged).
    fn frame_mut(&mut self, d: &mut Self::Desc) -> &mut [u8];

    /// Queues frames for transmission; returns how many were accepted (the first ones).
    /// The caller releases the rest.
    fn transmit(&mut self, descs: &[Self::Desc]) -> usize;

    /// Gives frames back to the receive side without sending them.
    fn release(&mut self, descs: &[Self::Desc]);

    /// Sends a frame of our own (e.g. a gratuitous ARP). Returns false when no buffer or
    /// ring slot is free.
    fn send(&mut self, bytes: &[u8]) -> bool;

    /// Blocks up to `timeout_ms` until a frame may be ready (idle back-off). Returns
    /// whether something arrived.
    fn wait(&mut self, timeout_ms: i32) -> bool;
}

/// An in-memory device for tests: frames injected on one side, transmitted frames
/// collected on the other. Buffers are recycled like UMEM frames.
#[derive(Debug, Default)]
pub struct MemDevice {
    buffers: Vec<Vec<u8>>,
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
    /// A device with `buffers` frame buffers.
    pub fn new(buffers: usize) -> MemDevice {
        MemDevice {
            buffers: vec![Vec::new(); buffers],
            free: (0..buffers).rev().collect(),
            ..MemDevice::default()
        }
    }

    /// Queues a frame for reception; false when every buffer is in use.
    pub fn inject(&mut self, frame: &[u8]) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        self.buffers[i].clear();
        self.buffers[i].extend_from_slice(frame);
        self.rx.push_back(i);
        true
    }

    /// Buffers neither free nor waiting: held by the caller (should be 0 between loops).
    pub fn outstanding(&self) -> usize {
        self.buffers.len() - self.free.len() - self.rx.len()
    }
}

impl Device for MemDevice {
    type Desc = usize;

    fn housekeeping(&mut self) {}

    fn receive(&mut self, out: &mut Vec<usize>, max: usize) {
        let n = max.min(self.rx.len());
        out.extend(self.rx.drain(..n));
    }

    fn frame(&self, d: &usize) -> &[u8] {
        &self.buffers[*d]
    }

    fn frame_mut(&mut self, d: &mut usize) -> &mut [u8] {
        &mut self.buffers[*d]
    }

    fn transmit(&mut self, descs: &[usize]) -> usize {
        let n = self.tx_room.map_or(descs.len(), |r| r.min(descs.len()));
        for &d in &descs[..n] {
            self.transmitted.push(self.buffers[d].clone());
            self.free.push(d);
        }
        n
    }

    fn release(&mut self, descs: &[usize]) {
        self.released += descs.len();
        self.free.extend_from_slice(descs);
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.transmitted.push(bytes.to_vec());
        true
    }

    fn wait(&mut self, _timeout_ms: i32) -> bool {
        !self.rx.is_empty()
    }
}
