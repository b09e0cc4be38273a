//! The LVS-DR packet pipeline: `process(frame, tables, now) -> Verdict`.
//!
//! Pure: no syscall, no clock read, no allocation. The frame is rewritten in place; in
//! the forwarding case only the two Ethernet addresses change (destination := the real
//! server's MAC, source := the director's), never an IP or L4 byte.
//!
//! IPv4 and IPv6 take the same path once parsed: the connection logic is generic over
//! the address family ([`Fam`]), each family with its own connection and fragment
//! tables (one set of real-server loads per worker).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::{
    EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use xdpvs_arp::{ndp, Ignore, Outcome};
use xdpvs_sched::conn::{
    tick, ConnKey, ConnTable, ConnTableError, DestRef, Family, Listed, Loads, Start,
};
use xdpvs_sched::sync::{self, SyncConn};
use xdpvs_sched::tcp::{flags, Dir, State, Timeouts};
use xdpvs_sched::{Pick, Protocol, SchedKind, Scheduler, Time};

use crate::checksum::{checksum, sum_words};
use crate::config::{DestStatus, Fwd, Limits, NatSource, Services, View};
use crate::frag::{FragDest, FragId, FragKey, FragTable, FRAG_SLOTS};
use crate::icmp::{self, EchoLimit};
use crate::ipv6::{self, Error6, FragKey6, Inbound6};
use crate::method::{self, tunnel, At};
use crate::offload::{FastFlow, OffloadOut, OffloadRec, Touch};
use crate::packet::Packet;
use crate::reuse;
use crate::stats::{DropReason, WorkerStats};
use crate::sys::TableMemory;

mod explain;
mod fast;
pub use explain::{Explained, RealNow, Why};

/// What to do with a frame after [`process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Transmit the rewritten frame to a real server (two-armed: by the real servers'
    /// interface).
    Tx,
    /// Transmit the rewritten frame to a client: a NAT real server's reply, or its ICMP
    /// error about a client's packet (two-armed: by the clients' interface).
    ToClient,
    /// Transmit the frame, now a reply to its sender (ARP).
    Reply,
    /// Not ours: hand the frame, untouched, to the kernel.
    Pass,
    /// Discard the frame, for this reason.
    Drop(DropReason),
    /// Hand the frame, untouched, to worker `n`: on several queues every packet of a NAT
    /// connection is handled by the one worker its client's address and port choose
    /// ([`Tables::set_shard`]), which holds the connection.
    Handoff(u16),
}

/// A worker's connection table of one family, in memory the director maps itself.
pub type Conns<A> = ConnTable<A, TableMemory<A>>;

/// Everything a worker's pipeline reads and writes: the configuration snapshot, the
/// connection table and the counters.
#[derive(Debug)]
pub struct Tables {
    services: Box<Services>,
    conns: Conns<Ipv4Addr>,
    conns6: Conns<Ipv6Addr>,
    /// The real servers' loads, kept by both connection tables.
    loads: Arc<Loads>,
    frags: FragTable,
    frags6: FragTable<FragKey6>,
    echo: EchoLimit,
    /// When a new connection last found the table full (the fallback's window).
    full_at: Option<Time>,
    stats: Arc<WorkerStats>,
    /// This worker's number and how many there are (NAT connections are placed by their
    /// client across them).
    shard: (u16, u16),
    /// Connection synchronisation (IPVS's sync daemon, master role): the records of new
    /// and changed connections since the worker last took them; `None` when off.
    sync_out: Option<SyncOut>,
    /// The records' buffer while the master role is stopped (kept: no allocation when
    /// it starts again).
    sync_parked: Option<SyncOut>,
    /// Connection synchronisation, backup role: a synchronised TCP connection is
    /// installed on the worker its client chooses ([`owner`]); a segment of one that
    /// misses here is handed to it.
    sync_in: bool,
    /// `run --offload`: what the XDP program may forward alone, since the worker last
    /// took the records; `None` when off.
    offload: Option<OffloadOut>,
    /// Whether established direct-routing flows take the short path ([`fast`]).
    fast: bool,
}

/// Records for the sync sender, at most `cap` between two drains (no allocation on the
/// packet path: the buffer is reserved once).
#[derive(Debug)]
struct SyncOut {
    recs: Vec<SyncConn>,
    cap: usize,
}

impl Tables {
    /// Tables for one worker. `seed` randomises the connection hash (pick it at random).
    pub fn new(
        services: Services,
        limits: &Limits,
        timeouts: Timeouts,
        seed: u64,
    ) -> Result<Tables, ConnTableError> {
        // The IPv4 table resident now (in reserved huge pages where the host has
        // enough), so that it never faults on the packet path; the IPv6 table in lazily
        // zeroed memory, so that it costs no memory until IPv6 traffic comes (its pages
        // then fault in once each, as they are first written).
        let conns = ConnTable::with_memory(
            limits.conn_capacity,
            limits.max_dests,
            timeouts,
            seed,
            |n| TableMemory::new(n, true),
        )?;
        let loads = Arc::clone(conns.loads());
        let mut conns6 = ConnTable::with_memory(
            limits.conn_capacity,
            0,
            timeouts,
            seed.rotate_left(29),
            |n| TableMemory::new(n, false),
        )?;
        conns6.share_loads(Arc::clone(&loads));
        Ok(Tables {
            services: Box::new(services),
            conns,
            conns6,
            loads,
            frags: FragTable::new(FRAG_SLOTS, seed.rotate_left(17)),
            frags6: FragTable::new(FRAG_SLOTS, seed.rotate_left(41)),
            echo: EchoLimit::default(),
            full_at: None,
            stats: Arc::new(WorkerStats::new(limits.max_services, limits.max_dests)),
            shard: (0, 1),
            sync_out: None,
            sync_parked: None,
            sync_in: false,
            offload: None,
            fast: true,
        })
    }

    /// Whether established direct-routing flows take the short path (on by default; it
    /// changes no verdict, byte or counter, only the cost: tests compare both ways).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    /// Takes synchronised connections from now on: with several workers, a TCP segment
    /// without an entry here, of a client another worker owns, is handed to that worker
    /// (where a synchronised connection was installed).
    pub fn accept_synced(&mut self) {
        self.sync_in = true;
    }

    /// Which roles of the sync daemon run: records are kept only while the master role
    /// runs (between [`Tables::enable_sync`] and now), synchronised connections taken
    /// only while the backup role runs. Allocates nothing.
    pub fn set_sync_roles(&mut self, master: bool, backup: bool) {
        self.sync_in = backup;
        if master {
            if self.sync_out.is_none() {
                self.sync_out = self.sync_parked.take();
            }
        } else if let Some(mut s) = self.sync_out.take() {
            s.recs.clear();
            self.sync_parked = Some(s);
        }
    }

    /// Records, from now on, this worker's new and changed connections for the sync
    /// sender: at most `cap` between two [`Tables::drain_sync`] (more are counted lost).
    pub fn enable_sync(&mut self, cap: usize) {
        self.sync_out = Some(SyncOut {
            recs: Vec::with_capacity(cap),
            cap,
        });
    }

    /// Hands every record since the last call to `each` (which says whether it took
    /// it: counted sent or lost), and forgets them.
    pub fn drain_sync(&mut self, mut each: impl FnMut(&SyncConn) -> bool) {
        if let Some(s) = &mut self.sync_out {
            for r in &s.recs {
                if each(r) {
                    self.stats.sync_sent.inc();
                } else {
                    self.stats.sync_lost.inc();
                }
            }
            s.recs.clear();
        }
    }

    /// Records, from now on, what the XDP program may forward alone (`run --offload`):
    /// at most `cap` records between two [`Tables::drain_offload`] (more are counted
    /// lost).
    pub fn enable_offload(&mut self, cap: usize) {
        self.offload = Some(OffloadOut::new(cap));
    }

    /// Hands each offload record to `each` (which says whether it took it), oldest
    /// first, and forgets them.
    pub fn drain_offload(&mut self, mut each: impl FnMut(&OffloadRec) -> bool) {
        if let Some(o) = &mut self.offload {
            for r in o.recs.drain(..) {
                if !each(&r) {
                    o.lost += 1;
                }
            }
            self.stats.offload_lost.set(o.lost);
        }
    }

    /// Starts loading the slot [`Tables::touch`] of `t` will read, as [`prefetch`] does
    /// a frame's: then [`prefetch_landing`] of what it returns.
    #[inline]
    pub fn prefetch_touch(&self, t: &Touch) -> Probe {
        Probe::start4(&t.key, self)
    }

    /// Traffic the XDP program forwarded on a flow: its connection is seen at `t.at`.
    /// A flow this worker no longer holds goes back to the workers.
    pub fn touch(&mut self, t: &Touch) {
        if !self.conns.touch(&t.key, t.at) {
            if let Some(o) = &mut self.offload {
                o.push(OffloadRec::Remove(t.key));
            }
        }
    }

