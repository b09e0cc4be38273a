//! Per-worker counters: written by one worker, readable by any thread at any time.
//!
//! Each counter is an `AtomicU64` updated with a relaxed load and store. With a single
//! writer that is exact, and on x86-64 it compiles to plain moves: no locked instruction
//! on the packet path.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{
    fence, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

/// A single-writer counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets the value (the owning worker, for a figure it copies from elsewhere).
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Resets to zero (the owning worker, when a slot changes hands).
    pub fn reset(&self) {
        self.0.store(0, Relaxed);
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthTruncated,
    /// ARP cut short.
    ArpTruncated,
    /// IPv4 header cut short or invalid (version, header length).
    Ipv4Header,
    /// IPv4 total length shorter than the header or longer than the frame.
    Ipv4Length,
    /// A later IPv4 fragment to a VIP whose first fragment was not seen (it came later,
    /// or too long ago), or a fragmented ICMP message.
    Fragment,
    /// TCP or UDP header cut short or invalid.
    L4Header,
    /// A TCP segment without SYN (or with RST) and no connection entry.
    NoConnection,
    /// The scheduler found no available real server.
    NoDestination,
    /// The connection's real server was removed from the service.
    DestRemoved,
    /// The connection's real server has no resolved MAC.
    DestUnresolved,
    /// The connection table is full.
    TableFull,
    /// An echo request to a VIP over the reply rate limit.
    IcmpRateLimited,
    /// An ICMP error to a VIP that quotes no known connection.
    IcmpNoConnection,
    /// ICMP to a VIP of a type the director does not handle (not echo, not an error).
    IcmpUnsupported,
    /// ARP from another host claiming a VIP (a reply, or a gratuitous ARP, whose sender
    /// address is a VIP), or a neighbour advertisement of an IPv6 VIP from another host:
    /// a VIP conflict, typically a real server that answers ARP or NDP for it.
    VipConflict,
    /// ARP whose sender is a VIP, or a neighbour advertisement of a VIP, at the
    /// director's own MAC: a copy of its own reply or announcement, which says nothing new.
    ArpOwn,
    /// IPv6 header cut short, not version 6, or a payload length past the frame.
    Ipv6Header,
    /// An IPv6 extension header cut short or malformed.
    Ipv6Extension,
    /// A neighbour solicitation for a VIP that fails RFC 4861's checks (hop limit,
    /// checksum, options) or is cut short.
    NdpInvalid,
    /// An ARP request or neighbour solicitation for a VIP while the VIPs are routed to
    /// the director (`run --announce`): routers reach them by the director's own address,
    /// so it does not answer for them (several directors answering would flap).
    VipRouted,
    /// A packet from a NAT real server's address and port that belongs to no connection
    /// (it expired, or the director restarted): it cannot leave from the VIP, and from
    /// the real server's own address the client would not know it.
    NatNoConnection,
    /// A packet to a tunnel real server that would exceed the path MTU once encapsulated
    /// and may not be answered with "fragmentation needed": no DF bit (a fragment, say;
    /// IPVS would fragment the outer packet) or an ICMP error.
    TunnelTooBig,
    /// A packet to a tunnel real server in a buffer with no room for the outer headers
    /// (a frame longer than the UMEM frame minus the overhead).
    NoHeadroom,
}

impl DropReason {
    /// How many reasons there are.
    pub const COUNT: usize = 23;
    /// All reasons, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::EthTruncated,
        DropReason::ArpTruncated,
        DropReason::Ipv4Header,
        DropReason::Ipv4Length,
        DropReason::Fragment,
        DropReason::L4Header,
        DropReason::NoConnection,
        DropReason::NoDestination,
        DropReason::DestRemoved,
        DropReason::DestUnresolved,
        DropReason::TableFull,
        DropReason::IcmpRateLimited,
        DropReason::IcmpNoConnection,
        DropReason::IcmpUnsupported,
        DropReason::VipConflict,
        DropReason::ArpOwn,
        DropReason::Ipv6Header,
        DropReason::Ipv6Extension,
        DropReason::NdpInvalid,
        DropReason::VipRouted,
        DropReason::NatNoConnection,
        DropReason::TunnelTooBig,
        DropReason::NoHeadroom,
    ];

    /// A stable snake_case name (for logs and metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::EthTruncated => "eth_truncated",
            DropReason::ArpTruncated => "arp_truncated",
            DropReason::Ipv4Header => "ipv4_header",
            DropReason::Ipv4Length => "ipv4_length",
            DropReason::Fragment => "fragment",
            DropReason::L4Header => "l4_header",
            DropReason::NoConnection => "no_connection",
            DropReason::NoDestination => "no_destination",
            DropReason::DestRemoved => "dest_removed",
            DropReason::DestUnresolved => "dest_unresolved",
            DropReason::TableFull => "table_full",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::IcmpNoConnection => "icmp_no_connection",
            DropReason::IcmpUnsupported => "icmp_unsupported",
            DropReason::VipConflict => "vip_conflict",
            DropReason::ArpOwn => "arp_own",
            DropReason::Ipv6Header => "ipv6_header",
            DropReason::Ipv6Extension => "ipv6_extension",
            DropReason::NdpInvalid => "ndp_invalid",
            DropReason::VipRouted => "vip_routed",
            DropReason::NatNoConnection => "nat_no_connection",
            DropReason::TunnelTooBig => "tunnel_too_big",
            DropReason::NoHeadroom => "no_headroom",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Packets, bytes and connections of one service or one real server.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Frames forwarded.
    pub packets: Counter,
    /// Bytes forwarded (IP packet lengths, as IPVS counts them).
    pub bytes: Counter,
    /// Connections scheduled.
    pub conns: Counter,
}

