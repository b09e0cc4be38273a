//! The worker loop: one per RX queue, generic over the [`Device`] it polls.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::config::Services;
use crate::device::{Device, DeviceStats, Egress};
use crate::engine::{
    prefetch, prefetch_frame, prefetch_landing, process_steered, Explained, Probe, Tables, Verdict,
};
use crate::handoff::Handoff;
use crate::offload::{OffloadRec, Touch};
use crate::packet::Packet;
use crate::stats::Counter;
use crate::Time;
use xdpvs_sched::conn::Listed;
use xdpvs_sched::sync::SyncConn;

/// Frames taken from the RX ring per loop.
pub const BATCH: usize = 64;
/// Target time for one full sweep of the connection table, for tables of up to
/// `sweep_rate` slots.
const SWEEP_NANOS: u64 = 1_000_000_000;
/// Slots the expiry sweep examines per second at most, by default: larger tables take
/// longer per sweep (16Mi slots: 8 s), so that the sweep never streams more than about
/// 100 MB/s of table through the cache. (Measured on veth at 1M flows, 2Mi slots a
/// second and 256Ki a second forwarded alike: docs/BENCHMARKS.md.)
pub const DEFAULT_SWEEP_RATE: u64 = 2 << 20;

/// Empty polls before an adaptive worker sleeps in poll(2).
const SPIN_BEFORE_WAIT: u32 = 20_000;
/// Empty polls (each followed by a `sched_yield`) before a yielding worker sleeps in
/// poll(2): a worker with nothing to do (its flows forwarded by the XDP program under
/// `--offload`, or no traffic) leaves its core to the kernel thread beside it instead of
/// taking every other time slice from it.
const YIELDS_BEFORE_WAIT: u32 = 1_000;

/// What the control plane tells a worker. Workers apply messages between two batches.
#[derive(Debug)]
pub enum Control {
    /// Swap in this configuration snapshot; the old one is sent back for dropping.
    Install(Install),
    /// Transmit this frame (gratuitous ARP, ARP request, unsolicited neighbour
    /// advertisement).
    Send(ControlFrame),
    /// Use these idle timeouts from now on (ipvsadm `--set`).
    Timeouts(xdpvs_sched::tcp::Timeouts),
    /// Copy a piece of the connection table (ipvsadm `-c`).
    List(ListRequest),
    /// Say where a flow would go and why (`xdpvs explain`).
    Explain(ExplainRequest),
    /// Poll this way from now on (the director re-decides `--poll auto` as the placement
    /// of the interface's RX processing changes).
    Idle(IdlePolicy),
}

/// A configuration snapshot to swap in, and where to say it is in force.
#[derive(Debug)]
pub struct Install {
    /// The snapshot.
    pub services: Box<Services>,
    /// Told once the worker runs with `services` (before its next batch). A message on a
    /// channel orders the worker's writes before the control side's reads on every
    /// architecture; nothing is inferred from a counter.
    pub done: Sender<()>,
}

/// A small frame the control plane has a worker send (no allocation to hand over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFrame {
    buf: [u8; ControlFrame::MAX],
    len: usize,
}

impl ControlFrame {
    /// The longest frame it holds.
    pub const MAX: usize = 128;

    /// `bytes` as a control frame, or `None` if longer than [`ControlFrame::MAX`].
    pub fn new(bytes: &[u8]) -> Option<ControlFrame> {
        let mut buf = [0u8; ControlFrame::MAX];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(ControlFrame {
            buf,
            len: bytes.len(),
        })
    }

