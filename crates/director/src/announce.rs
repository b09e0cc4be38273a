//! `xdpvs run --announce IFACE`: the VIPs this director should attract, kept as
//! addresses on IFACE for a routing daemon to export as connected routes (BIRD's
//! `protocol direct`, FRR's `redistribute connected`), so that routers spread the VIPs'
//! flows over every director that announces them (ECMP).
//!
//! - A VIP is announced (a /32 or /128 on IFACE) while it has a real server in service,
//!   and withdrawn when it has none, when the director drains, and when it stops.
//! - The addresses have a short valid lifetime ([`LIFETIME`]) that a thread of their own
//!   renews every [`REFRESH`]: a director that dies (SIGKILL, a crash) stops renewing
//!   them, the kernel removes them within [`LIFETIME`] seconds and the routing daemon
//!   withdraws the routes, with no other process's help.
//! - A dead director's kernel must not answer the VIPs' packets (the VIPs are local
//!   addresses there, its XDP program is gone with the process): an nftables table
//!   (`inet xdpvs`) drops TCP and UDP for the configured VIPs before routing. It lives in
//!   the kernel, outlives the process, and is replaced at the next start (removed at a
//!   clean stop, after the addresses). Clients' packets are then lost, not refused: they
//!   retransmit, and their flows continue on another director once the route is gone.
//!
//! The pure parts (the address messages, the nftables script) are unit-tested; the lab
//! (crates/cli/tests/ecmp.rs) runs it with BIRD and a router.

use std::collections::BTreeSet;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use netlink_packet_core::{NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;
use tracing::{info, warn};

/// Seconds an announced address lives unless renewed.
pub const LIFETIME: u32 = 4;
/// How often the addresses are renewed.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The nftables table that guards the VIPs while no director runs.
pub const NFT_TABLE: &str = "inet xdpvs";

/// Why announcing could not start.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The interface does not exist and none could be made.
    #[error("--announce {iface}: no such interface, and a dummy one could not be created ({cause}): create it first (`ip link add {iface} type dummy`, or `type ifb` where the kernel has no dummy driver)")]
    NoInterface {
        /// The interface.
        iface: String,
        /// Why it could not be created.
        cause: io::Error,
    },
    /// A netlink call failed.
    #[error("--announce {iface}: {what}")]
    Netlink {
        /// The interface.
        iface: String,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The nftables guard could not be installed.
    #[error("--announce: the nftables rule that keeps a stopped director's kernel from answering the VIPs could not be installed: {0}")]
    Nft(String),
    /// The announcing thread could not start.
    #[error("--announce: starting its thread: {0}")]
    Thread(io::Error),
}

/// The rtnetlink message that adds (or renews) `addr` on interface `ifindex` with a
/// valid and preferred lifetime of `lifetime` seconds: a host route (/32, /128), with
/// no duplicate address detection (the VIP is on every director on purpose).
pub fn address_message(ifindex: u32, addr: IpAddr, lifetime: u32) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = if addr.is_ipv4() { 32 } else { 128 };
    m.header.index = ifindex;
    let mut life = CacheInfo::default();
    life.ifa_preferred = lifetime;
    life.ifa_valid = lifetime;
    m.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
        AddressAttribute::CacheInfo(life),
        AddressAttribute::Flags(AddressFlags::Nodad),
    ];
    m
}

/// The nftables script that (re)defines [`NFT_TABLE`]: TCP and UDP to `vips` arriving on
/// any interface but `lo` are dropped before routing. A running director never lets its
/// kernel see them (its XDP program takes them first); this is for when it is gone.
pub fn guard_script(vips: &BTreeSet<IpAddr>) -> String {
    let set = |name: &str, ty: &str, v4: bool| {
        let elems: Vec<String> = vips
            .iter()
            .filter(|a| a.is_ipv4() == v4)
            .map(|a| a.to_string())
            .collect();
        let elements = if elems.is_empty() {
            String::new()
        } else {
            format!("    elements = {{ {} }}\n", elems.join(", "))
        };
        format!("  set {name} {{\n    type {ty}\n{elements}  }}\n")
    };
    format!(
        "add table {NFT_TABLE}\ndelete table {NFT_TABLE}\ntable {NFT_TABLE} {{\n{}{}  chain guard {{\n    type filter hook prerouting priority raw; policy accept;\n    iifname \"lo\" accept\n    meta l4proto {{ tcp, udp }} ip daddr @vips4 drop\n    meta l4proto {{ tcp, udp }} ip6 daddr @vips6 drop\n  }}\n}}\n",
        set("vips4", "ipv4_addr", true),
        set("vips6", "ipv6_addr", false),
    )
}

