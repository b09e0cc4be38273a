//! The `xdpvs` binary's library: the command line (ipvsadm's grammar parsed once into a
//! typed request, rendering of the director's answers), the demo, the self-check and the
//! real-server set-up, the director's check of its LAN, explain.
//! The director itself is `xdpvs-director`.
#![forbid(unsafe_code)]

pub mod ask;
pub mod check;
pub mod cli;
pub mod demo;
pub mod explain;
pub mod format;
pub mod ipvsadm;
pub mod names;
pub mod quoting;
pub mod rssetup;
pub mod selfcheck;
