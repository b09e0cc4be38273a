//! `xdpvs config-test`: a file applied to an empty table the way `xdpvs run` applies it,
//! without a director (no root, no interface, nothing on the wire), and the table it
//! makes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpvs_dataplane::stats::TrafficTotals;
use xdpvs_dataplane::{Limits, NatSource, Options, Services};
use xdpvs_sched::conn::{DestRef, Listed};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Load, ServiceKey};

use super::dataplane::{Configure, DataplaneError, Observe};
use super::proto::{Request, Table};
use super::read;
use super::write::WriteSide;
use crate::iface::LocalNet;
use crate::writer::{at_line, Lined, Place};

/// A dataplane that takes every change and carries no traffic.
#[derive(Debug, Clone, Copy)]
struct Offline;

impl Configure for Offline {
    fn install(&mut self, _: &Services) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn steer(&mut self, _: &[ServiceKey], _: &[NatSource]) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn advertise(&mut self, _: IpAddr) {}
    fn send(&mut self, _: &[Vec<u8>]) {}
    fn set_timeouts(&mut self, _: Timeouts) {}
}

impl Observe for Offline {
    fn load(&self, _: DestRef) -> Load {
        Load::default()
    }
    fn persistent(&self, _: DestRef) -> u64 {
        0
    }
    fn service_traffic(&self, _: u32) -> TrafficTotals {
        TrafficTotals::default()
    }
    fn dest_traffic(&self, _: u32) -> TrafficTotals {
        TrafficTotals::default()
    }
    fn capacity(&self) -> usize {
        0
    }
    fn list_connections(&self, _: &mut dyn FnMut(&[Listed]) -> bool) -> Result<(), DataplaneError> {
        Ok(())
    }
}

/// The table `lined` (read from the file `name`) builds on an empty one, with every
/// check `xdpvs run` makes of it but those that need the director's interface: any
/// real server is on its LAN, and a tunnel's source is its address (shown as 0.0.0.0 or
/// ::). The error is the one line `xdpvs run` would fail with.
pub fn apply(name: &str, lined: Lined) -> Result<Table, String> {
    let anywhere = vec![
        LocalNet {
            addr: Ipv4Addr::UNSPECIFIED.into(),
            prefix_len: 0,
        },
        LocalNet {
            addr: Ipv6Addr::UNSPECIFIED.into(),
            prefix_len: 0,
        },
    ];
    let mut side = WriteSide::new(
        [0; 6],
        Options::default(),
        Limits::default(),
        anywhere,
        Offline,
    )
    .map_err(|e| format!("{name}: {e}"))?;
    let (lines, reqs): (Vec<Place>, Vec<Request>) = lined.into_iter().unzip();
    side.execute(&Request::Batch(reqs))
        .map_err(|e| at_line(name, &lines, 0, &e))?;
    read::table(&side.published().get(), &Offline, None).map_err(|e| format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_applied_offline_and_refused_where_run_would_refuse_it() {
        let conf = "virtual_server 198.18.0.100 80 {\n  lb_kind TUN\n  real_server 198.18.9.11 80 {\n  }\n}\n\
                    virtual_server 198.18.0.100 443 {\n  lb_kind DR\n  real_server 198.18.0.11 443 {\n  }\n}\n";
        let got = crate::keepalived::parse(conf).expect("parsed");
        let lined: Lined = got.lines.into_iter().zip(got.requests).collect();
        let table = apply("keepalived.conf", lined.clone()).expect("applied");
        assert_eq!(table.services.len(), 2);
        // The same real server twice in one service: refused at its line, as run would.
        let mut twice = lined;
        twice.push(twice[3].clone());
        twice.last_mut().expect("one").0.line = 12;
        let e = apply("keepalived.conf", twice).expect_err("refused");
        assert!(e.starts_with("keepalived.conf:12: "), "{e}");
    }
}
