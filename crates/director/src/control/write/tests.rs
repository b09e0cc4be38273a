use std::net::Ipv4Addr;
use std::time::Duration;
use xdpvs_dataplane::{process, NatSource, Tables, Verdict};
use xdpvs_sched::tcp::{flags, Timeouts};

use xdpvs_sched::{Persistence, Protocol, SchedKind, Time};

use std::cell::RefCell;
use std::net::SocketAddr;

use xdpvs_dataplane::engine::Explained;
use xdpvs_dataplane::stats::TrafficTotals;
use xdpvs_sched::conn::{DestRef, Listed};
use xdpvs_sched::Load;

use super::super::check::{self, CheckReport, Heard};
use super::super::dataplane::{DataplaneError, Probe};
use super::super::proto::{Answer, ConnRow, Counters, Reason, Sysctl, Table, TimeoutSet};
use super::super::{diagnose, read};
use xdpvs_testkit::frames::{self, Endpoints};

use super::*;

const DIRECTOR: Mac = [2, 0, 0, 0, 0, 1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn key() -> ServiceKey {
    ServiceKey {
        proto: Protocol::Tcp,
        vip: VIP.into(),
        port: 80,
    }
}

fn rs(last: u8) -> IpAddr {
    Ipv4Addr::new(198, 18, 0, last).into()
}

fn mac_of(last: u8) -> Mac {
    [2, 0, 0, 0, 1, last]
}

fn limits() -> Limits {
    Limits {
        max_services: 4,
        max_dests: 4,
        conn_capacity: 1024,
    }
}

/// A dataplane of real worker tables that can be told to fail.
struct Fake {
    workers: Vec<Tables>,
    fail_install_on: Option<usize>,
    /// How many steer calls still fail.
    fail_steers: usize,
    /// Flows opened on worker 0 while a failing steer is under way (the workers run the
    /// new snapshot then), with the MAC each was sent to.
    open_during_steer: Vec<u16>,
    opened: Vec<(u16, Mac)>,
    steered: Vec<ServiceKey>,
    announced: Vec<IpAddr>,
    timeouts: Option<Timeouts>,
    now: Time,
    /// Frames `probe` was given, and the hosts it says claimed a VIP.
    probed: RefCell<Vec<Vec<u8>>>,
    claims: Vec<(IpAddr, Mac)>,
}

impl Fake {
    fn new(workers: usize) -> Fake {
        let empty = Services::build(
            &Config::new(DIRECTOR, vec![], Options::default()),
            &limits(),
            None,
        )
        .expect("valid");
        Fake {
            workers: (0..workers)
                .map(|i| {
                    Tables::new(empty.clone(), &limits(), Timeouts::default(), i as u64 + 7)
                        .expect("tables")
                })
                .collect(),
            fail_install_on: None,
            fail_steers: 0,
            open_during_steer: Vec::new(),
            opened: Vec::new(),
            steered: Vec::new(),
            announced: Vec::new(),
            timeouts: None,
            now: Time::from_nanos(1),
            probed: RefCell::new(Vec::new()),
            claims: Vec::new(),
        }
    }

    /// Sends one segment of client port `cport` through worker 0; the MAC it went to.
    fn send(&mut self, cport: u16, tcp_flags: u8) -> Option<Mac> {
        let e = Endpoints {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: DIRECTOR,
            src_ip: Ipv4Addr::new(198, 19, 0, 1),
            dst_ip: VIP,
            sport: cport,
            dport: 80,
        };
        let mut f = frames::tcp(&e, tcp_flags, b"");
        self.now = Time::from_nanos(self.now.as_nanos() + 1000);
        match process(&mut f, &mut self.workers[0], self.now) {
            Verdict::Tx => Some(f[0..6].try_into().expect("6 bytes")),
            _ => None,
        }
    }
}

impl Configure for Fake {
    fn install(&mut self, services: &Services) -> Result<(), DataplaneError> {
        for (i, t) in self.workers.iter_mut().enumerate() {
            if self.fail_install_on == Some(i) {
                return Err(DataplaneError::InstallTimeout {
                    worker: i,
                    seconds: 3,
                });
            }
            t.install(Box::new(services.clone()));
        }
        Ok(())
    }

    fn steer(&mut self, keys: &[ServiceKey], _nat: &[NatSource]) -> Result<(), DataplaneError> {
        if self.fail_steers > 0 {
            self.fail_steers -= 1;
            for cport in std::mem::take(&mut self.open_during_steer) {
                if let Some(m) = self.send(cport, flags::SYN) {
                    self.opened.push((cport, m));
                }
            }
            return Err(DataplaneError::Steer("map full".into()));
        }
        self.steered = keys.to_vec();
        Ok(())
    }

    fn advertise(&mut self, vip: IpAddr) {
        self.announced.push(vip);
    }

    fn send(&mut self, frames: &[Vec<u8>]) {
        self.probed.borrow_mut().extend(frames.iter().cloned());
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = Some(timeouts);
        for t in &mut self.workers {
            t.set_timeouts(timeouts);
        }
    }
}

impl Observe for Fake {
    fn load(&self, dest: DestRef) -> Load {
        self.workers.iter().fold(Load::default(), |acc, t| {
            let l = t.conns().load(dest);
            Load {
                active: acc.active + l.active,
                inactive: acc.inactive + l.inactive,
            }
        })
    }

    fn capacity(&self) -> usize {
        1 << 20
    }

    fn persistent(&self, dest: DestRef) -> u64 {
        self.workers
            .iter()
            .map(|t| u64::from(t.conns().loads().persistent(dest)))
            .sum()
    }

    fn service_traffic(&self, slot: u32) -> TrafficTotals {
        self.workers.iter().fold(TrafficTotals::default(), |a, t| {
            a + t.stats().service_totals(slot)
        })
    }

    fn dest_traffic(&self, slot: u32) -> TrafficTotals {
        self.workers.iter().fold(TrafficTotals::default(), |a, t| {
            a + t.stats().dest_totals(slot)
        })
    }

    fn list_connections(
        &self,
        sink: &mut dyn FnMut(&[Listed]) -> bool,
    ) -> Result<(), DataplaneError> {
        for t in &self.workers {
            let mut cursor = Some(0);
            while let Some(c) = cursor {
                // Tiny pieces, to exercise the piecing.
                let mut buf = Vec::with_capacity(3);
                cursor = t.conns().list(c, 64, self.now, &mut buf);
                if !sink(&buf) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Probe for Fake {
    fn explain(
        &self,
        key: &ServiceKey,
        client: SocketAddr,
    ) -> Result<Vec<Option<Explained>>, DataplaneError> {
        Ok(self
            .workers
            .iter()
            .map(|t| t.explain(key, client, self.now))
            .collect())
    }

    /// The real server at `mac_of(11)` answers SYNs with a SYN-ACK; nobody else answers.
    fn probe_until(
        &self,
        frames: &[Vec<u8>],
        _listen: Duration,
        _done: &dyn Fn(&Heard) -> bool,
    ) -> Result<Heard, DataplaneError> {
        self.probed.borrow_mut().extend(frames.iter().cloned());
        let mut heard = Heard {
            packets: Vec::new(),
            claims: self.claims.clone(),
        };
        for f in frames {
            let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) else {
                continue;
            };
            let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) =
                (&p.net, &p.transport)
            else {
                continue;
            };
            if f[0..6] != mac_of(11) || !t.syn() {
                continue;
            }
            let h = ip.header();
            let b = etherparse::PacketBuilder::ipv4(h.destination(), h.source(), 64)
                .tcp(t.destination_port(), t.source_port(), 5, 100)
                .syn()
                .ack(t.sequence_number().wrapping_add(1));
            let mut out = Vec::new();
            b.write(&mut out, &[]).expect("written");
            heard.packets.push(check::Packet::V4(out));
        }
        Ok(heard)
    }
}

/// The questions and diagnostics, asked as the router asks them: from the write side's
/// published view.
impl WriteSide<Fake> {
    fn table(&self, service: Option<&ServiceKey>) -> Result<Table, ControlError> {
        read::table(&self.published.get(), &self.dp, service)
    }

    fn check(&mut self, first_port: u16, echo_id: u16) -> Result<CheckReport, ControlError> {
        diagnose::run_check(&self.published.get(), &self.dp, first_port, echo_id)
    }

    /// Any request, answered by the part the router would hand it to.
    fn ask(&mut self, req: &Request) -> Answer {
        let view = self.published.get();
        match req {
            Request::List { service } => self.table(service.as_ref()).map(Reply::Table),
            Request::GetTimeouts => Ok(read::timeouts(&view)),
            Request::Check => self.check(check::FIRST_PORT, 1).map(Reply::Check),
            Request::Explain { key, client } => {
                diagnose::explain(&view, &self.dp, key, *client).map(Reply::Explain)
            }
            _ => self.execute(req),
        }
    }

    fn connections(&self, sink: &mut dyn FnMut(Vec<ConnRow>) -> bool) -> Result<(), ControlError> {
        read::connections(&self.published.get(), &self.dp, sink)
    }
}

fn plane(workers: usize) -> WriteSide<Fake> {
    plane_with(workers, Options::default())
}

/// [`plane`] with these engine options.
fn plane_with(workers: usize, options: Options) -> WriteSide<Fake> {
    WriteSide::new(
        DIRECTOR,
        options,
        limits(),
        vec![LocalNet {
            addr: Ipv4Addr::new(198, 18, 0, 1).into(),
            prefix_len: 24,
        }],
        Fake::new(workers),
    )
    .expect("ok")
}

/// `-a` of `.last`, with its MAC resolved as the neighbour table would.
fn add_real(p: &mut WriteSide<Fake>, last: u8) -> Result<Reply, ControlError> {
    p.macs.insert(rs(last), mac_of(last));
    p.execute(&Request::AddReal {
        key: key(),
        addr: rs(last),
        port: 0,
        method: xdpvs_sched::Method::Route,
        weight: 1,
        check: None,
    })
}

fn add_service(p: &mut WriteSide<Fake>) {
    p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    })
    .expect("service added");
}

/// Every established flow still reaches the MAC it was scheduled to, or is dropped.
fn assert_flows_stay(p: &mut WriteSide<Fake>, flows: &HashMap<u16, Mac>) {
    for (&cport, &mac) in flows {
        if let Some(now) = p.dp.send(cport, flags::ACK) {
            assert_eq!(now, mac, "flow {cport} moved from {mac:?} to {now:?}");
        }
    }
}

#[test]
fn a_failed_steer_rolls_back_and_no_connection_changes_real_server() {
    let mut p = plane(2);
    add_service(&mut p);
    for last in [11, 12, 13] {
        add_real(&mut p, last).expect("added");
    }
    let mut flows = HashMap::new();
    for cport in 1000..1030 {
        flows.insert(cport, p.dp.send(cport, flags::SYN).expect("scheduled"));
    }
    assert_eq!(flows.values().collect::<HashSet<_>>().len(), 3);

    // A removal whose XDP update fails is rolled back: nothing changes.
    p.dp.fail_steers = 1;
    let e = p
        .execute(&Request::DeleteReal {
            key: key(),
            addr: rs(11),
        })
        .expect_err("steer fails");
    assert!(matches!(e, ControlError::RolledBack(_)), "{e}");
    assert!(
        e.to_string().contains("rolled back and nothing changed"),
        "{e}"
    );
    assert!(p.failure().is_none());
    assert_eq!(p.table(None).expect("table").services[0].reals.len(), 3);
    for (&cport, &mac) in &flows {
        assert_eq!(
            p.dp.send(cport, flags::ACK),
            Some(mac),
            "rolled back: still served"
        );
    }

    // Remove .11 for real, then add .14 while the XDP update fails; connections opened in
    // between (the workers ran the abandoned snapshot) go to .14, in .11's old slot.
    p.execute(&Request::DeleteReal {
        key: key(),
        addr: rs(11),
    })
    .expect("removed");
    p.dp.fail_steers = 1;
    p.dp.open_during_steer = (2000..2012).collect();
    let e = add_real(&mut p, 14).expect_err("steer fails");
    assert!(matches!(e, ControlError::RolledBack(_)), "{e}");
    let during = std::mem::take(&mut p.dp.opened);
    assert!(
        during.iter().any(|&(_, m)| m == mac_of(14)),
        "some connections reached .14 while the abandoned snapshot ran: {during:?}"
    );
    flows.extend(during);
    assert_flows_stay(&mut p, &flows);

    // Now .15 and .16 are added for real: they take the slots .11 and .14 had.
    add_real(&mut p, 15).expect("added");
    add_real(&mut p, 16).expect("added");
    assert_flows_stay(&mut p, &flows);
    // New connections do reach .15 and .16.
    let fresh: HashSet<Mac> = (3000..3040)
        .filter_map(|c| p.dp.send(c, flags::SYN))
        .collect();
    assert!(
        fresh.contains(&mac_of(15)) && fresh.contains(&mac_of(16)),
        "{fresh:?}"
    );
}

#[test]
fn a_worker_that_does_not_take_a_snapshot_stops_the_director() {
    let mut p = plane(2);
    add_service(&mut p);
    p.dp.fail_install_on = Some(1);
    let e = add_real(&mut p, 11).expect_err("install fails");
    assert!(matches!(e, ControlError::Fatal(_)), "{e}");
    assert!(
        e.to_string().contains(
            "worker 1 did not take the new configuration within 3 s; the director is stopping"
        ),
        "{e}"
    );
    assert!(p.failure().is_some());
    // Nothing more is applied, even once the worker would answer again.
    p.dp.fail_install_on = None;
    let e = add_real(&mut p, 12).expect_err("failed for good");
    assert!(matches!(e, ControlError::Fatal(_)), "{e}");
}

#[test]
fn routed_vips_are_not_advertised_on_the_lan() {
    let mut p = plane_with(
        1,
        Options {
            vips_routed: true,
            ..Options::default()
        },
    );
    add_service(&mut p);
    assert!(p.dp.announced.is_empty(), "{:?}", p.dp.announced);
    assert_eq!(p.dp.steered, vec![key()], "served all the same");
}

#[test]
fn add_list_and_announce() {
    let mut p = plane(1);
    add_service(&mut p);
    assert_eq!(p.dp.announced, vec![VIP]);
    assert_eq!(p.dp.steered, vec![key()]);
    for last in [11, 12] {
        p.execute(&Request::AddReal {
            key: key(),
            addr: rs(last),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: None,
        })
        .expect("ok");
    }
    let t = p.table(None).expect("table");
    assert_eq!(t.services[0].reals[0].active, 0);
    assert_eq!(t.services[0].reals[0].inactive, 0);
    assert!(!t.services[0].reals[0].resolved);
    assert_eq!(p.unresolved().len(), 2);
    let seen = HashMap::from([(rs(11), Some(mac_of(11)))]);
    assert_eq!(p.learn_macs(&seen).expect("ok").len(), 1);
    assert!(p.learn_macs(&seen).expect("ok").is_empty(), "nothing new");
    assert_eq!(p.unresolved(), vec![rs(12)]);
    assert!(p.table(None).expect("table").services[0].reals[0].resolved);
    // A neighbour that failed is forgotten: no traffic until it is reachable again.
    let gone = HashMap::from([(rs(11), None)]);
    assert_eq!(p.learn_macs(&gone).expect("ok"), vec![(rs(11), None)]);
    assert_eq!(p.unresolved(), vec![rs(11), rs(12)]);
}

#[test]
fn errors_change_nothing() {
    let mut p = plane(1);
    assert_eq!(
        p.execute(&Request::AddReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: None
        }),
        Err(ControlError::NoSuchService(key()))
    );
    add_service(&mut p);
    let e = p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Wrr,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    });
    assert_eq!(e, Err(ControlError::ServiceExists(key())));
    assert_eq!(
        e.expect_err("exists").to_string(),
        "service TCP 198.18.0.100:80 already exists"
    );
}

