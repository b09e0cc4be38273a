//! Connection synchronisation in the engine (IPVS's sync protocol): a master's workers
//! record each connection once it is established (a persistent one's template first),
//! as the protocol carries it; a backup installs what it receives, and the client's next
//! packets go to the same real server there whatever its scheduler would pick.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use xdpvs_dataplane::{process, Config, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::sync::{self, flags, SyncConn};
use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::tcp::{State, Timeouts};
use xdpvs_sched::{
    Mac, Method, Persistence, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time,
};
use xdpvs_testkit::frames::{self, Endpoints};

const DIRECTOR: Mac = [0x02, 0, 0, 0, 0, 0xd1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 2);

fn rs_mac(n: u8) -> Mac {
    [0x02, 0, 0, 0, 0x01, 10 + n]
}

fn rs(n: u8) -> IpAddr {
    Ipv4Addr::new(198, 18, 0, 10 + n).into()
}

fn tables(persistent: bool) -> Tables {
    let mut s = ServiceSpec::new(
        ServiceKey {
            proto: Protocol::Tcp,
            vip: VIP.into(),
            port: 80,
        },
        SchedKind::Rr,
    );
    if persistent {
        s.persistence = Some(
            Persistence::new(Duration::from_secs(360), Ipv4Addr::new(255, 255, 255, 0))
                .expect("valid"),
        );
    }
    s.reals = (1..=3)
        .map(|n| RealSpec {
            addr: rs(n),
            port: 80,
            method: Method::Route,
            weight: 1,
            mac: Some(rs_mac(n)),
        })
        .collect();
    let limits = Limits {
        max_services: 8,
        max_dests: 32,
        conn_capacity: 4096,
    };
    let cfg = Config::new(DIRECTOR, vec![s], Options::default());
    let services = Services::build(&cfg, &limits, None).expect("valid");
    Tables::new(services, &limits, Timeouts::default(), 7).expect("tables")
}

fn segment(t: &mut Tables, cport: u16, tcp_flags: u8, now: u64) -> Option<Mac> {
    let e = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 2],
        dst_mac: DIRECTOR,
        src_ip: CLIENT,
        dst_ip: VIP,
        sport: cport,
        dport: 80,
    };
    let mut f = frames::tcp(&e, tcp_flags, b"");
    match process(&mut f, t, Time::from_nanos(now)) {
        Verdict::Tx => Some(f[0..6].try_into().expect("6 bytes")),
        _ => None,
    }
}

fn drained(t: &mut Tables) -> Vec<SyncConn> {
    let mut out = Vec::new();
    t.drain_sync(|r| {
        out.push(*r);
        true
    });
    out
}

#[test]
fn an_established_connection_is_recorded_once_and_installed_on_the_backup() {
    let mut master = tables(false);
    master.enable_sync(64);
    let to = segment(&mut master, 40000, SYN, 1_000).expect("forwarded");
    assert!(
        drained(&mut master).is_empty(),
        "SYN_RECV is not synchronised"
    );
    segment(&mut master, 40000, ACK, 2_000).expect("forwarded");
    let recs = drained(&mut master);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = recs[0];
    assert_eq!(r.protocol, 6);
    assert_eq!(r.flags, flags::DROUTE);
    assert_eq!(r.state, State::Established as u16);
    assert_eq!(r.client, (IpAddr::from(CLIENT), 40000));
    assert_eq!(r.vip, (IpAddr::from(VIP), 80));
    assert_eq!(r.timeout, 900);
    let real = (1..=3).find(|&n| rs_mac(n) == to).expect("one of them");
    assert_eq!(r.dest, (rs(real), 80));
    segment(&mut master, 40000, ACK, 3_000).expect("forwarded");
    assert!(drained(&mut master).is_empty(), "no change, no record");
    assert_eq!(master.stats().sync_sent.get(), 1);
    // In the next refresh window (about a second), once again.
    segment(&mut master, 40000, ACK, (1 << 30) + 10).expect("forwarded");
    assert_eq!(drained(&mut master), vec![r]);
    segment(&mut master, 40000, ACK, (1 << 30) + 20).expect("forwarded");
    assert!(drained(&mut master).is_empty());

    // Through the wire format, to a backup whose rr would start elsewhere.
    let mut w = sync::Writer::new(0, sync::DEFAULT_MAXLEN);
    assert!(w.push(&r));
    let (_, got) = sync::decode(w.bytes()).expect("valid");
    let mut backup = tables(false);
    for c in &got {
        assert!(backup.install_synced(c, Time::from_nanos(5_000)));
    }
    assert_eq!(backup.stats().sync_installed.get(), 1);
    for k in 0..5 {
        assert_eq!(
            segment(&mut backup, 40000, ACK, 6_000 + k),
            Some(to),
            "the synchronised connection keeps its real server"
        );
    }
    // A connection to a real server this director does not have is refused, counted.
    let mut stranger = r;
    stranger.dest = (Ipv4Addr::new(198, 18, 0, 99).into(), 80);
    assert!(!backup.install_synced(&stranger, Time::from_nanos(7_000)));
    assert_eq!(backup.stats().sync_refused.get(), 1);
}

