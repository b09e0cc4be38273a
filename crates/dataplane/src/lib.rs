//! The xdpvs dataplane.
//!
//! The packet core, which builds with a plain Rust toolchain:
//! - [`engine`]: the pure pipeline, `process(frame, tables, now) -> Verdict`.
//! - [`config`]: what a worker runs with, compiled into a swappable snapshot.
//! - [`stats`]: per-worker counters by verdict, drop reason, service and real server.
//! - [`device`]: the [`device::Device`] trait (move-only frame tokens) and the in-memory
//!   device; [`ring`]: a zero-copy NIC modelled in memory (UMEM and descriptor rings,
//!   for the benchmark's zero-copy model); [`worker`]: the loop generic over both.
//! - [`limits`]: the limits shared with the XDP program (`bpf/limits.h`).
//! - [`ipv6`]: IPv6 frames parsed (extension headers, fragments), as the engine's IPv6
//!   path uses them (services, neighbour discovery for VIPs, ICMPv6).
//!
//! The AF_XDP shell, with the `afxdp` feature (default; needs clang and libelf):
//! `sys::xsk` (the AF_XDP device) and [`xdp`] (the steering program).
//!
//! Unsafe code lives in one module, `sys`, behind safe functions; everything else
//! is checked by `#![deny(unsafe_code)]`.
#![deny(unsafe_code)]

pub mod arms;
mod checksum;
pub mod config;
pub mod device;
pub mod engine;
pub mod frag;
pub mod handoff;
pub mod icmp;
pub mod ipv6;
mod method;
pub mod offload;
pub mod packet;
pub mod reuse;
pub mod ring;
pub mod stats;
pub mod sys;
pub mod worker;
#[cfg(feature = "afxdp")]
pub mod xdp;

/// Limits shared with the XDP program, generated from `bpf/limits.h`.
pub mod limits {
    include!(concat!(env!("OUT_DIR"), "/limits.rs"));
}

pub use config::{
    ClientRoute, Config, ConnReuseMode, DestStatus, Draining, Fwd, Limits, NatSource, Options,
    Services, SlotBook, SlotCheckpoint,
};
pub use engine::{
    prefetch, prefetch_frame, prefetch_landing, process, process_packet, process_steered, Probe,
    Tables, Verdict,
};
pub use method::tunnel_frame;
pub use packet::Packet;
pub use stats::{DropReason, WorkerStats};
pub use xdpvs_sched::Time;