    /// Installs a connection (or persistence template) another director synchronised:
    /// to the same real server, in the state it gave, if this director has the service
    /// and the real server; one already here is left as it is. Whether it was.
    pub fn install_synced(&mut self, c: &SyncConn, now: Time) -> bool {
        let done = match (c.client.0, c.vip.0) {
            (IpAddr::V4(client), IpAddr::V4(vip)) => install::<Ipv4Addr>(self, c, client, vip, now),
            (IpAddr::V6(client), IpAddr::V6(vip)) => install::<Ipv6Addr>(self, c, client, vip, now),
            _ => false,
        };
        if done {
            self.stats.sync_installed.inc();
        } else {
            self.stats.sync_refused.inc();
        }
        done
    }

    /// Makes these the tables of worker `me` of `of` (at most 65,535): every packet of a
    /// NAT service's connection (both ways, and ICMP errors about it) whose client's
    /// address and port choose another worker is answered [`Verdict::Handoff`], so that
    /// the one worker holding the connection sees both directions whatever queue the
    /// NIC put them on. Before any traffic.
    pub fn set_shard(&mut self, me: usize, of: usize) {
        let of = of.clamp(1, usize::from(u16::MAX)) as u16;
        self.shard = ((me as u16).min(of - 1), of);
    }

    /// The worker that handles NAT connections of `client`:`port`, if not this one.
    #[inline]
    fn elsewhere(&self, client: IpAddr, port: u16) -> Option<u16> {
        let (me, of) = self.shard;
        if of <= 1 {
            return None;
        }
        let w = owner(client, port, of);
        (w != me).then_some(w)
    }

    /// [`Tables::elsewhere`] for a connection of service `si`: only a NAT service's
    /// connections are placed by their client (others stay where RSS puts them).
    #[inline(always)]
    fn elsewhere_in(&self, si: usize, client: IpAddr, port: u16) -> Option<u16> {
        if self.services.services[si].masq {
            self.elsewhere(client, port)
        } else {
            None
        }
    }

    /// Swaps in a new configuration snapshot (built with the same [`Limits`]) and returns
    /// the old one, to be dropped off the packet path. Counters of slots that changed
    /// hands restart from zero. Connections are kept.
    pub fn install(&mut self, new: Box<Services>) -> Box<Services> {
        self.stats.reset_changed(&new, &self.services);
        if let Some(o) = &mut self.offload {
            for slot in new.offload_gone(&self.services) {
                o.push(OffloadRec::Dest(slot));
            }
        }
        std::mem::replace(&mut self.services, new)
    }

    /// Runs the incremental expiry: examines at most `budget` slots of each family's
    /// connection table that holds entries (an empty table is not swept: sweeping it
    /// would only stream its memory through the cache).
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        let mut n = 0;
        if !self.conns.is_empty() {
            let offload = &mut self.offload;
            n += self.conns.expire_with(now, budget, |e| {
                // Only an ESTABLISHED connection or a UDP flow is ever in the XDP map.
                if let Some(o) = offload.as_mut() {
                    let k = e.key();
                    if !e.is_template()
                        && (k.proto == Protocol::Udp || e.state() == State::Established)
                    {
                        o.push(OffloadRec::Remove(k));
                    }
                }
            });
        }
        if !self.conns6.is_empty() {
            n += self.conns6.expire(now, budget);
        }
        self.stats.expired.add(n as u64);
        n
    }

    /// The configuration in force.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The IPv4 connection table (its loads are the worker's, both families).
    pub fn conns(&self) -> &Conns<Ipv4Addr> {
        &self.conns
    }

    /// The IPv6 connection table.
    pub fn conns6(&self) -> &Conns<Ipv6Addr> {
        &self.conns6
    }

    /// Entries in use in both tables.
    pub fn conn_count(&self) -> usize {
        self.conns.len() + self.conns6.len()
    }

    /// Half-open connections evicted from both tables.
    pub fn evictions(&self) -> u64 {
        self.conns.evictions() + self.conns6.evictions()
    }

    /// Slots of the larger table (a sweep covers both in this many steps).
    pub fn slot_count(&self) -> usize {
        self.conns.slot_count().max(self.conns6.slot_count())
    }

    /// Changes the timeouts of both tables.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.conns.set_timeouts(t);
        self.conns6.set_timeouts(t);
    }

    /// Lists at most `max_slots` slots from `cursor` of both tables (the IPv4 table's
    /// slots first, then the IPv6 table's), as [`ConnTable::list`] does for one.
    pub fn list(
        &self,
        cursor: usize,
        max_slots: usize,
        now: Time,
        out: &mut Vec<Listed>,
    ) -> Option<usize> {
        let n4 = self.conns.slot_count();
        if cursor < n4 {
            return Some(self.conns.list(cursor, max_slots, now, out).unwrap_or(n4));
        }
        self.conns6
            .list(cursor - n4, max_slots, now, out)
            .map(|c| c + n4)
    }

    /// The counters (share the `Arc` with whoever reports them).
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }
}

/// Processes one frame received at `now`: decides its fate and rewrites it in place
/// when it is to be transmitted. Counts the verdict; `Pass` counts as `pass` (the caller
/// hands the frame to the kernel).
///
/// The frame cannot grow: a packet to a tunnel real server is dropped (`no_headroom`).
/// [`process_packet`] takes a frame with room behind it.
#[inline]
pub fn process(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let mut len = frame.len();
    process_packet(&mut Packet::new(frame, &mut len), t, now)
}

/// [`process`] for a frame in a buffer with room behind it, which a tunnel's headers
/// may take (and an ICMP error may leave): its length is the packet's afterwards.
#[inline]
pub fn process_packet(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    let len = frame.len();
    let v = classify(frame, t, now);
    count(&t.stats, len, v, &t.stats.pass);
    v
}

/// [`process`] for a frame that was steered to the director and cannot go back to the
/// kernel (AF_XDP): `Pass` counts as `unhandled`, since the frame is recycled, not passed.
/// A non-zero `unhandled` means the XDP program steered something the engine does not
/// handle.
#[inline(always)]
pub fn process_steered(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    let len = frame.len();
    let v = classify(frame, t, now);
    count(&t.stats, len, v, &t.stats.unhandled);
    v
}

#[inline]
fn count(s: &WorkerStats, len: usize, v: Verdict, pass: &crate::stats::Counter) {
    s.rx.inc();
    s.rx_bytes.add(len as u64);
    match v {
        Verdict::Tx | Verdict::ToClient => s.tx.inc(),
        Verdict::Reply => s.reply.inc(),
        Verdict::Pass => pass.inc(),
        Verdict::Drop(r) => s.drops[r as usize].inc(),
        Verdict::Handoff(_) => s.handed_off.inc(),
    }
}

const ETH_LEN: usize = 14;

/// The worker (of `of`) a NAT connection of `client`:`port` belongs to: the same for its
/// packets both ways (the client is their source one way, their destination the other).
#[inline]
pub fn owner(client: IpAddr, port: u16, of: u16) -> u16 {
    let a = match client {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => {
            let x = u128::from(v);
            (x as u64) ^ (x >> 64) as u64
        }
    };
    // A product's high half depends on every bit below it: the port in the low bits.
    let h = (a.rotate_left(16) ^ u64::from(port)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 32) % u64::from(of)) as u16
}

/// Hints the CPU to bring a received frame's headers (its first 64 bytes) into the cache.
/// A worker calls it on every frame of a batch before [`prefetch`] reads any: a frame
/// the kernel copied into the UMEM a while ago is often out of the cache and its page
/// out of the TLB, and these misses then overlap instead of stalling one by one.
#[inline]
pub fn prefetch_frame(frame: &[u8]) {
    if let Some(b) = frame.first() {
        crate::sys::prefetch(b);
    }
}

/// Starts loading the tags of the connection-table slots `frame`'s lookup will read,
/// without waiting for them; [`prefetch_landing`] of what it returns then loads the
/// entry.
///
/// A worker with a batch of frames calls this on every frame of the batch, then
/// [`prefetch_landing`] on every one, then [`process`] on each: the table's cache misses
/// then overlap instead of queueing. It reads the 5-tuple at fixed offsets (IPv4 without
/// options) and validates nothing: a wrong guess costs a useless prefetch, never a wrong
/// verdict.
#[inline]
pub fn prefetch(frame: &[u8], t: &Tables) -> Probe {
    if frame.get(12..14) == Some(&[0x86, 0xdd]) {
        return prefetch6(frame, t);
    }
    let Some(h) = frame.get(..ETH_LEN + 24) else {
        return Probe::None;
    };
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 {
        return Probe::None;
    }
    let Some(proto) = Protocol::from_ip_number(h[23]) else {
        return Probe::None;
    };
    let key = fixed_key4(h, proto);
    if t.services.has_nat() && !t.services.is_vip(key.vip) {
        return prefetch_reply(&key, t);
    }
    Probe::start4(&key, t)
}

/// Where a frame's connection lookup starts, as [`prefetch`] found it: what
/// [`prefetch_landing`] reads once the tags have come.
#[derive(Debug, Clone, Copy, Default)]
pub enum Probe {
    /// No lookup to prepare (not a frame whose 5-tuple [`prefetch`] reads).
    #[default]
    None,
    /// In the IPv4 table.
    V4(Start),
    /// In the IPv6 table.
    V6(Start),
}

impl Probe {
    #[inline(always)]
    fn start4(key: &ConnKey, t: &Tables) -> Probe {
        Probe::V4(start_in(&t.conns, key))
    }
}

