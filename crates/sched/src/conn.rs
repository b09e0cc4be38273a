//! The connection table: (protocol, client IP, client port, VIP, VIP port) -> real server,
//! with TCP state, last-seen time and per-connection counters.
//!
//! - **Fixed capacity**, chosen at start: every slot is allocated up front, so neither
//!   insert nor lookup allocates. The slot array is a power of two at least 4/3 of the
//!   capacity (load factor <= 0.75); an [`Entry`] is 48 bytes for IPv4 and 64 for IPv6.
//! - **One table per address family**: the table is generic over its [`Family`]
//!   (`Ipv4Addr`, `Ipv6Addr`), so IPv4 keeps its 48-byte entries while IPv6 entries hold
//!   two 16-byte addresses; a worker keeps one of each, sharing one set of [`Loads`].
//! - **Open addressing with linear probing** and backward-shift deletion (no tombstones):
//!   a hit usually costs one cache line.
//! - **Seeded hash**: the shell picks a random seed so that crafted flows cannot aim at
//!   one probe chain.
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
    /// Slot index.
    pub slot: u32,
    /// Generation of the slot.
    pub gen: u32,
}

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
    /// Bytes at the start of an entry that a packet of a live connection reads and writes.
    const HOT_BYTES: usize;
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
    const HOT_BYTES: usize = 32;
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
    const HOT_BYTES: usize = 56;
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

const F_TEMPLATE: u8 = 1;
const F_PERSISTENT: u8 = 2;

/// The packed key as stored and hashed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed<A: Family> {
    client: A::Raw,
    vip: A::Raw,
    cport: u16,
    vport: u16,
    proto: u8,
    template: bool,
}

impl<A: Family> Packed<A> {
    fn of(k: &ConnKey<A>, template: bool) -> Packed<A> {
        Packed {
            client: k.client.raw(),
            vip: k.vip.raw(),
            cport: k.cport,
            vport: k.vport,
            proto: k.proto.ip_number(),
            template,
        }
    }
}

/// One slot of the table: 48 bytes for IPv4, 64 for IPv6.
///
/// What a packet of a live connection reads and writes (key, flags, real server,
/// last-seen time) is the first [`Family::HOT_BYTES`] (32 for IPv4, so a hit touches one
/// cache line for three slots in four; 56 for IPv6, one line per entry). The last 8 are a
/// template's: how many connections it controls, and its timeout in milliseconds (no
/// per-connection counters: IPVS shows none either).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Entry<A: Family = Ipv4Addr> {
    client: A::Raw,
    vip: A::Raw,
    cport: u16,
    vport: u16,
    /// IP protocol number; 0 marks an empty slot.
    proto: u8,
    state: u8,
    flags: u8,
    /// Persistence prefix length (templates and the connections they control).
    prefix: u8,
    dest: DestRef,
    last_seen: u64,
    /// A template's: connections it controls. A connection's: the first four bytes of
    /// its client side's MAC (see [`ConnTable::set_hop`]).
    controlled: u32,
    /// A template's: its timeout, ms. A connection's: the last two bytes of that MAC.
    template_timeout_ms: u32,
}

const _: () = assert!(std::mem::size_of::<Entry<Ipv4Addr>>() == 48);
const _: () = assert!(std::mem::size_of::<Entry<Ipv6Addr>>() == 64);
const _: () = assert!(std::mem::offset_of!(Entry<Ipv4Addr>, controlled) == Ipv4Addr::HOT_BYTES);
const _: () = assert!(std::mem::offset_of!(Entry<Ipv6Addr>, controlled) == Ipv6Addr::HOT_BYTES);

/// Bytes at the start of an IPv4 [`Entry`] that a packet of a live connection reads and
/// writes (for prefetching exactly those lines).
pub const HOT_BYTES: usize = Ipv4Addr::HOT_BYTES;

