//! Byte-fixture tables: input frame -> expected verdict and expected output frame.
//!
//! Each scenario runs its rows in order against one set of tables, so later rows see the
//! connections earlier rows created.

use std::net::Ipv4Addr;
use std::time::Duration;

use xdpvs_dataplane::{
    process, Config, Draining, DropReason, Limits, Options, Services, Tables, Verdict,
};
use xdpvs_sched::tcp::flags::{ACK, FIN, RST, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Mac, Persistence, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints};

const DIRECTOR: Mac = [0x02, 0, 0, 0, 0, 0xd1];
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PSH: u8 = 0x08;

fn rs_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n)
}
fn rs_mac(n: u8) -> Mac {
    [0x02, 0, 0, 0, 0x01, 10 + n]
}

fn service(proto: Protocol, sched: SchedKind, weights: &[u16]) -> ServiceSpec {
    let mut s = ServiceSpec::new(
        ServiceKey {
            proto,
            vip: VIP,
            port: 80,
        },
        sched,
    );
    s.reals = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| RealSpec {
            addr: rs_ip(i as u8 + 1),
            weight: w,
            mac: Some(rs_mac(i as u8 + 1)),
        })
        .collect();
    s
}

fn config(services: Vec<ServiceSpec>) -> Config {
    Config::new(DIRECTOR, services, Options::default())
}

fn limits() -> Limits {
    Limits {
        max_services: 8,
        max_dests: 32,
        conn_capacity: 4096,
    }
}

fn tables(cfg: &Config) -> Tables {
    let s = Services::build(cfg, &limits(), None).expect("valid config");
    Tables::new(s, &limits(), Timeouts::default(), 7).expect("valid limits")
}

fn reconfigure(t: &mut Tables, cfg: &Config) {
    let s = Services::build(cfg, &limits(), Some(t.services())).expect("valid config");
    t.install(Box::new(s));
}

fn ep(client: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Endpoints {
    Endpoints {
        src_mac: CLIENT_MAC,
        dst_mac: DIRECTOR,
        src_ip: client,
        dst_ip: dst,
        sport,
        dport,
    }
}

fn tcp(client: Ipv4Addr, sport: u16, fl: u8) -> Vec<u8> {
    frames::tcp(
        &ep(client, sport, VIP, 80),
        fl,
        if fl & PSH != 0 {
            b"GET / HTTP/1.0\r\n\r\n"
        } else {
            b""
        },
    )
}

fn udp(client: Ipv4Addr, sport: u16) -> Vec<u8> {
    frames::udp(&ep(client, sport, VIP, 80), b"hello")
}

/// What the output frame must be.
#[derive(Debug)]
enum Out {
    /// Byte for byte the input.
    Unchanged,
    /// The input with destination MAC := this real server's and source MAC := the director's.
    ForwardedTo(u8),
    /// Exactly these bytes.
    Exactly(Vec<u8>),
}

struct Row {
    what: &'static str,
    at_secs: u64,
    frame: Vec<u8>,
    verdict: Verdict,
    out: Out,
}

fn row(what: &'static str, frame: Vec<u8>, verdict: Verdict, out: Out) -> Row {
    Row {
        what,
        at_secs: 1,
        frame,
        verdict,
        out,
    }
}

fn fwd(what: &'static str, frame: Vec<u8>, rs: u8) -> Row {
    row(what, frame, Verdict::Tx, Out::ForwardedTo(rs))
}

fn pass(what: &'static str, frame: Vec<u8>) -> Row {
    row(what, frame, Verdict::Pass, Out::Unchanged)
}

fn drop(what: &'static str, frame: Vec<u8>, r: DropReason) -> Row {
    row(what, frame, Verdict::Drop(r), Out::Unchanged)
}

fn run(t: &mut Tables, rows: Vec<Row>) {
    for (n, r) in rows.into_iter().enumerate() {
        let mut f = r.frame.clone();
        let v = process(&mut f, t, Time::from_secs(r.at_secs));
        assert_eq!(v, r.verdict, "row {n} ({}): verdict", r.what);
        let want = match r.out {
            Out::Unchanged => r.frame.clone(),
            Out::ForwardedTo(rs) => {
                let mut w = r.frame.clone();
                w[0..6].copy_from_slice(&rs_mac(rs));
                w[6..12].copy_from_slice(&DIRECTOR);
                w
            }
            Out::Exactly(b) => b,
        };
        assert_eq!(f, want, "row {n} ({}): output frame", r.what);
    }
}

/// The configuration of the shared classification table.
fn shared_config() -> Config {
    config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1, 1])])
}

