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

/// Rewrites an ICMP error about a reply (the quoted packet went from `vip`:`vport` to
/// the client) for the real server: the error goes to `addr`, and the quote reads as the
/// real server sent it, from `addr`:`port`. The ICMP message starts at `icmp`.
#[inline]
pub(super) fn icmp_to_real(frame: &mut [u8], v6: bool, icmp: usize, addr: IpAddr, port: u16) {
    icmp_rewrite(frame, v6, icmp, Side::Destination, addr, port);
}

/// Rewrites an ICMP error a real server sent about a client's packet (quoted as sent to
/// the real server) for the client: from `vip`, quoting a packet to `vip`:`vport`.
#[inline]
pub(super) fn icmp_to_client(frame: &mut [u8], v6: bool, icmp: usize, vip: IpAddr, vport: u16) {
    icmp_rewrite(frame, v6, icmp, Side::Source, vip, vport);
}

/// Replaces the bytes at `at` with `new` and updates, for the change, the checksums
/// stored at `sums` (each a 16-bit field in a region where `at` is at an even offset).
fn patch(frame: &mut [u8], at: usize, new: &[u8], sums: &[usize]) {
    let mut old = [0u8; 16];
    let old = &mut old[..new.len()];
    old.copy_from_slice(&frame[at..at + new.len()]);
    for &c in sums {
        let sum = update(u16::from_be_bytes([frame[c], frame[c + 1]]), old, new);
        frame[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    }
    frame[at..at + new.len()].copy_from_slice(new);
}

/// The bytes of `addr`.
fn octets(addr: IpAddr) -> ([u8; 16], usize) {
    let mut b = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// The outer address on `outer` side and the quoted packet's address and port on the
/// other side become `addr` and `port`; the outer IPv4 header's, the quoted IPv4
/// header's, the quoted transport's (when quoted whole) and the ICMP checksums stay
/// valid.
fn icmp_rewrite(frame: &mut [u8], v6: bool, icmp: usize, outer: Side, addr: IpAddr, port: u16) {
    let (new, len) = octets(addr);
    let new = &new[..len];
    let icmp_sum = icmp + 2;
    // Where the IP packet ends (the frame may be padded beyond).
    let end = if v6 {
        ETH_LEN + 40 + usize::from(u16::from_be_bytes([frame[ETH_LEN + 4], frame[ETH_LEN + 5]]))
    } else {
        ETH_LEN + usize::from(u16::from_be_bytes([frame[ETH_LEN + 2], frame[ETH_LEN + 3]]))
    };
    let addr_at = |ip: usize, side: Side| match (v6, side) {
        (false, Side::Source) => ip + 12,
        (false, Side::Destination) => ip + 16,
        (true, Side::Source) => ip + 8,
        (true, Side::Destination) => ip + 24,
    };
    // The outer header: IPv4's own checksum, or ICMPv6's pseudo-header.
    let outer_sum = if v6 { icmp_sum } else { ETH_LEN + 10 };
    patch(frame, addr_at(ETH_LEN, outer), new, &[outer_sum]);
    // The quoted packet: the other side.
    let inner = icmp + 8;
    let side = match outer {
        Side::Source => Side::Destination,
        Side::Destination => Side::Source,
    };
    let (l4, proto) = if v6 {
        (inner + 40, frame[inner + 6])
    } else {
        (
            inner + usize::from(frame[inner] & 0x0f) * 4,
            frame[inner + 9],
        )
    };
    let l4_sum = match proto {
        6 => Some(l4 + 16),
        17 => Some(l4 + 6),
        _ => None,
    }
    .filter(|&c| c + 2 <= end)
    .filter(|&c| !(proto == 17 && !v6 && frame[c..c + 2] == [0, 0]));
    let at = addr_at(inner, side);
    let mut old = [0u8; 16];
    old[..len].copy_from_slice(&frame[at..at + len]);
    let old = &old[..len];
    if !v6 {
        let c = inner + 10;
        let sum = update(u16::from_be_bytes([frame[c], frame[c + 1]]), old, new);
        patch(frame, c, &sum.to_be_bytes(), &[icmp_sum]);
    }
    let p = l4 + if side == Side::Destination { 2 } else { 0 };
    let old_port = [frame[p], frame[p + 1]];
    let new_port = port.to_be_bytes();
    if let Some(c) = l4_sum {
        let sum = u16::from_be_bytes([frame[c], frame[c + 1]]);
        let sum = update(update(sum, old, new), &old_port, &new_port);
        patch(frame, c, &sum.to_be_bytes(), &[icmp_sum]);
    }
    patch(frame, at, new, &[icmp_sum]);
    patch(frame, p, &new_port, &[icmp_sum]);
}
