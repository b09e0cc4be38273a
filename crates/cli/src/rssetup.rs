//! `xdpvs rs-setup`: prepares this host as a direct-routing real server for a VIP, or
//! prints how (issue 14, first part).
//!
//! For an IPv4 VIP: the VIP on `lo` as a /32, off every other interface, and
//! `arp_ignore=1`, `arp_announce=2` on `all` and the interface facing the director, so the
//! host never answers ARP for the VIP (the director must be the only one). For an IPv6 VIP:
//! the VIP on `lo` as a /128 (`nodad`), off every other interface; Linux never answers
//! neighbour solicitations for an address on `lo` from another interface, so nothing else
//! is needed. It also checks that the default route does not go through the director
//! (replies must go straight to clients). Idempotent: only what is not in place yet is
//! changed, and each `--apply` records what it changed, so `--undo` reverts exactly that.
//!
//! With `--nat`, a NAT real server instead: no VIP on any interface, and the default
//! route via the director (`--director`), whose address rewrites its replies.
//!
//! With `--tun`, a tunnel real server: what direct routing needs (the VIP on `lo`, the
//! ARP sysctls), plus the kernel's decapsulation for `--tun-type` (the `ipip`, `fou` and
//! `ip_gre` modules, or `ip6_tunnel`/`ip6_gre` for IPv6), its fallback device up
//! (`tunl0`, `gre0`, `ip6tnl0`, `ip6gre0`), the GUE port (`ip fou add port N gue`), and
//! reverse-path filtering off on `all` and that device: decapsulated packets arrive on
//! it from clients the host routes elsewhere.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Options of `xdpvs rs-setup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VIP this real server serves (IPv4 or IPv6).
    #[arg(long)]
    pub vip: IpAddr,
    /// The interface facing the director and the clients (default: the default route's).
    #[arg(long)]
    pub iface: Option<String>,
    /// Make the changes.
    #[arg(long, conflicts_with_all = ["print", "undo"], required_unless_present_any = ["print", "undo"])]
    pub apply: bool,
    /// Print the equivalent shell commands instead of running them.
    #[arg(long, conflicts_with = "undo")]
    pub print: bool,
    /// Also write the ARP sysctls to /etc/sysctl.d/90-xdpvs-rs.conf (the VIP on lo still
    /// needs your network configuration, e.g. an `ifupdown` or networkd stanza).
    #[arg(long, conflicts_with = "undo")]
    pub persist: bool,
    /// Revert what earlier `--apply` runs for this VIP changed.
    #[arg(long)]
    pub undo: bool,
    /// The director's address: checks that the default route does not go through it
    /// (with `--nat`: makes it the default route's gateway).
    #[arg(long, required_if_eq("nat", "true"))]
    pub director: Option<IpAddr>,
    /// Set up a NAT real server (the director's `-m`): no VIP, the default route via
    /// the director.
    #[arg(long, conflicts_with = "tun")]
    pub nat: bool,
    /// Set up a tunnel real server (the director's `-i`): the VIP on lo, the kernel's
    /// decapsulation for --tun-type, rp_filter off.
    #[arg(long)]
    pub tun: bool,
    /// The tunnel's encapsulation, as the director's --tun-type: ipip (default), gue, gre.
    #[arg(long, value_name = "ipip|gue|gre", requires = "tun", value_parser = parse_kind)]
    pub tun_type: Option<xdpvs_sched::TunKind>,
    /// GUE's UDP port, as the director's --tun-port.
    #[arg(long, value_name = "PORT", requires = "tun")]
    pub tun_port: Option<u16>,
    /// Where `--apply` records what it changed, for `--undo`.
    #[arg(long, default_value = "/var/lib/xdpvs")]
    pub state_dir: PathBuf,
}

