//! The forwarding methods, one module each: what a packet of a connection becomes on its
//! way to its real server, and (NAT) what the real server's reply becomes on its way to
//! the client.
//!
//! The engine finds the connection and its real server and hands the frame here with
//! where its headers are ([`At`]); the method rewrites what it owns (the addresses and
//! ports, the checksums they enter) and the engine then writes the Ethernet addresses of
//! the next hop and counts. Each method keeps one invariant the fixtures check:
//! - [`route`] (direct routing): no IP or transport byte changes;
//! - [`masq`] (NAT): the destination address and port become the real server's on the
//!   way in, the source address and port the service's on the way out, and every
//!   checksum stays valid (updated incrementally, RFC 1624);
//! - [`tunnel`] (`-i`): the packet, from its IP header on, travels byte for byte inside
//!   the outer headers; the engine puts them in front of it when it forwards
//!   ([`tunnel::encapsulate`]), since only the frame's buffer has the room.

use xdpvs_sched::Protocol;

use crate::config::Fwd;

mod masq;
mod route;
pub(crate) mod tunnel;

/// Where a packet's headers are in its frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    /// IPv6 (the IP header follows the Ethernet header either way).
    pub v6: bool,
    /// The transport header's offset and protocol; `None` for a later fragment, which
    /// carries no transport header.
    pub l4: Option<(usize, Protocol)>,
}

/// Rewrites a client's packet for real server `fwd`.
#[inline]
pub(crate) fn to_real(frame: &mut [u8], fwd: &Fwd, at: &At) {
    match *fwd {
        Fwd::Route | Fwd::Tunnel { .. } => route::to_real(frame),
        Fwd::Masq { addr, port, .. } => masq::to_real(frame, at, addr, port),
    }
}

/// Rewrites an ICMP error about a reply of real server `fwd` (to the VIP, quoting the
/// reply) for that real server; the ICMP message starts at `icmp`.
#[inline]
pub(crate) fn icmp_to_real(frame: &mut [u8], fwd: &Fwd, v6: bool, icmp: usize) {
    match *fwd {
        // The real server sent the reply from the VIP itself.
        Fwd::Route | Fwd::Tunnel { .. } => {}
        Fwd::Masq { addr, port, .. } => masq::icmp_to_real(frame, v6, icmp, addr, port),
    }
}

/// Rewrites an ICMP error real server `fwd` sent about a client's packet, for the client.
#[inline]
pub(crate) fn icmp_to_client(frame: &mut [u8], fwd: &Fwd, v6: bool, icmp: usize) {
    match *fwd {
        Fwd::Route | Fwd::Tunnel { .. } => {}
        Fwd::Masq { vip, vport, .. } => masq::icmp_to_client(frame, v6, icmp, vip, vport),
    }
}

/// Rewrites a real server's reply for the client (NAT only: with direct routing the
/// replies never cross the director).
#[inline]
pub(crate) fn to_client(frame: &mut [u8], fwd: &Fwd, at: &At) {
    match *fwd {
        Fwd::Route | Fwd::Tunnel { .. } => {}
        Fwd::Masq { vip, vport, .. } => masq::to_client(frame, at, vip, vport),
    }
}

/// Encapsulates the frame `frame` (an Ethernet frame carrying an IP packet of the
/// family of `from` and `to`) in tunnel `tun` from `from` to `to`, for frames the
/// director writes itself (`xdpvs check`'s probes of tunnel real servers). The Ethernet
/// header is kept. `None` when the frame is not such a packet.
pub fn tunnel_frame(
    mut frame: Vec<u8>,
    tun: &xdpvs_sched::Tunnel,
    from: std::net::IpAddr,
    to: std::net::IpAddr,
) -> Option<Vec<u8>> {
    let ip_len = match frame.get(14)? >> 4 {
        4 => usize::from(u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*frame.get(18)?, *frame.get(19)?])),
        _ => return None,
    };
    let mut len = frame.len();
    frame.resize(len + 64, 0);
    let done = tunnel::encapsulate(
        &mut crate::packet::Packet::new(&mut frame, &mut len),
        tun,
        from,
        to,
        ip_len,
    );
    frame.truncate(len);
    done.then_some(frame)
}
