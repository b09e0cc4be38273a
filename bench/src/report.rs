//! Results: the JSON file and the SVG plots.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::helpers::Latency;
use crate::options::Options;
use crate::traffic::Proto;
use crate::Variant;

/// How the run was set up.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// Quick (CI) mode.
    pub quick: bool,
    /// Flows in the comparison.
    pub flows: u32,
    /// Frame size with FCS.
    pub size: usize,
    /// Protocol.
    pub proto: Proto,
    /// Trial length in ms.
    pub duration_ms: u64,
    /// Alternating rounds.
    pub repeats: usize,
    /// Generator core.
    pub gen_core: usize,
    /// Director core (workers and the interface's RX processing).
    pub director_core: usize,
    /// How the userspace forwarders' RX processing ran on that core.
    pub napi: crate::options::NapiMode,
    /// How the userspace forwarders polled.
    pub poll: crate::options::PollMode,
    /// The command line.
    pub command: String,
    /// Kernel release.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// The generator of the plain trials: "afxdp" (the harness's own) or "pktgen".
    #[serde(default)]
    pub generator: String,
}

/// One trial.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrialRecord {
    /// Forwarder.
    pub variant: Variant,
    /// "max", "load", "search", "scaling".
    pub phase: String,
    /// Flows.
    pub flows: u32,
    /// Asked rate (0 = maximum).
    pub target_pps: u64,
    /// Frames sent.
    pub sent: u64,
    /// Offered rate.
    pub offered_pps: f64,
    /// Delivered rate (correctly rewritten frames at the sink).
    pub delivered_pps: f64,
    /// Loss.
    pub loss_pct: f64,
    /// Frames to the VIP that reached the sink with other MACs.
    pub wrong_mac: u64,
    /// One-way latency.
    pub latency: Latency,
    /// How busy each CPU was during the trial (the placement check).
    pub cpu: Vec<CpuShare>,
}

/// One CPU's load during a trial.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct CpuShare {
    /// CPU number.
    pub cpu: usize,
    /// Time not idle, %.
    pub busy_pct: f64,
    /// Time in softirq (kernel packet processing outside threads), %.
    pub softirq_pct: f64,
}

/// Median maximum rate of one forwarder.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ThroughputSummary {
    /// Forwarder.
    pub variant: Variant,
    /// Delivered rate of each round.
    pub runs_pps: Vec<f64>,
    /// Offered rate of each round.
    pub offered_runs_pps: Vec<f64>,
    /// Median delivered rate.
    pub median_pps: f64,
    /// Median offered rate.
    pub offered_median_pps: f64,
    /// CPU load during the last round.
    pub cpu: Vec<CpuShare>,
    /// xdpvs only: frames that found the TX ring full, per million frames forwarded,
    /// over all rounds (its metrics: `xdpvs_worker_tx_ring_full_total`).
    #[serde(default)]
    pub tx_full_per_million: Option<f64>,
}

/// One point of the load sweep.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LoadPoint {
    /// Forwarder.
    pub variant: Variant,
    /// % of its maximum.
    pub load_pct: u32,
    /// Asked rate.
    pub target_pps: u64,
    /// Offered rate.
    pub offered_pps: f64,
    /// Delivered rate.
    pub delivered_pps: f64,
    /// Loss.
    pub loss_pct: f64,
    /// One-way latency.
    pub latency: Latency,
    /// At half load: the p99 of each trial (the first is `latency`'s), ns; the headline
    /// compares their medians.
    #[serde(default)]
    pub p99_trials_ns: Vec<u64>,
}

/// Trials at half load, whose p99s' median the headline compares (one trial's p99 on
/// two shared cores moves by 2x from run to run): the first in the load sweep, the
/// others in rounds where the forwarders alternate.
pub const HALF_LOAD_TRIALS: usize = 3;

/// Outcome of the RFC 2544-style search.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SearchResult {
    /// Forwarder.
    pub variant: Variant,
    /// Highest delivered rate whose loss stayed within the bound.
    pub rate_pps: f64,
    /// Offered at that point.
    pub offered_pps: f64,
    /// Loss there.
    pub loss_pct: f64,
    /// Gap between the last passing and failing rates.
    pub resolution_pps: f64,
    /// The bound.
    pub max_loss_pct: f64,
}

