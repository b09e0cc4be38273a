//! Real servers' MACs, from the kernel's neighbour table, over rtnetlink.
//!
//! [`Neighbours`] dumps the table once (`RTM_GETNEIGH`) and then follows it through the
//! kernel's neighbour events (the `RTNLGRP_NEIGH` multicast group), so a real server whose
//! MAC changed or that stopped answering ARP (`NUD_FAILED`) is seen at the next turn of
//! the control loop. The director does not talk IP to real servers itself, so it makes the
//! kernel resolve them with [`probe`]: one empty UDP datagram to the discard port for
//! each real server not resolved yet, and for all of them every so often, which also
//! makes the kernel re-check entries gone stale.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use xdpvs_sched::Mac;

use crate::iface::LocalNet;

/// `RTNLGRP_NEIGH` of linux/rtnetlink.h.
const RTNLGRP_NEIGH: u32 = 3;

/// Why the neighbour table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    /// A netlink socket call failed.
    #[error("rtnetlink {call} failed")]
    Socket {
        /// Which call.
        call: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The kernel answered a dump with an error.
    #[error("the kernel refused the neighbour dump: {0}")]
    Refused(String),
}

pub(crate) fn socket_err(call: &'static str) -> impl FnOnce(io::Error) -> NeighbourError {
    move |source| NeighbourError::Socket { call, source }
}

/// What one neighbour-table message says of an IPv4 or IPv6 neighbour on our interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The neighbour.
    pub addr: IpAddr,
    /// `Some(mac)` while the kernel holds a usable MAC for it, `None` when it failed,
    /// is being resolved or was deleted.
    pub mac: Option<Mac>,
}

/// Reads one neighbour message: `None` if it is not about IPv4 or IPv6 on one of the
/// interfaces `on`.
pub fn entry(msg: &NeighbourMessage, deleted: bool, on: &[u32]) -> Option<Entry> {
    let family = msg.header.family;
    if !(family == AddressFamily::Inet || family == AddressFamily::Inet6)
        || !on.contains(&msg.header.ifindex)
    {
        return None;
    }
    let mut addr = None;
    let mut lladdr = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                addr = Some(IpAddr::V4(*ip))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                addr = Some(IpAddr::V6(*ip))
            }
            NeighbourAttribute::LinkLayerAddress(b) => lladdr = <Mac>::try_from(&b[..]).ok(),
            _ => {}
        }
    }
    let usable = matches!(
        msg.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    Some(Entry {
        addr: addr?,
        mac: lladdr.filter(|m| usable && !deleted && *m != [0; 6]),
    })
}

/// The neighbour table of one interface (or of the two of a two-armed director),
/// followed through rtnetlink events.
#[derive(Debug)]
pub struct Neighbours {
    /// The interface, and the other one of a two-armed director (the same again when
    /// there is none).
    on: [u32; 2],
    events: Socket,
    buf: Vec<u8>,
    table: HashMap<IpAddr, Option<Mac>>,
}

impl Neighbours {
    /// Subscribes to neighbour events, then dumps the table of `ifindex`.
    pub fn open(ifindex: u32) -> Result<Neighbours, NeighbourError> {
        Neighbours::open_on(ifindex, None)
    }

    /// [`Neighbours::open`] for `ifindex` and, when given, a second interface: one table
    /// of both (their subnets differ).
    pub fn open_on(ifindex: u32, also: Option<u32>) -> Result<Neighbours, NeighbourError> {
        let events = subscribe(&[RTNLGRP_NEIGH])?;
        let mut n = Neighbours {
            on: [ifindex, also.unwrap_or(ifindex)],
            events,
            buf: vec![0; 1 << 16],
            table: HashMap::new(),
        };
        n.dump()?;
        Ok(n)
    }

    /// What is known now: address -> `Some(mac)` or `None` (failed, incomplete, gone).
    pub fn table(&self) -> &HashMap<IpAddr, Option<Mac>> {
        &self.table
    }

