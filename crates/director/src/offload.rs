//! `run --offload`: the thread that keeps the XDP program's map of established flows
//! (see [`xdpvs_dataplane::offload`]), off the workers' cores.
//!
//! It takes the workers' records (insert a flow, remove one, drop a real server's) and
//! applies them to the map, giving each flow a slot of counters in an array the program
//! shares with this process, and reads those counters back (memory, no system call per
//! flow) every [`PASS_EVERY`] and whenever a reader of the statistics asks
//! ([`OffloadView::fresh`]):
//! what the program forwarded is added to counters kept as a worker's (so `--stats`,
//! `--rate` and the metrics sum it with the workers'), and each flow that had traffic is
//! touched at the worker that holds it, so that its expiry and `-c` see it as if its
//! packets had crossed the worker. The workers stay the authority: the program forwards
//! only what they put in the map, and a flow idle past its timeout goes back to them.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use tracing::warn;
use xdpvs_dataplane::limits::{MAX_DESTS, MAX_SERVICES};
use xdpvs_dataplane::offload::{FastFlow, OffloadRec, Touch};
use xdpvs_dataplane::xdp::{FlowCounts, FlowMap};
use xdpvs_dataplane::{Services, WorkerStats};
use xdpvs_sched::conn::ConnKey;
use xdpvs_sched::Time;

/// How often the counters are read back without being asked: every second, or every
/// [`PASS_SHARE`] times the last pass's length when that is longer (unasked, the thread
/// reads at most a twentieth of the time; a pass over a million flows walks about
/// 100 MB of slots and counters, tens of milliseconds).
pub const PASS_EVERY: Duration = Duration::from_secs(1);
/// See [`PASS_EVERY`].
const PASS_SHARE: u32 = 20;
/// A reader of the statistics gets a pass of its own unless one started this recently
/// (or twice the last pass's length ago, whichever is longer: readers that ask often
/// keep the thread reading at most half the time, the workers' records the rest).
const FRESH: Duration = Duration::from_millis(20);
/// How long a reader waits for that pass at most.
const FRESH_WAIT: Duration = Duration::from_secs(2);
/// `last_pass` before the first pass.
const NEVER: u64 = u64::MAX;
/// Records the workers' channel holds.
pub const RECORDS: usize = 64 * 1024;
/// Touches each worker's inbox holds.
pub const TOUCHES: usize = 64 * 1024;
/// Inserts written to the map with one system call at most.
const INSERT_BATCH: usize = 4096;

/// What the thread is told besides the workers' records.
#[derive(Debug)]
enum Ask {
    /// Read the counters now; say so when done.
    Pass(Sender<()>),
    /// A configuration snapshot the workers now run with: counters of slots that changed
    /// hands start from zero.
    Install(Box<Services>),
}

/// The thread as the rest of the director sees it: its counters and how to ask for a
/// pass. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OffloadView {
    /// What the XDP program forwarded, as a worker's counters.
    pub stats: Arc<WorkerStats>,
    /// Flows in the map now.
    pub flows: Arc<AtomicU64>,
    /// Inserts the map refused (full).
    pub refused: Arc<AtomicU64>,
    ask: Sender<Ask>,
    /// When the last pass started (nanoseconds since `start`).
    last_pass: Arc<AtomicU64>,
    /// How long the last pass took (nanoseconds).
    pass_took: Arc<AtomicU64>,
    start: Instant,
}

impl OffloadView {
    /// Makes sure the counters include every packet forwarded until now (give or take
    /// [`FRESH`]): asks for a pass unless one started that recently, and waits for it.
    pub fn fresh(&self) {
        let now = self.start.elapsed().as_nanos() as u64;
        let last = self.last_pass.load(Relaxed);
        let recent = (FRESH.as_nanos() as u64).max(2 * self.pass_took.load(Relaxed));
        if last != NEVER && now.saturating_sub(last) < recent {
            return;
        }
        let (tx, rx) = bounded(1);
        if self.ask.send(Ask::Pass(tx)).is_ok() {
            let _ = rx.recv_timeout(FRESH_WAIT);
        }
    }