    /// The frame.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Slots of the connection table one [`Control::List`] examines at most: a bounded piece
/// of work between two batches (about 400 KiB of IPv4 table read). Measured on a
/// million-connection table: a debug-built worker's longest pause 4.4-4.8 ms with pieces
/// of 16,384 or 8,192 slots alike (the end-to-end test's bound is 10 ms).
pub const LIST_SLOTS: usize = 8 * 1024;

/// A request for a piece of a worker's connection table: the entries of at most
/// [`LIST_SLOTS`] slots from `cursor`, into `buf` up to its capacity (the worker never
/// grows it), sent back on `reply`.
#[derive(Debug)]
pub struct ListRequest {
    /// Where to start.
    pub cursor: usize,
    /// Where to put the entries; only its spare capacity is used.
    pub buf: Vec<Listed>,
    /// Where the piece goes.
    pub reply: Sender<ListPiece>,
}

/// Where a flow would go, asked of a worker's own tables ([`Tables::explain`]).
#[derive(Debug)]
pub struct ExplainRequest {
    /// The service.
    pub key: xdpvs_sched::ServiceKey,
    /// The client's address and port.
    pub client: std::net::SocketAddr,
    /// Where the answer goes (`None`: the worker has no such service).
    pub reply: Sender<Option<Explained>>,
}

/// A piece of a worker's connection table.
#[derive(Debug)]
pub struct ListPiece {
    /// The entries.
    pub rows: Vec<Listed>,
    /// Where the next piece starts, or `None` at the end of the table.
    pub next: Option<usize>,
}

/// How a worker waits when there is no traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum IdlePolicy {
    /// Spin forever: lowest latency, one core at 100%.
    Busy,
    /// Spin while traffic flows; after a long run of empty polls block in poll(2) for up
    /// to 10 ms (woken at once by a frame).
    Adaptive,
    /// Spin, but give the core away (`sched_yield`) after every empty poll: for a worker
    /// sharing its core with the kernel thread that does its interface's RX processing
    /// (threaded NAPI), which otherwise waits for the scheduler to preempt the spinning
    /// worker. After a long run of empty polls (1,000) block in poll(2) as `Adaptive`
    /// does, so that an idle worker leaves the core to that thread.
    Yield,
    /// Chosen by the director from where the interface's RX processing runs: `yield`
    /// when it may run on the worker's core, else `adaptive` (re-decided every second).
    /// A worker told `auto` itself polls as `adaptive`.
    Auto,
}

/// Counters of the loop itself.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Non-empty batches.
    pub batches: Counter,
    /// Frames that found the TX ring full: each waits for the next pass (counted once
    /// per pass it waits), holding back as many frames in the RX ring.
    pub tx_full: Counter,
    /// Times the worker slept in poll(2).
    pub idle_waits: Counter,
    /// Configuration snapshots installed.
    pub installs: Counter,
    /// The longest time, in nanoseconds, the worker spent between two batches answering
    /// the control side (installs, listing pieces, explanations): how long the control
    /// side ever held up forwarding.
    pub longest_control_pause_ns: Counter,
    /// Frames of our own sent (gratuitous ARP, `xdpvs check`'s probes).
    pub sent: Counter,
    /// Frames of our own not sent: no free buffer, or the TX ring full.
    pub unsent: Counter,
    /// Entries in the connection table (copied about once a second).
    pub table_entries: Counter,
    /// Half-open connections evicted from the full table (copied about once a second).
    pub half_open_evicted: Counter,
    /// The socket's counters (copied about once a second, for devices that have them).
    pub device: DeviceCounters,
}

/// [`DeviceStats`] as counters another thread can read.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Received frames the kernel dropped for other reasons.
    pub rx_dropped: Counter,
    /// Received frames dropped for an invalid descriptor.
    pub rx_invalid_descs: Counter,
    /// Received frames dropped because the RX ring was full.
    pub rx_ring_full: Counter,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty: Counter,
    /// Frames to send dropped for an invalid descriptor.
    pub tx_invalid_descs: Counter,
    /// Times the kernel found the TX ring empty.
    pub tx_ring_empty: Counter,
    /// Wake-up calls made to the kernel.
    pub wakeups: Counter,
}

impl DeviceCounters {
    fn set(&self, d: &DeviceStats) {
        self.rx_dropped.set(d.rx_dropped);
        self.rx_invalid_descs.set(d.rx_invalid_descs);
        self.rx_ring_full.set(d.rx_ring_full);
        self.rx_fill_ring_empty.set(d.rx_fill_ring_empty);
        self.tx_invalid_descs.set(d.tx_invalid_descs);
        self.tx_ring_empty.set(d.tx_ring_empty);
        self.wakeups.set(d.wakeups);
    }
}

/// How often a worker copies its table occupancy and its device's counters.
const STATS_EVERY_NANOS: u64 = 1_000_000_000;

