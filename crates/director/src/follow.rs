//! Following keepalived's VRRP: the addresses this host holds on its interfaces, kept
//! up to date from the kernel's address events (`RTNLGRP_IPV4_IFADDR`,
//! `RTNLGRP_IPV6_IFADDR`). keepalived adds a VRRP instance's `virtual_ipaddress` to the
//! master's interface and removes it from the backup's; a VIP that follows VRRP is served
//! only while it is here (see `WriteSide::set_held`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;

use crate::neighbours::{dump, messages, recv_events, subscribe, Events, NeighbourError};

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
        let events = subscribe(&GROUPS)?;
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
        let mut changed = false;
        loop {
            let n = match recv_events(&self.events, &mut self.buf)? {
                Events::Read(n) => n,
                Events::None => return Ok(changed),
                Events::Lost => {
                    // Events were lost: read them all again.
                    self.dump()?;
                    changed = true;
                    continue;
                }
            };
            for msg in messages(&self.buf[..n]) {
                changed |= match &msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                        address(m).is_some_and(|a| self.addrs.insert(a))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                        address(m).is_some_and(|a| self.addrs.remove(&a))
                    }
                    _ => false,
                };
            }
        }
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
