//! Byte-fixture tables: input frame -> expected verdict and expected output frame.
//!
//! Each scenario runs its rows in order against one set of tables, so later rows see the
//! connections earlier rows created.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use xdpvs_dataplane::engine::Why;
use xdpvs_dataplane::{
    process, process_packet, Config, ConnReuseMode, Draining, DropReason, Limits, Options, Packet,
    Services, Tables, Verdict,
};
use xdpvs_sched::tcp::flags::{ACK, FIN, RST, SYN};
use xdpvs_sched::tcp::{State, Timeouts};
use xdpvs_sched::{Mac, Persistence, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints, Endpoints6};

const DIRECTOR: Mac = [0x02, 0, 0, 0, 0, 0xd1];
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
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
            vip: VIP.into(),
            port: 80,
        },
        sched,
    );
    s.reals = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| RealSpec {
            addr: rs_ip(i as u8 + 1).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
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
    let mut t = Tables::new(s, &limits(), Timeouts::default(), 7).expect("valid limits");
    if offload::on() {
        t.enable_offload(1024);
    }
    t
}

/// `XDPVS_FIXTURES_OFFLOAD=1` (as root): every fixture runs as `run --offload` runs it.
/// Before each row the workers' offload records go into the XDP program's map (a map of
/// each test's own), and the row's frame is offered to the program first
/// (`BPF_PROG_TEST_RUN`): what it forwards itself must be exactly what the engine's row
/// says (verdict `Tx`, the same bytes), and is counted and touched as the director's
/// offload thread counts and touches it; the rest goes to the engine as before.
#[cfg(feature = "afxdp")]
mod offload {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    use xdpvs_dataplane::offload::{FastFlow, OffloadRec, Touch};
    use xdpvs_dataplane::xdp::{FlowMap, Steering};
    use xdpvs_dataplane::Tables;
    use xdpvs_sched::conn::ConnKey;
    use xdpvs_sched::{Protocol, ServiceKey, Time};

    pub fn on() -> bool {
        std::env::var_os("XDPVS_FIXTURES_OFFLOAD").is_some_and(|v| v == "1")
    }

    /// With `--offload` (and root), the program forwarded exactly `n` frames of this test.
    pub fn assert_taken(n: usize) {
        if on() && xdpvs_testkit::is_root() {
            assert_eq!(
                TAKEN.with(|t| *t.borrow()),
                n,
                "frames the XDP program forwarded"
            );
        }
    }

    struct Fast {
        steering: Steering,
        map: FlowMap,
        /// The flows in the map, with the slot of each one's counters.
        flows: HashMap<ConnKey<Ipv4Addr>, (FastFlow, u32)>,
        /// Slots free again.
        free: Vec<u32>,
        /// Slots never used start here.
        next: u32,
    }

    impl Fast {
        fn remove(&mut self, k: &ConnKey<Ipv4Addr>) {
            if let Some((_, slot)) = self.flows.remove(k) {
                self.map.remove(k).expect("removed");
                self.free.push(slot);
            }
        }
    }

    thread_local! {
        static FAST: RefCell<Option<Fast>> = const { RefCell::new(None) };
        /// Frames the program forwarded in this test.
        pub static TAKEN: RefCell<usize> = const { RefCell::new(0) };
    }

