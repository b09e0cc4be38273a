//! The connection table: (protocol, client IP, client port, VIP, VIP port) -> real server,
//! with TCP state and a coarse last-seen time.
//!
//! - **Fixed capacity**, chosen at start: every slot is allocated up front, so neither
//!   insert nor lookup allocates. There are at least 4/3 as many slots as the capacity
//!   (load factor <= 0.75), rounded up to a multiple of 16 (not to a power of two: the
//!   home slot is the hash scaled to the slot count, so 10M connections take 13.4M slots,
//!   not 16.8M). An [`Entry`] is 32 bytes for IPv4 (half a cache line: in memory aligned
//!   to a page, as the director provides, a hit reads one line) and 64 for IPv6 (one line).
//! - **A tag array probed first**: one byte per slot, zero for an empty slot, else seven
//!   bits of the key's hash. A lookup walks the tags of its probe run and reads an entry
//!   only where the tag matches: a miss (every new connection's first packet) touches no
//!   entry line at all, and 64 slots' tags share one line.
//! - **One table per address family**: the table is generic over its [`Family`]
//!   (`Ipv4Addr`, `Ipv6Addr`); a worker keeps one of each, sharing one set of [`Loads`].
//! - **The memory is the caller's** ([`SlotMemory`]): the director maps it itself (page
//!   aligned, in huge pages where the host reserves them); tests use the heap ([`Heap`]).
//! - **Open addressing with linear probing** and backward-shift deletion (no tombstones).
//! - **Seeded hash**: the shell picks a random seed so that crafted flows cannot aim at
//!   one probe chain.
//! - **Coarse time**: an entry keeps when it was last seen in [`TICK_NANOS`] ticks
//!   (1.048576 ms, a shift of the nanosecond clock) in 32 bits that wrap every 52 days;
//!   ages are taken modulo 2^32, so a timeout is capped at [`MAX_TIMEOUT`] (about 13
//!   days), and expiry is exact to a tick.
//! - **Expiry is incremental**: [`ConnTable::expire`] examines at most `budget` slots per
//!   call from a sweeping cursor; a lookup that meets an expired entry removes it on the
//!   spot, so a connection's own expiry never depends on how fast the sweep goes.
//! - **Persistence templates** (IPVS's) live in the same table, flagged, keyed by the
//!   masked client address with client port 0. A template lives while connections it
//!   controls live, and for its timeout after the last of them ended. A dead connection
//!   releases its template when it is removed (by a lookup or the sweep), dated from when
//!   it actually expired: a template can outlive its timeout by at most one sweep period.
//! - **Loads**: ActiveConn (ESTABLISHED) / InActConn (everything else) and persistent
//!   templates per real server are kept exact by the table itself, in atomics the control
//!   plane may read at any time (single writer: the worker that owns the table).

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::hash::fold_mul;
use crate::hash::mix64;
use crate::model::{prefix_mask, Protocol};
use crate::scheduler::Load;
use crate::tcp::{next_state_dir, Dir, State, Timeouts};
use crate::Time;

/// A stable reference to a real server of a service: its slot in the director's
/// real-server table and the generation of that slot (a slot reused for another real
/// server gets a new generation, so old connections never reach the new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DestRef {
    /// Slot index (below [`MAX_DEST_SLOTS`] in a table entry).
    pub slot: u32,
    /// Generation of the slot.
    pub gen: u32,
}

/// Real-server slots an entry can name (it keeps the slot in 16 bits).
pub const MAX_DEST_SLOTS: usize = 1 << 16;

/// An address family a connection table can hold: `Ipv4Addr` or `Ipv6Addr`.
pub trait Family:
    Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static
{
    /// The address as stored: `u32` or `u128`.
    type Raw: Copy + Eq + fmt::Debug + Send + Sync;
    /// The all-zero raw address.
    const ZERO: Self::Raw;
    /// Bits in an address (the longest persistence prefix).
    const BITS: u8;
    /// The raw form.
    fn raw(self) -> Self::Raw;
    /// Back from the raw form.
    fn from_raw(r: Self::Raw) -> Self;
    /// `r` with only its first `prefix_len` bits kept.
    fn mask(r: Self::Raw, prefix_len: u8) -> Self::Raw;
    /// The two addresses folded into one 64-bit word for the table's hash.
    fn fold(client: Self::Raw, vip: Self::Raw) -> u64;
    /// As an `IpAddr`.
    fn ip(self) -> IpAddr;
}

impl Family for Ipv4Addr {
    type Raw = u32;
    const ZERO: u32 = 0;
    const BITS: u8 = 32;
    #[inline]
    fn raw(self) -> u32 {
        u32::from(self)
    }
    #[inline]
    fn from_raw(r: u32) -> Ipv4Addr {
        Ipv4Addr::from(r)
    }
    #[inline]
    fn mask(r: u32, prefix_len: u8) -> u32 {
        r & prefix_mask(prefix_len)
    }
    #[inline]
    fn fold(client: u32, vip: u32) -> u64 {
        (u64::from(client) << 32) | u64::from(vip)
    }
    fn ip(self) -> IpAddr {
        IpAddr::V4(self)
    }
}

