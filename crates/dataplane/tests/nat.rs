//! NAT (masquerading) in the engine: a client's packet leaves for its real server's
//! address and port, the real server's reply leaves from the VIP and the virtual port,
//! back to where the client's packets came from; every checksum stays valid; both
//! families; direct routing and NAT in one service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpvs_dataplane::{process, Config, DropReason, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::tcp::flags::{ACK, FIN, SYN};
use xdpvs_sched::tcp::{State, Timeouts};
use xdpvs_sched::{Mac, Method, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, fold, Endpoints, Endpoints6};

const DIRECTOR: Mac = [0x02, 0, 0, 0, 0, 0xd1];
/// The router the clients are behind.
const ROUTER: Mac = [0x02, 0, 0, 0, 0, 0xe1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 7, 0, 0, 0, 2);

fn rs_mac(n: u8) -> Mac {
    [0x02, 0, 0, 0, 0x01, 10 + n]
}

fn real(addr: IpAddr, n: u8, port: u16, method: Method) -> RealSpec {
    RealSpec {
        addr,
        port,
        method,
        weight: 1,
        mac: Some(rs_mac(n)),
    }
}

fn rs4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + n)
}

fn rs6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x10 + u16::from(n))
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

fn limits() -> Limits {
    Limits {
        max_services: 8,
        max_dests: 32,
        conn_capacity: 4096,
    }
}

fn tables_of(cfg: &Config) -> Tables {
    let s = Services::build(cfg, &limits(), None).expect("valid config");
    Tables::new(s, &limits(), Timeouts::default(), 7).expect("valid limits")
}

fn tables(services: Vec<ServiceSpec>) -> Tables {
    tables_of(&Config::new(DIRECTOR, services, Options::default()))
}

/// A TCP service on the VIP with one NAT real server, number 1, on port 8080.
fn one_nat() -> Config {
    Config::new(
        DIRECTOR,
        vec![service(
            Protocol::Tcp,
            VIP.into(),
            vec![real(rs4(1).into(), 1, 8080, Method::Masq)],
        )],
        Options::default(),
    )
}

fn from_client(sport: u16, dport: u16) -> Endpoints {
    Endpoints {
        src_mac: ROUTER,
        dst_mac: DIRECTOR,
        src_ip: CLIENT,
        dst_ip: VIP,
        sport,
        dport,
    }
}

fn from_real(n: u8, sport: u16, dport: u16) -> Endpoints {
    Endpoints {
        src_mac: rs_mac(n),
        dst_mac: DIRECTOR,
        src_ip: rs4(n),
        dst_ip: CLIENT,
        sport,
        dport,
    }
}

/// Whether the IPv4 header's and the transport's checksums of `f` are valid.
fn valid4(f: &[u8]) -> bool {
    let hlen = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = &f[14 + hlen..14 + total];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&f[26..34]);
    pseudo.extend_from_slice(&[0, f[23]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let udp_without = f[23] == 17 && l4[6..8] == [0, 0];
    fold(0, &f[14..14 + hlen]) == 0xffff
        && (udp_without || fold(u64::from(fold(0, &pseudo)), l4) == 0xffff)
}

/// Whether the transport checksum of IPv6 frame `f` (no extension headers) is valid.
fn valid6(f: &[u8]) -> bool {
    let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
    let l4 = &f[54..54 + plen];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&f[22..54]);
    pseudo.extend_from_slice(&(plen as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, f[20]]);
    fold(u64::from(fold(0, &pseudo)), l4) == 0xffff
}