    /// Tells the thread the workers run with `services` now.
    pub fn installed(&self, services: &Services) {
        let _ = self.ask.send(Ask::Install(Box::new(services.clone())));
    }
}

/// A flow in the map, as the thread knows it.
#[derive(Debug, Clone, Copy)]
struct Known {
    flow: FastFlow,
    queue: u16,
    /// Its counters when last read.
    seen: FlowCounts,
    /// Traffic counted that its worker has not been told of yet (its inbox was full).
    untouched: bool,
}

/// The thread's state.
struct Keeper {
    map: FlowMap,
    /// The flows in the map: the slot of each one's counters.
    flows: HashMap<ConnKey<Ipv4Addr>, u32, BuildFlowHasher>,
    /// What each slot counts (`None`: free), as far as the highest slot used so far.
    slots: Vec<Option<Known>>,
    /// The free slots below `slots.len()`, the longest free first: a slot freed now is
    /// taken last, so that a packet the program was still forwarding when its flow left
    /// the map does not count on the flow that takes the slot next.
    free: VecDeque<u32>,
    touches: Vec<Sender<Touch>>,
    /// Where the next pass starts telling the workers: the first flow a full inbox kept
    /// waiting in the last one, so that every flow gets its turn.
    cursor: usize,
    view: OffloadView,
    services: Option<Box<Services>>,
    /// Inserts taken from the workers and not written yet (each a flow the map does not
    /// hold), with the queue of the worker that sent it.
    pending: Vec<(u16, FastFlow)>,
    /// `start` in CLOCK_MONOTONIC nanoseconds: the workers' clock is time since `start`,
    /// the program's is CLOCK_MONOTONIC.
    start_mono: u64,
}

