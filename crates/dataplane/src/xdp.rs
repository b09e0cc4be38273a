//! The XDP steering program (`bpf/xdpvs.bpf.c`): loading, attaching, and its maps.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, ObjectBuilder};
use xdpvs_sched::ServiceKey;

use crate::sys::link::xdp_link;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdpvs.bpf.o"));
const PROGRAM: &str = "xdpvs_steer";
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
    Load(#[source] libbpf_rs::Error),
    /// Attaching failed in every mode tried.
    #[error("attaching XDP to interface index {ifindex} in {mode} mode failed: {source}{hint}")]
    Attach {
        /// Interface index.
        ifindex: u32,
        /// Mode tried last.
        mode: XdpMode,
        /// The kernel's answer.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A map update failed.
    #[error("updating the XDP map '{map}' failed: {source}")]
    Map {
        /// Which map.
        map: &'static str,
        /// The error.
        #[source]
        source: libbpf_rs::Error,
    },
}

/// The loaded steering program and its maps; attached to at most one interface.
pub struct Steering {
    object: Object,
    xsks: MapHandle,
    vips: MapHandle,
    services: MapHandle,
    link: Option<OwnedFd>,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering")
            .field("attached", &self.link.is_some())
            .finish()
    }
}

/// A service as the program's `services` map keys it (network byte order).
fn service_key_bytes(k: &ServiceKey) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&k.vip.octets());
    b[4..6].copy_from_slice(&k.port.to_be_bytes());
    b[6] = k.proto.ip_number();
    b
}

impl Steering {
    /// Loads the program and creates its maps (not attached yet).
    pub fn load() -> Result<Steering, XdpError> {
        let object = ObjectBuilder::default()
            .open_memory(OBJECT)
            .and_then(|o| o.load())
            .map_err(XdpError::Load)?;
        let map = |name: &str| -> Result<MapHandle, XdpError> {
            let m = object.maps().find(|m| m.name() == name).ok_or_else(|| {
                XdpError::Load(libbpf_rs::Error::from(io::Error::other(format!(
                    "no map {name}"
                ))))
            })?;
            MapHandle::try_from(&m).map_err(XdpError::Load)
        };
        let (xsks, vips, services) = (map("xsks")?, map("vips")?, map("services")?);
        Ok(Steering {
            object,
            xsks,
            vips,
            services,
            link: None,
        })
    }

    /// Attaches to `ifindex` through a `bpf_link` (released if the process dies). `Auto`
    /// tries native first, then generic. Returns the mode in force.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<XdpMode, XdpError> {
        self.link = None;
        let prog = self
            .object
            .progs()
            .find(|p| p.name() == PROGRAM)
            .ok_or_else(|| {
                XdpError::Load(libbpf_rs::Error::from(io::Error::other("no program")))
            })?;
        let (link, mode) = attach(prog.as_fd(), ifindex, mode)?;
        self.link = Some(link);
        Ok(mode)
    }

    /// Detaches from the interface (also done on drop).
    pub fn detach(&mut self) {
        self.link = None;
    }

    /// Steers RX queue `queue` to the AF_XDP socket `fd`.
    pub fn set_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.xsks
            .update(
                &queue.to_ne_bytes(),
                &(fd as u32).to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|source| XdpError::Map {
                map: "xsks",
                source,
            })
    }

    /// Makes the program steer exactly these services (and ARP for their VIPs).
    pub fn set_services(&self, keys: &[ServiceKey]) -> Result<(), XdpError> {
        let vips: HashSet<Vec<u8>> = keys.iter().map(|k| k.vip.octets().to_vec()).collect();
        let svcs: HashSet<Vec<u8>> = keys.iter().map(|k| service_key_bytes(k).to_vec()).collect();
        // Add first, then remove: a VIP or service that stays is never missing.
        insert_all(&self.vips, "vips", &vips)?;
        insert_all(&self.services, "services", &svcs)?;
        remove_others(&self.services, "services", &svcs)?;
        remove_others(&self.vips, "vips", &vips)
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
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            " (another XDP program is attached: `ip link set dev IFACE xdp off` removes one attached without a link)"
        }
        Some(libc::EOPNOTSUPP) => " (the driver lacks native XDP: try --xdp-mode generic)",
        _ => "",
    };
    Err(XdpError::Attach {
        ifindex,
        mode,
        source,
        hint,
    })
}

fn insert_all(
    map: &MapHandle,
    name: &'static str,
    keys: &HashSet<Vec<u8>>,
) -> Result<(), XdpError> {
    for k in keys {
        map.update(k, &[1], MapFlags::ANY)
            .map_err(|source| XdpError::Map { map: name, source })?;
    }
    Ok(())
}

fn remove_others(
    map: &MapHandle,
    name: &'static str,
    keep: &HashSet<Vec<u8>>,
) -> Result<(), XdpError> {
    let stale: Vec<Vec<u8>> = map.keys().filter(|k| !keep.contains(k)).collect();
    for k in stale {
        map.delete(&k)
            .map_err(|source| XdpError::Map { map: name, source })?;
    }
    Ok(())
}