/// The first prefetch step in one table: where `key`'s lookup starts, its tag's line
/// asked for.
#[inline(always)]
fn start_in<A: Family>(conns: &Conns<A>, key: &ConnKey<A>) -> Start {
    let s = conns.start(key);
    crate::sys::prefetch(conns.start_tag(s));
    s
}

/// The second step of [`prefetch`], once the tags it asked for have come (the worker
/// calls it on every frame of the batch after [`prefetch`] on every one): reads the
/// tags from the home slot on and starts loading the entry the lookup will end on: the
/// connection's, or the empty slot a new one will take.
#[inline]
pub fn prefetch_landing(p: &Probe, t: &Tables) {
    match *p {
        Probe::None => {}
        Probe::V4(s) => crate::sys::prefetch(t.conns.landing(s)),
        Probe::V6(s) => crate::sys::prefetch(t.conns6.landing(s)),
    }
}

/// The 5-tuple of an IPv4 frame whose header has no options, read at fixed offsets
/// (`h` holds at least the frame's first 38 bytes: Ethernet, IPv4 and the ports).
#[inline(always)]
fn fixed_key4(h: &[u8], proto: Protocol) -> ConnKey<Ipv4Addr> {
    let ip = |o: usize| Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]);
    let port = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
    ConnKey {
        proto,
        client: ip(26),
        cport: port(34),
        vip: ip(30),
        vport: port(36),
    }
}

/// [`prefetch`] of what may be a NAT reply (`key` read as a packet to a VIP reads it):
/// the slot of its connection, if its source is a NAT real server's.
#[inline(never)]
fn prefetch_reply(key: &ConnKey, t: &Tables) -> Probe {
    let src = NatSource {
        proto: key.proto,
        addr: key.client.into(),
        port: key.cport,
    };
    if let Some(&(IpAddr::V4(vip), vport)) = t.services.nat_services(&src).first() {
        let conn = ConnKey {
            proto: key.proto,
            client: key.vip,
            cport: key.vport,
            vip,
            vport,
        };
        return Probe::start4(&conn, t);
    }
    Probe::None
}

/// [`prefetch`] of an IPv6 frame whose transport header follows the IPv6 header.
#[inline]
fn prefetch6(frame: &[u8], t: &Tables) -> Probe {
    let Some(h) = frame.get(..ETH_LEN + 44) else {
        return Probe::None;
    };
    let Some(proto) = Protocol::from_ip_number(h[20]) else {
        return Probe::None;
    };
    let ip = |o: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[o..o + 16]);
        Ipv6Addr::from(b)
    };
    let port = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
    let key = ConnKey {
        proto,
        client: ip(22),
        cport: port(54),
        vip: ip(38),
        vport: port(56),
    };
    Probe::V6(start_in(&t.conns6, &key))
}

#[inline(always)]
fn classify(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    if t.fast {
        if let Some(v) = fast::established4(frame, t, now) {
            return v;
        }
    }
    general(frame, t, now)
}

/// Every frame the short path does not take (kept out of line: the short path's callers
/// do not pay for its registers).
#[inline(never)]
fn general(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    let ether_type = match Ethernet2HeaderSlice::from_slice(frame) {
        Ok(eth) => eth.ether_type(),
        Err(_) => return Verdict::Drop(DropReason::EthTruncated),
    };
    match ether_type {
        EtherType::IPV4 => ipv4(frame, t, now),
        EtherType::ARP => arp(frame, &t.services, &t.stats),
        EtherType::IPV6 => ipv6(frame, t, now),
        // VLAN-tagged and everything else belong to the kernel.
        _ => Verdict::Pass,
    }
}

fn arp(frame: &mut [u8], services: &Services, stats: &WorkerStats) -> Verdict {
    // Another host saying a VIP is at its MAC: a conflict, never passed on or answered;
    // the director's own word coming back: nothing new.
    if let Ok(a) = xdpvs_arp::parse(frame) {
        if services.is_vip(a.sender_ip) && a.sender_mac == services.director_mac() {
            return Verdict::Drop(DropReason::ArpOwn);
        }
        if services.is_vip(a.sender_ip) {
            stats
                .conflicts
                .record(IpAddr::V4(a.sender_ip), a.sender_mac);
            return Verdict::Drop(DropReason::VipConflict);
        }
    }
    if services.options().vips_routed {
        return match xdpvs_arp::parse(frame) {
            Ok(a) if a.is_request() && services.is_vip(a.target_ip) => {
                Verdict::Drop(DropReason::VipRouted)
            }
            _ => Verdict::Pass,
        };
    }
    match xdpvs_arp::reply_in_place(frame, |ip| services.is_vip(ip), services.director_mac()) {
        Outcome::Replied(_) => Verdict::Reply,
        Outcome::Ignored(Ignore::Truncated) => Verdict::Drop(DropReason::ArpTruncated),
        // Replies, requests for other addresses, other hardware types: the kernel's.
        Outcome::NotForUs | Outcome::Ignored(_) => Verdict::Pass,
    }
}

/// The parts of an inbound packet the pipeline needs.
struct Flow<A: Fam> {
    key: ConnKey<A>,
    tcp_flags: Option<u8>,
    /// The IP packet's length (IPVS counts bytes at the IP layer).
    ip_len: usize,
    /// Where the L4 header starts in the frame.
    l4: usize,
    /// The datagram's identity when this is its first fragment.
    first_fragment: Option<A::Frag>,
}

/// What the pipeline needs of an address family: its tables in [`Tables`], its service
/// lookup and its reset's IP header.
trait Fam: Family {
    /// The identity of a fragmented datagram.
    type Frag: FragId;
    /// IPv6.
    const V6: bool;
    /// The address, if it is of this family.
    fn of(ip: IpAddr) -> Option<Self>;
    fn conns(t: &Tables) -> &Conns<Self>;
    fn conns_mut(t: &mut Tables) -> &mut Conns<Self>;
    /// The configuration and this family's connection table, borrowed together.
    fn split(t: &mut Tables) -> (&Services, &mut Conns<Self>);
    fn frags(t: &mut Tables) -> &mut FragTable<Self::Frag>;
    fn find(s: &Services, proto: Protocol, vip: Self, port: u16) -> Option<usize>;
    /// Writes the IP header of a reset from `vip` to `client` at the start of `ip` and
    /// returns its length and the TCP checksum's pseudo-header sum.
    fn reset_header(ip: &mut [u8], vip: Self, client: Self) -> (usize, u32);
}

impl Fam for Ipv4Addr {
    type Frag = FragKey;
    const V6: bool = false;
    #[inline]
    fn of(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    #[inline]
    fn conns(t: &Tables) -> &Conns<Self> {
        &t.conns
    }
    #[inline]
    fn conns_mut(t: &mut Tables) -> &mut Conns<Self> {
        &mut t.conns
    }
    #[inline]
    fn split(t: &mut Tables) -> (&Services, &mut Conns<Self>) {
        (&t.services, &mut t.conns)
    }
    #[inline]
    fn frags(t: &mut Tables) -> &mut FragTable<FragKey> {
        &mut t.frags
    }
    #[inline]
    fn find(s: &Services, proto: Protocol, vip: Self, port: u16) -> Option<usize> {
        s.find4(proto, vip, port)
    }
    fn reset_header(ip: &mut [u8], vip: Self, client: Self) -> (usize, u32) {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&vip.octets());
        ip[16..20].copy_from_slice(&client.octets());
        let c = checksum(0, &ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        // Pseudo-header: source, destination, protocol, TCP length.
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&vip.octets());
        pseudo[4..8].copy_from_slice(&client.octets());
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
        (20, sum_words(0, &pseudo))
    }
}

impl Fam for Ipv6Addr {
    type Frag = FragKey6;
    const V6: bool = true;
    #[inline]
    fn of(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    #[inline]
    fn conns(t: &Tables) -> &Conns<Self> {
        &t.conns6
    }
    #[inline]
    fn conns_mut(t: &mut Tables) -> &mut Conns<Self> {
        &mut t.conns6
    }
    #[inline]
    fn split(t: &mut Tables) -> (&Services, &mut Conns<Self>) {
        (&t.services, &mut t.conns6)
    }
    #[inline]
    fn frags(t: &mut Tables) -> &mut FragTable<FragKey6> {
        &mut t.frags6
    }
    #[inline]
    fn find(s: &Services, proto: Protocol, vip: Self, port: u16) -> Option<usize> {
        s.find6(proto, vip, port)
    }
    fn reset_header(ip: &mut [u8], vip: Self, client: Self) -> (usize, u32) {
        (40, ipv6::write_reset_header(ip, vip, client))
    }
}

/// An IPv4 packet to a VIP that the director handles.
enum Inbound {
    /// TCP or UDP with its ports (a whole datagram or its first fragment).
    Flow(Flow<Ipv4Addr>),
    /// A later fragment: no ports, only the datagram's identity.
    Later { key: FragKey, ip_len: usize },
    /// ICMP: the header is `hlen` bytes, the packet `total`.
    Icmp { hlen: usize, total: usize },
}

#[inline]
fn parse_ipv4(frame: &[u8], services: &Services) -> Result<Inbound, Verdict> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[ETH_LEN..])
        .map_err(|_| Verdict::Drop(DropReason::Ipv4Header))?;
    let vip = ip.destination_addr();
    if !services.is_vip(vip) {
        return Err(Verdict::Pass);
    }
    let number = ip.protocol().0;
    let proto = Protocol::from_ip_number(number);
    // Protocols other than TCP, UDP and ICMP to a VIP are the kernel's.
    if proto.is_none() && number != ICMP {
        return Err(Verdict::Pass);
    }
    let header_len = ip.slice().len();
    let total_len = usize::from(ip.total_len());
    if total_len < header_len || ETH_LEN + total_len > frame.len() {
        return Err(Verdict::Drop(DropReason::Ipv4Length));
    }
    let offset = ip.fragments_offset().value();
    let fragment = ip.more_fragments() || offset != 0;
    let Some(proto) = proto else {
        if fragment {
            return Err(Verdict::Drop(DropReason::Fragment));
        }
        return Ok(Inbound::Icmp {
            hlen: header_len,
            total: total_len,
        });
    };
    let frag_key = FragKey {
        src: u32::from(ip.source_addr()),
        dst: u32::from(vip),
        id: ip.identification(),
        proto: number,
    };
    if offset != 0 {
        return Ok(Inbound::Later {
            key: frag_key,
            ip_len: total_len,
        });
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
    Ok(Inbound::Flow(Flow {
        key: ConnKey {
            proto,
            client: ip.source_addr(),
            cport,
            vip,
            vport,
        },
        tcp_flags,
        ip_len: total_len,
        l4: ETH_LEN + header_len,
        first_fragment: fragment.then_some(frag_key),
    }))
}