fn parse_kind(s: &str) -> std::result::Result<xdpvs_sched::TunKind, String> {
    xdpvs_sched::TunKind::parse(s)
        .ok_or_else(|| format!("unknown tunnel type '{s}': use ipip, gue or gre"))
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Step {
    /// `ip addr add CIDR dev DEV`.
    AddAddr {
        /// Interface.
        dev: String,
        /// Address/prefix.
        cidr: String,
    },
    /// `ip addr del CIDR dev DEV`.
    DelAddr {
        /// Interface.
        dev: String,
        /// Address/prefix.
        cidr: String,
    },
    /// `sysctl -w KEY=TO` (it was FROM).
    Sysctl {
        /// e.g. `net.ipv4.conf.all.arp_ignore`.
        key: String,
        /// The value before.
        from: String,
        /// The value after.
        to: String,
    },
    /// `ip route replace default TO` (or `ip route del default` when `to` is none); the
    /// default route was `from`.
    DefaultRoute {
        /// IPv6's.
        v6: bool,
        /// The route before (`via GW dev DEV`), if there was one.
        from: Option<String>,
        /// The route after.
        to: Option<String>,
    },
    /// `modprobe NAME` (or `modprobe -r NAME` to undo).
    Module {
        /// The module.
        name: String,
        /// Loaded (or removed).
        load: bool,
    },
    /// `ip link set DEV up` (or down).
    Link {
        /// The device.
        dev: String,
        /// Up (or down).
        up: bool,
    },
    /// `ip fou add port PORT gue` (or `ip fou del port PORT`), `-6` for IPv6.
    Fou {
        /// The UDP port.
        port: u16,
        /// IPv6's.
        v6: bool,
        /// Added (or deleted).
        add: bool,
    },
    /// Writes PATH (`previous`: its content before, if it existed).
    WriteFile {
        /// The file.
        path: PathBuf,
        /// What it holds after.
        content: String,
        /// What it held before.
        previous: Option<String>,
    },
}

impl Step {
    /// The shell command that makes this change.
    pub fn shell(&self) -> String {
        match self {
            Step::AddAddr { dev, cidr } => {
                let nodad = if cidr.contains(':') { " nodad" } else { "" };
                format!("ip addr add {cidr} dev {dev}{nodad}")
            }
            Step::DelAddr { dev, cidr } => format!("ip addr del {cidr} dev {dev}"),
            Step::Sysctl { key, to, .. } => format!("sysctl -w {key}={to}"),
            Step::DefaultRoute { v6, to, .. } => {
                let fam = if *v6 { "-6 " } else { "" };
                match to {
                    Some(r) => format!("ip {fam}route replace default {r}"),
                    None => format!("ip {fam}route del default"),
                }
            }
            Step::WriteFile { path, content, .. } => {
                format!("cat > {} <<'EOF'\n{content}EOF", path.display())
            }
            Step::Module { name, load } => {
                format!("modprobe {}{name}", if *load { "" } else { "-r " })
            }
            Step::Link { dev, up } => {
                format!("ip link set {dev} {}", if *up { "up" } else { "down" })
            }
            Step::Fou { port, v6, add } => {
                let fam = if *v6 { " -6" } else { "" };
                if *add {
                    format!("ip fou add port {port} gue{fam}")
                } else {
                    format!("ip fou del port {port}{fam}")
                }
            }
        }
    }

    /// The change that undoes this one.
    pub fn reverse(&self) -> Step {
        match self.clone() {
            Step::AddAddr { dev, cidr } => Step::DelAddr { dev, cidr },
            Step::DelAddr { dev, cidr } => Step::AddAddr { dev, cidr },
            Step::Sysctl { key, from, to } => Step::Sysctl {
                key,
                from: to,
                to: from,
            },
            Step::DefaultRoute { v6, from, to } => Step::DefaultRoute {
                v6,
                from: to,
                to: from,
            },
            Step::WriteFile {
                path,
                content,
                previous,
            } => Step::WriteFile {
                path,
                content: previous.clone().unwrap_or_default(),
                previous: Some(content),
            },
            Step::Module { name, load } => Step::Module { name, load: !load },
            Step::Link { dev, up } => Step::Link { dev, up: !up },
            Step::Fou { port, v6, add } => Step::Fou {
                port,
                v6,
                add: !add,
            },
        }
    }
}

/// What the host looks like now, as far as the set-up is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every address: (interface, address, prefix length).
    pub addrs: Vec<(String, IpAddr, u8)>,
    /// The ARP sysctls: (key, value).
    pub sysctls: Vec<(String, String)>,
    /// The default route's gateway and interface, of the VIP's family.
    pub default_route: Option<(Option<IpAddr>, String)>,
    /// The sysctl.d file, if it exists.
    pub persisted: Option<String>,
    /// What a tunnel real server needs, as it is now.
    pub tun: TunObserved,
}