/// Starts the thread over `map`, taking the workers' records from `records` and
/// touching their flows through `touches` (one per queue), with `start` the workers'
/// clock's origin, on core `aside` if given (one the workers do not use).
pub fn start(
    map: FlowMap,
    records: Receiver<(u16, OffloadRec)>,
    touches: Vec<Sender<Touch>>,
    start: Instant,
    aside: Option<usize>,
) -> std::io::Result<(OffloadView, JoinHandle<()>)> {
    let (ask, asked) = crossbeam_channel::unbounded();
    let view = OffloadView {
        stats: Arc::new(WorkerStats::new(MAX_SERVICES, MAX_DESTS)),
        flows: Arc::default(),
        refused: Arc::default(),
        ask,
        last_pass: Arc::new(AtomicU64::new(NEVER)),
        pass_took: Arc::default(),
        start,
    };
    let start_mono =
        xdpvs_dataplane::sys::monotonic_ns().saturating_sub(start.elapsed().as_nanos() as u64);
    let mut k = Keeper {
        map,
        flows: HashMap::default(),
        slots: Vec::new(),
        free: VecDeque::new(),
        touches,
        cursor: 0,
        view: view.clone(),
        services: None,
        pending: Vec::with_capacity(INSERT_BATCH),
        start_mono,
    };
    let thread = std::thread::Builder::new()
        .name("xdpvs-offload".into())
        .spawn(move || {
            if let Some(id) = aside {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            k.run(&records, &asked)
        })?;
    Ok((view, thread))
}

impl Keeper {
    fn run(&mut self, records: &Receiver<(u16, OffloadRec)>, asked: &Receiver<Ask>) {
        let mut next = Instant::now() + PASS_EVERY;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            select! {
                recv(records) -> r => match r {
                    Ok((queue, rec)) => {
                        self.apply(queue, rec);
                        self.take_waiting(records);
                    }
                    Err(_) => return,
                },
                recv(asked) -> a => match a {
                    Ok(Ask::Pass(done)) => {
                        // Every reader waiting gets this one pass.
                        let mut waiting = vec![done];
                        for a in asked.try_iter() {
                            match a {
                                Ask::Pass(done) => waiting.push(done),
                                Ask::Install(s) => self.install(s),
                            }
                        }
                        // Records already sent come first: a reader sees what they did.
                        self.take_waiting(records);
                        self.pass();
                        for done in waiting {
                            let _ = done.send(());
                        }
                    }
                    Ok(Ask::Install(s)) => self.install(s),
                    Err(_) => return,
                },
                default(wait) => {
                    let took = self.pass();
                    next = Instant::now() + PASS_EVERY.max(took * PASS_SHARE);
                }
            }
        }
    }

    /// Applies the records waiting in `records` (a channel's worth at most) and writes
    /// the inserts among them, in batches.
    fn take_waiting(&mut self, records: &Receiver<(u16, OffloadRec)>) {
        for (queue, rec) in records.try_iter().take(RECORDS) {
            self.apply(queue, rec);
        }
        self.flush();
    }

    /// The workers run with `s` now: counters of slots that changed hands start afresh.
    fn install(&mut self, s: Box<Services>) {
        if let Some(old) = &self.services {
            self.view.stats.reset_changed(&s, old);
        }
        self.services = Some(s);
    }

    /// Applies one record: an insert of a flow the map does not hold waits in
    /// `pending` for [`Keeper::flush`]; anything else writes what waits first, so the
    /// map sees the records in the order the workers sent them.
    fn apply(&mut self, queue: u16, rec: OffloadRec) {
        match rec {
            OffloadRec::Insert(f) => {
                let held = self
                    .flows
                    .get(&f.key)
                    .and_then(|&s| self.slots[s as usize].as_ref());
                if let Some(k) = held {
                    if k.flow.to == f.to && k.flow.from == f.from && k.flow.idle == f.idle {
                        return;
                    }
                    // Somewhere else now: what it forwarded so far counts where it went.
                    self.flush();
                    self.forget(f.key);
                }
                self.pending.push((queue, f));
                if self.pending.len() == INSERT_BATCH {
                    self.flush();
                }
            }
            OffloadRec::Remove(key) => {
                self.flush();
                self.forget(key);
            }
            OffloadRec::Dest(slot) => {
                self.flush();
                let gone: Vec<_> = self
                    .slots
                    .iter()
                    .flatten()
                    .filter(|k| k.flow.dest == slot)
                    .map(|k| k.flow.key)
                    .collect();
                for key in gone {
                    self.forget(key);
                }
            }
        }
        self.view.flows.store(self.flows.len() as u64, Relaxed);
    }

    /// Writes the pending inserts to the map, a batch per system call, each with a free
    /// slot of counters (none left: the map is full, the flow stays with the workers).
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut batch = Vec::with_capacity(self.pending.len());
        let mut taken = Vec::with_capacity(self.pending.len());
        for (queue, f) in std::mem::take(&mut self.pending) {
            match self.alloc() {
                Some(slot) => {
                    batch.push((f.key, (f.to, f.from), f.idle, slot));
                    taken.push((queue, f, slot));
                }
                None => self.refuse(&format!(
                    "the map is full ({} flows, --offload-flows)",
                    self.map.slots()
                )),
            }
        }
        let mut refused = vec![false; batch.len()];
        let now = xdpvs_dataplane::sys::monotonic_ns();
        let mut first_error = None;
        self.map.insert_many(&batch, now, |i, e| {
            refused[i] = true;
            first_error.get_or_insert(e);
        });
        if let Some(e) = first_error {
            self.refuse(&e.to_string());
        }
        for ((queue, flow, slot), refused) in taken.into_iter().zip(refused) {
            if refused {
                self.free.push_back(slot);
                continue;
            }
            let seen = FlowCounts::default();
            self.slots[slot as usize] = Some(Known {
                flow,
                queue,
                seen,
                untouched: false,
            });
            // The same flow twice in one batch: the map names the later slot.
            if let Some(old) = self.flows.insert(flow.key, slot) {
                self.slots[old as usize] = None;
                self.free.push_back(old);
            }
        }
        self.view.flows.store(self.flows.len() as u64, Relaxed);
    }

    /// A free slot of counters, if the map has room.
    fn alloc(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop_front() {
            return Some(s);
        }
        let next = u32::try_from(self.slots.len()).ok()?;
        (next < self.map.slots()).then(|| {
            self.slots.push(None);
            next
        })
    }

    /// Counts a flow the map refused (`why`), warning at the first.
    fn refuse(&self, why: &str) {
        if self.view.refused.fetch_add(1, Relaxed) == 0 {
            warn!("offload: {why}; the flows it refuses stay with the workers");
        }
    }

    /// Takes `key` out of the map, its last counters counted.
    fn forget(&mut self, key: ConnKey<Ipv4Addr>) {
        let Some(slot) = self.flows.remove(&key) else {
            return;
        };
        if let Err(e) = self.map.remove(&key) {
            warn!("offload: {e}");
        }
        // Read once the program no longer finds the flow.
        if let Some(k) = self.slots[slot as usize].take() {
            count(&self.view.stats, &k, self.map.counts(slot));
        }
        self.free.push_back(slot);
    }
}

