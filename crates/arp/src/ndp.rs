//! IPv6 neighbour discovery for an LVS director, pure and in place: IPv6's ARP.
//!
//! - [`advertise_in_place`] turns a neighbour solicitation (RFC 4861 §4.3) for one of our
//!   virtual IPs into the neighbour advertisement (§4.4) that answers it, where the frame
//!   lies, with the override flag set: the director alone answers for its VIPs, and real
//!   servers (which hold the VIP on `lo`) never do.
//! - [`unsolicited`] builds the advertisement sent to all nodes when a VIP is added (and to
//!   defend it against another host's duplicate address detection).
//!
//! A solicitation is answered only if it passes RFC 4861 §7.1.1's checks: hop limit 255,
//! ICMPv6 checksum, code 0, at least 24 bytes, a unicast target, options of non-zero
//! length that fit, and, from the unspecified address (duplicate address detection), a
//! solicited-node multicast destination and no source link-layer address option.
//! Anything else is left untouched.

use std::net::Ipv6Addr;

use crate::Mac;

/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// IPv6 next header of ICMPv6.
pub const ICMPV6: u8 = 58;
/// ICMPv6 type of a neighbour solicitation.
pub const NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Option: source link-layer address.
const OPT_SOURCE_LLADDR: u8 = 1;
/// Option: target link-layer address.
const OPT_TARGET_LLADDR: u8 = 2;
/// Advertisement flags (first byte after the checksum): solicited, override.
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// Byte offsets in an Ethernet frame carrying IPv6 without extension headers.
mod field {
    use std::ops::Range;
    pub const ETH_DST: Range<usize> = 0..6;
    pub const ETH_SRC: Range<usize> = 6..12;
    pub const ETH_TYPE: Range<usize> = 12..14;
    pub const IP: usize = 14;
    pub const IP_PAYLOAD_LEN: Range<usize> = IP + 4..IP + 6;
    pub const IP_NEXT: usize = IP + 6;
    pub const IP_HOP_LIMIT: usize = IP + 7;
    pub const IP_SRC: Range<usize> = IP + 8..IP + 24;
    pub const IP_DST: Range<usize> = IP + 24..IP + 40;
    pub const ICMP: usize = IP + 40;
    pub const ICMP_SUM: Range<usize> = ICMP + 2..ICMP + 4;
    pub const TARGET: Range<usize> = ICMP + 8..ICMP + 24;
    pub const OPTIONS: usize = ICMP + 24;
}

/// The target address of a neighbour solicitation or advertisement carried right after
/// the IPv6 header (`None` when the frame is too short to hold one).
pub fn target(frame: &[u8]) -> Option<Ipv6Addr> {
    let t: [u8; 16] = frame.get(field::TARGET)?.try_into().ok()?;
    Some(Ipv6Addr::from(t))
}

/// An advertisement with its target link-layer address option: Ethernet, IPv6, 24 bytes
/// of message and an 8-byte option.
pub const ADVERTISEMENT_LEN: usize = field::OPTIONS + 8;

/// Why a frame was not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignore {
    /// Not IPv6, or IPv6 whose next header is not ICMPv6 (NDP carries no extension
    /// headers in practice; the kernel gets the rest).
    NotIcmpv6,
    /// Cut short: shorter than its headers or than its IPv6 payload length says.
    Truncated,
    /// ICMPv6, but not a neighbour solicitation.
    NotSolicitation,
    /// A solicitation that fails RFC 4861's validity checks (hop limit, checksum, code,
    /// length, multicast target, bad options, a malformed duplicate address probe).
    Invalid,
    /// Valid, but the frame is too short to hold the answer in place.
    NoRoom,
}

/// What [`advertise_in_place`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The frame is now the advertisement for this VIP: transmit it.
    Advertised(Ipv6Addr),
    /// Another host probes this VIP for duplicate address detection (a solicitation from
    /// the unspecified address): defend it by sending [`unsolicited`] to all nodes. The
    /// frame is untouched.
    Defend(Ipv6Addr),
    /// A valid solicitation for an address that is not ours: leave it to the kernel.
    NotForUs,
    /// Not answered.
    Ignored(Ignore),
}