/// IP protocol number of ICMP.
const ICMP: u8 = 1;

#[inline]
fn ipv4(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    let flow = match parse_ipv4(frame, &t.services) {
        Ok(Inbound::Flow(f)) => f,
        Ok(Inbound::Later { key, ip_len }) => {
            return later_fragment::<Ipv4Addr>(frame, t, &key, ip_len, now)
        }
        Ok(Inbound::Icmp { hlen, total }) => return icmp_to_vip(frame, t, hlen, total, now),
        Err(Verdict::Pass) if t.services.has_nat() => return reply4(frame, t, now),
        Err(v) => return v,
    };
    deliver(frame, t, &flow, now)
}

/// An IPv4 packet to no VIP while some real server is NAT's: its reply, if it is one
/// (a whole packet or a first fragment; later fragments of replies are the kernel's).
#[inline(never)]
fn reply4(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    let Ok(ip) = Ipv4HeaderSlice::from_slice(&frame[ETH_LEN..]) else {
        return Verdict::Pass;
    };
    if ip.protocol().0 == ICMP {
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        let (hlen, total) = (ip.slice().len(), usize::from(ip.total_len()));
        let whole = !ip.more_fragments() && ip.fragments_offset().value() == 0;
        if !whole || !t.services.is_nat_addr(src.into()) {
            return Verdict::Pass;
        }
        let Some(msg) = frame.get(ETH_LEN + hlen..ETH_LEN + total) else {
            return Verdict::Drop(DropReason::Ipv4Length);
        };
        if msg.len() < 8 || icmp::kind(msg[0], msg[1]) != icmp::Kind::Error {
            return Verdict::Pass;
        }
        let Some(quoted) = icmp::quoted_connection(msg) else {
            return Verdict::Drop(DropReason::IcmpNoConnection);
        };
        return nat_icmp_error(frame, t, &quoted, dst, ETH_LEN + hlen, now);
    }
    let Some(proto) = Protocol::from_ip_number(ip.protocol().0) else {
        return Verdict::Pass;
    };
    let (hlen, total) = (ip.slice().len(), usize::from(ip.total_len()));
    let l4 = ETH_LEN + hlen;
    if ip.fragments_offset().value() != 0 || frame.len() < l4 + 4 {
        return Verdict::Pass;
    }
    let src = NatSource {
        proto,
        addr: ip.source_addr().into(),
        port: u16::from_be_bytes([frame[l4], frame[l4 + 1]]),
    };
    if t.services.nat_services(&src).is_empty() || t.services.is_own(ip.destination_addr().into()) {
        return Verdict::Pass;
    }
    // From a NAT real server's port (the XDP program steered it): malformed, it is
    // dropped as the kernel would drop it.
    if total < hlen || ETH_LEN + total > frame.len() {
        return Verdict::Drop(DropReason::Ipv4Length);
    }
    let need = if proto == Protocol::Tcp { 20 } else { 8 };
    if total < hlen + need {
        return Verdict::Drop(DropReason::L4Header);
    }
    let flow = Flow {
        key: ConnKey {
            proto,
            client: ip.source_addr(),
            cport: src.port,
            vip: ip.destination_addr(),
            vport: u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]),
        },
        tcp_flags: (proto == Protocol::Tcp).then(|| frame[l4 + 13]),
        ip_len: total,
        l4,
        first_fragment: None,
    };
    nat_reply(frame, t, &flow, now)
}

/// A TCP or UDP packet to a VIP, of either family: to its connection's real server.
#[inline]
fn deliver<A: Fam>(frame: &mut Packet<'_>, t: &mut Tables, flow: &Flow<A>, now: Time) -> Verdict {
    let key = &flow.key;
    let Some(si) = A::find(&t.services, key.proto, key.vip, key.vport) else {
        return Verdict::Pass; // a VIP, but not a service port: the kernel's
    };
    if let Some(w) = t.elsewhere_in(si, key.client.ip(), key.cport) {
        return Verdict::Handoff(w);
    }
    let (found, dest, mac) = match connect(frame, t, flow, si, now) {
        Ok(found) => found,
        Err(Miss::Verdict(v)) => return v,
        Err(Miss::Stateless(dest, mac)) => (None, dest, mac),
    };
    // Direct routing costs no lookup of the method while no real server is NAT's.
    let fwd = if t.services.has_nat() {
        t.services.fwd(dest)
    } else {
        Fwd::Route
    };
    let nat = matches!(fwd, Fwd::Masq { .. });
    if let Some((idx, fresh)) = found {
        let before = t.sync_out.is_some().then(|| {
            let e = A::conns(t).entry(idx);
            let last = e.last_seen_tick();
            (e.state(), fresh, new_window(last, now))
        });
        let offloading = t.offload.is_some();
        let conns = A::conns_mut(t);
        if nat {
            // The replies cross the director: both directions drive the state, and
            // they go towards the client by the kernel's routes, else back where its
            // packets come from.
            conns.seen_dir(idx, now, flow.tcp_flags, Dir::Input);
            let hop = t
                .services
                .client_hop(key.client.ip())
                .unwrap_or_else(|| source_mac(frame));
            A::conns_mut(t).set_hop(idx, hop);
        } else {
            let was = offloading.then(|| {
                let e = conns.entry(idx);
                (e.state(), e.last_seen_tick())
            });
            let state = conns.seen(idx, now, flow.tcp_flags);
            if let Some(was) = was {
                offload_changed(t, key, fresh, was, state, (dest, mac, si), now);
            }
        }
        if let Some((old, new_entry, refresh)) = before {
            sync_changed::<A>(t, si, idx, (old, new_entry, refresh), &fwd, now);
        }
    } else {
        t.stats.stateless.inc();
    }
    let svc_slot = t.services.services[si].slot;
    if let Some(k) = flow.first_fragment {
        A::frags(t).insert(
            k,
            FragDest {
                dest,
                service_slot: svc_slot,
            },
            now,
        );
    }
    if nat {
        let at = At {
            v6: A::V6,
            l4: Some((flow.l4, key.proto)),
        };
        method::to_real(frame, &fwd, &at);
    }
    forward(frame, t, svc_slot, dest, mac, flow.ip_len, true)
}

/// `run --offload`: what a packet that crossed the worker changes for the XDP fast path.
/// An IPv4 direct-routing TCP connection is offered to it when it becomes ESTABLISHED, a
/// UDP flow when it is scheduled, and either again in every refresh window it has
/// traffic in here (an insert that was lost, or a flow that came back to the workers,
/// goes to the fast path again); a TCP connection leaving ESTABLISHED (a FIN or RST
/// crossed the worker) is taken from it. `was`: the entry's state and last-seen tick
/// before this packet; `state`: after it.
fn offload_changed<A: Fam>(
    t: &mut Tables,
    key: &ConnKey<A>,
    fresh: bool,
    (old, last): (State, u32),
    state: State,
    (dest, mac, si): (DestRef, xdpvs_sched::Mac, usize),
    now: Time,
) {
    let (Some(client), Some(vip)) = (Ipv4Addr::of(key.client.ip()), Ipv4Addr::of(key.vip.ip()))
    else {
        return;
    };
    let k = ConnKey {
        proto: key.proto,
        client,
        cport: key.cport,
        vip,
        vport: key.vport,
    };
    let refresh = new_window(last, now);
    let insert = match key.proto {
        Protocol::Tcp => state == State::Established && (old != state || fresh || refresh),
        Protocol::Udp => fresh || refresh,
    };
    let rec = if insert {
        if t.services.fwd(dest) != Fwd::Route {
            return;
        }
        OffloadRec::Insert(FastFlow {
            key: k,
            to: mac,
            from: t.services.servers_mac(),
            service: t.services.services[si].slot,
            dest: dest.slot,
            idle: A::conns(t).timeouts().get(state),
        })
    } else if key.proto == Protocol::Tcp && old == State::Established && state != old {
        OffloadRec::Remove(k)
    } else {
        return;
    };
    if let Some(o) = &mut t.offload {
        o.push(rec);
    }
}

