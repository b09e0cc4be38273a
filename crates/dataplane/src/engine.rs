//! The LVS-DR packet pipeline: `process(frame, tables, now) -> Verdict`.
//!
//! Pure: no syscall, no clock read, no allocation. The frame is rewritten in place; in
//! the forwarding case only the two Ethernet addresses change (destination := the real
//! server's MAC, source := the director's), never an IP or L4 byte.

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{
    EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use xdpvs_arp::{Ignore, Outcome};
use xdpvs_sched::conn::{ConnKey, ConnTable, ConnTableError, DestRef};
use xdpvs_sched::tcp::{flags, State, Timeouts};
use xdpvs_sched::{Protocol, Scheduler, ServiceKey, Time};

use crate::config::{DestStatus, Limits, Services, View};
use crate::stats::{DropReason, WorkerStats};

/// What to do with a frame after [`process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Transmit the rewritten frame (to a real server).
    Tx,
    /// Transmit the frame, now a reply to its sender (ARP).
    Reply,
    /// Not ours: hand the frame, untouched, to the kernel.
    Pass,
    /// Discard the frame, for this reason.
    Drop(DropReason),
}

/// Everything a worker's pipeline reads and writes: the configuration snapshot, the
/// connection table and the counters.
#[derive(Debug)]
pub struct Tables {
    services: Box<Services>,
    conns: ConnTable,
    stats: Arc<WorkerStats>,
}

impl Tables {
    /// Tables for one worker. `seed` randomises the connection hash (pick it at random).
    pub fn new(
        services: Services,
        limits: &Limits,
        timeouts: Timeouts,
        seed: u64,
    ) -> Result<Tables, ConnTableError> {
        Ok(Tables {
            services: Box::new(services),
            conns: ConnTable::with_memory_advice(
                limits.conn_capacity,
                limits.max_dests,
                timeouts,
                seed,
                |v| {
                    crate::sys::advise_huge_pages(v);
                },
            )?,
            stats: Arc::new(WorkerStats::new(limits.max_services, limits.max_dests)),
        })
    }

    /// Swaps in a new configuration snapshot (built with the same [`Limits`]) and returns
    /// the old one, to be dropped off the packet path. Counters of slots that changed
    /// hands restart from zero. Connections are kept.
    pub fn install(&mut self, new: Box<Services>) -> Box<Services> {
        for slot in new.changed_service_slots(&self.services) {
            self.stats.reset_service(slot);
        }
        for slot in new.changed_dest_slots(&self.services) {
            self.stats.reset_dest(slot);
        }
        std::mem::replace(&mut self.services, new)
    }

    /// Runs the incremental expiry: examines at most `budget` connection-table slots.
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        let n = self.conns.expire(now, budget);
        self.stats.expired.add(n as u64);
        n
    }

    /// The configuration in force.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The connection table.
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// The connection table, for maintenance (not the packet path).
    pub fn conns_mut(&mut self) -> &mut ConnTable {
        &mut self.conns
    }

    /// The counters (share the `Arc` with whoever reports them).
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }
}

/// Processes one frame received at `now`: decides its fate and rewrites it in place
/// when it is to be transmitted. Counts the verdict; `Pass` counts as `pass` (the caller
/// hands the frame to the kernel).
#[inline]
pub fn process(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let v = classify(frame, t, now);
    count(&t.stats, frame.len(), v, &t.stats.pass);
    v
}

/// [`process`] for a frame that was steered to the director and cannot go back to the
/// kernel (AF_XDP): `Pass` counts as `unhandled`, since the frame is recycled, not passed.
/// A non-zero `unhandled` means the XDP program steered something the engine does not
/// handle.
#[inline]
pub fn process_steered(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let v = classify(frame, t, now);
    count(&t.stats, frame.len(), v, &t.stats.unhandled);
    v
}

#[inline]
fn count(s: &WorkerStats, len: usize, v: Verdict, pass: &crate::stats::Counter) {
    s.rx.inc();
    s.rx_bytes.add(len as u64);
    match v {
        Verdict::Tx => s.tx.inc(),
        Verdict::Reply => s.reply.inc(),
        Verdict::Pass => pass.inc(),
        Verdict::Drop(r) => s.drops[r as usize].inc(),
    }
}