/// The tunnel side of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunObserved {
    /// Loaded kernel modules (of those a tunnel needs).
    pub modules: Vec<String>,
    /// Devices that are up (of the tunnels' fallback devices).
    pub up: Vec<String>,
    /// GUE ports the kernel receives on.
    pub fou_ports: Vec<u16>,
    /// rp_filter values: (key, value).
    pub rp_filter: Vec<(String, String)>,
}

/// The kernel modules and the fallback device that decapsulate `kind` for the family.
pub fn tunnel_kernel(kind: xdpvs_sched::TunKind, v6: bool) -> (Vec<&'static str>, &'static str) {
    use xdpvs_sched::TunKind::*;
    match (kind, v6) {
        (Ipip, false) => (vec!["ipip"], "tunl0"),
        (Gue, false) => (vec!["ipip", "fou"], "tunl0"),
        (Gre, false) => (vec!["ip_gre"], "gre0"),
        (Ipip, true) => (vec!["ip6_tunnel"], "ip6tnl0"),
        (Gue, true) => (vec!["ip6_tunnel", "fou6"], "ip6tnl0"),
        (Gre, true) => (vec!["ip6_gre"], "ip6gre0"),
    }
}

/// The rp_filter keys a tunnel real server turns off (IPv4; the kernel takes the larger
/// of `all` and the device's).
fn rp_filter_keys(dev: &str) -> Vec<String> {
    ["all", dev]
        .iter()
        .map(|d| format!("net.ipv4.conf.{d}.rp_filter"))
        .collect()
}

/// The changes that make this host a tunnel real server of `vip` (tunnel `kind`, GUE
/// `port`) on `iface`: direct routing's (the VIP on lo, the ARP sysctls), then the
/// decapsulation.
pub fn plan_tun(
    vip: IpAddr,
    iface: &str,
    kind: xdpvs_sched::TunKind,
    port: Option<u16>,
    now: &Observed,
) -> Vec<Step> {
    let mut steps = plan(vip, iface, false, now);
    let v6 = vip.is_ipv6();
    let (modules, dev) = tunnel_kernel(kind, v6);
    for m in modules {
        if !now.tun.modules.iter().any(|l| l == m) {
            steps.push(Step::Module {
                name: m.into(),
                load: true,
            });
        }
    }
    if !now.tun.up.iter().any(|d| d == dev) {
        steps.push(Step::Link {
            dev: dev.into(),
            up: true,
        });
    }
    if let (xdpvs_sched::TunKind::Gue, Some(p)) = (kind, port) {
        if !now.tun.fou_ports.contains(&p) {
            steps.push(Step::Fou {
                port: p,
                v6,
                add: true,
            });
        }
    }
    if !v6 {
        for key in rp_filter_keys(dev) {
            let have = now
                .tun
                .rp_filter
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if have != "0" {
                steps.push(Step::Sysctl {
                    key,
                    from: have,
                    to: "0".into(),
                });
            }
        }
    }
    steps
}

/// Where `--persist` writes the ARP sysctls.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-xdpvs-rs.conf";

/// The ARP sysctl keys for interface `iface`, with the value each needs.
fn arp_sysctls(iface: &str) -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    for dev in ["all", iface] {
        v.push((format!("net.ipv4.conf.{dev}.arp_ignore"), "1"));
        v.push((format!("net.ipv4.conf.{dev}.arp_announce"), "2"));
    }
    v
}

