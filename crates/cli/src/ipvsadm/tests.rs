use super::*;
use crate::format::{connection_line, connections_title, json_connection, json_table, list_notes};
use crate::names::Naming;
use clap::Parser;
use std::net::IpAddr;
use xdpvs_director::control::proto::{
    CheckEdit, CheckSpec, ConnRow, Counters, HealthRow, HttpCheck, Millis, OnFailure, Probe, Rates,
    RealRow, Script, ServiceRow, Table,
};

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: IpvsArgs,
}

fn action(args: &str) -> Result<Action, String> {
    let t = T::try_parse_from(std::iter::once("xdpvs").chain(args.split_whitespace()))
        .map_err(|e| error_line(&e))?;
    t.a.action().map_err(|e| e.to_string())
}

fn req(args: &str) -> Result<Request, String> {
    match action(args)? {
        Action::Change(r) => Ok(*r),
        other => Err(format!("not a change: {other:?}")),
    }
}

fn key() -> ServiceKey {
    ServiceKey {
        proto: Protocol::Tcp,
        vip: Ipv4Addr::new(198, 18, 0, 100).into(),
        port: 80,
    }
}

fn rs(last: u8) -> IpAddr {
    Ipv4Addr::new(198, 18, 0, last).into()
}

#[test]
fn the_dr_howto_commands() {
    assert_eq!(req("-C"), Ok(Request::Clear));
    assert_eq!(
        req("-A -t 198.18.0.100:80 -s rr"),
        Ok(Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        })
    );
    assert_eq!(
        req("-a -t 198.18.0.100:80 -r 198.18.0.11 -g"),
        Ok(Request::AddReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: None
        })
    );
    assert_eq!(action("-Ln"), Ok(list(None, ListKind::Plain)));
    assert_eq!(action("-L -n"), Ok(list(None, ListKind::Plain)));
    assert_eq!(action("-l"), Ok(list(None, ListKind::Plain)));
    assert_eq!(
        action(""),
        Ok(list(None, ListKind::Plain)),
        "bare ipvsadm lists"
    );
}

fn list(service: Option<ServiceKey>, kind: ListKind) -> Action {
    Action::List {
        service,
        kind,
        exact: false,
        json: false,
    }
}

#[test]
fn statistics_rates_connections_and_zero() {
    assert_eq!(action("-L -n --stats"), Ok(list(None, ListKind::Stats)));
    assert_eq!(action("-Ln --rate"), Ok(list(None, ListKind::Rate)));
    assert_eq!(
        action("-L --persistent-conn"),
        Ok(list(None, ListKind::PersistentConn))
    );
    assert_eq!(
        action("-L -n --stats --rate"),
        Ok(list(None, ListKind::Stats)),
        "ipvsadm prints the statistics when both are asked"
    );
    assert_eq!(
        action("-L -n --stats --exact -t 198.18.0.100:80"),
        Ok(Action::List {
            service: Some(key()),
            kind: ListKind::Stats,
            exact: true,
            json: false
        })
    );
    assert_eq!(
        action("-L -n --rate -X --json"),
        Ok(Action::List {
            service: None,
            kind: ListKind::Rate,
            exact: true,
            json: true
        })
    );
    assert_eq!(
        action("-L -n -c"),
        Ok(Action::Connections {
            persistent_conn: false,
            json: false
        })
    );
    assert_eq!(
        action("-Lnc --persistent-conn --json"),
        Ok(Action::Connections {
            persistent_conn: true,
            json: true
        })
    );
    assert_eq!(
        action("-L --timeout --json"),
        Ok(Action::Timeouts { json: true })
    );
    assert_eq!(action("-Z"), Ok(Action::Zero(None)));
    assert_eq!(
        action("--zero -t 198.18.0.100:80"),
        Ok(Action::Zero(Some(key())))
    );
    for (args, want) in [
        ("-L -c --stats", "options conflicts in the list command"),
        ("-L -c --rate", "options conflicts in the list command"),
        (
            "-L --timeout --rate",
            "options conflicts in the list command",
        ),
        (
            "-L -c -t 198.18.0.100:80",
            "'service-address' conflicts with the 'connection' option",
        ),
        (
            "-Z -r 198.18.0.11",
            "Illegal 'real-server' option with the 'zero'",
        ),
        ("-Z --stats", "Illegal 'stats' option with the 'zero'"),
        (
            "-A -t 198.18.0.100:80 --json",
            "Illegal 'json' option with the 'add-service'",
        ),
        ("-S --json", "Illegal 'json' option with the 'save'"),
    ] {
        let e = action(args).expect_err(args);
        assert!(e.contains(want), "{args}: {e}");
    }
}

#[test]
fn defaults_are_ipvsadm_s() {
    assert_eq!(
        req("-A -t 198.18.0.100:80"),
        Ok(Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Wlc,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        })
    );
    // -E replaces: no -s means wlc, no -p means not persistent.
    assert_eq!(
        req("-E -t 198.18.0.100:80"),
        Ok(Request::EditService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Wlc,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        })
    );
    // -e without -w: weight 1.
    assert_eq!(
        req("-e -t 198.18.0.100:80 -r 198.18.0.11"),
        Ok(Request::EditReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: CheckEdit::Keep
        })
    );
    let Ok(Request::AddService {
        persistence: Some(p),
        ..
    }) = req("-A -t 198.18.0.100:80 -p -M 255.255.255.0")
    else {
        panic!("persistent service expected")
    };
    assert_eq!((p.timeout.as_secs(), p.prefix_len), (360, 24));
    let Ok(Request::AddService {
        persistence: Some(p),
        ..
    }) = req("-A -t 198.18.0.100:80 --persistent 2678400 --netmask 16")
    else {
        panic!("persistent service expected")
    };
    assert_eq!((p.timeout.as_secs(), p.prefix_len), (2_678_400, 16));
    assert!(
        req("-A -t 198.18.0.100:80 -p 2678401").is_err(),
        "over ipvsadm's maximum"
    );
    assert!(req("-A -t 198.18.0.100:80 -p 0").is_err());
    assert_eq!(
        req("-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 0"),
        Ok(Request::AddReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 0,
            check: None
        })
    );
    assert_eq!(
        req("--add-server --tcp-service 198.18.0.100:80 --real-server 198.18.0.11 --gatewaying --weight 5"),
        Ok(Request::AddReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 5, check: None
        })
    );
    assert_eq!(
        req("--set 900 0 300"),
        Ok(Request::SetTimeouts(TimeoutSet {
            tcp: 900,
            tcpfin: 0,
            udp: 300
        }))
    );
    assert_eq!(action("-L --timeout"), Ok(Action::Timeouts { json: false }));
    assert_eq!(
        action("-S -n"),
        Ok(Action::Save {
            ipvsadm_only: false
        })
    );
    assert_eq!(
        action("-S -n --ipvsadm"),
        Ok(Action::Save { ipvsadm_only: true })
    );
    assert_eq!(action("-R"), Ok(Action::Restore));
    assert_eq!(
        action("-L -n -t 198.18.0.100:80"),
        Ok(list(Some(key()), ListKind::Plain))
    );
}

