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

use crate::helpers::{GenReport, Latency, SinkReading};
use crate::report::{
    CpuShare, LoadPoint, Report, ScalingPoint, SearchResult, ThroughputSummary, TrialRecord,
};
use crate::traffic::Proto;
use crate::{Variant, HEALTH_CHECKS, PORT, VIP};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Short run for CI: few, short trials.
    pub quick: bool,
    /// Forwarders to compare, in alternation order.
    pub variants: Vec<Variant>,
    /// Flows in the comparison, the load sweep and the search.
    pub flows: u32,
    /// Frame size with FCS.
    pub size: usize,
    /// Protocol.
    pub proto: Proto,
    /// One trial's length.
    pub duration: Duration,
    /// Alternating rounds at maximum rate.
    pub repeats: usize,
    /// Offered loads, % of each forwarder's own maximum.
    pub loads: Vec<u32>,
    /// Search steps (RFC 2544 throughput).
    pub search_steps: usize,
    /// Loss allowed by the search, in %.
    pub search_loss: f64,
    /// Flow counts of the scaling table.
    pub scaling: Vec<u32>,
    /// Rounds per scaling point.
    pub scaling_repeats: usize,
    /// Instructions per packet with callgrind.
    pub callgrind: bool,
    /// Core of the generator (and of the harness itself).
    pub gen_core: usize,
    /// Core of all the director's work.
    pub director_core: usize,
    /// Where results go.
    pub out_dir: PathBuf,
    /// Flame graph of the director's workers.
    pub flamegraph: Option<PathBuf>,
    /// Extra arguments for `xdpvs run`.
    pub director_args: Vec<String>,
    /// Where the userspace forwarders' RX processing runs.
    pub napi: NapiMode,
    /// How the userspace forwarders poll.
    pub poll: PollMode,
    /// The command line, for the record.
    pub command: String,
}

/// How a userspace forwarder's interface RX processing (NAPI) lands on its core.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum NapiMode {
    /// Preferred busy polling: the forwarding thread runs NAPI itself; interrupts are
    /// deferred (`napi_defer_hard_irqs` 2, `gro_flush_timeout` 200 us).
    BusyPoll,
    /// A threaded NAPI kernel thread pinned to the forwarder's core.
    Threaded,
}

/// How the userspace forwarders (xdpvs, the bare forwarder) poll their socket.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Spin.
    Busy,
    /// Spin, yielding the core after each empty poll.
    Yield,
}

/// Rate of the packets that open the flows before a measurement (well under what the
/// director forwards without loss here: about 190 kpps).
const WARM_UP_PPS: u64 = 100_000;

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

