//! The short path of established direct-routing flows changes nothing but the cost: two
//! workers' tables, one with it and one without, given the same frames at the same
//! times, give the same verdicts, leave the same bytes, and end with the same
//! connections, loads and counters. The frames are TCP and UDP flows of a few clients
//! with every kind of TCP flag, headers mutated (options, fragments, lengths, other
//! protocols), and time jumping past timeouts; the configurations have real servers
//! in service, out of service by their check, and removed (draining).

use std::net::Ipv4Addr;

use proptest::prelude::*;
use xdpvs_dataplane::{process, Config, Draining, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const DIRECTOR: [u8; 6] = [2, 0, 0, 0, 0, 0xd1];

fn real(n: u8) -> RealSpec {
    RealSpec {
        addr: Ipv4Addr::new(198, 18, 0, 10 + n).into(),
        port: 0,
        method: xdpvs_sched::Method::Route,
        weight: 1,
        mac: Some([2, 0, 0, 0, 1, 10 + n]),
    }
}

/// The configuration: TCP and UDP services on port 80 of the VIP (and TCP on 443 when
/// `two_ports`), `reals` real servers each.
fn config(reals: u8, two_ports: bool, options: Options) -> Config {
    let mut services = Vec::new();
    let ports: &[u16] = if two_ports { &[80, 443] } else { &[80] };
    for (proto, &port) in [Protocol::Tcp, Protocol::Udp]
        .into_iter()
        .flat_map(|p| ports.iter().map(move |port| (p, port)))
    {
        let mut s = ServiceSpec::new(
            ServiceKey {
                proto,
                vip: VIP.into(),
                port,
            },
            SchedKind::Rr,
        );
        s.reals.extend((0..reals).map(real));
        services.push(s);
    }
    Config::new(DIRECTOR, services, options)
}

const LIMITS: Limits = Limits {
    max_services: 8,
    max_dests: 32,
    conn_capacity: 64,
};

fn tables(cfg: &Config, fast: bool) -> Tables {
    let mut t = Tables::new(
        Services::build(cfg, &LIMITS, None).expect("valid"),
        &LIMITS,
        Timeouts::default(),
        7,
    )
    .expect("valid");
    t.set_fast_path(fast);
    t
}

/// What is compared after each step: the connections (all fields but the time left,
/// which both compute from the same `now`: compared too), loads and counters.
fn state(t: &Tables, now: Time) -> String {
    let mut listed = Vec::with_capacity(1024);
    let mut cursor = 0;
    while let Some(c) = t.list(cursor, 1024, now, &mut listed) {
        cursor = c;
    }
    format!("{listed:?}\n{:?}\n{:?}", t.conns().loads(), t.stats())
}

/// A frame of flow `client` (TCP or UDP) with these TCP flags, its byte `mutate.0` set
/// to `mutate.1` if given, after `wait` seconds.
#[derive(Clone, Debug)]
struct Sent {
    client: u8,
    udp: bool,
    flags: u8,
    port443: bool,
    mutate: Option<(usize, u8)>,
    wait: u32,
}

#[derive(Clone, Debug)]
enum Step {
    /// A frame.
    Frame(Sent),
    /// The configuration changes: real servers `0..reals`, the first `down` of them out
    /// of service by their check; one no longer configured drains if `drain`, else is
    /// gone.
    Reconfigure { reals: u8, down: u8, drain: bool },
}

/// A header byte changed: one the short path reads (version and header length, the
/// fragment field, the protocol, the lengths, TCP's data offset), or any byte.
fn mutation() -> impl Strategy<Value = (usize, u8)> {
    let chosen = prop::sample::select(vec![
        (12, 0x86),
        (13, 0x06),
        (14, 0x46),
        (14, 0x65),
        (14, 0x44),
        (16, 0x00),
        (16, 0x7f),
        (17, 0x14),
        (17, 0x1c),
        (17, 0x27),
        (20, 0x20),
        (20, 0x40),
        (20, 0x80),
        (20, 0x01),
        (20, 0x60),
        (21, 0x01),
        (23, 0x01),
        (23, 0x2f),
        (23, 0x11),
        (23, 0x06),
        (46, 0x40),
        (46, 0x60),
        (46, 0xf0),
        (46, 0x00),
    ]);
    prop_oneof![3 => chosen, 1 => (0usize..60, any::<u8>())]
}

fn step() -> impl Strategy<Value = Step> {
    let flags = prop::sample::select(vec![
        0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x00, 0x03, 0x06, 0x19,
    ]);
    prop_oneof![
        8 => (
            0u8..4,
            prop::bool::weighted(0.25),
            flags,
            prop::bool::weighted(0.2),
            prop::option::weighted(0.3, mutation()),
            prop::sample::select(vec![0u32, 0, 0, 1, 30, 200, 1000]),
        )
            .prop_map(|(client, udp, flags, port443, mutate, wait)| {
                Step::Frame(Sent {
                    client,
                    udp,
                    flags,
                    port443,
                    mutate,
                    wait,
                })
            }),
        1 => (1u8..4, 0u8..2, any::<bool>())
            .prop_map(|(reals, down, drain)| Step::Reconfigure { reals, down, drain }),
    ]
}

fn frame(client: u8, udp: bool, flags: u8, port443: bool) -> Vec<u8> {
    let e = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 0xc1],
        dst_mac: DIRECTOR,
        src_ip: Ipv4Addr::new(198, 18, 1, client),
        dst_ip: VIP,
        sport: 40000 + u16::from(client),
        dport: if port443 { 443 } else { 80 },
    };
    if udp {
        frames::udp(&e, b"datagram")
    } else {
        frames::tcp(&e, flags, b"data")
    }
}

