//! The load-balancing logic of xdpvs, free of I/O and clocks.
//!
//! - [`model`]: virtual services, real servers, scheduler names (LVS words).
//! - [`Scheduler`] and one module per scheduler: [`rr`], [`wrr`], [`lc`], [`wlc`], [`sh`], [`mh`].
//! - [`conn`]: the connection table (fixed capacity, incremental expiry, ActiveConn/InActConn).
//! - [`tcp`]: IPVS's inbound-only TCP state machine and timeouts.
//!
//! Time is always an argument ([`Time`]); nothing here reads a clock, allocates on the
//! packet path, or performs a syscall.
#![forbid(unsafe_code)]

pub mod conn;
pub mod hash;
pub mod lc;
pub mod mh;
pub mod model;
pub mod rr;
mod scheduler;
pub mod sh;
pub mod tcp;
mod time;
pub mod wlc;
pub mod wrr;

pub use model::{
    ConfigError, Mac, Persistence, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec,
};
pub use scheduler::{AnyScheduler, DestView, Load, Scheduler};
pub use time::Time;
