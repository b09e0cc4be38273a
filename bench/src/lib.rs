//! The xdpvs benchmark harness (`xdpvs-bench`) and the shared set-ups of the
//! micro-benchmarks: configured tables prefilled with flows, and the frames of those flows.
//!
//! The harness builds a lab of network namespaces (generator, director, sink), runs each
//! forwarder under test in turn on the director's interface, drives it with the AF_XDP
//! generator ([`helpers::generate`]) and counts what reaches the sink ([`helpers::sink`]).
#![forbid(unsafe_code)]

pub mod harness;
pub mod helpers;
pub mod pipeline;
pub mod pktgen;
pub mod progs;
pub mod report;
pub mod traffic;

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

/// The service port of benchmark traffic (UDP and TCP).
pub const PORT: u16 = 80;

/// A forwarder under test.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// xdpvs, full pipeline.
    Xdpvs,
    /// xdpvs with 1000 ([`HEALTH_CHECKS`]) more real servers (in services of their own that get
    /// no traffic), each with a passing TCP check every second: what checks cost
    /// forwarding.
    #[value(name = "xdpvs-checks")]
    XdpvsChecks,
    /// The bare AF_XDP MAC-rewrite forwarder on the director's `Device` layer.
    #[value(name = "afxdp")]
    AfXdp,
    /// The lean floor: the smallest MAC-rewrite loop written directly on xsk-rs.
    Lean,
    /// DPDK testpmd, MAC forwarding over net_af_xdp.
    Testpmd,
    /// The in-kernel ceiling: MAC rewrite with XDP_TX.
    #[value(name = "xdp-tx", alias = "xdptx")]
    XdpTx,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Xdpvs => "xdpvs",
            Variant::XdpvsChecks => "xdpvs-checks",
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
        matches!(self, Variant::Xdpvs | Variant::XdpvsChecks)
    }
}

/// Health-checked real servers of the `xdpvs-checks` variant.
pub const HEALTH_CHECKS: usize = 1000;

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

/// Instructions per packet of the pure pipeline at `flows` flows, counted by callgrind
/// over the measured loop only (`xdpvs-bench pipeline` under valgrind).
pub fn callgrind(exe: &Path, flows: u32, scratch: &Path) -> Result<f64> {
    const PACKETS: u64 = 200_000;
    let out = scratch.join(format!("callgrind.{flows}.out"));
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--toggle-collect=*xdpvs_bench_measure*"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args([
            "pipeline",
            "--flows",
            &flows.to_string(),
            "--packets",
            &PACKETS.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(
            scratch.join(format!("callgrind.{flows}.log")),
        )?)
        .status()
        .context("running valgrind")?;
    if !status.success() {
        bail!("valgrind failed ({status})");
    }
    let text = std::fs::read_to_string(&out)?;
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no totals in the callgrind output")?;
    Ok(total as f64 / PACKETS as f64)
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
    Config::new(DIRECTOR_MAC, vec![s], Options::default())
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
