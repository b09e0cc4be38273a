use super::*;

const ME: Mac = [2, 0, 0, 0, 0, 1];
const RS1: Mac = [2, 0, 0, 0, 0, 0x11];
const RS2: Mac = [2, 0, 0, 0, 0, 0x12];
const RS4: Mac = [2, 0, 0, 0, 0, 0x14];

fn v4(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn origin() -> Origin {
    Origin {
        mac: ME,
        servers_mac: ME,
        v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
        v6: Some("2001:2::1".parse().expect("address")),
    }
}

fn key(proto: Protocol, vip: &str, port: u16) -> ServiceKey {
    ServiceKey {
        proto,
        vip: v4(vip),
        port,
    }
}

fn target(service: ServiceKey, addr: &str, mac: Option<Mac>) -> Target {
    Target {
        service,
        addr: v4(addr),
        mac,
        sorry: false,
        port: service.port,
        method: xdpvs_sched::Method::Route,
        gateway: None,
    }
}

/// TCP 198.18.0.100:80 over rs1 (open), rs2 (closed), rs3 (unresolved), rs4 (silent);
/// UDP 198.18.0.100:53 over rs1; TCP [2001:2::100]:80 over [2001:2::11].
fn the_plan() -> Plan {
    let web = key(Protocol::Tcp, "198.18.0.100", 80);
    let dns = key(Protocol::Udp, "198.18.0.100", 53);
    let web6 = key(Protocol::Tcp, "2001:2::100", 80);
    plan(
        vec![
            target(web, "198.18.0.11", Some(RS1)),
            target(web, "198.18.0.12", Some(RS2)),
            target(web, "198.18.0.13", None),
            target(web, "198.18.0.14", Some(RS4)),
            target(dns, "198.18.0.11", Some(RS1)),
            target(web6, "2001:2::11", Some(RS1)),
        ],
        &origin(),
        FIRST_PORT + PORTS - 1,
        0x7777,
    )
}

/// A TCP answer from `vip:port` to the director's `dport`, as the probe hears it.
fn tcp4(vip: &str, port: u16, dport: u16, synack: bool) -> Packet {
    let b = PacketBuilder::ipv4(octets4(v4(vip)), [198, 18, 0, 1], 64).tcp(port, dport, 1, 100);
    let b = if synack { b.syn().ack(42) } else { b.rst() };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("written");
    Packet::V4(out)
}

fn sport_of(plan: &Plan, target: usize) -> u16 {
    plan.probes
        .iter()
        .find_map(|(q, _)| match *q {
            Question::Syn { target: t, sport } | Question::Udp { target: t, sport }
                if t == target =>
            {
                Some(sport)
            }
            _ => None,
        })
        .expect("a port probe")
}

fn heard(plan: &Plan) -> Heard {
    let echo = {
        let b = PacketBuilder::ipv4([198, 18, 0, 100], [198, 18, 0, 1], 64)
            .icmpv4_echo_reply(0x7777, 4);
        let mut out = Vec::new();
        b.write(&mut out, &[0; 8]).expect("written");
        Packet::V4(out)
    };
    // rs1's answer over IPv6: the TCP header alone.
    let tcp6 = {
        let b = PacketBuilder::ipv6(octets6(v4("2001:2::100")), octets6(v4("2001:2::1")), 64)
            .tcp(80, sport_of(plan, 5), 9, 100)
            .syn()
            .ack(77);
        let mut out = Vec::new();
        b.write(&mut out, &[]).expect("written");
        Packet::Tcp6(out[40..].to_vec())
    };
    Heard {
        packets: vec![
            tcp4("198.18.0.100", 80, sport_of(plan, 0), true),
            tcp4("198.18.0.100", 80, sport_of(plan, 1), false),
            // A SYN-ACK from another address or port is no answer.
            tcp4("198.18.0.101", 80, sport_of(plan, 3), true),
            tcp4("198.18.0.100", 81, sport_of(plan, 3), true),
            echo,
            tcp6,
        ],
        claims: vec![(v4("198.18.0.100"), RS2), (v4("198.18.0.100"), ME)],
    }
}

fn lines(r: &CheckReport) -> Vec<String> {
    r.items
        .iter()
        .map(|i| {
            format!(
                "{} {}: {}",
                if i.ok { "ok" } else { "FAIL" },
                i.subject,
                i.detail
            )
        })
        .collect()
}

#[test]
fn the_probes_ask_each_vip_once_and_each_resolved_real_server() {
    let p = the_plan();
    assert_eq!(p.vips, [v4("198.18.0.100"), v4("2001:2::100")]);
    let qs: Vec<_> = p.probes.iter().map(|(q, _)| *q).collect();
    let last = FIRST_PORT + PORTS - 1;
    assert_eq!(
        qs,
        [
            Question::Who(v4("198.18.0.100")),
            Question::Who(v4("2001:2::100")),
            Question::Syn {
                target: 0,
                sport: last
            },
            Question::Syn {
                target: 1,
                sport: FIRST_PORT
            },
            Question::Syn {
                target: 3,
                sport: FIRST_PORT + 1
            },
            Question::Echo { target: 4 },
            Question::Udp {
                target: 4,
                sport: FIRST_PORT + 2
            },
            Question::Syn {
                target: 5,
                sport: FIRST_PORT + 3
            },
        ],
        "ports wrap within the probes' range; the unresolved real server is not probed"
    );
    let f = p.frames();
    assert_eq!(f.len(), 8);
    // The ARP request: broadcast, from the director, for the VIP.
    let arp = xdpvs_arp::parse(&f[0]).expect("ARP");
    assert!(arp.is_request());
    assert_eq!(
        (arp.sender_mac, arp.target_ip),
        (ME, Ipv4Addr::new(198, 18, 0, 100))
    );
    // The SYN to rs1: at its MAC, from the director's address to the VIP, valid sums.
    let syn = etherparse::SlicedPacket::from_ethernet(&f[2]).expect("parses");
    let eth = syn
        .link
        .as_ref()
        .and_then(|l| l.to_header())
        .expect("ethernet");
    let eth = match eth {
        etherparse::LinkHeader::Ethernet2(e) => e,
        _ => panic!("ethernet II"),
    };
    assert_eq!((eth.destination, eth.source), (RS1, ME));
    let Some(etherparse::NetSlice::Ipv4(ip)) = &syn.net else {
        panic!("IPv4");
    };
    assert_eq!(ip.header().destination(), [198, 18, 0, 100]);
    assert_eq!(ip.header().source(), [198, 18, 0, 1]);
    let Some(etherparse::TransportSlice::Tcp(t)) = &syn.transport else {
        panic!("TCP");
    };
    assert!(t.syn() && !t.ack());
    assert_eq!((t.source_port(), t.destination_port()), (last, 80));
    let sum = t
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
        .expect("sum");
    assert_eq!(sum, t.checksum());
}

#[test]
fn the_checklist_names_every_fault_with_its_fix() {
    let p = the_plan();
    let r = report(&p, &heard(&p), &origin());
    let got = lines(&r);
    let want = [
        "FAIL VIP 198.18.0.100: real server 198.18.0.12 (02:00:00:00:00:12) answers ARP for it: the clients it answers bypass the director",
        "ok VIP 2001:2::100: no host but the director answers neighbour solicitations for it",
        "ok TCP 198.18.0.100:80 real server 198.18.0.11: its MAC is resolved: 02:00:00:00:00:11",
        "ok TCP 198.18.0.100:80 real server 198.18.0.11: takes traffic for 198.18.0.100: a SYN sent to its MAC was answered from the VIP",
        "ok TCP 198.18.0.100:80 real server 198.18.0.11: port 80 is open (SYN-ACK)",
        "ok TCP 198.18.0.100:80 real server 198.18.0.12: its MAC is resolved: 02:00:00:00:00:12",
        "ok TCP 198.18.0.100:80 real server 198.18.0.12: takes traffic for 198.18.0.100: a SYN sent to its MAC was answered from the VIP",
        "FAIL TCP 198.18.0.100:80 real server 198.18.0.12: port 80 is closed: the SYN was reset",
        "FAIL TCP 198.18.0.100:80 real server 198.18.0.13: its MAC is not resolved: it does not answer ARP (or neighbour solicitations), and gets no traffic",
        "ok TCP 198.18.0.100:80 real server 198.18.0.14: its MAC is resolved: 02:00:00:00:00:14",
        "FAIL TCP 198.18.0.100:80 real server 198.18.0.14: a SYN sent to its MAC got no answer: it does not take traffic for 198.18.0.100 (the VIP is not on its lo, or a firewall drops it)",
        "ok UDP 198.18.0.100:53 real server 198.18.0.11: its MAC is resolved: 02:00:00:00:00:11",
        "ok UDP 198.18.0.100:53 real server 198.18.0.11: takes traffic for 198.18.0.100: an echo request sent to its MAC was answered",
        "ok UDP 198.18.0.100:53 real server 198.18.0.11: UDP port 53 did not say it is closed (no port unreachable)",
        "ok TCP [2001:2::100]:80 real server 2001:2::11: its MAC is resolved: 02:00:00:00:00:11",
        "ok TCP [2001:2::100]:80 real server 2001:2::11: takes traffic for 2001:2::100: a SYN sent to its MAC was answered from the VIP",
        "ok TCP [2001:2::100]:80 real server 2001:2::11: port 80 is open (SYN-ACK)",
    ];
    assert_eq!(got, want);
    assert_eq!(r.failed(), 4);
    let fixes: Vec<_> = r.items.iter().filter_map(|i| i.fix.as_deref()).collect();
    assert_eq!(
        fixes,
        [
            "on 198.18.0.12: xdpvs rs-setup --vip 198.18.0.100 --apply --persist",
            "start the service on 198.18.0.12 port 80 (listening on the VIP, or on every address)",
            "check that 198.18.0.13 is up and on the director's LAN (ping 198.18.0.13 from the director)",
            "on 198.18.0.14: xdpvs rs-setup --vip 198.18.0.100 --apply --persist",
        ]
    );
}

#[test]
fn a_udp_port_unreachable_fails_and_each_syn_ack_is_reset() {
    let p = the_plan();
    let mut h = heard(&p);
    let quoted = {
        let b =
            PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 100], 64).udp(sport_of(&p, 4), 53);
        let mut out = Vec::new();
        b.write(&mut out, &[]).expect("written");
        out
    };
    let b = PacketBuilder::ipv4([198, 18, 0, 100], [198, 18, 0, 1], 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ),
    );
    let mut out = Vec::new();
    b.write(&mut out, &quoted).expect("written");
    h.packets.push(Packet::V4(out));
    let r = report(&p, &h, &origin());
    assert!(lines(&r).contains(
        &"FAIL UDP 198.18.0.100:53 real server 198.18.0.11: UDP port 53 is closed: port unreachable".to_string()
    ));
    // Resets: rs1 over IPv4 (ack 42) and over IPv6 (ack 77), nobody else.
    let rst = resets(&p, &h, &origin());
    assert_eq!(rst.len(), 2);
    let first = etherparse::SlicedPacket::from_ethernet(&rst[0]).expect("parses");
    let Some(etherparse::TransportSlice::Tcp(t)) = &first.transport else {
        panic!("TCP");
    };
    assert!(t.rst());
    assert_eq!(
        (t.source_port(), t.destination_port(), t.sequence_number()),
        (FIRST_PORT + PORTS - 1, 80, 42)
    );
}

