//! Tunnelling in the engine: a client's packet leaves inside an outer header from the
//! director's address to its real server's (IPIP, IPv6 in IPv6, GUE, GRE with and
//! without checksum), byte for byte identical from its IP header on; every outer
//! checksum is valid; a packet too big for the path once encapsulated is answered with
//! "fragmentation needed" / "packet too big" from the VIP (DF or IPv6) or dropped; one
//! service mixes direct routing, NAT and tunnel real servers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpvs_dataplane::{
    process, process_packet, Config, DropReason, Limits, Options, Packet, Services, Tables, Verdict,
};
use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{
    Mac, Method, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time, TunCsum, TunKind,
    Tunnel,
};
use xdpvs_testkit::frames::{self, fold, Endpoints, Endpoints6};

const DIRECTOR: Mac = [0x02, 0, 0, 0, 0, 0xd1];
/// The router the clients are behind.
const ROUTER: Mac = [0x02, 0, 0, 0, 0, 0xe1];
/// The router towards the tunnel real servers: their next hop.
const GATEWAY: Mac = [0x02, 0, 0, 0, 0, 0xe2];
const DIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 7, 0, 0, 0, 2);
const RS: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 11);
const RS6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 9, 0, 0, 0, 0x11);
const NOW: Time = Time::from_nanos(1_000_000_000);

fn gue(csum: TunCsum) -> Tunnel {
    Tunnel {
        kind: TunKind::Gue,
        port: 6080,
        csum,
    }
}

fn gre(csum: TunCsum) -> Tunnel {
    Tunnel {
        kind: TunKind::Gre,
        port: 0,
        csum,
    }
}

fn real(addr: IpAddr, method: Method, mac: Mac) -> RealSpec {
    RealSpec {
        addr,
        port: 0,
        method,
        weight: 1,
        mac: Some(mac),
    }
}

fn service(proto: Protocol, vip: IpAddr, reals: Vec<RealSpec>) -> ServiceSpec {
    let mut s = ServiceSpec::new(
        ServiceKey {
            proto,
            vip,
            port: 80,
        },
        SchedKind::Rr,
    );
    s.reals = reals;
    s
}

fn tables_with(services: Vec<ServiceSpec>, mtu: u16) -> Tables {
    let limits = Limits {
        max_services: 8,
        max_dests: 32,
        conn_capacity: 4096,
    };
    let mut cfg = Config::new(DIRECTOR, services, Options::default());
    cfg.own = vec![
        IpAddr::V6("fe80::1".parse().expect("address")),
        DIP.into(),
        DIP6.into(),
    ];
    cfg.tunnel_mtu = mtu;
    let s = Services::build(&cfg, &limits, None).expect("valid config");
    Tables::new(s, &limits, Timeouts::default(), 7).expect("valid limits")
}

fn tables(tun: Tunnel) -> Tables {
    tables_with(
        vec![
            service(
                Protocol::Tcp,
                VIP.into(),
                vec![real(RS.into(), Method::Tunnel(tun), GATEWAY)],
            ),
            service(
                Protocol::Tcp,
                VIP6.into(),
                vec![real(RS6.into(), Method::Tunnel(tun), GATEWAY)],
            ),
        ],
        1500,
    )
}

fn from_client(sport: u16) -> Endpoints {
    Endpoints {
        src_mac: ROUTER,
        dst_mac: DIRECTOR,
        src_ip: CLIENT,
        dst_ip: VIP,
        sport,
        dport: 80,
    }
}

fn from_client6(sport: u16) -> Endpoints6 {
    Endpoints6 {
        src_mac: ROUTER,
        dst_mac: DIRECTOR,
        src_ip: CLIENT6,
        dst_ip: VIP6,
        sport,
        dport: 80,
    }
}

/// Runs `frame` through the engine in a buffer with a UMEM frame's room.
fn run(t: &mut Tables, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = frame.to_vec();
    buf.resize(2048 - 256, 0xee);
    let mut len = frame.len();
    let v = process_packet(&mut Packet::new(&mut buf, &mut len), t, NOW);
    buf.truncate(len);
    (v, buf)
}

