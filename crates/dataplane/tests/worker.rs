//! The worker loop over the in-memory device: the same loop that runs over AF_XDP.

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::{unbounded, Receiver, Sender};
use xdpvs_dataplane::device::MemDevice;
use xdpvs_dataplane::worker::{Control, ControlFrame, IdlePolicy, Install, Worker, BATCH};
use xdpvs_dataplane::{Config, Limits, Options, Services, Tables};
use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Mac, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints};

const DIRECTOR: Mac = [2, 0, 0, 0, 0, 0xd1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn rs_mac(i: u8) -> Mac {
    [2, 0, 0, 0, 1, i]
}

fn config(reals: &[u8], port: u16) -> Config {
    let mut s = ServiceSpec::new(
        ServiceKey {
            proto: Protocol::Tcp,
            vip: VIP.into(),
            port,
        },
        SchedKind::Rr,
    );
    s.reals = reals
        .iter()
        .map(|&i| RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, 10 + i).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            mac: Some(rs_mac(i)),
        })
        .collect();
    Config::new(DIRECTOR, vec![s], Options::default())
}

fn limits() -> Limits {
    Limits {
        max_services: 8,
        max_dests: 32,
        conn_capacity: 1024,
    }
}

struct Rig {
    w: Worker<MemDevice>,
    ctrl: Sender<Control>,
    retired: Receiver<Box<Services>>,
}

fn rig(cfg: &Config) -> Rig {
    let s = Services::build(cfg, &limits(), None).expect("valid");
    let t = Tables::new(s, &limits(), Timeouts::default(), 1).expect("valid");
    let (ctrl, crx) = unbounded();
    let (rtx, retired) = unbounded();
    Rig {
        w: Worker::new(MemDevice::new(256), t, crx, rtx),
        ctrl,
        retired,
    }
}

fn syn(client: u8, port: u16) -> Vec<u8> {
    tcp(client, port, SYN)
}

fn tcp(client: u8, port: u16, fl: u8) -> Vec<u8> {
    frames::tcp(
        &Endpoints {
            src_mac: [2, 0, 0, 0, 0, 0xc1],
            dst_mac: DIRECTOR,
            src_ip: Ipv4Addr::new(198, 19, 0, client),
            dst_ip: VIP,
            sport: 40000,
            dport: port,
        },
        fl,
        b"",
    )
}

#[test]
fn forwards_a_batch_and_recycles_every_buffer() {
    let mut r = rig(&config(&[1, 2, 3], 80));
    for c in 1..=6 {
        assert!(r.w.device_mut().inject(&syn(c, 80)));
    }
    // Not ours: released, never transmitted.
    r.w.device_mut().inject(&tcp(7, 443, SYN));
    assert_eq!(r.w.poll(Time::from_secs(1)), 7);
    let dev = r.w.device();
    let macs: Vec<u8> = dev.transmitted.iter().map(|f| f[5]).collect();
    assert_eq!(macs, [1, 2, 3, 1, 2, 3]);
    assert!(dev.transmitted.iter().all(|f| f[6..12] == DIRECTOR));
    assert_eq!(dev.released, 1);
    assert_eq!(dev.outstanding(), 0, "every buffer is back");
    // Steered to the worker but not the engine's: counted apart from `pass` (the kernel's).
    let s = r.w.tables().stats();
    assert_eq!((s.unhandled.get(), s.pass.get()), (1, 0));
}

#[test]
fn a_config_change_between_batches_keeps_flows() {
    let cfg = config(&[1, 2], 80);
    let mut r = rig(&cfg);
    r.w.device_mut().inject(&syn(1, 80));
    r.w.poll(Time::from_secs(1));
    // Add a real server and a second service, live.
    let mut cfg2 = config(&[1, 2, 3], 80);
    cfg2.services.push(config(&[3], 8080).services.remove(0));
    let s2 = Services::build(&cfg2, &limits(), Some(r.w.tables().services())).expect("valid");
    let (done, installed) = crossbeam_channel::bounded(1);
    r.ctrl
        .send(Control::Install(Install {
            services: Box::new(s2),
            done,
        }))
        .expect("worker listens");
    assert!(
        installed.try_recv().is_err(),
        "not before the worker takes it"
    );
    assert!(r.w.control());
    assert_eq!(
        installed.try_recv(),
        Ok(()),
        "the worker says it runs with it"
    );
    assert!(
        r.retired.try_recv().is_ok(),
        "the old snapshot comes back to be freed"
    );
    r.w.device_mut().inject(&tcp(1, 80, ACK)); // existing flow
    r.w.device_mut().inject(&syn(2, 8080)); // new service
    r.w.poll(Time::from_secs(2));
    let macs: Vec<u8> = r.w.device().transmitted.iter().map(|f| f[5]).collect();
    assert_eq!(macs, [1, 1, 3]);
    assert_eq!(r.w.loop_stats().installs.get(), 1);
}