#[test]
fn a_persistent_connections_template_comes_first_and_sends_the_client_back() {
    let mut master = tables(true);
    master.enable_sync(64);
    let to = segment(&mut master, 40000, SYN, 1_000).expect("forwarded");
    segment(&mut master, 40000, ACK, 2_000).expect("forwarded");
    let recs = drained(&mut master);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs[0].is_template() && !recs[1].is_template());
    assert_eq!(recs[0].client, (Ipv4Addr::new(198, 19, 7, 0).into(), 0));
    assert_eq!(recs[0].timeout, 360);
    let mut backup = tables(true);
    for c in &recs {
        assert!(backup.install_synced(c, Time::from_nanos(5_000)));
    }
    // A new connection of the same client network goes where the template says.
    assert_eq!(segment(&mut backup, 40001, SYN, 6_000), Some(to));
}

#[test]
fn records_past_the_buffer_are_counted_lost() {
    let mut master = tables(false);
    master.enable_sync(2);
    for p in 0..3 {
        segment(&mut master, 41000 + p, SYN, 1_000);
        segment(&mut master, 41000 + p, ACK, 2_000);
    }
    assert_eq!(drained(&mut master).len(), 2);
    assert_eq!(master.stats().sync_lost.get(), 1);
}

#[test]
fn on_several_workers_a_synchronised_connection_lives_on_its_clients_worker() {
    let mut master = tables(false);
    master.enable_sync(64);
    let to = segment(&mut master, 40000, SYN, 1_000).expect("forwarded");
    segment(&mut master, 40000, ACK, 2_000).expect("forwarded");
    let r = drained(&mut master)[0];
    // A backup of two workers: the connection goes to its client's worker only.
    let owner = usize::from(xdpvs_dataplane::engine::owner(r.client.0, r.client.1, 2));
    let mut workers = [tables(false), tables(false)];
    for (i, w) in workers.iter_mut().enumerate() {
        w.set_shard(i, 2);
        w.accept_synced();
    }
    assert!(workers[owner].install_synced(&r, Time::from_nanos(5_000)));
    // A segment landing on the other worker is handed over, not scheduled afresh...
    let other = 1 - owner;
    let e = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 2],
        dst_mac: DIRECTOR,
        src_ip: CLIENT,
        dst_ip: VIP,
        sport: 40000,
        dport: 80,
    };
    let mut f = frames::tcp(&e, ACK, b"");
    assert_eq!(
        process(&mut f, &mut workers[other], Time::from_nanos(6_000)),
        Verdict::Handoff(owner as u16)
    );
    assert_eq!(workers[other].conns().len(), 0, "no second entry");
    // ...and goes on to its real server there.
    assert_eq!(segment(&mut workers[owner], 40000, ACK, 6_000), Some(to));
    // A SYN is the other worker's own new connection.
    assert!(segment(&mut workers[other], 40001, SYN, 7_000).is_some());
}

/// The backup's entry of `r`'s connection: its state and time left at `now`, in whole
/// seconds (what the sync protocol carries; the table keeps time to a tick of
/// [`xdpvs_sched::conn::TICK_NANOS`], and the time left is checked to be within two).
fn backup_entry(t: &Tables, r: &SyncConn, now: u64) -> (State, Duration) {
    let key = xdpvs_sched::conn::ConnKey {
        proto: Protocol::Tcp,
        client: CLIENT,
        cport: r.client.1,
        vip: VIP,
        vport: 80,
    };
    let now = Time::from_nanos(now);
    let i = t.conns().peek(&key, now).expect("installed");
    let e = t.conns().entry(i);
    let left = t.conns().expires_in(e, now);
    let secs = Duration::from_secs(left.as_secs_f64().round() as u64);
    assert!(
        left.abs_diff(secs) <= Duration::from_nanos(2 * xdpvs_sched::conn::TICK_NANOS),
        "{left:?} left"
    );
    (e.state(), secs)
}

const SEC: u64 = 1_000_000_000;

