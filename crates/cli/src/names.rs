//! Host and service names where ipvsadm takes them: `-t www.example.com:http` as well as
//! `-t 198.18.0.100:80`. Hosts are looked up as the C library does (/etc/hosts, then DNS);
//! service names in /etc/services.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Where service names are looked up.
const SERVICES: &str = "/etc/services";

/// The port of `name` in an /etc/services `text` (a name or an alias; any protocol).
pub fn port_in(text: &str, name: &str) -> Option<u16> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?;
        let mut words = line.split_whitespace();
        let service = words.next()?;
        let port = words.next()?.split('/').next()?.parse().ok()?;
        (service == name || words.any(|alias| alias == name)).then_some(port)
    })
}

/// A port: a number, or a service name.
pub fn port(word: &str) -> Option<u16> {
    word.parse().ok().or_else(|| {
        let text = std::fs::read_to_string(SERVICES).ok()?;
        port_in(&text, word)
    })
}

/// An address: literal, or a host name's first address.
pub fn host(word: &str) -> Option<IpAddr> {
    if let Ok(a) = word.parse() {
        return Some(a);
    }
    // A name with characters a host name cannot have is not looked up.
    if word.is_empty()
        || !word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return None;
    }
    (word, 0).to_socket_addrs().ok()?.next().map(|a| a.ip())
}

/// `HOST:PORT` (`[IPv6]:PORT`, an address or a name, a port number or a service name).
pub fn host_port(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (h, p) = s.rsplit_once(':')?;
    let h = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner,
        // An IPv6 address with a port needs its brackets, as with ipvsadm.
        None if h.contains(':') => return None,
        None => h,
    };
    Some(SocketAddr::new(host(h)?, port(p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_hosts_by_name() {
        let services =
            "# comment\nhttp\t\t80/tcp\t\twww\t# WorldWideWeb HTTP\nhttps 443/tcp\ndomain 53/udp\n";
        assert_eq!(port_in(services, "http"), Some(80));
        assert_eq!(port_in(services, "www"), Some(80), "an alias");
        assert_eq!(port_in(services, "domain"), Some(53));
        assert_eq!(port_in(services, "gopher"), None);
        assert_eq!(port("8080"), Some(8080));
        assert_eq!(
            host_port("[2001:2::100]:80"),
            Some("[2001:2::100]:80".parse().expect("address"))
        );
        // localhost is in every /etc/hosts.
        assert!(host_port("localhost:80").is_some_and(|a| a.ip().is_loopback() && a.port() == 80));
        assert_eq!(host("no such host!"), None);
        assert_eq!(host_port("198.18.0.100"), None, "no port");
        assert_eq!(
            host_port("2001:2::100:80"),
            None,
            "IPv6 and a port: brackets"
        );
    }
}
