//! Following keepalived's VRRP: the addresses this host holds on its interfaces, kept
//! up to date from the kernel's address events (`RTNLGRP_IPV4_IFADDR`,
//! `RTNLGRP_IPV6_IFADDR`). keepalived adds a VRRP instance's `virtual_ipaddress` to the
//! master's interface and removes it from the backup's; a VIP that follows VRRP is served
//! only while it is here (see `WriteSide::set_held`).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::neighbours::{dump, messages, socket_err, NeighbourError};

/// `RTNLGRP_IPV4_IFADDR` and `RTNLGRP_IPV6_IFADDR` of linux/rtnetlink.h.
const GROUPS: [u32; 2] = [5, 9];

/// The addresses of every interface of this host, followed through rtnetlink events.
#[derive(Debug)]
pub struct Held {
    events: Socket,
    buf: Vec<u8>,
    addrs: BTreeSet<IpAddr>,
}

impl Held {
    /// Subscribes to address events, then reads every address.
    pub fn open() -> Result<Held, NeighbourError> {
        let mut events = Socket::new(NETLINK_ROUTE).map_err(socket_err("socket"))?;
        events.bind_auto().map_err(socket_err("bind"))?;
        for g in GROUPS {
            events
                .add_membership(g)
                .map_err(socket_err("add_membership"))?;
        }
        events
            .set_non_blocking(true)
            .map_err(socket_err("set_non_blocking"))?;
        let mut h = Held {
            events,
            buf: vec![0; 1 << 16],
            addrs: BTreeSet::new(),
        };
        h.dump()?;
        Ok(h)
    }

    /// The addresses held now.
    pub fn addrs(&self) -> &BTreeSet<IpAddr> {
        &self.addrs
    }

    fn dump(&mut self) -> Result<(), NeighbourError> {
        let mut addrs = BTreeSet::new();
        dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            &mut self.buf,
            |m| {
                if let RouteNetlinkMessage::NewAddress(m) = m {
                    addrs.extend(address(&m));
                }
            },
        )?;
        self.addrs = addrs;
        Ok(())
    }

    /// Takes the events that arrived since the last call (never blocks); whether the set
    /// changed.
    pub fn poll(&mut self) -> Result<bool, NeighbourError> {
        let before = self.addrs.clone();
        loop {
            let n = match self.events.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Events were lost: read them all again.
                    self.dump()?;
                    continue;
                }
                Err(e) => {
                    return Err(NeighbourError::Socket {
                        call: "recv",
                        source: e,
                    })
                }
            };
            for msg in messages(&self.buf[..n]) {
                match &msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                        self.addrs.extend(address(m));
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                        if let Some(a) = address(m) {
                            self.addrs.remove(&a);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(self.addrs != before)
    }
}

/// The address an address message is about (its `IFA_ADDRESS`; `IFA_LOCAL` on
/// point-to-point links).
fn address(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(a) => Some(*a),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(a) => Some(*a),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_message_names_its_local_address() {
        let mut m = AddressMessage::default();
        m.attributes.push(AddressAttribute::Address(
            "198.18.0.9".parse().expect("addr"),
        ));
        assert_eq!(address(&m), Some("198.18.0.9".parse().expect("addr")));
        m.attributes.push(AddressAttribute::Local(
            "198.18.0.100".parse().expect("addr"),
        ));
        assert_eq!(address(&m), Some("198.18.0.100".parse().expect("addr")));
        assert_eq!(address(&AddressMessage::default()), None);
    }
}
