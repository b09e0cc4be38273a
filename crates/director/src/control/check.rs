//! `xdpvs check`: the director probes its own LAN for the mistakes LVS-DR is prone to, and
//! says what it found as a checklist with the fix for every failure.
//!
//! - For each VIP, an ARP request (IPv6: a neighbour solicitation) from the director: any
//!   host that answers it, other than the director, steals clients from it (a real server
//!   with the VIP on an ARP-answering interface, or with `arp_ignore=0`).
//! - For each real server: its MAC is resolved; a TCP SYN for VIP:port sent to its MAC
//!   gets an answer from the VIP (it has the VIP, on `lo`), and that answer is a SYN-ACK
//!   (something listens on the port). A UDP service's real server gets an ICMP echo
//!   request to the VIP instead, and an empty datagram to the port: an ICMP port
//!   unreachable says nothing listens. Each SYN-ACK is closed with a reset.
//! - A NAT real server (`-m`) holds no VIP: its SYN goes from the VIP to its own address
//!   and port, so that its SYN-ACK, addressed to the VIP (off its subnet), comes back only
//!   if its route to the clients goes through the director. A NAT UDP real server gets
//!   its probes from the director's address (its route back is not checked).
//!
//! This module is pure: the probe frames from the targets ([`plan`]), the checklist from
//! what was heard ([`report`]). The control plane gathers the targets; the dataplane
//! sends the frames and listens ([`super::plane::Dataplane::probe`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use serde::{Deserialize, Serialize};
use xdpvs_sched::model::Mac;
use xdpvs_sched::{Method, Protocol, ServiceKey};

use crate::iface::format_mac;

/// The first TCP/UDP source port the probes use: above Linux's ephemeral range
/// (32768-60999), so that no socket of the director's own can take their answers.
pub const FIRST_PORT: u16 = 61000;
/// How many source ports the probes take turns on.
pub const PORTS: u16 = 4000;

/// Where the probes come from: the director's MAC and its address in each family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The director's MAC (where VIPs are asked for).
    pub mac: Mac,
    /// Its MAC towards the real servers (the same but for a two-armed director): the
    /// source of the probes to them.
    pub servers_mac: Mac,
    /// Its IPv4 address, if it has one.
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 address, if it has one.
    pub v6: Option<Ipv6Addr>,
}

impl Origin {
    fn of(&self, family: IpAddr) -> Option<IpAddr> {
        match family {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

/// A real server of a service, as the control plane knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The service.
    pub service: ServiceKey,
    /// The real server.
    pub addr: IpAddr,
    /// Its MAC, if resolved.
    pub mac: Option<Mac>,
    /// The service's sorry server rather than one of its real servers.
    pub sorry: bool,
    /// The port it serves on.
    pub port: u16,
    /// How packets reach it.
    pub method: Method,
    /// The director's address on its subnet (a NAT real server's gateway), if known.
    pub gateway: Option<IpAddr>,
}

impl Target {
    /// A probe's source address, destination address and port, from `origin`: direct
    /// routing, the director's address to VIP:port (the real server holds the VIP); NAT
    /// over TCP, the VIP to its own address and port (the answer comes back to the VIP
    /// only through the director); NAT over UDP, the director's address to its own.
    fn ends(&self, origin: &Origin) -> Option<(IpAddr, IpAddr, u16)> {
        let vip = self.service.vip;
        let me = origin.of(vip)?;
        let (to, port) = self.probed();
        let from = match (self.method, self.service.proto) {
            (Method::Masq, Protocol::Tcp) => vip,
            _ => me,
        };
        Some((from, to, port))
    }

    /// Where its probes go, and so where their answers come from: the VIP and the
    /// service's port (direct routing), or its own address and port (NAT).
    fn probed(&self) -> (IpAddr, u16) {
        match self.method {
            Method::Route | Method::Tunnel(_) => (self.service.vip, self.service.port),
            Method::Masq => (self.addr, self.port),
        }
    }
}

/// What a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Who answers ARP (or NDP) for this VIP.
    Who(IpAddr),
    /// A SYN for the target's VIP:port from source port `sport` to its MAC.
    Syn {
        /// Index into [`Plan::targets`].
        target: usize,
        /// The SYN's source port.
        sport: u16,
    },
    /// An ICMP echo request to the target's VIP, at its MAC.
    Echo {
        /// Index into [`Plan::targets`].
        target: usize,
    },
    /// An empty UDP datagram to the target's VIP:port from `sport`, at its MAC.
    Udp {
        /// Index into [`Plan::targets`].
        target: usize,
        /// The datagram's source port.
        sport: u16,
    },
}

/// The probes of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The VIPs asked about, in order.
    pub vips: Vec<IpAddr>,
    /// The real servers, in the order of the configuration.
    pub targets: Vec<Target>,
    /// Each question and the frame that asks it (none for a question that cannot be
    /// asked: no director address of that family).
    pub probes: Vec<(Question, Option<Vec<u8>>)>,
    /// The echo requests' identifier.
    pub echo_id: u16,
}

