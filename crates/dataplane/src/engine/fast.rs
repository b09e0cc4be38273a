//! The short path of what most traffic is: an IPv4 TCP segment or UDP datagram (header
//! without options, not a fragment) to a direct-routing service that no NAT or tunnel
//! real server, connection synchronisation or `--offload` complicates. It is read once,
//! at fixed offsets. A packet of a connection the table holds (TCP without SYN) is given
//! here exactly what the general path gives it: the entry's last-seen time and state, the
//! real server's MAC, the service's and real server's counters. Every other packet of a
//! service (a new connection, a SYN on a held one, one another worker holds, one whose
//! real server is not in service) goes to the general path's [`deliver`] with the parse
//! done, which is what the general path would do with it after parsing it again.
//!
//! Anything else (not IPv4, options, fragments, other protocols, no service) goes to the
//! general path with nothing changed (a lookup that met an expired entry removed it,
//! which the general path's own lookup would do). The two agree on every frame:
//! `tests/fast_path.rs` runs frames both ways and compares verdicts, bytes, tables and
//! counters.

use std::net::Ipv4Addr;
use xdpvs_sched::tcp::flags;

use xdpvs_sched::{Protocol, Time};

use super::{deliver, fixed_key4, to_server, ConnKey, Flow, Tables, Verdict, ETH_LEN};
use crate::config::DestStatus;
use crate::packet::Packet;

/// The IPv4 header without options.
const IP_LEN: usize = 20;

/// The verdict of an IPv4 direct-routing flow's packet, or `None` (nothing changed) for
/// the general path.
#[inline(always)]
pub(super) fn established4(frame: &mut Packet<'_>, t: &mut Tables, now: Time) -> Option<Verdict> {
    // What the short path does not do is ruled out first: such an installation parses
    // no frame twice.
    let services = &t.services;
    if services.has_nat() || services.has_tunnel() || t.sync_out.is_some() || t.offload.is_some() {
        return None;
    }
    let f: &[u8] = frame;
    let h = f.get(..ETH_LEN + IP_LEN)?;
    // IPv4, no options, neither a fragment nor one's first part (DF may be set).
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || h[20] & 0x3f != 0 || h[21] != 0 {
        return None;
    }
    let proto = match h[23] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let l4 = f.get(ETH_LEN + IP_LEN..ETH_LEN + total.max(IP_LEN))?;
    let tcp_flags = match proto {
        Protocol::Tcp => {
            let head = l4.get(..20)?;
            let data_at = usize::from(head[12] >> 4) * 4;
            if data_at < 20 || l4.len() < data_at {
                return None;
            }
            Some(head[13])
        }
        Protocol::Udp => {
            l4.get(..8)?;
            None
        }
    };
    // No IP options: the ports are at their fixed offsets (present: checked above).
    let key = fixed_key4(f, proto);
    let si = t.services.find4(proto, key.vip, key.vport)?;
    // A SYN may open a new connection on an old one's ports: `deliver` decides.
    let syn = tcp_flags.is_some_and(|f| f & flags::SYN != 0);
    if syn || t.elsewhere_in(si, key.client.into(), key.cport).is_some() {
        return Some(parsed(frame, t, key, tcp_flags, total, now));
    }
    let Some(idx) = t.conns.lookup(&key, now) else {
        return Some(parsed(frame, t, key, tcp_flags, total, now));
    };
    let dest = t.conns.entry(idx).dest();
    let mac = match t.services.dest(dest) {
        DestStatus::Up { mac, .. } | DestStatus::OutOfService { mac } => mac,
        _ => return Some(parsed(frame, t, key, tcp_flags, total, now)),
    };
    t.conns.seen(idx, now, tcp_flags);
    let slot = t.services.services[si].slot;
    // Direct routing: only the MACs change (no tunnel: checked above).
    Some(to_server(frame, t, slot, dest, mac, total))
}

/// A packet the short path parsed but does not serve, given to [`deliver`] as the general
/// path's parser would have (kept out of line: the short path does not pay for it).
#[inline(never)]
fn parsed(
    frame: &mut Packet<'_>,
    t: &mut Tables,
    key: ConnKey<Ipv4Addr>,
    tcp_flags: Option<u8>,
    total: usize,
    now: Time,
) -> Verdict {
    let flow = Flow {
        key,
        tcp_flags,
        ip_len: total,
        l4: ETH_LEN + IP_LEN,
        first_fragment: None,
    };
    deliver(frame, t, &flow, now)
}
