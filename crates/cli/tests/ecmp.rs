//! Scale-out, as root: two directors announcing the VIP with `run --announce` and BIRD
//! to a router that spreads flows over them by ECMP (crates/testkit/src/lab/ecmp.rs).
//! Real clients (ab, long-lived keep-alive connections) and real HTTP servers; one
//! director killed, drained and restarted under load; every request must succeed.
//!
//! Skips (with a message) when not root, without AF_XDP, or without BIRD and nft (which
//! `bash .ci/setup` installs; under CI=true their absence fails the tests).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xdpvs_testkit::lab::ecmp::{self, director_ip, EcmpLab, ECMP_VIP};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lab_or_skip() -> Option<(MutexGuard<'static, ()>, EcmpLab)> {
    if let Err(why) = ecmp::available() {
        // CI runs as root after .ci/setup installed BIRD and nft: there, a skip is a failure.
        xdpvs_testkit::cannot_run("scale-out test", &why);
        return None;
    }
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = EcmpLab::up(Path::new(env!("CARGO_BIN_EXE_xdpvs"))).expect("lab builds");
    Some((guard, lab))
}

fn both_directors(lab: &mut EcmpLab) {
    for n in 1..=2 {
        lab.start_director(n, &[]).expect("director starts");
    }
    let t = lab
        .wait_next_hops(&[director_ip(1), director_ip(2)], Duration::from_secs(30))
        .expect("the router routes the VIP over both directors");
    eprintln!("both directors announced and routed in {t:?}");
}

/// One keep-alive connection's record, as the client printed it.
#[derive(Debug)]
struct Conn {
    client: String,
    requests: u64,
    failed: u64,
    servers: Vec<String>,
    max_latency: f64,
    error: Option<String>,
}

fn keepalive_results(child: std::process::Child) -> Vec<Conn> {
    let out = child.wait_with_output().expect("the client ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keep-alive client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            Conn {
                client: v["client"].as_str().unwrap_or("").to_string(),
                requests: v["requests"].as_u64().unwrap_or(0),
                failed: v["failed"].as_u64().unwrap_or(1),
                servers: v["servers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                max_latency: v["max_latency"].as_f64().unwrap_or(0.0),
                error: v["error"].as_str().map(String::from),
            }
        })
        .collect()
}

/// Every connection answered every request, always by the same real server; and both
/// real servers served some (mh spreads the client's addresses over them).
fn assert_unbroken(conns: &[Conn], n: usize, lab: &EcmpLab) {
    let logs = || format!("d1:\n{}\nd2:\n{}", lab.director_log(1), lab.director_log(2));
    assert_eq!(conns.len(), n, "{conns:?}");
    for c in conns {
        assert!(
            c.failed == 0 && c.servers.len() == 1 && c.requests > 5,
            "connection {} broke: {c:?}\n{}",
            c.client,
            logs()
        );
        assert!(c.error.is_none(), "{c:?}");
    }
    let mut servers: Vec<&str> = conns.iter().map(|c| c.servers[0].as_str()).collect();
    servers.sort();
    servers.dedup();
    assert_eq!(servers, ["rs1", "rs2"], "{conns:?}");
}

/// `ab`'s "Complete requests" and "Failed requests".
fn ab_figures(out: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no {name} in ab's output:\n{text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    (figure("Complete requests"), figure("Failed requests"))
}

fn ab(lab: &EcmpLab, n: u32) -> std::process::Output {
    let url = format!("http://{ECMP_VIP}/");
    lab.client(&[
        "ab",
        "-q",
        "-n",
        &n.to_string(),
        "-c",
        "8",
        "-s",
        "30",
        &url,
    ])
    .expect("ab runs")
}

