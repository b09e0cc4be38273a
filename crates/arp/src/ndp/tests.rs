//! Byte fixtures: solicitations built to RFC 4861's layout, answers checked field by field
//! and with etherparse's own ICMPv6 checksum.

use super::*;

const OURS: Mac = [0x02, 0, 0, 0, 0, 0xd1];
const ASKER: Mac = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x21);

fn is_vip(a: &Ipv6Addr) -> bool {
    *a == VIP
}

/// A neighbour solicitation frame: from `src` to `dst` for `target`, with a source
/// link-layer address option when `sllao`, hop limit `hop`.
fn solicitation(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    sllao: Option<Mac>,
    hop: u8,
) -> Vec<u8> {
    let mut msg = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    if let Some(m) = sllao {
        msg.extend_from_slice(&[OPT_SOURCE_LLADDR, 1]);
        msg.extend_from_slice(&m);
    }
    let sum = icmpv6_checksum(&src, &dst, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let dst_mac = if dst.is_multicast() {
        multicast_mac(dst)
    } else {
        OURS
    };
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&ASKER);
    f.extend_from_slice(&ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, hop]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f
}

fn multicast_ns() -> Vec<u8> {
    solicitation(CLIENT, solicited_node(VIP), VIP, Some(ASKER), 255)
}

/// Checks an advertisement: addresses, flags, target, option, checksum (etherparse's).
fn check_advertisement(f: &[u8], dst_mac: Mac, dst: Ipv6Addr, flags: u8, tlla: bool) {
    assert_eq!(f[0..6], dst_mac);
    assert_eq!(f[6..12], OURS);
    assert_eq!(f[12..14], ETHERTYPE_IPV6);
    assert_eq!(f[14] >> 4, 6);
    let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
    assert_eq!(len, if tlla { 32 } else { 24 });
    assert_eq!((f[20], f[21]), (ICMPV6, 255));
    assert_eq!(ip6(&f[22..38]), VIP, "source is the VIP");
    assert_eq!(ip6(&f[38..54]), dst);
    let msg = &f[54..54 + len];
    assert_eq!((msg[0], msg[1]), (NEIGHBOR_ADVERTISEMENT, 0));
    assert_eq!(msg[4], flags);
    assert_eq!(ip6(&msg[8..24]), VIP);
    if tlla {
        assert_eq!(msg[24..26], [OPT_TARGET_LLADDR, 1]);
        assert_eq!(msg[26..32], OURS);
    }
    let icmp = etherparse::Icmpv6Slice::from_slice(msg).expect("an ICMPv6 message");
    assert!(
        icmp.is_checksum_valid(VIP.octets(), dst.octets()),
        "etherparse agrees with the checksum"
    );
}

#[test]
fn a_multicast_solicitation_for_a_vip_becomes_the_advertisement() {
    let mut f = multicast_ns();
    assert_eq!(f.len(), ADVERTISEMENT_LEN);
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Advertised(VIP)
    );
    check_advertisement(&f, ASKER, CLIENT, FLAG_SOLICITED | FLAG_OVERRIDE, true);
}

#[test]
fn a_unicast_solicitation_is_answered_without_the_option_in_its_own_length() {
    // Neighbour unreachability detection: unicast, often without the option.
    let mut f = solicitation(CLIENT, VIP, VIP, None, 255);
    let before = f.len();
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Advertised(VIP)
    );
    assert_eq!(f.len(), before);
    check_advertisement(&f, ASKER, CLIENT, FLAG_SOLICITED | FLAG_OVERRIDE, false);
}

#[test]
fn the_answer_goes_to_the_source_link_layer_address() {
    let other: Mac = [0x02, 0, 0, 0, 0, 0x99];
    let mut f = solicitation(CLIENT, solicited_node(VIP), VIP, Some(other), 255);
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Advertised(VIP)
    );
    check_advertisement(&f, other, CLIENT, FLAG_SOLICITED | FLAG_OVERRIDE, true);
}

#[test]
fn another_address_is_left_to_the_kernel_untouched() {
    let other = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11);
    let mut f = solicitation(CLIENT, solicited_node(other), other, Some(ASKER), 255);
    let before = f.clone();
    assert_eq!(advertise_in_place(&mut f, is_vip, OURS), Outcome::NotForUs);
    assert_eq!(f, before);
}

#[test]
fn duplicate_address_detection_of_a_vip_is_defended() {
    let mut f = solicitation(Ipv6Addr::UNSPECIFIED, solicited_node(VIP), VIP, None, 255);
    let before = f.clone();
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Defend(VIP)
    );
    assert_eq!(f, before);
    let na = unsolicited(VIP, OURS);
    check_advertisement(
        &na,
        [0x33, 0x33, 0, 0, 0, 1],
        ALL_NODES,
        FLAG_OVERRIDE,
        true,
    );
}