#[test]
fn a_rollback_that_fails_stops_the_director() {
    let mut p = plane(1);
    add_service(&mut p);
    p.dp.fail_steers = 2;
    let e = add_real(&mut p, 11).expect_err("steer and its undo fail");
    assert!(matches!(e, ControlError::Fatal(_)), "{e}");
    assert!(
        e.to_string().contains("restoring the XDP maps failed"),
        "{e}"
    );
    assert!(p.failure().is_some());
}

fn key_at(proto: Protocol, last: u8, port: u16) -> ServiceKey {
    ServiceKey {
        proto,
        vip: Ipv4Addr::new(198, 18, 0, last).into(),
        port,
    }
}

#[test]
fn edit_replaces_scheduler_and_persistence_as_ipvsadm_does() {
    let mut p = plane(1);
    let persistent =
        Persistence::new(Duration::from_secs(60), Ipv4Addr::new(255, 255, 255, 0)).expect("valid");
    p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: Some(persistent),
        sorry: None,
        flags: Default::default(),
    })
    .expect("added");
    p.execute(&Request::EditService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Wlc,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    })
    .expect("edited");
    let t = p.table(None).expect("table");
    assert_eq!(t.services[0].scheduler, SchedKind::Wlc);
    assert_eq!(
        t.services[0].persistence, None,
        "-E without -p turns it off"
    );
}