/// The shared classification table: one frame of each kind the director meets, run in
/// order. The engine's verdicts are asserted by `rr_service_table`; the XDP program runs
/// the same frames in `the_xdp_program_steers_what_the_engine_handles`.
fn shared_rows() -> Vec<Row> {
    let c2 = Ipv4Addr::new(198, 19, 0, 2);
    let other = Ipv4Addr::new(198, 18, 0, 1);

    let arp_req = xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP).to_vec();
    let mut arp_reply = arp_req.clone();
    arp_reply[0..6].copy_from_slice(&CLIENT_MAC);
    arp_reply[6..12].copy_from_slice(&DIRECTOR);
    arp_reply[20..22].copy_from_slice(&[0, 2]); // operation: reply
    arp_reply[22..28].copy_from_slice(&DIRECTOR); // sender MAC
    arp_reply[28..32].copy_from_slice(&VIP.octets()); // sender IP
    arp_reply[32..38].copy_from_slice(&CLIENT_MAC); // target MAC
    arp_reply[38..42].copy_from_slice(&CLIENT.octets()); // target IP
    let arp_other = xdpvs_arp::request(CLIENT_MAC, CLIENT, other).to_vec();
    let mut arp_is_reply = arp_reply.clone();
    arp_is_reply[0..6].copy_from_slice(&DIRECTOR);

    let mut ipv6 = tcp(CLIENT, 1000, SYN);
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut vlan = tcp(CLIENT, 1000, SYN);
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    let ping = frames::icmp_echo_request(&ep(CLIENT, 0, VIP, 0), 0x1234, 7, b"are you there?");
    let pong = {
        let e = Endpoints {
            src_mac: DIRECTOR,
            dst_mac: CLIENT_MAC,
            src_ip: VIP,
            dst_ip: CLIENT,
            sport: 0,
            dport: 0,
        };
        let b = etherparse::PacketBuilder::ethernet2(e.src_mac, e.dst_mac)
            .ipv4(VIP.octets(), CLIENT.octets(), 64)
            .icmpv4_echo_reply(0x1234, 7);
        let mut v = Vec::new();
        b.write(&mut v, b"are you there?").expect("vec");
        v.resize(v.len().max(60), 0);
        v
    };
    // A router on the client's path says a reply of the first flow (VIP:80 -> CLIENT:1000,
    // sent by its real server) needs fragmenting: the error quotes its IP header and 8 bytes.
    let router = Ipv4Addr::new(198, 18, 0, 254);
    let reply_of = |cport: u16| {
        let f = frames::tcp(&ep(VIP, 80, CLIENT, cport), ACK, &[0u8; 100]);
        f[14..14 + 28].to_vec()
    };
    let mtu = [0, 0, 0x05, 0x00]; // next-hop MTU 1280
    let frag_needed = frames::icmp_error(&ep(router, 0, VIP, 0), 3, 4, mtu, &reply_of(1000));
    let unknown_error = frames::icmp_error(&ep(router, 0, VIP, 0), 3, 4, mtu, &reply_of(4242));
    let timestamp = frames::icmp_error(&ep(CLIENT, 0, VIP, 0), 13, 0, [0; 4], &[0u8; 12]);
    let mut frag = tcp(CLIENT, 1000, SYN);
    frag[14 + 6] = 0x20; // more fragments
    let mut later_frag = tcp(CLIENT, 1000, SYN);
    later_frag[14 + 7] = 0x10; // offset 16 * 8 bytes
    let mut orphan = later_frag.clone();
    orphan[14 + 4] ^= 0x55; // another datagram (IP ID)

    // Malformed and unusual frames, each with its verdict.
    let first = || tcp(CLIENT, 1000, ACK);
    let with = |f: fn(&mut Vec<u8>)| {
        let mut v = first();
        f(&mut v);
        v
    };
    let ihl_4 = with(|v| v[14] = 0x44);
    let ihl_15 = with(|v| v[14] = 0x4f);
    let total_short = with(|v| v[16..18].copy_from_slice(&12u16.to_be_bytes()));
    let total_long = with(|v| v[16..18].copy_from_slice(&1000u16.to_be_bytes()));
    let padded = with(|v| v.extend_from_slice(&[0xee; 30]));
    let options = with(|v| {
        // IHL 6: four bytes of options (NOP NOP NOP EOL) between the header and TCP.
        v.splice(14 + 20..14 + 20, [1u8, 1, 1, 0]);
        v[14] = 0x46;
        let total = u16::from_be_bytes([v[16], v[17]]) + 4;
        v[16..18].copy_from_slice(&total.to_be_bytes());
    });
    let ttl_0 = with(|v| v[14 + 8] = 0);
    let ttl_1 = with(|v| v[14 + 8] = 1);
    let big = frames::tcp(&ep(CLIENT, 1000, VIP, 80), ACK, &[0x5a; 2960]);
    let bad_ethertype = with(|v| v[12..14].copy_from_slice(&[0x12, 0x34]));
    let qinq = with(|v| v[12..14].copy_from_slice(&[0x88, 0xa8]));
    let mut arp_hlen_7 = xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP).to_vec();
    arp_hlen_7[14 + 4] = 7;
    let impostor: Mac = [0x02, 0, 0, 0, 0x01, 0x99];
    let mut vip_claim = xdpvs_arp::request(impostor, VIP, CLIENT).to_vec();
    vip_claim[20..22].copy_from_slice(&[0, 2]); // a reply: "the VIP is at impostor"
    let vip_garp = xdpvs_arp::gratuitous(VIP, impostor).to_vec();

    vec![
        fwd(
            "SYN to VIP: Tx to the first real, only the MACs change",
            tcp(CLIENT, 1000, SYN),
            1,
        ),
        fwd("ACK of the same flow: same real", tcp(CLIENT, 1000, ACK), 1),
        fwd(
            "data of the same flow: same real",
            tcp(CLIENT, 1000, ACK | PSH),
            1,
        ),
        fwd("next flow: next real (rr)", tcp(CLIENT, 1001, SYN), 2),
        fwd("third flow", tcp(c2, 1000, SYN), 3),
        fwd("fourth flow wraps around", tcp(c2, 1001, SYN), 1),
        fwd(
            "first flow still on its real",
            tcp(CLIENT, 1000, ACK | FIN),
            1,
        ),
        drop(
            "ACK without a connection",
            tcp(CLIENT, 2000, ACK),
            DropReason::NoConnection,
        ),
        drop(
            "RST without a connection",
            tcp(CLIENT, 2001, RST),
            DropReason::NoConnection,
        ),
        drop(
            "SYN+RST without a connection",
            tcp(CLIENT, 2002, SYN | RST),
            DropReason::NoConnection,
        ),
        row(
            "ARP request for the VIP: reply in place",
            arp_req,
            Verdict::Reply,
            Out::Exactly(arp_reply),
        ),
        pass("ARP request for another address", arp_other),
        drop(
            "ARP reply from the VIP at the director's own MAC (its own, echoed)",
            arp_is_reply,
            DropReason::ArpOwn,
        ),
        pass(
            "IPv4 to another address",
            frames::tcp(&ep(CLIENT, 1000, other, 80), SYN, b""),
        ),
        pass(
            "VIP, port without a service",
            frames::tcp(&ep(CLIENT, 1000, VIP, 443), SYN, b""),
        ),
        pass("UDP to the VIP without a UDP service", udp(CLIENT, 1000)),
        row(
            "ICMP echo request to the VIP: the director answers from the VIP",
            ping,
            Verdict::Reply,
            Out::Exactly(pong),
        ),
        fwd(
            "ICMP fragmentation needed quoting the first flow's reply: to its real",
            frag_needed,
            1,
        ),
        drop(
            "ICMP error quoting no known connection",
            unknown_error,
            DropReason::IcmpNoConnection,
        ),
        drop(
            "ICMP timestamp request to the VIP",
            timestamp,
            DropReason::IcmpUnsupported,
        ),
        pass("IPv6", ipv6),
        pass("VLAN-tagged", vlan),
        fwd(
            "first fragment of a datagram of the first flow: its real",
            frag,
            1,
        ),
        fwd("a later fragment of it: the same real", later_frag, 1),
        drop(
            "a later fragment of a datagram whose first was not seen",
            orphan,
            DropReason::Fragment,
        ),
        drop("IHL 4 (below 5)", ihl_4, DropReason::Ipv4Header),
        drop("IHL 15 (past the frame)", ihl_15, DropReason::Ipv4Header),
        drop(
            "total length shorter than the header",
            total_short,
            DropReason::Ipv4Length,
        ),
        drop(
            "total length longer than the frame",
            total_long,
            DropReason::Ipv4Length,
        ),
        fwd("total length shorter than the frame (padding)", padded, 1),
        fwd("IPv4 options: the 5-tuple after them", options, 1),
        fwd(
            "TTL 0: forwarded as is (direct routing routes nothing)",
            ttl_0,
            1,
        ),
        fwd("TTL 1: forwarded as is", ttl_1, 1),
        fwd("a 3000-byte frame of the flow: forwarded as is", big, 1),
        pass("another EtherType", bad_ethertype),
        pass("QinQ-tagged (802.1ad)", qinq),
        pass("ARP with 7-byte hardware addresses", arp_hlen_7),
        drop(
            "ARP reply from another host claiming the VIP",
            vip_claim,
            DropReason::VipConflict,
        ),
        drop(
            "gratuitous ARP from another host for the VIP",
            vip_garp,
            DropReason::VipConflict,
        ),
    ]
}