#[test]
fn options_go_with_commands_as_in_ipvsadm() {
    for (args, want) in [
        (
            "-C -t 198.18.0.100:80",
            "Illegal 'service-address' option with the 'flush' command",
        ),
        (
            "-A -t 198.18.0.100:80 -r 198.18.0.11",
            "Illegal 'real-server' option with the 'add-service' command",
        ),
        (
            "-A -t 198.18.0.100:80 -n",
            "Illegal 'numeric' option with the 'add-service' command",
        ),
        (
            "-A -s rr",
            "You need to supply the 'service-address' option for the 'add-service' command",
        ),
        (
            "-a -t 198.18.0.100:80",
            "You need to supply the 'real-server' option for the 'add-server' command",
        ),
        (
            "-d -t 198.18.0.100:80 -r 198.18.0.11 -w 3",
            "Illegal 'weight' option with the 'delete-server' command",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -s rr",
            "Illegal 'scheduler' option with the 'add-server' command",
        ),
        (
            "-L -c --timeout",
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
        ),
        (
            "-L --timeout --stats",
            "options conflicts in the list command",
        ),
        (
            "-S -t 198.18.0.100:80",
            "Illegal 'service-address' option with the 'save' command",
        ),
        ("-A -a -t 198.18.0.100:80", "multiple commands specified"),
        ("-n", "no command given"),
        ("--set 1 2", "3 values required"),
    ] {
        let e = action(args).expect_err(args);
        assert!(e.contains(want), "{args}: {e}");
    }
}

/// `-b`: ipvsadm's scheduler flags, carried to the director, saved by `-S` and read
/// back by `-R`.
#[test]
fn sched_flags_as_ipvsadm() {
    let r = req("-A -t 198.18.0.100:80 -s sh -b sh-fallback,sh-port").expect("valid");
    assert!(
        matches!(&r, Request::AddService { flags, .. } if *flags == SchedFlags(3)),
        "{r:?}"
    );
    assert!(matches!(
        req("-E -t 198.18.0.100:80 -s mh -b mh-port"),
        Ok(Request::EditService { flags, .. }) if flags == SchedFlags(SchedFlags::FLAG2)
    ));
    let mut t = table();
    t.services[0].scheduler = SchedKind::Sh;
    t.services[0].flags = SchedFlags(3);
    let saved = format_rules(&t, false, &Naming::numeric());
    assert!(
        saved.starts_with("-A -t 198.18.0.100:80 -s sh -b sh-fallback,sh-port\n"),
        "{saved}"
    );
    let back = parse_restore(&saved).expect("reads");
    assert!(
        matches!(&back[0].1, Request::AddService { flags, .. } if *flags == SchedFlags(3)),
        "{back:?}"
    );
    let doc: serde_json::Value = serde_json::from_str(&json_table(&t)).expect("json");
    assert_eq!(doc["services"][0]["sched_flags"], "sh-fallback,sh-port");
}

/// Host and service names where ipvsadm takes them.
#[test]
fn names_as_ipvsadm_takes_them() {
    match req("-A -t localhost:www -s rr") {
        Ok(Request::AddService { key, .. }) => {
            assert!(key.vip.is_loopback() && key.port == 80, "{key}");
        }
        other => panic!("{other:?}"),
    }
    match req("-a -t localhost:80 -r localhost -g") {
        Ok(Request::AddReal { addr, .. }) => assert!(addr.is_loopback()),
        other => panic!("{other:?}"),
    }
}

/// What ipvsadm accepts without doing it: taken as ipvsadm takes it, with a warning.
#[test]
fn ipvsadm_defaults_and_silent_acceptances() {
    let warnings = |args: &str| {
        T::try_parse_from(std::iter::once("xdpvs").chain(args.split_whitespace()))
            .expect("parses")
            .a
            .warnings()
    };
    // -p alone: IPVS_SVC_PERSISTENT_TIMEOUT, 360 s (not the man page's 300).
    match req("-A -t 198.18.0.100:80 -p") {
        Ok(Request::AddService {
            persistence: Some(p),
            ..
        }) => {
            assert_eq!(p.timeout, Duration::from_secs(360));
        }
        other => panic!("{other:?}"),
    }
    // -M without -p: no persistence, and said.
    assert!(matches!(
        req("-A -t 198.18.0.100:80 -M 255.255.255.0"),
        Ok(Request::AddService {
            persistence: None,
            ..
        })
    ));
    assert_eq!(warnings("-A -t 198.18.0.100:80 -M 24").len(), 1);
    // A real server's port other than the virtual port: ignored, and said.
    assert!(matches!(
        req("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -g"),
        Ok(Request::AddReal { addr, .. }) if addr == IpAddr::from(Ipv4Addr::new(198, 18, 0, 11))
    ));
    let w = warnings("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -g");
    assert!(
        w[0].starts_with("real server port 8080 is ignored"),
        "{w:?}"
    );
    assert!(warnings("-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g").is_empty());
}

