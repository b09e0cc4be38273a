//! Per-worker counters: written by one worker, readable by any thread at any time.
//!
//! Each counter is an `AtomicU64` updated with a relaxed load and store. With a single
//! writer that is exact, and on x86-64 it compiles to plain moves: no locked instruction
//! on the packet path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
}

impl DropReason {
    /// How many reasons there are.
    pub const COUNT: usize = 19;
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
    /// The last VIP conflict seen: the VIP (as a `u32`) and the MAC that claimed it (the
    /// low 48 bits), for the control plane's log.
    pub conflict_vip: Counter,
    /// See `conflict_vip`.
    pub conflict_mac: Counter,
    /// Packets forwarded by the stateless fallback, without a table entry, because the
    /// connection table was full (counted in `tx` too).
    pub stateless: Counter,
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
            stateless: Counter::default(),
            conflict_vip: Counter::default(),
            conflict_mac: Counter::default(),
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
