//! The xdpvs benchmark harness (`xdpvs-bench`) and the shared set-ups of the
//! micro-benchmarks: configured tables prefilled with flows, and the frames of those flows.
//!
//! The harness builds a lab of network namespaces (generator, director, sink), runs each
//! forwarder under test in turn on the director's interface, drives it with the AF_XDP
//! generator ([`helpers::generate`]) and counts what reaches the sink ([`helpers::sink`]).
#![forbid(unsafe_code)]

pub mod harness;
pub mod helpers;
pub mod options;
pub mod pipeline;
pub mod pktgen;
pub mod progs;
pub mod report;
pub mod traffic;
pub mod zerocopy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use std::net::Ipv4Addr;

use xdpvs_dataplane::{process, Config, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Mac, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints};

/// The director's MAC in benchmark set-ups.
pub const DIRECTOR_MAC: Mac = [0x02, 0, 0, 0, 0, 0xd1];
/// The client-side MAC in benchmark frames.
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
/// The VIP (RFC 2544 benchmark range).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

/// The IPv6 VIP (RFC 5180 benchmark range), the lab's.
pub const VIP6: std::net::Ipv6Addr = xdpvs_testkit::lab::VIP6;

/// The service port of benchmark traffic (UDP and TCP).
pub const PORT: u16 = 80;

/// A forwarder under test.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
/// In JSON, as on the command line and in the tables (`Display`).
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// xdpvs, full pipeline.
    Xdpvs,
    /// xdpvs with 1000 ([`HEALTH_CHECKS`]) more real servers (in services of their own that get
    /// no traffic), each with a passing TCP check every second: what checks cost
    /// forwarding.
    #[value(name = "xdpvs-checks")]
    #[serde(rename = "xdpvs-checks", alias = "xdpvschecks")]
    XdpvsChecks,
    /// xdpvs with `--offload`: established flows forwarded by its XDP program (XDP_TX),
    /// the workers handling the rest.
    #[value(name = "xdpvs-offload")]
    #[serde(rename = "xdpvs-offload", alias = "xdpvsoffload")]
    XdpvsOffload,
    /// The bare AF_XDP MAC-rewrite forwarder on the director's `Device` layer.
    #[value(name = "afxdp")]
    AfXdp,
    /// The lean floor: the smallest MAC-rewrite loop written directly on xsk-rs.
    Lean,
    /// DPDK testpmd, MAC forwarding over net_af_xdp.
    Testpmd,
    /// The in-kernel ceiling: MAC rewrite with XDP_TX.
    #[value(name = "xdp-tx", alias = "xdptx")]
    #[serde(rename = "xdp-tx", alias = "xdptx")]
    XdpTx,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Xdpvs => "xdpvs",
            Variant::XdpvsChecks => "xdpvs-checks",
            Variant::XdpvsOffload => "xdpvs-offload",
            Variant::AfXdp => "afxdp",
            Variant::Lean => "lean",
            Variant::Testpmd => "testpmd",
            Variant::XdpTx => "xdp-tx",
        })
    }
}

impl Variant {
    /// Whether this is the xdpvs director (with or without checks).
    pub fn is_director(self) -> bool {
        matches!(
            self,
            Variant::Xdpvs | Variant::XdpvsChecks | Variant::XdpvsOffload
        )
    }
}

/// Health-checked real servers of the `xdpvs-checks` variant.
pub const HEALTH_CHECKS: usize = 1000;

/// A `Name:   N kB` line of a /proc file (`/proc/PID/status`, `smaps_rollup`), in KiB;
/// 0 if the file or the line is not there.
pub(crate) fn proc_kib(file: &str, name: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// A MAC address on a command line (`aa:bb:cc:dd:ee:ff`).
pub fn parse_mac_arg(s: &str) -> Result<Mac, String> {
    xdpvs_director::iface::parse_mac(s).ok_or_else(|| format!("not a MAC address: {s}"))
}

/// `dpdk-testpmd`, if installed (Debian `dpdk-dev`).
pub fn testpmd_path() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("dpdk-testpmd"))
            .find(|p| p.is_file())
    })
}