#[test]
fn start_and_stop_daemon_are_ipvsadm_s_with_its_defaults() {
    let start = |args: &str| match action(args) {
        Ok(Action::Change(r)) => *r,
        other => panic!("{args}: {other:?}"),
    };
    assert_eq!(
        start("--start-daemon master --mcast-interface eth0"),
        Request::StartDaemon {
            role: DaemonRole::Master,
            settings: DaemonSettings::on("eth0"),
        }
    );
    assert_eq!(
        start("--start-daemon backup --mcast-interface eth1 --syncid 7 --sync-maxlen 1400 --mcast-group 239.1.2.3 --mcast-port 8849 --mcast-ttl 2"),
        Request::StartDaemon {
            role: DaemonRole::Backup,
            settings: DaemonSettings {
                iface: "eth1".into(),
                syncid: 7,
                maxlen: 1400,
                group: "239.1.2.3".parse().expect("group"),
                port: 8849,
                ttl: 2,
            },
        }
    );
    assert_eq!(
        start("--stop-daemon backup --syncid 7"),
        Request::StopDaemon {
            role: DaemonRole::Backup
        }
    );
}

#[test]
fn clear_errors() {
    for (args, want) in [
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -g -m",
            "multiple forwarding methods",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i -m",
            "multiple forwarding methods",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type gue",
            "You need to supply the 'tun-port' option for the 'gue' tunnel type",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-port 6080",
            "Illegal 'tun-port' option with the 'ipip' tunnel type",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-nocsum",
            "Illegal 'tun-nocsum' option with the 'ipip' tunnel type",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type gre --tun-remcsum",
            "Illegal 'tun-remcsum' option with the 'gre' tunnel type",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type gue --tun-port 6080 --tun-csum --tun-remcsum",
            "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type vxlan",
            "illegal tunnel type specified 'vxlan'",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type gue --tun-port 0",
            "illegal tunnel port specified '0'",
        ),
        ("-A -f 1", "-f (firewall-mark services) is not supported"),
        ("-A --sctp-service 198.18.0.100:80", "SCTP services"),
        ("-A -t 198.18.0.100:80 --pe sip", "persistence engines"),
        ("-A -u 198.18.0.100:53 -o", "one-packet scheduling"),
        (
            "--start-daemon master",
            "You need to supply the 'mcast-interface' option for the 'start-daemon' command",
        ),
        (
            "--start-daemon primary --mcast-interface eth0",
            "illegal start-daemon parameter specified: 'primary' is not master or backup",
        ),
        (
            "--start-daemon master --mcast-interface eth0 --mcast-group 198.18.0.1",
            "not an IPv4 multicast address",
        ),
        (
            "--start-daemon master --mcast-interface eth0 --mcast-group ff02::12",
            "xdpvs's sync daemon is IPv4",
        ),
        (
            "--start-daemon backup --mcast-interface eth0 --syncid 256",
            "illegal syncid specified: '256' is not 0 to 255",
        ),
        (
            "--start-daemon backup --mcast-interface eth0 --mcast-ttl 0",
            "illegal mcast-ttl specified",
        ),
        (
            "--start-daemon backup --mcast-interface eth0 --sync-maxlen 20",
            "illegal sync-maxlen specified",
        ),
        (
            "--stop-daemon master --mcast-interface eth0",
            "Illegal 'mcast-interface' option with the 'stop-daemon' command",
        ),
        (
            "--start-daemon master --mcast-interface eth0 -t 198.18.0.100:80",
            "Illegal 'service-address' option with the 'start-daemon' command",
        ),
        (
            "-A -t 198.18.0.100:80 --sync-maxlen 1472",
            "Illegal 'mcast-group/mcast-port/mcast-ttl/sync-maxlen' option with the 'add-service' command",
        ),
        (
            "-L --start-daemon master --mcast-interface eth0",
            "multiple commands specified",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 --tun-type gue --tun-port 6080",
            "Tunnel options conflict with forward method",
        ),
        (
            "-A -t 198.18.0.100:80 -s rr -b sh-port",
            "incompatible scheduler flag `sh-port'",
        ),
        (
            "-A -t 198.18.0.100:80 -s sh -b sh-portx",
            "invalid scheduler flag `sh-portx'",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -b flag-1",
            "Illegal 'sched-flags' option",
        ),
        ("-A -t 198.18.0.100:80 --tun-info", "Illegal"),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -w 70000",
            "0 to 65535",
        ),
        ("-A -t 198.18.0.100:80 -s fancy", "unknown scheduler"),
        ("-A -t 198.18.0.100", "e.g. 198.18.0.100:80"),
        ("-A -t 198.18.0.100:0", "Zero port"),
        ("-A -t 198.18.0.100:80 -p -M 255.0.255.0", "not contiguous"),
        ("-A -t 198.18.0.100:80 -p -M 33", "prefix length"),
    ] {
        let e = action(args).expect_err(args);
        assert!(e.contains(want), "{args}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args}: one line: {e}");
    }
}

/// Figures large enough for ipvsadm's K and M columns.
const BUSY: Counters = Counters {
    conns: 42,
    inpkts: 123_456_789,
    outpkts: 0,
    inbytes: 98_765_432_100,
    outbytes: 0,
};
const BUSY_RATES: Rates = Rates {
    cps: 5,
    inpps: 1200,
    outpps: 0,
    inbps: 150_000_000,
    outbps: 0,
};

fn table() -> Table {
    let mut persistent = ServiceRow {
        quorum: Default::default(),
        quorum_held: true,
        key: ServiceKey {
            proto: Protocol::Udp,
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port: 53,
        },
        scheduler: SchedKind::Sh,
        flags: SchedFlags::NONE,
        persistence: Some(
            Persistence::new(Duration::from_secs(600), Ipv4Addr::new(255, 255, 255, 0))
                .expect("valid"),
        ),
        reals: vec![],
        stats: Counters::default(),
        rates: Rates::default(),
        sorry: None,
    };
    persistent.reals.push(RealRow {
        addr: rs(12),
        port: 53,
        method: xdpvs_sched::Method::Route,
        weight: 0,
        effective: 0,
        active: 0,
        inactive: 0,
        persistent: 7,
        resolved: true,
        check: None,
        health: None,
        sorry: false,
        stats: Counters::default(),
        rates: Rates::default(),
    });
    Table {
        vrrp: Vec::new(),
        size: 4096,
        services: vec![
            ServiceRow {
                quorum: Default::default(),
                quorum_held: true,
                key: key(),
                scheduler: SchedKind::Rr,
                flags: SchedFlags::NONE,
                persistence: None,
                reals: vec![RealRow {
                    addr: rs(11),
                    port: 80,
                    method: xdpvs_sched::Method::Route,
                    weight: 1,
                    effective: 0,
                    active: 2,
                    inactive: 30,
                    persistent: 0,
                    resolved: true,
                    check: None,
                    health: None,
                    sorry: false,
                    stats: BUSY,
                    rates: BUSY_RATES,
                }],
                stats: BUSY,
                rates: BUSY_RATES,
                sorry: None,
            },
            persistent,
        ],
    }
}

