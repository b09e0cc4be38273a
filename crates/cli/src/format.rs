//! What `xdpvs` prints: ipvsadm's listing, statistics, rate, connection, timeout and save
//! layouts (from ipvsadm's own format strings), and the `--json` forms of each (schema in
//! docs/OPERATIONS.md).

use std::fmt::Write as _;

use serde_json::json;

use crate::names::Naming;
use crate::quoting::restore_quote;
use xdpvs_director::control::proto::{
    CheckSpec, ConnRow, Counters, DaemonRow, OnFailure, Quorum, Script, Sysctl, Table, TimeoutSet,
};
use xdpvs_sched::model::addr_port;
use xdpvs_sched::{Method, Persistence, Protocol, ServiceKey};

/// Which `-L` listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `-L`: scheduler, weights, ActiveConn, InActConn.
    Plain,
    /// `-L --stats`: Conns, InPkts, OutPkts, InBytes, OutBytes.
    Stats,
    /// `-L --rate`: CPS, InPPS, OutPPS, InBPS, OutBPS.
    Rate,
    /// `-L --persistent-conn`: Weight, PersistConn, ActiveConn, InActConn.
    PersistentConn,
    /// `-L --tun-info`: Forward, TunnelInfo, Weight, ActiveConn, InActConn.
    TunInfo,
}

/// ipvsadm's `print_largenum`: 9 columns; with `--exact` the whole number, otherwise
/// numbers from 100 million on in K, M, G or T (thousands, millions...).
fn largenum(out: &mut String, v: u64, exact: bool) {
    if exact {
        let digits = v.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        let _ = write!(out, "{digits:>width$}");
        return;
    }
    let _ = match v {
        0..=99_999_999 => write!(out, "{v:>9}"),
        100_000_000..=999_999_999 => write!(out, "{:>8}K", v / 1_000),
        1_000_000_000..=99_999_999_999 => write!(out, "{:>8}M", v / 1_000_000),
        100_000_000_000..=99_999_999_999_999 => write!(out, "{:>8}G", v / 1_000_000_000),
        _ => write!(out, "{:>8}T", v / 1_000_000_000_000),
    };
}

fn counters(out: &mut String, c: &Counters, exact: bool) {
    for v in [c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes] {
        largenum(out, v, exact);
    }
}

/// The persistence mask as ipvsadm prints it (after ` mask ` or ` -M `): a dotted
/// netmask for IPv4, a prefix length for IPv6; `None` at the default (per client
/// address: /32 or /128).
fn mask_word(key: &ServiceKey, p: &Persistence) -> Option<String> {
    if p.prefix_len == key.max_prefix() {
        None
    } else if key.is_ipv6() {
        Some(p.prefix_len.to_string())
    } else {
        Some(p.netmask().to_string())
    }
}