    fn key_of(frame: &[u8]) -> Option<ConnKey<Ipv4Addr>> {
        if frame.len() < 38 || frame[12..14] != [8, 0] {
            return None;
        }
        let ihl = usize::from(frame[14] & 0xf) * 4;
        let l4 = 14 + ihl;
        let b = frame.get(l4..l4 + 4)?;
        Some(ConnKey {
            proto: Protocol::from_ip_number(frame[23])?,
            client: Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
            cport: u16::from_be_bytes([b[0], b[1]]),
            vip: Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]),
            vport: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The frame as the XDP program forwards it, if it does (then counted and touched).
    pub fn forward(t: &mut Tables, frame: &[u8], now: Time) -> Option<Vec<u8>> {
        if !xdpvs_testkit::is_root() {
            xdpvs_testkit::cannot_run(
                "the fixtures with --offload",
                "loading the XDP program for BPF_PROG_TEST_RUN needs root",
            );
            return None;
        }
        FAST.with(|cell| {
            let mut cell = cell.borrow_mut();
            let fast = cell.get_or_insert_with(|| {
                let steering = Steering::load(4096).expect("the XDP program loads");
                let map = steering.flows().expect("the flows map");
                Fast {
                    steering,
                    map,
                    flows: HashMap::new(),
                    free: Vec::new(),
                    next: 0,
                }
            });
            apply(t, fast);
            let keys: Vec<ServiceKey> = t.services().services().iter().map(|s| s.key).collect();
            let nat: Vec<_> = t.services().nat_sources().collect();
            fast.steering
                .set_services(&keys, &nat, &[])
                .expect("maps updated");
            let key = key_of(frame)?;
            // The program leaves a flow idle past its timeout to the workers, by the
            // kernel's clock; the fixtures' clock is their own: the same check, made here.
            if t.conns().peek(&key, now).is_none() {
                fast.remove(&key);
            }
            let out = fast.steering.fast_path(frame).expect("test run")?;
            let (f, _) = fast.flows.get(&key).expect("a flow the workers offered");
            let s = t.stats();
            let ip_len = u64::from(u16::from_be_bytes([frame[16], frame[17]]));
            s.rx.inc();
            s.rx_bytes.add(frame.len() as u64);
            s.tx.inc();
            for c in [&s.services[f.service as usize], &s.dests[f.dest as usize]] {
                c.packets.inc();
                c.bytes.add(ip_len);
            }
            t.touch(&Touch { key, at: now });
            TAKEN.with(|n| *n.borrow_mut() += 1);
            Some(out)
        })
    }

    /// What the offload thread does with the workers' records.
    fn apply(t: &mut Tables, fast: &mut Fast) {
        let mut recs = Vec::new();
        t.drain_offload(|r| {
            recs.push(*r);
            true
        });
        for r in recs {
            match r {
                OffloadRec::Insert(f) => {
                    fast.remove(&f.key);
                    let slot = fast.free.pop().unwrap_or_else(|| {
                        fast.next += 1;
                        fast.next - 1
                    });
                    fast.map
                        .insert(
                            &f.key,
                            (f.to, f.from),
                            f.idle,
                            slot,
                            xdpvs_dataplane::sys::monotonic_ns(),
                        )
                        .expect("inserted");
                    fast.flows.insert(f.key, (f, slot));
                }
                OffloadRec::Remove(k) => fast.remove(&k),
                OffloadRec::Dest(slot) => {
                    let gone: Vec<_> = fast
                        .flows
                        .values()
                        .filter(|(f, _)| f.dest == slot)
                        .map(|(f, _)| f.key)
                        .collect();
                    for k in gone {
                        fast.remove(&k);
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "afxdp"))]
mod offload {
    pub fn on() -> bool {
        false
    }
    pub fn forward(
        _: &mut xdpvs_dataplane::Tables,
        _: &[u8],
        _: xdpvs_sched::Time,
    ) -> Option<Vec<u8>> {
        None
    }
    pub fn assert_taken(_: usize) {}
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
    /// Encapsulated to this real server (its next hop's MAC): `outer` bytes of tunnel
    /// headers (checked in tests/tunnel.rs), then the input's IP packet byte for byte.
    Tunnelled { rs: u8, outer: usize },
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
        // In a buffer with a UMEM frame's room behind it, as a worker has.
        let mut buf = r.frame.clone();
        buf.resize(r.frame.len().max(1792), 0);
        let mut len = r.frame.len();
        let now = Time::from_secs(r.at_secs);
        let fast = offload::on()
            .then(|| offload::forward(t, &r.frame, now))
            .flatten();
        let (v, f) = match fast {
            Some(f) => (Verdict::Tx, f),
            None => {
                let v = process_packet(&mut Packet::new(&mut buf, &mut len), t, now);
                (v, buf[..len].to_vec())
            }
        };
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
            Out::Tunnelled { rs, outer } => {
                let ip_len = if r.frame[12..14] == [0x86, 0xdd] {
                    40 + usize::from(u16::from_be_bytes([r.frame[18], r.frame[19]]))
                } else {
                    usize::from(u16::from_be_bytes([r.frame[16], r.frame[17]]))
                };
                let mut w = rs_mac(rs).to_vec();
                w.extend_from_slice(&DIRECTOR);
                w.extend_from_slice(&r.frame[12..14]);
                w.extend_from_slice(&f[14..(14 + outer).min(f.len())]);
                w.extend_from_slice(&r.frame[14..14 + ip_len]);
                w
            }
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
    let mut frag = tcp(CLIENT, 1000, ACK);
    frag[14 + 6] = 0x20; // more fragments
    let mut later_frag = tcp(CLIENT, 1000, ACK);
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
        drop(
            "IPv4 bytes under the IPv6 EtherType",
            ipv6,
            DropReason::Ipv6Header,
        ),
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
    // With --offload the program forwards the first flow's data segment itself.
    offload::assert_taken(1);
    let s = t.stats();
    assert_eq!(s.tx.get(), 15);
    assert_eq!(s.reply.get(), 2);
    assert_eq!(s.pass.get(), 8);
    assert_eq!(s.drop_count(DropReason::Ipv6Header), 1);
    assert_eq!(s.drop_count(DropReason::Ipv4Header), 2);
    assert_eq!(s.drop_count(DropReason::Ipv4Length), 2);
    assert_eq!(s.drop_count(DropReason::ArpOwn), 1);
    assert_eq!(s.drop_count(DropReason::VipConflict), 2);
    let seen: Vec<_> = s
        .conflicts
        .seen()
        .map(|c| (c.vip, c.mac, c.count))
        .collect();
    assert_eq!(seen, [(IpAddr::V4(VIP), [2, 0, 0, 0, 1, 0x99], 2)]);
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
    // data, FIN (FIN_WAIT), and the ACKs after it leave it there (IPVS's input-only
    // table); the other flow of real 1 is in SYN_RECV.
    let l = t.conns().load(svc.reals[0].dest);
    assert_eq!((l.active, l.inactive), (0, 2));
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
    // With --offload the program forwards the two repeats of the first flow itself.
    offload::assert_taken(2);
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
        fwd: Default::default(),
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
        addr: rs_ip(3).into(),
        port: 0,
        method: xdpvs_sched::Method::Route,
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

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x2);

fn rs6_ip(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10 + u16::from(n))
}

/// One IPv6 TCP service on VIP6:80, rr over three real servers (the IPv4 ones' MACs),
/// next to the IPv4 service of the shared table.
fn v6_config() -> Config {
    let mut s = ServiceSpec::new(
        ServiceKey {
            proto: Protocol::Tcp,
            vip: VIP6.into(),
            port: 80,
        },
        SchedKind::Rr,
    );
    s.reals = (1..=3)
        .map(|n| RealSpec {
            addr: rs6_ip(n).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            mac: Some(rs_mac(n)),
        })
        .collect();
    config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1, 1]), s])
}

