use super::*;
use crate::control::proto::DaemonSettings;
use crate::health::spec::{HttpCheck, Millis};
use std::net::IpAddr;

/// A keepalived.conf as operators write them: globals, VRRP, two virtual servers.
const REAL_WORLD: &str = r#"
! Configuration File for keepalived
global_defs {
   notification_email {
     ops@example.org
   }
   notification_email_from lb1@example.org
   smtp_server 127.0.0.1
   smtp_connect_timeout 30
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        198.18.0.100
    }
}

virtual_server 198.18.0.100 80 {
    delay_loop 6
    lb_algo wrr
    lb_kind DR
    persistence_timeout 600
    persistence_granularity 255.255.255.0
    protocol TCP
    virtualhost www.example.org
    sorry_server 198.18.0.50 80

    real_server 198.18.0.11 80 {
        weight 3
        inhibit_on_failure
        HTTP_GET {
            url {
              path /health
              status_code 200
              digest 5B6D74F1453E20C09D6A20D909779AD7
            }
            connect_port 8080
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 2
        }
    }
    real_server 198.18.0.12 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 2.5
            retry 0
            delay_loop 1
        }
    }
    real_server 198.18.0.13 80 {
        weight 0
    }
}

virtual_server 198.18.0.100 53 {   # DNS
    lvs_sched sh
    lvs_method DR
    protocol UDP
    inhibit_on_failure
    real_server 198.18.0.11 53 {
        TCP_CHECK { connect_port 53 }
    }
}
"#;

fn key(proto: Protocol, port: u16) -> ServiceKey {
    ServiceKey {
        proto,
        vip: Ipv4Addr::new(198, 18, 0, 100).into(),
        port,
    }
}

fn rs(last: u8) -> IpAddr {
    Ipv4Addr::new(198, 18, 0, last).into()
}

#[test]
fn a_real_world_file_with_every_supported_keyword() {
    let got = parse(REAL_WORLD).expect("parsed");
    assert_eq!(got.notes.len(), 2, "{:?}", got.notes);
    assert!(
        got.notes[0].starts_with("line 3: global_defs skipped"),
        "{:?}",
        got.notes
    );
    assert!(got.notes[1].contains("vrrp_instance skipped") && got.notes[1].contains("VRRP"));
    let web = key(Protocol::Tcp, 80);
    let dns = key(Protocol::Udp, 53);
    let want = vec![
        Request::AddService {
            quorum: Default::default(),
            key: web,
            scheduler: SchedKind::Wrr,
            persistence: Some(
                Persistence::new(Duration::from_secs(600), Ipv4Addr::new(255, 255, 255, 0))
                    .expect("valid"),
            ),
            sorry: Some(rs(50)),
            flags: Default::default(),
        },
        Request::AddReal {
            key: web,
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 3,
            check: Some(CheckSpec {
                port: Some(8080),
                interval: Millis::secs(6),
                timeout: Millis::secs(3),
                retry_delay: Millis::secs(2),
                fall: 4,
                rise: 1,
                on_failure: OnFailure::Inhibit,
                ..CheckSpec::new(Probe::Http(Box::new(HttpCheck {
                    status: vec![(200, 200)],
                    digest: Some("5b6d74f1453e20c09d6a20d909779ad7".into()),
                    host: Some("www.example.org".into()),
                    ..HttpCheck::get("/health")
                })))
            }),
        },
        Request::AddReal {
            key: web,
            addr: rs(12),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: Some(CheckSpec {
                port: None,
                interval: Millis::secs(1),
                timeout: Millis(2500),
                retry_delay: Millis::secs(1),
                fall: 1,
                rise: 1,
                on_failure: OnFailure::Remove,
                ..CheckSpec::new(Probe::Tcp)
            }),
        },
        Request::AddReal {
            key: web,
            addr: rs(13),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 0,
            check: None,
        },
        Request::AddService {
            quorum: Default::default(),
            key: dns,
            scheduler: SchedKind::Sh,
            persistence: None,
            sorry: None,
            flags: Default::default(),
        },
        Request::AddReal {
            key: dns,
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            check: Some(CheckSpec {
                port: Some(53),
                interval: Millis::secs(60),
                fall: 2,
                on_failure: OnFailure::Inhibit,
                ..CheckSpec::new(Probe::Tcp)
            }),
        },
        // The VIP of the vrrp_instance follows keepalived's VRRP.
        Request::Follow {
            vips: vec![Ipv4Addr::new(198, 18, 0, 100).into()],
        },
    ];
    assert_eq!(got.requests, want);
}