impl Family for Ipv6Addr {
    type Raw = u128;
    const ZERO: u128 = 0;
    const BITS: u8 = 128;
    #[inline]
    fn raw(self) -> u128 {
        u128::from(self)
    }
    #[inline]
    fn from_raw(r: u128) -> Ipv6Addr {
        Ipv6Addr::from(r)
    }
    #[inline]
    fn mask(r: u128, prefix_len: u8) -> u128 {
        match prefix_len {
            0 => 0,
            p if p >= 128 => r,
            p => r & (u128::MAX << (128 - u32::from(p))),
        }
    }
    #[inline]
    fn fold(client: u128, vip: u128) -> u64 {
        // Every bit of the client reaches the word through the mix; the VIP (a handful
        // of values) is folded in plainly.
        fold_mul(
            client as u64 ^ 0x9E37_79B9_7F4A_7C15,
            (client >> 64) as u64 | 1,
        ) ^ mix64(vip as u64 ^ (vip >> 64) as u64)
    }
    fn ip(self) -> IpAddr {
        IpAddr::V6(self)
    }
}

impl<A: Family> ConnKey<A> {
    /// The key with its addresses as `IpAddr`.
    pub fn any(&self) -> ConnKey<IpAddr> {
        ConnKey {
            proto: self.proto,
            client: self.client.ip(),
            cport: self.cport,
            vip: self.vip.ip(),
            vport: self.vport,
        }
    }
}

/// A connection's identity (IPv4 unless said otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey<A = Ipv4Addr> {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Client address.
    pub client: A,
    /// Client port.
    pub cport: u16,
    /// Virtual IP.
    pub vip: A,
    /// Virtual port.
    pub vport: u16,
}

/// An entry's `meta` byte: the state in bits 0-3, two flags, the protocol in bits 6-7
/// (0 for an empty slot).
const M_STATE: u8 = 0x0F;
const M_TEMPLATE: u8 = 0x10;
const M_PERSISTENT: u8 = 0x20;
const M_PROTO_SHIFT: u8 = 6;
/// The bits of `meta` that are part of the key: the protocol and the template flag.
const M_KEY: u8 = 0xC0 | M_TEMPLATE;
const _: () = assert!(State::COUNT <= 16);

const fn proto_code(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 1,
        Protocol::Udp => 2,
    }
}

/// The length of a tick of the coarse clock entries keep: 2^20 ns (1.048576 ms).
pub const TICK_NANOS: u64 = 1 << TICK_SHIFT;
const TICK_SHIFT: u32 = 20;
/// The longest timeout an entry can have: 2^30 ticks (about 13 days). Longer ones are
/// cut to this (ages are taken modulo 2^32 ticks).
pub const MAX_TIMEOUT: Duration = Duration::from_nanos((1u64 << 30) << TICK_SHIFT);
const MAX_TIMEOUT_TICKS: u32 = 1 << 30;

/// `now` on the coarse clock of entries (wrapping every 2^32 ticks, about 52 days).
#[inline]
pub const fn tick(now: Time) -> u32 {
    (now.as_nanos() >> TICK_SHIFT) as u32
}

/// A duration in whole ticks, rounded up and capped at [`MAX_TIMEOUT`].
#[inline]
fn ticks_of(nanos: u64) -> u32 {
    let t = nanos.div_ceil(TICK_NANOS);
    t.min(u64::from(MAX_TIMEOUT_TICKS)) as u32
}

/// How many ticks `then` is before `now` (negative when it is after: a synchronised
/// connection's last-seen time may be ahead).
#[inline]
fn age(now: u32, then: u32) -> i64 {
    i64::from(now.wrapping_sub(then) as i32)
}

/// The later of two tick times (modulo 2^32).
#[inline]
fn later(a: u32, b: u32) -> u32 {
    if age(a, b) >= 0 {
        a
    } else {
        b
    }
}

/// The packed key as stored and hashed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed<A: Family> {
    client: A::Raw,
    vip: A::Raw,
    cport: u16,
    vport: u16,
    /// The `meta` bits of the key ([`M_KEY`]).
    meta: u8,
}

impl<A: Family> Packed<A> {
    #[inline]
    fn of(k: &ConnKey<A>, template: bool) -> Packed<A> {
        Packed {
            client: k.client.raw(),
            vip: k.vip.raw(),
            cport: k.cport,
            vport: k.vport,
            meta: (proto_code(k.proto) << M_PROTO_SHIFT) | if template { M_TEMPLATE } else { 0 },
        }
    }
}

/// One slot of the table: 32 bytes for IPv4, 64 for IPv6.
///
/// The key, state, flags, real server and last-seen time come first (24 bytes for
/// IPv4, 48 for IPv6); the last 8 are a template's (how many connections it controls,
/// and its timeout in milliseconds) or a connection's (the MAC its client's packets come
/// from, for NAT's replies). No per-connection counters: IPVS shows none either.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Entry<A: Family = Ipv4Addr> {
    client: A::Raw,
    vip: A::Raw,
    cport: u16,
    vport: u16,
    /// State, flags and protocol (see `M_*`); 0 marks an empty slot.
    meta: u8,
    /// Persistence prefix length (templates and the connections they control).
    prefix: u8,
    /// The real server's slot.
    slot: u16,
    /// The real server slot's generation.
    gen: u32,
    /// When a packet was last seen, in ticks ([`tick`]).
    last_seen: u32,
    /// A template's: connections it controls. A connection's: the first four bytes of
    /// its client side's MAC (see [`ConnTable::set_hop`]).
    controlled: u32,
    /// A template's: its timeout, ms. A connection's: the last two bytes of that MAC.
    template_timeout_ms: u32,
}

const _: () = assert!(std::mem::size_of::<Entry<Ipv4Addr>>() == 32);
const _: () = assert!(std::mem::size_of::<Entry<Ipv6Addr>>() == 64);