/// One worker: a device, its tables, and its control channel.
pub struct Worker<D: Device> {
    dev: D,
    tables: Tables,
    ctrl: Receiver<Control>,
    retired: Sender<Box<Services>>,
    stats: Arc<LoopStats>,
    rx: Vec<D::Frame>,
    tx: Vec<D::Frame>,
    done: Vec<D::Frame>,
    sweep_debt: u64,
    sweep_rate: u64,
    last: Option<Time>,
    idle: IdlePolicy,
    /// With several workers: this worker's number and the inboxes they share.
    handoff: Option<(usize, Arc<Handoff>)>,
    /// Connection synchronisation: where this worker's records go (the sync sender),
    /// where other directors' connections come from (the sync receiver), which roles run.
    sync: Option<SyncLink>,
    /// The roles last applied to the tables.
    sync_roles: (bool, bool),
    /// `run --offload`: where this worker's offload records go, where its touches come
    /// from.
    offload: Option<OffloadLink>,
    /// The touches being applied (room for [`TOUCH_CHUNK`], reserved by `set_offload`).
    touch_chunk: Vec<Touch>,
    /// Where the lookups of the frames in hand start (see [`prefetch`]).
    probes: [Probe; BATCH],
}

/// A worker's part in `run --offload` (see [`crate::offload`]).
#[derive(Debug, Clone)]
pub struct OffloadLink {
    /// The worker's queue, sent with each record (touches come back to it).
    pub queue: u16,
    /// Where the worker's records go (a bounded channel: never waits; a full one counts
    /// them lost).
    pub out: Sender<(u16, OffloadRec)>,
    /// Traffic the XDP program forwarded on this worker's connections.
    pub touches: Receiver<Touch>,
}

/// Touches a worker applies per pass at most.
const TOUCHES: usize = 256;
/// Touches applied together: the slots of all of them prefetched first, so that their
/// cache misses overlap as a batch of frames' do (a million flows' touches a second
/// under `--offload`, each a lookup in a table too big for the cache).
const TOUCH_CHUNK: usize = 32;
// A chunk's probes are kept where a batch's are.
const _: () = assert!(TOUCH_CHUNK <= BATCH);

/// A worker's part in connection synchronisation (IPVS's sync daemon).
#[derive(Debug, Clone)]
pub struct SyncLink {
    /// Where the worker's new and changed connections go (a bounded channel: never
    /// waits; a full one counts them lost).
    pub out: Sender<SyncConn>,
    /// The connections other directors synchronised, installed between batches.
    pub inbox: Receiver<SyncConn>,
    /// Which roles run now, as the control side starts and stops them.
    pub roles: Arc<SyncRoles>,
}

/// The roles of the sync daemon that run, read by the workers at every pass.
#[derive(Debug, Default)]
pub struct SyncRoles {
    /// Master: the workers record their connections.
    pub master: AtomicBool,
    /// Backup: the workers take synchronised connections.
    pub backup: AtomicBool,
}

/// Synchronised connections a worker installs per pass at most.
const SYNC_INSTALLS: usize = 64;

impl<D: Device> std::fmt::Debug for Worker<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("tables", &self.tables)
            .finish()
    }
}

impl<D: Device> Worker<D> {
    /// A worker over `dev` with `tables`, obeying `ctrl`, returning replaced snapshots on
    /// `retired` (so that they are freed off the packet path).
    pub fn new(
        dev: D,
        tables: Tables,
        ctrl: Receiver<Control>,
        retired: Sender<Box<Services>>,
    ) -> Self {
        Worker {
            dev,
            tables,
            ctrl,
            retired,
            stats: Arc::default(),
            rx: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(BATCH),
            done: Vec::with_capacity(BATCH),
            sweep_debt: 0,
            sweep_rate: DEFAULT_SWEEP_RATE,
            last: None,
            idle: IdlePolicy::Adaptive,
            handoff: None,
            sync: None,
            sync_roles: (false, false),
            offload: None,
            touch_chunk: Vec::new(),
            probes: [Probe::None; BATCH],
        }
    }

