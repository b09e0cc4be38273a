//! Facts about a network interface, from sysfs, and MAC address text.

use std::net::IpAddr;

use xdpvs_sched::Mac;

/// An address of the director's interface with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalNet {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

impl LocalNet {
    /// Whether `a` is on this subnet.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (a, self.addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = xdpvs_sched::model::prefix_mask(self.prefix_len);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = match self.prefix_len {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p.min(128))),
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Why an interface fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No such interface (or sysfs unreadable).
    #[error("interface {iface} not found ({path} unreadable: {cause}): check `ip link`")]
    NotFound {
        /// The interface.
        iface: String,
        /// The file read.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file did not say what was expected.
    #[error("interface {iface}: unexpected {file} '{value}'")]
    Unexpected {
        /// The interface.
        iface: String,
        /// The attribute.
        file: &'static str,
        /// What it said.
        value: String,
    },
}

/// An attribute of a network interface from sysfs (`/sys/class/net/IFACE/FILE`), trimmed.
pub fn attr(iface: &str, file: &str) -> Result<String, IfaceError> {
    let path = format!("/sys/class/net/{iface}/{file}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| IfaceError::NotFound {
            iface: iface.to_string(),
            path,
            cause: source,
        })
}

/// The interface's index.
pub fn ifindex(iface: &str) -> Result<u32, IfaceError> {
    let v = attr(iface, "ifindex")?;
    v.parse().map_err(|_| IfaceError::Unexpected {
        iface: iface.to_string(),
        file: "ifindex",
        value: v,
    })
}

/// The interface's Ethernet address.
pub fn mac_of(iface: &str) -> Result<Mac, IfaceError> {
    let v = attr(iface, "address")?;
    parse_mac(&v).ok_or(IfaceError::Unexpected {
        iface: iface.to_string(),
        file: "address",
        value: v,
    })
}

/// How many RX queues the interface has.
pub fn rx_queues(iface: &str) -> Result<u32, IfaceError> {
    let path = format!("/sys/class/net/{iface}/queues");
    let dir = std::fs::read_dir(&path).map_err(|source| IfaceError::NotFound {
        iface: iface.to_string(),
        path,
        cause: source,
    })?;
    Ok(dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text() {
        assert_eq!(
            parse_mac("02:78:64:00:01:0b"),
            Some([2, 0x78, 0x64, 0, 1, 11])
        );
        assert_eq!(parse_mac("02:78:64:00:01"), None);
        assert_eq!(parse_mac("02:78:64:00:01:0b:00"), None);
        assert_eq!(format_mac(&[2, 0x78, 0x64, 0, 1, 11]), "02:78:64:00:01:0b");
        assert!(matches!(
            ifindex("xv-no-such-if"),
            Err(IfaceError::NotFound { .. })
        ));
    }
}