    /// Reads the table afresh (at start, and when events were lost).
    fn dump(&mut self) -> Result<(), NeighbourError> {
        let mut table = HashMap::new();
        let on = self.on;
        dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            &mut self.buf,
            |m| {
                if let RouteNetlinkMessage::NewNeighbour(m) = m {
                    if let Some(e) = entry(&m, false, &on) {
                        table.insert(e.addr, e.mac);
                    }
                }
            },
        )?;
        self.table = table;
        Ok(())
    }

    /// Takes the events that arrived since the last call (never blocks). Returns whether
    /// the table changed.
    pub fn poll(&mut self) -> Result<bool, NeighbourError> {
        let mut changed = false;
        loop {
            let n = match recv_events(&self.events, &mut self.buf)? {
                Events::Read(n) => n,
                Events::None => return Ok(changed),
                Events::Lost => {
                    // Events were lost: read the whole table again.
                    self.dump()?;
                    changed = true;
                    continue;
                }
            };
            for msg in messages(&self.buf[..n]) {
                let found = match &msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                        entry(m, false, &self.on)
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => {
                        entry(m, true, &self.on)
                    }
                    _ => None,
                };
                if let Some(e) = found {
                    changed |= self.table.insert(e.addr, e.mac) != Some(e.mac);
                }
            }
        }
    }
}

/// An rtnetlink socket subscribed to the multicast `groups`, that never blocks.
pub(crate) fn subscribe(groups: &[u32]) -> Result<Socket, NeighbourError> {
    let mut events = Socket::new(NETLINK_ROUTE).map_err(socket_err("socket"))?;
    events.bind_auto().map_err(socket_err("bind"))?;
    for &g in groups {
        events
            .add_membership(g)
            .map_err(socket_err("add_membership"))?;
    }
    events
        .set_non_blocking(true)
        .map_err(socket_err("set_non_blocking"))?;
    Ok(events)
}

/// What one read of an event socket got.
pub(crate) enum Events {
    /// A datagram of this many bytes.
    Read(usize),
    /// Nothing more for now.
    None,
    /// The kernel dropped events (its buffer was full): the caller reads its state again.
    Lost,
}

/// Reads one datagram of events from `events` into `buf`, never blocking.
pub(crate) fn recv_events(events: &Socket, buf: &mut [u8]) -> Result<Events, NeighbourError> {
    match events.recv(&mut &mut buf[..], 0) {
        Ok(n) => Ok(Events::Read(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Events::None),
        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Events::Lost),
        Err(e) => Err(NeighbourError::Socket {
            call: "recv",
            source: e,
        }),
    }
}

/// The netlink messages in one datagram (unreadable ones are skipped).
pub(crate) fn messages(mut bytes: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else {
            break;
        };
        let len = msg.header.length as usize;
        out.push(msg);
        if len == 0 || len > bytes.len() {
            break;
        }
        // Messages are 4-byte aligned.
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    out
}

/// An rtnetlink socket for requests to the kernel: bound, connected to it. Which call
/// failed, if one did.
pub(crate) fn request_socket() -> Result<Socket, (&'static str, io::Error)> {
    let mut s = Socket::new(NETLINK_ROUTE).map_err(|e| ("socket", e))?;
    s.bind_auto().map_err(|e| ("bind", e))?;
    s.connect(&SocketAddr::new(0, 0))
        .map_err(|e| ("connect", e))?;
    Ok(s)
}

/// The bytes of one rtnetlink request with `flags` (besides `NLM_F_REQUEST`) and
/// sequence number `seq`.
pub(crate) fn encode(request: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | flags;
    hdr.sequence_number = seq;
    let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(request));
    req.finalize();
    let mut out = vec![0; req.header.length as usize];
    req.serialize(&mut out);
    out
}

