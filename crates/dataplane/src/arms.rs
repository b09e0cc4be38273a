//! The two-armed director: two interfaces, one for the clients and one for the real
//! servers (the classic LVS-NAT layout with two NICs), seen by a worker as one
//! [`Device`].
//!
//! A frame leaves by the side its verdict names ([`Device::direct`]): to a real server by
//! the servers' side, a NAT reply by the clients' side, an answer back where it came
//! from. A frame that leaves by the side it arrived on is sent from where it lies, as on
//! one interface. A frame that crosses is copied into a free buffer of the other side's
//! device ([`Device::send`]) and its own buffer goes straight back to its receive side:
//! each AF_XDP socket has its own UMEM (xsk-rs 0.11 hands fill and completion rings only
//! to the first socket of a UMEM, and a UMEM shared across devices needs a pair per
//! device), so a crossing costs one copy of the frame (measured in docs/BENCHMARKS.md).

use xdpvs_sched::Mac;

use crate::device::{Device, DeviceStats, Egress};
use crate::packet::Packet;

/// A side of the director.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// The interface clients reach the VIPs through.
    Clients,
    /// The interface the real servers are on.
    Servers,
}

/// A frame received on one side of an [`Arms`]: the side's own token, where it came from
/// and where it goes. Move-only, as the token it holds.
#[derive(Debug)]
pub struct ArmFrame<F> {
    frame: F,
    from: Arm,
    to: Arm,
}

impl<F> ArmFrame<F> {
    /// The side it was received on.
    pub fn arm(&self) -> Arm {
        self.from
    }
}

/// Two devices as one: the clients' side and the real servers' side.
#[derive(Debug)]
pub struct Arms<D: Device> {
    clients: D,
    servers: D,
    /// Frames of our own with this source MAC leave by the servers' side.
    servers_mac: Mac,
    /// Which side is read first (they take turns, so neither starves the other).
    servers_first: bool,
    rx: Vec<D::Frame>,
    out: [Vec<D::Frame>; 2],
    back: [Vec<D::Frame>; 2],
    keep: Vec<ArmFrame<D::Frame>>,
    crossed: u64,
}

/// Frames in hand per side at most (a worker's batch, and as many waiting).
const ROOM: usize = 2 * crate::worker::BATCH;

impl<D: Device> Arms<D> {
    /// The two sides; frames of our own from `servers_mac` go out by `servers`.
    pub fn new(clients: D, servers: D, servers_mac: Mac) -> Arms<D> {
        Arms {
            clients,
            servers,
            servers_mac,
            servers_first: false,
            rx: Vec::with_capacity(ROOM),
            out: [Vec::with_capacity(ROOM), Vec::with_capacity(ROOM)],
            back: [Vec::with_capacity(ROOM), Vec::with_capacity(ROOM)],
            keep: Vec::with_capacity(ROOM),
            crossed: 0,
        }
    }

    /// The clients' side.
    pub fn clients(&self) -> &D {
        &self.clients
    }

    /// The clients' side, mutably (tests inject frames through it).
    pub fn clients_mut(&mut self) -> &mut D {
        &mut self.clients
    }

    /// The real servers' side.
    pub fn servers(&self) -> &D {
        &self.servers
    }

    /// The real servers' side, mutably.
    pub fn servers_mut(&mut self) -> &mut D {
        &mut self.servers
    }

    /// Frames copied from one side to the other so far.
    pub fn crossed(&self) -> u64 {
        self.crossed
    }

    fn side(&mut self, arm: Arm) -> &mut D {
        match arm {
            Arm::Clients => &mut self.clients,
            Arm::Servers => &mut self.servers,
        }
    }

    fn take(&mut self, arm: Arm, out: &mut Vec<ArmFrame<D::Frame>>, max: usize) {
        let mut rx = std::mem::take(&mut self.rx);
        self.side(arm).receive(&mut rx, max.min(ROOM));
        out.extend(rx.drain(..).map(|frame| ArmFrame {
            frame,
            from: arm,
            to: arm,
        }));
        self.rx = rx;
    }
}

fn index(arm: Arm) -> usize {
    match arm {
        Arm::Clients => 0,
        Arm::Servers => 1,
    }
}

const ARMS: [Arm; 2] = [Arm::Clients, Arm::Servers];

impl<D: Device> Device for Arms<D> {
    type Frame = ArmFrame<D::Frame>;

    fn housekeeping(&mut self) {
        self.clients.housekeeping();
        self.servers.housekeeping();
    }

    fn kick(&mut self) {
        self.clients.kick();
        self.servers.kick();
    }

    fn receive(&mut self, out: &mut Vec<Self::Frame>, max: usize) {
        let (first, second) = if self.servers_first {
            (Arm::Servers, Arm::Clients)
        } else {
            (Arm::Clients, Arm::Servers)
        };
        self.servers_first = !self.servers_first;
        let had = out.len();
        self.take(first, out, max);
        let got = out.len() - had;
        self.take(second, out, max - got);
    }

    fn frame<'a>(&'a self, f: &'a Self::Frame) -> &'a [u8] {
        match f.from {
            Arm::Clients => self.clients.frame(&f.frame),
            Arm::Servers => self.servers.frame(&f.frame),
        }
    }

    fn frame_mut<'a>(&'a mut self, f: &'a mut Self::Frame) -> Packet<'a> {
        match f.from {
            Arm::Clients => self.clients.frame_mut(&mut f.frame),
            Arm::Servers => self.servers.frame_mut(&mut f.frame),
        }
    }

