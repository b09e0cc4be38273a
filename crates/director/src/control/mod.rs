//! The control side, in parts with one job each:
//!
//! - [`write`]: the write side, the one owner of the operator's configuration; applies
//!   changes all or nothing and publishes a [`view::View`] after each.
//! - [`read`]: the read model; answers every question from the published view and the
//!   workers' shared counters, on the asking client's thread.
//! - [`diagnose`]: `xdpvs check` and `xdpvs explain`, on a thread of their own.
//! - [`server`]: the control socket, a thread per client; [`route`] hands each request to
//!   the part that answers it.
//! - [`dataplane`]: what each part asks of the dataplane, one narrow trait per part.
//! - [`proto`]: the typed protocol; [`client`]: what `xdpvs -A ...` runs; [`check`]: the
//!   pure planning and report of `xdpvs check`; [`stats`]: counters and rates.

pub mod check;
pub mod client;
pub mod dataplane;
pub mod diagnose;
pub mod json;
pub mod offline;
pub mod proto;
pub mod read;
pub mod route;
pub mod server;
pub mod stats;
pub mod view;
pub mod write;

/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/run/xdpvs/xdpvs.sock";
