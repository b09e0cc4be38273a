//! keepalived.conf's `virtual_server` blocks, read as xdpvs requests.
//!
//! An operator migrating from IPVS + keepalived points `xdpvs run --keepalived FILE` at
//! the file they have. What keepalived does for a DR, NAT or TUN director is taken:
//! `lb_algo`/`lvs_sched`, `lb_kind`/`lvs_method DR|NAT|TUN` (NAT by default, as keepalived;
//! also per real server), `persistence_timeout`,
//! `persistence_granularity`, `protocol`, `delay_loop`, `virtualhost`, `sorry_server`,
//! `inhibit_on_failure` and `real_server` blocks with `weight`, `inhibit_on_failure`,
//! `TCP_CHECK` and `HTTP_GET` (`connect_port`, `connect_timeout`, `retry`/`nb_get_retry`,
//! `delay_before_retry`, `delay_loop`, `url { path status_code digest }`). Anything else
//! inside those blocks is refused with its line; `global_defs` and the VRRP sections are
//! skipped with a note (xdpvs does not do VRRP).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use xdpvs_sched::{
    Method, Persistence, Protocol, SchedFlags, SchedKind, ServiceKey, TunCsum, TunKind, Tunnel,
};

use crate::control::proto::Request;
use crate::health::spec::{
    dns_type, hex_bytes, parse_digest, parse_hex, parse_status, CheckSpec, FileCheck, HttpCheck,
    HttpProtocol, Millis, MiscCheck, OnFailure, Probe, Quorum, Script, UdpCheck, DEFAULT_DNS_TYPE,
    DEFAULT_HELO, DEFAULT_UDP_MAX,
};

pub mod pre;

/// Why a keepalived.conf was refused. Nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: {message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct KeepalivedError {
    /// The included file it is in (`None`: the file given).
    pub file: Option<String>,
    /// Where, from 1.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl KeepalivedError {
    /// `file:line: message`, `path` being the file given.
    pub fn at(&self, path: &std::path::Path) -> String {
        let file = self
            .file
            .clone()
            .unwrap_or_else(|| path.display().to_string());
        format!("{file}:{}: {}", self.line, self.message)
    }
}

/// What a keepalived.conf asks of xdpvs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The changes that build its table (on an empty one), in the file's order.
    pub requests: Vec<Request>,
    /// Where each change comes from (its `virtual_server` or `real_server` line).
    pub lines: Vec<Place>,
    /// Sections skipped, for the log.
    pub notes: Vec<String>,
}

/// One statement: a keyword, its arguments, and a block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    line: usize,
    key: String,
    args: Vec<String>,
    block: Option<Vec<Node>>,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, KeepalivedError> {
    Err(KeepalivedError {
        file: None,
        line,
        message: message.into(),
    })
}