fn ip4(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

fn port(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// A frame's IPv6 endpoints from `src_mac`.
fn ep6(src_mac: Mac, src_ip: Ipv6Addr, sport: u16, dst_ip: Ipv6Addr, dport: u16) -> Endpoints6 {
    Endpoints6 {
        src_mac,
        dst_mac: DIRECTOR,
        src_ip,
        dst_ip,
        sport,
        dport,
    }
}

/// Tables of one IPv6 service over one NAT real server on `port`.
fn one_nat_real6(proto: Protocol, port: u16) -> Tables {
    tables(vec![service(
        proto,
        VIP6.into(),
        vec![real(rs6(1).into(), 1, port, Method::Masq)],
    )])
}

fn now(ms: u64) -> Time {
    Time::from_nanos(ms * 1_000_000)
}

#[test]
fn a_nat_connection_is_rewritten_both_ways_with_valid_checksums() {
    let nat = |n| real(rs4(n).into(), n, 8080, Method::Masq);
    let mut t = tables(vec![service(
        Protocol::Tcp,
        VIP.into(),
        vec![nat(1), nat(2)],
    )]);
    let payload = b"GET / HTTP/1.0\r\n\r\n";

    // The client's SYN: to real server 1 at 8080.
    let mut syn = frames::tcp(&from_client(40000, 80), SYN, &[]);
    assert!(valid4(&syn));
    assert_eq!(process(&mut syn, &mut t, now(1)), Verdict::Tx);
    assert_eq!(&syn[0..6], &rs_mac(1), "to the real server's MAC");
    assert_eq!(&syn[6..12], &DIRECTOR);
    assert_eq!((ip4(&syn, 26), ip4(&syn, 30)), (CLIENT, rs4(1)));
    assert_eq!((port(&syn, 34), port(&syn, 36)), (40000, 8080));
    assert!(valid4(&syn), "checksums after the rewrite");

    // Its reply: from the VIP at 80, to the router the client is behind.
    let mut synack = frames::tcp(&from_real(1, 8080, 40000), SYN | ACK, &[]);
    assert_eq!(process(&mut synack, &mut t, now(2)), Verdict::ToClient);
    assert_eq!(
        &synack[0..6],
        &ROUTER,
        "back where the client's packets came from"
    );
    assert_eq!(&synack[6..12], &DIRECTOR);
    assert_eq!((ip4(&synack, 26), ip4(&synack, 30)), (VIP, CLIENT));
    assert_eq!((port(&synack, 34), port(&synack, 36)), (80, 40000));
    assert!(valid4(&synack));

    // Data both ways; the state is seen both ways (ESTABLISHED, then the server's FIN).
    let mut ack = frames::tcp(&from_client(40000, 80), ACK, payload);
    assert_eq!(process(&mut ack, &mut t, now(3)), Verdict::Tx);
    assert!(valid4(&ack));
    let state = |t: &Tables| t.conns().iter().next().map(|e| e.state());
    assert_eq!(state(&t), Some(State::Established));
    let mut data = frames::tcp(
        &from_real(1, 8080, 40000),
        ACK,
        b"HTTP/1.0 200 OK\r\n\r\nhello",
    );
    assert_eq!(process(&mut data, &mut t, now(4)), Verdict::ToClient);
    assert!(valid4(&data));
    let mut fin = frames::tcp(&from_real(1, 8080, 40000), FIN | ACK, &[]);
    assert_eq!(process(&mut fin, &mut t, now(5)), Verdict::ToClient);
    assert_eq!(
        state(&t),
        Some(State::FinWait),
        "the server's FIN, seen on the way out"
    );
    assert_eq!(t.stats().nat_replies.get(), 3);

    // The next connection goes to real server 2 (rr); its replies from server 2 only.
    let mut syn2 = frames::tcp(&from_client(40001, 80), SYN, &[]);
    assert_eq!(process(&mut syn2, &mut t, now(6)), Verdict::Tx);
    assert_eq!((ip4(&syn2, 30), port(&syn2, 36)), (rs4(2), 8080));
    let mut wrong = frames::tcp(&from_real(1, 8080, 40001), SYN | ACK, &[]);
    assert_eq!(
        process(&mut wrong, &mut t, now(7)),
        Verdict::Drop(DropReason::NatNoConnection),
        "a reply from another real server than the connection's"
    );

    // The real server's own traffic (another port) is the kernel's to route.
    let mut own = frames::tcp(&from_real(1, 43210, 443), SYN, &[]);
    assert_eq!(process(&mut own, &mut t, now(8)), Verdict::Pass);
}

#[test]
fn udp_keeps_a_missing_checksum_missing_and_a_present_one_valid() {
    let mut t = tables(vec![service(
        Protocol::Udp,
        VIP.into(),
        vec![real(rs4(1).into(), 1, 5353, Method::Masq)],
    )]);
    let mut q = frames::udp(&from_client(40000, 80), b"query");
    assert!(valid4(&q));
    assert_eq!(process(&mut q, &mut t, now(1)), Verdict::Tx);
    assert_eq!((ip4(&q, 30), port(&q, 36)), (rs4(1), 5353));
    assert!(valid4(&q));
    let mut none = frames::udp(&from_client(40001, 80), b"query");
    none[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(process(&mut none, &mut t, now(2)), Verdict::Tx);
    assert_eq!(&none[40..42], &[0, 0], "no checksum stays none");
    assert!(valid4(&none));
    let mut answer = frames::udp(&from_real(1, 5353, 40000), b"answer");
    assert_eq!(process(&mut answer, &mut t, now(3)), Verdict::ToClient);
    assert_eq!((ip4(&answer, 26), port(&answer, 34)), (VIP, 80));
    assert!(valid4(&answer));
}

#[test]
fn ipv6_nat_both_ways() {
    let mut t = one_nat_real6(Protocol::Tcp, 8080);
    let e = ep6(ROUTER, CLIENT6, 40000, VIP6, 80);
    let mut syn = frames::tcp6(&e, SYN, &[]);
    assert!(valid6(&syn));
    assert_eq!(process(&mut syn, &mut t, now(1)), Verdict::Tx);
    assert_eq!(&syn[38..54], &rs6(1).octets());
    assert_eq!(port(&syn, 56), 8080);
    assert!(valid6(&syn));
    let back = ep6(rs_mac(1), rs6(1), 8080, CLIENT6, 40000);
    let mut synack = frames::tcp6(&back, SYN | ACK, &[]);
    assert_eq!(process(&mut synack, &mut t, now(2)), Verdict::ToClient);
    assert_eq!(&synack[22..38], &VIP6.octets());
    assert_eq!(port(&synack, 54), 80);
    assert_eq!(&synack[0..6], &ROUTER);
    assert!(valid6(&synack));
}

#[test]
fn one_service_mixes_direct_routing_and_nat() {
    let mut t = tables(vec![service(
        Protocol::Tcp,
        VIP.into(),
        vec![
            real(Ipv4Addr::new(198, 18, 0, 11).into(), 1, 0, Method::Route),
            real(rs4(2).into(), 2, 8080, Method::Masq),
        ],
    )]);
    let original = frames::tcp(&from_client(40000, 80), SYN, b"x");
    let mut dr = original.clone();
    assert_eq!(process(&mut dr, &mut t, now(1)), Verdict::Tx);
    assert_eq!(&dr[0..6], &rs_mac(1));
    assert_eq!(&dr[12..], &original[12..], "direct routing: MACs only");
    let mut nat = frames::tcp(&from_client(40001, 80), SYN, b"x");
    assert_eq!(process(&mut nat, &mut t, now(2)), Verdict::Tx);
    assert_eq!((ip4(&nat, 30), port(&nat, 36)), (rs4(2), 8080));
    assert!(valid4(&nat));
}

#[test]
fn a_later_fragment_follows_its_first_to_the_nat_real_server() {
    let mut t = tables(vec![service(
        Protocol::Udp,
        VIP.into(),
        vec![real(rs4(1).into(), 1, 5353, Method::Masq)],
    )]);
    let mut first = frames::udp(&from_client(40000, 80), &[7; 64]);
    first[18..20].copy_from_slice(&0x4242u16.to_be_bytes()); // identification
    first[20] = 0x20; // more fragments
    fix_ip_checksum(&mut first);
    assert_eq!(process(&mut first, &mut t, now(1)), Verdict::Tx);
    assert_eq!(ip4(&first, 30), rs4(1));
    let mut later = frames::udp(&from_client(0, 0), &[9; 24]);
    later[18..20].copy_from_slice(&0x4242u16.to_be_bytes());
    later[20..22].copy_from_slice(&9u16.to_be_bytes()); // offset 72 bytes, the last
    fix_ip_checksum(&mut later);
    let body = later[34..].to_vec();
    assert_eq!(process(&mut later, &mut t, now(2)), Verdict::Tx);
    assert_eq!(ip4(&later, 30), rs4(1));
    assert_eq!(&later[0..6], &rs_mac(1));
    assert_eq!(fold(0, &later[14..34]), 0xffff, "its header checksum");
    assert_eq!(&later[34..], &body[..], "no transport header to rewrite");
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let c = !fold(0, &f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn a_nat_real_servers_answer_to_the_directors_own_address_is_the_kernels() {
    let dip = Ipv4Addr::new(198, 18, 1, 1);
    let mut cfg = one_nat();
    cfg.own = vec![dip.into()];
    let mut t = tables_of(&cfg);
    let mut e = from_real(1, 8080, 43000);
    e.dst_ip = dip;
    let mut answer = frames::tcp(&e, SYN | ACK, &[]);
    assert_eq!(process(&mut answer, &mut t, now(1)), Verdict::Pass);
}

/// The ones'-complement check of an ICMP message (IPv4: no pseudo-header).
fn icmp_valid4(f: &[u8]) -> bool {
    let hlen = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    fold(0, &f[14..14 + hlen]) == 0xffff && fold(0, &f[14 + hlen..14 + total]) == 0xffff
}

/// The ICMPv6 checksum of IPv6 frame `f` (no extension headers) is valid.
fn icmp_valid6(f: &[u8]) -> bool {
    valid6(f)
}

/// The quoted IPv4 packet of ICMP error frame `f`, as a frame of its own (for `valid4`).
fn quoted4(f: &[u8]) -> Vec<u8> {
    let hlen = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let mut q = vec![0u8; 14];
    q.extend_from_slice(&f[14 + hlen + 8..14 + total]);
    q
}

#[test]
fn icmp_errors_are_translated_both_ways() {
    let mut t = tables(vec![
        service(
            Protocol::Tcp,
            VIP.into(),
            vec![real(rs4(1).into(), 1, 8080, Method::Masq)],
        ),
        service(
            Protocol::Udp,
            VIP.into(),
            vec![real(rs4(2).into(), 2, 5353, Method::Masq)],
        ),
    ]);
    let mut syn = frames::tcp(&from_client(40000, 80), SYN, &[]);
    assert_eq!(process(&mut syn, &mut t, now(1)), Verdict::Tx);

    // A router on the way to the client: fragmentation needed, quoting a reply as the
    // client's side saw it (from the VIP). To the real server, quoting what it sent.
    let reply = frames::tcp(
        &Endpoints {
            src_mac: DIRECTOR,
            dst_mac: ROUTER,
            src_ip: VIP,
            dst_ip: CLIENT,
            sport: 80,
            dport: 40000,
        },
        ACK,
        &[0x55; 100],
    );
    let router = Endpoints {
        src_mac: ROUTER,
        dst_mac: DIRECTOR,
        src_ip: Ipv4Addr::new(198, 18, 0, 254),
        dst_ip: VIP,
        sport: 0,
        dport: 0,
    };
    let mut err = frames::icmp_error(&router, 3, 4, [0, 0, 5, 0xdc], &reply[14..14 + 140]);
    assert!(icmp_valid4(&err));
    assert_eq!(process(&mut err, &mut t, now(2)), Verdict::Tx);
    assert_eq!(&err[0..6], &rs_mac(1));
    assert_eq!(ip4(&err, 30), rs4(1), "to the real server");
    let q = quoted4(&err);
    assert_eq!((ip4(&q, 26), port(&q, 34)), (rs4(1), 8080), "what it sent");
    assert!(icmp_valid4(&err), "outer and ICMP checksums");
    assert!(valid4(&q), "the quoted packet's checksums");

    // The UDP real server: port unreachable about a client's datagram, to the client:
    // from the VIP, quoting the datagram as the client sent it.
    let mut q1 = frames::udp(&from_client(40001, 80), b"query");
    assert_eq!(process(&mut q1, &mut t, now(3)), Verdict::Tx);
    let mut unreachable = frames::icmp_error(&from_real(2, 0, 0), 3, 3, [0; 4], &q1[14..14 + 33]);
    assert!(icmp_valid4(&unreachable));
    assert_eq!(process(&mut unreachable, &mut t, now(4)), Verdict::ToClient);
    assert_eq!(
        &unreachable[0..6],
        &ROUTER,
        "back where the client's packets come from"
    );
    assert_eq!(ip4(&unreachable, 26), VIP, "from the VIP");
    let q = quoted4(&unreachable);
    assert_eq!(
        (ip4(&q, 30), port(&q, 36)),
        (VIP, 80),
        "as the client sent it"
    );
    assert!(icmp_valid4(&unreachable));
    assert!(valid4(&q), "the quoted datagram's checksums");
    // An error about no connection of the real server's.
    let mut stray = frames::udp(&from_client(49999, 80), b"query");
    stray[30..34].copy_from_slice(&rs4(2).octets());
    let mut unknown = frames::icmp_error(&from_real(2, 0, 0), 3, 3, [0; 4], &stray[14..47]);
    assert_eq!(
        process(&mut unknown, &mut t, now(5)),
        Verdict::Drop(DropReason::IcmpNoConnection)
    );
    // An echo reply from the real server (to anyone) is not ours.
    let mut echo = frames::icmp_error(&from_real(2, 0, 0), 0, 0, [0, 1, 0, 1], b"ping....");
    assert_eq!(process(&mut echo, &mut t, now(6)), Verdict::Pass);
}

#[test]
fn icmpv6_errors_are_translated_both_ways() {
    let mut t = one_nat_real6(Protocol::Udp, 5353);
    let to_vip = ep6(ROUTER, CLIENT6, 40000, VIP6, 80);
    let mut q = frames::udp6(&to_vip, b"query");
    assert_eq!(process(&mut q, &mut t, now(1)), Verdict::Tx);
    let from_rs = ep6(rs_mac(1), rs6(1), 0, CLIENT6, 0);
    let mut unreachable = frames::icmp6_error(&from_rs, 1, 4, [0; 4], &q[14..]);
    assert!(icmp_valid6(&unreachable));
    assert_eq!(process(&mut unreachable, &mut t, now(2)), Verdict::ToClient);
    assert_eq!(&unreachable[22..38], &VIP6.octets(), "from the VIP");
    assert_eq!(&unreachable[0..6], &ROUTER);
    assert_eq!(
        &unreachable[62 + 24..62 + 40],
        &VIP6.octets(),
        "quoted as sent"
    );
    assert_eq!(port(&unreachable, 62 + 42), 80);
    assert!(icmp_valid6(&unreachable));

    // Packet too big from a router, quoting a reply from the VIP: to the real server.
    let mut reply = frames::udp6(&ep6(DIRECTOR, VIP6, 80, CLIENT6, 40000), &[0x33; 64]);
    reply[0..6].copy_from_slice(&ROUTER);
    let router = ep6(ROUTER, "2001:2::fe".parse().expect("ip"), 0, VIP6, 0);
    let mut big = frames::icmp6_error(&router, 2, 0, [0, 0, 5, 0x00], &reply[14..]);
    assert_eq!(process(&mut big, &mut t, now(3)), Verdict::Tx);
    assert_eq!(&big[38..54], &rs6(1).octets(), "to the real server");
    assert_eq!(
        &big[62 + 8..62 + 24],
        &rs6(1).octets(),
        "quoting what it sent"
    );
    assert_eq!(port(&big, 62 + 40), 5353);
    assert!(icmp_valid6(&big));
}

/// With the kernel's routes towards clients, a NAT reply goes to the next hop of the
/// most specific route to its client, whichever router the client's packets came
/// through (asymmetric routing); without a route that contains it, back the way they
/// came.
#[test]
fn a_nat_reply_follows_the_most_specific_route_to_its_client() {
    let mut cfg = one_nat();
    let (default_gw, specific_gw) = ([2, 0, 0, 0, 0, 0xf1], [2, 0, 0, 0, 0, 0xf2]);
    cfg.client_routes = vec![
        xdpvs_dataplane::ClientRoute {
            net: Ipv4Addr::UNSPECIFIED.into(),
            prefix_len: 0,
            mac: default_gw,
        },
        xdpvs_dataplane::ClientRoute {
            net: Ipv4Addr::new(198, 19, 7, 0).into(),
            prefix_len: 24,
            mac: specific_gw,
        },
        xdpvs_dataplane::ClientRoute {
            net: Ipv6Addr::UNSPECIFIED.into(),
            prefix_len: 0,
            mac: [2, 0, 0, 0, 0, 0xf6],
        },
    ];
    let mut t = tables_of(&cfg);
    let reply_to = |t: &mut Tables, client: Ipv4Addr, sport: u16| {
        let mut syn = frames::tcp(
            &Endpoints {
                src_ip: client,
                ..from_client(sport, 80)
            },
            SYN,
            &[],
        );
        assert_eq!(process(&mut syn, t, now(1)), Verdict::Tx);
        let mut synack = frames::tcp(
            &Endpoints {
                dst_ip: client,
                ..from_real(1, 8080, sport)
            },
            SYN | ACK,
            &[],
        );
        assert_eq!(process(&mut synack, t, now(2)), Verdict::ToClient);
        let mut m = [0; 6];
        m.copy_from_slice(&synack[0..6]);
        m
    };
    assert_eq!(reply_to(&mut t, CLIENT, 40000), specific_gw, "the /24 wins");
    assert_eq!(
        reply_to(&mut t, Ipv4Addr::new(198, 19, 9, 9), 40001),
        default_gw,
        "the default route"
    );
    // No route of the family: back where the packets came from.
    cfg.client_routes.truncate(1);
    cfg.client_routes[0].prefix_len = 32;
    cfg.client_routes[0].net = Ipv4Addr::new(198, 19, 1, 1).into();
    let s = Services::build(&cfg, &limits(), Some(t.services())).expect("valid config");
    t.install(Box::new(s));
    assert_eq!(
        reply_to(&mut t, Ipv4Addr::new(198, 19, 9, 8), 40002),
        ROUTER
    );
}

#[test]
fn two_armed_frames_to_real_servers_leave_from_the_servers_side_and_replies_from_the_clients() {
    const SERVERS_SIDE: Mac = [0x02, 0, 0, 0, 0, 0xd2];
    let mut cfg = one_nat();
    cfg.servers_mac = Some(SERVERS_SIDE);
    let mut t = tables_of(&cfg);
    let mut syn = frames::tcp(&from_client(40000, 80), SYN, &[]);
    assert_eq!(process(&mut syn, &mut t, now(1)), Verdict::Tx);
    assert_eq!(
        (&syn[0..6], &syn[6..12]),
        (&rs_mac(1)[..], &SERVERS_SIDE[..])
    );
    let mut synack = frames::tcp(
        &Endpoints {
            dst_mac: SERVERS_SIDE,
            ..from_real(1, 8080, 40000)
        },
        SYN | ACK,
        &[],
    );
    assert_eq!(process(&mut synack, &mut t, now(2)), Verdict::ToClient);
    assert_eq!(
        (&synack[0..6], &synack[6..12]),
        (&ROUTER[..], &DIRECTOR[..])
    );
    assert!(valid4(&synack));
    // An answer (here: a ping of the VIP) goes back where it came from, from the VIP's
    // side.
    let mut ping = frames::icmp_echo_request(&from_client(0, 0), 7, 1, b"ping");
    assert_eq!(process(&mut ping, &mut t, now(3)), Verdict::Reply);
    assert_eq!(&ping[6..12], &DIRECTOR[..]);
}

#[test]
fn on_two_workers_every_packet_of_a_nat_connection_is_handled_by_the_one_its_client_chooses() {
    let cfg = one_nat();
    let mut workers = [tables_of(&cfg), tables_of(&cfg)];
    for (i, t) in workers.iter_mut().enumerate() {
        t.set_shard(i, 2);
    }
    let mut owned = [0, 0];
    for sport in 40000..40064 {
        // The client's SYN, offered to both: one takes it, the other hands it over,
        // untouched, to that one.
        let syn = frames::tcp(&from_client(sport, 80), SYN, &[]);
        let mut v = Vec::new();
        for t in &mut workers {
            let mut f = syn.clone();
            let got = process(&mut f, t, now(1));
            if matches!(got, Verdict::Handoff(_)) {
                assert_eq!(f, syn, "handed over untouched");
            }
            v.push(got);
        }
        let owner = match (&v[0], &v[1]) {
            (Verdict::Tx, Verdict::Handoff(0)) => 0,
            (Verdict::Handoff(1), Verdict::Tx) => 1,
            other => panic!("port {sport}: {other:?}"),
        };
        owned[owner] += 1;
        // The reply, whatever queue it arrives on, goes to the same worker.
        let synack = frames::tcp(&from_real(1, 8080, sport), SYN | ACK, &[]);
        let other = 1 - owner;
        let mut f = synack.clone();
        assert_eq!(
            process(&mut f, &mut workers[other], now(2)),
            Verdict::Handoff(owner as u16)
        );
        assert_eq!(f, synack);
        assert_eq!(
            process(&mut f, &mut workers[owner], now(2)),
            Verdict::ToClient
        );
    }
    assert!(
        owned[0] > 10 && owned[1] > 10,
        "both workers own some: {owned:?}"
    );
    // A direct-routing service's packets stay where they arrive (RSS keeps its flow).
    let mut dr = tables(vec![service(
        Protocol::Tcp,
        VIP.into(),
        vec![real(rs4(2).into(), 2, 80, Method::Route)],
    )]);
    dr.set_shard(0, 2);
    for sport in 40000..40016 {
        let mut f = frames::tcp(&from_client(sport, 80), SYN, &[]);
        assert_eq!(process(&mut f, &mut dr, now(1)), Verdict::Tx);
    }
}