/// Adds what the program forwarded of `k` since its counters were last read (`k.seen`)
/// to `s`.
fn count(s: &WorkerStats, k: &Known, now: FlowCounts) {
    let packets = now.packets.saturating_sub(k.seen.packets);
    let bytes = now.bytes.saturating_sub(k.seen.bytes);
    if packets == 0 {
        return;
    }
    s.rx.add(packets);
    // Frames: the IP packets and their Ethernet headers.
    s.rx_bytes.add(bytes + 14 * packets);
    s.tx.add(packets);
    for t in [
        s.services.get(k.flow.service as usize),
        s.dests.get(k.flow.dest as usize),
    ]
    .into_iter()
    .flatten()
    {
        t.packets.add(packets);
        t.bytes.add(bytes);
    }
}

impl Keeper {
    /// Reads every flow's counters: counts what is new, touches the flows that had
    /// traffic at their workers.
    fn pass(&mut self) -> Duration {
        let began = self.view.start.elapsed();
        self.view.last_pass.store(began.as_nanos() as u64, Relaxed);
        self.read_back();
        let took = self.view.start.elapsed().saturating_sub(began);
        self.view.pass_took.store(took.as_nanos() as u64, Relaxed);
        took
    }

    /// [`Keeper::pass`]'s work: one walk of the slots beside the counters they name,
    /// from where the last one left flows untold. A worker's inbox holds [`TOUCHES`]
    /// touches and a million flows can have traffic in a pass: what does not fit waits
    /// for the next pass, first in line, so no flow's worker goes untold past a few
    /// passes (its expiry is minutes away).
    fn read_back(&mut self) {
        let Keeper {
            map,
            slots,
            touches,
            cursor,
            view,
            start_mono,
            ..
        } = self;
        let len = slots.len();
        let from = (*cursor).min(len);
        let mut full = vec![false; touches.len()];
        let mut resume = None;
        for slot in (from..len).chain(0..from) {
            let Some(k) = &mut slots[slot] else { continue };
            let c = map.counts(slot as u32);
            if c.packets != k.seen.packets {
                count(&view.stats, k, c);
                k.seen = c;
                k.untouched = true;
            }
            if !k.untouched {
                continue;
            }
            let q = usize::from(k.queue);
            let Some(inbox) = touches.get(q) else {
                k.untouched = false;
                continue;
            };
            if full[q] {
                continue;
            }
            let at = Time::from_nanos(k.seen.last_seen_ns.saturating_sub(*start_mono));
            if inbox
                .try_send(Touch {
                    key: k.flow.key,
                    at,
                })
                .is_ok()
            {
                k.untouched = false;
            } else {
                full[q] = true;
                resume.get_or_insert(slot);
            }
        }
        *cursor = resume.unwrap_or(0);
    }
}