/// What a master sends for the connection of client port 40000 once established.
fn established_record() -> SyncConn {
    let mut master = tables(false);
    master.enable_sync(64);
    segment(&mut master, 40000, SYN, SEC);
    segment(&mut master, 40000, ACK, 2 * SEC);
    drained(&mut master)[0]
}

#[test]
fn the_backup_takes_the_master_s_states_and_timeouts_until_it_sees_a_packet() {
    let r = established_record();
    let mut backup = tables(false);
    // The master's timeout, not this director's 900 s, as IPVS's backup keeps it.
    let mut short = r;
    short.timeout = 100;
    assert!(backup.install_synced(&short, Time::from_nanos(1000 * SEC)));
    let (state, left) = backup_entry(&backup, &short, 1000 * SEC);
    assert_eq!(
        (state, left),
        (State::Established, Duration::from_secs(100))
    );
    let (_, left) = backup_entry(&backup, &short, 1060 * SEC);
    assert_eq!(left, Duration::from_secs(40));
    // A longer one too.
    let mut long = r;
    long.timeout = 3000;
    assert!(backup.install_synced(&long, Time::from_nanos(1100 * SEC)));
    let (_, left) = backup_entry(&backup, &long, 1100 * SEC);
    assert_eq!(left, Duration::from_secs(3000));
    // The master's state changes reach the backup's entry, with their timeout; the
    // real server's ActiveConn/InActConn follow.
    let dest = |t: &Tables| {
        let key = xdpvs_sched::conn::ConnKey {
            proto: Protocol::Tcp,
            client: CLIENT,
            cport: 40000,
            vip: VIP,
            vport: 80,
        };
        let now = Time::from_nanos(1200 * SEC);
        t.conns()
            .entry(t.conns().peek(&key, now).expect("there"))
            .dest()
    };
    let d = dest(&backup);
    assert_eq!(backup.conns().load(d).active, 1);
    let mut fin = r;
    fin.state = State::FinWait as u16;
    fin.flags |= flags::INACTIVE;
    fin.timeout = 120;
    assert!(backup.install_synced(&fin, Time::from_nanos(1200 * SEC)));
    let (state, left) = backup_entry(&backup, &fin, 1200 * SEC);
    assert_eq!((state, left), (State::FinWait, Duration::from_secs(120)));
    assert_eq!(
        (
            backup.conns().load(d).active,
            backup.conns().load(d).inactive
        ),
        (0, 1)
    );
    // Once a packet is seen here, this director's timeouts take over.
    let mut est = r;
    est.timeout = 10;
    assert!(backup.install_synced(&est, Time::from_nanos(1300 * SEC)));
    segment(&mut backup, 40000, ACK, 1301 * SEC).expect("forwarded");
    let (_, left) = backup_entry(&backup, &est, 1301 * SEC);
    assert_eq!(left, Duration::from_secs(900));
}

#[test]
fn a_connection_scheduled_again_on_the_master_moves_on_the_backup_unless_it_is_the_old_one_ending()
{
    let r = established_record();
    let mut backup = tables(false);
    assert!(backup.install_synced(&r, Time::from_nanos(10 * SEC)));
    let to = segment(&mut backup, 40000, ACK, 11 * SEC).expect("forwarded");
    let other = (1..=3)
        .find(|&n| rs(n) != r.dest.0)
        .expect("another real server");
    // The end of the connection it replaced (inactive, elsewhere): ignored.
    let mut old = r;
    old.dest = (rs(other), 80);
    old.flags |= flags::INACTIVE;
    old.state = State::TimeWait as u16;
    assert!(backup.install_synced(&old, Time::from_nanos(12 * SEC)));
    assert_eq!(segment(&mut backup, 40000, ACK, 13 * SEC), Some(to));
    // An active one elsewhere: the connection moved.
    let mut moved = r;
    moved.dest = (rs(other), 80);
    assert!(backup.install_synced(&moved, Time::from_nanos(14 * SEC)));
    assert_eq!(
        segment(&mut backup, 40000, ACK, 15 * SEC),
        Some(rs_mac(other))
    );
}

#[test]
fn records_are_kept_only_while_the_master_role_runs() {
    let mut master = tables(false);
    master.enable_sync(64);
    master.set_sync_roles(false, true);
    segment(&mut master, 40000, SYN, SEC);
    segment(&mut master, 40000, ACK, 2 * SEC);
    assert!(drained(&mut master).is_empty(), "a backup sends nothing");
    master.set_sync_roles(true, false);
    segment(&mut master, 40001, SYN, 3 * SEC);
    segment(&mut master, 40001, ACK, 4 * SEC);
    assert_eq!(drained(&mut master).len(), 1);
}
