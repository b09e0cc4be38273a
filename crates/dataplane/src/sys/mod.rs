//! The only module of the dataplane allowed to use `unsafe`. Every block says why it is
//! sound; everything here is exposed through safe functions.
#![allow(unsafe_code)]

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

mod table;
pub use table::{Backing, TableMemory};

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