/// Installs (or replaces) the guard for `vips`: a VIP that follows VRRP is on the
/// master's interface, and a master whose director is gone must not answer it.
pub fn guard(vips: &BTreeSet<IpAddr>) -> Result<(), String> {
    nft(&guard_script(vips))
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e} (install nftables: apt-get install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What the director wants announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipSet {
    /// Every VIP of the configuration (guarded by the nftables rule).
    pub configured: BTreeSet<IpAddr>,
    /// The VIPs with a real server in service (announced).
    pub in_service: BTreeSet<IpAddr>,
}

enum Msg {
    Set(VipSet),
    /// Withdraw everything now; answer when done.
    Withdraw(Sender<()>),
}

/// The announcing thread's handle. Dropping it withdraws every address and removes the
/// nftables table.
#[derive(Debug)]
pub struct Announcer {
    tx: Option<Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    withdrawn: bool,
}

impl Announcer {
    /// Finds (or creates) `iface`, brings it up, installs the nftables guard (empty) and
    /// starts the thread that keeps the addresses.
    pub fn start(iface: &str) -> Result<Announcer, AnnounceError> {
        let mut link = Link::open(iface)?;
        nft(&guard_script(&BTreeSet::new())).map_err(AnnounceError::Nft)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("xdpvs-announce".into())
            .spawn(move || link.serve(&rx))
            .map_err(AnnounceError::Thread)?;
        info!(
            "announcing VIPs with a real server in service on {iface} (addresses valid {LIFETIME} s, renewed every {} s)",
            REFRESH.as_secs()
        );
        Ok(Announcer {
            tx: Some(tx),
            thread: Some(thread),
            withdrawn: false,
        })
    }

    /// Announces `w.in_service`, guards `w.configured` (nothing once withdrawn).
    pub fn set(&mut self, w: VipSet) {
        if self.withdrawn {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Set(w));
        }
    }

    /// Withdraws every address now (drain, stop) and announces nothing from then on.
    /// Returns once the addresses are gone.
    pub fn withdraw(&mut self) {
        self.withdrawn = true;
        if let Some(tx) = &self.tx {
            let (done, wait) = crossbeam_channel::bounded(1);
            if tx.send(Msg::Withdraw(done)).is_ok() {
                let _ = wait.recv_timeout(Duration::from_secs(5));
            }
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // The thread withdraws everything and removes the guard when its channel closes.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The interface and the rtnetlink socket the thread works with.
struct Link {
    iface: String,
    ifindex: u32,
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
    /// The addresses on the interface now.
    held: BTreeSet<IpAddr>,
    /// The VIPs in the nftables set now.
    guarded: BTreeSet<IpAddr>,
    /// Addresses whose renewal failed (said once until it works again).
    failing: BTreeSet<IpAddr>,
}

impl Link {
    fn open(iface: &str) -> Result<Link, AnnounceError> {
        let err = |what| {
            let iface = iface.to_string();
            move |source| AnnounceError::Netlink {
                iface,
                what,
                source,
            }
        };
        let sock =
            crate::neighbours::request_socket().map_err(|(what, source)| err(what)(source))?;
        let mut link = Link {
            iface: iface.to_string(),
            ifindex: 0,
            sock,
            buf: vec![0; 1 << 14],
            seq: 0,
            held: BTreeSet::new(),
            guarded: BTreeSet::new(),
            failing: BTreeSet::new(),
        };
        link.ifindex = match crate::iface::ifindex(iface) {
            Ok(i) => i,
            Err(_) => {
                let mut m = LinkMessage::default();
                m.attributes = vec![
                    LinkAttribute::IfName(iface.to_string()),
                    LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]),
                ];
                link.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
                    .map_err(|cause| AnnounceError::NoInterface {
                        iface: iface.to_string(),
                        cause,
                    })?;
                info!("--announce: created the dummy interface {iface}");
                crate::iface::ifindex(iface).map_err(|e| AnnounceError::NoInterface {
                    iface: iface.to_string(),
                    cause: io::Error::other(e.to_string()),
                })?
            }
        };
        let mut up = LinkMessage::default();
        up.header.index = link.ifindex;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        link.request(RouteNetlinkMessage::SetLink(up), 0)
            .map_err(err("bringing it up"))?;
        Ok(link)
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.sock.send(
            &crate::neighbours::encode(msg, NLM_F_ACK | flags, self.seq),
            0,
        )?;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            if n == 0 {
                return Err(io::Error::other("rtnetlink closed"));
            }
            for m in crate::neighbours::messages(&self.buf[..n]) {
                if m.header.sequence_number != self.seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
            }
        }
    }

    /// The thread: applies what it is told, renews the addresses every [`REFRESH`];
    /// when the director is gone (the channel closed), withdraws everything and removes
    /// the guard.
    fn serve(&mut self, rx: &Receiver<Msg>) {
        let mut wanted = VipSet::default();
        loop {
            match rx.recv_timeout(REFRESH) {
                Ok(Msg::Set(w)) => wanted = w,
                Ok(Msg::Withdraw(done)) => {
                    wanted.in_service.clear();
                    self.apply(&wanted);
                    let _ = done.send(());
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.apply(&wanted);
        }
        wanted.in_service.clear();
        self.apply(&wanted);
        if let Err(e) = nft(&format!("delete table {NFT_TABLE}\n")) {
            warn!("--announce: removing the nftables table {NFT_TABLE}: {e}");
        }
    }

    /// Makes the interface hold `w.in_service` (renewing their lifetime) and the guard
    /// cover `w.configured` and whatever is held.
    fn apply(&mut self, w: &VipSet) {
        let guard: BTreeSet<IpAddr> = w.configured.union(&w.in_service).copied().collect();
        if guard != self.guarded {
            match nft(&guard_script(&guard)) {
                Ok(()) => self.guarded = guard,
                Err(e) => warn!("--announce: updating the nftables guard: {e}"),
            }
        }
        let gone: Vec<IpAddr> = self.held.difference(&w.in_service).copied().collect();
        for a in gone {
            let m = address_message(self.ifindex, a, LIFETIME);
            match self.request(RouteNetlinkMessage::DelAddress(m), 0) {
                Ok(()) => info!("VIP {a} withdrawn from {}", self.iface),
                // Expired already (the director was stopped for longer than its life).
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => warn!("--announce: removing {a} from {}: {e}", self.iface),
            }
            self.held.remove(&a);
        }
        for &a in &w.in_service {
            let m = address_message(self.ifindex, a, LIFETIME);
            match self.request(
                RouteNetlinkMessage::NewAddress(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            ) {
                Ok(()) => {
                    self.failing.remove(&a);
                    if self.held.insert(a) {
                        info!("VIP {a} announced on {}", self.iface);
                    }
                }
                Err(e) => {
                    if self.failing.insert(a) {
                        warn!("--announce: adding {a} to {}: {e}", self.iface);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_address_is_a_host_route_with_a_short_life() {
        let v4: IpAddr = "198.19.255.10".parse().expect("valid");
        let m = address_message(7, v4, LIFETIME);
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!(m.header.prefix_len, 32);
        assert_eq!(m.header.index, 7);
        assert!(m.attributes.contains(&AddressAttribute::Local(v4)));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let life = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::CacheInfo(c) => Some((c.ifa_valid, c.ifa_preferred)),
            _ => None,
        });
        assert_eq!(life, Some((LIFETIME, LIFETIME)));
        let v6: IpAddr = "2001:2:ff::10".parse().expect("valid");
        let m = address_message(7, v6, LIFETIME);
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.prefix_len, 128);
        // It serializes (the kernel gets what we built).
        let bytes = crate::neighbours::encode(RouteNetlinkMessage::NewAddress(m), 0, 1);
        assert!(bytes.len() > 40);
    }

    #[test]
    fn the_guard_drops_tcp_and_udp_for_each_family_in_one_transaction() {
        let vips: BTreeSet<IpAddr> = ["198.19.255.10", "198.19.255.11", "2001:2:ff::10"]
            .iter()
            .map(|a| a.parse().expect("valid"))
            .collect();
        let s = guard_script(&vips);
        // Replaces any table of an earlier run, atomically (one `nft -f`).
        assert!(s.starts_with("add table inet xdpvs\ndelete table inet xdpvs\n"));
        assert!(s.contains("elements = { 198.19.255.10, 198.19.255.11 }"));
        assert!(s.contains("elements = { 2001:2:ff::10 }"));
        assert!(s.contains("hook prerouting priority raw"));
        assert!(s.contains("iifname \"lo\" accept"));
        assert!(s.contains("meta l4proto { tcp, udp } ip daddr @vips4 drop"));
        assert!(s.contains("meta l4proto { tcp, udp } ip6 daddr @vips6 drop"));
        // An empty set has no elements line (nft refuses `elements = { }`).
        let empty = guard_script(&BTreeSet::new());
        assert!(!empty.contains("elements"));
    }
}
