//! Tunnelling (`-i`): the packet, from its IP header on, is carried unchanged inside an
//! outer IP header from the director to the real server (IPIP: protocol 4, IPv6 in
//! IPv6: next header 41; GUE: UDP to the tunnel port and a 4-byte GUE header; GRE: a
//! GRE header, with a checksum on `--tun-csum`), as IPVS's `ip_vs_tunnel_xmit` builds
//! it: the outer header takes the inner one's DSCP/ECN (and IPv6 flow label) and, for
//! IPv4, its DF bit and identification; TTL/hop limit 64.
//!
//! A packet that would exceed the path MTU once encapsulated is answered instead, from
//! the VIP, with ICMP "fragmentation needed" (IPv6: "packet too big") carrying the MTU
//! minus the overhead, so the client's path MTU discovery adapts ([`too_big`]).

use std::net::IpAddr;

use xdpvs_sched::{TunCsum, TunKind, Tunnel};

use crate::checksum::{checksum, sum_words};
use crate::packet::Packet;

const ETH: usize = 14;
/// IP protocol numbers of the encapsulations.
const IPIP: u8 = 4;
const IPV6: u8 = 41;
const UDP: u8 = 17;
const GRE: u8 = 47;
/// ICMP's and ICMPv6's.
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Bytes the encapsulation adds in front of a packet of the family (`v6`).
#[inline]
pub(crate) fn overhead(tun: &Tunnel, v6: bool) -> usize {
    let ip = if v6 { 40 } else { 20 };
    ip + match tun.kind {
        TunKind::Ipip => 0,
        TunKind::Gue => 8 + 4,
        TunKind::Gre if tun.csum == TunCsum::Csum => 8,
        TunKind::Gre => 4,
    }
}

