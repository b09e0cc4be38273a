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
    let (new, len) = octets(addr);
    let l4_sum = at
        .l4
        .and_then(|(l4, proto)| transport_sum(frame, l4, proto.ip_number(), at.v6, frame.len()));
    // The address enters the IPv4 header's checksum and the transport's pseudo-header.
    let ip_sum = (!at.v6).then_some(ETH_LEN + 10);
    let (mut sums, mut n) = ([0usize; 2], 0);
    for c in ip_sum.into_iter().chain(l4_sum) {
        sums[n] = c;
        n += 1;
    }
    patch(
        frame,
        addr_at(ETH_LEN, at.v6, side),
        &new[..len],
        &sums[..n],
    );
    let Some((l4, proto)) = at.l4 else {
        return; // a later fragment: its datagram's checksum was updated in the first
    };
    patch(
        frame,
        port_at(l4, side),
        &port.to_be_bytes(),
        l4_sum.as_slice(),
    );
    if let Some(c) = l4_sum.filter(|_| proto == Protocol::Udp) {
        if frame[c..c + 2] == [0, 0] {
            frame[c..c + 2].copy_from_slice(&[0xff, 0xff]); // 0 would say "no checksum"
        }
    }
}

/// Where the `side` address of the IP header at `ip` is.
fn addr_at(ip: usize, v6: bool, side: Side) -> usize {
    match (v6, side) {
        (false, Side::Source) => ip + 12,
        (false, Side::Destination) => ip + 16,
        (true, Side::Source) => ip + 8,
        (true, Side::Destination) => ip + 24,
    }
}

/// Where the `side` port of the transport header at `l4` is.
fn port_at(l4: usize, side: Side) -> usize {
    l4 + if side == Side::Destination { 2 } else { 0 }
}

/// Where the checksum of the TCP or UDP header at `l4` (IP protocol `proto`) is, if it
/// lies before `end` and is one to keep (an IPv4 UDP datagram's 0 says it has none).
fn transport_sum(frame: &[u8], l4: usize, proto: u8, v6: bool, end: usize) -> Option<usize> {
    let c = match proto {
        6 => l4 + 16,
        17 => l4 + 6,
        _ => return None,
    };
    let none = proto == 17 && !v6 && frame.get(c..c + 2) == Some(&[0, 0]);
    (c + 2 <= end && !none).then_some(c)
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
    // The outer header: IPv4's own checksum, or ICMPv6's pseudo-header.
    let outer_sum = if v6 { icmp_sum } else { ETH_LEN + 10 };
    patch(frame, addr_at(ETH_LEN, v6, outer), new, &[outer_sum]);
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
    let l4_sum = transport_sum(frame, l4, proto, v6, end);
    let at = addr_at(inner, v6, side);
    let mut old = [0u8; 16];
    old[..len].copy_from_slice(&frame[at..at + len]);
    let old = &old[..len];
    if !v6 {
        let c = inner + 10;
        let sum = update(u16::from_be_bytes([frame[c], frame[c + 1]]), old, new);
        patch(frame, c, &sum.to_be_bytes(), &[icmp_sum]);
    }
    let p = port_at(l4, side);
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
