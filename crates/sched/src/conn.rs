//! The connection table: (protocol, client IP, client port, VIP, VIP port) -> real server,
//! with TCP state, last-seen time and per-connection counters.
//!
//! - **Fixed capacity**, chosen at start: every slot is allocated up front, so neither
//!   insert nor lookup allocates. The slot array is a power of two at least 4/3 of the
//!   capacity (load factor <= 0.75); an [`Entry`] is 48 bytes.
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
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::hash::fold_mul;
use crate::model::{prefix_mask, Protocol};
use crate::scheduler::Load;
use crate::tcp::{next_state, State, Timeouts};
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

/// A connection's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Client address.
    pub client: Ipv4Addr,
    /// Client port.
    pub cport: u16,
    /// Virtual IP.
    pub vip: Ipv4Addr,
    /// Virtual port.
    pub vport: u16,
}

const F_TEMPLATE: u8 = 1;
const F_PERSISTENT: u8 = 2;

/// The packed key as stored and hashed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed {
    client: u32,
    vip: u32,
    cport: u16,
    vport: u16,
    proto: u8,
    template: bool,
}

impl Packed {
    fn of(k: &ConnKey, template: bool) -> Packed {
        Packed {
            client: u32::from(k.client),
            vip: u32::from(k.vip),
            cport: k.cport,
            vport: k.vport,
            proto: k.proto.ip_number(),
            template,
        }
    }
}

/// One slot of the table (48 bytes).
///
/// What a packet of a live connection reads and writes (key, flags, real server,
/// last-seen time) is the first 32 bytes, so a hit touches one cache line for three
/// slots in four. The last 16 are a template's: how many connections it controls, and
/// its timeout in nanoseconds (no per-connection counters: IPVS shows none either).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    client: u32,
    vip: u32,
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
    /// A template's: connections it controls.
    controlled: u64,
    /// A template's: its timeout, ns.
    template_timeout: u64,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 48);

/// Bytes at the start of an [`Entry`] that a packet of a live connection reads and
/// writes (for prefetching exactly those lines).
pub const HOT_BYTES: usize = 32;
const _: () = assert!(std::mem::offset_of!(Entry, controlled) == HOT_BYTES);

impl Entry {
    const EMPTY: Entry = Entry {
        client: 0,
        vip: 0,
        cport: 0,
        vport: 0,
        proto: 0,
        state: 0,
        flags: 0,
        prefix: 0,
        dest: DestRef { slot: 0, gen: 0 },
        last_seen: 0,
        controlled: 0,
        template_timeout: 0,
    };

    #[inline]
    fn occupied(&self) -> bool {
        self.proto != 0
    }

