//! IPVS's connection synchronisation protocol, version 1: the datagrams a master
//! director multicasts so that a backup knows every connection's real server (the
//! kernel's `net/netfilter/ipvs/ip_vs_sync.c`, the format `ipvsadm --start-daemon` and
//! keepalived's `lvs_sync_daemon` run). Built and read here byte for byte as the kernel
//! lays them out, so that xdpvs and kernel IPVS directors understand each other.
//!
//! A message: an 8-byte header (`0`, sync id, size, count, version 1, `0 0`), then
//! `count` connection entries, each 4-byte aligned: type (bit 0: IPv6), protocol, version
//! (4 bits, 0) and size (12 bits), flags (`IP_VS_CONN_F_*`), state, client, virtual and
//! destination ports, firewall mark, timeout in seconds, then the client, virtual and
//! destination addresses (IPv4: 36 bytes in all; IPv6: 72), then options (type, length,
//! data). Every field is in network order.
//!
//! Pure: [`Writer`] fills a buffer it owns, [`decode`] reads one; no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kernel's default multicast group (`IP_VS_SYNC_GROUP`, 224.0.0.81).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The kernel's default port (`IP_VS_SYNC_PORT`).
pub const PORT: u16 = 8848;
/// The version this module speaks (`SYNC_PROTO_VER`).
pub const VERSION: u8 = 1;
/// The message header's length.
pub const HEADER: usize = 8;
/// An IPv4 entry's length without options.
pub const V4_LEN: usize = 36;
/// An IPv6 entry's length without options.
pub const V6_LEN: usize = 72;
/// The kernel's largest message by default (`sync_maxlen`: an Ethernet MTU less the IP
/// and UDP headers).
pub const DEFAULT_MAXLEN: usize = 1472;

/// `IP_VS_CONN_F_*` flags of include/uapi/linux/ip_vs.h that matter here.
pub mod flags {
    /// The forwarding method's bits.
    pub const FWD_MASK: u32 = 0x0007;
    /// NAT.
    pub const MASQ: u32 = 0x0000;
    /// Tunnelling.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Created by synchronisation (set by a receiver).
    pub const SYNC: u32 = 0x0020;
    /// Not established (InActConn).
    pub const INACTIVE: u32 = 0x0100;
    /// Sequence adjustments follow in an option.
    pub const SEQ_MASK: u32 = 0x0600;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling.
    pub const ONE_PACKET: u32 = 0x2000;
}

/// The type byte's IPv6 bit (`STYPE_F_INET6`).
const STYPE_F_INET6: u8 = 1;
/// Option types (`IPVS_OPT_*`) and the bit that makes an unknown one skippable.
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
const OPT_F_PARAM: u8 = 1 << (7 - 1);
/// The sequence-adjustment option's data (`struct ip_vs_sync_conn_options`).
const SEQ_DATA_LEN: usize = 24;