#[test]
fn no_address_of_the_vips_family_is_a_failure_not_a_silent_pass() {
    let web6 = key(Protocol::Tcp, "2001:2::100", 80);
    let o = Origin {
        v6: None,
        ..origin()
    };
    let p = plan(
        vec![target(web6, "2001:2::11", Some(RS1))],
        &o,
        FIRST_PORT,
        1,
    );
    assert!(p.frames().is_empty());
    let r = report(&p, &Heard::default(), &o);
    assert_eq!(r.failed(), 2, "{:?}", lines(&r));
}

#[test]
fn answers_cut_short_are_ignored() {
    let p = the_plan();
    let h = heard(&p);
    for pk in &h.packets {
        let b = match pk {
            Packet::V4(b) | Packet::Tcp6(b) | Packet::Icmp6(b) => b,
        };
        for n in 0..b.len() {
            let cut = match pk {
                Packet::V4(_) => Packet::V4(b[..n].to_vec()),
                Packet::Tcp6(_) => Packet::Tcp6(b[..n].to_vec()),
                Packet::Icmp6(_) => Packet::Icmp6(b[..n].to_vec()),
            };
            let _ = parse(&cut);
        }
    }
}

#[test]
fn a_second_round_repeats_the_questions_and_only_the_unanswered_probes() {
    let p = the_plan();
    let again = unanswered(&p, &heard(&p));
    // Both VIPs asked again; the SYN to rs4 (answered by nobody) and nothing else: rs1
    // (open), rs2 (reset), the echo (answered) and the datagram (never repeated).
    assert_eq!(again.len(), 3);
    assert_eq!(again[0], p.probes[0].1.clone().expect("ARP"));
    assert_eq!(again[1], p.probes[1].1.clone().expect("NS"));
    let rs4 = p
        .probes
        .iter()
        .find(|(q, _)| matches!(q, Question::Syn { target: 3, .. }))
        .and_then(|(_, f)| f.clone())
        .expect("rs4's SYN");
    assert_eq!(again[2], rs4);
    // Everything answered: only the questions again.
    let mut all = heard(&p);
    all.packets
        .push(tcp4("198.18.0.100", 80, sport_of(&p, 3), true));
    assert_eq!(unanswered(&p, &all).len(), 2);
}

