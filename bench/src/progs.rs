//! The benchmark's XDP programs (`bpf/bench.bpf.c`): the counting sink, the in-kernel
//! `XDP_TX` ceiling and an `XDP_PASS` placeholder; loading, attaching and reading them.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, ObjectBuilder};
use xdpvs_dataplane::xdp::{self, XdpMode};
use xdpvs_sched::Mac;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench.bpf.o"));

/// Which program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    /// Count-and-drop sink with latency samples.
    Sink,
    /// MAC rewrite + `XDP_TX` (the in-kernel ceiling).
    MacTx,
    /// `XDP_PASS`.
    Pass,
}

impl Prog {
    fn name(self) -> &'static str {
        match self {
            Prog::Sink => "xdpvs_bench_sink",
            Prog::MacTx => "xdpvs_bench_mac_tx",
            Prog::Pass => "xdpvs_bench_pass",
        }
    }
}

/// The loaded object with one program attached.
pub struct Attached {
    object: Object,
    _link: OwnedFd,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached")
    }
}

impl Attached {
    /// Loads the object and attaches `prog` to `iface` (native XDP, else generic).
    pub fn new(prog: Prog, iface: &str) -> Result<Attached> {
        let object = ObjectBuilder::default()
            .open_memory(OBJECT)
            .and_then(|o| o.load())
            .context("loading the benchmark's XDP programs")?;
        let link = {
            let p = object
                .progs()
                .find(|p| p.name() == prog.name())
                .ok_or_else(|| anyhow!("no program {}", prog.name()))?;
            let (link, _mode) = xdp::attach(
                p.as_fd(),
                xdpvs_director::iface::ifindex(iface)?,
                XdpMode::Auto,
            )?;
            link
        };
        Ok(Attached {
            object,
            _link: link,
        })
    }

    /// A map of the object.
    pub fn map(&self, name: &str) -> Result<MapHandle> {
        let m = self
            .object
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| anyhow!("no map {name}"))?;
        Ok(MapHandle::try_from(&m)?)
    }

    fn set_config(&self, map: &str, value: &[u8]) -> Result<()> {
        self.map(map)?
            .update(&0u32.to_ne_bytes(), value, MapFlags::ANY)
            .with_context(|| format!("configuring {map}"))
    }

    /// Configures the sink: frames to `vip` (or to the IPv6 VIP) count when they go from
    /// `fwd_mac` to `rs_mac`; every `2^sample_shift`-th is a latency sample.
    pub fn configure_sink(
        &self,
        rs_mac: Mac,
        fwd_mac: Mac,
        vip: Ipv4Addr,
        sample_shift: u32,
    ) -> Result<()> {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&rs_mac);
        v.extend_from_slice(&fwd_mac);
        v.extend_from_slice(&vip.octets());
        v.extend_from_slice(&((1u32 << sample_shift) - 1).to_ne_bytes());
        v.extend_from_slice(&crate::VIP6.octets());
        // The sink's own address: NAT frames come to it.
        v.extend_from_slice(&xdpvs_testkit::lab::real_ip(1).octets());
        self.set_config("sink_cfg", &v)
    }

    /// Configures the `XDP_TX` program: frames to `vip` (or to the IPv6 VIP) leave with
    /// these MACs.
    pub fn configure_tx(&self, dst_mac: Mac, src_mac: Mac, vip: Ipv4Addr) -> Result<()> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&dst_mac);
        v.extend_from_slice(&src_mac);
        v.extend_from_slice(&vip.octets());
        v.extend_from_slice(&crate::VIP6.octets());
        self.set_config("tx_cfg", &v)
    }
}

/// The sink's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkCounts {
    /// Correctly forwarded benchmark frames.
    pub good: u64,
    /// Their bytes.
    pub good_bytes: u64,
    /// Frames to the VIP with other MACs (not forwarded, or forwarded wrongly).
    pub wrong_mac: u64,
    /// Latency samples the ring buffer had no room for.
    pub samples_lost: u64,
}

impl SinkCounts {
    /// Reads the per-CPU counters.
    pub fn read(map: &MapHandle) -> Result<SinkCounts> {
        let per_cpu = map
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)?
            .ok_or_else(|| anyhow!(io::Error::other("sink counters missing")))?;
        let mut c = SinkCounts::default();
        for v in per_cpu {
            let f = |i: usize| u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            c.good += f(0);
            c.good_bytes += f(1);
            c.wrong_mac += f(2);
            c.samples_lost += f(3);
        }
        Ok(c)
    }

    /// Counts since `base`.
    pub fn since(&self, base: &SinkCounts) -> SinkCounts {
        SinkCounts {
            good: self.good - base.good,
            good_bytes: self.good_bytes - base.good_bytes,
            wrong_mac: self.wrong_mac - base.wrong_mac,
            samples_lost: self.samples_lost - base.samples_lost,
        }
    }
}