/// Sends one rtnetlink dump request and hands every message of the answer to `each`.
pub(crate) fn dump(
    request: RouteNetlinkMessage,
    buf: &mut [u8],
    mut each: impl FnMut(RouteNetlinkMessage),
) -> Result<(), NeighbourError> {
    let s = request_socket().map_err(|(call, source)| NeighbourError::Socket { call, source })?;
    s.send(&encode(request, NLM_F_DUMP, 0), 0)
        .map_err(socket_err("send"))?;
    loop {
        let n = s.recv(&mut &mut buf[..], 0).map_err(socket_err("recv"))?;
        let mut done = n == 0;
        for msg in messages(&buf[..n]) {
            match msg.payload {
                NetlinkPayload::Done(_) => done = true,
                NetlinkPayload::Error(e) => {
                    return Err(NeighbourError::Refused(e.to_io().to_string()))
                }
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// The IPv4 and IPv6 addresses (with prefix lengths) of interface `ifindex`, from an
/// rtnetlink dump (`RTM_GETADDR`).
pub fn local_addresses(ifindex: u32) -> Result<Vec<LocalNet>, NeighbourError> {
    let mut nets = Vec::new();
    dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        &mut vec![0; 1 << 16],
        |m| match m {
            RouteNetlinkMessage::NewAddress(m) if m.header.index == ifindex => {
                for a in &m.attributes {
                    if let AddressAttribute::Address(addr) = a {
                        nets.push(LocalNet {
                            addr: *addr,
                            prefix_len: m.header.prefix_len,
                        });
                    }
                }
            }
            _ => {}
        },
    )?;
    Ok(nets)
}

/// Where the kernel sends packets to `addr` (`ip route get`, an `RTM_GETROUTE`
/// request): the gateway, if the route has one, the interface, and the route's MTU if it
/// sets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTo {
    /// The next hop, when `addr` is not on a local subnet.
    pub gateway: Option<IpAddr>,
    /// The outgoing interface's index.
    pub oif: Option<u32>,
    /// The route's MTU (`ip route ... mtu N`), if it has one.
    pub mtu: Option<u32>,
    /// The destination network's address (none: the default route).
    pub dst: Option<IpAddr>,
    /// The routing table it is in.
    pub table: u32,
}

impl RouteTo {
    /// What an rtnetlink route message says.
    fn of(r: &RouteMessage) -> RouteTo {
        let ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
            RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
            _ => None,
        };
        let mut to = RouteTo {
            gateway: None,
            oif: None,
            mtu: None,
            dst: None,
            table: u32::from(r.header.table),
        };
        for a in &r.attributes {
            match a {
                RouteAttribute::Gateway(g) => to.gateway = ip(g),
                RouteAttribute::Destination(d) => to.dst = ip(d),
                RouteAttribute::Oif(i) => to.oif = Some(*i),
                RouteAttribute::Table(t) => to.table = *t,
                RouteAttribute::Metrics(ms) => {
                    for m in ms {
                        if let RouteMetric::Mtu(v) = m {
                            to.mtu = Some(*v);
                        }
                    }
                }
                _ => {}
            }
        }
        to
    }
}

/// The kernel's route to `addr` (see [`RouteTo`]).
pub fn route_to(addr: IpAddr) -> Result<RouteTo, NeighbourError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(addr)));
    let s = request_socket().map_err(|(call, source)| NeighbourError::Socket { call, source })?;
    s.send(&encode(RouteNetlinkMessage::GetRoute(msg), 0, 1), 0)
        .map_err(socket_err("send"))?;
    let mut buf = vec![0; 1 << 14];
    let n = s.recv(&mut &mut buf[..], 0).map_err(socket_err("recv"))?;
    for m in messages(&buf[..n]) {
        match m.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(NeighbourError::Refused(format!(
                    "no route to {addr}: {}",
                    e.to_io()
                )))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                return Ok(RouteTo::of(&r));
            }
            _ => {}
        }
    }
    Err(NeighbourError::Refused(format!(
        "the kernel did not say how it reaches {addr}"
    )))
}

