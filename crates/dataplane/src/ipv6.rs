//! IPv6 frames, parsed for the engine.
//!
//! [`parse`] reads an Ethernet frame carrying IPv6 with etherparse's slices (zero-copy),
//! walks the extension headers that may precede the transport header (hop-by-hop,
//! routing, destination options, fragment, authentication), and returns what the engine
//! schedules and forwards by: the 5-tuple and TCP flags of a TCP or UDP packet or first
//! fragment, the fragment key of a later fragment, or the ICMPv6 message.
//! [`echo_reply_in_place`] answers an echo request to a VIP where it lies.

use std::net::Ipv6Addr;

use etherparse::{Ipv6ExtensionSlice, Ipv6HeaderSlice, Ipv6Slice};
use xdpvs_arp::ndp::{icmpv6_checksum, ETHERTYPE_IPV6, ICMPV6};
use xdpvs_sched::conn::ConnKey;
use xdpvs_sched::Protocol;

/// Length of an Ethernet header without VLAN tag.
const ETH_LEN: usize = 14;

/// A fragment's identity: later fragments carry no ports, and follow their first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// The fragment header's identification.
    pub id: u32,
}

impl Default for FragKey6 {
    fn default() -> FragKey6 {
        FragKey6 {
            src: Ipv6Addr::UNSPECIFIED,
            dst: Ipv6Addr::UNSPECIFIED,
            id: 0,
        }
    }
}

impl crate::frag::FragId for FragKey6 {
    #[inline]
    fn words(&self) -> (u64, u64) {
        let (s, d) = (u128::from(self.src), u128::from(self.dst));
        (
            (s as u64) ^ (s >> 64) as u64 ^ (d as u64).rotate_left(32),
            (d >> 64) as u64 ^ u64::from(self.id) << 16,
        )
    }
}

/// A TCP or UDP packet (or a datagram's first fragment) to schedule or to look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow6 {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Client address.
    pub src: Ipv6Addr,
    /// Destination (a VIP if it is ours).
    pub dst: Ipv6Addr,
    /// Client port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (byte 13 of the TCP header).
    pub tcp_flags: Option<u8>,
    /// The IPv6 packet's length (header, extensions and payload), as IPVS counts bytes.
    pub ip_len: usize,
    /// Set for a first fragment: the key its later fragments will carry.
    pub first_fragment: Option<FragKey6>,
    /// Where the transport header starts in the frame.
    pub l4: usize,
}

/// What an IPv6 frame is, for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound6 {
    /// A TCP or UDP packet, or the first fragment of a datagram.
    Flow(Flow6),
    /// A later fragment: no transport header; it follows its first fragment.
    Later {
        /// Its datagram.
        key: FragKey6,
        /// The IPv6 packet's length.
        ip_len: usize,
    },
    /// An ICMPv6 message (neighbour discovery, echo, errors).
    Icmp {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
        /// The ICMPv6 type.
        icmp_type: u8,
    },
    /// Another upper-layer protocol (SCTP, ESP, ...): not ours to balance.
    Other,
}

/// Why an IPv6 frame could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error6 {
    /// Not IPv6 (another EtherType, a VLAN tag, shorter than an Ethernet header).
    NotIpv6,
    /// The IPv6 header is cut short, not version 6, or its payload length runs past the
    /// frame.
    BadHeader,
    /// An extension header is cut short or malformed.
    BadExtension,
    /// A TCP or UDP header (of an unfragmented packet or a first fragment) is cut short.
    Truncated,
}

/// Parses an Ethernet frame carrying IPv6.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Inbound6, Error6> {
    if frame.len() < ETH_LEN || frame[12..14] != ETHERTYPE_IPV6 {
        return Err(Error6::NotIpv6);
    }
    // The common case first: TCP or UDP straight after the fixed header (no extension
    // header to walk).
    if let Ok(h) = Ipv6HeaderSlice::from_slice(&frame[ETH_LEN..]) {
        let next = h.next_header();
        if next == etherparse::IpNumber::TCP || next == etherparse::IpNumber::UDP {
            let ip_len = 40 + usize::from(h.payload_length());
            let Some(body) = frame.get(ETH_LEN + 40..ETH_LEN + ip_len) else {
                return Err(Error6::BadHeader);
            };
            let proto = if next == etherparse::IpNumber::TCP {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let (src, dst) = (Ipv6Addr::from(h.source()), Ipv6Addr::from(h.destination()));
            return flow(proto, src, dst, body, ip_len, None, ETH_LEN + 40);
        }
    }
    parse_walking(frame)
}

