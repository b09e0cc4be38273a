//! The packet engine over arbitrary frames, with a small configuration decoded from the
//! input: `process()` never panics, a frame it does not transmit is unchanged. What a
//! transmitted frame may change is its real server's method's: direct routing, only the
//! two MACs, to a configured real server; NAT (real servers on port 8080), the frame
//! keeps its length, goes to the real server's address or (a reply) leaves from a VIP,
//! and an IPv4 header checksum valid before is valid after (and invalid stays invalid:
//! the update is incremental); a tunnel (real servers .31 on, to their MACs), the packet
//! from its IP header on is byte for byte what came in, behind an outer header with a
//! valid checksum; a packet too big to tunnel, an ICMP error back to where it came from.
//! Services are IPv4 or IPv6 (2001:2::100.., real servers 2001:2::11..); the IPv6 parser
//! over the raw input never panics either.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use xdpvs_dataplane::{
    process_packet, Config, Limits, Options, Packet, Services, Tables, Time, Verdict,
};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{
    Method, Persistence, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, TunCsum,
    TunKind, Tunnel,
};

const DIRECTOR: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, n]
}

/// NAT real servers' MACs are `mac(21..25)`.
const NAT_MACS: std::ops::Range<u8> = 21..25;
/// Tunnel real servers' MACs (their next hop's) are `mac(31..35)`.
const TUN_MACS: std::ops::Range<u8> = 31..35;

/// The outer headers' length of tunnelled frame `f` (after Ethernet).
fn outer_len(f: &[u8]) -> usize {
    let v6 = f[12..14] == [0x86, 0xdd];
    let (ip, proto) = if v6 { (40, f[20]) } else { (20, f[23]) };
    ip + match proto {
        17 => 12,
        47 if f[14 + ip] & 0x80 != 0 => 8,
        47 => 4,
        _ => 0,
    }
}

/// Whether `f` is IPv4 with a header whose checksum is valid (`None`: not IPv4, or cut
/// short).
fn ipv4_header_valid(f: &[u8]) -> Option<bool> {
    if f.get(12..14)? != [8, 0] {
        return None;
    }
    let hlen = usize::from(f.get(14)? & 0x0f) * 4;
    let h = f.get(14..14 + hlen)?;
    let mut sum = 0u32;
    for w in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some(sum == 0xffff)
}

