//! Facts about a network interface, from sysfs, and MAC address text.

use xdpvs_sched::Mac;

/// Why an interface fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No such interface (or sysfs unreadable).
    #[error("interface {iface} not found ({path} unreadable: {source}): check `ip link`")]
    NotFound {
        /// The interface.
        iface: String,
        /// The file read.
        path: String,
        /// Why.
        source: std::io::Error,
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
            source,
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
        source,
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