#[test]
fn listing_layout() {
    // ipvsadm's format strings: "%s %s" service line, "  -> %-28s %-7s %-6d %-10u %-10u".
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
                Prot LocalAddress:Port Scheduler Flags\n  \
                -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                TCP  198.18.0.100:80 rr\n  \
                -> 198.18.0.11:80               Route   1      2          30        \n\
                UDP  198.18.0.100:53 sh persistent 600 mask 255.255.255.0\n  \
                -> 198.18.0.12:53               Route   0      0          0         \n";
    assert_eq!(
        format_list(&table(), true, ListKind::Plain, false, &Naming::numeric()),
        want
    );
    let one = format_list(&table(), false, ListKind::Plain, false, &Naming::numeric());
    assert!(
        one.starts_with("Prot LocalAddress:Port"),
        "-L -t has no version line"
    );
}

#[test]
fn save_layout_and_round_trip() {
    let saved = format_rules(&table(), false, &Naming::numeric());
    assert_eq!(
        saved,
        "-A -t 198.18.0.100:80 -s rr\n\
         -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1\n\
         -A -u 198.18.0.100:53 -s sh -p 600 -M 255.255.255.0\n\
         -a -u 198.18.0.100:53 -r 198.18.0.12:53 -g -w 0\n"
    );
    let back = parse_restore(&saved).expect("what -S prints, -R reads");
    let reqs: Vec<Request> = back.into_iter().map(|(_, r)| r).collect();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        reqs[2],
        Request::AddService {
            quorum: Default::default(),
            key: table().services[1].key,
            scheduler: SchedKind::Sh,
            persistence: table().services[1].persistence,
            sorry: None,
            flags: Default::default(),
        }
    );
    assert_eq!(
        reqs[3],
        Request::AddReal {
            key: table().services[1].key,
            addr: rs(12),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 0,
            check: None
        }
    );
}

#[test]
fn restore_drops_the_word_ipvsadm_as_ipvsadm_does() {
    let with = "ipvsadm -A -t 198.18.0.100:80 -s rr\nipvsadm -a -t 198.18.0.100:80 -r 198.18.0.11 -g -w 2\n-a ipvsadm -t 198.18.0.100:80 -r 198.18.0.12\nipvsadm\n";
    let without = "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.18.0.11 -g -w 2\n-a -t 198.18.0.100:80 -r 198.18.0.12\n";
    let reqs = |t: &str| -> Vec<Request> {
        parse_restore(t)
            .expect("reads")
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    };
    assert_eq!(reqs(with), reqs(without));
    assert_eq!(reqs(with).len(), 3);
}

#[test]
fn restore_names_the_bad_line() {
    let text =
        "# saved by xdpvs\n\n-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r nowhere -g\n";
    assert_eq!(
        parse_restore(text).map(|v| v.len()),
        Err(RestoreError::Line {
            line: 4,
            error: "invalid value 'nowhere' for '--real-server <RIP[:PORT]>': illegal real server address[:port] 'nowhere': use an address, e.g. 198.18.0.11, 2001:2::11 or [2001:2::11]:80".into()
        })
    );
    let e = parse_restore("-L -n\n").expect_err("not a change");
    assert!(e.to_string().starts_with("line 1: only -A"), "{e}");
}

#[test]
fn timeout_line() {
    assert_eq!(
        format_timeouts(&TimeoutSet {
            tcp: 900,
            tcpfin: 120,
            udp: 300
        }),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
}

#[test]
fn statistics_layout() {
    // ipvsadm: title "%-33s %8s %8s %8s %8s %8s", service "%-33s" then print_largenum
    // ("%9llu" below 100 million, then "%8lluK", "%8lluM"...), real "  -> %-28s".
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n",
        "  -> RemoteAddress:Port\n",
        "TCP  198.18.0.100:80                    42  123456K        0   98765M        0\n",
        "  -> 198.18.0.11:80                     42  123456K        0   98765M        0\n",
        "UDP  198.18.0.100:53                     0        0        0        0        0\n",
        "  -> 198.18.0.12:53                      0        0        0        0        0\n",
    );
    assert_eq!(
        format_list(&table(), true, ListKind::Stats, false, &Naming::numeric()),
        want
    );
    // --exact: "%*llu", width 9, or the number's length + 1.
    let exact = format_list(&table(), false, ListKind::Stats, true, &Naming::numeric());
    assert!(
        exact.contains(
            "TCP  198.18.0.100:80                    42 123456789        0 98765432100        0\n"
        ),
        "{exact}"
    );
}

#[test]
fn rate_layout() {
    // ipvsadm: service figures all print_largenum; a real's "  -> %-28s %8u %8u %8u"
    // then print_largenum for the two byte rates.
    let want = concat!(
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n",
        "  -> RemoteAddress:Port\n",
        "TCP  198.18.0.100:80                     5     1200        0  150000K        0\n",
        "  -> 198.18.0.11:80                      5     1200        0  150000K        0\n",
        "UDP  198.18.0.100:53                     0        0        0        0        0\n",
        "  -> 198.18.0.12:53                      0        0        0        0        0\n",
    );
    assert_eq!(
        format_list(&table(), false, ListKind::Rate, false, &Naming::numeric()),
        want
    );
}

#[test]
fn persistent_conn_layout() {
    // ipvsadm: title "%-33s %-9s %-11s %-10s %-10s", real "  -> %-28s %-9u %-11u %-10u %-10u".
    let want = concat!(
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n",
        "  -> RemoteAddress:Port\n",
        "TCP  198.18.0.100:80 rr\n",
        "  -> 198.18.0.11:80               1         0           2          30        \n",
        "UDP  198.18.0.100:53 sh persistent 600 mask 255.255.255.0\n",
        "  -> 198.18.0.12:53               0         7           0          0         \n",
    );
    assert_eq!(
        format_list(
            &table(),
            false,
            ListKind::PersistentConn,
            false,
            &Naming::numeric()
        ),
        want
    );
}

