//! The harness's helper processes, each run inside a lab namespace as a hidden
//! subcommand of `xdpvs-bench`: the AF_XDP generator, the sink, the bare AF_XDP
//! forwarder and the in-kernel programs. They talk to the harness in JSON lines.

use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use libbpf_rs::RingBufferBuilder;
use xdpvs_dataplane::device::Device;
use xdpvs_dataplane::sys::monotonic_ns;
use xdpvs_dataplane::sys::xsk::{BusyPoll, CopyMode, XskConfig, XskDevice};
use xdpvs_dataplane::xdp::{Steering, XdpMode};
use xdpvs_sched::{Mac, Protocol, ServiceKey};

use crate::pktgen::Stamp;
use crate::progs::{Attached, Prog, SinkCounts};
use crate::traffic::{Factory, Proto};

/// Pins the calling thread to `core`, if given.
pub fn pin(core: Option<usize>) -> Result<()> {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            bail!("cannot pin to core {id}");
        }
    }
    Ok(())
}

/// A stop flag raised when standard input closes (the harness went away or is done).
fn stop_on_stdin_eof() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        s.store(true, Ordering::Relaxed);
    });
    stop
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

/// What the generator should send.
#[derive(Clone, Debug, clap::Args)]
pub struct GenSpec {
    /// Interface to send on.
    #[arg(long)]
    pub iface: String,
    /// Source MAC of the frames (the generator's).
    #[arg(long, value_parser = crate::parse_mac_arg)]
    pub src_mac: Mac,
    /// Destination MAC (the forwarder's).
    #[arg(long, value_parser = crate::parse_mac_arg)]
    pub dst_mac: Mac,
    /// Protocol.
    #[arg(long, default_value = "udp")]
    pub proto: Proto,
    /// Frame size with FCS.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Distinct flows.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Packets per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many packets (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Stop after this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    /// Open TCP flows (SYN) instead of continuing them (ACK).
    #[arg(long)]
    pub opening: bool,
    /// Core to pin to.
    #[arg(long)]
    pub core: Option<usize>,
}

/// What the generator did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GenReport {
    /// Frames handed to the TX ring.
    pub sent: u64,
    /// From the first to the last frame, in ns.
    pub elapsed_ns: u64,
}

const GEN_BATCH: u64 = 32;