/// The refresh window of connection synchronisation (and of `--offload`'s offers): 2^10
/// ticks of the table's clock (2^30 ns, about a second).
const SYNC_REFRESH_SHIFT: u32 = 10;

/// Whether `now` is in a later refresh window than an entry last seen at tick `last`.
#[inline]
fn new_window(last: u32, now: Time) -> bool {
    last >> SYNC_REFRESH_SHIFT != tick(now) >> SYNC_REFRESH_SHIFT
}

/// IPVS's sync rule, adapted: a TCP connection is synchronised when its state moves to
/// ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT or TIME_WAIT, a UDP flow when it is new, a
/// persistence template just before the connection it controls; and an ESTABLISHED
/// connection (a UDP flow) again in every refresh window it has traffic in (IPVS: every
/// 50 packets), so that a director that was away learns it within about a second of its
/// return. `(old, new_entry, refresh)`: the state before this packet, whether the entry
/// was made for it, whether it is the first of a new window.
fn sync_changed<A: Fam>(
    t: &mut Tables,
    si: usize,
    idx: usize,
    (old, new_entry, refresh): (State, bool, bool),
    fwd: &Fwd,
    now: Time,
) {
    let e = A::conns(t).entry(idx);
    let (state, key, dest) = (e.state(), e.key(), e.dest());
    let wanted = match key.proto {
        Protocol::Tcp => {
            (state != old || refresh && state == State::Established)
                && matches!(
                    state,
                    State::Established
                        | State::FinWait
                        | State::Close
                        | State::CloseWait
                        | State::TimeWait
                )
        }
        Protocol::Udp => new_entry || refresh,
    };
    if !wanted {
        return;
    }
    let svc = &t.services.services[si];
    let (vport, persistence) = (svc.key.port, svc.persistence);
    let dport = match fwd {
        Fwd::Masq { port, .. } => *port,
        _ => vport,
    };
    let Some(real) = svc.reals.iter().find(|r| r.dest == dest).map(|r| r.addr) else {
        return;
    };
    let method = match fwd {
        Fwd::Route => sync::flags::DROUTE,
        Fwd::Masq { .. } => sync::flags::MASQ,
        Fwd::Tunnel { .. } => sync::flags::TUNNEL,
    };
    let timeouts = *A::conns(t).timeouts();
    let mut recs: [Option<SyncConn>; 2] = [None, None];
    if let Some(p) = persistence.filter(|_| A::conns(t).entry(idx).is_persistent()) {
        if let Some(ti) = A::conns(t).peek_template(&key, p.prefix_len, now) {
            let tk = A::conns(t).entry(ti).key();
            recs[0] = Some(SyncConn {
                protocol: key.proto.ip_number(),
                flags: method | sync::flags::TEMPLATE,
                state: 0,
                client: (tk.client.ip(), 0),
                vip: (key.vip.ip(), vport),
                dest: (real, dport),
                fwmark: 0,
                timeout: p.timeout.as_secs() as u32,
            });
        }
    }
    let inactive = if state == State::Established || key.proto == Protocol::Udp {
        0
    } else {
        sync::flags::INACTIVE
    };
    recs[1] = Some(SyncConn {
        protocol: key.proto.ip_number(),
        flags: method | inactive,
        state: if key.proto == Protocol::Tcp {
            state as u16
        } else {
            0
        },
        client: (key.client.ip(), key.cport),
        vip: (key.vip.ip(), key.vport),
        dest: (real, dport),
        fwmark: 0,
        timeout: timeouts.get(state).as_secs() as u32,
    });
    let Some(out) = &mut t.sync_out else {
        return;
    };
    for r in recs.into_iter().flatten() {
        if out.recs.len() < out.cap {
            out.recs.push(r);
        } else {
            t.stats.sync_lost.inc();
        }
    }
}

/// [`Tables::install_synced`] in one family.
fn install<A: Fam>(t: &mut Tables, c: &SyncConn, client: A, vip: A, now: Time) -> bool {
    let proto = match c.protocol {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return false,
    };
    let Some(si) = A::find(&t.services, proto, vip, c.vip.1) else {
        return false;
    };
    let svc = &t.services.services[si];
    let persistence = svc.persistence;
    let Some(dest) = svc
        .reals
        .iter()
        .find(|r| {
            r.addr == c.dest.0
                && match t.services.fwd(r.dest) {
                    Fwd::Masq { port, .. } => port == c.dest.1,
                    _ => c.dest.1 == svc.key.port || c.dest.1 == 0,
                }
        })
        .map(|r| r.dest)
    else {
        return false;
    };
    let key = ConnKey {
        proto,
        client,
        cport: c.client.1,
        vip,
        vport: c.vip.1,
    };
    let conns = A::conns_mut(t);
    let timeout = std::time::Duration::from_secs(u64::from(c.timeout));
    if c.flags & sync::flags::TEMPLATE != 0 {
        let Some(p) = persistence else {
            return false;
        };
        if let Some(i) = conns.peek_template(&key, p.prefix_len, now) {
            if c.timeout != 0 {
                conns.sync_update(i, State::None, timeout, now);
            }
            return true;
        }
        let timeout = if c.timeout == 0 { p.timeout } else { timeout };
        return conns
            .insert_template(&key, p.prefix_len, dest, timeout, now)
            .is_ok();
    }
    let state = match proto {
        // IPVS's TCP state numbers are xdpvs's (UDP's 0 is not one).
        Protocol::Tcp => match State::from_u8(c.state.min(255) as u8) {
            State::Udp => State::Established,
            s => s,
        },
        Protocol::Udp => State::Udp,
    };
    // The master's timeout (a version 0 message's 0: this director's).
    let timeout = if c.timeout == 0 {
        conns.timeouts().get(state)
    } else {
        timeout
    };
    if let Some(i) = conns.peek(&key, now) {
        if conns.entry(i).dest() == dest {
            conns.sync_update(i, state, timeout, now);
            return true;
        }
        // Another real server: as IPVS, the connection was scheduled again on the
        // master unless this is the end of the one replaced.
        if c.flags & sync::flags::INACTIVE != 0 {
            return true;
        }
        conns.remove(i, now);
    }
    let template = persistence.and_then(|p| conns.peek_template(&key, p.prefix_len, now));
    match conns.insert(&key, dest, state, now, template) {
        Ok(i) => {
            conns.sync_update(i, state, timeout, now);
            true
        }
        Err(_) => false,
    }
}

/// Addresses a frame from `src` to `dst` at the Ethernet layer.
#[inline(always)]
fn set_macs(frame: &mut [u8], dst: xdpvs_sched::Mac, src: xdpvs_sched::Mac) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
}

/// The source MAC of a frame (at least an Ethernet header long).
#[inline]
fn source_mac(frame: &[u8]) -> xdpvs_sched::Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&frame[6..12]);
    m
}

/// A TCP or UDP packet that is to no VIP: a NAT real server's reply (from its address
/// and port) is rewritten from its service's VIP and port and sent to where its client's
/// packets come from; anything else is the kernel's.
#[inline(never)]
fn nat_reply<A: Fam>(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    reply: &Flow<A>,
    now: Time,
) -> Verdict {
    // The reply's source is the real server, its destination the client.
    let (rs, rport) = (reply.key.client, reply.key.cport);
    let (client, cport) = (reply.key.vip, reply.key.vport);
    let src = NatSource {
        proto: reply.key.proto,
        addr: rs.ip(),
        port: rport,
    };
    // From a NAT source, not to the director (reply4 asked both for IPv4).
    if A::V6 && (t.services.nat_services(&src).is_empty() || t.services.is_own(client.ip())) {
        return Verdict::Pass;
    }
    if let Some(w) = t.elsewhere(client.ip(), cport) {
        return Verdict::Handoff(w);
    }
    let Some((idx, fwd)) = find_nat(t, &src, client, cport, now) else {
        return Verdict::Drop(DropReason::NatNoConnection);
    };
    let conns = A::conns_mut(t);
    conns.seen_dir(idx, now, reply.tcp_flags, Dir::Output);
    let hop = conns.hop(idx);
    let at = At {
        v6: A::V6,
        l4: Some((reply.l4, src.proto)),
    };
    method::to_client(frame, &fwd, &at);
    set_macs(frame, hop, t.services.director_mac());
    t.stats.nat_replies.inc();
    Verdict::ToClient
}

/// The NAT connection of `client`:`cport` with real server `src` (its address and port),
/// if there is one: its index and its real server's method.
#[inline]
fn find_nat<A: Fam>(
    t: &mut Tables,
    src: &NatSource,
    client: A,
    cport: u16,
    now: Time,
) -> Option<(usize, Fwd)> {
    let (services, conns) = A::split(t);
    for &(vip, vport) in services.nat_services(src) {
        let Some(vip) = A::of(vip) else { continue };
        let key = ConnKey {
            proto: src.proto,
            client,
            cport,
            vip,
            vport,
        };
        let Some(idx) = conns.lookup(&key, now) else {
            continue;
        };
        let fwd = services.fwd(conns.entry(idx).dest());
        if matches!(fwd, Fwd::Masq { addr, port, .. } if addr == src.addr && port == src.port) {
            return Some((idx, fwd));
        }
    }
    None
}

