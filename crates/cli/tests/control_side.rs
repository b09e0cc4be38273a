//! End to end, as root: the control side under clients that misbehave. Silent clients and
//! a paused `-Lnc` reader delay neither a health failover, nor `-Ln`, nor a SIGTERM; a
//! listing of a million connections streams while traffic flows, and no worker pauses
//! for it longer than 10 ms.
//!
//! Skips (with a message) when not root or when the kernel lacks AF_XDP; under CI=true
//! that is a failure instead.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xdpvs_director::control::client;
use xdpvs_director::control::proto::{write_message, Reply, Request};
use xdpvs_testkit::lab::{self, Lab, LabSpec, VIP};

/// One lab at a time (two directors spinning on a 2-core machine measure nothing).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lab_or_skip(spec: LabSpec) -> Option<(MutexGuard<'static, ()>, Lab)> {
    if let Err(why) = lab::available() {
        xdpvs_testkit::cannot_run("end-to-end test", &why);
        return None;
    }
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up(Path::new(env!("CARGO_BIN_EXE_xdpvs")), spec).expect("lab builds");
    Some((guard, lab))
}

fn x(lab: &Lab, args: &str) -> String {
    lab.xdpvs(&args.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("{e}\ndirector log:\n{}", lab.director_log()))
}

/// Sends a UDP datagram to VIP:`port` from each of `flows` source address/port pairs of
/// the client's namespace, straight onto its link (AF_PACKET), `rate` frames a second at
/// most: source addresses 198.19.A.B (B from 1), ports from 1024.
const UDP_FLOWS: &str = r#"
import socket, struct, sys, time
dst_mac, src_mac = bytes.fromhex(sys.argv[1].replace(':', '')), bytes.fromhex(sys.argv[2].replace(':', ''))
vip, port, flows, rate = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
ports = 64000
def csum(b):
    t = sum(struct.unpack('!10H', b))
    t = (t & 0xffff) + (t >> 16)
    t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
sent, start = 0, time.monotonic()
for a in range((flows + ports - 1) // ports):
    src = bytes([198, 19, (a + 1) >> 8 & 0xff, (a + 1) & 0xff])
    ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + 4, 0, 0, 64, 17, 0, src, socket.inet_aton(vip)))
    struct.pack_into('!H', ip, 10, csum(bytes(ip)))
    frame = bytearray(dst_mac + src_mac + b'\x08\x00' + bytes(ip) + struct.pack('!HHHH', 0, port, 12, 0) + b'xdps')
    for p in range(min(ports, flows - sent)):
        struct.pack_into('!H', frame, 34, 1024 + p)
        s.send(frame)
        sent += 1
        if sent % 1000 == 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
print(sent)
"#;

