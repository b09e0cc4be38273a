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

use crate::checksum::{checksum, sum_words};
use crate::config::{DestStatus, Limits, Services, View};
use crate::frag::{FragDest, FragKey, FragTable, FRAG_SLOTS};
use crate::icmp::{self, EchoLimit};
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
    frags: FragTable,
    echo: EchoLimit,
    /// When a new connection last found the table full (the fallback's window).
    full_at: Option<Time>,
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
            frags: FragTable::new(FRAG_SLOTS, seed.rotate_left(17)),
            echo: EchoLimit::default(),
            full_at: None,
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
    crate::sys::prefetch_head(t.conns.home(&key), xdpvs_sched::conn::HOT_BYTES);
}

#[inline]
fn classify(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let ether_type = match Ethernet2HeaderSlice::from_slice(frame) {
        Ok(eth) => eth.ether_type(),
        Err(_) => return Verdict::Drop(DropReason::EthTruncated),
    };
    match ether_type {
        EtherType::IPV4 => ipv4(frame, t, now),
        EtherType::ARP => arp(frame, &t.services, &t.stats),
        // IPv6, VLAN-tagged and everything else belong to the kernel.
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
            stats.conflict_vip.set(u64::from(u32::from(a.sender_ip)));
            let m = a.sender_mac;
            stats.conflict_mac.set(u64::from_be_bytes([
                0, 0, m[0], m[1], m[2], m[3], m[4], m[5],
            ]));
            return Verdict::Drop(DropReason::VipConflict);
        }
    }
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
    /// The IP packet's length (IPVS counts bytes at the IP layer).
    ip_len: usize,
    /// Where the L4 header starts in the frame.
    l4: usize,
    /// The datagram's identity when this is its first fragment.
    first_fragment: Option<FragKey>,
}