#[test]
fn a_full_tx_ring_takes_what_fits_and_the_rest_waits_for_the_next_pass() {
    let mut r = rig(&config(&[1], 80));
    r.w.device_mut().tx_room = Some(2);
    for c in 1..=5 {
        r.w.device_mut().inject(&syn(c, 80));
    }
    assert_eq!(r.w.poll(Time::from_secs(1)), 5);
    assert_eq!(r.w.device().transmitted.len(), 2, "what fits is sent");
    assert_eq!(r.w.loop_stats().tx_full.get(), 3, "the rest waits, counted");
    assert_eq!(
        r.w.device().outstanding(),
        3,
        "held by the worker, not thrown away"
    );
    // The waiting frames go first at the next pass, and count against its batch: with
    // BATCH - 3 frames taken from the RX ring, the worker never holds more than a batch.
    r.w.device_mut().tx_room = None;
    for c in 6..=(5 + BATCH as u8) {
        r.w.device_mut().inject(&syn(c, 80));
    }
    assert_eq!(r.w.poll(Time::from_secs(2)), BATCH);
    let sent = &r.w.device().transmitted;
    assert_eq!(
        sent.len(),
        2 + BATCH,
        "the waiting three, then a batch less three"
    );
    // Each client's address ends in its number.
    let order: Vec<u8> = sent.iter().map(|f| f[29]).collect();
    assert_eq!(&order[..6], &[1, 2, 3, 4, 5, 6], "in arrival order");
    assert_eq!(r.w.loop_stats().tx_full.get(), 3);
    // The last three frames come at the pass after.
    assert_eq!(r.w.poll(Time::from_secs(3)), 3);
    assert_eq!(r.w.device().transmitted.len(), 5 + BATCH);
    assert_eq!(r.w.device().outstanding(), 0, "every buffer is back");
}

#[test]
fn control_can_send_frames_and_arp_is_answered() {
    let mut r = rig(&config(&[1], 80));
    let garp = xdpvs_arp::gratuitous(VIP, DIRECTOR);
    r.ctrl
        .send(Control::Send(ControlFrame::new(&garp).expect("fits")))
        .expect("worker listens");
    r.w.control();
    assert_eq!(r.w.device().transmitted, vec![garp.to_vec()]);
    let who_has = xdpvs_arp::request([2, 0, 0, 0, 0, 0xc1], Ipv4Addr::new(198, 18, 0, 2), VIP);
    r.w.device_mut().inject(&who_has);
    r.w.poll(Time::from_secs(1));
    let reply = xdpvs_arp::parse(&r.w.device().transmitted[1]).expect("ARP");
    assert!(reply.is_reply());
    assert_eq!((reply.sender_ip, reply.sender_mac), (VIP, DIRECTOR));
}

#[test]
fn the_sweep_expires_idle_connections_over_time() {
    let mut r = rig(&config(&[1], 80));
    for c in 1..=20 {
        r.w.device_mut().inject(&syn(c, 80));
    }
    r.w.poll(Time::from_secs(1));
    assert_eq!(r.w.tables().conns().len(), 20);
    // SYN_RECV lives 60 s. Idle polls over the following seconds sweep the table.
    for s in 62..66 {
        r.w.poll(Time::from_secs(s));
    }
    assert_eq!(r.w.tables().conns().len(), 0);
    assert_eq!(r.w.tables().stats().expired.get(), 20);
}