/// Words with the index of their line in `lines`; `{` and `}` are words of their own;
/// `#` and `!` start a comment; a "quoted string" is one word.
fn words(lines: &[pre::Line]) -> Result<Vec<(usize, String)>, KeepalivedError> {
    let mut out = Vec::new();
    for (line, l) in lines.iter().enumerate() {
        let raw = l.text.as_str();
        let mut chars = raw.chars().peekable();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<(usize, String)>| {
            if !word.is_empty() {
                out.push((line, std::mem::take(word)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' => break,
                '"' => {
                    flush(&mut word, &mut out);
                    let mut q = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '"' {
                            closed = true;
                            break;
                        }
                        q.push(c);
                    }
                    if !closed {
                        return err(line, "a quoted string is not closed on its line");
                    }
                    out.push((line, q));
                }
                '{' | '}' => {
                    flush(&mut word, &mut out);
                    out.push((line, c.to_string()));
                }
                c if c.is_whitespace() => flush(&mut word, &mut out),
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
    }
    Ok(out)
}

/// Statements until a `}` (when `nested`) or the end.
fn nodes(
    words: &[(usize, String)],
    at: &mut usize,
    nested: Option<usize>,
) -> Result<Vec<Node>, KeepalivedError> {
    let mut out = Vec::new();
    while *at < words.len() {
        let (line, w) = &words[*at];
        match w.as_str() {
            "}" => {
                if nested.is_none() {
                    return err(*line, "'}' without a block to close");
                }
                *at += 1;
                return Ok(out);
            }
            "{" => return err(*line, "'{' without a keyword before it"),
            _ => {}
        }
        let mut node = Node {
            line: *line,
            key: w.clone(),
            args: Vec::new(),
            block: None,
        };
        *at += 1;
        while let Some((l, a)) = words.get(*at) {
            if *l != node.line || a == "}" {
                break;
            }
            *at += 1;
            if a == "{" {
                node.block = Some(nodes(words, at, Some(node.line))?);
                break;
            }
            node.args.push(a.clone());
        }
        out.push(node);
    }
    match nested {
        Some(opened) => err(opened, "this block is never closed with '}'"),
        None => Ok(out),
    }
}

/// Top-level sections and keywords that are not about LVS: skipped with a note.
const SKIPPED: [&str; 20] = [
    "global_defs",
    "vrrp_instance",
    "vrrp_sync_group",
    "vrrp_script",
    "vrrp_track_process",
    "track_group",
    "garp_group",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_interfaces",
    "linkbeat_use_polling",
    "interface_up_down_delays",
    "bfd_instance",
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "instance",
    "use_pid_dir",
    "child_wait_time",
];

/// Where a change comes from: a line of the file given, or of a file it includes.
pub use crate::writer::Place;

/// Reads the keepalived.conf `text` on its own: an include names no file, and with no
/// config id conditional lines `@ID` never apply, `@^ID` always.
pub fn parse(text: &str) -> Result<Imported, KeepalivedError> {
    parse_with(Path::new("keepalived.conf"), text, "", &pre::Nowhere)
}

/// Reads the keepalived.conf at `path` as keepalived does on the host whose config id is
/// `config_id` (keepalived's `-i`; by default [`pre::default_config_id`]): includes,
/// conditional lines and parameters first.
pub fn parse_file(path: &Path, config_id: &str) -> Result<Imported, KeepalivedError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeepalivedError {
        file: None,
        line: 0,
        message: format!("reading it: {e}"),
    })?;
    parse_with(path, &text, config_id, &pre::Disk)
}

/// [`parse_file`] of `text`, includes read from `files`.
pub fn parse_with(
    path: &Path,
    text: &str,
    config_id: &str,
    files: &dyn pre::Files,
) -> Result<Imported, KeepalivedError> {
    let (lines, notes) = pre::expand(path, text, config_id, files)?;
    let place = |idx: usize| lines.get(idx).map_or(Place::line(0), pre::Line::place);
    let mut imported = parse_lines(&lines).map_err(|e| {
        let at = place(e.line);
        KeepalivedError {
            file: at.file,
            line: at.line,
            ..e
        }
    })?;
    imported.lines = imported.lines.iter().map(|p| place(p.line)).collect();
    imported.notes.splice(0..0, notes);
    Ok(imported)
}

/// The statements of preprocessed `lines`, read. Errors and changes carry indices into
/// `lines` as their line; notes are written with the places.
fn parse_lines(lines: &[pre::Line]) -> Result<Imported, KeepalivedError> {
    let words = words(lines)?;
    let mut at = 0;
    let top = nodes(&words, &mut at, None)?;
    let shown = |idx: usize| {
        lines
            .get(idx)
            .map(|l| l.place().to_string())
            .unwrap_or_default()
    };
    let mut imported = Imported {
        requests: Vec::new(),
        lines: Vec::new(),
        notes: Vec::new(),
    };
    let mut groups: Vec<(&str, Vec<(IpAddr, u16)>)> = Vec::new();
    for n in top.iter().filter(|n| n.key == "virtual_server_group") {
        let name = one_arg(n, "group name")?;
        if groups.iter().any(|(g, _)| *g == name) {
            return err(
                n.line,
                format!("virtual_server_group {name} is defined twice"),
            );
        }
        groups.push((name, group(n, name)?));
    }
    let globals = Globals::of(&top, &mut imported.notes, &shown)?;
    if let Some((line, t)) = globals.timeouts {
        imported.lines.push(Place::line(line));
        imported.requests.push(Request::SetTimeouts(t));
    }
    // The VIPs keepalived's VRRP moves: served only while it holds them here (a reload
    // starts with a clear, which forgets them).
    let mut follow = Vec::new();
    let mut follow_line = 0;
    let mut instances: Vec<(String, Vec<IpAddr>)> = Vec::new();
    for n in top.iter().filter(|n| n.key == "vrrp_instance") {
        instances.push((n.args.join(" "), Vec::new()));
        for c in n
            .block
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|c| c.key == "virtual_ipaddress" || c.key == "virtual_ipaddress_excluded")
        {
            for a in c.block.as_deref().unwrap_or_default() {
                follow_line = if follow_line == 0 {
                    a.line
                } else {
                    follow_line
                };
                let word = a.key.split('/').next().unwrap_or_default();
                match word.parse::<IpAddr>() {
                    Ok(ip) => {
                        if !follow.contains(&ip) {
                            follow.push(ip);
                        }
                        if let Some((_, v)) = instances.last_mut() {
                            v.push(ip);
                        }
                    }
                    Err(_) => {
                        return err(
                            a.line,
                            format!(
                                "vrrp_instance {}: {}: not an address",
                                n.args.join(" "),
                                a.key
                            ),
                        )
                    }
                }
            }
        }
    }
    // The sync daemon's role follows the VRRP instance named: master while this host
    // holds its addresses.
    if let Some((line, d)) = globals.sync.clone() {
        let vips = match &d.instance {
            Some(name) => match instances.iter().find(|(n, _)| n == name) {
                Some((_, v)) => v.clone(),
                None => {
                    return err(
                        line,
                        format!("lvs_sync_daemon {} {name}: no vrrp_instance {name} in this configuration (the daemon's role follows it)", d.settings.iface),
                    )
                }
            },
            None => Vec::new(),
        };
        imported.lines.push(Place::line(line));
        imported.requests.push(Request::SyncDaemon {
            settings: d.settings,
            instance: d.instance,
            vips,
        });
    }

    let mut keys: Vec<ServiceKey> = Vec::new();
    let mut skipped: Vec<&str> = Vec::new();
    for n in &top {
        match n.key.as_str() {
            "virtual_server" => {
                let vips = match n.args.as_slice() {
                    [g, name] if g == "group" => {
                        let Some((_, vips)) = groups.iter().find(|(g, _)| g == name) else {
                            return err(
                                n.line,
                                format!("virtual_server group {name}: no virtual_server_group {name} is defined"),
                            );
                        };
                        vips.clone()
                    }
                    [f, ..] if f == "fwmark" => {
                        return err(
                            n.line,
                            format!(
                                "virtual_server {}: firewall-mark services are not supported: the mark is set by netfilter, which runs after XDP; give the VIP and port (or a virtual_server_group of them)",
                                n.args.join(" ")
                            ),
                        )
                    }
                    args => vec![addr_port(n, args)?],
                };
                for (vip, port) in vips {
                    let (key, reqs) = virtual_server(n, vip, port, &globals)?;
                    if keys.contains(&key) {
                        return err(n.line, format!("virtual_server {key} is defined twice"));
                    }
                    keys.push(key);
                    for (line, r) in reqs {
                        imported.lines.push(Place::line(line));
                        imported.requests.push(r);
                    }
                }
            }
            // Read by Globals.
            "virtual_server_group" | "SSL" | "track_file" | "vrrp_track_file" => {}
            k if SKIPPED.contains(&k) => {
                if !skipped.contains(&k) {
                    skipped.push(k);
                    imported.notes.push(format!(
                        "{}: {k} skipped (xdpvs takes the LVS sections: virtual_server and virtual_server_group{})",
                        shown(n.line),
                        if k == "vrrp_instance" {
                            "; keepalived's VRRP runs it, and xdpvs serves its virtual_ipaddress only while this host holds them"
                        } else if k.starts_with("vrrp") {
                            "; keepalived's VRRP runs it"
                        } else {
                            ""
                        }
                    ));
                }
            }
            k => {
                return err(
                    n.line,
                    format!("'{k}' is not a keepalived section xdpvs knows"),
                )
            }
        }
    }
    if !follow.is_empty() {
        imported.lines.push(Place::line(follow_line));
        imported.requests.push(Request::Follow { vips: follow });
    }
    Ok(imported)
}

/// The VIPs and ports of a `virtual_server_group` block: `ADDR PORT`, ranges
/// `A.B.C.D-E`, `A.B.C.D-A.B.C.E` and `A.B.C.D/NN` (IPv6: the last group's range, in
/// hex, or a prefix), at most [`GROUP_MAX`] addresses in all.
fn group(n: &Node, name: &str) -> Result<Vec<(IpAddr, u16)>, KeepalivedError> {
    let mut out = Vec::new();
    for c in block(n)? {
        no_block(c)?;
        let what = format!(
            "virtual_server_group {name}: {} {}",
            c.key,
            c.args.join(" ")
        );
        if c.key == "fwmark" {
            return err(
                c.line,
                format!("{what}: firewall marks are set by netfilter, which runs after XDP: list the VIPs and ports"),
            );
        }
        let port = match c.args.as_slice() {
            [p] => p.parse::<u16>().ok().filter(|&p| p != 0),
            _ => None,
        };
        let Some(port) = port else {
            return err(
                c.line,
                format!(
                    "{what}: give a port from 1 to 65535 (all-ports services are not supported)"
                ),
            );
        };
        let addrs = match range(&c.key) {
            Ok(a) => a,
            Err(why) => return err(c.line, format!("{what}: {why}")),
        };
        if out.len() + addrs.len() > GROUP_MAX {
            return err(
                c.line,
                format!("{what}: a group holds at most {GROUP_MAX} addresses"),
            );
        }
        out.extend(addrs.into_iter().map(|a| (a, port)));
    }
    Ok(out)
}

/// Addresses a `virtual_server_group` expands to at most.
const GROUP_MAX: usize = 1024;

