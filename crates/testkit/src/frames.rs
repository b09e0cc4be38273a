//! Builders of well-formed frames, for tests, benchmarks, the self-check and traffic
//! generators. Not used on the packet path.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use xdpvs_sched::tcp::flags;
use xdpvs_sched::Mac;

/// Shortest Ethernet frame without FCS; shorter frames are zero-padded to it.
pub const MIN_FRAME: usize = 60;

/// Addresses and ports of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// L4 source port.
    pub sport: u16,
    /// L4 destination port.
    pub dport: u16,
}

fn pad(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() < MIN_FRAME {
        v.resize(MIN_FRAME, 0);
    }
    v
}

/// The TCP header being built with `tcp_flags` (FIN, SYN, RST, PSH, ACK bits) set.
fn with_flags(
    mut b: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    tcp_flags: u8,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    if tcp_flags & flags::SYN != 0 {
        b = b.syn();
    }
    if tcp_flags & flags::ACK != 0 {
        b = b.ack(0x2000_0000);
    }
    if tcp_flags & flags::FIN != 0 {
        b = b.fin();
    }
    if tcp_flags & flags::RST != 0 {
        b = b.rst();
    }
    if tcp_flags & 0x08 != 0 {
        b = b.psh();
    }
    b
}

/// A TCP segment with `tcp_flags` (FIN, SYN, RST, PSH, ACK bits) and `payload`.
pub fn tcp(e: &Endpoints, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let b = with_flags(
        PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
            .ipv4(e.src_ip.octets(), e.dst_ip.octets(), 64)
            .tcp(e.sport, e.dport, 0x1000_0000, 64240),
        tcp_flags,
    );
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("writing to a Vec cannot fail");
    pad(v)
}

/// A UDP datagram carrying `payload`.
pub fn udp(e: &Endpoints, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip.octets(), e.dst_ip.octets(), 64)
        .udp(e.sport, e.dport);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("writing to a Vec cannot fail");
    pad(v)
}

/// An ICMP echo request (`id`, `seq`, `payload`) from `e.src_ip` to `e.dst_ip` (ports
/// unused).
pub fn icmp_echo_request(e: &Endpoints, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip.octets(), e.dst_ip.octets(), 64)
        .icmpv4_echo_request(id, seq);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("writing to a Vec cannot fail");
    pad(v)
}

/// An ICMP error of `icmp_type`/`code` (bytes 4..8 of its header: `rest`) from
/// `e.src_ip` (a router) to `e.dst_ip`, quoting `quoted` (an IP packet: its header and
/// at least 8 bytes of what follows, as routers quote).
pub fn icmp_error(e: &Endpoints, icmp_type: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv4(e.src_ip.octets(), e.dst_ip.octets(), 64)
        .icmpv4_raw(icmp_type, code, rest);
    let mut v = Vec::with_capacity(b.size(quoted.len()));
    b.write(&mut v, quoted)
        .expect("writing to a Vec cannot fail");
    pad(v)
}

/// Addresses and ports of an IPv6 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints6 {
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// IPv6 source.
    pub src_ip: Ipv6Addr,
    /// IPv6 destination.
    pub dst_ip: Ipv6Addr,
    /// L4 source port.
    pub sport: u16,
    /// L4 destination port.
    pub dport: u16,
}

/// An IPv6 TCP segment with `tcp_flags` and `payload`.
pub fn tcp6(e: &Endpoints6, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let b = with_flags(
        PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
            .ipv6(e.src_ip.octets(), e.dst_ip.octets(), 64)
            .tcp(e.sport, e.dport, 0x1000_0000, 64240),
        tcp_flags,
    );
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("writing to a Vec cannot fail");
    v
}

/// An IPv6 UDP datagram carrying `payload`.
pub fn udp6(e: &Endpoints6, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv6(e.src_ip.octets(), e.dst_ip.octets(), 64)
        .udp(e.sport, e.dport);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("writing to a Vec cannot fail");
    v
}

/// An ICMPv6 echo request (`id`, `seq`, `payload`) from `e.src_ip` to `e.dst_ip`.
pub fn icmp6_echo_request(e: &Endpoints6, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
        .ipv6(e.src_ip.octets(), e.dst_ip.octets(), 64)
        .icmpv6_echo_request(id, seq);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("writing to a Vec cannot fail");
    v
}

/// An ICMPv6 error of `icmp_type`/`code` (bytes 4..8 of its header: `rest`, e.g. the MTU
/// of a Packet Too Big) from `e.src_ip` (a router) to `e.dst_ip`, quoting `quoted` (as
/// much of the offending packet as fits).
pub fn icmp6_error(
    e: &Endpoints6,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut msg = vec![icmp_type, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(quoted);
    let b = PacketBuilder::ethernet2(e.src_mac, e.dst_mac).ipv6(
        e.src_ip.octets(),
        e.dst_ip.octets(),
        64,
    );
    let mut v = Vec::with_capacity(b.size(msg.len()));
    b.write(&mut v, 58.into(), &msg)
        .expect("writing to a Vec cannot fail");
    // The checksum over the pseudo-header and the message (RFC 4443 2.3).
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&e.src_ip.octets());
    add(&e.dst_ip.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    v[54 + 2..54 + 4].copy_from_slice(&c.to_be_bytes());
    v
}

/// The ones'-complement sum of `bytes`, started from `acc`, folded to 16 bits (0xffff
/// over a header or segment whose checksum is valid).
pub fn fold(mut acc: u64, bytes: &[u8]) -> u16 {
    for w in bytes.chunks(2) {
        acc += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