#[test]
fn a_slow_sweep_rate_spreads_the_sweep_over_more_time() {
    let mut r = rig(&config(&[1], 80));
    // 1024 entries → 2048 slots; at 256 slots a second a full sweep takes 8 s.
    r.w.set_sweep_rate(256);
    for c in 1..=20 {
        r.w.device_mut().inject(&syn(c, 80));
    }
    // A poll a second, as an idle worker's loop does many times over.
    for s in 1..62 {
        r.w.poll(Time::from_secs(s));
    }
    assert_eq!(r.w.tables().conns().len(), 20);
    for s in 62..66 {
        r.w.poll(Time::from_secs(s));
    }
    // Four seconds after expiry only about half the slots were examined.
    let left = r.w.tables().conns().len();
    assert!(
        left > 0,
        "a sweep of 2048 slots at 256/s is not over in 4 s"
    );
    for s in 66..72 {
        r.w.poll(Time::from_secs(s));
    }
    assert_eq!(r.w.tables().conns().len(), 0);
}

#[test]
fn the_poll_policy_follows_the_control_plane() {
    let mut r = rig(&config(&[1], 80));
    let stop = AtomicBool::new(true);
    r.w.run(|| Time::ZERO, &stop, IdlePolicy::Adaptive);
    assert_eq!(r.w.idle_policy(), IdlePolicy::Adaptive);
    r.ctrl
        .send(Control::Idle(IdlePolicy::Yield))
        .expect("worker");
    assert!(r.w.control());
    assert_eq!(r.w.idle_policy(), IdlePolicy::Yield);
}

/// A worker with no traffic that yields its core sleeps in poll(2) after a run of empty
/// polls (so an idle worker leaves its core to the kernel thread beside it); a busy one
/// never sleeps.
#[test]
fn an_idle_yielding_worker_sleeps_and_a_busy_one_never_does() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    for (policy, sleeps) in [(IdlePolicy::Yield, true), (IdlePolicy::Busy, false)] {
        let Rig { mut w, ctrl, .. } = rig(&config(&[1], 80));
        let stats = w.loop_stats().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let worker = std::thread::spawn(move || w.run(|| Time::ZERO, &flag, policy));
        // A liveness bound, not a timing: a thousand empty polls take far less.
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut polled = Duration::ZERO;
        while stats.idle_waits.get() == 0 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
            polled += Duration::from_millis(5);
            if !sleeps && polled >= Duration::from_millis(200) {
                break;
            }
        }
        stop.store(true, Relaxed);
        worker.join().expect("the worker ran");
        drop(ctrl);
        assert_eq!(stats.idle_waits.get() > 0, sleeps, "{policy:?}");
    }
}

#[test]
fn run_stops_on_flag_or_when_control_goes_away() {
    let mut r = rig(&config(&[1], 80));
    let stop = AtomicBool::new(true);
    r.w.run(|| Time::ZERO, &stop, IdlePolicy::Busy); // returns at once
    drop(r.ctrl);
    let go = AtomicBool::new(false);
    r.w.run(|| Time::ZERO, &go, IdlePolicy::Adaptive); // returns: control plane gone
}

#[test]
fn the_connection_table_is_listed_in_bounded_pieces_between_batches() {
    use xdpvs_dataplane::worker::{ListRequest, LIST_SLOTS};
    let mut r = rig(&config(&[1, 2], 80));
    for c in 1..=40 {
        r.w.device_mut().inject(&syn(c, 80));
    }
    while r.w.poll(Time::from_secs(1)) > 0 {}
    let (tx, rx) = unbounded();
    let mut rows = Vec::new();
    let mut cursor = Some(0);
    while let Some(c) = cursor {
        r.ctrl
            .send(Control::List(ListRequest {
                cursor: c,
                buf: Vec::with_capacity(16),
                reply: tx.clone(),
            }))
            .expect("worker listens");
        assert!(r.w.control());
        let piece = rx.try_recv().expect("answered within one control pass");
        assert!(piece.rows.len() <= 16);
        assert!(piece.next.is_none_or(|n| n > c && n - c <= LIST_SLOTS));
        rows.extend(piece.rows);
        cursor = piece.next;
    }
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|l| l.key.vport == 80));
}

