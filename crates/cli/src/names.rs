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

/// How a listing writes addresses and ports: as numbers (`-n`), or by name where
/// /etc/hosts and /etc/services have one, as ipvsadm does without `-n` (no DNS: a
/// listing never waits on it).
#[derive(Debug, Default)]
pub struct Naming {
    hosts: std::collections::HashMap<IpAddr, String>,
    services: String,
}

impl Naming {
    /// Numbers only.
    pub fn numeric() -> Naming {
        Naming::default()
    }

    /// Names from this host's /etc/hosts and /etc/services.
    pub fn from_files() -> Naming {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        Naming::from_texts(
            &hosts,
            std::fs::read_to_string(SERVICES).unwrap_or_default(),
        )
    }

    /// Names from the texts of an /etc/hosts and an /etc/services.
    pub fn from_texts(hosts: &str, services: String) -> Naming {
        let mut map = std::collections::HashMap::new();
        for line in hosts.lines() {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            if let (Some(a), Some(name)) = (words.next(), words.next()) {
                if let Ok(a) = a.parse::<IpAddr>() {
                    map.entry(a).or_insert_with(|| name.to_string());
                }
            }
        }
        Naming {
            hosts: map,
            services,
        }
    }

    /// `addr:port` (IPv6 `[addr]:port`) with the names there are for `proto` ("tcp",
    /// "udp").
    pub fn addr_port(&self, addr: IpAddr, port: u16, proto: &str) -> String {
        let host = match (self.hosts.get(&addr), addr) {
            (Some(n), _) => n.clone(),
            (None, IpAddr::V6(a)) => format!("[{a}]"),
            (None, IpAddr::V4(a)) => a.to_string(),
        };
        let service = self
            .service(port, proto)
            .map_or_else(|| port.to_string(), str::to_string);
        format!("{host}:{service}")
    }

    fn service(&self, port: u16, proto: &str) -> Option<&str> {
        let want = format!("{port}/{proto}");
        self.services.lines().find_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let name = words.next()?;
            (words.next()? == want).then_some(name)
        })
    }
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    #[test]
    fn names_from_hosts_and_services_numbers_otherwise() {
        let n = Naming::from_texts(
            "127.0.0.1 localhost\n198.18.0.11 rs1 rs1.lab # a real server\n",
            "http 80/tcp www\ndomain 53/udp\ndomain 53/tcp\n".into(),
        );
        let a = |s: &str| s.parse::<IpAddr>().expect("address");
        assert_eq!(n.addr_port(a("198.18.0.11"), 80, "tcp"), "rs1:http");
        assert_eq!(
            n.addr_port(a("198.18.0.12"), 53, "udp"),
            "198.18.0.12:domain"
        );
        assert_eq!(
            n.addr_port(a("198.18.0.12"), 8080, "tcp"),
            "198.18.0.12:8080"
        );
        assert_eq!(n.addr_port(a("2001:2::11"), 80, "udp"), "[2001:2::11]:80");
        let numeric = Naming::numeric();
        assert_eq!(
            numeric.addr_port(a("198.18.0.11"), 80, "tcp"),
            "198.18.0.11:80"
        );
    }
}