impl<A: Family> Entry<A> {
    /// The empty slot. Every field is an integer and the empty slot is all zero bytes,
    /// so memory of all zero bytes is a valid array of empty entries (the shell may hand
    /// the table lazily zeroed pages: see [`ConnTable::with_slots`]).
    pub const EMPTY: Entry<A> = Entry {
        client: A::ZERO,
        vip: A::ZERO,
        cport: 0,
        vport: 0,
        proto: 0,
        state: 0,
        flags: 0,
        prefix: 0,
        dest: DestRef { slot: 0, gen: 0 },
        last_seen: 0,
        controlled: 0,
        template_timeout_ms: 0,
    };

    #[inline]
    fn occupied(&self) -> bool {
        self.proto != 0
    }

    #[inline]
    fn packed(&self) -> Packed<A> {
        Packed {
            client: self.client,
            vip: self.vip,
            cport: self.cport,
            vport: self.vport,
            proto: self.proto,
            template: self.flags & F_TEMPLATE != 0,
        }
    }

    /// The connection's key (for a template: masked client, client port 0).
    pub fn key(&self) -> ConnKey<A> {
        ConnKey {
            proto: Protocol::from_ip_number(self.proto).unwrap_or(Protocol::Tcp),
            client: A::from_raw(self.client),
            cport: self.cport,
            vip: A::from_raw(self.vip),
            vport: self.vport,
        }
    }
    /// The real server.
    pub fn dest(&self) -> DestRef {
        self.dest
    }
    /// The state.
    pub fn state(&self) -> State {
        State::from_u8(self.state)
    }
    /// When a packet was last seen (for a template: when it was last used or released).
    pub fn last_seen(&self) -> Time {
        Time::from_nanos(self.last_seen)
    }
    /// A persistence template rather than a connection.
    pub fn is_template(&self) -> bool {
        self.flags & F_TEMPLATE != 0
    }
    /// Controlled by a persistence template.
    pub fn is_persistent(&self) -> bool {
        self.flags & F_PERSISTENT != 0
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

    /// How long this entry may stay idle, or `None` while it cannot expire.
    fn timeout_nanos(&self, t: &Timeouts) -> Option<u64> {
        if self.is_template() {
            (self.controlled == 0).then_some(u64::from(self.template_timeout_ms) * 1_000_000)
        } else {
            Some(t.nanos(self.state()))
        }
    }
}

impl<A: Family> fmt::Debug for Entry<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("template", &self.is_template())
            .field("dest", &self.dest)
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

/// A bad table size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnTableError {
    /// Capacity 0 or larger than the table can index.
    #[error("connection table capacity {0} is out of range: use 1 to 1073741824 entries")]
    Capacity(usize),
}

/// The connection table of one worker for one address family (IPv4 unless said).
pub struct ConnTable<A: Family = Ipv4Addr> {
    slots: Box<[Entry<A>]>,
    mask: usize,
    len: usize,
    capacity: usize,
    cursor: usize,
    seeds: (u64, u64),
    timeouts: Timeouts,
    loads: Arc<Loads>,
    evictions: u64,
}

/// Slots examined from a new entry's home slot for a half-open connection to evict
/// when the table is full.
pub const EVICT_SCAN: usize = 32;

impl<A: Family> fmt::Debug for ConnTable<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Bytes of memory per IPv4 table slot (an [`Entry`]).
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry<Ipv4Addr>>();
/// Bytes of memory per IPv6 table slot.
pub const ENTRY_BYTES_V6: usize = std::mem::size_of::<Entry<Ipv6Addr>>();

impl ConnTable<Ipv4Addr> {
    /// The largest capacity accepted (of either family's table).
    pub const MAX_CAPACITY: usize = 1 << 30;
    /// The default capacity (per worker and family).
    pub const DEFAULT_CAPACITY: usize = 1 << 20;
}

