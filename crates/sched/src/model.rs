//! The configuration model, in LVS words: a *virtual service* (protocol, VIP, port) with a
//! scheduler, optional persistence, and a list of *real servers*.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// The transport protocol of a virtual service.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
#[repr(u8)]
pub enum Protocol {
    /// TCP (IP protocol 6), `-t` in ipvsadm.
    Tcp = 6,
    /// UDP (IP protocol 17), `-u` in ipvsadm.
    Udp = 17,
}

impl Protocol {
    /// The protocol for an IPv4 protocol number, if it is one we balance.
    pub const fn from_ip_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The IPv4 protocol number.
    pub const fn ip_number(self) -> u8 {
        self as u8
    }

    /// `TCP` or `UDP`, as ipvsadm prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What identifies a virtual service: protocol, virtual IP and port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ServiceKey {
    /// TCP or UDP.
    pub proto: Protocol,
    /// The virtual IP (VIP), IPv4 or IPv6.
    pub vip: IpAddr,
    /// The virtual port; in direct routing the real servers serve on this same port.
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, addr_port(self.vip, self.port))
    }
}

impl ServiceKey {
    /// True for an IPv6 service.
    pub const fn is_ipv6(&self) -> bool {
        self.vip.is_ipv6()
    }

    /// The longest persistence prefix for this service's family (32 or 128).
    pub const fn max_prefix(&self) -> u8 {
        family_bits(self.vip)
    }
}

/// `ADDR:PORT`, with the address in brackets for IPv6 (`[2001:2::100]:80`), as ipvsadm
/// prints and parses it.
pub fn addr_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Bits in an address of `addr`'s family: 32 or 128.
pub const fn family_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `IPv4` or `IPv6`.
pub const fn family_name(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// The scheduling algorithms, named as ipvsadm names them (`-s NAME`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SchedKind {
    /// Round robin.
    Rr,
    /// Weighted round robin (IPVS's gcd-stepped order).
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (ipvsadm's default).
    #[default]
    Wlc,
    /// Source hashing.
    Sh,
    /// Maglev hashing.
    Mh,
    /// Destination hashing.
    Dh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Weighted failover.
    Fo,
    /// Overflow connection.
    Ovf,
    /// Weighted random twos choice.
    Twos,
}

impl SchedKind {
    /// Every scheduler, in the order `--help` lists them.
    pub const ALL: [SchedKind; 14] = [
        SchedKind::Rr,
        SchedKind::Wrr,
        SchedKind::Lc,
        SchedKind::Wlc,
        SchedKind::Sh,
        SchedKind::Mh,
        SchedKind::Dh,
        SchedKind::Sed,
        SchedKind::Nq,
        SchedKind::Lblc,
        SchedKind::Lblcr,
        SchedKind::Fo,
        SchedKind::Ovf,
        SchedKind::Twos,
    ];

    /// The ipvsadm name (`rr`, `wrr`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            SchedKind::Rr => "rr",
            SchedKind::Wrr => "wrr",
            SchedKind::Lc => "lc",
            SchedKind::Wlc => "wlc",
            SchedKind::Sh => "sh",
            SchedKind::Mh => "mh",
            SchedKind::Dh => "dh",
            SchedKind::Sed => "sed",
            SchedKind::Nq => "nq",
            SchedKind::Lblc => "lblc",
            SchedKind::Lblcr => "lblcr",
            SchedKind::Fo => "fo",
            SchedKind::Ovf => "ovf",
            SchedKind::Twos => "twos",
        }
    }
}

impl fmt::Display for SchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IPVS's scheduler flags (ipvsadm `-b`): three bits, whose meaning is the scheduler's.
/// `sh` and `mh` read flag-1 as "fall back to another server when the client's is
/// unavailable" (`sh-fallback`, `mh-fallback`) and flag-2 as "hash the client's port
/// too" (`sh-port`, `mh-port`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SchedFlags(pub u8);

impl SchedFlags {
    /// None set.
    pub const NONE: SchedFlags = SchedFlags(0);
    /// IP_VS_SVC_F_SCHED1 (`flag-1`, `sh-fallback`, `mh-fallback`).
    pub const FLAG1: u8 = 1;
    /// IP_VS_SVC_F_SCHED2 (`flag-2`, `sh-port`, `mh-port`).
    pub const FLAG2: u8 = 2;
    /// IP_VS_SVC_F_SCHED3 (`flag-3`).
    pub const FLAG3: u8 = 4;