/// One connection (or persistence template) as the protocol carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConn {
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` (the forwarding method in the low bits).
    pub flags: u32,
    /// The protocol's state number (TCP: IPVS's `IP_VS_TCP_S_*`, the same numbers as
    /// [`crate::tcp::State`]; UDP: 0).
    pub state: u16,
    /// The client's address and port (a template: the client's network, port 0).
    pub client: (IpAddr, u16),
    /// The virtual service's address and port.
    pub vip: (IpAddr, u16),
    /// The real server's address and port.
    pub dest: (IpAddr, u16),
    /// The firewall mark (0: none).
    pub fwmark: u32,
    /// Seconds the entry lives without traffic.
    pub timeout: u32,
}

impl SyncConn {
    /// A persistence template.
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// Its length on the wire (no options).
    pub fn wire_len(&self) -> usize {
        if self.client.0.is_ipv6() {
            V6_LEN
        } else {
            V4_LEN
        }
    }
}

/// Why a datagram is not a sync message xdpvs takes; it is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Shorter than its header, or than it says.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// A version 0 message (its first byte, the count, is not 0) or another version.
    #[error("version {0}: IPVS's sync protocol version 1 is spoken (sysctl net.ipv4.vs.sync_version=1 on a kernel director)")]
    Version(u8),
    /// The header's size is not the datagram's.
    #[error("the header says {said} bytes, the datagram has {got}")]
    Size {
        /// The header's size.
        said: usize,
        /// The datagram's.
        got: usize,
    },
    /// An entry is malformed.
    #[error("entry {index}: {why}")]
    Entry {
        /// Which, from 1.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// Fills one message at a time, up to `maxlen` bytes, in a buffer it keeps.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    maxlen: usize,
}

impl Writer {
    /// An empty message of `syncid`, at most `maxlen` bytes (at least one IPv6 entry).
    pub fn new(syncid: u8, maxlen: usize) -> Writer {
        let maxlen = maxlen.clamp(HEADER + V6_LEN, u16::MAX as usize);
        let mut buf = Vec::with_capacity(maxlen);
        buf.extend_from_slice(&[0, syncid, 0, HEADER as u8, 0, VERSION, 0, 0]);
        Writer { buf, maxlen }
    }

    /// Entries so far.
    pub fn count(&self) -> u8 {
        self.buf[4]
    }

    /// Adds `c`; false when it does not fit (send, [`Writer::clear`], add again).
    pub fn push(&mut self, c: &SyncConn) -> bool {
        let len = c.wire_len();
        if self.buf.len() + len > self.maxlen || self.count() == u8::MAX {
            return false;
        }
        let v6 = c.client.0.is_ipv6();
        self.buf.push(if v6 { STYPE_F_INET6 } else { 0 });
        self.buf.push(c.protocol);
        // Version 0 in the top 4 bits, the entry's size below.
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        // No sequence option is written: the flag that announces one is cleared.
        self.buf
            .extend_from_slice(&(c.flags & !flags::SEQ_MASK).to_be_bytes());
        self.buf.extend_from_slice(&c.state.to_be_bytes());
        for port in [c.client.1, c.vip.1, c.dest.1] {
            self.buf.extend_from_slice(&port.to_be_bytes());
        }
        self.buf.extend_from_slice(&c.fwmark.to_be_bytes());
        self.buf.extend_from_slice(&c.timeout.to_be_bytes());
        for a in [c.client.0, c.vip.0, c.dest.0] {
            match (a, v6) {
                (IpAddr::V4(a), false) => self.buf.extend_from_slice(&a.octets()),
                (IpAddr::V6(a), true) => self.buf.extend_from_slice(&a.octets()),
                // An entry is of one family: another address is written as unspecified.
                (_, false) => self.buf.extend_from_slice(&[0; 4]),
                (_, true) => self.buf.extend_from_slice(&[0; 16]),
            }
        }
        self.buf[4] += 1;
        let size = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&size.to_be_bytes());
        true
    }

    /// The message as it goes on the wire.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties it for the next message.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER);
        self.buf[2..4].copy_from_slice(&(HEADER as u16).to_be_bytes());
        self.buf[4] = 0;
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a message: its sync id and entries. As the kernel, the whole message is
/// refused if one entry is malformed (a length that overruns, an unknown version, an
/// unknown mandatory option).
pub fn decode(msg: &[u8]) -> Result<(u8, Vec<SyncConn>), SyncError> {
    if msg.len() < HEADER {
        return Err(SyncError::Truncated("no header"));
    }
    if msg[0] != 0 {
        return Err(SyncError::Version(0));
    }
    if msg[5] != VERSION {
        return Err(SyncError::Version(msg[5]));
    }
    let said = usize::from(be16(msg, 2));
    if said != msg.len() {
        return Err(SyncError::Size {
            said,
            got: msg.len(),
        });
    }
    let (syncid, count) = (msg[1], usize::from(msg[4]));
    let mut out = Vec::with_capacity(count);
    let mut at = HEADER;
    for index in 1..=count {
        let bad = |why| SyncError::Entry { index, why };
        let e = msg
            .get(at..)
            .filter(|e| e.len() >= 4)
            .ok_or(bad("past the end"))?;
        let v6 = e[0] & STYPE_F_INET6 != 0;
        let ver_size = be16(e, 2);
        if ver_size >> 12 != 0 {
            return Err(bad("an entry version other than 0"));
        }
        let size = usize::from(ver_size & 0x0fff);
        let fixed = if v6 { V6_LEN } else { V4_LEN };
        if size < fixed {
            return Err(bad("shorter than its fixed part"));
        }
        let e = e.get(..size).ok_or(bad("longer than the message"))?;
        let addr = |i: usize| -> IpAddr {
            if v6 {
                let o = 24 + 16 * i;
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&e[o..o + 16]).unwrap_or([0; 16]),
                ))
            } else {
                let o = 24 + 4 * i;
                IpAddr::V4(Ipv4Addr::new(e[o], e[o + 1], e[o + 2], e[o + 3]))
            }
        };
        // Options: sequence data, persistence-engine data and name are understood (and
        // not used); an unknown one is skipped only if marked optional.
        let mut o = fixed;
        while o + 2 <= size {
            let (ty, len) = (e[o], usize::from(e[o + 1]));
            o += 2;
            if o + len > size {
                return Err(bad("an option overruns the entry"));
            }
            match ty {
                OPT_SEQ_DATA if len != SEQ_DATA_LEN => {
                    return Err(bad("a sequence option of the wrong length"))
                }
                OPT_SEQ_DATA | OPT_PE_DATA | OPT_PE_NAME => {}
                t if t & OPT_F_PARAM != 0 => {}
                // Padding to the entry's 4-byte alignment.
                0 if e[o - 2..].iter().all(|&b| b == 0) => break,
                _ => return Err(bad("an unknown option")),
            }
            o += len;
        }
        out.push(SyncConn {
            protocol: e[1],
            flags: be32(e, 4),
            state: be16(e, 8),
            client: (addr(0), be16(e, 10)),
            vip: (addr(1), be16(e, 12)),
            dest: (addr(2), be16(e, 14)),
            fwmark: be32(e, 16),
            timeout: be32(e, 20),
        });
        at += (size + 3) & !3;
    }
    Ok((syncid, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as the kernel's `ip_vs_sync_conn` builds it (sync id 7): an IPv4 TCP
    /// connection (direct routing, ESTABLISHED, 900 s) of client 198.18.200.1:40000 to
    /// 198.18.0.100:80 at 198.18.0.11:80, then its persistence template
    /// (198.18.200.0:0, 360 s), then an IPv6 UDP flow by NAT to port 8053.
    #[rustfmt::skip]
    const FIXTURE: &[u8] = &[
        // Header: reserved 0, syncid 7, size 152, 3 entries, version 1, spare 0.
        0, 7, 0, 152, 3, 1, 0, 0,
        // IPv4, TCP, version 0 size 36; flags DROUTE; state 1; ports 40000, 80, 80.
        0, 6, 0, 36, 0, 0, 0, 3, 0, 1, 0x9c, 0x40, 0, 80, 0, 80,
        // fwmark 0, timeout 900, caddr, vaddr, daddr.
        0, 0, 0, 0, 0, 0, 0x03, 0x84, 198, 18, 200, 1, 198, 18, 0, 100, 198, 18, 0, 11,
        // The template: flags TEMPLATE|DROUTE, state 0, cport 0; timeout 360.
        0, 6, 0, 36, 0, 0, 0x10, 3, 0, 0, 0, 0, 0, 80, 0, 80,
        0, 0, 0, 0, 0, 0, 0x01, 0x68, 198, 18, 200, 0, 198, 18, 0, 100, 198, 18, 0, 11,
        // IPv6, UDP, size 72; flags MASQ; state 0; ports 5353, 53, 8053; timeout 300.
        1, 17, 0, 72, 0, 0, 0, 0, 0, 0, 0x14, 0xe9, 0, 53, 0x1f, 0x75,
        0, 0, 0, 0, 0, 0, 0x01, 0x2c,
        0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01,
        0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
        0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    ];

    fn fixture_conns() -> Vec<SyncConn> {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last));
        vec![
            SyncConn {
                protocol: 6,
                flags: flags::DROUTE,
                state: crate::tcp::State::Established as u16,
                client: (v4(198, 18, 200, 1), 40000),
                vip: (v4(198, 18, 0, 100), 80),
                dest: (v4(198, 18, 0, 11), 80),
                fwmark: 0,
                timeout: 900,
            },
            SyncConn {
                protocol: 6,
                flags: flags::TEMPLATE | flags::DROUTE,
                state: 0,
                client: (v4(198, 18, 200, 0), 0),
                vip: (v4(198, 18, 0, 100), 80),
                dest: (v4(198, 18, 0, 11), 80),
                fwmark: 0,
                timeout: 360,
            },
            SyncConn {
                protocol: 17,
                flags: flags::MASQ,
                state: 0,
                client: (v6(0x201), 5353),
                vip: (v6(0x100), 53),
                dest: (v6(0x11), 8053),
                fwmark: 0,
                timeout: 300,
            },
        ]
    }

    #[test]
    fn the_kernels_layout_reads_and_is_written_byte_for_byte() {
        assert_eq!(FIXTURE.len(), 152);
        let (syncid, conns) = decode(FIXTURE).expect("a valid message");
        assert_eq!(syncid, 7);
        assert_eq!(conns, fixture_conns());
        assert!(conns[1].is_template() && !conns[0].is_template());
        let mut w = Writer::new(7, DEFAULT_MAXLEN);
        for c in &conns {
            assert!(w.push(c));
        }
        assert_eq!(w.bytes(), FIXTURE);
        w.clear();
        assert_eq!(w.bytes(), &[0, 7, 0, 8, 0, 1, 0, 0]);
        assert_eq!(decode(w.bytes()), Ok((7, vec![])));
    }

    #[test]
    fn a_full_message_takes_no_more_and_says_so() {
        let c = fixture_conns()[0];
        let mut w = Writer::new(1, HEADER + 2 * V4_LEN + 10);
        assert!(w.push(&c) && w.push(&c));
        assert!(!w.push(&c), "a third does not fit");
        assert_eq!(w.count(), 2);
        assert_eq!(decode(w.bytes()).expect("valid").1.len(), 2);
        // The kernel's default: 40 IPv4 entries in an Ethernet frame.
        let mut w = Writer::new(1, DEFAULT_MAXLEN);
        let mut n = 0;
        while w.push(&c) {
            n += 1;
        }
        assert_eq!(n, (DEFAULT_MAXLEN - HEADER) / V4_LEN);
    }

    #[test]
    fn options_are_understood_and_skipped() {
        // The first entry again with a sequence option (24 bytes) and a PE name
        // ("sip", padded): size 36 + 26 + 5 = 67, aligned to 68.
        let mut m = FIXTURE[..HEADER + V4_LEN].to_vec();
        m[4] = 1;
        m[HEADER + 3] = 67;
        m.extend_from_slice(&[OPT_SEQ_DATA, 24]);
        m.extend_from_slice(&[0; 24]);
        m.extend_from_slice(&[OPT_PE_NAME, 3, b's', b'i', b'p', 0]);
        let size = m.len() as u16;
        m[2..4].copy_from_slice(&size.to_be_bytes());
        let (_, conns) = decode(&m).expect("options read");
        assert_eq!(conns, vec![fixture_conns()[0]]);
    }

    #[test]
    fn malformed_and_foreign_messages_are_refused_whole() {
        let mut v0 = FIXTURE.to_vec();
        v0[0] = 3;
        assert_eq!(decode(&v0), Err(SyncError::Version(0)));
        let mut v2 = FIXTURE.to_vec();
        v2[5] = 2;
        assert_eq!(decode(&v2), Err(SyncError::Version(2)));
        assert_eq!(
            decode(&FIXTURE[..100]),
            Err(SyncError::Size {
                said: 152,
                got: 100
            })
        );
        let mut more = FIXTURE.to_vec();
        more[4] = 4;
        assert!(matches!(
            decode(&more),
            Err(SyncError::Entry { index: 4, .. })
        ));
        let mut short = FIXTURE.to_vec();
        short[HEADER + 3] = 20;
        assert!(matches!(
            decode(&short),
            Err(SyncError::Entry { index: 1, .. })
        ));
        let mut unknown = FIXTURE.to_vec();
        unknown[HEADER + 2] = 0x10;
        assert!(matches!(
            decode(&unknown),
            Err(SyncError::Entry {
                index: 1,
                why: "an entry version other than 0"
            })
        ));
        assert!(decode(&[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused_without_a_panic(b in proptest::collection::vec(0u8..=255, 0..400)) {
            let _ = decode(&b);
        }

        #[test]
        fn what_is_written_reads_back(ports in proptest::collection::vec((0u16..=65535, 0u16..=65535, 0u32..=86400), 1..30)) {
            let mut w = Writer::new(9, DEFAULT_MAXLEN);
            let mut wrote = Vec::new();
            for (i, (cport, dport, timeout)) in ports.into_iter().enumerate() {
                let mut c = fixture_conns()[i % 3];
                c.client.1 = cport;
                c.dest.1 = dport;
                c.timeout = timeout;
                if w.push(&c) {
                    wrote.push(c);
                }
            }
            proptest::prop_assert_eq!(decode(w.bytes()), Ok((9, wrote)));
        }
    }
}
