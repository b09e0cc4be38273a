//! Kernel `pktgen` as the harness's generator, where the kernel has it
//! (`CONFIG_NET_PKTGEN`: `/proc/net/pktgen` exists), and the header its frames carry.
//!
//! pktgen is driven by writing commands into files under `/proc/net/pktgen` of the
//! sending namespace: a `kpktgend_<cpu>` file per kernel thread (which devices that thread
//! sends on), a file per device (what to send) and `pgctrl` (start, stop). Writing
//! `start` blocks until the run ends; `stop` from another thread ends it.
//!
//! Each frame's UDP payload starts with pktgen's header: magic `0xbe9be955`, a sequence
//! number and the transmit time as seconds and microseconds of the *realtime* clock, all
//! big-endian. The sink reads it as well as the harness's own stamp (CLOCK_MONOTONIC
//! nanoseconds) and converts between the clocks ([`Stamp::latency_ns`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xdpvs_director::iface::format_mac;
use xdpvs_sched::Mac;

use crate::traffic::{FCS, STAMP_MAGIC};

/// The first word of pktgen's header.
pub const PKTGEN_MAGIC: u32 = 0xbe9b_e955;

/// Bytes of pktgen's header (magic, sequence, seconds, microseconds).
pub const PKTGEN_HEADER_LEN: usize = 16;

/// Where pktgen's control files are.
pub const PROC_DIR: &str = "/proc/net/pktgen";

/// Whether this kernel has pktgen (in the calling process's network namespace).
pub fn available() -> bool {
    Path::new(PROC_DIR).join("pgctrl").exists()
}

/// pktgen's header at the start of a UDP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PktgenHeader {
    /// Sequence number of the frame.
    pub seq: u32,
    /// Transmit time, seconds of the realtime clock.
    pub tv_sec: u32,
    /// Transmit time, microseconds within the second.
    pub tv_usec: u32,
}

impl PktgenHeader {
    /// The header at the start of `payload`, if it is one.
    pub fn parse(payload: &[u8]) -> Option<PktgenHeader> {
        let w = |i: usize| -> Option<u32> {
            Some(u32::from_be_bytes(payload.get(i..i + 4)?.try_into().ok()?))
        };
        if w(0)? != PKTGEN_MAGIC {
            return None;
        }
        let h = PktgenHeader {
            seq: w(4)?,
            tv_sec: w(8)?,
            tv_usec: w(12)?,
        };
        (h.tv_usec < 1_000_000).then_some(h)
    }

    /// The transmit time, nanoseconds of the realtime clock.
    pub fn sent_realtime_ns(&self) -> u64 {
        u64::from(self.tv_sec) * 1_000_000_000 + u64::from(self.tv_usec) * 1_000
    }

    /// The 16 bytes pktgen writes (for tests and fixtures).
    pub fn to_bytes(&self) -> [u8; PKTGEN_HEADER_LEN] {
        let mut b = [0u8; PKTGEN_HEADER_LEN];
        b[0..4].copy_from_slice(&PKTGEN_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..12].copy_from_slice(&self.tv_sec.to_be_bytes());
        b[12..16].copy_from_slice(&self.tv_usec.to_be_bytes());
        b
    }
}

/// The transmit stamp a benchmark frame carries at the start of its L4 payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The harness's own generator: CLOCK_MONOTONIC nanoseconds (the clock of
    /// `bpf_ktime_get_ns()`).
    Own {
        /// Transmit time.
        tx_mono_ns: u64,
    },
    /// Kernel pktgen.
    Pktgen(PktgenHeader),
}

impl Stamp {
    /// The stamp at the start of `payload` (the first 16 bytes of the L4 payload).
    pub fn parse(payload: &[u8]) -> Option<Stamp> {
        if payload.get(..4)? == STAMP_MAGIC {
            let ns = u64::from_ne_bytes(payload.get(8..16)?.try_into().ok()?);
            return Some(Stamp::Own { tx_mono_ns: ns });
        }
        PktgenHeader::parse(payload).map(Stamp::Pktgen)
    }