impl Plan {
    /// The frames to send.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.probes.iter().filter_map(|(_, f)| f.clone()).collect()
    }
}

fn octets4(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

fn octets6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The start of a frame from `src` to `dst` at `dst_mac`, by family.
fn ip(
    origin: &Origin,
    dst_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    let eth = PacketBuilder::ethernet2(origin.servers_mac, dst_mac);
    match dst {
        IpAddr::V4(_) => eth.ipv4(octets4(src), octets4(dst), 64),
        IpAddr::V6(_) => eth.ipv6(octets6(src), octets6(dst), 64),
    }
}

fn written(size: usize, write: impl FnOnce(&mut Vec<u8>) -> bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(size);
    write(&mut out).then_some(out)
}

/// The frame that asks who has `vip` (an ARP request, or a neighbour solicitation), from
/// `origin`'s address of its family (none without one).
pub fn who(vip: IpAddr, origin: &Origin) -> Option<Vec<u8>> {
    match (vip, origin.of(vip)) {
        (IpAddr::V4(v), Some(IpAddr::V4(me))) => {
            Some(xdpvs_arp::request(origin.mac, me, v).to_vec())
        }
        (IpAddr::V6(v), Some(IpAddr::V6(me))) => {
            Some(xdpvs_arp::ndp::solicitation(origin.mac, me, v))
        }
        _ => None,
    }
}

/// The probes for `targets` from `origin`; the source ports start at `first_port`
/// (within [`FIRST_PORT`]..+[`PORTS`]), the echo requests carry `echo_id`.
pub fn plan(targets: Vec<Target>, origin: &Origin, first_port: u16, echo_id: u16) -> Plan {
    let mut vips: Vec<IpAddr> = Vec::new();
    for t in &targets {
        if !vips.contains(&t.service.vip) {
            vips.push(t.service.vip);
        }
    }
    let mut probes = Vec::new();
    for &vip in &vips {
        probes.push((Question::Who(vip), who(vip, origin)));
    }
    let mut port = first_port.wrapping_sub(FIRST_PORT) % PORTS;
    let mut next_port = || {
        let p = FIRST_PORT + port;
        port = (port + 1) % PORTS;
        p
    };
    for (i, t) in targets.iter().enumerate() {
        let (Some(mac), Some((me, vip, dport))) = (t.mac, t.ends(origin)) else {
            continue;
        };
        // A tunnel real server gets its probes as it gets clients' packets: encapsulated
        // from the director's address (its MAC is its next hop's).
        let wrap = |f: Option<Vec<u8>>| match t.method {
            Method::Tunnel(tun) => {
                f.and_then(|f| xdpvs_dataplane::tunnel_frame(f, &tun, me, t.addr))
            }
            _ => f,
        };
        match t.service.proto {
            Protocol::Tcp => {
                let sport = next_port();
                let b = ip(origin, mac, me, vip)
                    .tcp(sport, dport, syn_seq(sport), 64240)
                    .syn();
                let frame = wrap(written(b.size(0), |o| b.write(o, &[]).is_ok()));
                probes.push((Question::Syn { target: i, sport }, frame));
            }
            Protocol::Udp => {
                let b = ip(origin, mac, me, vip);
                let frame = match vip {
                    IpAddr::V4(_) => {
                        let b = b.icmpv4_echo_request(echo_id, i as u16);
                        written(b.size(8), |o| b.write(o, &[0; 8]).is_ok())
                    }
                    IpAddr::V6(_) => {
                        let b = b.icmpv6_echo_request(echo_id, i as u16);
                        written(b.size(8), |o| b.write(o, &[0; 8]).is_ok())
                    }
                };
                probes.push((Question::Echo { target: i }, wrap(frame)));
                let sport = next_port();
                let b = ip(origin, mac, me, vip).udp(sport, dport);
                let frame = wrap(written(b.size(0), |o| b.write(o, &[]).is_ok()));
                probes.push((Question::Udp { target: i, sport }, frame));
            }
        }
    }
    Plan {
        vips,
        targets,
        probes,
        echo_id,
    }
}

/// The sequence number of the SYN from `sport` (any will do; this one is recognisable).
fn syn_seq(sport: u16) -> u32 {
    0x7864_0000 | u32::from(sport)
}

/// A packet that reached one of the director's own addresses while the probes were out:
/// what the packet socket read of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// An IPv4 packet, from its header (TCP or ICMP).
    V4(Vec<u8>),
    /// An IPv6 TCP segment, from its TCP header.
    Tcp6(Vec<u8>),
    /// An ICMPv6 message, from its header.
    Icmp6(Vec<u8>),
}