/// Encapsulates the IP packet of `ip_len` bytes after the Ethernet header of `frame`
/// from `from` to `to` (of the packet's family). False, with the frame unchanged, when
/// its buffer has no room for the outer headers, or `from` and `to` are of two families.
#[inline]
pub(crate) fn encapsulate(
    frame: &mut Packet<'_>,
    tun: &Tunnel,
    from: IpAddr,
    to: IpAddr,
    ip_len: usize,
) -> bool {
    // Source then destination, 4 or 16 bytes each.
    let mut addrs = [0u8; 32];
    let n = match (from, to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addrs[..4].copy_from_slice(&s.octets());
            addrs[4..8].copy_from_slice(&d.octets());
            4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            addrs[..16].copy_from_slice(&s.octets());
            addrs[16..].copy_from_slice(&d.octets());
            16
        }
        _ => return false,
    };
    let (src, dst) = (&addrs[..n], &addrs[n..2 * n]);
    let v6 = n == 16;
    let ov = overhead(tun, v6);
    if ETH + ip_len > frame.len() || !frame.open(ETH, ov) {
        return false;
    }
    // Ethernet padding after a short packet is not carried.
    frame.truncate(ETH + ov + ip_len);
    let ip_hlen = if v6 { 40 } else { 20 };
    let extra = ov - ip_hlen;
    let proto = match tun.kind {
        TunKind::Ipip if v6 => IPV6,
        TunKind::Ipip => IPIP,
        TunKind::Gue => UDP,
        TunKind::Gre => GRE,
    };
    let (head, rest) = frame[ETH..].split_at_mut(ov);
    let packet = &rest[..ip_len];
    if v6 {
        // Version, traffic class and flow label as the inner packet's.
        head[0..4].copy_from_slice(&packet[0..4]);
        head[4..6].copy_from_slice(&((extra + ip_len) as u16).to_be_bytes());
        head[6] = proto;
        head[7] = 64;
        head[8..24].copy_from_slice(src);
        head[24..40].copy_from_slice(dst);
    } else {
        head[0] = 0x45;
        head[1] = packet[1];
        head[2..4].copy_from_slice(&((ov + ip_len) as u16).to_be_bytes());
        head[4..6].copy_from_slice(&packet[4..6]);
        head[6] = packet[6] & 0x40; // DF as the inner packet's, no fragment offset
        head[7] = 0;
        head[8] = 64;
        head[9] = proto;
        head[10..12].fill(0);
        head[12..16].copy_from_slice(src);
        head[16..20].copy_from_slice(dst);
        let c = checksum(0, &head[..20]);
        head[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let inner_proto: u8 = if v6 { IPV6 } else { IPIP };
    let (outer, encap) = head.split_at_mut(ip_hlen);
    match tun.kind {
        TunKind::Ipip => {}
        TunKind::Gue => {
            encap[0..2].copy_from_slice(&gue_source_port(packet, v6).to_be_bytes());
            encap[2..4].copy_from_slice(&tun.port.to_be_bytes());
            encap[4..6].copy_from_slice(&((extra + ip_len) as u16).to_be_bytes());
            encap[6..8].fill(0);
            // GUE version 0, no options; the inner protocol.
            encap[8..12].copy_from_slice(&[0, inner_proto, 0, 0]);
            if tun.csum == TunCsum::Csum {
                let mut sum = pseudo_sum(outer, v6, UDP, extra + ip_len);
                sum = sum_words(sum, encap);
                let c = match checksum(sum, packet) {
                    0 => 0xffff,
                    c => c,
                };
                encap[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
        TunKind::Gre => {
            let ether: u16 = if v6 { 0x86dd } else { 0x0800 };
            let flags: u16 = if tun.csum == TunCsum::Csum { 0x8000 } else { 0 };
            encap[0..2].copy_from_slice(&flags.to_be_bytes());
            encap[2..4].copy_from_slice(&ether.to_be_bytes());
            if tun.csum == TunCsum::Csum {
                encap[4..8].fill(0);
                let c = checksum(sum_words(0, encap), packet);
                encap[4..6].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    true
}

/// The checksum sum of the pseudo-header of an upper-layer packet of `len` bytes and
/// protocol `proto` in (outer) IP header `ip`.
fn pseudo_sum(ip: &[u8], v6: bool, proto: u8, len: usize) -> u32 {
    let mut p = [0u8; 40];
    if v6 {
        p[0..32].copy_from_slice(&ip[8..40]);
        p[32..36].copy_from_slice(&(len as u32).to_be_bytes());
        p[39] = proto;
        sum_words(0, &p)
    } else {
        p[0..8].copy_from_slice(&ip[12..20]);
        p[9] = proto;
        p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
        sum_words(0, &p[..12])
    }
}

/// GUE's UDP source port: a hash of the inner packet's addresses and protocol in the
/// ephemeral range, so a real server's receive-side scaling spreads tunnels of
/// different clients (as the kernel's `udp_flow_src_port`); fragments of one datagram
/// hash alike.
fn gue_source_port(packet: &[u8], v6: bool) -> u16 {
    let (addrs, proto) = if v6 {
        (&packet[8..40], packet[6])
    } else {
        (&packet[12..20], packet[9])
    };
    let mut h: u32 = 0x9e37_79b9 ^ u32::from(proto);
    for c in addrs.chunks_exact(4) {
        h = (h ^ u32::from_be_bytes([c[0], c[1], c[2], c[3]])).wrapping_mul(0x0100_0193);
        h ^= h >> 15;
    }
    49152 + (h % 16384) as u16
}

/// Turns `frame`, an IP packet of `ip_len` bytes to a VIP that cannot be tunnelled
/// whole, into the ICMP error that says so, from the VIP to its sender: IPv4
/// "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big" (type 2), carrying
/// `mtu` and quoting as much of the packet as fits in 576 (IPv4) or 1280 (IPv6) bytes.
/// The Ethernet addresses are the caller's. False, with the frame unchanged, when its
/// buffer has no room.
pub(crate) fn too_big(frame: &mut Packet<'_>, v6: bool, ip_len: usize, mtu: u16) -> bool {
    let (hlen, max) = if v6 { (48, 1280) } else { (28, 576) };
    let quoted = ip_len.min(max - hlen).min(frame.len().saturating_sub(ETH));
    let (mut vip, mut client) = ([0u8; 16], [0u8; 16]);
    let alen = if v6 { 16 } else { 4 };
    let (s, d) = if v6 {
        (ETH + 8, ETH + 24)
    } else {
        (ETH + 12, ETH + 16)
    };
    client[..alen].copy_from_slice(&frame[s..s + alen]);
    vip[..alen].copy_from_slice(&frame[d..d + alen]);
    if !frame.open(ETH, hlen) {
        return false;
    }
    frame.truncate(ETH + hlen + quoted);
    let msg_len = 8 + quoted;
    let (ip, msg) = frame[ETH..].split_at_mut(hlen - 8);
    if v6 {
        ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        ip[4..6].copy_from_slice(&(msg_len as u16).to_be_bytes());
        ip[6] = ICMPV6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&vip);
        ip[24..40].copy_from_slice(&client);
        msg[0..8].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        msg[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
        let c = checksum(pseudo_sum(ip, true, ICMPV6, msg_len), msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    } else {
        ip[0] = 0x45;
        ip[1] = 0xc0; // internetwork control, as the kernel's ICMP errors
        ip[2..4].copy_from_slice(&((20 + msg_len) as u16).to_be_bytes());
        ip[4..8].fill(0);
        ip[8] = 64;
        ip[9] = ICMP;
        ip[10..12].fill(0);
        ip[12..16].copy_from_slice(&vip[..4]);
        ip[16..20].copy_from_slice(&client[..4]);
        let c = checksum(0, &ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        msg[0..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
        msg[6..8].copy_from_slice(&mtu.to_be_bytes());
        let c = checksum(0, msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    true
}