#[test]
fn listing_is_sorted_like_ipvsadm_and_can_show_one_service() {
    let mut p = plane(1);
    for k in [
        key_at(Protocol::Udp, 100, 53),
        key_at(Protocol::Tcp, 101, 80),
        key_at(Protocol::Tcp, 100, 443),
        key_at(Protocol::Tcp, 100, 80),
    ] {
        p.execute(&Request::AddService {
            quorum: Default::default(),
            key: k,
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        })
        .expect("added");
    }
    for last in [13, 11, 12] {
        add_real(&mut p, last).expect("added");
    }
    let t = p.table(None).expect("table");
    let order: Vec<String> = t.services.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        order,
        [
            "TCP 198.18.0.100:80",
            "TCP 198.18.0.100:443",
            "TCP 198.18.0.101:80",
            "UDP 198.18.0.100:53"
        ]
    );
    let reals: Vec<IpAddr> = t.services[0].reals.iter().map(|r| r.addr).collect();
    assert_eq!(reals, [rs(11), rs(12), rs(13)]);
    let one = p.table(Some(&key())).expect("exists");
    assert_eq!(one.services.len(), 1);
    let missing = key_at(Protocol::Tcp, 100, 8080);
    assert_eq!(
        p.table(Some(&missing)),
        Err(ControlError::NoSuchService(missing))
    );
}

/// A restore-like batch: clear, a wrr service, real server .12 with weight 3, then `last`.
fn rebuild_then(last: Request) -> Request {
    Request::Batch(vec![
        Request::Clear,
        Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Wrr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        },
        Request::AddReal {
            key: key(),
            addr: rs(12),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 3,
            check: None,
        },
        last,
    ])
}

#[test]
fn a_batch_is_applied_whole_or_not_at_all() {
    let mut p = plane(1);
    add_service(&mut p);
    add_real(&mut p, 11).expect("added");
    let before = p.table(None).expect("table");
    let e = p
        .execute(&rebuild_then(Request::AddReal {
            key: key(),
            addr: rs(12),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 3,
            check: None,
        }))
        .expect_err("duplicate real");
    assert_eq!(
        e,
        ControlError::InBatch {
            index: 4,
            error: Box::new(ControlError::RealExists {
                service: key(),
                addr: rs(12)
            })
        }
    );
    assert_eq!(p.table(None).expect("table"), before, "nothing applied");
    p.execute(&rebuild_then(Request::SetTimeouts(TimeoutSet {
        tcp: 10,
        tcpfin: 0,
        udp: 30,
    })))
    .expect("applied");
    let t = p.table(None).expect("table");
    assert_eq!(t.services[0].scheduler, SchedKind::Wrr);
    assert_eq!(t.services[0].reals.len(), 1);
    assert_eq!(t.services[0].reals[0].weight, 3);
    assert_eq!(
        p.ask(&Request::GetTimeouts),
        Ok(Reply::Timeouts(
            TimeoutSet {
                tcp: 10,
                tcpfin: 120,
                udp: 30
            },
            DEFAULT_SYSCTL
        ))
    );
    assert!(p.dp.timeouts.is_some(), "the workers got them");
}

/// The switches of a director run without options.
const DEFAULT_SYSCTL: Sysctl = Sysctl {
    conn_reuse_mode: 3,
    expire_nodest_conn: false,
    expire_quiescent_template: false,
    sloppy_tcp: false,
};

#[test]
fn timeouts_as_ipvsadm_sets_and_shows_them() {
    let mut p = plane(1);
    assert_eq!(
        p.ask(&Request::GetTimeouts),
        Ok(Reply::Timeouts(
            TimeoutSet {
                tcp: 900,
                tcpfin: 120,
                udp: 300
            },
            DEFAULT_SYSCTL
        ))
    );
    p.execute(&Request::SetTimeouts(TimeoutSet {
        tcp: 0,
        tcpfin: 5,
        udp: 0,
    }))
    .expect("set");
    let t = p.dp.timeouts.expect("sent to the workers");
    assert_eq!(t.get(State::FinWait), Duration::from_secs(5));
    assert_eq!(t.get(State::Established), Duration::from_secs(900));
}

#[test]
fn real_servers_direct_routing_cannot_reach_are_refused() {
    let mut p = plane(1);
    add_service(&mut p);
    for (addr, why) in [
        (VIP, "it is a virtual IP"),
        (Ipv4Addr::new(198, 18, 0, 1), "the director's own address"),
        (
            Ipv4Addr::new(198, 19, 0, 5),
            "not on the director's subnet (198.18.0.1/24)",
        ),
    ] {
        let e = p
            .execute(&Request::AddReal {
                key: key(),
                addr: addr.into(),
                port: 0,
                method: xdpvs_sched::Method::Route,
                weight: 1,
                check: None,
            })
            .expect_err("refused");
        assert!(
            matches!(e, ControlError::BadReal { .. }) && e.to_string().contains(why),
            "{addr}: {e}"
        );
    }
    assert!(p.table(None).expect("table").services[0].reals.is_empty());
    // A VIP added earlier in the same batch counts too.
    let other_vip = Ipv4Addr::new(198, 18, 0, 101);
    let e = p
        .execute(&Request::Batch(vec![
            Request::AddService {
                quorum: Default::default(),
                key: key_at(Protocol::Tcp, 101, 80),
                scheduler: SchedKind::Rr,
                persistence: None,
                sorry: None,
                flags: Default::default(),
            },
            Request::AddReal {
                key: key(),
                addr: other_vip.into(),
                port: 0,
                method: xdpvs_sched::Method::Route,
                weight: 1,
                check: None,
            },
        ]))
        .expect_err("refused");
    assert!(e.to_string().contains("it is a virtual IP"), "{e}");
}

fn two_reals() -> WriteSide<Fake> {
    let mut p = plane(1);
    add_service(&mut p);
    add_real(&mut p, 11).expect("added");
    add_real(&mut p, 12).expect("added");
    p
}