#[test]
fn invalid_solicitations_are_not_answered() {
    let bad = |f: &mut Vec<u8>| {
        let before = f.clone();
        let o = advertise_in_place(f, is_vip, OURS);
        assert_eq!(*f, before, "an unanswered frame is untouched");
        o
    };
    // Hop limit other than 255: it crossed a router.
    let mut f = solicitation(CLIENT, solicited_node(VIP), VIP, Some(ASKER), 254);
    assert_eq!(bad(&mut f), Outcome::Ignored(Ignore::Invalid));
    // Bad checksum.
    let mut f = multicast_ns();
    f[56] ^= 1;
    assert_eq!(bad(&mut f), Outcome::Ignored(Ignore::Invalid));
    // Code other than 0 (checksum fixed up so only the code is wrong).
    let mut f = multicast_ns();
    f[55] = 1;
    f[56..58].fill(0);
    let sum = icmpv6_checksum(&CLIENT, &solicited_node(VIP), &f[54..]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(bad(&mut f), Outcome::Ignored(Ignore::Invalid));
    // A multicast target.
    let mut f = solicitation(
        CLIENT,
        solicited_node(ALL_NODES),
        ALL_NODES,
        Some(ASKER),
        255,
    );
    assert_eq!(bad(&mut f), Outcome::Ignored(Ignore::Invalid));
    // Duplicate address detection with a source link-layer option, or to the VIP itself.
    let mut f = solicitation(
        Ipv6Addr::UNSPECIFIED,
        solicited_node(VIP),
        VIP,
        Some(ASKER),
        255,
    );
    assert_eq!(bad(&mut f), Outcome::Ignored(Ignore::Invalid));
    let mut f = solicitation(Ipv6Addr::UNSPECIFIED, VIP, VIP, None, 255);
    assert_eq!(bad(&mut f), Outcome::Ignored(Ignore::Invalid));
}

#[test]
fn options_of_zero_length_or_past_the_end_are_invalid() {
    let mut msg = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&VIP.octets());
    for opt in [[OPT_SOURCE_LLADDR, 0], [OPT_SOURCE_LLADDR, 2]] {
        let mut m = msg.clone();
        m.extend_from_slice(&opt);
        m.extend_from_slice(&ASKER);
        let dst = solicited_node(VIP);
        let sum = icmpv6_checksum(&CLIENT, &dst, &m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = multicast_ns()[..54].to_vec();
        f[18..20].copy_from_slice(&(m.len() as u16).to_be_bytes());
        f.extend_from_slice(&m);
        assert_eq!(
            advertise_in_place(&mut f, is_vip, OURS),
            Outcome::Ignored(Ignore::Invalid),
            "option {opt:?}"
        );
    }
}

#[test]
fn every_truncation_is_refused_without_a_panic() {
    let full = multicast_ns();
    for n in 0..full.len() {
        let mut f = full[..n].to_vec();
        let o = advertise_in_place(&mut f, is_vip, OURS);
        assert!(
            matches!(o, Outcome::Ignored(Ignore::NotIcmpv6 | Ignore::Truncated)),
            "{n} bytes: {o:?}"
        );
        assert_eq!(f, full[..n], "{n} bytes: untouched");
    }
    // Longer than its payload length (Ethernet padding): still answered.
    let mut f = multicast_ns();
    f.extend_from_slice(&[0; 10]);
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Advertised(VIP)
    );
}

#[test]
fn other_frames_are_not_solicitations() {
    // IPv4, ARP: not IPv6.
    let mut f = vec![0u8; 60];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Ignored(Ignore::NotIcmpv6)
    );
    // IPv6 TCP.
    let mut f = multicast_ns();
    f[20] = 6;
    assert_eq!(
        advertise_in_place(&mut f, is_vip, OURS),
        Outcome::Ignored(Ignore::NotIcmpv6)
    );
    // An echo request, and an advertisement.
    for t in [128u8, NEIGHBOR_ADVERTISEMENT] {
        let mut f = multicast_ns();
        f[54] = t;
        assert_eq!(
            advertise_in_place(&mut f, is_vip, OURS),
            Outcome::Ignored(Ignore::NotSolicitation)
        );
    }
}

#[test]
fn multicast_groups_and_their_macs() {
    assert_eq!(
        solicited_node(VIP),
        "ff02::1:ff00:100".parse::<Ipv6Addr>().expect("an address")
    );
    assert_eq!(
        multicast_mac(solicited_node(VIP)),
        [0x33, 0x33, 0xff, 0, 0x01, 0x00]
    );
    assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
}