/// The IP packet of frame `f` (IPv4 or IPv6 after 14 bytes of Ethernet), without the
/// Ethernet padding.
fn ip_packet(f: &[u8]) -> &[u8] {
    let len = if f[14] >> 4 == 4 {
        usize::from(u16::from_be_bytes([f[16], f[17]]))
    } else {
        40 + usize::from(u16::from_be_bytes([f[18], f[19]]))
    };
    &f[14..14 + len]
}

/// Sets DF on IPv4 frame `f` (or clears it) and fixes its header checksum.
fn set_df(f: &mut [u8], on: bool) {
    f[20] = if on { f[20] | 0x40 } else { f[20] & !0x40 };
    f[24..26].fill(0);
    let c = !fold(0, &f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Checks the outer IPv4 header of `out` (protocol `proto`) and returns what follows it.
fn outer4(out: &[u8], inner: &[u8], proto: u8, extra: usize) -> Vec<u8> {
    assert_eq!(
        &out[0..6],
        &GATEWAY,
        "to the next hop towards the real server"
    );
    assert_eq!(&out[6..12], &DIRECTOR);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ip[1], inner[1], "DSCP/ECN as the inner packet's");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        20 + extra + inner.len()
    );
    assert_eq!(&ip[4..6], &inner[4..6], "the inner identification");
    assert_eq!(ip[6] & 0x40, inner[6] & 0x40, "DF as the inner packet's");
    assert_eq!(ip[8], 64);
    assert_eq!(ip[9], proto);
    assert_eq!(&ip[12..16], &DIP.octets());
    assert_eq!(&ip[16..20], &RS.octets());
    assert_eq!(fold(0, ip), 0xffff, "outer header checksum");
    assert_eq!(out.len(), 34 + extra + inner.len());
    out[34..].to_vec()
}

#[test]
fn ipip_carries_the_packet_byte_for_byte_to_the_real_server() {
    let mut t = tables(Tunnel::IPIP);
    let mut syn = frames::tcp(&from_client(40000), SYN, &[]);
    set_df(&mut syn, true);
    let inner = ip_packet(&syn).to_vec();
    let (v, out) = run(&mut t, &syn);
    assert_eq!(v, Verdict::Tx);
    let rest = outer4(&out, &inner, 4, 0);
    assert_eq!(rest, inner, "the inner packet is untouched");
    // Later segments of the connection go the same way, payload and all.
    let data = frames::tcp(&from_client(40000), ACK, &[7u8; 1000]);
    let inner = ip_packet(&data).to_vec();
    let (v, out) = run(&mut t, &data);
    assert_eq!(v, Verdict::Tx);
    assert_eq!(outer4(&out, &inner, 4, 0), inner);
    assert_eq!(t.stats().tunnelled.get(), 2);
}

#[test]
fn gue_and_gre_carry_the_packet_with_valid_checksums() {
    for (tun, proto, extra) in [
        (gue(TunCsum::No), 17u8, 12usize),
        (gue(TunCsum::Csum), 17, 12),
        (gue(TunCsum::Remote), 17, 12),
        (gre(TunCsum::No), 47, 4),
        (gre(TunCsum::Csum), 47, 8),
    ] {
        let mut t = tables(tun);
        let syn = frames::tcp(&from_client(40001), SYN, b"odd");
        let inner = ip_packet(&syn).to_vec();
        let (v, out) = run(&mut t, &syn);
        assert_eq!(v, Verdict::Tx, "{tun:?}");
        let rest = outer4(&out, &inner, proto, extra);
        assert_eq!(
            &rest[extra..],
            &inner[..],
            "{tun:?}: inner packet untouched"
        );
        let encap = &rest[..extra];
        match tun.kind {
            TunKind::Gue => {
                let sport = u16::from_be_bytes([encap[0], encap[1]]);
                assert!(sport >= 49152, "{sport}");
                assert_eq!(u16::from_be_bytes([encap[2], encap[3]]), 6080);
                assert_eq!(
                    usize::from(u16::from_be_bytes([encap[4], encap[5]])),
                    extra + inner.len()
                );
                assert_eq!(&encap[8..12], &[0, 4, 0, 0], "GUE version 0, IPv4 inside");
                let sum = u16::from_be_bytes([encap[6], encap[7]]);
                if tun.csum == TunCsum::Csum {
                    let mut pseudo = Vec::new();
                    pseudo.extend_from_slice(&DIP.octets());
                    pseudo.extend_from_slice(&RS.octets());
                    pseudo.extend_from_slice(&[0, 17]);
                    pseudo.extend_from_slice(&((rest.len()) as u16).to_be_bytes());
                    assert_eq!(
                        fold(u64::from(fold(0, &pseudo)), &rest),
                        0xffff,
                        "UDP checksum"
                    );
                } else {
                    assert_eq!(sum, 0, "{tun:?}: no UDP checksum");
                }
            }
            TunKind::Gre => {
                let csum = tun.csum == TunCsum::Csum;
                assert_eq!(&encap[0..2], if csum { &[0x80, 0] } else { &[0, 0] });
                assert_eq!(&encap[2..4], &[0x08, 0x00]);
                if csum {
                    assert_eq!(fold(0, &rest), 0xffff, "GRE checksum");
                }
            }
            TunKind::Ipip => unreachable!(),
        }
    }
}

