//! Setting the director up: checks, the XDP program, one AF_XDP socket per RX queue.

use caps::{CapSet, Capability};
use tracing::{info, warn};
use xdpvs_dataplane::arms::Arm;
use xdpvs_dataplane::limits::MAX_QUEUES;
use xdpvs_dataplane::sys::xsk::{BusyPoll, XskConfig, XskDevice, XskError};
use xdpvs_dataplane::xdp::{Steering, XdpError};
use xdpvs_sched::Mac;

use crate::iface::{self, IfaceError};
use crate::options::RunOptions;

/// Why the director could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Capabilities missing.
    #[error("xdpvs run lacks {missing}: run it as root, or grant the capabilities (e.g. systemd AmbientCapabilities=CAP_NET_ADMIN CAP_BPF CAP_IPC_LOCK CAP_SYS_ADMIN CAP_NET_RAW)")]
    Capabilities {
        /// Which, by name.
        missing: String,
    },
    /// The interface.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// `--read-only-group` names no group.
    #[error("--read-only-group {0}: no such group (give a group name of /etc/group or a number)")]
    Group(String),
    /// `-i lo`.
    #[error("{0} is the loopback interface: give the LAN interface the clients and the real servers are on (-i eth0)")]
    Loopback(String),
    /// `--queues` out of range.
    #[error(
        "--queues {asked}: {iface} has {available} RX queue(s) (xdpvs serves at most {MAX_QUEUES})"
    )]
    Queues {
        /// Asked for.
        asked: u32,
        /// The interface.
        iface: String,
        /// What it has.
        available: u32,
    },
    /// `-i` given more than twice, or the same interface twice.
    #[error("-i {0}: give one interface (clients and real servers on it), or two: -i CLIENTS -i SERVERS (the two-armed director)")]
    Interfaces(String),
    /// The XDP program.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// An AF_XDP socket.
    #[error(transparent)]
    Xsk(#[from] XskError),
}

/// The effective capabilities `xdpvs run` needs, and what each is for.
const NEEDED: &[(&[Capability], &str)] = &[
    (
        &[Capability::CAP_NET_ADMIN],
        "CAP_NET_ADMIN (attach XDP, bind AF_XDP sockets)",
    ),
    (
        &[Capability::CAP_BPF, Capability::CAP_SYS_ADMIN],
        "CAP_BPF or CAP_SYS_ADMIN (load the XDP program and its maps)",
    ),
    (&[Capability::CAP_IPC_LOCK], "CAP_IPC_LOCK (lock the UMEM)"),
    (
        &[Capability::CAP_NET_RAW],
        "CAP_NET_RAW (open AF_XDP sockets, and xdpvs check's packet socket)",
    ),
];

/// Checks that the process has the capabilities the director needs (root has them all).
pub fn check_capabilities() -> Result<(), SetupError> {
    let has = |c: &Capability| caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false);
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(any_of, _)| !any_of.iter().any(has))
        .map(|&(_, what)| what)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SetupError::Capabilities {
            missing: missing.join(", "),
        })
    }
}

/// The id of group `name` (a number, or a name in /etc/group).
pub fn group_id(name: &str) -> Result<u32, SetupError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
            })
        })
        .ok_or_else(|| SetupError::Group(name.to_string()))
}

/// The interface the director serves.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// Its (the director's) MAC.
    pub mac: Mac,
    /// RX queues to serve.
    pub queues: u32,
}