/// ipvsadm's `-L -n` layouts (with the version line when listing the whole table).
pub fn format_list(
    table: &Table,
    header: bool,
    kind: ListKind,
    exact: bool,
    naming: &Naming,
) -> String {
    let mut out = String::new();
    if header {
        let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={})", table.size);
    }
    let title = "Prot LocalAddress:Port";
    let _ = match kind {
        ListKind::Plain => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        ),
        ListKind::Stats => writeln!(
            out,
            "{title:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        ListKind::Rate => writeln!(
            out,
            "{title:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
        ListKind::PersistentConn => writeln!(
            out,
            "{title:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        ListKind::TunInfo => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn"
        ),
    };
    for s in &table.services {
        let name = format!(
            "{:<4} {}",
            s.key.proto.name(),
            naming.addr_port(s.key.vip, s.key.port, proto_word(s.key.proto))
        );
        match kind {
            ListKind::Stats => {
                let _ = write!(out, "{name:<33}");
                counters(&mut out, &s.stats, exact);
            }
            ListKind::Rate => {
                let _ = write!(out, "{name:<33}");
                let r = &s.rates;
                for v in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
                    largenum(&mut out, v, exact);
                }
            }
            ListKind::Plain | ListKind::PersistentConn | ListKind::TunInfo => {
                let _ = write!(out, "{name} {}", s.scheduler);
                if let Some(p) = s.persistence {
                    let _ = write!(out, " persistent {}", p.timeout.as_secs());
                    if let Some(m) = mask_word(&s.key, &p) {
                        let _ = write!(out, " mask {m}");
                    }
                }
            }
        }
        out.push('\n');
        for r in &s.reals {
            let dest = naming.addr_port(r.addr, r.port, proto_word(s.key.proto));
            let _ = match kind {
                ListKind::Plain => write!(
                    out,
                    "  -> {dest:<28} {:<7} {:<6} {:<10} {:<10}",
                    r.method.name(),
                    r.weight,
                    r.active,
                    r.inactive
                ),
                ListKind::Stats => {
                    let _ = write!(out, "  -> {dest:<28}");
                    counters(&mut out, &r.stats, exact);
                    Ok(())
                }
                ListKind::Rate => {
                    let q = &r.rates;
                    let _ = write!(
                        out,
                        "  -> {dest:<28} {:>8} {:>8} {:>8}",
                        q.cps, q.inpps, q.outpps
                    );
                    largenum(&mut out, q.inbps, exact);
                    largenum(&mut out, q.outbps, exact);
                    Ok(())
                }
                ListKind::PersistentConn => write!(
                    out,
                    "  -> {dest:<28} {:<9} {:<11} {:<10} {:<10}",
                    r.weight, r.persistent, r.active, r.inactive
                ),
                ListKind::TunInfo => write!(
                    out,
                    "  -> {dest:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
                    r.method.name(),
                    match r.method {
                        Method::Tunnel(t) => t.info(),
                        _ => "n/a".into(),
                    },
                    r.weight,
                    r.active,
                    r.inactive
                ),
            };
            out.push('\n');
        }
    }
    out
}

