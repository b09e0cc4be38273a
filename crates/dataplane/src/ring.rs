//! A zero-copy NIC modelled in memory: a UMEM and the four AF_XDP rings (fill, RX, TX,
//! completion) of descriptors, with no kernel behind them. The worker sees a
//! [`Device`] that moves descriptors only, as over a zero-copy socket: frames stay where
//! the "NIC" wrote them, are rewritten in place and sent from there. The NIC side
//! ([`RingDevice::nic_receive`], [`RingDevice::nic_transmit`]) is what hardware would
//! do (DMA into frames from the fill ring, completions after sending); the benchmark's
//! zero-copy model times the worker's side alone, and runs the leanest MAC-rewrite loop
//! over the same rings beside it ([`RingDevice::lean_pass`]).

use crate::device::{next_device_id, Device};
use crate::packet::Packet;

/// A UMEM frame's size.
pub const FRAME: usize = 2048;
/// Bytes the "NIC" leaves in front of a received frame (the kernel's XDP headroom).
pub const HEADROOM: usize = 256;

/// A single-producer, single-consumer ring of `T`, as an AF_XDP ring is laid out
/// (power-of-two size, free-running producer and consumer counters).
#[derive(Debug)]
struct Ring<T> {
    slots: Box<[T]>,
    mask: u32,
    prod: u32,
    cons: u32,
}

impl<T: Copy + Default> Ring<T> {
    fn new(size: u32) -> Ring<T> {
        let size = size.next_power_of_two();
        Ring {
            slots: vec![T::default(); size as usize].into_boxed_slice(),
            mask: size - 1,
            prod: 0,
            cons: 0,
        }
    }
    #[inline]
    fn len(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }
    #[inline]
    fn free(&self) -> u32 {
        self.mask + 1 - self.len()
    }
    #[inline]
    fn push(&mut self, v: T) -> bool {
        if self.free() == 0 {
            return false;
        }
        self.slots[(self.prod & self.mask) as usize] = v;
        self.prod = self.prod.wrapping_add(1);
        true
    }
    #[inline]
    fn pop(&mut self) -> Option<T> {
        if self.len() == 0 {
            return None;
        }
        let v = self.slots[(self.cons & self.mask) as usize];
        self.cons = self.cons.wrapping_add(1);
        Some(v)
    }
}

/// An RX or TX descriptor: where a frame starts in the UMEM and its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Desc {
    addr: u32,
    len: u32,
}

/// A frame received from a [`RingDevice`]: a move-only token (see [`crate::device`]).
#[derive(Debug)]
pub struct RingFrame {
    addr: u32,
    len: usize,
    owner: u32,
}

/// The UMEM and rings of one modelled zero-copy socket.
#[derive(Debug)]
pub struct RingDevice {
    id: u32,
    umem: Box<[u8]>,
    fill: Ring<u32>,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    comp: Ring<u32>,
    /// Frames in no ring, for [`Device::send`].
    spare: Vec<u32>,
}

impl RingDevice {
    /// A device of `frames` UMEM frames and rings of `ring` descriptors: half the frames
    /// go to the fill ring (as the director's AF_XDP socket does), the rest are spare.
    pub fn new(frames: u32, ring: u32) -> RingDevice {
        let frames = frames.max(2);
        let mut d = RingDevice {
            id: next_device_id(),
            umem: vec![0; frames as usize * FRAME].into_boxed_slice(),
            fill: Ring::new(ring),
            rx: Ring::new(ring),
            tx: Ring::new(ring),
            comp: Ring::new(ring),
            spare: Vec::with_capacity(frames as usize),
        };
        for f in (0..frames).rev() {
            let addr = f * FRAME as u32 + HEADROOM as u32;
            if f >= frames / 2 || !d.fill.push(addr) {
                d.spare.push(addr);
            }
        }
        d
    }

    /// The NIC receives up to `n` frames: each takes a frame from the fill ring, `write`
    /// puts the packet in it (returning its length) and its descriptor goes on the RX
    /// ring. Returns how many were received (fewer when the fill ring ran dry or the RX
    /// ring is full: a NIC drops those).
    pub fn nic_receive(&mut self, n: usize, mut write: impl FnMut(&mut [u8]) -> usize) -> usize {
        let mut got = 0;
        while got < n && self.rx.free() > 0 {
            let Some(addr) = self.fill.pop() else { break };
            let start = addr as usize;
            let end = start - HEADROOM + FRAME;
            let len = write(&mut self.umem[start..end]).min(end - start);
            self.rx.push(Desc {
                addr,
                len: len as u32,
            });
            got += 1;
        }
        got
    }

    /// The NIC sends every frame on the TX ring (`sent` sees each) and completes it.
    /// Returns how many it sent.
    pub fn nic_transmit(&mut self, mut sent: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while self.comp.free() > 0 {
            let Some(d) = self.tx.pop() else { break };
            sent(&self.umem[d.addr as usize..(d.addr + d.len) as usize]);
            self.comp.push(d.addr);
            n += 1;
        }
        n
    }