    /// Whether `bit` is set.
    pub const fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// The flags ipvsadm's `-b` names in `words` (comma-separated) for `scheduler`, as
    /// ipvsadm's `parse_sched_flags` reads them.
    pub fn parse(words: &str, scheduler: SchedKind) -> Result<SchedFlags, String> {
        let mut bits = 0;
        for w in words.split(',') {
            let (bit, only) = match w {
                "flag-1" => (Self::FLAG1, None),
                "flag-2" => (Self::FLAG2, None),
                "flag-3" => (Self::FLAG3, None),
                "sh-fallback" => (Self::FLAG1, Some(SchedKind::Sh)),
                "sh-port" => (Self::FLAG2, Some(SchedKind::Sh)),
                "mh-fallback" => (Self::FLAG1, Some(SchedKind::Mh)),
                "mh-port" => (Self::FLAG2, Some(SchedKind::Mh)),
                _ => return Err(format!("invalid scheduler flag `{w}'")),
            };
            if only.is_some_and(|k| k != scheduler) {
                return Err(format!("incompatible scheduler flag `{w}'"));
            }
            bits |= bit;
        }
        Ok(SchedFlags(bits))
    }

    /// The flags as ipvsadm prints them for `scheduler` (`sh-fallback,sh-port`,
    /// `flag-1`), or `None` when none is set.
    pub fn words(self, scheduler: SchedKind) -> Option<String> {
        let names: [&str; 3] = match scheduler {
            SchedKind::Sh => ["sh-fallback", "sh-port", "flag-3"],
            SchedKind::Mh => ["mh-fallback", "mh-port", "flag-3"],
            _ => ["flag-1", "flag-2", "flag-3"],
        };
        let set: Vec<&str> = [Self::FLAG1, Self::FLAG2, Self::FLAG3]
            .iter()
            .zip(names)
            .filter(|(b, _)| self.has(**b))
            .map(|(_, n)| n)
            .collect();
        (!set.is_empty()).then(|| set.join(","))
    }
}

impl FromStr for SchedKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ConfigError::UnknownScheduler(s.to_owned()))
    }
}

/// Persistence (ipvsadm `-p [timeout]` and `-M netmask`): a client, masked by `netmask`,
/// stays on one real server across connections while its template lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Persistence {
    /// How long a template outlives the last connection it controls (ipvsadm default 300 s).
    pub timeout: Duration,
    /// Prefix length of the client netmask (32 for IPv4 and 128 for IPv6 = per client
    /// address, ipvsadm's default).
    pub prefix_len: u8,
}

impl Persistence {
    /// ipvsadm's default persistence timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// Persistence with `timeout` and a dotted `netmask`, which must be contiguous.
    pub fn new(timeout: Duration, netmask: Ipv4Addr) -> Result<Persistence, ConfigError> {
        let bits = u32::from(netmask);
        let prefix_len = bits.leading_ones();
        if bits.checked_shl(prefix_len).unwrap_or(0) != 0 {
            return Err(ConfigError::NetmaskNotContiguous(netmask));
        }
        if timeout.is_zero() {
            return Err(ConfigError::ZeroPersistenceTimeout);
        }
        Ok(Persistence {
            timeout,
            prefix_len: prefix_len as u8,
        })
    }

    /// Persistence with `timeout` and a prefix length (IPv6's `-M 64`), which must be
    /// 1..=128 (ipvsadm's bounds).
    pub fn with_prefix(timeout: Duration, prefix_len: u8) -> Result<Persistence, ConfigError> {
        if !(1..=128).contains(&prefix_len) {
            return Err(ConfigError::BadPrefix(prefix_len));
        }
        if timeout.is_zero() {
            return Err(ConfigError::ZeroPersistenceTimeout);
        }
        Ok(Persistence {
            timeout,
            prefix_len,
        })
    }

    /// The IPv4 netmask as a host-order mask.
    pub const fn mask(self) -> u32 {
        prefix_mask(self.prefix_len)
    }