impl Interface {
    /// The interfaces of `opts`: the clients' one, and the real servers' one when the
    /// director has two. Both serve as many queues (`--queues`, else all of the one with
    /// fewer).
    pub fn probe_all(opts: &RunOptions) -> Result<(Interface, Option<Interface>), SetupError> {
        let two = match opts.ifaces.as_slice() {
            [_] => false,
            [a, b] if a != b => true,
            many => return Err(SetupError::Interfaces(many.join(" -i "))),
        };
        let clients = Interface::probe(opts.iface(), opts.queues)?;
        if !two {
            return Ok((clients, None));
        }
        let name = opts.servers_iface().unwrap_or_default();
        let servers = Interface::probe(name, opts.queues)?;
        let queues = clients.queues.min(servers.queues);
        if opts.queues.is_none() && clients.queues != servers.queues {
            warn!(
                "{} has {} RX queue(s) and {} {}: xdpvs serves {queues} on each, and frames \
                 arriving on the others go to the kernel; give both as many (ethtool -L)",
                clients.name, clients.queues, servers.name, servers.queues
            );
        }
        Ok((
            Interface { queues, ..clients },
            Some(Interface { queues, ..servers }),
        ))
    }

    /// Reads the facts of interface `name` and checks `queues` against it.
    pub fn probe(name: &str, queues: Option<u32>) -> Result<Interface, SetupError> {
        let name = name.to_string();
        let index = iface::ifindex(&name)?;
        if iface::attr(&name, "type").is_ok_and(|t| t.trim() == "772") {
            return Err(SetupError::Loopback(name));
        }
        let mac = iface::mac_of(&name)?;
        let available = iface::rx_queues(&name)?.max(1);
        let queues = queues.unwrap_or(available.min(MAX_QUEUES as u32));
        if queues == 0 || queues > available || queues as usize > MAX_QUEUES {
            return Err(SetupError::Queues {
                asked: queues,
                iface: name,
                available,
            });
        }
        Ok(Interface {
            name,
            index,
            mac,
            queues,
        })
    }
}

/// Loads the steering program and attaches it to the interface, and to the real
/// servers' one of a two-armed director (detached when dropped).
pub fn steering(
    ifc: &Interface,
    servers: Option<&Interface>,
    opts: &RunOptions,
) -> Result<Steering, SetupError> {
    let mut steering = Steering::load(if opts.offload { opts.offload_flows } else { 0 })?;
    let mode = steering.attach(ifc.index, opts.xdp_mode)?;
    info!(
        "XDP program attached to {} (ifindex {}) in {mode} mode",
        ifc.name, ifc.index
    );
    if let Some(s) = servers {
        let mode = steering.attach_servers(s.index, opts.xdp_mode)?;
        info!(
            "XDP program attached to {} (ifindex {}, the real servers' side) in {mode} mode",
            s.name, s.index
        );
    }
    if opts.busy_poll > 0 && iface::attr(&ifc.name, "napi_defer_hard_irqs").is_ok_and(|v| v == "0")
    {
        warn!(
            "busy polling without deferred interrupts: the kernel keeps processing RX \
             itself between polls; set /sys/class/net/{0}/napi_defer_hard_irqs (e.g. 2) \
             and /sys/class/net/{0}/gro_flush_timeout (e.g. 200000)",
            ifc.name
        );
    }
    Ok(steering)
}

/// Opens the AF_XDP socket of `queue` of `ifc` and steers that queue to it: `ifc` is the
/// clients' interface, or the real servers' one of a two-armed director (`arm`).
pub fn socket(
    ifc: &Interface,
    queue: u32,
    opts: &RunOptions,
    steering: &Steering,
    arm: Arm,
) -> Result<XskDevice, SetupError> {
    let dev = open_socket(ifc, queue, opts)?;
    match arm {
        Arm::Clients => steering.set_socket(queue, dev.fd())?,
        Arm::Servers => steering.set_servers_socket(queue, dev.fd())?,
    }
    Ok(dev)
}

fn open_socket(ifc: &Interface, queue: u32, opts: &RunOptions) -> Result<XskDevice, SetupError> {
    let dev = XskDevice::open(
        &ifc.name,
        queue,
        &XskConfig {
            mode: opts.bind,
            busy_poll: (opts.busy_poll > 0).then_some(BusyPoll {
                usecs: opts.busy_poll,
                budget: opts.busy_poll_budget,
            }),
            ..XskConfig::default()
        },
    )?;
    Ok(dev)
}