/// The shadow map's hasher: a multiply-rotate over the key's words (the keys are the
/// workers' own, chosen by clients but not to collide here: a flooding client fills
/// the workers' tables first, and the map is bounded by `--offload-flows`), several
/// times cheaper per flow than SipHash on a pass over a million flows.
#[derive(Default, Clone, Copy)]
struct BuildFlowHasher;

impl std::hash::BuildHasher for BuildFlowHasher {
    type Hasher = FlowHasher;
    fn build_hasher(&self) -> FlowHasher {
        FlowHasher(0)
    }
}

/// See [`BuildFlowHasher`].
struct FlowHasher(u64);

impl std::hash::Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        // The table takes its buckets from the low bits and its tags from the high
        // ones: fold the well-mixed high half down.
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpvs_dataplane::xdp::Steering;
    use xdpvs_sched::{Protocol, ServiceKey};
    use xdpvs_testkit::frames::{self, Endpoints};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// An ACK of the test client's connection from `cport` to the VIP's port 80.
    fn segment(cport: u16) -> Vec<u8> {
        let e = Endpoints {
            src_mac: [2, 0, 0, 0, 0, 0xc1],
            dst_mac: [2, 0, 0, 0, 0, 0xd1],
            src_ip: CLIENT,
            dst_ip: VIP,
            sport: cport,
            dport: 80,
        };
        frames::tcp(&e, 0x10, b"")
    }

    /// The key of that connection.
    fn key(cport: u16) -> ConnKey<Ipv4Addr> {
        ConnKey {
            proto: Protocol::Tcp,
            client: CLIENT,
            cport,
            vip: VIP,
            vport: 80,
        }
    }

    /// `key` to the test's real server from the director, service 0, real server 1.
    fn fast_flow(key: ConnKey<Ipv4Addr>) -> FastFlow {
        FastFlow {
            key,
            to: [2, 0, 0, 0, 0, 0x11],
            from: [2, 0, 0, 0, 0, 0xd1],
            service: 0,
            dest: 1,
            idle: Duration::from_secs(300),
        }
    }

    /// What [`started`] gives.
    type Started = (
        Steering,
        Sender<(u16, OffloadRec)>,
        Receiver<Touch>,
        OffloadView,
        JoinHandle<()>,
    );

    /// The program loaded with room for `room` flows and the test's TCP service, and the
    /// offload thread started over its map (clock origin `start`): the program, where
    /// the workers' records go, the one worker's touches, the view, the thread.
    fn started(room: u32, start: Instant) -> Started {
        let steering = Steering::load(room).expect("the XDP program loads");
        let service = ServiceKey {
            proto: Protocol::Tcp,
            vip: VIP.into(),
            port: 80,
        };
        steering
            .set_services(&[service], &[], &[])
            .expect("maps updated");
        let map = steering.flows().expect("the flows map");
        let (records_tx, records) = bounded(16);
        let (touch_tx, touches) = bounded(16);
        let (view, thread) =
            super::start(map, records, vec![touch_tx], start, None).expect("started");
        (steering, records_tx, touches, view, thread)
    }

    /// The whole loop without a lab: a worker's insert goes into the program's map, the
    /// program forwards the flow's packets itself (BPF_PROG_TEST_RUN), and a reader that
    /// asks for fresh counters finds them in the service's and the real server's
    /// traffic, while the worker that holds the flow is touched; a remove takes it out.
    #[test]
    fn forwarded_packets_are_counted_and_touch_their_worker() {
        if !xdpvs_testkit::is_root() {
            xdpvs_testkit::cannot_run(
                "the offload thread's test",
                "loading the XDP program needs root",
            );
            return;
        }
        let start = Instant::now();
        let (steering, records_tx, touches, view, thread) = started(64, start);
        let key = ConnKey {
            proto: Protocol::Tcp,
            client: CLIENT,
            cport: 40000,
            vip: VIP,
            vport: 80,
        };
        let flow = FastFlow {
            service: 3,
            dest: 5,
            idle: Duration::from_secs(900),
            ..fast_flow(key)
        };
        records_tx
            .send((0, OffloadRec::Insert(flow)))
            .expect("sent");
        let e = Endpoints {
            src_mac: [2, 0, 0, 0, 0, 0xc1],
            dst_mac: [2, 0, 0, 0, 0, 0xd1],
            src_ip: CLIENT,
            dst_ip: VIP,
            sport: 40000,
            dport: 80,
        };
        let data = frames::tcp(&e, 0x18, b"GET / HTTP/1.0\r\n\r\n");
        let ip_len = u64::from(u16::from_be_bytes([data[16], data[17]]));
        // The insert is applied before a pass that a reader asks for.
        view.fresh();
        assert_eq!(view.flows.load(Relaxed), 1);
        for _ in 0..3 {
            let out = steering
                .fast_path(&data)
                .expect("test run")
                .expect("forwarded by the program");
            assert_eq!(&out[0..6], &flow.to);
            assert_eq!(&out[6..12], &flow.from);
            assert_eq!(&out[12..], &data[12..]);
        }
        // A SYN, a FIN or an RST of the flow is the workers'.
        for f in [0x02, 0x11, 0x04] {
            let seg = frames::tcp(&e, f, b"");
            assert_eq!(
                steering.fast_path(&seg).expect("test run"),
                None,
                "flags {f:#x}"
            );
        }
        std::thread::sleep(FRESH);
        view.fresh();
        let s = &view.stats;
        assert_eq!(s.services[3].packets.get(), 3);
        assert_eq!(s.services[3].bytes.get(), 3 * ip_len);
        assert_eq!(s.dests[5].packets.get(), 3);
        assert_eq!((s.rx.get(), s.tx.get()), (3, 3));
        let t = touches.try_recv().expect("the worker is touched");
        assert_eq!(t.key, key);
        let now = start.elapsed();
        assert!(
            Duration::from_nanos(t.at.as_nanos()) <= now
                && now - Duration::from_nanos(t.at.as_nanos()) < Duration::from_secs(5),
            "touched at {:?}, now {now:?}",
            t.at
        );
        // Removed: the program leaves it to the workers, and nothing is counted twice.
        records_tx.send((0, OffloadRec::Remove(key))).expect("sent");
        std::thread::sleep(FRESH);
        view.fresh();
        assert_eq!(view.flows.load(Relaxed), 0);
        assert_eq!(steering.fast_path(&data).expect("test run"), None);
        assert_eq!(s.services[3].packets.get(), 3);
        drop(records_tx);
        thread
            .join()
            .expect("the thread ends with the workers' channel");
    }

    /// With room for one flow, a flow removed frees its slot of counters and the next
    /// flow takes it: the new flow counts from zero, the old one's packets are counted
    /// once, where they went.
    #[test]
    fn a_freed_slot_counts_the_next_flow_from_zero() {
        if !xdpvs_testkit::is_root() {
            xdpvs_testkit::cannot_run(
                "the offload thread's slot test",
                "loading the XDP program needs root",
            );
            return;
        }
        let (steering, records_tx, _touches, view, thread) = started(1, Instant::now());
        let (a, b) = (
            FastFlow {
                dest: 1,
                ..fast_flow(key(40001))
            },
            FastFlow {
                dest: 2,
                ..fast_flow(key(40002))
            },
        );
        records_tx.send((0, OffloadRec::Insert(a))).expect("sent");
        view.fresh();
        for _ in 0..2 {
            assert!(steering.fast_path(&segment(40001)).expect("run").is_some());
        }
        // No room for a second flow while the first holds the only slot.
        records_tx.send((0, OffloadRec::Insert(b))).expect("sent");
        std::thread::sleep(FRESH);
        view.fresh();
        assert_eq!(view.refused.load(Relaxed), 1);
        assert_eq!(steering.fast_path(&segment(40002)).expect("run"), None);
        records_tx
            .send((0, OffloadRec::Remove(a.key)))
            .expect("sent");
        records_tx.send((0, OffloadRec::Insert(b))).expect("sent");
        std::thread::sleep(FRESH);
        view.fresh();
        assert_eq!(view.flows.load(Relaxed), 1);
        assert_eq!(steering.fast_path(&segment(40001)).expect("run"), None);
        assert!(steering.fast_path(&segment(40002)).expect("run").is_some());
        std::thread::sleep(FRESH);
        view.fresh();
        let s = &view.stats;
        assert_eq!(
            s.dests[1].packets.get(),
            2,
            "the first flow's, counted once"
        );
        assert_eq!(s.dests[2].packets.get(), 1, "the second flow's, from zero");
        assert_eq!(s.services[0].packets.get(), 3);
        drop(records_tx);
        thread.join().expect("ends");
    }

    /// More flows with traffic than a worker's inbox holds: what does not fit is told in
    /// the next passes, first in line, so that every flow's worker hears of it (before,
    /// the flows past the inbox's room were never touched while the first ones kept
    /// their traffic, and expired at their worker while the program still forwarded them).
    #[test]
    fn flows_past_a_full_inbox_are_touched_in_later_passes() {
        if !xdpvs_testkit::is_root() {
            xdpvs_testkit::cannot_run(
                "the offload thread's touch test",
                "loading the XDP program needs root",
            );
            return;
        }
        let (steering, records_tx, touches, view, thread) = started(64, Instant::now());
        let flows = 40u16; // the test's inbox holds 16
        for cport in 0..flows {
            let flow = fast_flow(key(40000 + cport));
            records_tx
                .send((0, OffloadRec::Insert(flow)))
                .expect("sent");
        }
        std::thread::sleep(FRESH);
        view.fresh();
        assert_eq!(view.flows.load(Relaxed), u64::from(flows));
        let mut told = std::collections::BTreeSet::new();
        // The same flows keep their traffic pass after pass: 16 told, 16 more, the last 8.
        for _ in 0..3 {
            for cport in 0..flows {
                let out = steering.fast_path(&segment(40000 + cport)).expect("run");
                assert!(out.is_some(), "flow {cport} forwarded by the program");
            }
            std::thread::sleep(FRESH);
            view.fresh();
            let before = told.len();
            for t in touches.try_iter() {
                told.insert(t.key.cport);
            }
            assert!(told.len() > before, "a pass with traffic tells someone new");
        }
        let all: std::collections::BTreeSet<u16> = (40000..40000 + flows).collect();
        assert_eq!(told, all, "every flow's worker is told");
        drop(records_tx);
        thread.join().expect("ends");
    }

    /// Inserts go to the map in batches: more flows than one batch all arrive, and once
    /// the map is full the rest are refused (counted, left to the workers) while the
    /// ones it took are forwarded.
    #[test]
    fn inserts_in_batches_fill_the_map_and_refuse_the_rest() {
        if !xdpvs_testkit::is_root() {
            xdpvs_testkit::cannot_run(
                "the offload thread's batch test",
                "loading the XDP program needs root",
            );
            return;
        }
        let room = INSERT_BATCH + 100;
        let steering = Steering::load(room as u32).expect("the XDP program loads");
        let map = steering.flows().expect("the flows map");
        let reader = steering.flows().expect("the flows map");
        let (records_tx, records) = bounded(RECORDS);
        let (touch_tx, _touches) = bounded(16);
        let (view, thread) =
            super::start(map, records, vec![touch_tx], Instant::now(), None).expect("started");
        let offered = room + 50;
        for i in 0..offered {
            let flow = fast_flow(ConnKey {
                proto: Protocol::Udp,
                client: CLIENT,
                cport: i as u16,
                vip: VIP,
                vport: 53,
            });
            records_tx
                .send((0, OffloadRec::Insert(flow)))
                .expect("sent");
        }
        std::thread::sleep(FRESH);
        view.fresh();
        assert_eq!(view.flows.load(Relaxed), room as u64);
        assert_eq!(view.refused.load(Relaxed), 50);
        assert_eq!(reader.len(), room);
        drop(records_tx);
        thread.join().expect("ends");
    }
}