/// A tunnel real server's frames leave longer than they came: the device sends the
/// encapsulated length, from the same buffer, and every buffer comes back.
#[test]
fn a_tunnelled_frame_leaves_with_its_outer_headers() {
    let mut cfg = config(&[1, 2], 80);
    cfg.services[0].reals[1].method = xdpvs_sched::Method::Tunnel(xdpvs_sched::Tunnel::IPIP);
    cfg.own = vec![Ipv4Addr::new(198, 18, 0, 1).into()];
    let mut r = rig(&cfg);
    let (a, b) = (syn(1, 80), syn(2, 80));
    r.w.device_mut().inject(&a);
    r.w.device_mut().inject(&b);
    assert_eq!(r.w.poll(Time::from_secs(1)), 2);
    let dev = r.w.device();
    assert_eq!(dev.transmitted.len(), 2);
    assert_eq!(dev.transmitted[0], {
        let mut w = a.clone();
        w[0..6].copy_from_slice(&rs_mac(1));
        w[6..12].copy_from_slice(&DIRECTOR);
        w
    });
    let t = &dev.transmitted[1];
    assert_eq!(t[0..6], rs_mac(2));
    assert_eq!(
        t.len(),
        14 + 20 + 40,
        "outer header and the 40-byte SYN, no padding"
    );
    assert_eq!(t[23], 4, "IPIP");
    assert_eq!(&t[34..], &b[14..54]);
    assert_eq!(dev.outstanding(), 0);
}

/// The two-armed director's worker: one loop over both sides. A client's packet leaves
/// by the real servers' side, from its MAC; the real server's reply by the clients'
/// side, from theirs; every buffer of both sides comes back.
#[test]
fn a_two_armed_worker_sends_requests_to_the_servers_side_and_replies_to_the_clients() {
    use xdpvs_dataplane::arms::Arms;
    const SERVERS_SIDE: Mac = [2, 0, 0, 0, 0, 0xd2];
    let mut cfg = config(&[1], 80);
    cfg.servers_mac = Some(SERVERS_SIDE);
    let rs = Ipv4Addr::new(198, 18, 1, 11);
    cfg.services[0].reals[0].addr = rs.into();
    cfg.services[0].reals[0].port = 8080;
    cfg.services[0].reals[0].method = xdpvs_sched::Method::Masq;
    let s = Services::build(&cfg, &limits(), None).expect("valid");
    let t = Tables::new(s, &limits(), Timeouts::default(), 1).expect("valid");
    let (_ctrl, crx) = unbounded();
    let (rtx, _retired) = unbounded();
    let arms = Arms::new(MemDevice::new(16), MemDevice::new(16), SERVERS_SIDE);
    let mut w = Worker::new(arms, t, crx, rtx);
    w.device_mut().clients_mut().inject(&syn(7, 80));
    w.poll(Time::from_secs(1));
    let to_rs = w.device().servers().transmitted.clone();
    assert_eq!(to_rs.len(), 1, "the SYN leaves by the servers' side");
    assert_eq!(
        (&to_rs[0][0..6], &to_rs[0][6..12]),
        (&rs_mac(1)[..], &SERVERS_SIDE[..])
    );
    assert_eq!(
        &to_rs[0][30..34],
        &rs.octets(),
        "to the real server's address"
    );
    let reply = frames::tcp(
        &Endpoints {
            src_mac: rs_mac(1),
            dst_mac: SERVERS_SIDE,
            src_ip: rs,
            dst_ip: Ipv4Addr::new(198, 19, 0, 7),
            sport: 8080,
            dport: 40000,
        },
        SYN | ACK,
        &[],
    );
    w.device_mut().servers_mut().inject(&reply);
    w.poll(Time::from_secs(2));
    let to_client = &w.device().clients().transmitted;
    assert_eq!(to_client.len(), 1, "the reply leaves by the clients' side");
    assert_eq!(
        (&to_client[0][0..6], &to_client[0][6..12]),
        (&[2, 0, 0, 0, 0, 0xc1][..], &DIRECTOR[..])
    );
    assert_eq!(&to_client[0][26..30], &VIP.octets(), "from the VIP");
    assert_eq!(w.device().crossed(), 2);
    assert_eq!(w.device().clients().outstanding(), 0);
    assert_eq!(w.device().servers().outstanding(), 0);
}

