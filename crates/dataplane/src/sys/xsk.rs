//! One AF_XDP socket on one RX queue, with its own UMEM, as a [`Device`].
//!
//! Frame accounting: the UMEM has `frames` buffers. Half start in the fill ring, the other
//! half wait in a spare pool. A received frame is either transmitted from where it lies
//! (TX ring, then back through the completion ring to the fill ring) or given straight
//! back to the fill ring; the pool tops the fill ring up whenever transmissions are in
//! flight, so the fill ring never starves, and provides buffers for frames of our own.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::device::{next_device_id, Device, DeviceStats};
use crate::packet::Packet;

/// How to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CopyMode {
    /// Zero-copy if the driver supports it, else copy.
    Auto,
    /// Zero-copy or fail.
    #[cfg_attr(feature = "clap", value(name = "zerocopy", alias = "zero-copy"))]
    ZeroCopy,
    /// Copy mode.
    Copy,
}

/// Sizes of one socket's UMEM and rings.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    /// UMEM frames (buffers).
    pub frames: u32,
    /// Fill, completion, RX and TX ring sizes (powers of two).
    pub ring: u32,
    /// Copy or zero-copy.
    pub mode: CopyMode,
    /// Preferred busy polling: the thread that polls the socket runs the interface's RX
    /// processing (NAPI) itself, instead of a softirq or kernel thread elsewhere.
    pub busy_poll: Option<BusyPoll>,
    /// Back the UMEM with reserved huge pages (`MAP_HUGETLB`) when the system has enough
    /// free (`vm.nr_hugepages`), else with normal pages. A UMEM of 4 KiB pages costs a TLB
    /// miss on most received frames.
    pub huge_pages: bool,
}

/// Settings of preferred busy polling (`SO_PREFER_BUSY_POLL`). The interface should also
/// defer its interrupts (`napi_defer_hard_irqs`, `gro_flush_timeout` in sysfs), or the
/// kernel keeps processing RX on its own between polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyPoll {
    /// How long one busy poll may spin, in microseconds (`SO_BUSY_POLL`).
    pub usecs: u32,
    /// Frames one busy poll may process (`SO_BUSY_POLL_BUDGET`).
    pub budget: u32,
}

fn set_int_option(fd: RawFd, name: libc::c_int, value: u32) -> io::Result<()> {
    let v = value as libc::c_int;
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int
    // that lives for the call, and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Default for XskConfig {
    fn default() -> XskConfig {
        XskConfig {
            frames: 8192,
            ring: 2048,
            mode: CopyMode::Auto,
            busy_poll: None,
            huge_pages: true,
        }
    }
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// Bad sizes.
    #[error("AF_XDP ring/UMEM sizes: {0}")]
    Config(String),
    /// UMEM creation failed (often: RLIMIT_MEMLOCK or no CAP_IPC_LOCK).
    #[error("creating the UMEM failed: {0} (it needs CAP_NET_RAW to open its AF_XDP socket, and CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK to lock its memory)")]
    Umem(String),
    /// Socket creation or bind failed.
    #[error("binding an AF_XDP socket to {ifname} queue {queue} ({mode}) failed: {reason}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// Mode tried.
        mode: &'static str,
        /// What libxdp said, with the system's error.
        reason: String,
    },
    /// A socket option was refused.
    #[error("setting up busy polling on the AF_XDP socket failed: {0} (needs Linux 5.11+ and CAP_NET_ADMIN)")]
    BusyPoll(io::Error),
    /// The socket came without fill/completion rings.
    #[error("the AF_XDP socket on queue {0} came without fill/completion rings")]
    NoRings(u32),
}