#[test]
fn stats_count_what_the_workers_forwarded_and_zero_restarts_them() {
    let mut p = two_reals();
    for c in 1000..1010 {
        assert!(p.dp.send(c, flags::SYN).is_some());
        assert!(p.dp.send(c, flags::ACK).is_some());
    }
    p.tick();
    let t = p.table(None).expect("table");
    let s = &t.services[0];
    assert_eq!(
        s.stats,
        Counters {
            conns: 10,
            inpkts: 20,
            outpkts: 0,
            inbytes: 20 * 40,
            outbytes: 0
        }
    );
    assert_eq!(s.reals.iter().map(|r| r.stats.conns).sum::<u64>(), 10);
    assert_eq!(s.reals[0].stats.inpkts, 10);
    // One 2-second sample of IPVS's estimator: a quarter of the rate, rounded as IPVS.
    assert_eq!(
        (s.rates.cps, s.rates.inpps, s.rates.inbps, s.rates.outpps),
        (1, 2, 100, 0)
    );
    assert_eq!(
        p.execute(&Request::Zero {
            service: Some(key_at(Protocol::Udp, 100, 53))
        }),
        Err(ControlError::NoSuchService(key_at(Protocol::Udp, 100, 53)))
    );
    p.execute(&Request::Zero {
        service: Some(key()),
    })
    .expect("zeroed");
    let t = p.table(None).expect("table");
    assert_eq!(t.services[0].stats, Counters::default());
    assert_eq!(t.services[0].rates, Default::default());
    assert!(t.services[0]
        .reals
        .iter()
        .all(|r| r.stats == Counters::default()));
    p.dp.send(1000, flags::ACK);
    let t = p.table(None).expect("table");
    assert_eq!(
        (t.services[0].stats.inpkts, t.services[0].stats.conns),
        (1, 0)
    );
    // ActiveConn from the workers' tables.
    assert_eq!(
        t.services[0].reals.iter().map(|r| r.active).sum::<u64>(),
        10
    );
}

fn list(p: &mut WriteSide<Fake>) -> Vec<ConnRow> {
    let mut rows = Vec::new();
    let answer = p.connections(&mut |piece| {
        rows.extend(piece);
        true
    });
    assert_eq!(answer, Ok(()));
    rows
}

#[test]
fn connections_are_listed_with_real_server_state_and_time_left() {
    let mut p = two_reals();
    for c in 2000..2005 {
        p.dp.send(c, flags::SYN);
    }
    let rows = list(&mut p);
    assert_eq!(rows.len(), 5);
    let syn_recv = Timeouts::default().get(State::SynRecv).as_secs();
    for r in &rows {
        assert_eq!(r.state, "SYN_RECV");
        assert!(r.expires <= syn_recv && r.expires + 1 >= syn_recv, "{r:?}");
        assert_eq!(r.virtual_addr, SocketAddr::new(VIP.into(), 80));
        assert!([rs(11), rs(12)].contains(&r.destination.ip()));
        assert_eq!(r.destination.port(), 80);
        assert!(!r.template);
    }
    // --set changes what the listing shows as expire.
    for c in 2000..2005 {
        p.dp.send(c, flags::ACK);
    }
    p.execute(&Request::SetTimeouts(TimeoutSet {
        tcp: 100,
        tcpfin: 0,
        udp: 0,
    }))
    .expect("set");
    let rows = list(&mut p);
    assert!(rows
        .iter()
        .all(|r| r.state == "ESTABLISHED" && (99..=100).contains(&r.expires)));
}

#[test]
fn a_removed_real_drains_and_is_forgotten_when_its_connections_end() {
    let mut p = two_reals();
    let flows: HashMap<u16, Mac> = (3000..3010)
        .filter_map(|c| Some((c, p.dp.send(c, flags::SYN)?)))
        .collect();
    assert!(flows.values().any(|&m| m == mac_of(11)));
    p.execute(&Request::DeleteReal {
        key: key(),
        addr: rs(11),
    })
    .expect("deleted");
    // Its connections keep reaching it; new ones go to the others only.
    assert_flows_stay(&mut p, &flows);
    for c in 3100..3110 {
        assert_eq!(p.dp.send(c, flags::SYN), Some(mac_of(12)));
    }
    assert!(p.real_addrs().contains(&rs(11)), "its MAC is still learnt");
    assert!(list(&mut p).iter().any(|r| r.destination.ip() == rs(11)));
    p.tick();
    assert!(p.real_addrs().contains(&rs(11)), "connections remain");
    // Its connections end: it is forgotten.
    p.dp.now = Time::from_nanos(p.dp.now.as_nanos() + 3_600_000_000_000);
    let now = p.dp.now;
    p.dp.workers[0].expire(now, 1 << 16);
    p.tick();
    assert!(!p.real_addrs().contains(&rs(11)));
}

#[test]
fn with_expire_nodest_conn_a_removed_reals_clients_are_reset() {
    let mut p = WriteSide::new(
        DIRECTOR,
        Options {
            expire_nodest_conn: true,
            ..Options::default()
        },
        limits(),
        vec![],
        Fake::new(1),
    )
    .expect("ok");
    add_service(&mut p);
    add_real(&mut p, 11).expect("added");
    assert_eq!(p.dp.send(4000, flags::SYN), Some(mac_of(11)));
    add_real(&mut p, 12).expect("added");
    p.execute(&Request::DeleteReal {
        key: key(),
        addr: rs(11),
    })
    .expect("deleted");
    assert_eq!(p.dp.send(4000, flags::ACK), None, "answered, not forwarded");
    assert_eq!(p.dp.workers[0].stats().resets.get(), 1);
    assert_eq!(p.dp.send(4000, flags::SYN), Some(mac_of(12)));
}

#[test]
fn persistence_templates_are_listed_and_counted_as_ipvsadm_shows_them() {
    let mut p = plane(1);
    p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: Some(
            Persistence::new(Duration::from_secs(600), Ipv4Addr::new(255, 255, 255, 0))
                .expect("valid"),
        ),
        sorry: None,
        flags: Default::default(),
    })
    .expect("added");
    add_real(&mut p, 11).expect("added");
    add_real(&mut p, 12).expect("added");
    let to = p.dp.send(5000, flags::SYN).expect("forwarded");
    assert_eq!(p.dp.send(5001, flags::SYN), Some(to), "persistent client");
    let rows = list(&mut p);
    let templates: Vec<&ConnRow> = rows.iter().filter(|r| r.template).collect();
    assert_eq!(templates.len(), 1, "{rows:?}");
    let t = templates[0];
    assert_eq!(t.state, "NONE");
    assert_eq!(
        t.source,
        SocketAddr::new(Ipv4Addr::new(198, 19, 0, 0).into(), 0)
    );
    assert_eq!(t.expires, 600, "controls connections: its whole timeout");
    assert_eq!(rows.len(), 3);
    let table = p.table(None).expect("table");
    let persist: Vec<u64> = table.services[0]
        .reals
        .iter()
        .map(|r| r.persistent)
        .collect();
    assert_eq!(persist.iter().sum::<u64>(), 1, "{persist:?}");
}

fn checked(on_failure: OnFailure) -> CheckSpec {
    CheckSpec {
        on_failure,
        ..CheckSpec::new(crate::health::Probe::Tcp)
    }
}

fn outcome(last: u8, ok: bool, changed: Option<Health>) -> Outcome {
    Outcome {
        service: key(),
        addr: rs(last),
        ok,
        detail: if ok {
            "ok".into()
        } else {
            "connect to x: Connection refused".into()
        },
        latency: Duration::from_micros(250),
        changed,
        dynamic: None,
    }
}

/// `-a` of `.last` with a check.
fn add_checked(p: &mut WriteSide<Fake>, last: u8, check: CheckSpec) {
    p.macs.insert(rs(last), mac_of(last));
    p.execute(&Request::AddReal {
        key: key(),
        addr: rs(last),
        port: 0,
        method: xdpvs_sched::Method::Route,
        weight: 2,
        check: Some(check),
    })
    .expect("added");
}

