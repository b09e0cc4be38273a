//! Benchmark frames: prebuilt UDP or TCP frames over IPv4 or IPv6 to the VIP, one per
//! flow, stamped with their transmit time. Pure: building and stamping frames touches no
//! device.

use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::Mac;
use xdpvs_testkit::frames;

use crate::flow;

/// First bytes of a stamp ("XVBN"), as the sink's XDP program expects them.
pub const STAMP_MAGIC: [u8; 4] = *b"XVBN";
/// Stamp layout at the start of the L4 payload: magic, 4 bytes of padding, the
/// transmit time (CLOCK_MONOTONIC ns, native byte order: one host, one clock).
pub const STAMP_LEN: usize = 16;
/// Ethernet header + IPv4 header (no options).
const L3: usize = 14 + 20;
/// Ethernet header + IPv6 header (no extension headers).
const L3_V6: usize = 14 + 40;
/// The IPv6 flows' client prefix: flow k's client is 2001:2:1::/96 plus the IPv4
/// client address of flow k in its last 32 bits.
pub const CLIENT6_PREFIX: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0);
/// Frame check sequence: counted in a frame's size (RFC 2544), not sent by us.
pub const FCS: usize = 4;

/// Transport of benchmark frames.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP segments (SYN first for each flow, then ACK).
    Tcp,
    /// UDP over IPv6 (to the IPv6 VIP).
    Udp6,
    /// TCP over IPv6.
    Tcp6,
}

impl Proto {
    fn l4_header(self) -> usize {
        match self {
            Proto::Udp | Proto::Udp6 => 8,
            Proto::Tcp | Proto::Tcp6 => 20,
        }
    }

    /// Whether frames are IPv6.
    pub fn is_ipv6(self) -> bool {
        matches!(self, Proto::Udp6 | Proto::Tcp6)
    }

    /// Whether frames are TCP.
    pub fn is_tcp(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tcp6)
    }

    /// The same transport over IPv6.
    pub fn v6(self) -> Proto {
        match self {
            Proto::Udp | Proto::Udp6 => Proto::Udp6,
            Proto::Tcp | Proto::Tcp6 => Proto::Tcp6,
        }
    }

    fn l3(self) -> usize {
        if self.is_ipv6() {
            L3_V6
        } else {
            L3
        }
    }

    /// Smallest frame size (with FCS) that carries a stamp.
    pub fn min_size(self) -> usize {
        (self.l3() + self.l4_header() + STAMP_LEN).max(frames::MIN_FRAME) + FCS
    }
}

/// Largest frame size (with FCS): a 1500-byte IP packet.
pub const MAX_SIZE: usize = 1518;

/// Why frames cannot be built as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrafficError {
    /// Frame size outside what the protocol allows.
    #[error("frame size {size} is out of range for {proto:?}: use {min}..={max} bytes (Ethernet frame with FCS; a stamp needs {STAMP_LEN} bytes of payload)")]
    Size {
        /// Asked.
        size: usize,
        /// Protocol.
        proto: Proto,
        /// Smallest.
        min: usize,
        /// Largest.
        max: usize,
    },
    /// No flows.
    #[error("the number of flows must be at least 1")]
    NoFlows,
}

/// Builds the frames of `flows` flows of one protocol and size.
#[derive(Clone, Debug)]
pub struct Factory {
    template: Vec<u8>,
    proto: Proto,
    flows: u32,
    payload: usize,
    /// L4 checksum of the template with source address, port and stamp time zeroed
    /// (TCP, and UDP over IPv6 where it is mandatory; UDP over IPv4 goes without, which
    /// IPv4 allows).
    l4_sum0: u16,
}

/// One's-complement sum of big-endian 16-bit words.
fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

