//! The `xdpvs` binary's library: the command line (ipvsadm's grammar parsed once into a
//! typed request, rendering of the director's answers), the demo and the self-check.
//! The director itself is `xdpvs-director`.
#![forbid(unsafe_code)]

pub mod cli;
pub mod demo;
pub mod format;
pub mod ipvsadm;
pub mod selfcheck;
