//! Property-based fuzzing of the pipeline: arbitrary bytes and mutated valid frames
//! never panic, and a frame the engine does not transmit is never modified.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use xdpvs_dataplane::{process, Config, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn tables() -> Tables {
    let mut services = Vec::new();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let mut s = ServiceSpec::new(
            ServiceKey {
                proto,
                vip: VIP.into(),
                port: 80,
            },
            SchedKind::Wlc,
        );
        s.reals.push(RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, 11).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            mac: Some([2, 0, 0, 0, 1, 11]),
        });
        services.push(s);
    }
    let cfg = Config::new(
        [2, 0, 0, 0, 0, 0xd1],
        services,
        Options {
            sloppy_tcp: true,
            ..Options::default()
        },
    );
    let limits = Limits {
        max_services: 4,
        max_dests: 8,
        conn_capacity: 1024,
    };
    Tables::new(
        Services::build(&cfg, &limits, None).expect("valid"),
        &limits,
        Timeouts::default(),
        3,
    )
    .expect("valid")
}

fn seeds() -> Vec<Vec<u8>> {
    let e = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 0xc1],
        dst_mac: [2, 0, 0, 0, 0, 0xd1],
        src_ip: Ipv4Addr::new(198, 18, 0, 2),
        dst_ip: VIP,
        sport: 40000,
        dport: 80,
    };
    vec![
        frames::tcp(&e, 0x02, b""),
        frames::tcp(&e, 0x18, b"GET / HTTP/1.1\r\n\r\n"),
        frames::udp(&e, b"payload"),
        xdpvs_arp::request([2, 0, 0, 0, 0, 0xc1], Ipv4Addr::new(198, 18, 0, 2), VIP).to_vec(),
    ]
}

fn check(frame: Vec<u8>, t: &mut Tables) -> Result<(), TestCaseError> {
    let mut f = frame.clone();
    let v = process(&mut f, t, Time::from_secs(1));
    prop_assert_eq!(f.len(), frame.len());
    match v {
        Verdict::Tx | Verdict::ToClient => {
            prop_assert_eq!(&f[12..], &frame[12..], "only MACs may change")
        }
        Verdict::Reply => {}
        Verdict::Pass | Verdict::Drop(_) | Verdict::Handoff(_) => prop_assert_eq!(f, frame),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(frame in prop::collection::vec(any::<u8>(), 0..200)) {
        check(frame, &mut tables())?;
    }

    #[test]
    fn mutated_valid_frames(
        which in 0usize..4,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut f = seeds()[which].clone();
        for (i, b) in edits {
            let n = f.len();
            f[i.index(n)] = b;
        }
        let keep = cut.index(f.len() + 1);
        f.truncate(keep.max(f.len() / 2));
        check(f, &mut tables())?;
    }
}