impl Factory {
    /// Frames of `size` bytes (Ethernet, with FCS) from `src_mac` to `dst_mac`, to the
    /// VIP `port`, for `flows` flows (see [`crate::flow`] for their addresses).
    pub fn new(
        proto: Proto,
        size: usize,
        flows: u32,
        src_mac: Mac,
        dst_mac: Mac,
        port: u16,
    ) -> Result<Factory, TrafficError> {
        if flows == 0 {
            return Err(TrafficError::NoFlows);
        }
        if !(proto.min_size()..=MAX_SIZE).contains(&size) {
            return Err(TrafficError::Size {
                size,
                proto,
                min: proto.min_size(),
                max: MAX_SIZE,
            });
        }
        let l4 = proto.l3();
        let payload_len = size - FCS - l4 - proto.l4_header();
        let mut payload = vec![0u8; payload_len];
        payload[..4].copy_from_slice(&STAMP_MAGIC);
        let mut e = flow(0);
        e.src_mac = src_mac;
        e.dst_mac = dst_mac;
        e.dport = port;
        e.src_ip = std::net::Ipv4Addr::UNSPECIFIED;
        e.sport = 0;
        let e6 = frames::Endpoints6 {
            src_mac,
            dst_mac,
            src_ip: CLIENT6_PREFIX,
            dst_ip: crate::VIP6,
            sport: 0,
            dport: port,
        };
        let mut template = match proto {
            Proto::Udp => frames::udp(&e, &payload),
            Proto::Tcp => frames::tcp(&e, ACK, &payload),
            Proto::Udp6 => frames::udp6(&e6, &payload),
            Proto::Tcp6 => frames::tcp6(&e6, ACK, &payload),
        };
        let sum_at = l4 + if proto.is_tcp() { 16 } else { 6 };
        template[sum_at..sum_at + 2].fill(0);
        let l4_sum0 = if proto == Proto::Udp {
            0
        } else {
            // The checksum with the source fields zeroed: later frames add their own.
            let seg_len = template.len() - l4;
            let mut pseudo = Vec::new();
            if proto.is_ipv6() {
                pseudo.extend_from_slice(&template[22..54]);
                pseudo.extend_from_slice(&(seg_len as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, template[20]]);
            } else {
                pseudo.extend_from_slice(&[0; 4]);
                pseudo.extend_from_slice(&template[30..34]);
                pseudo.extend_from_slice(&[0, 6]);
                pseudo.extend_from_slice(&(seg_len as u16).to_be_bytes());
            }
            !fold(sum16(&pseudo) + sum16(&template[l4..]))
        };
        Ok(Factory {
            template,
            proto,
            flows,
            payload: l4 + proto.l4_header(),
            l4_sum0,
        })
    }

    /// Frame length in bytes as sent (without FCS).
    pub fn len(&self) -> usize {
        self.template.len()
    }

    /// Whether frames are empty (never).
    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    /// How many flows.
    pub fn flows(&self) -> u32 {
        self.flows
    }