/// A snapshot of [`Traffic`] (or a sum of several).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Frames forwarded.
    pub packets: u64,
    /// Bytes forwarded (IP packet lengths).
    pub bytes: u64,
    /// Connections scheduled.
    pub conns: u64,
}

impl std::ops::Add for TrafficTotals {
    type Output = TrafficTotals;
    fn add(self, o: TrafficTotals) -> TrafficTotals {
        TrafficTotals {
            packets: self.packets.wrapping_add(o.packets),
            bytes: self.bytes.wrapping_add(o.bytes),
            conns: self.conns.wrapping_add(o.conns),
        }
    }
}

impl Traffic {
    /// The counters now.
    pub fn totals(&self) -> TrafficTotals {
        TrafficTotals {
            packets: self.packets.get(),
            bytes: self.bytes.get(),
            conns: self.conns.get(),
        }
    }

    fn reset(&self) {
        self.packets.reset();
        self.bytes.reset();
        self.conns.reset();
    }
}

/// All counters of one worker.
#[derive(Debug)]
pub struct WorkerStats {
    /// Frames given to the engine.
    pub rx: Counter,
    /// Bytes given to the engine.
    pub rx_bytes: Counter,
    /// Verdict `Tx` (forwarded to a real server).
    pub tx: Counter,
    /// Verdict `Reply` (ARP replies).
    pub reply: Counter,
    /// Verdict `Pass`, handed to the kernel (by callers that can: see
    /// [`crate::process`]).
    pub pass: Counter,
    /// Verdict `Pass` for a frame steered to the director, which cannot go back to the
    /// kernel and is recycled (see [`crate::engine::process_steered`]). Stays 0 while the
    /// XDP program and the engine agree.
    pub unhandled: Counter,
    /// Verdict `Drop`, by reason (index: position in [`DropReason::ALL`]).
    pub drops: [Counter; DropReason::COUNT],
    /// Connection-table entries removed by the expiry sweep.
    pub expired: Counter,
    /// TCP resets sent for connections of removed real servers (expire_nodest_conn).
    pub resets: Counter,
    /// Echo replies sent for VIPs (counted in `reply` too).
    pub echo_replies: Counter,
    /// ICMP errors forwarded to the real server of the connection they quote (counted
    /// in `tx` too).
    pub icmp_forwarded: Counter,
    /// Later fragments forwarded after their first one (counted in `tx` too).
    pub fragments_forwarded: Counter,
    /// NAT replies rewritten from the VIP and sent to their client.
    pub nat_replies: Counter,
    /// Packets handed to the worker that holds their NAT connection (several queues:
    /// every packet of a NAT connection is handled by the worker its client's address
    /// and port choose). Counted received here and again by that worker.
    pub handed_off: Counter,
    /// Packets that could not be handed over (no free hand-off buffer, or the other
    /// worker's inbox full) or, handed to this worker, not sent (no free frame).
    pub handoff_lost: Counter,
    /// Connection records handed to the sync sender (IPVS's sync protocol).
    pub sync_sent: Counter,
    /// Connection records lost: this worker's record buffer, or the sender's queue, full.
    pub sync_lost: Counter,
    /// Connections another director synchronised, installed in this worker's table.
    pub sync_installed: Counter,
    /// Synchronised connections not installed: no such service or real server here, or
    /// the table full.
    pub sync_refused: Counter,
    /// Packets encapsulated to tunnel real servers.
    pub tunnelled: Counter,
    /// "Fragmentation needed" / "packet too big" answers to packets too big to tunnel.
    pub too_big: Counter,
    /// The hosts seen claiming a VIP, for the control plane's log and metrics.
    pub conflicts: ConflictLog,
    /// Packets forwarded by the stateless fallback, without a table entry, because the
    /// connection table was full (counted in `tx` too).
    pub stateless: Counter,
    /// `run --offload`: records for the offload thread lost (this worker's buffer, or
    /// the thread's queue, full).
    pub offload_lost: Counter,
    /// Per service slot.
    pub services: Box<[Traffic]>,
    /// Per real-server slot.
    pub dests: Box<[Traffic]>,
}

