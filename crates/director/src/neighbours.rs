//! Real servers' MACs, from the kernel's neighbour table.
//!
//! The director asks the kernel: it reads the neighbour table (`/proc/net/arp` of its
//! network namespace) and, for real servers not listed yet, sends one empty UDP datagram
//! to port 9 (discard) so that the kernel resolves them. Repeated periodically, this also
//! notices a real server whose MAC changed or that stopped answering.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};

use xdpvs_sched::Mac;

use crate::iface::parse_mac;

const ATF_COM: u32 = 0x2;

/// What the neighbour table says of the addresses it lists on `iface`: `Some(mac)` for a
/// complete entry, `None` for one being resolved or failed.
pub fn neighbours(iface: &str) -> HashMap<Ipv4Addr, Option<Mac>> {
    let text = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    parse_proc_arp(&text, iface)
}

/// Parses `/proc/net/arp` (`IP address  HW type  Flags  HW address  Mask  Device`).
pub fn parse_proc_arp(text: &str, iface: &str) -> HashMap<Ipv4Addr, Option<Mac>> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != iface {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        let Ok(ip) = f[0].parse::<Ipv4Addr>() else {
            continue;
        };
        let mac = parse_mac(f[3]).filter(|m| *m != [0; 6] && flags & ATF_COM != 0);
        out.insert(ip, mac);
    }
    out
}

/// Makes the kernel resolve `addrs` (one empty datagram each to the discard port).
pub fn probe(addrs: &[Ipv4Addr]) {
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return;
    };
    for a in addrs {
        let _ = sock.send_to(&[], (*a, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_of_the_interface() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.18.0.11      0x1         0x2         02:78:64:00:01:0b     *        eth0\n\
                 198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 198.18.0.13      0x1         0x2         02:78:64:00:01:0d     *        eth1\n";
        let m = parse_proc_arp(t, "eth0");
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[&Ipv4Addr::new(198, 18, 0, 11)],
            Some([2, 0x78, 0x64, 0, 1, 11])
        );
        assert_eq!(m[&Ipv4Addr::new(198, 18, 0, 12)], None);
    }
}