    /// Writes the frame of packet number `seq` (flow `seq % flows`) into `out` (exactly
    /// [`Factory::len`] bytes), stamped with `now_ns`. `opening` marks the first packet
    /// of a TCP flow (SYN instead of ACK).
    pub fn write(&self, out: &mut [u8], seq: u64, now_ns: u64, opening: bool) {
        out.copy_from_slice(&self.template);
        let e = flow((seq % u64::from(self.flows)) as u32);
        // The flow's IPv4 client address: the whole IPv4 source, or the last 32 bits of
        // the IPv6 one.
        let src = e.src_ip.octets();
        let sport = e.sport.to_be_bytes();
        let (src_at, l4) = if self.proto.is_ipv6() {
            (34, L3_V6)
        } else {
            (26, L3)
        };
        out[src_at..src_at + 4].copy_from_slice(&src);
        out[l4..l4 + 2].copy_from_slice(&sport);
        let stamp = self.payload + 8;
        out[stamp..stamp + 8].copy_from_slice(&now_ns.to_ne_bytes());
        if !self.proto.is_ipv6() {
            // IPv4 header checksum over the 20 bytes.
            out[24..26].fill(0);
            let ip = !fold(sum16(&out[14..34]));
            out[24..26].copy_from_slice(&ip.to_be_bytes());
        }
        if self.proto == Proto::Udp {
            return;
        }
        let mut added = 0u32;
        if opening && self.proto.is_tcp() {
            // ACK (0x10) -> SYN (0x02) changes the flags word by -0x0e.
            out[l4 + 13] = SYN;
            added += 0xffff - 0x000e;
        }
        added += sum16(&src) + sum16(&sport) + sum16(&out[stamp..stamp + 8]);
        let mut c = !fold(u32::from(!self.l4_sum0) + added);
        if c == 0 && !self.proto.is_tcp() {
            c = 0xffff; // UDP sends a computed zero as all ones (RFC 768, RFC 8200)
        }
        let sum_at = l4 + if self.proto.is_tcp() { 16 } else { 6 };
        out[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn check(proto: Proto, size: usize, flows: u32) {
        let f = Factory::new(
            proto,
            size,
            flows,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            80,
        )
        .expect("valid");
        assert_eq!(f.len(), (size - FCS).max(60));
        let mut buf = vec![0u8; f.len()];
        for seq in [0u64, 1, 7, 65_536, 999_999] {
            for opening in [false, true] {
                f.write(&mut buf, seq, 0x0123_4567_89ab_cdef ^ seq, opening);
                let p = SlicedPacket::from_ethernet(&buf).expect("parses");
                let want = flow((seq % u64::from(flows)) as u32);
                let payload = match (p.net, p.transport) {
                    (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum());
                        assert_eq!(h.source, want.src_ip.octets());
                        assert_eq!(u.source_port(), want.sport);
                        assert_eq!(u.checksum(), 0);
                        u.payload()
                    }
                    (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum());
                        assert_eq!(h.source, want.src_ip.octets());
                        assert_eq!(t.source_port(), want.sport);
                        assert_eq!(t.syn(), opening);
                        assert_eq!(t.ack(), !opening);
                        let c = t
                            .to_header()
                            .calc_checksum_ipv4(&h, t.payload())
                            .expect("fits");
                        assert_eq!(t.checksum(), c, "TCP checksum seq {seq}");
                        t.payload()
                    }
                    (Some(NetSlice::Ipv6(ip)), Some(transport)) => {
                        let h = ip.header().to_header();
                        let mut src = CLIENT6_PREFIX.octets();
                        src[12..].copy_from_slice(&want.src_ip.octets());
                        assert_eq!(h.source, src);
                        assert_eq!(h.destination, crate::VIP6.octets());
                        match transport {
                            TransportSlice::Udp(u) => {
                                assert_eq!(u.source_port(), want.sport);
                                let c = u
                                    .to_header()
                                    .calc_checksum_ipv6(&h, u.payload())
                                    .expect("fits");
                                assert_eq!(u.checksum(), c, "UDP checksum seq {seq}");
                                u.payload()
                            }
                            TransportSlice::Tcp(t) => {
                                assert_eq!(t.source_port(), want.sport);
                                assert_eq!(t.syn(), opening);
                                let c = t
                                    .to_header()
                                    .calc_checksum_ipv6(&h, t.payload())
                                    .expect("fits");
                                assert_eq!(t.checksum(), c, "TCP checksum seq {seq}");
                                t.payload()
                            }
                            _ => panic!("no transport"),
                        }
                    }
                    _ => panic!("no network or transport layer"),
                };
                assert_eq!(&payload[..4], b"XVBN");
                let ts = u64::from_ne_bytes(payload[8..16].try_into().expect("8 bytes"));
                assert_eq!(ts, 0x0123_4567_89ab_cdef ^ seq);
            }
        }
    }

    #[test]
    fn frames_are_well_formed_and_stamped() {
        check(Proto::Udp, 64, 1);
        check(Proto::Udp, 1518, 1_000_000);
        check(Proto::Tcp, 74, 1000);
        check(Proto::Tcp, 1000, 1_000_000);
        check(Proto::Udp6, 82, 1);
        check(Proto::Udp6, 1518, 1_000_000);
        check(Proto::Tcp6, 94, 1000);
        check(Proto::Tcp6, 1000, 1_000_000);
    }

    #[test]
    fn sizes_are_checked() {
        let mk = |p, s| Factory::new(p, s, 1, [0; 6], [0; 6], 80).map(|_| ());
        assert!(mk(Proto::Udp, 63).is_err());
        assert!(mk(Proto::Udp, 1519).is_err());
        assert!(mk(Proto::Tcp, 73).is_err());
        let e = mk(Proto::Tcp, 64).expect_err("too small");
        assert!(e.to_string().contains("74..=1518"), "{e}");
        assert_eq!(
            Factory::new(Proto::Udp, 64, 0, [0; 6], [0; 6], 80).map(|_| ()),
            Err(TrafficError::NoFlows)
        );
    }
}