const ETH_LEN: usize = 14;

/// Starts loading the connection-table slot `frame` will need, without waiting for it.
///
/// A worker with a batch of frames calls this on every frame of the batch, then
/// [`process`] on each: the table's cache misses then overlap instead of queueing. It
/// reads the 5-tuple at fixed offsets (IPv4 without options) and validates nothing: a
/// wrong guess costs one useless prefetch, never a wrong verdict.
#[inline]
pub fn prefetch(frame: &[u8], t: &Tables) {
    let Some(h) = frame.get(..ETH_LEN + 24) else {
        return;
    };
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 {
        return;
    }
    let Some(proto) = Protocol::from_ip_number(h[23]) else {
        return;
    };
    let ip = |o: usize| Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]);
    let port = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
    let key = ConnKey {
        proto,
        client: ip(26),
        cport: port(34),
        vip: ip(30),
        vport: port(36),
    };
    crate::sys::prefetch(t.conns.home(&key));
}

#[inline]
fn classify(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let ether_type = match Ethernet2HeaderSlice::from_slice(frame) {
        Ok(eth) => eth.ether_type(),
        Err(_) => return Verdict::Drop(DropReason::EthTruncated),
    };
    match ether_type {
        EtherType::IPV4 => ipv4(frame, t, now),
        EtherType::ARP => arp(frame, &t.services),
        // IPv6, VLAN-tagged and everything else belong to the kernel.
        _ => Verdict::Pass,
    }
}

fn arp(frame: &mut [u8], services: &Services) -> Verdict {
    match xdpvs_arp::reply_in_place(frame, |ip| services.is_vip(ip), services.director_mac()) {
        Outcome::Replied(_) => Verdict::Reply,
        Outcome::Ignored(Ignore::Truncated) => Verdict::Drop(DropReason::ArpTruncated),
        // Replies, requests for other addresses, other hardware types: the kernel's.
        Outcome::NotForUs | Outcome::Ignored(_) => Verdict::Pass,
    }
}

/// The parts of an inbound packet the pipeline needs.
struct Flow {
    key: ConnKey,
    tcp_flags: Option<u8>,
}

#[inline]
fn parse_ipv4(frame: &[u8], services: &Services) -> Result<Flow, Verdict> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[ETH_LEN..])
        .map_err(|_| Verdict::Drop(DropReason::Ipv4Header))?;
    let vip = ip.destination_addr();
    if !services.is_vip(vip) {
        return Err(Verdict::Pass);
    }
    // ICMP and other protocols to a VIP are the kernel's (it answers ping if it owns the VIP).
    let proto = Protocol::from_ip_number(ip.protocol().0).ok_or(Verdict::Pass)?;
    let header_len = ip.slice().len();
    let total_len = usize::from(ip.total_len());
    if total_len < header_len || ETH_LEN + total_len > frame.len() {
        return Err(Verdict::Drop(DropReason::Ipv4Length));
    }
    // Later fragments carry no ports, so they cannot be matched to a flow: drop them all
    // (the first one too, since its followers would be lost anyway).
    if ip.more_fragments() || ip.fragments_offset().value() != 0 {
        return Err(Verdict::Drop(DropReason::Fragment));
    }
    let l4 = &frame[ETH_LEN + header_len..ETH_LEN + total_len];
    let bad_l4 = Verdict::Drop(DropReason::L4Header);
    let (cport, vport, tcp_flags) = match proto {
        Protocol::Tcp => {
            let h = TcpHeaderSlice::from_slice(l4).map_err(|_| bad_l4)?;
            (h.source_port(), h.destination_port(), Some(l4[13]))
        }
        Protocol::Udp => {
            let h = UdpHeaderSlice::from_slice(l4).map_err(|_| bad_l4)?;
            (h.source_port(), h.destination_port(), None)
        }
    };
    Ok(Flow {
        key: ConnKey {
            proto,
            client: ip.source_addr(),
            cport,
            vip,
            vport,
        },
        tcp_flags,
    })
}