#[test]
fn new_connections_spread_over_both_directors_and_a_killed_one_breaks_nothing() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    both_directors(&mut lab);

    // (a) New connections: all answered, both directors take a share.
    let out = ab(&lab, 600);
    assert_eq!(
        ab_figures(&out),
        (600, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shares: Vec<u64> = (1..=2)
        .map(|n| lab.director_conns(n).expect("counters"))
        .collect();
    eprintln!(
        "(a) 600 connections: {} via d1, {} via d2",
        shares[0], shares[1]
    );
    assert!(shares.iter().sum::<u64>() >= 600, "{shares:?}");
    assert!(shares.iter().all(|&s| s >= 120), "ECMP spread {shares:?}");

    // (b) 20 long-lived connections; xdpvs on d1 killed (its BIRD keeps running).
    let before = lab.director_conns(1).expect("counters");
    let client = lab
        .keepalive_client(20, 16.0, 0.2, 30.0)
        .expect("client starts");
    std::thread::sleep(Duration::from_secs(3));
    let on_d1 = lab.director_conns(1).expect("counters") - before;
    assert!(on_d1 > 0, "no keep-alive connection went through d1");
    let killed = Instant::now();
    lab.signal_director(1, "KILL").expect("kill");
    lab.wait_director(1, Duration::from_secs(5))
        .expect("d1 dies");
    let failover = lab
        .wait_next_hops(&[director_ip(2)], Duration::from_secs(15))
        .expect("d1's route is withdrawn on its own");
    let gone = lab.sh("d1", "ip -4 addr show dev ifb0").expect("ip");
    assert!(
        !String::from_utf8_lossy(&gone.stdout).contains(&ECMP_VIP.to_string()),
        "the VIP outlived its lifetime on d1's ifb0"
    );
    let conns = keepalive_results(client);
    let stall = conns.iter().map(|c| c.max_latency).fold(0.0, f64::max);
    eprintln!(
        "(b) xdpvs on d1 killed with {on_d1} of 20 connections through it: route withdrawn after {:.2} s, {} requests, {} failed, slowest request {stall:.2} s",
        failover.as_secs_f64(),
        conns.iter().map(|c| c.requests).sum::<u64>(),
        conns.iter().map(|c| c.failed).sum::<u64>(),
    );
    assert!(killed.elapsed() < Duration::from_secs(60));
    assert_unbroken(&conns, 20, &lab);

    // SIGTERM drains as `xdpvs drain` does: routes withdrawn, then a clean stop.
    lab.start_director(1, &[]).expect("d1 starts again");
    lab.wait_next_hops(&[director_ip(1), director_ip(2)], Duration::from_secs(15))
        .expect("d1 routed again");
    lab.signal_director(1, "TERM").expect("term");
    lab.wait_next_hops(&[director_ip(2)], Duration::from_secs(2))
        .expect("SIGTERM withdraws the route at once");
    let status = lab
        .wait_director(1, Duration::from_secs(10))
        .expect("d1 stops");
    assert!(status.success(), "{status}");
    assert!(
        lab.director_log(1).contains("drained:"),
        "{}",
        lab.director_log(1)
    );
    let left = lab.sh("d1", "nft list tables").expect("nft");
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("xdpvs"),
        "a clean stop removes the nftables guard"
    );
}