/// An IPv4 packet to a VIP that the director handles.
enum Inbound {
    /// TCP or UDP with its ports (a whole datagram or its first fragment).
    Flow(Flow),
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
fn ipv4(frame: &mut [u8], t: &mut Tables, now: Time) -> Verdict {
    let flow = match parse_ipv4(frame, &t.services) {
        Ok(Inbound::Flow(f)) => f,
        Ok(Inbound::Later { key, ip_len }) => return later_fragment(frame, t, &key, ip_len, now),
        Ok(Inbound::Icmp { hlen, total }) => return icmp_to_vip(frame, t, hlen, total, now),
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
    let (idx, dest, mac) = match connect(frame, t, &flow, si, now) {
        Ok(found) => found,
        Err(Miss::Verdict(v)) => return v,
        Err(Miss::Stateless(dest, mac)) => (None, dest, mac),
    };
    if let Some(idx) = idx {
        t.conns.seen(idx, now, flow.tcp_flags);
    } else {
        t.stats.stateless.inc();
    }
    let svc_slot = t.services.services[si].slot;
    if let Some(k) = flow.first_fragment {
        t.frags.insert(
            k,
            FragDest {
                dest,
                service_slot: svc_slot,
            },
            now,
        );
    }
    forward(frame, t, svc_slot, dest, mac, flow.ip_len);
    Verdict::Tx
}

/// Rewrites the MACs towards real server `dest` at `mac` and counts the packet.
#[inline]
fn forward(
    frame: &mut [u8],
    t: &Tables,
    svc_slot: u32,
    dest: DestRef,
    mac: xdpvs_sched::Mac,
    ip_len: usize,
) {
    let director = t.services.director_mac();
    frame[0..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&director);
    let len = ip_len as u64;
    if let Some(c) = t.stats.services.get(svc_slot as usize) {
        c.packets.inc();
        c.bytes.add(len);
    }
    if let Some(c) = t.stats.dests.get(dest.slot as usize) {
        c.packets.inc();
        c.bytes.add(len);
    }
}

/// The MAC of a real server that may still receive packets of existing connections.
fn reachable(t: &Tables, dest: DestRef) -> Option<xdpvs_sched::Mac> {
    match t.services.dest(dest) {
        DestStatus::Up { mac, .. } | DestStatus::Draining { mac } => Some(mac),
        DestStatus::Removed | DestStatus::Unresolved => None,
    }
}

/// A later fragment goes where its datagram's first fragment went.
fn later_fragment(
    frame: &mut [u8],
    t: &mut Tables,
    key: &FragKey,
    ip_len: usize,
    now: Time,
) -> Verdict {
    let Some(to) = t.frags.lookup(key, now) else {
        return Verdict::Drop(DropReason::Fragment);
    };
    let Some(mac) = reachable(t, to.dest) else {
        return Verdict::Drop(DropReason::DestRemoved);
    };
    forward(frame, t, to.service_slot, to.dest, mac, ip_len);
    t.stats.fragments_forwarded.inc();
    Verdict::Tx
}

/// ICMP to a VIP (see [`crate::icmp`]).
fn icmp_to_vip(frame: &mut [u8], t: &mut Tables, hlen: usize, total: usize, now: Time) -> Verdict {
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
            let Some(idx) = t.conns.lookup(&key, now) else {
                return Verdict::Drop(DropReason::IcmpNoConnection);
            };
            let dest = t.conns.entry(idx).dest();
            let Some(mac) = reachable(t, dest) else {
                return Verdict::Drop(DropReason::DestRemoved);
            };
            let skey = ServiceKey {
                proto: key.proto,
                vip: key.vip,
                port: key.vport,
            };
            let svc_slot = t
                .services
                .find(&skey)
                .map_or(u32::MAX, |si| t.services.services[si].slot);
            forward(frame, t, svc_slot, dest, mac, total);
            t.stats.icmp_forwarded.inc();
            Verdict::Tx
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

/// Finds (or schedules) the connection of `flow` and where it goes now: its table index
/// (none when the table is full and the stateless fallback carries it), its real server
/// and that server's MAC; or the verdict when it goes nowhere.
#[inline]
fn connect(
    frame: &mut [u8],
    t: &mut Tables,
    flow: &Flow,
    si: usize,
    now: Time,
) -> Result<(Option<usize>, DestRef, xdpvs_sched::Mac), Miss> {
    let key = &flow.key;
    let idx = match t.conns.lookup(key, now) {
        Some(i) => i,
        None => {
            if t.conns.len() >= t.conns.capacity() {
                t.full_at = Some(now);
            }
            let since_full = t.full_at.map(|at| now.since(at));
            let mut by_hash = since_full.is_some_and(|d| d < HASH_WINDOW)
                && t.services.services[si].persistence.is_none();
            if let Some(f) = flow.tcp_flags {
                let may_open = f & flags::SYN != 0 || t.services.options().sloppy_tcp;
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
                Ok(i) => i,
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
    let dest = t.conns.entry(idx).dest();
    let expire_nodest = t.services.options().expire_nodest_conn;
    let pure_syn = flow
        .tcp_flags
        .is_some_and(|f| f & (flags::SYN | flags::ACK | flags::RST) == flags::SYN);
    match t.services.dest(dest) {
        DestStatus::Up { mac, .. } => Ok((Some(idx), dest, mac)),
        // A removed real server keeps its connections while its MAC is known, unless
        // the operator asked for them to be expired; a SYN that reuses the ports of one
        // of them (not a retransmission) opens a new connection.
        DestStatus::Draining { mac } if !(expire_nodest || pure_syn && reused(t, idx)) => {
            Ok((Some(idx), dest, mac))
        }
        DestStatus::Draining { .. } | DestStatus::Removed => {
            t.conns.remove(idx, now);
            match flow.tcp_flags {
                // A new connection on the same ports: schedule it afresh (the lookup
                // now misses, and only live real servers are scheduled).
                Some(_) if pure_syn => {
                    let idx = schedule(t, si, key, now).map_err(Verdict::Drop)?;
                    let dest = t.conns.entry(idx).dest();
                    match t.services.dest(dest) {
                        DestStatus::Up { mac, .. } => Ok((Some(idx), dest, mac)),
                        _ => Err(Verdict::Drop(DropReason::DestRemoved).into()),
                    }
                }
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

/// Whether a pure SYN met on connection `idx` opens a new connection on its ports
/// rather than being a retransmission of the SYN that opened it.
fn reused(t: &Tables, idx: usize) -> bool {
    t.conns.entry(idx).state() != State::SynRecv
}

/// Rewrites the TCP segment in `frame` (described by `flow`, carrying `tcp_flags`) into
/// a reset from the VIP to the client, as a host with no such connection answers it
/// (RFC 9293 3.10.7.1): after an ACK, `RST` with the sequence number the client
/// expects; otherwise `RST|ACK` acknowledging the segment. The frame keeps its length
/// (the bytes after the 40-byte IP packet are zeroed padding).
fn reset_in_place(frame: &mut [u8], flow: &Flow, tcp_flags: u8, director: xdpvs_sched::Mac) {
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
    let client_mac: [u8; 6] = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
    frame[0..6].copy_from_slice(&client_mac);
    frame[6..12].copy_from_slice(&director);
    frame[ETH_LEN..].fill(0);
    let ip = &mut frame[ETH_LEN..ETH_LEN + 40];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&key.vip.octets());
    ip[16..20].copy_from_slice(&key.client.octets());
    let c = checksum(0, &ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut ip[20..40];
    tcp[0..2].copy_from_slice(&key.vport.to_be_bytes());
    tcp[2..4].copy_from_slice(&key.cport.to_be_bytes());
    tcp[4..8].copy_from_slice(&out_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&out_ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = out_flags;
    // Pseudo-header: source, destination, protocol, TCP length.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&key.vip.octets());
    pseudo[4..8].copy_from_slice(&key.client.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let c = checksum(sum_words(0, &pseudo), tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
}

/// The stateless fallback: the real server the 5-tuple hashes to by weighted rendezvous
/// hashing over the service's real servers that are up with a weight above 0. The same
/// flow always hashes to the same real server while that set stays the same, and a
/// change moves only the flows of the real servers that changed.
fn fallback(t: &Tables, si: usize, key: &ConnKey) -> Option<(DestRef, xdpvs_sched::Mac)> {
    let flow = u64::from(u32::from(key.client)) << 32
        ^ u64::from(key.cport) << 16
        ^ u64::from(key.vport)
        ^ u64::from(u32::from(key.vip)).rotate_left(48)
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
fn adopt_stateless(
    t: &mut Tables,
    si: usize,
    key: &ConnKey,
    now: Time,
) -> Result<usize, DropReason> {
    let (dest, _) = fallback(t, si, key).ok_or(DropReason::NoDestination)?;
    let idx = t
        .conns
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
                // A template of a removed real server sends nobody new there.
                DestStatus::Draining { .. } | DestStatus::Removed | DestStatus::Unresolved => false,
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
    count_connection(t, svc_slot, dest);
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