    /// Takes part in `run --offload`: the connections the XDP program may forward alone
    /// are offered on `link.out`, and the traffic it forwarded comes back on
    /// `link.touches`.
    pub fn set_offload(&mut self, link: OffloadLink) {
        self.tables.enable_offload(BATCH * 4);
        self.touch_chunk = Vec::with_capacity(TOUCH_CHUNK);
        self.offload = Some(link);
    }

    /// Hands this pass's offload records over, applies the touches that came.
    fn offload_exchange(&mut self) -> usize {
        let Some(link) = &self.offload else { return 0 };
        let mut n = 0;
        while n < TOUCHES {
            let chunk = &mut self.touch_chunk;
            chunk.clear();
            while chunk.len() < TOUCH_CHUNK {
                let Ok(t) = link.touches.try_recv() else {
                    break;
                };
                chunk.push(t);
            }
            for (t, p) in chunk.iter().zip(&mut self.probes) {
                *p = self.tables.prefetch_touch(t);
            }
            for p in &self.probes[..chunk.len()] {
                prefetch_landing(p, &self.tables);
            }
            for t in chunk.iter() {
                self.tables.touch(t);
            }
            n += chunk.len();
            if chunk.len() < TOUCH_CHUNK {
                break;
            }
        }
        self.tables
            .drain_offload(|r| link.out.try_send((link.queue, *r)).is_ok());
        n
    }

    /// Takes part in connection synchronisation (IPVS's sync protocol), in the roles
    /// `link.roles` says at each pass: this worker's new and changed connections go to
    /// `link.out`, and the connections on `link.inbox` are installed in its table.
    pub fn set_sync(&mut self, link: SyncLink) {
        self.tables.enable_sync(BATCH * 4);
        self.tables.set_sync_roles(false, false);
        self.sync = Some(link);
        self.sync_roles = (false, false);
    }

    /// Hands this pass's records to the sender, installs what the receiver got.
    fn sync_exchange(&mut self, now: Time) -> usize {
        let Some(link) = &self.sync else { return 0 };
        let roles = (
            link.roles.master.load(Relaxed),
            link.roles.backup.load(Relaxed),
        );
        if roles != self.sync_roles {
            self.tables.set_sync_roles(roles.0, roles.1);
            self.sync_roles = roles;
        }
        let tables = &mut self.tables;
        if roles.0 {
            tables.drain_sync(|r| link.out.try_send(*r).is_ok());
        }
        let mut n = 0;
        while n < SYNC_INSTALLS {
            let Ok(c) = link.inbox.try_recv() else { break };
            tables.install_synced(&c, now);
            n += 1;
        }
        n
    }

    /// Makes this worker `me` of the workers sharing `handoff`: packets of NAT
    /// connections another worker holds are handed to it, and those handed to this one
    /// are processed and sent between batches (see [`crate::handoff`]).
    pub fn set_handoff(&mut self, me: usize, handoff: Arc<Handoff>) {
        self.tables.set_shard(me, handoff.workers());
        self.handoff = Some((me, handoff));
    }

    /// Lets the expiry sweep examine at most `slots_per_sec` slots a second (at least one
    /// full sweep a second for tables of up to that many slots).
    pub fn set_sweep_rate(&mut self, slots_per_sec: u64) {
        self.sweep_rate = slots_per_sec.max(1);
    }

    /// The loop's counters.
    pub fn loop_stats(&self) -> &Arc<LoopStats> {
        &self.stats
    }

    /// The tables (counters, connections).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably (tests inject frames through it).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Applies pending control messages. Returns false once the control plane is gone.
    pub fn control(&mut self) -> bool {
        self.control_counted().0
    }

