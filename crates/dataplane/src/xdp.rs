//! The XDP steering program (`bpf/xdpvs.bpf.c`): loading, attaching, and its maps.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;

use libbpf_rs::{MapCore, MapFlags, ProgramInput};
use xdpvs_sched::conn::ConnKey;
use xdpvs_sched::ServiceKey;

use crate::config::NatSource;

use crate::sys::link::xdp_link;
use crate::sys::skel::{bytes_of, types, Loaded};

use libbpf_sys::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum XdpMode {
    /// Native if the driver supports it, else generic.
    Auto,
    /// In the driver (fast path).
    #[cfg_attr(feature = "clap", value(alias = "drv"))]
    Native,
    /// Generic (SKB) mode: works everywhere, slower.
    #[cfg_attr(feature = "clap", value(alias = "skb"))]
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Why the steering program could not be loaded, attached or updated.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The kernel refused the program or its maps.
    #[error("loading the XDP program failed: {0} (root, BPF and BTF support are needed)")]
    Load(libbpf_rs::Error),
    /// Attaching failed in every mode tried.
    #[error("attaching XDP to interface index {ifindex} in {mode} mode failed: {cause}{hint}")]
    Attach {
        /// Interface index.
        ifindex: u32,
        /// Mode tried last.
        mode: XdpMode,
        /// The kernel's answer.
        cause: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Another XDP program holds the interface.
    #[error("{}", busy_message(*ifindex, other))]
    Busy {
        /// Interface index.
        ifindex: u32,
        /// The program attached there (id, name), when it could be read.
        other: Option<(u32, String)>,
    },
    /// A test run of the classifier failed.
    #[error("test-running the XDP classifier failed: {0}")]
    TestRun(libbpf_rs::Error),
    /// A map update failed.
    #[error("updating the XDP map '{map}' failed: {cause}")]
    Map {
        /// Which map.
        map: &'static str,
        /// The error.
        cause: libbpf_rs::Error,
    },
}

/// The loaded steering program and its maps; attached to one interface, or to two (the
/// two-armed director).
pub struct Steering {
    // Field order is drop order: the attachments before the program.
    link: Option<OwnedFd>,
    /// Two-armed: the attachment to the real servers' interface.
    servers: Option<OwnedFd>,
    loaded: Loaded,
    /// The mode of the attachment to the clients' interface.
    mode: Option<XdpMode>,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering")
            .field("attached", &self.link.is_some())
            .finish()
    }
}

/// A service as the program's `services` or `services6` map keys it (the C struct,
/// network byte order), with the map's key bytes for its VIP.
fn service_keys(k: &ServiceKey) -> (Vec<u8>, Vec<u8>) {
    match k.vip {
        IpAddr::V4(vip) => (
            bytes_of(&vip_key(vip)).to_vec(),
            bytes_of(&types::service_key {
                vip: vip_key(vip),
                port: k.port.to_be(),
                proto: k.proto.ip_number(),
                pad: 0,
            })
            .to_vec(),
        ),
        IpAddr::V6(vip) => (
            bytes_of(&types::vip6_key { addr: vip.octets() }).to_vec(),
            bytes_of(&types::service6_key {
                vip: vip.octets(),
                port: k.port.to_be(),
                proto: k.proto.ip_number(),
                pad: 0,
            })
            .to_vec(),
        ),
    }
}

/// A VIP as the program's `vips` map keys it (network byte order).
fn vip_key(vip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(vip.octets())
}

const XDP_TX: u32 = 3;
const ETH_HLEN: usize = 14;

impl Steering {
    /// Loads the program and creates its maps (not attached yet), with room for
    /// `offload` flows forwarded by the program itself (`run --offload`; 0: off).
    pub fn load(offload: u32) -> Result<Steering, XdpError> {
        Ok(Steering {
            link: None,
            servers: None,
            loaded: Loaded::load(offload).map_err(XdpError::Load)?,
            mode: None,
        })
    }

    /// The map of flows the program forwards itself (`run --offload`), as a handle of
    /// its own that another thread may own, with their counters mapped into memory.
    pub fn flows(&self) -> Result<FlowMap, XdpError> {
        let maps = &self.loaded.skel().maps;
        let handle =
            libbpf_rs::MapHandle::try_from(&maps.flows).map_err(|cause| XdpError::Map {
                map: "flows",
                cause,
            })?;
        let slots = maps.flow_counts.max_entries();
        let counts = crate::sys::skel::SharedWords::map(
            maps.flow_counts.as_fd(),
            slots as usize * COUNT_WORDS,
        )
        .map_err(|e| XdpError::Map {
            map: "flow_counts",
            cause: libbpf_rs::Error::from(e),
        })?;
        Ok(FlowMap {
            map: handle,
            counts,
            slots,
        })
    }