fn conn(expires: u64, state: &str, template: bool) -> ConnRow {
    ConnRow {
        proto: Protocol::Tcp,
        expires,
        state: state.into(),
        source: SocketAddr::new(
            Ipv4Addr::new(198, 19, 0, 1).into(),
            if template { 0 } else { 40000 },
        ),
        virtual_addr: SocketAddr::new(Ipv4Addr::new(198, 18, 0, 100).into(), 80),
        destination: SocketAddr::new(rs(11), 80),
        template,
    }
}

#[test]
fn connection_layout() {
    // ipvsadm: "pro expire %-11s %-18s %-18s %s" and rows "%-3s %-6s %-11s %-18s %-18s %s"
    // with expire as "%02d:%02d" (minutes may pass 99).
    let mut got = connections_title(false);
    got.push_str(&connection_line(
        &conn(899, "ESTABLISHED", false),
        &Naming::numeric(),
    ));
    got.push_str(&connection_line(
        &conn(6005, "NONE", true),
        &Naming::numeric(),
    ));
    let want = "IPVS connection entries\n\
                pro expire state       source             virtual            destination\n\
                TCP 14:59  ESTABLISHED 198.19.0.1:40000   198.18.0.100:80    198.18.0.11:80\n\
                TCP 100:05 NONE        198.19.0.1:0       198.18.0.100:80    198.18.0.11:80\n";
    assert_eq!(got, want);
    // Without -n: names from /etc/hosts and /etc/services, as ipvsadm.
    let names = Naming::from_texts(
        "198.18.0.100 www\n198.18.0.11 rs1\n",
        "http 80/tcp\n".into(),
    );
    assert_eq!(
        connection_line(&conn(899, "ESTABLISHED", false), &names),
        "TCP 14:59  ESTABLISHED 198.19.0.1:40000   www:http           rs1:http\n"
    );
    assert_eq!(
        connections_title(true),
        "IPVS connection entries\n\
         pro expire state       source             virtual            destination        pe name          pe_data\n"
    );
}

#[test]
fn json_documents() {
    let v: serde_json::Value = serde_json::from_str(&json_table(&table())).expect("json");
    assert_eq!(v["size"], 4096);
    let s = &v["services"][0];
    assert_eq!(s["protocol"], "TCP");
    assert_eq!(s["vip"], "198.18.0.100");
    assert_eq!(s["scheduler"], "rr");
    assert_eq!(s["persistent"], serde_json::Value::Null);
    assert_eq!(s["stats"]["in_pkts"], 123_456_789);
    assert_eq!(s["rate"]["in_bps"], 150_000_000);
    let r = &s["reals"][0];
    assert_eq!(r["address"], "198.18.0.11");
    assert_eq!(r["active_conns"], 2);
    assert_eq!(r["inactive_conns"], 30);
    assert_eq!(v["services"][1]["persistent"]["netmask"], "255.255.255.0");
    assert_eq!(v["services"][1]["reals"][0]["persistent_conns"], 7);
    let c: serde_json::Value =
        serde_json::from_str(&json_connection(&conn(60, "SYN_RECV", false))).expect("json");
    assert_eq!(c["state"], "SYN_RECV");
    assert_eq!(c["expire"], 60);
    assert_eq!(c["source"], "198.19.0.1:40000");
    assert_eq!(c["template"], false);
}

fn add_real_check(args: &str) -> Result<Option<CheckSpec>, String> {
    match req(&format!("-a -t 198.18.0.100:80 -r 198.18.0.11 {args}"))? {
        Request::AddReal { check, .. } => Ok(check),
        other => Err(format!("not -a: {other:?}")),
    }
}

#[test]
fn health_check_options() {
    assert_eq!(add_real_check(""), Ok(None));
    assert_eq!(
        add_real_check("--check tcp"),
        Ok(Some(CheckSpec::new(Probe::Tcp)))
    );
    let c = add_real_check(
        "--check http:/health:204 --check-port 8080 --check-interval 1 --check-timeout 0.5 \
         --check-retry-delay 0.2 --fall 3 --rise 2 --on-failure remove \
         --check-digest 5B6D74F1453E20C09D6A20D909779AD7 --check-host www.example.org",
    )
    .expect("parsed")
    .expect("a check");
    assert_eq!(
        c,
        CheckSpec {
            port: Some(8080),
            interval: Millis(1000),
            timeout: Millis(500),
            retry_delay: Millis(200),
            fall: 3,
            rise: 2,
            on_failure: OnFailure::Remove,
            ..CheckSpec::new(Probe::Http(Box::new(HttpCheck {
                status: vec![(204, 204)],
                digest: Some("5b6d74f1453e20c09d6a20d909779ad7".into()),
                host: Some("www.example.org".into()),
                ..HttpCheck::get("/health")
            })))
        }
    );
    // -e: no --check keeps the check, --check none removes it.
    let edit = |args: &str| match req(&format!("-e -t 198.18.0.100:80 -r 198.18.0.11 {args}")) {
        Ok(Request::EditReal { check, .. }) => Ok(check),
        Ok(other) => Err(format!("not -e: {other:?}")),
        Err(e) => Err(e),
    };
    assert_eq!(edit("-w 3"), Ok(CheckEdit::Keep));
    assert_eq!(edit("--check none"), Ok(CheckEdit::Remove));
    assert_eq!(
        edit("--check tcp --fall 4"),
        Ok(CheckEdit::Set(Box::new(CheckSpec {
            fall: 4,
            ..CheckSpec::new(Probe::Tcp)
        })))
    );
    // Errors, each one line.
    for (args, says) in [
        ("--fall 3", "describe a check: give --check"),
        ("--check udp:x", "illegal check 'udp:x'"),
        ("--check ping --check-port 80", "--check-port goes with"),
        (
            "--check misc:/bin/true --check-forwarding",
            "--check-forwarding goes with",
        ),
        ("--check tcp --check none", "--check none removes the check"),
        (
            "--check tcp --check-digest 5b6d74f1453e20c09d6a20d909779ad7",
            "go with an HTTP check",
        ),
        ("--check http --check-digest abc", "illegal digest 'abc'"),
        ("--check tcp --fall 0", "--fall"),
        ("--check tcp --check-interval 0", "is not a time in seconds"),
        ("--check tcp --on-failure drop", "use inhibit or remove"),
    ] {
        let e = add_real_check(args).expect_err(args);
        assert!(e.contains(says), "{args}: {e}");
        assert!(!e.contains('\n'), "{args}: {e}");
    }
    assert_eq!(
        edit("--check none --fall 2"),
        Err("--check none removes the check: give no other check option".into())
    );
    // Check options belong to -a/-e only; --sorry-server to -A/-E only.
    assert_eq!(
        req("-A -t 198.18.0.100:80 --check tcp"),
        Err("Illegal 'check' option with the 'add-service' command".into())
    );
    assert_eq!(
        req("-d -t 198.18.0.100:80 -r 198.18.0.11 --fall 2"),
        Err(
            "Illegal 'check-*/fall/rise/on-failure' option with the 'delete-server' command".into()
        )
    );
    assert_eq!(
        req("-a -t 198.18.0.100:80 -r 198.18.0.11 --sorry-server 198.18.0.50"),
        Err("Illegal 'sorry-server' option with the 'add-server' command".into())
    );
    assert_eq!(
        req("-A -t 198.18.0.100:80 -s rr --sorry-server 198.18.0.50:80"),
        Ok(Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: Some(rs(50)),
            flags: Default::default(),
        })
    );
    assert!(req("-A -t 198.18.0.100:80 --sorry-server 198.18.0.50:81")
        .expect_err("port mapping")
        .contains("cannot map ports"));
}