fn ep6(client: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Endpoints6 {
    Endpoints6 {
        src_mac: CLIENT_MAC,
        dst_mac: DIRECTOR,
        src_ip: client,
        dst_ip: dst,
        sport,
        dport,
    }
}

fn tcp6(client: Ipv6Addr, sport: u16, fl: u8) -> Vec<u8> {
    frames::tcp6(&ep6(client, sport, VIP6, 80), fl, b"")
}

/// `f` (an IPv6 frame whose transport header follows the IPv6 header) with extension
/// headers inserted before it: `exts` are (kind, 8 bytes of header body after the
/// next-header byte).
fn with_exts(f: &[u8], exts: &[(u8, [u8; 7])]) -> Vec<u8> {
    let mut v = f[..54].to_vec();
    let proto = v[20];
    v[20] = exts[0].0;
    for (i, (_, body)) in exts.iter().enumerate() {
        v.push(exts.get(i + 1).map_or(proto, |e| e.0));
        v.extend_from_slice(body);
    }
    v.extend_from_slice(&f[54..]);
    let plen = (v.len() - 54) as u16;
    v[18..20].copy_from_slice(&plen.to_be_bytes());
    v
}

const PAD_OPTS: [u8; 7] = [0, 1, 4, 0, 0, 0, 0]; // length 0, PadN of 4
const ROUTING_EMPTY: [u8; 7] = [0, 4, 0, 0, 0, 0, 0]; // type 4, segments left 0

fn frag_header(offset: u16, more: bool, id: u32) -> [u8; 7] {
    let o = (offset << 3 | u16::from(more)).to_be_bytes();
    let i = id.to_be_bytes();
    [0, o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// The IPv6 table: scheduling and stickiness, extension-header chains, fragments,
/// neighbour discovery, ICMPv6, malformed frames. Run by the engine here and by the XDP
/// program in `the_xdp_program_steers_what_the_engine_handles`.
fn v6_rows() -> Vec<Row> {
    let c2 = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x3);
    let other = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x1);
    let ns = xdpvs_arp::ndp::solicitation(CLIENT_MAC, CLIENT6, VIP6);
    let na = {
        let mut f = ns.clone();
        let out = xdpvs_arp::ndp::advertise_in_place(&mut f, |a| *a == VIP6, DIRECTOR);
        assert_eq!(out, xdpvs_arp::ndp::Outcome::Advertised(VIP6));
        f
    };
    let ns_other = xdpvs_arp::ndp::solicitation(CLIENT_MAC, CLIENT6, other);
    let mut ns_hop_254 = ns.clone();
    ns_hop_254[21] = 254;
    let impostor: Mac = [0x02, 0, 0, 0, 0x01, 0x99];
    let na_impostor = {
        let mut f = xdpvs_arp::ndp::unsolicited(VIP6, impostor).to_vec();
        f[6..12].copy_from_slice(&impostor);
        f
    };
    let na_own = xdpvs_arp::ndp::unsolicited(VIP6, DIRECTOR).to_vec();
    let ping = frames::icmp6_echo_request(&ep6(CLIENT6, 0, VIP6, 0), 0x77, 3, b"ping6");
    let pong = {
        let mut f = ping.clone();
        xdpvs_dataplane::ipv6::echo_reply_in_place(&mut f, |a| *a == VIP6).expect("an echo");
        f
    };
    // A router says a real server's reply of the first flow (VIP6:80 -> CLIENT6:1000)
    // is too big for the next link: the error quotes the reply's start.
    let router = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0xfe);
    let reply_of =
        |cport: u16| frames::tcp6(&ep6(VIP6, 80, CLIENT6, cport), ACK, &[0; 64])[14..].to_vec();
    let mtu = 1280u32.to_be_bytes();
    let too_big = frames::icmp6_error(&ep6(router, 0, VIP6, 0), 2, 0, mtu, &reply_of(1000));
    let too_big_unknown = frames::icmp6_error(&ep6(router, 0, VIP6, 0), 2, 0, mtu, &reply_of(4242));
    let unreachable = frames::icmp6_error(&ep6(router, 0, VIP6, 0), 1, 4, [0; 4], &reply_of(1001));
    let mld_query = frames::icmp6_error(&ep6(CLIENT6, 0, VIP6, 0), 130, 0, [0; 4], &[0; 16]);
    let chain = with_exts(
        &tcp6(c2, 2000, SYN),
        &[(0, PAD_OPTS), (43, ROUTING_EMPTY), (60, PAD_OPTS)],
    );
    let chain_ack = with_exts(&tcp6(c2, 2000, ACK), &[(0, PAD_OPTS), (60, PAD_OPTS)]);
    let first_frag = with_exts(&tcp6(c2, 3000, SYN), &[(44, frag_header(0, true, 0xabc))]);
    let later_frag = {
        // The rest of the datagram: no TCP header, offset 3 (24 bytes).
        let mut f = tcp6(c2, 3000, SYN)[..54].to_vec();
        f.extend_from_slice(&[0x5a; 24]);
        with_exts(&f, &[(44, frag_header(3, false, 0xabc))])
    };
    let orphan = {
        let mut f = tcp6(c2, 3000, SYN)[..54].to_vec();
        f.extend_from_slice(&[0x5a; 24]);
        with_exts(&f, &[(44, frag_header(3, false, 0xdef))])
    };
    let atomic = with_exts(&tcp6(c2, 3001, SYN), &[(44, frag_header(0, false, 9))]);
    let bad_ext = {
        let mut f = with_exts(&tcp6(c2, 2000, ACK), &[(0, PAD_OPTS)]);
        f[55] = 200; // hop-by-hop length running past the packet
        f
    };
    let plen_long = {
        let mut f = tcp6(CLIENT6, 1000, ACK);
        f[18..20].copy_from_slice(&1000u16.to_be_bytes());
        f
    };
    let version_4 = {
        let mut f = tcp6(CLIENT6, 1000, ACK);
        f[14] = 0x40;
        f
    };
    vec![
        fwd(
            "IPv6 SYN to the VIP: the first real, only the MACs change",
            tcp6(CLIENT6, 1000, SYN),
            1,
        ),
        fwd(
            "ACK of the same flow: same real",
            tcp6(CLIENT6, 1000, ACK),
            1,
        ),
        fwd("next flow: next real (rr)", tcp6(CLIENT6, 1001, SYN), 2),
        fwd(
            "an IPv4 flow between them: its own service's first real",
            tcp(CLIENT, 1000, SYN),
            1,
        ),
        fwd("third IPv6 flow: the third real", tcp6(c2, 1000, SYN), 3),
        drop(
            "IPv6 ACK without a connection",
            tcp6(CLIENT6, 2000, ACK),
            DropReason::NoConnection,
        ),
        fwd(
            "SYN behind hop-by-hop, routing and destination options: scheduled (rr wraps)",
            chain,
            1,
        ),
        fwd(
            "its ACK behind two extension headers: same real",
            chain_ack,
            1,
        ),
        fwd(
            "first fragment of a datagram: scheduled by its ports",
            first_frag,
            2,
        ),
        fwd("a later fragment of it: the same real", later_frag, 2),
        drop(
            "a later fragment whose first was not seen",
            orphan,
            DropReason::Fragment,
        ),
        fwd(
            "an atomic fragment (offset 0, no more): a whole packet",
            atomic,
            3,
        ),
        row(
            "neighbour solicitation for the VIP: advertisement in place",
            ns,
            Verdict::Reply,
            Out::Exactly(na),
        ),
        pass("neighbour solicitation for another address", ns_other),
        drop(
            "solicitation for the VIP with hop limit 254",
            ns_hop_254,
            DropReason::NdpInvalid,
        ),
        drop(
            "another host advertising the VIP",
            na_impostor,
            DropReason::VipConflict,
        ),
        drop(
            "our own advertisement of the VIP, echoed",
            na_own,
            DropReason::ArpOwn,
        ),
        row(
            "ICMPv6 echo request to the VIP: answered from the VIP",
            ping,
            Verdict::Reply,
            Out::Exactly(pong),
        ),
        fwd(
            "packet too big quoting the first flow's reply: to its real",
            too_big,
            1,
        ),
        fwd(
            "unreachable quoting the second flow's reply: to its real",
            unreachable,
            2,
        ),
        drop(
            "packet too big quoting no known connection",
            too_big_unknown,
            DropReason::IcmpNoConnection,
        ),
        drop(
            "an MLD query to the VIP",
            mld_query,
            DropReason::IcmpUnsupported,
        ),
        pass(
            "IPv6 to another address",
            frames::tcp6(&ep6(CLIENT6, 1000, other, 80), SYN, b""),
        ),
        pass(
            "VIP, port without a service",
            frames::tcp6(&ep6(CLIENT6, 1000, VIP6, 443), SYN, b""),
        ),
        pass(
            "UDP to the VIP without a UDP service",
            frames::udp6(&ep6(CLIENT6, 1000, VIP6, 80), b"hi"),
        ),
        drop(
            "a hop-by-hop header running past the packet",
            bad_ext,
            DropReason::Ipv6Extension,
        ),
        drop(
            "payload length past the frame",
            plen_long,
            DropReason::Ipv6Header,
        ),
        drop(
            "version 4 in an IPv6 header",
            version_4,
            DropReason::Ipv6Header,
        ),
    ]
}