#[test]
fn rr_service_table() {
    let mut t = tables(&shared_config());
    run(&mut t, shared_rows());
    let s = t.stats();
    assert_eq!(s.tx.get(), 15);
    assert_eq!(s.reply.get(), 2);
    assert_eq!(s.pass.get(), 9);
    assert_eq!(s.drop_count(DropReason::Ipv4Header), 2);
    assert_eq!(s.drop_count(DropReason::Ipv4Length), 2);
    assert_eq!(s.drop_count(DropReason::ArpOwn), 1);
    assert_eq!(s.drop_count(DropReason::VipConflict), 2);
    assert_eq!(s.conflict_vip.get(), u64::from(u32::from(VIP)));
    assert_eq!(s.conflict_mac.get(), 0x0200_0000_0199);
    assert_eq!(s.drop_count(DropReason::NoConnection), 3);
    assert_eq!(s.drop_count(DropReason::Fragment), 1);
    assert_eq!(s.drop_count(DropReason::IcmpNoConnection), 1);
    assert_eq!(s.drop_count(DropReason::IcmpUnsupported), 1);
    assert_eq!(s.rx.get(), 39);
    assert_eq!(
        (
            s.echo_replies.get(),
            s.icmp_forwarded.get(),
            s.fragments_forwarded.get()
        ),
        (1, 1, 1)
    );
    // Per service and per real: packets, bytes, connections.
    let svc = &t.services().services()[0];
    assert_eq!(s.services[svc.slot as usize].packets.get(), 15);
    assert_eq!(s.services[svc.slot as usize].conns.get(), 4);
    let r1 = svc.reals[0].dest.slot as usize;
    assert_eq!(s.dests[r1].packets.get(), 13);
    assert_eq!(s.dests[r1].conns.get(), 2);
    assert_eq!(
        s.dests[r1].bytes.get(),
        // IP packet lengths, as IPVS counts bytes: four 40-byte segments and one with data,
        // the 56-byte ICMP error, two 40-byte fragments, the padded one (40), the one with
        // options (44), the two TTL ones (40), the 3000-byte one.
        4 * 40
            + (tcp(CLIENT, 1000, ACK | PSH).len() - 14) as u64
            + 56
            + 2 * 40
            + 40
            + 44
            + 2 * 40
            + 3000
    );
    // ActiveConn/InActConn as ipvsadm shows them: flow 1 went SYN, ACK (ESTABLISHED),
    // data, FIN (FIN_WAIT), then a SYN (its first fragment: SYN_RECV, as IPVS's
    // input-only table has it) and ACKs (ESTABLISHED again); the other flow of real 1
    // is in SYN_RECV.
    let l = t.conns().load(svc.reals[0].dest);
    assert_eq!((l.active, l.inactive), (1, 1));
}