#[test]
fn checks_and_sorry_servers_are_saved_restored_and_listed() {
    let mut t = table();
    t.services[0].sorry = Some(rs(50));
    let check = CheckSpec {
        interval: Millis(1500),
        fall: 3,
        on_failure: OnFailure::Remove,
        ..CheckSpec::new(Probe::Http(Box::new(HttpCheck {
            status: vec![(200, 200)],
            ..HttpCheck::get("/h")
        })))
    };
    t.services[0].reals[0].check = Some(check.clone());
    t.services[0].reals[0].health = Some(HealthRow {
        up: false,
        last: "GET /h: status 500, want 200".into(),
        checks: 9,
        failures: 3,
        transitions: 1,
        latency_us: 900,
        weight: None,
        checked_at: 1_700_000_000,
        changed_at: 1_699_999_000,
    });
    let mut standing_in = t.services[0].reals[0].clone();
    standing_in.addr = rs(50);
    standing_in.check = None;
    standing_in.health = None;
    standing_in.sorry = true;
    t.services[0].reals.push(standing_in);
    let saved = format_rules(&t, false, &Naming::numeric());
    assert_eq!(
        saved,
        "-A -t 198.18.0.100:80 -s rr --sorry-server 198.18.0.50\n\
         -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1 --check http:/h:200 \
         --check-interval 1.5 --fall 3 --on-failure remove\n\
         -A -u 198.18.0.100:53 -s sh -p 600 -M 255.255.255.0\n\
         -a -u 198.18.0.100:53 -r 198.18.0.12:53 -g -w 0\n"
    );
    // --ipvsadm: only what ipvsadm -R reads.
    assert_eq!(
        format_rules(&t, true, &Naming::numeric()),
        "-A -t 198.18.0.100:80 -s rr\n\
         -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1\n\
         -A -u 198.18.0.100:53 -s sh -p 600 -M 255.255.255.0\n\
         -a -u 198.18.0.100:53 -r 198.18.0.12:53 -g -w 0\n"
    );
    let back: Vec<Request> = parse_restore(&saved)
        .expect("what -S prints, -R reads")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        back[0],
        Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: Some(rs(50)),
            flags: Default::default(),
        }
    );
    assert_eq!(
        back[1],
        Request::AddReal {
            key: key(),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: Some(check),
        }
    );
    // ipvsadm's lines exactly; what ipvsadm has no column for goes to stderr.
    let listed = format_list(&t, false, ListKind::Plain, false, &Naming::numeric());
    assert!(
        listed.contains("  -> 198.18.0.11:80               Route   1      2          30        \n"),
        "{listed}"
    );
    assert!(
        listed.contains("  -> 198.18.0.50:80               Route   1      2          30        \n"),
        "{listed}"
    );
    assert!(!listed.contains('('), "{listed}");
    assert_eq!(
        list_notes(&t),
        [
            "real server 198.18.0.11:80 of TCP 198.18.0.100:80: check failed, removed: GET /h: status 500, want 200",
            "real server 198.18.0.50:80 of TCP 198.18.0.100:80: the sorry server, standing in",
        ]
    );
    let doc: serde_json::Value = serde_json::from_str(&json_table(&t)).expect("json");
    let r = &doc["services"][0]["reals"][0];
    assert_eq!(r["check"]["type"], "http");
    assert_eq!(r["check"]["interval_ms"], 1500);
    assert_eq!(r["check"]["on_failure"], "remove");
    assert_eq!(r["health"]["up"], false);
    assert_eq!(r["health"]["failures"], 3);
    assert_eq!(doc["services"][0]["sorry_server"], "198.18.0.50");
    assert_eq!(doc["services"][0]["reals"][1]["sorry_server"], true);
}

fn key6() -> ServiceKey {
    ServiceKey {
        proto: Protocol::Tcp,
        vip: "2001:2::100".parse().expect("valid"),
        port: 80,
    }
}

fn rs6(last: u16) -> IpAddr {
    std::net::Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last).into()
}

fn table6() -> Table {
    let real = |addr, weight| RealRow {
        addr,
        port: 80,
        method: xdpvs_sched::Method::Route,
        weight,
        effective: 0,
        active: 1,
        inactive: 2,
        persistent: 0,
        resolved: true,
        check: None,
        health: None,
        sorry: false,
        stats: BUSY,
        rates: BUSY_RATES,
    };
    Table {
        vrrp: Vec::new(),
        size: 4096,
        services: vec![ServiceRow {
            quorum: Default::default(),
            quorum_held: true,
            key: key6(),
            scheduler: SchedKind::Rr,
            flags: SchedFlags::NONE,
            persistence: Some(
                Persistence::with_prefix(Duration::from_secs(300), 64).expect("valid"),
            ),
            reals: vec![real(rs6(0x11), 1), real(rs6(0x12), 2)],
            stats: BUSY,
            rates: BUSY_RATES,
            sorry: None,
        }],
    }
}

