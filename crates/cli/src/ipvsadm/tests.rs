use super::*;
use clap::Parser;
use xdpvs_director::control::proto::{RealRow, ServiceRow};

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
        Action::Change(r) => Ok(r),
        other => Err(format!("not a change: {other:?}")),
    }
}

fn key() -> ServiceKey {
    ServiceKey {
        proto: Protocol::Tcp,
        vip: Ipv4Addr::new(198, 18, 0, 100),
        port: 80,
    }
}

fn rs(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

#[test]
fn the_dr_howto_commands() {
    assert_eq!(req("-C"), Ok(Request::Clear));
    assert_eq!(
        req("-A -t 198.18.0.100:80 -s rr"),
        Ok(Request::AddService {
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None
        })
    );
    assert_eq!(
        req("-a -t 198.18.0.100:80 -r 198.18.0.11 -g"),
        Ok(Request::AddReal {
            key: key(),
            addr: rs(11),
            weight: 1
        })
    );
    assert_eq!(action("-Ln"), Ok(Action::List(None)));
    assert_eq!(action("-L -n"), Ok(Action::List(None)));
    assert_eq!(action("-l"), Ok(Action::List(None)));
    assert_eq!(action(""), Ok(Action::List(None)), "bare ipvsadm lists");
}

#[test]
fn defaults_are_ipvsadm_s() {
    assert_eq!(
        req("-A -t 198.18.0.100:80"),
        Ok(Request::AddService {
            key: key(),
            scheduler: SchedKind::Wlc,
            persistence: None
        })
    );
    // -E replaces: no -s means wlc, no -p means not persistent.
    assert_eq!(
        req("-E -t 198.18.0.100:80"),
        Ok(Request::EditService {
            key: key(),
            scheduler: SchedKind::Wlc,
            persistence: None
        })
    );
    // -e without -w: weight 1.
    assert_eq!(
        req("-e -t 198.18.0.100:80 -r 198.18.0.11"),
        Ok(Request::EditReal {
            key: key(),
            addr: rs(11),
            weight: 1
        })
    );
    let Ok(Request::AddService {
        persistence: Some(p),
        ..
    }) = req("-A -t 198.18.0.100:80 -p -M 255.255.255.0")
    else {
        panic!("persistent service expected")
    };
    assert_eq!((p.timeout.as_secs(), p.prefix_len), (300, 24));
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
            weight: 0
        })
    );
    assert_eq!(
        req("--add-server --tcp-service 198.18.0.100:80 --real-server 198.18.0.11 --gatewaying --weight 5"),
        Ok(Request::AddReal {
            key: key(),
            addr: rs(11),
            weight: 5
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
    assert_eq!(action("-L --timeout"), Ok(Action::Timeouts));
    assert_eq!(action("-S -n"), Ok(Action::Save));
    assert_eq!(action("-R"), Ok(Action::Restore));
    assert_eq!(
        action("-L -n -t 198.18.0.100:80"),
        Ok(Action::List(Some(key())))
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

#[test]
fn clear_errors() {
    for (args, want) in [
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -m",
            "only does direct routing",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -i",
            "only does direct routing",
        ),
        ("-A -f 1", "-f (firewall-mark services) is not supported"),
        ("-A --sctp-service 198.18.0.100:80", "SCTP services"),
        ("-A -t 198.18.0.100:80 --pe sip", "persistence engines"),
        ("-A -u 198.18.0.100:53 -o", "one-packet scheduling"),
        ("--start-daemon master", "sync daemon"),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11:8080",
            "cannot map ports",
        ),
        (
            "-a -t 198.18.0.100:80 -r 198.18.0.11 -w 70000",
            "0 to 65535",
        ),
        ("-A -t 198.18.0.100:80 -s fancy", "unknown scheduler"),
        ("-A -t 198.18.0.100", "e.g. 198.18.0.100:80"),
        ("-A -t 198.18.0.100:0", "Zero port"),
        (
            "-A -t 198.18.0.100:80 -M 255.255.255.0",
            "only applies to a persistent service",
        ),
        ("-A -t 198.18.0.100:80 -p -M 255.0.255.0", "not contiguous"),
        ("-A -t 198.18.0.100:80 -p -M 33", "prefix length"),
        ("-L --stats", "--stats is not implemented yet"),
    ] {
        let e = action(args).expect_err(args);
        assert!(e.contains(want), "{args}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args}: one line: {e}");
    }
}

fn table() -> Table {
    let mut persistent = ServiceRow {
        key: ServiceKey {
            proto: Protocol::Udp,
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port: 53,
        },
        scheduler: SchedKind::Sh,
        persistence: Some(
            Persistence::new(Duration::from_secs(600), Ipv4Addr::new(255, 255, 255, 0))
                .expect("valid"),
        ),
        reals: vec![],
    };
    persistent.reals.push(RealRow {
        addr: rs(12),
        weight: 0,
        active: 0,
        inactive: 0,
        resolved: true,
    });
    Table {
        size: 4096,
        services: vec![
            ServiceRow {
                key: key(),
                scheduler: SchedKind::Rr,
                persistence: None,
                reals: vec![RealRow {
                    addr: rs(11),
                    weight: 1,
                    active: 2,
                    inactive: 30,
                    resolved: true,
                }],
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
    assert_eq!(format_list(&table(), true), want);
    let one = format_list(&table(), false);
    assert!(
        one.starts_with("Prot LocalAddress:Port"),
        "-L -t has no version line"
    );
}

#[test]
fn save_layout_and_round_trip() {
    let saved = format_rules(&table());
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
            key: table().services[1].key,
            scheduler: SchedKind::Sh,
            persistence: table().services[1].persistence,
        }
    );
    assert_eq!(
        reqs[3],
        Request::AddReal {
            key: table().services[1].key,
            addr: rs(12),
            weight: 0
        }
    );
}

#[test]
fn restore_names_the_bad_line() {
    let text =
        "# saved by xdpvs\n\n-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r nowhere -g\n";
    assert_eq!(
        parse_restore(text).map(|v| v.len()),
        Err(RestoreError::Line {
            line: 4,
            error: "invalid value 'nowhere' for '--real-server <RIP[:PORT]>': illegal real server address[:port] 'nowhere': use an IPv4 address, e.g. 198.18.0.11".into()
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