fn run(steps: &[Step], options: Options, two_ports: bool) -> Result<(), TestCaseError> {
    let cfg = config(2, two_ports, options);
    let (mut fast, mut general) = (tables(&cfg, true), tables(&cfg, false));
    let mut now = Time::from_secs(1);
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Frame(p) => {
                now = now.after(std::time::Duration::from_secs(u64::from(p.wait)));
                let mut a = frame(p.client, p.udp, p.flags, p.port443);
                if let Some((at, value)) = p.mutate {
                    if let Some(b) = a.get_mut(at) {
                        *b = value;
                    }
                }
                let mut b = a.clone();
                let (va, vb) = (
                    process(&mut a, &mut fast, now),
                    process(&mut b, &mut general, now),
                );
                prop_assert_eq!(va, vb, "step {}: {:?}", i, s);
                prop_assert_eq!(&a, &b, "step {}: bytes", i);
            }
            &Step::Reconfigure { reals, down, drain } => {
                let mut c = config(reals, two_ports, options);
                for svc in &c.services {
                    for r in svc.reals.iter().take(usize::from(down)) {
                        c.down.push((svc.key, r.addr));
                    }
                }
                // The real servers no longer configured drain (or are simply gone).
                if drain {
                    for svc in fast.services().services() {
                        for r in svc.reals.iter().filter(|r| r.mac.is_some()) {
                            let kept = c.services.iter().any(|s| {
                                s.key == svc.key && s.reals.iter().any(|n| n.mac == r.mac)
                            });
                            if !kept {
                                c.draining.push(Draining {
                                    dest: r.dest,
                                    mac: r.mac,
                                    fwd: Default::default(),
                                });
                            }
                        }
                    }
                }
                for t in [&mut fast, &mut general] {
                    let new = Services::build(&c, &LIMITS, Some(t.services())).expect("valid");
                    t.install(Box::new(new));
                }
            }
        }
        prop_assert_eq!(
            state(&fast, now),
            state(&general, now),
            "step {}: tables",
            i
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_short_path_changes_nothing_but_the_cost(
        steps in prop::collection::vec(step(), 1..60),
        sloppy in any::<bool>(),
        expire_nodest in any::<bool>(),
        two_ports in any::<bool>(),
    ) {
        let options = Options {
            sloppy_tcp: sloppy,
            expire_nodest_conn: expire_nodest,
            ..Options::default()
        };
        run(&steps, options, two_ports)?;
    }
}

#[test]
fn an_established_flow_takes_the_short_path_and_is_counted_the_same() {
    let cfg = config(2, false, Options::default());
    let (mut fast, mut general) = (tables(&cfg, true), tables(&cfg, false));
    let now = Time::from_secs(1);
    for flags in [0x02, 0x10, 0x18, 0x10, 0x11] {
        let (mut a, mut b) = (frame(1, false, flags, false), frame(1, false, flags, false));
        assert_eq!(process(&mut a, &mut fast, now), Verdict::Tx);
        assert_eq!(process(&mut b, &mut general, now), Verdict::Tx);
        assert_eq!(a, b);
    }
    assert_eq!(state(&fast, now), state(&general, now));
    assert_eq!(fast.stats().tx.get(), 5);
}

#[test]
fn a_first_fragment_leaves_the_short_path_so_its_later_fragments_follow() {
    let cfg = config(2, false, Options::default());
    let (mut fast, mut general) = (tables(&cfg, true), tables(&cfg, false));
    let now = Time::from_secs(1);
    // (flags, the fragment field's bytes): whole, whole, first fragment, later one.
    let steps = [
        (0x02, None),
        (0x10, None),
        (0x18, Some([0x20, 0x00])),
        (0x18, Some([0x00, 0x01])),
    ];
    for (flags, change) in steps {
        let mut a = frame(1, false, flags, false);
        if let Some(field) = change {
            a[20..22].copy_from_slice(&field);
        }
        let mut b = a.clone();
        let (va, vb) = (
            process(&mut a, &mut fast, now),
            process(&mut b, &mut general, now),
        );
        assert_eq!(va, vb);
        assert_eq!(va, Verdict::Tx, "flags {flags:#x}");
        assert_eq!(a, b);
    }
    assert_eq!(state(&fast, now), state(&general, now));
    assert_eq!(fast.stats().fragments_forwarded.get(), 1);
}