#[test]
fn rr_ipv6_service_table() {
    let mut t = tables(&v6_config());
    run(&mut t, v6_rows());
    assert_eq!(t.conns6().len(), 6, "six IPv6 connections");
    assert_eq!(t.conns().len(), 1, "one IPv4 connection");
    let seen: Vec<_> = t
        .stats()
        .conflicts
        .seen()
        .map(|c| (c.vip, c.count))
        .collect();
    assert_eq!(
        seen,
        [(IpAddr::V6(VIP6), 1)],
        "the impostor's advertisement"
    );
}

#[test]
fn every_truncation_of_an_ipv6_frame_is_dropped_never_forwarded() {
    let mut t = tables(&v6_config());
    let syn = tcp6(CLIENT6, 5000, SYN);
    let ns = xdpvs_arp::ndp::solicitation(CLIENT_MAC, CLIENT6, VIP6);
    let chain = with_exts(&tcp6(CLIENT6, 5001, SYN), &[(0, PAD_OPTS), (60, PAD_OPTS)]);
    for f in [&syn, &ns, &chain] {
        for len in 0..f.len() {
            let mut cut = f[..len].to_vec();
            let v = process(&mut cut, &mut t, Time::from_secs(1));
            assert!(
                matches!(
                    v,
                    Verdict::Drop(
                        DropReason::EthTruncated
                            | DropReason::Ipv6Header
                            | DropReason::Ipv6Extension
                            | DropReason::L4Header
                            | DropReason::NdpInvalid
                    )
                ),
                "cut to {len} of {}: {v:?}",
                f.len()
            );
            assert_eq!(cut, f[..len], "a dropped frame is untouched");
        }
    }
    assert_eq!(t.conns6().len(), 0);
}

#[test]
fn an_ipv6_reset_for_a_removed_real_server_has_valid_checksums() {
    let mut cfg = v6_config();
    cfg.options.expire_nodest_conn = true;
    let mut t = tables(&cfg);
    let mut f = tcp6(CLIENT6, 1000, SYN);
    assert_eq!(process(&mut f, &mut t, Time::from_secs(1)), Verdict::Tx);
    // Real server 1 goes (its MAC still known as draining), the client sends data.
    let dest = t.services().services()[1].reals[0].dest;
    cfg.services[1].reals.remove(0);
    cfg.draining.push(Draining {
        dest,
        mac: Some(rs_mac(1)),
        fwd: Default::default(),
    });
    reconfigure(&mut t, &cfg);
    let mut f = tcp6(CLIENT6, 1000, ACK);
    assert_eq!(process(&mut f, &mut t, Time::from_secs(2)), Verdict::Reply);
    let p = etherparse::SlicedPacket::from_ethernet(&f).expect("a valid packet");
    let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
        panic!("IPv6 expected")
    };
    assert_eq!(Ipv6Addr::from(ip.header().source()), VIP6);
    assert_eq!(Ipv6Addr::from(ip.header().destination()), CLIENT6);
    let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("TCP expected")
    };
    assert!(tcp.rst());
    assert_eq!((tcp.source_port(), tcp.destination_port()), (80, 1000));
    let sum = tcp
        .to_header()
        .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
        .expect("sums");
    assert_eq!(sum, tcp.checksum(), "TCP checksum");
    assert_eq!(&f[0..6], &CLIENT_MAC);
}