/// The compiled weight of `.last` in the snapshot in force, if it is there.
/// The weight the workers' schedulers use for `.last` (0: out of service), if the
/// compiled configuration has it.
fn compiled_weight(p: &WriteSide<Fake>, last: u8) -> Option<u16> {
    let s = &p.current().services()[p.current().find(&key()).expect("service")];
    s.reals
        .iter()
        .find(|r| r.addr == rs(last))
        .map(|r| r.effective_weight() as u16)
}

#[test]
fn a_health_transition_is_recorded_and_reported_only_once_it_is_applied() {
    let mut p = plane(1);
    add_service(&mut p);
    add_checked(&mut p, 11, checked(OnFailure::Inhibit));
    add_real(&mut p, 12).expect("added");
    // The change that would enforce it is refused: nothing is recorded as down, and
    // nothing is reported; the figures of the check are taken all the same.
    p.dp.fail_steers = 1;
    let e = p
        .health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect_err("steer fails");
    assert!(matches!(e, ControlError::RolledBack(_)), "{e}");
    let h = |p: &WriteSide<Fake>| {
        let t = p.table(None).expect("table");
        t.services[0].reals[0].health.clone().expect("health")
    };
    assert!(h(&p).up, "not enforced, so not recorded");
    assert_eq!((h(&p).checks, h(&p).transitions), (1, 0));
    assert_eq!(compiled_weight(&p, 11), Some(2));
    // The next turn enforces it, and only then reports it.
    let t = p.enforce_pending().expect("applied");
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].addr, t[0].state), (rs(11), Health::Down));
    assert!(!h(&p).up);
    assert_eq!(h(&p).transitions, 1);
    assert_eq!(compiled_weight(&p, 11), Some(0));
    assert_eq!(p.enforce_pending(), Ok(vec![]), "reported once");
    // A transition undone before it was enforced is never reported.
    p.dp.fail_steers = 1;
    assert!(p
        .health_outcome(&outcome(11, true, Some(Health::Up)))
        .is_err());
    assert_eq!(
        p.health_outcome(&outcome(11, false, Some(Health::Down))),
        Ok(vec![])
    );
    assert_eq!(p.enforce_pending(), Ok(vec![]));
    assert!(!h(&p).up);
}

#[test]
fn a_failed_check_inhibits_or_removes_and_a_pass_brings_it_back() {
    let mut p = plane(1);
    add_service(&mut p);
    add_checked(&mut p, 11, checked(OnFailure::Inhibit));
    add_checked(&mut p, 12, checked(OnFailure::Remove));
    add_real(&mut p, 13).expect("added");
    let targets = p.check_targets();
    assert_eq!(targets.len(), 2);
    assert!(targets
        .iter()
        .all(|t| t.port == 80 && t.start == Health::Up));

    // A flow to each real server first (rr: 11, 12, 13).
    let mut flows = HashMap::new();
    for cport in 1000..1003 {
        flows.insert(cport, p.dp.send(cport, flags::SYN).expect("scheduled"));
    }
    // A failure that does not move the state changes nothing.
    assert_eq!(p.health_outcome(&outcome(11, false, None)), Ok(vec![]));
    assert_eq!(compiled_weight(&p, 11), Some(2));
    let t = p
        .health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied")
        .pop()
        .expect("a transition");
    assert_eq!((t.state, t.on_failure), (Health::Down, OnFailure::Inhibit));
    assert_eq!(compiled_weight(&p, 11), Some(0));
    p.health_outcome(&outcome(12, false, Some(Health::Down)))
        .expect("applied");
    assert_eq!(compiled_weight(&p, 12), None);
    // Established connections keep their real servers; new ones all go to .13.
    assert_flows_stay(&mut p, &flows);
    for cport in 2000..2010 {
        assert_eq!(p.dp.send(cport, flags::SYN), Some(mac_of(13)));
    }
    // The listing keeps the configured weight and says what the check found.
    let t = p.table(None).expect("table");
    let r11 = &t.services[0].reals[0];
    assert_eq!((r11.addr, r11.weight), (rs(11), 2));
    let h = r11.health.as_ref().expect("health");
    assert!(!h.up);
    assert_eq!(
        (h.checks, h.failures, h.transitions, h.latency_us),
        (2, 2, 1, 250)
    );
    assert!(t.services[0].reals[2].health.is_none());
    // A state the checker reports again is no new transition.
    assert_eq!(
        p.health_outcome(&outcome(11, false, Some(Health::Down))),
        Ok(vec![])
    );
    // A check that starts again (say after the checker was told again) starts down.
    assert!(p.check_targets().iter().all(|t| t.start == Health::Down));
    p.health_outcome(&outcome(11, true, Some(Health::Up)))
        .expect("applied");
    p.health_outcome(&outcome(12, true, Some(Health::Up)))
        .expect("applied");
    assert_eq!(compiled_weight(&p, 11), Some(2));
    assert_eq!(compiled_weight(&p, 12), Some(2));
    assert_flows_stay(&mut p, &flows);
}

#[test]
fn check_state_survives_unrelated_changes_and_restarts_when_the_check_changes() {
    let mut p = plane(1);
    add_service(&mut p);
    add_checked(&mut p, 11, checked(OnFailure::Inhibit));
    add_real(&mut p, 12).expect("added");
    p.health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied");
    // A weight edit elsewhere, and -e of .11 that keeps its check: still down.
    let edit = |p: &mut WriteSide<Fake>, last, check| {
        p.execute(&Request::EditReal {
            key: key(),
            addr: rs(last),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 3,
            check,
        })
        .expect("edited");
    };
    edit(&mut p, 12, CheckEdit::Keep);
    edit(&mut p, 11, CheckEdit::Keep);
    assert_eq!(compiled_weight(&p, 11), Some(0));
    // A changed check starts afresh (up), as keepalived starts a new checker.
    let mut other = checked(OnFailure::Inhibit);
    other.fall = 5;
    edit(&mut p, 11, CheckEdit::Set(Box::new(other)));
    assert_eq!(compiled_weight(&p, 11), Some(3));
    p.health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied");
    // No check: its results are ignored and it is up.
    edit(&mut p, 11, CheckEdit::Remove);
    assert_eq!(compiled_weight(&p, 11), Some(3));
    assert_eq!(
        p.health_outcome(&outcome(11, false, Some(Health::Down))),
        Ok(vec![])
    );
    assert!(p.check_targets().is_empty());
    // Deleting the real server forgets its check.
    edit(
        &mut p,
        11,
        CheckEdit::Set(Box::new(checked(OnFailure::Inhibit))),
    );
    p.execute(&Request::DeleteReal {
        key: key(),
        addr: rs(11),
    })
    .expect("deleted");
    assert!(p.check_targets().is_empty());
}