    /// [`Worker::control`], and how many messages it applied.
    fn control_counted(&mut self) -> (bool, usize) {
        let mut applied = 0;
        loop {
            let msg = self.ctrl.try_recv();
            applied += usize::from(msg.is_ok());
            match msg {
                Ok(Control::Install(i)) => {
                    let old = self.tables.install(i.services);
                    self.stats.installs.inc();
                    // If the control plane is gone the snapshot is simply dropped here.
                    let _ = self.retired.send(old);
                    let _ = i.done.send(());
                }
                Ok(Control::Timeouts(t)) => self.tables.set_timeouts(t),
                Ok(Control::Idle(p)) => self.idle = p,
                Ok(Control::List(mut req)) => {
                    let now = self.last.unwrap_or_default();
                    let next = self.tables.list(req.cursor, LIST_SLOTS, now, &mut req.buf);
                    // A requester that went away no longer wants it.
                    let _ = req.reply.send(ListPiece {
                        rows: req.buf,
                        next,
                    });
                }
                Ok(Control::Explain(req)) => {
                    let now = self.last.unwrap_or_default();
                    let _ = req
                        .reply
                        .send(self.tables.explain(&req.key, req.client, now));
                }
                Ok(Control::Send(frame)) => {
                    if self.dev.send(frame.bytes()) {
                        self.stats.sent.inc();
                    } else {
                        self.stats.unsent.inc();
                    }
                }
                Err(TryRecvError::Empty) => return (true, applied),
                Err(TryRecvError::Disconnected) => return (false, applied),
            }
        }
    }

    /// One pass: recycle, receive a batch, prefetch, kick, process it, transmit, sweep.
    /// Returns the work it found: the frames in hand (those received, those still
    /// waiting for the TX ring from the last pass, those other workers handed over),
    /// and the sync records and touches it applied.
    ///
    /// The TX ring takes what fits; frames it has no room for wait for the next pass
    /// (after the kick that makes room), first in line, and count against that pass's
    /// batch. So when the kernel sends slower than frames arrive, the surplus stays in
    /// the RX ring (where the kernel drops it, counted `rx_ring_full`) instead of being
    /// processed and then thrown away: the worker never holds more than a batch.
    pub fn poll(&mut self, now: Time) -> usize {
        let (frames, bookkeeping) = self.pass(now);
        frames + bookkeeping
    }

    /// [`Worker::poll`]'s pass: the frames in hand, and the sync records and touches
    /// applied.
    fn pass(&mut self, now: Time) -> (usize, usize) {
        self.dev.housekeeping();
        debug_assert!(self.rx.is_empty() && self.done.is_empty());
        let waiting = self.tx.len();
        self.dev.receive(&mut self.rx, BATCH - waiting);
        let n = self.rx.len();
        // Two passes before processing: the frames' headers, then (reading them) the
        // connections' slots, so that the misses of a batch overlap; then the kick that
        // sends the previous batch, so that they complete while the kernel transmits.
        for f in &self.rx {
            prefetch_frame(self.dev.frame(f));
        }
        for (f, p) in self.rx.iter().zip(&mut self.probes) {
            *p = prefetch(self.dev.frame(f), &self.tables);
        }
        for p in &self.probes[..n] {
            prefetch_landing(p, &self.tables);
        }
        self.dev.kick();
        if n > 0 {
            self.stats.batches.inc();
            for mut f in self.rx.drain(..) {
                let to =
                    match process_steered(&mut self.dev.frame_mut(&mut f), &mut self.tables, now) {
                        Verdict::Tx => Egress::Servers,
                        Verdict::ToClient => Egress::Clients,
                        Verdict::Reply => Egress::Back,
                        Verdict::Handoff(w) => {
                            let given = self
                                .handoff
                                .as_ref()
                                .is_some_and(|(_, h)| h.give(usize::from(w), self.dev.frame(&f)));
                            if !given {
                                self.tables.stats().handoff_lost.inc();
                            }
                            self.done.push(f);
                            continue;
                        }
                        // A frame steered to us cannot be handed back to the kernel: the XDP
                        // program only steers what we handle, and the rest is counted
                        // (`unhandled`) and recycled.
                        Verdict::Pass | Verdict::Drop(_) => {
                            self.done.push(f);
                            continue;
                        }
                    };
                self.dev.direct(&mut f, to);
                self.tx.push(f);
            }
            self.dev.release(&mut self.done);
        }
        if !self.tx.is_empty() {
            self.dev.transmit(&mut self.tx);
            // What did not fit waits for the next pass.
            self.stats.tx_full.add(self.tx.len() as u64);
        }
        let handed = self.take_handed(now);
        let synced = self.sync_exchange(now);
        let touched = self.offload_exchange();
        self.sweep(now);
        (n + waiting + handed, synced + touched)
    }

