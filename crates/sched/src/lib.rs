//! The load-balancing logic of xdpvs, free of I/O and clocks.
//!
//! - [`model`]: virtual services, real servers, scheduler names (LVS words).
//! - [`Scheduler`] (what every scheduler implements, [`Pick`]: what it sees of a new
//!   connection) and one module per scheduler: [`rr`], [`wrr`], [`lc`], [`wlc`], [`sh`],
//!   [`mh`], [`dh`], [`sed`], [`nq`], [`lblc`], [`lblcr`], [`fo`], [`ovf`], [`twos`];
//!   [`AnyScheduler`] dispatches to them.
//! - [`conn`]: the connection table (fixed capacity, incremental expiry, ActiveConn/InActConn).
//! - [`tcp`]: IPVS's inbound-only TCP state machine and timeouts.
//! - [`sync`]: IPVS's connection synchronisation protocol (version 1), built and read.
//!
//! Time is always an argument ([`Time`]); nothing here reads a clock, allocates on the
//! packet path, or performs a syscall.
#![forbid(unsafe_code)]

mod any;
pub mod conn;
pub mod dh;
pub mod fo;
pub mod hash;
pub mod lblc;
pub mod lblcr;
pub mod lc;
pub mod mh;
pub mod model;
pub mod nq;
pub mod ovf;
pub mod rr;
mod scheduler;
pub mod sed;
pub mod sh;
pub mod sync;
pub mod tcp;
mod time;
pub mod twos;
pub mod wlc;
pub mod wrr;

pub use any::AnyScheduler;
pub use model::{
    ConfigError, Mac, Method, Persistence, Protocol, RealSpec, SchedFlags, SchedKind, ServiceKey,
    ServiceSpec, TunCsum, TunKind, Tunnel,
};
pub use scheduler::{heaviest, least_weighted, DestView, Load, Pick, Scheduler};
pub use time::Time;