#[test]
fn ipv6_in_ipv6_keeps_the_flow_label_and_the_packet() {
    let mut t = tables(Tunnel::IPIP);
    let syn = frames::tcp6(&from_client6(40002), SYN, &[]);
    let inner = ip_packet(&syn).to_vec();
    let (v, out) = run(&mut t, &syn);
    assert_eq!(v, Verdict::Tx);
    assert_eq!(&out[0..6], &GATEWAY);
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    let ip = &out[14..54];
    assert_eq!(
        &ip[0..4],
        &inner[0..4],
        "version, traffic class, flow label"
    );
    assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), inner.len());
    assert_eq!(ip[6], 41, "IPv6 inside");
    assert_eq!(ip[7], 64);
    assert_eq!(
        &ip[8..24],
        &DIP6.octets(),
        "from the director's global address"
    );
    assert_eq!(&ip[24..40], &RS6.octets());
    assert_eq!(&out[54..], &inner[..]);
    // GUE over IPv6: IPv6 inside.
    let mut t = tables(gue(TunCsum::Csum));
    let (v, out) = run(&mut t, &syn);
    assert_eq!(v, Verdict::Tx);
    assert_eq!(out[14 + 6], 17);
    assert_eq!(&out[54 + 8..54 + 12], &[0, 41, 0, 0]);
    let udp = &out[54..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&out[22..54]);
    pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    assert_eq!(fold(u64::from(fold(0, &pseudo)), udp), 0xffff);
    assert_eq!(&udp[12..], &inner[..]);
}

#[test]
fn a_packet_too_big_to_tunnel_gets_fragmentation_needed_from_the_vip() {
    let mut t = tables_with(
        vec![service(
            Protocol::Tcp,
            VIP.into(),
            vec![real(RS.into(), Method::Tunnel(gre(TunCsum::Csum)), GATEWAY)],
        )],
        1500,
    );
    let syn = frames::tcp(&from_client(40003), SYN, &[]);
    assert_eq!(run(&mut t, &syn).0, Verdict::Tx);
    // 1480 bytes of IP: fits a 1500-byte path alone, not with 28 bytes of IP and GRE.
    let mut big = frames::tcp(&from_client(40003), ACK, &[1u8; 1440]);
    set_df(&mut big, true);
    let inner = ip_packet(&big).to_vec();
    assert_eq!(inner.len(), 1480);
    let (v, out) = run(&mut t, &big);
    assert_eq!(v, Verdict::Reply);
    assert_eq!(&out[0..6], &ROUTER, "back where the packet came from");
    assert_eq!(&out[6..12], &DIRECTOR);
    let ip = &out[14..34];
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &VIP.octets(), "from the VIP");
    assert_eq!(&ip[16..20], &CLIENT.octets());
    assert_eq!(fold(0, ip), 0xffff);
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), 576);
    let icmp = &out[34..];
    assert_eq!(icmp.len(), 556);
    assert_eq!(&icmp[0..2], &[3, 4], "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1500 - 28);
    assert_eq!(fold(0, icmp), 0xffff, "ICMP checksum");
    assert_eq!(&icmp[8..], &inner[..548], "quoting the packet");
    assert_eq!(t.stats().too_big.get(), 1);
    // Without DF it cannot be answered (IPVS would fragment the outer packet).
    let mut big = frames::tcp(&from_client(40003), ACK, &[1u8; 1440]);
    set_df(&mut big, false);
    assert_eq!(run(&mut t, &big).0, Verdict::Drop(DropReason::TunnelTooBig));
    // Exactly the path MTU once encapsulated fits.
    let mut fits = frames::tcp(&from_client(40003), ACK, &[1u8; 1500 - 28 - 40]);
    set_df(&mut fits, true);
    assert_eq!(run(&mut t, &fits).0, Verdict::Tx);
}

