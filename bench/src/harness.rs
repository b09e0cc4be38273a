//! The benchmark run: a lab of namespaces (generator, director, sink), the forwarders
//! under test activated one after the other, trials driven by the AF_XDP generator and
//! counted by the XDP sink.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use xdpvs_director::iface::{format_mac, parse_mac};
use xdpvs_sched::Mac;
use xdpvs_testkit::lab::{Lab, LabSpec};

use crate::helpers::{cpu_times, GenReport, Latency, SinkReading};
pub use crate::options::{GeneratorChoice, NapiMode, Options, PollMode};
use crate::report::{
    CpuShare, LoadPoint, Report, ScalingPoint, SearchResult, ThroughputSummary, TrialRecord,
};
use crate::traffic::Proto;
use crate::{Variant, HEALTH_CHECKS, PORT, VIP};

/// Rate of the packets that open the flows before a measurement (well under what the
/// director forwards without loss here: about 190 kpps).
const WARM_UP_PPS: u64 = 100_000;
/// Offers of the flows to `--offload`'s map at most, while each gets more of them in.
const MAX_OFFERS: u32 = 12;

/// Events `perf stat` counts for the per-packet budget (software events and syscall
/// tracepoints only: no hardware counters in this VM).
const BUDGET_EVENTS: &[&str] = &[
    "task-clock",
    "context-switches",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_poll",
    "syscalls:sys_enter_ppoll",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sched_yield",
    "syscalls:sys_enter_clock_gettime",
];

/// Distinct flows of the new-connection trials: more than any trial sends, so every
/// SYN opens a new connection.
const NEW_CONN_FLOWS: u32 = 1 << 24;

/// Table of the director in the new-connection trials: room for every SYN of a trial.
const NEW_CONN_CAPACITY: usize = 4 << 20;

/// Queues the director's link is created with (the multi-queue table uses them all).
const MAX_QUEUES: u32 = 2;

/// Sets the RX and TX queues in use on both ends of the director's link.
/// veth refuses more TX queues than the XDP-carrying peer has RX queues: the bridge end
/// (which carries `XDP_PASS`) grows first and shrinks last.
fn set_queues(lab: &Lab, n: u32) -> Result<()> {
    let cmd = format!("rx {n} tx {n}");
    // The kernel releases an AF_XDP socket's hold on its queue a moment after the
    // process that had it exits: until then it refuses fewer channels (`too low for
    // existing zerocopy AF_XDP sockets`). Asked again for up to 10 s.
    let dir = || {
        let mut tries = 0;
        loop {
            match lab.sh(&lab.ns("d"), &format!("ethtool -L eth0 {cmd}")) {
                Err(e) if tries < 50 && format!("{e:#}").contains("AF_XDP") => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                r => return r,
            }
        }
    };
    let bridge = || lab.sh(&lab.ns("sw"), &format!("ethtool -L d {cmd}"));
    let current = lab
        .exec(&lab.ns("d"), &["ls", "/sys/class/net/eth0/queues"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter(|q| q.starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(0);
    if n >= current {
        bridge().and_then(|_| dir())
    } else {
        dir().and_then(|_| bridge())
    }
    .with_context(|| format!("setting {n} queues on the director's veth (ethtool -L)"))?;
    Ok(())
}

/// Where the director of the multi-queue table serves its metrics (in its namespace).
const MQ_METRICS: &str = "127.0.0.1:9917";

/// One row of the multi-queue table: queues, and the cores of their workers.
const MULTI_QUEUE: &[(u32, &str)] = &[(1, "1"), (2, "1,1"), (2, "1,0")];

/// (event, count) from `perf stat -x,` output.
pub fn parse_perf_stat(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n: f64 = f.first()?.trim().parse().ok()?;
            let event = f.get(2)?.trim();
            let event = event.strip_prefix("syscalls:sys_enter_").unwrap_or(event);
            let event = if event == "raw_syscalls:sys_enter" {
                "syscalls"
            } else {
                event
            };
            Some((event.to_string(), n))
        })
        .collect()
}

/// Microseconds one busy poll may spin (DPDK's af_xdp driver uses the same).
const BUSY_POLL_USECS: &str = "20";

/// Set by SIGINT/SIGTERM/SIGHUP: every wait checks it, so the run unwinds and the lab
/// is torn down.
static STOP: std::sync::LazyLock<Arc<AtomicBool>> = std::sync::LazyLock::new(|| {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    stop
});

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted: tearing the lab down");
    }
    Ok(())
}

/// A helper process in a namespace, talking JSON lines.
struct Helper {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Helper {
    /// The process id (`ip netns exec` execs the program in place).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `program ARGS` in `ns` and waits until it prints a line containing `ready`.
    fn start<S: AsRef<std::ffi::OsStr>>(
        ns: &str,
        program: &Path,
        args: &[S],
        name: &str,
        logs: &Path,
        ready: &str,
    ) -> Result<Helper> {
        let log = logs.join(format!("{name}.log"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name} in {ns}"))?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().context("no stdout")?);
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut h = Helper {
            name: name.to_string(),
            child,
            stdin,
            lines,
            log,
        };
        while !h.line()?.contains(ready) {}
        Ok(h)
    }

    /// The next line, within 60 s.
    fn line(&mut self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            check_stop()?;
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => return Ok(l.trim().to_string()),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    bail!(
                        "{} {}: {}",
                        self.name,
                        if e.is_timeout() {
                            "did not answer within 60 s"
                        } else {
                            "exited"
                        },
                        std::fs::read_to_string(&self.log)
                            .unwrap_or_default()
                            .trim()
                    );
                }
            }
        }
    }

    fn ask(&mut self, cmd: &str) -> Result<String> {
        let stdin = self.stdin.as_mut().context("helper stdin closed")?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        self.line()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing stdin asks the helper to stop (and testpmd to exit cleanly).
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Busy and softirq shares of each CPU between two [`cpu_times`] readings.
fn cpu_shares(a: &[(u64, u64, u64)], b: &[(u64, u64, u64)]) -> Vec<CpuShare> {
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(cpu, (x, y))| {
            let total = (y.2 - x.2).max(1) as f64;
            CpuShare {
                cpu,
                busy_pct: 100.0 * (y.0 - x.0) as f64 / total,
                softirq_pct: 100.0 * (y.1 - x.1) as f64 / total,
            }
        })
        .collect()
}