/// What the dataplane heard while the probes were out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heard {
    /// Packets to the director's addresses.
    pub packets: Vec<Packet>,
    /// Hosts that claimed a VIP meanwhile (from the workers' conflict logs).
    pub claims: Vec<(IpAddr, Mac)>,
}

/// What a packet says, as far as a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    /// A TCP segment from `src` (`None`: unknown, IPv6), ports, flags, ack.
    Tcp {
        src: Option<IpAddr>,
        sport: u16,
        dport: u16,
        flags: u8,
        ack: u32,
    },
    /// An echo reply.
    EchoReply { id: u16, seq: u16 },
    /// A port unreachable quoting a UDP datagram from `sport`.
    PortUnreachable { sport: u16 },
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn tcp(src: Option<IpAddr>, t: &[u8]) -> Option<Said> {
    Some(Said::Tcp {
        src,
        sport: be16(t, 0)?,
        dport: be16(t, 2)?,
        ack: be32(t, 8)?,
        flags: *t.get(13)?,
    })
}

/// The UDP source port of a quoted IPv4 or IPv6 datagram.
fn quoted_udp_sport(q: &[u8]) -> Option<u16> {
    match q.first()? >> 4 {
        4 => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            (*q.get(9)? == 17).then_some(())?;
            be16(q, ihl)
        }
        6 => {
            (*q.get(6)? == 17).then_some(())?;
            be16(q, 40)
        }
        _ => None,
    }
}

/// An echo reply or a port unreachable in an ICMP (`v6` false) or ICMPv6 message.
fn icmp(m: &[u8], v6: bool) -> Option<Said> {
    let (echo_reply, unreachable, port) = if v6 { (129, 1, 4) } else { (0, 3, 3) };
    match (*m.first()?, *m.get(1)?) {
        (t, 0) if t == echo_reply => Some(Said::EchoReply {
            id: be16(m, 4)?,
            seq: be16(m, 6)?,
        }),
        (t, c) if t == unreachable && c == port => Some(Said::PortUnreachable {
            sport: quoted_udp_sport(m.get(8..)?)?,
        }),
        _ => None,
    }
}

fn parse(p: &Packet) -> Option<Said> {
    match p {
        Packet::V4(b) => {
            let ihl = usize::from(b.first()? & 0x0f) * 4;
            let src = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(12..16)?).ok()?));
            let l4 = b.get(ihl..)?;
            match *b.get(9)? {
                6 => tcp(Some(src), l4),
                1 => icmp(l4, false),
                _ => None,
            }
        }
        Packet::Tcp6(t) => tcp(None, t),
        Packet::Icmp6(m) => icmp(m, true),
    }
}

/// How a SYN was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SynAnswer {
    Open { ack: u32 },
    Reset,
}

fn syn_answer(plan: &Plan, said: &[Said], target: usize, sport: u16) -> Option<SynAnswer> {
    let t = plan.targets.get(target)?;
    // The answer comes from where the SYN went.
    let (to, port) = t.probed();
    said.iter().find_map(|s| match *s {
        Said::Tcp {
            src,
            sport: from,
            dport,
            flags,
            ack,
        } if dport == sport && from == port && src.is_none_or(|a| a == to) => {
            if flags & TCP_RST != 0 {
                Some(SynAnswer::Reset)
            } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                Some(SynAnswer::Open { ack })
            } else {
                None
            }
        }
        _ => None,
    })
}