#[test]
fn an_ipv6_packet_too_big_to_tunnel_gets_packet_too_big() {
    let mut t = tables(Tunnel::IPIP);
    let big = frames::tcp6(&from_client6(40004), SYN, &[2u8; 1500 - 60 - 20]);
    let inner = ip_packet(&big).to_vec();
    let (v, out) = run(&mut t, &big);
    assert_eq!(v, Verdict::Reply);
    assert_eq!(&out[0..6], &ROUTER);
    let ip = &out[14..54];
    assert_eq!(ip[6], 58);
    assert_eq!(&ip[8..24], &VIP6.octets());
    assert_eq!(&ip[24..40], &CLIENT6.octets());
    assert_eq!(out.len(), 14 + 1280);
    let icmp = &out[54..];
    assert_eq!(&icmp[0..2], &[2, 0], "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1460
    );
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    assert_eq!(fold(u64::from(fold(0, &pseudo)), icmp), 0xffff);
    assert_eq!(&icmp[8..], &inner[..1280 - 48]);
}

#[test]
fn a_frame_with_no_room_is_dropped_not_truncated() {
    let mut t = tables(Tunnel::IPIP);
    let mut syn = frames::tcp(&from_client(40005), SYN, &[]);
    let before = syn.clone();
    assert_eq!(
        process(&mut syn, &mut t, NOW),
        Verdict::Drop(DropReason::NoHeadroom)
    );
    assert_eq!(&syn[14..], &before[14..]);
}

#[test]
fn one_service_mixes_direct_routing_nat_and_a_tunnel() {
    let rs = |n: u8| Ipv4Addr::new(198, 18, 0, 10 + n);
    let mac = |n: u8| [0x02, 0, 0, 0, 1, n];
    let mut t = tables_with(
        vec![service(
            Protocol::Tcp,
            VIP.into(),
            vec![
                real(rs(1).into(), Method::Route, mac(1)),
                RealSpec {
                    port: 8080,
                    ..real(rs(2).into(), Method::Masq, mac(2))
                },
                real(RS.into(), Method::Tunnel(gue(TunCsum::No)), GATEWAY),
            ],
        )],
        1500,
    );
    let mut seen = Vec::new();
    for sport in 41000..41003u16 {
        let syn = frames::tcp(&from_client(sport), SYN, &[]);
        let inner = ip_packet(&syn).to_vec();
        let (v, out) = run(&mut t, &syn);
        assert_eq!(v, Verdict::Tx);
        let kind = if out[0..6] == mac(1) {
            assert_eq!(&out[14..], &syn[14..], "direct routing: MACs only");
            "dr"
        } else if out[0..6] == mac(2) {
            assert_eq!(&out[30..34], &rs(2).octets(), "NAT: to the real server");
            assert_eq!(&out[36..38], &8080u16.to_be_bytes());
            "nat"
        } else {
            assert_eq!(&outer4(&out, &inner, 17, 12)[12..], &inner[..]);
            "tunnel"
        };
        seen.push(kind);
    }
    seen.sort_unstable();
    assert_eq!(seen, ["dr", "nat", "tunnel"]);
}

#[test]
fn a_tunnel_needs_a_source_address_of_its_family() {
    let limits = Limits::default();
    let cfg = Config::new(
        DIRECTOR,
        vec![service(
            Protocol::Tcp,
            VIP6.into(),
            vec![real(RS6.into(), Method::Tunnel(Tunnel::IPIP), GATEWAY)],
        )],
        Options::default(),
    );
    let e = Services::build(&cfg, &limits, None).expect_err("no IPv6 address");
    assert!(e.to_string().contains("no address of its family"), "{e}");
}