    /// What the program does with `frame` when it forwards it itself (`run --offload`):
    /// the rewritten frame, or `None` when it would not (it steers it to the director
    /// or passes it to the kernel). Run by the kernel (`BPF_PROG_TEST_RUN` of
    /// `xdpvs_fast`, which shares the decision with `xdpvs_steer`); it counts in the
    /// flow's counters as a forwarded frame does.
    pub fn fast_path(&self, frame: &[u8]) -> Result<Option<Vec<u8>>, XdpError> {
        if frame.len() < ETH_HLEN {
            return Ok(None);
        }
        let mut out = vec![0u8; frame.len()];
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..ProgramInput::default()
        };
        let r = self
            .loaded
            .skel()
            .progs
            .xdpvs_fast
            .test_run(input)
            .map_err(XdpError::TestRun)?;
        Ok((r.return_value == XDP_TX).then_some(out))
    }

    /// The mode the program is attached in to the clients' interface, once attached.
    pub fn mode(&self) -> Option<XdpMode> {
        self.mode
    }

    /// Attaches to `ifindex` through a `bpf_link` (released if the process dies). `Auto`
    /// tries native first, then generic. Returns the mode in force.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<XdpMode, XdpError> {
        self.link = None;
        let (link, mode) = self.attach_to(ifindex, mode)?;
        self.link = Some(link);
        self.mode = Some(mode);
        Ok(mode)
    }

    /// Two-armed: attaches to the real servers' interface `ifindex` as well, where the
    /// program steers only NAT real servers' replies and errors, to the sockets given
    /// by [`Steering::set_servers_socket`]. Returns the mode in force.
    pub fn attach_servers(&mut self, ifindex: u32, mode: XdpMode) -> Result<XdpMode, XdpError> {
        self.servers = None;
        let (link, mode) = self.attach_to(ifindex, mode)?;
        self.loaded
            .skel()
            .maps
            .servers_side
            .update(bytes_of(&0u32), bytes_of(&ifindex), MapFlags::ANY)
            .map_err(|cause| XdpError::Map {
                map: "servers_side",
                cause,
            })?;
        self.servers = Some(link);
        Ok(mode)
    }

    fn attach_to(&self, ifindex: u32, mode: XdpMode) -> Result<(OwnedFd, XdpMode), XdpError> {
        let prog = &self.loaded.skel().progs.xdpvs_steer;
        match attach(prog.as_fd(), ifindex, mode) {
            Err(XdpError::Attach { cause, .. })
                if matches!(cause.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) =>
            {
                Err(XdpError::Busy {
                    ifindex,
                    other: attached_program(prog.as_fd(), ifindex),
                })
            }
            r => r,
        }
    }

    /// Detaches from the interfaces (also done on drop).
    pub fn detach(&mut self) {
        self.link = None;
        self.servers = None;
    }

    /// Steers RX queue `queue` to the AF_XDP socket `fd`.
    pub fn set_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.set_xsk(queue, fd)
    }

    /// Two-armed: steers RX queue `queue` of the real servers' interface to `fd`.
    pub fn set_servers_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.set_xsk(crate::limits::MAX_QUEUES as u32 + queue, fd)
    }

    fn set_xsk(&self, index: u32, fd: RawFd) -> Result<(), XdpError> {
        self.loaded
            .skel()
            .maps
            .xsks
            .update(bytes_of(&index), bytes_of(&(fd as u32)), MapFlags::ANY)
            .map_err(|cause| XdpError::Map { map: "xsks", cause })
    }

    /// Makes the program steer exactly these services (and ARP for their VIPs), and the
    /// replies of exactly these NAT real servers, except those to the director's `own`
    /// addresses (answers to its health checks: the kernel's).
    pub fn set_services(
        &self,
        keys: &[ServiceKey],
        nat: &[NatSource],
        own: &[IpAddr],
    ) -> Result<(), XdpError> {
        let maps = &self.loaded.skel().maps;
        let (mut own4, mut own6) = (HashSet::new(), HashSet::new());
        for a in own {
            match a {
                IpAddr::V4(a) => own4.insert(bytes_of(&vip_key(*a)).to_vec()),
                IpAddr::V6(a) => {
                    own6.insert(bytes_of(&types::vip6_key { addr: a.octets() }).to_vec())
                }
            };
        }
        insert_all(&maps.own, "own", &own4)?;
        insert_all(&maps.own6, "own6", &own6)?;
        remove_others(&maps.own, "own", &own4)?;
        remove_others(&maps.own6, "own6", &own6)?;
        let (mut nats, mut nats6) = (HashSet::new(), HashSet::new());
        // Each NAT real server's address with port 0: its ICMP errors.
        let errors = nat.iter().map(|n| NatSource { port: 0, ..*n });
        for n in nat.iter().copied().chain(errors) {
            let proto = match (n.port, n.addr) {
                (0, IpAddr::V4(_)) => 1,
                (0, IpAddr::V6(_)) => 58,
                _ => n.proto.ip_number(),
            };
            match n.addr {
                IpAddr::V4(a) => nats.insert(
                    bytes_of(&types::nat_key {
                        addr: vip_key(a),
                        port: n.port.to_be(),
                        proto,
                        pad: 0,
                    })
                    .to_vec(),
                ),
                IpAddr::V6(a) => nats6.insert(
                    bytes_of(&types::nat6_key {
                        addr: a.octets(),
                        port: n.port.to_be(),
                        proto,
                        pad: 0,
                    })
                    .to_vec(),
                ),
            };
        }
        insert_all(&maps.nats, "nats", &nats)?;
        insert_all(&maps.nats6, "nats6", &nats6)?;
        remove_others(&maps.nats, "nats", &nats)?;
        remove_others(&maps.nats6, "nats6", &nats6)?;
        let (mut vips, mut svcs) = (HashSet::new(), HashSet::new());
        let (mut vips6, mut svcs6) = (HashSet::new(), HashSet::new());
        for k in keys {
            let (v, s) = service_keys(k);
            if k.is_ipv6() {
                vips6.insert(v);
                svcs6.insert(s);
            } else {
                vips.insert(v);
                svcs.insert(s);
            }
        }
        // Add first, then remove: a VIP or service that stays is never missing.
        insert_all(&maps.vips, "vips", &vips)?;
        insert_all(&maps.services, "services", &svcs)?;
        insert_all(&maps.vips6, "vips6", &vips6)?;
        insert_all(&maps.services6, "services6", &svcs6)?;
        remove_others(&maps.services, "services", &svcs)?;
        remove_others(&maps.vips, "vips", &vips)?;
        remove_others(&maps.services6, "services6", &svcs6)?;
        remove_others(&maps.vips6, "vips6", &vips6)
    }

    /// Whether the program steers `frame` to the director (true) or passes it to the
    /// kernel (false), with the maps as they are: the program's own decision, run by the
    /// kernel (`BPF_PROG_TEST_RUN` of `xdpvs_classify`, which shares it with
    /// `xdpvs_steer`). Needs the same privileges as loading. A frame shorter than an
    /// Ethernet header never reaches XDP: false.
    pub fn classify(&self, frame: &[u8]) -> Result<bool, XdpError> {
        if frame.len() < ETH_HLEN {
            return Ok(false);
        }
        let input = ProgramInput {
            data_in: Some(frame),
            ..ProgramInput::default()
        };
        let out = self
            .loaded
            .skel()
            .progs
            .xdpvs_classify
            .test_run(input)
            .map_err(XdpError::TestRun)?;
        Ok(out.return_value == XDP_TX)
    }
}