/// Bytes taken one at a time from the input (0 once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    // The IPv6 parser over the raw input: never panics, and a flow it reports lies
    // within the frame.
    if let Ok(xdpvs_dataplane::ipv6::Inbound6::Flow(f)) = xdpvs_dataplane::ipv6::parse(data) {
        assert!(14 + f.ip_len <= data.len());
    }
    let mut inp = Input(data);
    let flags = inp.byte();
    let options = Options {
        sloppy_tcp: flags & 1 != 0,
        expire_quiescent_template: flags & 2 != 0,
        expire_nodest_conn: flags & 4 != 0,
        conn_reuse_mode: xdpvs_dataplane::ConnReuseMode::new(flags >> 3 & 3).unwrap_or_default(),
        vips_routed: flags & 0x20 != 0,
    };
    let mut services = Vec::new();
    for s in 0..(inp.byte() % 3 + 1) {
        let b = inp.byte();
        let v6 = inp.byte() & 1 != 0;
        let addr = |last: u8| -> IpAddr {
            if v6 {
                Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, u16::from(last)).into()
            } else {
                Ipv4Addr::new(198, 18, 0, last).into()
            }
        };
        let key = ServiceKey {
            proto: if b & 1 == 0 { Protocol::Tcp } else { Protocol::Udp },
            vip: addr(100 + s),
            port: if b & 2 == 0 { 80 } else { 53 },
        };
        if services.iter().any(|x: &ServiceSpec| x.key == key) {
            continue;
        }
        let sched = SchedKind::ALL[usize::from(b >> 2) % SchedKind::ALL.len()];
        let mut spec = ServiceSpec::new(key, sched);
        if b & 0x80 != 0 {
            let t = std::time::Duration::from_secs(60);
            spec.persistence = if v6 {
                Persistence::with_prefix(t, 64).ok()
            } else {
                Persistence::new(t, Ipv4Addr::new(255, 255, 255, 0)).ok()
            };
        }
        for r in 0..(inp.byte() % 4) {
            let w = inp.byte();
            let (method, first) = match (w & 0x40 != 0, w & 0x20 != 0) {
                (true, _) => (Method::Masq, 21),
                (false, true) => {
                    let t = inp.byte();
                    let kind = [TunKind::Ipip, TunKind::Gue, TunKind::Gre][usize::from(t % 3)];
                    let csum = match (kind, t & 4 != 0) {
                        (TunKind::Ipip, _) | (_, false) => TunCsum::No,
                        (_, true) => TunCsum::Csum,
                    };
                    let port = if kind == TunKind::Gue { 6080 } else { 0 };
                    (Method::Tunnel(Tunnel { kind, port, csum }), 31)
                }
                _ => (Method::Route, 11),
            };
            spec.reals.push(RealSpec {
                addr: addr(first + r),
                port: if method == Method::Masq { 8080 } else { 0 },
                method,
                weight: u16::from(w % 4),
                mac: (w & 0x80 == 0).then(|| mac(first + r)),
            });
        }
        services.push(spec);
    }
    let limits = Limits {
        max_services: 8,
        max_dests: 32,
        conn_capacity: usize::from(inp.byte() % 16) + 1,
    };
    let mut cfg = Config::new(DIRECTOR, services, options);
    cfg.own = vec![
        Ipv4Addr::new(198, 18, 0, 1).into(),
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1).into(),
    ];
    cfg.tunnel_mtu = [1500, 1280, 9000, 576][usize::from(flags >> 6)];
    let Ok(built) = Services::build(&cfg, &limits, None) else {
        return;
    };
    let Ok(mut tables) = Tables::new(built, &limits, Timeouts::default(), 1) else {
        return;
    };
    let mut now = 1_000_000_000u64;
    while !inp.0.is_empty() {
        now += u64::from(inp.byte()) * 50_000_000;
        let len = usize::from(inp.byte()) | usize::from(inp.byte() & 0x0f) << 8;
        let before = inp.take(len).to_vec();
        // The frame in a buffer with a UMEM frame's room behind it.
        let mut buf = before.clone();
        buf.resize(before.len().max(1792), 0);
        let mut n = before.len();
        let v = process_packet(&mut Packet::new(&mut buf, &mut n), &mut tables, Time::from_nanos(now));
        let frame = &buf[..n];
        match v {
            Verdict::Tx if TUN_MACS.clone().any(|m| frame[0..6] == mac(m)) => {
                assert_eq!(frame[6..12], DIRECTOR);
                assert_eq!(frame[12..14], before[12..14], "the family stays");
                let ov = outer_len(frame);
                let inner = &frame[14 + ov..];
                assert_eq!(inner, &before[14..14 + inner.len()], "the packet, byte for byte");
                assert_ne!(ipv4_header_valid(frame), Some(false), "a valid outer header");
            }
            Verdict::Tx | Verdict::ToClient => {
                assert_eq!(frame.len(), before.len());
                assert_eq!(frame[6..12], DIRECTOR);
                if frame[12..] == before[12..] {
                    assert_eq!(v, Verdict::Tx, "only NAT replies go to clients");
                    assert!(
                        (11..15).any(|n| frame[0..6] == mac(n)),
                        "direct routing (only the MACs change): to a real server"
                    );
                } else {
                    // NAT: to a NAT real server's address, or a reply from a VIP.
                    assert_eq!(frame[12..14], before[12..14]);
                    let v6 = frame[12..14] == [0x86, 0xdd];
                    let (src, dst) = if v6 { (22, 38) } else { (26, 30) };
                    let last = |at: usize| frame[at + if v6 { 15 } else { 3 }];
                    if v == Verdict::Tx {
                        assert!(
                            NAT_MACS.clone().any(|n| frame[0..6] == mac(n))
                                && NAT_MACS.contains(&last(dst)),
                            "to a NAT real server"
                        );
                    } else {
                        assert!((100..103).contains(&last(src)), "a reply from a VIP");
                    }
                    assert_eq!(
                        ipv4_header_valid(frame),
                        ipv4_header_valid(&before),
                        "the IPv4 header checksum stays as valid as it was"
                    );
                }
            }
            Verdict::Reply if frame.len() != before.len() => {
                // Too big to tunnel: an ICMP error back where the packet came from.
                assert_eq!(frame[0..6], before[6..12]);
                let v6 = frame[12..14] == [0x86, 0xdd];
                let icmp = if v6 { frame[54] } else { frame[34] };
                assert_eq!(icmp, if v6 { 2 } else { 3 });
                assert_ne!(ipv4_header_valid(frame), Some(false));
            }
            Verdict::Reply => {}
            Verdict::Pass | Verdict::Drop(_) | Verdict::Handoff(_) => {
                assert_eq!(frame, &before[..], "untouched")
            }
        }
    }
});