#[test]
fn defaults_are_keepalived_s() {
    let got = parse(
        "virtual_server 198.18.0.100 80 {\n lb_kind DR\n real_server 198.18.0.11 80 {\n HTTP_GET {\n url {\n path /\n }\n }\n }\n}\n",
    )
    .expect("parsed");
    assert_eq!(
        got.requests,
        vec![
            Request::AddService {
                quorum: Default::default(),
                key: key(Protocol::Tcp, 80),
                scheduler: SchedKind::Wlc,
                persistence: None,
                sorry: None,
                flags: Default::default(),
            },
            Request::AddReal {
                key: key(Protocol::Tcp, 80),
                addr: rs(11),
                port: 0,
                method: xdpvs_sched::Method::Route,
                weight: 1,
                check: Some(CheckSpec {
                    port: None,
                    interval: Millis::secs(60),
                    timeout: Millis::secs(5),
                    // keepalived's delay_before_retry for HTTP_GET.
                    retry_delay: Millis::secs(3),
                    fall: 2,
                    rise: 1,
                    on_failure: OnFailure::Remove,
                    ..CheckSpec::new(Probe::Http(Box::new(HttpCheck::get("/"))))
                }),
            },
        ]
    );
}

#[test]
fn scheduler_flags_as_keepalived_reads_them() {
    let got = parse(&vs("lb_algo sh\nsh-port\nsh-fallback\nmh-port")).expect("imported");
    // mh-port with sh is ignored, as keepalived does.
    assert!(
        matches!(&got.requests[..], [Request::AddService { flags, .. }] if *flags == xdpvs_sched::SchedFlags(3)),
        "{got:?}"
    );
}

#[test]
fn every_ipvs_scheduler_is_an_lb_algo() {
    for k in xdpvs_sched::SchedKind::ALL {
        let imported = parse(&vs(&format!("lb_algo {}", k.name()))).expect("imported");
        assert!(
            matches!(&imported.requests[..], [Request::AddService { scheduler, .. }] if *scheduler == k),
            "{k}: {imported:?}"
        );
    }
}

fn refused(conf: &str) -> KeepalivedError {
    parse(conf).expect_err("refused")
}

fn vs(body: &str) -> String {
    format!("virtual_server 198.18.0.100 80 {{\nlb_kind DR\n{body}\n}}\n")
}

fn rs11(body: &str) -> String {
    vs(&format!("real_server 198.18.0.11 80 {{\n{body}\n}}"))
}

