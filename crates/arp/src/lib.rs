//! ARP for an LVS director, pure and in place.
//!
//! - [`reply_in_place`] turns an ARP request for one of our virtual IPs into the reply,
//!   rewriting the frame where it lies (no copy, no allocation). It answers *only* for
//!   VIPs: every other address is left to the kernel.
//! - [`gratuitous`] builds the announcement sent when a VIP is added and at start.
//! - [`request`] and [`parse`] let the director resolve real servers' MACs itself.
//! - [`ndp`]: the same for IPv6 (neighbour solicitations for VIPs answered in place,
//!   unsolicited advertisements).
//!
//! Replies, malformed and truncated frames are never answered.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

pub mod ndp;

use etherparse::{
    ArpEthIpv4Packet, ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header,
};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// The broadcast MAC.
pub const BROADCAST: Mac = [0xff; 6];

/// Length of the frames this crate builds: an Ethernet/IPv4 ARP packet padded to the
/// Ethernet minimum of 60 bytes (without FCS).
pub const FRAME_LEN: usize = 60;

/// Byte offsets in an Ethernet frame carrying Ethernet/IPv4 ARP.
mod field {
    use std::ops::Range;
    pub const ETH_DST: Range<usize> = 0..6;
    pub const ETH_SRC: Range<usize> = 6..12;
    pub const ETH_TYPE: Range<usize> = 12..14;
    pub const ARP: usize = 14;
    pub const OPER: Range<usize> = ARP + 6..ARP + 8;
    pub const SHA: Range<usize> = ARP + 8..ARP + 14;
    pub const SPA: Range<usize> = ARP + 14..ARP + 18;
    pub const THA: Range<usize> = ARP + 18..ARP + 24;
    pub const TPA: Range<usize> = ARP + 24..ARP + 28;
    pub const END: usize = ARP + 28;
}

/// Why a frame was not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignore {
    /// Not an ARP frame (other EtherType, VLAN tag, shorter than an Ethernet header).
    NotArp,
    /// ARP, but cut short.
    Truncated,
    /// ARP for something other than Ethernet/IPv4.
    NotEthernetIpv4,
    /// A reply or another operation: we only answer requests.
    NotRequest,
}

/// What [`reply_in_place`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The frame is now the reply for this VIP: transmit it.
    Replied(Ipv4Addr),
    /// A well-formed request for an address that is not ours: leave it to the kernel.
    NotForUs,
    /// Not answered.
    Ignored(Ignore),
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// An ARP request.
    pub fn is_request(&self) -> bool {
        self.operation == ArpOperation::REQUEST.0
    }
    /// An ARP reply.
    pub fn is_reply(&self) -> bool {
        self.operation == ArpOperation::REPLY.0
    }
}

/// Parses an Ethernet frame carrying Ethernet/IPv4 ARP.
pub fn parse(frame: &[u8]) -> Result<Arp, Ignore> {
    if frame.len() < field::ARP || frame[field::ETH_TYPE] != EtherType::ARP.0.to_be_bytes() {
        return Err(Ignore::NotArp);
    }
    let arp = ArpPacketSlice::from_slice(&frame[field::ARP..]).map_err(|_| Ignore::Truncated)?;
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET
        || arp.proto_addr_type() != EtherType::IPV4
        || arp.hw_addr_size() != 6
        || arp.proto_addr_size() != 4
    {
        return Err(Ignore::NotEthernetIpv4);
    }
    let mac = |b: &[u8]| -> Mac { [b[0], b[1], b[2], b[3], b[4], b[5]] };
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    Ok(Arp {
        operation: arp.operation().0,
        sender_mac: mac(arp.sender_hw_addr()),
        sender_ip: ip(arp.sender_protocol_addr()),
        target_mac: mac(arp.target_hw_addr()),
        target_ip: ip(arp.target_protocol_addr()),
    })
}

/// If `frame` is an ARP request whose target `is_vip`, rewrites it in place into the reply
/// from `our_mac` (Ethernet and ARP addresses swapped, operation 2). The frame keeps its
/// length (padding included). Anything else is left untouched.
pub fn reply_in_place(
    frame: &mut [u8],
    is_vip: impl FnOnce(Ipv4Addr) -> bool,
    our_mac: Mac,
) -> Outcome {
    let req = match parse(frame) {
        Ok(a) => a,
        Err(why) => return Outcome::Ignored(why),
    };
    if !req.is_request() {
        return Outcome::Ignored(Ignore::NotRequest);
    }
    if !is_vip(req.target_ip) {
        return Outcome::NotForUs;
    }
    let asker_eth = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
    frame[field::ETH_DST].copy_from_slice(&asker_eth);
    frame[field::ETH_SRC].copy_from_slice(&our_mac);
    frame[field::OPER].copy_from_slice(&ArpOperation::REPLY.0.to_be_bytes());
    frame[field::SHA].copy_from_slice(&our_mac);
    frame[field::SPA].copy_from_slice(&req.target_ip.octets());
    frame[field::THA].copy_from_slice(&req.sender_mac);
    frame[field::TPA].copy_from_slice(&req.sender_ip.octets());
    Outcome::Replied(req.target_ip)
}