/// What callgrind counts per packet of the pure pipeline: instructions, and misses of
/// its simulated caches (first-level data cache, last-level cache: reads and writes). This
/// VM exposes no hardware counters, so the cache figures are valgrind's model of the host's
/// cache sizes, not measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Callgrind {
    /// Instructions per packet.
    pub instructions: f64,
    /// First-level data-cache misses per packet.
    pub d1_misses: f64,
    /// Last-level cache data misses per packet.
    pub ll_misses: f64,
}

/// Runs `exe pipeline` under callgrind (with its cache simulation), collecting only the
/// measured loop, and returns the counts per packet.
pub fn callgrind(exe: &Path, flows: u32, scratch: &Path) -> Result<Callgrind> {
    const PACKETS: u64 = 200_000;
    let args = [
        "pipeline",
        "--flows",
        &flows.to_string(),
        "--packets",
        &PACKETS.to_string(),
    ];
    callgrind_of(
        exe,
        &args,
        "xdpvs_bench_measure",
        &format!("{flows}"),
        scratch,
        PACKETS,
    )
}

/// The zero-copy model's counts per packet under callgrind: `forwarder` ("xdpvs" or
/// "lean") at `flows` flows picked by `dist`, collecting the forwarder's side alone.
pub fn callgrind_model(
    exe: &Path,
    flows: u32,
    dist: zerocopy::Dist,
    forwarder: &str,
    scratch: &Path,
) -> Result<Callgrind> {
    const PACKETS: u64 = 100_000;
    let args = [
        "zerocopy",
        "--flows",
        &flows.to_string(),
        "--dist",
        dist.name(),
        "--forwarder",
        forwarder,
        "--packets",
        &PACKETS.to_string(),
    ];
    // The model times its packets and a warm-up of a tenth as many.
    let tag = format!("model.{forwarder}.{flows}.{}", dist.name());
    callgrind_of(
        exe,
        &args,
        "xdpvs_model_measure",
        &tag,
        scratch,
        PACKETS + PACKETS / 10,
    )
}

fn callgrind_of(
    exe: &Path,
    args: &[&str],
    measured: &str,
    tag: &str,
    scratch: &Path,
    packets: u64,
) -> Result<Callgrind> {
    let out = scratch.join(format!("callgrind.{tag}.out"));
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--cache-sim=yes"])
        .arg(format!("--toggle-collect=*{measured}*"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(
            scratch.join(format!("callgrind.{tag}.log")),
        )?)
        .status()
        .context("running valgrind")?;
    if !status.success() {
        bail!("valgrind failed ({status})");
    }
    parse_callgrind(&std::fs::read_to_string(&out)?, packets)
}

/// Counts per packet from a callgrind output file (its `events:` and `summary:` lines).
pub fn parse_callgrind(text: &str, packets: u64) -> Result<Callgrind> {
    let events: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))
        .context("no events line in the callgrind output")?
        .split_whitespace()
        .collect();
    let totals: Vec<u64> = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .context("no totals in the callgrind output")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |name: &str| -> f64 {
        events
            .iter()
            .position(|e| *e == name)
            .and_then(|i| totals.get(i))
            .map_or(0.0, |&v| v as f64 / packets as f64)
    };
    Ok(Callgrind {
        instructions: get("Ir"),
        d1_misses: get("D1mr") + get("D1mw"),
        ll_misses: get("DLmr") + get("DLmw"),
    })
}

/// Renders `perf.data` as a flame graph SVG (`perf script` + inferno).
pub fn flamegraph(perf_data: &Path, svg: &Path) -> Result<()> {
    let script = Command::new("perf")
        .args(["script", "-i"])
        .arg(perf_data)
        .output()
        .context("running perf script")?;
    if !script.status.success() {
        bail!(
            "perf script: {}",
            String::from_utf8_lossy(&script.stderr).trim()
        );
    }
    let mut folded = Vec::new();
    let mut opts = inferno::collapse::perf::Options::default();
    opts.include_pid = false;
    inferno::collapse::Collapse::collapse(
        &mut inferno::collapse::perf::Folder::from(opts),
        &script.stdout[..],
        &mut folded,
    )
    .context("folding perf stacks")?;
    let mut fg = inferno::flamegraph::Options::default();
    fg.title = "xdpvs director (perf -e cpu-clock)".to_string();
    let file = std::fs::File::create(svg).with_context(|| format!("creating {}", svg.display()))?;
    inferno::flamegraph::from_reader(&mut fg, &folded[..], std::io::BufWriter::new(file))
        .context("drawing the flame graph")?;
    Ok(())
}