impl<A: Family> Entry<A> {
    /// The empty slot. Every field is an integer and the empty slot is all zero bytes,
    /// so memory of all zero bytes is a valid array of empty entries (the shell may hand
    /// the table lazily zeroed pages: see [`ConnTable::with_memory`]).
    pub const EMPTY: Entry<A> = Entry {
        client: A::ZERO,
        vip: A::ZERO,
        cport: 0,
        vport: 0,
        meta: 0,
        prefix: 0,
        slot: 0,
        gen: 0,
        last_seen: 0,
        controlled: 0,
        template_timeout_ms: 0,
    };

    #[inline]
    fn occupied(&self) -> bool {
        self.meta != 0
    }

    #[inline]
    fn matches(&self, k: &Packed<A>) -> bool {
        self.client == k.client
            && self.vip == k.vip
            && self.cport == k.cport
            && self.vport == k.vport
            && self.meta & M_KEY == k.meta
    }

    #[inline]
    fn packed(&self) -> Packed<A> {
        Packed {
            client: self.client,
            vip: self.vip,
            cport: self.cport,
            vport: self.vport,
            meta: self.meta & M_KEY,
        }
    }

    fn protocol(&self) -> Protocol {
        match self.meta >> M_PROTO_SHIFT {
            2 => Protocol::Udp,
            _ => Protocol::Tcp,
        }
    }

    /// The connection's key (for a template: masked client, client port 0).
    pub fn key(&self) -> ConnKey<A> {
        ConnKey {
            proto: self.protocol(),
            client: A::from_raw(self.client),
            cport: self.cport,
            vip: A::from_raw(self.vip),
            vport: self.vport,
        }
    }
    /// The real server.
    #[inline]
    pub fn dest(&self) -> DestRef {
        DestRef {
            slot: u32::from(self.slot),
            gen: self.gen,
        }
    }
    /// The state.
    #[inline]
    pub fn state(&self) -> State {
        State::from_u8(self.meta & M_STATE)
    }
    #[inline]
    fn set_state(&mut self, s: State) {
        self.meta = (self.meta & !M_STATE) | (s as u8 & M_STATE);
    }
    /// When a packet was last seen (for a template: when it was last used or released),
    /// on the coarse clock of [`tick`].
    pub fn last_seen_tick(&self) -> u32 {
        self.last_seen
    }
    /// A persistence template rather than a connection.
    #[inline]
    pub fn is_template(&self) -> bool {
        self.meta & M_TEMPLATE != 0
    }
    /// Controlled by a persistence template.
    #[inline]
    pub fn is_persistent(&self) -> bool {
        self.meta & M_PERSISTENT != 0
    }
    /// For a template: how many connections it controls.
    pub fn controlled(&self) -> u64 {
        if self.is_template() {
            u64::from(self.controlled)
        } else {
            0
        }
    }
    /// For a template: its persistence prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }
}

impl<A: Family> fmt::Debug for Entry<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("template", &self.is_template())
            .field("dest", &self.dest())
            .field("state", &self.state())
            .field("last_seen", &self.last_seen)
            .field("controlled", &self.controlled)
            .field("template_timeout_ms", &self.template_timeout_ms)
            .finish()
    }
}

/// Per-real-server counts kept by the table (readable from any thread).
#[derive(Debug, Default)]
pub struct DestLoad {
    gen: AtomicU32,
    active: AtomicU32,
    inactive: AtomicU32,
    persist: AtomicU32,
}

/// The load counters of every real-server slot, shared read-only with the control plane.
#[derive(Debug)]
pub struct Loads {
    slots: Box<[DestLoad]>,
}

impl Loads {
    fn new(n: usize) -> Loads {
        Loads {
            slots: (0..n).map(|_| DestLoad::default()).collect(),
        }
    }

    /// ActiveConn/InActConn of `dest` (zero if the slot now belongs to another generation).
    #[inline]
    pub fn load(&self, dest: DestRef) -> Load {
        match self.slots.get(dest.slot as usize) {
            Some(l) if l.gen.load(Relaxed) == dest.gen => Load {
                active: l.active.load(Relaxed),
                inactive: l.inactive.load(Relaxed),
            },
            _ => Load::default(),
        }
    }

    /// Persistence templates pointing at `dest` (ipvsadm's PersistConn).
    pub fn persistent(&self, dest: DestRef) -> u32 {
        match self.slots.get(dest.slot as usize) {
            Some(l) if l.gen.load(Relaxed) == dest.gen => l.persist.load(Relaxed),
            _ => 0,
        }
    }

