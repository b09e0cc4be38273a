//! Configuration: the typed protocol ([`proto`]), the client that sends it ([`client`]),
//! the socket server of a running director ([`server`]) and the control plane that applies
//! requests to the dataplane all or nothing ([`plane`]).

pub mod check;
pub mod client;
pub mod plane;
pub mod proto;
pub mod server;
pub mod stats;

/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/run/xdpvs/xdpvs.sock";