/// What the XDP program forwarded of one offloaded flow, on every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Packets.
    pub packets: u64,
    /// Bytes (IP lengths).
    pub bytes: u64,
    /// The latest `bpf_ktime_get_ns()` it was forwarded at (or put in the map at).
    pub last_seen_ns: u64,
}

/// The program's map of offloaded flows (`run --offload`): IPv4 flows to the MACs they
/// are forwarded to, each with its counters in a slot of an array mapped into this
/// process. The caller chooses the slots: one live flow per slot.
#[derive(Debug)]
pub struct FlowMap {
    map: libbpf_rs::MapHandle,
    counts: crate::sys::skel::SharedWords,
    slots: u32,
}

/// Words of one slot of `flow_counts` (`struct flow_count`: packets, bytes, last seen).
const COUNT_WORDS: usize = std::mem::size_of::<types::flow_count>() / 8;

fn flow_key(k: &ConnKey<Ipv4Addr>) -> types::flow_key {
    types::flow_key {
        client: vip_key(k.client),
        vip: vip_key(k.vip),
        cport: k.cport.to_be(),
        vport: k.vport.to_be(),
        proto: k.proto.ip_number(),
        pad: [0; 3],
    }
}

/// A flow for [`FlowMap::insert_many`]: its key, the real server's and the director's
/// MACs, its idle timeout, the slot of its counters.
pub type NewFlow = (
    ConnKey<Ipv4Addr>,
    ([u8; 6], [u8; 6]),
    std::time::Duration,
    u32,
);

