//! Health checks of real servers, with keepalived's semantics: what a check is
//! ([`spec`]), how results move a real server between up and down ([`machine`]), the
//! thread that runs them ([`checker`]), and the programs and scripts they and their
//! transitions run ([`scripts`]).

pub mod checker;
pub mod machine;
pub mod scripts;
pub mod spec;
mod words;

pub use checker::{Checker, Dynamic, Forwarder, Outcome, Target};
pub use machine::{Health, Machine};
pub use spec::{CheckSpec, Millis, OnFailure, Probe, Quorum, Script};