#[test]
fn the_sorry_server_stands_in_while_no_real_server_is_up() {
    let mut p = plane(1);
    p.macs.insert(rs(50), mac_of(50));
    p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: None,
        sorry: Some(rs(50)),
        flags: Default::default(),
    })
    .expect("service added");
    // No real server at all: the sorry server serves.
    assert_eq!(p.dp.send(1000, flags::SYN), Some(mac_of(50)));
    let t = p.table(None).expect("table");
    assert_eq!(t.services[0].sorry, Some(rs(50)));
    assert!(t.services[0].reals[0].sorry);
    add_checked(&mut p, 11, checked(OnFailure::Inhibit));
    assert_eq!(compiled_weight(&p, 50), None);
    assert_eq!(p.dp.send(1001, flags::SYN), Some(mac_of(11)));
    assert!(p.table(None).expect("table").services[0]
        .reals
        .iter()
        .all(|r| !r.sorry));
    p.health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied");
    assert_eq!(compiled_weight(&p, 50), Some(1));
    assert_eq!(p.dp.send(1002, flags::SYN), Some(mac_of(50)));
    // The connection opened on .11 before it failed goes on there.
    assert_eq!(p.dp.send(1001, flags::ACK), Some(mac_of(11)));
    // A sorry server must be reachable by direct routing too.
    let e = p.execute(&Request::EditService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: None,
        sorry: Some(Ipv4Addr::new(198, 19, 0, 5).into()),
        flags: Default::default(),
    });
    assert!(matches!(e, Err(ControlError::BadReal { .. })), "{e:?}");
    // -E without it drops it.
    p.execute(&Request::EditService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    })
    .expect("edited");
    assert_eq!(compiled_weight(&p, 50), None);
    assert_eq!(p.dp.send(1003, flags::SYN), None);
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_what_was_forwarded() {
    let mut p = plane(1);
    add_service(&mut p);
    add_checked(&mut p, 11, checked(OnFailure::Inhibit));
    add_real(&mut p, 12).expect("added");
    for cport in 1000..1010 {
        p.dp.send(cport, flags::SYN).expect("scheduled");
        p.dp.send(cport, flags::ACK).expect("forwarded");
    }
    p.health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied");
    let loops = xdpvs_dataplane::worker::LoopStats::default();
    loops.table_entries.set(10);
    let w = p.dp.workers[0].stats().clone();
    let text = crate::metrics::render(
        &p.published.get(),
        &p.dp,
        &[(&loops, &w)],
        None,
        &crate::watch::Watch::default(),
    )
    .expect("rendered");
    let lines: Vec<Result<String, std::io::Error>> =
        text.lines().map(|l| Ok(l.to_string())).collect();
    let scrape =
        prometheus_parse::Scrape::parse(lines.into_iter()).expect("parses as Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let svc = [("protocol", "TCP"), ("vip", "198.18.0.100"), ("port", "80")];
    assert_eq!(
        value(
            "xdpvs_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("ipvs", "1.2.1")]
        ),
        1.0
    );
    assert!(value("xdpvs_start_time_seconds", &[]) > 1.7e9, "{text}");
    assert_eq!(value("xdpvs_service_connections_total", &svc), 10.0);
    assert_eq!(value("xdpvs_service_packets_total", &svc), 20.0);
    let r11 = [("vip", "198.18.0.100"), ("real", "198.18.0.11")];
    let r12 = [("vip", "198.18.0.100"), ("real", "198.18.0.12")];
    assert_eq!(
        value("xdpvs_real_connections_total", &r11) + value("xdpvs_real_connections_total", &r12),
        10.0
    );
    assert_eq!(value("xdpvs_real_up", &r11), 0.0);
    assert_eq!(value("xdpvs_real_up", &r12), 1.0);
    assert_eq!(value("xdpvs_real_weight", &r11), 2.0);
    assert_eq!(
        value(
            "xdpvs_health_checks_total",
            &[("real", "198.18.0.11"), ("result", "failed")]
        ),
        1.0
    );
    assert_eq!(value("xdpvs_health_check_duration_seconds", &r11), 0.00025);
    assert_eq!(
        value("xdpvs_worker_received_packets_total", &[("worker", "0")]),
        20.0
    );
    assert_eq!(
        value("xdpvs_worker_forwarded_packets_total", &[("worker", "0")]),
        20.0
    );
    assert_eq!(
        value(
            "xdpvs_worker_dropped_packets_total",
            &[("worker", "0"), ("reason", "table_full")]
        ),
        0.0
    );
    assert_eq!(
        value("xdpvs_worker_connection_table_entries", &[("worker", "0")]),
        10.0
    );
    assert_eq!(
        value("xdpvs_worker_connection_table_capacity", &[("worker", "0")]),
        p.dp.capacity() as f64
    );
    assert!(
        text.contains("# TYPE xdpvs_service_bytes counter"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT xdpvs_health_check_duration_seconds seconds"),
        "{text}"
    );
}

#[test]
fn an_ipv6_service_is_announced_and_takes_ipv6_reals_on_the_directors_ipv6_subnet() {
    let mut p = WriteSide::new(
        DIRECTOR,
        Options::default(),
        limits(),
        vec![
            LocalNet {
                addr: Ipv4Addr::new(198, 18, 0, 1).into(),
                prefix_len: 24,
            },
            LocalNet {
                addr: "2001:2::1".parse().expect("valid"),
                prefix_len: 64,
            },
        ],
        Fake::new(1),
    )
    .expect("ok");
    let vip6: IpAddr = "2001:2::100".parse().expect("valid");
    let key6 = ServiceKey {
        proto: Protocol::Tcp,
        vip: vip6,
        port: 80,
    };
    p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key6,
        scheduler: SchedKind::Rr,
        persistence: Some(Persistence::with_prefix(Duration::from_secs(60), 64).expect("valid")),
        sorry: None,
        flags: Default::default(),
    })
    .expect("an IPv6 service");
    assert_eq!(p.dp.announced, vec![vip6], "an unsolicited advertisement");
    assert_eq!(p.dp.steered, vec![key6]);
    let rs6: IpAddr = "2001:2::11".parse().expect("valid");
    p.macs.insert(rs6, mac_of(11));
    p.execute(&Request::AddReal {
        key: key6,
        addr: rs6,
        port: 0,
        method: xdpvs_sched::Method::Route,
        weight: 1,
        check: None,
    })
    .expect("an IPv6 real server on the director's IPv6 subnet");
    for (addr, why) in [
        ("2001:3::11", "not on the director's subnet"),
        ("2001:2::1", "the director's own address"),
        (
            "198.18.0.11",
            "direct routing needs real servers of the service's address family",
        ),
    ] {
        let e = p
            .execute(&Request::AddReal {
                key: key6,
                addr: addr.parse().expect("valid"),
                port: 0,
                method: xdpvs_sched::Method::Route,
                weight: 1,
                check: None,
            })
            .expect_err("refused");
        assert!(e.to_string().contains(why), "{addr}: {e}");
    }
    let t = p.table(None).expect("listed");
    assert_eq!(t.services[0].reals.len(), 1);
    assert!(t.services[0].reals[0].resolved);
}

#[test]
fn check_probes_the_vip_and_each_real_server_and_resets_what_answered() {
    let mut p = plane(1);
    add_service(&mut p);
    add_real(&mut p, 11).expect("added");
    add_real(&mut p, 12).expect("added");
    p.dp.claims = vec![(VIP.into(), mac_of(12))];
    let r = p.check(check::FIRST_PORT, 9).expect("checked");
    let failed: Vec<_> = r
        .items
        .iter()
        .filter(|i| !i.ok)
        .map(|i| i.detail.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "real server 198.18.0.12 (02:00:00:00:01:0c) answers ARP for it: the clients it answers bypass the director",
            "a SYN sent to its MAC got no answer: it does not take traffic for 198.18.0.100 (the VIP is not on its lo, or a firewall drops it)",
        ]
    );
    // An ARP request and a SYN to each real server; again the ARP request and the SYN
    // nobody answered; then the reset of rs11's SYN-ACK.
    let to: Vec<Mac> =
        p.dp.probed
            .borrow()
            .iter()
            .map(|f| f[0..6].try_into().expect("6 bytes"))
            .collect();
    let bcast = [0xff; 6];
    assert_eq!(
        to,
        [bcast, mac_of(11), mac_of(12), bcast, mac_of(12), mac_of(11)]
    );
    let last = p.dp.probed.borrow()[5].clone();
    let rst = etherparse::SlicedPacket::from_ethernet(&last).expect("parses");
    let Some(etherparse::TransportSlice::Tcp(t)) = &rst.transport else {
        panic!("TCP");
    };
    assert!(t.rst());
    assert_eq!(last[0..6], mac_of(11));
    // Through `execute`, as the control socket asks.
    assert!(matches!(p.ask(&Request::Check), Ok(Reply::Check(_))));
}