    /// Applies `delta` to one counter of `dest`. `claim` (used when binding a new entry)
    /// takes over a slot from an older generation and zeroes it.
    fn adjust(&self, dest: DestRef, which: Which, delta: i32, claim: bool) {
        let Some(l) = self.slots.get(dest.slot as usize) else {
            return;
        };
        if l.gen.load(Relaxed) != dest.gen {
            if !claim {
                return; // an entry of a removed real server: its counts are gone
            }
            l.gen.store(dest.gen, Relaxed);
            l.active.store(0, Relaxed);
            l.inactive.store(0, Relaxed);
            l.persist.store(0, Relaxed);
        }
        let c = match which {
            Which::Active => &l.active,
            Which::Inactive => &l.inactive,
            Which::Persist => &l.persist,
        };
        // Single writer: a plain read-modify-write, no locked instruction needed.
        c.store(c.load(Relaxed).saturating_add_signed(delta), Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Active,
    Inactive,
    Persist,
}

fn which<A: Family>(e: &Entry<A>) -> Which {
    if e.is_template() {
        Which::Persist
    } else if e.state().is_active() {
        Which::Active
    } else {
        Which::Inactive
    }
}

/// The table is full: the new connection was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection table full")]
pub struct TableFull;

/// A bad table size, or no memory for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnTableError {
    /// Capacity 0 or larger than the table can index.
    #[error("connection table capacity {0} is out of range: use 1 to 1073741824 entries")]
    Capacity(usize),
    /// More real-server slots than an entry can name.
    #[error("{0} real-server slots is more than a connection table can name ({MAX_DEST_SLOTS})")]
    Dests(usize),
    /// The memory for the slots could not be had.
    #[error("no memory for a connection table of {bytes} bytes ({reason}): lower --conn-capacity")]
    Memory {
        /// What was asked.
        bytes: usize,
        /// Why it failed.
        reason: String,
    },
}

/// The memory of a table's `n` slots: `n` entries and `n` tags, all zero when handed to
/// the table (all-zero bytes are empty entries and empty tags).
pub trait SlotMemory<A: Family>: Send {
    /// The entries.
    fn entries(&self) -> &[Entry<A>];
    /// The tags.
    fn tags(&self) -> &[u8];
    /// Both, to change.
    fn split_mut(&mut self) -> (&mut [Entry<A>], &mut [u8]);
}

/// Slots on the heap (tests, tools; the director maps its own).
#[derive(Debug)]
pub struct Heap<A: Family> {
    entries: Box<[Entry<A>]>,
    tags: Box<[u8]>,
}

impl<A: Family> Heap<A> {
    /// `n` empty slots.
    pub fn new(n: usize) -> Heap<A> {
        Heap {
            entries: vec![Entry::EMPTY; n].into_boxed_slice(),
            tags: vec![0; n].into_boxed_slice(),
        }
    }
}

impl<A: Family> SlotMemory<A> for Heap<A> {
    #[inline]
    fn entries(&self) -> &[Entry<A>] {
        &self.entries
    }
    #[inline]
    fn tags(&self) -> &[u8] {
        &self.tags
    }
    #[inline]
    fn split_mut(&mut self) -> (&mut [Entry<A>], &mut [u8]) {
        (&mut self.entries, &mut self.tags)
    }
}

/// The connection table of one worker for one address family (IPv4 unless said), in
/// memory `M`.
pub struct ConnTable<A: Family = Ipv4Addr, M: SlotMemory<A> = Heap<A>> {
    mem: M,
    n: usize,
    len: usize,
    capacity: usize,
    cursor: usize,
    seeds: (u64, u64),
    timeouts: Timeouts,
    /// The timeouts in ticks, by state.
    ticks: [u32; State::COUNT],
    loads: Arc<Loads>,
    evictions: u64,
    _family: std::marker::PhantomData<A>,
}

/// Slots examined from a new entry's home slot for a half-open connection to evict
/// when the table is full.
pub const EVICT_SCAN: usize = 32;

impl<A: Family, M: SlotMemory<A>> fmt::Debug for ConnTable<A, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("slots", &self.n)
            .finish()
    }
}

/// Bytes of memory per IPv4 table slot (an [`Entry`] and its tag).
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry<Ipv4Addr>>() + 1;
/// Bytes of memory per IPv6 table slot.
pub const ENTRY_BYTES_V6: usize = std::mem::size_of::<Entry<Ipv6Addr>>() + 1;

impl ConnTable<Ipv4Addr> {
    /// The largest capacity accepted (of either family's table).
    pub const MAX_CAPACITY: usize = 1 << 30;
    /// The default capacity (per worker and family).
    pub const DEFAULT_CAPACITY: usize = 1 << 20;
}

/// Where a lookup starts: a key's home slot and tag (see [`ConnTable::start`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start {
    slot: u32,
    tag: u8,
}

/// Tags [`ConnTable::landing`] reads at most (a lookup that goes on past them finds
/// its entry out of the cache, as it would without the prefetch).
pub const LANDING_SCAN: usize = 32;

/// The slots a table of `capacity` entries has: at least 4/3 of it (load factor
/// <= 0.75), a multiple of 16, at least 16.
pub fn slots_for(capacity: usize) -> usize {
    (capacity + capacity.div_ceil(3))
        .next_multiple_of(16)
        .max(16)
}

fn tick_timeouts(t: &Timeouts) -> [u32; State::COUNT] {
    let mut out = [0; State::COUNT];
    for s in State::ALL {
        out[s as usize] = ticks_of(t.nanos(s));
    }
    out
}

/// The tag of a hash: seven bits the home slot does not depend on, with the top bit set
/// (an empty slot's is 0).
#[inline]
fn tag_of(h: u64) -> u8 {
    ((h >> 32) as u8) | 0x80
}

impl<A: Family> ConnTable<A> {
    /// A table for `capacity` entries and real-server slots `0..max_dests`, with a hash
    /// `seed` (random in production, fixed in tests), on the heap.
    pub fn new(
        capacity: usize,
        max_dests: usize,
        timeouts: Timeouts,
        seed: u64,
    ) -> Result<ConnTable<A>, ConnTableError> {
        Self::with_memory(capacity, max_dests, timeouts, seed, |n| Ok(Heap::new(n)))
    }
}