/// [`parse`] of a frame with extension headers (or anything but TCP/UDP after the IPv6
/// header): etherparse walks the chain.
#[inline(never)]
fn parse_walking(frame: &[u8]) -> Result<Inbound6, Error6> {
    let ip = Ipv6Slice::from_slice(&frame[ETH_LEN..]).map_err(|e| {
        use etherparse::err::{ipv6::SliceError, Layer};
        match e {
            SliceError::Exts(_) => Error6::BadExtension,
            SliceError::Len(l) if !matches!(l.layer, Layer::Ipv6Header | Layer::Ipv6Packet) => {
                Error6::BadExtension
            }
            _ => Error6::BadHeader,
        }
    })?;
    let h = ip.header();
    let (src, dst) = (Ipv6Addr::from(h.source()), Ipv6Addr::from(h.destination()));
    let ip_len = 40 + usize::from(h.payload_length());
    let mut fragment = None;
    for ext in ip.extensions().clone() {
        if let Ipv6ExtensionSlice::Fragment(f) = ext {
            fragment = Some((
                f.identification(),
                f.fragment_offset().value(),
                f.more_fragments(),
            ));
        }
    }
    let payload = ip.payload();
    let key = |id| FragKey6 { src, dst, id };
    // A fragment header with offset 0 and no more fragments is an atomic fragment: a
    // whole packet (RFC 6946).
    let first_fragment = match fragment {
        Some((id, 0, true)) => Some(key(id)),
        Some((id, offset, _)) if offset > 0 => {
            return Ok(Inbound6::Later {
                key: key(id),
                ip_len,
            })
        }
        _ => None,
    };
    let body = payload.payload;
    let proto = match payload.ip_number {
        etherparse::IpNumber::TCP => Protocol::Tcp,
        etherparse::IpNumber::UDP => Protocol::Udp,
        etherparse::IpNumber::IPV6_ICMP => {
            return match body.first() {
                Some(&icmp_type) => Ok(Inbound6::Icmp {
                    src,
                    dst,
                    icmp_type,
                }),
                None => Err(Error6::Truncated),
            }
        }
        _ => return Ok(Inbound6::Other),
    };
    // Where the transport header starts: `body` lies within `frame`.
    let l4 = body.as_ptr() as usize - frame.as_ptr() as usize;
    flow(proto, src, dst, body, ip_len, first_fragment, l4)
}

/// The flow of a TCP or UDP packet whose transport header and payload are `body`.
#[inline]
fn flow(
    proto: Protocol,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    body: &[u8],
    ip_len: usize,
    first_fragment: Option<FragKey6>,
    l4: usize,
) -> Result<Inbound6, Error6> {
    let need = if proto == Protocol::Tcp { 20 } else { 8 };
    if body.len() < need {
        return Err(Error6::Truncated);
    }
    let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
    Ok(Inbound6::Flow(Flow6 {
        proto,
        src,
        dst,
        sport: port(0),
        dport: port(2),
        tcp_flags: (proto == Protocol::Tcp).then(|| body[13]),
        ip_len,
        first_fragment,
        l4,
    }))
}

/// ICMPv6 types of an echo request and reply.
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;

/// If `frame` is an ICMPv6 echo request (directly after the IPv6 header) to an address
/// `is_vip`, with a valid checksum, turns it in place into the echo reply from that
/// address: MACs and addresses swapped, hop limit 64, type 129, checksum recomputed.
/// Returns the VIP, or `None` with the frame untouched.
pub fn echo_reply_in_place(
    frame: &mut [u8],
    is_vip: impl FnOnce(&Ipv6Addr) -> bool,
) -> Option<Ipv6Addr> {
    let Ok(Inbound6::Icmp {
        src,
        dst,
        icmp_type: ECHO_REQUEST,
    }) = parse(frame)
    else {
        return None;
    };
    const IP: usize = ETH_LEN;
    const ICMP: usize = ETH_LEN + 40;
    // Extension headers before an echo request: leave it to the kernel.
    if frame[IP + 6] != ICMPV6 || !is_vip(&dst) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([frame[IP + 4], frame[IP + 5]]));
    let msg = frame.get(ICMP..ICMP + len)?;
    // Echo header: type, code, checksum, identifier, sequence.
    if msg.len() < 8 || msg[1] != 0 || icmpv6_checksum(&src, &dst, msg) != 0 {
        return None;
    }
    let (a, b) = frame.split_at_mut(6);
    a.swap_with_slice(&mut b[..6]);
    frame[IP + 7] = 64;
    frame[IP + 8..IP + 24].copy_from_slice(&dst.octets());
    frame[IP + 24..IP + 40].copy_from_slice(&src.octets());
    frame[ICMP] = ECHO_REPLY;
    frame[ICMP + 2..ICMP + 4].fill(0);
    let sum = icmpv6_checksum(&dst, &src, &frame[ICMP..ICMP + len]);
    frame[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
    Some(dst)
}

/// The connection an ICMPv6 error quotes (after the 8-byte ICMPv6 header of `msg`): a
/// real server's reply from the VIP to the client, so the connection is (client = its
/// destination, VIP = its source). `None` when the quote is too short, not IPv6, or its
/// transport header is not TCP or UDP directly after the IPv6 header.
pub fn quoted_connection(msg: &[u8]) -> Option<ConnKey<Ipv6Addr>> {
    let q = msg.get(8..)?;
    if q.len() < 44 || q[0] >> 4 != 6 {
        return None;
    }
    let proto = Protocol::from_ip_number(q[6])?;
    let addr = |o: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&q[o..o + 16]);
        Ipv6Addr::from(b)
    };
    let port = |o: usize| u16::from_be_bytes([q[o], q[o + 1]]);
    Some(ConnKey {
        proto,
        client: addr(24),
        cport: port(42),
        vip: addr(8),
        vport: port(40),
    })
}

/// Writes the IPv6 header of a TCP reset from `vip` to `client` at the start of `ip`
/// (40 bytes; a 20-byte TCP header follows) and returns the checksum's pseudo-header
/// sum (RFC 8200 §8.1).
pub(crate) fn write_reset_header(ip: &mut [u8], vip: Ipv6Addr, client: Ipv6Addr) -> u32 {
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&client.octets());
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&vip.octets());
    pseudo[16..32].copy_from_slice(&client.octets());
    pseudo[32..36].copy_from_slice(&20u32.to_be_bytes());
    pseudo[39] = 6;
    crate::checksum::sum_words(0, &pseudo)
}

#[cfg(test)]
mod tests;