#[test]
fn udp_flows_stick() {
    let mut t = tables(&config(vec![service(
        Protocol::Udp,
        SchedKind::Rr,
        &[1, 1],
    )]));
    run(
        &mut t,
        vec![
            fwd("UDP to VIP: scheduled", udp(CLIENT, 5000), 1),
            fwd("same UDP flow: same real", udp(CLIENT, 5000), 1),
            fwd("other UDP flow: next real", udp(CLIENT, 5001), 2),
            fwd("first flow again", udp(CLIENT, 5000), 1),
            pass(
                "TCP to the VIP without a TCP service",
                tcp(CLIENT, 5000, SYN),
            ),
        ],
    );
    let l = t.conns().load(t.services().services()[0].reals[0].dest);
    assert_eq!(
        (l.active, l.inactive),
        (0, 1),
        "UDP flows count as InActConn"
    );
}

fn client(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + n)
}

#[test]
fn wrr_proportions_and_order() {
    let mut t = tables(&config(vec![service(
        Protocol::Tcp,
        SchedKind::Wrr,
        &[3, 2, 1],
    )]));
    // IPVS order for 3, 2, 1: A A B A B C.
    let order = [1u8, 1, 2, 1, 2, 3];
    let rows = (0..60)
        .map(|k| {
            fwd(
                "new flow (wrr)",
                tcp(client(k), 1000, SYN),
                order[k as usize % 6],
            )
        })
        .collect();
    run(&mut t, rows);
    let svc = &t.services().services()[0];
    let conns: Vec<u64> = svc
        .reals
        .iter()
        .map(|r| t.stats().dests[r.dest.slot as usize].conns.get())
        .collect();
    assert_eq!(conns, [30, 20, 10]);
}

#[test]
fn lc_picks_the_least_loaded() {
    let mut t = tables(&config(vec![service(
        Protocol::Tcp,
        SchedKind::Lc,
        &[1, 1, 1],
    )]));
    run(
        &mut t,
        vec![
            fwd("all idle: first real", tcp(client(1), 1, SYN), 1),
            fwd(
                "establish it (ActiveConn 1 = overhead 256)",
                tcp(client(1), 1, ACK),
                1,
            ),
            fwd("second real is idle", tcp(client(2), 1, SYN), 2),
            fwd("establish it", tcp(client(2), 1, ACK), 2),
            fwd("third real is idle", tcp(client(3), 1, SYN), 3),
            fwd(
                "third real has 1 InActConn (1) < 256: again the third",
                tcp(client(4), 1, SYN),
                3,
            ),
            fwd(
                "close flow 1: first real drops to 1 InActConn",
                tcp(client(1), 1, RST),
                1,
            ),
            fwd(
                "first (1) ties third? no: third has 2; first wins",
                tcp(client(5), 1, SYN),
                1,
            ),
        ],
    );
}