/// The protocol as /etc/services names it.
fn proto_word(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// What `-L` knows of real servers beyond ipvsadm's columns, one note each, for stderr:
/// ipvsadm's fixed-format lines on stdout stay exactly as ipvsadm prints them (scripts
/// parse them). `--json` carries the same facts.
pub fn list_notes(table: &Table) -> Vec<String> {
    let mut notes = Vec::new();
    for (vip, served) in &table.vrrp {
        notes.push(if *served {
            format!("VIP {vip}: held here (VRRP master): served")
        } else {
            format!("VIP {vip}: silent (VRRP backup: keepalived holds it elsewhere)")
        });
    }
    for s in &table.services {
        for r in &s.reals {
            let who = format!("real server {} of {}", addr_port(r.addr, r.port), s.key);
            if !r.resolved {
                notes.push(format!("{who}: MAC unresolved: no traffic"));
            }
            if r.sorry {
                notes.push(format!("{who}: the sorry server, standing in"));
            }
            if let (Some(h), Some(c)) = (&r.health, &r.check) {
                if !h.up {
                    let what = match c.on_failure {
                        OnFailure::Inhibit => "weight 0",
                        OnFailure::Remove => "removed",
                    };
                    notes.push(format!("{who}: check failed, {what}: {}", h.last));
                }
                if let Some(w) = h.weight.filter(|&w| w != r.weight) {
                    notes.push(format!(
                        "{who}: weight {w} set by its checks (configured {})",
                        r.weight
                    ));
                }
            }
        }
    }
    notes
}

/// ipvsadm's `-S -n` (ipvsadm-save) layout: the commands that rebuild the table.
/// With `ipvsadm_only`, xdpvs's own options (`--sorry-server`, `--check ...`) are left
/// out: what is left, ipvsadm -R reads.
pub fn format_rules(table: &Table, ipvsadm_only: bool, naming: &Naming) -> String {
    let mut out = String::new();
    for s in &table.services {
        let flag = match s.key.proto {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        };
        let svc = format!(
            "{flag} {}",
            naming.addr_port(s.key.vip, s.key.port, proto_word(s.key.proto))
        );
        let _ = write!(out, "-A {svc} -s {}", s.scheduler);
        if let Some(words) = s.flags.words(s.scheduler) {
            let _ = write!(out, " -b {words}");
        }
        if let Some(p) = s.persistence {
            let _ = write!(out, " -p {}", p.timeout.as_secs());
            if let Some(m) = mask_word(&s.key, &p) {
                let _ = write!(out, " -M {m}");
            }
        }
        if let Some(a) = s.sorry.filter(|_| !ipvsadm_only) {
            let _ = write!(out, " --sorry-server {a}");
        }
        if !ipvsadm_only {
            out.push_str(&quorum_options(&s.quorum));
        }
        out.push('\n');
        for r in s.reals.iter().filter(|r| !r.sorry) {
            let _ = write!(
                out,
                "-a {svc} -r {} {} -w {}",
                naming.addr_port(r.addr, r.port, proto_word(s.key.proto)),
                r.method.option(),
                r.weight
            );
            if let Method::Tunnel(t) = r.method {
                out.push_str(&t.options());
            }
            if let Some(c) = r.check.as_ref().filter(|_| !ipvsadm_only) {
                out.push_str(&check_options(c));
            }
            out.push('\n');
        }
    }
    out
}

/// The options that rebuild quorum `q` (none for keepalived's default).
pub fn quorum_options(q: &Quorum) -> String {
    let mut out = String::new();
    let d = Quorum::default();
    if q.quorum != d.quorum {
        let _ = write!(out, " --quorum {}", q.quorum);
    }
    if q.hysteresis != d.hysteresis {
        let _ = write!(out, " --hysteresis {}", q.hysteresis);
    }
    out.push_str(&scripts(&[
        ("--quorum-up", &q.up),
        ("--quorum-down", &q.down),
    ]));
    if q.omega {
        out.push_str(" --omega");
    }
    out
}

/// `--notify-up`-like options, then `--script-user` (the user of the first of them).
fn scripts(given: &[(&str, &Option<Script>)]) -> String {
    let mut out = String::new();
    let mut user = None;
    for (flag, s) in given {
        if let Some(s) = s {
            let _ = write!(out, " {flag} {}", restore_quote(&s.command));
            user = user.or(s.user.as_deref());
        }
    }
    if let Some(u) = user {
        let _ = write!(out, " --script-user {}", restore_quote(u));
    }
    out
}

/// The `--check` options that rebuild `c` (those at their default left out).
pub fn check_options(c: &CheckSpec) -> String {
    let mut out = format!(" --check {}", restore_quote(&c.probe.word()));
    for a in &c.also {
        let _ = write!(out, " --check {}", restore_quote(&a.word()));
    }
    if let Some(p) = c.port {
        let _ = write!(out, " --check-port {p}");
    }
    let d = CheckSpec::new(c.probe.clone());
    for (flag, v, default) in [
        ("--check-interval", c.interval, d.interval),
        ("--check-timeout", c.timeout, d.timeout),
        ("--check-retry-delay", c.retry_delay, d.retry_delay),
    ] {
        if v != default {
            let _ = write!(out, " {flag} {v}");
        }
    }
    for (flag, v, default) in [("--fall", c.fall, d.fall), ("--rise", c.rise, d.rise)] {
        if v != default {
            let _ = write!(out, " {flag} {v}");
        }
    }
    if c.on_failure != d.on_failure {
        let _ = write!(out, " --on-failure {}", c.on_failure.name());
    }
    for (flag, on) in [
        ("--check-alpha", c.alpha),
        ("--check-forwarding", c.forwarding),
    ] {
        if on {
            let _ = write!(out, " {flag}");
        }
    }
    if let Some(a) = c.connect_ip {
        let _ = write!(out, " --check-ip {a}");
    }
    if let Some(a) = c.bindto {
        let _ = write!(out, " --check-bind {a}");
    }
    if let Some(p) = c.bind_port {
        let _ = write!(out, " --check-bind-port {p}");
    }
    if let Some(i) = &c.bind_if {
        let _ = write!(out, " --check-bind-if {}", restore_quote(i));
    }
    out.push_str(&scripts(&[
        ("--notify-up", &c.notify_up),
        ("--notify-down", &c.notify_down),
    ]));
    out
}

/// ipvsadm's `-L --daemon` lines: one per role that runs.
pub fn format_daemon(rows: &[DaemonRow]) -> String {
    rows.iter()
        .map(|d| {
            format!(
                "{} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl={})\n",
                d.role, d.iface, d.syncid, d.maxlen, d.group, d.port, d.ttl
            )
        })
        .collect()
}

/// `-L --daemon --json`: the roles that run (none: an empty list), the VRRP instance
/// they follow, and the daemon's counters.
pub fn json_daemon(rows: &[DaemonRow]) -> String {
    let roles: Vec<_> = rows
        .iter()
        .map(|d| {
            json!({
                "role": d.role.word(),
                "mcast_interface": d.iface,
                "syncid": d.syncid,
                "maxlen": d.maxlen,
                "group": d.group.to_string(),
                "port": d.port,
                "ttl": d.ttl,
            })
        })
        .collect();
    let counters = rows.first().map(|d| {
        let [sent, received, sent_conns, received_conns, malformed, foreign, unknown] = d.counts;
        json!({
            "sent_messages": sent,
            "received_messages": received,
            "sent_connections": sent_conns,
            "received_connections": received_conns,
            "malformed_messages": malformed,
            "foreign_messages": foreign,
            "unknown_connections": unknown,
        })
    });
    let follows = rows.first().and_then(|d| d.follows.clone());
    format!(
        "{:#}\n",
        json!({ "daemon": roles, "follows_vrrp_instance": follows, "counters": counters })
    )
}

/// ipvsadm's `-L --timeout` line.
pub fn format_timeouts(t: &TimeoutSet) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcpfin, t.udp
    )
}