#[test]
fn everything_else_is_refused_with_its_line() {
    let cases: Vec<(String, usize, &str)> = vec![
        (
            vs("lb_kind LOCAL"),
            3,
            "lb_kind LOCAL: unknown forwarding method LOCAL: use DR, NAT or TUN",
        ),
        (
            vs("lvs_method TUN type gue"),
            3,
            "lvs_method TUN type gue: a gue tunnel needs a port",
        ),
        (
            rs11("lvs_method TUN type gre remcsum"),
            4,
            "a gre tunnel has no remote checksum option",
        ),
        (
            rs11("lvs_method TUN type ipip csum"),
            4,
            "an ipip tunnel has no checksum option",
        ),
        (
            rs11("lvs_method TUN type vxlan"),
            4,
            "unknown tunnel type \"vxlan\"",
        ),
        (vs("lvs_method DR type ipip"), 3, "DR takes no tunnel options"),
        (
            vs("lb_algo lbx"),
            3,
            "lb_algo lbx: xdpvs schedules with rr",
        ),
        (
            vs("protocol SCTP"),
            3,
            "protocol SCTP: xdpvs serves TCP and UDP",
        ),
        (vs("ops"), 3, "ops is not supported"),
        (vs("ha_suspend"), 3, "ha_suspend is not supported"),
        (vs("nat_mask 255.255.255.0"), 3, "nat_mask is not supported"),
        (vs("sorry_server 198.18.0.50 8080"), 3, "cannot map ports"),
        (vs("persistence_granularity 255.0.255.0"), 3, "contiguous"),
        (
            vs("real_server 198.18.0.11 8080 {\n}"),
            3,
            "cannot map ports",
        ),
        (
            rs11("uthreshold 100"),
            4,
            "uthreshold: connection thresholds (ipvsadm -x/-y) are not supported",
        ),
        (
            vs("ha_suspend"),
            3,
            "ha_suspend is not supported: it suspends the checks while this director is VRRP backup",
        ),
        (
            vs("persistence_engine sip"),
            3,
            "persistence_engine is not supported: xdpvs has no persistence engine",
        ),
        (
            vs("sorry_server_lvs_method NAT"),
            3,
            "sorry_server_lvs_method is not supported: xdpvs reaches a sorry server by direct routing",
        ),
        (vs("ip_family inet6"), 3, "ip_family inet6: the VIP is of the other family"),
        (rs11("weight heavy"), 4, "not a weight"),
        (
            "SSL {\n  certificate /etc/ssl/c.pem\n}\n".into(),
            2,
            "SSL certificate: client certificates for SSL_GET are not supported",
        ),
        (
            rs11("TCP_CHECK {\n fwmark 3\n}"),
            5,
            "fwmark is not supported: xdpvs does not mark its checks' packets",
        ),
        (
            rs11("TCP_CHECK {\n bindto 198.18.0.1\n}\nSMTP_CHECK {\n bindto 198.18.0.2\n}"),
            7,
            "the checkers of a real server leave from one place",
        ),
        (rs11("BFD_CHECK {\n name b\n}"), 4, "BFD_CHECK is not supported"),
        (
            rs11("FILE_CHECK {\n track_file nope\n}"),
            5,
            "no track_file nope block is defined",
        ),
        (rs11("MISC_CHECK {\n misc_timeout 3\n}"), 4, "needs misc_path"),
        (rs11("MISC_CHECK {\n connect_port 80\n}"), 5, "connect_port is not supported"),
        (rs11("DNS_CHECK {\n type PTR\n}"), 5, "DNS type PTR"),
        (rs11("UDP_CHECK {\n payload 0g\n}"), 5, "payload: '0g' is not hex"),
        (
            rs11("HTTP_GET {\n url {\n path /\n status_code 299-200\n }\n}"),
            7,
            "status code 299-200",
        ),
        (
            rs11("HTTP_GET {\n url {\n path /\n regex (\n }\n}"),
            5,
            "regex (",
        ),
        (
            rs11("HTTP_GET {\n url {\n path /\n regex_max_offset 9\n }\n}"),
            7,
            "regex_max_offset is not supported",
        ),
        (rs11("notify_down /bin/alert"), 3, "notify_up and notify_down run when a checker moves"),
        (
            rs11("PING_CHECK {\n}\nxdpvs_forwarding_check"),
            3,
            "xdpvs_forwarding_check goes with TCP_CHECK",
        ),
        (
            rs11("TCP_CHECK {\n url {\n path /\n }\n}"),
            5,
            "TCP_CHECK: url is not supported",
        ),
        (rs11("HTTP_GET {\n connect_timeout 3\n}"), 4, "needs a url"),
        (
            rs11("HTTP_GET {\n url {\n path /\n digest xyz\n }\n}"),
            7,
            "illegal digest",
        ),
        (
            rs11("HTTP_GET {\n url {\n path health\n }\n}"),
            6,
            "a path starts with '/'",
        ),
        (
            "virtual_server fwmark 1 {\n}\n".into(),
            1,
            "firewall-mark services are not supported: the mark is set by netfilter, which runs after XDP",
        ),
        (
            "virtual_server group G {\n}\n".into(),
            1,
            "no virtual_server_group G is defined",
        ),
        (
            "virtual_server_group G {\n  fwmark 7\n}\n".into(),
            2,
            "firewall marks are set by netfilter, which runs after XDP",
        ),
        (
            "virtual_server_group G {\n  198.18.0.100\n}\n".into(),
            2,
            "give a port from 1 to 65535",
        ),
        (
            "virtual_server_group G {\n  198.18.0.0/16 80\n}\n".into(),
            2,
            "a group holds at most 1024 addresses",
        ),
        (
            "virtual_server_group G {\n  198.18.0.9-3 80\n}\n".into(),
            2,
            "the range ends before it starts",
        ),
        (
            "virtual_server_group G {\n}\nvirtual_server_group G {\n}\n".into(),
            3,
            "virtual_server_group G is defined twice",
        ),
        (
            "virtual_server 2001:2::100 80 {\nlb_kind DR\nreal_server 198.18.0.11 80 {\n}\n}\n"
                .into(),
            3,
            "an IPv4 server cannot serve the IPv6 virtual server 2001:2::100",
        ),
        (
            "virtual_server 2001:2::100 80 {\nlb_kind DR\npersistence_timeout 60\npersistence_granularity 255.255.255.0\n}\n"
                .into(),
            4,
            "not a prefix length from 1 to 128",
        ),
        (
            "virtual_server 2001:2::zz 80 {\n}\n".into(),
            1,
            "IPv4 or IPv6 address",
        ),
        (
            "virtual_server 198.18.0.100 0 {\n}\n".into(),
            1,
            "not a port",
        ),
        (
            "include /etc/keepalived/none.conf\n".into(),
            1,
            "include /etc/keepalived/none.conf: reading /etc/keepalived/none.conf",
        ),
        (
            "~SEQ(i, 1, 3) x\n".into(),
            1,
            "~SEQ",
        ),
        (
            "bogus_section {\n}\n".into(),
            1,
            "'bogus_section' is not a keepalived section",
        ),
        (
            "virtual_server 198.18.0.100 80 {\n".into(),
            1,
            "never closed",
        ),
        ("}\n".into(), 1, "without a block"),
        (
            "virtual_server 198.18.0.100 80 {\n virtualhost \"www\n}\n".into(),
            2,
            "quoted string",
        ),
        (format!("{}{}", vs(""), vs("")), 5, "defined twice"),
        (
            vs("real_server 198.18.0.11 80 {\n}\nreal_server 198.18.0.11 80 {\n}"),
            5,
            "listed twice",
        ),
    ];
    for (conf, line, says) in cases {
        let e = refused(&conf);
        assert_eq!(e.line, line, "{conf}: {e}");
        assert!(e.message.contains(says), "{conf}: {e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn one_line_blocks_comments_and_quotes() {
    let got = parse(
        "virtual_server 198.18.0.100 80 { # web\n  lb_algo rr ! round robin\n  lb_kind DR\n  real_server 198.18.0.11 80 { weight 2 }\n  virtualhost \"www.example.org\"\n}\n",
    )
    .expect("parsed");
    assert_eq!(got.requests.len(), 2);
    assert_eq!(
        got.requests[1],
        Request::AddReal {
            key: key(Protocol::Tcp, 80),
            addr: rs(11),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 2,
            check: None,
        }
    );
}

#[test]
fn ipv6_virtual_and_real_servers_are_imported() {
    let conf = "virtual_server 2001:2::100 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  persistence_timeout 120\n  persistence_granularity 64\n  sorry_server 2001:2::50 80\n  real_server 2001:2::11 80 {\n    weight 2\n    TCP_CHECK {\n      connect_timeout 3\n    }\n  }\n}\n";
    let got = parse(conf).expect("parsed");
    let key = ServiceKey {
        proto: Protocol::Tcp,
        vip: "2001:2::100".parse().expect("valid"),
        port: 80,
    };
    let Request::AddService {
        key: k,
        scheduler,
        persistence,
        sorry,
        ..
    } = &got.requests[0]
    else {
        panic!("{:?}", got.requests)
    };
    assert_eq!((*k, *scheduler), (key, SchedKind::Rr));
    let p = persistence.expect("persistent");
    assert_eq!((p.timeout, p.prefix_len), (Duration::from_secs(120), 64));
    assert_eq!(*sorry, Some("2001:2::50".parse().expect("valid")));
    let Request::AddReal {
        key: k,
        addr,
        weight,
        check,
        ..
    } = &got.requests[1]
    else {
        panic!("{:?}", got.requests)
    };
    assert_eq!(
        (*k, *addr, *weight),
        (key, "2001:2::11".parse().expect("valid"), 2)
    );
    assert!(check.is_some());
    // Without a granularity an IPv6 service persists per client address (/128).
    let conf = "virtual_server 2001:2::100 80 {\n  lb_kind DR\n  persistence_timeout 60\n}\n";
    let got = parse(conf).expect("parsed");
    let Request::AddService { persistence, .. } = &got.requests[0] else {
        panic!()
    };
    assert_eq!(persistence.expect("persistent").prefix_len, 128);
}

/// keepalived's default method is NAT; NAT maps ports; a real server may say its own.
#[test]
fn nat_is_the_default_maps_ports_and_a_real_server_may_say_its_own() {
    let conf = "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  real_server 198.18.0.11 8080 {\n  }\n  real_server 198.18.0.12 80 {\n    lvs_method DR\n  }\n  real_server 198.18.0.13 80 {\n  }\n}\n";
    let got = parse(conf).expect("parses");
    let reals: Vec<(IpAddr, u16, Method)> = got
        .requests
        .iter()
        .filter_map(|r| match r {
            Request::AddReal {
                addr, port, method, ..
            } => Some((*addr, *port, *method)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reals,
        vec![
            ("198.18.0.11".parse().expect("ip"), 8080, Method::Masq),
            ("198.18.0.12".parse().expect("ip"), 0, Method::Route),
            ("198.18.0.13".parse().expect("ip"), 0, Method::Masq),
        ]
    );
    // A DR real server cannot serve on another port.
    let dr = "virtual_server 198.18.0.100 80 {\n  real_server 198.18.0.11 8080 {\n    lb_kind DR\n  }\n}\n";
    let e = parse(dr).expect_err("refused");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("cannot map ports"), "{e}");
}

/// `lb_kind TUN` with keepalived's tunnel words, on the service and per real server.
#[test]
fn tun_takes_keepalived_tunnel_words_on_the_service_and_per_real_server() {
    let conf = "virtual_server 198.18.0.100 80 {\n  lb_kind TUN\n  real_server 198.18.9.11 80 {\n  }\n  real_server 198.18.9.12 80 {\n    lvs_method TUN type gue port 6080 csum\n  }\n  real_server 198.18.9.13 80 {\n    lvs_method TUN type gre csum\n  }\n  real_server 198.18.0.14 80 {\n    lvs_method NAT\n  }\n}\n";
    let got = parse(conf).expect("parses");
    let methods: Vec<Method> = got
        .requests
        .iter()
        .filter_map(|r| match r {
            Request::AddReal { method, .. } => Some(*method),
            _ => None,
        })
        .collect();
    assert_eq!(
        methods,
        vec![
            Method::Tunnel(xdpvs_sched::Tunnel::IPIP),
            Method::Tunnel(xdpvs_sched::Tunnel {
                kind: xdpvs_sched::TunKind::Gue,
                port: 6080,
                csum: xdpvs_sched::TunCsum::Csum,
            }),
            Method::Tunnel(xdpvs_sched::Tunnel {
                kind: xdpvs_sched::TunKind::Gre,
                port: 0,
                csum: xdpvs_sched::TunCsum::Csum,
            }),
            Method::Masq,
        ]
    );
    // A tunnel real server serves on the service's port.
    let other = "virtual_server 198.18.0.100 80 {\n  lb_kind TUN\n  real_server 198.18.9.11 8080 {\n  }\n}\n";
    assert!(parse(other)
        .expect_err("refused")
        .message
        .contains("cannot map ports"));
}

#[test]
fn a_virtual_server_group_gives_each_of_its_vips_and_ports_the_same_service() {
    let conf = "virtual_server_group web {\n  198.18.0.100-101 80\n  198.18.0.108/31 443\n  198.18.0.120 8080\n}\n\
                virtual_server group web {\n  lb_algo wlc\n  real_server 198.18.1.11 8080 {\n    weight 2\n  }\n}\n";
    let got = parse(conf).expect("parsed");
    let services: Vec<(IpAddr, u16)> = got
        .requests
        .iter()
        .filter_map(|r| match r {
            Request::AddService { key, scheduler, .. } => {
                assert_eq!(*scheduler, SchedKind::Wlc);
                Some((key.vip, key.port))
            }
            _ => None,
        })
        .collect();
    let v = |last: u8| IpAddr::from(Ipv4Addr::new(198, 18, 0, last));
    assert_eq!(
        services,
        [
            (v(100), 80),
            (v(101), 80),
            (v(108), 443),
            (v(109), 443),
            (v(120), 8080)
        ]
    );
    assert_eq!(got.requests.len(), 10, "a real server each");
    assert_eq!(
        got.lines.iter().map(|p| p.line).collect::<Vec<_>>(),
        [6, 8, 6, 8, 6, 8, 6, 8, 6, 8]
    );
    // IPv6 ranges count the last group in hex.
    let six = parse(
        "virtual_server_group v6 {\n  2001:2::fe-101 80\n}\nvirtual_server group v6 {\n  lb_kind DR\n  real_server 2001:2::11 80 {\n  }\n}\n",
    )
    .expect("parsed");
    assert_eq!(six.requests.len(), 8, "0xfe to 0x101: four VIPs");
}

#[test]
fn includes_conditions_and_parameters_are_read_as_keepalived_reads_them() {
    use std::path::{Path, PathBuf};
    struct Table;
    impl pre::Files for Table {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            match path.to_str() {
                Some("/etc/keepalived/conf.d/web.conf") => Ok(
                    "virtual_server ${VIP} 80 {\n  lb_kind DR\n  @lb1 real_server 198.18.0.11 80 {\n  @lb1 }\n  @^lb1 real_server 198.18.0.12 80 {\n  @^lb1 }\n}\n".into(),
                ),
                Some("/etc/keepalived/conf.d/bad.conf") => {
                    Ok("virtual_server 198.18.0.101 80 {\n  lb_algo nope\n}\n".into())
                }
                _ => Err(std::io::ErrorKind::NotFound.into()),
            }
        }
        fn glob(&self, pattern: &str) -> Vec<PathBuf> {
            match pattern {
                "/etc/keepalived/conf.d/*.conf" => vec!["/etc/keepalived/conf.d/web.conf".into()],
                _ => Vec::new(),
            }
        }
    }
    let main = "global_defs {\n  router_id lb\n}\n$VIP=198.18.0.100\ninclude conf.d/*.conf\n";
    let path = Path::new("/etc/keepalived/keepalived.conf");
    for (id, real) in [("lb1", rs(11)), ("lb2", rs(12))] {
        let got = parse_with(path, main, id, &Table).expect("parsed");
        assert_eq!(got.requests.len(), 2, "{id}");
        assert!(
            matches!(&got.requests[1], Request::AddReal { addr, .. } if *addr == real),
            "{id}: {:?}",
            got.requests
        );
        assert_eq!(
            got.lines[1],
            Place {
                file: Some("/etc/keepalived/conf.d/web.conf".into()),
                line: if id == "lb1" { 3 } else { 5 },
            }
        );
        assert!(
            got.notes[0].starts_with("line 1: global_defs skipped"),
            "{:?}",
            got.notes
        );
    }
    // A refusal in an included file names that file and its line.
    let e = parse_with(path, "include conf.d/bad.conf\n", "lb1", &Table).expect_err("refused");
    assert_eq!(
        e.at(path),
        "/etc/keepalived/conf.d/bad.conf:2: virtual_server 198.18.0.101 80: lb_algo nope: xdpvs schedules with rr, wrr, lc, wlc, sh, mh, dh, sed, nq, lblc, lblcr, fo, ovf or twos"
    );
}

#[test]
fn checker_defaults_of_the_virtual_and_real_server_reach_their_checks() {
    let conf = vs("retry 4\nconnect_timeout 7\ndelay_before_retry 2\nwarmup 5\nsmtp_alert\nhashed\nsnmp_name web\nip_family inet\n\
                   real_server 198.18.0.11 80 {\n  TCP_CHECK {\n  }\n}\n\
                   real_server 198.18.0.12 80 {\n  TCP_CHECK {\n    retry 0\n  }\n  connect_timeout 9\n}");
    let got = parse(&conf).expect("parsed");
    let checks: Vec<CheckSpec> = got
        .requests
        .iter()
        .filter_map(|r| match r {
            Request::AddReal { check, .. } => check.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(checks.len(), 2);
    // The virtual server's defaults.
    assert_eq!(
        (checks[0].fall, checks[0].timeout, checks[0].retry_delay),
        (5, Millis::secs(7), Millis::secs(2))
    );
    // The real server's own connect_timeout (after its checker in the block), and the
    // checker's own retry.
    assert_eq!((checks[1].fall, checks[1].timeout), (1, Millis::secs(9)));
}

#[test]
fn ping_check_is_an_echo_request_with_keepalived_s_defaults() {
    let got = parse(&rs11("PING_CHECK {\n  retry 2\n  delay_before_retry 3\n}")).expect("parsed");
    let Some(Request::AddReal { check: Some(c), .. }) = got.requests.get(1) else {
        panic!("{:?}", got.requests);
    };
    assert_eq!(c.probe, Probe::Ping);
    assert_eq!((c.fall, c.retry_delay, c.port), (3, Millis::secs(3), None));
    let e = refused(&rs11("PING_CHECK {\n  connect_port 80\n}"));
    assert!(e.message.contains("connect_port is not supported"), "{e}");
}

#[test]
fn every_checker_quorum_and_script_of_keepalived_2_is_imported() {
    let conf = r#"
global_defs {
    script_user nobody
    enable_script_security
}
track_file rs12_weight {
    file /run/xdpvs-rs12.weight
    weight 2 reverse
}
SSL {
    ca /etc/ssl/ca.pem
}
virtual_server 198.18.0.100 443 {
    lb_kind DR
    quorum 3
    hysteresis 1
    quorum_up "/usr/local/bin/vs up"
    quorum_down /usr/local/bin/vs-down root
    omega
    alpha
    sorry_server 198.18.0.50
    sorry_server_inhibit
    real_server 198.18.0.11 443 {
        weight 2
        notify_up "/usr/local/bin/notify rs11 UP"
        notify_down /usr/local/bin/notify
        SSL_GET {
            enable_sni
            virtualhost www.example.org
            http_protocol 1.1
            fast_recovery
            url {
                path /a
                status_code 200-299 301
                regex "^ok"
                regex_options caseless
            }
            url {
                path /b
                regex down
                regex_no_match
            }
            connect_ip 198.18.0.111
            bindto 198.18.0.1
            bind_port 999
            bind_if eth0
        }
        MISC_CHECK {
            misc_path "/usr/local/bin/weight rs11"
            misc_timeout 3
            misc_dynamic
        }
    }
    real_server 198.18.0.12 {
        xdpvs_forwarding_check
        FILE_CHECK {
            track_file rs12_weight
            dynamic
        }
        SMTP_CHECK {
            helo_name mx.example.org
            connect_port 25
        }
    }
    real_server 198.18.0.13 443 {
        DNS_CHECK { type A
            name www.example.org.
        }
        UDP_CHECK {
            payload 0a 0b0c
            require_reply 0axx
            max_reply_length 64
        }
    }
}
"#;
    let got = parse(conf).expect("imported");
    let Request::AddService { quorum, sorry, .. } = &got.requests[0] else {
        panic!("{got:?}")
    };
    let script = |c: &str, u: Option<&str>| Script {
        command: c.into(),
        user: u.map(str::to_string),
    };
    assert_eq!(
        *quorum,
        Quorum {
            quorum: 3,
            hysteresis: 1,
            up: Some(script("/usr/local/bin/vs up", Some("nobody"))),
            down: Some(script("/usr/local/bin/vs-down", Some("root"))),
            omega: true,
        }
    );
    assert_eq!(*sorry, Some(rs(50)));
    let check = |i: usize| match &got.requests[i] {
        Request::AddReal { check: Some(c), .. } => c.clone(),
        r => panic!("{r:?}"),
    };
    let c11 = check(1);
    let https = |path: &str| HttpCheck {
        tls: true,
        host: Some("www.example.org".into()),
        sni: Some("www.example.org".into()),
        protocol: HttpProtocol::Close11,
        ..HttpCheck::get(path)
    };
    assert_eq!(
        c11.probe,
        Probe::Http(Box::new(HttpCheck {
            status: vec![(200, 299), (301, 301)],
            regex: Some("(?i)^ok".into()),
            ..https("/a")
        }))
    );
    assert_eq!(
        c11.also.iter().map(|a| a.probe.clone()).collect::<Vec<_>>(),
        vec![
            Probe::Http(Box::new(HttpCheck {
                regex: Some("down".into()),
                regex_no_match: true,
                ..https("/b")
            })),
            Probe::Misc(MiscCheck {
                command: "/usr/local/bin/weight rs11".into(),
                timeout: Some(Millis::secs(3)),
                dynamic: true,
                user: Some("nobody".into()),
            }),
        ]
    );
    assert!(c11.alpha, "the virtual server's alpha");
    assert_eq!(c11.connect_ip, Some(rs(111)));
    assert_eq!((c11.bindto, c11.bind_port), (Some(rs(1)), Some(999)));
    assert_eq!(c11.bind_if.as_deref(), Some("eth0"));
    assert_eq!(
        c11.notify_up,
        Some(script("/usr/local/bin/notify rs11 UP", Some("nobody")))
    );
    // HTTP's delay_before_retry (3 s) and MISC's (1 s): the shorter; MISC's retry 0.
    assert_eq!((c11.retry_delay, c11.fall), (Millis::secs(1), 1));
    let c12 = check(2);
    assert_eq!(
        c12.probe,
        Probe::File(FileCheck {
            path: "/run/xdpvs-rs12.weight".into(),
            weight: 2,
            reverse: true,
            dynamic: true,
        })
    );
    assert_eq!(
        c12.also.iter().map(|a| a.probe.clone()).collect::<Vec<_>>(),
        vec![Probe::Smtp {
            helo: "mx.example.org".into()
        }]
    );
    assert_eq!(c12.port, Some(25));
    assert!(c12.forwarding);
    let c13 = check(3);
    assert_eq!(
        c13.probe,
        Probe::Dns {
            qtype: 1,
            name: "www.example.org".into()
        }
    );
    assert_eq!(
        c13.also.iter().map(|a| a.probe.clone()).collect::<Vec<_>>(),
        vec![Probe::Udp(UdpCheck {
            payload: Some(vec![0x0a, 0x0b, 0x0c]),
            require_reply: true,
            reply: Some("0axx".into()),
            min: 0,
            max: 64,
        })]
    );
    // DNS_CHECK's retry of 3, its delay_before_retry of delay_loop (60 s), UDP's 1 s.
    assert_eq!((c13.fall, c13.retry_delay), (2, Millis::secs(1)));
    assert!(
        got.notes
            .iter()
            .any(|n| n.contains("SSL ca taken without effect")),
        "{:?}",
        got.notes
    );
}

#[test]
fn several_smtp_hosts_are_several_checkers_each_where_it_connects() {
    let got = parse(&rs11(
        "SMTP_CHECK {\n connect_ip 198.18.0.21\n connect_port 25\n}\nSMTP_CHECK {\n connect_ip 198.18.0.22\n connect_port 587\n}\nTCP_CHECK {\n}",
    ))
    .expect("imported");
    let Request::AddReal { check: Some(c), .. } = &got.requests[1] else {
        panic!("{got:?}")
    };
    assert_eq!((c.connect_ip, c.port), (Some(rs(21)), Some(25)));
    let at: Vec<(Option<u16>, Option<IpAddr>)> = c.also.iter().map(|a| (a.port, a.ip)).collect();
    // The second host; the TCP_CHECK at the real server itself (198.18.0.11:80).
    assert_eq!(
        at,
        vec![(Some(587), Some(rs(22))), (Some(80), Some(rs(11)))]
    );
    let words: Vec<String> = c.also.iter().map(|a| a.word()).collect();
    assert_eq!(
        words,
        ["smtp,port=587,ip=198.18.0.22", "tcp,port=80,ip=198.18.0.11"]
    );
    for w in &words {
        let back = crate::health::spec::parse_checker(w).expect("reads back");
        assert_eq!(back.word(), *w);
    }
}

#[test]
fn global_defs_lvs_timeouts_are_honoured_and_the_sync_daemon_refused() {
    let got = parse(&format!(
        "global_defs {{\n  lvs_timeouts tcp 7200 udp 30\n  lvs_flush\n  notify_fifo /run/k.fifo\n}}\n{}",
        vs("")
    ))
    .expect("imported");
    assert_eq!(
        got.requests[0],
        Request::SetTimeouts(crate::control::proto::TimeoutSet {
            tcp: 7200,
            tcpfin: 0,
            udp: 30
        })
    );
    assert_eq!(got.lines[0], Place::line(2));
    assert!(
        got.notes
            .iter()
            .any(|n| n.contains("notify_fifo: keepalived's VRRP events still go there")),
        "{:?}",
        got.notes
    );
    for (conf, line, says) in [
        (
            "global_defs {\n lvs_sync_daemon eth0 VI_1 id 300\n}\n",
            2,
            "id: 0 to 255",
        ),
        (
            "global_defs {\n lvs_timeouts tcp\n}\n",
            2,
            "lvs_timeouts tcp: give tcp, tcpfin and udp",
        ),
        (
            "global_defs {\n lvs_notify_fifo /run/f\n}\n",
            2,
            "lvs_notify_fifo is not supported",
        ),
    ] {
        let e = refused(conf);
        assert_eq!(e.line, line, "{conf}: {e}");
        assert!(e.message.contains(says), "{conf}: {e}");
    }
}

#[test]
fn lvs_sync_daemon_is_read_with_keepalived_s_words_and_defaults() {
    let vrrp = "vrrp_instance VI_1 {\n  virtual_ipaddress {\n    198.18.0.200/24\n    198.18.0.201\n  }\n}\nvrrp_instance VI_2 {\n  virtual_ipaddress {\n    198.18.0.202\n  }\n}\n";
    let got = parse(&format!(
        "global_defs {{\n  lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 port 8849 ttl 2 group 224.0.0.82\n}}\n{vrrp}{}",
        vs("")
    ))
    .expect("imported");
    let daemon = |r: &Request| matches!(r, Request::SyncDaemon { .. });
    assert_eq!(
        got.requests.iter().find(|r| daemon(r)),
        Some(&Request::SyncDaemon {
            settings: DaemonSettings {
                iface: "eth1".into(),
                syncid: 7,
                maxlen: 1400,
                port: 8849,
                ttl: 2,
                group: Ipv4Addr::new(224, 0, 0, 82),
            },
            instance: Some("VI_1".into()),
            vips: vec![
                "198.18.0.200".parse().expect("address"),
                "198.18.0.201".parse().expect("address")
            ],
        })
    );
    assert!(
        got.notes
            .iter()
            .any(|n| n.contains("keepalived's VRRP process must not read this line")),
        "{:?}",
        got.notes
    );
    let plain = parse(&format!(
        "global_defs {{\n  lvs_sync_daemon eth0 inst VI_2\n}}\n{vrrp}{}",
        vs("")
    ))
    .expect("imported");
    assert_eq!(
        plain.requests.iter().find(|r| daemon(r)),
        Some(&Request::SyncDaemon {
            settings: DaemonSettings::on("eth0"),
            instance: Some("VI_2".into()),
            vips: vec!["198.18.0.202".parse().expect("address")],
        })
    );
    // No instance named: both roles at once.
    let both = parse(&format!(
        "global_defs {{\n  lvs_sync_daemon eth0\n}}\n{}",
        vs("")
    ))
    .expect("imported");
    assert_eq!(
        both.requests.iter().find(|r| daemon(r)),
        Some(&Request::SyncDaemon {
            settings: DaemonSettings::on("eth0"),
            instance: None,
            vips: Vec::new(),
        })
    );
    // An instance the file does not have is refused at its line.
    let e = refused(&format!(
        "global_defs {{\n  lvs_sync_daemon eth0 VI_9\n}}\n{vrrp}{}",
        vs("")
    ));
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("no vrrp_instance VI_9"), "{e}");
    let e = refused(&format!(
        "global_defs {{\n  lvs_sync_daemon eth0 VI_1 VI_2\n}}\n{vrrp}{}",
        vs("")
    ));
    assert!(e.message.contains("one VRRP instance only"), "{e}");
}