impl<A: Family> ConnTable<A> {
    /// A table for `capacity` entries and real-server slots `0..max_dests`, with a hash
    /// `seed` (random in production, fixed in tests).
    pub fn new(
        capacity: usize,
        max_dests: usize,
        timeouts: Timeouts,
        seed: u64,
    ) -> Result<ConnTable<A>, ConnTableError> {
        Self::with_slots(capacity, max_dests, timeouts, seed, |n| {
            vec![Entry::EMPTY; n]
        })
    }

    /// Keeps this table's real-server counts in `loads` from now on (those of another
    /// family's table of the same worker: one set of counts per worker). Call it before
    /// the first insert.
    pub fn share_loads(&mut self, loads: Arc<Loads>) {
        debug_assert!(self.is_empty());
        self.loads = loads;
    }

    /// Like [`ConnTable::new`], but the caller provides the slots: `alloc(n)` returns `n`
    /// empty entries (e.g. lazily zeroed pages with transparent huge pages advised, so a
    /// table nobody uses costs no memory). Anything else is replaced by `n` empty entries.
    pub fn with_slots(
        capacity: usize,
        max_dests: usize,
        timeouts: Timeouts,
        seed: u64,
        alloc: impl FnOnce(usize) -> Vec<Entry<A>>,
    ) -> Result<ConnTable<A>, ConnTableError> {
        if capacity == 0 || capacity > ConnTable::MAX_CAPACITY {
            return Err(ConnTableError::Capacity(capacity));
        }
        let n = (capacity + capacity.div_ceil(3))
            .next_power_of_two()
            .max(16);
        let mut slots = alloc(n);
        if slots.len() != n {
            slots = vec![Entry::EMPTY; n];
        }
        Ok(ConnTable {
            slots: slots.into_boxed_slice(),
            mask: n - 1,
            len: 0,
            capacity,
            cursor: 0,
            seeds: (
                crate::hash::mix64(seed),
                crate::hash::mix64(seed ^ 0xA5A5_5A5A_C3C3_3C3C),
            ),
            timeouts,
            loads: Arc::new(Loads::new(max_dests)),
            evictions: 0,
        })
    }

    /// Bytes this table occupies (slots only).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Entry<A>>()
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
    fn hash(&self, k: &Packed<A>) -> usize {
        let a = A::fold(k.client, k.vip);
        let b = (u64::from(k.cport) << 32)
            | (u64::from(k.vport) << 16)
            | (u64::from(k.proto) << 8)
            | u64::from(k.template);
        fold_mul(a ^ self.seeds.0, b ^ self.seeds.1) as usize
    }