fn send_udp_flows(lab: &Lab, port: u16, flows: u32, rate: u32) {
    let (dmac, cmac) = (lab.mac("d").expect("mac"), lab.mac("c").expect("mac"));
    let (port, flows, rate) = (port.to_string(), flows.to_string(), rate.to_string());
    let vip = VIP.to_string();
    let out = lab
        .exec(
            &lab.ns("c"),
            &[
                "python3", "-c", UDP_FLOWS, &dmac, &cmac, &vip, &port, &flows, &rate,
            ],
        )
        .expect("the flows are sent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A metric of the director's `/metrics`, summed over its labels.
fn metric(lab: &Lab, name: &str) -> f64 {
    let text = lab
        .curl("http://198.18.0.1:9100/metrics")
        .unwrap_or_else(|e| panic!("{e}"));
    let sum: f64 = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    sum
}

/// How long `-Ln` takes over the control socket (the client library, as the CLI asks).
fn time_list(lab: &Lab) -> Duration {
    let t = Instant::now();
    let answer = client::request(lab.socket(), &Request::List { service: None })
        .expect("the director answers");
    let took = t.elapsed();
    assert!(matches!(answer, Ok(Reply::Table(_))), "{answer:?}");
    took
}

#[test]
fn silent_clients_and_a_paused_reader_delay_no_failover_no_listing_and_no_stop() {
    if let Err(why) = xdpvs_testkit::lab::ecmp::available() {
        xdpvs_testkit::cannot_run("end-to-end test", &why);
        return;
    }
    let Some((_one, mut lab)) = lab_or_skip(LabSpec::default()) else {
        return;
    };
    // With --announce, SIGTERM drains (withdraw, forward until idle, stop).
    let d = lab.ns("d");
    lab.sh(&d, "ip link add ifb0 type ifb").expect("ifb");
    // With --announce the VIP is routed to the director, which answers no ARP for it:
    // the client routes it via the director's address, as a router would.
    lab.sh(&lab.ns("c"), "ip route add 198.18.0.100/32 via 198.18.0.1")
        .expect("route");
    lab.start_director(&["--announce", "ifb0", "--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    // HTTP checked every 0.5 s, down after 2 failures: out within 2 x 0.5 + 0.5 s.
    let (fall, interval) = (2.0, 0.5);
    let check =
        "--check http:/ --check-interval 0.5 --check-timeout 0.5 --check-retry-delay 0.2 --fall 2";
    x(&lab, "-A -t 198.18.0.100:80 -s rr");
    x(&lab, "-A -u 198.18.0.100:53 -s rr");
    for n in 1..=3 {
        x(
            &lab,
            &format!("-a -t 198.18.0.100:80 -r 198.18.0.1{n} -g {check}"),
        );
        x(&lab, &format!("-a -u 198.18.0.100:53 -r 198.18.0.1{n} -g"));
    }
    lab.wait_resolved().expect("resolved");
    // Enough connections that a listing does not fit the socket's buffer: its reader,
    // paused, holds the director's writer of that listing.
    send_udp_flows(&lab, 53, 20_000, 50_000);

    // 50 clients that connect and say nothing.
    let silent: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(lab.socket()).expect("connected"))
        .collect();
    // A -Lnc reader that asks, then reads nothing (as `xdpvs -Lnc | less`, paused).
    let mut paused = UnixStream::connect(lab.socket()).expect("connected");
    write_message(&mut paused, &Request::Connections).expect("asked");
    paused.flush().expect("sent");
    std::thread::sleep(Duration::from_millis(500));

    // -Ln answers at once, again and again.
    let listings: Vec<Duration> = (0..20).map(|_| time_list(&lab)).collect();
    let slowest = listings.iter().max().copied().unwrap_or_default();
    eprintln!("-Ln beside 50 silent clients and a paused reader: slowest of 20 {slowest:?}");
    assert!(
        slowest < Duration::from_millis(100),
        "-Ln took {slowest:?}: {listings:?}"
    );

    // rs3's HTTP server dies: its check takes it out within fall x interval + 0.5 s.
    lab.stop_programs("r3");
    let killed = Instant::now();
    let out = loop {
        let l = lab.list_notes().expect("-Ln");
        if l.contains("check failed") {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "never taken out:\n{l}\n{}",
            lab.director_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let bound = Duration::from_secs_f64(fall * interval + 0.5);
    eprintln!("rs3 out of service {out:?} after its HTTP server was killed (bound {bound:?})");
    assert!(out <= bound, "failover took {out:?}, over {bound:?}");
    let log = lab.director_log();
    assert!(
        log.contains("real server 198.18.0.13 of TCP 198.18.0.100:80 failed its check"),
        "{log}"
    );
    assert!(
        metric(&lab, "xdpvs_real_up") >= 2.0,
        "the scrape answers too, beside them"
    );

    // The paused reader and the silent clients are still connected; SIGTERM drains the
    // director all the same (VIPs withdrawn, 2 s without a frame), and it stops cleanly.
    let t = Instant::now();
    let status = lab.stop_director("TERM").expect("stopped");
    let took = t.elapsed();
    eprintln!("SIGTERM drain to exit with 51 clients connected: {took:?}");
    assert!(status.success(), "{status}\n{}", lab.director_log());
    assert!(
        took < Duration::from_secs(15),
        "stopping took {took:?}:\n{}",
        lab.director_log()
    );
    let log = lab.director_log();
    assert!(log.contains("draining: VIPs withdrawn"), "{log}");
    assert!(log.contains("drained:"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    drop(silent);
    drop(paused);
}

#[test]
fn a_million_connections_stream_while_traffic_flows_and_no_worker_pauses_10_ms() {
    let Some((_one, mut lab)) = lab_or_skip(LabSpec::default()) else {
        return;
    };
    lab.start_director(&["--metrics", "198.18.0.1:9100", "--conn-capacity", "2000000"])
        .expect("director starts");
    x(&lab, "-A -t 198.18.0.100:80 -s rr");
    x(&lab, "-A -u 198.18.0.100:53 -s rr");
    for n in 1..=3 {
        x(&lab, &format!("-a -t 198.18.0.100:80 -r 198.18.0.1{n} -g"));
        x(&lab, &format!("-a -u 198.18.0.100:53 -r 198.18.0.1{n} -g"));
    }
    lab.wait_resolved().expect("resolved");
    const FLOWS: u32 = 1_010_000;
    let entries = || metric(&lab, "xdpvs_worker_connection_table_entries") as u64;
    let t = Instant::now();
    for _ in 0..3 {
        send_udp_flows(&lab, 53, FLOWS, 150_000);
        std::thread::sleep(Duration::from_millis(1500));
        if entries() >= 1_000_000 {
            break;
        }
    }
    let held = entries();
    eprintln!("{held} connections opened in {:?}", t.elapsed());
    assert!(held >= 1_000_000, "only {held} connections in the table");

    // Traffic through the director while the listing streams: HTTP requests, counted.
    let ns = lab.ns("c");
    let ab = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns, "ab", "-q", "-t", "60", "-n", "1000000",
        ])
        .args(["-c", "4", "-s", "20", &format!("http://{VIP}/")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ab runs");
    std::thread::sleep(Duration::from_secs(1));
    let pause_before = metric(&lab, "xdpvs_worker_longest_control_pause_seconds");
    let forwarded_before = metric(&lab, "xdpvs_worker_forwarded_packets_total");
    let t = Instant::now();
    let listing = x(&lab, "-Lnc");
    let took = t.elapsed();
    let forwarded_during = metric(&lab, "xdpvs_worker_forwarded_packets_total") - forwarded_before;
    let rows = listing.lines().filter(|l| l.starts_with("UDP ")).count();
    eprintln!(
        "-Lnc listed {rows} UDP connections in {took:?}; {forwarded_during} frames forwarded meanwhile"
    );
    assert!(rows >= 1_000_000, "{rows} rows listed");
    assert!(forwarded_during > 0.0, "nothing was forwarded meanwhile");
    // ab prints its report when interrupted (`ip netns exec` ran it in its own process).
    let _ = std::process::Command::new("kill")
        .args(["-INT", &ab.id().to_string()])
        .status();
    let out = ab.wait_with_output().expect("ab ends");
    let report = String::from_utf8_lossy(&out.stdout);
    let failed = report
        .lines()
        .find(|l| l.starts_with("Failed requests:"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok());
    let complete = report
        .lines()
        .find(|l| l.starts_with("Complete requests:"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok());
    eprintln!("ab beside the listing: {complete:?} complete, {failed:?} failed");
    assert_eq!(failed, Some(0), "{report}");
    assert!(complete.unwrap_or(0) > 0, "{report}");

    // The longest any worker spent answering the control side between two batches
    // (the listing's pieces, and every install before).
    let pause = metric(&lab, "xdpvs_worker_longest_control_pause_seconds");
    eprintln!(
        "longest worker pause for the control side: {:.3} ms ({:.3} ms before the listing)",
        pause * 1e3,
        pause_before * 1e3
    );
    assert!(
        pause > 0.0 && pause < 0.010,
        "a worker paused {:.3} ms for the control side",
        pause * 1e3
    );
}
