//! ICMP to a VIP, as an IPVS director handles it.
//!
//! - An echo request is answered by the director itself, from the VIP, rate-limited
//!   ([`EchoLimit`]): monitoring pings the VIP, and the kernel cannot answer for an
//!   address it does not hold.
//! - An error (destination unreachable — fragmentation needed included —, source quench,
//!   time exceeded, parameter problem) quotes the packet that caused it: a reply a real
//!   server sent from the VIP. When the quoted packet belongs to a known connection, the
//!   error goes to that connection's real server (only the MACs change), so path-MTU
//!   discovery works for clients behind small-MTU links. Otherwise it is dropped.
//! - Every other type is dropped.

use std::net::Ipv4Addr;

use xdpvs_sched::conn::ConnKey;
use xdpvs_sched::{Protocol, Time};

use crate::checksum::checksum;

/// Echo replies a worker may send per second, and its burst.
pub const ECHO_PER_SEC: u64 = 1000;
/// The burst.
pub const ECHO_BURST: u64 = 50;

/// What an ICMP message to a VIP is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    EchoRequest,
    Error,
    Other,
}

/// Its type.
pub(crate) fn kind(icmp_type: u8, code: u8) -> Kind {
    match (icmp_type, code) {
        (8, 0) => Kind::EchoRequest,
        (3 | 4 | 11 | 12, _) => Kind::Error,
        _ => Kind::Other,
    }
}

/// A token bucket for echo replies: [`ECHO_PER_SEC`], bursts of [`ECHO_BURST`].
#[derive(Clone, Copy, Debug)]
pub struct EchoLimit {
    /// Tokens, in millionths of a reply.
    micro: u64,
    last: Time,
}

impl Default for EchoLimit {
    fn default() -> Self {
        EchoLimit {
            micro: ECHO_BURST * 1_000_000,
            last: Time::ZERO,
        }
    }
}

impl EchoLimit {
    /// Whether one more reply may go at `now`.
    pub fn take(&mut self, now: Time) -> bool {
        let dt = now.since(self.last).as_nanos().min(u128::from(u64::MAX)) as u64;
        self.last = self.last.max(now);
        // ECHO_PER_SEC per 1e9 ns, in millionths: dt * ECHO_PER_SEC / 1000.
        let refill = dt.saturating_mul(ECHO_PER_SEC) / 1000;
        self.micro = self
            .micro
            .saturating_add(refill)
            .min(ECHO_BURST * 1_000_000);
        if self.micro >= 1_000_000 {
            self.micro -= 1_000_000;
            true
        } else {
            false
        }
    }
}

/// Turns the echo request in `frame` (IPv4 header at `l3`, `hlen` bytes; the IP packet
/// `total` bytes long) into the VIP's echo reply to its sender, in place: MACs and
/// addresses swapped, TTL 64, type 0, both checksums computed afresh.
pub(crate) fn echo_reply_in_place(
    frame: &mut [u8],
    l3: usize,
    hlen: usize,
    total: usize,
    director: [u8; 6],
) {
    let src_mac: [u8; 6] = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
    frame[0..6].copy_from_slice(&src_mac);
    frame[6..12].copy_from_slice(&director);
    let ip = &mut frame[l3..l3 + total];
    let (mut src, mut dst) = ([0u8; 4], [0u8; 4]);
    src.copy_from_slice(&ip[12..16]);
    dst.copy_from_slice(&ip[16..20]);
    ip[12..16].copy_from_slice(&dst);
    ip[16..20].copy_from_slice(&src);
    ip[8] = 64;
    ip[10..12].fill(0);
    let c = checksum(0, &ip[..hlen]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let msg = &mut ip[hlen..];
    msg[0] = 0;
    msg[2..4].fill(0);
    let c = checksum(0, msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
}

/// The connection an ICMP error quotes: the quoted packet (after the 8-byte ICMP header
/// at `msg`) is a real server's reply from the VIP to the client, so the connection is
/// (client = its destination, VIP = its source). `None` when the quote is too short or
/// not TCP/UDP over IPv4.
pub(crate) fn quoted_connection(msg: &[u8]) -> Option<ConnKey> {
    let q = msg.get(8..)?;
    if q.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(q[0] & 0x0f) * 4;
    if ihl < 20 || q.len() < ihl + 8 {
        return None;
    }
    let proto = Protocol::from_ip_number(q[9])?;
    let addr = |o: usize| Ipv4Addr::new(q[o], q[o + 1], q[o + 2], q[o + 3]);
    let port = |o: usize| u16::from_be_bytes([q[o], q[o + 1]]);
    Some(ConnKey {
        proto,
        client: addr(16),
        cport: port(ihl + 2),
        vip: addr(12),
        vport: port(ihl),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_limit_allows_a_burst_then_the_rate() {
        let mut l = EchoLimit::default();
        let t0 = Time::from_secs(100);
        let sent = (0..200).filter(|_| l.take(t0)).count();
        assert_eq!(sent as u64, ECHO_BURST);
        // One second later: the bucket is full again (the rate is above the burst).
        let t1 = Time::from_secs(101);
        assert_eq!((0..200).filter(|_| l.take(t1)).count() as u64, ECHO_BURST);
        // 10 ms later: 10 more.
        let t2 = Time::from_millis(101_010);
        assert_eq!((0..200).filter(|_| l.take(t2)).count(), 10);
        // Time going backwards gives nothing more.
        assert!(!l.take(Time::from_secs(50)));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(8, 0), Kind::EchoRequest);
        assert_eq!(kind(8, 1), Kind::Other);
        assert_eq!(kind(3, 4), Kind::Error);
        assert_eq!(kind(11, 0), Kind::Error);
        assert_eq!(kind(4, 0), Kind::Error);
        assert_eq!(kind(0, 0), Kind::Other);
        assert_eq!(kind(13, 0), Kind::Other);
    }
}