#[test]
fn ipv6_services_in_ipvsadm_s_grammar() {
    assert_eq!(
        req("-A -t [2001:2::100]:80 -s rr"),
        Ok(Request::AddService {
            quorum: Default::default(),
            key: key6(),
            scheduler: SchedKind::Rr,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        })
    );
    // Real servers bare, with a port in brackets; -M is a prefix length (1..128).
    for r in ["2001:2::11", "[2001:2::11]:80"] {
        assert_eq!(
            req(&format!("-a -t [2001:2::100]:80 -r {r} -g -w 3")),
            Ok(Request::AddReal {
                key: key6(),
                addr: rs6(0x11),
                port: 0,
                method: xdpvs_sched::Method::Route,
                weight: 3,
                check: None,
            }),
            "{r}"
        );
    }
    let Ok(Request::AddService { persistence, .. }) = req("-A -t [2001:2::100]:80 -p 60 -M 64")
    else {
        panic!()
    };
    assert_eq!(persistence.map(|p| p.prefix_len), Some(64));
    let Ok(Request::AddService { persistence, .. }) = req("-A -u [2001:2::100]:53 -p") else {
        panic!()
    };
    assert_eq!(persistence.map(|p| p.prefix_len), Some(128), "default /128");
    assert_eq!(
        req("-A -t [2001:2::100]:80 -p 60 -M 255.255.255.0"),
        Err("illegal ipv6 netmask specified: an IPv6 service's -M is a prefix length from 1 to 128, e.g. -M 64".into())
    );
    assert!(req("-A -t [2001:2::100]:80 -p 60 -M 0").is_err());
    assert!(
        req("-A -t 198.18.0.100:80 -p 60 -M 64").is_err(),
        "/64 is not IPv4"
    );
    // Mixing families is refused, both ways.
    assert_eq!(
        req("-a -t [2001:2::100]:80 -r 198.18.0.11"),
        Err("real server 198.18.0.11 is IPv4 but service TCP [2001:2::100]:80 is IPv6: direct routing needs real servers of the service's address family".into())
    );
    assert!(req("-a -t 198.18.0.100:80 -r 2001:2::11").is_err());
    assert!(req("-A -t [2001:2::100]:80 --sorry-server 198.18.0.50").is_err());
    // Unbracketed IPv6 with a port, or brackets without one: not an address.
    assert!(req("-A -t 2001:2::100:80").is_err());
    assert!(req("-a -t [2001:2::100]:80 -r [2001:2::11]").is_err());
    assert!(
        req("-A -t [2001:2::100]:80 -6").is_err(),
        "-6 qualifies -f only"
    );
}

#[test]
fn ipv6_listing_save_and_json_as_ipvsadm() {
    let want = "Prot LocalAddress:Port Scheduler Flags\n  \
                -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                TCP  [2001:2::100]:80 rr persistent 300 mask 64\n  \
                -> [2001:2::11]:80              Route   1      1          2         \n  \
                -> [2001:2::12]:80              Route   2      1          2         \n";
    assert_eq!(
        format_list(&table6(), false, ListKind::Plain, false, &Naming::numeric()),
        want
    );
    let stats = format_list(&table6(), false, ListKind::Stats, false, &Naming::numeric());
    assert!(
        stats.contains("\nTCP  [2001:2::100]:80                "),
        "{stats}"
    );
    assert!(
        stats.contains("\n  -> [2001:2::11]:80              "),
        "{stats}"
    );
    let saved = format_rules(&table6(), false, &Naming::numeric());
    assert_eq!(
        saved,
        "-A -t [2001:2::100]:80 -s rr -p 300 -M 64\n\
         -a -t [2001:2::100]:80 -r [2001:2::11]:80 -g -w 1\n\
         -a -t [2001:2::100]:80 -r [2001:2::12]:80 -g -w 2\n"
    );
    let back: Vec<Request> = parse_restore(&saved)
        .expect("what -S prints, -R reads")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        back[0],
        Request::AddService {
            quorum: Default::default(),
            key: key6(),
            scheduler: SchedKind::Rr,
            persistence: table6().services[0].persistence,
            sorry: None,
            flags: Default::default(),
        }
    );
    let json: serde_json::Value = serde_json::from_str(&json_table(&table6())).expect("valid");
    assert_eq!(json["services"][0]["vip"], "2001:2::100");
    assert_eq!(json["services"][0]["persistent"]["prefix_len"], 64);
    assert_eq!(json["services"][0]["reals"][1]["address"], "2001:2::12");
    let row = ConnRow {
        proto: Protocol::Tcp,
        expires: 61,
        state: "ESTABLISHED".into(),
        source: "[2001:2::21]:40000".parse().expect("valid"),
        virtual_addr: "[2001:2::100]:80".parse().expect("valid"),
        destination: "[2001:2::11]:80".parse().expect("valid"),
        template: false,
    };
    assert_eq!(
        connection_line(&row, &Naming::numeric()),
        "TCP 01:01  ESTABLISHED [2001:2::21]:40000 [2001:2::100]:80   [2001:2::11]:80\n"
    );
    let j: serde_json::Value = serde_json::from_str(&json_connection(&row)).expect("valid");
    assert_eq!(j["source"], "[2001:2::21]:40000");
}