/// The addresses of `a`, `a-b` (the last byte, or for IPv6 the last group in hex, up to
/// b; or a whole address b) or `a/nn`, in order.
fn range(s: &str) -> Result<Vec<IpAddr>, String> {
    const BAD: &str = "not an address, a range (198.18.0.1-10, 198.18.0.250-198.18.1.10) or a prefix (198.18.0.8/29)";
    let widen = |a: IpAddr| -> u128 {
        match a {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        }
    };
    let back = |v6: bool, x: u128| -> IpAddr {
        if v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(x))
        } else {
            IpAddr::V4(Ipv4Addr::from(x as u32))
        }
    };
    let parse = |a: &str| a.parse::<IpAddr>().map_err(|_| BAD.to_string());
    let (first, last) = if let Some((a, b)) = s.split_once('-') {
        let a = parse(a)?;
        let last = match b.parse::<IpAddr>() {
            Ok(b) if b.is_ipv6() == a.is_ipv6() => widen(b),
            Ok(_) => return Err("the two ends are of different families".into()),
            Err(_) if a.is_ipv4() => {
                (widen(a) & !0xff) | u128::from(b.parse::<u8>().map_err(|_| BAD.to_string())?)
            }
            Err(_) => {
                let g = u16::from_str_radix(b, 16).map_err(|_| BAD.to_string())?;
                (widen(a) & !0xffff) | u128::from(g)
            }
        };
        (a, last)
    } else if let Some((a, p)) = s.split_once('/') {
        let a = parse(a)?;
        let bits = if a.is_ipv4() { 32 } else { 128 };
        let p: u32 = p.parse().ok().filter(|&p| p <= bits).ok_or(BAD)?;
        let host = if p == bits {
            0
        } else {
            (1u128 << (bits - p)) - 1
        };
        let net = widen(a) & !host;
        (back(a.is_ipv6(), net), net | host)
    } else {
        let a = parse(s)?;
        (a, widen(a))
    };
    let from = widen(first);
    if last < from {
        return Err("the range ends before it starts".into());
    }
    if last - from >= GROUP_MAX as u128 {
        return Err(format!("a group holds at most {GROUP_MAX} addresses"));
    }
    Ok((from..=last).map(|x| back(first.is_ipv6(), x)).collect())
}

fn one_arg<'a>(n: &'a Node, what: &str) -> Result<&'a str, KeepalivedError> {
    match n.args.as_slice() {
        [a] => Ok(a),
        _ => err(n.line, format!("{} takes one {what}", n.key)),
    }
}

fn no_block(n: &Node) -> Result<(), KeepalivedError> {
    if n.block.is_some() {
        return err(n.line, format!("{} takes no block", n.key));
    }
    Ok(())
}

fn block(n: &Node) -> Result<&[Node], KeepalivedError> {
    n.block.as_deref().ok_or_else(|| KeepalivedError {
        file: None,
        line: n.line,
        message: format!("{} needs a block {{ ... }}", n.key),
    })
}

fn number<T: std::str::FromStr>(n: &Node, what: &str) -> Result<T, KeepalivedError> {
    no_block(n)?;
    one_arg(n, what)?.parse().or_else(|_| {
        err(
            n.line,
            format!("{} {}: not a {what}", n.key, n.args.join(" ")),
        )
    })
}

fn seconds(n: &Node) -> Result<Millis, KeepalivedError> {
    no_block(n)?;
    Millis::parse_secs(one_arg(n, "time in seconds")?)
        .or_else(|e| err(n.line, format!("{}: {e}", n.key)))
}

fn addr_port(n: &Node, args: &[String]) -> Result<(IpAddr, u16), KeepalivedError> {
    match args {
        [a, p] => {
            let addr = a.parse::<IpAddr>().or_else(|_| {
                err(
                    n.line,
                    format!("{} {a}: xdpvs takes an IPv4 or IPv6 address here", n.key),
                )
            })?;
            let port = p.parse::<u16>().ok().filter(|&p| p != 0).map_or_else(
                || {
                    err(
                        n.line,
                        format!("{} {a} {p}: not a port from 1 to 65535", n.key),
                    )
                },
                Ok,
            )?;
            Ok((addr, port))
        }
        _ => err(n.line, format!("{} takes an address and a port", n.key)),
    }
}

/// What sections outside `virtual_server` give its checks: `track_file` blocks (for
/// `FILE_CHECK`), `global_defs`' `script_user` (the default user of scripts), the `SSL`
/// block (for `SSL_GET`).
#[derive(Debug, Clone, Default)]
struct Globals {
    /// `track_file NAME { file PATH; weight N [reverse] }`, by name.
    track_files: Vec<(String, FileCheck)>,
    /// `script_user USER [GROUP]`.
    script_user: Option<String>,
    /// `lvs_timeouts [tcp N] [tcpfin N] [udp N]`, and its line.
    timeouts: Option<(usize, crate::control::proto::TimeoutSet)>,
    /// `lvs_sync_daemon`, and its line.
    sync: Option<(usize, LvsSyncDaemon)>,
}