#[test]
fn explain_answers_from_the_workers_tables_and_names_a_draining_real_server() {
    let mut p = plane(1);
    add_service(&mut p);
    add_real(&mut p, 11).expect("added");
    add_real(&mut p, 12).expect("added");
    let client: SocketAddr = (Ipv4Addr::new(198, 19, 0, 1), 4000).into();
    let ask = |p: &mut WriteSide<Fake>| match p.ask(&Request::Explain { key: key(), client }) {
        Ok(Reply::Explain(e)) => e,
        other => panic!("{other:?}"),
    };
    let e = ask(&mut p);
    assert_eq!((e.scheduler, e.workers.len()), (SchedKind::Rr, 1));
    let w = &e.workers[0];
    assert_eq!((w.real, w.reason), (Some(rs(11)), Reason::Scheduled));
    assert_eq!(
        w.reals.iter().map(|r| r.addr).collect::<Vec<_>>(),
        [rs(11), rs(12)]
    );
    // The flow goes there; then it is a connection.
    assert_eq!(p.dp.send(4000, flags::SYN), Some(mac_of(11)));
    let w = ask(&mut p).workers.remove(0);
    assert_eq!((w.real, w.reason), (Some(rs(11)), Reason::Connection));
    assert_eq!(w.state.as_deref(), Some("SYN_RECV"));
    assert_eq!(w.reals[0].inactive, 1);
    // rs11 removed: its connection drains there, and says so.
    p.execute(&Request::DeleteReal {
        key: key(),
        addr: rs(11),
    })
    .expect("removed");
    let w = ask(&mut p).workers.remove(0);
    assert_eq!(
        (w.real, w.draining, w.reason),
        (Some(rs(11)), true, Reason::Connection)
    );
    // Another client port: rs12, the only one left.
    let other = (Ipv4Addr::new(198, 19, 0, 1), 4001).into();
    let Ok(Reply::Explain(e)) = p.ask(&Request::Explain {
        key: key(),
        client: other,
    }) else {
        panic!("explained");
    };
    assert_eq!(e.workers[0].real, Some(rs(12)));
    // Errors: no such service, a client of the other family.
    let missing = ServiceKey { port: 81, ..key() };
    assert!(matches!(
        p.ask(&Request::Explain {
            key: missing,
            client
        }),
        Err(ControlError::NoSuchService(_))
    ));
    let v6: SocketAddr = "[2001:2::2]:4000".parse().expect("address");
    assert!(matches!(
        p.ask(&Request::Explain {
            key: key(),
            client: v6
        }),
        Err(ControlError::BadRequest(_))
    ));
}

#[test]
fn an_mh_service_keeps_a_failed_real_server_in_place_out_of_service() {
    for (sched, on_failure, kept) in [
        (SchedKind::Mh, OnFailure::Remove, true),
        (SchedKind::Mh, OnFailure::Inhibit, true),
        (SchedKind::Rr, OnFailure::Remove, false),
        (SchedKind::Rr, OnFailure::Inhibit, true),
    ] {
        let mut s = ServiceSpec::new(key(), sched);
        for last in [11, 12] {
            s.reals.push(RealSpec {
                addr: rs(last),
                port: 0,
                method: xdpvs_sched::Method::Route,
                weight: 2,
                mac: None,
            });
        }
        let mut wanted = OperatorConfig::default();
        wanted.services.push(s);
        wanted.checks.insert((key(), rs(12)), checked(on_failure));
        let mut health = HashMap::new();
        let mut down = HealthRecord::new();
        down.state = Health::Down;
        health.insert((key(), rs(12)), down);
        let Effective {
            services,
            out_of_service: out,
            ..
        } = effective(&wanted, &health, &HashMap::new());
        let reals: Vec<(IpAddr, u16)> = services[0]
            .reals
            .iter()
            .map(|r| (r.addr, r.weight))
            .collect();
        if kept {
            // In place with its weight (the table keeps its slots), out of service.
            assert_eq!(reals, [(rs(11), 2), (rs(12), 2)], "{sched} {on_failure:?}");
            assert_eq!(out, [(key(), rs(12))]);
        } else {
            assert_eq!(reals, [(rs(11), 2)], "{sched} {on_failure:?}");
            assert!(out.is_empty());
        }
    }
}

#[test]
fn a_vip_is_announced_while_a_real_server_is_in_service() {
    let mut p = plane(1);
    let vip: IpAddr = VIP.into();
    add_service(&mut p);
    let w = p.vips();
    assert!(
        w.configured.contains(&vip) && w.in_service.is_empty(),
        "{w:?}"
    );
    // A real server whose MAC is unknown takes no traffic: nothing to announce yet.
    p.execute(&Request::AddReal {
        key: key(),
        addr: rs(12),
        port: 0,
        method: xdpvs_sched::Method::Route,
        weight: 1,
        check: None,
    })
    .expect("added");
    assert!(p.vips().in_service.is_empty());
    add_real(&mut p, 11).expect("added");
    assert!(p.vips().in_service.contains(&vip));
    // Quiescent: no new connections, so no new clients should be attracted.
    p.execute(&Request::EditReal {
        key: key(),
        addr: rs(11),
        port: 0,
        method: xdpvs_sched::Method::Route,
        weight: 0,
        check: CheckEdit::Keep,
    })
    .expect("edited");
    assert!(p.vips().in_service.is_empty());
    p.execute(&Request::DeleteService { key: key() })
        .expect("deleted");
    assert_eq!(p.vips(), crate::announce::VipSet::default());
}

/// The metrics as a scraper that does not ask for OpenMetrics gets them, with every
/// family present (a conflict, a MAC change, an announced VIP, a check, traffic).
fn every_family_as_text_004() -> String {
    let mut p = plane(1);
    add_service(&mut p);
    add_checked(&mut p, 11, checked(OnFailure::Inhibit));
    add_real(&mut p, 12).expect("added");
    for cport in 1000..1010 {
        p.dp.send(cport, flags::SYN).expect("scheduled");
    }
    p.health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied");
    let loops = xdpvs_dataplane::worker::LoopStats::default();
    let w = p.dp.workers[0].stats().clone();
    let mut watch = crate::watch::Watch::default();
    let log = xdpvs_dataplane::stats::ConflictLog::default();
    log.record(VIP.into(), [2, 0, 0, 0, 0, 0x99]);
    watch.conflicts_from([&log]);
    watch.real_at(rs(11), [2, 0, 0, 0, 0, 1]);
    watch.real_at(rs(11), [2, 0, 0, 0, 0, 2]);
    watch.set_announced(&crate::announce::VipSet {
        configured: [VIP.into()].into(),
        in_service: [VIP.into()].into(),
    });
    let om = crate::metrics::render(&p.published.get(), &p.dp, &[(&loops, &w)], None, &watch)
        .expect("rendered");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(!om.contains(".."), "a doubled period:\n{om}");
    crate::metrics::to_text_004(&om)
}

