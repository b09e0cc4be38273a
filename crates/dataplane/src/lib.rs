//! The xdpvs dataplane.
//!
//! - [`engine`]: the pure pipeline, `process(frame, tables, now) -> Verdict`.
//! - [`config`]: what a worker runs with, compiled into a swappable snapshot.
//! - [`stats`]: per-worker counters by verdict, drop reason, service and real server.
//! - [`frames`]: frame builders for tests, benchmarks and generators.
//!
//! Unsafe code lives in one module, `sys`, behind safe functions; everything else
//! is checked by `#![deny(unsafe_code)]`.
#![deny(unsafe_code)]

pub mod config;
pub mod device;
pub mod engine;
pub mod frames;
pub mod stats;
pub mod sys;
pub mod worker;
pub mod xdp;

pub use config::{Config, DestStatus, Limits, Options, Services};
pub use engine::{prefetch, process, process_steered, Tables, Verdict};
pub use stats::{DropReason, WorkerStats};
pub use xdpvs_sched::Time;