/// TCP services on VIP:80 and \[VIP6\]:80, each with `reals` real servers under
/// `sched`.
pub fn config(sched: SchedKind, reals: u8) -> Config {
    config_with(sched, reals, xdpvs_sched::Method::Route)
}

/// [`config`] with every real server reached by `method` (NAT: on port 8080).
pub fn config_with(sched: SchedKind, reals: u8, method: xdpvs_sched::Method) -> Config {
    let service = |vip: std::net::IpAddr, addr: &dyn Fn(u8) -> std::net::IpAddr| {
        let mut s = ServiceSpec::new(
            ServiceKey {
                proto: Protocol::Tcp,
                vip,
                port: 80,
            },
            sched,
        );
        s.reals = (1..=reals)
            .map(|i| RealSpec {
                addr: addr(i),
                port: if method.maps_ports() { 8080 } else { 0 },
                method,
                weight: 1,
                mac: Some([2, 0, 0, 0, 1, i]),
            })
            .collect();
        s
    };
    let v4 = service(VIP.into(), &|i| Ipv4Addr::new(198, 18, 0, 10 + i).into());
    let v6 = service(VIP6.into(), &|i| {
        std::net::Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10 + u16::from(i)).into()
    });
    let mut cfg = Config::new(DIRECTOR_MAC, vec![v4, v6], Options::default());
    // The director's addresses: a tunnel's outer source.
    cfg.own = vec![
        Ipv4Addr::new(198, 18, 0, 1).into(),
        std::net::Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1).into(),
    ];
    cfg
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

/// The IPv6 endpoints of flow number `k`: flow `k`'s IPv4 client address in the last
/// 32 bits of 2001:2:1::/96, its ports, to the IPv6 VIP.
pub fn flow6(k: u32) -> frames::Endpoints6 {
    let e = flow(k);
    let mut src = traffic::CLIENT6_PREFIX.octets();
    src[12..].copy_from_slice(&e.src_ip.octets());
    frames::Endpoints6 {
        src_mac: e.src_mac,
        dst_mac: e.dst_mac,
        src_ip: src.into(),
        dst_ip: VIP6,
        sport: e.sport,
        dport: e.dport,
    }
}

/// A TCP frame of flow `k` with `flags`, over IPv6 when `v6`.
pub fn flow_frame(k: u32, flags: u8, v6: bool) -> Vec<u8> {
    if v6 {
        frames::tcp6(&flow6(k), flags, b"")
    } else {
        frames::tcp(&flow(k), flags, b"")
    }
}

/// Tables with room for `capacity` connections holding `flows` established flows, and
/// one ACK frame per flow.
pub fn established(flows: u32, capacity: usize) -> (Tables, Vec<Vec<u8>>) {
    established_in(flows, capacity, false)
}

/// [`established`] with IPv6 flows when `v6`.
pub fn established_in(flows: u32, capacity: usize, v6: bool) -> (Tables, Vec<Vec<u8>>) {
    let (t, acks, _) = established_by(flows, capacity, v6, xdpvs_sched::Method::Route, 0);
    (t, acks)
}

/// [`established`] over NAT real servers (on port 8080): the tables, one client ACK per
/// flow, and one reply per flow (the real server's ACK back to its client).
pub fn established_nat(flows: u32, capacity: usize) -> (Tables, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    established_by(flows, capacity, false, xdpvs_sched::Method::Masq, 0)
}

/// The flows of [`established`] to real servers reached by `method` (a tunnel, say),
/// each frame carrying `payload` bytes (0: bare ACKs).
pub fn established_with(
    flows: u32,
    capacity: usize,
    method: xdpvs_sched::Method,
    payload: usize,
) -> (Tables, Vec<Vec<u8>>) {
    let (t, acks, _) = established_by(flows, capacity, false, method, payload);
    (t, acks)
}

/// Processes `frame` in a buffer with a UMEM frame's room (a tunnel's headers take some).
fn process_roomy(frame: &[u8], t: &mut Tables) -> Verdict {
    let mut buf = frame.to_vec();
    buf.resize(2048 - 256, 0);
    let mut len = frame.len();
    xdpvs_dataplane::process_packet(
        &mut xdpvs_dataplane::Packet::new(&mut buf, &mut len),
        t,
        Time::from_secs(1),
    )
}

