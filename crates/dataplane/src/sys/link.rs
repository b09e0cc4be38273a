//! Attaching an XDP program through a `bpf_link`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Attaches the XDP program `prog` to `ifindex` with XDP `flags` (mode bits) through a
/// `bpf_link`. The returned descriptor owns the attachment: closing it (dropping it, or
/// the process dying) detaches the program, so nothing is left behind after a crash.
pub(crate) fn xdp_link(prog: BorrowedFd<'_>, ifindex: i32, flags: u32) -> io::Result<OwnedFd> {
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        flags,
        ..Default::default()
    };
    // SAFETY: `prog` is a live program descriptor for the duration of the call, `opts` is
    // a fully initialised options struct whose `sz` matches the libbpf it was built
    // against, and libbpf only reads it.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: libbpf returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