/// The frames to send again after a first round heard `heard`: every ARP request and
/// neighbour solicitation (answers add up), and each SYN or echo request not answered
/// yet (a frame may be lost; TCP would retransmit too). Empty datagrams are not repeated:
/// silence is their pass, and an answer is an ICMP error hosts rate-limit.
pub fn unanswered(plan: &Plan, heard: &Heard) -> Vec<Vec<u8>> {
    let said: Vec<Said> = heard.packets.iter().filter_map(parse).collect();
    plan.probes
        .iter()
        .filter(|(q, _)| match *q {
            Question::Who(_) => true,
            Question::Syn { target, sport } => syn_answer(plan, &said, target, sport).is_none(),
            Question::Echo { target } => !said.contains(&Said::EchoReply {
                id: plan.echo_id,
                seq: target as u16,
            }),
            Question::Udp { .. } => false,
        })
        .filter_map(|(_, f)| f.clone())
        .collect()
}

impl Heard {
    /// What this and `more` heard.
    pub fn merged(mut self, more: Heard) -> Heard {
        self.packets.extend(more.packets);
        self.claims.extend(more.claims);
        self
    }
}

/// The SYNs of `plan` alone (a forwarding check sends nothing else).
pub fn syns(plan: &Plan) -> Vec<Vec<u8>> {
    plan.probes
        .iter()
        .filter(|(q, _)| matches!(q, Question::Syn { .. }))
        .filter_map(|(_, f)| f.clone())
        .collect()
}

/// How the first SYN of `plan` was answered, once it was: `Ok` for a SYN-ACK, `Err`
/// saying what came instead.
pub fn syn_verdict(plan: &Plan, heard: &Heard) -> Option<Result<(), String>> {
    let said: Vec<Said> = heard.packets.iter().filter_map(parse).collect();
    let (target, sport) = plan.probes.iter().find_map(|(q, _)| match *q {
        Question::Syn { target, sport } => Some((target, sport)),
        _ => None,
    })?;
    let (to, port) = plan.targets.get(target)?.probed();
    Some(match syn_answer(plan, &said, target, sport)? {
        SynAnswer::Open { .. } => Ok(()),
        SynAnswer::Reset => Err(format!(
            "{} answered the SYN for {} with a reset: nothing listens there",
            to,
            SocketAddrShow(to, port)
        )),
    })
}

/// `ADDR:PORT`, IPv6 in brackets.
struct SocketAddrShow(IpAddr, u16);

impl std::fmt::Display for SocketAddrShow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::net::SocketAddr::new(self.0, self.1))
    }
}

/// Resets for the SYN-ACKs heard: the real servers forget the probes' half-open
/// connections at once.
pub fn resets(plan: &Plan, heard: &Heard, origin: &Origin) -> Vec<Vec<u8>> {
    let said: Vec<Said> = heard.packets.iter().filter_map(parse).collect();
    let mut out = Vec::new();
    for (q, _) in &plan.probes {
        let &Question::Syn { target, sport } = q else {
            continue;
        };
        let t = &plan.targets[target];
        let (Some(SynAnswer::Open { ack }), Some(mac), Some((me, to, port))) = (
            syn_answer(plan, &said, target, sport),
            t.mac,
            t.ends(origin),
        ) else {
            continue;
        };
        let b = ip(origin, mac, me, to).tcp(sport, port, ack, 0).rst();
        if let Some(f) = written(b.size(0), |o| b.write(o, &[]).is_ok()) {
            out.push(f);
        }
    }
    out
}

/// The host among `known` (address, MAC) that is at `mac`, by its address of `vip`'s
/// family if it has one (the lowest such address): who a claim on `vip` comes from.
pub fn host_at(
    known: impl IntoIterator<Item = (IpAddr, Option<Mac>)>,
    mac: Mac,
    vip: IpAddr,
) -> Option<IpAddr> {
    known
        .into_iter()
        .filter(|(_, m)| *m == Some(mac))
        .map(|(a, _)| a)
        .min_by_key(|a| (a.is_ipv4() != vip.is_ipv4(), *a))
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckItem {
    /// What was checked: `VIP 198.18.0.100`, `TCP 198.18.0.100:80 real server 198.18.0.11`.
    pub subject: String,
    /// Passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// For a failure, what to do about it.
    pub fix: Option<String>,
}

/// The checklist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Every check, VIPs first, then each service's real servers.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.items.iter().filter(|i| !i.ok).count()
    }
}