/// Whether the engine's verdict says the director handles the frame: it forwards it,
/// answers it, or drops it by a decision of its own. `None` for frames it drops as
/// malformed, which the kernel drops as well, so either classifier may take them.
#[cfg(feature = "afxdp")]
fn handled(v: Verdict) -> Option<bool> {
    match v {
        Verdict::Tx | Verdict::ToClient | Verdict::Reply | Verdict::Handoff(_) => Some(true),
        Verdict::Pass => Some(false),
        Verdict::Drop(
            DropReason::EthTruncated
            | DropReason::ArpTruncated
            | DropReason::Ipv4Header
            | DropReason::Ipv4Length
            | DropReason::L4Header
            | DropReason::Ipv6Header
            | DropReason::Ipv6Extension,
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
    if !xdpvs_testkit::is_root() {
        xdpvs_testkit::cannot_run(
            "the XDP program's fixture test",
            "loading the XDP program for BPF_PROG_TEST_RUN needs root",
        );
        return;
    }
    let steering = Steering::load(0).expect("the XDP program loads");
    let mut cfg = v6_config();
    // NAT services of both families (port 8000, real servers at 8080): their replies
    // cross the director.
    let nat_rs = Ipv4Addr::new(198, 18, 1, 11);
    let nat_rs6: Ipv6Addr = "2001:2:0:1::11".parse().expect("ip");
    for (vip, rs) in [
        (IpAddr::from(VIP), IpAddr::from(nat_rs)),
        (VIP6.into(), nat_rs6.into()),
    ] {
        let mut s = ServiceSpec::new(
            ServiceKey {
                proto: Protocol::Tcp,
                vip,
                port: 8000,
            },
            SchedKind::Rr,
        );
        s.reals.push(RealSpec {
            addr: rs,
            port: 8080,
            method: xdpvs_sched::Method::Masq,
            weight: 1,
            mac: Some(rs_mac(9)),
        });
        cfg.services.push(s);
    }
    cfg.own = vec![DIRECTOR_IP.into()];
    let keys: Vec<ServiceKey> = cfg.services.iter().map(|s| s.key).collect();
    let built = Services::build(&cfg, &limits(), None).expect("valid");
    let nat: Vec<_> = built.nat_sources().collect();
    assert_eq!(nat.len(), 2);
    steering
        .set_services(&keys, &nat, &[DIRECTOR_IP.into()])
        .expect("maps updated");
    let mut t = tables(&cfg);
    let mut frames: Vec<(String, Vec<u8>)> = shared_rows()
        .into_iter()
        .chain(v6_rows())
        .map(|r| (r.what.to_string(), r.frame))
        .collect();
    let from_rs = |sport: u16, fl: u8| {
        let mut e = ep(nat_rs, sport, CLIENT, 5000);
        e.src_mac = rs_mac(9);
        frames::tcp(&e, fl, b"")
    };
    let from_rs6 = |sport: u16, fl: u8| {
        let mut e = ep6(nat_rs6, sport, CLIENT6, 5000);
        e.src_mac = rs_mac(9);
        frames::tcp6(&e, fl, b"")
    };
    let nat_rows = [
        (
            "NAT SYN",
            frames::tcp(&ep(CLIENT, 5000, VIP, 8000), SYN, b""),
        ),
        ("NAT reply", from_rs(8080, SYN | ACK)),
        ("NAT reply of no connection", from_rs(8080, ACK)),
        ("the NAT real server's own traffic", from_rs(40000, SYN)),
        ("a NAT real server's answer to the director's check", {
            let mut e = ep(nat_rs, 8080, DIRECTOR_IP, 5000);
            e.src_mac = rs_mac(9);
            frames::tcp(&e, SYN | ACK, b"")
        }),
        (
            "IPv6 NAT SYN",
            frames::tcp6(&ep6(CLIENT6, 5000, VIP6, 8000), SYN, b""),
        ),
        ("IPv6 NAT reply", from_rs6(8080, SYN | ACK)),
        ("a NAT real server's ICMP error about a client's packet", {
            let mut e = ep(nat_rs, 0, CLIENT, 0);
            e.src_mac = rs_mac(9);
            let sent = frames::tcp(&ep(CLIENT, 5000, nat_rs, 8080), SYN, b"");
            frames::icmp_error(&e, 3, 3, [0; 4], &sent[14..54])
        }),
        ("a NAT real server's echo reply", {
            let mut e = ep(nat_rs, 0, CLIENT, 0);
            e.src_mac = rs_mac(9);
            frames::icmp_error(&e, 0, 0, [0, 1, 0, 1], b"ping....")
        }),
        ("a NAT real server's ICMP error to the director", {
            let mut e = ep(nat_rs, 0, DIRECTOR_IP, 0);
            e.src_mac = rs_mac(9);
            let sent = frames::tcp(&ep(DIRECTOR_IP, 5000, nat_rs, 8080), SYN, b"");
            frames::icmp_error(&e, 3, 3, [0; 4], &sent[14..54])
        }),
        ("IPv6 NAT real server's own traffic", from_rs6(40000, SYN)),
    ];
    let nat_reply = nat_rows[1].1.clone();
    frames.extend(nat_rows.into_iter().map(|(w, f)| (w.to_string(), f)));
    // Every truncation of a SYN to the service and of an ARP request for the VIP, and of
    // their IPv6 counterparts.
    let syn = tcp(CLIENT, 4000, SYN);
    let arp = xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP).to_vec();
    let syn6 = tcp6(CLIENT6, 4000, SYN);
    let ns = xdpvs_arp::ndp::solicitation(CLIENT_MAC, CLIENT6, VIP6);
    for (name, f) in [
        ("SYN", &syn),
        ("ARP request", &arp),
        ("IPv6 SYN", &syn6),
        ("neighbour solicitation", &ns),
        ("NAT reply", &nat_reply),
    ] {
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
    assert!(steered >= 30, "the program steered {steered} frames");
}

/// What `explain` says for `client:port` to VIP:80 at second `at`.
fn explained(
    t: &Tables,
    client: Ipv4Addr,
    port: u16,
    at: u64,
) -> xdpvs_dataplane::engine::Explained {
    let key = ServiceKey {
        proto: Protocol::Tcp,
        vip: VIP.into(),
        port: 80,
    };
    t.explain(&key, (client, port).into(), Time::from_secs(at))
        .expect("the service")
}

#[test]
fn explain_predicts_the_pick_without_taking_it_and_then_finds_the_entry() {
    let mut t = tables(&config(vec![service(
        Protocol::Tcp,
        SchedKind::Rr,
        &[1, 1, 1],
    )]));
    // A new flow: rr would pick rs1, and asking twice does not move rr on.
    for _ in 0..2 {
        let e = explained(&t, CLIENT, 1000, 1);
        assert_eq!(e.real, Some(rs_ip(1).into()));
        assert_eq!(
            e.why,
            Why::Scheduled {
                stale_template: None
            }
        );
        assert_eq!(e.scheduler, SchedKind::Rr);
        assert_eq!(e.reals.len(), 3);
    }
    // The flow goes where it was predicted; it now has an entry.
    run(
        &mut t,
        vec![fwd("the predicted flow", tcp(CLIENT, 1000, SYN), 1)],
    );
    let e = explained(&t, CLIENT, 1000, 2);
    assert_eq!(e.real, Some(rs_ip(1).into()));
    assert!(
        matches!(
            e.why,
            Why::Connection {
                state: State::SynRecv,
                ..
            }
        ),
        "{:?}",
        e.why
    );
    assert_eq!(e.reals[0].load.inactive, 1, "the entry counts on rs1");
    // The next new flow: rs2, as it then goes.
    assert_eq!(explained(&t, CLIENT, 1001, 2).real, Some(rs_ip(2).into()));
    run(
        &mut t,
        vec![fwd("the next flow", tcp(CLIENT, 1001, SYN), 2)],
    );
    // Another family or service: no answer.
    let other = ServiceKey {
        proto: Protocol::Udp,
        vip: VIP.into(),
        port: 80,
    };
    assert!(t
        .explain(&other, (CLIENT, 1).into(), Time::from_secs(2))
        .is_none());
}

#[test]
fn explain_names_a_persistence_template() {
    use xdpvs_dataplane::engine::Why;
    let mut svc = service(Protocol::Tcp, SchedKind::Rr, &[1, 1, 1]);
    svc.persistence = Some(
        Persistence::new(Duration::from_secs(300), Ipv4Addr::new(255, 255, 255, 0)).expect("valid"),
    );
    let mut t = tables(&config(vec![svc]));
    run(&mut t, vec![fwd("client A", tcp(CLIENT, 1, SYN), 1)]);
    rr_moves_on(&mut t);
    // Another port of the client (no entry): the template, to rs1, not the scheduler.
    let e = explained(&t, CLIENT, 2, 3);
    assert_eq!(e.real, Some(rs_ip(1).into()));
    let Why::Template { expires_in } = e.why else {
        panic!("{:?}", e.why);
    };
    assert!(expires_in > Duration::from_secs(290), "{expires_in:?}");
    assert!(e.persistence.is_some());
}

/// Another client takes rs2, so that a scheduled pick would not be rs1.
fn rr_moves_on(t: &mut Tables) {
    run(
        t,
        vec![fwd(
            "client B",
            tcp(Ipv4Addr::new(198, 19, 9, 9), 1, SYN),
            2,
        )],
    );
}

/// The real server `mh` sends `c`'s flows to, as a fresh director would pick it.
fn mh_owner(weights: &[u16], down: &[u8], c: Ipv4Addr) -> Mac {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Mh, weights)]);
    cfg.down = down
        .iter()
        .map(|&n| (cfg.services[0].key, IpAddr::V4(rs_ip(n))))
        .collect();
    let mut t = tables(&cfg);
    let mut f = tcp(c, 7, SYN);
    assert_eq!(process(&mut f, &mut t, Time::from_secs(1)), Verdict::Tx);
    f[0..6].try_into().expect("6 bytes")
}