/// The solicited-node multicast address of `addr` (ff02::1:ffXX:XXXX).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 and its last 32 bits).
pub fn multicast_mac(addr: Ipv6Addr) -> Mac {
    let o = addr.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The all-nodes multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The ICMPv6 checksum of `msg` (its checksum field as it is) between `src` and `dst`.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip6(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    Ipv6Addr::from(o)
}

/// A valid neighbour solicitation: its addresses, target and source link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicitation {
    /// IPv6 source (the unspecified address for duplicate address detection).
    pub src: Ipv6Addr,
    /// IPv6 destination (the target's solicited-node group, or the target itself).
    pub dst: Ipv6Addr,
    /// The address asked for.
    pub target: Ipv6Addr,
    /// The asker's MAC from its source link-layer address option, if any.
    pub source_mac: Option<Mac>,
}

/// Parses and validates an Ethernet frame carrying a neighbour solicitation.
pub fn parse_solicitation(frame: &[u8]) -> Result<Solicitation, Ignore> {
    if frame.len() < field::ICMP || frame[field::ETH_TYPE] != ETHERTYPE_IPV6 {
        return Err(Ignore::NotIcmpv6);
    }
    if frame[field::IP] >> 4 != 6 || frame[field::IP_NEXT] != ICMPV6 {
        return Err(Ignore::NotIcmpv6);
    }
    let len = usize::from(u16::from_be_bytes([
        frame[field::IP_PAYLOAD_LEN.start],
        frame[field::IP_PAYLOAD_LEN.start + 1],
    ]));
    let Some(msg) = frame.get(field::ICMP..field::ICMP + len) else {
        return Err(Ignore::Truncated);
    };
    if msg.is_empty() {
        return Err(Ignore::Truncated);
    }
    if msg[0] != NEIGHBOR_SOLICITATION {
        return Err(Ignore::NotSolicitation);
    }
    if msg.len() < 24 {
        return Err(Ignore::Truncated);
    }
    let src = ip6(&frame[field::IP_SRC]);
    let dst = ip6(&frame[field::IP_DST]);
    let target = ip6(&frame[field::TARGET]);
    if frame[field::IP_HOP_LIMIT] != 255
        || msg[1] != 0
        || icmpv6_checksum(&src, &dst, msg) != 0
        || target.is_multicast()
    {
        return Err(Ignore::Invalid);
    }
    let mut source_mac = None;
    let mut opts = &msg[24..];
    while !opts.is_empty() {
        let (kind, units) = match opts {
            [k, u, ..] => (*k, usize::from(*u)),
            _ => return Err(Ignore::Invalid),
        };
        let n = units * 8;
        if n == 0 || n > opts.len() {
            return Err(Ignore::Invalid);
        }
        if kind == OPT_SOURCE_LLADDR && n == 8 {
            source_mac = Some([opts[2], opts[3], opts[4], opts[5], opts[6], opts[7]]);
        }
        opts = &opts[n..];
    }
    if src.is_unspecified() && (dst != solicited_node(target) || source_mac.is_some()) {
        return Err(Ignore::Invalid);
    }
    Ok(Solicitation {
        src,
        dst,
        target,
        source_mac,
    })
}

/// Writes an advertisement for `target` from `our_mac` into `frame[..len]`: to `dst_ip`
/// at `dst_mac`, flags `flags`, with the target link-layer address option if `with_tlla`.
fn write_advertisement(
    frame: &mut [u8],
    target: Ipv6Addr,
    our_mac: Mac,
    dst_mac: Mac,
    dst_ip: Ipv6Addr,
    flags: u8,
    with_tlla: bool,
) {
    let msg_len = if with_tlla { 32 } else { 24 };
    frame[field::ETH_DST].copy_from_slice(&dst_mac);
    frame[field::ETH_SRC].copy_from_slice(&our_mac);
    frame[field::ETH_TYPE].copy_from_slice(&ETHERTYPE_IPV6);
    // Version 6, traffic class 0, flow label 0.
    frame[field::IP..field::IP + 4].copy_from_slice(&[0x60, 0, 0, 0]);
    frame[field::IP_PAYLOAD_LEN].copy_from_slice(&(msg_len as u16).to_be_bytes());
    frame[field::IP_NEXT] = ICMPV6;
    frame[field::IP_HOP_LIMIT] = 255;
    frame[field::IP_SRC].copy_from_slice(&target.octets());
    frame[field::IP_DST].copy_from_slice(&dst_ip.octets());
    let m = field::ICMP;
    frame[m..m + 8].copy_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0, flags, 0, 0, 0]);
    frame[field::TARGET].copy_from_slice(&target.octets());
    if with_tlla {
        let o = field::OPTIONS;
        frame[o..o + 2].copy_from_slice(&[OPT_TARGET_LLADDR, 1]);
        frame[o + 2..o + 8].copy_from_slice(&our_mac);
    }
    let sum = icmpv6_checksum(&target, &dst_ip, &frame[m..m + msg_len]);
    frame[field::ICMP_SUM].copy_from_slice(&sum.to_be_bytes());
}