#[test]
fn quiescent_real_keeps_its_flows_but_gets_no_new_ones() {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    let mut t = tables(&cfg);
    run(
        &mut t,
        vec![
            fwd("flow A to the first real", tcp(client(1), 1, SYN), 1),
            fwd("flow B to the second real", tcp(client(2), 1, SYN), 2),
        ],
    );
    cfg.services[0].reals[0].weight = 0;
    reconfigure(&mut t, &cfg);
    run(
        &mut t,
        vec![
            fwd(
                "flow A continues on the quiescent real",
                tcp(client(1), 1, ACK),
                1,
            ),
            fwd("new flow: only the second real", tcp(client(3), 1, SYN), 2),
            fwd("new flow: only the second real", tcp(client(4), 1, SYN), 2),
            fwd("flow A still continues", tcp(client(1), 1, ACK | PSH), 1),
        ],
    );
}

#[test]
fn removed_real_without_a_mac_drops_its_flows_and_they_reschedule() {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    let mut t = tables(&cfg);
    run(
        &mut t,
        vec![
            fwd("flow A to the first real", tcp(client(1), 1, SYN), 1),
            fwd("flow B to the second real", tcp(client(2), 1, SYN), 2),
        ],
    );
    cfg.services[0].reals.remove(0);
    reconfigure(&mut t, &cfg);
    run(
        &mut t,
        vec![
            drop(
                "flow A: its real is gone and nothing drains it",
                tcp(client(1), 1, ACK),
                DropReason::DestRemoved,
            ),
            fwd(
                "the client's retried SYN is scheduled afresh",
                tcp(client(1), 1, SYN),
                2,
            ),
        ],
    );
}

/// The configuration after removing the first real server, with it draining.
fn remove_first_draining(t: &Tables, cfg: &mut Config) {
    let dest = t.services().services()[0].reals[0].dest;
    cfg.services[0].reals.remove(0);
    cfg.draining = vec![Draining {
        dest,
        mac: Some(rs_mac(1)),
    }];
}

#[test]
fn removed_real_drains_its_flows_gracefully() {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    let mut t = tables(&cfg);
    run(
        &mut t,
        vec![fwd("flow A to the first real", tcp(client(1), 1, SYN), 1)],
    );
    remove_first_draining(&t, &mut cfg);
    reconfigure(&mut t, &cfg);
    // A new real server must not take the draining one's slot while another is free.
    cfg.services[0].reals.push(RealSpec {
        addr: rs_ip(3),
        weight: 1,
        mac: Some(rs_mac(3)),
    });
    reconfigure(&mut t, &cfg);
    assert_ne!(
        t.services().services()[0].reals[1].dest.slot,
        cfg.draining[0].dest.slot
    );
    run(
        &mut t,
        vec![
            fwd(
                "flow A keeps reaching its removed real",
                tcp(client(1), 1, ACK | PSH),
                1,
            ),
            fwd("new flows: live reals only", tcp(client(2), 1, SYN), 2),
            fwd("new flows: live reals only", tcp(client(3), 1, SYN), 3),
            fwd(
                "flow A closes on its removed real",
                tcp(client(1), 1, ACK | FIN),
                1,
            ),
            fwd(
                "a new connection on flow A's ports goes to a live real",
                tcp(client(1), 1, SYN),
                2,
            ),
        ],
    );
}

/// The RST|ACK or RST the director answers `incoming` with (built with etherparse, so
/// independently of the engine's own checksum code).
fn reset_for(incoming: &[u8]) -> Vec<u8> {
    let eth = etherparse::Ethernet2HeaderSlice::from_slice(incoming).expect("ethernet");
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&incoming[14..]).expect("ipv4");
    let tcp =
        etherparse::TcpHeaderSlice::from_slice(&incoming[14 + ip.slice().len()..]).expect("tcp");
    let payload = usize::from(ip.total_len()) - ip.slice().len() - tcp.slice().len();
    let mut h = etherparse::TcpHeader::new(tcp.destination_port(), tcp.source_port(), 0, 0);
    h.rst = true;
    if tcp.ack() {
        h.sequence_number = tcp.acknowledgment_number();
    } else {
        h.ack = true;
        h.acknowledgment_number = tcp
            .sequence_number()
            .wrapping_add(payload as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin()));
    }
    let mut iph = etherparse::Ipv4Header::new(
        20,
        64,
        etherparse::IpNumber::TCP,
        ip.destination(),
        ip.source(),
    )
    .expect("header");
    iph.dont_fragment = true;
    iph.header_checksum = iph.calc_header_checksum();
    h.checksum = h.calc_checksum_ipv4(&iph, &[]).expect("checksum");
    let mut out = Vec::new();
    out.extend_from_slice(&eth.source());
    out.extend_from_slice(&DIRECTOR);
    out.extend_from_slice(&[0x08, 0x00]);
    iph.write(&mut out).expect("written");
    h.write(&mut out).expect("written");
    out.resize(incoming.len(), 0);
    out
}