#[test]
fn an_mh_service_takes_over_a_connection_another_director_opened() {
    // Segments of established connections, no SYN seen here: each goes where a SYN from
    // that client would have gone (the other director's choice), and its entry holds.
    let mut t = tables(&config(vec![service(
        Protocol::Tcp,
        SchedKind::Mh,
        &[1, 1, 1],
    )]));
    let mut to = std::collections::BTreeSet::new();
    for c in 0..40 {
        let owner = mh_owner(&[1, 1, 1], &[], client(c));
        to.insert(owner);
        for fl in [ACK, ACK | PSH] {
            let mut f = tcp(client(c), 1, fl);
            assert_eq!(process(&mut f, &mut t, Time::from_secs(2)), Verdict::Tx);
            assert_eq!(f[0..6], owner, "client {c}");
        }
    }
    assert_eq!(to.len(), 3, "the clients spread over the three");
    assert_eq!(t.conns().len(), 40, "each taken over with an entry");
    // A reset still opens nothing.
    let mut f = tcp(client(99), 1, RST);
    assert_eq!(
        process(&mut f, &mut t, Time::from_secs(2)),
        Verdict::Drop(DropReason::NoConnection)
    );
    // Other schedulers keep IPVS's behaviour: dropped without sloppy_tcp.
    let mut rr = tables(&config(vec![service(
        Protocol::Tcp,
        SchedKind::Rr,
        &[1, 1],
    )]));
    let mut f = tcp(client(1), 1, ACK);
    assert_eq!(
        process(&mut f, &mut rr, Time::from_secs(2)),
        Verdict::Drop(DropReason::NoConnection)
    );
}