/// If `frame` is a valid neighbour solicitation whose target `is_vip`, rewrites it in
/// place into the solicited advertisement from `our_mac` (override flag set, source =
/// the VIP, to the asker). The answer to a multicast solicitation carries our MAC in a
/// target link-layer address option (86 bytes); to a unicast one it may omit it (RFC
/// 4861 §7.2.4), so it fits in any valid solicitation. Bytes past the answer stay as
/// Ethernet padding (the IPv6 payload length says where the message ends).
pub fn advertise_in_place(
    frame: &mut [u8],
    is_vip: impl FnOnce(&Ipv6Addr) -> bool,
    our_mac: Mac,
) -> Outcome {
    let ns = match parse_solicitation(frame) {
        Ok(ns) => ns,
        Err(why) => return Outcome::Ignored(why),
    };
    if !is_vip(&ns.target) {
        return Outcome::NotForUs;
    }
    if ns.src.is_unspecified() {
        return Outcome::Defend(ns.target);
    }
    let with_tlla = ns.dst.is_multicast();
    if frame.len() < field::OPTIONS + if with_tlla { 8 } else { 0 } {
        return Outcome::Ignored(Ignore::NoRoom);
    }
    let asker_mac = ns
        .source_mac
        .unwrap_or([frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]);
    write_advertisement(
        frame,
        ns.target,
        our_mac,
        asker_mac,
        ns.src,
        FLAG_SOLICITED | FLAG_OVERRIDE,
        with_tlla,
    );
    Outcome::Advertised(ns.target)
}

/// A neighbour solicitation from `asker` (at `asker_mac`) for `target`, to the target's
/// solicited-node multicast address, with a source link-layer address option: what a
/// host sends to resolve an address (for tests, tools and probes; not the packet path).
pub fn solicitation(asker_mac: Mac, asker: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut msg = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    msg.extend_from_slice(&[OPT_SOURCE_LLADDR, 1]);
    msg.extend_from_slice(&asker_mac);
    let sum = icmpv6_checksum(&asker, &dst, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + msg.len());
    f.extend_from_slice(&multicast_mac(dst));
    f.extend_from_slice(&asker_mac);
    f.extend_from_slice(&ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&asker.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f
}

/// Defends `vip` against another host's duplicate address probe (a solicitation from
/// the unspecified address, [`Outcome::Defend`]): rewrites the probe in place into the
/// advertisement to all nodes, override flag set, solicited flag clear (RFC 4861
/// §7.2.4), with our MAC in a target link-layer address option when the frame has room
/// for it (an 86-byte frame; a probe without options has 78, and the advertisement alone
/// already makes the prober's detection fail). Returns false, the frame untouched, when
/// it is shorter than an advertisement.
pub fn defend_in_place(frame: &mut [u8], vip: Ipv6Addr, our_mac: Mac) -> bool {
    if frame.len() < field::OPTIONS {
        return false;
    }
    let with_tlla = frame.len() >= ADVERTISEMENT_LEN;
    write_advertisement(
        frame,
        vip,
        our_mac,
        multicast_mac(ALL_NODES),
        ALL_NODES,
        FLAG_OVERRIDE,
        with_tlla,
    );
    true
}

/// The unsolicited advertisement of `vip` at `our_mac` to all nodes (override flag set,
/// solicited flag clear, our MAC in a target link-layer address option): sent when a VIP
/// is added, and to defend it against duplicate address detection.
pub fn unsolicited(vip: Ipv6Addr, our_mac: Mac) -> [u8; ADVERTISEMENT_LEN] {
    let mut f = [0u8; ADVERTISEMENT_LEN];
    write_advertisement(
        &mut f,
        vip,
        our_mac,
        multicast_mac(ALL_NODES),
        ALL_NODES,
        FLAG_OVERRIDE,
        true,
    );
    f
}

#[cfg(test)]
mod tests;