    #[inline]
    fn direct(&mut self, f: &mut Self::Frame, to: Egress) {
        f.to = match to {
            Egress::Back => f.from,
            Egress::Servers => Arm::Servers,
            Egress::Clients => Arm::Clients,
        };
    }

    fn transmit(&mut self, frames: &mut Vec<Self::Frame>) {
        for f in frames.drain(..) {
            if f.to == f.from {
                self.out[index(f.from)].push(f.frame);
                continue;
            }
            // Crossing: copied into a buffer of the other side, this one recycled.
            let sent = match f.from {
                Arm::Clients => self.servers.send(self.clients.frame(&f.frame)),
                Arm::Servers => self.clients.send(self.servers.frame(&f.frame)),
            };
            if sent {
                self.crossed += 1;
                self.back[index(f.from)].push(f.frame);
            } else {
                self.keep.push(f); // no free buffer there: waits for the next pass
            }
        }
        for arm in ARMS {
            let i = index(arm);
            let mut out = std::mem::take(&mut self.out[i]);
            let mut back = std::mem::take(&mut self.back[i]);
            let dev = self.side(arm);
            dev.transmit(&mut out);
            dev.release(&mut back);
            self.keep.extend(out.drain(..).map(|frame| ArmFrame {
                frame,
                from: arm,
                to: arm,
            }));
            self.out[i] = out;
            self.back[i] = back;
        }
        frames.append(&mut self.keep);
    }

    fn release(&mut self, frames: &mut Vec<Self::Frame>) {
        for f in frames.drain(..) {
            self.back[index(f.from)].push(f.frame);
        }
        for arm in ARMS {
            let i = index(arm);
            let mut back = std::mem::take(&mut self.back[i]);
            self.side(arm).release(&mut back);
            self.back[i] = back;
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        if bytes.get(6..12) == Some(&self.servers_mac[..]) {
            self.servers.send(bytes)
        } else {
            self.clients.send(bytes)
        }
    }

    fn wait(&mut self, timeout_ms: i32) -> bool {
        // Each side's wait blocks on its own socket: take turns, a millisecond at a time.
        for _ in 0..=timeout_ms.max(0) {
            if self.clients.wait(0) || self.servers.wait(1) {
                return true;
            }
        }
        false
    }

    fn stats(&self) -> Option<DeviceStats> {
        let (a, b) = (self.clients.stats(), self.servers.stats());
        if a.is_none() && b.is_none() {
            return None;
        }
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        Some(DeviceStats {
            rx_dropped: a.rx_dropped + b.rx_dropped,
            rx_invalid_descs: a.rx_invalid_descs + b.rx_invalid_descs,
            rx_ring_full: a.rx_ring_full + b.rx_ring_full,
            rx_fill_ring_empty: a.rx_fill_ring_empty + b.rx_fill_ring_empty,
            tx_invalid_descs: a.tx_invalid_descs + b.tx_invalid_descs,
            tx_ring_empty: a.tx_ring_empty + b.tx_ring_empty,
            wakeups: a.wakeups + b.wakeups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;

    const SERVERS_MAC: Mac = [2, 0, 0, 0, 0, 2];

    fn arms() -> Arms<MemDevice> {
        Arms::new(MemDevice::new(4), MemDevice::new(4), SERVERS_MAC)
    }

    #[test]
    fn a_frame_leaves_by_the_side_it_is_directed_to_and_every_buffer_comes_back() {
        let mut a = arms();
        a.clients_mut().inject(&[1; 60]);
        a.servers_mut().inject(&[2; 60]);
        a.clients_mut().inject(&[3; 60]);
        let mut got = Vec::new();
        a.receive(&mut got, 8);
        assert_eq!(got.len(), 3);
        let mut tx = Vec::new();
        for mut f in got.drain(..) {
            let to = match a.frame(&f)[0] {
                1 => Egress::Servers,
                2 => Egress::Clients,
                _ => Egress::Back,
            };
            a.direct(&mut f, to);
            tx.push(f);
        }
        a.transmit(&mut tx);
        assert!(tx.is_empty());
        assert_eq!(a.servers().transmitted, vec![vec![1; 60]]);
        assert_eq!(a.clients().transmitted, vec![vec![2; 60], vec![3; 60]]);
        assert_eq!(a.crossed(), 2);
        assert_eq!(a.clients().outstanding(), 0);
        assert_eq!(a.servers().outstanding(), 0);
    }

    #[test]
    fn what_does_not_fit_stays_with_the_caller() {
        let mut a = arms();
        a.clients_mut().inject(&[1; 60]);
        a.clients_mut().inject(&[1; 60]);
        let mut got = Vec::new();
        a.receive(&mut got, 8);
        a.clients_mut().tx_room = Some(1);
        for f in &mut got {
            a.direct(f, Egress::Back);
        }
        a.transmit(&mut got);
        assert_eq!(got.len(), 1);
        a.release(&mut got);
        assert_eq!(a.clients().outstanding(), 0);
    }

    #[test]
    fn frames_of_our_own_leave_by_their_source_mac() {
        let mut a = arms();
        let mut f = [0u8; 60];
        f[6..12].copy_from_slice(&SERVERS_MAC);
        assert!(a.send(&f));
        assert!(a.send(&[0; 60]));
        assert_eq!(a.servers().transmitted.len(), 1);
        assert_eq!(a.clients().transmitted.len(), 1);
    }
}