/// A NAT real server holds no VIP: its SYN goes from the VIP to its address and port,
/// and the SYN-ACK comes back to the VIP only through the director.
#[test]
fn a_nat_real_server_is_probed_from_the_vip_at_its_own_port() {
    let web = key(Protocol::Tcp, "198.18.0.100", 80);
    let nat = |addr: &str, mac| Target {
        port: 8080,
        method: Method::Masq,
        gateway: Some(v4("198.18.1.1")),
        ..target(web, addr, Some(mac))
    };
    let plan = plan(
        vec![nat("198.18.1.11", RS1), nat("198.18.1.12", RS2)],
        &origin(),
        FIRST_PORT,
        0x7777,
    );
    let syn = plan
        .probes
        .iter()
        .find_map(|(q, f)| matches!(q, Question::Syn { target: 0, .. }).then_some(f.clone()))
        .flatten()
        .expect("a SYN to the first");
    assert_eq!(&syn[26..30], &[198, 18, 0, 100], "from the VIP");
    assert_eq!(&syn[30..34], &[198, 18, 1, 11], "to the real server");
    assert_eq!(u16::from_be_bytes([syn[36], syn[37]]), 8080, "at its port");
    // The first answered (to the VIP, through the director), the second did not.
    let answer = {
        let b = PacketBuilder::ipv4([198, 18, 1, 11], [198, 18, 0, 100], 64)
            .tcp(8080, sport_of(&plan, 0), 1, 100)
            .syn()
            .ack(42);
        let mut out = Vec::new();
        b.write(&mut out, &[]).expect("written");
        Packet::V4(out)
    };
    let heard = Heard {
        packets: vec![answer],
        claims: vec![],
    };
    let report = report(&plan, &heard, &origin());
    let l = lines(&report);
    assert!(
        l.iter().any(|x| x.starts_with("ok TCP 198.18.0.100:80 real server 198.18.1.11: its replies come back through the director")),
        "{l:#?}"
    );
    assert!(
        l.iter()
            .any(|x| x
                == "ok TCP 198.18.0.100:80 real server 198.18.1.11: port 8080 is open (SYN-ACK)"),
        "{l:#?}"
    );
    let failed = report
        .items
        .iter()
        .find(|i| !i.ok && i.subject.ends_with("198.18.1.12"))
        .expect("the second fails");
    assert!(
        failed.detail.contains("does not go through the director"),
        "{failed:?}"
    );
    assert_eq!(
        failed.fix.as_deref(),
        Some(
            "on 198.18.1.12: xdpvs rs-setup --nat --vip 198.18.0.100 --director 198.18.1.1 --apply"
        )
    );
    // Its SYN-ACK is reset from the VIP to its port.
    let rst = resets(&plan, &heard, &origin());
    assert_eq!(rst.len(), 1);
    assert_eq!(&rst[0][26..34], &[198, 18, 0, 100, 198, 18, 1, 11]);
    assert_eq!(u16::from_be_bytes([rst[0][36], rst[0][37]]), 8080);
}