    /// Frames waiting on the RX ring.
    pub fn rx_waiting(&self) -> usize {
        self.rx.len() as usize
    }

    /// The leanest MAC-rewrite forwarder over these rings (no [`Device`] layer, no
    /// pipeline): completions back to the fill ring, up to 64 frames off the RX ring,
    /// both MACs written, all of them onto the TX ring (those it has no room for back to
    /// the fill ring). Returns the frames received.
    #[inline(never)]
    pub fn lean_pass(&mut self, dst: [u8; 6], src: [u8; 6]) -> usize {
        while self.fill.free() > 0 {
            let Some(a) = self.comp.pop() else { break };
            self.fill.push(a);
        }
        let mut n = 0;
        while n < 64 {
            let Some(d) = self.rx.pop() else { break };
            let f = &mut self.umem[d.addr as usize..(d.addr + d.len) as usize];
            if f.len() >= 12 {
                f[..6].copy_from_slice(&dst);
                f[6..12].copy_from_slice(&src);
            }
            if !self.tx.push(d) && !self.fill.push(d.addr) {
                self.spare.push(d.addr);
            }
            n += 1;
        }
        n
    }

    fn addr(&self, f: &RingFrame) -> usize {
        assert_eq!(
            f.owner, self.id,
            "a frame used with a device that did not receive it"
        );
        f.addr as usize
    }
}

impl Device for RingDevice {
    type Frame = RingFrame;

    #[inline]
    fn housekeeping(&mut self) {
        while self.fill.free() > 0 {
            let Some(a) = self.comp.pop().or_else(|| self.spare.pop()) else {
                break;
            };
            self.fill.push(a);
        }
    }

    #[inline]
    fn receive(&mut self, out: &mut Vec<RingFrame>, max: usize) {
        let owner = self.id;
        for _ in 0..max {
            let Some(d) = self.rx.pop() else { break };
            out.push(RingFrame {
                addr: d.addr,
                len: d.len as usize,
                owner,
            });
        }
    }

    #[inline]
    fn frame<'a>(&'a self, f: &'a RingFrame) -> &'a [u8] {
        let a = self.addr(f);
        &self.umem[a..a + f.len]
    }

    #[inline]
    fn frame_mut<'a>(&'a mut self, f: &'a mut RingFrame) -> Packet<'a> {
        let a = self.addr(f);
        let end = a - HEADROOM + FRAME;
        Packet::new(&mut self.umem[a..end], &mut f.len)
    }

    #[inline]
    fn transmit(&mut self, frames: &mut Vec<RingFrame>) {
        let n = frames.len().min(self.tx.free() as usize);
        for f in frames.drain(..n) {
            let addr = self.addr(&f) as u32;
            self.tx.push(Desc {
                addr,
                len: f.len as u32,
            });
        }
    }

    #[inline]
    fn release(&mut self, frames: &mut Vec<RingFrame>) {
        for f in frames.drain(..) {
            let addr = self.addr(&f) as u32;
            if !self.fill.push(addr) {
                self.spare.push(addr);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.tx.free() == 0 || bytes.len() > FRAME - HEADROOM {
            return false;
        }
        let Some(addr) = self.spare.pop() else {
            return false;
        };
        let a = addr as usize;
        self.umem[a..a + bytes.len()].copy_from_slice(bytes);
        self.tx.push(Desc {
            addr,
            len: bytes.len() as u32,
        })
    }

    fn wait(&mut self, _timeout_ms: i32) -> bool {
        self.rx.len() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_round_the_rings_in_place() {
        let mut d = RingDevice::new(8, 4);
        // Half the frames are in the fill ring: the NIC can receive 4.
        assert_eq!(
            d.nic_receive(10, |b| {
                b[..3].copy_from_slice(&[1, 2, 3]);
                60
            }),
            4
        );
        let mut got = Vec::new();
        d.receive(&mut got, 64);
        assert_eq!(got.len(), 4);
        assert_eq!(&d.frame(&got[0])[..3], &[1, 2, 3]);
        let where_ = d.frame(&got[0]).as_ptr();
        d.frame_mut(&mut got[0])[0] = 9;
        let keep = got.pop().expect("a frame");
        d.transmit(&mut got);
        assert!(got.is_empty());
        got.push(keep);
        d.release(&mut got);
        let mut seen = Vec::new();
        assert_eq!(d.nic_transmit(|b| seen.push((b.as_ptr(), b[0]))), 3);
        // Sent from where it was received, rewritten: no copy.
        assert_eq!(seen[0], (where_, 9));
        d.housekeeping();
        // Every frame is back in the fill ring or spare.
        assert_eq!(d.fill.len() as usize + d.spare.len(), 8);
        // The lean loop over the same rings.
        assert_eq!(d.nic_receive(2, |_| 60), 2);
        assert_eq!(d.lean_pass([1; 6], [2; 6]), 2);
        let mut macs = Vec::new();
        d.nic_transmit(|b| macs.push(b[..12].to_vec()));
        assert_eq!(macs.len(), 2);
        assert!(macs.iter().all(|m| m[..6] == [1; 6] && m[6..] == [2; 6]));
    }
}