/// Per-CPU time from /proc/stat: (busy, softirq, total) jiffies.
pub(crate) fn cpu_times() -> Vec<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, v.get(6).copied().unwrap_or(0), total)
        })
        .collect()
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
        let exe = std::env::current_exe().context("locating xdpvs-bench")?;
        std::fs::create_dir_all(&opts.out_dir)
            .with_context(|| format!("creating {}", opts.out_dir.display()))?;
        let logs = opts.out_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut lab = Lab::up(
            &exe,
            LabSpec {
                reals: 1,
                director_queues: 1,
                http: false,
            },
        )?;
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
        if Path::new("/proc/net/pktgen").exists() {
            progress.show(
                "kernel pktgen is present but not used: the sink reads the stamp of the \
                 harness's own AF_XDP generator",
            );
        }
        Ok(Bench {
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
        let mut args: Vec<String> = vec![
            "gen".into(),
            "--iface".into(),
            "eth0".into(),
            "--src-mac".into(),
            format_mac(&self.gen_mac),
            "--dst-mac".into(),
            format_mac(&self.dir_mac),
            "--proto".into(),
            format!("{:?}", self.opts.proto).to_lowercase(),
            "--size".into(),
            self.opts.size.to_string(),
            "--flows".into(),
            flows.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--count".into(),
            count.to_string(),
            "--duration-ms".into(),
            dur.as_millis().to_string(),
            "--core".into(),
            self.opts.gen_core.to_string(),
        ];
        if opening {
            args.push("--opening".into());
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns("c")])
            .arg(&self.exe)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .context("running the generator")?;
        if !out.status.success() {
            bail!(
                "generator failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("reading the generator's report")
    }

    fn trial(&mut self, flows: u32, rate: u64, dur: Duration) -> Result<Trial> {
        check_stop()?;
        self.sink.ask("reset")?;
        let before = cpu_times();
        let g = self.generate(flows, rate, 0, dur, false)?;
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
        let core = self.opts.director_core.to_string();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.starts_with("napi/eth0-") {
                let pid = entry.file_name().to_string_lossy().to_string();
                Command::new("taskset")
                    .args(["-pc", &core, &pid])
                    .stdout(Stdio::null())
                    .status()
                    .context("taskset (util-linux)")?;
            }
        }
        Ok(())
    }

    fn activate(&mut self, v: Variant, flows: u32) -> Result<Active> {
        let ns = self.lab.ns("d");
        let core = self.opts.director_core.to_string();
        let active = match v {
            Variant::Xdpvs | Variant::XdpvsChecks => {
                let cap = (flows as usize + flows as usize / 8)
                    .max(1 << 16)
                    .to_string();
                let mut args = vec![
                    "--queues",
                    "1",
                    "--cores",
                    &core,
                    "--poll",
                    if self.opts.poll == PollMode::Yield {
                        "yield"
                    } else {
                        "busy"
                    },
                    "--conn-capacity",
                    &cap,
                ];
                if self.opts.napi == NapiMode::BusyPoll {
                    args.extend(["--busy-poll", BUSY_POLL_USECS]);
                }
                args.extend(self.opts.director_args.iter().map(|s| s.as_str()));
                self.lab.start_director(&args)?;
                for proto in ["-u", "-t"] {
                    let svc = format!("{VIP}:{PORT}");
                    let rs = format!("{}:{PORT}", xdpvs_testkit::lab::real_ip(1));
                    self.lab.xdpvs(&["-A", proto, &svc, "-s", "rr"])?;
                    self.lab.xdpvs(&["-a", proto, &svc, "-r", &rs, "-g"])?;
                }
                if v == Variant::XdpvsChecks {
                    self.add_checked_reals()?;
                }
                self.lab.wait_resolved()?;
                Active::Director
            }
            Variant::AfXdp => {
                let rs_mac = format_mac(&self.rs_mac);
                let mut args = vec![
                    "fwd", "--iface", "eth0", "--rs-mac", &rs_mac, "--core", &core,
                ];
                if self.opts.napi == NapiMode::BusyPoll {
                    args.extend(["--busy-poll", BUSY_POLL_USECS]);
                }
                if self.opts.poll == PollMode::Yield {
                    args.push("--yield-when-idle");
                }
                Active::Helper(Helper::start(
                    &ns, &self.exe, &args, "afxdp", &self.logs, "ready",
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
        // Flows the director must know before the measurement: one packet per flow, at
        // a rate it takes without loss, so that the table really holds them all.
        if v.is_director() {
            self.progress.show(&format!("{v}: opening {flows} flows"));
            self.generate(
                flows,
                WARM_UP_PPS,
                u64::from(flows),
                Duration::from_secs(120),
                true,
            )?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(active)
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
    let dur = opts.duration;
    let variants = opts.variants.clone();

    // 1. Maximum rate, alternating forwarders round after round.
    report.throughput = variants
        .iter()
        .map(|&variant| ThroughputSummary {
            variant,
            runs_pps: Vec::new(),
            offered_runs_pps: Vec::new(),
            median_pps: 0.0,
            offered_median_pps: 0.0,
            cpu: Vec::new(),
        })
        .collect();
    for round in 0..opts.repeats {
        for (i, &v) in variants.iter().enumerate() {
            let a = b.activate(v, opts.flows)?;
            b.progress.show(&format!(
                "max rate: {v} round {}/{}",
                round + 1,
                opts.repeats
            ));
            let t = b.trial(opts.flows, 0, dur);
            b.deactivate(a)?;
            let t = t?;
            b.progress.show(&format!(
                "max rate: {v} round {}/{}: {:.0} kpps delivered of {:.0} offered; {}",
                round + 1,
                opts.repeats,
                t.delivered_pps / 1e3,
                t.offered_pps / 1e3,
                cpu_text(&t.cpu)
            ));
            report.trials.push(b.record(v, "max", opts.flows, 0, &t));
            let s = &mut report.throughput[i];
            s.runs_pps.push(t.delivered_pps);
            s.offered_runs_pps.push(t.offered_pps);
            s.cpu = t.cpu;
        }
    }
    for s in &mut report.throughput {
        s.median_pps = median(&mut s.runs_pps.clone());
        s.offered_median_pps = median(&mut s.offered_runs_pps.clone());
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
                report.loads.push(LoadPoint {
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

    // 4. Scaling with connection-table occupancy: xdpvs against the bare forwarder.
    for &flows in &opts.scaling {
        let mut point = ScalingPoint {
            flows,
            ..ScalingPoint::default()
        };
        let (mut x, mut f) = (Vec::new(), Vec::new());
        for round in 0..opts.scaling_repeats {
            for v in [Variant::Xdpvs, Variant::AfXdp] {
                let a = b.activate(v, flows)?;
                if v == Variant::Xdpvs {
                    point.occupancy = b.occupancy().unwrap_or(0);
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
        point.afxdp_pps = median(&mut f);
        b.progress
            .show(&format!("scaling: {flows} flows: pipeline cost"));
        let mut replay = crate::pipeline::Replay::new(flows);
        let mut ns: Vec<f64> = (0..3)
            .map(|_| crate::pipeline::ns_per_packet(&mut replay, 2_000_000))
            .collect();
        point.ns_per_packet = median(&mut ns);
        drop(replay);
        if opts.callgrind {
            b.progress
                .show(&format!("scaling: {flows} flows: callgrind"));
            point.instructions_per_packet = crate::callgrind(&b.exe, flows, &b.logs).ok();
        }
        report.scaling.push(point);
    }

    // 5. Where the director's time goes.
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
        "  {:<10} {:>12} {:>12}   runs (kpps)",
        "forwarder", "delivered", "offered"
    );
    for t in &r.throughput {
        let runs: Vec<String> = t
            .runs_pps
            .iter()
            .map(|p| format!("{:.0}", p / 1e3))
            .collect();
        let _ = writeln!(
            s,
            "  {:<10} {:>8.0} kpps {:>7.0} kpps   {}",
            t.variant.to_string(),
            t.median_pps / 1e3,
            t.offered_median_pps / 1e3,
            runs.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "  CPU load in each forwarder's last run (generator on cpu{}, director on cpu{}):",
        r.config.gen_core, r.config.director_core
    );
    for t in &r.throughput {
        let _ = writeln!(s, "    {:<10} {}", t.variant.to_string(), cpu_text(&t.cpu));
    }
    if !r.ratios.is_empty() {
        let _ = writeln!(s, "\nxdpvs relative to each (median / median)");
        for (name, ratio) in &r.ratios {
            let _ = writeln!(s, "  xdpvs / {name:<8} {ratio:.2}x");
        }
    }
    let _ = writeln!(
        s,
        "\nOffered load (% of each forwarder's maximum): loss and one-way latency (us)"
    );
    let _ = writeln!(
        s,
        "  {:<10} {:>5} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "forwarder", "load", "offered", "deliver", "loss %", "p50", "p90", "p99", "p99.9", "max"
    );
    for p in &r.loads {
        let us = |ns: u64| ns as f64 / 1e3;
        let _ = writeln!(
            s,
            "  {:<10} {:>4}% {:>6.0} k {:>6.0} k {:>8.3} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1}",
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
    let _ = writeln!(
        s,
        "\nThroughput with loss <= {}% (RFC 2544-style search)",
        r.search.first().map_or(0.01, |x| x.max_loss_pct)
    );
    for x in &r.search {
        let _ = writeln!(
            s,
            "  {:<10} {:>8.0} kpps (loss {:.4}%, search resolution {:.0} kpps)",
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
            "  {:>9} {:>10} {:>11} {:>11} {:>7} {:>9} {:>10}",
            "flows", "in table", "xdpvs kpps", "afxdp kpps", "ratio", "ns/pkt", "instr/pkt"
        );
        for p in &r.scaling {
            let _ = writeln!(
                s,
                "  {:>9} {:>10} {:>11.0} {:>11.0} {:>7.2} {:>9.1} {:>10}",
                p.flows,
                p.occupancy,
                p.xdpvs_pps / 1e3,
                p.afxdp_pps / 1e3,
                if p.afxdp_pps > 0.0 {
                    p.xdpvs_pps / p.afxdp_pps
                } else {
                    0.0
                },
                p.ns_per_packet,
                p.instructions_per_packet
                    .map_or("-".to_string(), |i| format!("{i:.0}"))
            );
        }
    }
    if let Some(f) = &r.flamegraph {
        let _ = writeln!(s, "\nFlame graph of the director: {f}");
    }
    s
}
