//! Masquerading (NAT, `-m`): the destination address and port become the real server's
//! on the way in; the real server's reply, which comes back through the director (its
//! gateway), leaves from the VIP and the virtual port. Checksums are updated
//! incrementally: the IPv4 header's, and the transport's (its pseudo-header holds the
//! addresses). An IPv4 UDP datagram without a checksum (0) keeps none.

use std::net::IpAddr;

use xdpvs_sched::Protocol;

use super::At;
use crate::checksum::update;

const ETH_LEN: usize = 14;

/// Rewrites the destination of a client's packet to `addr`:`port`.
#[inline]
pub(super) fn to_real(frame: &mut [u8], at: &At, addr: IpAddr, port: u16) {
    rewrite(frame, at, Side::Destination, addr, port);
}

/// Rewrites the source of a real server's reply to `vip`:`vport`.
#[inline]
pub(super) fn to_client(frame: &mut [u8], at: &At, vip: IpAddr, vport: u16) {
    rewrite(frame, at, Side::Source, vip, vport);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

fn rewrite(frame: &mut [u8], at: &At, side: Side, addr: IpAddr, port: u16) {
    let (offset, len) = match (at.v6, side) {
        (false, Side::Source) => (ETH_LEN + 12, 4),
        (false, Side::Destination) => (ETH_LEN + 16, 4),
        (true, Side::Source) => (ETH_LEN + 8, 16),
        (true, Side::Destination) => (ETH_LEN + 24, 16),
    };
    let mut new = [0u8; 16];
    match addr {
        IpAddr::V4(a) => new[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => new.copy_from_slice(&a.octets()),
    }
    let new = &new[..len];
    let mut old = [0u8; 16];
    old[..len].copy_from_slice(&frame[offset..offset + len]);
    let old = &old[..len];
    frame[offset..offset + len].copy_from_slice(new);
    if !at.v6 {
        let c = ETH_LEN + 10;
        let sum = update(u16::from_be_bytes([frame[c], frame[c + 1]]), old, new);
        frame[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    }
    let Some((l4, proto)) = at.l4 else {
        return; // a later fragment: its datagram's checksum was updated in the first
    };
    let p = l4 + if side == Side::Destination { 2 } else { 0 };
    let old_port = [frame[p], frame[p + 1]];
    let new_port = port.to_be_bytes();
    frame[p..p + 2].copy_from_slice(&new_port);
    let c = l4 + if proto == Protocol::Tcp { 16 } else { 6 };
    let sum = u16::from_be_bytes([frame[c], frame[c + 1]]);
    if proto == Protocol::Udp && !at.v6 && sum == 0 {
        return; // no checksum, none to keep
    }
    let mut sum = update(update(sum, old, new), &old_port, &new_port);
    if proto == Protocol::Udp && sum == 0 {
        sum = 0xffff; // 0 would say "no checksum"
    }
    frame[c..c + 2].copy_from_slice(&sum.to_be_bytes());
}
