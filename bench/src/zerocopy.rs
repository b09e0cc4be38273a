//! The zero-copy model: what xdpvs costs per packet where the NIC's share is nearly
//! nothing. The worker loop (`Worker::poll` over the `Device` layer, as `xdpvs run` runs
//! it, the clock read and control check of each pass included) on a [`RingDevice`]: a UMEM
//! and descriptor rings in memory that behave like a zero-copy socket's (frames stay in
//! place, only descriptors move, no kernel). Beside it, the leanest MAC-rewrite loop over
//! the same rings. Only the forwarder's side is timed: the "NIC" writing each received
//! frame's headers (as a NIC's DMA would, into the cache as DDIO does) and taking the
//! transmitted descriptors back happen between the timed sections.
//!
//! Traffic: established TCP flows (an ACK each), picked per packet uniformly at random
//! over all flows, or Zipf-distributed (s = 1: a hot set, as real traffic has one; at 10M
//! flows the hottest 1% carry about 70% of the packets); or new connections (a SYN each,
//! of a flow not in the table, beside the established ones: scheduled and inserted).

use std::time::{Duration, Instant};

use xdpvs_dataplane::ring::RingDevice;
use xdpvs_dataplane::worker::Worker;
use xdpvs_dataplane::{process, Limits, Services, Tables, Verdict};
use xdpvs_sched::tcp::flags::{ACK, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{SchedKind, Time};

use crate::{config, flow_frame, DIRECTOR_MAC};

/// How flows are picked per packet.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    /// Every flow equally likely.
    Uniform,
    /// Zipf, s = 1 (flow of rank r with probability ~ 1/r).
    Zipf,
    /// Every packet a SYN of a flow not yet in the table: new connections (the
    /// established flows stay in the table beside them).
    New,
}

impl Dist {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Zipf => "zipf",
            Dist::New => "new",
        }
    }
}

/// The forwarder in the model.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Forwarder {
    /// xdpvs's worker loop, default flags.
    Xdpvs,
    /// The lean MAC-rewrite loop over the same rings.
    Lean,
}

/// One run of the model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelRun {
    /// Established flows in the table.
    pub flows: u32,
    /// How packets pick their flow.
    pub dist: Dist,
    /// Which forwarder.
    pub forwarder: Forwarder,
    /// Packets timed.
    pub packets: u64,
    /// The forwarder's time per packet, ns.
    pub ns_per_packet: f64,
    /// Entries in the connection table.
    pub in_table: usize,
    /// Bytes of the IPv4 connection table (entries and tags).
    pub table_bytes: usize,
    /// How the table's memory is backed.
    pub backing: String,
    /// The process's peak resident memory after the run, bytes.
    pub max_rss_bytes: u64,
}

impl ModelRun {
    /// Millions of packets per second one core forwards at this cost.
    pub fn mpps(&self) -> f64 {
        1e3 / self.ns_per_packet
    }
}

/// The real server's MAC the lean loop writes (the first of the model's eight).
const LEAN_RS_MAC: xdpvs_sched::Mac = [2, 0, 0, 0, 1, 1];

/// Descriptors per ring and UMEM frames: the director's defaults.
const RING: u32 = 2048;
const FRAMES: u32 = 4096;
/// Flow picks drawn ahead (a sequence replayed over and over).
const PICKS: usize = 1 << 22;

/// The flow of each packet, `n` picks from `flows` by `dist` (a fixed seed: every run
/// sees the same sequence).
pub fn picks(flows: u32, dist: Dist, n: usize) -> Vec<u32> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let ln = f64::from(flows).ln_1p();
    (0..n)
        .map(|_| {
            let r = next();
            match dist {
                Dist::Uniform | Dist::New => ((u128::from(r) * u128::from(flows)) >> 64) as u32,
                Dist::Zipf => {
                    // P(rank <= k) = ln(1 + k) / ln(1 + flows): the continuous Zipf, s = 1.
                    let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                    ((u * ln).exp_m1() as u32).min(flows - 1)
                }
            }
        })
        .collect()
}