#[test]
fn the_text_format_has_every_family_and_passes_promtool() {
    let text = every_family_as_text_004();
    // Every family has samples, and counters are named by their `_total` samples.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and type");
            assert!(
                lines.get(i + 1).is_some_and(|s| s.starts_with(name)),
                "{name} has no sample:\n{text}"
            );
            assert_eq!(kind == "counter", name.ends_with("_total"), "{l}");
        }
    }
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        xdpvs_testkit::cannot_run(
            "promtool check metrics",
            "promtool is not installed (Debian's prometheus package; `bash .ci/setup`)",
        );
        return;
    };
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("written");
    let out = promtool.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-A` of `vip`:80.
fn add_vip(p: &mut WriteSide<Fake>, vip: Ipv4Addr) -> Result<Reply, ControlError> {
    p.execute(&Request::AddService {
        quorum: Default::default(),
        key: ServiceKey {
            proto: Protocol::Tcp,
            vip: vip.into(),
            port: 80,
        },
        scheduler: SchedKind::Rr,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    })
}

/// The neighbour table as rtnetlink gives it: each address at its MAC.
fn lan(entries: &[(IpAddr, Mac)]) -> HashMap<IpAddr, Option<Mac>> {
    entries.iter().map(|&(a, m)| (a, Some(m))).collect()
}

#[test]
fn a_vip_is_never_an_address_a_host_holds() {
    let mut p = plane(1);
    let host: Mac = [2, 0, 0, 0, 0, 0x50];
    p.learn_lan(&lan(&[
        (Ipv4Addr::new(198, 18, 0, 50).into(), host),
        (rs(11), mac_of(11)),
    ]));
    // The director's own address.
    let e = add_vip(&mut p, Ipv4Addr::new(198, 18, 0, 1)).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "VIP 198.18.0.1: it is the director's own address: a VIP must be an address of its own, which no host holds"
    );
    // A real server's address, of another service (or of the same batch).
    add_service(&mut p);
    add_real(&mut p, 11).expect("added");
    let e = add_vip(&mut p, Ipv4Addr::new(198, 18, 0, 11)).expect_err("refused");
    assert!(
        e.to_string()
            .starts_with("VIP 198.18.0.11: it is a real server's address"),
        "{e}"
    );
    // A host the neighbour table knows.
    let e = add_vip(&mut p, Ipv4Addr::new(198, 18, 0, 50)).expect_err("refused");
    assert!(
        e.to_string().starts_with(
            "VIP 198.18.0.50: a host on the LAN holds it (the neighbour table has it at 02:00:00:00:00:50)"
        ),
        "{e}"
    );
    // Nothing was applied, nothing advertised but the first VIP.
    assert_eq!(p.table(None).expect("table").services.len(), 1);
    assert_eq!(p.dp.announced, vec![VIP]);
    // An address nobody holds is a VIP.
    add_vip(&mut p, Ipv4Addr::new(198, 18, 0, 101)).expect("added");
}

#[test]
fn a_real_server_answering_for_a_vip_is_a_conflict_not_its_owner() {
    let mut p = plane(1);
    // rs 11 answers ARP for the VIP (arp_ignore=0): the table has the VIP at its MAC.
    p.learn_lan(&lan(&[(VIP.into(), mac_of(11)), (rs(11), mac_of(11))]));
    p.execute(&Request::Batch(vec![
        Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        },
        Request::AddReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: None,
        },
    ]))
    .expect("a service whose real server needs fixing is still a service");
    // A VIP in force is not checked again (the table may learn it at a conflicting host).
    p.learn_lan(&lan(&[(VIP.into(), [2, 0, 0, 0, 0, 0x77])]));
    p.execute(&Request::EditService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Wrr,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    })
    .expect("edited");
}

#[test]
fn a_vip_given_up_is_handed_back_to_the_host_that_holds_it() {
    let mut p = plane(1);
    add_service(&mut p);
    let owner: Mac = [2, 0, 0, 0, 0, 0x77];
    p.learn_lan(&lan(&[(VIP.into(), owner)]));
    p.dp.probed.borrow_mut().clear();
    p.execute(&Request::DeleteService { key: key() })
        .expect("deleted");
    let sent = p.dp.probed.borrow().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let f = &sent[0];
    assert_eq!(&f[6..12], &DIRECTOR, "sent by the director");
    let arp = xdpvs_arp::parse(f).expect("ARP");
    assert_eq!((arp.sender_ip, arp.sender_mac), (VIP, owner));
    assert_eq!(arp.target_ip, VIP, "gratuitous");
    // Nobody known at a VIP given up: nothing to say.
    p.learn_lan(&lan(&[]));
    add_service(&mut p);
    p.dp.probed.borrow_mut().clear();
    p.execute(&Request::Clear).expect("cleared");
    assert!(p.dp.probed.borrow().is_empty());
}

#[test]
fn services_are_listed_in_ipvsadms_order_family_first() {
    let mut p = plane(1);
    let add = |p: &mut WriteSide<Fake>, proto: Protocol, vip: IpAddr, port: u16| {
        p.execute(&Request::AddService {
            quorum: Default::default(),
            key: ServiceKey { proto, vip, port },
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        })
        .expect("added");
    };
    let v6: IpAddr = "2001:2::100".parse().expect("address");
    add(&mut p, Protocol::Tcp, v6, 80);
    add(&mut p, Protocol::Udp, VIP.into(), 53);
    add(&mut p, Protocol::Tcp, VIP.into(), 80);
    let order: Vec<String> = p
        .table(None)
        .expect("table")
        .services
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    // As ipvs_cmp_services: address family, then protocol, address, port.
    assert_eq!(
        order,
        [
            "TCP 198.18.0.100:80",
            "UDP 198.18.0.100:53",
            "TCP [2001:2::100]:80"
        ]
    );
}

#[test]
fn a_real_server_its_check_removed_still_shows_its_connections() {
    let mut p = plane(1);
    add_service(&mut p);
    add_checked(&mut p, 11, checked(OnFailure::Remove));
    for cport in 1000..1004 {
        p.dp.send(cport, flags::SYN).expect("scheduled");
        p.dp.send(cport, flags::ACK).expect("forwarded");
    }
    p.health_outcome(&outcome(11, false, Some(Health::Down)))
        .expect("applied");
    let t = p.table(None).expect("table");
    let r = &t.services[0].reals[0];
    assert_eq!(r.addr, rs(11));
    assert_eq!(
        (r.active, r.inactive),
        (4, 0),
        "its connections, as -Lnc lists them"
    );
    assert_eq!(r.health.as_ref().map(|h| h.up), Some(false));
}

/// keepalived's VRRP: a VIP that follows it is steered (and advertised) only while this
/// host holds the address; on the backup it is configured but silent, and a peer holding
/// it (its neighbour entry here, the address on this host's interface) is no conflict.
#[test]
fn a_vip_that_follows_vrrp_is_served_only_while_held_here() {
    let mut p = plane(1);
    // The backup's neighbour table has the VIP at the master: no conflict.
    p.lan.insert(VIP.into(), [2, 0, 0, 0, 0, 9]);
    p.set_following(BTreeSet::new(), BTreeSet::new());
    p.execute(&Request::Batch(vec![
        Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        },
        Request::Follow {
            vips: vec![VIP.into()],
        },
    ]))
    .expect("a VIP that follows VRRP may be held elsewhere");
    assert!(
        p.dp.steered.is_empty(),
        "silent on the backup: {:?}",
        p.dp.steered
    );
    assert!(p.dp.announced.is_empty(), "{:?}", p.dp.announced);
    assert_eq!(p.vrrp(), vec![(IpAddr::from(VIP), false)]);
    // keepalived makes this host the master: served, advertised once.
    let held: BTreeSet<IpAddr> = [VIP.into(), Ipv4Addr::new(198, 18, 0, 1).into()].into();
    assert_eq!(p.set_held(held.clone()), Ok(vec![(VIP.into(), true)]));
    assert_eq!(p.dp.steered, vec![key()]);
    assert_eq!(p.dp.announced, vec![IpAddr::from(VIP)]);
    assert_eq!(p.set_held(held), Ok(vec![]), "nothing new");
    assert_eq!(p.dp.announced.len(), 1);
    assert_eq!(p.published().get().vrrp, vec![(IpAddr::from(VIP), true)]);
    // Back to backup: silent again; a clear forgets what follows VRRP.
    assert_eq!(
        p.set_held([Ipv4Addr::new(198, 18, 0, 1).into()].into()),
        Ok(vec![(VIP.into(), false)])
    );
    assert!(p.dp.steered.is_empty());
    p.execute(&Request::Batch(vec![Request::Clear]))
        .expect("cleared");
    assert_eq!(p.vrrp(), vec![]);
    // A VIP that does not follow VRRP and that a host holds is still refused.
    let e = p.execute(&Request::AddService {
        quorum: Default::default(),
        key: key(),
        scheduler: SchedKind::Rr,
        persistence: None,
        sorry: None,
        flags: Default::default(),
    });
    assert!(matches!(e, Err(ControlError::BadVip { .. })), "{e:?}");
}