#[test]
fn expire_nodest_conn_resets_the_removed_reals_clients() {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    cfg.options.expire_nodest_conn = true;
    let mut t = tables(&cfg);
    run(
        &mut t,
        vec![
            fwd("flow A to the first real", tcp(client(1), 1, SYN), 1),
            fwd("flow B to the second real", tcp(client(2), 1, SYN), 2),
            fwd("flow C to the first real", tcp(client(3), 1, SYN), 1),
        ],
    );
    remove_first_draining(&t, &mut cfg);
    reconfigure(&mut t, &cfg);
    let a = tcp(client(1), 1, ACK | PSH);
    let fin = tcp(client(3), 1, FIN);
    run(
        &mut t,
        vec![
            row(
                "flow A: reset from the VIP, acknowledged sequence",
                a.clone(),
                Verdict::Reply,
                Out::Exactly(reset_for(&a)),
            ),
            fwd(
                "flow A's next SYN is scheduled afresh",
                tcp(client(1), 1, SYN),
                2,
            ),
            row(
                "flow C's FIN without ACK: RST|ACK acknowledging it",
                fin.clone(),
                Verdict::Reply,
                Out::Exactly(reset_for(&fin)),
            ),
            drop(
                "flow C is forgotten: no reset for a reset",
                tcp(client(3), 1, RST),
                DropReason::NoConnection,
            ),
            fwd("flow B is untouched", tcp(client(2), 1, ACK), 2),
        ],
    );
    assert_eq!(t.stats().resets.get(), 2);
}

#[test]
fn unresolved_real_gets_no_traffic() {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    cfg.services[0].reals[0].mac = None;
    let mut t = tables(&cfg);
    run(
        &mut t,
        vec![
            fwd("only the resolved real", tcp(client(1), 1, SYN), 2),
            fwd("only the resolved real", tcp(client(2), 1, SYN), 2),
        ],
    );
    cfg.services[0].reals[1].mac = None;
    reconfigure(&mut t, &cfg);
    run(
        &mut t,
        vec![
            drop(
                "nothing resolved: no destination",
                tcp(client(3), 1, SYN),
                DropReason::NoDestination,
            ),
            drop(
                "existing flow waits for its MAC",
                tcp(client(1), 1, ACK),
                DropReason::DestUnresolved,
            ),
        ],
    );
}

#[test]
fn persistence_keeps_a_client_on_its_real() {
    let mut svc = service(Protocol::Tcp, SchedKind::Rr, &[1, 1, 1]);
    svc.persistence = Some(
        Persistence::new(Duration::from_secs(300), Ipv4Addr::new(255, 255, 255, 0)).expect("valid"),
    );
    let mut t = tables(&config(vec![svc]));
    let a1 = Ipv4Addr::new(198, 19, 1, 1);
    let a2 = Ipv4Addr::new(198, 19, 1, 2); // same /24
    let b = Ipv4Addr::new(198, 19, 2, 1);
    run(
        &mut t,
        vec![
            fwd("client A, first connection", tcp(a1, 1, SYN), 1),
            fwd("client A, second connection: same real", tcp(a1, 2, SYN), 1),
            fwd(
                "client A's neighbour in the /24: same real",
                tcp(a2, 1, SYN),
                1,
            ),
            fwd("client B: next real", tcp(b, 1, SYN), 2),
            fwd("client B again: same real", tcp(b, 2, SYN), 2),
        ],
    );
    // Long after every connection and the template expired (and the worker's expiry
    // sweep has been round), A is scheduled afresh.
    let late = 2000;
    let slots = t.conns().slot_count();
    t.expire(Time::from_secs(late), slots);
    let mut r = fwd("client A after expiry: rr moves on", tcp(a1, 3, SYN), 3);
    r.at_secs = late;
    run(&mut t, vec![r]);
}

#[test]
fn sloppy_tcp_schedules_mid_stream_segments() {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    cfg.options.sloppy_tcp = true;
    let mut t = tables(&cfg);
    run(
        &mut t,
        vec![
            fwd(
                "ACK without a connection is scheduled (sloppy_tcp)",
                tcp(client(1), 1, ACK),
                1,
            ),
            fwd("and sticks", tcp(client(1), 1, ACK), 1),
            drop(
                "RST still does not open one",
                tcp(client(2), 1, RST),
                DropReason::NoConnection,
            ),
        ],
    );
}