impl<A: Family, M: SlotMemory<A>> ConnTable<A, M> {
    /// Like [`ConnTable::new`], but the caller provides the memory: `alloc(n)` returns
    /// `n` empty slots (e.g. page-aligned, in huge pages, or lazily zeroed so that a
    /// table nobody uses costs no memory). Memory of another size is refused.
    pub fn with_memory(
        capacity: usize,
        max_dests: usize,
        timeouts: Timeouts,
        seed: u64,
        alloc: impl FnOnce(usize) -> Result<M, String>,
    ) -> Result<ConnTable<A, M>, ConnTableError> {
        if capacity == 0 || capacity > ConnTable::MAX_CAPACITY {
            return Err(ConnTableError::Capacity(capacity));
        }
        if max_dests > MAX_DEST_SLOTS {
            return Err(ConnTableError::Dests(max_dests));
        }
        let n = slots_for(capacity);
        let bytes = n * (std::mem::size_of::<Entry<A>>() + 1);
        let mem = alloc(n).map_err(|reason| ConnTableError::Memory { bytes, reason })?;
        if mem.entries().len() != n || mem.tags().len() != n {
            return Err(ConnTableError::Memory {
                bytes,
                reason: format!(
                    "{} entries and {} tags were given for {n} slots",
                    mem.entries().len(),
                    mem.tags().len()
                ),
            });
        }
        Ok(ConnTable {
            mem,
            n,
            len: 0,
            capacity,
            cursor: 0,
            seeds: (
                crate::hash::mix64(seed),
                crate::hash::mix64(seed ^ 0xA5A5_5A5A_C3C3_3C3C),
            ),
            ticks: tick_timeouts(&timeouts),
            timeouts,
            loads: Arc::new(Loads::new(max_dests)),
            evictions: 0,
            _family: std::marker::PhantomData,
        })
    }

    /// Keeps this table's real-server counts in `loads` from now on (those of another
    /// family's table of the same worker: one set of counts per worker). Call it before
    /// the first insert.
    pub fn share_loads(&mut self, loads: Arc<Loads>) {
        debug_assert!(self.is_empty());
        self.loads = loads;
    }

    /// The memory the slots live in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Bytes this table occupies (entries and tags).
    pub fn memory_bytes(&self) -> usize {
        self.n * (std::mem::size_of::<Entry<A>>() + 1)
    }

