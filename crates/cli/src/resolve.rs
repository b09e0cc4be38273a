//! Real-server MACs, from the kernel's neighbour table.
//!
//! The director asks the kernel: it reads `/proc/net/arp` (per network namespace) and,
//! for real servers not listed yet, sends one empty UDP datagram to port 9 (discard) so
//! that the kernel resolves them. Repeated periodically, this also notices a real server
//! whose MAC changed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};

use xdpvs_sched::Mac;

const ATF_COM: u32 = 0x2;

/// Complete neighbour entries on `iface`: address -> MAC.
pub fn neighbours(iface: &str) -> HashMap<Ipv4Addr, Mac> {
    let text = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    parse_proc_arp(&text, iface)
}

/// Parses `/proc/net/arp` (`IP address  HW type  Flags  HW address  Mask  Device`).
pub fn parse_proc_arp(text: &str, iface: &str) -> HashMap<Ipv4Addr, Mac> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != iface {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        let (Ok(ip), Some(mac)) = (f[0].parse::<Ipv4Addr>(), parse_mac(f[3])) else {
            continue;
        };
        if flags & ATF_COM != 0 && mac != [0; 6] {
            out.insert(ip, mac);
        }
    }
    out
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
    fn reads_complete_entries_of_the_interface() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.18.0.11      0x1         0x2         02:78:64:00:01:0b     *        eth0\n\
                 198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 198.18.0.13      0x1         0x2         02:78:64:00:01:0d     *        eth1\n";
        let m = parse_proc_arp(t, "eth0");
        assert_eq!(m.len(), 1);
        assert_eq!(m[&Ipv4Addr::new(198, 18, 0, 11)], [2, 0x78, 0x64, 0, 1, 11]);
        assert_eq!(parse_mac("02:78:64:00:01"), None);
        assert_eq!(format_mac(&[2, 0x78, 0x64, 0, 1, 11]), "02:78:64:00:01:0b");
    }
}