/// ipvsadm's `-L -c` title (with `--persistent-conn`: the persistence-engine columns).
pub fn connections_title(persistent_conn: bool) -> String {
    if persistent_conn {
        format!(
            "IPVS connection entries\npro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n",
            "state", "source", "virtual", "destination", "pe name", "pe_data"
        )
    } else {
        format!(
            "IPVS connection entries\npro expire {:<11} {:<18} {:<18} {}\n",
            "state", "source", "virtual", "destination"
        )
    }
}

/// One `-L -c` line: protocol, expire as mm:ss, state, source, virtual, destination.
pub fn connection_line(r: &ConnRow, naming: &Naming) -> String {
    let expire = format!("{:02}:{:02}", r.expires / 60, r.expires % 60);
    let proto = proto_word(r.proto);
    let show = |a: std::net::SocketAddr| naming.addr_port(a.ip(), a.port(), proto);
    format!(
        "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
        r.proto.name(),
        expire,
        r.state,
        show(r.source),
        show(r.virtual_addr),
        show(r.destination)
    )
}

/// `-L --json` (also with `--stats`, `--rate`, `--persistent-conn`: one document has
/// every figure), as the status page's API serves it too.
pub fn json_table(table: &Table) -> String {
    format!("{:#}\n", xdpvs_director::control::json::table(table))
}

/// `-L --timeout --json`: the timeouts, and the switches named after IPVS sysctls.
pub fn json_timeouts(t: &TimeoutSet, s: &Sysctl) -> String {
    format!(
        "{:#}\n",
        json!({
            "tcp": t.tcp,
            "tcpfin": t.tcpfin,
            "udp": t.udp,
            "sysctl": {
                "conn_reuse_mode": s.conn_reuse_mode,
                "expire_nodest_conn": s.expire_nodest_conn,
                "expire_quiescent_template": s.expire_quiescent_template,
                "sloppy_tcp": s.sloppy_tcp,
            },
        })
    )
}

/// One connection of `-L -c --json` (the listing is `{"connections": [...]}`, written a
/// row at a time).
pub fn json_connection(r: &ConnRow) -> String {
    json!({
        "protocol": r.proto.name(),
        "expire": r.expires,
        "state": r.state,
        "source": r.source.to_string(),
        "virtual": r.virtual_addr.to_string(),
        "destination": r.destination.to_string(),
        "template": r.template,
    })
    .to_string()
}