/// The kernel's routes through a router on interface `ifindex` (the main table, both
/// families), each with its gateway's MAC from `neighbours`: where NAT replies go. The
/// second list holds the gateways not resolved yet (to [`probe`]).
pub fn client_routes(
    ifindex: u32,
    neighbours: &HashMap<IpAddr, Option<Mac>>,
) -> Result<(Vec<xdpvs_dataplane::ClientRoute>, Vec<IpAddr>), NeighbourError> {
    let mut routes = Vec::new();
    let mut unresolved = Vec::new();
    dump(
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        &mut vec![0; 1 << 16],
        |m| {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                return;
            };
            let to = RouteTo::of(&r);
            let (Some(gw), true, true) = (to.gateway, to.oif == Some(ifindex), to.table == 254)
            else {
                return;
            };
            let net = to.dst.unwrap_or(match gw {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            match neighbours.get(&gw).copied().flatten() {
                Some(mac) => routes.push(xdpvs_dataplane::ClientRoute {
                    net,
                    prefix_len: r.header.destination_prefix_length,
                    mac,
                }),
                None => unresolved.push(gw),
            }
        },
    )?;
    routes.sort();
    routes.dedup();
    Ok((routes, unresolved))
}

/// Makes the kernel resolve `addrs` (one empty datagram each to the discard port: an
/// ARP request or a neighbour solicitation).
pub fn probe(addrs: &[IpAddr]) {
    let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0));
    let v6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0));
    for &a in addrs {
        let sock = if a.is_ipv4() { &v4 } else { &v6 };
        if let Ok(sock) = sock {
            let _ = sock.send_to(&[], (a, 9));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourHeader;

    fn msg(ifindex: u32, state: NeighbourState, last: u8) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex,
            state,
            ..NeighbourHeader::default()
        };
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(
                198, 18, 0, last,
            ))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0x78, 0x64, 0, 1, last]),
        ];
        m
    }

    #[test]
    fn states_map_to_usable_or_not() {
        let a = Ipv4Addr::new(198, 18, 0, 11);
        let mac = Some([2, 0x78, 0x64, 0, 1, 11]);
        for s in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            assert_eq!(
                entry(&msg(4, s, 11), false, &[4]),
                Some(Entry {
                    addr: a.into(),
                    mac
                }),
                "{s:?}"
            );
        }
        for s in [NeighbourState::Failed, NeighbourState::Incomplete] {
            assert_eq!(
                entry(&msg(4, s, 11), false, &[4]),
                Some(Entry {
                    addr: a.into(),
                    mac: None
                }),
                "{s:?}"
            );
        }
        assert_eq!(
            entry(&msg(4, NeighbourState::Reachable, 11), true, &[4]),
            Some(Entry {
                addr: a.into(),
                mac: None
            }),
            "deleted"
        );
        assert_eq!(
            entry(&msg(5, NeighbourState::Reachable, 11), false, &[4]),
            None,
            "another interface"
        );
        assert!(
            entry(&msg(5, NeighbourState::Reachable, 11), false, &[4, 5]).is_some(),
            "the second interface of a two-armed director"
        );
    }

    #[test]
    fn ipv6_neighbours_are_read_too() {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet6,
            ifindex: 4,
            state: NeighbourState::Reachable,
            ..NeighbourHeader::default()
        };
        let a: std::net::Ipv6Addr = "2001:2::11".parse().expect("valid");
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0x78, 0x64, 0, 1, 11]),
        ];
        assert_eq!(
            entry(&m, false, &[4]),
            Some(Entry {
                addr: a.into(),
                mac: Some([2, 0x78, 0x64, 0, 1, 11])
            })
        );
        m.header.family = AddressFamily::Bridge;
        assert_eq!(entry(&m, false, &[4]), None, "not an IP neighbour");
    }

    #[test]
    fn datagrams_with_several_messages_are_split() {
        let mut bytes = Vec::new();
        for last in [11, 12] {
            let mut m = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::from(RouteNetlinkMessage::NewNeighbour(msg(
                    4,
                    NeighbourState::Reachable,
                    last,
                ))),
            );
            m.finalize();
            let mut b = vec![0; m.header.length as usize];
            m.serialize(&mut b);
            bytes.extend_from_slice(&b);
        }
        let got: Vec<Entry> = messages(&bytes)
            .iter()
            .filter_map(|m| match &m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                    entry(n, false, &[4])
                }
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].addr, Ipv4Addr::new(198, 18, 0, 12));
    }

    #[test]
    fn the_route_to_an_address_of_this_host_is_found() {
        let to = route_to(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("a route to 127.0.0.1");
        assert_eq!(to.gateway, None);
        assert!(to.oif.is_some(), "{to:?}");
    }

    #[test]
    fn the_table_of_this_namespace_can_be_read() {
        // Loopback has no neighbours, but the dump and the subscription must work.
        let mut n = Neighbours::open(1).expect("rtnetlink dump works");
        n.poll().expect("reading events works");
    }
}