/// xsk-rs errors say what failed but keep the system's error as their source: one line
/// with both.
fn with_cause(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

const BATCH: usize = 64;

/// A frame received on an [`XskDevice`]: a move-only token for one UMEM frame that the
/// kernel has handed over. Only the device that received it builds it, and it is neither
/// `Copy` nor `Clone`, so after [`Device::transmit`] or [`Device::release`] consumed it
/// no safe code can reach the frame while the kernel owns it:
///
/// ```compile_fail
/// fn keep(f: &xdpvs_dataplane::sys::xsk::XskFrame) -> xdpvs_dataplane::sys::xsk::XskFrame {
///     f.clone() // error: XskFrame is not Clone
/// }
/// ```
#[derive(Debug)]
pub struct XskFrame {
    desc: FrameDesc,
    owner: u32,
    /// The frame's length now (rewriting may change it: a tunnel's headers); written to
    /// the descriptor when the frame is sent.
    len: usize,
}

/// An AF_XDP socket bound to one queue, with its UMEM and four rings.
pub struct XskDevice {
    // Field order is drop order: rings and socket before the UMEM.
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    umem: Umem,
    spare: Vec<FrameDesc>,
    comp: Vec<FrameDesc>,
    rxbuf: Vec<FrameDesc>,
    txbuf: Vec<FrameDesc>,
    id: u32,
    in_flight: usize,
    zero_copy: bool,
    busy_poll: bool,
    huge_pages: bool,
    queue: u32,
    wakeups: u64,
}

/// Size of a reserved huge page (x86-64's default).
const HUGE_PAGE: u64 = 2 << 20;

/// The size of a UMEM frame.
pub const FRAME_SIZE: u32 = 2048;
/// The longest frame a UMEM frame receives: the kernel keeps `XDP_PACKET_HEADROOM` (256
/// bytes) in front of every received frame, and drops a longer frame (counted as
/// `rx_dropped` in `XDP_STATISTICS`: the socket does not take multi-buffer frames).
pub const MAX_RX_FRAME: u32 = FRAME_SIZE - 256;

impl std::fmt::Debug for XskDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskDevice")
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

fn qsize(n: u32) -> Result<QueueSize, XskError> {
    QueueSize::new(n).map_err(|e| XskError::Config(format!("{e}")))
}

impl XskDevice {
    /// Opens a socket on `ifname` queue `queue`. The XDP program is ours: libxdp is told
    /// not to load its own. Put [`XskDevice::fd`] into the program's XSKMAP.
    pub fn open(ifname: &str, queue: u32, cfg: &XskConfig) -> Result<XskDevice, XskError> {
        let frames = NonZeroU32::new(cfg.frames.max(2 * cfg.ring))
            .ok_or_else(|| XskError::Config("zero frames".into()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| XskError::Config(format!("{e}")))?)
            .fill_queue_size(qsize(cfg.ring)?)
            .comp_queue_size(qsize(cfg.ring)?)
            .build()
            .map_err(|e| XskError::Config(format!("{e}")))?;
        let iface = Interface::new(
            CString::new(ifname)
                .map_err(|_| XskError::Config("interface name has a NUL".into()))?,
        );
        let tries: &[(BindFlags, &'static str)] = match cfg.mode {
            CopyMode::Auto => &[
                (BindFlags::XDP_ZEROCOPY, "zero-copy"),
                (BindFlags::XDP_COPY, "copy"),
            ],
            CopyMode::ZeroCopy => &[(BindFlags::XDP_ZEROCOPY, "zero-copy")],
            CopyMode::Copy => &[(BindFlags::XDP_COPY, "copy")],
        };
        let mut last = None;
        let huge = cfg.huge_pages
            && super::table::huge_pages_free((HUGE_PAGE >> 10) as usize) as u64 * HUGE_PAGE
                >= frames.get() as u64 * u64::from(FRAME_SIZE);
        for &(flag, name) in tries {
            let (umem, descs, huge) = match Umem::new(umem_cfg, frames, huge) {
                Ok((u, d)) => (u, d, huge),
                Err(_) if huge => Umem::new(umem_cfg, frames, false)
                    .map(|(u, d)| (u, d, false))
                    .map_err(|e| XskError::Umem(with_cause(&e)))?,
                Err(e) => return Err(XskError::Umem(with_cause(&e))),
            };
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(qsize(cfg.ring)?)
                .tx_queue_size(qsize(cfg.ring)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(flag | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM is fresh and shared with no other socket, and libxdp's own
            // program loading is inhibited, as `Socket::new` requires.
            match unsafe { Socket::new(sock_cfg, &umem, &iface, queue) } {
                Ok((tx, rx, Some((fq, cq)))) => {
                    let mut dev = XskDevice {
                        tx,
                        rx,
                        fq,
                        cq,
                        umem,
                        spare: descs,
                        comp: Vec::with_capacity(cfg.ring as usize),
                        rxbuf: Vec::with_capacity(BATCH),
                        txbuf: Vec::with_capacity(cfg.ring as usize),
                        id: next_device_id(),
                        in_flight: 0,
                        zero_copy: name == "zero-copy",
                        busy_poll: cfg.busy_poll.is_some(),
                        huge_pages: huge,
                        wakeups: 0,
                        queue,
                    };
                    if let Some(bp) = cfg.busy_poll {
                        let fd = dev.fd();
                        set_int_option(fd, libc::SO_PREFER_BUSY_POLL, 1)
                            .and_then(|()| set_int_option(fd, libc::SO_BUSY_POLL, bp.usecs))
                            .and_then(|()| set_int_option(fd, libc::SO_BUSY_POLL_BUDGET, bp.budget))
                            .map_err(XskError::BusyPoll)?;
                    }
                    dev.comp.resize(cfg.ring as usize, dev.spare[0]);
                    dev.rxbuf.resize(BATCH, dev.spare[0]);
                    // Fill ring: half of the frames; the rest stay spare.
                    let give = dev.spare.len() / 2;
                    let at = dev.spare.len() - give;
                    // SAFETY: these descriptors come from this UMEM and are in no ring.
                    let n = unsafe { dev.fq.produce(&dev.spare[at..]) };
                    dev.spare.truncate(dev.spare.len() - n);
                    return Ok(dev);
                }
                Ok(_) => return Err(XskError::NoRings(queue)),
                Err(e) => last = Some((name, e)),
            }
        }
        let (mode, source) = last.expect("at least one bind mode is tried");
        Err(XskError::Bind {
            ifname: ifname.to_string(),
            queue,
            mode,
            reason: with_cause(&source),
        })
    }

    /// The socket's descriptor (for the XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Whether the UMEM lies in reserved huge pages.
    pub fn has_huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Kernel-side counters of the socket (drops for a full RX ring or empty fill ring).
    pub fn statistics(&self) -> io::Result<xsk_rs::socket::XdpStatistics> {
        self.rx.fd().xdp_statistics()
    }

    fn top_up_fill(&mut self) {
        if self.spare.is_empty() {
            return;
        }
        let want = self.fq.nb_free(self.spare.len() as u32) as usize;
        if want == 0 {
            return;
        }
        let at = self.spare.len() - want.min(self.spare.len());
        // SAFETY: spare descriptors belong to this UMEM and are in no ring.
        let n = unsafe { self.fq.produce(&self.spare[at..]) };
        self.spare.truncate(self.spare.len() - n);
    }
}

impl XskDevice {
    /// Copies the descriptors behind `frames` (tokens of this device, checked) into
    /// `txbuf`, for a ring call, each with its frame's length now.
    fn stage(&mut self, frames: &[XskFrame]) {
        self.txbuf.clear();
        for f in frames {
            let mut d = self.desc(f);
            if d.lengths().data() != f.len {
                // SAFETY: the token proves the frame is ours and in no ring; nobody reads
                // or writes its buffer while its length is set.
                unsafe { self.umem.data_mut(&mut d) }
                    .cursor()
                    .set_pos(f.len);
            }
            self.txbuf.push(d);
        }
    }

    /// The descriptor behind a token of this device.
    fn desc(&self, f: &XskFrame) -> FrameDesc {
        assert_eq!(
            f.owner, self.id,
            "a frame used with a device that did not receive it"
        );
        f.desc
    }
}

impl Device for XskDevice {
    type Frame = XskFrame;

    fn housekeeping(&mut self) {
        // Completed transmissions go back to the fill ring.
        if self.in_flight > 0 {
            let n = self.comp.len().min(BATCH * 4);
            // SAFETY: the completion ring only returns descriptors of this UMEM, and
            // `comp` is ours.
            let done = unsafe { self.cq.consume(&mut self.comp[..n]) };
            self.in_flight -= done.min(self.in_flight);
            // The ring reserves all or nothing: offer what fits, keep the rest spare.
            let fits = (self.fq.nb_free(done as u32) as usize).min(done);
            // SAFETY: just completed, so in no ring.
            let filled = unsafe { self.fq.produce(&self.comp[..fits]) };
            self.spare.extend_from_slice(&self.comp[filled..done]);
        }
        self.top_up_fill();
        if self.fq.needs_wakeup() {
            let fd = self.rx.fd_mut();
            let _ = self.fq.wakeup(fd, 0);
            self.wakeups += 1;
        }
    }

    fn kick(&mut self) {
        // Copy mode sends only on a kick (at most 32 frames per kick): kick while
        // anything is in flight. With need-wakeup, zero-copy kicks only when asked.
        if self.in_flight > 0 && (!self.zero_copy || self.tx.needs_wakeup()) {
            let _ = self.tx.wakeup();
            self.wakeups += 1;
        }
    }

    fn receive(&mut self, out: &mut Vec<XskFrame>, max: usize) {
        let max = max.min(self.rxbuf.len());
        // SAFETY: `rxbuf` is ours; the RX ring returns descriptors of this UMEM.
        let mut n = unsafe { self.rx.consume(&mut self.rxbuf[..max]) };
        if n == 0 && self.busy_poll {
            // Nothing ready: run the interface's RX processing here and now. A
            // non-blocking recvfrom() on an AF_XDP socket busy-polls its NAPI context.
            // SAFETY: the descriptor is our open socket; a zero-length buffer is never
            // written to, and a null address with a null length asks for no address.
            unsafe {
                libc::recvfrom(
                    self.fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            // SAFETY: as above.
            n = unsafe { self.rx.consume(&mut self.rxbuf[..max]) };
        }
        let owner = self.id;
        out.extend(self.rxbuf[..n].iter().map(|&desc| XskFrame {
            desc,
            owner,
            len: desc.lengths().data(),
        }));
    }

    fn frame<'a>(&'a self, f: &'a XskFrame) -> &'a [u8] {
        let d = self.desc(f);
        // SAFETY: the token proves that the kernel handed this frame of our UMEM to us
        // (it came off our RX ring, `desc` checked the owner) and that it is in no ring
        // until the token is consumed; the caller holds it, so nobody writes the frame
        // while the returned borrow lives.
        let data = unsafe { self.umem.data(&d) }.contents();
        &data[..f.len.min(data.len())]
    }

    fn frame_mut<'a>(&'a mut self, f: &'a mut XskFrame) -> Packet<'a> {
        let mut d = self.desc(f);
        // SAFETY: as for `frame`; `&mut self` and `&mut XskFrame` exclude any other
        // access through us or through the token.
        let mut data = unsafe { self.umem.data_mut(&mut d) };
        let room = data.cursor().buf_len();
        let ptr = data.contents_mut().as_mut_ptr();
        // SAFETY: `ptr..ptr+room` is the frame's data segment and the room behind it up
        // to the end of its UMEM frame, inside the UMEM mapping, which lives as long as
        // `self`; the returned borrow is tied to `&mut self`, so no other access can
        // overlap it, and no ring holds the frame meanwhile.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, room) };
        Packet::new(buf, &mut f.len)
    }

    fn transmit(&mut self, frames: &mut Vec<XskFrame>) {
        if frames.is_empty() {
            return;
        }
        self.stage(frames);
        // xsk-rs reserves all or nothing: a batch larger than the free slots would be
        // refused whole. Offer what fits; the rest stays the caller's.
        let fits = (self.tx.nb_free(self.txbuf.len() as u32) as usize).min(self.txbuf.len());
        // SAFETY: every descriptor comes from a token of this device (checked above): a
        // frame of this UMEM, received and in no ring. The tokens of the frames the ring
        // took are consumed just below, so they cannot be used again.
        let n = unsafe { self.tx.produce(&self.txbuf[..fits]) };
        self.in_flight += n;
        frames.drain(..n);
    }

    fn release(&mut self, frames: &mut Vec<XskFrame>) {
        if frames.is_empty() {
            return;
        }
        self.stage(frames);
        frames.clear();
        // As for TX: offer the fill ring what fits, keep the rest spare.
        let fits = (self.fq.nb_free(self.txbuf.len() as u32) as usize).min(self.txbuf.len());
        // SAFETY: frames of this UMEM, received and in no ring (their tokens were checked
        // and are consumed).
        let n = unsafe { self.fq.produce(&self.txbuf[..fits]) };
        self.spare.extend_from_slice(&self.txbuf[n..]);
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        let Some(mut d) = self.spare.pop() else {
            return false;
        };
        // SAFETY: a spare descriptor of this UMEM, in no ring.
        let ok = unsafe { write_frame(&self.umem, &mut d, bytes) };
        // SAFETY: as above; after a successful write its length is the frame's.
        if ok && unsafe { self.tx.produce(&[d]) } == 1 {
            self.in_flight += 1;
            true
        } else {
            self.spare.push(d);
            false
        }
    }

    fn wait(&mut self, timeout_ms: i32) -> bool {
        self.rx.poll(timeout_ms).unwrap_or(false)
    }

    fn stats(&self) -> Option<DeviceStats> {
        let k = self.statistics().ok()?;
        Some(DeviceStats {
            rx_dropped: k.rx_dropped(),
            rx_invalid_descs: k.rx_invalid_descs(),
            rx_ring_full: k.rx_ring_full(),
            rx_fill_ring_empty: k.rx_fill_ring_empty_descs(),
            tx_invalid_descs: k.tx_invalid_descs(),
            tx_ring_empty: k.tx_ring_empty_descs(),
            wakeups: self.wakeups,
        })
    }
}

/// Makes `bytes` the whole frame of `d`. A descriptor keeps the length of the frame last
/// received into it or sent from it, and xsk-rs's cursor writes after that length: the
/// frame must be written from its start, or it goes out as the old frame followed by
/// `bytes` (the receiver reads the old one: a stale packet sent again, the new one lost,
/// and a switch that learns the old frame's source MAC on the director's port).
///
/// # Safety
/// `d` is a descriptor of `umem` in no ring (nobody else reads or writes its buffer).
unsafe fn write_frame(umem: &Umem, d: &mut FrameDesc, bytes: &[u8]) -> bool {
    // SAFETY: the caller's.
    let mut data = unsafe { umem.data_mut(d) };
    let mut cursor = data.cursor();
    cursor.set_pos(0);
    cursor.write_all(bytes).is_ok()
}

/// What [`XskDevice::lean_forward`] did: the loop's own counts, to put beside the
/// system-call counts of a profiler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeanStats {
    /// Passes of the loop.
    pub loops: u64,
    /// Passes that found the RX ring empty.
    pub empty_polls: u64,
    /// Frames received.
    pub received: u64,
    /// Frames put on the TX ring.
    pub transmitted: u64,
    /// `sendto()` kicks.
    pub kicks: u64,
}

impl XskDevice {
    /// The leanest MAC-rewrite forwarder on this socket, written directly on xsk-rs' rings
    /// with no [`Device`] layer and no pipeline: the floor every forwarder on this socket
    /// type is measured against. Each pass: completions straight back to the fill ring,
    /// up to 64 frames off the RX ring, both MACs written, all of them onto the TX ring,
    /// and a `sendto()` kick while anything is in flight (copy mode sends only when
    /// kicked). With `yield_when_idle`, a pass that found nothing gives the core away.
    /// Runs until `stop` is set.
    pub fn lean_forward(
        mut self,
        dst: [u8; 6],
        src: [u8; 6],
        yield_when_idle: bool,
        stop: &std::sync::atomic::AtomicBool,
    ) -> LeanStats {
        let mut s = LeanStats::default();
        let mut batch = [self.rxbuf[0]; BATCH];
        let mut done = [self.rxbuf[0]; BATCH];
        // Every frame is in the fill ring or in flight: no spare pool in the loop.
        self.top_up_fill();
        let mut spare = std::mem::take(&mut self.spare);
        let mut in_flight = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            s.loops += 1;
            if in_flight > 0 {
                // SAFETY: the completion ring returns frames of this UMEM that the kernel
                // is done with; `done` is ours.
                let n = unsafe { self.cq.consume(&mut done) };
                in_flight -= n;
                // SAFETY: just completed, in no ring.
                let f = unsafe { self.fq.produce(&done[..n]) };
                spare.extend_from_slice(&done[f..n]);
            }
            if !spare.is_empty() {
                // SAFETY: spare frames of this UMEM, in no ring.
                let f = unsafe { self.fq.produce(&spare) };
                spare.drain(..f);
            }
            // SAFETY: `batch` is ours; the RX ring returns frames of this UMEM, which are
            // ours until they are put on a ring again below.
            let n = unsafe { self.rx.consume(&mut batch) };
            if n == 0 {
                s.empty_polls += 1;
            }
            s.received += n as u64;
            for d in &mut batch[..n] {
                // SAFETY: a frame just received and in no ring: nobody else accesses it.
                let mut data = unsafe { self.umem.data_mut(d) };
                let bytes = data.contents_mut();
                if bytes.len() >= 12 {
                    bytes[..6].copy_from_slice(&dst);
                    bytes[6..12].copy_from_slice(&src);
                }
            }
            // SAFETY: received frames of this UMEM, in no ring; each goes into exactly one
            // ring (TX, or the fill ring when TX is full).
            let t = unsafe { self.tx.produce(&batch[..n]) };
            in_flight += t;
            s.transmitted += t as u64;
            if t < n {
                // SAFETY: as above.
                let f = unsafe { self.fq.produce(&batch[t..n]) };
                spare.extend_from_slice(&batch[t + f..n]);
            }
            if in_flight > 0 {
                let _ = self.tx.wakeup();
                s.kicks += 1;
            }
            if n == 0 && yield_when_idle {
                std::thread::yield_now();
            }
        }
        self.in_flight = in_flight;
        self.spare = spare;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_written_into_a_used_buffer_is_the_new_bytes_alone() {
        let frames = NonZeroU32::new(4).expect("non-zero");
        let (umem, mut descs) = Umem::new(UmemConfig::default(), frames, false).expect("a UMEM");
        let d = &mut descs[0];
        // As a received 42-byte ARP reply leaves it.
        // SAFETY: a descriptor of this UMEM; no socket, so no ring.
        unsafe { umem.data_mut(d) }
            .cursor()
            .write_all(&[0xaa; 42])
            .expect("fits");
        let syn = [0x5a; 54];
        // SAFETY: as above.
        assert!(unsafe { write_frame(&umem, d, &syn) });
        // SAFETY: as above.
        assert_eq!(unsafe { umem.data(d) }.contents(), &syn[..]);
        // A shorter frame after a longer one.
        // SAFETY: as above.
        assert!(unsafe { write_frame(&umem, d, &[1, 2, 3]) });
        // SAFETY: as above.
        assert_eq!(unsafe { umem.data(d) }.contents(), &[1, 2, 3][..]);
    }
}