#[test]
fn expired_flow_is_scheduled_again() {
    let mut t = tables(&config(vec![service(
        Protocol::Tcp,
        SchedKind::Rr,
        &[1, 1],
    )]));
    let mut rows = vec![
        fwd("flow opens", tcp(client(1), 1, SYN), 1),
        fwd("and is established", tcp(client(1), 1, ACK), 1),
    ];
    // ESTABLISHED lives 900 s: still there at 901 s (last seen at 1 s) ...
    let mut r = fwd("idle 900 s: still known", tcp(client(1), 1, ACK), 1);
    r.at_secs = 901;
    rows.push(r);
    // ... and gone 901 s after that.
    let mut r = drop(
        "idle 901 s: expired",
        tcp(client(1), 1, ACK),
        DropReason::NoConnection,
    );
    r.at_secs = 1802;
    rows.push(r);
    run(&mut t, rows);
    assert!(t.conns().is_empty());
}

/// A valid frame longer than 60 bytes, cut at every length below its own.
fn all_truncations(frame: &[u8], t: &mut Tables) {
    assert!(frame.len() > 60);
    for len in 0..frame.len() {
        let mut f = frame[..len].to_vec();
        let v = process(&mut f, t, Time::from_secs(1));
        assert!(matches!(v, Verdict::Drop(_)), "length {len}: {v:?}");
        assert_eq!(
            f,
            &frame[..len],
            "length {len}: a dropped frame is untouched"
        );
    }
}

#[test]
fn every_truncation_is_dropped_never_a_panic() {
    let mut t = tables(&config(vec![
        service(Protocol::Tcp, SchedKind::Rr, &[1]),
        {
            let mut u = service(Protocol::Udp, SchedKind::Rr, &[1]);
            u.key.port = 80;
            u
        },
    ]));
    let syn = frames::tcp(&ep(CLIENT, 1000, VIP, 80), SYN, &[0x55; 20]);
    assert_eq!(syn.len(), 74);
    all_truncations(&syn, &mut t);
    let dgram = frames::udp(&ep(CLIENT, 1000, VIP, 80), &[0x55; 32]);
    all_truncations(&dgram, &mut t);
    // ARP: shorter than a complete request is dropped, never answered.
    let arp = xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP);
    for len in 0..42 {
        let mut f = arp[..len].to_vec();
        assert!(
            matches!(process(&mut f, &mut t, Time::ZERO), Verdict::Drop(_)),
            "ARP length {len}"
        );
    }
    // And the untruncated frames do pass through.
    let mut f = syn.clone();
    assert_eq!(process(&mut f, &mut t, Time::from_secs(1)), Verdict::Tx);
    assert_eq!(t.stats().drops_total(), (74 + 74 + 42) as u64);
}

fn small_table(weights: &[u16], capacity: usize) -> Tables {
    let cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, weights)]);
    let lim = Limits {
        conn_capacity: capacity,
        ..limits()
    };
    Tables::new(
        Services::build(&cfg, &lim, None).expect("valid"),
        &lim,
        Timeouts::default(),
        1,
    )
    .expect("valid")
}

/// Sends a TCP segment at second `at`: the verdict and the destination MAC.
fn send(t: &mut Tables, c: u32, fl: u8, at: u64) -> (Verdict, Mac) {
    let mut f = tcp(client(c), 1, fl);
    let v = process(&mut f, t, Time::from_secs(at));
    (v, f[0..6].try_into().expect("6 bytes"))
}

#[test]
fn a_full_table_never_evicts_an_established_connection_and_serves_new_flows_statelessly() {
    let mut t = small_table(&[1, 1], 2);
    assert_eq!(send(&mut t, 1, SYN, 1), (Verdict::Tx, rs_mac(1)));
    assert_eq!(send(&mut t, 1, ACK, 1), (Verdict::Tx, rs_mac(1)));
    assert_eq!(send(&mut t, 2, SYN, 1), (Verdict::Tx, rs_mac(2)));
    assert_eq!(send(&mut t, 2, ACK, 1), (Verdict::Tx, rs_mac(2)));
    // Full of established connections: new flows go by the stateless hash, every
    // segment of a flow to the same real server, and both real servers get some.
    let mut seen = std::collections::HashSet::new();
    for c in 10..60 {
        let (v, mac) = send(&mut t, c, SYN, 2);
        assert_eq!(v, Verdict::Tx, "flow {c}");
        assert!(mac == rs_mac(1) || mac == rs_mac(2));
        for fl in [ACK, ACK | PSH, ACK | FIN] {
            assert_eq!(send(&mut t, c, fl, 3), (Verdict::Tx, mac), "flow {c} moved");
        }
        seen.insert(mac);
    }
    assert_eq!(
        seen.len(),
        2,
        "the hash spreads flows over both real servers"
    );
    assert_eq!(t.stats().stateless.get(), 50 * 4);
    assert_eq!(t.conns().evictions(), 0);
    // The established connections never moved, and were never evicted.
    assert_eq!(send(&mut t, 1, ACK, 4), (Verdict::Tx, rs_mac(1)));
    assert_eq!(send(&mut t, 2, ACK, 4), (Verdict::Tx, rs_mac(2)));
    assert_eq!(t.conns().len(), 2);
    assert_eq!(t.stats().drop_count(DropReason::TableFull), 0);
    // Long after the table was last full (its entries expired and swept), a segment
    // without an entry is dropped again.
    let later = 5 + xdpvs_dataplane::engine::ADOPT_WINDOW.as_secs();
    t.expire(Time::from_secs(later), 1 << 16);
    assert_eq!(t.conns().len(), 0);
    let (v, _) = send(&mut t, 99, ACK, later);
    assert_eq!(v, Verdict::Drop(DropReason::NoConnection));
}

