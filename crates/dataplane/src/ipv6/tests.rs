//! Byte fixtures for IPv6 parsing: extension-header chains, fragments, truncations.

use super::*;

const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x21);
const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// An extension header of 8 bytes (`kind`'s body: PadN options, an empty routing
/// header, or a fragment header `frag` = (offset in 8-byte units, more, id)).
fn ext(kind: u8, next: u8, frag: (u16, bool, u32)) -> Vec<u8> {
    match kind {
        FRAGMENT => {
            let mut e = vec![next, 0];
            e.extend_from_slice(&((frag.0 << 3) | u16::from(frag.1)).to_be_bytes());
            e.extend_from_slice(&frag.2.to_be_bytes());
            e
        }
        ROUTING => vec![next, 0, 4, 0, 0, 0, 0, 0],
        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
    }
}

/// An Ethernet frame: IPv6 from the client to the VIP, through `chain` (extension
/// header kinds in order), then `proto` with `l4`.
fn frame(chain: &[u8], frag: (u16, bool, u32), proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut exts = Vec::new();
    for (i, &k) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(proto);
        exts.extend(ext(k, next, frag));
    }
    let first = chain.first().copied().unwrap_or(proto);
    let mut f = vec![2, 0, 0, 0, 0, 0xd1, 2, 0, 0, 0, 0, 0xc1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[first, 64]);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&VIP.octets());
    f.extend(exts);
    f.extend_from_slice(l4);
    f
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 12];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    u
}

const NOFRAG: (u16, bool, u32) = (0, false, 0);

#[test]
fn a_tcp_syn_gives_its_5_tuple_and_flags() {
    let f = frame(&[], NOFRAG, TCP, &tcp(40000, 80, 0x02));
    assert_eq!(
        parse(&f),
        Ok(Inbound6::Flow(Flow6 {
            proto: Protocol::Tcp,
            src: CLIENT,
            dst: VIP,
            sport: 40000,
            dport: 80,
            tcp_flags: Some(0x02),
            ip_len: 60,
            first_fragment: None,
            l4: 54,
        }))
    );
}

#[test]
fn extension_headers_before_udp_are_walked() {
    let f = frame(
        &[HOP_BY_HOP, DEST_OPTS, ROUTING, DEST_OPTS],
        NOFRAG,
        UDP,
        &udp(5353, 53),
    );
    let Ok(Inbound6::Flow(fl)) = parse(&f) else {
        panic!("{:?}", parse(&f))
    };
    assert_eq!(
        (fl.proto, fl.sport, fl.dport, fl.tcp_flags),
        (Protocol::Udp, 5353, 53, None)
    );
    assert_eq!(fl.ip_len, 40 + 32 + 12);
}

#[test]
fn a_first_fragment_is_a_flow_and_later_ones_carry_its_key() {
    let first = frame(&[FRAGMENT], (0, true, 77), TCP, &tcp(40000, 80, 0x10));
    let key = FragKey6 {
        src: CLIENT,
        dst: VIP,
        id: 77,
    };
    let Ok(Inbound6::Flow(fl)) = parse(&first) else {
        panic!("{:?}", parse(&first))
    };
    assert_eq!(
        (fl.sport, fl.dport, fl.first_fragment),
        (40000, 80, Some(key))
    );
    // A later fragment: no ports, even if its bytes look like a TCP header.
    let later = frame(&[HOP_BY_HOP, FRAGMENT], (185, false, 77), TCP, &[0xab; 24]);
    assert_eq!(
        parse(&later),
        Ok(Inbound6::Later {
            key,
            ip_len: 40 + 16 + 24
        })
    );
    // An atomic fragment (offset 0, no more) is a whole packet.
    let atomic = frame(&[FRAGMENT], (0, false, 78), UDP, &udp(1, 2));
    let Ok(Inbound6::Flow(fl)) = parse(&atomic) else {
        panic!("{:?}", parse(&atomic))
    };
    assert_eq!(fl.first_fragment, None);
}

