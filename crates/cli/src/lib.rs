//! The `xdpvs` binary's library: ipvsadm grammar, control plane, director, lab.
#![forbid(unsafe_code)]

pub mod control;
pub mod demo;
pub mod director;
pub mod ipvsadm;
pub mod lab;
pub mod resolve;
pub mod selfcheck;