    /// Processes and sends up to a batch of the frames other workers handed to this one.
    fn take_handed(&mut self, now: Time) -> usize {
        let Worker {
            handoff: Some((me, h)),
            dev,
            tables,
            ..
        } = self
        else {
            return 0;
        };
        let mut n = 0;
        while n < BATCH {
            let Some(mut item) = h.take(*me) else {
                break;
            };
            n += 1;
            let mut len = item.len;
            let v = process_steered(&mut Packet::new(&mut item.buf[..], &mut len), tables, now);
            let sent = match v {
                Verdict::Tx | Verdict::ToClient | Verdict::Reply => dev.send(&item.buf[..len]),
                Verdict::Pass | Verdict::Drop(_) => true,
                // Its owner is this worker (the same client, the same choice).
                Verdict::Handoff(_) => false,
            };
            if !sent {
                tables.stats().handoff_lost.inc();
            }
            h.recycle(item.buf);
        }
        n
    }

    /// Expiry, paced so that one full sweep of the table takes about a second, or
    /// `slots / sweep_rate` seconds when that is longer.
    fn sweep(&mut self, now: Time) {
        let last = *self.last.get_or_insert(now);
        let dt = now.as_nanos().saturating_sub(last.as_nanos());
        self.last = Some(now);
        let slots = (self.tables.slot_count() as u64).min(self.sweep_rate);
        self.sweep_debt = self
            .sweep_debt
            .saturating_add((u128::from(dt) * u128::from(slots) / u128::from(SWEEP_NANOS)) as u64);
        if self.sweep_debt >= 32 {
            let budget = self.sweep_debt.min(4096);
            self.tables.expire(now, budget as usize);
            self.sweep_debt -= budget;
        }
    }

    /// Copies what other threads read of this worker but cannot count themselves: the
    /// table's occupancy and the device's counters.
    pub fn publish(&self) {
        self.stats
            .table_entries
            .set(self.tables.conn_count() as u64);
        self.stats.half_open_evicted.set(self.tables.evictions());
        if let Some(d) = self.dev.stats() {
            self.stats.device.set(&d);
        }
    }

    /// How the worker polls now.
    pub fn idle_policy(&self) -> IdlePolicy {
        self.idle
    }

    /// Runs until `stop` is set or the control plane goes away, reading time from `clock`,
    /// polling as `idle` until told otherwise ([`Control::Idle`]).
    pub fn run(&mut self, clock: impl Fn() -> Time, stop: &AtomicBool, idle: IdlePolicy) {
        self.idle = idle;
        let mut empty = 0u32;
        let mut next_publish = 0u64;
        while !stop.load(Relaxed) {
            let before = clock();
            let (open, applied) = self.control_counted();
            if !open {
                break;
            }
            // A second clock read only when the control side asked for something.
            let now = if applied > 0 {
                let now = clock();
                let pause = now.as_nanos().saturating_sub(before.as_nanos());
                if pause > self.stats.longest_control_pause_ns.get() {
                    self.stats.longest_control_pause_ns.set(pause);
                }
                now
            } else {
                before
            };
            if now.as_nanos() >= next_publish {
                self.publish();
                next_publish = now.as_nanos() + STATS_EVERY_NANOS;
            }
            let (frames, bookkeeping) = self.pass(now);
            if frames + bookkeeping > 0 {
                empty = 0;
                // Other directors' connections and the XDP program's touches come in
                // bursts (a million flows' touches a second under `--offload`): applied a
                // bounded batch a pass, with the core given away between batches as
                // after an empty pass, so that the RX thread sharing it never waits for
                // a burst to end.
                if frames == 0 && self.idle == IdlePolicy::Yield {
                    std::thread::yield_now();
                }
                continue;
            }
            empty = empty.saturating_add(1);
            let sleep = match self.idle {
                IdlePolicy::Busy => false,
                IdlePolicy::Yield => empty >= YIELDS_BEFORE_WAIT,
                IdlePolicy::Adaptive | IdlePolicy::Auto => empty >= SPIN_BEFORE_WAIT,
            };
            if sleep {
                self.stats.idle_waits.inc();
                // Frames handed over are seen within a millisecond.
                self.dev.wait(if self.handoff.is_some() { 1 } else { 10 });
            } else if self.idle == IdlePolicy::Yield {
                std::thread::yield_now();
            }
        }
    }
}