/// Tables with `flows` established TCP flows (DR, `wlc` over 8 real servers, capacity
/// at least `capacity` and `flows`), built without a frame per flow kept.
pub fn established_tables(flows: u32, capacity: usize) -> Tables {
    let limits = Limits {
        conn_capacity: (flows as usize).max(capacity).max(1024),
        ..Limits::default()
    };
    let services =
        Services::build(&config(SchedKind::Wlc, 8), &limits, None).expect("valid config");
    let mut t = Tables::new(services, &limits, Timeouts::default(), 0x5eed).expect("valid limits");
    let (syn, ack) = (flow_frame(0, SYN, false), flow_frame(0, ACK, false));
    let mut buf = vec![0u8; syn.len().max(ack.len())];
    for k in 0..flows {
        for tpl in [&syn, &ack] {
            buf[..tpl.len()].copy_from_slice(tpl);
            write_flow(&mut buf, k);
            let v = process(&mut buf[..tpl.len()], &mut t, Time::from_secs(1));
            assert_eq!(v, Verdict::Tx, "flow {k} established");
        }
    }
    t
}

/// Writes flow `k`'s client address and port into a frame of [`crate::flow`]'s layout
/// (checksums left as they are: the director does not read them).
#[inline]
fn write_flow(frame: &mut [u8], k: u32) {
    let e = crate::flow(k);
    frame[26..30].copy_from_slice(&e.src_ip.octets());
    frame[34..36].copy_from_slice(&e.sport.to_be_bytes());
}

/// The measured part: the forwarder's passes until the RX ring is empty, kept out of
/// line so that callgrind can collect it alone (`--toggle-collect=*xdpvs_model_measure*`).
#[inline(never)]
pub fn xdpvs_model_measure(fwd: &mut Fwd, clock: &Clock) -> usize {
    let mut n = 0;
    match fwd {
        Fwd::Xdpvs(w) => {
            while w.device().rx_waiting() > 0 {
                let now = clock.now();
                w.control();
                n += w.poll(now);
            }
            // The last transmission of the batch goes onto the TX ring.
            n += w.poll(clock.now());
        }
        Fwd::Lean(d) => {
            while d.rx_waiting() > 0 {
                n += d.lean_pass(LEAN_RS_MAC, DIRECTOR_MAC);
            }
        }
    }
    n
}

/// The time a worker reads each pass: from 2 s (after the flows were established at
/// 1 s), advanced by [`NOMINAL_NS`] per packet forwarded, so that the work paced by
/// time (the expiry sweep: so many slots a second) is per packet what it is at that rate,
/// the same natively and under callgrind (whose clock runs ~50 times slower: a wall
/// clock there sweeps 50 times the slots per packet). Each read still reads the
/// monotonic clock, as a worker does.
#[derive(Debug, Default)]
pub struct Clock(std::cell::Cell<u64>);

/// The model's nominal time per packet (10 Mpps).
const NOMINAL_NS: u64 = 100;

impl Clock {
    fn now(&self) -> Time {
        std::hint::black_box(Instant::now());
        Time::from_secs(2).after(Duration::from_nanos(self.0.get()))
    }

    /// `packets` more forwarded.
    fn advance(&self, packets: usize) {
        self.0.set(self.0.get() + packets as u64 * NOMINAL_NS);
    }
}

/// A forwarder over the rings.
pub enum Fwd {
    /// xdpvs's worker (its control channel kept open by the senders beside it).
    Xdpvs(Box<Worker<RingDevice>>),
    /// The lean loop.
    Lean(RingDevice),
}

impl std::fmt::Debug for Fwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fwd::Xdpvs(_) => "Fwd::Xdpvs",
            Fwd::Lean(_) => "Fwd::Lean",
        })
    }
}

impl Fwd {
    fn device(&mut self) -> &mut RingDevice {
        match self {
            Fwd::Xdpvs(w) => w.device_mut(),
            Fwd::Lean(d) => d,
        }
    }
}

