//! `xdpvs-bench`: the benchmark harness. With no subcommand it runs the full comparison
//! (or `--quick`); the hidden subcommands are the pieces it runs inside its namespaces.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xdpvs_bench::harness::{self, GeneratorChoice, NapiMode, Options, PollMode};
use xdpvs_bench::helpers::{self, GenSpec};
use xdpvs_bench::progs::Prog;
use xdpvs_bench::traffic::Proto;
use xdpvs_bench::{pipeline, Variant, VIP};
use xdpvs_dataplane::sys::xsk::BusyPoll;
use xdpvs_sched::Mac;

/// Benchmark harness of xdpvs: builds a lab of network namespaces (generator, director,
/// sink), runs xdpvs and baseline forwarders side by side, alternating, and reports
/// throughput, loss, one-way latency, an RFC 2544-style throughput search, scaling with
/// connection-table occupancy and, on request, a flame graph. Needs root.
#[derive(Debug, Parser)]
#[command(name = "xdpvs-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Helper>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Short run (under a minute) for CI: 1 round, short trials, few flows; asserts that
    /// packets flowed through xdpvs and writes the same files.
    #[arg(long)]
    quick: bool,
    /// Directory for results.json, throughput.svg, latency.svg and logs.
    #[arg(long, short = 'o', default_value = "bench-results")]
    out: PathBuf,
    /// Forwarders to compare, comma-separated (default: xdpvs, afxdp, xdp-tx, and
    /// testpmd when dpdk-testpmd is installed).
    #[arg(long, value_delimiter = ',')]
    variants: Vec<Variant>,
    /// Flows (distinct source address/port pairs) in the comparison.
    #[arg(long)]
    flows: Option<u32>,
    /// Frame size in bytes, Ethernet with FCS (64..1518; TCP needs 74).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// udp or tcp.
    #[arg(long, default_value = "udp")]
    proto: Proto,
    /// Length of one trial, in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Alternating rounds at maximum rate.
    #[arg(long)]
    repeats: Option<usize>,
    /// Offered loads, % of each forwarder's maximum.
    #[arg(long, value_delimiter = ',')]
    loads: Vec<u32>,
    /// Steps of the throughput search.
    #[arg(long)]
    search_steps: Option<usize>,
    /// Loss the throughput search allows, in %.
    #[arg(long, default_value_t = 0.01)]
    search_loss: f64,
    /// Flow counts of the scaling table.
    #[arg(long, value_delimiter = ',')]
    scaling: Option<Vec<u32>>,
    /// Skip the scaling table.
    #[arg(long)]
    no_scaling: bool,
    /// Skip instruction counts (callgrind).
    #[arg(long)]
    no_callgrind: bool,
    /// Skip the per-packet system-call budget (perf stat).
    #[arg(long)]
    no_budget: bool,
    /// Flow counts of the per-packet budget.
    #[arg(long, value_delimiter = ',')]
    budget_flows: Option<Vec<u32>>,
    /// Rounds of the new-connection rate (0 skips it).
    #[arg(long)]
    new_conn_rounds: Option<usize>,
    /// Rounds of the multi-queue table (0 skips it).
    #[arg(long)]
    multi_queue_rounds: Option<usize>,
    /// Alternating rounds of the zero-copy model (xdpvs's worker loop and the lean loop
    /// over in-memory rings; 0 skips it).
    #[arg(long)]
    zerocopy_rounds: Option<usize>,
    /// Flow counts of the zero-copy model.
    #[arg(long, value_delimiter = ',')]
    zerocopy_flows: Option<Vec<u32>>,
    /// Rounds of the IPv6 rows of the maximum-rate table (0 skips them).
    #[arg(long)]
    ipv6_rounds: Option<usize>,
    /// Core of the generator.
    #[arg(long, default_value_t = 0)]
    gen_core: usize,
    /// Core of all of the director's work (workers and its interface's NAPI thread).
    #[arg(long, default_value_t = 1)]
    director_core: usize,
    /// Record the director's workers with perf and write a flame graph here.
    #[arg(long, value_name = "SVG")]
    flamegraph: Option<PathBuf>,
    /// How the userspace forwarders get their interface's RX processing onto their core:
    /// busy-poll (preferred busy polling from the forwarding thread, deferred
    /// interrupts) or threaded (a NAPI kernel thread pinned beside the forwarder).
    #[arg(long, default_value = "threaded")]
    napi: NapiMode,
    /// How the userspace forwarders poll: busy (spin) or yield (spin, yielding the core
    /// to the NAPI thread after each empty poll).
    #[arg(long, default_value = "yield")]
    poll: PollMode,
    /// Generator of the trials: auto (kernel pktgen where the kernel has it, else the
    /// harness's own AF_XDP generator), afxdp or pktgen.
    #[arg(long, default_value = "auto")]
    generator: GeneratorChoice,
    /// Extra arguments for `xdpvs run` (e.g. "--poll=busy"), repeatable.
    #[arg(long = "director-arg", allow_hyphen_values = true)]
    director_args: Vec<String>,
    /// How xdpvs reaches the sink real server: dr, nat, ipip or gue (the baselines
    /// rewrite MACs only; the sink counts each method's frames).
    #[arg(long, default_value = "dr")]
    forward: xdpvs_bench::options::Forward,
}