fn build(eth_dst: Mac, arp: ArpEthIpv4Packet) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    let eth = Ethernet2Header {
        source: arp.sender_mac,
        destination: eth_dst,
        ether_type: EtherType::ARP,
    };
    f[..field::ARP].copy_from_slice(&eth.to_bytes());
    f[field::ARP..field::END].copy_from_slice(&arp.to_bytes());
    f
}

/// A gratuitous ARP announcing that `vip` is at `our_mac` (a broadcast request whose
/// sender and target address are both the VIP, as RFC 5227 announcements are).
pub fn gratuitous(vip: Ipv4Addr, our_mac: Mac) -> [u8; FRAME_LEN] {
    request(our_mac, vip, vip)
}

/// A broadcast ARP request from `our_mac`/`our_ip` asking for `target`.
pub fn request(our_mac: Mac, our_ip: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
    build(
        BROADCAST,
        ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: our_mac,
            sender_ipv4: our_ip.octets(),
            target_mac: [0; 6],
            target_ipv4: target.octets(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Mac = [0x02, 0, 0, 0, 0, 0xd1];
    const CLIENT: Mac = [0x02, 0, 0, 0, 0, 0xc1];
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn who_has(target: Ipv4Addr) -> [u8; FRAME_LEN] {
        request(CLIENT, CLIENT_IP, target)
    }

    #[test]
    fn answers_for_a_vip_in_place() {
        let mut f = who_has(VIP);
        assert_eq!(
            reply_in_place(&mut f, |ip| ip == VIP, US),
            Outcome::Replied(VIP)
        );
        let r = parse(&f).expect("valid reply");
        assert!(r.is_reply());
        assert_eq!((r.sender_mac, r.sender_ip), (US, VIP));
        assert_eq!((r.target_mac, r.target_ip), (CLIENT, CLIENT_IP));
        assert_eq!(&f[0..6], &CLIENT);
        assert_eq!(&f[6..12], &US);
        assert_eq!(f.len(), FRAME_LEN);
        assert!(f[field::END..].iter().all(|&b| b == 0), "padding untouched");
    }

    #[test]
    fn never_answers_for_other_addresses() {
        let mut f = who_has(Ipv4Addr::new(198, 18, 0, 1));
        let before = f;
        assert_eq!(
            reply_in_place(&mut f, |ip| ip == VIP, US),
            Outcome::NotForUs
        );
        assert_eq!(f, before);
    }

    #[test]
    fn ignores_replies_and_foreign_arp() {
        let mut f = who_has(VIP);
        reply_in_place(&mut f, |_| true, US);
        let before = f;
        assert_eq!(
            reply_in_place(&mut f, |_| true, US),
            Outcome::Ignored(Ignore::NotRequest)
        );
        assert_eq!(f, before);
        let mut g = who_has(VIP);
        g[field::ARP + 5] = 16; // protocol address length of IPv6
        assert!(matches!(
            reply_in_place(&mut g, |_| true, US),
            Outcome::Ignored(_)
        ));
        let mut ip = who_has(VIP);
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            reply_in_place(&mut ip, |_| true, US),
            Outcome::Ignored(Ignore::NotArp)
        );
    }

    #[test]
    fn every_truncation_is_ignored_untouched() {
        let full = who_has(VIP);
        for len in 0..field::END {
            let mut f = full[..len].to_vec();
            let out = reply_in_place(&mut f, |_| true, US);
            assert!(matches!(out, Outcome::Ignored(_)), "len {len}: {out:?}");
            assert_eq!(f, &full[..len]);
        }
        // Without padding, a 42-byte request is complete and answered.
        let mut f = full[..field::END].to_vec();
        assert_eq!(reply_in_place(&mut f, |_| true, US), Outcome::Replied(VIP));
    }

    #[test]
    fn gratuitous_announces_the_vip() {
        let g = gratuitous(VIP, US);
        assert_eq!(&g[0..6], &BROADCAST);
        let a = parse(&g).expect("valid");
        assert!(a.is_request());
        assert_eq!((a.sender_mac, a.sender_ip, a.target_ip), (US, VIP, VIP));
    }
}