    #[inline]
    fn packed(&self) -> Packed {
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
    pub fn key(&self) -> ConnKey {
        ConnKey {
            proto: Protocol::from_ip_number(self.proto).unwrap_or(Protocol::Tcp),
            client: Ipv4Addr::from(self.client),
            cport: self.cport,
            vip: Ipv4Addr::from(self.vip),
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
            self.controlled
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
            (self.controlled == 0).then_some(self.template_timeout)
        } else {
            Some(t.nanos(self.state()))
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("template", &self.is_template())
            .field("dest", &self.dest)
            .field("state", &self.state())
            .field("last_seen", &self.last_seen)
            .field("controlled", &self.controlled)
            .field("template_timeout", &self.template_timeout)
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

#[derive(Clone, Copy)]
enum Which {
    Active,
    Inactive,
    Persist,
}

fn which(e: &Entry) -> Which {
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

/// The connection table of one worker.
pub struct ConnTable {
    slots: Box<[Entry]>,
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

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Bytes of memory per table slot (an [`Entry`]).
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

impl ConnTable {
    /// The largest capacity accepted.
    pub const MAX_CAPACITY: usize = 1 << 30;
    /// The default capacity (per worker).
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// A table for `capacity` entries and real-server slots `0..max_dests`, with a hash
    /// `seed` (random in production, fixed in tests).
    pub fn new(
        capacity: usize,
        max_dests: usize,
        timeouts: Timeouts,
        seed: u64,
    ) -> Result<ConnTable, ConnTableError> {
        Self::with_memory_advice(capacity, max_dests, timeouts, seed, |_| {})
    }

    /// Like [`ConnTable::new`], but lets the caller advise the kernel about the slot
    /// memory before it is first touched: `advise` receives the allocated, still empty
    /// vector (e.g. to ask for transparent huge pages over its spare capacity).
    pub fn with_memory_advice(
        capacity: usize,
        max_dests: usize,
        timeouts: Timeouts,
        seed: u64,
        advise: impl FnOnce(&mut Vec<Entry>),
    ) -> Result<ConnTable, ConnTableError> {
        if capacity == 0 || capacity > Self::MAX_CAPACITY {
            return Err(ConnTableError::Capacity(capacity));
        }
        let n = (capacity + capacity.div_ceil(3))
            .next_power_of_two()
            .max(16);
        let mut slots = Vec::with_capacity(n);
        advise(&mut slots);
        slots.resize(n, Entry::EMPTY);
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
        self.slots.len() * ENTRY_BYTES
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
    fn hash(&self, k: &Packed) -> usize {
        let a = (u64::from(k.client) << 32) | u64::from(k.vip);
        let b = (u64::from(k.cport) << 32)
            | (u64::from(k.vport) << 16)
            | (u64::from(k.proto) << 8)
            | u64::from(k.template);
        fold_mul(a ^ self.seeds.0, b ^ self.seeds.1) as usize
    }

    #[inline]
    fn find(&self, k: &Packed) -> Option<usize> {
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
    fn expired(&self, e: &Entry, now: Time) -> bool {
        match e.timeout_nanos(&self.timeouts) {
            Some(t) => now.as_nanos().saturating_sub(e.last_seen) > t,
            None => false,
        }
    }

    /// Finds the live connection for `key`. An expired entry found on the way is removed
    /// and reported as absent. The returned index stays valid until the next call that
    /// removes entries (`lookup*`, `remove`, `expire`).
    #[inline]
    pub fn lookup(&mut self, key: &ConnKey, now: Time) -> Option<usize> {
        self.lookup_packed(&Packed::of(key, false), now)
    }

    /// Finds the live persistence template for `(proto, client, vip, vport)` masked to
    /// `prefix_len` bits of client address.
    pub fn lookup_template(&mut self, key: &ConnKey, prefix_len: u8, now: Time) -> Option<usize> {
        self.lookup_packed(&Packed::of(&template_key(key, prefix_len), true), now)
    }

    fn lookup_packed(&mut self, k: &Packed, now: Time) -> Option<usize> {
        let i = self.find(k)?;
        if self.expired(&self.slots[i], now) {
            self.remove(i, now);
            return None;
        }
        Some(i)
    }

    /// The slot where a lookup of `key` starts (its home slot), for prefetching: a
    /// worker that has a batch of frames in hand touches every frame's home slot before
    /// processing any, so that the cache misses of the batch overlap.
    #[inline]
    pub fn home(&self, key: &ConnKey) -> &Entry {
        &self.slots[self.hash(&Packed::of(key, false)) & self.mask]
    }

    /// The entry at `idx` (from a lookup or insert).
    #[inline]
    pub fn entry(&self, idx: usize) -> &Entry {
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

    fn place(&mut self, e: Entry, now: Time) -> Result<(usize, bool), TableFull> {
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
        key: &ConnKey,
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
            template_timeout: 0,
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
        key: &ConnKey,
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
                prefix: prefix_len.min(32),
                dest,
                last_seen: now.as_nanos(),
                controlled: 0,
                template_timeout: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            },
            now,
        );
        placed.map(|(i, _)| i)
    }

    /// Accounts one packet on connection `idx` at `now`; for TCP `tcp_flags` (byte 13 of
    /// the header) drives the state machine. Returns the new state.
    #[inline]
    pub fn seen(&mut self, idx: usize, now: Time, tcp_flags: Option<u8>) -> State {
        let e = &mut self.slots[idx];
        e.last_seen = now.as_nanos();
        let old = e.state();
        let Some(f) = tcp_flags else { return old };
        let new = next_state(old, f);
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
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.slots.iter().filter(|e| e.occupied())
    }

    /// How long `e` has left to live at `now` if nothing is seen on it (a template that
    /// still controls connections: its whole timeout).
    pub fn expires_in(&self, e: &Entry, now: Time) -> Duration {
        let idle = now.as_nanos().saturating_sub(e.last_seen);
        Duration::from_nanos(match e.timeout_nanos(&self.timeouts) {
            Some(t) => t.saturating_sub(idle),
            None => e.template_timeout,
        })
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
                entry: *e,
                expires_in: self.expires_in(e, now),
            });
        }
        (end < self.slots.len()).then_some(end)
    }
}

/// A connection-table entry as listed, with the time it has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The entry.
    pub entry: Entry,
    /// Time left before it expires if nothing is seen on it.
    pub expires_in: Duration,
}

/// The template key for a connection key: client masked, client port 0.
fn template_key(key: &ConnKey, prefix_len: u8) -> ConnKey {
    ConnKey {
        client: Ipv4Addr::from(u32::from(key.client) & prefix_mask(prefix_len)),
        cport: 0,
        ..*key
    }
}

#[cfg(test)]
mod tests;