/// The flows of [`established_in`] to real servers reached by `method`, and each flow's
/// reply (the forwarded ACK turned around: the real server's MAC, address and port to
/// the director and the client; its checksums stay valid, as a turned-around packet's
/// do).
fn established_by(
    flows: u32,
    capacity: usize,
    v6: bool,
    method: xdpvs_sched::Method,
    payload: usize,
) -> (Tables, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let limits = Limits {
        conn_capacity: capacity,
        ..Limits::default()
    };
    let services = Services::build(&config_with(SchedKind::Wlc, 8, method), &limits, None)
        .expect("valid config");
    let mut t = Tables::new(services, &limits, Timeouts::default(), 0x5eed).expect("valid limits");
    let mut acks = Vec::with_capacity(flows as usize);
    let mut replies = Vec::new();
    for k in 0..flows {
        let syn = flow_frame(k, SYN, v6);
        assert_eq!(process_roomy(&syn, &mut t), Verdict::Tx);
        let ack = if payload == 0 {
            flow_frame(k, ACK, v6)
        } else {
            frames::tcp(&flow(k), ACK, &vec![0x5a; payload])
        };
        let mut sent = ack.clone();
        if method == xdpvs_sched::Method::Masq {
            assert_eq!(process(&mut sent, &mut t, Time::from_secs(1)), Verdict::Tx);
        } else {
            assert_eq!(process_roomy(&ack, &mut t), Verdict::Tx);
        }
        acks.push(ack);
        if method == xdpvs_sched::Method::Masq {
            replies.push(turned_around(&sent, v6));
        }
    }
    (t, acks, replies)
}

/// `f` (an Ethernet frame of TCP directly over IP) sent back where it came from: MACs,
/// addresses and ports swapped.
fn turned_around(f: &[u8], v6: bool) -> Vec<u8> {
    let mut r = f.to_vec();
    let swap = |r: &mut Vec<u8>, a: usize, b: usize, n: usize| {
        let x = r[a..a + n].to_vec();
        r.copy_within(b..b + n, a);
        r[b..b + n].copy_from_slice(&x);
    };
    swap(&mut r, 0, 6, 6);
    let (src, dst, n, l4) = if v6 {
        (22, 38, 16, 54)
    } else {
        (26, 30, 4, 34)
    };
    swap(&mut r, src, dst, n);
    swap(&mut r, l4, l4 + 2, 2);
    r
}

#[cfg(test)]
mod callgrind_tests {
    use super::*;

    #[test]
    fn counts_per_packet_come_from_the_events_and_summary_lines() {
        let text = "version: 1\nevents: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n\
                    fn=(1) x\n0 1 2 3\nsummary: 4000 1000 500 10 200 100 4 60 20\n";
        let c = parse_callgrind(text, 10).expect("parsed");
        assert_eq!(
            c,
            Callgrind {
                instructions: 400.0,
                d1_misses: 30.0,
                ll_misses: 8.0
            }
        );
        // Without the cache simulation: instructions only.
        let c = parse_callgrind("events: Ir\nsummary: 90\n", 3).expect("parsed");
        assert_eq!(c.instructions, 30.0);
        assert_eq!(c.d1_misses, 0.0);
        assert!(parse_callgrind("nothing here", 1).is_err());
    }
}

#[cfg(test)]
mod variant_tests {
    use super::Variant;
    use clap::ValueEnum;

    #[test]
    fn a_variant_has_one_name_in_json_on_the_command_line_and_in_the_tables() {
        for v in Variant::value_variants() {
            let json = serde_json::to_value(v).expect("serialises");
            assert_eq!(json, v.to_string(), "{v:?} in JSON");
            let cli = v.to_possible_value().expect("a value");
            assert_eq!(cli.get_name(), v.to_string(), "{v:?} on the command line");
            let back: Variant = serde_json::from_value(json).expect("reads back");
            assert_eq!(back, *v);
        }
        // Reports written before the names were one still read.
        let old: Variant = serde_json::from_str("\"xdpvsoffload\"").expect("old name");
        assert_eq!(old, Variant::XdpvsOffload);
    }
}