#[test]
fn an_mh_real_server_out_of_service_moves_only_its_clients() {
    let weights = [1, 2, 1, 1];
    let mut moved = 0;
    for c in 0..200 {
        let before = mh_owner(&weights, &[], client(c));
        let after = mh_owner(&weights, &[2], client(c));
        if before == rs_mac(2) {
            assert_ne!(
                after,
                rs_mac(2),
                "client {c} leaves the server out of service"
            );
            moved += 1;
        } else {
            assert_eq!(after, before, "client {c} stays");
        }
    }
    assert!(
        (60..=100).contains(&moved),
        "rs2 had 2/5 of 200 clients: {moved}"
    );
}

/// The TCP segments from a client (after its SYN) that leave its connection's entry in
/// each state the director can see it in.
const REUSE_STATES: [(State, &[u8]); 5] = [
    (State::SynRecv, &[]),
    (State::Established, &[ACK]),
    (State::FinWait, &[ACK, ACK | FIN]),
    (State::TimeWait, &[FIN]),
    (State::Close, &[ACK, RST]),
];

/// The first connection from CLIENT:4000 (to the first real server) and its segments
/// that leave its entry in `state`.
fn opened_in(state: State) -> Vec<Row> {
    let flags = REUSE_STATES
        .iter()
        .find(|(s, _)| *s == state)
        .expect("a state")
        .1;
    let mut rows = vec![fwd("the first connection", tcp(CLIENT, 4000, SYN), 1)];
    rows.extend(
        flags
            .iter()
            .map(|&f| fwd("its segments", tcp(CLIENT, 4000, f), 1)),
    );
    rows
}

/// A SYN from the port of an earlier connection, in every `conn_reuse_mode` and every
/// state the earlier connection's entry can be in: on rr over two real servers, a new
/// connection goes to the second, a continued one stays on the first. Returns where the
/// SYN went and how many connections the service counted.
fn reuse(mode: u8, state: State, setup: impl FnOnce(&mut Config, &Tables)) -> (u8, u64) {
    let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
    cfg.options.conn_reuse_mode = ConnReuseMode::new(mode).expect("0 to 3");
    let mut t = tables(&cfg);
    run(&mut t, opened_in(state));
    let entry = t.explain(
        &cfg.services[0].key,
        (CLIENT, 4000).into(),
        Time::from_secs(0),
    );
    assert!(
        matches!(entry.map(|e| e.why), Some(Why::Connection { state: s, .. }) if s == state),
        "mode {mode}: the entry is in {state}"
    );
    setup(&mut cfg, &t);
    reconfigure(&mut t, &cfg);
    let mut syn = tcp(CLIENT, 4000, SYN);
    let v = process(&mut syn, &mut t, Time::from_secs(0));
    assert_eq!(v, Verdict::Tx, "mode {mode}, {state}: the SYN is forwarded");
    let to = (1..=3)
        .find(|&n| syn[0..6] == rs_mac(n))
        .expect("to a real server");
    // Its next segment follows it.
    let mut ack = tcp(CLIENT, 4000, ACK);
    assert_eq!(process(&mut ack, &mut t, Time::from_secs(0)), Verdict::Tx);
    assert_eq!(
        ack[0..6],
        rs_mac(to),
        "mode {mode}, {state}: the ACK follows the SYN"
    );
    let slot = t.services().services()[0].slot as usize;
    (to, t.stats().services[slot].conns.get())
}

#[test]
fn conn_reuse_mode_every_mode_and_state() {
    for mode in 0..=3u8 {
        for (state, _) in REUSE_STATES {
            let new = mode != 0
                && match state {
                    State::TimeWait | State::Close => true,
                    State::FinWait => mode & 2 != 0,
                    _ => false,
                };
            let want = if new { (2, 2) } else { (1, 1) };
            assert_eq!(reuse(mode, state, |_, _| ()), want, "mode {mode}, {state}");
        }
    }
}

#[test]
fn conn_reuse_never_moves_a_persistent_client() {
    for mode in 0..=3u8 {
        for (state, _) in REUSE_STATES {
            let mut cfg = config(vec![service(Protocol::Tcp, SchedKind::Rr, &[1, 1])]);
            cfg.services[0].persistence = Some(
                Persistence::new(Duration::from_secs(300), Ipv4Addr::BROADCAST).expect("valid"),
            );
            cfg.options.conn_reuse_mode = ConnReuseMode::new(mode).expect("0 to 3");
            let mut t = tables(&cfg);
            let mut rows = opened_in(state);
            rows.push(fwd(
                "a new SYN stays with its template's real",
                tcp(CLIENT, 4000, SYN),
                1,
            ));
            rows.push(fwd(
                "another client goes on to the next",
                tcp(client(9), 1, SYN),
                2,
            ));
            run(&mut t, rows);
            let slot = t.services().services()[0].slot as usize;
            assert_eq!(
                t.stats().services[slot].conns.get(),
                2,
                "mode {mode}, {state}"
            );
        }
    }
}

/// A change made to the configuration between two connections of a client port.
type Setup = fn(&mut Config, &Tables);

#[test]
fn a_syn_never_reaches_a_real_server_out_of_service_in_any_mode() {
    let out_of_service: [(&str, Setup); 4] = [
        ("its check failed", |cfg, _| {
            cfg.down = vec![(cfg.services[0].key, rs_ip(1).into())];
        }),
        ("removed, draining", |cfg, t| remove_first_draining(t, cfg)),
        ("removed", |cfg, _| {
            cfg.services[0].reals.remove(0);
        }),
        ("its MAC lost", |cfg, _| cfg.services[0].reals[0].mac = None),
    ];
    for mode in 0..=3u8 {
        for (state, _) in REUSE_STATES {
            for (why, setup) in out_of_service {
                assert_eq!(
                    reuse(mode, state, setup),
                    (2, 2),
                    "mode {mode}, {state}, {why}: scheduled afresh and counted"
                );
            }
        }
    }
}