/// One row of the zero-copy model: xdpvs's worker loop and the lean loop over the same
/// in-memory rings, at one occupancy and flow distribution.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ZeroCopyRow {
    /// Established flows.
    pub flows: u32,
    /// "uniform" or "zipf".
    pub dist: String,
    /// xdpvs, ns per packet, each round.
    pub xdpvs_ns: Vec<f64>,
    /// The lean loop, ns per packet, each round.
    pub lean_ns: Vec<f64>,
    /// Medians.
    pub xdpvs_median_ns: f64,
    /// Medians.
    pub lean_median_ns: f64,
    /// Bytes of xdpvs's IPv4 table, and how it was backed.
    pub table_bytes: usize,
    /// How the table's memory was backed.
    pub backing: String,
    /// The model process's peak RSS with xdpvs, bytes.
    pub max_rss_bytes: u64,
    /// Callgrind's counts per packet for xdpvs and the lean loop (up to 1M flows).
    pub xdpvs_cache: Option<crate::Callgrind>,
    /// Callgrind's counts per packet for the lean loop.
    pub lean_cache: Option<crate::Callgrind>,
}

/// One row of the scaling table.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScalingPoint {
    /// Flows offered.
    pub flows: u32,
    /// Connections the director held (ActiveConn + InActConn).
    pub occupancy: u64,
    /// xdpvs delivered (median).
    pub xdpvs_pps: f64,
    /// The lean floor delivered (median).
    #[serde(alias = "afxdp_pps")]
    pub floor_pps: f64,
    /// The director's resident memory with the flows in its table (VmRSS), bytes.
    #[serde(default)]
    pub director_rss_bytes: u64,
    /// Pure pipeline, ns per packet.
    pub ns_per_packet: f64,
    /// Pure pipeline, instructions per packet (callgrind).
    pub instructions_per_packet: Option<f64>,
    /// Pure pipeline, simulated cache misses per packet (callgrind --cache-sim).
    #[serde(default)]
    pub cache: Option<crate::Callgrind>,
}

/// What a forwarder spends per delivered packet at maximum rate, one flow: system calls
/// and scheduling counted by `perf stat` on its process (software events and syscall
/// tracepoints: this VM has no hardware counters).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BudgetRow {
    /// Forwarder.
    pub variant: Variant,
    /// Flows (and connections in a director's table).
    #[serde(default)]
    pub flows: u32,
    /// Delivered during the trial (pps).
    pub delivered_pps: f64,
    /// Seconds perf counted.
    pub seconds: f64,
    /// (event, count per delivered packet).
    pub per_packet: Vec<(String, f64)>,
}

impl BudgetRow {
    /// The per-packet figure of `event` (0 when not counted).
    pub fn get(&self, event: &str) -> f64 {
        self.per_packet
            .iter()
            .find(|(e, _)| e == event)
            .map_or(0.0, |(_, v)| *v)
    }
}

/// New connections per second: every frame a SYN of a new 5-tuple.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NewConnRow {
    /// Forwarder.
    pub variant: Variant,
    /// Median delivered SYNs per second (for xdpvs: connections scheduled).
    pub median_pps: f64,
    /// Every round.
    pub runs_pps: Vec<f64>,
    /// Median offered.
    pub offered_pps: f64,
}

/// One row of the multi-queue table.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MultiQueueRow {
    /// Queues (and workers).
    pub queues: u32,
    /// Cores of the workers, comma-separated, queue order.
    pub cores: String,
    /// Median delivered.
    pub median_pps: f64,
    /// Every round.
    pub runs_pps: Vec<f64>,
    /// Frames each worker received in the last round.
    pub per_queue_rx: Vec<u64>,
    /// CPU load in the last round.
    pub cpu: Vec<CpuShare>,
}

/// Everything a run measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Format version.
    pub version: u32,
    /// Set-up.
    pub config: RunConfig,
    /// Maximum rate per forwarder.
    pub throughput: Vec<ThroughputSummary>,
    /// xdpvs median / other median, by forwarder name.
    pub ratios: Vec<(String, f64)>,
    /// Load sweep.
    pub loads: Vec<LoadPoint>,
    /// Search results.
    pub search: Vec<SearchResult>,
    /// Scaling table.
    pub scaling: Vec<ScalingPoint>,
    /// Per-packet system-call budget, one flow.
    #[serde(default)]
    pub budget: Vec<BudgetRow>,
    /// New-connection rate.
    #[serde(default)]
    pub new_conns: Vec<NewConnRow>,
    /// Queues and cores.
    #[serde(default)]
    pub multi_queue: Vec<MultiQueueRow>,
    /// Maximum rate per forwarder with IPv6 frames.
    #[serde(default)]
    pub ipv6: Vec<ThroughputSummary>,
    /// The zero-copy model.
    #[serde(default)]
    pub zerocopy: Vec<ZeroCopyRow>,
    /// `--offload` against XDP_TX (and xdpvs without it) at one flow, alternating.
    #[serde(default)]
    pub offload_one_flow: Vec<ThroughputSummary>,
    /// Every trial.
    pub trials: Vec<TrialRecord>,
    /// Flame graph written, if any.
    pub flamegraph: Option<String>,
}