    /// The dotted netmask.
    pub fn netmask(self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }
}

/// A host-order mask of `prefix_len` leading ones (0..=32).
pub const fn prefix_mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else if prefix_len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - prefix_len as u32)
    }
}

/// How packets reach a real server: ipvsadm's forwarding method (`-g`, `-m`, `-i`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Method {
    /// Direct routing (`-g`, keepalived `DR`): only the Ethernet addresses change; the
    /// real server holds the VIP and answers the client itself.
    #[default]
    Route,
    /// Masquerading (`-m`, keepalived `NAT`): the destination address and port are
    /// rewritten to the real server's, and its replies, which come back through the
    /// director (its gateway), are rewritten from the VIP and the virtual port.
    Masq,
    /// Tunnelling (`-i`, keepalived `TUN`): the packet is encapsulated to the real
    /// server's address, which may be routed; the real server decapsulates, holds the VIP
    /// and answers the client itself.
    Tunnel(Tunnel),
}

/// A tunnel's encapsulation (`--tun-type`), as IPVS's.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum TunKind {
    /// IP in IP (protocol 4; IPv6 in IPv6: next header 41). ipvsadm's default.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation: UDP to `--tun-port`, a 4-byte GUE header, the packet.
    Gue,
    /// GRE: a 4-byte GRE header (8 with a checksum), the packet.
    Gre,
}

impl TunKind {
    /// ipvsadm's word for it.
    pub const fn name(self) -> &'static str {
        match self {
            TunKind::Ipip => "ipip",
            TunKind::Gue => "gue",
            TunKind::Gre => "gre",
        }
    }

    /// The kind ipvsadm calls `name`.
    pub fn parse(name: &str) -> Option<TunKind> {
        match name {
            "ipip" => Some(TunKind::Ipip),
            "gue" => Some(TunKind::Gue),
            "gre" => Some(TunKind::Gre),
            _ => None,
        }
    }
}

/// A tunnel's checksum option (`--tun-nocsum`, `--tun-csum`, `--tun-remcsum`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum TunCsum {
    /// No checksum in the encapsulation (the default).
    #[default]
    No,
    /// A checksum in the encapsulation: GUE's UDP checksum, GRE's checksum field.
    Csum,
    /// Remote checksum offload (GUE only). The director sends packets whose inner
    /// checksums are complete, so, as IPVS for such packets, no option is added.
    Remote,
}

impl TunCsum {
    /// ipvsadm's option for it.
    pub const fn option(self) -> &'static str {
        match self {
            TunCsum::No => "--tun-nocsum",
            TunCsum::Csum => "--tun-csum",
            TunCsum::Remote => "--tun-remcsum",
        }
    }

    /// ipvsadm's short form in `-L --tun-info` (`-c`, `+c`, `r+c`).
    pub const fn short(self) -> &'static str {
        match self {
            TunCsum::No => "-c",
            TunCsum::Csum => "+c",
            TunCsum::Remote => "r+c",
        }
    }
}

/// A tunnel real server's encapsulation.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Tunnel {
    /// The encapsulation.
    pub kind: TunKind,
    /// GUE's UDP destination port (0 for the other kinds).
    pub port: u16,
    /// The checksum option (GUE and GRE; `No` for IPIP).
    pub csum: TunCsum,
}

impl Tunnel {
    /// IP in IP, ipvsadm's default tunnel.
    pub const IPIP: Tunnel = Tunnel {
        kind: TunKind::Ipip,
        port: 0,
        csum: TunCsum::No,
    };