    /// Entries in use (connections and templates).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no entry is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Changes timeouts (applies to every entry from now on).
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
        self.ticks = tick_timeouts(&t);
    }

    /// The per-real-server counts, shareable with the control plane.
    pub fn loads(&self) -> &Arc<Loads> {
        &self.loads
    }

    /// ActiveConn/InActConn of `dest`.
    #[inline]
    pub fn load(&self, dest: DestRef) -> Load {
        self.loads.load(dest)
    }

    #[inline]
    fn hash(&self, k: &Packed<A>) -> u64 {
        let a = A::fold(k.client, k.vip);
        let b = (u64::from(k.cport) << 32) | (u64::from(k.vport) << 16) | u64::from(k.meta);
        fold_mul(a ^ self.seeds.0, b ^ self.seeds.1)
    }

    /// The home slot of a hash: its low 32 bits (the best mixed) scaled to the slot
    /// count (fewer than 2^32).
    #[inline]
    fn home_of(&self, h: u64) -> usize {
        (((h & 0xFFFF_FFFF) * self.n as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.n {
            0
        } else {
            i + 1
        }
    }

    #[inline(always)]
    fn find(&self, k: &Packed<A>) -> Option<usize> {
        let h = self.hash(k);
        let tag = tag_of(h);
        let (entries, tags) = (self.mem.entries(), self.mem.tags());
        let mut i = self.home_of(h);
        loop {
            let t = tags[i];
            if t == 0 {
                return None;
            }
            if t == tag && entries[i].matches(k) {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// The timeout of `e` in ticks, or `None` while it cannot expire.
    #[inline]
    fn timeout_ticks(&self, e: &Entry<A>) -> Option<u32> {
        if e.is_template() {
            (e.controlled == 0).then(|| ticks_of(u64::from(e.template_timeout_ms) * 1_000_000))
        } else {
            Some(self.ticks[(e.meta & M_STATE) as usize % State::COUNT])
        }
    }

    #[inline]
    fn expired(&self, e: &Entry<A>, now: u32) -> bool {
        match self.timeout_ticks(e) {
            Some(t) => age(now, e.last_seen) > i64::from(t),
            None => false,
        }
    }

    /// Finds the live connection for `key`. An expired entry found on the way is removed
    /// and reported as absent. The returned index stays valid until the next call that
    /// removes entries (`lookup*`, `remove`, `expire`).
    #[inline]
    pub fn lookup(&mut self, key: &ConnKey<A>, now: Time) -> Option<usize> {
        self.lookup_packed(&Packed::of(key, false), now)
    }

    /// Finds the live persistence template for `(proto, client, vip, vport)` masked to
    /// `prefix_len` bits of client address.
    pub fn lookup_template(
        &mut self,
        key: &ConnKey<A>,
        prefix_len: u8,
        now: Time,
    ) -> Option<usize> {
        self.lookup_packed(&Packed::of(&template_key(key, prefix_len), true), now)
    }

    #[inline(always)]
    fn lookup_packed(&mut self, k: &Packed<A>, now: Time) -> Option<usize> {
        let i = self.find(k)?;
        if self.expired(&self.mem.entries()[i], tick(now)) {
            self.remove(i, now);
            return None;
        }
        Some(i)
    }

    /// Finds the live connection for `key` without changing the table (an expired entry
    /// is absent, left for the sweep): what `lookup` finds, for `xdpvs explain`.
    pub fn peek(&self, key: &ConnKey<A>, now: Time) -> Option<usize> {
        self.peek_packed(&Packed::of(key, false), now)
    }

    /// Records traffic of connection `key` at `at` that this table did not see (an XDP
    /// fast path forwarded it, `run --offload`): its last-seen time moves to `at` if that
    /// is later, as a packet would have moved it; its state does not change. Returns
    /// whether the connection is here (an expired entry is not: it is left for the sweep).
    pub fn touch(&mut self, key: &ConnKey<A>, at: Time) -> bool {
        let Some(i) = self.peek(key, at) else {
            return false;
        };
        let e = self.entry_mut(i);
        e.last_seen = later(e.last_seen, tick(at));
        true
    }

    /// [`ConnTable::lookup_template`] without changing the table.
    pub fn peek_template(&self, key: &ConnKey<A>, prefix_len: u8, now: Time) -> Option<usize> {
        self.peek_packed(&Packed::of(&template_key(key, prefix_len), true), now)
    }

    fn peek_packed(&self, k: &Packed<A>, now: Time) -> Option<usize> {
        let i = self.find(k)?;
        (!self.expired(&self.mem.entries()[i], tick(now))).then_some(i)
    }

    /// Where a lookup of `key` starts (its home slot and tag), for a prefetch in two
    /// steps: [`ConnTable::start_tag`] before the tags are at hand, then
    /// [`ConnTable::landing`] once they are. A worker with a batch of frames takes the
    /// first step for every frame, then the second, then processes them, so that the
    /// cache misses of the batch overlap. At a load of 0.75 a lookup ends past its
    /// home's line one time in three (an insert more often still), so that a fixed guess
    /// of lines loads some in vain and misses others (docs/ARCHITECTURE.md has the
    /// figures of the three lines this replaced).
    #[inline]
    pub fn start(&self, key: &ConnKey<A>) -> Start {
        let h = self.hash(&Packed::of(key, false));
        Start {
            slot: self.home_of(h) as u32,
            tag: tag_of(h),
        }
    }

    /// The tag of a lookup's home slot (64 slots' tags share a line).
    #[inline]
    pub fn start_tag(&self, s: Start) -> &u8 {
        &self.mem.tags()[(s.slot as usize).min(self.n - 1)]
    }

    /// The entry a lookup from `s` will read last, judged by the tags alone: the first
    /// slot with its tag (its connection, but for one tag in 128 of another), or the
    /// first empty one (where a new connection goes). A slot [`LANDING_SCAN`] past the
    /// home if neither comes before.
    #[inline]
    pub fn landing(&self, s: Start) -> &Entry<A> {
        let tags = self.mem.tags();
        let mut i = (s.slot as usize).min(self.n - 1);
        for _ in 0..LANDING_SCAN {
            let t = tags[i];
            if t == 0 || t == s.tag {
                break;
            }
            i = self.next(i);
        }
        &self.mem.entries()[i]
    }

    /// The entry at `idx` (from a lookup or insert).
    #[inline]
    pub fn entry(&self, idx: usize) -> &Entry<A> {
        &self.mem.entries()[idx]
    }

    #[inline]
    fn entry_mut(&mut self, idx: usize) -> &mut Entry<A> {
        &mut self.mem.split_mut().0[idx]
    }

    /// Half-open connections (a SYN seen, nothing since) evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Makes room in a full table for an entry whose home slot is `home`: removes the
    /// first half-open connection (SYN_RECV, or a TCP entry in no state yet) among the
    /// [`EVICT_SCAN`] slots from there. Established connections, closing ones, UDP
    /// flows and templates are never evicted.
    fn evict_half_open(&mut self, home: usize, now: Time) -> bool {
        let mut j = home;
        for _ in 0..EVICT_SCAN.min(self.n) {
            let e = &self.mem.entries()[j];
            let half_open = e.occupied()
                && !e.is_template()
                && matches!(e.state(), State::SynRecv | State::None)
                && e.protocol() == Protocol::Tcp;
            if half_open {
                self.remove(j, now);
                self.evictions += 1;
                return true;
            }
            j = self.next(j);
        }
        false
    }

    #[inline]
    fn place(&mut self, e: Entry<A>, now: Time) -> Result<(usize, bool), TableFull> {
        let h = self.hash(&e.packed());
        let home = self.home_of(h);
        let mut evicted = false;
        if self.len >= self.capacity {
            if !self.evict_half_open(home, now) {
                return Err(TableFull);
            }
            evicted = true;
        }
        let mut i = home;
        while self.mem.tags()[i] != 0 {
            debug_assert!(
                !self.mem.entries()[i].matches(&e.packed()),
                "duplicate insert"
            );
            i = self.next(i);
        }
        let (entries, tags) = self.mem.split_mut();
        entries[i] = e;
        tags[i] = tag_of(h);
        self.len += 1;
        self.loads.adjust(e.dest(), which(&e), 1, true);
        Ok((i, evicted))
    }

    /// Records a new connection to `dest` in `state`, seen at `now`. The key must not be
    /// live in the table (look it up first). `template` is the index of the persistence
    /// template controlling it, if any.
    #[inline]
    pub fn insert(
        &mut self,
        key: &ConnKey<A>,
        dest: DestRef,
        state: State,
        now: Time,
        template: Option<usize>,
    ) -> Result<usize, TableFull> {
        let k = Packed::of(key, false);
        let mut e = Entry {
            client: k.client,
            vip: k.vip,
            cport: k.cport,
            vport: k.vport,
            meta: k.meta | (state as u8 & M_STATE),
            prefix: 0,
            slot: dest_slot(dest),
            gen: dest.gen,
            last_seen: tick(now),
            controlled: 0,
            template_timeout_ms: 0,
        };
        if let Some(t) = template.filter(|&t| self.mem.entries()[t].is_template()) {
            e.meta |= M_PERSISTENT;
            e.prefix = self.mem.entries()[t].prefix;
        }
        let (i, evicted) = self.place(e, now)?;
        if e.is_persistent() {
            // `place` moved nothing unless it evicted: then find the template again.
            let t = match template {
                Some(_) if evicted => {
                    let tk = template_key(key, e.prefix);
                    self.find(&Packed::of(&tk, true))
                }
                t => t,
            };
            if let Some(t) = t {
                let tpl = self.entry_mut(t);
                tpl.controlled += 1;
                tpl.last_seen = later(tpl.last_seen, tick(now));
            }
        }
        Ok(i)
    }

    /// Records a persistence template: clients of `key.client` masked to `prefix_len`
    /// bits go to `dest` for `timeout` after the last connection it controls.
    pub fn insert_template(
        &mut self,
        key: &ConnKey<A>,
        prefix_len: u8,
        dest: DestRef,
        timeout: Duration,
        now: Time,
    ) -> Result<usize, TableFull> {
        let k = Packed::of(&template_key(key, prefix_len), true);
        let placed = self.place(
            Entry {
                client: k.client,
                vip: k.vip,
                cport: 0,
                vport: k.vport,
                meta: k.meta | State::None as u8,
                prefix: prefix_len.min(A::BITS),
                slot: dest_slot(dest),
                gen: dest.gen,
                last_seen: tick(now),
                controlled: 0,
                template_timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            },
            now,
        );
        placed.map(|(i, _)| i)
    }

    /// Accounts one packet on connection `idx` at `now`; for TCP `tcp_flags` (byte 13 of
    /// the header) drives the state machine. Returns the new state.
    #[inline]
    pub fn seen(&mut self, idx: usize, now: Time, tcp_flags: Option<u8>) -> State {
        self.seen_dir(idx, now, tcp_flags, Dir::InputOnly)
    }

    /// [`ConnTable::seen`] for a segment going `dir` (NAT sees both directions).
    #[inline(always)]
    pub fn seen_dir(&mut self, idx: usize, now: Time, tcp_flags: Option<u8>, dir: Dir) -> State {
        let e = self.entry_mut(idx);
        e.last_seen = tick(now);
        let old = e.state();
        let Some(f) = tcp_flags else { return old };
        let new = next_state_dir(old, f, dir);
        if new != old {
            e.set_state(new);
            if new.is_active() != old.is_active() {
                let d = e.dest();
                let (from, to) = if new.is_active() {
                    (Which::Inactive, Which::Active)
                } else {
                    (Which::Active, Which::Inactive)
                };
                self.loads.adjust(d, from, -1, false);
                self.loads.adjust(d, to, 1, false);
            }
        }
        new
    }

    /// Takes what another director synchronised about entry `idx` (as IPVS's backup
    /// does in `ip_vs_proc_conn`): a connection's state, and for either kind `timeout`
    /// left from `now`. A connection keeps that timeout until a packet is seen here,
    /// when this director's timeout of its state takes over (IPVS likewise resets it at
    /// the next state transition); its last-seen time is moved so that the state's
    /// timeout here ends then.
    pub fn sync_update(&mut self, idx: usize, state: State, timeout: Duration, now: Time) {
        let want = i64::from(ticks_of(
            u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
        ));
        let local = i64::from(self.ticks[state as usize]);
        let e = self.entry_mut(idx);
        if !e.occupied() {
            return;
        }
        if e.is_template() {
            e.template_timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            e.last_seen = later(e.last_seen, tick(now));
            return;
        }
        let before = which(e);
        e.set_state(state);
        // Both timeouts are at most 2^30 ticks: the shift stays within the clock's range.
        e.last_seen = (i64::from(tick(now)) + want - local) as u32;
        let after = which(e);
        if before != after {
            let d = e.dest();
            self.loads.adjust(d, before, -1, false);
            self.loads.adjust(d, after, 1, false);
        }
    }

    /// Records the MAC that connection `idx`'s client packets come from (the client, or
    /// the router in front of it): NAT replies are sent back there. A connection's entry
    /// keeps it where a template keeps its count and timeout.
    #[inline]
    pub fn set_hop(&mut self, idx: usize, mac: [u8; 6]) {
        let e = self.entry_mut(idx);
        if e.is_template() {
            return;
        }
        e.controlled = u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
        e.template_timeout_ms = u32::from(u16::from_ne_bytes([mac[4], mac[5]]));
    }

    /// The MAC [`ConnTable::set_hop`] recorded for connection `idx` (zero if none).
    #[inline]
    pub fn hop(&self, idx: usize) -> [u8; 6] {
        let e = self.entry(idx);
        if e.is_template() {
            return [0; 6];
        }
        let a = e.controlled.to_ne_bytes();
        let b = (e.template_timeout_ms as u16).to_ne_bytes();
        [a[0], a[1], a[2], a[3], b[0], b[1]]
    }

    /// Removes entry `idx` at `now`, releasing its template if it has one.
    pub fn remove(&mut self, idx: usize, now: Time) {
        let e = self.mem.entries()[idx];
        if !e.occupied() {
            return;
        }
        self.loads.adjust(e.dest(), which(&e), -1, false);
        self.delete_slot(idx);
        self.len -= 1;
        if e.is_persistent() {
            // The connection ended when it expired, or now if it is removed while alive:
            // the template's own timeout counts from then, however late the sweep came.
            let now_t = tick(now);
            let ended = match self.timeout_ticks(&e) {
                Some(t) if age(now_t, e.last_seen) > i64::from(t) => e.last_seen.wrapping_add(t),
                _ => now_t,
            };
            let tk = template_key(&e.key(), e.prefix);
            if let Some(t) = self.find(&Packed::of(&tk, true)) {
                let tpl = self.entry_mut(t);
                tpl.controlled = tpl.controlled.saturating_sub(1);
                tpl.last_seen = later(tpl.last_seen, ended);
            }
        }
    }

    /// Backward-shift deletion: pulls later members of the probe run into the hole.
    fn delete_slot(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = self.next(j);
            if self.mem.tags()[j] == 0 {
                break;
            }
            let e = self.mem.entries()[j];
            let home = self.home_of(self.hash(&e.packed()));
            // `e` may move into the hole only if its home is not cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                let (entries, tags) = self.mem.split_mut();
                entries[hole] = e;
                tags[hole] = tags[j];
                hole = j;
            }
        }
        let (entries, tags) = self.mem.split_mut();
        entries[hole] = Entry::EMPTY;
        tags[hole] = 0;
    }

    /// Examines at most `budget` slots from the sweep cursor and removes expired entries.
    /// Returns how many were removed. Call it regularly from the worker loop.
    ///
    /// A template that cannot expire (it controls connections) and was last used more
    /// than half the clock's range ago is dated half the range back, so that its age
    /// never wraps around.
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        self.expire_with(now, budget, |_| ())
    }

    /// [`ConnTable::expire`], telling `gone` about each entry it removes (before it goes).
    pub fn expire_with(
        &mut self,
        now: Time,
        budget: usize,
        mut gone: impl FnMut(&Entry<A>),
    ) -> usize {
        let now_t = tick(now);
        let mut removed = 0;
        for _ in 0..budget {
            let i = self.cursor;
            if self.mem.tags()[i] == 0 {
                self.cursor = self.next(i);
                continue;
            }
            let e = self.mem.entries()[i];
            if self.expired(&e, now_t) {
                gone(&e);
                // The slot may now hold a shifted entry: look at it again next round.
                self.remove(i, now);
                removed += 1;
                continue;
            }
            if e.is_template() && age(now_t, e.last_seen) > i64::from(MAX_TIMEOUT_TICKS) {
                self.entry_mut(i).last_seen = now_t.wrapping_sub(MAX_TIMEOUT_TICKS);
            }
            self.cursor = self.next(i);
        }
        removed
    }

    /// Number of slots (one full sweep is this many examined slots).
    pub fn slot_count(&self) -> usize {
        self.n
    }

    /// Every entry in use (connections and templates), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<A>> + '_ {
        self.mem.entries().iter().filter(|e| e.occupied())
    }

    /// How long `e` has left to live at `now` if nothing is seen on it (a template that
    /// still controls connections: its whole timeout). Exact to a tick.
    pub fn expires_in(&self, e: &Entry<A>, now: Time) -> Duration {
        match self.timeout_ticks(e) {
            // A synchronised connection's last-seen time may be ahead of `now`.
            Some(t) => {
                let left = (i64::from(t) - age(tick(now), e.last_seen)).max(0);
                Duration::from_nanos((left as u64) << TICK_SHIFT)
            }
            None => Duration::from_millis(u64::from(e.template_timeout_ms)),
        }
    }

    /// Copies the entries in use among at most `max_slots` slots from `cursor` into
    /// `out`, stopping early when `out` is full (it never grows: bounded work and no
    /// allocation, so a worker can list its table a piece at a time between batches).
    /// Returns where to continue, or `None` once the end of the table is reached.
    ///
    /// Entries move only towards their home slot when others are deleted, so a listing
    /// done in pieces while the table changes may miss an entry that moved back across
    /// the cursor, or show one twice: a listing of a live table, as IPVS's is.
    pub fn list(
        &self,
        cursor: usize,
        max_slots: usize,
        now: Time,
        out: &mut Vec<Listed>,
    ) -> Option<usize> {
        let end = cursor.saturating_add(max_slots).min(self.n);
        for i in cursor..end {
            let e = &self.mem.entries()[i];
            if !e.occupied() {
                continue;
            }
            if out.len() == out.capacity() {
                return Some(i);
            }
            out.push(Listed {
                key: e.key().any(),
                dest: e.dest(),
                state: e.state(),
                template: e.is_template(),
                persistent: e.is_persistent(),
                controlled: e.controlled(),
                prefix_len: e.prefix,
                expires_in: self.expires_in(e, now),
            });
        }
        (end < self.n).then_some(end)
    }
}

/// A real server's slot as an entry keeps it.
#[inline]
fn dest_slot(d: DestRef) -> u16 {
    debug_assert!((d.slot as usize) < MAX_DEST_SLOTS);
    d.slot as u16
}

/// A connection-table entry as listed (of either family), with the time it has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The connection's key (for a template: masked client, client port 0).
    pub key: ConnKey<IpAddr>,
    /// The real server.
    pub dest: DestRef,
    /// The state.
    pub state: State,
    /// A persistence template rather than a connection.
    pub template: bool,
    /// Controlled by a persistence template.
    pub persistent: bool,
    /// For a template: how many connections it controls.
    pub controlled: u64,
    /// For a template (and the connections it controls): the persistence prefix length.
    pub prefix_len: u8,
    /// Time left before it expires if nothing is seen on it.
    pub expires_in: Duration,
}

/// The template key for a connection key: client masked, client port 0.
fn template_key<A: Family>(key: &ConnKey<A>, prefix_len: u8) -> ConnKey<A> {
    ConnKey {
        client: A::from_raw(A::mask(key.client.raw(), prefix_len)),
        cport: 0,
        ..*key
    }
}

#[cfg(test)]
mod tests;