/// "cpu0 97% (si 40%), cpu1 ..." for the progress line and the table.
fn cpu_text(cpu: &[CpuShare]) -> String {
    cpu.iter()
        .map(|c| {
            format!(
                "cpu{} {:.0}% (softirq {:.0}%)",
                c.cpu, c.busy_pct, c.softirq_pct
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One trial's outcome.
#[derive(Clone, Debug)]
struct Trial {
    sent: u64,
    offered_pps: f64,
    delivered_pps: f64,
    loss_pct: f64,
    latency: Latency,
    wrong_mac: u64,
    cpu: Vec<CpuShare>,
}

/// A running benchmark.
struct Bench {
    /// Plain trials sent by kernel pktgen.
    use_pktgen: bool,
    opts: Options,
    exe: PathBuf,
    lab: Lab,
    sink: Helper,
    _pass: Helper,
    logs: PathBuf,
    gen_mac: Mac,
    dir_mac: Mac,
    rs_mac: Mac,
    progress: Progress,
    /// Whether the sink has the addresses and the listener of the checked real servers.
    check_targets: bool,
    /// What the trials send: the run's protocol, or its IPv6 form in the IPv6 rows.
    proto: Proto,
}

/// Last bytes of the checked real servers' addresses (198.18.0.X on the sink): clear of
/// the lab's own (.1 director, .2 client, .11 sink, .100 VIP).
const CHECK_ADDRS: [u8; 200] = {
    let mut a = [0u8; 200];
    let mut i = 0;
    while i < 200 {
        let x = 20 + i;
        a[i] = if x < 100 { x as u8 } else { (x + 1) as u8 };
        i += 1;
    }
    a
};

/// A TCP listener on port 8000 that accepts and closes: what the checks connect to.
const CHECK_LISTENER: &str = r#"
import asyncio
async def main():
    async def handle(r, w):
        w.close()
    s = await asyncio.start_server(handle, "0.0.0.0", 8000, backlog=4096)
    await s.serve_forever()
asyncio.run(main())
"#;

/// The live progress line (stderr).
struct Progress {
    tty: bool,
    start: Instant,
}

impl Progress {
    fn show(&self, msg: &str) {
        let t = self.start.elapsed().as_secs();
        if self.tty {
            eprint!("\r\x1b[2K[{:>3}:{:02}] {msg}", t / 60, t % 60);
        } else {
            eprintln!("[{:>3}:{:02}] {msg}", t / 60, t % 60);
        }
        let _ = std::io::stderr().flush();
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The active forwarder.
enum Active {
    Director,
    Helper(Helper),
}

impl Bench {
    fn up(opts: Options) -> Result<Bench> {
        let proto = opts.proto;
        let exe = std::env::current_exe().context("locating xdpvs-bench")?;
        std::fs::create_dir_all(&opts.out_dir)
            .with_context(|| format!("creating {}", opts.out_dir.display()))?;
        let logs = opts.out_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut lab = Lab::up(
            &exe,
            LabSpec {
                reals: 1,
                director_queues: MAX_QUEUES,
                http: false,
                ipv6: true,
                // The generator's frames carry no socket hash: the veth already picks
                // each frame's queue from its addresses and ports.
                rss: false,
            },
        )?;
        // One queue until the multi-queue table asks for more: a single-queue forwarder
        // must see every frame on its queue.
        set_queues(&lab, 1)?;
        lab.set_exe_args(&["xdpvs"]);
        let mac = |role: &str| -> Result<Mac> {
            let s = lab.mac(role)?;
            parse_mac(&s).with_context(|| format!("MAC of {role}: {s}"))
        };
        let (gen_mac, dir_mac, rs_mac) = (mac("c")?, mac("d")?, mac("r1")?);
        let gen_core = opts.gen_core.to_string();
        let sink = Helper::start(
            &lab.ns("r1"),
            &exe,
            &[
                "sink",
                "--iface",
                "eth0",
                "--rs-mac",
                &format_mac(&rs_mac),
                "--fwd-mac",
                &format_mac(&dir_mac),
                "--core",
                &gen_core,
            ],
            "sink",
            &logs,
            "ready",
        )?;
        // On veth, frames sent back out (XDP_TX) reach the bridge only if the peer end has
        // an XDP program: the same one for every forwarder.
        let pass = Helper::start(
            &lab.ns("sw"),
            &exe,
            &["xdp", "pass", "--iface", "d"],
            "pass",
            &logs,
            "ready",
        )?;
        let progress = Progress {
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
        };
        // Kernel pktgen, where the kernel has it, in the generator's namespace.
        let has_pktgen = lab
            .exec(&lab.ns("c"), &["test", "-e", "/proc/net/pktgen/pgctrl"])
            .is_ok_and(|o| o.status.success());
        let use_pktgen = match opts.generator {
            GeneratorChoice::Pktgen if !has_pktgen => bail!(
                "--generator pktgen: this kernel has no pktgen (CONFIG_NET_PKTGEN, /proc/net/pktgen)"
            ),
            GeneratorChoice::Pktgen => true,
            GeneratorChoice::Afxdp => false,
            GeneratorChoice::Auto => has_pktgen,
        };
        progress.show(if use_pktgen {
            "generator: kernel pktgen (/proc/net/pktgen); the harness's own for opening flows"
        } else if has_pktgen {
            "generator: the harness's own AF_XDP generator (--generator afxdp)"
        } else {
            "generator: kernel pktgen is not built into this kernel (no /proc/net/pktgen): \
             using the harness's own AF_XDP generator"
        });
        Ok(Bench {
            use_pktgen,
            opts,
            exe,
            lab,
            sink,
            _pass: pass,
            logs,
            gen_mac,
            dir_mac,
            rs_mac,
            progress,
            check_targets: false,
            proto,
        })
    }

    /// Runs the generator once in its namespace.
    fn generate(
        &self,
        flows: u32,
        rate: u64,
        count: u64,
        dur: Duration,
        opening: bool,
    ) -> Result<GenReport> {
        self.generate_as(self.proto, flows, rate, count, dur, opening)
    }

    /// Runs the generator once, sending `proto`.
    fn generate_as(
        &self,
        proto: Proto,
        flows: u32,
        rate: u64,
        count: u64,
        dur: Duration,
        opening: bool,
    ) -> Result<GenReport> {
        let size = self.opts.size.max(proto.min_size());
        // Kernel pktgen sends UDP only, and opens nothing: the harness's own generator
        // does the rest.
        let pktgen = self.use_pktgen && proto == Proto::Udp && !opening;
        let mut args: Vec<String> = vec![
            if pktgen { "pktgen" } else { "gen" }.into(),
            "--iface".into(),
            "eth0".into(),
            "--src-mac".into(),
            format_mac(&self.gen_mac),
            "--dst-mac".into(),
            format_mac(&self.dir_mac),
            "--size".into(),
            size.to_string(),
            "--flows".into(),
            flows.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--count".into(),
            count.to_string(),
            "--duration-ms".into(),
            dur.as_millis().to_string(),
        ];
        let core = self.opts.gen_core.to_string();
        if pktgen {
            args.extend(["--cpu".into(), core]);
        } else {
            args.extend([
                "--proto".into(),
                format!("{proto:?}").to_lowercase(),
                "--core".into(),
                core,
            ]);
            if opening {
                args.push("--opening".into());
            }
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns("c")])
            .arg(&self.exe)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running the generator ({})", args[0]))?;
        if !out.status.success() {
            bail!(
                "generator ({}) failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("reading the generator's report")
    }

    fn trial(&mut self, flows: u32, rate: u64, dur: Duration) -> Result<Trial> {
        self.trial_of(flows, rate, dur, false)
    }

    /// A maximum-rate trial in which every frame is the SYN of a new TCP connection.
    fn opening_trial(&mut self, dur: Duration) -> Result<Trial> {
        self.trial_of(NEW_CONN_FLOWS, 0, dur, true)
    }

    fn trial_of(&mut self, flows: u32, rate: u64, dur: Duration, opening: bool) -> Result<Trial> {
        check_stop()?;
        self.sink.ask("reset")?;
        let before = cpu_times();
        // Opening trials send TCP SYNs whatever the run's protocol.
        let proto = if opening { Proto::Tcp } else { self.proto };
        let g = self.generate_as(proto, flows, rate, 0, dur, opening)?;
        let cpu = cpu_shares(&before, &cpu_times());
        // Frames still in flight arrive within microseconds; leave a margin.
        std::thread::sleep(Duration::from_millis(30));
        let r: SinkReading = serde_json::from_str(&self.sink.ask("read")?)?;
        let secs = g.elapsed_ns.max(1) as f64 / 1e9;
        let good = r.counts.good.min(g.sent);
        Ok(Trial {
            sent: g.sent,
            offered_pps: g.sent as f64 / secs,
            delivered_pps: good as f64 / secs,
            loss_pct: if g.sent == 0 {
                100.0
            } else {
                100.0 * (g.sent - good) as f64 / g.sent as f64
            },
            latency: r.latency,
            wrong_mac: r.counts.wrong_mac,
            cpu,
        })
    }

    /// Moves the director interface's RX processing (NAPI) into kernel threads and pins
    /// them to the director's core. A veth has NAPI only while an XDP program is
    /// attached, so this follows every activation.
    fn pin_napi(&self, v: Variant) -> Result<()> {
        let busy = self.opts.napi == NapiMode::BusyPoll && v != Variant::XdpTx;
        let script = if busy {
            "echo 0 > threaded; echo 2 > napi_defer_hard_irqs; echo 200000 > gro_flush_timeout"
        } else {
            "echo 1 > threaded; echo 0 > napi_defer_hard_irqs; echo 0 > gro_flush_timeout"
        };
        self.lab
            .sh(
                &self.lab.ns("d"),
                &format!("cd /sys/class/net/eth0 && {{ {script}; }}"),
            )
            .context("setting the director interface's NAPI mode")?;
        let core = self.opts.director_core;
        self.pin_napi_to(&[core])
    }

    /// Pins the director interface's NAPI threads, in the order of their NAPI ids (queue
    /// order), to `cores` (queue i to `cores[i]`, the last core for the rest).
    fn pin_napi_to(&self, cores: &[usize]) -> Result<()> {
        let mut threads = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if let Some(id) = comm.trim().strip_prefix("napi/eth0-") {
                let pid = entry.file_name().to_string_lossy().to_string();
                threads.push((id.parse::<u64>().unwrap_or(u64::MAX), pid));
            }
        }
        threads.sort();
        for (i, (_, pid)) in threads.iter().enumerate() {
            let core = cores.get(i).or(cores.last()).copied().unwrap_or(0);
            Command::new("taskset")
                .args(["-pc", &core.to_string(), pid])
                .stdout(Stdio::null())
                .status()
                .context("taskset (util-linux)")?;
        }
        Ok(())
    }

    fn activate(&mut self, v: Variant, flows: u32) -> Result<Active> {
        let cap = (flows as usize + flows as usize / 8).max(1 << 16);
        self.activate_with(v, cap, Some(flows))
    }

    /// xdpvs's command line in a trial. Default flags (the headline): only the placement
    /// and the table size, busy polling when `--napi busy-poll` asks for it, `extra`;
    /// then `--director-arg`s (tuning, for comparisons).
    fn director_args(
        &self,
        queues: u32,
        cores: &str,
        capacity: usize,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--queues".into(),
            queues.to_string(),
            "--cores".into(),
            cores.into(),
            "--conn-capacity".into(),
            capacity.to_string(),
            "--metrics".into(),
            MQ_METRICS.into(),
        ];
        if self.opts.napi == NapiMode::BusyPoll {
            args.extend(["--busy-poll".into(), BUSY_POLL_USECS.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.opts.director_args.iter().cloned());
        args
    }

    /// Starts `v` (a director with a table of `capacity` entries) and, for a director,
    /// opens `warm` flows first.
    fn activate_with(&mut self, v: Variant, capacity: usize, warm: Option<u32>) -> Result<Active> {
        let ns = self.lab.ns("d");
        let core = self.opts.director_core.to_string();
        let active = match v {
            Variant::Xdpvs | Variant::XdpvsChecks | Variant::XdpvsOffload => {
                let room = capacity.clamp(1 << 16, 1 << 26).to_string();
                let extra: &[&str] = if v == Variant::XdpvsOffload {
                    &["--offload", "--offload-flows", &room]
                } else {
                    &[]
                };
                let args = self.director_args(1, &core, capacity, extra);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.lab.start_director(&args)?;
                self.configure_services()?;
                if v == Variant::XdpvsChecks {
                    self.add_checked_reals()?;
                    self.lab.wait_resolved()?;
                }
                Active::Director
            }
            Variant::AfXdp | Variant::Lean => {
                let rs_mac = format_mac(&self.rs_mac);
                let lean = v == Variant::Lean;
                let mut args = vec![
                    "fwd", "--iface", "eth0", "--rs-mac", &rs_mac, "--core", &core,
                ];
                if lean {
                    args.push("--lean");
                }
                if self.opts.napi == NapiMode::BusyPoll && !lean {
                    args.extend(["--busy-poll", BUSY_POLL_USECS]);
                }
                if self.opts.poll == PollMode::Yield {
                    args.push("--yield-when-idle");
                }
                Active::Helper(Helper::start(
                    &ns,
                    &self.exe,
                    &args,
                    if lean { "lean" } else { "afxdp" },
                    &self.logs,
                    "ready",
                )?)
            }
            Variant::XdpTx => {
                let args = [
                    "xdp",
                    "tx",
                    "--iface",
                    "eth0",
                    "--dst-mac",
                    &format_mac(&self.rs_mac),
                    "--src-mac",
                    &format_mac(&self.dir_mac),
                ];
                Active::Helper(Helper::start(
                    &ns, &self.exe, &args, "xdp-tx", &self.logs, "ready",
                )?)
            }
            Variant::Testpmd => {
                let testpmd = crate::testpmd_path().context("dpdk-testpmd is not installed")?;
                let main_core = self.opts.gen_core.to_string();
                // testpmd's stdout is a pipe here: make it line-buffered (coreutils stdbuf).
                let args: Vec<String> = vec![
                    "-oL".into(),
                    testpmd.display().to_string(),
                    "-l".into(),
                    format!("{main_core},{core}"),
                    "--main-lcore".into(),
                    main_core.clone(),
                    "--no-huge".into(),
                    "-m".into(),
                    "1024".into(),
                    "--no-pci".into(),
                    "--vdev".into(),
                    // The driver busy-polls by default (busy_budget 64); 0 turns it off.
                    format!(
                        "net_af_xdp0,iface=eth0,start_queue=0,queue_count=1,busy_budget={}",
                        if self.opts.napi == NapiMode::BusyPoll {
                            64
                        } else {
                            0
                        }
                    ),
                    "--log-level=pmd.net.af_xdp:info".into(),
                    "--".into(),
                    "--forward-mode=mac".into(),
                    format!("--eth-peer=0,{}", format_mac(&self.rs_mac)),
                    "--nb-cores=1".into(),
                    "--auto-start".into(),
                ];
                let stdbuf = Path::new("/usr/bin/stdbuf");
                Active::Helper(Helper::start(
                    &ns,
                    stdbuf,
                    &args,
                    "testpmd",
                    &self.logs,
                    "Press enter to exit",
                )?)
            }
        };
        self.pin_napi(v)?;
        // Flows the director must know before the measurement.
        if let Some(flows) = warm.filter(|_| v.is_director()) {
            self.progress.show(&format!("{v}: opening {flows} flows"));
            self.open_flows(flows)?;
            if v == Variant::XdpvsOffload {
                // An offer the offload thread's queue had no room for is made again
                // when the flow's next packet crosses a worker in a later refresh
                // window: send the flows again if the map did not take them all, as long
                // as each offer gets more of them in (a host that drops the first
                // packets of many flows for a while, as this VM once did for a minute,
                // is ridden out; one that takes none of them is not).
                let (mut tries, mut before) = (0, 0);
                while let Some(held) = self.wait_offloaded(flows)? {
                    tries += 1;
                    let text = self.metrics_text()?;
                    let sum = |name: &str| -> f64 {
                        text.lines()
                            .filter(|l| {
                                l.strip_prefix(name)
                                    .is_some_and(|r| r.starts_with([' ', '{']))
                            })
                            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                            .sum()
                    };
                    let why = format!(
                        "the map holds {held} of {flows} flows ({} refused, {} records lost by the workers, {} connections in the workers' tables; frames lost before a worker: {} with the RX ring full, {} dropped by the socket)",
                        sum("xdpvs_offload_refused_total"),
                        sum("xdpvs_worker_offload_lost_total"),
                        sum("xdpvs_worker_connection_table_entries"),
                        sum("xdpvs_xsk_rx_ring_full_total"),
                        sum("xdpvs_xsk_rx_dropped_total"),
                    );
                    if tries == MAX_OFFERS || (tries > 1 && held <= before) {
                        bail!("the director's XDP map did not take every flow after {tries} offers: {why}");
                    }
                    before = held;
                    self.progress
                        .show(&format!("{v}: {why}; offering them again"));
                    std::thread::sleep(Duration::from_millis(1100));
                    self.open_flows(flows)?;
                }
            }
        }
        Ok(active)
    }

    /// The benchmark's services on the running director: UDP and TCP VIP:80 over IPv4
    /// and IPv6, `rr`, the sink as the one real server, its MAC resolved.
    fn configure_services(&mut self) -> Result<()> {
        let rs4 = xdpvs_testkit::lab::real_ip(1).into();
        let rs6 = xdpvs_testkit::lab::real_ip6(1).into();
        for (vip, rs) in [
            (std::net::IpAddr::from(VIP), rs4),
            (crate::VIP6.into(), rs6),
        ] {
            for proto in ["-u", "-t"] {
                let svc = xdpvs_sched::model::addr_port(vip, PORT);
                let rs = xdpvs_sched::model::addr_port(rs, PORT);
                self.lab.xdpvs(&["-A", proto, &svc, "-s", "rr"])?;
                let mut a = vec!["-a", proto, &svc, "-r", &rs];
                a.extend_from_slice(self.opts.forward.flags());
                self.lab.xdpvs(&a)?;
            }
        }
        self.lab.wait_resolved()?;
        Ok(())
    }

    /// One packet per flow, at a rate the director takes without loss, so that its table
    /// really holds them all before a measurement.
    fn open_flows(&self, flows: u32) -> Result<()> {
        self.generate(
            flows,
            WARM_UP_PPS,
            u64::from(flows),
            Duration::from_secs(120),
            true,
        )?;
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }

    /// [`HEALTH_CHECKS`] real servers with a TCP check every second, in services of their
    /// own (no traffic goes to them): addresses on the sink's interface, a listener on
    /// port 8000 there, and a restore batch to the director.
    fn add_checked_reals(&mut self) -> Result<()> {
        let per_service = CHECK_ADDRS.len();
        if !self.check_targets {
            let sink = self.lab.ns("r1");
            let adds: Vec<String> = CHECK_ADDRS
                .iter()
                .map(|a| format!("ip addr add 198.18.0.{a}/24 dev eth0"))
                .collect();
            self.lab.sh(&sink, &adds.join(" && "))?;
            // The real server's work stays off the director's core, like the generator.
            let gen = self.opts.gen_core.to_string();
            self.lab.spawn(
                &sink,
                &["taskset", "-c", &gen, "python3", "-c", CHECK_LISTENER],
            )?;
            self.check_targets = true;
        }
        let mut batch = String::new();
        for i in 0..HEALTH_CHECKS.div_ceil(per_service) {
            let svc = format!("{VIP}:{}", 10_001 + i);
            batch.push_str(&format!(
                "-A -t {svc} -s rr
"
            ));
            for a in CHECK_ADDRS.iter().take(HEALTH_CHECKS - i * per_service) {
                batch.push_str(&format!(
                    "-a -t {svc} -r 198.18.0.{a} -g --check tcp --check-port 8000 --check-interval 1
"
                ));
            }
        }
        self.lab.xdpvs_with_input(&["-R"], &batch)?;
        Ok(())
    }

    fn deactivate(&mut self, a: Active) -> Result<()> {
        match a {
            Active::Director => {
                self.lab.stop_director("TERM")?;
            }
            Active::Helper(h) => drop(h),
        }
        // Whatever was attached must be gone before the next forwarder attaches.
        let ns = self.lab.ns("d");
        let out = self.lab.exec(&ns, &["ip", "-o", "link", "show", "eth0"])?;
        if String::from_utf8_lossy(&out.stdout).contains(" xdp") {
            self.lab.sh(
                &ns,
                "ip link set dev eth0 xdp off; ip link set dev eth0 xdpgeneric off",
            )?;
        }
        Ok(())
    }

    /// xdpvs on `queues` queues with workers on `cores` (comma-separated), `flows` flows
    /// opened, at maximum rate: the trial and each worker's received frames.
    fn multi_queue_trial(
        &mut self,
        queues: u32,
        cores: &str,
        flows: u32,
        dur: Duration,
    ) -> Result<(Trial, Vec<u64>)> {
        set_queues(&self.lab, queues)?;
        let cap = (flows as usize * 2).max(1 << 16);
        let args = self.director_args(queues, cores, cap, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.lab.start_director(&args)?;
        let result = (|| -> Result<(Trial, Vec<u64>)> {
            self.configure_services()?;
            let cores: Vec<usize> = cores.split(',').filter_map(|c| c.parse().ok()).collect();
            self.pin_napi_to(&cores)?;
            self.open_flows(flows)?;
            let before = self.worker_rx()?;
            let t = self.trial(flows, 0, dur)?;
            let after = self.worker_rx()?;
            let per_queue = after
                .iter()
                .zip(before.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            Ok((t, per_queue))
        })();
        self.deactivate(Active::Director)?;
        result
    }

    /// Frames each worker of the director forwarded so far, in worker order (its
    /// metrics endpoint, `xdpvs_worker_forwarded_packets_total`).
    fn worker_rx(&mut self) -> Result<Vec<u64>> {
        self.worker_metric("xdpvs_worker_forwarded_packets_total")
    }

    /// Waits until the director's XDP map holds `flows` flows (`--offload` inserts them
    /// as their first packets cross a worker): None, or how many it holds once that
    /// stops growing.
    fn wait_offloaded(&mut self, flows: u32) -> Result<Option<u64>> {
        let mut last = (0, Instant::now());
        loop {
            // No answer (a slow scrape): as before.
            let n = self
                .metric("xdpvs_offload_flows")?
                .map_or(last.0, |n| n as u64);
            if n >= u64::from(flows) {
                return Ok(None);
            }
            if n > last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) {
                return Ok(Some(n));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The director's metrics, as text.
    fn metrics_text(&mut self) -> Result<String> {
        let url = format!("http://{MQ_METRICS}/metrics");
        let out = self
            .lab
            .exec(&self.lab.ns("d"), &["curl", "-s", "--max-time", "5", &url])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An unlabelled metric of the director, if it has it.
    fn metric(&mut self, name: &str) -> Result<Option<f64>> {
        let text = self.metrics_text()?;
        Ok(text.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(' ')?;
            v.trim().parse().ok()
        }))
    }

    /// A per-worker counter of the director's metrics endpoint, in worker order.
    fn worker_metric(&mut self, name: &str) -> Result<Vec<u64>> {
        let text = self.metrics_text()?;
        let mut per: Vec<(usize, u64)> = text
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
            .filter_map(|l| {
                let w = l
                    .split("worker=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()?;
                let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some((w, v as u64))
            })
            .collect();
        per.sort();
        Ok(per.into_iter().map(|(_, v)| v).collect())
    }

    /// The process of the active userspace forwarder, if it has one.
    fn pid_of(&mut self, a: &Active) -> Option<u32> {
        match a {
            Active::Director => self.lab.director().map(|c| c.id()),
            Active::Helper(h) => Some(h.pid()),
        }
    }

    /// A maximum-rate trial of one flow with `perf stat` counting the forwarder's system
    /// calls and scheduling events over the middle of it.
    fn budget(&mut self, v: Variant, flows: u32) -> Result<Option<crate::report::BudgetRow>> {
        let a = self.activate(v, flows)?;
        let Some(pid) = self.pid_of(&a) else {
            self.deactivate(a)?;
            return Ok(None);
        };
        self.progress
            .show(&format!("budget: {v}, {flows} flows, under perf stat"));
        let dur = self.opts.duration.max(Duration::from_secs(2));
        let window = dur.as_secs_f64() - 0.8;
        let out = self.logs.join(format!("perf-stat-{v}.csv"));
        let events = BUDGET_EVENTS.join(",");
        let out2 = out.clone();
        let perf = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            Command::new("perf")
                .args(["stat", "-x", ",", "-o"])
                .arg(&out2)
                .args(["-e", &events, "-p", &pid.to_string(), "--", "sleep"])
                .arg(format!("{window:.2}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        });
        let t = self.trial(flows, 0, dur);
        let status = perf.join().map_err(|_| anyhow::anyhow!("perf thread"))?;
        self.deactivate(a)?;
        let t = t?;
        if !status
            .context("starting perf (Debian package linux-perf)")?
            .success()
        {
            bail!("perf stat failed on {v}");
        }
        let text = std::fs::read_to_string(&out)?;
        let packets = t.delivered_pps * window;
        let per_packet = parse_perf_stat(&text)
            .into_iter()
            .map(|(e, n)| (e, n / packets.max(1.0)))
            .collect();
        Ok(Some(crate::report::BudgetRow {
            variant: v,
            flows,
            delivered_pps: t.delivered_pps,
            seconds: window,
            per_packet,
        }))
    }

    /// The zero-copy model at `flows` flows picked by `dist`: xdpvs and the lean loop
    /// alternated `rounds` times; callgrind's counts too (uniform, up to 1M flows).
    fn zerocopy_row(
        &mut self,
        flows: u32,
        dist: crate::zerocopy::Dist,
        rounds: usize,
        callgrind: bool,
    ) -> Result<crate::report::ZeroCopyRow> {
        use crate::zerocopy::{Dist, Forwarder, ModelRun};
        let name = dist.name();
        let packets = if self.opts.quick { 200_000 } else { 4_000_000 };
        // New connections: a quarter as many (each stays in the table).
        let packets = if dist == Dist::New {
            packets / 4
        } else {
            packets
        };
        let mut row = crate::report::ZeroCopyRow {
            flows,
            dist: name.into(),
            ..Default::default()
        };
        for round in 0..rounds {
            for fwd in [Forwarder::Xdpvs, Forwarder::Lean] {
                let fname = match fwd {
                    Forwarder::Xdpvs => "xdpvs",
                    Forwarder::Lean => "lean",
                };
                self.progress.show(&format!(
                    "zero-copy model: {flows} {name} flows, {fname} round {}/{rounds}",
                    round + 1
                ));
                let out = Command::new(&self.exe)
                    .args(["zerocopy", "--flows", &flows.to_string(), "--dist", name])
                    .args(["--forwarder", fname, "--packets", &packets.to_string()])
                    .stderr(Stdio::inherit())
                    .output()
                    .context("running the zero-copy model")?;
                if !out.status.success() {
                    bail!("the zero-copy model failed ({})", out.status);
                }
                let r: ModelRun = serde_json::from_slice(&out.stdout)
                    .context("reading the zero-copy model's report")?;
                match fwd {
                    Forwarder::Xdpvs => {
                        row.xdpvs_ns.push(r.ns_per_packet);
                        row.table_bytes = r.table_bytes;
                        row.backing = r.backing;
                        row.max_rss_bytes = r.max_rss_bytes;
                    }
                    Forwarder::Lean => row.lean_ns.push(r.ns_per_packet),
                }
            }
        }
        row.xdpvs_median_ns = median(&mut row.xdpvs_ns.clone());
        row.lean_median_ns = median(&mut row.lean_ns.clone());
        // Not in quick mode (it would take most of its minute).
        if callgrind && !self.opts.quick && dist != Dist::Zipf && flows <= 1_000_000 {
            self.progress
                .show(&format!("zero-copy model: {flows} {name} flows: callgrind"));
            let cg = |fwd| crate::callgrind_model(&self.exe, flows, dist, fwd, &self.logs).ok();
            row.xdpvs_cache = cg("xdpvs");
            // The lean loop's work does not depend on the traffic.
            if dist == Dist::Uniform {
                row.lean_cache = cg("lean");
            }
        }
        Ok(row)
    }

    /// Resident memory of a process, bytes.
    fn rss(pid: u32) -> u64 {
        crate::proc_kib(&format!("/proc/{pid}/status"), "VmRSS:") * 1024
    }

    /// Connection-table occupancy as the director reports it (ActiveConn + InActConn).
    fn occupancy(&self) -> Result<u64> {
        let l = self.lab.xdpvs(&["-Ln"])?;
        Ok(l.lines()
            .filter(|l| l.trim_start().starts_with("->"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let a: u64 = f.get(f.len().wrapping_sub(2))?.parse().ok()?;
                let i: u64 = f.last()?.parse().ok()?;
                Some(a + i)
            })
            .sum())
    }

    /// Maximum-rate trials of `variants` sending `proto`, alternating for `rounds`
    /// rounds (the trials recorded as phase "max", or "max-ipv6" when `proto` is IPv6).
    fn max_rate_rounds(
        &mut self,
        variants: &[Variant],
        proto: Proto,
        rounds: usize,
        trials: &mut Vec<TrialRecord>,
    ) -> Result<Vec<ThroughputSummary>> {
        // The progress line's words, and the trials' phase in the report.
        let (phase, name) = if proto.is_ipv6() {
            ("max rate over IPv6", "max-ipv6")
        } else {
            ("max rate", "max")
        };
        let mut rows: Vec<ThroughputSummary> = variants
            .iter()
            .map(|&variant| ThroughputSummary {
                variant,
                runs_pps: Vec::new(),
                offered_runs_pps: Vec::new(),
                median_pps: 0.0,
                offered_median_pps: 0.0,
                cpu: Vec::new(),
                tx_full_per_million: None,
            })
            .collect();
        let mut tx_full = (0u64, 0u64);
        let run_proto = std::mem::replace(&mut self.proto, proto);
        let result = (|| -> Result<()> {
            for round in 0..rounds {
                for row in rows.iter_mut() {
                    let v = row.variant;
                    let a = self.activate(v, self.opts.flows)?;
                    self.progress
                        .show(&format!("{phase}: {v} round {}/{rounds}", round + 1));
                    let t = self.trial(self.opts.flows, 0, self.opts.duration);
                    if v == Variant::Xdpvs {
                        // Counted since the director started: this trial's alone.
                        let full = self.worker_metric("xdpvs_worker_tx_ring_full_total");
                        let fwd = self.worker_rx();
                        if let (Ok(full), Ok(fwd)) = (full, fwd) {
                            tx_full.0 += full.iter().sum::<u64>();
                            tx_full.1 += fwd.iter().sum::<u64>();
                        }
                    }
                    self.deactivate(a)?;
                    let t = t?;
                    self.progress.show(&format!(
                        "{phase}: {v} round {}/{rounds}: {:.0} kpps delivered of {:.0} offered; {}",
                        round + 1,
                        t.delivered_pps / 1e3,
                        t.offered_pps / 1e3,
                        cpu_text(&t.cpu)
                    ));
                    trials.push(self.record(v, name, self.opts.flows, 0, &t));
                    row.runs_pps.push(t.delivered_pps);
                    row.offered_runs_pps.push(t.offered_pps);
                    row.cpu = t.cpu;
                }
            }
            Ok(())
        })();
        self.proto = run_proto;
        result?;
        for r in &mut rows {
            r.median_pps = median(&mut r.runs_pps.clone());
            r.offered_median_pps = median(&mut r.offered_runs_pps.clone());
            if r.variant == Variant::Xdpvs && tx_full.1 > 0 {
                r.tx_full_per_million = Some(tx_full.0 as f64 * 1e6 / tx_full.1 as f64);
            }
        }
        Ok(rows)
    }

    fn record(&self, v: Variant, phase: &str, flows: u32, target: u64, t: &Trial) -> TrialRecord {
        TrialRecord {
            variant: v,
            phase: phase.to_string(),
            flows,
            target_pps: target,
            sent: t.sent,
            offered_pps: t.offered_pps,
            delivered_pps: t.delivered_pps,
            loss_pct: t.loss_pct,
            wrong_mac: t.wrong_mac,
            latency: t.latency,
            cpu: t.cpu.clone(),
        }
    }
}

/// Runs the whole benchmark and returns its report (also written as JSON and SVG).
pub fn run(opts: Options) -> Result<Report> {
    check_stop()?;
    let mut b = Bench::up(opts.clone())?;
    let mut report = Report::new(&opts);
    report.config.generator = if b.use_pktgen { "pktgen" } else { "afxdp" }.into();
    let dur = opts.duration;
    let variants = opts.variants.clone();

    // 1. Maximum rate, alternating forwarders round after round.
    report.throughput =
        b.max_rate_rounds(&variants, opts.proto, opts.repeats, &mut report.trials)?;

    // 1b. The same at maximum rate with IPv6 frames (the IPv6 service of the director;
    // the baselines rewrite MACs whatever the frame carries), alternating likewise.
    if opts.ipv6_rounds > 0 {
        let v6: Vec<Variant> = variants
            .iter()
            .copied()
            // --offload leaves IPv6 to the workers: it would measure xdpvs again.
            .filter(|&v| v != Variant::XdpvsChecks && v != Variant::XdpvsOffload)
            .collect();
        report.ipv6 =
            b.max_rate_rounds(&v6, opts.proto.v6(), opts.ipv6_rounds, &mut report.trials)?;
    }

    // 2. Latency and loss at fractions of each forwarder's own maximum; 3. the search.
    for v in &variants {
        let max = report.median(*v);
        let offered_max = report
            .throughput
            .iter()
            .find(|s| s.variant == *v)
            .map_or(max, |s| s.offered_median_pps);
        let a = b.activate(*v, opts.flows)?;
        let result = (|| -> Result<()> {
            for &load in &opts.loads {
                let rate = (max * f64::from(load) / 100.0).max(1.0) as u64;
                b.progress.show(&format!(
                    "load {load}%: {v} at {:.0} kpps",
                    rate as f64 / 1e3
                ));
                let t = b.trial(opts.flows, rate, dur)?;
                report
                    .trials
                    .push(b.record(*v, "load", opts.flows, rate, &t));
                // At half load, the first of its trials (the others in 2b).
                let p99_trials_ns = if load == 50 && !opts.quick {
                    vec![t.latency.p99]
                } else {
                    Vec::new()
                };
                report.loads.push(LoadPoint {
                    p99_trials_ns,
                    variant: *v,
                    load_pct: load,
                    target_pps: rate,
                    offered_pps: t.offered_pps,
                    delivered_pps: t.delivered_pps,
                    loss_pct: t.loss_pct,
                    latency: t.latency,
                });
            }
            // Binary search for the highest rate losing at most `search_loss` %.
            let (mut lo, mut hi) = (0.0f64, offered_max.max(1.0));
            let mut best: Option<Trial> = None;
            let mut rate = hi;
            for step in 0..opts.search_steps {
                b.progress.show(&format!(
                    "search: {v} step {}/{} at {:.0} kpps",
                    step + 1,
                    opts.search_steps,
                    rate / 1e3
                ));
                let t = b.trial(opts.flows, rate as u64, dur)?;
                report
                    .trials
                    .push(b.record(*v, "search", opts.flows, rate as u64, &t));
                if t.loss_pct <= opts.search_loss {
                    lo = rate;
                    best = Some(t);
                    if step == 0 {
                        break; // lossless at the generator's maximum
                    }
                } else {
                    hi = rate;
                }
                rate = (lo + hi) / 2.0;
            }
            report.search.push(SearchResult {
                variant: *v,
                rate_pps: best.as_ref().map_or(0.0, |t| t.delivered_pps),
                offered_pps: best.as_ref().map_or(0.0, |t| t.offered_pps),
                loss_pct: best.as_ref().map_or(100.0, |t| t.loss_pct),
                resolution_pps: hi - lo,
                max_loss_pct: opts.search_loss,
            });
            Ok(())
        })();
        b.deactivate(a)?;
        result?;
    }

    // 2b. The other trials at half load, the forwarders alternating round after round:
    // a trial's p99 on two shared cores moves 2x from minute to minute, and one
    // forwarder's trials back to back could all land in a noisy minute.
    if !opts.quick {
        for k in 1..crate::report::HALF_LOAD_TRIALS {
            for v in &variants {
                let Some(i) = report
                    .loads
                    .iter()
                    .position(|p| p.variant == *v && p.load_pct == 50)
                else {
                    continue;
                };
                let rate = report.loads[i].target_pps;
                let a = b.activate(*v, opts.flows)?;
                b.progress.show(&format!(
                    "load 50%: {v}, trial {}/{}",
                    k + 1,
                    crate::report::HALF_LOAD_TRIALS
                ));
                let t = b.trial(opts.flows, rate, dur);
                b.deactivate(a)?;
                let t = t?;
                report
                    .trials
                    .push(b.record(*v, "load", opts.flows, rate, &t));
                report.loads[i].p99_trials_ns.push(t.latency.p99);
            }
        }
    }

    // 4. Where the userspace forwarders' time goes, per packet, at one flow.
    for &flows in &opts.budget_flows {
        for &v in &variants {
            if v == Variant::XdpTx {
                continue;
            }
            if let Some(row) = b.budget(v, flows)? {
                report.budget.push(row);
            }
        }
    }

    // 5. New connections per second: every frame a SYN of a new 5-tuple.
    if opts.new_conn_rounds > 0 {
        let mut rows: Vec<crate::report::NewConnRow> =
            [Variant::Xdpvs, Variant::XdpvsOffload, Variant::Lean]
                .into_iter()
                .map(|variant| crate::report::NewConnRow {
                    variant,
                    median_pps: 0.0,
                    runs_pps: Vec::new(),
                    offered_pps: 0.0,
                })
                .collect();
        let mut offered = vec![Vec::new(); rows.len()];
        for round in 0..opts.new_conn_rounds {
            for (i, row) in rows.iter_mut().enumerate() {
                let v = row.variant;
                let a = b.activate_with(v, NEW_CONN_CAPACITY, None)?;
                b.progress.show(&format!(
                    "new connections: {v} round {}/{}",
                    round + 1,
                    opts.new_conn_rounds
                ));
                let t = b.opening_trial(dur);
                b.deactivate(a)?;
                let t = t?;
                report
                    .trials
                    .push(b.record(v, "new-conn", NEW_CONN_FLOWS, 0, &t));
                row.runs_pps.push(t.delivered_pps);
                offered[i].push(t.offered_pps);
            }
        }
        for (row, o) in rows.iter_mut().zip(offered.iter_mut()) {
            row.median_pps = median(&mut row.runs_pps.clone());
            row.offered_pps = median(o);
        }
        report.new_conns = rows;
    }

    // 5a. Established flows in XDP (`--offload`) against the in-kernel XDP_TX ceiling
    // at one flow (the headline compares them at `flows`), alternating.
    let one: Vec<Variant> = [Variant::XdpvsOffload, Variant::XdpTx, Variant::Xdpvs]
        .into_iter()
        .filter(|v| variants.contains(v))
        .collect();
    if !opts.quick && opts.flows != 1 && one.contains(&Variant::XdpvsOffload) {
        let flows = b.opts.flows;
        b.opts.flows = 1;
        let r = b.max_rate_rounds(&one, opts.proto, opts.repeats, &mut report.trials);
        b.opts.flows = flows;
        report.offload_one_flow = r?;
    }

    // 5b. The zero-copy model: xdpvs's worker loop and the lean loop over in-memory
    // rings, alternating, each run a process of its own (its tables, its memory).
    // New connections beside the fewest established flows and beside 1M.
    for &flows in &opts.zerocopy_flows {
        use crate::zerocopy::Dist;
        let first = opts.zerocopy_flows.first() == Some(&flows);
        let dists: &[Dist] = if first || flows == 1_000_000 {
            &[Dist::Uniform, Dist::Zipf, Dist::New]
        } else {
            &[Dist::Uniform, Dist::Zipf]
        };
        for &dist in dists {
            if opts.zerocopy_rounds == 0 {
                break;
            }
            check_stop()?;
            let row = b.zerocopy_row(flows, dist, opts.zerocopy_rounds, opts.callgrind)?;
            report.zerocopy.push(row);
        }
    }

    // 6. Scaling with connection-table occupancy: xdpvs against the lean floor.
    for &flows in &opts.scaling {
        let mut point = ScalingPoint {
            flows,
            ..ScalingPoint::default()
        };
        let (mut x, mut f) = (Vec::new(), Vec::new());
        for round in 0..opts.scaling_repeats {
            for v in [Variant::Xdpvs, Variant::Lean] {
                let a = b.activate(v, flows)?;
                if v == Variant::Xdpvs {
                    point.occupancy = b.occupancy().unwrap_or(0);
                    point.director_rss_bytes = b.pid_of(&a).map_or(0, Bench::rss);
                }
                b.progress.show(&format!(
                    "scaling: {flows} flows, {v} round {}/{}",
                    round + 1,
                    opts.scaling_repeats
                ));
                let t = b.trial(flows, 0, dur);
                b.deactivate(a)?;
                let t = t?;
                report.trials.push(b.record(v, "scaling", flows, 0, &t));
                if v == Variant::Xdpvs { &mut x } else { &mut f }.push(t.delivered_pps);
            }
        }
        point.xdpvs_pps = median(&mut x);
        point.floor_pps = median(&mut f);
        b.progress
            .show(&format!("scaling: {flows} flows: pipeline cost"));
        let mut replay = crate::pipeline::Replay::new(flows);
        let mut ns: Vec<f64> = (0..3)
            .map(|_| crate::pipeline::ns_per_packet(&mut replay, 2_000_000))
            .collect();
        point.ns_per_packet = median(&mut ns);
        drop(replay);
        // The count does not depend on the table's size; building 10M flows under
        // valgrind would take most of an hour.
        if opts.callgrind && flows <= 1_000_000 {
            b.progress
                .show(&format!("scaling: {flows} flows: callgrind"));
            point.cache = crate::callgrind(&b.exe, flows, &b.logs).ok();
            point.instructions_per_packet = point.cache.map(|c| c.instructions);
        }
        report.scaling.push(point);
    }

    // 7. Queues and cores: the director on 1 and 2 queues of a multi-queue veth.
    if opts.multi_queue_rounds > 0 {
        let flows = opts.flows.max(1000);
        let mut rows: Vec<crate::report::MultiQueueRow> = MULTI_QUEUE
            .iter()
            .map(|&(queues, cores)| crate::report::MultiQueueRow {
                queues,
                cores: cores.to_string(),
                median_pps: 0.0,
                runs_pps: Vec::new(),
                per_queue_rx: Vec::new(),
                cpu: Vec::new(),
            })
            .collect();
        for round in 0..opts.multi_queue_rounds {
            for row in rows.iter_mut() {
                b.progress.show(&format!(
                    "multi-queue: {} queue(s), workers on cores {} round {}/{}",
                    row.queues,
                    row.cores,
                    round + 1,
                    opts.multi_queue_rounds
                ));
                let t = b.multi_queue_trial(row.queues, &row.cores, flows, dur);
                set_queues(&b.lab, 1)?;
                let (t, per_queue) = t?;
                report
                    .trials
                    .push(b.record(Variant::Xdpvs, "multi-queue", flows, 0, &t));
                row.runs_pps.push(t.delivered_pps);
                row.per_queue_rx = per_queue;
                row.cpu = t.cpu;
            }
        }
        for row in &mut rows {
            row.median_pps = median(&mut row.runs_pps.clone());
        }
        report.multi_queue = rows;
    }

    // 8. Where the director's time goes.
    if let Some(svg) = &opts.flamegraph {
        let a = b.activate(Variant::Xdpvs, opts.flows)?;
        let pid = b
            .lab
            .director()
            .map(|c| c.id())
            .context("director not running")?;
        b.progress
            .show("flamegraph: recording the director with perf");
        let secs = dur.as_secs().max(2);
        let perf_data = b.logs.join("perf.data");
        let mut perf = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "1999", "-g", "-o"])
            .arg(&perf_data)
            .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(b.logs.join("perf.log"))?)
            .spawn()
            .context("starting perf (Debian package linux-perf)")?;
        std::thread::sleep(Duration::from_millis(300));
        let t = b.trial(opts.flows, 0, Duration::from_secs(secs));
        let status = perf.wait()?;
        b.deactivate(a)?;
        t?;
        if !status.success() {
            bail!(
                "perf record failed: see {}",
                b.logs.join("perf.log").display()
            );
        }
        crate::flamegraph(&perf_data, svg)?;
        report.flamegraph = Some(svg.display().to_string());
    }
    b.progress.done();
    report.finish();
    Ok(report)
}

/// The human table of a report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nMaximum rate (median of {} alternating runs, {} flows, {}-byte {:?} frames)",
        r.config.repeats, r.config.flows, r.config.size, r.config.proto
    );
    let _ = writeln!(
        s,
        "  {:<13} {:>12} {:>12}   runs (kpps)",
        "forwarder", "delivered", "offered"
    );
    for t in &r.throughput {
        let _ = writeln!(
            s,
            "  {:<13} {:>8.0} kpps {:>7.0} kpps   {}",
            t.variant.to_string(),
            t.median_pps / 1e3,
            t.offered_median_pps / 1e3,
            kpps_list(&t.runs_pps)
        );
    }
    let _ = writeln!(
        s,
        "  CPU load in each forwarder's last run (generator on cpu{}, director on cpu{}):",
        r.config.gen_core, r.config.director_core
    );
    for t in &r.throughput {
        let _ = writeln!(s, "    {:<13} {}", t.variant.to_string(), cpu_text(&t.cpu));
    }
    for t in &r.throughput {
        if let Some(f) = t.tx_full_per_million {
            let _ = writeln!(
                s,
                "  {} TX ring full: {f:.0} frames per million forwarded (each waited a pass)",
                t.variant
            );
        }
    }
    if !r.zerocopy.is_empty() {
        let _ = writeln!(
            s,
            "\nZero-copy model (worker loop over in-memory rings, no kernel; median of {} alternating runs)",
            r.zerocopy.iter().map(|z| z.xdpvs_ns.len()).max().unwrap_or(0)
        );
        let _ = writeln!(
            s,
            "  {:>10} {:<8} {:>10} {:>8} {:>9} {:>8} {:>13} {:>13} {:>9}  table",
            "flows",
            "dist",
            "xdpvs ns",
            "Mpps",
            "lean ns",
            "Mpps",
            "lean / xdpvs",
            "instr/pkt",
            "D1 miss"
        );
        for z in &r.zerocopy {
            let cg = z
                .xdpvs_cache
                .map_or("-".to_string(), |c| format!("{:.0}", c.instructions));
            let d1 = z
                .xdpvs_cache
                .map_or("-".to_string(), |c| format!("{:.1}", c.d1_misses));
            let _ = writeln!(
                s,
                "  {:>10} {:<8} {:>10.1} {:>8.2} {:>9.1} {:>8.2} {:>12.2}x {:>13} {:>9}  {} MiB, {}",
                z.flows,
                z.dist,
                z.xdpvs_median_ns,
                1e3 / z.xdpvs_median_ns,
                z.lean_median_ns,
                1e3 / z.lean_median_ns,
                z.lean_median_ns / z.xdpvs_median_ns,
                cg,
                d1,
                z.table_bytes >> 20,
                z.backing
            );
        }
        if r.zerocopy.iter().any(|z| z.dist == "new") {
            let _ = writeln!(
                s,
                "  (new: every packet a SYN of a new connection, scheduled and inserted beside the flows established)"
            );
        }
        for z in r.zerocopy.iter().filter(|z| z.lean_cache.is_some()) {
            if let Some(c) = z.lean_cache {
                let _ = writeln!(
                    s,
                    "  lean loop at {} flows: {:.0} instructions, {:.2} D1 misses per packet",
                    z.flows, c.instructions, c.d1_misses
                );
            }
        }
    }
    if !r.ratios.is_empty() {
        let _ = writeln!(s, "\nxdpvs relative to each (median / median)");
        for (name, ratio) in &r.ratios {
            let _ = writeln!(s, "  xdpvs / {name:<13} {ratio:.2}x");
        }
    }
    let over = |set: &[ThroughputSummary], a: Variant, b: Variant| {
        let m = |v: Variant| {
            set.iter()
                .find(|t| t.variant == v)
                .map_or(0.0, |t| t.median_pps)
        };
        (m(a) > 0.0 && m(b) > 0.0).then(|| m(a) / m(b))
    };
    if let Some(x) = over(&r.throughput, Variant::XdpvsOffload, Variant::XdpTx) {
        let _ = writeln!(
            s,
            "  xdpvs-offload / xdp-tx {x:.2}x at {} flows (goal >= 0.8x)",
            r.config.flows
        );
    }
    if !r.offload_one_flow.is_empty() {
        let _ = writeln!(
            s,
            "\nMaximum rate at 1 flow (median of {} alternating runs)",
            r.offload_one_flow.first().map_or(0, |t| t.runs_pps.len())
        );
        for t in &r.offload_one_flow {
            let _ = writeln!(
                s,
                "  {:<14} {:>10.0} pps",
                t.variant.to_string(),
                t.median_pps
            );
        }
        if let Some(x) = over(&r.offload_one_flow, Variant::XdpvsOffload, Variant::XdpTx) {
            let _ = writeln!(
                s,
                "  xdpvs-offload / xdp-tx {x:.2}x at 1 flow (goal >= 0.8x)"
            );
        }
    }
    if !r.ipv6.is_empty() {
        let size = r.config.size.max(r.config.proto.v6().min_size());
        let _ = writeln!(
            s,
            "\nMaximum rate over IPv6 (median of {} alternating runs, {} flows, {size}-byte {:?} frames)",
            r.ipv6.first().map_or(0, |t| t.runs_pps.len()),
            r.config.flows,
            r.config.proto.v6()
        );
        let x6 = r
            .ipv6
            .iter()
            .find(|t| t.variant == Variant::Xdpvs)
            .map_or(0.0, |t| t.median_pps);
        for t in &r.ipv6 {
            let vs = if t.variant != Variant::Xdpvs && t.median_pps > 0.0 {
                format!("   xdpvs / {}: {:.2}x", t.variant, x6 / t.median_pps)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<13} {:>8.0} kpps {:>7.0} kpps   {}{vs}",
                t.variant.to_string(),
                t.median_pps / 1e3,
                t.offered_median_pps / 1e3,
                kpps_list(&t.runs_pps)
            );
        }
        let x4 = r.median(Variant::Xdpvs);
        if x4 > 0.0 && x6 > 0.0 {
            let _ = writeln!(s, "  xdpvs IPv6 / IPv4: {:.2}x", x6 / x4);
        }
    }
    let _ = writeln!(
        s,
        "\nOffered load (% of each forwarder's maximum): loss and one-way latency (us)"
    );
    let _ = writeln!(
        s,
        "  {:<13} {:>5} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "forwarder", "load", "offered", "deliver", "loss %", "p50", "p90", "p99", "p99.9", "max"
    );
    for p in &r.loads {
        let us = |ns: u64| ns as f64 / 1e3;
        let _ = writeln!(
            s,
            "  {:<13} {:>4}% {:>6.0} k {:>6.0} k {:>8.3} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1}",
            p.variant.to_string(),
            p.load_pct,
            p.offered_pps / 1e3,
            p.delivered_pps / 1e3,
            p.loss_pct,
            us(p.latency.p50),
            us(p.latency.p90),
            us(p.latency.p99),
            us(p.latency.p999),
            us(p.latency.max)
        );
    }
    // p99 at half of each forwarder's maximum (the median of its trials there), against
    // XDP_TX's (goal: at most 2x).
    let half = |v: Variant| r.loads.iter().find(|p| p.variant == v && p.load_pct == 50);
    let p99_of = |p: &LoadPoint| {
        Some(if p.p99_trials_ns.is_empty() {
            p.latency.p99 as f64
        } else {
            median(
                &mut p
                    .p99_trials_ns
                    .iter()
                    .map(|&n| n as f64)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|&ns| ns > 0.0)
    };
    // Each trial's p99, us, where there were several.
    let trials_of = |p: &LoadPoint| -> Option<String> {
        (p.p99_trials_ns.len() > 1).then(|| {
            p.p99_trials_ns
                .iter()
                .map(|n| format!("{:.0}", *n as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    if let Some((tx, base)) = half(Variant::XdpTx).and_then(|p| Some((p, p99_of(p)?))) {
        for v in [Variant::Xdpvs, Variant::XdpvsOffload] {
            let Some(p) = half(v) else { continue };
            let Some(ns) = p99_of(p) else { continue };
            let trials = match (trials_of(p), trials_of(tx)) {
                (Some(mine), Some(theirs)) => {
                    format!("; trials {v} {mine}, xdp-tx {theirs} us")
                }
                (Some(mine), None) => format!("; {v}'s trials {mine} us"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  p99 at 50% load: {v} / xdp-tx {:.2}x (goal <= 2x; {:.0} / {:.0} us{trials})",
                ns / base,
                ns / 1e3,
                base / 1e3
            );
        }
    }
    let _ = writeln!(
        s,
        "\nThroughput with loss <= {}% (RFC 2544-style search)",
        r.search.first().map_or(0.01, |x| x.max_loss_pct)
    );
    for x in &r.search {
        let _ = writeln!(
            s,
            "  {:<13} {:>8.0} kpps (loss {:.4}%, search resolution {:.0} kpps)",
            x.variant.to_string(),
            x.rate_pps / 1e3,
            x.loss_pct,
            x.resolution_pps / 1e3
        );
    }
    if !r.scaling.is_empty() {
        let _ = writeln!(s, "\nScaling with connection-table occupancy");
        let _ = writeln!(
            s,
            "  {:>9} {:>10} {:>11} {:>11} {:>7} {:>7} {:>9} {:>22} {:>8}",
            "flows",
            "in table",
            "xdpvs kpps",
            "lean kpps",
            "/lean",
            "/1flow",
            "ns/pkt",
            "instr (D1/LL miss)/pkt",
            "RSS"
        );
        let one = r.scaling.first().map_or(0.0, |p| p.xdpvs_pps);
        for p in &r.scaling {
            let _ = writeln!(
                s,
                "  {:>9} {:>10} {:>11.0} {:>11.0} {:>7.2} {:>7.2} {:>9.1} {:>22} {:>8}",
                p.flows,
                p.occupancy,
                p.xdpvs_pps / 1e3,
                p.floor_pps / 1e3,
                ratio(p.xdpvs_pps, p.floor_pps),
                ratio(p.xdpvs_pps, one),
                p.ns_per_packet,
                p.cache.map_or("-".to_string(), |c| format!(
                    "{:.0} ({:.1}/{:.1})",
                    c.instructions, c.d1_misses, c.ll_misses
                )),
                format!("{} MiB", p.director_rss_bytes >> 20)
            );
        }
    }
    if !r.budget.is_empty() {
        let _ = writeln!(
            s,
            "\nPer delivered packet at maximum rate (perf stat on the forwarder's process)"
        );
        let _ = writeln!(
            s,
            "  {:<13} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "forwarder",
            "flows",
            "kpps",
            "cpu ns",
            "syscalls",
            "sendto",
            "poll",
            "yield",
            "recvfrom",
            "ctx sw"
        );
        for b in &r.budget {
            let _ = writeln!(
                s,
                "  {:<13} {:>8} {:>9.0} {:>9.0} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>9.4}",
                b.variant.to_string(),
                b.flows,
                b.delivered_pps / 1e3,
                b.get("task-clock") * 1e6,
                b.get("syscalls"),
                b.get("sendto"),
                b.get("poll") + b.get("ppoll"),
                b.get("sched_yield"),
                b.get("recvfrom"),
                b.get("context-switches"),
            );
        }
    }
    if !r.new_conns.is_empty() {
        let _ = writeln!(
            s,
            "\nNew connections (every frame the SYN of a new 5-tuple)"
        );
        for n in &r.new_conns {
            let _ = writeln!(
                s,
                "  {:<13} {:>8.0} k/s (offered {:.0} k/s)   runs {}",
                n.variant.to_string(),
                n.median_pps / 1e3,
                n.offered_pps / 1e3,
                kpps_list(&n.runs_pps)
            );
        }
    }
    if !r.multi_queue.is_empty() {
        let _ = writeln!(
            s,
            "\nQueues and cores (xdpvs, median; per-worker frames of the last round)"
        );
        for m in &r.multi_queue {
            let per: Vec<String> = m.per_queue_rx.iter().map(|p| p.to_string()).collect();
            let _ = writeln!(
                s,
                "  {} queue(s), workers on cores {:<5} {:>6.0} kpps   runs {}   per worker {}   {}",
                m.queues,
                m.cores,
                m.median_pps / 1e3,
                kpps_list(&m.runs_pps),
                per.join("/"),
                cpu_text(&m.cpu)
            );
        }
    }
    if let Some(f) = &r.flamegraph {
        let _ = writeln!(s, "\nFlame graph of the director: {f}");
    }
    s
}

/// Rates in kpps, space-separated.
fn kpps_list(runs: &[f64]) -> String {
    runs.iter()
        .map(|p| format!("{:.0}", p / 1e3))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}