#[test]
fn masquerading_maps_ports_and_direct_routing_ignores_them() {
    let add = |args: &str| match action(args) {
        Ok(Action::Change(r)) => match *r {
            Request::AddReal { port, method, .. } => (port, method),
            other => panic!("{other:?}"),
        },
        other => panic!("{args}: {other:?}"),
    };
    use xdpvs_sched::Method;
    assert_eq!(
        add("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -m"),
        (8080, Method::Masq)
    );
    assert_eq!(
        add("-a -t 198.18.0.100:80 -r 198.18.0.11 --masquerading"),
        (0, Method::Masq)
    );
    // The service's own port is said as 0, however it is written.
    assert_eq!(
        add("-a -t 198.18.0.100:80 -r 198.18.0.11:80 -m"),
        (0, Method::Masq)
    );
    // Direct routing reaches the real server on the virtual port (ipvsadm too).
    assert_eq!(
        add("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -g"),
        (0, Method::Route)
    );
    assert_eq!(
        add("-a -t 198.18.0.100:80 -r 198.18.0.11"),
        (0, Method::Route)
    );
    // -e without a method sets -g, as ipvsadm's -e does.
    match action("-e -t 198.18.0.100:80 -r 198.18.0.11") {
        Ok(Action::Change(r)) if matches!(*r, Request::EditReal { .. }) => {
            let Request::EditReal { method, .. } = *r else {
                unreachable!()
            };
            assert_eq!(method, Method::Route)
        }
        other => panic!("{other:?}"),
    }
    let warned = |args: &str| {
        T::try_parse_from(std::iter::once("xdpvs").chain(args.split_whitespace()))
            .expect("parses")
            .a
            .warnings()
    };
    assert!(warned("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -m").is_empty());
    assert_eq!(
        warned("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -g").len(),
        1
    );
}

#[test]
fn tunnels_take_ipvsadm_options_and_keep_the_service_port() {
    use xdpvs_sched::Method;
    let add = |args: &str| match action(args) {
        Ok(Action::Change(r)) => match *r {
            Request::AddReal { port, method, .. } => (port, method),
            other => panic!("{other:?}"),
        },
        other => panic!("{args}: {other:?}"),
    };
    let tun = |kind, port, csum| Method::Tunnel(xdpvs_sched::Tunnel { kind, port, csum });
    use xdpvs_sched::{TunCsum, TunKind};
    for (line, want) in [
        ("-i", tun(TunKind::Ipip, 0, TunCsum::No)),
        ("--ipip --tun-type ipip", tun(TunKind::Ipip, 0, TunCsum::No)),
        (
            "-i --tun-type gue --tun-port 6080",
            tun(TunKind::Gue, 6080, TunCsum::No),
        ),
        (
            "-i --tun-type gue --tun-port 6080 --tun-remcsum",
            tun(TunKind::Gue, 6080, TunCsum::Remote),
        ),
        (
            "-i --tun-type gre --tun-csum",
            tun(TunKind::Gre, 0, TunCsum::Csum),
        ),
        (
            "-i --tun-type gre --tun-nocsum",
            tun(TunKind::Gre, 0, TunCsum::No),
        ),
    ] {
        let got = add(&format!("-a -t 198.18.0.100:80 -r 198.18.9.11:8080 {line}"));
        assert_eq!(got, (0, want), "{line}");
    }
}

#[test]
fn checks_with_spaces_survive_save_and_restore() {
    assert_eq!(
        restore_words(r#"-a --check "misc:/bin/x a b" x"y z"w "q\"\\""#),
        Ok(vec![
            "-a".to_string(),
            "--check".into(),
            "misc:/bin/x a b".into(),
            "xy zw".into(),
            "q\"\\".into(),
        ])
    );
    assert!(restore_words(r#"-a "open"#).is_err());
    for w in ["plain", "two words", "a\"quote", "", "back\\slash"] {
        assert_eq!(
            restore_words(&restore_quote(w)),
            Ok(vec![w.to_string()]),
            "{w}"
        );
    }
    let line = r#"-a -t 198.18.0.100:80 -r 198.18.0.11 --check "misc:/usr/local/bin/check rs1,dynamic,timeout=2" --check https:/h,sni=www.example.org --check-forwarding --check-alpha --notify-down "/usr/local/bin/alert rs1 down" --script-user nobody --check-ip 198.18.0.111 --check-bind-if eth0"#;
    let parsed = parse_restore(line).expect("restored");
    let [(1, Request::AddReal { check: Some(c), .. })] = &parsed[..] else {
        panic!("{parsed:?}")
    };
    assert_eq!(c.kind(), "misc+https");
    assert!(c.alpha && c.forwarding);
    assert_eq!(
        c.notify_down,
        Some(Script {
            command: "/usr/local/bin/alert rs1 down".into(),
            user: Some("nobody".into())
        })
    );
    let saved = format!(
        "-a -t 198.18.0.100:80 -r 198.18.0.11{}",
        crate::format::check_options(c)
    );
    assert_eq!(parse_restore(&saved).expect("again"), parsed, "{saved}");
    // A service's quorum, saved and restored.
    let svc = "-A -t 198.18.0.100:80 -s rr --quorum 3 --hysteresis 1 --quorum-down \"/usr/local/bin/vs down\" --omega";
    let parsed = parse_restore(svc).expect("restored");
    let [(1, Request::AddService { quorum, .. })] = &parsed[..] else {
        panic!("{parsed:?}")
    };
    assert_eq!(
        (quorum.quorum, quorum.hysteresis, quorum.omega),
        (3, 1, true)
    );
    assert_eq!(
        crate::format::quorum_options(quorum),
        " --quorum 3 --hysteresis 1 --quorum-down \"/usr/local/bin/vs down\" --omega"
    );
    assert_eq!(
        req("-a -t 198.18.0.100:80 -r 198.18.0.11 --quorum 2"),
        Err("Illegal 'quorum/hysteresis/quorum-up/quorum-down/omega' option with the 'add-server' command".into())
    );
}

#[test]
fn each_checker_may_connect_where_it_says() {
    let c =
        add_real_check("--check smtp,ip=198.18.0.21,port=25 --check smtp,port=587,ip=198.18.0.22")
            .expect("parsed")
            .expect("a check");
    assert_eq!((c.connect_ip, c.port), (Some(rs(21)), Some(25)));
    assert_eq!(c.also[0].word(), "smtp,port=587,ip=198.18.0.22");
    assert_eq!(
        crate::format::check_options(&c),
        " --check smtp --check smtp,port=587,ip=198.18.0.22 --check-port 25 --check-ip 198.18.0.21"
    );
    for (args, says) in [
        (
            "--check tcp,port=80 --check-port 81",
            "say the same: give one",
        ),
        ("--check misc:/bin/true,port=80", "connects nowhere"),
        ("--check tcp,port=0", "a port from 1 to 65535"),
    ] {
        let e = add_real_check(args).expect_err(args);
        assert!(e.contains(says), "{args}: {e}");
    }
}