#[test]
fn a_drained_director_loses_no_request_and_a_restarted_one_takes_flows_over() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    both_directors(&mut lab);

    // A VIP without a real server in service is withdrawn (here: every one quiesced on
    // d1), and announced again once one is back.
    let service = format!("{ECMP_VIP}:80");
    let weights = |w: &str| {
        for n in 1..=2 {
            let real = ecmp::ecmp_real_ip(n).to_string();
            lab.xdpvs(1, &["-e", "-t", &service, "-r", &real, "-g", "-w", w])
                .expect("edit");
        }
    };
    weights("0");
    let t = lab
        .wait_next_hops(&[director_ip(2)], Duration::from_secs(5))
        .expect("withdrawn with no real server in service");
    eprintln!("d1's VIP withdrawn {t:?} after its real servers were quiesced");
    weights("1");
    lab.wait_next_hops(&[director_ip(1), director_ip(2)], Duration::from_secs(5))
        .expect("announced again");

    // (c) d1 drained under ab's load.
    let url = format!("http://{ECMP_VIP}/");
    let load = lab
        .client_spawn(&["ab", "-q", "-n", "4000", "-c", "8", "-s", "30", &url])
        .expect("ab starts");
    std::thread::sleep(Duration::from_millis(1500));
    let began = Instant::now();
    let said = lab.xdpvs(1, &["drain"]).expect("drain");
    let drained = began.elapsed();
    assert!(
        said.contains("VIPs withdrawn") && said.contains("stopped"),
        "{said}"
    );
    let status = lab
        .wait_director(1, Duration::from_secs(5))
        .expect("d1 stops");
    assert!(
        status.success(),
        "d1 exited with {status}:\n{}",
        lab.director_log(1)
    );
    let out = load.wait_with_output().expect("ab ends");
    let (done, failed) = ab_figures(&out);
    let d1_log = lab.director_log(1);
    eprintln!(
        "(c) d1 drained in {:.2} s under ab: {done} requests, {failed} failed; {}",
        drained.as_secs_f64(),
        d1_log
            .lines()
            .find(|l| l.contains("drained:"))
            .unwrap_or("")
    );
    assert_eq!(
        (done, failed),
        (4000, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(lab.next_hops().expect("routes"), [director_ip(2)]);

    // (d) d1 restarted while 20 connections run through d2: ECMP moves some of them to
    // d1, which takes them over on their real servers; new connections reach it too.
    let client = lab
        .keepalive_client(20, 14.0, 0.2, 30.0)
        .expect("client starts");
    std::thread::sleep(Duration::from_secs(3));
    lab.start_director(1, &[]).expect("d1 starts again");
    let back = lab
        .wait_next_hops(&[director_ip(1), director_ip(2)], Duration::from_secs(15))
        .expect("d1 routed again");
    std::thread::sleep(Duration::from_secs(2));
    let taken_over = lab.director_conns(1).expect("counters");
    let conns = keepalive_results(client);
    eprintln!(
        "(d) d1 back in the router's table {:.2} s after it started; it took over {taken_over} of 20 running connections; {} requests, {} failed",
        back.as_secs_f64(),
        conns.iter().map(|c| c.requests).sum::<u64>(),
        conns.iter().map(|c| c.failed).sum::<u64>(),
    );
    assert!(taken_over > 0, "ECMP moved no running connection to d1");
    assert_unbroken(&conns, 20, &lab);
    let before = lab.director_conns(1).expect("counters");
    let out = ab(&lab, 400);
    assert_eq!(ab_figures(&out), (400, 0));
    let new = lab.director_conns(1).expect("counters") - before;
    eprintln!("(d) of 400 new connections, {new} via d1");
    assert!(new >= 80, "d1 attracts new connections again: {new} of 400");
}

#[test]
fn an_announce_interface_that_does_not_exist_is_created_or_refused_clearly() {
    let Some((_one, lab)) = lab_or_skip() else {
        return;
    };
    // Can this kernel make dummy interfaces? (This one cannot: no dummy driver.)
    let dummy = lab
        .sh(
            "d1",
            "ip link add xvprobe0 type dummy && ip link del xvprobe0",
        )
        .is_ok();
    let socket = lab.socket(1);
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("d1")])
        .arg(env!("CARGO_BIN_EXE_xdpvs"))
        .args(["run", "-i", "eth0", "--announce", "xvvips0", "--socket"])
        .arg(&socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xdpvs starts");
    if dummy {
        let deadline = Instant::now() + Duration::from_secs(20);
        while lab.sh("d1", "ip link show xvvips0").is_err() {
            assert!(Instant::now() < deadline, "no dummy interface made");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    } else {
        let out = child.wait_with_output().expect("xdpvs exits");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(
                "--announce xvvips0: no such interface, and a dummy one could not be created"
            ) && err.contains("type ifb"),
            "{err}"
        );
    }
}

/// Fellow directors: with `--announce` the VIP is routed to each director's own
/// address, so neither answers ARP for it nor advertises it, and neither's watch (which
/// asks who has the VIP every 5 s) takes the other for a conflict; a real server on the
/// same LAN that answers ARP for the VIP is still named, by both. `xdpvs check` passes
/// on both.
#[test]
fn fellow_directors_are_no_conflict_and_a_misconfigured_real_server_still_is() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    both_directors(&mut lab);
    // Two rounds of who-has from each director.
    std::thread::sleep(Duration::from_secs(11));
    for n in 1..=2 {
        let log = lab.director_log(n);
        assert!(!log.contains("VIP conflict"), "director {n}:\n{log}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdpvs"))
            .arg("check")
            .env("XDPVS_SOCKET", lab.socket(n))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("check runs");
        let checked = String::from_utf8_lossy(&out.stdout).to_string();
        // Every check passes: the real servers' answers come from the VIP, which the
        // director holds itself (on ifb0), and are heard all the same.
        assert!(
            out.status.success()
                && checked.contains(&format!(
                    "✓ VIP {ECMP_VIP}: no host but the director answers ARP for it"
                ))
                && checked.ends_with("7 checks: 7 passed, 0 failed\n"),
            "director {n}:\n{checked}"
        );
    }
    // rs1 answers ARP for the VIP (on its lo) like any local address: arp_ignore=0.
    lab.sh(
        "r1",
        "sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.eth0.arp_ignore=0",
    )
    .expect("misconfigured");
    let named = format!("VIP conflict: real server {} (", ecmp::ecmp_real_ip(1));
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 1..=2 {
        while !lab.director_log(n).contains(&named) {
            assert!(
                Instant::now() < deadline,
                "director {n} never named rs1:\n{}",
                lab.director_log(n)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = lab.director_log(n);
        let conflicts: Vec<&str> = log.lines().filter(|l| l.contains("VIP conflict")).collect();
        assert!(
            conflicts.iter().all(|l| l.contains(&named)),
            "director {n} names only rs1: {conflicts:#?}"
        );
    }
}