fn rs_setup(vip: IpAddr, method: Method) -> String {
    match method {
        Method::Tunnel(t) => format!(
            "xdpvs rs-setup --tun{} --vip {vip} --apply",
            match t.kind {
                xdpvs_sched::TunKind::Ipip => String::new(),
                xdpvs_sched::TunKind::Gue => format!(" --tun-type gue --tun-port {}", t.port),
                xdpvs_sched::TunKind::Gre => " --tun-type gre".into(),
            }
        ),
        _ => format!("xdpvs rs-setup --vip {vip} --apply --persist"),
    }
}

fn service_name(k: &ServiceKey) -> String {
    format!(
        "{} {}",
        k.proto.name().to_uppercase(),
        xdpvs_sched::model::addr_port(k.vip, k.port)
    )
}

/// The checklist from what was heard (a claiming MAC is named by the real server at it).
pub fn report(plan: &Plan, heard: &Heard, origin: &Origin) -> CheckReport {
    let said: Vec<Said> = heard.packets.iter().filter_map(parse).collect();
    let mut items = Vec::new();
    // The real server at a MAC, by its address of the VIP's family if it has one.
    let real_at =
        |mac: Mac, vip: IpAddr| host_at(plan.targets.iter().map(|t| (t.addr, t.mac)), mac, vip);
    for (q, frame) in &plan.probes {
        let &Question::Who(vip) = q else {
            continue;
        };
        let subject = format!("VIP {vip}");
        let (what, family) = match vip {
            IpAddr::V4(_) => ("ARP", "IPv4"),
            IpAddr::V6(_) => ("neighbour solicitations", "IPv6"),
        };
        if frame.is_none() {
            items.push(CheckItem {
                subject,
                ok: false,
                detail: format!("not asked: the director's interface has no {family} address"),
                fix: Some(format!(
                    "give the director's interface an {family} address on the VIP's LAN"
                )),
            });
            continue;
        }
        let claimers: BTreeSet<Mac> = heard
            .claims
            .iter()
            .filter(|(v, m)| *v == vip && *m != origin.mac)
            .map(|(_, m)| *m)
            .collect();
        if claimers.is_empty() {
            items.push(CheckItem {
                subject: subject.clone(),
                ok: true,
                detail: format!("no host but the director answers {what} for it"),
                fix: None,
            });
        }
        for m in claimers {
            let (who, on) = match real_at(m, vip) {
                Some(a) => (
                    format!("real server {a} ({})", format_mac(&m)),
                    format!("on {a}"),
                ),
                None => (
                    format!("the host at {}", format_mac(&m)),
                    format!("on the host at {}", format_mac(&m)),
                ),
            };
            items.push(CheckItem {
                subject: subject.clone(),
                ok: false,
                detail: format!(
                    "{who} answers {what} for it: the clients it answers bypass the director"
                ),
                fix: Some(format!("{on}: {}", rs_setup(vip, Method::Route))),
            });
        }
    }
    for (i, t) in plan.targets.iter().enumerate() {
        let k = &t.service;
        let role = if t.sorry {
            "sorry server"
        } else {
            "real server"
        };
        let subject = format!("{} {role} {}", service_name(k), t.addr);
        let mut push = |ok: bool, detail: String, fix: Option<String>| {
            items.push(CheckItem {
                subject: subject.clone(),
                ok,
                detail,
                fix,
            })
        };
        let Some(mac) = t.mac else {
            push(
                false,
                "its MAC is not resolved: it does not answer ARP (or neighbour solicitations), and gets no traffic".into(),
                Some(format!(
                    "check that {} is up and on the director's LAN (ping {} from the director)",
                    t.addr, t.addr
                )),
            );
            continue;
        };
        push(
            true,
            format!("its MAC is resolved: {}", format_mac(&mac)),
            None,
        );
        let probes = plan.probes.iter().filter(|(q, _)| match *q {
            Question::Syn { target, .. }
            | Question::Echo { target }
            | Question::Udp { target, .. } => target == i,
            Question::Who(_) => false,
        });
        let vip = k.vip;
        let nat = t.method == Method::Masq;
        let dip = t
            .gateway
            .or_else(|| origin.of(vip))
            .map_or_else(|| "DIP".to_string(), |a| a.to_string());
        let no_vip = |how: &str| {
            if nat {
                return (
                    false,
                    format!(
                        "{how} from the VIP to {} got no answer through the director: its route to the clients does not go through the director (NAT replies must), or a firewall drops it",
                        xdpvs_sched::model::addr_port(t.addr, t.port)
                    ),
                    Some(format!(
                        "on {}: xdpvs rs-setup --nat --vip {vip} --director {dip} --apply",
                        t.addr
                    )),
                );
            }
            if let Method::Tunnel(tun) = t.method {
                return (
                    false,
                    format!(
                        "{how} tunnelled to it ({}) got no answer: it does not decapsulate, or does not take traffic for {vip} (the VIP on lo or the tunnel device, rp_filter off), or a firewall drops it",
                        tun.info()
                    ),
                    Some(format!("on {}: {}", t.addr, rs_setup(vip, t.method))),
                );
            }
            (
                false,
                format!(
                    "{how} sent to its MAC got no answer: it does not take traffic for {vip} (the VIP is not on its lo, or a firewall drops it)"
                ),
                Some(format!("on {}: {}", t.addr, rs_setup(vip, t.method))),
            )
        };
        // The port it serves on (NAT maps it).
        let port = t.port;
        for (q, frame) in probes {
            if frame.is_none() {
                continue;
            }
            match *q {
                Question::Syn { sport, .. } => match syn_answer(plan, &said, i, sport) {
                    Some(answer) => {
                        push(
                            true,
                            if nat {
                                "its replies come back through the director: a SYN from the VIP was answered to the VIP".to_string()
                            } else if let Method::Tunnel(tun) = t.method {
                                format!(
                                    "decapsulates and takes traffic for {vip}: a SYN tunnelled to it ({}) was answered from the VIP",
                                    tun.info()
                                )
                            } else {
                                format!(
                                    "takes traffic for {vip}: a SYN sent to its MAC was answered from the VIP"
                                )
                            },
                            None,
                        );
                        match answer {
                            SynAnswer::Open { .. } => {
                                push(true, format!("port {port} is open (SYN-ACK)"), None)
                            }
                            SynAnswer::Reset => push(
                                false,
                                format!("port {port} is closed: the SYN was reset"),
                                Some(format!(
                                    "start the service on {} port {port} (listening on {}, or on every address)",
                                    t.addr,
                                    if nat { "its address" } else { "the VIP" }
                                )),
                            ),
                        }
                    }
                    None => {
                        let (ok, d, f) = no_vip("a SYN");
                        push(ok, d, f);
                    }
                },
                Question::Echo { .. } => {
                    let answered = said.iter().any(|s| {
                        *s == Said::EchoReply {
                            id: plan.echo_id,
                            seq: i as u16,
                        }
                    });
                    if answered {
                        push(
                            true,
                            format!("takes traffic for {vip}: an echo request sent to its MAC was answered"),
                            None,
                        );
                    } else {
                        let (ok, d, f) = no_vip("an echo request");
                        push(ok, d, f);
                    }
                }
                Question::Udp { sport, .. } => {
                    let closed = said.contains(&Said::PortUnreachable { sport });
                    if closed {
                        push(
                            false,
                            format!("UDP port {port} is closed: port unreachable"),
                            Some(format!(
                                "start the service on {} UDP port {port} (listening on {}, or on every address)",
                                t.addr,
                                if nat { "its address" } else { "the VIP" }
                            )),
                        );
                    } else {
                        push(
                            true,
                            format!(
                                "UDP port {port} did not say it is closed (no port unreachable)"
                            ),
                            None,
                        );
                    }
                }
                Question::Who(_) => {}
            }
        }
        if origin.of(vip).is_none() {
            push(
                false,
                "not probed: the director's interface has no address of the VIP's family".into(),
                None,
            );
        }
    }
    CheckReport { items }
}

#[cfg(test)]
mod tests;