impl WorkerStats {
    /// Counters for `max_services` service slots and `max_dests` real-server slots.
    pub fn new(max_services: usize, max_dests: usize) -> WorkerStats {
        WorkerStats {
            rx: Counter::default(),
            rx_bytes: Counter::default(),
            tx: Counter::default(),
            reply: Counter::default(),
            pass: Counter::default(),
            unhandled: Counter::default(),
            drops: Default::default(),
            expired: Counter::default(),
            resets: Counter::default(),
            echo_replies: Counter::default(),
            icmp_forwarded: Counter::default(),
            fragments_forwarded: Counter::default(),
            nat_replies: Counter::default(),
            handed_off: Counter::default(),
            handoff_lost: Counter::default(),
            sync_sent: Counter::default(),
            sync_lost: Counter::default(),
            sync_installed: Counter::default(),
            sync_refused: Counter::default(),
            tunnelled: Counter::default(),
            too_big: Counter::default(),
            stateless: Counter::default(),
            offload_lost: Counter::default(),
            conflicts: ConflictLog::default(),
            services: (0..max_services).map(|_| Traffic::default()).collect(),
            dests: (0..max_dests).map(|_| Traffic::default()).collect(),
        }
    }

    /// The counters of service slot `slot` (zero for a slot out of range).
    pub fn service_totals(&self, slot: u32) -> TrafficTotals {
        self.services
            .get(slot as usize)
            .map_or_else(TrafficTotals::default, Traffic::totals)
    }

    /// The counters of real-server slot `slot` (zero for a slot out of range).
    pub fn dest_totals(&self, slot: u32) -> TrafficTotals {
        self.dests
            .get(slot as usize)
            .map_or_else(TrafficTotals::default, Traffic::totals)
    }

    /// The drop counter for `r`.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }

    /// All drops.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Zeroes the counters of the service and real-server slots that changed hands
    /// from `old` to `new` (what a worker does as it installs `new`), for counters kept
    /// by another thread as a worker's (`run --offload`).
    pub fn reset_changed(&self, new: &crate::Services, old: &crate::Services) {
        for slot in new.changed_service_slots(old) {
            self.reset_service(slot);
        }
        for slot in new.changed_dest_slots(old) {
            self.reset_dest(slot);
        }
    }

    pub(crate) fn reset_service(&self, slot: u32) {
        if let Some(t) = self.services.get(slot as usize) {
            t.reset();
        }
    }

    pub(crate) fn reset_dest(&self, slot: u32) {
        if let Some(t) = self.dests.get(slot as usize) {
            t.reset();
        }
    }
}

/// How many (VIP, MAC) pairs a worker's [`ConflictLog`] holds.
pub const CONFLICT_SLOTS: usize = 8;

/// Hosts other than the director seen claiming a VIP (ARP replies and gratuitous ARP,
/// IPv6 neighbour advertisements): up to [`CONFLICT_SLOTS`] (VIP, MAC) pairs, each with how
/// many frames said it. Written by the owning worker only (a new pair takes a free slot or
/// the least-seen one's), read by any thread at any time: each slot is a sequence lock
/// (odd while the worker rewrites it), so a reader never mixes two pairs.
#[derive(Default)]
pub struct ConflictLog {
    slots: [ConflictSlot; CONFLICT_SLOTS],
}

impl fmt::Debug for ConflictLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.seen()).finish()
    }
}

#[derive(Default)]
struct ConflictSlot {
    /// 0: never used; odd: being rewritten; bumped by two for every new pair.
    seq: AtomicU64,
    /// The VIP as an IPv6 address (IPv4 mapped into `::ffff:0:0/96`).
    vip_hi: AtomicU64,
    vip_lo: AtomicU64,
    /// The MAC in the low 48 bits.
    mac: AtomicU64,
    count: AtomicU64,
}