    /// One-way latency of a frame received at `rx_mono_ns` (CLOCK_MONOTONIC), given the
    /// realtime clock's offset from the monotonic one (`realtime - monotonic`, ns).
    /// `None` for a stamp from the future (clocks stepped).
    pub fn latency_ns(&self, rx_mono_ns: u64, realtime_minus_mono_ns: i128) -> Option<u64> {
        let (rx, tx) = match *self {
            Stamp::Own { tx_mono_ns } => (i128::from(rx_mono_ns), i128::from(tx_mono_ns)),
            Stamp::Pktgen(h) => (
                i128::from(rx_mono_ns) + realtime_minus_mono_ns,
                i128::from(h.sent_realtime_ns()),
            ),
        };
        u64::try_from(rx - tx).ok()
    }
}

/// What pktgen should send: one device, one kernel thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PktgenSpec {
    /// Interface to send on.
    pub dev: String,
    /// The kernel thread (`kpktgend_<cpu>`) that sends.
    pub cpu: usize,
    /// Destination MAC (the forwarder's).
    pub dst_mac: Mac,
    /// Source MAC.
    pub src_mac: Mac,
    /// Destination address and port (the VIP's).
    pub dst: Ipv4Addr,
    /// Destination port.
    pub dport: u16,
    /// Flows: source addresses 198.19.0.0 + (0..flows mod 65536), source ports
    /// 1024 + (0..flows / 65536), as the harness's own generator.
    pub flows: u32,
    /// Frame size with FCS.
    pub size: usize,
    /// Packets per second, 0 = as fast as it can.
    pub rate_pps: u64,
    /// Frames to send, 0 = until stopped.
    pub count: u64,
}

impl PktgenSpec {
    /// The commands, in order: (file under `/proc/net/pktgen`, line to write).
    pub fn commands(&self) -> Vec<(String, String)> {
        let thread = format!("kpktgend_{}", self.cpu);
        let d = self.dev.clone();
        let addrs = self.flows.clamp(1, 65_536);
        let ports = self.flows.div_ceil(65_536).clamp(1, 64_512) as u16;
        let base = Ipv4Addr::new(198, 19, 0, 0);
        let last = Ipv4Addr::from(u32::from(base) + addrs - 1);
        let mut c = vec![
            (thread.clone(), "rem_device_all".to_string()),
            (thread, format!("add_device {d}")),
            (d.clone(), format!("count {}", self.count)),
            // A new skb per frame: a cloned one would carry one timestamp for all.
            (d.clone(), "clone_skb 0".into()),
            (
                d.clone(),
                format!("pkt_size {}", self.size.saturating_sub(FCS)),
            ),
            (d.clone(), format!("dst_mac {}", format_mac(&self.dst_mac))),
            (d.clone(), format!("src_mac {}", format_mac(&self.src_mac))),
            (d.clone(), format!("dst {}", self.dst)),
            (d.clone(), format!("src_min {base}")),
            (d.clone(), format!("src_max {last}")),
            (d.clone(), format!("udp_dst_min {}", self.dport)),
            (d.clone(), format!("udp_dst_max {}", self.dport)),
            (d.clone(), "udp_src_min 1024".into()),
            (d.clone(), format!("udp_src_max {}", 1024 + ports - 1)),
        ];
        c.push(if self.rate_pps > 0 {
            (d, format!("ratep {}", self.rate_pps))
        } else {
            (d, "delay 0".into())
        });
        c
    }