impl Globals {
    fn of(
        top: &[Node],
        notes: &mut Vec<String>,
        shown: &dyn Fn(usize) -> String,
    ) -> Result<Globals, KeepalivedError> {
        let mut g = Globals::default();
        for n in top {
            match n.key.as_str() {
                "global_defs" => {
                    for c in n.block.as_deref().unwrap_or_default() {
                        match c.key.as_str() {
                            "script_user" if !c.args.is_empty() => {
                                g.script_user = Some(c.args.join(":"));
                            }
                            "enable_script_security" => notes.push(format!(
                                "{}: enable_script_security: xdpvs always refuses scripts that users other than root (or their own user) can change",
                                shown(c.line)
                            )),
                            "lvs_timeouts" => g.timeouts = Some((c.line, lvs_timeouts(c)?)),
                            "lvs_sync_daemon" => {
                                g.sync = Some((c.line, lvs_sync_daemon(c)?));
                                notes.push(format!(
                                    "{}: lvs_sync_daemon: xdpvs runs the sync daemon, its role following the VRRP instance named (master while this host holds its addresses; both roles when none is named); keepalived's VRRP process must not read this line (it would drive kernel IPVS's sync daemon): keep it in a file only xdpvs reads",
                                    shown(c.line)
                                ));
                            }
                            "lvs_notify_fifo" | "lvs_notify_fifo_script" => {
                                return err(c.line, format!("{} is not supported: xdpvs writes no FIFO of checker events; run notify_up/notify_down and quorum_up/quorum_down scripts instead", c.key))
                            }
                            "notify_fifo" | "notify_fifo_script" => notes.push(format!(
                                "{}: {}: keepalived's VRRP events still go there; xdpvs's checker events do not (it runs notify_up/notify_down and quorum_up/quorum_down scripts)",
                                shown(c.line), c.key
                            )),
                            _ => {}
                        }
                    }
                }
                "track_file" | "vrrp_track_file" => {
                    let name = one_arg(n, "name")?;
                    let mut f = FileCheck {
                        path: String::new(),
                        weight: 1,
                        reverse: false,
                        dynamic: false,
                    };
                    for c in block(n)? {
                        match c.key.as_str() {
                            "file" => f.path = one_arg(c, "file")?.to_string(),
                            "weight" => (f.weight, f.reverse) = file_weight(c)?,
                            // Creating the file is left to the operator.
                            "init_file" => {
                                return err(c.line, format!("track_file {name}: init_file is not supported: xdpvs reads the file and does not create it; create it before starting"))
                            }
                            k => return err(c.line, format!("track_file {name}: {k} is not supported")),
                        }
                    }
                    if !f.path.starts_with('/') {
                        return err(
                            n.line,
                            format!("track_file {name}: needs file with an absolute path"),
                        );
                    }
                    g.track_files.push((name.to_string(), f));
                }
                "SSL" => {
                    for c in block(n)? {
                        match c.key.as_str() {
                            "ca" => notes.push(format!(
                                "{}: SSL ca taken without effect, as keepalived (which loads it but does not verify the real servers' certificates); xdpvs verifies with --check https:...,ca=FILE",
                                shown(c.line)
                            )),
                            k => return err(c.line, format!("SSL {k}: client certificates for SSL_GET are not supported: xdpvs's TLS checks send none (remove the SSL block or its {k})")),
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(g)
    }

    /// A script's user: its own, else `script_user`.
    fn script(&self, n: &Node) -> Result<Script, KeepalivedError> {
        no_block(n)?;
        let Some((command, user)) = n.args.split_first() else {
            return err(n.line, format!("{} takes a script", n.key));
        };
        let user = if user.is_empty() {
            self.script_user.clone()
        } else {
            Some(user.join(":").replace("::", ":"))
        };
        Ok(Script {
            command: command.clone(),
            user,
        })
    }
}

/// keepalived's `lvs_sync_daemon`: the daemon's settings, and the VRRP instance its role
/// follows.
#[derive(Debug, Clone)]
struct LvsSyncDaemon {
    settings: crate::control::proto::DaemonSettings,
    instance: Option<String>,
}

/// `lvs_sync_daemon IFACE [[inst] INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group
/// ADDR]`: keepalived's words and defaults.
fn lvs_sync_daemon(c: &Node) -> Result<LvsSyncDaemon, KeepalivedError> {
    no_block(c)?;
    let bad = |why: &str| KeepalivedError {
        file: None,
        line: c.line,
        message: format!("lvs_sync_daemon {}: {why}", c.args.join(" ")),
    };
    let Some((iface, rest)) = c.args.split_first() else {
        return Err(bad("give the interface"));
    };
    let (mut syncid, mut maxlen, mut port, mut ttl) = (0u8, 1472u16, 8848u16, 1u8);
    let mut group = std::net::Ipv4Addr::new(224, 0, 0, 81);
    let mut words = rest.iter();
    let mut instance = None;
    while let Some(w) = words.next() {
        // The VRRP instance whose role the daemon follows (`inst` optional).
        if !["id", "maxlen", "port", "ttl", "group", "inst"].contains(&w.as_str()) {
            if instance.replace(w.clone()).is_some() {
                return Err(bad(&format!("{w}: one VRRP instance only")));
            }
            continue;
        }
        let value = words.next().map(String::as_str).unwrap_or_default();
        match w.as_str() {
            "id" => syncid = value.parse().map_err(|_| bad("id: 0 to 255"))?,
            "maxlen" => {
                maxlen = value
                    .parse()
                    .ok()
                    .filter(|&m: &u16| m >= 80)
                    .ok_or_else(|| bad("maxlen: 80 to 65507"))?
            }
            "port" => port = value.parse().map_err(|_| bad("port: 1 to 65535"))?,
            "ttl" => ttl = value.parse().map_err(|_| bad("ttl: 1 to 255"))?,
            "group" => {
                group = value
                    .parse()
                    .map_err(|_| bad("group: an IPv4 multicast address (xdpvs's daemon is IPv4)"))?
            }
            "inst" if instance.replace(value.to_string()).is_some() => {
                return Err(bad(&format!("{value}: one VRRP instance only")));
            }
            _ => {}
        }
    }
    Ok(LvsSyncDaemon {
        settings: crate::control::proto::DaemonSettings {
            iface: iface.clone(),
            syncid,
            maxlen,
            group,
            port,
            ttl,
        },
        instance,
    })
}

/// `lvs_timeouts [tcp N] [tcpfin N] [udp N]`: at least one; those not given stay.
fn lvs_timeouts(c: &Node) -> Result<crate::control::proto::TimeoutSet, KeepalivedError> {
    no_block(c)?;
    let mut t = crate::control::proto::TimeoutSet {
        tcp: 0,
        tcpfin: 0,
        udp: 0,
    };
    let bad = || {
        err(
            c.line,
            format!(
                "lvs_timeouts {}: give tcp, tcpfin and udp, each with a number of seconds from 1",
                c.args.join(" ")
            ),
        )
    };
    let mut words = c.args.iter();
    while let Some(k) = words.next() {
        let Some(v) = words
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&v| v > 0)
        else {
            return bad();
        };
        match k.as_str() {
            "tcp" => t.tcp = v,
            "tcpfin" => t.tcpfin = v,
            "udp" => t.udp = v,
            _ => return bad(),
        }
    }
    if c.args.is_empty() {
        return bad();
    }
    Ok(t)
}

/// `weight N [reverse]` of a track_file or FILE_CHECK.
fn file_weight(c: &Node) -> Result<(i32, bool), KeepalivedError> {
    no_block(c)?;
    let bad = || KeepalivedError {
        file: None,
        line: c.line,
        message: format!(
            "weight {}: a number from -2147483647 to 2147483647, then reverse or nothing",
            c.args.join(" ")
        ),
    };
    let (w, reverse) = match c.args.as_slice() {
        [w] => (w, false),
        [w, r] if r == "reverse" => (w, true),
        _ => return Err(bad()),
    };
    let w: i32 = w.parse().map_err(|_| bad())?;
    if w == i32::MIN {
        return Err(bad());
    }
    Ok((w, reverse))
}

/// What a virtual_server block sets for its checks.
#[derive(Debug, Clone)]
struct CheckDefaults {
    delay_loop: Millis,
    virtualhost: Option<String>,
    inhibit: bool,
    /// keepalived 2's checker defaults, given in the virtual_server or real_server block.
    retry: Option<u32>,
    retry_delay: Option<Millis>,
    timeout: Option<Millis>,
    alpha: bool,
    /// xdpvs's own `xdpvs_forwarding_check`.
    forwarding: bool,
}

impl CheckDefaults {
    /// Takes `c` if it is a checker default (`retry`, `delay_before_retry`,
    /// `connect_timeout`, `delay_loop`, `virtualhost`, `warmup`, `smtp_alert`, `alpha`,
    /// `xdpvs_forwarding_check`): whether it was one.
    fn take(&mut self, c: &Node) -> Result<bool, KeepalivedError> {
        match c.key.as_str() {
            "delay_loop" => self.delay_loop = seconds(c)?,
            "retry" => self.retry = Some(number(c, "number of retries")?),
            "delay_before_retry" => self.retry_delay = Some(seconds(c)?),
            "connect_timeout" => self.timeout = Some(seconds(c)?),
            "virtualhost" => {
                no_block(c)?;
                self.virtualhost = Some(one_arg(c, "host name")?.to_string());
            }
            // A random delay before the first check, to spread keepalived's; xdpvs's
            // checks start spread over a second. And e-mail alerts, which xdpvs does not
            // send.
            "warmup" => {
                seconds(c)?;
            }
            "smtp_alert" => no_block(c)?,
            "alpha" => self.alpha = boolean(c)?,
            "xdpvs_forwarding_check" => self.forwarding = boolean(c)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A keyword that is on alone or with `true`/`on`/`yes`, off with `false`/`off`/`no`.
fn boolean(c: &Node) -> Result<bool, KeepalivedError> {
    no_block(c)?;
    match c.args.as_slice() {
        [] => Ok(true),
        [w] if ["true", "on", "yes"].contains(&w.as_str()) => Ok(true),
        [w] if ["false", "off", "no"].contains(&w.as_str()) => Ok(false),
        _ => err(
            c.line,
            format!(
                "{} {}: give nothing, true or false",
                c.key,
                c.args.join(" ")
            ),
        ),
    }
}

fn virtual_server(
    n: &Node,
    vip: IpAddr,
    port: u16,
    globals: &Globals,
) -> Result<(ServiceKey, Vec<(usize, Request)>), KeepalivedError> {
    let mut proto = Protocol::Tcp;
    let mut scheduler = SchedKind::default();
    let mut timeout: Option<u32> = None;
    let mut granularity: Option<u8> = None;
    let mut sorry: Option<IpAddr> = None;
    let mut quorum = Quorum::default();
    let mut defaults = CheckDefaults {
        // keepalived's default delay_loop.
        delay_loop: Millis::secs(60),
        virtualhost: None,
        inhibit: false,
        retry: None,
        retry_delay: None,
        timeout: None,
        alpha: false,
        forwarding: false,
    };
    let mut reals = Vec::new();
    // keepalived's default method is NAT.
    let mut method = Method::Masq;
    let mut flag_words: Vec<&str> = Vec::new();
    let name = format!("virtual_server {vip} {port}");
    for c in block(n)? {
        let refuse = |why: &str| err(c.line, format!("{name}: {} is not supported{why}", c.key));
        if defaults.take(c)? {
            continue;
        }
        match c.key.as_str() {
            "lb_algo" | "lvs_sched" => {
                no_block(c)?;
                let s = one_arg(c, "scheduler")?;
                scheduler = s.parse().or_else(|_| {
                    err(
                        c.line,
                        format!("{name}: {} {s}: xdpvs schedules with rr, wrr, lc, wlc, sh, mh, dh, sed, nq, lblc, lblcr, fo, ovf or twos", c.key),
                    )
                })?;
            }
            "lb_kind" | "lvs_method" => method = lvs_method(c, &name)?,
            "persistence_timeout" => {
                // keepalived: without a value, 6 minutes.
                let t: u32 = if c.args.is_empty() {
                    360
                } else {
                    number(c, "number of seconds")?
                };
                timeout = (t > 0).then_some(t);
            }
            "persistence_granularity" => {
                no_block(c)?;
                let m = one_arg(c, "netmask")?;
                // A netmask for IPv4, a prefix length (1 to 128) for IPv6, as keepalived.
                let p = if vip.is_ipv6() {
                    m.parse::<u8>().map_err(|_| ()).and_then(|p| {
                        Persistence::with_prefix(Duration::from_secs(1), p).map_err(|_| ())
                    })
                } else {
                    m.parse::<Ipv4Addr>().map_err(|_| ()).and_then(|mask| {
                        Persistence::new(Duration::from_secs(1), mask).map_err(|_| ())
                    })
                };
                let Ok(p) = p else {
                    let want = if vip.is_ipv6() {
                        "not a prefix length from 1 to 128 (an IPv6 service's granularity)"
                    } else {
                        "not a contiguous netmask like 255.255.255.0"
                    };
                    return err(c.line, format!("{name}: persistence_granularity {m}: {want}"));
                };
                granularity = Some(p.prefix_len);
            }
            "protocol" => {
                no_block(c)?;
                proto = match one_arg(c, "protocol")? {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    p => return err(c.line, format!("{name}: protocol {p}: xdpvs serves TCP and UDP")),
                };
            }
            "inhibit_on_failure" => defaults.inhibit = boolean(c)?,
            "sorry_server" => {
                no_block(c)?;
                let (a, p) = match c.args.as_slice() {
                    [a] => (addr_port(c, &[a.clone(), port.to_string()])?.0, port),
                    args => addr_port(c, args)?,
                };
                if p != port {
                    return err(
                        c.line,
                        format!("{name}: sorry_server {a} {p}: xdpvs reaches a sorry server by direct routing, which cannot map ports: it must serve on {port}"),
                    );
                }
                if a.is_ipv6() != vip.is_ipv6() {
                    return err(c.line, format!("{name}: sorry_server {a}: {}", family_clash(a, vip)));
                }
                sorry = Some(a);
            }
            // keepalived keeps an unneeded sorry server at weight 0 instead of removing
            // it; xdpvs removes it and lets its connections finish (as -d does), which
            // keepalived's inhibited sorry server also does: nothing to change.
            "sorry_server_inhibit" => {
                boolean(c)?;
            }
            "real_server" => reals.push(c),
            "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
            | "mh-fallback" => {
                no_block(c)?;
                flag_words.push(c.key.as_str());
            }
            "ops" => return refuse(": one-packet scheduling schedules every UDP datagram on its own; xdpvs schedules UDP per flow (client address and port), kept until the UDP timeout (ipvsadm --set); use a short UDP timeout for DNS-like services"),
            "ip_family" => {
                no_block(c)?;
                let family = match one_arg(c, "family")? {
                    "inet" => false,
                    "inet6" => true,
                    f => return err(c.line, format!("{name}: ip_family {f}: inet or inet6")),
                };
                if family != vip.is_ipv6() {
                    return err(
                        c.line,
                        format!("{name}: ip_family {}: the VIP is of the other family (xdpvs serves a VIP with servers of its own family)", c.args.join(" ")),
                    );
                }
            }
            // IPVS's hashed flag and an SNMP name change nothing xdpvs does.
            "hashed" | "snmp_name" => {}
            "sorry_server_lvs_method" | "sorry_server_lb_kind" => {
                if lvs_method(c, &name)? != Method::Route {
                    return refuse(": xdpvs reaches a sorry server by direct routing (DR)");
                }
            }
            "ha_suspend" => {
                return refuse(": it suspends the checks while this director is VRRP backup, and xdpvs does not follow VRRP; remove it (the checks then run on both directors)")
            }
            "persistence_engine" => {
                return refuse(": xdpvs has no persistence engine (IPVS's SIP engine); persistence is by client address (persistence_timeout)")
            }
            "quorum" => {
                quorum.quorum = number(c, "total weight")?;
            }
            "hysteresis" => quorum.hysteresis = number(c, "weight")?,
            "quorum_up" => quorum.up = Some(globals.script(c)?),
            "quorum_down" => quorum.down = Some(globals.script(c)?),
            "omega" => quorum.omega = boolean(c)?,
            _ => return refuse(""),
        }
    }
    let key = ServiceKey { proto, vip, port };
    let persistence = match timeout {
        Some(t) => Some(
            Persistence::with_prefix(
                Duration::from_secs(u64::from(t)),
                granularity.unwrap_or(xdpvs_sched::model::family_bits(vip)),
            )
            .or_else(|e| err(n.line, format!("{name}: {e}")))?,
        ),
        None => None,
    };
    // As keepalived: a scheduler's own flag with another scheduler is ignored.
    let flags = SchedFlags(
        flag_words
            .iter()
            .filter_map(|w| SchedFlags::parse(w, scheduler).ok())
            .fold(0, |bits, f| bits | f.0),
    );
    let mut out = vec![(
        n.line,
        Request::AddService {
            key,
            scheduler,
            persistence,
            sorry,
            flags,
            quorum,
        },
    )];
    let mut seen = Vec::new();
    for r in reals {
        let (addr, rport, rmethod, weight, check) =
            real_server(r, &name, vip, port, method, &defaults, globals)?;
        if seen.contains(&addr) {
            return err(
                r.line,
                format!("{name}: real_server {addr} is listed twice"),
            );
        }
        seen.push(addr);
        out.push((
            r.line,
            Request::AddReal {
                key,
                addr,
                // 0: the service's port, as the command line says it.
                port: if rport == port { 0 } else { rport },
                method: rmethod,
                weight,
                check,
            },
        ));
    }
    Ok((key, out))
}

/// Why a real or sorry server at `addr` cannot serve a VIP of the other family.
fn family_clash(addr: IpAddr, vip: IpAddr) -> String {
    use xdpvs_sched::model::family_name;
    format!(
        "an {} server cannot serve the {} virtual server {vip}: xdpvs serves a VIP with servers of its own address family (IPVS mixes families for tunnels only; xdpvs does not)",
        family_name(addr),
        family_name(vip)
    )
}

type RealServer = (IpAddr, u16, Method, u16, Option<CheckSpec>);

fn real_server(
    n: &Node,
    vs: &str,
    vip: IpAddr,
    vport: u16,
    mut method: Method,
    defaults: &CheckDefaults,
    globals: &Globals,
) -> Result<RealServer, KeepalivedError> {
    let (addr, port) = match n.args.as_slice() {
        // keepalived: without a port, the virtual server's.
        [a] => addr_port(n, &[a.clone(), vport.to_string()])?,
        args => addr_port(n, args)?,
    };
    let name = format!("{vs}: real_server {addr} {port}");
    if addr.is_ipv6() != vip.is_ipv6() {
        return err(n.line, format!("{name}: {}", family_clash(addr, vip)));
    }
    let mut weight = 1u16;
    let mut inhibit = defaults.inhibit;
    let mut check: Option<CheckSpec> = None;
    let (mut notify_up, mut notify_down) = (None, None);
    // Its own checker defaults, wherever they stand in the block, for its checker.
    let mut own = defaults.clone();
    let mut rest = Vec::new();
    for c in block(n)? {
        if !own.take(c)? {
            rest.push(c);
        }
    }
    let defaults = &own;
    for c in rest {
        match c.key.as_str() {
            "weight" => weight = number(c, "weight from 0 to 65535")?,
            // keepalived 2: a real server's own forwarding method.
            "lb_kind" | "lvs_method" => method = lvs_method(c, &name)?,
            "inhibit_on_failure" => inhibit = boolean(c)?,
            "notify_up" => notify_up = Some(globals.script(c)?),
            "notify_down" => notify_down = Some(globals.script(c)?),
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "PING_CHECK" | "SMTP_CHECK" | "DNS_CHECK"
            | "UDP_CHECK" | "MISC_CHECK" | "FILE_CHECK" => {
                let one = checker(c, &name, defaults, globals)?;
                check = Some(match check {
                    None => one,
                    Some(first) => joined(first, one, c, &name, (addr, port))?,
                });
            }
            "BFD_CHECK" => {
                return err(
                    c.line,
                    format!("{name}: BFD_CHECK is not supported: xdpvs runs no BFD sessions (keepalived's bfd_instance); use PING_CHECK or TCP_CHECK"),
                )
            }
            "snmp_name" => {}
            "uthreshold" | "lthreshold" => {
                return err(
                    c.line,
                    format!(
                        "{name}: {}: connection thresholds (ipvsadm -x/-y) are not supported",
                        c.key
                    ),
                )
            }
            k => return err(c.line, format!("{name}: {k} is not supported")),
        }
    }
    if port != vport && !method.maps_ports() {
        return err(
            n.line,
            format!(
                "{name}: {} cannot map ports: the real server must serve on {vport} (or use lb_kind NAT)",
                if matches!(method, Method::Tunnel(_)) {
                    "tunnelling"
                } else {
                    "direct routing"
                }
            ),
        );
    }
    if check.is_none() && (notify_up.is_some() || notify_down.is_some()) {
        return err(
            n.line,
            format!("{name}: notify_up and notify_down run when a checker moves the real server: give it a checker"),
        );
    }
    if let Some(c) = &mut check {
        c.on_failure = if inhibit {
            OnFailure::Inhibit
        } else {
            OnFailure::Remove
        };
        c.notify_up = notify_up;
        c.notify_down = notify_down;
        if c.forwarding && !c.probes().any(Probe::is_tcp) {
            return err(
                n.line,
                format!("{name}: xdpvs_forwarding_check goes with TCP_CHECK, HTTP_GET, SSL_GET or SMTP_CHECK (a SYN to the VIP's port)"),
            );
        }
    }
    Ok((addr, port, method, weight, check))
}

/// Two checkers of one real server as one check that runs both every round (the
/// shortest interval and retry delay, the longest timeout, the fewest retries); each
/// connects where its own `connect_ip`/`connect_port` say (the real server at `addr`,
/// `rport` by default), all from one place.
fn joined(
    mut first: CheckSpec,
    more: CheckSpec,
    c: &Node,
    name: &str,
    (addr, rport): (IpAddr, u16),
) -> Result<CheckSpec, KeepalivedError> {
    // MISC_CHECK and FILE_CHECK connect nowhere: the others' options stand. Each
    // checker may connect to an address and port of its own; where they come from is
    // one for all.
    let connects = |s: &CheckSpec| {
        s.probes()
            .any(|p| !matches!(p, Probe::Misc(_) | Probe::File(_)))
    };
    if connects(&first) && connects(&more) {
        let same = first.bindto == more.bindto
            && first.bind_port == more.bind_port
            && first.bind_if == more.bind_if;
        if !same {
            return err(
                c.line,
                format!("{name}: {}: the checkers of a real server leave from one place in xdpvs (bindto, bind_port and bind_if the same in each, or left out)", c.key),
            );
        }
    }
    // Where `more` connects, said only where it is not where `first` does.
    let (mut port, mut ip) = (None, None);
    if connects(&first) {
        let (to_port, to_ip) = (more.port.unwrap_or(rport), more.connect_ip.unwrap_or(addr));
        port = (to_port != first.port.unwrap_or(rport)).then_some(to_port);
        ip = (to_ip != first.connect_ip.unwrap_or(addr)).then_some(to_ip);
    } else {
        first.connect_ip = more.connect_ip;
        first.bindto = more.bindto;
        first.bind_port = more.bind_port;
        first.bind_if.clone_from(&more.bind_if);
        first.port = more.port;
    }
    first.interval = first.interval.min(more.interval);
    first.retry_delay = first.retry_delay.min(more.retry_delay);
    first.timeout = first.timeout.max(more.timeout);
    first.fall = first.fall.min(more.fall);
    first.alpha |= more.alpha;
    first.forwarding |= more.forwarding;
    first.also.push(crate::health::spec::Also {
        probe: more.probe,
        port,
        ip,
    });
    first.also.extend(more.also.into_iter().map(|mut a| {
        a.port = a.port.or(port);
        a.ip = a.ip.or(ip);
        a
    }));
    Ok(first)
}

/// `lb_kind`/`lvs_method`: `DR`, `NAT` or `TUN [type ipip|gue|gre] [port N]
/// [nocsum|csum|remcsum]` (keepalived's words; its rules for which go together).
fn lvs_method(c: &Node, name: &str) -> Result<Method, KeepalivedError> {
    no_block(c)?;
    let bad = |why: String| KeepalivedError {
        file: None,
        line: c.line,
        message: format!("{name}: {} {}: {why}", c.key, c.args.join(" ")),
    };
    let (kind, rest) = match c.args.split_first() {
        Some((k, rest)) => (k.as_str(), rest),
        None => return err(c.line, format!("{} takes a forwarding method", c.key)),
    };
    match kind {
        "DR" | "NAT" if !rest.is_empty() => {
            return Err(bad(format!("{kind} takes no tunnel options")))
        }
        "DR" => return Ok(Method::Route),
        "NAT" => return Ok(Method::Masq),
        "TUN" => {}
        k => {
            return Err(bad(format!(
                "unknown forwarding method {k}: use DR, NAT or TUN"
            )))
        }
    }
    let mut tun = Tunnel::IPIP;
    let mut words = rest.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "type" => {
                let t = words.next().map(String::as_str).unwrap_or_default();
                tun.kind = TunKind::parse(t).ok_or_else(|| {
                    bad(format!("unknown tunnel type {t:?}: use ipip, gue or gre"))
                })?;
            }
            "port" => {
                let p = words.next().map(String::as_str).unwrap_or_default();
                tun.port = match p.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => {
                        return Err(bad(format!(
                            "invalid gue tunnel port {p:?}: use 1 to 65535"
                        )))
                    }
                };
            }
            "nocsum" => tun.csum = TunCsum::No,
            "csum" => tun.csum = TunCsum::Csum,
            "remcsum" => tun.csum = TunCsum::Remote,
            o => return Err(bad(format!("invalid tunnel option {o}"))),
        }
    }
    tun.check().map_err(|e| bad(e.to_string()))?;
    Ok(Method::Tunnel(tun))
}

fn checker(
    n: &Node,
    rs: &str,
    defaults: &CheckDefaults,
    globals: &Globals,
) -> Result<CheckSpec, KeepalivedError> {
    let kind = n.key.as_str();
    let name = format!("{rs}: {kind}");
    let mut spec = CheckSpec::new(Probe::Tcp);
    spec.interval = defaults.delay_loop;
    spec.alpha = defaults.alpha;
    spec.forwarding = defaults.forwarding;
    if let Some(t) = defaults.timeout {
        spec.timeout = t;
    }
    // keepalived's defaults by checker: delay_before_retry 3 s for HTTP_GET and
    // SSL_GET, delay_loop for DNS_CHECK, 1 s otherwise; retry 3 for DNS_CHECK, 0 for
    // MISC_CHECK, 1 otherwise.
    let (mut retry_delay, mut retry) = match kind {
        "HTTP_GET" | "SSL_GET" => (Millis::secs(3), 1),
        "DNS_CHECK" => (defaults.delay_loop, 3),
        "MISC_CHECK" => (Millis::secs(1), 0),
        _ => (Millis::secs(1), 1),
    };
    retry_delay = defaults.retry_delay.unwrap_or(retry_delay);
    retry = defaults.retry.unwrap_or(retry);
    let tls = kind == "SSL_GET";
    let mut http = HttpCheck {
        tls,
        host: defaults.virtualhost.clone(),
        ..HttpCheck::get("/")
    };
    let mut urls: Vec<HttpCheck> = Vec::new();
    let mut url_nodes: Vec<&Node> = Vec::new();
    let mut enable_sni = false;
    let mut sni_name: Option<String> = None;
    let mut helo = DEFAULT_HELO.to_string();
    let (mut dns_q, mut dns_name) = (DEFAULT_DNS_TYPE, String::new());
    let mut udp = UdpCheck {
        payload: None,
        require_reply: false,
        reply: None,
        min: 0,
        max: DEFAULT_UDP_MAX,
    };
    let mut misc = MiscCheck {
        command: String::new(),
        timeout: None,
        dynamic: false,
        user: globals.script_user.clone(),
    };
    let mut track: Option<(&Node, FileCheck)> = None;
    let mut file_weight_given: Option<(i32, bool)> = None;
    let mut file_dynamic = false;
    // keepalived: MISC_CHECK and FILE_CHECK take no connection options.
    let connects = !matches!(kind, "MISC_CHECK" | "FILE_CHECK");
    for c in block(n)? {
        let k = c.key.as_str();
        match (kind, k) {
            (_, "connect_port") if connects && kind != "PING_CHECK" => {
                spec.port = Some(number(c, "port")?)
            }
            (_, "connect_ip") if connects => {
                no_block(c)?;
                let a = one_arg(c, "address")?;
                spec.connect_ip = Some(a.parse().or_else(|_| err(c.line, format!("{name}: connect_ip {a}: not an address")))?);
            }
            (_, "bindto") if connects => {
                no_block(c)?;
                let a = one_arg(c, "address")?;
                spec.bindto = Some(a.parse().or_else(|_| err(c.line, format!("{name}: bindto {a}: not an address")))?);
            }
            (_, "bind_port") if connects => spec.bind_port = Some(number(c, "port")?),
            (_, "bind_if") if connects => {
                no_block(c)?;
                spec.bind_if = Some(one_arg(c, "interface")?.to_string());
            }
            (_, "fwmark") if connects => {
                return err(c.line, format!("{name}: fwmark is not supported: xdpvs does not mark its checks' packets (keepalived marks them for policy routing); choose their way with bindto or bind_if"))
            }
            (_, "connect_timeout") if kind != "FILE_CHECK" => spec.timeout = seconds(c)?,
            (_, "retry" | "nb_get_retry") if kind != "FILE_CHECK" => {
                retry = number(c, "number of retries")?
            }
            (_, "delay_before_retry") if kind != "FILE_CHECK" => retry_delay = seconds(c)?,
            (_, "delay_loop") if kind != "FILE_CHECK" => spec.interval = seconds(c)?,
            (_, "warmup") => {
                seconds(c)?;
            }
            (_, "smtp_alert" | "log_all_failures") => {
                boolean(c)?;
            }
            (_, "alpha") => spec.alpha = boolean(c)?,
            (_, "xdpvs_forwarding_check") => spec.forwarding = boolean(c)?,
            ("HTTP_GET" | "SSL_GET", "virtualhost") => {
                no_block(c)?;
                http.host = Some(one_arg(c, "host name")?.to_string());
            }
            ("HTTP_GET" | "SSL_GET", "http_protocol") => {
                no_block(c)?;
                http.protocol = HttpProtocol::parse(one_arg(c, "protocol")?)
                    .or_else(|e| err(c.line, format!("{name}: {e}")))?;
            }
            // keepalived spaces the URLs of a rising real server by delay_loop unless
            // asked not to; xdpvs checks them all each round, as fast_recovery does.
            ("HTTP_GET" | "SSL_GET", "fast_recovery") => {
                boolean(c)?;
            }
            ("HTTP_GET" | "SSL_GET", "url") => url_nodes.push(c),
            ("SSL_GET", "enable_sni") => enable_sni = boolean(c)?,
            ("SSL_GET", "sni_name") => {
                no_block(c)?;
                sni_name = Some(one_arg(c, "name")?.to_string());
            }
            // keepalived then sends close_notify; rustls sends it either way.
            ("SSL_GET", "tls_compliant") => {
                boolean(c)?;
            }
            ("SMTP_CHECK", "helo_name") => {
                no_block(c)?;
                helo = one_arg(c, "name")?.to_string();
            }
            ("SMTP_CHECK", "host") => {
                return err(c.line, format!("{name}: host blocks are not supported: xdpvs checks the real server's own address; write connect_ip and connect_port in the SMTP_CHECK itself"))
            }
            ("DNS_CHECK", "type") => {
                no_block(c)?;
                dns_q = dns_type(one_arg(c, "type")?).or_else(|e| err(c.line, format!("{name}: {e}")))?;
            }
            ("DNS_CHECK", "name") => {
                no_block(c)?;
                dns_name = one_arg(c, "name")?.trim_end_matches('.').to_string();
            }
            ("UDP_CHECK", "payload") => {
                no_block(c)?;
                let bytes = parse_hex(&c.args.join(" "), false)
                    .and_then(|h| hex_bytes(&h))
                    .or_else(|e| err(c.line, format!("{name}: payload: {e}")))?;
                udp.payload = Some(bytes);
            }
            ("UDP_CHECK", "require_reply") => {
                no_block(c)?;
                udp.require_reply = true;
                if !c.args.is_empty() {
                    udp.reply = Some(
                        parse_hex(&c.args.join(" "), true)
                            .or_else(|e| err(c.line, format!("{name}: require_reply: {e}")))?,
                    );
                }
            }
            ("UDP_CHECK", "min_reply_length") => udp.min = number(c, "length")?,
            ("UDP_CHECK", "max_reply_length") => udp.max = number(c, "length")?,
            ("MISC_CHECK", "misc_path") => {
                no_block(c)?;
                misc.command = one_arg(c, "command (quote it if it has arguments)")?.to_string();
            }
            ("MISC_CHECK", "misc_timeout") => misc.timeout = Some(seconds(c)?),
            ("MISC_CHECK", "misc_dynamic") => misc.dynamic = boolean(c)?,
            ("MISC_CHECK", "user") => {
                no_block(c)?;
                if c.args.is_empty() {
                    return err(c.line, format!("{name}: user takes a user name"));
                }
                misc.user = Some(c.args.join(":").replace("::", ":"));
            }
            ("FILE_CHECK", "track_file") => {
                no_block(c)?;
                let t = one_arg(c, "track_file name")?;
                let Some((_, f)) = globals.track_files.iter().find(|(n, _)| n == t) else {
                    return err(c.line, format!("{name}: track_file {t}: no track_file {t} block is defined"));
                };
                track = Some((c, f.clone()));
            }
            ("FILE_CHECK", "weight") => file_weight_given = Some(file_weight(c)?),
            ("FILE_CHECK", "dynamic") => file_dynamic = boolean(c)?,
            _ => return err(c.line, format!("{name}: {k} is not supported")),
        }
    }
    spec.retry_delay = retry_delay;
    spec.fall = retry.saturating_add(1).min(100);
    spec.rise = 1;
    let mut probes: Vec<Probe> = match kind {
        "TCP_CHECK" => vec![Probe::Tcp],
        "PING_CHECK" => vec![Probe::Ping],
        "HTTP_GET" | "SSL_GET" => {
            if enable_sni {
                http.sni = sni_name.or_else(|| http.host.clone());
            }
            for u in &url_nodes {
                urls.push(url_block(u, &name, &http)?);
            }
            if urls.is_empty() {
                return err(n.line, format!("{name}: needs a url {{ path ... }} block"));
            }
            urls.into_iter().map(|u| Probe::Http(Box::new(u))).collect()
        }
        "SMTP_CHECK" => vec![Probe::Smtp { helo }],
        "DNS_CHECK" => vec![Probe::Dns {
            qtype: dns_q,
            name: dns_name,
        }],
        "UDP_CHECK" => vec![Probe::Udp(udp)],
        "MISC_CHECK" => {
            if misc.command.is_empty() {
                return err(n.line, format!("{name}: needs misc_path"));
            }
            vec![Probe::Misc(misc)]
        }
        _ => {
            let Some((_, mut f)) = track else {
                return err(n.line, format!("{name}: needs track_file NAME"));
            };
            if let Some((w, r)) = file_weight_given {
                (f.weight, f.reverse) = (w, r);
            }
            f.dynamic = file_dynamic;
            // A file is read every delay_loop; keepalived watches it with inotify.
            vec![Probe::File(f)]
        }
    };
    spec.probe = probes.remove(0);
    spec.also = probes
        .into_iter()
        .map(crate::health::spec::Also::same)
        .collect();
    Ok(spec)
}

/// A `url { path digest status_code virtualhost regex regex_no_match regex_options }`
/// block of `HTTP_GET`/`SSL_GET`, on the checker's settings `base`.
fn url_block(n: &Node, check: &str, base: &HttpCheck) -> Result<HttpCheck, KeepalivedError> {
    let mut h = base.clone();
    let mut path = None;
    let mut regex: Option<String> = None;
    let mut flags = String::new();
    for c in block(n)? {
        match c.key.as_str() {
            "path" => {
                no_block(c)?;
                let p = one_arg(c, "path")?;
                if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_whitespace() || b == b',') {
                    return err(c.line, format!("{check}: path {p}: a path starts with '/' and has no spaces or commas (write %2C)"));
                }
                path = Some(p.to_string());
            }
            "status_code" => {
                no_block(c)?;
                h.status = parse_status(&c.args.join(" "))
                    .or_else(|e| err(c.line, format!("{check}: {e}")))?;
            }
            "digest" => {
                no_block(c)?;
                h.digest = Some(
                    parse_digest(one_arg(c, "digest")?)
                        .or_else(|e| err(c.line, format!("{check}: {e}")))?,
                );
            }
            "virtualhost" => {
                no_block(c)?;
                h.host = Some(one_arg(c, "host name")?.to_string());
            }
            "regex" => {
                no_block(c)?;
                regex = Some(one_arg(c, "regular expression (quote it)")?.to_string());
            }
            "regex_no_match" => h.regex_no_match = boolean(c)?,
            "regex_options" => {
                no_block(c)?;
                for o in &c.args {
                    flags.push_str(match o.as_str() {
                        "caseless" => "i",
                        "multiline" => "m",
                        "dotall" => "s",
                        "ungreedy" => "U",
                        "extended" => "x",
                        // Unicode is what the regular expressions are in anyway.
                        "utf" | "ucp" | "no_auto_capture" | "no_start_optimize" | "no_auto_possess" | "no_dotstar_anchor" => "",
                        o => return err(c.line, format!("{check}: regex_options {o} is not supported: xdpvs takes caseless, multiline, dotall, ungreedy, extended, utf and ucp (and the optimisation switches, without effect)")),
                    });
                }
            }
            // PCRE's JIT stack: no such limit in xdpvs's matcher.
            "regex_stack" => {}
            "regex_min_offset" | "regex_max_offset" => {
                return err(
                    c.line,
                    format!(
                    "{check}: {} is not supported: xdpvs matches the regex against the whole body",
                    c.key
                ),
                )
            }
            "tls_compliant" => {
                boolean(c)?;
            }
            k => return err(c.line, format!("{check}: url: {k} is not supported")),
        }
    }
    let Some(path) = path else {
        return err(n.line, format!("{check}: url needs a path"));
    };
    h.path = path;
    if let Some(re) = regex {
        let re = if flags.is_empty() {
            re
        } else {
            format!("(?{flags}){re}")
        };
        crate::health::spec::compile_regex(&re)
            .or_else(|e| err(n.line, format!("{check}: {e}")))?;
        h.regex = Some(re);
    } else if h.regex_no_match {
        return err(n.line, format!("{check}: regex_no_match goes with a regex"));
    }
    Ok(h)
}

#[cfg(test)]
mod tests;