#[inline]
fn ipv4(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let flow = match parse_ipv4(frame, &t.services) {
        Ok(f) => f,
        Err(v) => return v,
    };
    let key = &flow.key;
    let skey = ServiceKey {
        proto: key.proto,
        vip: key.vip,
        port: key.vport,
    };
    let Some(si) = t.services.find(&skey) else {
        return Verdict::Pass; // a VIP, but not a service port: the kernel's
    };
    let idx = match t.conns.lookup(key, now) {
        Some(i) => i,
        None => {
            if let Some(f) = flow.tcp_flags {
                let may_open = f & flags::SYN != 0 || t.services.options().sloppy_tcp;
                if !may_open || f & flags::RST != 0 {
                    return Verdict::Drop(DropReason::NoConnection);
                }
            }
            match schedule(t, si, key, now) {
                Ok(i) => i,
                Err(r) => return Verdict::Drop(r),
            }
        }
    };
    let dest = t.conns.entry(idx).dest();
    let mac = match t.services.dest(dest) {
        DestStatus::Up { mac, .. } => mac,
        DestStatus::Removed => {
            // Its real server is gone: forget the connection so that the client's next
            // SYN is scheduled afresh (IPVS with expire_nodest_conn).
            t.conns.remove(idx, now);
            return Verdict::Drop(DropReason::DestRemoved);
        }
        DestStatus::Unresolved => return Verdict::Drop(DropReason::DestUnresolved),
    };
    let len = frame.len() as u64;
    t.conns.seen(idx, now, frame.len(), flow.tcp_flags);
    let director = t.services.director_mac();
    frame[0..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&director);
    let svc_slot = t.services.services[si].slot;
    if let Some(c) = t.stats.services.get(svc_slot as usize) {
        c.packets.inc();
        c.bytes.add(len);
    }
    if let Some(c) = t.stats.dests.get(dest.slot as usize) {
        c.packets.inc();
        c.bytes.add(len);
    }
    Verdict::Tx
}

/// Picks a real server for a new connection (honouring persistence) and records it.
fn schedule(t: &mut Tables, si: usize, key: &ConnKey, now: Time) -> Result<usize, DropReason> {
    let state = match key.proto {
        Protocol::Tcp => State::None,
        Protocol::Udp => State::Udp,
    };
    let opts = t.services.options();
    let svc = &t.services.services[si];
    let (svc_slot, persistence) = (svc.slot, svc.persistence);

    let mut template = None;
    let dest = match persistence {
        Some(p) => {
            let found = t.conns.lookup_template(key, p.prefix_len, now);
            let usable = found.filter(|&ti| match t.services.dest(t.conns.entry(ti).dest()) {
                DestStatus::Up { weight, .. } => weight > 0 || !opts.expire_quiescent_template,
                _ => false,
            });
            match (found, usable) {
                (_, Some(ti)) => {
                    template = Some(ti);
                    t.conns.entry(ti).dest()
                }
                (stale, None) => {
                    if let Some(ti) = stale {
                        t.conns.remove(ti, now);
                    }
                    let d = pick(t, si, key.client)?;
                    let ti = t
                        .conns
                        .insert_template(key, p.prefix_len, d, p.timeout, now)
                        .map_err(|_| DropReason::TableFull)?;
                    template = Some(ti);
                    d
                }
            }
        }
        None => pick(t, si, key.client)?,
    };
    let idx = t
        .conns
        .insert(key, dest, state, now, template)
        .map_err(|_| DropReason::TableFull)?;
    if let Some(c) = t.stats.services.get(svc_slot as usize) {
        c.conns.inc();
    }
    if let Some(c) = t.stats.dests.get(dest.slot as usize) {
        c.conns.inc();
    }
    Ok(idx)
}

#[inline]
fn pick(t: &mut Tables, si: usize, client: Ipv4Addr) -> Result<DestRef, DropReason> {
    let svc = &mut t.services.services[si];
    let view = View {
        reals: &svc.reals,
        loads: Some(t.conns.loads()),
    };
    let i = svc
        .sched
        .pick(&view, client)
        .ok_or(DropReason::NoDestination)?;
    Ok(svc.reals[i].dest)
}