/// Runs the model: `flows` established, `packets` timed (after a warm-up of a tenth).
/// With [`Dist::New`] each packet is a SYN of flow `flows`, `flows + 1`, ... (the table
/// has room for all of them: none is evicted).
pub fn run(flows: u32, dist: Dist, forwarder: Forwarder, packets: u64) -> ModelRun {
    let flows = flows.max(1);
    let new = dist == Dist::New;
    let warm_up = packets / 10;
    // Room for every new connection, and a batch more (the NIC side fills the RX ring
    // ahead of the count).
    let capacity = if new {
        flows as usize + (warm_up + packets) as usize + RING as usize
    } else {
        flows as usize
    };
    let tables = established_tables(flows, capacity);
    let in_table = tables.conn_count();
    let table_bytes = tables.conns().memory_bytes();
    let backing = tables.conns().memory().backing().to_string();
    let picks = if new {
        Vec::new()
    } else {
        picks(flows, dist, PICKS.min((packets as usize).max(1 << 16)))
    };
    let dev = RingDevice::new(FRAMES, RING);
    let (_ctrl, crx) = crossbeam_channel::unbounded();
    let (rtx, _retired) = crossbeam_channel::unbounded();
    let mut fwd = match forwarder {
        Forwarder::Xdpvs => Fwd::Xdpvs(Box::new(Worker::new(dev, tables, crx, rtx))),
        Forwarder::Lean => Fwd::Lean(dev),
    };
    let frame = flow_frame(0, if new { SYN } else { ACK }, false);
    let clock = Clock::default();
    let mut next = 0usize;
    let mut fresh = flows;
    let mut pass = |fwd: &mut Fwd, want: u64| -> (Duration, u64) {
        let mut spent = Duration::ZERO;
        let mut done = 0u64;
        while done < want {
            let n = fwd.device().nic_receive(RING as usize / 2, |buf| {
                buf[..frame.len()].copy_from_slice(&frame);
                if new {
                    write_flow(buf, fresh);
                    fresh += 1;
                } else {
                    write_flow(buf, picks[next]);
                    next = if next + 1 == picks.len() { 0 } else { next + 1 };
                }
                frame.len()
            });
            let start = Instant::now();
            std::hint::black_box(xdpvs_model_measure(fwd, &clock));
            spent += start.elapsed();
            let sent = fwd.device().nic_transmit(|f| {
                std::hint::black_box(f);
            });
            clock.advance(sent);
            assert_eq!(sent, n, "every packet is forwarded");
            done += n as u64;
        }
        (spent, done)
    };
    pass(&mut fwd, warm_up);
    let (spent, done) = pass(&mut fwd, packets);
    if let Fwd::Xdpvs(w) = &fwd {
        let expect = if new { fresh } else { flows };
        assert_eq!(
            w.tables().conn_count(),
            expect as usize,
            "every connection is held"
        );
    }
    ModelRun {
        flows,
        dist,
        forwarder,
        packets: done,
        ns_per_packet: spent.as_nanos() as f64 / done as f64,
        in_table,
        table_bytes,
        // What the kernel gave, beside what was asked: advised huge pages may be backed
        // by 4 KiB ones, which would show in the time of a table missing the TLB.
        backing: format!(
            "{backing}; {} MiB of the process in huge pages",
            crate::proc_kib("/proc/self/smaps_rollup", "AnonHugePages:") >> 10
        ),
        max_rss_bytes: crate::proc_kib("/proc/self/status", "VmHWM:") * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_picks_a_hot_set_and_uniform_spreads() {
        let z = picks(1_000_000, Dist::Zipf, 200_000);
        let hot = z.iter().filter(|&&f| f < 10_000).count();
        // ln(10001) / ln(1000001) = 0.67 of the packets go to the hottest 1%.
        assert!(
            (0.62..0.72).contains(&(hot as f64 / z.len() as f64)),
            "{hot}"
        );
        let u = picks(1_000_000, Dist::Uniform, 200_000);
        let hot = u.iter().filter(|&&f| f < 10_000).count();
        assert!(
            (0.005..0.015).contains(&(hot as f64 / u.len() as f64)),
            "{hot}"
        );
        assert!(picks(1, Dist::Zipf, 100).iter().all(|&f| f == 0));
    }

    #[test]
    fn the_model_forwards_every_packet_on_both_forwarders() {
        // New connections: the run asserts that each is in the table afterwards.
        for dist in [Dist::Zipf, Dist::New] {
            for fwd in [Forwarder::Xdpvs, Forwarder::Lean] {
                let r = run(1000, dist, fwd, 20_000);
                assert!(r.packets >= 20_000);
                assert!(r.ns_per_packet > 0.0);
                assert_eq!(r.in_table, 1000);
            }
        }
    }
}