/// The changes that make this host a real server of `vip` on `iface`, given `now`.
pub fn plan(vip: IpAddr, iface: &str, persist: bool, now: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    let host = if vip.is_ipv6() { 128 } else { 32 };
    for (dev, a, p) in &now.addrs {
        if *a == vip && !(dev == "lo" && *p == host) {
            steps.push(Step::DelAddr {
                dev: dev.clone(),
                cidr: format!("{a}/{p}"),
            });
        }
    }
    if !now
        .addrs
        .iter()
        .any(|(d, a, p)| d == "lo" && *a == vip && *p == host)
    {
        steps.push(Step::AddAddr {
            dev: "lo".into(),
            cidr: format!("{vip}/{host}"),
        });
    }
    if vip.is_ipv4() {
        for (key, want) in arp_sysctls(iface) {
            let have = now
                .sysctls
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if have != want {
                steps.push(Step::Sysctl {
                    key,
                    from: have,
                    to: want.into(),
                });
            }
        }
        if persist {
            let content: String = arp_sysctls(iface)
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            let content = format!("# written by xdpvs rs-setup: a direct-routing real server never answers ARP for its VIP\n{content}");
            if now.persisted.as_deref() != Some(content.as_str()) {
                steps.push(Step::WriteFile {
                    path: SYSCTL_FILE.into(),
                    content,
                    previous: now.persisted.clone(),
                });
            }
        }
    }
    steps
}

/// The changes that make this host a NAT real server behind `director` for `vip`: the
/// VIP off every interface, the default route via the director.
pub fn plan_nat(vip: IpAddr, director: IpAddr, now: &Observed) -> Vec<Step> {
    let mut steps: Vec<Step> = now
        .addrs
        .iter()
        .filter(|(_, a, _)| *a == vip)
        .map(|(dev, a, p)| Step::DelAddr {
            dev: dev.clone(),
            cidr: format!("{a}/{p}"),
        })
        .collect();
    let route = |(gw, dev): &(Option<IpAddr>, String)| match gw {
        Some(g) => format!("via {g} dev {dev}"),
        None => format!("dev {dev}"),
    };
    if now.default_route.as_ref().and_then(|(gw, _)| *gw) != Some(director) {
        steps.push(Step::DefaultRoute {
            v6: director.is_ipv6(),
            from: now.default_route.as_ref().map(route),
            to: Some(format!("via {director}")),
        });
    }
    steps
}