/// An ICMP error a NAT real server sent (to `to`) about a client's packet, which it
/// quotes (`quoted`, read as [`icmp::quoted_connection`] reads a reply: its "client" is
/// the real server, its "VIP" the client): rewritten from the VIP, quoting the packet as
/// the client sent it, to where the client's packets come from.
fn nat_icmp_error<A: Fam>(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    quoted: &ConnKey<A>,
    to: A,
    icmp: usize,
    now: Time,
) -> Verdict {
    if t.services.is_own(to.ip()) {
        return Verdict::Pass;
    }
    let src = NatSource {
        proto: quoted.proto,
        addr: quoted.client.ip(),
        port: quoted.cport,
    };
    if let Some(w) = t.elsewhere(quoted.vip.ip(), quoted.vport) {
        return Verdict::Handoff(w);
    }
    let Some((idx, fwd)) = find_nat(t, &src, quoted.vip, quoted.vport, now) else {
        return Verdict::Drop(DropReason::IcmpNoConnection);
    };
    let hop = A::conns(t).hop(idx);
    method::icmp_to_client(frame, &fwd, A::V6, icmp);
    set_macs(frame, hop, t.services.director_mac());
    t.stats.icmp_forwarded.inc();
    Verdict::ToClient
}

/// An IPv6 frame: neighbour discovery for a VIP, ICMPv6 to a VIP, TCP/UDP to a service.
#[inline]
fn ipv6(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Verdict {
    let inbound = match ipv6::parse(frame) {
        Ok(i) => i,
        Err(Error6::NotIpv6) => return Verdict::Pass,
        Err(Error6::BadHeader) => return Verdict::Drop(DropReason::Ipv6Header),
        Err(Error6::BadExtension) => return Verdict::Drop(DropReason::Ipv6Extension),
        Err(Error6::Truncated) => return Verdict::Drop(DropReason::L4Header),
    };
    match inbound {
        Inbound6::Flow(f) => {
            let to_vip = t.services.is_vip6(f.dst);
            if !to_vip && !t.services.has_nat() {
                return Verdict::Pass;
            }
            let flow = Flow {
                key: ConnKey {
                    proto: f.proto,
                    client: f.src,
                    cport: f.sport,
                    vip: f.dst,
                    vport: f.dport,
                },
                tcp_flags: f.tcp_flags,
                ip_len: f.ip_len,
                l4: f.l4,
                first_fragment: f.first_fragment,
            };
            if to_vip {
                deliver(frame, t, &flow, now)
            } else {
                nat_reply(frame, t, &flow, now)
            }
        }
        Inbound6::Later { key, ip_len } => {
            if !t.services.is_vip6(key.dst) {
                return Verdict::Pass;
            }
            later_fragment::<Ipv6Addr>(frame, t, &key, ip_len, now)
        }
        Inbound6::Icmp {
            src,
            dst,
            icmp_type,
        } => icmp6(frame, t, src, dst, icmp_type, now),
        Inbound6::Other => Verdict::Pass,
    }
}

/// ICMPv6: neighbour discovery for a VIP (answered, defended, conflicts counted), and to
/// a VIP echo (answered, rate-limited with IPv4's echoes), errors about a known
/// connection (to its real server); everything else to a VIP dropped.
fn icmp6(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    now: Time,
) -> Verdict {
    let our_mac = t.services.director_mac();
    match icmp_type {
        ndp::NEIGHBOR_SOLICITATION if t.services.options().vips_routed => {
            return match ndp::target(frame) {
                Some(vip) if t.services.is_vip6(vip) => Verdict::Drop(DropReason::VipRouted),
                _ => Verdict::Pass,
            };
        }
        ndp::NEIGHBOR_SOLICITATION => {
            return match ndp::advertise_in_place(frame, |ip| t.services.is_vip6(*ip), our_mac) {
                ndp::Outcome::Advertised(_) => Verdict::Reply,
                ndp::Outcome::Defend(vip) if ndp::defend_in_place(frame, vip, our_mac) => {
                    Verdict::Reply
                }
                ndp::Outcome::NotForUs | ndp::Outcome::Ignored(ndp::Ignore::NotIcmpv6) => {
                    Verdict::Pass
                }
                ndp::Outcome::Defend(_) | ndp::Outcome::Ignored(_) => {
                    Verdict::Drop(DropReason::NdpInvalid)
                }
            };
        }
        ndp::NEIGHBOR_ADVERTISEMENT => {
            // Another host advertising a VIP (a conflict), or our own advertisement.
            return match ndp::target(frame) {
                Some(vip) if t.services.is_vip6(vip) => {
                    let mac = source_mac(frame);
                    if mac == our_mac {
                        Verdict::Drop(DropReason::ArpOwn)
                    } else {
                        t.stats.conflicts.record(IpAddr::V6(vip), mac);
                        Verdict::Drop(DropReason::VipConflict)
                    }
                }
                _ => Verdict::Pass,
            };
        }
        _ => {}
    }
    if !t.services.is_vip6(dst) {
        // An error a NAT real server sent about a client's packet.
        let from_nat = matches!(icmp_type, 1..=4)
            && t.services.has_nat()
            && t.services.is_nat_addr(src.into());
        if !from_nat {
            return Verdict::Pass;
        }
        let plen = usize::from(u16::from_be_bytes([frame[ETH_LEN + 4], frame[ETH_LEN + 5]]));
        let quoted = match frame.get(ETH_LEN + 40..ETH_LEN + 40 + plen) {
            Some(m) if frame[ETH_LEN + 6] == ndp::ICMPV6 => ipv6::quoted_connection(m),
            _ => None,
        };
        return match quoted {
            Some(q) => nat_icmp_error(frame, t, &q, dst, ETH_LEN + 40, now),
            None => Verdict::Drop(DropReason::IcmpNoConnection),
        };
    }
    const ECHO_REQUEST: u8 = 128;
    match icmp_type {
        ECHO_REQUEST => {
            if !t.echo.take(now) {
                return Verdict::Drop(DropReason::IcmpRateLimited);
            }
            if ipv6::echo_reply_in_place(frame, |_| true).is_none() {
                return Verdict::Drop(DropReason::IcmpUnsupported);
            }
            t.stats.echo_replies.inc();
            Verdict::Reply
        }
        // Destination unreachable, packet too big, time exceeded, parameter problem.
        1..=4 => {
            // The message directly after the IPv6 header (errors carry no extensions).
            let plen = usize::from(u16::from_be_bytes([frame[ETH_LEN + 4], frame[ETH_LEN + 5]]));
            let msg = frame.get(ETH_LEN + 40..ETH_LEN + 40 + plen);
            let key = match msg {
                Some(m) if frame[ETH_LEN + 6] == ndp::ICMPV6 => ipv6::quoted_connection(m),
                _ => None,
            };
            match key {
                Some(key) if t.services.is_vip6(key.vip) => {
                    icmp_error(frame, t, &key, 40 + plen, now)
                }
                _ => Verdict::Drop(DropReason::IcmpNoConnection),
            }
        }
        _ => Verdict::Drop(DropReason::IcmpUnsupported),
    }
}

/// An ICMP error quoting connection `key` (`ip_len` bytes at the IP layer): to that
/// connection's real server, if it is known.
fn icmp_error<A: Fam>(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    key: &ConnKey<A>,
    ip_len: usize,
    now: Time,
) -> Verdict {
    let si = A::find(&t.services, key.proto, key.vip, key.vport);
    if let Some(w) = si.and_then(|si| t.elsewhere_in(si, key.client.ip(), key.cport)) {
        return Verdict::Handoff(w);
    }
    let Some(idx) = A::conns_mut(t).lookup(key, now) else {
        return Verdict::Drop(DropReason::IcmpNoConnection);
    };
    let dest = A::conns(t).entry(idx).dest();
    let Some(mac) = reachable(t, dest) else {
        return Verdict::Drop(DropReason::DestRemoved);
    };
    if t.services.has_nat() {
        // A NAT real server sent the reply from its own address and port.
        let icmp = if A::V6 {
            ETH_LEN + 40
        } else {
            ETH_LEN + usize::from(frame[ETH_LEN] & 0x0f) * 4
        };
        method::icmp_to_real(frame, &t.services.fwd(dest), A::V6, icmp);
    }
    let svc_slot = si.map_or(u32::MAX, |si| t.services.services[si].slot);
    let v = forward(frame, t, svc_slot, dest, mac, ip_len, false);
    if v == Verdict::Tx {
        t.stats.icmp_forwarded.inc();
    }
    v
}

/// Sends the packet (`ip_len` bytes at the IP layer) towards real server `dest` at
/// `mac`, encapsulated if it is reached by a tunnel, and counts it. A packet too big to
/// tunnel is answered with "fragmentation needed" when `answer_too_big` and it allows
/// (DF, or IPv6), and dropped otherwise.
#[inline]
fn forward(
    frame: &mut Packet<'_>,
    t: &Tables,
    svc_slot: u32,
    dest: DestRef,
    mac: xdpvs_sched::Mac,
    ip_len: usize,
    answer_too_big: bool,
) -> Verdict {
    if t.services.has_tunnel() {
        if let Fwd::Tunnel {
            addr,
            src,
            tun,
            mtu,
        } = t.services.fwd(dest)
        {
            if let Err(v) = encapsulate(frame, t, (src, addr), &tun, mtu, ip_len, answer_too_big) {
                return v;
            }
        }
    }
    to_server(frame, t, svc_slot, dest, mac, ip_len)
}

/// The last step of [`forward`]: the frame's MACs, and the service's and real server's
/// counters.
#[inline(always)]
fn to_server(
    frame: &mut [u8],
    t: &Tables,
    svc_slot: u32,
    dest: DestRef,
    mac: xdpvs_sched::Mac,
    ip_len: usize,
) -> Verdict {
    set_macs(frame, mac, t.services.servers_mac());
    let len = ip_len as u64;
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

/// Puts the tunnel to `to` (from `from`) in front of the packet, or (`Err`) answers or
/// drops a packet that cannot be tunnelled.
#[inline(never)]
fn encapsulate(
    frame: &mut Packet<'_>,
    t: &Tables,
    (from, to): (IpAddr, IpAddr),
    tun: &xdpvs_sched::Tunnel,
    mtu: u16,
    ip_len: usize,
    answer_too_big: bool,
) -> Result<(), Verdict> {
    let v6 = to.is_ipv6();
    let room = usize::from(mtu).saturating_sub(tunnel::overhead(tun, v6));
    if ip_len > room {
        let df = v6 || frame[ETH_LEN + 6] & 0x40 != 0;
        if !(df && answer_too_big) {
            return Err(Verdict::Drop(DropReason::TunnelTooBig));
        }
        let hop = source_mac(frame);
        if !tunnel::too_big(frame, v6, ip_len, room as u16) {
            return Err(Verdict::Drop(DropReason::NoHeadroom));
        }
        set_macs(frame, hop, t.services.director_mac());
        t.stats.too_big.inc();
        return Err(Verdict::Reply);
    }
    // (A tunnel's source is always of its real server's family.)
    if !tunnel::encapsulate(frame, tun, from, to, ip_len) {
        return Err(Verdict::Drop(DropReason::NoHeadroom));
    }
    t.stats.tunnelled.inc();
    Ok(())
}

/// The MAC of a real server that may still receive packets of existing connections.
fn reachable(t: &Tables, dest: DestRef) -> Option<xdpvs_sched::Mac> {
    match t.services.dest(dest) {
        DestStatus::Up { mac, .. }
        | DestStatus::OutOfService { mac }
        | DestStatus::Draining { mac } => Some(mac),
        DestStatus::Removed | DestStatus::Unresolved => None,
    }
}

/// A later fragment goes where its datagram's first fragment went.
fn later_fragment<A: Fam>(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    key: &A::Frag,
    ip_len: usize,
    now: Time,
) -> Verdict {
    let Some(to) = A::frags(t).lookup(key, now) else {
        return Verdict::Drop(DropReason::Fragment);
    };
    let Some(mac) = reachable(t, to.dest) else {
        return Verdict::Drop(DropReason::DestRemoved);
    };
    if t.services.has_nat() {
        let at = At {
            v6: A::V6,
            l4: None,
        };
        method::to_real(frame, &t.services.fwd(to.dest), &at);
    }
    let v = forward(frame, t, to.service_slot, to.dest, mac, ip_len, false);
    if v == Verdict::Tx {
        t.stats.fragments_forwarded.inc();
    }
    v
}

/// ICMP to a VIP (see [`crate::icmp`]).
fn icmp_to_vip(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    hlen: usize,
    total: usize,
    now: Time,
) -> Verdict {
    let msg = &frame[ETH_LEN + hlen..ETH_LEN + total];
    if msg.len() < 8 {
        return Verdict::Drop(DropReason::L4Header);
    }
    match icmp::kind(msg[0], msg[1]) {
        icmp::Kind::EchoRequest => {
            if !t.echo.take(now) {
                return Verdict::Drop(DropReason::IcmpRateLimited);
            }
            icmp::echo_reply_in_place(frame, ETH_LEN, hlen, total, t.services.director_mac());
            t.stats.echo_replies.inc();
            Verdict::Reply
        }
        icmp::Kind::Error => {
            let Some(key) = icmp::quoted_connection(msg) else {
                return Verdict::Drop(DropReason::IcmpNoConnection);
            };
            if !t.services.is_vip(key.vip) {
                return Verdict::Drop(DropReason::IcmpNoConnection);
            }
            icmp_error(frame, t, &key, total, now)
        }
        icmp::Kind::Other => Verdict::Drop(DropReason::IcmpUnsupported),
    }
}

/// Why [`connect`] found no table entry to forward with.
enum Miss {
    /// The packet's fate.
    Verdict(Verdict),
    /// The table is full: forward to this real server without an entry (the stateless
    /// fallback).
    Stateless(DestRef, xdpvs_sched::Mac),
}

impl From<Verdict> for Miss {
    fn from(v: Verdict) -> Miss {
        Miss::Verdict(v)
    }
}

/// For how long after the table was last found full new connections are placed by the
/// stateless hash instead of the scheduler: their entries may be evicted (half-open) or
/// missing (table full), and the hash sends their later segments to the same place.
pub const HASH_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// For how long after the table was last found full a TCP segment without an entry may
/// belong to a connection the hash placed (IPVS's established timeout): it is recorded
/// with the hash's real server (adopted) instead of dropped.
pub const ADOPT_WINDOW: std::time::Duration = std::time::Duration::from_secs(900);

/// What [`connect`] found: the connection's entry and whether it was made just now (none
/// when the table was full and the flow goes by the hash), its real server and MAC.
type Connected = (Option<(usize, bool)>, DestRef, xdpvs_sched::Mac);

/// Finds (or schedules) the connection of `flow` and where it goes now: its table index
/// (none when the table is full and the stateless fallback carries it), its real server
/// and that server's MAC; or the verdict when it goes nowhere.
#[inline]
fn connect<A: Fam>(
    frame: &mut [u8],
    t: &mut Tables,
    flow: &Flow<A>,
    si: usize,
    now: Time,
) -> Result<Connected, Miss> {
    let key = &flow.key;
    let (idx, fresh) = match A::conns_mut(t).lookup(key, now) {
        Some(i) => (i, false),
        None => {
            let conns = A::conns(t);
            if conns.len() >= conns.capacity() {
                t.full_at = Some(now);
            }
            let since_full = t.full_at.map(|at| now.since(at));
            let svc = &t.services.services[si];
            // A consistent-hash service places every flow the same way on every
            // director: a segment of a connection another director opened (ECMP moved
            // it here) is scheduled by that hash and goes on to its real server.
            let consistent = svc.scheduler() == SchedKind::Mh;
            let mut by_hash = since_full.is_some_and(|d| d < HASH_WINDOW)
                && svc.persistence.is_none()
                && !consistent;
            if let Some(f) = flow.tcp_flags {
                // A connection another director synchronised lives on the worker its
                // client chooses: a segment of it that lands here goes there.
                if t.sync_in && f & flags::SYN == 0 {
                    if let Some(w) = t.elsewhere(key.client.ip(), key.cport) {
                        return Err(Verdict::Handoff(w).into());
                    }
                }
                let may_open = f & flags::SYN != 0 || t.services.options().sloppy_tcp || consistent;
                // After the table was full, a segment without an entry may be a
                // connection the hash placed: it goes where the hash sends it.
                let adopt = since_full.is_some_and(|d| d < ADOPT_WINDOW);
                if f & flags::RST != 0 || !(may_open || adopt) {
                    return Err(Verdict::Drop(DropReason::NoConnection).into());
                }
                by_hash |= !may_open;
            }
            let placed = if by_hash {
                adopt_stateless(t, si, key, now)
            } else {
                schedule(t, si, key, now)
            };
            match placed {
                Ok(i) => (i, true),
                Err(DropReason::TableFull) => {
                    t.full_at = Some(now);
                    let (dest, mac) =
                        fallback(t, si, key).ok_or(Verdict::Drop(DropReason::NoDestination))?;
                    return Err(Miss::Stateless(dest, mac));
                }
                Err(r) => return Err(Verdict::Drop(r).into()),
            }
        }
    };
    let entry = A::conns(t).entry(idx);
    let dest = entry.dest();
    let status = t.services.dest(dest);
    let options = t.services.options();
    let expire_nodest = options.expire_nodest_conn;
    // A SYN (IPVS's `is_new_conn`) may open a new connection on the ports of an old one
    // (not on the entry it just made).
    let opens = !fresh
        && flow
            .tcp_flags
            .is_some_and(|f| f & (flags::SYN | flags::RST) == flags::SYN);
    if opens {
        let found = reuse::Found {
            state: entry.state(),
            persistent: entry.is_persistent(),
            // Direct routing: the replies never cross the director; NAT: they do.
            one_way: !matches!(t.services.fwd(dest), Fwd::Masq { .. }),
            dest: status,
        };
        if reuse::reschedules(options.conn_reuse_mode, expire_nodest, &found) {
            // Forget the old entry; the new connection is scheduled (and counted) as any
            // other, and only real servers in service are scheduled.
            A::conns_mut(t).remove(idx, now);
            let idx = schedule(t, si, key, now).map_err(Verdict::Drop)?;
            let dest = A::conns(t).entry(idx).dest();
            return match t.services.dest(dest) {
                DestStatus::Up { mac, .. } => Ok((Some((idx, true)), dest, mac)),
                _ => Err(Verdict::Drop(DropReason::DestRemoved).into()),
            };
        }
    }
    match status {
        // A real server out of service by its check keeps its connections.
        DestStatus::Up { mac, .. } | DestStatus::OutOfService { mac } => {
            Ok((Some((idx, fresh)), dest, mac))
        }
        // A removed real server keeps its connections while its MAC is known, unless
        // the operator asked for them to be expired.
        DestStatus::Draining { mac } if !expire_nodest => Ok((Some((idx, fresh)), dest, mac)),
        DestStatus::Draining { .. } | DestStatus::Removed => {
            A::conns_mut(t).remove(idx, now);
            match flow.tcp_flags {
                // With expire_nodest_conn a TCP client learns at once, with a reset,
                // that its connection is gone; otherwise the packet is dropped and the
                // connection forgotten, so the client's next SYN is scheduled afresh.
                Some(f) if expire_nodest && f & flags::RST == 0 => {
                    reset_in_place(frame, flow, f, t.services.director_mac());
                    t.stats.resets.inc();
                    Err(Verdict::Reply.into())
                }
                _ => Err(Verdict::Drop(DropReason::DestRemoved).into()),
            }
        }
        DestStatus::Unresolved => Err(Verdict::Drop(DropReason::DestUnresolved).into()),
    }
}

/// Rewrites the TCP segment in `frame` (described by `flow`, carrying `tcp_flags`) into
/// a reset from the VIP to the client, as a host with no such connection answers it
/// (RFC 9293 3.10.7.1): after an ACK, `RST` with the sequence number the client
/// expects; otherwise `RST|ACK` acknowledging the segment. The frame keeps its length
/// (the bytes after the reset are zeroed padding).
fn reset_in_place<A: Fam>(
    frame: &mut [u8],
    flow: &Flow<A>,
    tcp_flags: u8,
    director: xdpvs_sched::Mac,
) {
    let l4 = flow.l4;
    let word = |o: usize| u32::from_be_bytes([frame[o], frame[o + 1], frame[o + 2], frame[o + 3]]);
    let (seq, ack) = (word(l4 + 4), word(l4 + 8));
    let tcp_len = usize::from(frame[l4 + 12] >> 4) * 4;
    let ip_start = ETH_LEN;
    let payload = flow.ip_len.saturating_sub(l4 - ip_start + tcp_len) as u32;
    let (out_seq, out_ack, out_flags) = if tcp_flags & flags::ACK != 0 {
        (ack, 0, flags::RST)
    } else {
        let len = payload
            + u32::from(tcp_flags & flags::SYN != 0)
            + u32::from(tcp_flags & flags::FIN != 0);
        (0, seq.wrapping_add(len), flags::RST | flags::ACK)
    };
    let key = flow.key;
    set_macs(frame, source_mac(frame), director);
    frame[ETH_LEN..].fill(0);
    let (hlen, pseudo) = A::reset_header(&mut frame[ETH_LEN..], key.vip, key.client);
    let tcp = &mut frame[ETH_LEN + hlen..ETH_LEN + hlen + 20];
    tcp[0..2].copy_from_slice(&key.vport.to_be_bytes());
    tcp[2..4].copy_from_slice(&key.cport.to_be_bytes());
    tcp[4..8].copy_from_slice(&out_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&out_ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = out_flags;
    let c = checksum(pseudo, tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
}

/// The stateless fallback: the real server the 5-tuple hashes to by weighted rendezvous
/// hashing over the service's real servers that are up with a weight above 0. The same
/// flow always hashes to the same real server while that set stays the same, and a
/// change moves only the flows of the real servers that changed.
fn fallback<A: Fam>(
    t: &Tables,
    si: usize,
    key: &ConnKey<A>,
) -> Option<(DestRef, xdpvs_sched::Mac)> {
    let svc = &t.services.services[si];
    let view = View {
        reals: &svc.reals,
        weighted: &svc.weighted,
        loads: Some(&t.loads),
    };
    // A consistent-hash service's own hash is already stateless, and the same on every
    // director.
    if let Some(pick) = svc.sched.consistent_pick(&view, &flow_of(key, Time::ZERO)) {
        let r = &svc.reals[pick?];
        return match t.services.dest(r.dest) {
            DestStatus::Up { mac, .. } => Some((r.dest, mac)),
            _ => None,
        };
    }
    let flow = A::fold(key.client.raw(), key.vip.raw()).rotate_left(16)
        ^ u64::from(key.cport) << 16
        ^ u64::from(key.vport)
        ^ u64::from(key.proto.ip_number()) << 56;
    let mut best: Option<(f64, DestRef, xdpvs_sched::Mac)> = None;
    for r in &t.services.services[si].reals {
        let DestStatus::Up { mac, weight } = t.services.dest(r.dest) else {
            continue;
        };
        if weight == 0 {
            continue;
        }
        // splitmix64 of the flow and the real server's slot: a uniform draw in (0, 1).
        let mut h = flow ^ u64::from(r.dest.slot).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = (h ^ h >> 30).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ h >> 27).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let score = f64::from(weight) / -u.ln();
        if best.is_none_or(|(s, _, _)| score > s) {
            best = Some((score, r.dest, mac));
        }
    }
    best.map(|(_, d, m)| (d, m))
}

/// A new flow while the table is, or lately was, full, or a TCP segment without an entry
/// after that: recorded with the real server the stateless hash gives it.
fn adopt_stateless<A: Fam>(
    t: &mut Tables,
    si: usize,
    key: &ConnKey<A>,
    now: Time,
) -> Result<usize, DropReason> {
    let (dest, _) = fallback(t, si, key).ok_or(DropReason::NoDestination)?;
    let idx = A::conns_mut(t)
        .insert(key, dest, State::None, now, None)
        .map_err(|_| DropReason::TableFull)?;
    count_connection(t, t.services.services[si].slot, dest);
    Ok(idx)
}

/// Counts a connection recorded for service slot `svc_slot` and real server `dest`.
fn count_connection(t: &Tables, svc_slot: u32, dest: DestRef) {
    if let Some(c) = t.stats.services.get(svc_slot as usize) {
        c.conns.inc();
    }
    if let Some(c) = t.stats.dests.get(dest.slot as usize) {
        c.conns.inc();
    }
}

/// Picks a real server for a new connection (honouring persistence) and records it.
fn schedule<A: Fam>(
    t: &mut Tables,
    si: usize,
    key: &ConnKey<A>,
    now: Time,
) -> Result<usize, DropReason> {
    let state = match key.proto {
        Protocol::Tcp => State::None,
        Protocol::Udp => State::Udp,
    };
    let svc = &t.services.services[si];
    let (svc_slot, persistence) = (svc.slot, svc.persistence);

    let mut template = None;
    let dest = match persistence {
        Some(p) => {
            let found = A::conns_mut(t).lookup_template(key, p.prefix_len, now);
            let usable =
                found.filter(|&ti| template_usable(&t.services, A::conns(t).entry(ti).dest()));
            match (found, usable) {
                (_, Some(ti)) => {
                    template = Some(ti);
                    A::conns(t).entry(ti).dest()
                }
                (stale, None) => {
                    if let Some(ti) = stale {
                        A::conns_mut(t).remove(ti, now);
                    }
                    let d = pick(t, si, &flow_of(key, now))?;
                    let ti = A::conns_mut(t)
                        .insert_template(key, p.prefix_len, d, p.timeout, now)
                        .map_err(|_| DropReason::TableFull)?;
                    template = Some(ti);
                    d
                }
            }
        }
        None => pick(t, si, &flow_of(key, now))?,
    };
    let idx = A::conns_mut(t)
        .insert(key, dest, state, now, template)
        .map_err(|_| DropReason::TableFull)?;
    count_connection(t, svc_slot, dest);
    Ok(idx)
}

/// Whether a persistence template to `dest` still sends new connections there.
fn template_usable(services: &Services, dest: DestRef) -> bool {
    match services.dest(dest) {
        DestStatus::Up { weight, .. } => {
            weight > 0 || !services.options().expire_quiescent_template
        }
        // A template of a real server out of service or removed sends nobody new there.
        DestStatus::OutOfService { .. }
        | DestStatus::Draining { .. }
        | DestStatus::Removed
        | DestStatus::Unresolved => false,
    }
}

/// What the scheduler sees of the new connection `key`.
#[inline]
fn flow_of<A: Family>(key: &ConnKey<A>, now: Time) -> Pick {
    Pick {
        client: key.client.ip(),
        cport: key.cport,
        vip: key.vip.ip(),
        now,
    }
}

#[inline]
fn pick(t: &mut Tables, si: usize, flow: &Pick) -> Result<DestRef, DropReason> {
    let svc = &mut t.services.services[si];
    let view = View {
        reals: &svc.reals,
        weighted: &svc.weighted,
        loads: Some(&t.loads),
    };
    let i = svc
        .sched
        .pick(&view, flow)
        .ok_or(DropReason::NoDestination)?;
    Ok(svc.reals[i].dest)
}
