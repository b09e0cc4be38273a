//! What a benchmark run is told: the harness's options and modes.

use std::path::PathBuf;
use std::time::Duration;

use crate::traffic::Proto;
use crate::Variant;

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
    /// Flow counts of the per-packet system-call budget of the userspace forwarders
    /// (perf stat); empty: skipped.
    pub budget_flows: Vec<u32>,
    /// Rounds of the new-connection rate (0: skip).
    pub new_conn_rounds: usize,
    /// Rounds of the multi-queue table (0: skip).
    pub multi_queue_rounds: usize,
    /// Alternating rounds of the zero-copy model (0: none).
    pub zerocopy_rounds: usize,
    /// Flow counts of the zero-copy model.
    pub zerocopy_flows: Vec<u32>,
    /// Alternating rounds of the IPv6 rows of the maximum-rate table (0: skip).
    pub ipv6_rounds: usize,
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
    /// How xdpvs reaches the sink real server.
    pub forward: Forward,
    /// Where the userspace forwarders' RX processing runs.
    pub napi: NapiMode,
    /// How the userspace forwarders poll.
    pub poll: PollMode,
    /// Which generator sends the plain trials.
    pub generator: GeneratorChoice,
    /// The command line, for the record.
    pub command: String,
}

/// Which generator sends the trials' frames.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorChoice {
    /// Kernel pktgen where the kernel has it, else the harness's own.
    Auto,
    /// The harness's own AF_XDP generator.
    Afxdp,
    /// Kernel pktgen (an error where the kernel lacks it).
    Pktgen,
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

/// How xdpvs reaches the sink real server: its forwarding method.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Direct routing (`-g`).
    Dr,
    /// NAT (`-m`): the destination address becomes the sink's.
    Nat,
    /// IPIP tunnel (`-i`).
    Ipip,
    /// GUE tunnel (`-i --tun-type gue --tun-port 6080`).
    Gue,
}

impl Forward {
    /// The method options of `-a`.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Forward::Dr => &["-g"],
            Forward::Nat => &["-m"],
            Forward::Ipip => &["-i"],
            Forward::Gue => &["-i", "--tun-type", "gue", "--tun-port", "6080"],
        }
    }
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