#[test]
fn icmpv6_and_other_protocols_are_told_apart() {
    let ns = frame(&[], NOFRAG, 58, &[135, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        parse(&ns),
        Ok(Inbound6::Icmp {
            src: CLIENT,
            dst: VIP,
            icmp_type: 135
        })
    );
    let sctp = frame(&[DEST_OPTS], NOFRAG, 132, &[0; 12]);
    assert_eq!(parse(&sctp), Ok(Inbound6::Other));
}

#[test]
fn other_frames_are_not_ipv6() {
    let mut f = frame(&[], NOFRAG, TCP, &tcp(1, 80, 2));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse(&f), Err(Error6::NotIpv6));
    assert_eq!(parse(&f[..10]), Err(Error6::NotIpv6));
    let mut v4 = frame(&[], NOFRAG, TCP, &tcp(1, 80, 2));
    v4[14] = 0x45;
    assert_eq!(parse(&v4), Err(Error6::BadHeader));
}

#[test]
fn an_extension_header_running_past_the_packet_is_refused() {
    let mut f = frame(&[HOP_BY_HOP], NOFRAG, UDP, &udp(1, 53));
    // Header extension length 3: 32 bytes, more than the packet holds.
    f[14 + 40 + 1] = 3;
    assert_eq!(parse(&f), Err(Error6::BadExtension));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = frame(
        &[HOP_BY_HOP, ROUTING, FRAGMENT],
        (0, true, 9),
        TCP,
        &tcp(40000, 80, 2),
    );
    assert!(matches!(parse(&full), Ok(Inbound6::Flow(_))));
    for n in 0..full.len() {
        assert!(
            parse(&full[..n]).is_err(),
            "{n} bytes: {:?}",
            parse(&full[..n])
        );
    }
    // A payload length that stops inside the TCP header.
    let mut short = full.clone();
    let len = u16::from_be_bytes([short[18], short[19]]) - 4;
    short[18..20].copy_from_slice(&len.to_be_bytes());
    assert_eq!(parse(&short), Err(Error6::Truncated));
}

/// An echo request from the client to `dst` with a correct checksum.
fn echo_request(dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut msg = vec![128, 0, 0, 0, 0x12, 0x34, 0, 7];
    msg.extend_from_slice(payload);
    let h = etherparse::Icmpv6Header::with_checksum(
        etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 0x1234, seq: 7 }),
        CLIENT.octets(),
        dst.octets(),
        payload,
    )
    .expect("a small message");
    msg[2..4].copy_from_slice(&h.checksum.to_be_bytes());
    let mut f = frame(&[], NOFRAG, 58, &msg);
    f[38..54].copy_from_slice(&dst.octets());
    f
}

#[test]
fn an_echo_request_to_a_vip_is_answered_in_place() {
    let mut f = echo_request(VIP, b"ping payload");
    let before = f.clone();
    assert_eq!(echo_reply_in_place(&mut f, |a| *a == VIP), Some(VIP));
    assert_eq!(f.len(), before.len());
    assert_eq!(f[0..6], before[6..12]);
    assert_eq!(f[6..12], before[0..6]);
    assert_eq!(f[21], 64);
    assert_eq!(f[22..38], VIP.octets());
    assert_eq!(f[38..54], CLIENT.octets());
    assert_eq!(f[54], 129);
    assert_eq!(
        f[58..],
        before[58..],
        "identifier, sequence and data echoed"
    );
    let reply = etherparse::Icmpv6Slice::from_slice(&f[54..]).expect("ICMPv6");
    assert!(reply.is_checksum_valid(VIP.octets(), CLIENT.octets()));
}

#[test]
fn echo_requests_elsewhere_or_damaged_are_left_alone() {
    let other = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11);
    let mut f = echo_request(other, b"x");
    let before = f.clone();
    assert_eq!(echo_reply_in_place(&mut f, |a| *a == VIP), None);
    assert_eq!(f, before);
    let mut f = echo_request(VIP, b"x");
    f[60] ^= 0xff;
    let before = f.clone();
    assert_eq!(
        echo_reply_in_place(&mut f, |a| *a == VIP),
        None,
        "bad checksum"
    );
    assert_eq!(f, before);
    // An echo reply is not answered.
    let mut f = echo_request(VIP, b"x");
    f[54] = 129;
    assert_eq!(echo_reply_in_place(&mut f, |a| *a == VIP), None);
}