/// Sends stamped frames through an AF_XDP socket (copy mode kicks send 32 at a time).
pub fn generate(spec: &GenSpec) -> Result<GenReport> {
    let f = Factory::new(
        spec.proto,
        spec.size,
        spec.flows,
        spec.src_mac,
        spec.dst_mac,
        crate::PORT,
    )?;
    let mut dev = XskDevice::open(
        &spec.iface,
        0,
        &XskConfig {
            frames: 8192,
            ring: 2048,
            mode: CopyMode::Auto,
            busy_poll: None,
            // The generator leaves reserved huge pages to the forwarders.
            huge_pages: false,
        },
    )?;
    pin(spec.core)?;
    let mut buf = vec![0u8; f.len()];
    let limit = if spec.count == 0 {
        u64::MAX
    } else {
        spec.count
    };
    let start = monotonic_ns();
    let end = start + spec.duration_ms * 1_000_000;
    let mut sent = 0u64;
    let mut now = start;
    while sent < limit && now < end {
        let mut budget = GEN_BATCH.min(limit - sent);
        if spec.rate > 0 {
            let due = ((now - start) as u128 * u128::from(spec.rate) / 1_000_000_000) as u64;
            budget = budget.min(due.saturating_sub(sent));
        }
        for _ in 0..budget {
            f.write(&mut buf, sent, now, spec.opening);
            if !dev.send(&buf) {
                break;
            }
            sent += 1;
        }
        dev.housekeeping();
        dev.kick();
        now = monotonic_ns();
    }
    // Let the last frames leave (copy mode sends only when kicked).
    for _ in 0..64 {
        dev.housekeeping();
        dev.kick();
    }
    Ok(GenReport {
        sent,
        elapsed_ns: now - start,
    })
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, ns (read back to back).
fn realtime_minus_monotonic_ns() -> i128 {
    let mono = i128::from(monotonic_ns());
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    real - mono
}

/// Latency percentiles, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Samples recorded.
    pub samples: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What the sink says when asked.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SinkReading {
    /// Counts since the last reset.
    pub counts: SinkCounts,
    /// One-way latency of the sampled frames since the last reset.
    pub latency: Latency,
}

/// The sink: attaches the counting program to `iface` and answers `reset` and `read`
/// lines on standard input with a JSON line, until standard input closes.
pub fn sink(iface: &str, rs_mac: Mac, fwd_mac: Mac, vip: Ipv4Addr, shift: u32) -> Result<()> {
    let prog = Attached::new(Prog::Sink, iface)?;
    prog.configure_sink(rs_mac, fwd_mac, vip, shift)?;
    let counts = prog.map("sink_counts")?;
    let ring = prog.map("latency")?;
    let hist = std::rc::Rc::new(std::cell::RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram")?,
    ));
    let h = hist.clone();
    // pktgen stamps frames with the realtime clock, the sink reads the monotonic one.
    let offset = realtime_minus_monotonic_ns();
    let mut rb = RingBufferBuilder::new();
    rb.add(&ring, move |data: &[u8]| {
        // A sample: receive time (monotonic ns), then the frame's 16-byte stamp.
        let rx = data
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_ne_bytes);
        let stamp = data.get(8..24).and_then(Stamp::parse);
        if let Some(lat) = rx.zip(stamp).and_then(|(rx, s)| s.latency_ns(rx, offset)) {
            // Clamped: a frame stamped on another clock would be nonsense anyway.
            let _ = h.borrow_mut().record(lat.clamp(1, 60_000_000_000));
        }
        0
    })?;
    let rb = rb.build()?;
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut base = SinkCounts::read(&counts)?;
    ready();
    loop {
        rb.consume()?;
        match rx.recv_timeout(Duration::from_millis(2)) {
            Ok(cmd) => {
                rb.consume()?;
                let now = SinkCounts::read(&counts)?;
                let reading = SinkReading {
                    counts: now.since(&base),
                    latency: Latency::of(&hist.borrow()),
                };
                match cmd.trim() {
                    "reset" => {
                        base = now;
                        hist.borrow_mut().reset();
                        println!("{{}}");
                    }
                    "read" => println!("{}", serde_json::to_string(&reading)?),
                    other => bail!("sink: unknown command '{other}'"),
                }
                std::io::stdout().flush()?;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// Attaches an in-kernel program (`XDP_TX` MAC rewrite, or `XDP_PASS`) to `iface` and
/// keeps it attached until standard input closes.
pub fn xdp(prog: Prog, iface: &str, macs: Option<(Mac, Mac)>, vip: Ipv4Addr) -> Result<()> {
    let stop = stop_on_stdin_eof();
    let p = Attached::new(prog, iface)?;
    if let Some((dst, src)) = macs {
        p.configure_tx(dst, src, vip)?;
    }
    ready();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The director's steering program on `iface` with the benchmark's services (IPv4 and
/// IPv6), and one
/// socket on queue 0 in its XSKMAP: what every userspace forwarder of the harness sits on.
fn steered_socket(iface: &str, busy_poll: Option<BusyPoll>) -> Result<(Steering, XskDevice)> {
    let mut steering = Steering::load(0)?;
    steering.attach(xdpvs_director::iface::ifindex(iface)?, XdpMode::Auto)?;
    let vips: [std::net::IpAddr; 2] = [crate::VIP.into(), crate::VIP6.into()];
    let keys: Vec<ServiceKey> = vips
        .into_iter()
        .flat_map(|vip| {
            [Protocol::Udp, Protocol::Tcp].map(|proto| ServiceKey {
                proto,
                vip,
                port: crate::PORT,
            })
        })
        .collect();
    steering.set_services(&keys, &[], &[])?;
    let dev = XskDevice::open(
        iface,
        0,
        &XskConfig {
            busy_poll,
            ..XskConfig::default()
        },
    )?;
    steering.set_socket(0, dev.fd())?;
    Ok((steering, dev))
}

/// The bare AF_XDP forwarder: the director's socket path (steering program, one socket in
/// the same configuration, the same ring handling through the `Device` layer) with
/// nothing but the MAC rewrite in between. Runs until standard input closes.
pub fn forward(
    iface: &str,
    rs_mac: Mac,
    own_mac: Mac,
    core: Option<usize>,
    busy_poll: Option<BusyPoll>,
    yield_when_idle: bool,
) -> Result<()> {
    let stop = stop_on_stdin_eof();
    let (_steering, mut dev) = steered_socket(iface, busy_poll)?;
    pin(core)?;
    ready();
    let mut frames = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        dev.housekeeping();
        dev.receive(&mut frames, 64);
        dev.kick();
        let idle = frames.is_empty();
        for f in frames.iter_mut() {
            let mut bytes = dev.frame_mut(f);
            bytes[0..6].copy_from_slice(&rs_mac);
            bytes[6..12].copy_from_slice(&own_mac);
        }
        dev.transmit(&mut frames);
        dev.release(&mut frames);
        if idle && yield_when_idle {
            std::thread::yield_now();
        }
    }
    Ok(())
}

/// The lean floor: the smallest MAC-rewrite loop on xsk-rs' rings
/// ([`XskDevice::lean_forward`]), on the same steering program and socket. Runs until
/// standard input closes, then prints its loop counts as a JSON line.
pub fn lean(
    iface: &str,
    rs_mac: Mac,
    own_mac: Mac,
    core: Option<usize>,
    yield_when_idle: bool,
) -> Result<()> {
    let stop = stop_on_stdin_eof();
    let (_steering, dev) = steered_socket(iface, None)?;
    pin(core)?;
    ready();
    let s = dev.lean_forward(rs_mac, own_mac, yield_when_idle, &stop);
    eprintln!(
        "lean: {} loops, {} empty, {} received, {} transmitted, {} kicks",
        s.loops, s.empty_polls, s.received, s.transmitted, s.kicks
    );
    Ok(())
}

/// Per-CPU time from /proc/stat: (busy, softirq, total) jiffies.
pub fn cpu_times() -> Vec<(u64, u64, u64)> {
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