    /// Writes the commands under `root` (`/proc/net/pktgen`), checking pktgen's verdict
    /// on each device command.
    pub fn configure(&self, root: &Path) -> Result<()> {
        for (file, cmd) in self.commands() {
            let path = root.join(&file);
            std::fs::write(&path, format!("{cmd}\n"))
                .with_context(|| format!("pktgen: writing '{cmd}' to {}", path.display()))?;
            if file == self.dev {
                let state = std::fs::read_to_string(&path).unwrap_or_default();
                if let Some(r) = result_line(&state) {
                    if !r.starts_with("OK") {
                        bail!("pktgen refused '{cmd}': {r}");
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `Result:` line of a pktgen device file.
fn result_line(state: &str) -> Option<&str> {
    state
        .lines()
        .find_map(|l| l.trim().strip_prefix("Result:"))
        .map(str::trim)
}

/// Frames sent so far (`pkts-sofar`) in a pktgen device file.
pub fn sent_so_far(state: &str) -> Option<u64> {
    let at = state.find("pkts-sofar:")?;
    state[at + "pkts-sofar:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a pktgen run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PktgenRun {
    /// Frames sent.
    pub sent: u64,
    /// How long, ns.
    pub elapsed_ns: u64,
}

/// Configures pktgen under `root`, runs it for `dur` (or until `count`), and reports.
pub fn run(spec: &PktgenSpec, root: &Path, dur: Duration) -> Result<PktgenRun> {
    spec.configure(root)?;
    let pgctrl: PathBuf = root.join("pgctrl");
    let start = std::time::Instant::now();
    let ctl = pgctrl.clone();
    // `start` returns when the run ends: stop it from here after `dur`.
    let runner = std::thread::spawn(move || std::fs::write(&ctl, "start\n"));
    while start.elapsed() < dur && !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !runner.is_finished() {
        std::fs::write(&pgctrl, "stop\n").context("pktgen: stop")?;
    }
    runner
        .join()
        .map_err(|_| anyhow::anyhow!("pktgen thread"))?
        .context("pktgen: start")?;
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let state = std::fs::read_to_string(root.join(&spec.dev)).unwrap_or_default();
    Ok(PktgenRun {
        sent: sent_so_far(&state).unwrap_or(0),
        elapsed_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP payload as pktgen builds it (`struct pktgen_hdr`, big-endian).
    fn pktgen_payload(seq: u32, sec: u32, usec: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&0xbe9b_e955u32.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&sec.to_be_bytes());
        p.extend_from_slice(&usec.to_be_bytes());
        p.extend_from_slice(&[0; 10]);
        p
    }

    #[test]
    fn the_header_of_a_pktgen_frame_is_read() {
        let p = pktgen_payload(7, 1_764_633_600, 250_000);
        let h = PktgenHeader::parse(&p).expect("a pktgen header");
        assert_eq!(
            h,
            PktgenHeader {
                seq: 7,
                tv_sec: 1_764_633_600,
                tv_usec: 250_000
            }
        );
        assert_eq!(h.sent_realtime_ns(), 1_764_633_600_250_000_000);
        assert_eq!(h.to_bytes()[..], p[..16]);
    }

    #[test]
    fn other_payloads_are_not_pktgen_headers() {
        assert_eq!(PktgenHeader::parse(&[0xbe, 0x9b, 0xe9]), None);
        let mut p = pktgen_payload(1, 2, 3);
        p[3] ^= 1;
        assert_eq!(PktgenHeader::parse(&p), None);
        // Microseconds beyond a second: not a real header.
        assert_eq!(PktgenHeader::parse(&pktgen_payload(1, 2, 1_000_000)), None);
    }

    #[test]
    fn a_frame_built_by_pktgen_is_stamped_and_timed_across_clocks() {
        // A whole frame: Ethernet, IPv4, UDP, pktgen's header.
        let e = crate::flow(3);
        let payload = pktgen_payload(42, 1000, 500);
        let frame = xdpvs_testkit::frames::udp(&e, &payload);
        let l4 = &frame[14 + 20 + 8..];
        let s = Stamp::parse(l4).expect("a stamp");
        let Stamp::Pktgen(h) = s else {
            panic!("not read as pktgen: {s:?}")
        };
        assert_eq!(h.seq, 42);
        // Sent at realtime 1000.0005 s; received at monotonic 10 s with realtime 990 s
        // ahead of monotonic: 10 + 990 = 1000.000 ... so 1000.0015 - 1000.0005 = 1 ms.
        let offset = 990_000_000_000i128;
        assert_eq!(s.latency_ns(10_001_500_000, offset), Some(1_000_000));
        // A stamp from the future is no latency.
        assert_eq!(s.latency_ns(10_000_000_000, offset), None);
    }

    #[test]
    fn the_harness_own_stamp_is_read_too() {
        let mut p = Vec::new();
        p.extend_from_slice(&STAMP_MAGIC);
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&123_456u64.to_ne_bytes());
        let s = Stamp::parse(&p).expect("a stamp");
        assert_eq!(
            s,
            Stamp::Own {
                tx_mono_ns: 123_456
            }
        );
        assert_eq!(s.latency_ns(200_000, 5), Some(76_544));
    }

    #[test]
    fn configuration_commands_go_to_the_thread_then_the_device() {
        let spec = PktgenSpec {
            dev: "eth0".into(),
            cpu: 0,
            dst_mac: [0x02, 0, 0, 0, 0, 0xd],
            src_mac: [0x02, 0, 0, 0, 0, 0xc],
            dst: Ipv4Addr::new(198, 18, 0, 100),
            dport: 80,
            flows: 100_000,
            size: 64,
            rate_pps: 0,
            count: 0,
        };
        let c = spec.commands();
        assert_eq!(c[0], ("kpktgend_0".into(), "rem_device_all".into()));
        assert_eq!(c[1], ("kpktgend_0".into(), "add_device eth0".into()));
        let dev: Vec<&str> = c[2..]
            .iter()
            .inspect(|(f, _)| assert_eq!(f, "eth0"))
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(
            dev,
            [
                "count 0",
                "clone_skb 0",
                "pkt_size 60",
                "dst_mac 02:00:00:00:00:0d",
                "src_mac 02:00:00:00:00:0c",
                "dst 198.18.0.100",
                "src_min 198.19.0.0",
                "src_max 198.19.255.255",
                "udp_dst_min 80",
                "udp_dst_max 80",
                "udp_src_min 1024",
                "udp_src_max 1025",
                "delay 0",
            ]
        );
        let paced = PktgenSpec {
            rate_pps: 250_000,
            flows: 1,
            ..spec
        };
        let c = paced.commands();
        assert!(c.contains(&("eth0".into(), "src_max 198.19.0.0".into())));
        assert!(c.contains(&("eth0".into(), "udp_src_max 1024".into())));
        assert_eq!(c.last().expect("commands").1, "ratep 250000");
    }

    #[test]
    fn configure_writes_every_command_and_checks_pktgen_verdicts() {
        let dir = std::env::temp_dir().join(format!("xdpvs-pktgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let spec = PktgenSpec {
            dev: "eth0".into(),
            cpu: 1,
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            dst: Ipv4Addr::new(198, 18, 0, 100),
            dport: 80,
            flows: 1,
            size: 64,
            rate_pps: 1000,
            count: 5000,
        };
        // A plain directory stands in for /proc/net/pktgen: each write replaces the file,
        // so the last line written to each file is what remains.
        spec.configure(&dir).expect("configured");
        assert_eq!(
            std::fs::read_to_string(dir.join("kpktgend_1")).expect("written"),
            "add_device eth0\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("eth0")).expect("written"),
            "ratep 1000\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn device_state_is_read() {
        let state = "Params: count 0  min_pkt_size: 60  max_pkt_size: 60\n\
             Current:\n     pkts-sofar: 2983000  errors: 0\n     started: 100us  stopped: 3000100us\n\
             Result: OK: 3000000(c2983000+d17000) usec, 2983000 (60byte,0frags)\n  994333pps 477Mb/sec\n";
        assert_eq!(sent_so_far(state), Some(2_983_000));
        assert_eq!(
            result_line(state),
            Some("OK: 3000000(c2983000+d17000) usec, 2983000 (60byte,0frags)")
        );
        assert_eq!(
            result_line("Result: Error: invalid destination MAC"),
            Some("Error: invalid destination MAC")
        );
    }
}