#[derive(Debug, Subcommand)]
enum Helper {
    /// AF_XDP generator (prints a JSON report).
    #[command(hide = true)]
    Gen(GenSpec),
    /// Kernel pktgen run (prints a JSON report like `gen`).
    #[command(hide = true)]
    Pktgen {
        #[arg(long)]
        iface: String,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        src_mac: Mac,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        dst_mac: Mac,
        #[arg(long, default_value_t = 1)]
        flows: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 0)]
        count: u64,
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
        /// The pktgen kernel thread (kpktgend_N) to send from.
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// XDP counting sink (answers reset/read on stdin).
    #[command(hide = true)]
    Sink {
        #[arg(long)]
        iface: String,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        rs_mac: Mac,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        fwd_mac: Mac,
        /// A latency sample every 2^N frames.
        #[arg(long, default_value_t = 3)]
        sample_shift: u32,
        #[arg(long)]
        core: Option<usize>,
    },
    /// In-kernel program: "tx" (MAC rewrite + XDP_TX) or "pass".
    #[command(hide = true)]
    Xdp {
        prog: String,
        #[arg(long)]
        iface: String,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        dst_mac: Option<Mac>,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        src_mac: Option<Mac>,
    },
    /// Bare AF_XDP MAC-rewrite forwarder.
    #[command(hide = true)]
    Fwd {
        #[arg(long)]
        iface: String,
        #[arg(long, value_parser = xdpvs_bench::parse_mac_arg)]
        rs_mac: Mac,
        #[arg(long)]
        core: Option<usize>,
        /// Preferred busy polling, microseconds per poll (0 = off).
        #[arg(long, default_value_t = 0)]
        busy_poll: u32,
        /// Yield the core after each empty poll (as `xdpvs run --poll yield`).
        #[arg(long)]
        yield_when_idle: bool,
        /// The lean floor instead: the smallest loop, directly on xsk-rs' rings.
        #[arg(long, conflicts_with = "busy_poll")]
        lean: bool,
    },
    /// Pure pipeline at an occupancy (for callgrind).
    #[command(hide = true)]
    Pipeline {
        #[arg(long)]
        flows: u32,
        #[arg(long)]
        packets: u64,
    },
    /// The zero-copy model at an occupancy (prints a JSON report; for the harness and
    /// callgrind).
    #[command(hide = true)]
    Zerocopy {
        #[arg(long)]
        flows: u32,
        #[arg(long, value_enum, default_value = "uniform")]
        dist: xdpvs_bench::zerocopy::Dist,
        #[arg(long, value_enum, default_value = "xdpvs")]
        forwarder: xdpvs_bench::zerocopy::Forwarder,
        #[arg(long, default_value_t = 4_000_000)]
        packets: u64,
    },
    /// The xdpvs command line (director and ipvsadm commands), as the lab runs it.
    #[command(hide = true)]
    Xdpvs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn options(a: RunArgs) -> Result<Options> {
    let q = a.quick;
    let variants = if a.variants.is_empty() {
        let mut v = vec![
            Variant::Xdpvs,
            Variant::XdpvsOffload,
            Variant::Lean,
            Variant::AfXdp,
        ];
        if !q && xdpvs_bench::testpmd_path().is_some() {
            v.push(Variant::Testpmd);
        }
        v.push(Variant::XdpTx);
        v
    } else {
        a.variants
    };
    if variants.contains(&Variant::Testpmd) && xdpvs_bench::testpmd_path().is_none() {
        bail!("dpdk-testpmd is not installed: `apt-get install dpdk-dev librte-net-af-xdp23`, or leave testpmd out of --variants");
    }
    let duration = a.duration.unwrap_or(if q { 0.5 } else { 3.0 });
    if !(0.05..=600.0).contains(&duration) {
        bail!("--duration must be between 0.05 and 600 seconds");
    }
    let min = a.proto.min_size();
    if !(min..=xdpvs_bench::traffic::MAX_SIZE).contains(&a.size) {
        bail!(
            "--size {} is out of range for {:?}: use {min}..=1518",
            a.size,
            a.proto
        );
    }
    if a.gen_core == a.director_core {
        bail!("--gen-core and --director-core must differ: the method puts the generator alone on one core");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    Ok(Options {
        quick: q,
        variants,
        flows: a.flows.unwrap_or(if q { 1000 } else { 1_000_000 }),
        size: a.size,
        proto: a.proto,
        duration: Duration::from_secs_f64(duration),
        repeats: a.repeats.unwrap_or(if q { 1 } else { 5 }),
        loads: if a.loads.is_empty() {
            vec![10, 50, 90, 100]
        } else {
            a.loads
        },
        search_steps: a.search_steps.unwrap_or(if q { 3 } else { 8 }),
        search_loss: a.search_loss,
        scaling: if a.no_scaling {
            Vec::new()
        } else {
            a.scaling.unwrap_or(if q {
                vec![1, 1000]
            } else {
                vec![1, 1000, 1_000_000, 10_000_000]
            })
        },
        scaling_repeats: if q { 1 } else { 3 },
        callgrind: !a.no_callgrind,
        budget_flows: if a.no_budget || q {
            Vec::new()
        } else {
            a.budget_flows.unwrap_or_else(|| vec![1, 1_000_000])
        },
        new_conn_rounds: a.new_conn_rounds.unwrap_or(if q { 0 } else { 3 }),
        multi_queue_rounds: a.multi_queue_rounds.unwrap_or(if q { 0 } else { 3 }),
        zerocopy_rounds: a.zerocopy_rounds.unwrap_or(if q { 1 } else { 3 }),
        zerocopy_flows: a.zerocopy_flows.unwrap_or(if q {
            vec![1, 1000]
        } else {
            vec![1, 1000, 1_000_000, 10_000_000]
        }),
        ipv6_rounds: a.ipv6_rounds.unwrap_or(if q { 1 } else { 3 }),
        gen_core: a.gen_core,
        director_core: a.director_core,
        out_dir: a.out,
        flamegraph: a.flamegraph,
        director_args: a.director_args,
        forward: a.forward,
        napi: a.napi,
        poll: a.poll,
        generator: a.generator,
        command,
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => {
            if !xdpvs_testkit::is_root() {
                bail!("the benchmark builds network namespaces: run it as root");
            }
            xdpvs_testkit::lab::available().map_err(anyhow::Error::msg)?;
            let opts = options(cli.run)?;
            let out = opts.out_dir.clone();
            // The harness itself stays off the director's core.
            helpers::pin(Some(opts.gen_core))?;
            let quick = opts.quick;
            let report = harness::run(opts)?;
            report.write(&out)?;
            print!("{}", harness::table(&report));
            println!(
                "\nresults: {}/results.json, throughput.svg, latency.svg",
                out.display()
            );
            if quick {
                let flowed: f64 = report
                    .trials
                    .iter()
                    .filter(|t| t.variant == Variant::Xdpvs)
                    .map(|t| t.delivered_pps)
                    .sum();
                if flowed <= 0.0 {
                    bail!("no packet went through xdpvs");
                }
            }
            Ok(())
        }
        Some(Helper::Gen(spec)) => {
            let r = helpers::generate(&spec)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Some(Helper::Pktgen {
            iface,
            src_mac,
            dst_mac,
            flows,
            size,
            rate,
            count,
            duration_ms,
            cpu,
        }) => {
            let spec = xdpvs_bench::pktgen::PktgenSpec {
                dev: iface,
                cpu,
                dst_mac,
                src_mac,
                dst: VIP,
                dport: xdpvs_bench::PORT,
                flows,
                size,
                rate_pps: rate,
                count,
            };
            let r = xdpvs_bench::pktgen::run(
                &spec,
                std::path::Path::new(xdpvs_bench::pktgen::PROC_DIR),
                Duration::from_millis(duration_ms),
            )?;
            let report = helpers::GenReport {
                sent: r.sent,
                elapsed_ns: r.elapsed_ns,
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Some(Helper::Sink {
            iface,
            rs_mac,
            fwd_mac,
            sample_shift,
            core,
        }) => {
            helpers::pin(core)?;
            helpers::sink(&iface, rs_mac, fwd_mac, VIP, sample_shift)
        }
        Some(Helper::Xdp {
            prog,
            iface,
            dst_mac,
            src_mac,
        }) => match prog.as_str() {
            "tx" => {
                let dst = dst_mac.context("--dst-mac is needed")?;
                let src = match src_mac {
                    Some(m) => m,
                    None => xdpvs_director::iface::mac_of(&iface)?,
                };
                helpers::xdp(Prog::MacTx, &iface, Some((dst, src)), VIP)
            }
            "pass" => helpers::xdp(Prog::Pass, &iface, None, VIP),
            other => bail!("unknown program '{other}': tx or pass"),
        },
        Some(Helper::Fwd {
            iface,
            rs_mac,
            core,
            busy_poll,
            yield_when_idle,
            lean,
        }) => {
            let own = xdpvs_director::iface::mac_of(&iface)?;
            if lean {
                return helpers::lean(&iface, rs_mac, own, core, yield_when_idle);
            }
            let bp = (busy_poll > 0).then_some(BusyPoll {
                usecs: busy_poll,
                budget: 64,
            });
            helpers::forward(&iface, rs_mac, own, core, bp, yield_when_idle)
        }
        Some(Helper::Pipeline { flows, packets }) => {
            let mut r = pipeline::Replay::new(flows);
            let ns = pipeline::ns_per_packet(&mut r, packets);
            println!("{flows} flows: {ns:.1} ns/packet");
            Ok(())
        }
        Some(Helper::Zerocopy {
            flows,
            dist,
            forwarder,
            packets,
        }) => {
            let r = xdpvs_bench::zerocopy::run(flows, dist, forwarder, packets);
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Some(Helper::Xdpvs { .. }) => unreachable!("handled before parsing"),
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    // `xdpvs-bench xdpvs ARGS` is exactly `xdpvs ARGS`.
    if raw.get(1).map(String::as_str) == Some("xdpvs") {
        let mut args = vec!["xdpvs".to_string()];
        args.extend_from_slice(&raw[2..]);
        return xdpvs::cli::main(args);
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxdpvs-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