impl FlowMap {
    /// How many flows it holds, and so the slots there are (`0..slots()`).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Lets the program forward `key` to `to` from `from` while it is never idle for
    /// longer than `idle` (then its next packet goes to the workers), as if seen at
    /// `now_ns` (CLOCK_MONOTONIC), counting in `slot` (set to zero: read it first if it
    /// counted another flow). `slot` must be below [`FlowMap::slots`] and no other flow's.
    pub fn insert(
        &self,
        key: &ConnKey<Ipv4Addr>,
        to_from: ([u8; 6], [u8; 6]),
        idle: std::time::Duration,
        slot: u32,
        now_ns: u64,
    ) -> Result<(), XdpError> {
        let mut refused = None;
        self.insert_many(&[(*key, to_from, idle, slot)], now_ns, |_, e| {
            refused = Some(e)
        });
        refused.map_or(Ok(()), Err)
    }

    /// [`FlowMap::insert`] of every flow of `flows`, in order, a batch of system calls
    /// for all of them: `refused` hears of each the map did not take (full, or a slot out
    /// of range) and why.
    pub fn insert_many(
        &self,
        flows: &[NewFlow],
        now_ns: u64,
        mut refused: impl FnMut(usize, XdpError),
    ) {
        let size = std::mem::size_of::<types::flow_key>();
        let stride = std::mem::size_of::<types::flow_val>();
        let mut keys = Vec::with_capacity(flows.len() * size);
        let mut values = Vec::with_capacity(flows.len() * stride);
        let mut at_first = Vec::with_capacity(flows.len());
        for (i, (key, (to, from), idle, slot)) in flows.iter().enumerate() {
            if *slot >= self.slots {
                refused(
                    i,
                    XdpError::Map {
                        map: "flow_counts",
                        cause: libbpf_rs::Error::from(std::io::Error::other(format!(
                            "slot {slot} out of range (the map holds {})",
                            self.slots
                        ))),
                    },
                );
                continue;
            }
            // The counters first: the program finds them once it finds the flow.
            self.reset(*slot, now_ns);
            keys.extend_from_slice(bytes_of(&flow_key(key)));
            values.extend_from_slice(bytes_of(&types::flow_val {
                to: *to,
                from: *from,
                slot: *slot,
                idle_ns: u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX),
            }));
            at_first.push(i);
        }
        let n = at_first.len();
        let mut at = 0;
        while at < n {
            let (done, err) = crate::sys::skel::update_batch(
                self.map.as_fd(),
                (size, stride, 1),
                &keys[at * size..],
                &values[at * stride..],
            );
            at += done;
            match err {
                None => break,
                Some(e) => {
                    // The entry at `at` stopped the batch: refused; go on after it.
                    if at < n {
                        refused(
                            at_first[at],
                            XdpError::Map {
                                map: "flows",
                                cause: libbpf_rs::Error::from(e),
                            },
                        );
                    }
                    at += 1;
                }
            }
        }
    }

    fn reset(&self, slot: u32, now_ns: u64) {
        let w = &self.counts.words()[slot as usize * COUNT_WORDS..][..COUNT_WORDS];
        w[0].store(0, Relaxed);
        w[1].store(0, Relaxed);
        w[2].store(now_ns, Relaxed);
    }

    /// What the program forwarded on the counters of `slot` (zero out of range): one
    /// read of memory, no system call.
    #[inline]
    pub fn counts(&self, slot: u32) -> FlowCounts {
        match self
            .counts
            .words()
            .get(slot as usize * COUNT_WORDS..(slot as usize + 1) * COUNT_WORDS)
        {
            Some(w) => FlowCounts {
                packets: w[0].load(Relaxed),
                bytes: w[1].load(Relaxed),
                last_seen_ns: w[2].load(Relaxed),
            },
            None => FlowCounts::default(),
        }
    }

    /// Leaves `key` to the workers from now on (absent already: nothing happens).
    pub fn remove(&self, key: &ConnKey<Ipv4Addr>) -> Result<(), XdpError> {
        match self.map.delete(bytes_of(&flow_key(key))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(cause) => Err(XdpError::Map {
                map: "flows",
                cause,
            }),
        }
    }

    /// How many flows the map holds (a walk of its keys, a system call each: for tests
    /// and tools, not a pass).
    pub fn len(&self) -> usize {
        self.map.keys().count()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Attaches the XDP program `prog` to `ifindex` through a `bpf_link`: the returned
/// descriptor owns the attachment (dropping it, or the process dying, detaches). `Auto`
/// tries native first, then generic. Returns the link and the mode in force.
pub fn attach(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(OwnedFd, XdpMode), XdpError> {
    let tries: &[(XdpMode, u32)] = match mode {
        XdpMode::Auto => &[
            (XdpMode::Native, XDP_FLAGS_DRV_MODE),
            (XdpMode::Generic, XDP_FLAGS_SKB_MODE),
        ],
        XdpMode::Native => &[(XdpMode::Native, XDP_FLAGS_DRV_MODE)],
        XdpMode::Generic => &[(XdpMode::Generic, XDP_FLAGS_SKB_MODE)],
    };
    let mut last = None;
    for &(m, flags) in tries {
        match xdp_link(prog, ifindex as i32, flags) {
            Ok(fd) => return Ok((fd, m)),
            Err(e) => last = Some((m, e)),
        }
    }
    let (mode, source) = last.expect("at least one mode is tried");
    let hint = match source.raw_os_error() {
        Some(libc::EOPNOTSUPP) => " (the driver lacks native XDP: try --xdp-mode generic)",
        _ => "",
    };
    Err(XdpError::Attach {
        ifindex,
        mode,
        cause: source,
        hint,
    })
}

/// The id and name of the XDP program attached to `ifindex`, if any (`prog` is any XDP
/// program of ours: the query goes through it).
fn attached_program(prog: BorrowedFd<'_>, ifindex: u32) -> Option<(u32, String)> {
    let id = libbpf_rs::Xdp::new(prog)
        .query_id(ifindex as i32, libbpf_rs::XdpFlags::NONE)
        .ok()
        .filter(|&id| id != 0)?;
    let name = libbpf_rs::query::ProgInfoIter::default()
        .find(|p| p.id == id)
        .map(|p| p.name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some((id, name))
}

/// What to say when another XDP program holds the interface.
fn busy_message(ifindex: u32, other: &Option<(u32, String)>) -> String {
    let iface = crate::xdp::interface_name(ifindex);
    match other {
        Some((_, name)) if name == "xdpvs_steer" => format!(
            "another xdpvs director runs on {iface}: stop it first, or give this one another interface"
        ),
        Some((id, name)) => format!(
            "another XDP program ({}id {id}) is attached to {iface}: remove it first (`ip link set dev {iface} xdp off` if it was attached without a link)",
            if name.is_empty() { String::new() } else { format!("{name}, ") }
        ),
        None => format!(
            "another XDP program is attached to {iface}: remove it first (`ip link set dev {iface} xdp off` if it was attached without a link)"
        ),
    }
}

/// The name of interface `ifindex` (its index in words when it has none).
pub fn interface_name(ifindex: u32) -> String {
    std::fs::read_dir("/sys/class/net")
        .ok()
        .and_then(|dir| {
            dir.flatten().find_map(|e| {
                let idx = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
                (idx.trim().parse::<u32>().ok()? == ifindex)
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
        })
        .unwrap_or_else(|| format!("interface index {ifindex}"))
}

fn insert_all(
    map: &impl MapCore,
    name: &'static str,
    keys: &HashSet<Vec<u8>>,
) -> Result<(), XdpError> {
    for k in keys {
        map.update(k, &[1], MapFlags::ANY)
            .map_err(|cause| XdpError::Map { map: name, cause })?;
    }
    Ok(())
}

fn remove_others(
    map: &impl MapCore,
    name: &'static str,
    keep: &HashSet<Vec<u8>>,
) -> Result<(), XdpError> {
    let stale: Vec<Vec<u8>> = map.keys().filter(|k| !keep.contains(k)).collect();
    for k in stale {
        map.delete(&k)
            .map_err(|cause| XdpError::Map { map: name, cause })?;
    }
    Ok(())
}