/// One (VIP, MAC) pair of a [`ConflictLog`], read consistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictSeen {
    /// The slot it was read from.
    pub slot: usize,
    /// Which pair the slot holds: a new pair in the same slot has another `seq`.
    pub seq: u64,
    /// The VIP claimed.
    pub vip: IpAddr,
    /// The MAC that claimed it.
    pub mac: [u8; 6],
    /// Frames seen saying so, since the pair took the slot.
    pub count: u64,
}

fn vip_bits(vip: IpAddr) -> u128 {
    match vip {
        IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn mac_bits(m: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

impl ConflictLog {
    /// Counts a frame in which `mac` claims `vip`. Only the owning worker may call this.
    pub fn record(&self, vip: IpAddr, mac: [u8; 6]) {
        let (bits, m) = (vip_bits(vip), mac_bits(mac));
        let (hi, lo) = ((bits >> 64) as u64, bits as u64);
        let held = |s: &ConflictSlot| {
            s.seq.load(Relaxed) != 0
                && s.vip_hi.load(Relaxed) == hi
                && s.vip_lo.load(Relaxed) == lo
                && s.mac.load(Relaxed) == m
        };
        if let Some(s) = self.slots.iter().find(|s| held(s)) {
            s.count.store(s.count.load(Relaxed) + 1, Relaxed);
            return;
        }
        let s = self
            .slots
            .iter()
            .min_by_key(|s| (s.seq.load(Relaxed) != 0, s.count.load(Relaxed)))
            .expect("CONFLICT_SLOTS > 0");
        let seq = s.seq.load(Relaxed);
        s.seq.store(seq + 1, Relaxed);
        // Readers that see the new fields see the odd sequence first.
        fence(Release);
        s.vip_hi.store(hi, Relaxed);
        s.vip_lo.store(lo, Relaxed);
        s.mac.store(m, Relaxed);
        s.count.store(1, Relaxed);
        s.seq.store(seq + 2, Release);
    }

    /// The pairs held, each read consistently (a slot being rewritten at that instant is
    /// left out: it is read at the next call).
    pub fn seen(&self) -> impl Iterator<Item = ConflictSeen> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, s)| {
            let seq = s.seq.load(Acquire);
            if seq == 0 || seq % 2 == 1 {
                return None;
            }
            let (hi, lo, m, count) = (
                s.vip_hi.load(Relaxed),
                s.vip_lo.load(Relaxed),
                s.mac.load(Relaxed),
                s.count.load(Relaxed),
            );
            fence(Acquire);
            if s.seq.load(Relaxed) != seq {
                return None;
            }
            let v6 = Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
            let vip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            let b = m.to_be_bytes();
            Some(ConflictSeen {
                slot,
                seq,
                vip,
                mac: [b[2], b[3], b[4], b[5], b[6], b[7]],
                count,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_conflict_log_counts_pairs_and_gives_a_new_pair_the_least_seen_slot() {
        let log = ConflictLog::default();
        assert_eq!(log.seen().count(), 0);
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
        let v6 = IpAddr::V6("2001:2::100".parse().expect("address"));
        let mac = |n: u8| [2, 0, 0, 0, 0, n];
        log.record(v4, mac(1));
        log.record(v4, mac(1));
        log.record(v6, mac(1));
        let seen: Vec<_> = log.seen().map(|c| (c.vip, c.mac, c.count)).collect();
        assert_eq!(seen, [(v4, mac(1), 2), (v6, mac(1), 1)]);
        // Fill every slot, seen twice each but the IPv6 pair; the next new pair takes the
        // least seen slot (the IPv6 pair's), whose sequence changes.
        for n in 2..=CONFLICT_SLOTS as u8 - 1 {
            log.record(v4, mac(n));
            log.record(v4, mac(n));
        }
        let before: Vec<_> = log.seen().collect();
        assert_eq!(before.len(), CONFLICT_SLOTS);
        log.record(v4, mac(0xee));
        let after: Vec<_> = log.seen().collect();
        let taken = after
            .iter()
            .find(|c| c.mac == mac(0xee))
            .expect("the new pair");
        assert_eq!((taken.slot, taken.count), (1, 1));
        assert_ne!(taken.seq, before[1].seq, "another pair in slot 1");
        assert!(
            after.iter().all(|c| c.vip != v6),
            "the least seen made room"
        );
        assert_eq!(after[0], before[0], "the others unchanged");
    }
}