impl Report {
    /// An empty report for `opts`.
    pub fn new(opts: &Options) -> Report {
        Report {
            version: 1,
            config: RunConfig {
                quick: opts.quick,
                flows: opts.flows,
                size: opts.size,
                proto: opts.proto,
                duration_ms: opts.duration.as_millis() as u64,
                repeats: opts.repeats,
                gen_core: opts.gen_core,
                director_core: opts.director_core,
                napi: opts.napi,
                poll: opts.poll,
                command: opts.command.clone(),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                // Online CPUs of the machine (the harness itself is pinned to one).
                cpus: crate::helpers::cpu_times().len(),
                generator: String::new(),
            },
            throughput: Vec::new(),
            ratios: Vec::new(),
            offload_one_flow: Vec::new(),
            loads: Vec::new(),
            search: Vec::new(),
            scaling: Vec::new(),
            budget: Vec::new(),
            new_conns: Vec::new(),
            multi_queue: Vec::new(),
            ipv6: Vec::new(),
            zerocopy: Vec::new(),
            trials: Vec::new(),
            flamegraph: None,
        }
    }

    /// Median maximum rate of `v` (0 if not measured).
    pub fn median(&self, v: Variant) -> f64 {
        self.throughput
            .iter()
            .find(|t| t.variant == v)
            .map_or(0.0, |t| t.median_pps)
    }

    /// Fills in the ratios.
    pub fn finish(&mut self) {
        let x = self.median(Variant::Xdpvs);
        self.ratios = self
            .throughput
            .iter()
            .filter(|t| t.variant != Variant::Xdpvs && t.median_pps > 0.0)
            .map(|t| (t.variant.to_string(), x / t.median_pps))
            .collect();
    }

    /// Writes `results.json`, `throughput.svg` and `latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = dir.join("results.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        self.plot_throughput(&dir.join("throughput.svg"))?;
        self.plot_latency(&dir.join("latency.svg"))?;
        Ok(())
    }

    fn variants(&self) -> Vec<Variant> {
        self.throughput.iter().map(|t| t.variant).collect()
    }

    /// Delivered vs offered rate, every trial at a set rate, one series per forwarder.
    fn plot_throughput(&self, path: &Path) -> Result<()> {
        let points = |v: Variant| -> Vec<(f64, f64)> {
            let mut p: Vec<(f64, f64)> = self
                .trials
                .iter()
                .filter(|t| t.variant == v && t.flows == self.config.flows && t.phase != "scaling")
                .map(|t| (t.offered_pps / 1e3, t.delivered_pps / 1e3))
                .collect();
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            p
        };
        let top = self
            .trials
            .iter()
            .map(|t| t.offered_pps.max(t.delivered_pps) / 1e3)
            .fold(1.0f64, f64::max)
            * 1.05;
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Delivered vs offered load", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0f64..top, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("offered (kpps)")
            .y_desc("delivered, correctly rewritten (kpps)")
            .draw()?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (top, top)], BLACK.mix(0.2)))?
            .label("no loss");
        for (i, v) in self.variants().into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts = points(v);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(v.to_string())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        legend(&mut chart)?;
        root.present()?;
        Ok(())
    }

    /// One-way latency percentiles against offered load, per forwarder.
    fn plot_latency(&self, path: &Path) -> Result<()> {
        let top = self
            .loads
            .iter()
            .map(|p| p.latency.p999 as f64 / 1e3)
            .fold(1.0f64, f64::max)
            * 1.2;
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "One-way latency (p50 solid, p99 dashed-dot, p99.9 dotted)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0f64..105f64, (0.1f64..top).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("offered load (% of the forwarder's maximum)")
            .y_desc("latency (us, log)")
            .draw()?;
        for (i, v) in self.variants().into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let series = |f: fn(&Latency) -> u64| -> Vec<(f64, f64)> {
                self.loads
                    .iter()
                    .filter(|p| p.variant == v && p.latency.samples > 0)
                    .map(|p| (f64::from(p.load_pct), (f(&p.latency) as f64 / 1e3).max(0.1)))
                    .collect()
            };
            chart
                .draw_series(LineSeries::new(series(|l| l.p50), color.stroke_width(2)))?
                .label(v.to_string())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            chart.draw_series(DashedLineSeries::new(
                series(|l| l.p99),
                8,
                4,
                color.stroke_width(1),
            ))?;
            chart.draw_series(DashedLineSeries::new(
                series(|l| l.p999),
                2,
                4,
                color.stroke_width(1),
            ))?;
            chart.draw_series(
                series(|l| l.p99)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        legend(&mut chart)?;
        root.present()?;
        Ok(())
    }
}

/// Draws the series legend in the upper left corner.
fn legend<'a, X, Y>(chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>) -> Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}