/// Problems the set-up cannot fix by itself, each with what to do.
pub fn warnings(vip: IpAddr, director: Option<IpAddr>, now: &Observed) -> Vec<String> {
    let mut w = Vec::new();
    match (&now.default_route, director) {
        (Some((Some(gw), dev)), Some(d)) if *gw == d => w.push(format!(
            "the default route goes through the director ({gw} on {dev}): replies to clients must go straight to the router, not back through the director; set the default route to your router (e.g. ip route replace default via ROUTER dev {dev})"
        )),
        (None, _) => w.push(format!(
            "no default route for {}: the real server cannot answer clients off its LAN; add one through your router",
            if vip.is_ipv6() { "IPv6" } else { "IPv4" }
        )),
        _ => {}
    }
    w
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd} (iproute2)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `ip -o addr show` lines: (interface, address, prefix).
pub fn parse_addrs(text: &str) -> Vec<(String, IpAddr, u8)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = f
                .get(1)?
                .trim_end_matches(':')
                .split('@')
                .next()?
                .to_string();
            let i = f.iter().position(|w| *w == "inet" || *w == "inet6")?;
            let (a, p) = f.get(i + 1)?.split_once('/')?;
            Some((dev, a.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

/// Parses `ip route show default` (or `ip -6 ...`): the gateway and interface.
pub fn parse_default_route(text: &str) -> Option<(Option<IpAddr>, String)> {
    let l = text.lines().find(|l| l.starts_with("default"))?;
    let f: Vec<&str> = l.split_whitespace().collect();
    let after = |k: &str| f.iter().position(|w| *w == k).and_then(|i| f.get(i + 1));
    let gw = after("via").and_then(|g| g.parse().ok());
    Some((gw, after("dev")?.to_string()))
}

/// The interface of `ip -o route get ADDR`'s answer.
pub fn route_dev(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "dev")?;
    words.next().map(str::to_string)
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn observe(vip: IpAddr, iface: &str) -> Result<Observed> {
    let addrs = parse_addrs(&sh("ip", &["-o", "addr", "show"])?);
    let sysctls = arp_sysctls(iface)
        .into_iter()
        .map(|(k, _)| {
            let v = std::fs::read_to_string(sysctl_path(&k)).unwrap_or_default();
            (k, v.trim().to_string())
        })
        .collect();
    let fam = if vip.is_ipv6() { "-6" } else { "-4" };
    let default_route = parse_default_route(&sh("ip", &[fam, "route", "show", "default"])?);
    Ok(Observed {
        addrs,
        sysctls,
        default_route,
        persisted: std::fs::read_to_string(SYSCTL_FILE).ok(),
        tun: TunObserved::default(),
    })
}

/// The tunnel side of this host, for tunnel `kind` of the family of `vip`.
fn observe_tun(vip: IpAddr, kind: xdpvs_sched::TunKind) -> TunObserved {
    let (modules, dev) = tunnel_kernel(kind, vip.is_ipv6());
    let up = std::fs::read_to_string(format!("/sys/class/net/{dev}/flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & 1 != 0);
    let fam = if vip.is_ipv6() { "-6" } else { "-4" };
    let fou = Command::new("ip")
        .args([fam, "fou", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    TunObserved {
        modules: modules
            .into_iter()
            .filter(|m| Path::new("/sys/module").join(m).exists())
            .map(String::from)
            .collect(),
        up: if up {
            vec![dev.to_string()]
        } else {
            Vec::new()
        },
        fou_ports: fou
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect(),
        rp_filter: rp_filter_keys(dev)
            .into_iter()
            .map(|k| {
                let v = std::fs::read_to_string(sysctl_path(&k)).unwrap_or_default();
                (k, v.trim().to_string())
            })
            .collect(),
    }
}

fn run_step(s: &Step) -> Result<()> {
    match s {
        Step::AddAddr { dev, cidr } => {
            let mut a = vec!["addr", "add", cidr.as_str(), "dev", dev.as_str()];
            if cidr.contains(':') {
                a.push("nodad");
            }
            sh("ip", &a).map(drop)
        }
        Step::DelAddr { dev, cidr } => sh("ip", &["addr", "del", cidr, "dev", dev]).map(drop),
        Step::Sysctl { key, to, .. } => {
            std::fs::write(sysctl_path(key), to).with_context(|| format!("setting {key} (as root)"))
        }
        Step::DefaultRoute { v6, to, .. } => {
            let mut a: Vec<&str> = Vec::new();
            if *v6 {
                a.push("-6");
            }
            match to {
                Some(r) => {
                    a.extend(["route", "replace", "default"]);
                    a.extend(r.split_whitespace());
                }
                None => a.extend(["route", "del", "default"]),
            }
            sh("ip", &a).map(drop)
        }
        Step::Module { name, load } => {
            let mut a = vec![name.as_str()];
            if !load {
                a.insert(0, "-r");
            }
            sh("modprobe", &a)
                .map(drop)
                .with_context(|| format!("the kernel module {name} (a tunnel real server's decapsulation; is it built for this kernel?)"))
        }
        Step::Link { dev, up } => {
            sh("ip", &["link", "set", dev, if *up { "up" } else { "down" }]).map(drop)
        }
        Step::Fou { port, v6, add } => {
            let p = port.to_string();
            let mut a = vec!["fou", if *add { "add" } else { "del" }, "port", p.as_str()];
            if *add {
                a.push("gue");
            }
            if *v6 {
                a.insert(0, "-6");
            }
            sh("ip", &a).map(drop)
        }
        Step::WriteFile {
            path,
            content,
            previous,
        } => {
            if content.is_empty() && previous.is_some() {
                // Undoing the creation of a file that did not exist.
                std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
            } else {
                std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
            }
        }
    }
}

fn state_file(dir: &Path, vip: IpAddr) -> PathBuf {
    dir.join(format!(
        "rs-setup-{}.json",
        vip.to_string().replace(':', "_")
    ))
}

/// Runs `xdpvs rs-setup`.
pub fn run(a: &Args) -> Result<std::process::ExitCode> {
    let state = state_file(&a.state_dir, a.vip);
    if a.undo {
        let Ok(text) = std::fs::read_to_string(&state) else {
            println!("nothing to undo for {}: no {}", a.vip, state.display());
            return Ok(std::process::ExitCode::SUCCESS);
        };
        let applied: Vec<Step> =
            serde_json::from_str(&text).with_context(|| format!("reading {}", state.display()))?;
        for s in applied.iter().rev().map(Step::reverse) {
            println!("{}", s.shell());
            run_step(&s)?;
        }
        std::fs::remove_file(&state).with_context(|| format!("removing {}", state.display()))?;
        println!("undone: {} change(s) reverted", applied.len());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let fam = if a.vip.is_ipv6() { "-6" } else { "-4" };
    let iface = match (&a.iface, a.director.filter(|_| a.nat)) {
        (Some(i), _) => i.clone(),
        // A NAT real server: the interface the director is reached on (its default
        // route is what is being set).
        (None, Some(d)) => route_dev(&sh("ip", &["-o", "route", "get", &d.to_string()])?)
            .with_context(|| format!("no route to the director {d}: give --iface"))?,
        (None, None) => parse_default_route(&sh("ip", &[fam, "route", "show", "default"])?)
            .map(|(_, d)| d)
            .context("no default route to take the interface from: give --iface")?,
    };
    let mut now = observe(a.vip, &iface)?;
    let kind = a.tun_type.unwrap_or_default();
    if a.tun {
        if kind == xdpvs_sched::TunKind::Gue && a.tun_port.is_none() {
            bail!("--tun-type gue needs --tun-port PORT: the director's --tun-port");
        }
        now.tun = observe_tun(a.vip, kind);
    }
    let (steps, warnings) = match (a.nat, a.director) {
        _ if a.tun => (
            plan_tun(a.vip, &iface, kind, a.tun_port, &now),
            warnings(a.vip, a.director, &now),
        ),
        (true, Some(director)) => (plan_nat(a.vip, director, &now), Vec::new()),
        (true, None) => {
            bail!("--nat needs --director ADDR: the director's address on this host's subnet")
        }
        (false, _) => (
            plan(a.vip, &iface, a.persist, &now),
            warnings(a.vip, a.director, &now),
        ),
    };
    if a.print {
        for s in &steps {
            println!("{}", s.shell());
        }
    } else {
        let mut applied: Vec<Step> = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        for s in &steps {
            println!("{}", s.shell());
            run_step(s)?;
            applied.push(s.clone());
        }
        if !steps.is_empty() {
            std::fs::create_dir_all(&a.state_dir)
                .with_context(|| format!("creating {}", a.state_dir.display()))?;
            std::fs::write(&state, serde_json::to_string_pretty(&applied)?)
                .with_context(|| format!("writing {}", state.display()))?;
            println!(
                "applied: {} change(s) above, recorded in {}; `xdpvs rs-setup --vip {} --undo` reverts them",
                steps.len(),
                state.display(),
                a.vip
            );
        }
        if steps.is_empty() {
            println!(
                "already set up as a {}real server of {} on {iface}: nothing to change",
                if a.nat {
                    "NAT "
                } else if a.tun {
                    "tunnel "
                } else {
                    ""
                },
                a.vip
            );
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(if warnings.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(addrs: &[(&str, &str, u8)], ignore: &str, announce: &str) -> Observed {
        Observed {
            addrs: addrs
                .iter()
                .map(|(d, a, p)| (d.to_string(), a.parse().expect("address"), *p))
                .collect(),
            sysctls: arp_sysctls("eth0")
                .into_iter()
                .map(|(k, _)| {
                    let v = if k.ends_with("arp_ignore") {
                        ignore
                    } else {
                        announce
                    };
                    (k, v.to_string())
                })
                .collect(),
            default_route: Some((
                Some("198.18.0.254".parse().expect("address")),
                "eth0".into(),
            )),
            persisted: None,
            tun: TunObserved::default(),
        }
    }

    const VIP: &str = "198.18.0.100";

    #[test]
    fn a_misconfigured_real_server_gets_every_fix_and_a_good_one_none() {
        let vip: IpAddr = VIP.parse().expect("address");
        // The classic mistake: the VIP on the LAN interface, ARP sysctls at their defaults.
        let bad = observed(&[("eth0", "198.18.0.11", 24), ("eth0", VIP, 24)], "0", "0");
        let steps = plan(vip, "eth0", true, &bad);
        let shell: Vec<String> = steps.iter().map(Step::shell).collect();
        assert_eq!(shell[0], "ip addr del 198.18.0.100/24 dev eth0");
        assert_eq!(shell[1], "ip addr add 198.18.0.100/32 dev lo");
        assert_eq!(
            shell[2..6],
            [
                "sysctl -w net.ipv4.conf.all.arp_ignore=1",
                "sysctl -w net.ipv4.conf.all.arp_announce=2",
                "sysctl -w net.ipv4.conf.eth0.arp_ignore=1",
                "sysctl -w net.ipv4.conf.eth0.arp_announce=2",
            ]
        );
        assert!(shell[6].starts_with("cat > /etc/sysctl.d/90-xdpvs-rs.conf <<'EOF'\n"));
        assert!(shell[6].contains("net.ipv4.conf.eth0.arp_announce = 2\n"));
        // Done: nothing left to change (idempotent).
        let good = observed(&[("eth0", "198.18.0.11", 24), ("lo", VIP, 32)], "1", "2");
        assert_eq!(plan(vip, "eth0", false, &good), vec![]);
        // Undo reverses each step.
        let undo: Vec<String> = steps.iter().rev().map(|s| s.reverse().shell()).collect();
        assert_eq!(undo[5], "ip addr del 198.18.0.100/32 dev lo");
        assert_eq!(undo[6], "ip addr add 198.18.0.100/24 dev eth0");
        assert_eq!(undo[1], "sysctl -w net.ipv4.conf.eth0.arp_announce=0");
    }

    #[test]
    fn an_ipv6_vip_needs_only_lo() {
        let vip: IpAddr = "2001:2::100".parse().expect("address");
        let now = observed(&[("eth0", "2001:2::100", 64)], "0", "0");
        let shell: Vec<String> = plan(vip, "eth0", true, &now)
            .iter()
            .map(Step::shell)
            .collect();
        assert_eq!(
            shell,
            [
                "ip addr del 2001:2::100/64 dev eth0",
                "ip addr add 2001:2::100/128 dev lo nodad"
            ]
        );
    }

    #[test]
    fn a_default_route_through_the_director_is_named() {
        let vip: IpAddr = VIP.parse().expect("address");
        let mut now = observed(&[], "1", "2");
        now.default_route = Some((Some("198.18.0.1".parse().expect("address")), "eth0".into()));
        let w = warnings(vip, Some("198.18.0.1".parse().expect("address")), &now);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("goes through the director (198.18.0.1 on eth0)"),
            "{w:?}"
        );
        assert!(warnings(vip, Some("198.18.0.2".parse().expect("address")), &now).is_empty());
        now.default_route = None;
        assert!(warnings(vip, None, &now)[0].contains("no default route for IPv4"));
    }

    #[test]
    fn ip_output_is_read() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    1: lo    inet 198.18.0.100/32 scope global lo\\       valid_lft forever\n\
                    2: eth0@if5    inet 198.18.0.11/24 scope global eth0\\       valid_lft forever\n\
                    2: eth0@if5    inet6 2001:2::11/64 scope global \\       valid_lft forever\n";
        let a = parse_addrs(text);
        assert_eq!(a.len(), 4);
        assert_eq!(a[1], ("lo".into(), VIP.parse().expect("address"), 32));
        assert_eq!(
            a[3],
            ("eth0".into(), "2001:2::11".parse().expect("address"), 64)
        );
        assert_eq!(
            parse_default_route("default via 198.18.0.254 dev eth0 proto static\n"),
            Some((
                Some("198.18.0.254".parse().expect("address")),
                "eth0".into()
            ))
        );
        assert_eq!(parse_default_route(""), None);
    }

    #[test]
    fn a_nat_real_server_loses_the_vip_and_routes_via_the_director() {
        let mut now = observed(
            &[("eth0", "198.18.1.11", 24), ("lo", "198.18.0.100", 32)],
            "1",
            "2",
        );
        now.default_route = Some((Some("198.18.1.254".parse().expect("ip")), "eth0".into()));
        let vip: IpAddr = "198.18.0.100".parse().expect("ip");
        let dip: IpAddr = "198.18.1.1".parse().expect("ip");
        let steps = plan_nat(vip, dip, &now);
        let shell: Vec<String> = steps.iter().map(Step::shell).collect();
        assert_eq!(
            shell,
            [
                "ip addr del 198.18.0.100/32 dev lo",
                "ip route replace default via 198.18.1.1"
            ]
        );
        assert_eq!(
            steps[1].reverse().shell(),
            "ip route replace default via 198.18.1.254 dev eth0"
        );
        // Set up already: nothing to do.
        now.addrs.retain(|(d, _, _)| d != "lo");
        now.default_route = Some((Some(dip), "eth0".into()));
        assert!(plan_nat(vip, dip, &now).is_empty());
        assert_eq!(
            route_dev("198.18.1.1 dev eth0 src 198.18.1.11 uid 0 \\    cache"),
            Some("eth0".into())
        );
        // No default route before: undone by deleting it.
        now.default_route = None;
        let steps = plan_nat(vip, dip, &now);
        assert_eq!(steps[0].reverse().shell(), "ip route del default");
    }

    #[test]
    fn a_tunnel_real_server_gets_the_vip_its_decapsulation_and_no_rp_filter() {
        let vip: IpAddr = VIP.parse().expect("address");
        let mut now = observed(&[("eth0", "198.18.2.11", 24)], "1", "2");
        now.tun.rp_filter = vec![
            ("net.ipv4.conf.all.rp_filter".into(), "2".into()),
            ("net.ipv4.conf.tunl0.rp_filter".into(), "0".into()),
        ];
        let steps = plan_tun(vip, "eth0", xdpvs_sched::TunKind::Gue, Some(6080), &now);
        let shell: Vec<String> = steps.iter().map(Step::shell).collect();
        assert_eq!(
            shell,
            [
                "ip addr add 198.18.0.100/32 dev lo",
                "modprobe ipip",
                "modprobe fou",
                "ip link set tunl0 up",
                "ip fou add port 6080 gue",
                "sysctl -w net.ipv4.conf.all.rp_filter=0",
            ]
        );
        assert_eq!(steps[4].reverse().shell(), "ip fou del port 6080");
        assert_eq!(steps[1].reverse().shell(), "modprobe -r ipip");
        // Set up: nothing left.
        now.addrs.push(("lo".into(), vip, 32));
        now.tun = TunObserved {
            modules: vec!["ipip".into(), "fou".into()],
            up: vec!["tunl0".into()],
            fou_ports: vec![6080],
            rp_filter: vec![
                ("net.ipv4.conf.all.rp_filter".into(), "0".into()),
                ("net.ipv4.conf.tunl0.rp_filter".into(), "0".into()),
            ],
        };
        assert!(plan_tun(vip, "eth0", xdpvs_sched::TunKind::Gue, Some(6080), &now).is_empty());
        // GRE over IPv6: its own module and device, no rp_filter (IPv4's).
        let v6: IpAddr = "2001:2::100".parse().expect("address");
        let steps = plan_tun(
            v6,
            "eth0",
            xdpvs_sched::TunKind::Gre,
            None,
            &Observed::default(),
        );
        let shell: Vec<String> = steps.iter().map(Step::shell).collect();
        assert_eq!(
            shell,
            [
                "ip addr add 2001:2::100/128 dev lo nodad",
                "modprobe ip6_gre",
                "ip link set ip6gre0 up"
            ]
        );
    }
}