#[test]
fn a_full_table_evicts_a_half_open_connection_first() {
    let mut t = small_table(&[1, 1], 2);
    assert_eq!(send(&mut t, 1, SYN, 1), (Verdict::Tx, rs_mac(1)));
    assert_eq!(send(&mut t, 1, ACK, 1), (Verdict::Tx, rs_mac(1)));
    assert_eq!(send(&mut t, 2, SYN, 1), (Verdict::Tx, rs_mac(2))); // half-open
                                                                   // A new SYN finds the table full: the half-open entry goes, the established stays.
    let (v, mac3) = send(&mut t, 3, SYN, 2);
    assert_eq!(v, Verdict::Tx);
    assert_eq!(t.conns().evictions(), 1);
    assert_eq!(t.conns().len(), 2);
    assert_eq!(send(&mut t, 1, ACK, 2), (Verdict::Tx, rs_mac(1)));
    assert_eq!(
        send(&mut t, 3, ACK, 2),
        (Verdict::Tx, mac3),
        "its entry was recorded"
    );
    // The evicted client's handshake completes by the hash, not dropped.
    let (v, _) = send(&mut t, 2, ACK, 2);
    assert_eq!(v, Verdict::Tx);
    assert_eq!(t.stats().drop_count(DropReason::NoConnection), 0);
}

#[test]
fn the_stateless_hash_sends_nothing_to_a_quiescent_real_server() {
    let mut t = small_table(&[1, 0], 1);
    assert_eq!(send(&mut t, 1, SYN, 1), (Verdict::Tx, rs_mac(1)));
    assert_eq!(send(&mut t, 1, ACK, 1), (Verdict::Tx, rs_mac(1)));
    for c in 10..40 {
        assert_eq!(send(&mut t, c, SYN, 2), (Verdict::Tx, rs_mac(1)));
    }
}

/// Whether the engine's verdict says the director handles the frame: it forwards it,
/// answers it, or drops it by a decision of its own. `None` for frames it drops as
/// malformed, which the kernel drops as well, so either classifier may take them.
fn handled(v: Verdict) -> Option<bool> {
    match v {
        Verdict::Tx | Verdict::Reply => Some(true),
        Verdict::Pass => Some(false),
        Verdict::Drop(
            DropReason::EthTruncated
            | DropReason::ArpTruncated
            | DropReason::Ipv4Header
            | DropReason::Ipv4Length
            | DropReason::L4Header,
        ) => None,
        Verdict::Drop(_) => Some(true),
    }
}

/// The XDP program (run by the kernel through BPF_PROG_TEST_RUN) and the engine over the
/// same frames: the program steers a frame to the director exactly when the engine
/// handles it, and never one the engine would pass (it would be lost: a frame steered to
/// AF_XDP cannot go back to the kernel).
#[cfg(feature = "afxdp")]
#[test]
fn the_xdp_program_steers_what_the_engine_handles() {
    use xdpvs_dataplane::xdp::Steering;
    if !xdpvs_testkit::lab::is_root() {
        eprintln!("skipped: loading the XDP program for BPF_PROG_TEST_RUN needs root");
        return;
    }
    let steering = Steering::load().expect("the XDP program loads");
    let cfg = shared_config();
    let keys: Vec<ServiceKey> = cfg.services.iter().map(|s| s.key).collect();
    steering.set_services(&keys).expect("maps updated");
    let mut t = tables(&cfg);
    let mut frames: Vec<(String, Vec<u8>)> = shared_rows()
        .into_iter()
        .map(|r| (r.what.to_string(), r.frame))
        .collect();
    // Every truncation of a SYN to the service and of an ARP request for the VIP.
    let syn = tcp(CLIENT, 4000, SYN);
    let arp = xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP).to_vec();
    for (name, f) in [("SYN", &syn), ("ARP request", &arp)] {
        for len in 0..f.len() {
            frames.push((format!("{name} cut to {len} bytes"), f[..len].to_vec()));
        }
    }
    let mut steered = 0;
    for (what, frame) in frames {
        let bpf = steering.classify(&frame).expect("test run");
        let mut f = frame.clone();
        let v = process(&mut f, &mut t, Time::from_secs(1));
        steered += usize::from(bpf);
        // None: malformed; the engine drops it, and so would the kernel.
        if let Some(h) = handled(v) {
            assert_eq!(bpf, h, "{what}: XDP steers {bpf}, engine says {v:?}");
        }
    }
    assert!(steered >= 12, "the program steered {steered} frames");
}