    /// Checks the combination as ipvsadm does: GUE needs a port, IPIP takes no option,
    /// GRE no port and no remote checksum.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Tunnel(why.to_string()));
        match self.kind {
            TunKind::Gue if self.port == 0 => {
                bad("a gue tunnel needs a port (ipvsadm --tun-port, keepalived port N)")
            }
            TunKind::Ipip if self.port != 0 => {
                bad("an ipip tunnel has no port (the port is gue's)")
            }
            TunKind::Ipip if self.csum != TunCsum::No => {
                bad("an ipip tunnel has no checksum option (checksums are gue's and gre's)")
            }
            TunKind::Gre if self.port != 0 => bad("a gre tunnel has no port (the port is gue's)"),
            TunKind::Gre if self.csum == TunCsum::Remote => {
                bad("a gre tunnel has no remote checksum option (remcsum is gue's)")
            }
            _ => Ok(()),
        }
    }

    /// What `-L --tun-info` prints for it (`ipip`, `gue:6080:-c`, `gre:+c`).
    pub fn info(&self) -> String {
        match self.kind {
            TunKind::Ipip => "ipip".into(),
            TunKind::Gue => format!("gue:{}:{}", self.port, self.csum.short()),
            TunKind::Gre => format!("gre:{}", self.csum.short()),
        }
    }

    /// The options `-S` writes for it after `-i` (ipvsadm's order).
    pub fn options(&self) -> String {
        match self.kind {
            TunKind::Ipip => " --tun-type ipip".into(),
            TunKind::Gue => format!(
                " --tun-type gue --tun-port {} {}",
                self.port,
                self.csum.option()
            ),
            TunKind::Gre => format!(" --tun-type gre {}", self.csum.option()),
        }
    }
}

impl Method {
    /// The word ipvsadm's listing prints (`Route`, `Masq`, `Tunnel`).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Route => "Route",
            Method::Masq => "Masq",
            Method::Tunnel(_) => "Tunnel",
        }
    }

    /// ipvsadm's option for it (`-g`, `-m`, `-i`).
    pub const fn option(self) -> &'static str {
        match self {
            Method::Route => "-g",
            Method::Masq => "-m",
            Method::Tunnel(_) => "-i",
        }
    }

    /// Whether the real server may serve on another port than the service's (only NAT
    /// maps ports, as in IPVS).
    pub const fn maps_ports(self) -> bool {
        matches!(self, Method::Masq)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A real server of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RealSpec {
    /// The real server's address (on the director's LAN), of its service's family.
    pub addr: IpAddr,
    /// The port it serves on; 0 for the service's port (the only one unless the method
    /// maps ports: NAT).
    pub port: u16,
    /// How packets reach it.
    pub method: Method,
    /// Weight 0..=65535. 0 is *quiescent*: no new connections, existing ones continue.
    pub weight: u16,
    /// The real server's MAC, once resolved. Unresolved real servers get no new traffic.
    pub mac: Option<Mac>,
}

impl RealSpec {
    /// A real server reached by direct routing (on the service's port).
    pub fn route(addr: IpAddr, weight: u16) -> RealSpec {
        RealSpec {
            addr,
            port: 0,
            method: Method::Route,
            weight,
            mac: None,
        }
    }

    /// The port it serves on, for a service on `service_port`.
    pub fn port_for(&self, service_port: u16) -> u16 {
        if self.port == 0 {
            service_port
        } else {
            self.port
        }
    }
}

/// A virtual service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Protocol, VIP and port.
    pub key: ServiceKey,
    /// The scheduler (`-s`).
    pub scheduler: SchedKind,
    /// Persistence (`-p`, `-M`), if any.
    pub persistence: Option<Persistence>,
    /// The real servers, in the order they were added (the order rr and wrr follow).
    pub reals: Vec<RealSpec>,
    /// Scheduler flags (`-b`).
    pub flags: SchedFlags,
}

impl ServiceSpec {
    /// A service with no real servers yet.
    pub fn new(key: ServiceKey, scheduler: SchedKind) -> ServiceSpec {
        ServiceSpec {
            key,
            scheduler,
            persistence: None,
            reals: Vec::new(),
            flags: SchedFlags::NONE,
        }
    }

    /// Checks what can be checked of one service alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let vip = self.key.vip;
        if !is_unicast(vip) {
            return Err(ConfigError::BadVip(vip));
        }
        if self.key.port == 0 {
            return Err(ConfigError::ZeroPort(self.key));
        }
        if let Some(p) = self.persistence {
            if p.prefix_len > self.key.max_prefix() {
                return Err(ConfigError::BadPrefix(p.prefix_len));
            }
        }
        for (i, r) in self.reals.iter().enumerate() {
            if r.addr.is_ipv6() != vip.is_ipv6() {
                return Err(ConfigError::FamilyMismatch {
                    service: self.key,
                    real: r.addr,
                });
            }
            if !is_unicast(r.addr) {
                return Err(ConfigError::BadRealAddr(r.addr));
            }
            if self.reals[..i].iter().any(|o| o.addr == r.addr) {
                return Err(ConfigError::DuplicateReal {
                    service: self.key,
                    real: r.addr,
                });
            }
            if let Method::Tunnel(t) = r.method {
                t.check()?;
            }
            if r.port_for(self.key.port) != self.key.port && !r.method.maps_ports() {
                return Err(ConfigError::RealPort {
                    service: self.key,
                    real: r.addr,
                    port: r.port,
                    method: r.method,
                });
            }
        }
        if self.reals.len() > usize::from(u16::MAX - 1) {
            return Err(ConfigError::TooManyReals(self.key));
        }
        Ok(())
    }
}

