//! The xdpvs director runtime: everything `xdpvs run` does around the packet core.
//!
//! - [`announce`]: `run --announce`: the VIPs as addresses for a routing daemon (ECMP), and
//!   the nftables guard for when the director is gone.
//! - [`setup`]: interface facts, capabilities, the XDP program, one AF_XDP socket per queue.
//! - [`workers`]: one pinned worker thread per queue, supervised; the live dataplane the
//!   control plane configures.
//! - [`control`]: the control side's parts: the write side that applies changes all or
//!   nothing and publishes a view of them, the read model that answers questions from
//!   that view, diagnostics, the control socket (a thread per client) and its protocol.
//! - [`writer`]: the write side's thread, which also drives health transitions, MAC
//!   learning, supervision, `--announce` and drains.
//! - [`health`]: real servers' health checks (keepalived's TCP_CHECK and HTTP_GET).
//! - [`neighbours`]: real servers' MACs from the kernel's neighbour table.
//! - [`watch`]: other hosts claiming a VIP and real servers changing MAC, noticed while
//!   running.
//! - [`placement`]: where the interface's RX processing runs, for `--poll auto`.
//! - [`options`]: what `xdpvs run` is told; [`run`]: the director's life — set up,
//!   start the parts, stop, tear down.
#![forbid(unsafe_code)]

pub mod announce;
pub mod control;
pub mod events;
pub mod follow;
pub mod health;
pub mod iface;
pub mod keepalived;
pub mod metrics;
pub mod neighbours;
pub mod offload;
pub mod options;
pub mod placement;
pub mod run;
pub mod setup;
pub mod sync;
pub mod watch;
pub mod web;
pub mod workers;
pub mod writer;

pub use options::RunOptions;
pub use run::{run, RunError};
pub use writer::{Source, Stop};