/// Two workers on two queues: a NAT connection's packets that arrive at the worker that
/// does not hold it are handed to the one that does, which sends them; every buffer comes
/// back.
#[test]
fn workers_hand_nat_packets_to_the_worker_that_holds_their_connection() {
    use std::sync::Arc;
    use xdpvs_dataplane::handoff::Handoff;
    let mut cfg = config(&[1], 80);
    cfg.services[0].reals[0].port = 8080;
    cfg.services[0].reals[0].method = xdpvs_sched::Method::Masq;
    let handoff = Arc::new(Handoff::new(2, 8));
    let mut rigs: Vec<Rig> = (0..2).map(|_| rig(&cfg)).collect();
    for (i, r) in rigs.iter_mut().enumerate() {
        r.w.set_handoff(i, Arc::clone(&handoff));
    }
    // Each client's SYN offered to worker 0, then again to worker 1: both copies leave
    // by the worker its address and port choose.
    for c in 1..=8 {
        let before: Vec<usize> = rigs
            .iter()
            .map(|r| r.w.device().transmitted.len())
            .collect();
        for at in 0..2 {
            rigs[at].w.device_mut().inject(&syn(c, 80));
            rigs[at].w.poll(Time::from_secs(1));
            rigs[1 - at].w.poll(Time::from_secs(1));
        }
        let after: Vec<usize> = rigs
            .iter()
            .map(|r| r.w.device().transmitted.len())
            .collect();
        let by: Vec<usize> = (0..2).map(|i| after[i] - before[i]).collect();
        assert!(by == [2, 0] || by == [0, 2], "client {c}: {by:?}");
    }
    let sent: Vec<usize> = rigs
        .iter()
        .map(|r| r.w.device().transmitted.len())
        .collect();
    assert_eq!(sent[0] + sent[1], 16, "{sent:?}");
    let handed: u64 = rigs
        .iter()
        .map(|r| r.w.tables().stats().handed_off.get())
        .sum();
    assert_eq!(handed, 8, "one of each client's two SYNs was handed over");
    for r in &rigs {
        assert_eq!(r.w.tables().stats().handoff_lost.get(), 0);
        assert_eq!(r.w.device().outstanding(), 0);
    }
}

/// `run --offload`: the XDP program's touches are applied a bounded number a pass (in
/// chunks whose slots are prefetched first); a touched connection lives on from the
/// touch's time, and a touch of a flow the worker does not hold sends it back to the
/// workers.
#[test]
fn offload_touches_keep_connections_alive_and_send_unheld_flows_back() {
    use xdpvs_dataplane::offload::{OffloadRec, Touch};
    use xdpvs_dataplane::worker::OffloadLink;
    use xdpvs_sched::conn::ConnKey;

    let mut r = rig(&config(&[1], 80));
    let (out, records) = crossbeam_channel::bounded(1024);
    let (touch, touches) = unbounded();
    r.w.set_offload(OffloadLink {
        queue: 0,
        out,
        touches,
    });
    for c in 1..=200 {
        assert!(r.w.device_mut().inject(&syn(c, 80)));
    }
    while r.w.poll(Time::from_secs(1)) > 0 {}
    assert_eq!(r.w.tables().conns().len(), 200);
    let key = |c: u8| ConnKey {
        proto: Protocol::Tcp,
        client: Ipv4Addr::new(198, 19, 0, c),
        cport: 40000,
        vip: VIP,
        vport: 80,
    };
    let at = Time::from_secs(50);
    // 150 held, 55 not, and 60 of the held again: 265, more than a pass takes.
    for c in (1..=150).chain(201..=255).chain(1..=60) {
        touch
            .send(Touch { key: key(c), at })
            .expect("worker listens");
    }
    r.w.poll(at);
    assert_eq!(touch.len(), 265 - 256, "a pass applies 256 touches at most");
    r.w.poll(at);
    assert!(touch.is_empty());
    let back: Vec<u8> = records
        .try_iter()
        .map(|(q, rec)| match rec {
            OffloadRec::Remove(k) if q == 0 => k.client.octets()[3],
            other => panic!("only the unheld flows go back, not {other:?}"),
        })
        .collect();
    assert_eq!(back, (201..=255).collect::<Vec<u8>>());
    // SYN_RECV lives 60 s: the untouched connections (seen at 1 s) expire by 66 s, the
    // touched ones (seen at 50 s) do not.
    for s in 62..66 {
        r.w.poll(Time::from_secs(s));
    }
    assert_eq!(r.w.tables().conns().len(), 150);
    let mut left = Vec::with_capacity(200);
    let mut cursor = Some(0);
    while let Some(c) = cursor {
        cursor =
            r.w.tables()
                .list(c, 1 << 20, Time::from_secs(66), &mut left);
    }
    let mut clients: Vec<u8> = left
        .iter()
        .map(|l| match l.key.client {
            std::net::IpAddr::V4(a) => a.octets()[3],
            other => panic!("an IPv4 connection, not {other}"),
        })
        .collect();
    clients.sort_unstable();
    assert_eq!(clients, (1..=150).collect::<Vec<u8>>());
}
