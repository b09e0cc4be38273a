//! The only module of the dataplane allowed to use `unsafe`. Every block says why it is
//! sound; everything here is exposed through safe functions.
#![allow(unsafe_code)]

use xdpvs_sched::conn::{Entry, Family};
/// Hints the CPU to bring the cache line holding `r` into L1, without waiting.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, part of the x86-64 baseline) only hints the cache; it
    // never faults and reads nothing architecturally. The pointer comes from a live
    // reference, so it is valid anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Like [`prefetch`], for every cache line the first `len` bytes of `r` span (a 48-byte
/// table entry whose hot 32 bytes cross a line boundary in one slot of four).
#[inline(always)]
pub(crate) fn prefetch_head<T>(r: &T, len: usize) {
    prefetch(r);
    let start = r as *const T as usize;
    let last = start + len.clamp(1, std::mem::size_of::<T>()) - 1;
    if last / 64 != start / 64 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `prefetch`: a hint that never faults; `last` is a byte of the
        // live object `r`.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                last as *const i8,
            );
        }
    }
}

/// Asks the kernel to back the memory of `v` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), before it is touched. Large random-access tables then take
/// far fewer TLB misses. Best effort: returns whether the kernel accepted the advice (it
/// refuses where THP is disabled).
pub(crate) fn advise_huge_pages<T>(v: &mut [T]) -> bool {
    const HUGE: usize = 2 << 20;
    let start = v.as_mut_ptr() as usize;
    let bytes = std::mem::size_of_val(v);
    // Only whole 2 MiB pages inside the allocation can become huge pages.
    let first = start.next_multiple_of(HUGE);
    let end = (start + bytes) & !(HUGE - 1);
    if end <= first {
        return false;
    }
    // SAFETY: [first, end) lies inside the memory of `v`, which the caller lends us
    // exclusively. MADV_HUGEPAGE changes how pages are backed, never their
    // contents, and the range is page aligned as madvise requires.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    rc == 0
}

/// `n` empty connection-table entries, every page written now (with transparent huge
/// pages advised before): the table never takes a page fault on the packet path.
pub(crate) fn touched_slots<A: Family>(n: usize) -> Vec<Entry<A>> {
    let mut v = Vec::with_capacity(n);
    advise_huge_pages(v.spare_capacity_mut());
    v.resize(n, Entry::EMPTY);
    v
}

/// `n` empty connection-table entries in zeroed memory from the allocator, with
/// transparent huge pages advised: a large table comes straight from `mmap`, whose pages
/// the kernel maps only when they are first written, so a table (or the part of one)
/// nobody uses costs no memory. For [`xdpvs_sched::conn::ConnTable::with_slots`].
pub(crate) fn zeroed_slots<A: Family>(n: usize) -> Vec<Entry<A>> {
    let Ok(layout) = std::alloc::Layout::array::<Entry<A>>(n) else {
        return Vec::new(); // the table then allocates its slots itself
    };
    if layout.size() == 0 {
        return Vec::new();
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Entry<A>>();
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `p` was allocated by the global allocator with the layout of an array of
    // `n` entries, which is what a `Vec<Entry<A>>` of capacity `n` deallocates with; all
    // `n` elements are initialised, because all-zero bytes are a valid, empty `Entry`
    // (every field is an integer; `Entry::EMPTY` is documented to be all zero).
    let mut v = unsafe { Vec::from_raw_parts(p, n, n) };
    advise_huge_pages(&mut v);
    v
}

#[cfg(feature = "afxdp")]
pub(crate) mod link;
#[cfg(feature = "afxdp")]
pub mod skel;
#[cfg(feature = "afxdp")]
pub mod xsk;

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, so a timestamp
/// taken here can be compared with one taken in an XDP program on the same host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists, so the
    // call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An AF_PACKET socket on one interface: the frames the host receives on it, as they
/// reach the device, before routing, reverse-path and firewall rules can drop them (a
/// packet from an address the host holds itself, such as an announced VIP, is dropped
/// as a martian before any IP socket sees it). Frames an XDP program redirects to
/// AF_XDP never reach it; frames the host sends are not read.
#[derive(Debug)]
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    /// Opens a non-blocking socket for every protocol on interface `ifindex`.
    pub fn open(ifindex: u32) -> std::io::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(all),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor socket(2) just opened, owned by nobody else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let sock = PacketSocket { fd };
        sock.set(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        // SAFETY: an all-zero sockaddr_ll is a valid value of the type.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = i32::try_from(ifindex).map_err(std::io::Error::other)?;
        // SAFETY: `addr` is a sockaddr_ll of the size passed; bind(2) only reads it.
        let rc = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&sock.fd),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn set(&self, level: i32, name: i32, value: i32) -> std::io::Result<()> {
        // SAFETY: `value` is an int of the size passed; setsockopt(2) only reads it.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                level,
                name,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The next frame waiting, into `buf` (cut to its length); `None` when none is.
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is writable for its whole length, which is what recv(2) is given.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        usize::try_from(n).ok()
    }
}