    #[inline]
    fn find(&self, k: &Packed<A>) -> Option<usize> {
        let mut i = self.hash(k) & self.mask;
        loop {
            let e = &self.slots[i];
            if !e.occupied() {
                return None;
            }
            if e.packed() == *k {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn expired(&self, e: &Entry<A>, now: Time) -> bool {
        match e.timeout_nanos(&self.timeouts) {
            Some(t) => now.as_nanos().saturating_sub(e.last_seen) > t,
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

    fn lookup_packed(&mut self, k: &Packed<A>, now: Time) -> Option<usize> {
        let i = self.find(k)?;
        if self.expired(&self.slots[i], now) {
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

    /// [`ConnTable::lookup_template`] without changing the table.
    pub fn peek_template(&self, key: &ConnKey<A>, prefix_len: u8, now: Time) -> Option<usize> {
        self.peek_packed(&Packed::of(&template_key(key, prefix_len), true), now)
    }

    fn peek_packed(&self, k: &Packed<A>, now: Time) -> Option<usize> {
        let i = self.find(k)?;
        (!self.expired(&self.slots[i], now)).then_some(i)
    }

    /// The slot where a lookup of `key` starts (its home slot), for prefetching: a
    /// worker that has a batch of frames in hand touches every frame's home slot before
    /// processing any, so that the cache misses of the batch overlap.
    #[inline]
    pub fn home(&self, key: &ConnKey<A>) -> &Entry<A> {
        &self.slots[self.hash(&Packed::of(key, false)) & self.mask]
    }

    /// The entry at `idx` (from a lookup or insert).
    #[inline]
    pub fn entry(&self, idx: usize) -> &Entry<A> {
        &self.slots[idx]
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
        for n in 0..EVICT_SCAN {
            let j = (home + n) & self.mask;
            let e = &self.slots[j];
            let half_open = e.occupied()
                && !e.is_template()
                && matches!(e.state(), State::SynRecv | State::None)
                && e.key().proto == crate::Protocol::Tcp;
            if half_open {
                self.remove(j, now);
                self.evictions += 1;
                return true;
            }
        }
        false
    }

    fn place(&mut self, e: Entry<A>, now: Time) -> Result<(usize, bool), TableFull> {
        let home = self.hash(&e.packed()) & self.mask;
        let mut evicted = false;
        if self.len >= self.capacity {
            if !self.evict_half_open(home, now) {
                return Err(TableFull);
            }
            evicted = true;
        }
        let mut i = home;
        while self.slots[i].occupied() {
            debug_assert!(self.slots[i].packed() != e.packed(), "duplicate insert");
            i = (i + 1) & self.mask;
        }
        self.slots[i] = e;
        self.len += 1;
        self.loads.adjust(e.dest, which(&e), 1, true);
        Ok((i, evicted))
    }

    /// Records a new connection to `dest` in `state`, seen at `now`. The key must not be
    /// live in the table (look it up first). `template` is the index of the persistence
    /// template controlling it, if any.
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
            proto: k.proto,
            state: state as u8,
            flags: 0,
            prefix: 0,
            dest,
            last_seen: now.as_nanos(),
            controlled: 0,
            template_timeout_ms: 0,
        };
        if let Some(t) = template.filter(|&t| self.slots[t].is_template()) {
            e.flags = F_PERSISTENT;
            e.prefix = self.slots[t].prefix;
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
                let tpl = &mut self.slots[t];
                tpl.controlled += 1;
                tpl.last_seen = tpl.last_seen.max(now.as_nanos());
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
                proto: k.proto,
                state: State::None as u8,
                flags: F_TEMPLATE,
                prefix: prefix_len.min(A::BITS),
                dest,
                last_seen: now.as_nanos(),
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
    #[inline]
    pub fn seen_dir(&mut self, idx: usize, now: Time, tcp_flags: Option<u8>, dir: Dir) -> State {
        let e = &mut self.slots[idx];
        e.last_seen = now.as_nanos();
        let old = e.state();
        let Some(f) = tcp_flags else { return old };
        let new = next_state_dir(old, f, dir);
        if new != old {
            e.state = new as u8;
            if new.is_active() != old.is_active() {
                let d = e.dest;
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
    /// timeout here ends then (never before the clock's start: an entry synchronised in
    /// the first seconds may live up to this director's own timeout).
    pub fn sync_update(&mut self, idx: usize, state: State, timeout: Duration, now: Time) {
        let want = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let local = self.timeouts.nanos(state);
        let e = &mut self.slots[idx];
        if !e.occupied() {
            return;
        }
        if e.is_template() {
            e.template_timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            e.last_seen = e.last_seen.max(now.as_nanos());
            return;
        }
        let before = which(e);
        e.state = state as u8;
        e.last_seen = now.as_nanos().saturating_add(want).saturating_sub(local);
        let after = which(e);
        if before != after {
            let d = e.dest;
            self.loads.adjust(d, before, -1, false);
            self.loads.adjust(d, after, 1, false);
        }
    }

    /// Records the MAC that connection `idx`'s client packets come from (the client, or
    /// the router in front of it): NAT replies are sent back there. A connection's entry
    /// keeps it where a template keeps its count and timeout.
    #[inline]
    pub fn set_hop(&mut self, idx: usize, mac: [u8; 6]) {
        let e = &mut self.slots[idx];
        if e.is_template() {
            return;
        }
        e.controlled = u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
        e.template_timeout_ms = u32::from(u16::from_ne_bytes([mac[4], mac[5]]));
    }

    /// The MAC [`ConnTable::set_hop`] recorded for connection `idx` (zero if none).
    #[inline]
    pub fn hop(&self, idx: usize) -> [u8; 6] {
        let e = &self.slots[idx];
        if e.is_template() {
            return [0; 6];
        }
        let a = e.controlled.to_ne_bytes();
        let b = (e.template_timeout_ms as u16).to_ne_bytes();
        [a[0], a[1], a[2], a[3], b[0], b[1]]
    }

    /// Removes entry `idx` at `now`, releasing its template if it has one.
    pub fn remove(&mut self, idx: usize, now: Time) {
        let e = self.slots[idx];
        if !e.occupied() {
            return;
        }
        self.loads.adjust(e.dest, which(&e), -1, false);
        self.delete_slot(idx);
        self.len -= 1;
        if e.is_persistent() {
            // The connection ended when it expired, or now if it is removed while alive:
            // the template's own timeout counts from then, however late the sweep came.
            let ended = e.timeout_nanos(&self.timeouts).map_or(now.as_nanos(), |t| {
                now.as_nanos().min(e.last_seen.saturating_add(t))
            });
            let tk = template_key(&e.key(), e.prefix);
            if let Some(t) = self.find(&Packed::of(&tk, true)) {
                let tpl = &mut self.slots[t];
                tpl.controlled = tpl.controlled.saturating_sub(1);
                tpl.last_seen = tpl.last_seen.max(ended);
            }
        }
    }

    /// Backward-shift deletion: pulls later members of the probe run into the hole.
    fn delete_slot(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let e = self.slots[j];
            if !e.occupied() {
                break;
            }
            let home = self.hash(&e.packed()) & self.mask;
            // `e` may move into the hole only if its home is not cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = e;
                hole = j;
            }
        }
        self.slots[hole] = Entry::EMPTY;
    }

    /// Examines at most `budget` slots from the sweep cursor and removes expired entries.
    /// Returns how many were removed. Call it regularly from the worker loop.
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            let i = self.cursor;
            let e = self.slots[i];
            if e.occupied() && self.expired(&e, now) {
                // The slot may now hold a shifted entry: look at it again next round.
                self.remove(i, now);
                removed += 1;
            } else {
                self.cursor = (i + 1) & self.mask;
            }
        }
        removed
    }

    /// Number of slots (one full sweep is this many examined slots).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every entry in use (connections and templates), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<A>> + '_ {
        self.slots.iter().filter(|e| e.occupied())
    }

    /// How long `e` has left to live at `now` if nothing is seen on it (a template that
    /// still controls connections: its whole timeout).
    pub fn expires_in(&self, e: &Entry<A>, now: Time) -> Duration {
        match e.timeout_nanos(&self.timeouts) {
            // A synchronised connection's last-seen time may be ahead of `now`.
            Some(t) => {
                Duration::from_nanos(e.last_seen.saturating_add(t).saturating_sub(now.as_nanos()))
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
        let end = cursor.saturating_add(max_slots).min(self.slots.len());
        for i in cursor..end {
            let e = &self.slots[i];
            if !e.occupied() {
                continue;
            }
            if out.len() == out.capacity() {
                return Some(i);
            }
            out.push(Listed {
                key: e.key().any(),
                dest: e.dest,
                state: e.state(),
                template: e.is_template(),
                persistent: e.is_persistent(),
                controlled: e.controlled(),
                prefix_len: e.prefix,
                expires_in: self.expires_in(e, now),
            });
        }
        (end < self.slots.len()).then_some(end)
    }
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