#[test]
fn expire_nodest_conn_moves_a_reused_port_off_a_quiescent_real_server() {
    for mode in 0..=3u8 {
        for (state, _) in REUSE_STATES {
            let quiescent = |cfg: &mut Config, _: &Tables| {
                cfg.options.expire_nodest_conn = true;
                cfg.services[0].reals[0].weight = 0;
            };
            let (to, _) = reuse(mode, state, quiescent);
            // Quiescent, the first real gets no new connection: a rescheduled SYN goes
            // to the second.
            assert_eq!(to, if mode == 0 { 1 } else { 2 }, "mode {mode}, {state}");
        }
    }
}

/// `run --announce`: the VIPs are routed to the director's own address, so it answers
/// neither ARP nor neighbour solicitations for them, while another host claiming one is
/// still a conflict, and the kernel keeps ARP and NDP for other addresses.
#[test]
fn routed_vips_are_not_answered_for_but_claims_are_still_conflicts() {
    let mut cfg = v6_config();
    cfg.options.vips_routed = true;
    let mut t = tables(&cfg);
    let other = Ipv4Addr::new(198, 18, 0, 1);
    let impostor: Mac = [0x02, 0, 0, 0, 0x01, 0x99];
    let mut claim = xdpvs_arp::request(impostor, VIP, CLIENT).to_vec();
    claim[20..22].copy_from_slice(&[0, 2]); // a reply: "the VIP is at impostor"
    let na_impostor = {
        let mut f = xdpvs_arp::ndp::unsolicited(VIP6, impostor).to_vec();
        f[6..12].copy_from_slice(&impostor);
        f
    };
    let other6 = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x1);
    run(
        &mut t,
        vec![
            drop(
                "ARP request for the VIP: not answered",
                xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP).to_vec(),
                DropReason::VipRouted,
            ),
            pass(
                "ARP request for another address: the kernel's",
                xdpvs_arp::request(CLIENT_MAC, CLIENT, other).to_vec(),
            ),
            drop(
                "another host claiming the VIP: a conflict",
                claim,
                DropReason::VipConflict,
            ),
            drop(
                "gratuitous ARP from another host for the VIP: a conflict",
                xdpvs_arp::gratuitous(VIP, impostor).to_vec(),
                DropReason::VipConflict,
            ),
            drop(
                "neighbour solicitation for the IPv6 VIP: not answered",
                xdpvs_arp::ndp::solicitation(CLIENT_MAC, CLIENT6, VIP6),
                DropReason::VipRouted,
            ),
            pass(
                "neighbour solicitation for another address: the kernel's",
                xdpvs_arp::ndp::solicitation(CLIENT_MAC, CLIENT6, other6),
            ),
            drop(
                "another host advertising the IPv6 VIP: a conflict",
                na_impostor,
                DropReason::VipConflict,
            ),
            fwd("traffic to the VIP is forwarded", tcp(CLIENT, 1000, SYN), 1),
        ],
    );
    assert_eq!(t.stats().drop_count(DropReason::VipRouted), 2);
}

/// Tunnel real servers of both families: every packet of a connection leaves
/// encapsulated to its real server, the inner packet untouched; truncated frames are
/// dropped untouched.
#[test]
fn tunnel_rows_of_both_families_and_every_truncation() {
    use xdpvs_sched::{Method, TunCsum, TunKind, Tunnel};
    let gre = Method::Tunnel(Tunnel {
        kind: TunKind::Gre,
        port: 0,
        csum: TunCsum::Csum,
    });
    let mut s4 = service(Protocol::Tcp, SchedKind::Rr, &[1, 1]);
    s4.reals[0].method = Method::Tunnel(Tunnel::IPIP);
    s4.reals[1].method = gre;
    let mut s6 = ServiceSpec::new(
        ServiceKey {
            proto: Protocol::Tcp,
            vip: VIP6.into(),
            port: 80,
        },
        SchedKind::Rr,
    );
    s6.reals = vec![RealSpec {
        addr: rs6_ip(3).into(),
        port: 0,
        method: Method::Tunnel(Tunnel {
            kind: TunKind::Gue,
            port: 6080,
            csum: TunCsum::No,
        }),
        weight: 1,
        mac: Some(rs_mac(3)),
    }];
    let mut cfg = config(vec![s4, s6]);
    cfg.own = vec![DIRECTOR_IP.into(), "2001:2::1".parse().expect("address")];
    let mut t = tables(&cfg);
    let tun = |what, frame, rs, outer| row(what, frame, Verdict::Tx, Out::Tunnelled { rs, outer });
    run(
        &mut t,
        vec![
            tun("SYN: IPIP to rs1", tcp(CLIENT, 1000, SYN), 1, 20),
            tun(
                "SYN: GRE with checksum to rs2",
                tcp(CLIENT, 1001, SYN),
                2,
                28,
            ),
            tun("ACK of the first: rs1 again", tcp(CLIENT, 1000, ACK), 1, 20),
            tun(
                "data of the second: rs2 again",
                frames::tcp(&ep(CLIENT, 1001, VIP, 80), ACK | PSH, &[9; 300]),
                2,
                28,
            ),
            tun("IPv6 SYN: GUE to rs3", tcp6(CLIENT6, 1002, SYN), 3, 52),
            tun("IPv6 ACK: rs3 again", tcp6(CLIENT6, 1002, ACK), 3, 52),
        ],
    );
    let syn = frames::tcp(&ep(CLIENT, 1003, VIP, 80), SYN, &[0x55; 20]);
    all_truncations(&syn, &mut t);
}
