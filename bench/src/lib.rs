//! Shared set-ups for xdpvs benchmarks: configured tables prefilled with flows, and the
//! frames of those flows.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use xdpvs_dataplane::frames::{self, Endpoints};
use xdpvs_dataplane::{process, Config, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Mac, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};

/// The director's MAC in benchmark set-ups.
pub const DIRECTOR_MAC: Mac = [0x02, 0, 0, 0, 0, 0xd1];
/// The client-side MAC in benchmark frames.
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
/// The VIP (RFC 2544 benchmark range).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

/// One TCP service on VIP:80 with `reals` real servers under `sched`.
pub fn config(sched: SchedKind, reals: u8) -> Config {
    let mut s = ServiceSpec::new(
        ServiceKey {
            proto: Protocol::Tcp,
            vip: VIP,
            port: 80,
        },
        sched,
    );
    s.reals = (1..=reals)
        .map(|i| RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, 10 + i),
            weight: 1,
            mac: Some([2, 0, 0, 0, 1, i]),
        })
        .collect();
    Config {
        director_mac: DIRECTOR_MAC,
        services: vec![s],
        options: Options::default(),
    }
}

/// The endpoints of flow number `k` (distinct client address/port per flow).
pub fn flow(k: u32) -> Endpoints {
    Endpoints {
        src_mac: CLIENT_MAC,
        dst_mac: DIRECTOR_MAC,
        // 198.19.0.0/16 holds 65536 clients; ports 1024.. give each 64512 flows.
        src_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + (k & 0xffff)),
        dst_ip: VIP,
        sport: 1024 + (k >> 16) as u16,
        dport: 80,
    }
}

/// Tables with room for `capacity` connections holding `flows` established flows, and
/// one ACK frame per flow.
pub fn established(flows: u32, capacity: usize) -> (Tables, Vec<Vec<u8>>) {
    let limits = Limits {
        conn_capacity: capacity,
        ..Limits::default()
    };
    let services =
        Services::build(&config(SchedKind::Wlc, 8), &limits, None).expect("valid config");
    let mut t = Tables::new(services, &limits, Timeouts::default(), 0x5eed).expect("valid limits");
    let mut acks = Vec::with_capacity(flows as usize);
    for k in 0..flows {
        let e = flow(k);
        let mut syn = frames::tcp(&e, SYN, b"");
        assert_eq!(process(&mut syn, &mut t, Time::from_secs(1)), Verdict::Tx);
        let mut ack = frames::tcp(&e, ACK, b"");
        assert_eq!(process(&mut ack, &mut t, Time::from_secs(1)), Verdict::Tx);
        acks.push(ack);
    }
    (t, acks)
}