/// True for an address a VIP or a real server may have: not unspecified, broadcast,
/// multicast or (IPv6) loopback.
pub fn is_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    }
}

/// Why a configuration was refused. Every message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ConfigError {
    /// `-s` named no scheduler we have.
    #[error("unknown scheduler '{0}': use one of rr, wrr, lc, wlc, sh, mh, dh, sed, nq, lblc, lblcr, fo, ovf, twos")]
    UnknownScheduler(String),
    /// `-M` was not a contiguous netmask.
    #[error("persistence netmask {0} is not contiguous: use a mask like 255.255.255.0")]
    NetmaskNotContiguous(Ipv4Addr),
    /// `-p 0`.
    #[error("persistence timeout must be at least 1 second")]
    ZeroPersistenceTimeout,
    /// VIP 0.0.0.0, broadcast or multicast.
    #[error("virtual IP {0} is not a unicast address")]
    BadVip(IpAddr),
    /// `-M` out of 1..=128 for IPv6, or above 32 for IPv4.
    #[error("persistence prefix length {0} is out of range: use 1 to 128 for an IPv6 service, a netmask (or 1 to 32) for IPv4")]
    BadPrefix(u8),
    /// A real server of the other address family.
    #[error("real server {real} is {} but service {service} is {}: direct routing needs real servers of the service's address family", family_name(*real), family_name(service.vip))]
    FamilyMismatch {
        /// The service.
        service: ServiceKey,
        /// The real server.
        real: IpAddr,
    },
    /// Port 0 (all-ports services are not supported).
    #[error("service {0}: port 0 (all ports) is not supported; give the service's port")]
    ZeroPort(ServiceKey),
    /// Real server address 0.0.0.0, broadcast or multicast.
    #[error("real server {0} is not a unicast address")]
    BadRealAddr(IpAddr),
    /// The same service twice.
    #[error("service {0} already exists")]
    DuplicateService(ServiceKey),
    /// The same real server twice in one service.
    #[error("real server {real} already exists in service {service}")]
    DuplicateReal {
        /// The service.
        service: ServiceKey,
        /// The real server.
        real: IpAddr,
    },
    /// A real server's port that its method cannot reach it on.
    #[error("real server {real} of service {service} on port {port}: only NAT (-m) maps ports; {} reaches a real server on the service's port", method.option())]
    RealPort {
        /// The service.
        service: ServiceKey,
        /// The real server.
        real: IpAddr,
        /// Its port.
        port: u16,
        /// Its method.
        method: Method,
    },
    /// A tunnel real server of a family the director has no address of.
    #[error("tunnel real server {0}: the director has no address of its family on its interface to send the tunnel from; add one")]
    TunnelSource(IpAddr),
    /// A tunnel's options that do not go together (ipvsadm's rules).
    #[error("{0}")]
    Tunnel(String),
    /// More real servers than a service can index.
    #[error("service {0} has too many real servers (at most 65534)")]
    TooManyReals(ServiceKey),
    /// More services than the director was started for.
    #[error("too many virtual services: this director was started with room for {0}")]
    TooManyServices(usize),
    /// More real-server entries than the director was started for.
    #[error("too many real servers in all: this director was started with room for {0}")]
    TooManyDests(usize),
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn sched_flags_read_and_print_as_ipvsadm() {
        let f = SchedFlags::parse("sh-fallback,sh-port", SchedKind::Sh).expect("valid");
        assert_eq!(f, SchedFlags(3));
        assert_eq!(
            f.words(SchedKind::Sh).as_deref(),
            Some("sh-fallback,sh-port")
        );
        assert_eq!(
            SchedFlags::parse("flag-1,flag-2", SchedKind::Mh)
                .expect("valid")
                .words(SchedKind::Mh)
                .as_deref(),
            Some("mh-fallback,mh-port")
        );
        assert_eq!(
            SchedFlags(4).words(SchedKind::Rr).as_deref(),
            Some("flag-3")
        );
        assert_eq!(SchedFlags::NONE.words(SchedKind::Sh), None);
        assert_eq!(
            SchedFlags::parse("sh-port", SchedKind::Mh),
            Err("incompatible scheduler flag `sh-port'".into())
        );
        assert_eq!(
            SchedFlags::parse("sh-nope", SchedKind::Sh),
            Err("invalid scheduler flag `sh-nope'".into())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_must_be_contiguous() {
        let p = Persistence::new(Duration::from_secs(60), Ipv4Addr::new(255, 255, 255, 0))
            .expect("valid");
        assert_eq!(p.prefix_len, 24);
        assert_eq!(p.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            Persistence::new(Duration::from_secs(60), Ipv4Addr::new(255, 0, 255, 0)),
            Err(ConfigError::NetmaskNotContiguous(Ipv4Addr::new(
                255, 0, 255, 0
            )))
        );
        let all = Persistence::new(Duration::from_secs(1), Ipv4Addr::new(255, 255, 255, 255))
            .expect("valid");
        assert_eq!(all.mask(), u32::MAX);
        let none = Persistence::new(Duration::from_secs(1), Ipv4Addr::UNSPECIFIED).expect("valid");
        assert_eq!(none.mask(), 0);
    }

    #[test]
    fn scheduler_names_round_trip() {
        for k in SchedKind::ALL {
            assert_eq!(k.name().parse::<SchedKind>(), Ok(k));
        }
        assert!(matches!(
            "foo".parse::<SchedKind>(),
            Err(ConfigError::UnknownScheduler(_))
        ));
        assert_eq!(SchedKind::default(), SchedKind::Wlc);
    }

    #[test]
    fn duplicate_reals_are_refused() {
        let key = ServiceKey {
            proto: Protocol::Tcp,
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port: 80,
        };
        let mut s = ServiceSpec::new(key, SchedKind::Rr);
        let r = RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, 11).into(),
            port: 0,
            method: Method::Route,
            weight: 1,
            mac: None,
        };
        s.reals.push(r);
        s.reals.push(r);
        assert!(matches!(
            s.validate(),
            Err(ConfigError::DuplicateReal { .. })
        ));
    }

    #[test]
    fn ipv6_services_take_ipv6_reals_only() {
        let vip: IpAddr = "2001:2::100".parse().expect("valid");
        let key = ServiceKey {
            proto: Protocol::Tcp,
            vip,
            port: 80,
        };
        assert_eq!(key.to_string(), "TCP [2001:2::100]:80");
        assert_eq!(key.max_prefix(), 128);
        let mut s = ServiceSpec::new(key, SchedKind::Rr);
        s.reals.push(RealSpec {
            addr: "2001:2::11".parse().expect("valid"),
            port: 0,
            method: Method::Route,
            weight: 1,
            mac: None,
        });
        assert_eq!(s.validate(), Ok(()));
        s.reals.push(RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, 11).into(),
            port: 0,
            method: Method::Route,
            weight: 1,
            mac: None,
        });
        let e = s.validate().expect_err("refused");
        assert_eq!(
            e.to_string(),
            "real server 198.18.0.11 is IPv4 but service TCP [2001:2::100]:80 is IPv6: \
             direct routing needs real servers of the service's address family"
        );
        s.reals.pop();
        s.persistence = Some(Persistence::with_prefix(Duration::from_secs(60), 64).expect("valid"));
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(
            Persistence::with_prefix(Duration::from_secs(60), 0),
            Err(ConfigError::BadPrefix(0))
        );
        for bad in ["::", "ff02::1", "::1"] {
            let mut b = s.clone();
            b.key.vip = bad.parse().expect("valid");
            b.reals.clear();
            assert!(matches!(b.validate(), Err(ConfigError::BadVip(_))), "{bad}");
        }
    }
}
